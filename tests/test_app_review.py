"""The real app driven by Pilot at 80x24: every Review key, checked in the store (from another connection) afterwards."""
from __future__ import annotations

import re
import sqlite3

import orjson
import pytest
from textual.widgets import Input, TextArea

from screens.edit_dialog import from_display, to_display
from screens.review import ReviewScreen
from workbench import keymap, scores
from workbench.app import SCREEN_REGISTRY, WorkbenchApp
from workbench.samples import insert_samples
from workbench.store import ensure_dataset, open_store, transaction

from pilotkit import wait_for

SIZE = (80, 24)

HOSTILE = {
    "instruction": ("[bold]not bold[/] [/] [link=https://evil.example]click me[/link] [@click=app.quit]quit[/] "
                    "\x1b[31mred\x1b[0m \x1b]0;PWNED\x07 \x1b[2J \x00\x08\x7f\x9b "
                    "tab\there RTL: مرحبا بالعالم \u202eevil\u202c emoji 🤖👩‍🔬 CJK 漢字テスト"),
    "input": "line one\r\nline two\rcarriage return",
    "response": "y" * 100_000,
    "system": "[red]system[/red] \x1b[5mblink",
    "task_type": "[b]qa[/b]",
    "messages": None,
}
MULTI_TURN = {
    "instruction": "hi", "response": "bye",
    "messages": [{"role": "user", "content": "[i]hello[/i] there"},
                 {"role": "assistant", "content": "general kenobi \x1b[41m"},
                 {"role": "[@click=app.quit]", "content": "x"}],
}


def rows():
    out = [{"instruction": f"question {i}", "response": f"answer {i}", "task_type": "qa" if i % 2 else "code",
            "domain": "math"} for i in range(6)]
    out[3]["response"] = "the zebra answer"
    return out


@pytest.fixture
def store(db_path):
    conn = open_store(db_path)
    with transaction(conn):
        did = ensure_dataset(conn, "main")
        first, last = insert_samples(conn, did, rows())
        hostile_id, _ = insert_samples(conn, did, [HOSTILE])
        multi_id, _ = insert_samples(conn, did, [MULTI_TURN])
        other = ensure_dataset(conn, "other")
        insert_samples(conn, other, [{"instruction": "elsewhere", "response": "r"}])
    with transaction(conn):
        scores.record(conn, first + 1, "judge", 8, (1, 10))
        scores.record(conn, first + 1, "curate", 4, (1, 5))
    for judge in ("[bold]judge-a", "judge-b"):
        conn.execute("INSERT INTO judgments (sample_id, judge, rubric, rubric_version, scores, overall, rationale, "
                     "created_at) VALUES (?, ?, 'q', '1', ?, 7.5, ?, 'now')",
                     (hostile_id, judge, orjson.dumps({"clarity": 8, "[/]": 3}).decode(),
                      "[@click=app.quit]because \x1b[2J"))
    conn.close()
    ids = list(range(first, last + 1))
    return {"ids": ids, "hostile": hostile_id, "multi": multi_id, "db": db_path}


def peek(db_path, sql, params=()):
    """Read with a brand-new connection: sees only what is committed."""
    c = sqlite3.connect(str(db_path))
    try:
        return c.execute(sql, params).fetchall()
    finally:
        c.close()


def status_of(db_path, sid):
    return peek(db_path, "SELECT status FROM samples WHERE id = ?", (sid,))[0][0]




async def review_ready(pilot) -> ReviewScreen:
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, ReviewScreen))
    screen = pilot.app.screen
    await wait_for(pilot, lambda: not screen.opening and not screen.busy)
    await pilot.pause()
    return screen


async def press(pilot, *keys):
    """Press keys one at a time, each after the screen finished the previous one (as a curator does)."""
    for k in keys:
        await pilot.press(k)
        screen = pilot.app.screen
        if isinstance(screen, ReviewScreen):
            await wait_for(pilot, lambda: not screen.busy)
    await pilot.pause()


def app_for(store, **kw) -> WorkbenchApp:
    kw.setdefault("dataset", "main")
    kw.setdefault("screen", "review")
    return WorkbenchApp(db=store["db"], **kw)


def widget_text(widget) -> str:
    """Everything a widget draws (also the part scrolled out of view), as plain text."""
    from textual.geometry import Region
    return "\n".join(s.text for s in widget.render_lines(Region(0, 0, widget.size.width, widget.size.height)))


def block_text(screen, block: str) -> str:
    """Everything a block of Review's body draws (also the part scrolled out of view), as plain text."""
    return screen.body.text_of(block)


def screen_dump(app) -> tuple[str, str, list]:
    """(plain text on screen, raw bytes a terminal would receive, all segments) of a full repaint."""
    update = app.screen._compositor.render_full_update()
    lines, segments = [], []
    for line in update.strips:
        lines.append("".join(strip.text for strip in line))
        for strip in line:
            segments.extend(strip)
    return "\n".join(lines), update.render_segments(app.console), segments


async def test_review_keys_are_committed_before_the_next_sample_shows(store):
    ids, db = store["ids"], store["db"]
    app = app_for(store)
    async with app.run_test(size=SIZE) as pilot:
        screen = await review_ready(pilot)
        assert screen.sample["id"] == ids[0]                       # fresh dataset: first pending
        seen_at_show = []
        original_show = screen._show

        def checking_show(sample, note=None):
            # what a kill -9 right now would leave on disk: every decision made so far
            seen_at_show.append(peek(db, "SELECT count(*) FROM decisions")[0][0])
            original_show(sample, note)
        screen._show = checking_show

        await press(pilot, "a")
        assert status_of(db, ids[0]) == "accepted" and screen.sample["id"] == ids[1]
        await press(pilot, "x")
        assert status_of(db, ids[1]) == "rejected" and screen.sample["id"] == ids[2]
        await press(pilot, "s")
        await press(pilot, "space")
        assert screen.sample["id"] == ids[4]
        assert [status_of(db, i) for i in ids[2:4]] == ["pending", "pending"]
        assert seen_at_show == [1, 2, 3, 4]                         # committed before each show

        await press(pilot, "backspace")                             # undo the space-skip: back on ids[3]
        assert screen.sample["id"] == ids[3]
        await press(pilot, "u", "u", "u")                           # the s-skip, the reject, the accept
        assert screen.sample["id"] == ids[0]
        assert [status_of(db, i) for i in ids[:2]] == ["pending", "pending"]
        actions = [r[0] for r in peek(db, "SELECT action FROM decisions ORDER BY id")]
        assert actions == ["accept", "reject", "skip", "skip", "undo", "undo", "undo", "undo"]
        await press(pilot, "u")                                     # nothing left: says so, changes nothing
        assert "nothing left to undo" in screen.note
        assert len(peek(db, "SELECT id FROM decisions")) == 8

        await press(pilot, "j")
        assert screen.sample["id"] == ids[1]
        await press(pilot, "down", "down")
        assert screen.sample["id"] == ids[3]
        await press(pilot, "k")
        assert screen.sample["id"] == ids[2]
        await press(pilot, "up")
        assert screen.sample["id"] == ids[1]
        await press(pilot, "right", "left")
        assert screen.sample["id"] == ids[1]

        await press(pilot, "a")                                     # accept ids[1], then jump to first pending
        await press(pilot, "j", "j", "g")
        assert screen.sample["id"] == ids[0]
        assert screen.stats.decisions == 5 and screen.stats.undos == 4
        text, _, _ = screen_dump(app)
        assert "session 5 (4 undone)" in text
        assert f"#{ids[0]}" in text and "PENDING" in text


async def test_hostile_text_is_shown_literally(store):
    app = app_for(store, sample_id=store["hostile"])
    async with app.run_test(size=SIZE) as pilot:
        screen = await review_ready(pilot)
        assert screen.sample["id"] == store["hostile"]
        text, raw, segments = screen_dump(app)
        for literal in ("[bold]not bold[/]", "[/]", "[link=https://evil.example]", "[@click=app.quit]quit[/]",
                        "␛[31mred␛[0m", "␛]0;PWNED␇", "␛[2J", "␀␈␡<U+009B>", "[red]system[/red]", "[b]qa[/b]",
                        "<U+202E>evil", "🤖", "漢字テスト", "مرحبا"):
            assert literal in text.replace("\n", ""), literal
        assert re.search(r"tab {1,4}here", text) and "\t" not in raw
        # nothing from the data reached the terminal as a control sequence
        for bad in ("\x1b]0;PWNED", "\x1b[2J", "\x1b[31mred", "\x1b[5m", "\x07", "\x00", "\x9b", "\u202e"):
            assert bad not in raw, repr(bad)
        assert not any(seg.style and (seg.style.link or (seg.style.meta or {}).get("@click"))
                       for seg in segments)
        # the 100k-character response is capped (only its first 64 KB loaded), with the ways to see more
        response = screen.body.block("response")
        assert screen.sample["clipped"] == {"response": 100_000}
        assert response.hidden == 100_000 - 4000
        assert "96,000 more bytes of 100,000 not shown (m: show more · p: $PAGER)" in block_text(screen, "response")
        await press(pilot, "m")
        assert response.hidden == 100_000 - 16_000
        for page in (2, 3, 4, 5):                                   # then page by page through the 64 KB loaded
            await press(pilot, "m")
            assert response.hidden == max(100_000 - 16_000 * page, 100_000 - 65_536)
        assert "Response · from character 64,001" in block_text(screen, "response")
        await press(pilot, "m")                                     # as far as m goes: the pager has the rest
        assert response.hidden == 100_000 - 65_536
        await press(pilot, "pagedown", "pageup")
        # clicking the text runs nothing: [@click=app.quit] is text, not an action
        await pilot.click("#body")
        await pilot.pause()
        assert app.is_running

        await press(pilot, "j")                                     # the multi-turn sample
        assert screen.sample["id"] == store["multi"]
        text, raw, _ = screen_dump(app)
        assert "[i]hello[/i] there" in text and "general kenobi ␛[41m" in text and "[@click=app.quit]" in text
        assert "\x1b[41m" not in raw


async def test_scores_and_lineage_show_each_judge(store):
    app = app_for(store, sample_id=store["hostile"])
    async with app.run_test(size=SIZE) as pilot:
        screen = await review_ready(pilot)
        scores = block_text(screen, "scores")
        for part in ("[bold]judge-a", "judge-b", "clarity", "[/]", "overall", "7.5",
                     "[@click=app.quit]because ␛[2J"):
            assert part in scores, part
        assert "no lineage recorded" in block_text(screen, "lineage")
        await press(pilot, "j")
        assert "not judged yet" in block_text(screen, "scores")


async def open_edit(pilot, app):
    await pilot.press("e")
    await wait_for(pilot, lambda: type(app.screen).__name__ == "EditDialog")
    return app.screen


async def append_and_save(pilot, app, screen, area, keys: str):
    """Type at the end of a text area, save with ctrl+s, and wait until Review has stored the edit."""
    area.focus()
    area.move_cursor(area.document.end)
    await pilot.press(*keys)
    await pilot.press("ctrl+s")
    await wait_for(pilot, lambda: isinstance(app.screen, ReviewScreen))
    await wait_for(pilot, lambda: not screen.busy)


async def test_edit_dialog_stores_before_and_after_and_keeps_control_chars(store):
    db, sid = store["db"], store["hostile"]
    app = app_for(store, sample_id=sid)
    async with app.run_test(size=SIZE) as pilot:
        screen = await review_ready(pilot)
        dialog = await open_edit(pilot, app)
        area = dialog.query_one("#edit-input", TextArea)
        assert "␍" in area.text and "\r" not in area.text          # control chars shown as symbols in the editor
        await append_and_save(pilot, app, screen, area, "!!")
        row = peek(db, "SELECT instruction, input FROM samples WHERE id = ?", (sid,))[0]
        assert row[0] == HOSTILE["instruction"]                     # untouched field: byte for byte the same
        assert row[1] == HOSTILE["input"] + "!!"                    # \r\n and lone \r kept exactly
        before, after = peek(db, "SELECT before, after FROM decisions WHERE action = 'edit'")[0]
        assert orjson.loads(before) == {"input": HOSTILE["input"]}
        assert orjson.loads(after) == {"input": row[1]}
        assert "edited input" in screen.note

        await open_edit(pilot, app)                                 # Escape cancels: nothing written
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, ReviewScreen))
        assert len(peek(db, "SELECT id FROM decisions")) == 1

        await press(pilot, "u")                                     # undo the edit
        assert peek(db, "SELECT input FROM samples WHERE id = ?", (sid,))[0][0] == HOSTILE["input"]


async def test_edit_dialog_edits_a_turn_no_field_mirrors(store):
    db, sid = store["db"], store["multi"]
    app = app_for(store, sample_id=sid)
    async with app.run_test(size=SIZE) as pilot:
        screen = await review_ready(pilot)
        dialog = await open_edit(pilot, app)
        assert [str(l.render()) for l in dialog.query("Label")][1] == "Turn 3 · [@click=app.quit]"   # literal role
        await append_and_save(pilot, app, screen, dialog.query_one("#edit-turn-2", TextArea), "yz")
        msgs = orjson.loads(peek(db, "SELECT messages FROM samples WHERE id = ?", (sid,))[0][0])
        assert msgs == [*MULTI_TURN["messages"][:2], {**MULTI_TURN["messages"][2], "content": "xyz"}]
        assert peek(db, "SELECT instruction, response FROM samples WHERE id = ?", (sid,))[0] == ("hi", "bye")
        await press(pilot, "u")
        msgs = orjson.loads(peek(db, "SELECT messages FROM samples WHERE id = ?", (sid,))[0][0])
        assert msgs == MULTI_TURN["messages"]


def test_editor_stand_ins_round_trip():
    for value in (HOSTILE["instruction"], HOSTILE["input"], "plain text", "\x1b\x1b", "a\u202eb\x85c"):
        shown, reverse = to_display(value)
        assert not any(ord(c) < 32 and c not in "\n\t" for c in shown)
        assert from_display(shown, reverse) == value
    # text that already holds a stand-in symbol: shown as is, not mapped back
    assert to_display("␛ already") == ("␛ already", False)


async def test_search_and_filter(store):
    ids, db = store["ids"], store["db"]
    app = app_for(store)
    async with app.run_test(size=SIZE) as pilot:
        screen = await review_ready(pilot)
        await wait_for(pilot, lambda: peek(db, "SELECT value FROM meta WHERE key = 'fts_upto'"))  # synced on open
        await pilot.press("slash")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "SearchDialog")
        await pilot.press(*"zebra", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ReviewScreen) and not screen.busy)
        assert screen.sample["id"] == ids[3] and screen.flt.search == "zebra"
        await press(pilot, "j")
        assert screen.sample["id"] == ids[3] and "last sample" in screen.note
        await pilot.press("slash")                                  # a search with no hit leaves all as it was
        await wait_for(pilot, lambda: type(app.screen).__name__ == "SearchDialog")
        app.screen.query_one(Input).value = ""
        await pilot.press(*"nothingmatches", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ReviewScreen) and not screen.busy)
        assert screen.flt.search == "zebra" and "nothing matches" in screen.note
        await pilot.press("slash")                                  # empty search clears it
        await wait_for(pilot, lambda: type(app.screen).__name__ == "SearchDialog")
        app.screen.query_one(Input).value = ""
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ReviewScreen) and not screen.busy)
        assert screen.flt.search is None

        await press(pilot, "g", "a")                                # accept ids[0]
        # filter: status = accepted (first field: Enter opens the list, down twice, Enter picks)
        await pilot.press("f")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "FilterDialog")
        await pilot.press("enter", "down", "down", "enter", "ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, ReviewScreen) and not screen.busy)
        assert screen.flt.status == "accepted" and screen.sample["id"] == ids[0]
        await press(pilot, "j")
        assert screen.sample["id"] == ids[0]                        # the only accepted one
        # filter: min score 7, status any again
        await pilot.press("f")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "FilterDialog")
        await pilot.press("ctrl+r", "tab", *"judge=7", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ReviewScreen) and not screen.busy)
        assert screen.flt.status is None and screen.flt.min_score == "judge=7"
        assert screen.sample["id"] == ids[1]
        # the meta line shows every score with its scale
        assert "curate 4/5 · judge 8/10" in block_text(screen, "meta")
        # bad score input: an error in the dialog naming the rubrics, filter unchanged
        for bad, message in (("7", "name the rubric"), ("judge=abc", "not a number"),
                             ("curate=7", "outside curate's scale 1-5"), ("juge=7", "no sample in scope has a 'juge' score")):
            await pilot.press("f")
            await wait_for(pilot, lambda: type(app.screen).__name__ == "FilterDialog")
            dialog = app.screen
            await pilot.press("tab", *["backspace"] * 10, *bad, "enter")
            assert type(app.screen).__name__ == "FilterDialog"
            assert message in widget_text(dialog.query_one("#error")), bad
            await pilot.press("escape")
            await wait_for(pilot, lambda: isinstance(app.screen, ReviewScreen))
            assert screen.flt.min_score == "judge=7"
        # the filter is saved with the position: a reopened Review walks the same filter
        saved = orjson.loads(peek(db, "SELECT value FROM meta WHERE key LIKE 'review.position.%'")[0][0])
        assert saved["filter"]["min_score"] == "judge=7" and saved["sample_id"] == ids[1]


async def test_undo_and_resume_after_restart(store):
    ids, db = store["ids"], store["db"]
    async with app_for(store).run_test(size=SIZE) as pilot:
        await review_ready(pilot)
        await press(pilot, "a", "x", "j")
        assert pilot.app.screen.sample["id"] == ids[3]
    assert [status_of(db, i) for i in ids[:2]] == ["accepted", "rejected"]
    async with app_for(store).run_test(size=SIZE) as pilot:      # a new process, as far as the store can tell
        screen = await review_ready(pilot)
        assert screen.sample["id"] == ids[3]                        # resumed where the curator left off
        await press(pilot, "u")
        assert screen.sample["id"] == ids[1] and status_of(db, ids[1]) == "pending"
        await press(pilot, "u")
        assert screen.sample["id"] == ids[0] and status_of(db, ids[0]) == "pending"
    assert [r[0] for r in peek(db, "SELECT action FROM decisions ORDER BY id")] == \
        ["accept", "reject", "undo", "undo"]


async def test_datasets_home_counts_live_updates_and_enter_opens_review(store):
    db = store["db"]
    app = WorkbenchApp(db=db)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: type(app.screen).__name__ == "DatasetsScreen" and app.screen.loaded)
        home = app.screen
        text, _, _ = screen_dump(app)
        assert "main" in text and "other" in text and "0%" in text
        # another process imports a dataset and reviews: the home screen follows without a key press
        c = open_store(db)
        with transaction(c):
            insert_samples(c, ensure_dataset(c, "late"), [{"instruction": "n", "response": "r"}] * 2)
        c.execute("UPDATE samples SET status = 'accepted' WHERE id = ?", (store["ids"][0],))
        c.close()
        await wait_for(pilot, lambda: any(d["name"] == "late" for d in home.datasets))
        main = next(d for d in home.datasets if d["name"] == "main")
        assert (main["rows"], main["accepted"], main["pending"]) == (8, 1, 7)
        await pilot.press("enter")                                  # cursor on the first row: main
        screen = await review_ready(pilot)
        assert screen.dataset_name == "main"
        await pilot.press("escape")                                 # back home (Esc is off the review path)
        await wait_for(pilot, lambda: app.screen is home)
        await pilot.press("down", "r")
        screen = await review_ready(pilot)
        assert screen.dataset_name == "other"
        await pilot.press("q")
        await wait_for(pilot, lambda: app.screen is home)


async def test_help_lists_every_key_and_theme_and_palette(store, tmp_path):
    app = app_for(store)
    async with app.run_test(size=SIZE) as pilot:
        await review_ready(pilot)
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "HelpScreen")
        from screens.help import help_renderable
        from rich.console import Console
        console = Console(width=120, record=True, file=open("/dev/null", "w"))
        console.print(help_renderable({}))
        listing = console.export_text()
        for spec in keymap.BY_ID.values():
            assert spec.id in listing, spec.id
        for k in ("a ", "x ", "s, space", "u, bksp", "j, ↓, →", "k, ↑, ←", "/ ", "f ", "g ", "e "):
            assert k in listing, k
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, ReviewScreen))
        theme = app.theme
        await pilot.press("ctrl+t")
        assert app.theme != theme and app.theme in ("textual-light", "textual-dark")
        titles = [c.title for c in app.get_system_commands(app.screen)]
        for name in SCREEN_REGISTRY:
            if name != "datasets":
                assert any(name.lower() in t.lower() for t in titles), name
        assert "Toggle light/dark theme" in titles
    # the toggle is remembered for the next run, unless the config names a theme
    async with app_for(store).run_test(size=SIZE) as pilot:
        assert pilot.app.theme == app.theme
    config = tmp_path / "explicit.toml"
    config.write_text(f'[ui]\ntheme = "{"dark" if app.theme == "textual-light" else "light"}"\n')
    async with app_for(store, config=config).run_test(size=SIZE) as pilot:
        assert pilot.app.theme != app.theme


async def test_keys_remapped_from_config(store, tmp_path):
    cfg = tmp_path / "keys.toml"
    cfg.write_text('[keys]\n"review.accept" = "y"\n[keys.review]\nreject = ["n"]\n')
    db, ids = store["db"], store["ids"]
    app = app_for(store, config=cfg)
    async with app.run_test(size=SIZE) as pilot:
        screen = await review_ready(pilot)
        await press(pilot, "a")                                     # no longer bound
        assert status_of(db, ids[0]) == "pending" and screen.sample["id"] == ids[0]
        await press(pilot, "y", "n")
        assert [status_of(db, i) for i in ids[:2]] == ["accepted", "rejected"]


async def test_first_run_imports_the_bundled_sample(db_path):
    app = WorkbenchApp(db=db_path)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: type(app.screen).__name__ == "DatasetsScreen")
        # the import commits in batches and the table follows the store's commits: wait for the last one
        await wait_for(pilot, lambda: app.screen.datasets and app.screen.datasets[0]["rows"] == 175, timeout=60)
        rows = app.screen.datasets[0]["rows"]
        assert rows == 175 and app.sample_import
    assert peek(db_path, "SELECT count(*) FROM samples")[0][0] == rows


def test_cli_review_rejects_unknown_dataset(store, cli):
    code, out, err = cli("review", "--dataset", "nope", "--db", str(store["db"]))
    assert code == 2 and "no dataset named 'nope'" in err and "main" in err
    code, out, err = cli("review", "--dataset", "main", "--sample", "99999", "--db", str(store["db"]))
    assert code == 2 and "no sample with id 99999" in err


def test_bad_keymap_stops_before_the_tui(tmp_path, capsys):
    from workbench.app import run_app
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[keys]\n"review.accept" = "x"\n')
    assert run_app(db=tmp_path / "s.db", config=cfg) == 1
    assert "bound to both" in capsys.readouterr().err


async def test_home_keys_open_the_registered_screens(store):
    from workbench.app import screen_class
    app = WorkbenchApp(db=store["db"])
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: type(app.screen).__name__ == "DatasetsScreen" and app.screen.loaded)
        home = app.screen
        footer_actions = {b.action for _, b, enabled, _ in home.active_bindings.values() if b.show and enabled}
        for spec in keymap.SPECS["datasets"]:
            if not spec.action.startswith("open("):
                continue
            name = spec.action[6:-2]
            if name in SCREEN_REGISTRY:
                assert spec.action in footer_actions
                await pilot.press(spec.keys.split(",")[0])
                await wait_for(pilot, lambda: app.screen is not home)
                assert isinstance(app.screen, screen_class(name)), name
                app.pop_screen()
                await wait_for(pilot, lambda: app.screen is home)
            else:                                   # not installed: no key in the footer, the key does nothing
                assert spec.action not in footer_actions
                await pilot.press(spec.keys.split(",")[0])
                await pilot.pause()
                assert app.screen is home
        # the command palette's commands open screens too
        review_cmd = next(c for c in app.get_system_commands(home) if c.title == "Review")
        review_cmd.callback()
        screen = await review_ready(pilot)
        assert screen.dataset_name == "main"                        # the dataset under the cursor


async def test_preference_rows_show_chosen_and_rejected(store):
    c = open_store(store["db"])
    with transaction(c):
        sid, _ = insert_samples(c, ensure_dataset(c, "main"), [{
            "instruction": "which is better?", "response": "the chosen one", "rejected": "the rejected one",
            "messages": [{"role": "user", "content": "which is better?"}]}])
    c.close()
    async with app_for(store, sample_id=sid).run_test(size=SIZE) as pilot:
        screen = await review_ready(pilot)
        text = "\n".join(block_text(screen, w) for w in ("conversation", "response", "rejected"))
        assert "which is better?" in text
        assert "Chosen response" in text and "the chosen one" in text
        assert "Rejected response" in text and "the rejected one" in text
        assert not screen.body.block("instruction").display        # mirrored by the conversation's user turn


async def test_slow_store_keeps_the_old_sample_marked_loading_and_applies_keys_typed_meanwhile_next(store, monkeypatch):
    import threading
    from workbench import review
    ids, db = store["ids"], store["db"]
    gate = threading.Event()
    real_goto = review.goto

    def slow_goto(conn, flt, how, ref=None):
        if how == "next":
            gate.wait(10)                        # the store is busy (a long write elsewhere, a slow disk)
        return real_goto(conn, flt, how, ref)
    app = app_for(store)
    async with app.run_test(size=SIZE) as pilot:
        screen = await review_ready(pilot)
        monkeypatch.setattr(review, "goto", slow_goto)
        await pilot.press("a")
        await wait_for(pilot, lambda: screen._loading_marked)
        await pilot.pause()
        text, _, _ = screen_dump(app)
        assert "loading…" in text and screen.sample["id"] == ids[0]   # stale sample stays, marked
        assert status_of(db, ids[0]) == "accepted"                      # the decision is already on disk
        await pilot.press("x")                                          # typed ahead: for the next sample
        await pilot.press("question_mark")                              # the UI still answers
        await wait_for(pilot, lambda: type(app.screen).__name__ == "HelpScreen")
        await pilot.press("escape")
        gate.set()
        await wait_for(pilot, lambda: isinstance(app.screen, ReviewScreen) and not screen.busy)
        await pilot.pause()
        assert screen.sample["id"] == ids[2]
        text, _, _ = screen_dump(app)
        assert "loading…" not in text
        assert peek(db, "SELECT sample_id, action FROM decisions ORDER BY id") == [(ids[0], "accept"),
                                                                                   (ids[1], "reject")]


async def test_a_store_the_app_cannot_open_exits_with_the_reason(tmp_path):
    db = tmp_path / "future.db"
    c = sqlite3.connect(db)
    c.execute("PRAGMA user_version = 999")
    c.close()
    app = WorkbenchApp(db=db)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.return_code is not None)
    assert app.return_code == 1


def test_cli_review_opens_the_app_on_review(store, cli, monkeypatch):
    import workbench.app
    calls = []
    monkeypatch.setattr(workbench.app, "run_app", lambda **kw: calls.append(kw) or 0)
    code, out, err = cli("review", "--dataset", "main", "--sample", str(store["ids"][2]), "--db", str(store["db"]))
    assert code == 0, err
    assert calls == [{"db": str(store["db"]), "config": None, "dataset": "main", "screen": "review",
                      "sample_id": store["ids"][2], "selection": None}]
    code, out, err = cli("review", "--dataset", "main", "--selection", "nope", "--db", str(store["db"]))
    assert code == 2 and "no selection named 'nope'" in err and len(calls) == 1


async def test_a_store_error_is_reported_and_the_app_keeps_running(store):
    ids, db = store["ids"], store["db"]
    async with app_for(store).run_test(size=SIZE) as pilot:
        screen = await review_ready(pilot)
        c = sqlite3.connect(db)                      # another process deletes the sample on screen
        c.execute("DELETE FROM samples WHERE id = ?", (ids[0],))
        c.commit()
        c.close()
        await press(pilot, "a")
        assert app_running(pilot) and "no sample with id" in screen.note
        assert peek(db, "SELECT count(*) FROM decisions")[0][0] == 0
        await press(pilot, "j")                      # and the curator carries on
        assert screen.sample["id"] == ids[1]
        await press(pilot, "a")
        assert status_of(db, ids[1]) == "accepted"


def app_running(pilot) -> bool:
    return pilot.app.is_running and pilot.app.return_code is None


KILL_CHILD = r'''
import asyncio, os, signal, sys
from screens.review import ReviewScreen
from workbench.app import WorkbenchApp

async def main():
    app = WorkbenchApp(db=sys.argv[1], dataset="main", screen="review")
    async with app.run_test(size=(80, 24)) as pilot:
        while not (isinstance(app.screen, ReviewScreen) and app.screen.sample and not app.screen.busy):
            await asyncio.sleep(0.01)
        screen = app.screen
        for key in "axa":
            shown = screen.sample["id"]
            await pilot.press(key)
            while screen.sample["id"] == shown:
                await asyncio.sleep(0.001)
        print(screen.sample["id"], flush=True)
        os.kill(os.getpid(), signal.SIGKILL)       # no shutdown, no flush, no atexit

asyncio.run(main())
'''


def test_kill_9_right_after_the_next_sample_shows_loses_no_decision(store, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    script = tmp_path / "kill_child.py"
    script.write_text(KILL_CHILD)
    proc = subprocess.run([sys.executable, str(script), str(store["db"])], capture_output=True, text=True,
                          cwd=root, timeout=120, env={**os.environ, "PYTHONPATH": str(root)})
    assert proc.returncode == -9, proc.stderr[-2000:]
    ids = store["ids"]
    assert int(proc.stdout.split()[-1]) == ids[3]
    assert [status_of(store["db"], i) for i in ids[:3]] == ["accepted", "rejected", "accepted"]
    assert [r[0] for r in peek(store["db"], "SELECT action FROM decisions ORDER BY id")] == \
        ["accept", "reject", "accept"]


async def test_a_spot_check_is_walked_in_order_with_scores_hidden_until_decided(store):
    """`workbench review --selection NAME` on a spot-check: only its samples, in id order; the judge's scores
    (meta line, scores table, candidates' overall) stay hidden until the curator decides each one."""
    from workbench import agreement
    ids = store["ids"]
    conn = open_store(store["db"])
    with transaction(conn):
        for sid, v in zip(ids, (2, 9, 2, 9, 5, 5)):
            scores.record(conn, sid, "judge", v, (1, 10))
    picked = agreement.spotcheck(conn, "main", "judge", fraction=0.5, seed=1)["ids"]
    conn.close()
    assert len(picked) == 3 and picked == sorted(picked)
    app = app_for(store, selection="spotcheck-main-judge")
    async with app.run_test(size=SIZE) as pilot:
        screen = await review_ready(pilot)
        assert screen.sample["id"] == picked[0] and screen.flt.selection == "spotcheck-main-judge"
        meta = block_text(screen, "meta")
        assert "scores hidden until you decide" in meta and "judge" not in meta
        assert not screen.body.block("scores").display
        await press(pilot, "a")                                    # decided: on to the next one of the selection
        assert screen.sample["id"] == picked[1] and screen.sample["blind"]
        await press(pilot, "k")                                    # back to the decided one: its score is shown
        assert screen.sample["id"] == picked[0] and not screen.sample["blind"]
        assert "judge " in block_text(screen, "meta") and screen.body.block("scores").display
        await press(pilot, "j", "j", "j")                          # never leaves the selection
        assert screen.sample["id"] == picked[2]
        await press(pilot, "u")                                    # the undone decision hides the score again
        assert screen.sample["id"] == picked[0] and screen.sample["blind"]


async def test_review_freezes_what_the_app_holds_while_open_and_unfreezes_it_when_closed(store):
    """A full garbage collection during the keys walks only what Review allocates since it opened (at 1M rows in
    tmux one walked everything, 50-200 ms, about every 60 keys); leaving Review lets its objects be collected."""
    import gc
    gc.unfreeze()
    app = app_for(store)
    async with app.run_test(size=SIZE) as pilot:
        screen = await review_ready(pilot)
        await wait_for(pilot, lambda: screen.first_shown_at is not None)
        assert gc.get_freeze_count() > 0
        await press(pilot, "escape")                           # back to Datasets: the Review screen is gone
        await wait_for(pilot, lambda: not isinstance(app.screen, ReviewScreen))
        await wait_for(pilot, lambda: gc.get_freeze_count() == 0)
