"""Long writers in short transactions: an export's snapshot_items and a keep's rejections are written in chunks
another writer gets in between (shown with a writer that waits for the lock while the job runs, not with timings),
a failure or a kill -9 midway leaves the store as it was (an export: no snapshot, no items, no file; a keep: every
status as before, the run undone), and a curator's decision made during a keep is never overwritten."""
import json
import os
import sqlite3
import threading
from pathlib import Path

import pytest
from faults import fail_on_call, kill_midway, wait_for

from workbench import busy, bulk_recovery, keep as keep_mod, shard_update, short_tx, snapshot_write
from workbench.exporter import export
from workbench.keep import keep
from workbench.samples import insert_samples
from workbench.store import ensure_dataset, open_store, transaction

ROWS = 2000


def seed(db: Path) -> None:
    conn = open_store(db)
    with transaction(conn):
        did = ensure_dataset(conn, "d")
        insert_samples(conn, did, [{"instruction": f"question {i}", "response": f"answer {i}"} for i in range(ROWS)])
        other = ensure_dataset(conn, "other")
        insert_samples(conn, other, [{"instruction": "elsewhere", "response": "x"}])
    conn.close()


def statuses(conn) -> list:
    return conn.execute("SELECT id, status FROM samples ORDER BY id").fetchall()


def unpublished_items(conn) -> int:
    return conn.execute("SELECT count(*) FROM snapshot_items WHERE snapshot_id NOT IN (SELECT id FROM snapshots)"
                        ).fetchone()[0]




@pytest.fixture
def small_chunks(monkeypatch):
    """Commit after every chunk of 50: many chunk boundaries in a small job."""
    monkeypatch.setattr(short_tx, "LIMIT_S", 0.0)
    monkeypatch.setattr(snapshot_write, "CHUNK", 50)
    monkeypatch.setattr(keep_mod, "CHUNK", 50)
    monkeypatch.setattr(shard_update, "FETCH", 50)
    monkeypatch.setattr(shard_update, "CHUNK", 7)       # its undo: chunk ends between a sample's two rubrics


def kept_file(tmp_path: Path, ids) -> Path:
    f = tmp_path / "kept.jsonl"
    f.write_text("".join(json.dumps({"sample_id": i}) + "\n" for i in ids))
    return f


# --- another writer gets in between the chunks -------------------------------------------------------------

def _writer_between(db: Path, ready, check):
    """A thread: once `ready()` (read on its own connection), wait for the lock as any writer does, and run
    `check(conn)` holding it; returns the thread and what check returned."""
    out = {}

    def run():
        conn = open_store(db, check_same_thread=False)
        try:
            wait_for(lambda: ready(conn))
            busy.begin(conn)           # touches <store>-wait: the job commits at its next chunk boundary
            try:
                out["seen"] = check(conn)
            finally:
                conn.execute("COMMIT")
        except BaseException as e:     # noqa: BLE001 - reported by the test
            out["error"] = e
        finally:
            conn.close()

    t = threading.Thread(target=run)
    t.start()
    return t, out


def test_a_writer_gets_in_between_an_exports_item_chunks(tmp_path, small_chunks):
    db = tmp_path / "s.db"
    seed(db)
    conn = open_store(db)

    def check(w):      # holding the lock: the export has written some items, not all, and published nothing
        w.execute("UPDATE samples SET updated_at = 'writer' WHERE id = 1")
        return unpublished_items(w), w.execute("SELECT count(*) FROM snapshots").fetchone()[0]

    t, out = _writer_between(db, lambda w: unpublished_items(w) > 0, check)
    res = export(conn, tmp_path / "out.jsonl", "alpaca", dataset="d")
    t.join()
    assert "error" not in out, out
    items, snaps = out["seen"]
    assert 0 < items < ROWS and snaps == 0
    assert res.rows == ROWS
    assert conn.execute("SELECT count(*) FROM snapshot_items WHERE snapshot_id = ?", (res.snapshot_id,)
                        ).fetchone()[0] == ROWS
    assert conn.execute("SELECT count(*) FROM snapshot_writes").fetchone()[0] == 0
    assert conn.execute("SELECT updated_at FROM samples WHERE id = 1").fetchone()[0] == "writer"


def test_a_writer_gets_in_between_a_keeps_chunks_and_its_decision_stands(tmp_path, small_chunks):
    db = tmp_path / "s.db"
    seed(db)
    conn = open_store(db)
    last = ROWS            # the dataset's last sample: not kept, reached by the keep last
    f = kept_file(tmp_path, range(2, ROWS, 2))

    def check(w):          # holding the lock: the keep is under way and has not reached the last sample
        running = w.execute("SELECT count(*) FROM bulk_runs").fetchone()[0]
        status = w.execute("SELECT status FROM samples WHERE id = ?", (last,)).fetchone()[0]
        w.execute("UPDATE samples SET status = 'accepted' WHERE id = ?", (last,))   # the curator accepts it
        return running, status

    t, out = _writer_between(db, lambda w: w.execute("SELECT count(*) FROM bulk_runs").fetchone()[0] > 0, check)
    res = keep(conn, "d", f, "external dedup")
    t.join()
    assert "error" not in out, out
    assert out["seen"] == (1, "pending")
    assert conn.execute("SELECT status FROM samples WHERE id = ?", (last,)).fetchone()[0] == "accepted"
    assert not conn.execute("SELECT 1 FROM decisions WHERE sample_id = ? AND session = ?", (last, res.run)).fetchone()
    assert res.rejected == ROWS - len(range(2, ROWS, 2)) - 1          # all the others but the accepted one
    assert conn.execute("SELECT count(*) FROM bulk_runs").fetchone()[0] == 0


# --- failures midway ---------------------------------------------------------------------------------------

def test_an_export_failing_after_its_items_leaves_no_snapshot_items_or_file(tmp_path, small_chunks, monkeypatch):
    db = tmp_path / "s.db"
    seed(db)
    conn = open_store(db)

    def publish(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(snapshot_write, "publish", publish)
    with pytest.raises(OSError):
        export(conn, tmp_path / "out.jsonl", "alpaca", dataset="d")
    assert conn.execute("SELECT count(*) FROM snapshot_items").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM snapshot_writes").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM snapshots").fetchone()[0] == 0
    assert not [n for n in os.listdir(tmp_path) if "out" in n or n.startswith(".wb-tmp-")]


def test_a_keep_failing_midway_undoes_what_it_wrote(tmp_path, small_chunks, monkeypatch):
    db = tmp_path / "s.db"
    seed(db)
    conn = open_store(db)
    before = statuses(conn)
    fail_on_call(monkeypatch, keep_mod, "log_status_changes", 5)
    with pytest.raises(sqlite3.OperationalError):
        keep(conn, "d", kept_file(tmp_path, range(2, ROWS, 2)), "external dedup")
    assert statuses(conn) == before
    assert conn.execute("SELECT count(*) FROM bulk_runs").fetchone()[0] == 0
    n_filter, n_undo = (conn.execute("SELECT count(*) FROM decisions WHERE action = ?", (a,)).fetchone()[0]
                        for a in ("filter", "undo"))
    assert n_filter == n_undo == 4 * 25        # four chunks of 50 samples, every other one rejected


# --- kill -9 midway ----------------------------------------------------------------------------------------

CHILD = """
import sys
from pathlib import Path
from workbench import keep, shard_update, short_tx, snapshot_write
from workbench.store import open_store
short_tx.LIMIT_S = 0.0
snapshot_write.CHUNK = keep.CHUNK = shard_update.FETCH = 50
conn = open_store(sys.argv[1])
if sys.argv[2] == "export":
    from workbench.exporter import export
    export(conn, sys.argv[3], "alpaca", dataset="d")
elif sys.argv[2] == "keep":
    keep.keep(conn, "d", sys.argv[3], "external dedup")
else:
    shard_update.update_samples(conn, [Path(sys.argv[3])], "d", ["quality=0-1", "words=0-100"])
"""


def _kill_midway(db: Path, job: str, arg: str, midway) -> None:
    kill_midway(db, CHILD, [job, arg], midway)


def test_an_export_killed_midway_is_removed_by_the_next_open(tmp_path):
    db = tmp_path / "s.db"
    seed(db)
    out = tmp_path / "export" / "out.jsonl"
    out.parent.mkdir()
    _kill_midway(db, "export", str(out), lambda w: unpublished_items(w) > 0)
    left = sqlite3.connect(db)
    assert left.execute("SELECT count(*) FROM snapshot_writes").fetchone()[0] == 1    # the dead export's
    assert any(n.startswith(".wb-tmp-") for n in os.listdir(out.parent))              # its temp file
    left.close()
    conn = open_store(db)           # any command
    assert conn.execute("SELECT count(*) FROM snapshot_items").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM snapshot_writes").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM snapshots").fetchone()[0] == 0
    assert os.listdir(out.parent) == []
    # and the next export goes through
    res = export(conn, out, "alpaca", dataset="d")
    assert res.rows == ROWS and conn.execute("SELECT count(*) FROM snapshot_items").fetchone()[0] == ROWS


def test_a_keep_killed_midway_is_undone_by_the_next_open(tmp_path):
    db = tmp_path / "s.db"
    seed(db)
    conn = open_store(db)
    before = statuses(conn)
    conn.close()
    f = kept_file(tmp_path, range(2, ROWS, 2))
    _kill_midway(db, "keep", str(f), lambda w: w.execute("SELECT count(*) FROM bulk_runs").fetchone()[0] > 0)
    left = sqlite3.connect(db)
    rejected = left.execute("SELECT count(*) FROM samples WHERE status = 'rejected'").fetchone()[0]
    assert 0 < rejected < ROWS - len(range(2, ROWS, 2))      # some of the rejections were committed
    left.close()
    conn = open_store(db)
    assert statuses(conn) == before
    assert conn.execute("SELECT count(*) FROM bulk_runs").fetchone()[0] == 0
    assert bulk_recovery.roll_back_run(conn, "filter-1") == 0     # nothing left to undo
    # the run's rejections each have their undo: the log says a keep was started and undone
    assert conn.execute("SELECT count(*) FROM decisions WHERE action = 'undo'").fetchone()[0] == rejected
    res = keep(conn, "d", f, "external dedup")          # and it can be run again, whole
    assert res.rejected == ROWS - len(range(2, ROWS, 2))


# --- the shard import ----------------------------------------------------------------------------------------

def scored_shard(tmp_path: Path) -> Path:
    """An engine's output: two scores for every sample and its answer, a new one for every third."""
    f = tmp_path / "scored.jsonl"
    f.write_text("".join(json.dumps({"sample_id": i, "quality": (i % 10) / 10, "words": i % 100,
                                     "output": f"better answer {i}" if i % 3 == 0 else f"answer {i - 1}"}) + "\n"
                         for i in range(1, ROWS + 1)))
    return f


def texts_and_scores(conn) -> tuple:
    return (conn.execute("SELECT id, response, content_hash, status FROM samples ORDER BY id").fetchall(),
            conn.execute("SELECT * FROM sample_scores ORDER BY sample_id, rubric").fetchall())


def seed_scores(db: Path) -> None:
    """Some samples already scored on the rubric: an undone import must put those scores back."""
    from workbench import scores
    conn = open_store(db)
    with transaction(conn):
        scores.record_many(conn, "quality", (0, 1), [(i, 0.25) for i in range(1, ROWS + 1, 7)], judge="earlier")
        scores.record_many(conn, "words", (0, 100), [(i, 50) for i in range(1, ROWS + 1, 5)], judge="earlier")
    conn.close()


def test_a_writer_gets_in_between_a_shard_imports_chunks_and_its_edit_stands(tmp_path, small_chunks):
    db = tmp_path / "s.db"
    seed(db)
    conn = open_store(db)
    f = scored_shard(tmp_path)
    last = ROWS            # the file holds its answer as it was: the curator's edit meanwhile must stay
    assert last % 3

    def check(w):          # holding the lock: the import is under way and has not reached the last sample
        running = w.execute("SELECT count(*) FROM bulk_runs WHERE kind = 'update'").fetchone()[0]
        done = w.execute("SELECT count(*) FROM sample_scores WHERE rubric = 'quality'").fetchone()[0]
        from workbench.samples import write_text
        write_text(w, last, {"response": "the curator's answer"})    # the curator edits it meanwhile
        return running, 0 < done < ROWS

    t, out = _writer_between(db, lambda w: w.execute("SELECT count(*) FROM sample_scores").fetchone()[0] > 0, check)
    res = shard_update.update_samples(conn, [f], "d", ["quality=0-1", "words=0-100"])
    t.join()
    assert "error" not in out, out
    assert out["seen"] == (1, True)
    assert conn.execute("SELECT response FROM samples WHERE id = ?", (last,)).fetchone()[0] == "the curator's answer"
    assert res.kept_store_text == 1 and res.changed == ROWS // 3
    # its score was given to the file's text: stale on the curator's
    assert conn.execute("SELECT stale FROM sample_scores WHERE sample_id = ? AND rubric = 'quality'", (last,)
                        ).fetchone()[0] == 1
    assert conn.execute("SELECT count(*) FROM bulk_runs").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM bulk_run_scores").fetchone()[0] == 0


def test_a_shard_import_meeting_a_conflict_midway_undoes_itself(tmp_path, small_chunks):
    db = tmp_path / "s.db"
    seed(db)
    seed_scores(db)
    conn = open_store(db)
    before = texts_and_scores(conn)
    f = scored_shard(tmp_path)
    last = ROWS - ROWS % 3

    def check(w):          # the curator edits a sample whose text the file changes too: the import must refuse
        from workbench.samples import write_text
        write_text(w, last, {"response": "the curator's answer"})
        return True

    t, out = _writer_between(db, lambda w: w.execute("SELECT count(*) FROM bulk_runs WHERE run IS NOT NULL"
                                                     ).fetchone()[0] > 0, check)
    with pytest.raises(shard_update.UpdateError, match=f"sample {last} was edited in the store while this import "
                                                       f"ran.*nothing was imported"):
        shard_update.update_samples(conn, [f], "d", ["quality=0-1", "words=0-100"])
    t.join()
    assert "error" not in out, out
    texts, sc = texts_and_scores(conn)
    want_texts, want_scores = before
    want_texts = [r if r[0] != last else (last, "the curator's answer", *texts[last - 1][2:]) for r in want_texts]
    assert texts == want_texts and sc == want_scores
    assert conn.execute("SELECT count(*) FROM bulk_runs").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM bulk_run_scores").fetchone()[0] == 0


@pytest.mark.parametrize("how", ["cli", "tui"])
def test_a_shard_import_killed_midway_is_undone_by_the_next_command(tmp_path, monkeypatch, how):
    db = tmp_path / "s.db"
    seed(db)
    seed_scores(db)
    conn = open_store(db)
    before = texts_and_scores(conn)
    conn.close()
    f = scored_shard(tmp_path)
    _kill_midway(db, "update", str(f), lambda w: w.execute(
        "SELECT count(*) FROM decisions WHERE action = 'update'").fetchone()[0] > 0)
    left = sqlite3.connect(db)
    assert left.execute("SELECT count(*) FROM bulk_runs WHERE kind = 'update'").fetchone()[0] == 1
    assert 0 < left.execute("SELECT count(*) FROM decisions WHERE action = 'update'").fetchone()[0] < ROWS // 3
    left.close()
    if how == "cli":
        from conftest import run_cli
        monkeypatch.setenv("WORKBENCH_DB", str(db))
        code, _, err = run_cli("datasets")                  # any command
        assert code == 0, err
    else:                                                   # the TUI's store thread opening it
        from workbench.app import StoreRunner
        runner = StoreRunner(db)
        runner._call(lambda c: None, (), {})
        for c in runner._conns:
            c.close()
    conn = open_store(db)
    assert texts_and_scores(conn) == before
    assert conn.execute("SELECT count(*) FROM bulk_runs").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM bulk_run_scores").fetchone()[0] == 0
    res = shard_update.update_samples(conn, [f], "d", ["quality=0-1", "words=0-100"])     # and it goes through whole afterwards
    assert res.changed == ROWS // 3


def test_a_run_still_being_written_is_not_undone(tmp_path):
    db = tmp_path / "s.db"
    seed(db)
    conn = open_store(db)
    from workbench.runs import undo_run
    res = keep(conn, "d", kept_file(tmp_path, range(2, ROWS, 2)), "external dedup")
    before = statuses(conn)
    with transaction(conn):     # as a keep in progress in this (live) process marks its run
        conn.execute("INSERT INTO bulk_runs (kind, run, pid, started_at) VALUES ('keep', ?, ?, 'now')",
                     (res.run, os.getpid()))
    with pytest.raises(ValueError, match=f"{res.run} is still being written"):
        undo_run(conn, res.run)
    assert statuses(conn) == before
    with transaction(conn):
        conn.execute("DELETE FROM bulk_runs")
    assert undo_run(conn, res.run).reverted == res.rejected       # once finished: one step
