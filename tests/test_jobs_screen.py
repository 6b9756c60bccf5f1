"""The Jobs screen driven with Pilot: launch from the dialog, live progress from detached workers that outlive the
TUI, controls by key, failures readable in full."""
from __future__ import annotations

import asyncio
import time

import pytest
from textual.app import App
from textual.widgets import DataTable, Input, Static

from llm_server import LLMServer, Rule, write_endpoint
from screens.jobs import FailuresScreen, JobsScreen
from widgets.jobs_launch import LaunchDialog
from workbench import jobs as J
from workbench import worker as W
from workbench.config import load_config
from workbench.samples import insert_samples
from workbench.store import ensure_dataset, open_store, transaction


class JobsApp(App):
    """The smallest host the screen needs: db_path, config_path, config."""

    def __init__(self, db_path, config_path):
        super().__init__()
        self.db_path = db_path
        self.config_path = config_path
        self.config = load_config(config_path)

    def on_mount(self) -> None:
        self.push_screen(JobsScreen(dataset="demo"))


@pytest.fixture
def cfg_path(tmp_path):
    return tmp_path / "config.toml"


@pytest.fixture
def spawned():
    """Workers the screen starts are detached processes: wait for them (or stop them) after the test."""
    yield W._spawned
    for p in list(W._spawned):
        try:
            p.wait(30)
        except Exception:
            p.kill()
            p.wait()
    W._spawned.clear()


def make_dataset(db_path, n):
    conn = open_store(db_path)
    with transaction(conn):
        did = ensure_dataset(conn, "demo")
        insert_samples(conn, did, [{"instruction": f"Question {i}"} for i in range(n)])
    conn.close()


def text_of(widget) -> str:
    return str(widget.content)


async def until(pilot, pred, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        await pilot.pause(0.1)
    raise AssertionError("condition not reached in time")


def job_row(screen, jid):
    table = screen.query_one("#jobs-table", DataTable)
    return [str(c) for c in table.get_row(str(jid))]


async def test_launch_close_tui_reopen_shows_live_progress(db_path, cfg_path, spawned):
    n = 120
    make_dataset(db_path, n)
    with LLMServer(latency=0.05, capacity=2) as srv:
        write_endpoint(cfg_path, srv, max_concurrency=2)
        app = JobsApp(db_path, cfg_path)
        async with app.run_test(size=(140, 45)) as pilot:
            screen = app.screen
            await until(pilot, lambda: screen.loaded.is_set())
            assert "No jobs yet" in text_of(screen.query_one("#jobs-hint", Static))
            await pilot.press("n")
            await until(pilot, lambda: isinstance(app.screen, LaunchDialog))
            dialog = app.screen
            await pilot.pause()
            assert dialog.query_one("#param-system", Input).value == ""        # defaults shown
            dialog.query_one("#param-temperature", Input).value = "0.25"
            dialog.query_one("#launch-filter", Input).value = "limit=1000"
            await pilot.press("ctrl+s")
            await until(pilot, lambda: app.screen is screen)
            await until(pilot, lambda: screen.view["jobs"] and screen.view["jobs"][0]["done"] > 0)
            jid = screen.view["jobs"][0]["id"]
            assert len(spawned) == 1
            worker_pid = spawned[0].pid
        # the TUI is gone; the worker keeps going
        conn = open_store(db_path)
        done_at_close = J.get_job(conn, jid)["done"]
        assert done_at_close < n and spawned[0].poll() is None
        while J.get_job(conn, jid)["done"] <= done_at_close:
            await asyncio.sleep(0.05)
        # reopen: the screen shows the job moving, then done
        app2 = JobsApp(db_path, cfg_path)
        seen = set()
        async with app2.run_test(size=(140, 45)) as pilot:
            screen = app2.screen
            await until(pilot, lambda: screen.loaded.is_set())

            def finished():
                row = job_row(screen, jid)
                seen.add(row[4])
                return row[2] == "done"
            await until(pilot, finished, timeout=60)
            assert f"{n}/{n}" in job_row(screen, jid)[4] and "100%" in job_row(screen, jid)[3]
            summary = text_of(screen.query_one("#jobs-summary", Static))
            assert "demo → demo-generate" in summary and "endpoint local" in summary and "temperature=0.25" in summary
        assert len(seen) >= 2                      # progress was seen changing live
        assert spawned[0].wait(30) == 0 and spawned[0].pid == worker_pid
        j = J.get_job(conn, jid)
        assert (j["done"], j["failed"]) == (n, 0)
        assert conn.execute("SELECT count(*), count(DISTINCT parent_id) FROM samples WHERE job_id = ?",
                            (jid,)).fetchone() == (n, n)
        assert all(b.get("temperature") == 0.25 for b in srv.stats.bodies)
        logs = list((db_path.parent / "home" / "state").rglob("worker-*.log"))
        assert len(logs) == 1 and f"job {jid}: done" in logs[0].read_text()
        conn.close()


async def test_launch_dialog_shows_errors_and_keeps_form(db_path, cfg_path, spawned):
    make_dataset(db_path, 3)
    with LLMServer() as srv:
        write_endpoint(cfg_path, srv)
        app = JobsApp(db_path, cfg_path)
        async with app.run_test(size=(140, 45)) as pilot:
            await until(pilot, lambda: app.screen.loaded.is_set())
            await pilot.press("n")
            await until(pilot, lambda: isinstance(app.screen, LaunchDialog))
            dialog = app.screen
            await pilot.pause()
            dialog.query_one("#param-max_tokens", Input).value = "lots"
            await pilot.press("ctrl+s")
            await pilot.pause(0.3)
            assert app.screen is dialog
            assert "max_tokens: expected int" in text_of(dialog.query_one("#launch-error", Static))
            dialog.query_one("#param-max_tokens", Input).value = ""
            dialog.query_one("#launch-filter", Input).value = "colour=red"
            await pilot.press("ctrl+s")
            await pilot.pause(0.3)
            assert "unknown filter key 'colour'" in text_of(dialog.query_one("#launch-error", Static))
            await pilot.press("escape")
            await until(pilot, lambda: isinstance(app.screen, JobsScreen))
    assert not spawned and J.list_jobs(open_store(db_path)) == []


async def test_keys_pause_resume_cancel_and_failures_in_full(db_path, cfg_path, spawned):
    make_dataset(db_path, 6)
    with LLMServer() as srv:
        write_endpoint(cfg_path, srv, max_retries=0)
        srv.reply = lambda msgs, body: "x" * 2000 if "Question 2" in msgs[-1]["content"] else "fine"
        srv.rules = [Rule("length", match="Question 2"), Rule("500", match="Question 4")]   # length: half a reply
        conn = open_store(db_path)
        failed_job = J.queue_job(conn, "generate", config=load_config(cfg_path), dataset="demo", endpoint="local",
                                 into="first")
        await asyncio.to_thread(W.run_worker, db_path, load_config(cfg_path), until_idle=True)
        assert J.get_job(conn, failed_job)["failed"] == 2
        queued = J.queue_job(conn, "generate", config=load_config(cfg_path), dataset="demo", endpoint="local",
                             into="second")
        app = JobsApp(db_path, cfg_path)
        async with app.run_test(size=(140, 45)) as pilot:
            screen = app.screen
            await until(pilot, lambda: screen.loaded.is_set())
            assert f"job(s) {queued} wait for a worker" in text_of(screen.query_one("#jobs-hint", Static))
            # newest first: the queued job is selected
            assert screen.selected == queued
            await pilot.press("p")
            await until(pilot, lambda: J.get_job(conn, queued)["status"] == "paused")
            await until(pilot, lambda: job_row(screen, queued)[2] == "paused")
            await pilot.press("c")
            await until(pilot, lambda: J.get_job(conn, queued)["status"] == "cancelled")
            # down to the job with failures: errors and a preview of the raw reply in the detail pane
            await pilot.press("down")
            await until(pilot, lambda: screen.selected == failed_job and screen.view["failures"])
            texts = [text_of(w) for w in screen.query(".failure")]
            joined = "\n".join(texts)
            assert "HTTP 500" in joined and "cut off at max_tokens" in joined
            assert "x" * 600 in joined and "x" * 601 not in joined and "400 more characters" in joined
            await pilot.press("v")
            await until(pilot, lambda: isinstance(app.screen, FailuresScreen))
            full = "\n".join(text_of(w) for w in app.screen.query(".failure"))
            assert "x" * 1000 in full and "more characters" not in full
            await pilot.press("escape")
            await until(pilot, lambda: app.screen is screen)
            # retry: failed items go back to pending and a worker is started
            srv.rules = []
            await pilot.press("t")
            await until(pilot, lambda: len(spawned) == 1)
            await until(pilot, lambda: J.get_job(conn, failed_job)["status"] == "done"
                        and J.get_job(conn, failed_job)["failed"] == 0, timeout=60)
            await until(pilot, lambda: job_row(screen, failed_job)[5] == "0", timeout=10)
        conn.close()


async def test_opens_from_the_real_app_shell(db_path, cfg_path, monkeypatch):
    """The shell pushes the screen by name; this is all it needs (db_path, config_path, config, dataset kwarg)."""
    import workbench.app as shell
    monkeypatch.setitem(shell.SCREEN_REGISTRY, "jobs", "screens.jobs:JobsScreen")
    make_dataset(db_path, 2)
    with LLMServer() as srv:
        write_endpoint(cfg_path, srv)
        conn = open_store(db_path)
        jid = J.queue_job(conn, "generate", config=load_config(cfg_path), dataset="demo", endpoint="local")
        conn.close()
        app = shell.WorkbenchApp(db=db_path, config=cfg_path)
        async with app.run_test(size=(140, 45)) as pilot:
            await pilot.pause(0.5)
            app.open_screen("jobs")
            await until(pilot, lambda: isinstance(app.screen, JobsScreen) and app.screen.loaded.is_set())
            assert job_row(app.screen, jid)[2] == "queued"
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, JobsScreen))


async def test_recipe_jobs_show_as_one_group(db_path, cfg_path, tmp_path):
    from workbench import recipes
    from workbench.config import save_config
    cfg = {"endpoints": {"e": {"base_url": "http://127.0.0.1:9/v1", "model": "m"}}}
    save_config(cfg, cfg_path)
    make_dataset(db_path, 3)
    conn = open_store(db_path)
    other = J.queue_job(conn, "generate", config=cfg, dataset="demo", endpoint="e")
    recipe = tmp_path / "r.toml"
    recipe.write_text('name = "two"\n[[step]]\nname = "answer"\ntask = "generate"\ninput = "demo"\n'
                      '[[step]]\nname = "judged"\ntask = "judge"\n', encoding="utf-8")
    rid = recipes.start(conn, recipe, {}, cfg, endpoint="e")
    first = recipes.recipe_view(conn, rid)["steps"][0]["job_id"]
    app = JobsApp(db_path, cfg_path)
    async with app.run_test(size=(140, 40)) as pilot:
        screen = app.screen
        await until(pilot, lambda: screen.view["rows"])
        table = screen.query_one("#jobs-table", DataTable)
        keys = [str(r.value) for r in table.rows]
        assert keys == [f"r{rid}", str(first), f"r{rid}.1", str(other)]
        assert "recipe two" in str(table.get_row(f"r{rid}")[1]) and "0/2 steps" in str(table.get_row(f"r{rid}")[4])
        assert "↳2 judged" in str(table.get_row(f"r{rid}.1")[1]) and "waiting" in str(table.get_row(f"r{rid}.1")[2])
        table.move_cursor(row=0)
        await until(pilot, lambda: screen.selected == f"r{rid}")
        summary = str(screen.query_one("#jobs-summary", Static).render())
        assert f"Recipe {rid} · two · running" in summary and "2. judged (judge): waiting" in summary
        # step 1 finishes and the step is queued by a worker: the group updates in place
        with transaction(conn):
            conn.execute("UPDATE jobs SET status = 'done', done = total WHERE id = ?", (first,))
            insert_samples(conn, ensure_dataset(conn, "demo-generate"), [{"instruction": "Q", "response": "A"}])
        recipes.advance(conn, cfg)
        second = recipes.recipe_view(conn, rid)["steps"][1]["job_id"]
        await until(pilot, lambda: str(second) in [str(r.value) for r in table.rows])
        assert [str(r.value) for r in table.rows][:3] == [f"r{rid}", str(first), str(second)]
        assert "1/2 steps" in str(table.get_row(f"r{rid}")[4])
        # job controls refuse a recipe row rather than acting on something else
        table.move_cursor(row=0)
        await pilot.press("c")
        assert J.get_job(conn, second)["status"] == "queued"
    conn.close()
