"""`dataset delete`, `dataset merge` and `clean --normalize --apply` in short transactions (workbench/bulk_delete.py,
clean.apply_normalize): another writer gets in between their chunks, a decision made meanwhile stands, a delete is
out of sight from its first commit (no list, view, export or count has it, its name and id stay taken), and one
killed with kill -9 or failing midway is finished (delete, merge) or taken back (normalize) by the next open of the
store - the CLI's and the TUI's. Afterwards the maintained counts (Balance's sample_stats, score_stats, the
datasets' status counts) equal a recount of the rows and the search index holds exactly the rows' text."""
import json
import sqlite3
import threading
from pathlib import Path

import pytest
from faults import fail_on_call, kill_midway, wait_for

from workbench import browse, bulk_delete, busy, clean, dedup, exporter, scores, short_tx, stats
from workbench.exporter import ExportFailed, export
from workbench.samples import insert_samples
from workbench.store import (STATS_DIMS, STATUSES, ensure_dataset, fts_sync, get_dataset, list_datasets, open_store,
                             stats_bucket_sql, status_counts, transaction)

ROWS = 600


def seed(db: Path) -> dict:
    """Dataset d (ROWS rows: decisions, judgments, candidates, a selection, scores; search index and Balance counts
    covering the first two thirds, the rest a tail) and two small ones, other and third."""
    conn = open_store(db)
    with transaction(conn):
        did = ensure_dataset(conn, "d")
        insert_samples(conn, did, [{"instruction": f"zebra question {i}", "response": f"answer {i}  with  spaces",
                                    "task_type": ["qa", "code", "math"][i % 3]} for i in range(ROWS * 2 // 3)])
        other = ensure_dataset(conn, "other")
        insert_samples(conn, other, [{"instruction": f"other question {i}", "response": "x"} for i in range(30)])
        third = ensure_dataset(conn, "third")
        insert_samples(conn, third, [{"instruction": f"third question {i}", "response": "y  y"} for i in range(20)])
    fts_sync(conn)
    stats.fold(conn)
    with transaction(conn):
        insert_samples(conn, did, [{"instruction": f"zebra question {i}", "response": f"answer {i}  with  spaces",
                                    "task_type": "qa"} for i in range(ROWS * 2 // 3, ROWS)])
        ids = [r[0] for r in conn.execute("SELECT id FROM samples ORDER BY id")]
        conn.executemany("UPDATE samples SET status = ? WHERE id = ?",
                         [(STATUSES[i % 3], i) for i in ids if i % 4 == 0])
        conn.executemany("INSERT INTO decisions (sample_id, action, before, after, session, created_at) VALUES "
                         "(?, 'accept', '{\"status\":\"pending\"}', '{\"status\":\"accepted\"}', 's', 'now')",
                         [(i,) for i in ids[::3]])
        conn.executemany("INSERT INTO judgments (sample_id, judge, rubric, rubric_version, overall, created_at) VALUES "
                         "(?, 'j', 'judge', 'v1', 5, 'now')", [(i,) for i in ids[::5]])
        conn.executemany("INSERT INTO candidates (sample_id, model, response, created_at) VALUES (?, 'm', 'c', 'now')",
                         [(i,) for i in ids[::7]])
        conn.executemany("INSERT INTO selections (name, sample_id) VALUES ('pick', ?)", [(i,) for i in ids[::2]])
        for i in ids[::2]:
            scores.record(conn, i, "judge", 1 + i % 10, (1, 10), judge="j")
    ids = {n: [r[0] for r in conn.execute("SELECT id FROM samples WHERE dataset_id = ? ORDER BY id",
                                            (get_dataset(conn, n)[0],))] for n in ("d", "other", "third")}
    conn.close()
    return ids


def exact(conn) -> None:
    """The maintained counts equal a recount of the rows; no row hangs off a missing sample; the search index
    holds exactly the rows' text (FTS5's integrity check compares it with the content table)."""
    stats.fold(conn)
    fts_sync(conn)
    upto = int(conn.execute("SELECT value FROM meta WHERE key = 'stats_upto'").fetchone()[0])
    want = set()
    for dim in STATS_DIMS:
        want |= {(d, s, dim, str(b), n) for d, s, b, n in conn.execute(
            f"SELECT dataset_id, status, {stats_bucket_sql(dim)}, count(*) FROM samples WHERE id <= ? GROUP BY 1, 2, 3",
            (upto,))}
    have = {(d, s, dim, str(b), n) for d, s, dim, b, n in conn.execute(
        "SELECT dataset_id, status, dim, bucket, n FROM sample_stats WHERE n != 0")}
    assert have == want
    assert set(conn.execute("SELECT dataset_id, status, rubric, bucket, n FROM score_stats WHERE n != 0")) == set(
        conn.execute("SELECT s.dataset_id, s.status, sc.rubric, CAST(sc.score AS INTEGER), count(*) FROM sample_scores "
                     "sc JOIN samples s ON s.id = sc.sample_id WHERE sc.stale = 0 GROUP BY 1, 2, 3, 4"))
    by = {}
    for did, status, n in conn.execute("SELECT dataset_id, status, count(*) FROM samples GROUP BY 1, 2"):
        by.setdefault(did, {})[status] = n
    assert status_counts(conn) == by
    for d in list_datasets(conn):
        assert d["rows"] == sum(by.get(d["id"], {}).values())
    for table in ("decisions", "judgments", "candidates", "selections", "sample_scores"):
        assert conn.execute(f"SELECT count(*) FROM {table} WHERE sample_id != 0 AND sample_id NOT IN "
                            "(SELECT id FROM samples)").fetchone()[0] == 0, table
    assert conn.execute("SELECT count(*) FROM samples WHERE dataset_id NOT IN (SELECT id FROM datasets)"
                        ).fetchone()[0] == 0
    conn.execute("INSERT INTO samples_fts (samples_fts, rank) VALUES ('integrity-check', 1)")
    fts = dict(conn.execute("SELECT k, v FROM samples_fts_config WHERE k IN ('automerge', 'crisismerge')"))
    assert fts.get("automerge") == 16 and fts.get("crisismerge", 16) == 16      # as the store had them
    assert conn.execute("SELECT count(*) FROM bulk_runs").fetchone()[0] == 0




@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(short_tx, "LIMIT_S", 0.0)
    monkeypatch.setattr(bulk_delete, "DELETE_CHUNK", 40)
    monkeypatch.setattr(bulk_delete, "MOVE_CHUNK", 40)
    monkeypatch.setattr(clean, "NORMALIZE_CHUNK", 40)


def _writer_between(db: Path, ready, check):
    """A thread: once `ready(conn)`, wait for the lock as any writer does (the job commits at its next chunk
    boundary) and run `check(conn)` holding it."""
    out = {}

    def run():
        conn = open_store(db, check_same_thread=False)
        try:
            wait_for(lambda: ready(conn))
            busy.begin(conn)
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


def marked(kind):
    return lambda w: w.execute("SELECT count(*) FROM bulk_runs WHERE kind = ?", (kind,)).fetchone()[0] > 0


def left_of(conn, did) -> int:
    return conn.execute("SELECT count(*) FROM samples WHERE dataset_id = ?", (did,)).fetchone()[0]


# --- delete ------------------------------------------------------------------------------------------------

def test_a_delete_is_out_of_sight_from_its_first_commit_and_a_writer_gets_in_between(tmp_path, small_chunks):
    db = tmp_path / "s.db"
    ids = seed(db)
    conn = open_store(db)
    did = get_dataset(conn, "d")[0]
    other = get_dataset(conn, "other")[0]
    out_all = tmp_path / "all.jsonl"

    def check(w):     # holding the lock midway: part of d's rows are still there, but nothing shows them
        seen = {"left": left_of(w, did), "names": [d["name"] for d in list_datasets(w)],
                "counts": status_counts(w), "browse_all": browse.count(w, browse.Filter()),
                "browse_rows": {r[0] for r in w.execute(
                    "SELECT id FROM samples WHERE " + browse.Filter().sql()[0])},
                "balance": sum(n for by in stats.read_counts(w).cells["task_type"].values() for n in by.values()),
                "dedup_scope": w.execute("SELECT count(*) FROM samples WHERE "
                                         + dedup.scope_where(None, STATUSES)[0],
                                         dedup.scope_where(None, STATUSES)[1]).fetchone()[0]}
        for sql in ("INSERT INTO datasets (name, created_at) VALUES ('d', 'now')",      # the name stays taken
                    f"INSERT INTO datasets (id, name, created_at) VALUES ({did}, 'new', 'now')"):   # and the id
            try:
                w.execute(sql)
                seen.setdefault("taken", []).append(False)
            except sqlite3.IntegrityError as e:
                seen.setdefault("taken", []).append("still being deleted" in str(e))
        w.execute("UPDATE samples SET status = 'accepted' WHERE id = ?", (ids["other"][0],))   # a decision
        return seen

    t, out = _writer_between(db, marked("dataset-delete"), check)
    from workbench.dataset_ops import counts, delete_dataset
    want = counts(conn, "d")
    gone = delete_dataset(conn, "d", "test")
    t.join()
    assert "error" not in out, out
    seen = out["seen"]
    visible = len(ids["other"]) + len(ids["third"])
    assert 0 < seen["left"] < ROWS
    assert seen["names"] == ["other", "third"]
    assert did not in seen["counts"]
    assert seen["browse_all"] == visible and seen["browse_rows"] == set(ids["other"]) | set(ids["third"])
    assert seen["balance"] == visible and seen["dedup_scope"] == visible
    assert seen["taken"] == [True, True]
    assert gone == want and want["samples"] == ROWS and min(want.values(), key=str) != 0
    assert conn.execute("SELECT status FROM samples WHERE id = ?", (ids["other"][0],)).fetchone()[0] == "accepted"
    log = conn.execute("SELECT before, session FROM decisions WHERE action = 'dataset-delete'").fetchall()
    assert len(log) == 1 and json.loads(log[0][0])["samples"] == ROWS and log[0][1] == "test"
    exact(conn)
    res = export(conn, out_all, "alpaca", status=list(STATUSES))
    assert res.rows == visible
    with transaction(conn):
        assert ensure_dataset(conn, "d") is not None         # the name is free again


def test_an_export_of_a_dataset_being_deleted_is_refused(tmp_path, small_chunks):
    db = tmp_path / "s.db"
    seed(db)
    conn = open_store(db)
    seen = {}

    def check(w):
        try:
            export(w, tmp_path / "d.jsonl", "alpaca", dataset="d")
            seen["d"] = "exported"
        except ExportFailed as e:
            seen["d"] = str(e)
        return True

    t, out = _writer_between(db, marked("dataset-delete"), check)
    from workbench.dataset_ops import delete_dataset
    delete_dataset(conn, "d", "test")
    t.join()
    assert "error" not in out, out
    assert seen["d"] == "no dataset named 'd'"
    assert not (tmp_path / "d.jsonl").exists()


@pytest.mark.parametrize("scope", ["d", None])
def test_an_export_under_way_when_a_delete_begins_has_all_of_the_dataset(tmp_path, monkeypatch, small_chunks, scope):
    """The export reads its rows in batches; a delete that begins and ends between two of them must not leave
    it with part of the dataset: it reads one snapshot, the whole dataset as it was."""
    db = tmp_path / "s.db"
    ids = seed(db)
    conn = open_store(db)
    real, gone = exporter.profile_and_spool, {}

    def spool_while_deleting(c, where, params, with_meta, spool, batch=2000):
        class Tap:          # the delete runs, whole, on another connection once the first batch is read
            def write(self, b):
                if not gone:
                    other = open_store(db)
                    from workbench.dataset_ops import delete_dataset
                    gone.update(delete_dataset(other, "d", "meanwhile"))
                    other.close()
                return spool.write(b)

            def __getattr__(self, name):
                return getattr(spool, name)
        return real(c, where, params, with_meta, Tap(), batch=50)

    monkeypatch.setattr(exporter, "profile_and_spool", spool_while_deleting)
    res = export(conn, tmp_path / "out.jsonl", "alpaca", dataset=scope, status=list(STATUSES), with_ids=True)
    assert gone["samples"] == ROWS
    got = sorted(json.loads(line)["sample_id"] for line in (tmp_path / "out.jsonl").read_text().splitlines())
    assert got == sorted(ids["d"] + ([] if scope else ids["other"] + ids["third"]))
    assert res.rows == len(got)
    monkeypatch.undo()
    with pytest.raises(ExportFailed, match="no dataset named 'd'"):      # and once it is gone
        export(conn, tmp_path / "again.jsonl", "alpaca", dataset="d")


CHILD = """
import sys
from workbench import bulk_delete, clean, short_tx
from workbench.store import open_store
short_tx.LIMIT_S = 0.0
bulk_delete.DELETE_CHUNK = bulk_delete.MOVE_CHUNK = clean.NORMALIZE_CHUNK = 20
conn = open_store(sys.argv[1])
if sys.argv[2] == "delete":
    from workbench.dataset_ops import delete_dataset
    delete_dataset(conn, "d", "killed")
elif sys.argv[2] == "merge":
    from workbench.dataset_ops import merge_datasets
    merge_datasets(conn, ["d", "other"], "merged", "killed")
else:
    clean.apply_normalize(conn, clean.preview_normalize(conn))
"""


def _kill_midway(db: Path, job: str, midway) -> None:
    kill_midway(db, CHILD, [job], midway)


def _reopen(db: Path, how: str):
    """The next open: a CLI command, the TUI's store thread, or a plain open_store (a worker)."""
    if how == "cli":
        from conftest import run_cli
        code, _, err = run_cli("datasets", "--db", str(db))
        assert code == 0, err
    elif how == "tui":
        from workbench.app import StoreRunner
        runner = StoreRunner(db)
        runner._call(lambda c: None, (), {})
        for c in runner._conns:
            c.close()
    return open_store(db)


@pytest.mark.parametrize("point", ["marked", "half"])
@pytest.mark.parametrize("how", ["cli", "tui", "open"])
def test_a_delete_killed_midway_is_finished_by_the_next_open(tmp_path, point, how):
    db = tmp_path / "s.db"
    ids = seed(db)
    did = sqlite3.connect(db).execute("SELECT id FROM datasets WHERE name = 'd'").fetchone()[0]
    midway = marked("dataset-delete") if point == "marked" else (
        lambda w: 0 < left_of(w, did) < ROWS // 2)
    _kill_midway(db, "delete", midway)
    left = sqlite3.connect(db)
    assert left.execute("SELECT count(*) FROM datasets WHERE name = 'd'").fetchone()[0] == 0   # out of sight
    assert 0 < left.execute("SELECT count(*) FROM samples WHERE dataset_id = ?", (did,)).fetchone()[0] <= ROWS
    left.close()
    conn = _reopen(db, how)
    assert left_of(conn, did) == 0
    assert sorted(r[0] for r in conn.execute("SELECT id FROM samples")) == sorted(ids["other"] + ids["third"])
    log = conn.execute("SELECT before FROM decisions WHERE action = 'dataset-delete'").fetchall()
    assert len(log) == 1 and json.loads(log[0][0])["samples"] == ROWS      # summed over both processes
    exact(conn)


def test_a_delete_failing_midway_is_handed_to_the_next_open(tmp_path, monkeypatch, small_chunks):
    db = tmp_path / "s.db"
    ids = seed(db)
    conn = open_store(db)
    did = get_dataset(conn, "d")[0]
    fail_on_call(monkeypatch, short_tx.ShortTransactions, "next", 4)
    from workbench.dataset_ops import delete_dataset
    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
        delete_dataset(conn, "d", "test")
    monkeypatch.undo()
    assert get_dataset(conn, "d") is None and 0 < left_of(conn, did) < ROWS
    assert conn.execute("SELECT pid FROM bulk_runs").fetchall() == [(None,)]      # no longer this live process's
    conn.close()
    conn = open_store(db)
    assert left_of(conn, did) == 0
    assert len(conn.execute("SELECT 1 FROM samples").fetchall()) == len(ids["other"]) + len(ids["third"])
    exact(conn)


def test_ids_freed_at_the_top_during_a_delete_are_taken_as_new(tmp_path, small_chunks):
    """A delete of the dataset holding the top ids: an import between two chunks is given freed ids; search and
    Balance must take them as new rows (the watermarks go down in the chunk that frees them)."""
    db = tmp_path / "s.db"
    conn = open_store(db)
    with transaction(conn):
        kept = ensure_dataset(conn, "kept")
        insert_samples(conn, kept, [{"instruction": f"kept {i}", "response": "k"} for i in range(10)])
        new = ensure_dataset(conn, "new")
        d = ensure_dataset(conn, "d")
        insert_samples(conn, d, [{"instruction": f"doomed {i}", "response": "z"} for i in range(300)])
    fts_sync(conn)
    stats.fold(conn)
    top = conn.execute("SELECT max(id) FROM samples").fetchone()[0]

    def check(w):   # an import into another dataset once the top rows are gone
        insert_samples(w, new, [{"instruction": f"fresh {i}", "response": "n"} for i in range(5)])
        return [r[0] for r in w.execute("SELECT id FROM samples WHERE dataset_id = ?", (new,))]

    t, out = _writer_between(db, lambda w: w.execute("SELECT max(id) FROM samples").fetchone()[0] < top, check)
    from workbench.dataset_ops import delete_dataset
    delete_dataset(conn, "d", "test")
    t.join()
    assert "error" not in out, out
    assert max(out["seen"]) < top                   # ids d had, indexed and counted before
    exact(conn)
    assert browse.count(conn, browse.Filter(search="fresh")) == 5
    assert browse.count(conn, browse.Filter(dataset_id=new)) == 5


# --- merge -------------------------------------------------------------------------------------------------

def test_a_merge_moves_in_chunks_and_a_decision_made_meanwhile_stands(tmp_path, small_chunks):
    db = tmp_path / "s.db"
    ids = seed(db)
    conn = open_store(db)
    did = get_dataset(conn, "d")[0]
    late = ids["d"][-1]

    def check(w):     # midway: each sample is in exactly one of the two, and its counts with it
        w.execute("UPDATE samples SET status = 'rejected' WHERE id = ?", (late,))   # a curator's decision
        return left_of(w, did), sum(sum(by.values()) for by in status_counts(w).values())

    t, out = _writer_between(db, lambda w: marked("dataset-merge")(w) and left_of(w, did) < ROWS, check)
    from workbench.dataset_ops import merge_datasets
    res = merge_datasets(conn, ["d", "other"], "merged", "test")
    t.join()
    assert "error" not in out, out
    left, total = out["seen"]
    assert 0 < left < ROWS and total == ROWS + len(ids["other"]) + len(ids["third"])
    assert res["moved"] == ROWS + len(ids["other"])
    assert [d["name"] for d in list_datasets(conn)] == ["third", "merged"]
    assert conn.execute("SELECT status FROM samples WHERE id = ?", (late,)).fetchone()[0] == "rejected"
    assert len(conn.execute("SELECT 1 FROM decisions WHERE action = 'dataset-merge'").fetchall()) == 1
    exact(conn)


@pytest.mark.parametrize("how", ["cli", "tui"])
def test_a_merge_killed_midway_is_finished_by_the_next_open(tmp_path, how):
    db = tmp_path / "s.db"
    ids = seed(db)
    did = sqlite3.connect(db).execute("SELECT id FROM datasets WHERE name = 'd'").fetchone()[0]
    _kill_midway(db, "merge", lambda w: marked("dataset-merge")(w) and 0 < left_of(w, did) < ROWS)
    conn = _reopen(db, how)
    assert [d["name"] for d in list_datasets(conn)] == ["third", "merged"]
    merged = get_dataset(conn, "merged")[0]
    assert sorted(r[0] for r in conn.execute("SELECT id FROM samples WHERE dataset_id = ?", (merged,))) == sorted(
        ids["d"] + ids["other"])
    log = conn.execute("SELECT after FROM decisions WHERE action = 'dataset-merge'").fetchall()
    assert len(log) == 1 and json.loads(log[0][0])["moved"] == ROWS + len(ids["other"])
    exact(conn)


# --- normalize ---------------------------------------------------------------------------------------------

def texts(conn):
    return conn.execute("SELECT id, instruction, response, content_hash FROM samples ORDER BY id").fetchall()


def test_normalize_in_chunks_a_curators_edit_meanwhile_stands(tmp_path, small_chunks):
    db = tmp_path / "s.db"
    ids = seed(db)
    conn = open_store(db)
    preview = clean.preview_normalize(conn)
    assert preview.total > 100
    last = preview.changes[-1][0]

    def check(w):     # midway: the curator edits a row the run has not reached yet
        w.execute("UPDATE samples SET response = 'curator text' WHERE id = ?", (last,))
        return w.execute("SELECT count(*) FROM decisions WHERE action = 'normalize'").fetchone()[0]

    t, out = _writer_between(db, marked("normalize"), check)
    res = clean.apply_normalize(conn, preview)
    t.join()
    assert "error" not in out, out
    assert 0 < out["seen"] < preview.total
    assert res.rejected == preview.total - 1 and res.changed_since == 1
    assert conn.execute("SELECT response FROM samples WHERE id = ?", (last,)).fetchone()[0] == "curator text"
    assert "  " not in conn.execute("SELECT response FROM samples WHERE id = ?", (ids["d"][0],)).fetchone()[0]
    assert clean.undo_run(conn, res.run).reverted == res.rejected      # still one undoable step
    exact(conn)


def test_normalize_failing_midway_is_taken_back_whole(tmp_path, monkeypatch, small_chunks):
    db = tmp_path / "s.db"
    seed(db)
    conn = open_store(db)
    before = texts(conn)
    preview = clean.preview_normalize(conn)
    fail_on_call(monkeypatch, short_tx.ShortTransactions, "next", 3)
    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
        clean.apply_normalize(conn, preview)
    monkeypatch.undo()
    assert texts(conn) == before
    n = conn.execute("SELECT count(*) FROM decisions WHERE action = 'normalize'").fetchone()[0]
    assert n > 0 and conn.execute("SELECT count(*) FROM decisions WHERE action = 'undo'").fetchone()[0] == n
    exact(conn)


@pytest.mark.parametrize("how", ["cli", "tui"])
def test_normalize_killed_midway_is_taken_back_by_the_next_open(tmp_path, how):
    db = tmp_path / "s.db"
    seed(db)
    conn = open_store(db)
    before = texts(conn)
    conn.close()
    _kill_midway(db, "normalize", lambda w: w.execute("SELECT count(*) FROM decisions WHERE action = 'normalize'"
                                                      ).fetchone()[0] > 0)
    left = sqlite3.connect(db)
    assert left.execute("SELECT count(*) FROM bulk_runs WHERE kind = 'normalize'").fetchone()[0] == 1
    assert texts(left) != before
    left.close()
    conn = _reopen(db, how)
    assert texts(conn) == before
    exact(conn)
