"""Dedup's bounded-memory paths and its cancel/progress hooks: the texts held as UTF-8 in one buffer sort and
compare exactly as Python strings did, a scan stopped through `progress` ends its worker processes, and keep-best
writes in short transactions (one run, undoable as a whole) that let a waiting writer go first."""
from __future__ import annotations

import random
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pytest
from faults import fail_on_call, kill_midway

from workbench import busy, dedup, dedup_scan, near_dup, runs, short_tx
from workbench.samples import insert_samples
from workbench.store import ensure_dataset, open_store, transaction


def add(conn, rows, name="d"):
    with transaction(conn):
        did = ensure_dataset(conn, name)
        first, last = insert_samples(conn, did, rows)
    return list(range(first, last + 1))


def _rows_of(texts: list[str], extras: list[str] | None = None, text_memory: int | None = None) -> near_dup._Rows:
    ids = list(range(1, len(texts) + 1))
    sigs = [near_dup.signatures(ids[i:i + 7], texts[i:i + 7], None if extras is None else extras[i:i + 7])
            for i in range(0, len(texts), 7)]       # several blocks: the buffer is filled and grown block by block
    return near_dup._Rows(sigs, near_dup.Stats(), text_memory=text_memory)


def _tricky_texts(rng: random.Random, n: int) -> list[str]:
    """Texts that share long prefixes (past the 64-byte fixed-width key), differ only past it, are prefixes of
    each other, end in NUL (numpy's S dtype drops trailing NULs), and mix 1- to 4-byte UTF-8 characters and lone
    surrogates (UTF-8 byte order must stay code point order)."""
    alphabet = ["a", "b", "z", "\x00", "\x01", "é", "ÿ", "ā", "中", "\ud800", "\udfff", "\ue000", "\U0001f642", "~"]
    stem = "the same opening words of a long shared prefix for many rows " * 2
    out = []
    for _ in range(n):
        kind = rng.randrange(4)
        tail = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6)))
        if kind == 0:
            out.append(stem + tail)
        elif kind == 1:
            out.append(stem[:rng.randint(55, 70)] + tail)
        elif kind == 2:
            out.append(tail)
        else:
            out.append(rng.choice(["", "a", "a\x00", "a\x00\x00"]) + tail)
    return out


@pytest.mark.parametrize("spill", [None, 1, 3000])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_forward_order_is_the_order_of_the_texts_themselves(seed, spill):
    """Also with the texts past `spill` bytes in the temporary file (1: all but the first block's)."""
    rng = random.Random(seed)
    texts = _tricky_texts(rng, 400)
    data = _rows_of(texts, text_memory=spill)
    assert (data._fd is None) == (spill is None)
    n = len(data.ids)
    held = data.texts_of(range(n))
    assert held == [near_dup.match_text(t) for t in texts if near_dup.match_text(t)]   # the buffer gives them back
    rows_in = np.arange(n, dtype=np.int64)[::-1].copy() if seed == 3 else np.arange(n, dtype=np.int64)
    order, prefixes = data.forward_order(rows_in)
    assert order.tolist() == sorted(rows_in.tolist(), key=held.__getitem__)            # stable, like sorted()
    want = np.array([held[i][:near_dup.GATE].encode("utf-8", "surrogatepass")[:near_dup.GATE] for i in order],
                    dtype=f"S{near_dup.GATE}")
    assert (prefixes.view(f"S{near_dup.GATE}").ravel() == want).all()


@pytest.mark.parametrize("spill", [None, 2000])
def test_forward_order_with_responses_sorts_by_prompt_then_response(spill):
    rng = random.Random(5)
    prompts = _tricky_texts(rng, 150)
    responses = [rng.choice(["", "short reply", "x" * 200 + rng.choice("ab"), "中文" * 40]) for _ in prompts]
    data = _rows_of(prompts, responses, text_memory=spill)
    held = data.texts_of(range(len(data.ids)))
    order, _ = data.forward_order(np.arange(len(held), dtype=np.int64))
    assert order.tolist() == sorted(range(len(held)), key=held.__getitem__)


def test_growing_arrays_keep_every_block_in_order():
    g = near_dup._Growing()
    blocks = [np.arange(k, k + size, dtype=np.int64) for k, size in ((0, 3), (3, 1500), (1503, 1), (1504, 4000))]
    for b in blocks:
        g.add(b)
    assert g.array().tolist() == list(range(5504))
    h = near_dup._Growing()
    for k in range(5):
        h.add(np.full((300, 4), k, dtype=np.uint8))
    out = h.array()
    assert out.shape == (1500, 4) and out[::300, 0].tolist() == [0, 1, 2, 3, 4]


def _planted(conn, n=400):
    rng = random.Random(9)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9))) for _ in range(2000)]
    base = [" ".join(rng.choice(words) for _ in range(12)) + " with care." for _ in range(n)]
    rows = [{"instruction": t, "response": f"reply {i}"} for i, t in enumerate(base)]
    rows += [{"instruction": t.replace("care", "care!"), "response": f"reply {i}"} for i, t in enumerate(base[:50])]
    return add(conn, rows)


def test_progress_reports_each_phase_and_the_clusters_do_not_change(conn):
    _planted(conn)
    seen = []
    got = dedup.find_clusters(conn, ["d"], progress=lambda phase, done, total: seen.append((phase, done, total)))
    assert got == dedup.find_clusters(conn, ["d"]) and len(got) == 50
    phases = [p for p, _, _ in seen]
    assert phases.index("read") < phases.index("compare")
    assert ("read", 450, 0) in seen                      # rows read so far
    assert {(d, t) for p, d, t in seen if p == "compare"} == {(0, 3), (1, 3), (2, 3)}


@pytest.mark.parametrize("fields", [dedup.DEFAULT_FIELDS, ("instruction", "input", "response")])
def test_texts_spilled_to_a_file_give_the_same_clusters(conn, db_path, monkeypatch, fields):
    _planted(conn)
    want = dedup.find_clusters(conn, ["d"], fields)
    opened = []
    real = near_dup.tempfile.TemporaryFile

    spied_dirs = []

    def spy(*a, **kw):
        spied_dirs.append(kw.get("dir"))
        opened.append(real(*a, **kw))
        return opened[-1]

    monkeypatch.setattr(near_dup.tempfile, "TemporaryFile", spy)
    monkeypatch.setattr(dedup_scan.stream_blocks, "__defaults__", (64,))    # many blocks: most of them spilled
    monkeypatch.setattr(near_dup, "TEXT_MEMORY_BYTES", 2000)
    assert dedup.find_clusters(conn, ["d"], fields) == want and len(want) == 50
    assert len(opened) == 1 and opened[0].closed              # the file is closed (and so gone) at the end
    assert opened[0].name is not None and spied_dirs == [str(Path(db_path).parent)]    # beside the store

    def stop_late(phase, done, total):        # stops the scan once some texts are in the file
        if phase == "read" and done >= 300:
            raise Stop()

    with pytest.raises(Stop):
        dedup.find_clusters(conn, ["d"], fields, progress=stop_late)
    assert len(opened) == 2 and opened[1].closed


class Stop(Exception):
    pass


def test_a_scan_stopped_by_progress_ends_its_worker_processes(conn, monkeypatch):
    _planted(conn)
    started = []
    real_popen = subprocess.Popen

    def popen(*a, **kw):
        started.append(real_popen(*a, **kw))
        return started[-1]

    monkeypatch.setattr(dedup_scan.subprocess, "Popen", popen)

    def stop(phase, done, total):
        if phase == "read":
            raise Stop()

    with pytest.raises(Stop):
        dedup.find_clusters(conn, ["d"], workers=2, progress=stop)
    assert started                                             # the scan did use a worker process
    assert all(p.returncode is not None for p in started)      # ended and reaped before find_clusters returned


def test_find_clusters_at_uses_its_own_connection_and_stops_when_asked(db_path, conn):
    import threading
    _planted(conn)
    assert dedup.find_clusters_at(db_path, ["d"], dedup.DEFAULT_FIELDS, 0.9) == dedup.find_clusters(conn, ["d"])
    stop = threading.Event()
    seen = []

    def progress(phase, done, total):
        seen.append(phase)
        if phase == "read":
            stop.set()

    with pytest.raises(dedup.Cancelled):
        dedup.find_clusters_at(db_path, ["d"], dedup.DEFAULT_FIELDS, 0.9, stop, progress)
    assert "compare" not in seen
    with pytest.raises(KeyError):
        dedup.find_clusters_at(db_path, ["nope"], dedup.DEFAULT_FIELDS, 0.9)


# --- keep-best in short transactions ---------------------------------------------------------------------------

def _plan(conn, n):
    ids = add(conn, [{"instruction": f"row {i}"} for i in range(n)])
    keeper = ids[0]
    return ids, [(sid, keeper) for sid in reversed(ids[1:])]     # any order: written in id order


def _count_commits(conn) -> list[str]:
    statements = []
    conn.set_trace_callback(statements.append)
    return statements


def test_keep_best_writes_short_transactions_of_one_run_undoable_as_one(conn, monkeypatch):
    ids, plan = _plan(conn, 1201)
    conn.execute("UPDATE samples SET status = 'accepted' WHERE id = ?", (ids[5],))
    conn.execute("UPDATE samples SET status = 'rejected' WHERE id = ?", (ids[6],))
    monkeypatch.setattr(dedup, "APPLY_ROWS", 100)
    monkeypatch.setattr(short_tx, "LIMIT_S", 0.0)        # every batch its own transaction
    statements = _count_commits(conn)
    run, rejected, accepted = dedup.reject_duplicates(conn, plan)
    conn.set_trace_callback(None)
    assert (rejected, accepted) == (1198, 1)
    assert statements.count("COMMIT") == 13              # 12 batches, then the (empty) last one is closed
    status = dict(conn.execute("SELECT id, status FROM samples"))
    assert status[ids[0]] == "pending" and status[ids[5]] == "accepted"
    assert all(status[i] == "rejected" for i in ids[1:] if i != ids[5])
    sessions = conn.execute("SELECT DISTINCT session FROM decisions WHERE action = 'dedup'").fetchall()
    assert sessions == [(run,)]
    logged = [r[0] for r in conn.execute("SELECT sample_id FROM decisions WHERE action = 'dedup' ORDER BY id")]
    assert logged == sorted(logged) and len(logged) == 1198          # id order
    res = runs.undo_run(conn, run)
    assert res.reverted == 1198
    status = dict(conn.execute("SELECT id, status FROM samples"))
    assert status[ids[6]] == "rejected" and sum(s == "pending" for s in status.values()) == 1199


def test_keep_best_commits_and_steps_aside_when_a_writer_waits(conn, monkeypatch):
    _, plan = _plan(conn, 301)
    monkeypatch.setattr(dedup, "APPLY_ROWS", 100)
    monkeypatch.setattr(short_tx, "LIMIT_S", 3600.0)     # time alone would keep one transaction
    yielded = []
    monkeypatch.setattr(busy, "yield_to_waiters", lambda: yielded.append(1))
    statements = _count_commits(conn)
    dedup.reject_duplicates(conn, plan)
    assert statements.count("COMMIT") == 1 and yielded == []         # nobody waiting: one transaction
    _, plan = _plan(conn, 301)
    monkeypatch.setattr(busy, "someone_waiting", lambda path, since: True)
    statements.clear()
    run, rejected, _ = dedup.reject_duplicates(conn, plan)
    conn.set_trace_callback(None)
    assert rejected == 300 and statements.count("COMMIT") == 4 and len(yielded) == 3


def test_keep_best_reads_each_status_inside_its_transaction(conn, monkeypatch):
    """A row a curator accepts between two of keep-best's transactions is left as accepted."""
    ids, plan = _plan(conn, 201)
    monkeypatch.setattr(dedup, "APPLY_ROWS", 100)
    monkeypatch.setattr(short_tx, "LIMIT_S", 0.0)
    real = runs.log_status_changes
    calls = []

    def log(c, run, action, changes, status):
        calls.append(len(changes))
        if len(calls) == 1:       # after the first batch: a curator accepts a row of the second
            c.execute("UPDATE samples SET status = 'accepted' WHERE id = ?", (ids[150],))
        return real(c, run, action, changes, status)

    monkeypatch.setattr(dedup, "log_status_changes", log)
    run, rejected, accepted = dedup.reject_duplicates(conn, plan)
    assert (rejected, accepted) == (199, 1)
    assert conn.execute("SELECT status FROM samples WHERE id = ?", (ids[150],)).fetchone()[0] == "accepted"


def test_keep_best_that_fails_midway_is_undone_whole(conn, monkeypatch):
    ids, plan = _plan(conn, 301)
    before = conn.execute("SELECT id, status FROM samples ORDER BY id").fetchall()
    monkeypatch.setattr(dedup, "APPLY_ROWS", 100)
    monkeypatch.setattr(short_tx, "LIMIT_S", 0.0)              # the first chunks are committed before the fault
    fail_on_call(monkeypatch, dedup, "log_status_changes", 3)
    with pytest.raises(sqlite3.OperationalError):
        dedup.reject_duplicates(conn, plan)
    assert conn.execute("SELECT id, status FROM samples ORDER BY id").fetchall() == before
    assert conn.execute("SELECT count(*) FROM bulk_runs").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM decisions WHERE action = 'undo'").fetchone()[0] == 200


KILLED_CHILD = """
import sys
from workbench import dedup, short_tx
from workbench.store import open_store
short_tx.LIMIT_S = 0.0
dedup.APPLY_ROWS = 20
conn = open_store(sys.argv[1])
ids = [r[0] for r in conn.execute("SELECT id FROM samples ORDER BY id")]
dedup.reject_duplicates(conn, [(sid, ids[0]) for sid in ids[1:]])
"""


def test_keep_best_killed_midway_is_undone_by_the_next_open(db_path, conn):
    _plan(conn, 3001)
    conn.close()
    kill_midway(db_path, KILLED_CHILD, [], lambda w: w.execute("SELECT count(*) FROM bulk_runs").fetchone()[0] > 0)
    left = sqlite3.connect(db_path)                # not open_store: that would take the dead run back
    rejected = left.execute("SELECT count(*) FROM samples WHERE status = 'rejected'").fetchone()[0]
    assert left.execute("SELECT count(*) FROM bulk_runs").fetchone()[0] == 1 and 0 < rejected < 3000
    left.close()
    again = open_store(db_path)                    # any command: the dead run is taken back
    assert again.execute("SELECT count(*) FROM samples WHERE status = 'rejected'").fetchone()[0] == 0
    assert again.execute("SELECT count(*) FROM bulk_runs").fetchone()[0] == 0
    assert again.execute("SELECT count(*) FROM decisions WHERE action = 'undo'").fetchone()[0] == rejected
