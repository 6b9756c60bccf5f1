"""The Batch API backend (`run TASK --batch`): the real openai client over HTTP to the test server's files and
batches endpoints, the real store, real worker processes killed with SIGKILL at every step."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from conftest import run_cli
from llm_server import LLMServer, Rule, write_endpoint
from workbench import batch_state as B
from workbench import jobs as J
from workbench.config import load_config
from workbench.samples import insert_samples
from workbench.store import ensure_dataset, transaction
from workbench.tasks import TASKS, register
from workbench.worker import run_worker

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
POLL = 0.05


@pytest.fixture
def cfg_path(tmp_path):
    return tmp_path / "config.toml"


@pytest.fixture
def srv(cfg_path):
    with LLMServer() as s:
        s.reply = lambda msgs, body: f"answer to {msgs[-1]['content']}"
        write_endpoint(cfg_path, s)
        yield s


@pytest.fixture
def plugin_tasks():
    import batch_test_tasks
    import llm_test_tasks
    classes = batch_test_tasks.ALL + llm_test_tasks.ALL
    for cls in classes:
        register(cls)
    yield
    for cls in classes:
        TASKS.pop(cls.name, None)


def make_dataset(conn, name="demo", n=10):
    with transaction(conn):
        did = ensure_dataset(conn, name)
        insert_samples(conn, did, [{"instruction": f"Question {i}"} for i in range(n)])


def queue(conn, cfg_path, task="generate", dataset="demo", batch=True, **kw) -> int:
    return J.queue_job(conn, task, config=load_config(cfg_path), dataset=dataset, endpoint="local",
                       batch={"poll": POLL} if batch else None, **kw)


def outputs(conn, jid) -> list[tuple]:
    return sorted(conn.execute("SELECT p.instruction, s.response FROM samples s JOIN samples p ON p.id = s.parent_id "
                               "WHERE s.job_id = ?", (jid,)).fetchall())


def counts(j) -> tuple:
    return j["status"], j["total"], j["done"], j["failed"], j["kept"]


def spawn(db_path, cfg_path, log_path, **env_extra) -> subprocess.Popen:
    env = dict(os.environ, WORKBENCH_TASK_MODULES="batch_test_tasks,llm_test_tasks", **env_extra)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    log = open(log_path, "ab")
    return subprocess.Popen([sys.executable, "-m", "workbench", "worker", "--until-idle", "--db", str(db_path),
                             "--config", str(cfg_path)], stdout=log, stderr=log, env=env, cwd=ROOT)


def wait_for(pred, timeout=90.0):
    end = time.monotonic() + timeout       # generous: workers run at nice +10 on a shared 2-core box
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def kill9(p):
    os.kill(p.pid, signal.SIGKILL)
    p.wait()


def state(conn, jid):
    r = B.summary(conn, jid)
    return r and r["state"]


# --- the plain path --------------------------------------------------------------------------------------------

def test_batch_run_matches_online_run_and_shares_its_cache(cli, srv, conn, db_path, cfg_path):
    make_dataset(conn, "demo", 12)
    make_dataset(conn, "other", 12)          # the same instructions, for an online job
    code, out, err = cli("run", "generate", "--dataset", "demo", "--endpoint", "local", "--batch", "--batch-poll",
                         str(POLL), "--param", "temperature=0.2", "--wait")
    assert code == 0, err
    jid = int(out.split()[0])
    j = J.get_job(conn, jid)
    assert counts(j) == ("done", 12, 12, 0, 12)
    assert j["requests"] == 12 and j["tokens_in"] > 0
    assert (srv.batch.uploads, srv.batch.creates, srv.batch.downloads) == (1, 1, 1)
    sent = [orjson.loads(ln) for ln in srv.files["file-0001"]["data"].splitlines()]
    assert {ln["url"] for ln in sent} == {"/v1/chat/completions"} and all(ln["method"] == "POST" for ln in sent)
    assert all(ln["body"]["temperature"] == 0.2 and ln["body"]["model"] == "test-model" for ln in sent)
    assert j["batch"]["state"] == "ingested" and j["batch"]["remote_status"] == "completed"
    assert j["batch"]["counts"] == {"total": 12, "completed": 12, "failed": 0}
    # online, the same requests: every one answered from the cache the batch filled, nothing sent
    requests_before = srv.stats.requests
    code, out, err = cli("run", "generate", "--dataset", "other", "--endpoint", "local", "--param", "temperature=0.2",
                         "--wait")
    assert code == 0, err
    online = J.get_job(conn, int(out.split()[0]))
    assert (online["cache_hits"], online["requests"], srv.stats.requests) == (12, 0, requests_before)
    assert outputs(conn, jid) == outputs(conn, online["id"])
    # jobs show names the batch, its state and counts
    code, out, err = cli("jobs", "show", str(jid))
    assert code == 0 and "batch round 1: ingested · remote completed · 12/12 completed, 0 failed" in out
    assert "batch batch_0001 · input file file-0001" in out


def test_a_batch_costs_the_endpoints_batch_price(srv, conn, db_path, cfg_path, cli):
    make_dataset(conn, "demo", 6)
    make_dataset(conn, "other", 6)
    write_endpoint(cfg_path, srv, cost_per_1k_input=1.0, cost_per_1k_output=2.0)    # batch_cost_factor: 0.5
    online = queue(conn, cfg_path, dataset="other", batch=False)
    run_worker(db_path, load_config(cfg_path), job_id=online)
    conn.execute("DELETE FROM llm_cache")
    jid = queue(conn, cfg_path)
    run_worker(db_path, load_config(cfg_path), job_id=jid)
    o, b = J.get_job(conn, online), J.get_job(conn, jid)
    assert (b["tokens_in"], b["tokens_out"]) == (o["tokens_in"], o["tokens_out"]) and o["cost"] > 0
    assert b["cost"] == pytest.approx(o["cost"] * 0.5)
    write_endpoint(cfg_path, srv, cost_per_1k_input=1.0, cost_per_1k_output=2.0, batch_cost_factor=0.25)
    conn.execute("DELETE FROM llm_cache")
    jid = queue(conn, cfg_path, into="demo-3")
    run_worker(db_path, load_config(cfg_path), job_id=jid)
    assert J.get_job(conn, jid)["cost"] == pytest.approx(o["cost"] * 0.25)
    # what cannot be a share of the online price is refused, naming the field; the config is left as it was
    before = cfg_path.read_bytes()
    for bad in ("1.5", "-0.1", "nan", "half"):
        code, _, err = cli("endpoints", "add", "x", "--base-url", srv.base_url, "--model", "m",
                           "--batch-cost-factor", bad)
        assert code == 2 and "Traceback" not in err and ("batch_cost_factor" in err or "--batch-cost-factor" in err), err
    assert cfg_path.read_bytes() == before
    cfg_path.write_text(before.decode().replace("batch_cost_factor = 0.25", "batch_cost_factor = 2"))
    code, _, err = cli("run", "generate", "--dataset", "demo", "--endpoint", "local", "--batch")
    assert code == 1 and "batch_cost_factor is the share of the online price a batch costs" in err   # bad config


def test_the_jobs_table_has_a_batch_column(srv, conn, db_path, cfg_path, cli):
    make_dataset(conn, "demo", 3)
    online = queue(conn, cfg_path, batch=False)
    run_worker(db_path, load_config(cfg_path), job_id=online)
    conn.execute("DELETE FROM llm_cache")
    waiting = queue(conn, cfg_path, into="demo-w")
    srv.rules = [Rule("400", match="Question 1")]
    jid = queue(conn, cfg_path, into="demo-b")
    run_worker(db_path, load_config(cfg_path), job_id=jid)
    code, out, err = cli("jobs")
    assert code == 0, err
    head, *rows = out.splitlines()
    assert head.split()[-1] == "batch"
    cells = {int(r.split()[0]): r.split("  ")[-1].strip() for r in rows}
    assert cells[online] == "-" and cells[waiting] == "waiting"
    assert cells[jid] == "r1 ingested/completed 2/3 (1 failed)"
    code, out, _ = cli("jobs", "--json")          # the JSON keys are as they were
    assert code == 0 and "batch" not in orjson.loads(out)[-1] and orjson.loads(out)[0]["batch"]["round"] == 1


def test_online_answers_in_the_cache_are_not_sent_again(srv, conn, db_path, cfg_path):
    make_dataset(conn, "demo", 6)
    online = queue(conn, cfg_path, batch=False)
    run_worker(db_path, load_config(cfg_path), job_id=online)
    sent_online = srv.stats.requests
    with transaction(conn):
        insert_samples(conn, J.get_dataset(conn, "demo")[0], [{"instruction": "Question new"}])
    jid = queue(conn, cfg_path, into="demo-b")
    run_worker(db_path, load_config(cfg_path), job_id=jid)
    j = J.get_job(conn, jid)
    assert counts(j) == ("done", 7, 7, 0, 7) and j["cache_hits"] == 6 and j["requests"] == 1
    assert srv.stats.requests == sent_online + 1


def test_multi_step_task_takes_one_round_per_step(srv, conn, db_path, cfg_path, plugin_tasks):
    make_dataset(conn, "demo", 5)
    jid = queue(conn, cfg_path, task="two-stage")
    assert run_worker(db_path, load_config(cfg_path), job_id=jid) == ["done"]
    j = J.get_job(conn, jid)
    assert counts(j) == ("done", 5, 5, 0, 5)
    rounds = B.rounds(conn, jid)
    assert [(r["round"], r["requests"], r["state"]) for r in rounds] == [(1, 5, "ingested"), (2, 5, "ingested")]
    assert outputs(conn, jid) == [(f"Question {i}", f"answer to Stage B: answer to Stage A: Question {i}")
                                  for i in range(5)]
    assert all(v == 1 for v in srv.stats.prompts.values()) and len(srv.stats.prompts) == 10


def test_dynamic_task_adds_rounds_until_done(srv, conn, db_path, cfg_path, plugin_tasks):
    srv.reply = lambda msgs, body: f"Write about {msgs[-1]['content'][-8:]}"
    jid = J.queue_job(conn, "grow", config=load_config(cfg_path), endpoint="local", params={"wanted": 5},
                      batch={"poll": POLL})
    assert run_worker(db_path, load_config(cfg_path), job_id=jid) == ["done"]
    j = J.get_job(conn, jid)
    assert j["status"] == "done" and j["kept"] >= 5 and j["failed"] == 0
    assert len(B.rounds(conn, jid)) == j["total"] // 2


# --- what a batch can get wrong: every line accounted for -------------------------------------------------------

def test_bad_lines_become_item_errors_with_their_raw_text(srv, conn, db_path, cfg_path):
    make_dataset(conn, "demo", 8)
    srv.rules = [Rule("400", match="Question 1")]          # a non-200 line (in the error file), not retryable

    def mangle(out, err):
        by_q = {orjson.loads(ln)["response"]["body"]["choices"][0]["message"]["content"]: ln for ln in out}
        dup = by_q["answer to Question 2"]
        gone = by_q["answer to Question 3"]
        broken = by_q["answer to Question 4"]
        out = [ln for ln in out if ln not in (gone, broken)]
        out.append(dup.replace("answer to Question 2", "another answer to Question 2"))   # duplicate custom_id
        out.append(broken[: len(broken) // 2])                                             # malformed
        out.append(dup.replace(orjson.loads(dup)["custom_id"], "not-a-request-of-ours"))   # unknown custom_id
        out.append('{"id": "x", "response": {"status_code": 200}}')                        # no custom_id
        return out, err
    srv.batch.mangle = mangle
    jid = queue(conn, cfg_path)
    run_worker(db_path, load_config(cfg_path), job_id=jid)
    j = J.get_job(conn, jid)
    # 8 items: 0, 5, 6, 7 done; 1 (HTTP 400), 2 (two lines), 3 (missing), 4 (its line was cut) failed
    # plus 3 stray lines (cut, unknown custom_id, no custom_id), each a failed item of their own
    assert (j["done"], j["kept"]) == (4, 4)
    assert (j["total"], j["failed"]) == (8 + 3, 4 + 3)
    fails = {f["key"]: f for f in J.failures(conn, jid, 50)}
    by_sample = {conn.execute("SELECT instruction FROM samples WHERE id = ?", (f["sample_id"],)).fetchone()[0]: f
                 for f in fails.values() if f["sample_id"]}
    assert "HTTP 400" in by_sample["Question 1"]["error"] and "simulated 400" in by_sample["Question 1"]["raw"]
    q2 = by_sample["Question 2"]
    assert "2 lines for this request" in q2["error"] and "another answer to Question 2" in q2["raw"] \
        and "\"answer to Question 2" in q2["raw"]
    assert "without a line for this request" in by_sample["Question 3"]["error"]
    assert "without a line for this request" in by_sample["Question 4"]["error"]
    strays = [f for k, f in fails.items() if k.startswith("batch-line:")]
    reasons = sorted(f["error"].split(": ", 1)[1] for f in strays)
    assert len(strays) == 3 and any(r.startswith("not JSON") for r in reasons)
    assert "custom_id matches no request of this batch; the line is kept, nothing was written" in reasons
    assert "no custom_id; the line is kept, nothing was written" in reasons
    assert any("not-a-request-of-ours" in f["raw"] for f in strays)
    assert outputs(conn, jid) == [(f"Question {i}", f"answer to Question {i}") for i in (0, 5, 6, 7)]
    # retry sends the failed requests again (not the stray lines), in a round of their own
    srv.rules, srv.batch.mangle = [], None
    assert J.retry_failed(conn, jid) == 4
    run_worker(db_path, load_config(cfg_path), job_id=jid)
    j = J.get_job(conn, jid)
    assert (j["done"], j["failed"], j["kept"]) == (8, 3, 8)
    assert [r["requests"] for r in B.rounds(conn, jid)] == [8, 4]
    assert outputs(conn, jid) == [(f"Question {i}", f"answer to Question {i}") for i in range(8)]


def test_retryable_error_lines_go_into_a_follow_up_batch_up_to_the_retry_limit(srv, conn, db_path, cfg_path):
    write_endpoint(cfg_path, srv, max_retries=2)          # at most 3 sends of a request, as online
    make_dataset(conn, "demo", 8)
    srv.rules = [Rule("429", match="Question 1", times=1),    # once, then answered
                 Rule("500", match="Question 2", times=2),    # twice, then answered on the third send
                 Rule("500", match="Question 3"),             # every time: gives up after 3 sends
                 Rule("400", match="Question 4")]             # not retryable: fails at once
    jid = queue(conn, cfg_path)
    assert run_worker(db_path, load_config(cfg_path), job_id=jid) == ["done"]
    j = J.get_job(conn, jid)
    assert (j["done"], j["failed"], j["kept"]) == (6, 2, 6)
    assert [r["requests"] for r in B.rounds(conn, jid)] == [8, 3, 2]     # 1, 2, 3 / 2, 3 / (3 gives up)
    assert j["retries"] == 1 + 2 + 2 and j["requests"] == 8 + 3 + 2
    by_q = {conn.execute("SELECT instruction FROM samples WHERE id = ?", (f["sample_id"],)).fetchone()[0]: f
            for f in J.failures(conn, jid)}
    assert set(by_q) == {"Question 3", "Question 4"}
    assert "HTTP 500" in by_q["Question 3"]["error"] and "gave up after 3 batches" in by_q["Question 3"]["error"]
    assert "simulated 500" in by_q["Question 3"]["raw"] and by_q["Question 3"]["raw"].startswith("error line ")
    assert "HTTP 400" in by_q["Question 4"]["error"] and "gave up" not in by_q["Question 4"]["error"]
    assert "simulated 400" in by_q["Question 4"]["raw"]
    assert outputs(conn, jid) == [(f"Question {i}", f"answer to Question {i}") for i in (0, 1, 2, 5, 6, 7)]
    assert all(srv.stats.prompts[f"Question {i}"] == 1 for i in (0, 1, 2, 5, 6, 7))   # answered once each


def test_error_codes_of_batch_lines_retry_only_what_the_online_client_would(srv, conn, db_path, cfg_path):
    """The error object of a line (no HTTP status): a known "ask again later" code is retried, any other code
    (and a status that only looks like a 5xx) fails its item with the raw line."""
    write_endpoint(cfg_path, srv, max_retries=1)
    make_dataset(conn, "demo", 6)
    errors = {"Question 0": {"code": "rate_limit_exceeded", "message": "slow down"},
              "Question 1": {"code": "server_error", "message": "oops"},
              "Question 2": {"code": "batch_expired", "message": "expired"},
              "Question 3": {"code": "invalid_request", "message": "bad \x1b[31mred\x1b[0m"}}
    statuses = {"Question 4": "503", "Question 5": 599.5}       # a string and a float: not real statuses
    first = []

    def mangle(out, err):
        if first:
            return out, err
        first.append(1)
        rows = []
        for ln in out:
            o = orjson.loads(ln)
            q = o["response"]["body"]["choices"][0]["message"]["content"].removeprefix("answer to ")
            if q in errors:
                rows.append(orjson.dumps({"custom_id": o["custom_id"], "response": None, "error": errors[q]}))
            elif q in statuses:
                o["response"] = {"status_code": statuses[q], "body": {"error": {"message": "odd"}}}
                rows.append(orjson.dumps(o))
        return [ln for ln in out if not any(q in ln for q in (*errors, *statuses))], [r.decode() for r in rows]
    srv.batch.mangle = mangle
    jid = queue(conn, cfg_path)
    run_worker(db_path, load_config(cfg_path), job_id=jid)
    j = J.get_job(conn, jid)
    assert [r["requests"] for r in B.rounds(conn, jid)] == [6, 2]
    assert (j["done"], j["failed"]) == (2, 4)
    by_q = {conn.execute("SELECT instruction FROM samples WHERE id = ?", (f["sample_id"],)).fetchone()[0]: f
            for f in J.failures(conn, jid)}
    assert set(by_q) == {"Question 2", "Question 3", "Question 4", "Question 5"}
    assert "(batch_expired)" in by_q["Question 2"]["error"] and "HTTP 503" in by_q["Question 4"]["error"]
    assert "\x1b" in by_q["Question 3"]["error"]           # kept as received; shown escaped (below)
    code, out, _ = run_cli("jobs", "show", str(jid))
    assert code == 0 and "\x1b" not in out and "red" in out


def test_nothing_is_sent_twice_when_killed_between_a_batch_and_its_follow_up(srv, conn, db_path, cfg_path,
                                                                              tmp_path, plugin_tasks):
    make_dataset(conn, "demo", 10)
    srv.rules = [Rule("429", match="Question 1", times=1), Rule("500", match="Question 4", times=1)]
    jid = queue(conn, cfg_path, task="stall")
    # killed while ingesting round 1 (after Question 1's 429 was read, before anything was committed) ...
    p = spawn(db_path, cfg_path, tmp_path / "w1.log", BATCH_STALL="Question 7")
    wait_for(lambda: state(conn, jid) == "downloaded")
    time.sleep(0.5)
    kill9(p)
    assert J.get_job(conn, jid)["done"] == 0 and srv.batch.creates == 1
    # ... then, resumed, killed again while the follow-up batch runs at the provider
    srv.batch.polls_to_finish = 10**6
    p = spawn(db_path, cfg_path, tmp_path / "w2.log")
    wait_for(lambda: (B.summary(conn, jid) or {}).get("round") == 2 and B.summary(conn, jid)["polls"] >= 1)
    kill9(p)
    assert J.get_job(conn, jid)["done"] == 8 and srv.batch.creates == 2
    srv.batch.polls_to_finish = 2
    p = spawn(db_path, cfg_path, tmp_path / "w3.log")
    assert p.wait(120) == 0, (tmp_path / "w3.log").read_text()
    j = J.get_job(conn, jid)
    assert counts(j) == ("done", 10, 10, 0, 10) and j["retries"] == 2
    assert [r["requests"] for r in B.rounds(conn, jid)] == [10, 2] and srv.batch.creates == 2
    assert all(v == 1 for v in srv.stats.prompts.values()) and len(srv.stats.prompts) == 10
    assert outputs(conn, jid) == sorted((f"Question {i}", f"answer to Question {i}") for i in range(10))


def test_unparseable_replies_are_asked_again_once_then_fail_through_the_same_parser(srv, conn, db_path, cfg_path):
    make_dataset(conn, "demo", 4)
    with transaction(conn):
        conn.execute("UPDATE samples SET response = 'some answer'")
    srv.reply = lambda msgs, body: orjson.dumps({
        "instruction_clarity": 7, "response_quality": 8, "alignment": 6, "overall": 7,
        "rationale": "fine"}).decode()
    # Question 2: prose once, then JSON (asked again, as online); Question 3: out of scale every time
    srv.rules = [Rule("nonjson", match="Question 2", times=1), Rule("reply", match="Question 3", text='{"overall": 11}')]
    jid = queue(conn, cfg_path, task="judge")
    run_worker(db_path, load_config(cfg_path), job_id=jid)
    j = J.get_job(conn, jid)
    assert (j["done"], j["failed"], j["retries"]) == (3, 1, 2)
    assert [r["requests"] for r in B.rounds(conn, jid)] == [4, 2]
    [f] = J.failures(conn, jid)
    assert f["raw"] == '{"overall": 11}' and f["error"].startswith("unparseable reply")
    assert conn.execute("SELECT count(*) FROM judgments WHERE job_id = ?", (jid,)).fetchone()[0] == 3
    # a refused reply is not cached; accepted ones are
    assert conn.execute("SELECT count(*) FROM llm_cache").fetchone()[0] == 3


@pytest.mark.parametrize("outcome", ["expired", "failed"])
def test_unanswered_requests_of_an_expired_or_failed_batch_fail_and_retry_sends_them(srv, conn, db_path, cfg_path,
                                                                                      outcome):
    make_dataset(conn, "demo", 10)
    srv.batch.outcome, srv.batch.answer = outcome, 0.5
    jid = queue(conn, cfg_path)
    run_worker(db_path, load_config(cfg_path), job_id=jid)
    j = J.get_job(conn, jid)
    answered = 5 if outcome == "expired" else 0
    assert (j["done"], j["failed"]) == (answered, 10 - answered)
    assert j["batch"]["remote_status"] == outcome and j["batch"]["error"].startswith(f"batch {outcome}")
    errors = {f["error"] for f in J.failures(conn, jid)}
    assert len(errors) == 1
    assert ("expired (24 h window)" in errors.pop()) if outcome == "expired" else \
        ("the input file is not valid" in errors.pop())
    srv.batch.outcome = "completed"
    assert J.retry_failed(conn, jid) == 10 - answered
    run_worker(db_path, load_config(cfg_path), job_id=jid)
    j = J.get_job(conn, jid)
    assert counts(j) == ("done", 10, 10, 0, 10)
    assert outputs(conn, jid) == sorted((f"Question {i}", f"answer to Question {i}") for i in range(10))


def test_refusals(cli, srv, conn, cfg_path):
    make_dataset(conn, "demo", 2)
    write_endpoint(cfg_path, srv, name="other", model="other-model")    # a pool never holds one server twice
    code, _, err = cli("pools", "add", "both", "--endpoint", "local", "--endpoint", "other")
    assert code == 0, err
    code, _, err = cli("run", "generate", "--dataset", "demo", "--pool", "both", "--batch")
    assert code != 0 and "--batch sends every request of the job to one endpoint's Batch API" in err
    code, _, err = cli("run", "judge", "--dataset", "demo", "--endpoint", "local", "--judge", "other", "--batch")
    assert code != 0 and "the judge must be the job's endpoint" in err
    code, _, err = cli("run", "generate", "--dataset", "demo", "--endpoint", "local", "--batch-poll", "5")
    assert code != 0 and "--batch-poll goes with --batch" in err
    code, _, err = cli("run", "generate", "--dataset", "demo", "--endpoint", "local", "--batch", "--batch-poll", "0")
    assert code != 0 and "--batch-poll: give seconds between 0 and 3600" in err
    assert conn.execute("SELECT count(*) FROM jobs").fetchone()[0] == 0


def test_keys_never_reach_the_store_and_echoed_keys_are_redacted(conn, db_path, cfg_path, monkeypatch):
    key = "sk-batch-secret-0123456789"
    monkeypatch.setenv("BATCH_TEST_KEY", key)
    with LLMServer(api_key=key) as s:
        s.rules = [Rule("reply", match="Question 1", text=f"the key is {key}"),
                   Rule("400", match="Question 2")]
        write_endpoint(cfg_path, s, api_key_env="BATCH_TEST_KEY")
        make_dataset(conn, "demo", 4)
        jid = queue(conn, cfg_path)
        assert run_worker(db_path, load_config(cfg_path), job_id=jid) == ["done"]
        assert J.get_job(conn, jid)["done"] == 3
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    blob = b"".join(p.read_bytes() for p in db_path.parent.glob(db_path.name + "*"))
    assert key.encode() not in blob
    assert "the key is ***" in [r[0] for r in conn.execute("SELECT response FROM samples WHERE job_id = ?",
                                                                    (jid,))]


# --- restarts at every step: kill -9, then a new worker ends with the rows of an uninterrupted run -------------

def finish_and_check(conn, db_path, cfg_path, tmp_path, srv, jid, n, **env):
    p = spawn(db_path, cfg_path, tmp_path / "w2.log", **env)
    assert p.wait(120) == 0, (tmp_path / "w2.log").read_text()
    j = J.get_job(conn, jid)
    assert counts(j) == ("done", n, n, 0, n), j
    assert outputs(conn, jid) == sorted((f"Question {i}", f"answer to Question {i}") for i in range(n))
    assert srv.batch.creates == 1                           # one batch: nothing submitted twice
    assert all(v == 1 for v in srv.stats.prompts.values()) and len(srv.stats.prompts) == n
    assert j["requests"] == n
    return j


@pytest.mark.slow
def test_kill_after_upload_before_the_batch_is_created(srv, conn, db_path, cfg_path, tmp_path, plugin_tasks):
    make_dataset(conn, "demo", 10)
    srv.batch.hold_create = 3600                  # the create call never answers, and creates nothing
    jid = queue(conn, cfg_path, task="stall")
    p = spawn(db_path, cfg_path, tmp_path / "w1.log")
    wait_for(lambda: state(conn, jid) == "uploaded")
    time.sleep(0.3)
    kill9(p)
    assert srv.batch.creates == 0 and srv.batch.uploads == 1
    srv.batch.hold_create = 0
    finish_and_check(conn, db_path, cfg_path, tmp_path, srv, jid, 10)
    assert srv.batch.uploads == 1                   # the upload was found again (files.list), not repeated


def test_kill_after_the_batch_was_created_but_before_its_id_was_stored(srv, conn, db_path, cfg_path, tmp_path,
                                                                       plugin_tasks):
    make_dataset(conn, "demo", 10)
    srv.batch.hold_create, srv.batch.create_first = 3600, True     # created, but the reply never arrives
    jid = queue(conn, cfg_path, task="stall")
    p = spawn(db_path, cfg_path, tmp_path / "w1.log")
    wait_for(lambda: srv.batch.creates == 1)
    kill9(p)
    assert state(conn, jid) == "uploaded"
    srv.batch.hold_create = 0
    j = finish_and_check(conn, db_path, cfg_path, tmp_path, srv, jid, 10)
    assert j["batch"]["batch_id"] == "batch_0001"   # adopted by its input file (batches.list)


def test_kill_while_polling_resumes_the_same_batch(srv, conn, db_path, cfg_path, tmp_path, plugin_tasks):
    make_dataset(conn, "demo", 10)
    srv.batch.polls_to_finish = 10**6
    jid = queue(conn, cfg_path, task="stall")
    p = spawn(db_path, cfg_path, tmp_path / "w1.log")
    wait_for(lambda: (B.summary(conn, jid) or {}).get("polls", 0) >= 2)
    kill9(p)
    b = B.summary(conn, jid)
    assert b["state"] == "submitted" and b["remote_status"] == "in_progress" and b["counts"]["total"] == 10
    srv.batch.polls_to_finish = 0
    j = finish_and_check(conn, db_path, cfg_path, tmp_path, srv, jid, 10)
    assert j["batch"]["polls"] > b["polls"] and srv.batch.uploads == 1


def test_kill_after_download_before_ingestion(srv, conn, db_path, cfg_path, tmp_path, plugin_tasks):
    make_dataset(conn, "demo", 10)
    jid = queue(conn, cfg_path, task="stall")
    p = spawn(db_path, cfg_path, tmp_path / "w1.log", BATCH_STALL="Question 3")    # stalls inside the ingestion
    wait_for(lambda: state(conn, jid) == "downloaded")
    time.sleep(0.5)
    kill9(p)
    j = J.get_job(conn, jid)
    assert j["done"] == 0 and j["tokens_in"] > 0 and srv.batch.downloads == 1
    finish_and_check(conn, db_path, cfg_path, tmp_path, srv, jid, 10)
    assert srv.batch.downloads == 1                  # the stored replies were ingested, not downloaded again
    assert J.get_job(conn, jid)["tokens_in"] == j["tokens_in"]    # and the tokens were counted once


def test_kill_partway_through_ingestion_writes_nothing_twice(srv, conn, db_path, cfg_path, tmp_path, plugin_tasks):
    n = 620          # more than one commit of ingested items (workbench/batch.py INGEST_CHUNK = 500)
    make_dataset(conn, "demo", n)
    jid = queue(conn, cfg_path, task="stall")
    p = spawn(db_path, cfg_path, tmp_path / "w1.log", BATCH_STALL="Question 600")
    wait_for(lambda: J.get_job(conn, jid)["done"] >= 500)
    time.sleep(0.3)
    kill9(p)
    j = J.get_job(conn, jid)
    assert 500 <= j["done"] < n and state(conn, jid) == "downloaded"
    finish_and_check(conn, db_path, cfg_path, tmp_path, srv, jid, n)
    assert conn.execute("SELECT count(*), count(DISTINCT parent_id) FROM samples WHERE job_id = ?",
                        (jid,)).fetchone() == (n, n)
    assert srv.batch.downloads == 1


def test_pause_while_polling_then_resume_continues_the_same_batch(srv, conn, db_path, cfg_path, cli):
    import threading
    make_dataset(conn, "demo", 4)
    srv.batch.polls_to_finish = 10**6
    jid = queue(conn, cfg_path)
    ended = []
    t = threading.Thread(target=lambda: ended.extend(run_worker(db_path, load_config(cfg_path), job_id=jid)))
    t.start()
    wait_for(lambda: (B.summary(conn, jid) or {}).get("polls", 0) >= 1)
    assert cli("jobs", "pause", str(jid))[0] == 0
    t.join(30)
    assert ended == ["paused"] and J.get_job(conn, jid)["status"] == "paused"
    assert srv.batch.cancels == 0 and srv.batches["batch_0001"]["status"] == "in_progress"   # it runs on remotely
    srv.batch.polls_to_finish = 0
    assert cli("jobs", "resume", str(jid))[0] == 0
    assert run_worker(db_path, load_config(cfg_path), job_id=jid) == ["done"]
    assert counts(J.get_job(conn, jid)) == ("done", 4, 4, 0, 4) and srv.batch.creates == 1


@pytest.mark.slow
def test_kill_in_each_step_of_a_two_round_job(srv, conn, db_path, cfg_path, tmp_path, plugin_tasks):
    """A multi-step job killed in round 2 (while polling) keeps round 1's results and ends like an uninterrupted
    run of the same job on the same items."""
    make_dataset(conn, "demo", 6)
    make_dataset(conn, "ref", 6)
    ref = queue(conn, cfg_path, task="two-stage", dataset="ref", into="ref-out")
    assert run_worker(db_path, load_config(cfg_path), job_id=ref) == ["done"]
    conn.execute("DELETE FROM llm_cache")
    srv.stats.prompts.clear()
    srv.batch.creates = 0
    jid = queue(conn, cfg_path, task="two-stage", into="demo-out")
    p = spawn(db_path, cfg_path, tmp_path / "w1.log")
    wait_for(lambda: (B.summary(conn, jid) or {}).get("round") == 2)
    srv.batch.polls_to_finish = 10**6
    wait_for(lambda: (B.summary(conn, jid) or {}).get("polls", 0) >= 1)
    kill9(p)
    srv.batch.polls_to_finish = 0
    p = spawn(db_path, cfg_path, tmp_path / "w2.log")
    assert p.wait(120) == 0
    j = J.get_job(conn, jid)
    assert counts(j) == ("done", 6, 6, 0, 6) and srv.batch.creates == 2
    assert outputs(conn, jid) == outputs(conn, ref)
    assert all(v == 1 for v in srv.stats.prompts.values()) and len(srv.stats.prompts) == 12


def test_cancel_cancels_the_remote_batch(cli, srv, conn, db_path, cfg_path, tmp_path, plugin_tasks):
    make_dataset(conn, "demo", 5)
    srv.batch.polls_to_finish = 10**6
    jid = queue(conn, cfg_path, task="stall")
    p = spawn(db_path, cfg_path, tmp_path / "w1.log")
    wait_for(lambda: state(conn, jid) == "submitted")
    code, out, err = cli("jobs", "cancel", str(jid))
    assert code == 0, err
    assert "batch batch_0001 at the provider: cancelling" in out
    assert p.wait(60) == 0
    assert srv.batches["batch_0001"]["status"] in ("cancelling", "cancelled") and srv.batch.cancels >= 1
    j = J.get_job(conn, jid)
    assert j["status"] == "cancelled" and j["done"] == 0


# --- what the server says is untrusted ---------------------------------------------------------------------------

def test_a_server_without_the_batch_api_pauses_the_job_saying_so(conn, db_path, cfg_path, cli):
    with LLMServer(batch_api=False) as s:
        write_endpoint(cfg_path, s)
        make_dataset(conn, "demo", 3)
        jid = queue(conn, cfg_path)
        assert run_worker(db_path, load_config(cfg_path), job_id=jid) == ["paused"]
    j = J.get_job(conn, jid)
    assert j["status"] == "paused" and j["done"] == 0 and j["failed"] == 0
    assert j["error"].startswith("batch API: cannot list uploaded files: HTTP 404")
    assert j["batch"]["state"] == "prepared"          # resume (against a server that has it) continues here


def test_control_characters_in_a_batch_id_are_refused(srv, conn, db_path, cfg_path, cli):
    srv.batch.id_prefix = "batch\x1b]0;pwned\x07"
    make_dataset(conn, "demo", 3)
    jid = queue(conn, cfg_path)
    assert run_worker(db_path, load_config(cfg_path), job_id=jid) == ["paused"]
    j = J.get_job(conn, jid)
    assert j["error"].startswith("the server returned an unusable batch id") and "\x1b" not in j["error"]
    assert j["batch"]["state"] == "uploaded" and j["batch"]["batch_id"] is None
    code, out, err = cli("jobs", "show", str(jid))
    assert code == 0 and "\x1b" not in out and "\x07" not in out


def test_an_unknown_batch_status_pauses_the_job_instead_of_guessing(srv, conn, db_path, cfg_path):
    srv.batch.fake_status = "paused_by_provider"
    make_dataset(conn, "demo", 3)
    jid = queue(conn, cfg_path)
    assert run_worker(db_path, load_config(cfg_path), job_id=jid) == ["paused"]
    j = J.get_job(conn, jid)
    assert "unknown status 'paused_by_provider'" in j["error"] and j["batch"]["state"] == "submitted"
    srv.batch.fake_status = None
    J.resume_job(conn, jid)
    assert run_worker(db_path, load_config(cfg_path), job_id=jid) == ["done"]
    assert counts(J.get_job(conn, jid)) == ("done", 3, 3, 0, 3) and srv.batch.creates == 1


# --- the files, read line by line ------------------------------------------------------------------------------

def _line(cid, text="hi", status=200, tokens=(3, 1)) -> bytes:
    body = {"model": "m", "choices": [{"message": {"content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": tokens[0], "completion_tokens": tokens[1]}}
    return orjson.dumps({"custom_id": cid, "response": {"status_code": status, "body": body}}) + b"\n"


def test_a_reply_over_max_reply_bytes_fails_its_item_as_online(srv, conn, db_path, cfg_path):
    write_endpoint(cfg_path, srv, max_reply_bytes=1000)
    make_dataset(conn, "demo", 3)
    srv.rules = [Rule("reply", match="Question 1", text="long " * 400)]
    jid = queue(conn, cfg_path)
    run_worker(db_path, load_config(cfg_path), job_id=jid)
    j = J.get_job(conn, jid)
    assert (j["done"], j["failed"]) == (2, 1)
    [f] = J.failures(conn, jid)
    assert "reply too large: 2,000 bytes, the endpoint's max_reply_bytes is 1,000" in f["error"]
    assert f["raw"].startswith("output line ") and "long long" in f["raw"]
    assert conn.execute("SELECT count(*) FROM llm_cache").fetchone()[0] == 2


def test_file_reading_in_chunks_finds_duplicates_across_chunks_and_skips_overlong_lines(tmp_path):
    from workbench.batch_files import FileReading
    out = tmp_path / "output"
    err = tmp_path / "error"
    sent = {f"c{i}" for i in range(10)}
    big = b'{"custom_id": "c8", "response": {"status_code": 200, "body": "' + b"x" * 5000 + b'"}}\n'
    out.write_bytes(b"".join(_line(f"c{i}", f"answer {i}") for i in range(6)) + b"\n   \n" + big
                    + _line("c0", "second answer to c0", tokens=(100, 100)) + _line("c9").rstrip(b"\n"))
    err.write_bytes(_line("c7", "no", status=503).replace(b"\n", b"\r\n") + b"not json\n" + _line("zz"))
    reading = FileReading(sent, lambda t: t.replace("answer 3", "***"), line_cap=1000)
    files = [("output", out), ("error", err)]
    got, strays = {}, []
    sizes = []
    for chunk in reading.chunks(files, size=2):
        sizes.append(len(chunk.verdicts) + len(chunk.strays))
        got.update(chunk.verdicts)
        strays += chunk.strays
    assert max(sizes) <= 2
    last = reading.finish(files, "no line")
    got.update(last)
    assert set(got) == sent
    assert got["c0"].reply is None and "2 lines for this request (output line 1, output line 10)" in got["c0"].error
    assert "second answer to c0" in got["c0"].raw[1] and got["c0"].raw[0].startswith("output line 1: ")
    assert got["c3"].reply["text"] == "***" and got["c9"].reply["text"] == "hi"
    assert got["c7"].retryable and "HTTP 503" in got["c7"].error and got["c1"].reply["text"] == "answer 1"
    assert got["c7"].raw == ["error line 1: " + _line("c7", "no", status=503).decode().strip()]
    assert got["c8"].error == "no line" and got["c6"].error == "no line" and not got["c6"].retryable
    assert sorted((s.source, s.line, s.reason.split(" (")[0]) for s in strays) == [
        ("error", 2, "not JSON"), ("error", 3, "custom_id matches no request of this batch"),
        ("output", 9, "line longer than 1,000 bytes")]
    overlong = next(s for s in strays if s.line == 9)
    assert overlong.raw.startswith('{"custom_id": "c8"') and len(overlong.raw) < 1100
    # c0's first line's tokens were taken back: 6 replies of (3, 1) count, c1..c5 and c9
    assert (reading.tokens_in, reading.tokens_out) == (3 * 6, 1 * 6)
