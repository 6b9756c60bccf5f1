"""The other bulk writers in short transactions (`clean --undo` of a run, `decide --ids-from`, `clean` filters, the
search index build, the Balance counts fold): a writer waiting for the lock gets in between their chunks (shown
with a writer that waits while the job runs, not with timings), a curator's decision made meanwhile stands, and a
failure or a kill -9 midway leaves the store as it was before the job."""
import sqlite3
from pathlib import Path

import pytest
from faults import fail_on_call, kill_midway

from test_bulk_lock import ROWS, _writer_between, kept_file, seed, statuses
from workbench import clean, decisions, runs, short_tx, stats
from workbench.clean import Hit, Preview, apply_filters
from workbench.keep import keep
from workbench.store import fts_sync, open_store


@pytest.fixture
def small_chunks(monkeypatch):
    """Commit after every chunk of 50: many chunk boundaries in a small job."""
    monkeypatch.setattr(short_tx, "LIMIT_S", 0.0)
    monkeypatch.setattr(runs, "UNDO_CHUNK", 50)
    monkeypatch.setattr(decisions, "DECIDE_CHUNK", 50)
    monkeypatch.setattr(clean, "APPLY_CHUNK", 50)


def bulk(conn, kind: str) -> int:
    return conn.execute("SELECT count(*) FROM bulk_runs WHERE kind = ?", (kind,)).fetchone()[0]


def undo_rows(conn) -> int:
    return conn.execute("SELECT count(*) FROM decisions WHERE action = 'undo'").fetchone()[0]


def kept_run(tmp_path, conn) -> str:
    """A filter run rejecting every odd sample of d (1, 3, ... 1999), as `keep` leaves it."""
    return keep(conn, "d", kept_file(tmp_path, range(2, ROWS + 1, 2)), "external dedup").run


# --- clean --undo RUN ---------------------------------------------------------------------------------------

def test_a_writer_gets_in_between_an_undos_chunks_and_its_decision_stands(tmp_path, small_chunks):
    db = tmp_path / "s.db"
    seed(db)
    conn = open_store(db)
    run = kept_run(tmp_path, conn)

    def check(w):          # the undo is under way (newest first) and has not reached sample 1, the run's first row
        status = w.execute("SELECT status FROM samples WHERE id = 1").fetchone()[0]
        w.execute("UPDATE samples SET status = 'accepted' WHERE id = 1")       # the curator accepts it
        w.execute("INSERT INTO decisions (sample_id, action, before, after, session, created_at) VALUES "
                  "(1, 'accept', '{\"status\":\"rejected\"}', '{\"status\":\"accepted\"}', 'review:c', 'now')")
        return bulk(w, "undo"), undo_rows(w) > 0, status

    t, out = _writer_between(db, lambda w: undo_rows(w) > 0, check)
    res = runs.undo_run(conn, run)
    t.join()
    assert "error" not in out, out
    assert out["seen"] == (1, True, "rejected")
    assert conn.execute("SELECT status FROM samples WHERE id = 1").fetchone()[0] == "accepted"
    assert res.changed_since == [1]
    assert res.reverted == ROWS // 2 - 1
    assert conn.execute("SELECT count(*) FROM samples WHERE status = 'rejected'").fetchone()[0] == 0
    assert bulk(conn, "undo") == 0


def test_an_undo_failing_midway_leaves_the_run_as_it_was(tmp_path, small_chunks, monkeypatch):
    db = tmp_path / "s.db"
    seed(db)
    conn = open_store(db)
    run = kept_run(tmp_path, conn)
    before = statuses(conn)
    real = runs.current_fields
    fail_on_call(monkeypatch, runs, "current_fields", 175)     # in the fourth chunk of 50
    with pytest.raises(sqlite3.OperationalError):
        runs.undo_run(conn, run)
    assert statuses(conn) == before
    assert undo_rows(conn) == 0 and bulk(conn, "undo") == 0
    monkeypatch.setattr(runs, "current_fields", real)
    assert runs.undo_run(conn, run).reverted == ROWS // 2          # and it goes through whole afterwards


CHILD = """
import sys
from workbench import decisions, runs, short_tx
from workbench.store import open_store
short_tx.LIMIT_S = 0.0
runs.UNDO_CHUNK = decisions.DECIDE_CHUNK = 50
conn = open_store(sys.argv[1])
if sys.argv[2] == "undo":
    runs.undo_run(conn, sys.argv[3])
else:
    decisions.decide_many(conn, list(range(1, int(sys.argv[3]) + 1)), "reject", "review:c")
"""


def _kill_midway(db: Path, job: str, arg: str, midway) -> None:
    kill_midway(db, CHILD, [job, arg], midway)


def test_an_undo_killed_midway_is_unwound_by_the_next_command(tmp_path, monkeypatch):
    db = tmp_path / "s.db"
    seed(db)
    conn = open_store(db)
    run = kept_run(tmp_path, conn)
    before = statuses(conn)
    conn.close()
    _kill_midway(db, "undo", run, lambda w: undo_rows(w) > 0)
    left = sqlite3.connect(db)
    assert 0 < undo_rows(left) < ROWS // 2 and bulk(left, "undo") == 1
    left.close()
    from conftest import run_cli
    monkeypatch.setenv("WORKBENCH_DB", str(db))
    code, _, err = run_cli("datasets")                  # any command
    assert code == 0, err
    conn = open_store(db)
    assert statuses(conn) == before
    assert undo_rows(conn) == 0 and bulk(conn, "undo") == 0
    assert runs.undo_run(conn, run).reverted == ROWS // 2


# --- decide --ids-from ----------------------------------------------------------------------------------------

def test_a_writer_gets_in_between_a_decides_chunks_and_its_decision_stands(tmp_path, small_chunks):
    db = tmp_path / "s.db"
    seed(db)
    conn = open_store(db)

    def check(w):          # the decide is under way and has not reached the last sample
        status = w.execute("SELECT status FROM samples WHERE id = ?", (ROWS,)).fetchone()[0]
        w.execute("UPDATE samples SET status = 'accepted' WHERE id = ?", (ROWS,))
        w.execute("INSERT INTO decisions (sample_id, action, before, after, session, created_at) VALUES "
                  "(?, 'accept', '{\"status\":\"pending\"}', '{\"status\":\"accepted\"}', 'review:other', 'now')",
                  (ROWS,))
        return bulk(w, "decide"), status

    t, out = _writer_between(db, lambda w: bulk(w, "decide") > 0, check)
    done = decisions.decide_many(conn, list(range(1, ROWS + 1)), "reject", "review:c")
    t.join()
    assert "error" not in out, out
    assert out["seen"] == (1, "pending")
    assert conn.execute("SELECT status FROM samples WHERE id = ?", (ROWS,)).fetchone()[0] == "accepted"
    assert len(done) == ROWS - 1 and ROWS not in {d["sample_id"] for d in done}
    assert conn.execute("SELECT count(*) FROM samples WHERE status = 'rejected'").fetchone()[0] == ROWS - 1
    assert bulk(conn, "decide") == 0


def test_a_decide_failing_midway_leaves_the_store_as_it_was(tmp_path, small_chunks, monkeypatch):
    db = tmp_path / "s.db"
    seed(db)
    conn = open_store(db)
    before = statuses(conn)
    fail_on_call(monkeypatch, decisions, "_decide", 175)
    with pytest.raises(sqlite3.OperationalError):
        decisions.decide_many(conn, list(range(1, ROWS + 1)), "reject", "review:c")
    assert statuses(conn) == before
    assert bulk(conn, "decide") == 0
    assert undo_rows(conn) == 150            # the three committed chunks, each decision undone as Review's u does
    assert decisions.last_undoable(conn, "review:c") is None


def test_a_decide_killed_midway_is_undone_by_the_next_open(tmp_path):
    db = tmp_path / "s.db"
    seed(db)
    conn = open_store(db)
    before = statuses(conn)
    conn.close()
    _kill_midway(db, "decide", str(ROWS), lambda w: bulk(w, "decide") > 0 and w.execute(
        "SELECT count(*) FROM samples WHERE status = 'rejected'").fetchone()[0] > 0)
    conn = open_store(db)
    assert statuses(conn) == before
    assert bulk(conn, "decide") == 0


# --- clean filters --------------------------------------------------------------------------------------------

def preview_all(conn) -> Preview:
    return Preview(["too_short"], hits=[Hit(i, "d", "too_short", "", "pending") for (i,) in conn.execute(
        "SELECT id FROM samples WHERE dataset_id = (SELECT id FROM datasets WHERE name = 'd') ORDER BY id")])


def test_a_writer_gets_in_between_a_filter_runs_chunks_and_its_decision_stands(tmp_path, small_chunks):
    db = tmp_path / "s.db"
    seed(db)
    conn = open_store(db)

    def check(w):
        status = w.execute("SELECT status FROM samples WHERE id = ?", (ROWS,)).fetchone()[0]
        w.execute("UPDATE samples SET status = 'accepted' WHERE id = ?", (ROWS,))
        return bulk(w, "filter"), status

    t, out = _writer_between(db, lambda w: bulk(w, "filter") > 0, check)
    res = apply_filters(conn, preview_all(conn))
    t.join()
    assert "error" not in out, out
    assert out["seen"] == (1, "pending")
    assert conn.execute("SELECT status FROM samples WHERE id = ?", (ROWS,)).fetchone()[0] == "accepted"
    assert (res.rejected, res.changed_since) == (ROWS - 1, 1)
    assert bulk(conn, "filter") == 0
    assert runs.undo_run(conn, res.run).reverted == ROWS - 1       # still one undoable step


def test_a_filter_run_failing_midway_leaves_the_store_as_it_was(tmp_path, small_chunks, monkeypatch):
    db = tmp_path / "s.db"
    seed(db)
    conn = open_store(db)
    before = statuses(conn)
    fail_on_call(monkeypatch, clean, "log_status_changes", 4)
    with pytest.raises(sqlite3.OperationalError):
        apply_filters(conn, preview_all(conn))
    assert statuses(conn) == before
    assert bulk(conn, "filter") == 0


# --- the search index build and the Balance counts fold -------------------------------------------------------

@pytest.mark.parametrize("what", ["index", "fold"])
def test_a_writer_gets_in_between_the_index_builds_and_the_folds_chunks(tmp_path, monkeypatch, what):
    monkeypatch.setattr(short_tx, "LIMIT_S", 0.0)
    db = tmp_path / "s.db"
    seed(db)
    conn = open_store(db)
    key = "fts_upto" if what == "index" else "stats_upto"

    def upto(w):
        row = w.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else 0

    start = upto(conn)
    assert start < ROWS        # the seed left rows to index and count

    def check(w):
        w.execute("UPDATE samples SET updated_at = 'writer' WHERE id = 1")
        return start < upto(w) < ROWS

    t, out = _writer_between(db, lambda w: upto(w) > start, check)
    n = fts_sync(conn, chunk=50) if what == "index" else stats.fold(conn, chunk=50)
    t.join()
    assert "error" not in out, out
    assert out["seen"] is True
    assert n == ROWS + 1 - start
    assert conn.execute("SELECT updated_at FROM samples WHERE id = 1").fetchone()[0] == "writer"
