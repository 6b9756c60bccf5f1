"""Browse: the virtual table widget on its own, then the Browse screen in the real app over a real store."""
from __future__ import annotations


import pytest
from textual.app import App

from widgets.virtual_table import Column, TableRow, VirtualTable, fit, one_line
from workbench import scores, store
from workbench.app import WorkbenchApp
from workbench.samples import insert_samples
from pilotkit import wait_for

HOSTILE = "[bold]x[/] [@click=app.quit]q[/] [link=http://e]l[/link] \x1b[31mred\x1b[0m\ttab\nnl \u202eevil 中文 🙂"


def line(table: VirtualTable, y: int) -> str:
    return "".join(seg.text for seg in table.render_line(y))




async def settle(pilot, table: VirtualTable) -> None:
    """Let the table's page loads finish: they run off the event loop, so rows arrive a few ticks later."""
    await wait_for(pilot, lambda: not table.fetching and bool(table.rows))


# --- the widget over a million virtual rows (no store: the widget knows nothing of SQL) -----------------------

class NumbersApp(App):
    N = 1_000_000

    def __init__(self):
        super().__init__()
        self.calls: list[tuple] = []

    def fetch(self, after, limit, backward):   # a plain function: the widget runs it in a thread
        self.calls.append((after, limit, backward))
        if backward:
            end = self.N if after is None else after
            ids = range(max(0, end - limit), end)
        else:
            start = 0 if after is None else after + 1
            ids = range(start, min(self.N, start + limit))
        return [TableRow(i, (i, HOSTILE if i % 2 else f"row {i}"), data=i) for i in ids]

    def compose(self):
        yield VirtualTable([Column("id", 8, "right"), Column("text")], self.fetch, page_size=50)


async def test_virtual_table_scrolls_a_million_rows_by_keys_holding_only_a_few_pages():
    app = NumbersApp()
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.query_one(VirtualTable)
        table.focus()
        await settle(pilot, table)
        assert table.current.data == 0 and line(table, 1).strip().startswith("0")
        for key, expect in [("j", 1), ("down", 2), ("k", 1), ("pagedown", 23), ("pageup", 1)]:
            await pilot.press(key)
            assert table.current.data == expect, key
        for _ in range(40):
            await pilot.press("pagedown")
            await settle(pilot, table)
        assert table.current.data == 1 + 40 * 22
        assert table.position == table.current.data
        assert len(table.rows) <= table.max_rows
        await pilot.press("end")
        await wait_for(pilot, lambda: table.at_end and not table.fetching)
        assert table.current.data == app.N - 1
        await pilot.press("k", "k")
        assert table.current.data == app.N - 3
        await pilot.press("home")
        await wait_for(pilot, lambda: table.at_start and not table.fetching)
        assert table.current.data == 0 and table.position == 0
        assert max(limit for _, limit, _ in app.calls) == 50          # never more than a page per query
        assert all(after is None or isinstance(after, int) for after, _, _ in app.calls)


async def test_virtual_table_buffer_stays_contiguous_under_fast_keys():
    app = NumbersApp()
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.query_one(VirtualTable)
        table.focus()
        await settle(pilot, table)
        for keys in (["pagedown"] * 30, ["pageup"] * 12, ["j"] * 40, ["pagedown"] * 20, ["home"], ["pagedown"] * 5):
            await pilot.press(*keys)              # no waiting: pages arrive while keys are handled
            ids = [r.data for r in table.rows]
            assert ids == list(range(ids[0], ids[0] + len(ids))), keys[0]
            assert table.position is None or table.position == table.current.data
        await settle(pilot, table)
        ids = [r.data for r in table.rows]
        assert ids == list(range(ids[0], ids[0] + len(ids))) and len(ids) <= table.max_rows + table.page_size


class SlowEndApp(NumbersApp):
    """The last page takes until `release` is set (a slow End, as a search's End at 10M rows)."""

    def __init__(self):
        super().__init__()
        import threading
        self.release = threading.Event()

    def fetch(self, after, limit, backward):
        if backward and after is None:
            self.release.wait(10)
        return super().fetch(after, limit, backward)


async def test_home_pressed_while_end_loads_wins_over_it():
    """Home (or End) pressed while the other's page still loads: the rows held are the old ones (at the start), so
    Home only moved the cursor there, then End's page arrived and the table ended on the last row."""
    app = SlowEndApp()
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.query_one(VirtualTable)
        table.focus()
        await settle(pilot, table)
        await pilot.press("pagedown", "end")
        await pilot.pause(0.05)
        await pilot.press("home")
        app.release.set()
        await pilot.pause(0.2)
        await settle(pilot, table)
        assert table.current.data == 0 and table.position == 0 and table.at_start
        app.release.clear()
        await pilot.press("end")                  # and End pressed while Home loads... (Home is fast here)
        await pilot.pause(0.05)
        await pilot.press("end")                  # End twice: still one last page, no error
        app.release.set()
        await wait_for(pilot, lambda: table.at_end and not table.fetching)
        assert table.current.data == app.N - 1


async def test_virtual_table_cells_are_literal_single_lines():
    app = NumbersApp()
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.query_one(VirtualTable)
        await settle(pilot, table)
        text = line(table, 2)                     # row 1: the hostile text
        assert "[bold]x[/] [@click=app.quit]q[/]" in text
        assert "\x1b" not in text and "␛[31mred" in text
        assert "\n" not in text and "\t" not in text and "\u202e" not in text
        assert app.is_running                      # [@click=app.quit] did not become an action
        from rich.cells import cell_len
        assert cell_len(text) == 80


def test_fit_counts_wide_characters():
    assert fit("中文字符", 5) == "中文…"
    assert fit("ab", 4, "right") == "  ab"
    assert one_line("a\x00b\x1bc\n", 10) == "a␀b␛c "


# --- the Browse screen in the app -----------------------------------------------------------------------------

@pytest.fixture
def browse_store(db_path):
    conn = store.open_store(db_path)
    with store.transaction(conn):
        did = store.ensure_dataset(conn, "d")
        insert_samples(conn, did, [{"instruction": f"question {i} " + ("borrow" if i % 10 == 0 else "tax"),
                                    "response": "r" * i, "task_type": "code" if i % 2 else "qa",
                                    "status": "accepted" if i % 3 == 0 else "pending"} for i in range(300)])
        insert_samples(conn, did, [{"instruction": HOSTILE, "response": HOSTILE}])
        other = store.ensure_dataset(conn, "other")
        insert_samples(conn, other, [{"instruction": "elsewhere"}])
    with store.transaction(conn):
        for (sid,) in conn.execute("SELECT id FROM samples WHERE id % 4 = 0").fetchall():
            scores.record(conn, sid, "judge", sid % 10 + 1, (1, 10))
            scores.record(conn, sid, "curate", sid % 5 + 1, (1, 5))
    store.fts_sync(conn)
    yield conn
    conn.close()


async def open_browse(pilot, app):
    """The Browse screen and its table, once composed (the app opens it in a worker after start-up)."""
    await wait_for(pilot, lambda: type(app.screen).__name__ == "BrowseScreen" and hasattr(app.screen, "table"))
    return app.screen, app.screen.table


async def test_browse_shows_sorts_filters_and_searches(browse_store, db_path):
    app = WorkbenchApp(db=db_path, dataset="d", screen="browse")
    async with app.run_test(size=(80, 24)) as pilot:
        screen, table = await open_browse(pilot, app)
        await wait_for(pilot, lambda: table.rows and screen.total == 301)
        assert table.current.data.id == 1
        assert "elsewhere" not in "".join(str(r.cells) for r in table.rows)     # only dataset d

        await pilot.press("o")                       # sort by score (NULLs first), then reverse
        await pilot.press("r")
        # the sort and the first score shown are curate's (scores.PRIMARY_ORDER), every score with its scale
        await wait_for(pilot, lambda: not table.fetching and table.current.data.score == 5)
        got = [r.data.score for r in table.rows if r.data.score is not None]
        assert got == sorted(got, reverse=True)
        top = table.current
        assert top.cells[2] == f"curate 5/5 · judge {top.data.id % 10 + 1}/10"
        assert "curate first" in table.columns[2].title

        await pilot.press("slash")                   # sort by the judge instead: score:judge
        await pilot.press(*"score:judge", "enter")
        await wait_for(pilot, lambda: not table.fetching and table.current.data.score == 9)   # id % 10 is even: 1, 3, .., 9
        assert table.current.cells[2].startswith("judge 9/10 · curate")
        await pilot.press("slash")                   # a bare range is refused, naming the rubrics
        await pilot.press(*["backspace"] * 20, *"score:7..10", "enter")
        error = screen.query_one("#error")
        assert error.display and "rubrics present: curate, judge" in str(error.render())
        await pilot.press("escape")
        await pilot.press("slash")
        await pilot.press(*["backspace"] * 20, *"score:judge=8..10", "enter")
        await wait_for(pilot, lambda: screen.total is not None and not table.fetching)
        assert screen.total == browse_store.execute(
            "SELECT count(*) FROM sample_scores WHERE rubric = 'judge' AND score >= 8").fetchone()[0]
        await pilot.press("c")
        await wait_for(pilot, lambda: screen.total == 301)

        await pilot.press("slash")
        await pilot.press(*"borrow status:accepted")
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.total is not None and not table.fetching)
        expected = browse_store.execute(
            "SELECT count(*) FROM samples WHERE dataset_id = 1 AND status = 'accepted' AND instruction LIKE '%borrow'"
        ).fetchone()[0]
        assert screen.total == expected == len(table.rows) == 10
        assert all(r.data.status == "accepted" and "borrow" in r.data.instruction for r in table.rows)

        await pilot.press("f")                       # a bad filter is shown, the table keeps its rows
        await pilot.press(*"score:high", "enter")
        error = screen.query_one("#error")
        assert error.display and "score:high" in str(error.render())
        assert len(table.rows) == 10
        await pilot.press("escape")
        await pilot.press("c")                       # clear: everything in d again
        await wait_for(pilot, lambda: screen.total == 301)


async def test_browse_draws_hostile_text_literally_and_survives(browse_store, db_path):
    app = WorkbenchApp(db=db_path, dataset="d", screen="browse")
    async with app.run_test(size=(80, 24)) as pilot:
        screen, table = await open_browse(pilot, app)
        await wait_for(pilot, lambda: bool(table.rows))
        await pilot.press("end")
        await wait_for(pilot, lambda: table.at_end and table.current.data.id == 301)
        drawn = line(table, table.cursor_index - table.top_index + 1)
        assert "[bold]x[/]" in drawn and "\x1b" not in drawn
        assert app.is_running


async def test_enter_opens_the_sample_in_review_and_browse_shows_the_decision(browse_store, db_path):
    app = WorkbenchApp(db=db_path, dataset="d", screen="browse")
    async with app.run_test(size=(80, 24)) as pilot:
        screen, table = await open_browse(pilot, app)
        await wait_for(pilot, lambda: bool(table.rows))
        await pilot.press("j", "j", "j", "j")       # sample 5 (pending)
        assert table.current.data.id == 5 and table.current.data.status == "pending"
        await pilot.press("enter")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ReviewScreen"
                       and getattr(app.screen, "sample", None) and app.screen.sample["id"] == 5)
        await pilot.press("a")                       # accept it in Review
        await wait_for(pilot, lambda: browse_store.execute(
            "SELECT status FROM samples WHERE id = 5").fetchone()[0] == "accepted")
        await pilot.press("q")                       # back to Browse: same place, fresh status
        await wait_for(pilot, lambda: app.screen is screen)
        await wait_for(pilot, lambda: not table.fetching and table.current.data.id == 5
                       and table.current.data.status == "accepted")


async def test_search_indexes_rows_added_since_the_last_index_update(browse_store, db_path):
    with store.transaction(browse_store):
        insert_samples(browse_store, 1, [{"instruction": "a zebra appears", "response": "late"}])
    app = WorkbenchApp(db=db_path, dataset="d", screen="browse")
    async with app.run_test(size=(80, 24)) as pilot:
        screen, table = await open_browse(pilot, app)
        await wait_for(pilot, lambda: bool(table.rows))
        await pilot.press("slash", *"zebra", "enter")
        await wait_for(pilot, lambda: not table.fetching and len(table.rows) == 1 and screen.total == 1)
        assert table.current.data.instruction == "a zebra appears"
