"""The worker end to end: real openai client -> real test server -> real SQLite store, CLI as a user runs it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from llm_server import LLMServer, Rule, write_endpoint
from workbench import jobs as J
from workbench.config import load_config
from workbench.samples import insert_samples
from workbench.store import ensure_dataset, open_store, transaction
from workbench.tasks import TASKS, register
from workbench.worker import run_worker

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


@pytest.fixture
def cfg_path(tmp_path):
    return tmp_path / "config.toml"


@pytest.fixture
def srv():
    with LLMServer(latency=0.002) as s:
        yield s


@pytest.fixture
def test_tasks():
    import llm_test_tasks
    for cls in llm_test_tasks.ALL:
        register(cls)
    yield
    for cls in llm_test_tasks.ALL:
        TASKS.pop(cls.name, None)


def make_dataset(db_path, name="demo", n=10, fmt="Question {i}"):
    conn = open_store(db_path)
    with transaction(conn):
        did = ensure_dataset(conn, name)
        insert_samples(conn, did, [{"instruction": fmt.format(i=i), "system": "Be brief."} for i in range(n)])
    conn.close()


def rows(db_path, sql, args=()):
    conn = open_store(db_path)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def job(db_path, jid):
    conn = open_store(db_path)
    try:
        return J.get_job(conn, jid)
    finally:
        conn.close()


def test_generate_end_to_end_cli(cli, srv, db_path, cfg_path):
    make_dataset(db_path, n=12)
    srv.reply = lambda msgs, body: f"[{msgs[0]['content']}] answer to {msgs[-1]['content']}"
    code, out, err = cli("endpoints", "add", "local", "--base-url", srv.base_url, "--model", "test-model",
                         "--max-concurrency", "4")
    assert code == 0, err
    code, out, err = cli("run", "generate", "--dataset", "demo", "--endpoint", "local", "--param", "temperature=0.3",
                         "--param", "max_tokens=64", "--wait")
    assert code == 0, err
    jid = int(out.split()[0])
    j = job(db_path, jid)
    assert (j["status"], j["total"], j["done"], j["failed"], j["kept"]) == ("done", 12, 12, 0, 12)
    assert j["requests"] == 12 and j["tokens_in"] > 0 and j["tokens_out"] > 0
    got = rows(db_path, "SELECT s.instruction, s.response, s.system, s.parent_id, p.instruction, s.job_id, s.origin "
                        "FROM samples s JOIN samples p ON p.id = s.parent_id JOIN datasets d ON d.id = s.dataset_id "
                        "WHERE d.name = 'demo-generate' ORDER BY s.id")
    assert len(got) == 12
    for instr, resp, system, parent, parent_instr, job_id, origin in got:
        assert instr == parent_instr and job_id == jid and system == "Be brief."
        assert resp == f"[Be brief.] answer to {instr}"
        assert '"endpoint":"local"' in origin and '"model":"test-model"' in origin
        assert '"template_version":"generate/1"' in origin and '"temperature":0.3' in origin
    assert all(b["temperature"] == 0.3 and b["max_tokens"] == 64 for b in srv.stats.bodies)
    code, out, _ = cli("jobs", "--json")
    assert code == 0 and '"status": "done"' in out and '"total": 12' in out
    code, out, _ = cli("jobs")
    assert f"{jid:>4} generate" in out


def test_each_fault_fails_its_item_only_and_retry_recovers(srv, db_path, cfg_path, cli):
    make_dataset(db_path, n=10)
    write_endpoint(cfg_path, srv, max_retries=2, timeout=0.5)
    srv.rules = [Rule("blank", match="Question 1"),
                 Rule("length", match="Question 2"), Rule("500", match="Question 3"),
                 Rule("429", match="Question 4", times=1, retry_after=0.1), Rule("hang", match="Question 5", times=1),
                 Rule("drop", match="Question 6", times=1), Rule("truncated", match="Question 7", times=1),
                 Rule("empty", match="Question 8", times=1)]
    srv.reply = lambda msgs, body: f"Answer: {msgs[-1]['content']} in many words"
    code, out, err = cli("run", "generate", "--dataset", "demo", "--endpoint", "local", "--wait")
    assert code == 1                                              # the job ended with failed items
    jid = int(out.split()[0])
    j = job(db_path, jid)
    assert (j["status"], j["done"], j["failed"]) == ("done", 7, 3)
    assert j["retries"] >= 5 and "3 item(s) failed" in j["error"]
    fails = {f["key"]: f for f in J.failures(open_store(db_path), jid)}
    assert set(fails) == {"s:2", "s:3", "s:4"}                   # Questions 1, 2, 3
    assert "empty reply" in fails["s:2"]["error"] and fails["s:2"]["raw"] == ""
    assert "max_tokens" in fails["s:3"]["error"] and fails["s:3"]["raw"].startswith("Answer: Question")
    assert "HTTP 500" in fails["s:4"]["error"] and "gave up after 3 attempts" in fails["s:4"]["error"]
    code, out, _ = cli("jobs", "show", str(jid))
    assert "raw reply:" in out and "cut off at max_tokens" in out and "\nAnswer: Question\n" in out
    # the server recovers: retry only the failed items
    srv.rules = []
    code, out, err = cli("jobs", "retry", str(jid))
    assert code == 0 and "3 failed item(s) queued again" in out
    run_worker(db_path, load_config(cfg_path), until_idle=True)
    j = job(db_path, jid)
    assert (j["status"], j["done"], j["failed"]) == ("done", 10, 0)
    got = rows(db_path, "SELECT parent_id, count(*) FROM samples WHERE job_id = ? GROUP BY parent_id", (jid,))
    assert len(got) == 10 and all(n == 1 for _, n in got)


def test_retried_cancelled_job_runs_its_failed_items_only_and_stays_cancelled(srv, db_path, cfg_path, cli):
    make_dataset(db_path, n=4)
    write_endpoint(cfg_path, srv, max_retries=0)
    code, out, err = cli("run", "generate", "--dataset", "demo", "--endpoint", "local")
    jid = int(out.split()[0])
    conn = open_store(db_path)
    with transaction(conn):      # as if a worker had failed the first item before the curator cancelled the job
        conn.execute("UPDATE job_items SET status = 'failed', error = 'HTTP 500' WHERE job_id = ? AND key = 's:1'",
                     (jid,))
        conn.execute("UPDATE jobs SET failed = 1 WHERE id = ?", (jid,))
    assert cli("jobs", "cancel", str(jid))[0] == 0
    code, out, err = cli("jobs", "retry", str(jid))
    assert code == 0 and "1 failed item(s) queued again" in out
    run_worker(db_path, load_config(cfg_path), until_idle=True)
    j = job(db_path, jid)
    assert (j["status"], j["done"], j["failed"]) == ("cancelled", 1, 0)
    assert J.item_counts(conn, jid) == {"done": 1, "cancelled": 3}
    assert rows(db_path, "SELECT parent_id FROM samples WHERE job_id = ?", (jid,)) == [(1,)]
    conn.close()


def test_each_pool_one_sample_per_model(db_path, cfg_path, cli):
    make_dataset(db_path, n=3)
    with LLMServer(models=["alpha"]) as a, LLMServer(models=["beta"]) as b:
        write_endpoint(cfg_path, a, "a")
        write_endpoint(cfg_path, b, "b")
        assert cli("pools", "add", "both", "--endpoint", "a", "--endpoint", "b", "--mode", "each")[0] == 0
        code, out, err = cli("run", "generate", "--dataset", "demo", "--pool", "both", "--wait")
        assert code == 0, err
    got = rows(db_path, "SELECT parent_id, json_extract(origin, '$.model') FROM samples WHERE job_id = ?",
               (int(out.split()[0]),))
    assert sorted(got) == [(p, m) for p in (1, 2, 3) for m in ("alpha", "beta")]


def test_rerun_costs_nothing(srv, db_path, cfg_path, cli):
    make_dataset(db_path, n=8)
    write_endpoint(cfg_path, srv)
    assert cli("run", "generate", "--dataset", "demo", "--endpoint", "local", "--wait")[0] == 0
    sent = srv.stats.completions
    code, out, _ = cli("run", "generate", "--dataset", "demo", "--endpoint", "local", "--into", "again", "--wait")
    j = job(db_path, int(out.split()[0]))
    assert code == 0 and srv.stats.completions == sent == 8
    assert (j["cache_hits"], j["requests"], j["done"], j["cost"]) == (8, 0, 8, 0)


@pytest.fixture
def quick_heartbeat(monkeypatch):
    import workbench.worker
    monkeypatch.setattr(workbench.worker, "HEARTBEAT_SECONDS", 0.2)


def test_pause_then_resume_runs_each_item_once(db_path, cfg_path, quick_heartbeat):
    make_dataset(db_path, n=60)
    with LLMServer(latency=0.05, capacity=2) as srv:
        write_endpoint(cfg_path, srv, max_concurrency=2)
        conn = open_store(db_path)
        jid = J.queue_job(conn, "generate", config=load_config(cfg_path), dataset="demo", endpoint="local")
        t = threading.Thread(target=run_worker, args=(db_path, load_config(cfg_path)), kwargs={"until_idle": True})
        t.start()
        while J.get_job(conn, jid)["done"] < 8:
            time.sleep(0.05)
        J.pause_job(conn, jid)
        t.join(20)
        assert not t.is_alive()
        j = J.get_job(conn, jid)
        assert j["status"] == "paused" and 8 <= j["done"] < 60 and j["lease_owner"] is None
        J.resume_job(conn, jid)
        run_worker(db_path, load_config(cfg_path), until_idle=True)
        j = J.get_job(conn, jid)
        assert (j["status"], j["done"], j["failed"]) == ("done", 60, 0)
        assert conn.execute("SELECT count(*), count(DISTINCT parent_id) FROM samples WHERE job_id = ?",
                            (jid,)).fetchone() == (60, 60)
        conn.close()


def test_cancel_stops_worker(db_path, cfg_path, quick_heartbeat):
    make_dataset(db_path, n=200)
    with LLMServer(latency=0.05, capacity=2) as srv:
        write_endpoint(cfg_path, srv, max_concurrency=2)
        conn = open_store(db_path)
        jid = J.queue_job(conn, "generate", config=load_config(cfg_path), dataset="demo", endpoint="local")
        t = threading.Thread(target=run_worker, args=(db_path, load_config(cfg_path)), kwargs={"until_idle": True})
        t.start()
        while J.get_job(conn, jid)["done"] < 2:
            time.sleep(0.05)
        J.cancel_job(conn, jid)
        t.join(20)
        j = J.get_job(conn, jid)
        assert not t.is_alive() and j["status"] == "cancelled" and j["done"] < 200
        n = conn.execute("SELECT count(*) FROM samples WHERE job_id = ?", (jid,)).fetchone()[0]
        assert n == j["done"]
        conn.close()


def test_dead_endpoint_pauses_job_instead_of_failing_everything(db_path, cfg_path):
    make_dataset(db_path, n=100)
    with LLMServer() as srv:
        write_endpoint(cfg_path, srv, max_retries=0, max_concurrency=4)
        srv.rules = [Rule("500")]
        conn = open_store(db_path)
        jid = J.queue_job(conn, "generate", config=load_config(cfg_path), dataset="demo", endpoint="local")
        run_worker(db_path, load_config(cfg_path), until_idle=True)
        j = J.get_job(conn, jid)
        conn.close()
    assert j["status"] == "paused" and "failed requests in a row" in j["error"] and "HTTP 500" in j["error"]
    assert j["failed"] < 30 and j["done"] == 0


def test_missing_api_key_pauses_job_naming_the_variable(srv, db_path, cfg_path, monkeypatch):
    monkeypatch.delenv("WB_TEST_KEY", raising=False)
    make_dataset(db_path, n=3)
    write_endpoint(cfg_path, srv, api_key_env="WB_TEST_KEY")
    conn = open_store(db_path)
    jid = J.queue_job(conn, "generate", config=load_config(cfg_path), dataset="demo", endpoint="local")
    run_worker(db_path, load_config(cfg_path), until_idle=True)
    j = J.get_job(conn, jid)
    conn.close()
    assert j["status"] == "paused" and "WB_TEST_KEY is not set" in j["error"] and srv.stats.requests == 0


def test_dynamic_items_until_enough_kept(srv, db_path, cfg_path, cli, test_tasks):
    write_endpoint(cfg_path, srv)
    srv.reply = lambda msgs, body: ("dup" if "round 1" in msgs[-1]["content"] or "round 4" in msgs[-1]["content"]
                                    else f"Idea from {msgs[-1]['content']}")
    code, out, err = cli("run", "grow", "--endpoint", "local", "--param", "wanted=5", "--wait")
    assert code == 0, err
    j = job(db_path, int(out.split()[0]))
    assert j["kept"] >= 5 and j["dropped"] == 2 and j["drop_reasons"] == {"near-copy": 2}
    assert j["total"] == j["done"] == 8        # rounds were added two at a time until 5 were kept
    got = rows(db_path, "SELECT instruction FROM samples s JOIN datasets d ON d.id = s.dataset_id "
                        "WHERE d.name = 'grown' ORDER BY s.id")
    assert len(got) == 6 and len(set(got)) == 6


# --- crash safety with real worker processes -----------------------------------------------------------------

def spawn_worker(db_path, cfg_path, log_path, *extra, plugin=False):
    env = dict(os.environ)
    if plugin:
        env["WORKBENCH_TASK_MODULES"] = "llm_test_tasks"
        env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    log = open(log_path, "ab")
    return subprocess.Popen([sys.executable, "-m", "workbench", "worker", "--until-idle", "--db", str(db_path),
                             "--config", str(cfg_path), *extra], stdout=log, stderr=log, env=env, cwd=ROOT)


def wait_for(pred, timeout=90.0):
    # generous: a worker runs at nice +10, so on a loaded 2-core machine it may take long to start
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads niceness from /proc")
def test_worker_process_yields_the_cpu_to_the_tui(db_path, cfg_path, tmp_path):
    from workbench.cli.jobs import WORKER_NICE

    def nice(pid):
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])
    open_store(db_path).close()
    p = subprocess.Popen([sys.executable, "-m", "workbench", "worker", "--db", str(db_path), "--config",
                          str(cfg_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        wait_for(lambda: nice(p.pid) == min(19, nice(os.getpid()) + WORKER_NICE))
    finally:
        p.kill()
        p.wait()


def test_kill9_mid_job_then_restart_exact(db_path, cfg_path, tmp_path):
    n = 150
    make_dataset(db_path, n=n)
    with LLMServer(latency=0.03, capacity=4) as srv:
        write_endpoint(cfg_path, srv, max_concurrency=4)
        conn = open_store(db_path)
        jid = J.queue_job(conn, "generate", config=load_config(cfg_path), dataset="demo", endpoint="local")
        p = spawn_worker(db_path, cfg_path, tmp_path / "w1.log")
        wait_for(lambda: J.get_job(conn, jid)["done"] >= 30)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        before = J.get_job(conn, jid)
        assert before["status"] == "running" and before["done"] < n      # it died holding the lease
        done_keys = {r[0] for r in conn.execute("SELECT sample_id FROM job_items WHERE job_id = ? AND status = 'done'",
                                                (jid,))}
        assert conn.execute("SELECT count(*) FROM samples WHERE job_id = ?", (jid,)).fetchone()[0] == len(done_keys)
        # a new worker takes over at once (the dead owner was on this host) and finishes
        p2 = spawn_worker(db_path, cfg_path, tmp_path / "w2.log")
        assert p2.wait(60) == 0
        j = J.get_job(conn, jid)
        assert (j["status"], j["total"], j["done"], j["failed"]) == ("done", n, n, 0)
        got = conn.execute("SELECT s.parent_id, count(*), p.instruction FROM samples s JOIN samples p "
                           "ON p.id = s.parent_id WHERE s.job_id = ? GROUP BY s.parent_id", (jid,)).fetchall()
        assert len(got) == n and all(c == 1 for _, c, _ in got)           # no duplicate outputs
        # what had been committed before the kill was never asked again
        by_id = {pid: instr for pid, _, instr in got}
        for sid in done_keys:
            assert srv.stats.prompts[f"Be brief.\n{by_id[sid]}"] == 1
        conn.close()


def test_kill9_between_stages_reuses_cached_answers(db_path, cfg_path, tmp_path, test_tasks):
    n = 20
    make_dataset(db_path, n=n)
    with LLMServer(latency=0.01) as srv:
        write_endpoint(cfg_path, srv, max_concurrency=8, timeout=60)
        srv.rules = [Rule("slow", match="Stage B", hang=60)]        # second calls never return before the kill
        conn = open_store(db_path)
        jid = J.queue_job(conn, "two-stage", config=load_config(cfg_path), dataset="demo", endpoint="local")
        p = spawn_worker(db_path, cfg_path, tmp_path / "w1.log", plugin=True)
        wait_for(lambda: conn.execute("SELECT count(*) FROM llm_cache").fetchone()[0] >= 8)
        time.sleep(0.8)          # let the answers that landed meanwhile be committed (flushed every 0.25 s)
        answered = srv.stats.completions
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        cached = conn.execute("SELECT count(*) FROM llm_cache").fetchone()[0]
        assert J.get_job(conn, jid)["done"] == 0 and cached == answered >= 8
        srv.rules = []
        p2 = spawn_worker(db_path, cfg_path, tmp_path / "w2.log", plugin=True)
        assert p2.wait(60) == 0
        j = J.get_job(conn, jid)
        assert (j["status"], j["done"]) == ("done", n)
        assert j["cache_hits"] == cached                 # every answer that had landed was reused, not paid again
        stage_a = [k for k in srv.stats.prompts if k.startswith("Stage A")]
        assert len(stage_a) == n and all(srv.stats.prompts[k] == 1 for k in stage_a)
        assert conn.execute("SELECT count(DISTINCT parent_id), count(*) FROM samples WHERE job_id = ?",
                            (jid,)).fetchone() == (n, n)
        conn.close()


def test_sigterm_returns_job_to_queue(db_path, cfg_path, tmp_path):
    make_dataset(db_path, n=400)
    with LLMServer(latency=0.05, capacity=2) as srv:
        write_endpoint(cfg_path, srv, max_concurrency=2)
        conn = open_store(db_path)
        jid = J.queue_job(conn, "generate", config=load_config(cfg_path), dataset="demo", endpoint="local")
        p = spawn_worker(db_path, cfg_path, tmp_path / "w.log")
        wait_for(lambda: J.get_job(conn, jid)["done"] >= 4)
        p.send_signal(signal.SIGTERM)
        assert p.wait(20) == 0
        j = J.get_job(conn, jid)
        assert j["status"] == "queued" and j["lease_owner"] is None and 4 <= j["done"] < 400
        assert conn.execute("SELECT count(*) FROM samples WHERE job_id = ?", (jid,)).fetchone()[0] == j["done"]
        conn.close()


def test_store_write_failures_pause_the_job_without_losing_items(srv, db_path, cfg_path, monkeypatch):
    """A commit that keeps failing (disk full, ...) pauses the job; nothing half-written, items still pending."""
    import sqlite3
    import workbench.worker as W
    make_dataset(db_path, n=5)
    write_endpoint(cfg_path, srv)
    conn = open_store(db_path)
    jid = J.queue_job(conn, "generate", config=load_config(cfg_path), dataset="demo", endpoint="local")

    def full_disk(*a, **k):
        raise sqlite3.OperationalError("database or disk is full")
    monkeypatch.setattr(W.J, "commit_batch", full_disk)
    monkeypatch.setattr(W, "FLUSH_SECONDS", 0.01)
    run_worker(db_path, load_config(cfg_path), until_idle=True)
    j = J.get_job(conn, jid)
    assert j["status"] == "paused" and "disk is full" in j["error"] and j["done"] == 0
    assert len(J.pending_items(conn, jid, 0, 10)) == 5
    monkeypatch.undo()
    J.resume_job(conn, jid)
    run_worker(db_path, load_config(cfg_path), until_idle=True)
    j = J.get_job(conn, jid)
    assert (j["status"], j["done"], j["cache_hits"]) == ("done", 5, 0)
    assert conn.execute("SELECT count(*) FROM samples WHERE job_id = ?", (jid,)).fetchone()[0] == 5
    conn.close()


@pytest.mark.slow
def test_thousand_items_with_random_faults_lose_nothing(db_path, cfg_path):
    make_dataset(db_path, n=1000)
    rules = [Rule(k, rate=0.0125, retry_after=0.05, hang=3) for k in ("429", "500", "drop", "truncated")]
    with LLMServer(latency=0.01, capacity=32, rules=rules, seed=3) as srv:
        write_endpoint(cfg_path, srv, max_concurrency=48, timeout=2, max_retries=8)
        conn = open_store(db_path)
        jid = J.queue_job(conn, "generate", config=load_config(cfg_path), dataset="demo", endpoint="local")
        run_worker(db_path, load_config(cfg_path), until_idle=True)
        j = J.get_job(conn, jid)
        assert (j["status"], j["done"], j["failed"]) == ("done", 1000, 0) and j["retries"] > 0
        assert conn.execute("SELECT count(*), count(DISTINCT parent_id) FROM samples WHERE job_id = ?",
                            (jid,)).fetchone() == (1000, 1000)
        assert sum(srv.stats.faults.values()) > 10
        conn.close()
