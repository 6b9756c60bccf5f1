"""Import and export dialogs in the real app: preview before import, errors shown literally with the store
unchanged, and the store / files checked afterwards."""
from __future__ import annotations

import hashlib
import json

import pytest

from workbench import scores, store
from workbench.app import WorkbenchApp
from workbench.samples import insert_samples
from pilotkit import wait_for




def text_of(screen, selector: str) -> str:
    return str(screen.query_one(selector).render())


@pytest.fixture
def seeded(db_path):
    """A store that already has a dataset (so the first-run sample import stays out of the way)."""
    conn = store.open_store(db_path)
    with store.transaction(conn):
        did = store.ensure_dataset(conn, "d")
        insert_samples(conn, did, [{"instruction": f"q{i}", "response": f"a{i}", "task_type": "qa" if i % 2 else "code",
                                    "status": "accepted" if i % 3 == 0 else "pending"} for i in range(30)])
    with store.transaction(conn):
        for (sid,) in conn.execute("SELECT id FROM samples").fetchall():
            scores.record(conn, sid, "judge", sid % 10 + 1, (1, 10))
    yield conn
    conn.close()


async def open_dialog(pilot, app, name: str):
    await wait_for(pilot, lambda: type(app.screen).__name__ == "DatasetsScreen")
    app.open_screen(name)
    await wait_for(pilot, lambda: type(app.screen).__name__ == name.capitalize() + "Dialog"
                   and bool(app.screen.query("#message")))
    await pilot.pause(0.05)
    return app.screen


async def type_into(pilot, screen, selector: str, value: str):
    box = screen.query_one(selector)
    box.focus()
    box.value = value                     # (posts Input.Changed like typing does)
    await pilot.pause(0.05)


# --- import ------------------------------------------------------------------------------------------------------

async def test_import_shows_format_mapping_and_preview_then_imports(seeded, db_path, shared_data):
    src = shared_data / "oasst-en100" / "oasst_en100_preference.jsonl"
    app = WorkbenchApp(db=db_path)
    async with app.run_test(size=(80, 24)) as pilot:
        dialog = await open_dialog(pilot, app, "import")
        await type_into(pilot, dialog, "#path", str(src))
        await wait_for(pilot, lambda: dialog.detection is not None)
        shown = text_of(dialog, "#detection")
        assert "Detected: preference (preference)" in shown and "Mapping:" in shown and "row 1" in shown
        assert "401k" in shown                                            # a preview row, before any import
        assert dialog.query_one("#dataset").value == "oasst_en100_preference"
        assert seeded.execute("SELECT count(*) FROM datasets").fetchone()[0] == 1   # nothing written yet
        await type_into(pilot, dialog, "#dataset", "prefs")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: dialog.result is not None or "Not imported" in text_of(dialog, "#message"))
        assert dialog.result is not None, text_of(dialog, "#message")
        assert "Imported 212 rows into prefs" in text_of(dialog, "#message")
        n = seeded.execute("SELECT count(*) FROM samples WHERE dataset_id = (SELECT id FROM datasets WHERE name = "
                           "'prefs')").fetchone()[0]
        assert n == 212
        assert app.current_dataset == "prefs"
        await pilot.press("escape")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "DatasetsScreen")
        # back home, the new dataset is the one under the cursor (Enter reviews it), not the one highlighted before
        await wait_for(pilot, lambda: app.screen.selected_name() == "prefs")
        await pilot.pause(0.2)
        assert app.current_dataset == "prefs" and app.screen.selected_name() == "prefs"


async def test_a_bad_file_is_explained_with_line_and_field_and_the_store_is_unchanged(seeded, db_path, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "ok", "output": "fine"}\n'
                   '{"instruction": "[bold]two[/]", "output": "\\u001b[31mred"}\n'
                   '{"instruction": "broken", "output": \n')
    before = seeded.execute("SELECT count(*) FROM samples").fetchone()[0]
    app = WorkbenchApp(db=db_path)
    async with app.run_test(size=(80, 24)) as pilot:
        dialog = await open_dialog(pilot, app, "import")
        await type_into(pilot, dialog, "#path", str(bad))
        await wait_for(pilot, lambda: "line 3" in text_of(dialog, "#detection"))
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: "Not imported" in text_of(dialog, "#message"))
        message = text_of(dialog, "#message")
        assert str(bad) in message and "line 3" in message and "unchanged" in message
        assert seeded.execute("SELECT count(*) FROM samples").fetchone()[0] == before
        assert seeded.execute("SELECT count(*) FROM datasets WHERE name = 'bad'").fetchone()[0] == 0

        dialog.query_one("#skip").value = True                             # skip it, and see the reason
        await wait_for(pilot, lambda: dialog.detection is not None)
        shown = text_of(dialog, "#detection")
        assert "[bold]two[/]" in shown and "\x1b" not in shown              # preview is literal text
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: dialog.result is not None)
        message = text_of(dialog, "#message")
        assert "Imported 2 rows into bad" in message and "1 rows skipped" in message and "line 3" in message
        assert seeded.execute("SELECT count(*) FROM samples").fetchone()[0] == before + 2
        assert app.is_running


async def test_a_missing_file_is_named(seeded, db_path, tmp_path):
    app = WorkbenchApp(db=db_path)
    async with app.run_test(size=(80, 24)) as pilot:
        dialog = await open_dialog(pilot, app, "import")
        await type_into(pilot, dialog, "#path", str(tmp_path / "nope.jsonl"))
        await wait_for(pilot, lambda: "no such file" in text_of(dialog, "#detection"))
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: "Not imported" in text_of(dialog, "#message"))
        assert "nope.jsonl" in text_of(dialog, "#message")


# --- export ------------------------------------------------------------------------------------------------------

async def test_export_with_filters_writes_the_file_and_reports_rows_and_sha256(seeded, db_path, tmp_path):
    out = tmp_path / "out" / "accepted.jsonl"
    app = WorkbenchApp(db=db_path, dataset="d")
    async with app.run_test(size=(80, 24)) as pilot:
        dialog = await open_dialog(pilot, app, "export")
        await wait_for(pilot, lambda: dialog.query_one("#dataset").value == "d")
        assert dialog.query_one("#path").value.endswith("d-not-rejected.jsonl")   # suggested name follows choices
        dialog.query_one("#status").value = "accepted"
        await pilot.pause(0.05)
        assert dialog.query_one("#path").value.endswith("d-accepted.jsonl")
        await type_into(pilot, dialog, "#min_score", "judge=3")
        await type_into(pilot, dialog, "#task_type", "code")
        await type_into(pilot, dialog, "#path", str(out))
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: dialog.result is not None or "Not exported" in text_of(dialog, "#message"))
        assert dialog.result is not None, text_of(dialog, "#message")
        expected = seeded.execute("SELECT instruction FROM samples WHERE status = 'accepted' AND id % 10 + 1 >= 3 "
                                  "AND task_type = 'code' ORDER BY id").fetchall()
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert [r["instruction"] for r in rows] == [e[0] for e in expected] and rows
        digest = hashlib.sha256(out.read_bytes()).hexdigest()
        message = text_of(dialog, "#message")
        assert f"Exported {len(rows)} rows (alpaca)" in message and digest in message
        snap = seeded.execute("SELECT sha256, filters FROM snapshots ORDER BY id DESC LIMIT 1").fetchone()
        assert snap[0] == digest and json.loads(snap[1]) == {"dataset": "d", "status": "accepted",
                                                              "min_score": "judge=3", "task_type": "code"}
        assert "excluded by status" in message
        # the same file again: refused until "replace existing files" is ticked
        before = out.read_bytes()
        dialog.result = None
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: "Not exported" in text_of(dialog, "#message"))
        assert "exists" in text_of(dialog, "#message") and out.read_bytes() == before
        dialog.query_one("#force").value = True
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: dialog.result is not None)
        assert seeded.execute("SELECT count(*) FROM snapshots").fetchone()[0] == 2


async def test_export_errors_are_shown_and_nothing_is_written(seeded, db_path, tmp_path):
    app = WorkbenchApp(db=db_path)
    async with app.run_test(size=(80, 24)) as pilot:
        dialog = await open_dialog(pilot, app, "export")
        await type_into(pilot, dialog, "#min_score", "judge=high")
        await type_into(pilot, dialog, "#path", str(tmp_path / "x.jsonl"))
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: "'high' is not a number" in text_of(dialog, "#message"))
        await type_into(pilot, dialog, "#min_score", "3")                  # which rubric's 3?
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: "name the rubric" in text_of(dialog, "#message"))
        await type_into(pilot, dialog, "#min_score", "curate=3")           # no such scores: said, with the rubrics
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: "rubrics present: judge" in text_of(dialog, "#message"))
        assert not (tmp_path / "x.jsonl").exists()
        await type_into(pilot, dialog, "#min_score", "")
        await type_into(pilot, dialog, "#path", str(tmp_path))              # a directory holding the store
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: "Not exported" in text_of(dialog, "#message"))
        assert "not empty" in text_of(dialog, "#message")
        await type_into(pilot, dialog, "#path", str(db_path))               # the store itself: never
        dialog.query_one("#force").value = True
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: "workbench store" in text_of(dialog, "#message"))
        assert not (tmp_path / "x.jsonl").exists()
        assert seeded.execute("SELECT count(*) FROM snapshots").fetchone()[0] == 0
