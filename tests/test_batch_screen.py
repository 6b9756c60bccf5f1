"""The Jobs screen on a batch job (Pilot): the batch's state, remote status and request counts live, and `c`
cancels the batch at the provider too."""
from __future__ import annotations

from textual.widgets import Static

from test_batch import make_dataset, plugin_tasks, spawn, state, wait_for  # noqa: F401  (fixture)
from test_jobs_screen import JobsApp, spawned, text_of, until  # noqa: F401  (fixture)
from llm_server import LLMServer, write_endpoint
from workbench import jobs as J
from workbench.config import load_config
from workbench.store import open_store


async def test_jobs_screen_shows_batch_status_and_cancels_the_remote_batch(db_path, tmp_path, plugin_tasks):  # noqa: F811
    cfg_path = tmp_path / "config.toml"
    conn = open_store(db_path)
    make_dataset(conn, "demo", 6)
    with LLMServer() as srv:
        write_endpoint(cfg_path, srv)
        srv.batch.polls_to_finish = 10**6
        jid = J.queue_job(conn, "stall", config=load_config(cfg_path), dataset="demo", endpoint="local",
                          batch={"poll": 0.05})
        p = spawn(db_path, cfg_path, tmp_path / "w1.log")
        try:
            wait_for(lambda: state(conn, jid) == "submitted")
            app = JobsApp(db_path, cfg_path)
            async with app.run_test(size=(160, 45)) as pilot:
                screen = app.screen
                await until(pilot, lambda: screen.loaded.is_set())
                summary = lambda: text_of(screen.query_one("#jobs-summary", Static))  # noqa: E731
                await until(pilot, lambda: "batch round 1: submitted · remote in_progress · 0/6 completed, 0 failed"
                            in summary())
                assert "6 requests · batch batch_0001 · input file file-0001" in summary()
                await pilot.press("c")
                await until(pilot, lambda: srv.batch.cancels >= 1)
                await until(pilot, lambda: "cancelled" in summary().split("\n", 1)[0])
            assert p.wait(60) == 0
            assert srv.batches["batch_0001"]["status"] in ("cancelling", "cancelled")
            assert J.get_job(conn, jid)["status"] == "cancelled"
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
    conn.close()


async def test_launch_dialog_queues_a_batch_job_and_refuses_a_pool(db_path, tmp_path, spawned, cli):  # noqa: F811
    from textual.widgets import Checkbox, Select
    from widgets.jobs_launch import LaunchDialog
    cfg_path = tmp_path / "config.toml"
    conn = open_store(db_path)
    make_dataset(conn, "demo", 5)
    with LLMServer() as srv:
        write_endpoint(cfg_path, srv)
        write_endpoint(cfg_path, srv, name="second", model="second-model")   # a pool never holds one server twice
        srv.batch.polls_to_finish = 1       # the dialog's job polls every 30 s: done at the first poll
        assert cli("pools", "add", "both", "--endpoint", "local", "--endpoint", "second", "--config",
                   str(cfg_path))[0] == 0
        app = JobsApp(db_path, cfg_path)
        async with app.run_test(size=(160, 45)) as pilot:
            screen = app.screen
            await until(pilot, lambda: screen.loaded.is_set())
            await pilot.press("n")
            await until(pilot, lambda: isinstance(app.screen, LaunchDialog))
            dialog = app.screen
            await pilot.pause()
            dialog.query_one("#launch-batch", Checkbox).value = True
            dialog.query_one("#launch-generator", Select).value = "pool:both"
            await pilot.press("ctrl+s")
            await until(pilot, lambda: "--batch sends every request of the job to one endpoint's Batch API"
                        in text_of(dialog.query_one("#launch-error", Static)))
            dialog.query_one("#launch-generator", Select).value = "endpoint:local"
            await pilot.press("ctrl+s")
            await until(pilot, lambda: app.screen is screen)
            await until(pilot, lambda: screen.view["jobs"] and screen.view["jobs"][0]["status"] == "done", 90)
            jid = screen.view["jobs"][0]["id"]
            await until(pilot, lambda: "batch round 1: ingested · remote completed · 5/5 completed"
                        in text_of(screen.query_one("#jobs-summary", Static)))
        j = J.get_job(conn, jid)
        assert j["params"]["batch"] == {"poll": 30.0} and (j["done"], j["failed"]) == (5, 0)
        assert srv.batch.creates == 1
    conn.close()
