"""Recipes: steps queued as their inputs complete, one group of jobs, resumable after a kill, static checks."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llm_server import LLMServer
from taskkit import add_dataset, between, config_for, last_user, samples_of
from workbench import jobs, recipes, store
from workbench.config import resolve_config_path, save_config

ROOT = Path(__file__).resolve().parents[1]
TEXTS = [f"Segment {i}: " + f"how tides work, part {i}, with the moon's pull explained. " * 10 for i in range(12)]


def humpback_reply(messages, body):
    prompt = last_user(messages)
    if "Score: N" in prompt:                                   # the curator: a fixed score per request
        inst = between(prompt, "User's request:")
        n = int(re.search(r"part (\d+)", inst).group(1))
        return f"Reasons.\nScore: {5 if n % 3 else 3}"
    text = prompt.rsplit("<<<\n", 1)[1].split("\n>>>")[0]       # the backward model
    n = int(re.search(r"part (\d+)", text).group(1))
    return f"Explain how tides work, part {n}."


def setup_data(conn):
    add_dataset(conn, "seeds", [{"instruction": "What is a lunar month?", "response": "About 29.5 days."}])
    add_dataset(conn, "web", [{"instruction": "", "response": t} for t in TEXTS])


def outcome(conn) -> dict:
    """What a recipe run produced, independent of ids and timing."""
    cands = samples_of(conn, "web-backtranslate")
    return {"pairs": sorted((s["instruction"], s["response"],
                             json.dumps({r: (v["score"], v["kept"]) for r, v in
                                         (s["metadata"] or {}).get("curation_rounds", {}).items()}, sort_keys=True))
                            for s in cands)}


def test_humpback_recipe_runs_as_one_group(cli, conn, tmp_path):
    setup_data(conn)
    with LLMServer(reply=humpback_reply) as srv:
        save_config(config_for(srv), resolve_config_path())
        code, out, err = cli("recipe", "run", "humpback", "--endpoint", "test-model", "--var", "input=web",
                             "--var", "seeds=seeds", "--wait")
    assert code == 0, err
    rid = int(out.strip())
    view = recipes.recipe_view(conn, rid)
    assert view["status"] == "done" and [s["task"] for s in view["steps"]] == ["backtranslate", "curate", "curate"]
    assert all(s["status"] == "done" and s["job_id"] for s in view["steps"])
    j = [jobs.get_job(conn, s["job_id"]) for s in view["steps"]]
    assert j[1]["params"]["dataset"] == j[2]["params"]["dataset"] == "web-backtranslate"     # @step outputs
    assert j[2]["params"]["task"]["round"] == 2 and j[1]["params"]["task"]["seed_dataset"] == "seeds"
    res = outcome(conn)
    assert len(res["pairs"]) == 12
    kept = [p for p in res["pairs"] if json.loads(p[2]) == {"1": [5, True], "2": [5, True]}]
    assert len(kept) == 8
    assert "step 3 (curate2)" in err and f"recipe {rid} done" in err
    code, out, _ = cli("recipe", "show", str(rid))
    assert code == 0 and "3/3 steps done" in out and "curate2" in out
    code, out, _ = cli("recipe", "list")
    assert "humpback" in out and "evol" in out and "preference" in out


def test_static_checks_record_nothing(cli, conn, tmp_path):
    setup_data(conn)
    save_config({"endpoints": {"e": {"base_url": "http://127.0.0.1:9/v1", "model": "m"}}}, resolve_config_path())
    cases = [
        (["humpback", "--endpoint", "e", "--var", "input=web"], "give --var seeds="),
        (["humpback", "--endpoint", "e", "--var", "input=web", "--var", "seeds=seeds", "--var", "x=1"],
         "--var x is not a variable"),
        (["humpback", "--var", "input=web", "--var", "seeds=seeds"], "no endpoint or pool"),
        (["humpback", "--endpoint", "nope", "--var", "input=web", "--var", "seeds=seeds"], "nope"),
        (["humpback", "--endpoint", "e", "--var", "input=missing", "--var", "seeds=seeds"], "no dataset named 'missing'"),
        (["nosuch"], "no recipe 'nosuch'"),
    ]
    for argv, msg in cases:
        code, _, err = cli("recipe", "run", *argv)
        assert code == 2 and msg in err, (argv, err)
    bad = tmp_path / "bad.toml"
    for text, msg in [
        ('[[step]]\ntask = "curate"\ninput = "@later"\n', "names no earlier step"),
        ('[[step]]\ntask = "frobnicate"\ninput = "web"\n', "unknown task"),
        ('[[step]]\ntask = "curate"\ninput = "web"\nparams = { threshold = 9, bogus = 1 }\n', "unknown param bogus"),
        ('[[step]]\ntask = "curate"\ninput = "${who}"\n', "${who} is not a variable"),
        ('[[step]]\nname = "a"\ntask = "curate"\ninput = "web"\n[[step]]\nname = "a"\ntask = "curate"\n',
         "used by step 1"),
        ('[[step]]\ntask = "curate"\ninput = "web"\nretries = 3\n', "unknown key 'retries'"),
        ('name = "x"\n', "no [[step]]"),
        ('[[step]\n', "bad.toml"),
    ]:
        bad.write_text(text, encoding="utf-8")
        code, _, err = cli("recipe", "run", str(bad), "--endpoint", "e")
        assert code == 2 and msg in err, (text, err)
    assert conn.execute("SELECT count(*) FROM recipes").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM jobs").fetchone()[0] == 0


def test_a_step_is_queued_once_and_failures_stop_the_recipe(conn, tmp_path):
    setup_data(conn)
    cfg = {"endpoints": {"e": {"base_url": "http://127.0.0.1:9/v1", "model": "m"}}}
    path = tmp_path / "r.toml"
    path.write_text('[[step]]\nname = "bt"\ntask = "backtranslate"\ninput = "web"\n'
                    '[[step]]\nname = "c2"\ntask = "curate"\nparams = { round = 2 }\n', encoding="utf-8")
    rid = recipes.start(conn, path, {}, cfg, endpoint="e")
    assert recipes.advance(conn, cfg) == 0                      # step 1 is queued already; step 2 waits
    view = recipes.recipe_view(conn, rid)
    assert [s["status"] for s in view["steps"]] == ["queued", "waiting"]
    # step 1 done (marked by hand here): step 2 is queued by whoever advances first, then refused by curate
    with store.transaction(conn):
        conn.execute("UPDATE jobs SET status = 'done' WHERE id = ?", (view["steps"][0]["job_id"],))
    recipes.advance(conn, cfg)
    view = recipes.recipe_view(conn, rid)
    assert view["status"] == "failed" and "step 2 (c2)" in view["error"] and "round 1" in view["error"]
    assert view["steps"][1]["job_id"] is None
    # a step's job cancelled: the recipe stops, saying which
    rid2 = recipes.start(conn, path, {}, cfg, endpoint="e")
    job_id = recipes.recipe_view(conn, rid2)["steps"][0]["job_id"]
    jobs.cancel_job(conn, job_id)
    recipes.advance(conn, cfg)
    v2 = recipes.recipe_view(conn, rid2)
    assert v2["status"] == "failed" and f"job {job_id} ended cancelled" in v2["error"]


def run_recipe_process(conn, db: Path, argv: list[str], log_path: Path, kill_when=None, on_kill=None) -> dict:
    """`workbench recipe run ARGV --wait` in a process of its own; with `kill_when(conn)`: killed with SIGKILL as
    soon as it holds, then (after `on_kill()`) `workbench worker --until-idle` finishes the recipe. Returns the
    recipe's view, which must be done."""
    with open(log_path, "ab") as log:
        p = subprocess.Popen([sys.executable, "-m", "workbench", "--db", str(db), "recipe", "run", *argv, "--wait"],
                             stdout=log, stderr=log, cwd=ROOT)
        if kill_when is not None:
            deadline = time.monotonic() + 120
            while not kill_when(conn):
                assert time.monotonic() < deadline and p.poll() is None, log_path.read_text()
                time.sleep(0.02)
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
            rid = conn.execute("SELECT max(id) FROM recipes").fetchone()[0]
            assert recipes.recipe_view(conn, rid)["status"] == "running"
            if on_kill is not None:
                on_kill()
            w = subprocess.Popen([sys.executable, "-m", "workbench", "--db", str(db), "worker", "--until-idle"],
                                 stdout=log, stderr=log, cwd=ROOT)
            assert w.wait(120) == 0, log_path.read_text()
        else:
            assert p.wait(120) == 0, log_path.read_text()
    rid = conn.execute("SELECT max(id) FROM recipes").fetchone()[0]
    view = recipes.recipe_view(conn, rid)
    assert view["status"] == "done", view
    return view


def test_killed_recipe_resumes_with_the_same_rows(tmp_path):
    """`recipe run --wait` killed mid-way; `workbench worker` finishes it; the rows equal an uninterrupted run's."""
    def run_store(db: Path, kill: bool, srv) -> dict:
        conn = store.open_store(db)
        setup_data(conn)
        # killed when step 1 is done and step 2 part-way
        run_recipe_process(conn, db, ["humpback", "--endpoint", "test-model", "--var", "input=web", "--var",
                                      "seeds=seeds"], tmp_path / f"{db.stem}.log",
                           kill_when=(lambda c: c.execute("SELECT coalesce(sum(done), 0) FROM jobs").fetchone()[0]
                                      >= 13) if kill else None)
        res = outcome(conn)
        res["jobs"] = conn.execute("SELECT count(*) FROM jobs").fetchone()[0]
        conn.close()
        return res

    with LLMServer(reply=humpback_reply, latency=0.2) as srv:
        save_config(config_for(srv), resolve_config_path())
        whole = run_store(tmp_path / "whole.db", False, srv)
        killed = run_store(tmp_path / "killed.db", True, srv)
    assert killed == whole and whole["jobs"] == 3 and len(whole["pairs"]) == 12


def test_cancel_stops_the_recipe_and_every_later_step(cli, conn, tmp_path):
    setup_data(conn)
    cfg = {"endpoints": {"e": {"base_url": "http://127.0.0.1:9/v1", "model": "m"}}}
    save_config(cfg, resolve_config_path())
    path = tmp_path / "r.toml"
    path.write_text('[[step]]\nname = "bt"\ntask = "backtranslate"\ninput = "web"\n'
                    '[[step]]\nname = "c1"\ntask = "curate"\n', encoding="utf-8")
    rid = recipes.start(conn, path, {}, cfg, endpoint="e")
    first = recipes.recipe_view(conn, rid)["steps"][0]["job_id"]
    code, out, err = cli("recipe", "cancel", str(rid), "--json")
    assert code == 0, err
    got = json.loads(out)
    assert got["jobs"] == [first] and got["recipe"]["status"] == "cancelled"
    assert jobs.get_job(conn, first)["status"] == "cancelled"
    # the first step "finishes" anyway (a worker racing the cancel): the next step is never queued
    with store.transaction(conn):
        conn.execute("UPDATE jobs SET status = 'done' WHERE id = ?", (first,))
    assert recipes.advance(conn, cfg) == 0
    with pytest.raises(jobs.StepTaken):                       # even by a worker that read "running" before
        jobs.queue_job(conn, "curate", config=cfg, dataset="web", endpoint="e", recipe_step=(rid, 1))
    assert conn.execute("SELECT count(*) FROM jobs").fetchone()[0] == 1
    view = recipes.recipe_view(conn, rid)
    assert view["status"] == "cancelled" and view["steps"][1]["job_id"] is None
    code, out, _ = cli("recipe", "show", str(rid))
    assert code == 0 and "cancelled" in out.splitlines()[0] and "not queued" in out
    code, _, err = cli("recipe", "cancel", str(rid))               # twice: refused, saying why
    assert code == 2 and "is cancelled: cannot cancel" in err
    code, _, err = cli("recipe", "cancel", "999")
    assert code == 2 and "no recipe 999" in err


def test_cancelled_recipe_does_not_resume_after_a_worker_restart(tmp_path):
    """`recipe run --wait` killed in step 2, `recipe cancel`, then a fresh `workbench worker`: nothing more runs."""
    db = tmp_path / "c.db"
    conn = store.open_store(db)
    setup_data(conn)

    def slow_curate(messages, body):
        if "Score: N" in last_user(messages):
            time.sleep(0.3)                 # the server answers one at a time here: step 2 takes seconds
        return humpback_reply(messages, body)

    with LLMServer(reply=slow_curate, latency=0.2) as srv, open(tmp_path / "c.log", "ab") as log:
        save_config(config_for(srv), resolve_config_path())
        p = subprocess.Popen([sys.executable, "-m", "workbench", "--db", str(db), "recipe", "run", "humpback",
                              "--endpoint", "test-model", "--var", "input=web", "--var", "seeds=seeds", "--wait"],
                             stdout=log, stderr=log, cwd=ROOT)
        deadline = time.monotonic() + 60
        while conn.execute("SELECT coalesce(sum(done), 0) FROM jobs").fetchone()[0] < 13:   # in step 2
            assert time.monotonic() < deadline and p.poll() is None
            time.sleep(0.02)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        rid = conn.execute("SELECT max(id) FROM recipes").fetchone()[0]
        c = subprocess.run([sys.executable, "-m", "workbench", "--db", str(db), "recipe", "cancel", str(rid)],
                           capture_output=True, text=True, cwd=ROOT)
        assert c.returncode == 0 and "cancelled" in c.stdout, c.stderr
        at_cancel = recipes.recipe_view(conn, rid)
        done_before = conn.execute("SELECT sum(done) FROM jobs").fetchone()[0]
        w = subprocess.run([sys.executable, "-m", "workbench", "--db", str(db), "worker", "--until-idle"],
                           capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert w.returncode == 0, w.stderr
    view = recipes.recipe_view(conn, rid)
    assert view["status"] == "cancelled"
    # what the cancel found stays as it was: step 1 done, step 2's job cancelled mid-way, step 3 never queued
    assert [s["status"] for s in at_cancel["steps"]] == [s["status"] for s in view["steps"]] == \
        ["done", "cancelled", "waiting"]
    assert view["steps"][1]["done"] < view["steps"][1]["total"] and view["steps"][2]["job_id"] is None
    assert conn.execute("SELECT sum(done) FROM jobs").fetchone()[0] == done_before
    assert conn.execute("SELECT count(*) FROM jobs").fetchone()[0] == 2
    conn.close()
