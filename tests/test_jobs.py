"""Job rows: queueing with params and filters, controls, leases and takeover, batched commits."""
from __future__ import annotations

import time

import pytest

from workbench import jobs as J
from workbench.samples import insert_samples
from workbench.store import ensure_dataset, transaction
from workbench.tasks import Item, Result, TaskError, get_task

CONFIG = {"endpoints": {"local": {"base_url": "http://127.0.0.1:9/v1", "model": "m"}},
          "pools": {"both": {"endpoints": ["local"], "mode": "each"}}}


def make_dataset(conn, name="demo", n=5, **extra):
    with transaction(conn):
        did = ensure_dataset(conn, name)
        insert_samples(conn, did, [{"instruction": f"Question {i}", **extra} for i in range(n)])
    return did


def test_queue_generate_creates_items_and_target(conn):
    make_dataset(conn)
    jid = J.queue_job(conn, "generate", config=CONFIG, dataset="demo", endpoint="local",
                      params={"temperature": "0.2"})
    job = J.get_job(conn, jid)
    assert job["status"] == "queued" and job["total"] == 5 and job["kind"] == "generate"
    assert job["params"]["into"] == "demo-generate" and job["params"]["task"]["temperature"] == 0.2
    keys = [r[0] for r in conn.execute("SELECT key FROM job_items WHERE job_id = ? ORDER BY id", (jid,))]
    assert keys == [f"s:{i}" for i in range(1, 6)]
    assert conn.execute("SELECT kind FROM datasets WHERE name = 'demo-generate'").fetchone() == ("sft",)


def test_queue_with_filter(conn):
    did = make_dataset(conn, n=4)
    with transaction(conn):
        insert_samples(conn, did, [{"instruction": "Answered", "response": "yes"}])
        conn.execute("UPDATE samples SET status = 'accepted' WHERE id IN (1, 2)")
    jid = J.queue_job(conn, "generate", config=CONFIG, dataset="demo", endpoint="local",
                      filter=J.parse_filter(["status=pending", "no_response=true"]))
    assert J.get_job(conn, jid)["total"] == 2
    jid = J.queue_job(conn, "generate", config=CONFIG, dataset="demo", endpoint="local", into="x",
                      filter=J.parse_filter("limit=3"))
    assert J.get_job(conn, jid)["total"] == 3


def test_queue_score_filters_name_the_rubric(conn):
    from workbench import scores
    make_dataset(conn, n=4)
    with transaction(conn):
        scores.record(conn, 1, "curate", 5, (1, 5))
        scores.record(conn, 2, "curate", 3, (1, 5))
        scores.record(conn, 3, "judge", 9, (1, 10))
    f = J.parse_filter(["min_score=curate=4.5"])
    assert f == {"min_score": ["curate=4.5"]}
    jid = J.queue_job(conn, "generate", config=CONFIG, dataset="demo", endpoint="local", filter=f)
    assert [r[0] for r in conn.execute("SELECT sample_id FROM job_items WHERE job_id = ?", (jid,))] == [1]
    jid = J.queue_job(conn, "generate", config=CONFIG, dataset="demo", endpoint="local", into="x",
                      filter=J.parse_filter(["max_score=curate=4"]))
    assert [r[0] for r in conn.execute("SELECT sample_id FROM job_items WHERE job_id = ?", (jid,))] == [2]
    with pytest.raises(TaskError, match="nothing to do"):     # both bounds must hold: curate <= 4 and judge <= 10
        J.queue_job(conn, "generate", config=CONFIG, dataset="demo", endpoint="local", into="z",
                    filter=J.parse_filter(["max_score=curate=4", "max_score=judge=10"]))
    for pairs, message in ((["min_score=4.5"], "name the rubric.*rubrics present: curate, judge"),
                           (["min_score=curat=4"], "no sample in scope has a 'curat' score"),
                           (["max_score=judge=12"], "outside judge's scale 1-10")):
        with pytest.raises(TaskError, match=message):
            J.queue_job(conn, "generate", config=CONFIG, dataset="demo", endpoint="local", into="y",
                        filter=J.parse_filter(pairs))
    assert conn.execute("SELECT count(*) FROM datasets WHERE name = 'y'").fetchone()[0] == 0


@pytest.mark.parametrize("kw,message", [
    ({"params": {"nope": 1}}, "unknown param nope for task generate; valid params: system"),
    ({"params": {"max_tokens": "many"}}, "max_tokens: expected int"),
    ({"endpoint": "ghost"}, "no endpoint named 'ghost'"),
    ({"endpoint": None, "pool": "ghost"}, "no pool named 'ghost'"),
    ({"dataset": "missing"}, "no dataset named 'missing'"),
    ({"into": "demo"}, "different dataset"),
    ({"filter": "colour=red"}, "unknown filter key 'colour'"),
])
def test_queue_rejects_bad_input_and_writes_nothing(conn, kw, message):
    make_dataset(conn)
    args = {"dataset": "demo", "endpoint": "local", **kw}
    if isinstance(args.get("filter"), str):
        with pytest.raises(J.FilterError, match=message):
            J.parse_filter(args["filter"])
        return
    from workbench.endpoints import EndpointError
    with pytest.raises((TaskError, EndpointError), match=message):
        J.queue_job(conn, "generate", config=CONFIG, **args)
    assert conn.execute("SELECT count(*) FROM jobs").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM datasets").fetchone()[0] == 1


def test_unknown_task(conn):
    with pytest.raises(TaskError, match="unknown task 'nope'; known tasks: .*generate"):
        get_task("nope")


def test_controls(conn):
    make_dataset(conn)
    jid = J.queue_job(conn, "generate", config=CONFIG, dataset="demo", endpoint="local")
    assert J.pause_job(conn, jid)["status"] == "paused"
    assert J.claim_job(conn, "w1") is None                     # paused jobs are not claimed
    with pytest.raises(TaskError, match="cannot pause"):
        J.pause_job(conn, jid)
    assert J.resume_job(conn, jid)["status"] == "queued"
    assert J.cancel_job(conn, jid)["status"] == "cancelled"
    with pytest.raises(TaskError, match="cannot resume"):
        J.resume_job(conn, jid)
    assert J.claim_job(conn, "w1") is None


def test_lease_expiry_and_takeover(conn):
    make_dataset(conn)
    jid = J.queue_job(conn, "generate", config=CONFIG, dataset="demo", endpoint="local")
    owner = "otherhost:1:a"            # another host: only lease expiry frees it
    assert J.claim_job(conn, owner, lease_seconds=0.3)["id"] == jid
    assert J.claim_job(conn, "otherhost:2:b") is None
    assert J.heartbeat(conn, jid, owner, 0.3) == "running"
    time.sleep(0.4)
    assert J.claim_job(conn, "otherhost:2:b")["lease_owner"] == "otherhost:2:b"
    with pytest.raises(J.LeaseLost):
        J.heartbeat(conn, jid, owner)
    with pytest.raises(J.LeaseLost):
        J.commit_batch(conn, jid, owner, None, [])


def test_dead_local_owner_is_taken_over_at_once(conn):
    import socket
    import subprocess
    import sys
    make_dataset(conn)
    jid = J.queue_job(conn, "generate", config=CONFIG, dataset="demo", endpoint="local")
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    dead = f"{socket.gethostname()}:{p.pid}:x"
    assert J.claim_job(conn, dead, lease_seconds=60)["id"] == jid
    assert J.claim_job(conn, J.new_owner(), lease_seconds=60)["id"] == jid


def claimed_generate_job(conn):
    """A generate job over the demo dataset, claimed by a new owner: (job id, owner, its task)."""
    jid = J.queue_job(conn, "generate", config=CONFIG, dataset="demo", endpoint="local")
    owner = J.new_owner()
    J.claim_job(conn, owner)
    return jid, owner, _task(conn, jid)


def _task(conn, jid):
    from workbench.config import load_config
    job = J.get_job(conn, jid)
    ctx = J.job_context(conn, job, load_config())
    return get_task(job["kind"])(ctx)


def test_commit_batch_is_atomic_per_item_and_idempotent(conn):
    make_dataset(conn, n=3)
    jid, owner, task = claimed_generate_job(conn)
    items = J.pending_items(conn, jid, 0, 10)
    assert [i.sample["instruction"] for i in items] == ["Question 0", "Question 1", "Question 2"]
    good = J.Outcome(items[0], result=Result(samples=[{"instruction": "Question 0", "response": "A"}]))
    bad_write = J.Outcome(items[1], result=Result(samples=[{"instruction": "x", "response": "B"}],
                                                   updates=[{"id": 1, "status": "accepted"}]))
    failed = J.Outcome(items[2], error="unparseable reply: no JSON", raw="garbage")
    J.commit_batch(conn, jid, owner, task, [good, bad_write, failed])
    J.commit_batch(conn, jid, owner, task, [good])          # a second commit of a settled item writes nothing
    into = J.get_job(conn, jid)["into_dataset_id"]
    rows = conn.execute("SELECT response, parent_id, job_id FROM samples WHERE dataset_id = ?", (into,)).fetchall()
    assert rows == [("A", 1, jid)]                           # the failed write left no half row behind
    st = dict(conn.execute("SELECT key, status FROM job_items WHERE job_id = ?", (jid,)).fetchall())
    assert st == {"s:1": "done", "s:2": "failed", "s:3": "failed"}
    job = J.get_job(conn, jid)
    assert (job["done"], job["failed"], job["kept"]) == (1, 2, 1)
    f = {x["key"]: x for x in J.failures(conn, jid)}
    assert "may not update sample fields ['status']" in f["s:2"]["error"]
    assert f["s:3"]["raw"] == "garbage"


def test_retry_failed_requeues(conn):
    make_dataset(conn, n=2)
    jid, owner, task = claimed_generate_job(conn)
    items = J.pending_items(conn, jid, 0, 10)
    J.commit_batch(conn, jid, owner, task, [J.Outcome(i, error="boom") for i in items])
    J.release(conn, jid, owner, "failed", "2 item(s) failed")
    assert J.get_job(conn, jid)["status"] == "failed"
    assert J.retry_failed(conn, jid) == 2
    job = J.get_job(conn, jid)
    assert (job["status"], job["failed"], job["error"]) == ("queued", 0, None)
    assert len(J.pending_items(conn, jid, 0, 10)) == 2


def test_retry_of_a_cancelled_job_runs_only_its_failed_items(conn):
    make_dataset(conn, n=4)
    jid, owner, task = claimed_generate_job(conn)
    first, second, *rest = J.pending_items(conn, jid, 0, 10)
    J.commit_batch(conn, jid, owner, task, [J.Outcome(first, error="boom"),
                                            J.Outcome(second, result=Result(samples=[{"response": "A"}]))])
    J.cancel_job(conn, jid)
    J.release(conn, jid, owner)
    assert J.retry_failed(conn, jid) == 1
    assert [i.key for i in J.pending_items(conn, jid, 0, 10)] == [first.key]
    assert J.item_counts(conn, jid) == {"pending": 1, "done": 1, "cancelled": 2}
    assert J.get_job(conn, jid)["status"] == "queued"


def test_dynamic_items_added_once(conn):
    make_dataset(conn, n=1)
    jid = J.queue_job(conn, "generate", config=CONFIG, dataset="demo", endpoint="local")
    with transaction(conn):
        assert J.add_items(conn, jid, [Item("round-1"), Item("round-2", payload={"k": 1})]) == 2
    with transaction(conn):
        assert J.add_items(conn, jid, [Item("round-2"), Item("round-3")]) == 1
    assert J.get_job(conn, jid)["total"] == 4
    items = J.pending_items(conn, jid, 0, 10)
    assert [(i.key, i.payload) for i in items][1:3] == [("round-1", None), ("round-2", {"k": 1})]


def test_progress_figures():
    j = {"total": 100, "done": 40, "failed": 10, "rate": 5.0, "run_seconds": 10, "status": "running",
         "lease_expires": time.time() + 10}
    f = J.progress_figures(j)
    assert f["remaining"] == 50 and f["eta_s"] == 10 and f["fraction"] == 0.5 and f["live"]
    j.update(status="paused")
    assert J.progress_figures(j)["eta_s"] is None


def test_queue_with_no_items_is_an_error(conn):
    make_dataset(conn, n=2)
    with pytest.raises(TaskError, match="nothing to do: task generate found no input items in dataset 'demo' "
                                        "matching the filter"):
        J.queue_job(conn, "generate", config=CONFIG, dataset="demo", endpoint="local",
                    filter=J.parse_filter("status=accepted"))
    assert conn.execute("SELECT count(*) FROM jobs").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM datasets").fetchone()[0] == 1
