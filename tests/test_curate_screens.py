"""Duplicates and Clean screens in the real app (Pilot): keys change the store as the CLI would, and undo."""
from __future__ import annotations

import json

import pytest

from screens.clean import CleanScreen
from screens.duplicates import DuplicatesScreen
from workbench import scores, store
from workbench.app import WorkbenchApp
from workbench.samples import insert_samples
from pilotkit import wait_for

HOSTILE = "[bold]Write[/] a poem\x1b[2J about the sea in the style of a sailor"




def statuses(conn) -> dict[int, str]:
    return dict(conn.execute("SELECT id, status FROM samples"))


@pytest.fixture
def dup_store(db_path):
    conn = store.open_store(db_path)
    with store.transaction(conn):
        did = store.ensure_dataset(conn, "d")
        insert_samples(conn, did, [
            {"instruction": "List five fruits that are high in vitamin C.", "source_line": 1},
            {"instruction": "List five fruits that are high in vitamin C", "source_line": 2},
            {"instruction": "List 5 fruits that are high in vitamin C.", "source_line": 3},
            {"instruction": HOSTILE, "source_line": 4},
            {"instruction": HOSTILE.replace("sailor", "sailor!"), "source_line": 5},
            {"instruction": "Explain how tides work.", "source_line": 6},
        ])
    with store.transaction(conn):
        scores.record(conn, 2, "judge", 9, (1, 10))
    yield conn
    conn.close()


async def open_screen(pilot, app, screen, cls_name):
    await wait_for(pilot, lambda: type(app.screen).__name__ == "DatasetsScreen")
    app.push_screen(screen)
    await wait_for(pilot, lambda: type(app.screen).__name__ == cls_name and app.screen.loaded)
    return app.screen


async def test_duplicates_walk_keep_reject_undo(dup_store, db_path):
    app = WorkbenchApp(db=db_path)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_screen(pilot, app, DuplicatesScreen(dataset="d", threshold=0.85), "DuplicatesScreen")
        assert screen.clusters == [[1, 2, 3], [4, 5]]
        await wait_for(pilot, lambda: screen.cluster is not None)
        assert screen.keeper_id == 2                              # best judge score by default
        assert "cluster 1 of 2" in str(screen.query_one("#status").render())

        # choose another keeper: cursor to the first row, space; then reject the rest
        screen.query_one("#members").move_cursor(row=0)
        await pilot.press("space")
        assert screen.keeper_id == 1
        await pilot.press("x")
        await wait_for(pilot, lambda: screen.index == 1 and screen.cluster and screen.cluster.members[0].id == 4)
        assert statuses(dup_store) == {1: "pending", 2: "rejected", 3: "rejected", 4: "pending", 5: "pending",
                                       6: "pending"}
        rows = dup_store.execute("SELECT sample_id, action, reason FROM decisions ORDER BY id").fetchall()
        assert rows == [(2, "dedup", "duplicate of #1"), (3, "dedup", "duplicate of #1")]

        # the hostile instruction is drawn literally: markup not applied, ESC shown as a stand-in
        await wait_for(pilot, lambda: "␛" in str(screen.query_one("#keeper-text").render()))
        text = str(screen.query_one("#keeper-text").render())
        assert "[bold]Write[/]" in text and "\x1b" not in text

        await pilot.press("a")                                    # keep all: nothing changes
        assert statuses(dup_store)[5] == "pending"
        await pilot.press("p")
        await wait_for(pilot, lambda: screen.index == 0 and screen.cluster is not None)
        await pilot.press("u")                                    # undo the rejection
        await wait_for(pilot, lambda: statuses(dup_store)[2] == "pending")
        assert statuses(dup_store)[3] == "pending"
        assert dup_store.execute("SELECT count(*) FROM decisions WHERE action = 'undo'").fetchone()[0] == 2

        await pilot.press("minus")                                # looser threshold: rescans
        await wait_for(pilot, lambda: screen.threshold == 0.8 and not screen.busy)
        await pilot.press("escape")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "DatasetsScreen")


@pytest.fixture
def clean_store(db_path):
    conn = store.open_store(db_path)
    with store.transaction(conn):
        did = store.ensure_dataset(conn, "d")
        insert_samples(conn, did, [
            {"instruction": "Explain the water cycle.", "response": "Water evaporates, condenses and falls as rain."},
            {"instruction": "What do you think of jazz?", "response": "As an AI language model, I have no taste."},
            {"instruction": "Say something.", "response": ""},
            {"instruction": "Hi", "response": "Hello&amp;welcome<br>friend"},
        ] + [{"instruction": f"Tell me a joke number {i}.", "response": "As an AI language model, no."}
             for i in range(60)])
    yield conn
    conn.close()


async def test_clean_preview_page_apply_undo(clean_store, db_path):
    app = WorkbenchApp(db=db_path)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_screen(pilot, app, CleanScreen(dataset="d"), "CleanScreen")
        assert screen.preview.counts["boilerplate"] == {"d": 61}
        assert screen.preview.counts["response_length"] == {"d": 1}
        assert statuses(clean_store) == {i: "pending" for i in range(1, 65)}        # previewing changes nothing

        # cursor onto boilerplate: its rows are listed, 50 a page; page through them
        filters = screen.query_one("#filters")
        filters.focus()
        filters.move_cursor(row=list(screen.query_one("#filters").rows).index(
            next(k for k in filters.rows if k.value == "boilerplate")))
        await wait_for(pilot, lambda: screen.selected == "boilerplate")
        assert screen.query_one("#rows").row_count == 50
        await pilot.press("n")
        assert screen.page_no == 1 and screen.query_one("#rows").row_count == 11
        await wait_for(pilot, lambda: "As an AI language model" in str(screen.query_one("#text").render()))

        # switch the length filter off: only boilerplate remains enabled among those that hit
        filters.move_cursor(row=[k.value for k in filters.rows].index("response_length"))
        await pilot.press("space")
        assert "response_length" not in screen.enabled and screen.preview.total == 61

        await pilot.press("a")                                    # first press asks for confirmation
        assert all(s == "pending" for s in statuses(clean_store).values())
        await pilot.press("a")
        await wait_for(pilot, lambda: statuses(clean_store)[2] == "rejected")
        st = statuses(clean_store)
        assert sum(s == "rejected" for s in st.values()) == 61 and st[3] == "pending"
        reasons = {r for (r,) in clean_store.execute("SELECT DISTINCT reason FROM decisions")}
        assert reasons == {"boilerplate"}
        await wait_for(pilot, lambda: not screen.busy and "rejected 61 rows" in str(screen.query_one("#message").render()))

        await pilot.press("u")
        await wait_for(pilot, lambda: all(s == "pending" for s in statuses(clean_store).values()))

        # normalization mode: before/after of the changed row, then apply
        await pilot.press("m")
        await wait_for(pilot, lambda: screen.mode == "normalize" and screen.norm is not None and not screen.busy)
        assert screen.norm.total == 1
        await wait_for(pilot, lambda: "after" in str(screen.query_one("#text").render()))
        await pilot.press("a", "a")
        await wait_for(pilot, lambda: clean_store.execute("SELECT response FROM samples WHERE id = 4").fetchone()[0]
                       == "Hello&welcome\nfriend")
        dec = clean_store.execute("SELECT before FROM decisions WHERE action = 'normalize'").fetchone()[0]
        assert json.loads(dec) == {"response": "Hello&amp;welcome<br>friend"}
