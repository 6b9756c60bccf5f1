"""The Jobs screen on a batch job (Pilot): the batch's state, remote status and request counts live, and `c`
cancels the batch at the provider too."""
from __future__ import annotations

from textual.widgets import Static

from test_batch import make_dataset, plugin_tasks, spawn, state, wait_for  # noqa: F401  (fixture)
from test_jobs_screen import JobsApp, text_of, until
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
