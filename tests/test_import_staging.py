"""An import commits in many short transactions: other writers wait behind one of them at most and never give up;
a refused import leaves the store as it was, and a killed one is removed by the next open."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest

from workbench import busy, decisions, importer, import_recovery
from workbench.samples import insert_samples
from workbench.stats import fold
from workbench.store import ensure_dataset, fts_sync, open_store, transaction

ROOT = Path(__file__).resolve().parent.parent


def write_jsonl(path: Path, n: int, bad_at: int | None = None, dup_every: int = 0) -> Path:
    with open(path, "wb") as f:
        for i in range(1, n + 1):
            if i == bad_at:
                f.write(b'{"instruction": "q", "output": {"a": 1}}\n')      # output must be text
                continue
            k = i % dup_every if dup_every else i
            f.write(orjson.dumps({"instruction": f"question {k} " + "x" * 200, "output": f"answer {k} " * 20}) + b"\n")
    return path


def content(db: Path) -> dict:
    """Every table's rows (what a user or a command can see), the search index's answers included."""
    c = sqlite3.connect(db)
    try:
        out = {}
        for (name,) in c.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'samples_fts%'"
                                 " ORDER BY name"):
            out[name] = c.execute(f"SELECT * FROM \"{name}\" ORDER BY 1").fetchall()
        out["fts"] = c.execute("SELECT rowid FROM samples_fts WHERE samples_fts MATCH 'question' ORDER BY rowid"
                               ).fetchall()
        return out
    finally:
        c.close()


@pytest.fixture
def small_batches(monkeypatch):
    # many transactions even for a small file: a commit after each chunk
    monkeypatch.setattr(importer, "MAX_TX_S", 0.0)
    monkeypatch.setattr(importer, "FIRST_BATCH", 50)
    monkeypatch.setattr(importer, "MAX_BATCH", 120)
    monkeypatch.setattr(importer, "MIN_BATCH", 50)


def seed(db: Path) -> None:
    conn = open_store(db)
    with transaction(conn):
        did = ensure_dataset(conn, "old")
        insert_samples(conn, did, [{"instruction": f"question {i}", "response": "a"} for i in range(30)])
    fts_sync(conn)
    fold(conn)
    conn.close()


def test_a_bad_line_after_many_commits_leaves_the_store_as_it_was(tmp_path, small_batches):
    db = tmp_path / "s.db"
    seed(db)
    before = content(db)
    src = write_jsonl(tmp_path / "d.jsonl", 2000, bad_at=1900)
    conn = open_store(db)
    commits = []
    real_begin = importer.busy.begin

    def counting(c, immediate=True):
        commits.append(1)
        if len(commits) == 10:      # meanwhile the search index and Balance counts take in the rows so far
            other = open_store(db)
            fts_sync(other)
            fold(other)
            other.close()
        return real_begin(c, immediate)
    importer.busy.begin = counting
    try:
        with pytest.raises(importer.ImportFailed) as e:
            importer.import_file(conn, src, dataset="new")
    finally:
        importer.busy.begin = real_begin
    assert len(commits) > 10                                   # it did commit along the way
    assert str(e.value).startswith(f"{src}, line 1900, field 'output'")
    assert content(db) == before


def test_a_refused_append_to_an_existing_dataset_keeps_it_as_it_was(tmp_path, small_batches):
    db = tmp_path / "s.db"
    seed(db)
    before = content(db)
    conn = open_store(db)
    with pytest.raises(importer.ImportFailed):
        importer.import_file(conn, write_jsonl(tmp_path / "d.jsonl", 1000, bad_at=999), dataset="old")
    assert content(db) == before


def test_duplicates_across_transactions_point_at_the_earliest_sample(tmp_path, small_batches):
    db = tmp_path / "s.db"
    conn = open_store(db)
    with transaction(conn):
        did = ensure_dataset(conn, "old")
        insert_samples(conn, did, [{"instruction": "question 3 " + "x" * 200, "response": "answer 3 " * 20}])
    res = importer.import_file(conn, write_jsonl(tmp_path / "d.jsonl", 1000, dup_every=100), dataset="new")
    assert res.rows == 1000 and res.first_id == 2 and res.last_id == 1001
    got = dict(conn.execute("SELECT id, dup_of FROM samples WHERE dataset_id != ?", (did,)).fetchall())
    # row i (id i + 1) holds text k = i % 100: its first occurrence is row k (k = 0 -> row 100), text 3 was stored
    first = {k: (k if k else 100) + 1 for k in range(100)}
    first[3] = 1
    want = {i + 1: (None if first[i % 100] == i + 1 else first[i % 100]) for i in range(1, 1001)}
    assert got == want
    assert res.duplicates == sum(v is not None for v in want.values())
    assert conn.execute("SELECT state, pid, rows FROM imports").fetchall() == [(None, None, 1000)]


def test_a_writer_waits_past_busy_timeout_instead_of_failing(tmp_path):
    db = tmp_path / "s.db"
    seed(db)
    holder = open_store(db, check_same_thread=False)
    writer = open_store(db)
    writer.execute("PRAGMA busy_timeout = 100")     # SQLite alone would give up after 0.1 s
    sid = writer.execute("SELECT min(id) FROM samples").fetchone()[0]
    holder.execute("BEGIN IMMEDIATE")
    threading.Timer(1.0, lambda: holder.execute("COMMIT")).start()
    t0 = time.monotonic()
    decisions.decide(writer, sid, "accept", "s1")
    assert time.monotonic() - t0 >= 0.9
    assert writer.execute("SELECT status FROM samples WHERE id = ?", (sid,)).fetchone()[0] == "accepted"
    assert writer.execute("PRAGMA busy_timeout").fetchone()[0] == 100     # restored for the statements after


def cli_import(db: Path, src: Path, *extra, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "workbench", "import", str(src), "--db", str(db), "--quiet", *extra],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, **kw)


def wait_for(pred, timeout=90.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


def test_a_killed_import_is_removed_by_the_next_open(tmp_path):
    db = tmp_path / "s.db"
    seed(db)
    before = content(db)
    src = write_jsonl(tmp_path / "big.jsonl", 150_000)
    p = cli_import(db, src, "--dataset", "big")
    watcher = open_store(db)

    def some_rows():     # the first commit, at once: a writer is waiting (on a fast machine the whole file
        busy._touch(f"{db}-wait")   # would otherwise go in within importer.MAX_TX_S, before the kill)
        return watcher.execute("SELECT count(*) FROM samples WHERE dataset_id = "
                               "(SELECT id FROM datasets WHERE name = 'big')").fetchone()[0] > 0
    try:
        wait_for(some_rows)
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    # what was committed is there, marked as an import that is still running
    state = watcher.execute("SELECT state, pid FROM imports WHERE dataset_id = (SELECT id FROM datasets WHERE "
                            "name = 'big')").fetchall()
    assert state == [("running", p.pid)]
    watcher.close()
    conn = open_store(db)            # any command: the dead import is removed
    assert content(db) == before
    assert import_recovery.remove_abandoned(conn) == 0
    # and the file imports cleanly afterwards
    r = cli_import(db, src, "--dataset", "big")
    out, err = r.communicate(timeout=300)
    assert r.returncode == 0, err
    assert conn.execute("SELECT count(*), count(dup_of) FROM samples WHERE dataset_id = (SELECT id FROM datasets "
                        "WHERE name = 'big')").fetchone() == (150_000, 0)


def test_an_import_of_a_live_process_is_not_removed(tmp_path, small_batches):
    db = tmp_path / "s.db"
    conn = open_store(db)
    seen = []
    real = importer._StagedWriter.flush

    def flush(self):
        real(self)
        if self.inserted and not seen:       # half-way: another process opens the store
            other = open_store(db)
            seen.append(other.execute("SELECT count(*) FROM samples").fetchone()[0])
            other.close()
    importer._StagedWriter.flush = flush
    try:
        res = importer.import_file(conn, write_jsonl(tmp_path / "d.jsonl", 500), dataset="d")
    finally:
        importer._StagedWriter.flush = real
    assert seen and seen[0] > 0 and res.rows == 500
    assert conn.execute("SELECT count(*) FROM samples").fetchone()[0] == 500


def test_a_worker_and_review_decisions_during_a_big_import_never_fail(tmp_path):
    """A real worker process runs a job against the test server and a curator decides, while an import of
    20k rows commits; nobody gets "database is locked", every decision lands, the job finishes."""
    sys.path.insert(0, str(ROOT / "tests"))
    from llm_server import LLMServer, write_endpoint
    from workbench import jobs as J
    from workbench.config import load_config
    db, cfg = tmp_path / "s.db", tmp_path / "config.toml"
    seed(db)
    conn = open_store(db)
    with transaction(conn):
        did = ensure_dataset(conn, "demo")
        insert_samples(conn, did, [{"instruction": f"Question {i}", "system": "Be brief."} for i in range(60)])
    with LLMServer(latency=0.05, capacity=2) as srv:
        write_endpoint(cfg, srv, max_concurrency=2)
        jid = J.queue_job(conn, "generate", config=load_config(cfg), dataset="demo", endpoint="local")
        src = write_jsonl(tmp_path / "big.jsonl", 20_000)
        imp = cli_import(db, src, "--dataset", "big")
        wait_for(lambda: conn.execute("SELECT count(*) FROM imports WHERE state = 'running'").fetchone()[0])
        log = open(tmp_path / "worker.log", "wb")
        worker = subprocess.Popen([sys.executable, "-m", "workbench", "worker", "--until-idle", "--db", str(db),
                                   "--config", str(cfg)], stdout=log, stderr=log, cwd=ROOT)
        ids = [r[0] for r in conn.execute("SELECT id FROM samples WHERE dataset_id = 1 ORDER BY id")]
        decided = 0
        while imp.poll() is None:
            decisions.decide(conn, ids[decided % len(ids)], ("accept", "reject")[decided % 2], "curator")
            decided += 1
            time.sleep(0.02)
        out, err = imp.communicate()
        assert imp.returncode == 0, err
        assert worker.wait(300) == 0, (tmp_path / "worker.log").read_text()[-2000:]
    assert decided > 5
    assert "locked" not in (tmp_path / "worker.log").read_text()
    j = J.get_job(conn, jid)
    assert (j["status"], j["done"], j["failed"]) == ("done", 60, 0)
    assert conn.execute("SELECT count(*) FROM decisions WHERE session = 'curator'").fetchone()[0] == decided
    assert conn.execute("SELECT count(*) FROM samples WHERE dataset_id = (SELECT id FROM datasets WHERE name = 'big')"
                        ).fetchone()[0] == 20_000


def test_a_waiting_writer_makes_the_import_commit_at_once(tmp_path, monkeypatch):
    db = tmp_path / "s.db"
    seed(db)
    monkeypatch.setattr(importer, "MAX_TX_S", 60.0)     # without a waiter: one transaction for the whole file
    monkeypatch.setattr(importer, "FIRST_BATCH", 50)
    monkeypatch.setattr(importer, "MAX_BATCH", 50)
    monkeypatch.setattr(importer, "MIN_BATCH", 50)
    conn = open_store(db)
    other = open_store(db, check_same_thread=False)
    sid = other.execute("SELECT min(id) FROM samples").fetchone()[0]
    waited = []
    real = importer._StagedWriter._write

    def write(self, flag_duplicates=False):
        real(self, flag_duplicates)
        if self.inserted == 100:      # the import holds the lock: a curator decides meanwhile
            t = threading.Thread(target=lambda: waited.append(decisions.decide(other, sid, "accept", "c")))
            t.start()
            deadline = time.monotonic() + 10
            while not busy_touched(db) and time.monotonic() < deadline:
                time.sleep(0.01)
            self._decider = t
    monkeypatch.setattr(importer._StagedWriter, "_write", write)
    res = importer.import_file(conn, write_jsonl(tmp_path / "d.jsonl", 1000), dataset="d")
    assert res.rows == 1000 and waited
    assert importer.LAST_TX_STATS.yielded >= 1 and importer.LAST_TX_STATS.count >= 2
    assert conn.execute("SELECT status FROM samples WHERE id = ?", (sid,)).fetchone()[0] == "accepted"


def busy_touched(db: Path) -> bool:
    return Path(f"{db}-wait").exists()


def test_other_writers_checkpoints_leave_the_import_to_its_end(tmp_path, small_batches, monkeypatch):
    """While an import runs, another writer's checkpoint copies none of the import's pages (it would otherwise
    copy, inside a Review decision, all the import wrote since the last one); the import copies them at its end."""
    db = tmp_path / "s.db"
    seed(db)
    conn = open_store(db)
    other = open_store(db)
    other.execute("PRAGMA wal_checkpoint(TRUNCATE)")          # the WAL starts empty
    mid = []
    real = importer._StagedWriter.commit

    def commit(self):
        real(self)
        if not mid and self.inserted >= 300:       # a few commits in: a decision, then its checkpoint
            with transaction(other):
                other.execute("UPDATE samples SET status = 'accepted' WHERE id = 1")
            mid.append(other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone())
    monkeypatch.setattr(importer._StagedWriter, "commit", commit)
    res = importer.import_file(conn, write_jsonl(tmp_path / "d.jsonl", 1000), dataset="d")
    assert res.rows == 1000 and mid
    busy_flag, wal_frames, copied = mid[0]
    assert busy_flag == 0 and wal_frames > 20 and copied == 0     # the import's frames (and those after) wait
    busy_flag, wal_frames, copied = other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert copied == wal_frames         # the import copied everything at its end: nothing left for a writer
    assert other.execute("SELECT status FROM samples WHERE id = 1").fetchone()[0] == "accepted"
