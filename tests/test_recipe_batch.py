"""`recipe run ... --batch`: every step of a recipe through the Batch API (the test server's files and batches),
the same rows as the recipe run online, and a kill -9 mid-recipe that a new worker finishes without sending
anything twice."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from llm_server import LLMServer
from test_recipes import humpback_reply, outcome, run_recipe_process, setup_data
from taskkit import config_for
from workbench import batch_state as B
from workbench import jobs, recipes, store
from workbench.config import resolve_config_path, save_config

ROOT = Path(__file__).resolve().parents[1]
HUMPBACK = ("recipe", "run", "humpback", "--endpoint", "test-model", "--var", "input=web", "--var", "seeds=seeds")


def step_jobs(conn, rid: int) -> list[dict]:
    return [jobs.get_job(conn, s["job_id"]) for s in recipes.recipe_view(conn, rid)["steps"]]


def test_batch_recipe_matches_the_online_recipe(cli, conn, db_path, tmp_path):
    setup_data(conn)
    with LLMServer(reply=humpback_reply) as srv:
        cfg = config_for(srv)
        # one request at a time online: the sample ids a step writes follow the order its replies come back in,
        # and the next step's prompts show examples picked by sample id, so concurrent replies made the
        # prompts compared below differ from run to run (1 run in 5 on main)
        cfg["endpoints"]["test-model"].update(max_concurrency=1, adaptive=False)
        save_config(cfg, resolve_config_path())
        code, out, err = cli(*HUMPBACK, "--wait")
        assert code == 0, err
        online = outcome(conn)
        online_prompts = dict(srv.stats.prompts)
        # the same recipe through the Batch API, into a fresh store (no cache to answer from)
        other = tmp_path / "batch.db"
        c2 = store.open_store(other)
        setup_data(c2)
        srv.stats.prompts.clear()
        code, out, err = cli("--db", str(other), *HUMPBACK, "--batch", "--batch-poll", "0.05", "--wait")
        assert code == 0, err
        rid = int(out.strip())
        assert outcome(c2) == online
        js = step_jobs(c2, rid)
        assert all(j["params"]["batch"] == {"poll": 0.05} and j["status"] == "done" for j in js)
        assert all(r["state"] == "ingested" for j in js for r in B.rounds(c2, j["id"]))
        assert srv.batch.creates == sum(len(B.rounds(c2, j["id"])) for j in js) >= 3
        assert srv.stats.prompts == online_prompts          # every request sent once, as online
        code, out, _ = cli("--db", str(other), "recipe", "show", str(rid))
        assert code == 0 and out.count("batch r1 ingested/completed") == 3
        code, out, _ = cli("--db", str(other), "jobs")
        assert code == 0 and out.splitlines()[0].endswith("batch") and out.count("ingested/completed") == 3
        c2.close()


def test_batch_recipe_refusals_record_nothing(cli, conn):
    setup_data(conn)
    save_config({"endpoints": {"e": {"base_url": "http://127.0.0.1:9/v1", "model": "m"},
                               "f": {"base_url": "http://127.0.0.1:9/v1", "model": "m2"}},
                 "pools": {"p": {"endpoints": ["e", "f"]}}}, resolve_config_path())
    base = ("recipe", "run", "humpback", "--var", "input=web", "--var", "seeds=seeds")
    for argv, msg in [
        (("--pool", "p", "--batch"), "step 1 (augment): --batch sends every request of the job to one endpoint"),
        (("--endpoint", "e", "--judge", "f", "--batch"), "the judge must be the job's endpoint"),
        (("--endpoint", "e", "--batch-poll", "5"), "--batch-poll goes with --batch"),
        (("--endpoint", "e", "--batch", "--batch-poll", "-1"), "--batch-poll: give seconds between 0 and 3600"),
    ]:
        code, _, err = cli(*base, *argv)
        assert code == 2 and msg in err and "Traceback" not in err, (argv, err)
        assert len(err.strip().splitlines()) == 1, err
    assert conn.execute("SELECT count(*) FROM recipes").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM jobs").fetchone()[0] == 0


def test_killed_batch_recipe_resumes_sending_nothing_twice(tmp_path):
    """`recipe run --batch --wait` killed with SIGKILL while step 2's batch runs at the provider; `workbench
    worker` finishes the recipe with the rows of an uninterrupted batch run, and no batch is created twice."""
    def run_store(db: Path, kill: bool, srv) -> dict:
        conn = store.open_store(db)
        setup_data(conn)
        srv.stats.prompts.clear()
        srv.batch.creates = 0
        first = len(srv.batches) + 1

        def step2_polled(c) -> bool:
            # every batch stays in progress until released: step 1's by hand, step 2's not until the kill
            held = srv.batches.get(f"batch_{first:04d}")
            if held is not None and held["_polls"] < 10**6:
                held["_polls"] = 10**6                # step 1's batch completes on its next poll
            rid = c.execute("SELECT max(id) FROM recipes").fetchone()[0]
            steps = recipes.recipe_view(c, rid)["steps"] if rid else []
            b = B.summary(c, steps[1]["job_id"]) if steps and steps[1]["job_id"] else None
            return bool(b and b["state"] == "submitted" and b["polls"] >= 1)

        if kill:
            srv.batch.polls_to_finish = 10**6
        view = run_recipe_process(conn, db, [*HUMPBACK[2:], "--batch", "--batch-poll", "0.05"],
                                  tmp_path / f"{db.stem}.log", kill_when=step2_polled if kill else None,
                                  on_kill=lambda: setattr(srv.batch, "polls_to_finish", 2))
        js = step_jobs(conn, view["id"])
        res = outcome(conn)
        res["jobs"] = len(js)
        res["rounds"] = [[(r["round"], r["requests"], r["state"]) for r in B.rounds(conn, j["id"])] for j in js]
        res["creates"] = srv.batch.creates
        res["prompts"] = dict(srv.stats.prompts)
        conn.close()
        return res

    with LLMServer(reply=humpback_reply) as srv:
        save_config(config_for(srv), resolve_config_path())
        whole = run_store(tmp_path / "whole.db", False, srv)
        killed = run_store(tmp_path / "killed.db", True, srv)
    assert killed == whole and whole["jobs"] == 3 and len(whole["pairs"]) == 12
    assert all(n == 1 for n in whole["prompts"].values())


def test_recipe_cancel_cancels_a_running_batch_at_the_provider(cli, conn, tmp_path):
    setup_data(conn)
    with LLMServer(reply=humpback_reply) as srv:
        save_config(config_for(srv), resolve_config_path())
        srv.batch.polls_to_finish = 10**6
        code, out, err = cli(*HUMPBACK, "--batch", "--batch-poll", "0.05")
        assert code == 0, err
        rid = int(out.strip())
        job_id = recipes.recipe_view(conn, rid)["steps"][0]["job_id"]
        log = open(tmp_path / "w.log", "ab")
        p = subprocess.Popen([sys.executable, "-m", "workbench", "worker", "--until-idle"], stdout=log, stderr=log,
                             cwd=ROOT)
        deadline = time.monotonic() + 90
        while (B.summary(conn, job_id) or {}).get("polls", 0) < 1:
            assert time.monotonic() < deadline and p.poll() is None
            time.sleep(0.05)
        os.kill(p.pid, signal.SIGKILL)        # no worker left to notice the cancel: the CLI tells the provider
        p.wait()
        code, out, err = cli("recipe", "cancel", str(rid))
        assert code == 0, err
        assert f"jobs {job_id} cancelled" in out and f"job {job_id}: batch batch_0001 at the provider: cancelling" in out
        assert srv.batch.cancels == 1 and srv.batches["batch_0001"]["status"] == "cancelling"
        assert B.summary(conn, job_id)["remote_status"] == "cancelling"
