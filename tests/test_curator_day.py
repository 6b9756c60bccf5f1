"""A curator's day (issue 16): Review in Browse's order, hh pairs read top-down, automatic rejections explained and
overridable, curator-only progress, help and footer, list keys. The real app driven by Pilot over a real store."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from workbench import store
from workbench.app import WorkbenchApp
from workbench.samples import insert_samples

from pilotkit import wait_for


def peek(db_path, sql, params=()):
    c = sqlite3.connect(str(db_path))
    try:
        return c.execute(sql, params).fetchall()
    finally:
        c.close()


@pytest.fixture
def day_store(db_path):
    conn = store.open_store(db_path)
    with store.transaction(conn):
        did = store.ensure_dataset(conn, "d")
        # lengths that put the rows in an order unlike their ids
        insert_samples(conn, did, [{"instruction": f"question {i:02d}", "response": "r" * ((i * 7) % 11),
                                    "task_type": "code" if i % 2 else "qa"} for i in range(40)])
    yield conn
    conn.close()


async def screen_named(pilot, name: str):
    await wait_for(pilot, lambda: type(pilot.app.screen).__name__ == name)
    return pilot.app.screen


async def review_settled(pilot):
    screen = await screen_named(pilot, "ReviewScreen")
    await wait_for(pilot, lambda: not screen.opening and not screen.busy and screen.sample is not None)
    await pilot.pause()
    return screen


async def test_review_from_browse_walks_browses_rows_in_its_order(day_store, db_path):
    app = WorkbenchApp(db=db_path, dataset="d", screen="browse")
    async with app.run_test(size=(120, 36)) as pilot:
        browse = await screen_named(pilot, "BrowseScreen")
        await wait_for(pilot, lambda: hasattr(browse, "table"))
        table = browse.table
        await wait_for(pilot, lambda: bool(table.rows))
        while browse.sort.key != "length":                              # length, descending
            await pilot.press("o")
        await pilot.press("r")
        await pilot.press("slash", *"task:code", "enter")               # odd ids only
        await wait_for(pilot, lambda: not table.fetching and browse.total == 20)
        order = [r.data.id for r in table.rows]
        expected = [r[0] for r in day_store.execute(
            "SELECT id FROM samples WHERE task_type = 'code' "
            "ORDER BY instruction_len + response_len DESC, id DESC")]
        assert expected != sorted(expected) and expected != sorted(expected, reverse=True)
        assert order == expected
        await pilot.press("j")
        await pilot.press("enter")
        review = await review_settled(pilot)
        assert review.sample["id"] == order[1]
        seen = [review.sample["id"]]
        await pilot.press("a")                       # decide: the next one in Browse's order
        await wait_for(pilot, lambda: not review.busy)
        seen.append(review.sample["id"])
        await pilot.press("j")
        await wait_for(pilot, lambda: not review.busy)
        seen.append(review.sample["id"])
        await pilot.press("k", "k")
        await wait_for(pilot, lambda: not review.busy)
        seen.append(review.sample["id"])
        assert seen == [order[1], order[2], order[3], order[1]]
        assert peek(db_path, "SELECT status FROM samples WHERE id = ?", (order[1],))[0][0] == "accepted"
        assert "Browse order" in str(review.query_one("#status").render())


async def test_hh_pairs_show_the_conversation_before_the_answers(db_path):
    conn = store.open_store(db_path)
    with store.transaction(conn):
        did = store.ensure_dataset(conn, "hh")
        insert_samples(conn, did, [{
            "instruction": "and then?", "response": "the chosen end", "rejected": "the rejected end",
            "messages": [{"role": "user", "content": "tell me a story"}, {"role": "assistant", "content": "once"},
                         {"role": "user", "content": "and then?"}]}])
    conn.close()
    app = WorkbenchApp(db=db_path, dataset="hh", screen="review")
    async with app.run_test(size=(120, 36)) as pilot:
        review = await review_settled(pilot)
        conv, chosen, rejected = (review.body.top_of(w) for w in ("conversation", "response", "rejected"))
        assert None not in (conv, chosen, rejected)
        assert conv < chosen < rejected


# --- automatic verdicts: why, override, progress, exemptions ------------------------------------------------

NATURAL = ("The water cycle moves water between the oceans, the air and the land: the sun warms the sea, vapour "
           "rises and cools into clouds, and rain or snow brings it back down to rivers that run to the sea again.")


@pytest.fixture
def auto_store(db_path):
    """Row 1 trips the boilerplate filter, rows 2 and 3 are duplicates (3 goes), row 4 failed curation, row 5 is
    clean and pending, row 6 a curator rejected."""
    conn = store.open_store(db_path)
    with store.transaction(conn):
        did = store.ensure_dataset(conn, "d")
        insert_samples(conn, did, [
            {"instruction": "Explain rain.", "response": "As an AI language model I cannot say. " + NATURAL},
            {"instruction": "Explain the water cycle.", "response": NATURAL},
            {"instruction": "Explain the water cycle!", "response": NATURAL},
            {"instruction": "Explain snow.", "response": NATURAL + " Snow is frozen.",
             "metadata": {"curation": {"score": 3, "kept": False, "threshold": 4.5, "judge": "j", "job": 7}}},
            {"instruction": "Explain hail.", "response": NATURAL + " Hail is ice."},
            {"instruction": "Explain fog.", "response": NATURAL + " Fog is a cloud."},
        ])
    conn.close()
    return db_path


def test_reasons_override_and_curator_only_progress(auto_store, cli):
    from workbench import automatic, review
    code, out, err = cli("clean", "--dataset", "d", "--filter", "boilerplate", "--apply")
    assert code == 0, err
    code, out, err = cli("dedup", "--dataset", "d", "--apply", "keep-best")
    assert code == 0, err
    conn = store.open_store(auto_store)
    review.decide(conn, 6, "reject", "review:me")
    assert [conn.execute("SELECT status FROM samples WHERE id = ?", (i,)).fetchone()[0] for i in range(1, 7)] == \
        ["rejected", "pending", "rejected", "pending", "pending", "rejected"]
    why = {i: automatic.reason(conn, review.load_sample(conn, i)) for i in range(1, 7)}
    assert why[1]["source"] == "filter" and why[1]["text"] == "filter boilerplate (filter-1)"
    assert why[3]["source"] == "dedup" and "duplicate of #2" in why[3]["text"]
    assert why[4]["source"] == "curate" and "3" in why[4]["text"] and "4.5" in why[4]["text"]
    assert why[2] is None and why[5] is None and why[6] is None          # a curator's rejection is not automatic
    prog = review.progress(conn)[0]
    assert (prog["rejected"], prog["automatic"], prog["curated"]) == (3, 2, 1)
    code, out, _ = cli("datasets", "--json")
    import json
    assert json.loads(out)[0]["automatic"] == 2

    d = review.override(conn, 1, "review:me")               # the curator keeps it: an accept, undoable
    assert d["after"] == {"status": "accepted"}
    assert "override" in conn.execute("SELECT reason FROM decisions WHERE id = ?", (d["id"],)).fetchone()[0]
    assert automatic.reason(conn, review.load_sample(conn, 1)) is None
    assert review.progress(conn)[0]["automatic"] == 1 and review.progress(conn)[0]["curated"] == 2
    review.undo(conn, "review:me")                          # back to the filter's verdict
    assert automatic.reason(conn, review.load_sample(conn, 1))["source"] == "filter"
    with pytest.raises(ValueError):
        review.override(conn, 5, "review:me")                # nothing automatic about row 5
    conn.close()


def test_clean_exemption_keeps_a_row_from_a_filter(auto_store, cli):
    code, out, err = cli("clean", "--dataset", "d", "--filter", "boilerplate", "--json")
    import json
    assert json.loads(out)["would_reject"] == 1
    code, out, err = cli("clean", "--exempt", "1", "--filter", "boilerplate")
    assert code == 0 and "#1" in out, err
    code, out, err = cli("clean", "--dataset", "d", "--filter", "boilerplate", "--json")
    assert json.loads(out)["would_reject"] == 0 and json.loads(out)["exempted"] == {"boilerplate": 1}
    code, out, err = cli("clean", "--dataset", "d", "--filter", "boilerplate", "--apply")
    assert code == 0 and "kept by the curator" in out
    assert peek(auto_store, "SELECT status FROM samples WHERE id = 1")[0][0] == "pending"
    assert peek(auto_store, "SELECT action, reason FROM decisions WHERE sample_id = 1") == [("exempt", "boilerplate")]
    # an exemption from one filter is not one from another; withdrawn, the filter drops the row again
    code, out, err = cli("clean", "--unexempt", "1", "--filter", "boilerplate")
    assert code == 0, err
    code, out, err = cli("clean", "--unexempt", "1", "--filter", "boilerplate")
    assert code != 0 and "no exemption" in err
    code, out, err = cli("clean", "--dataset", "d", "--filter", "boilerplate", "--json")
    assert json.loads(out)["would_reject"] == 1
    code, out, err = cli("clean", "--exempt", "999")
    assert code != 0 and "999" in err
    assert peek(auto_store, "SELECT count(*) FROM decisions WHERE sample_id = 999")[0][0] == 0


async def test_review_shows_why_and_o_overrides_and_clean_screen_keeps_a_row(auto_store, cli):
    assert cli("clean", "--dataset", "d", "--filter", "boilerplate", "--apply")[0] == 0
    app = WorkbenchApp(db=auto_store, dataset="d", screen="review", sample_id=1)
    async with app.run_test(size=(120, 36)) as pilot:
        review = await review_settled(pilot)
        status = str(review.query_one("#status").render())
        assert "REJECTED" in status and "boilerplate" in status and "· o: override" in status
        await wait_for(pilot, lambda: "(1 automatic)" in str(review.query_one("#status").render()))
        await pilot.press("o")
        await wait_for(pilot, lambda: not review.busy and review.sample["status"] == "accepted")
        assert peek(auto_store, "SELECT status FROM samples WHERE id = 1")[0][0] == "accepted"
        assert "boilerplate" not in str(review.query_one("#status").render())
        assert "automatic)" not in str(review.query_one("#status").render())
        await pilot.press("j")                               # row 2: nothing automatic, `o` changes nothing
        await wait_for(pilot, lambda: not review.busy and review.sample["id"] == 2)
        await pilot.press("o")
        await pilot.pause()
        assert peek(auto_store, "SELECT status FROM samples WHERE id = 2")[0][0] == "pending"
        assert "nothing automatic" in str(review.query_one("#status").render())
    # the Clean screen: `e` keeps the row under the cursor from its filter
    from workbench import review as rv
    conn = store.open_store(auto_store)
    rv.undo(conn, rv.curator_session())                     # the override, then the run: row 1 is pending again
    conn.close()
    assert cli("clean", "--undo", "filter-1")[0] == 0
    assert peek(auto_store, "SELECT status FROM samples WHERE id = 1")[0][0] == "pending"
    app = WorkbenchApp(db=auto_store, dataset="d", screen="clean")
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await screen_named(pilot, "CleanScreen")
        await wait_for(pilot, lambda: screen.loaded)
        table = screen.query_one("#filters")
        names = [table.coordinate_to_cell_key((i, 0)).row_key.value for i in range(table.row_count)]
        table.move_cursor(row=names.index("boilerplate"))
        await wait_for(pilot, lambda: screen.selected == "boilerplate" and screen.current_hit() is not None)
        assert screen.current_hit().id == 1
        await pilot.press("tab", "e")
        await wait_for(pilot, lambda: screen.preview.total == 0 or not screen.preview.examples("boilerplate"))
        assert peek(auto_store, "SELECT action, reason FROM decisions WHERE sample_id = 1 AND action = 'exempt'") \
            == [("exempt", "boilerplate")]


# --- the command line: exit codes, JSON errors, --quiet and --verbose --------------------------------------

def test_exit_codes_usage_2_data_1_and_json_errors(cli, tmp_path):
    import json
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n{"instruction": 5\n')
    code, out, err = cli("import", str(bad))
    assert code == 1 and err.startswith(f"error: {bad}, line 2")                  # bad data
    code, out, err = cli("datasets", "--bogus")
    assert code == 2 and "usage:" in err and "--bogus" in err                       # usage
    code, out, err = cli("dedup", "--threshold", "lots")
    assert code == 2 and "lots" in err
    code, out, err = cli("review", "--dataset", "nope")
    assert code == 2 and "nope" in err                                              # a name that does not exist
    # with --json the error is JSON on stdout, with the exit code in it
    code, out, err = cli("import", str(bad), "--json")
    assert code == 1 and json.loads(out) == {"error": json.loads(out)["error"], "exit": 1}
    assert "line 2" in json.loads(out)["error"] and err.startswith("error: ")    # stderr says it too
    code, out, err = cli("datasets", "--json", "--bogus")
    assert code == 2 and json.loads(out)["exit"] == 2 and "--bogus" in json.loads(out)["error"]
    code, out, err = cli("clean", "--json", "--dataset", "nope")
    assert code == 2 and "nope" in json.loads(out)["error"]


def test_quiet_and_verbose_on_every_command(cli, tmp_path):
    from workbench.cli import build_parser
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, p in sub.choices.items():
        flags = {s for a in p._actions for s in a.option_strings}
        assert {"--quiet", "-q", "--verbose", "-v"} <= flags, name
    good = tmp_path / "good.jsonl"
    good.write_text('{"instruction": "a", "output": "b"}\n')
    code, out, err = cli("import", str(good), "--dataset", "g", "--quiet")
    assert code == 0 and out == ""
    code, out, err = cli("--quiet", "datasets", "--json")                     # JSON is the result: still printed
    assert code == 0 and '"g"' in out
    code, out, err = cli("datasets", "-v")
    assert code == 0 and "g" in out
    code, out, err = cli("datasets", "-q", "-v")
    assert code == 2 and "not allowed with" in err


def test_an_unexpected_error_is_one_line_and_verbose_shows_the_traceback(cli, monkeypatch):
    import workbench.cli.data as data

    def broken(args):
        raise RuntimeError("disk on fire")
    monkeypatch.setattr(data, "cmd_datasets", broken)
    code, out, err = cli("datasets")
    assert code == 1 and "unexpected RuntimeError: disk on fire" in err and "Traceback" not in err
    assert "--verbose" in err
    code, out, err = cli("datasets", "--verbose")
    assert code == 1 and "Traceback" in err and "disk on fire" in err


async def test_every_list_moves_with_the_same_keys(db_path):
    conn = store.open_store(db_path)
    with store.transaction(conn):
        for name in ("a", "b", "c", "d"):
            insert_samples(conn, store.ensure_dataset(conn, name), [{"instruction": "x", "response": "y"}])
    conn.close()
    app = WorkbenchApp(db=db_path, dataset="a")
    async with app.run_test(size=(80, 24)) as pilot:
        home = await screen_named(pilot, "DatasetsScreen")
        await wait_for(pilot, lambda: home.loaded and home.selected_name() == "a")
        for key, expect in (("j", "b"), ("j", "c"), ("k", "b"), ("end", "d"), ("home", "a"), ("down", "b")):
            await pilot.press(key)
            assert home.selected_name() == expect, key
        # the Jobs, Clean and Duplicates tables are the same widget with the same keys
        from widgets.list_table import ListTable
        from widgets.virtual_table import VirtualTable
        keys = lambda cls: {b.id: b.key for b in cls.BINDINGS if b.id and b.id.startswith("table.")}
        assert keys(ListTable) == {k: v for k, v in keys(VirtualTable).items() if k != "table.select"}
        for name in ("jobs", "clean", "duplicates"):
            import inspect
            from workbench.app import screen_class
            assert "ListTable(" in inspect.getsource(screen_class(name)), name


def test_help_lists_keys_by_what_they_do_grouped_by_screen_in_words():
    from rich.console import Console
    from screens.help import help_renderable, help_sections
    from workbench import keymap
    console = Console(width=120, record=True, file=open("/dev/null", "w"))
    console.print(help_renderable({}))
    text = console.export_text()
    assert "…" not in text and "\t" not in text
    for cls_word in ("Dialog", "Screen", "BrowseTable", "ListTable", "VirtualTable"):
        assert cls_word not in text, cls_word
    titles = [t for t, _ in help_sections()]
    for t in ("Everywhere", "Datasets", "Review", "Review: search", "Review: filter", "Review: edit", "Browse",
              "Jobs: launch", "Clean"):
        assert t in titles, t
    assert any(t.startswith("Every list") for t in titles)
    clean_line = next(line for line in text.splitlines() if "clean.switch" in line)
    assert clean_line.split()[:2] == ["Filters/rows", "tab"]          # what it does, then the key
    for spec in keymap.BY_ID.values():
        assert spec.id in text, spec.id
    assert keymap.display_key("tab") == "tab" and keymap.display_key("delete") == "del"


@pytest.mark.parametrize("name, must", [
    ("datasets", ("enter Review", "i Import", "b Browse")),
    ("review", ("a Accept", "x Reject", "s Skip", "u Undo", "e Edit", "w Swap", "j Next", "k Prev", "f Filter")),
    ("browse", ("Open", "o Sort", "/ Search")),
    ("balance", ("d Dataset",)),
    ("jobs", ("n New job", "p Pause", "w Worker")),
    ("clean", ("a Apply", "e Keep row", "u Undo")),
    ("duplicates", ("space Keep", "x Reject rest", "u Undo")),
])
async def test_the_footer_at_80x24_keeps_the_keys_that_matter_and_help(auto_store, name, must):
    app = WorkbenchApp(db=auto_store, dataset="d", screen=None if name == "datasets" else name)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: type(app.screen).__name__.lower().startswith(name[:5]))

        def footer():
            strips = app.screen._compositor.render_full_update().strips
            return "".join(s.text for s in strips[-1]) if strips else ""
        await wait_for(pilot, lambda: footer().rstrip().endswith("? Help") and all(m in footer() for m in must))
        footer = footer()
        assert "▏" not in footer, footer
        for item in must:
            assert item in footer, (item, footer)


# --- jobs ---------------------------------------------------------------------------------------------------

def _job(conn, kind, status, total, done, failed, kept, dropped, items_dropped):
    jid = conn.execute("INSERT INTO jobs (kind, params, status, total, done, failed, kept, dropped, created_at) "
                       "VALUES (?, '{}', ?, ?, ?, ?, ?, ?, 'now')",
                       (kind, status, total, done, failed, kept, dropped)).lastrowid
    conn.executemany("INSERT INTO job_items (job_id, key, status) VALUES (?, ?, ?)",
                     [(jid, str(i), "dropped" if i < items_dropped else "done") for i in range(done)]
                     + [(jid, f"f{i}", "failed") for i in range(failed)])
    return jid


async def test_jobs_show_done_dropped_failed_apart_and_all_failed_as_failed(db_path):
    conn = store.open_store(db_path)
    all_dropped = _job(conn, "curate", "done", 10, 10, 0, 0, 10, 10)
    all_failed = _job(conn, "judge", "done", 5, 0, 5, 0, 0, 0)          # as an older worker recorded it
    mixed = _job(conn, "curate", "done", 10, 8, 2, 5, 3, 3)
    plain = _job(conn, "generate", "done", 4, 4, 0, 0, 0, 0)
    conn.close()
    app = WorkbenchApp(db=db_path, screen="jobs")
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await screen_named(pilot, "JobsScreen")
        await wait_for(pilot, lambda: screen.loaded.is_set())
        table = screen.query_one("#jobs-table")
        labels = [str(c.label) for c in table.columns.values()]

        def row(jid):
            return dict(zip(labels, (str(c) for c in table.get_row(str(jid)))))
        assert row(all_dropped)["Done"] == "0/10" and row(all_dropped)["Dropped"] == "10" and row(all_dropped)["Kept"] == "0"
        assert row(all_failed)["Status"] == "failed" and row(all_failed)["Failed"] == "5"
        assert (row(mixed)["Done"], row(mixed)["Dropped"], row(mixed)["Failed"], row(mixed)["Kept"]) == ("5/10", "3", "2", "5")
        assert row(plain)["Kept"] == "-" and row(plain)["Done"] == "4/4"


def test_run_without_wait_says_when_no_worker_is_running(cli, db_path):
    from workbench.presence import registered, running_workers
    conn = store.open_store(db_path)
    with store.transaction(conn):
        insert_samples(conn, store.ensure_dataset(conn, "demo"), [{"instruction": "hi"}])
    conn.close()
    cli("endpoints", "add", "local", "--base-url", "http://127.0.0.1:9/v1", "--model", "m")
    code, out, err = cli("run", "generate", "--dataset", "demo", "--endpoint", "local")
    assert code == 0 and out.strip().isdigit()
    assert "no worker is running" in err and "workbench worker" in err and "--wait" in err
    with registered(db_path):                      # a worker of this store is running: nothing to say
        assert running_workers(db_path) != []
        code, out, err = cli("run", "generate", "--dataset", "demo", "--endpoint", "local")
        assert code == 0 and "no worker" not in err
    assert running_workers(db_path) == []
    # another store's worker does not count
    with registered(db_path.parent / "other.db"):
        code, out, err = cli("run", "generate", "--dataset", "demo", "--endpoint", "local")
        assert "no worker is running" in err


async def test_the_tui_offers_a_worker_for_queued_jobs(db_path, monkeypatch):
    import workbench.worker as worker
    conn = store.open_store(db_path)
    conn.execute("INSERT INTO jobs (kind, params, status, created_at) VALUES ('generate', '{}', 'queued', 'now')")
    conn.close()
    started = []
    monkeypatch.setattr(worker, "spawn_detached", lambda db, cfg: started.append(db) or (4242, "log"))
    app = WorkbenchApp(db=db_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: any("no worker is running" in n.message for n in app._notifications))
        note = next(n for n in app._notifications if "no worker" in n.message)
        assert "ctrl+w" in note.message and "1" in note.message
        await pilot.press("ctrl+w")
        await wait_for(pilot, lambda: started == [app.db_path])


# --- the launch dialog ---------------------------------------------------------------------------------------

LAUNCH_CONFIG = {"endpoints": {"a": {"base_url": "http://127.0.0.1:9/v1", "model": "m1"}}}


class LaunchHost:
    """A bare app around the dialog (no store: the dialog has none)."""

    @staticmethod
    def make(config, submit, task="curate"):
        from textual.app import App
        from widgets.jobs_launch import LaunchDialog

        class Host(App):
            def on_mount(self):
                self.push_screen(LaunchDialog(["prompts"], config, submit, "prompts", task=task))
        return Host()


async def test_launch_dialog_validates_before_queuing_and_lists_no_fake_endpoint():
    from textual.widgets import Input, Select, Static
    from widgets.jobs_launch import LaunchDialog, _input_id
    submitted = []

    async def submit(req):
        submitted.append(req)
        return 1

    app = LaunchHost.make(LAUNCH_CONFIG, submit)
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause()
        dialog = app.screen
        gen = dialog.query_one("#launch-generator", Select)
        labels = [str(label) for label, _ in gen._options]
        assert not any("no endpoints" in x for x in labels) and gen.value == "endpoint:a"
        error = dialog.query_one("#launch-error", Static)
        for field, value, needle in (("threshold", "high", "param threshold: expected float"),
                                     ("temperature", "warm", "param temperature")):
            dialog.query_one(f"#{_input_id(field)}", Input).value = value
            await pilot.press("ctrl+s")
            await pilot.pause()
            assert isinstance(app.screen, LaunchDialog) and needle in str(error.render()), str(error.render())
            dialog.query_one(f"#{_input_id(field)}", Input).value = ""
        dialog.query_one(f"#{_input_id('threshold')}", Input).value = "4.5"
        dialog.query_one("#launch-filter", Input).value = "limit"          # not k=v
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, LaunchDialog) and str(error.render())
        assert submitted == []                                              # nothing reached the queue
        dialog.query_one("#launch-filter", Input).value = "limit=3"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert len(submitted) == 1 and submitted[0]["params"] == {}
    # with no endpoint at all: a message, not a blank entry that reads like an endpoint
    app = LaunchHost.make({}, submit)
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause()
        dialog = app.screen
        assert not dialog.query("#launch-generator")
        assert "workbench endpoints add" in str(dialog.query_one("#launch-no-endpoints", Static).render())
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, LaunchDialog) and len(submitted) == 1


# --- dedup: the preview is what --apply does ------------------------------------------------------------------

def test_dedup_preview_and_apply_are_one_computation(db_path, cli):
    from workbench import dedup, review
    conn = store.open_store(db_path)
    with store.transaction(conn):
        did = store.ensure_dataset(conn, "d")
        base = "Explain how the water cycle moves water between the oceans, the sky and the land"
        insert_samples(conn, did, [{"instruction": base + tail, "response": "r"}
                                   for tail in (".", "!", "?", " now.", " please.")])
        text = store.ensure_dataset(conn, "t", "text")
        insert_samples(conn, text, [{"response": NATURAL}, {"response": NATURAL + "!"}, {"response": "other words"}])
    # a curator accepted one of the would-be rejects: the preview must not count it, as apply leaves it
    review.decide(conn, 3, "accept", "review:me")
    conn.close()
    code, out, err = cli("dedup", "--dataset", "d", "--threshold", "0.9")
    assert code == 0, err
    import re
    would = int(re.search(r"keep-best would reject (\d+)", out).group(1))
    assert "leave 1 accepted" in out
    code, out, err = cli("dedup", "--dataset", "d", "--threshold", "0.9", "--apply", "keep-best")
    rejected = int(re.search(r"rejected (\d+) rows", out).group(1))
    assert would == rejected == 3
    # the Duplicates screen compares what the CLI compares: a text dataset's text, not its empty prompt
    conn = store.open_store(db_path)
    assert dedup.fields_for(conn, ["t"]) == ("response",) and dedup.fields_for(conn, ["d"]) == dedup.DEFAULT_FIELDS
    conn.close()


async def test_duplicates_screen_uses_the_cli_default_fields(db_path):
    conn = store.open_store(db_path)
    with store.transaction(conn):
        text = store.ensure_dataset(conn, "t", "text")
        insert_samples(conn, text, [{"response": NATURAL}, {"response": NATURAL + "!"}, {"response": "other words"}])
    conn.close()
    app = WorkbenchApp(db=db_path, dataset="t", screen="duplicates")
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await screen_named(pilot, "DuplicatesScreen")
        await wait_for(pilot, lambda: screen.loaded)
        assert screen.fields == ("response",) and len(screen.clusters) == 1


async def test_balance_counts_all_datasets_or_a_chosen_set(db_path):
    conn = store.open_store(db_path)
    with store.transaction(conn):
        for name, n in (("a", 3), ("b", 5), ("c", 11)):
            insert_samples(conn, store.ensure_dataset(conn, name), [{"instruction": f"{name} {i}"} for i in range(n)])
    conn.close()
    app = WorkbenchApp(db=db_path, screen="balance")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await screen_named(pilot, "BalanceScreen")

        def total():
            return screen.counts.total(None) if screen.counts else None
        await wait_for(pilot, lambda: total() == 19)
        await pilot.press("d")
        await screen_named(pilot, "DatasetChooser")
        await pilot.press("space", "down", "down", "space", "enter")     # a and c
        await wait_for(pilot, lambda: screen.dataset == ["a", "c"] and total() == 14)
        assert "datasets: a, c" in str(screen.query_one("#status").render())
        await pilot.press("d", "escape")                                  # cancel: the set stays
        await pilot.pause()
        assert screen.dataset == ["a", "c"]
        await pilot.press("d", "a", "enter")                              # all
        await wait_for(pilot, lambda: screen.dataset is None and total() == 19)
        await pilot.press("d", "down", "space", "enter")                  # a set of one
        await wait_for(pilot, lambda: screen.dataset == "b" and total() == 5)


def test_the_readme_target_file_is_documented_parses_and_uses_default_labels(tmp_path, cli, db_path):
    import re
    from workbench import sampling
    from workbench.tasks.label import DEFAULT_LABELS
    from conftest import ROOT
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- target-file -->\n```toml\n(.*?)```", readme, re.S).group(1)
    path = tmp_path / "targets.toml"
    path.write_text(block)
    target = sampling.load_target(path)
    for dim, shares in target.shares.items():
        for label in shares:
            assert label in DEFAULT_LABELS[dim] or label in (sampling.OTHER, "(none)"), (dim, label)
    # every [balance.targets] / [targets] label the README shows is a default label
    for dim, body in re.findall(r"\[(?:balance\.)?targets\.(\w+)\][^\n]*\n((?:[\w\"*()]+ = [\d.]+[^\n]*\n)+)", readme):
        for label in re.findall(r"^([\w\"*()]+) =", body, re.M):
            assert label.strip('"') in DEFAULT_LABELS[dim] + ["*", "(none)"], (dim, label)
    # and the README's recipe runs as written against a store
    conn = store.open_store(db_path)
    with store.transaction(conn):
        insert_samples(conn, store.ensure_dataset(conn, "d"),
                       [{"instruction": f"q{i}", "task_type": t, "difficulty": "easy" if i % 3 else "hard"}
                        for i, t in enumerate(["open_qa", "coding", "brainstorming", "math"] * 30)])
    conn.close()
    code, out, err = cli("sample", "--target", str(path), "--size", "40", "--seed", "1", "--into", "mix")
    assert code == 0, err


# --- the export dialog ----------------------------------------------------------------------------------------

async def test_export_dialog_defaults_to_the_exports_dir_then_the_last_used_and_exports_a_selection(
        db_path, tmp_path, monkeypatch):
    import json
    import platformdirs
    monkeypatch.chdir(tmp_path)                              # the cwd is never where exports go by default
    conn = store.open_store(db_path)
    with store.transaction(conn):
        insert_samples(conn, store.ensure_dataset(conn, "d"), [{"instruction": f"q{i}", "response": "r"}
                                                               for i in range(10)])
        conn.executemany("INSERT INTO selections (name, sample_id) VALUES ('mix', ?)", [(2,), (5,), (7,)])
    conn.close()
    app = WorkbenchApp(db=db_path, dataset="d")
    async with app.run_test(size=(80, 24)) as pilot:
        await screen_named(pilot, "DatasetsScreen")
        app.open_screen("export")
        dialog = await screen_named(pilot, "ExportDialog")
        await wait_for(pilot, lambda: bool(dialog.query("#dataset")) and dialog.query_one("#dataset").value == "d")
        exports = Path(platformdirs.user_data_dir("curation-workbench")) / "exports"
        assert Path(dialog.query_one("#path").value).parent == exports
        assert not dialog.query_one("#path").value.startswith(str(tmp_path) + "/d-")
        dialog.query_one("#selection").value = "mix"
        await pilot.pause(0.05)
        assert dialog.query_one("#path").value.endswith("mix-not-rejected.jsonl")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: dialog.result is not None or "Not exported" in str(
            dialog.query_one("#message").render()))
        assert dialog.result is not None, str(dialog.query_one("#message").render())
        rows = [json.loads(line) for line in (exports / "mix-not-rejected.jsonl").read_text().splitlines()]
        assert [r["instruction"] for r in rows] == ["q1", "q4", "q6"]
        # elsewhere, then the next dialog (and the next run) suggests that directory
        elsewhere = tmp_path / "out"
        elsewhere.mkdir()
        dialog.query_one("#path").value = str(elsewhere / "all.jsonl")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: (elsewhere / "all.jsonl").exists())
        await pilot.press("escape")
    app = WorkbenchApp(db=db_path, dataset="d")
    async with app.run_test(size=(80, 24)) as pilot:
        await screen_named(pilot, "DatasetsScreen")
        app.open_screen("export")
        dialog = await screen_named(pilot, "ExportDialog")
        await wait_for(pilot, lambda: bool(dialog.query("#dataset")) and dialog.query_one("#dataset").value == "d")
        assert Path(dialog.query_one("#path").value).parent == elsewhere.resolve()
