"""`dataset delete` and `dataset merge` in short write transactions (workbench/short_tx.py), rolled forward through a
`bulk_runs` marker: once begun they are always finished, by their own process or, after a kill -9, by the next
open of the store (bulk_recovery.recover, run by every open_store: CLI, TUI, workers).

Delete: its first short transaction (begin_delete, in workbench/dataset_ops.py) removes the datasets row, the
dataset's maintained counts and rubrics, its imports and Review position, and writes a 'dataset-delete' marker (run:
the name, info: the id). From that commit the dataset is in no list, view, export or count, its name and id stay
taken (triggers of migration 17) and its samples belong to no dataset. finish_delete then removes them in chunks -
each chunk's decisions, judgments, candidates, selections, search entries, scores and rows - lowering the search
and Balance watermarks in the same transaction (an id freed at the top can be given out again at once), and last
logs the 'dataset-delete' decision and drops the marker. A sample with no dataset row costs no count upkeep
(migration 17), which with the chunking makes the delete ~2x faster than the one transaction it was.

Merge: the sources' samples move to the target in chunks (the per-row triggers move their counts, so every commit
leaves each sample and its counts in exactly one dataset), then the emptied sources go. Rows are never lost or
doubled; in the meantime sources and target show the rows each holds. A decision made meanwhile stands: a move
only changes dataset_id.

This module may not import workbench/store.py (store imports bulk_recovery, which imports this).
"""
from __future__ import annotations

import os
import sqlite3
import time

import orjson

from . import fts_quiet
from .short_tx import ShortTransactions, roomy_wal

DELETE_CHUNK = 200     # samples a delete removes per chunk (~35 us each with their search entries: ~7 ms)

MOVE_CHUNK = 250       # samples a merge moves per chunk (~100 us each: the count triggers on dataset_id)
COUNTED = ("samples", "decisions", "judgments", "candidates")


def _now() -> str:     # store.now
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z"


def _json(obj) -> str:
    return orjson.dumps(obj).decode()


def _log(conn, action: str, before: dict, after: dict, session: str) -> None:
    conn.execute("INSERT INTO decisions (sample_id, action, before, after, session, created_at) "
                 "VALUES (0, ?, ?, ?, ?, ?)", (action, _json(before), _json(after), session, _now()))


def forget_counts(conn, did: int) -> None:
    """Inside a transaction: the dataset's maintained counts and rubrics (its id may be given out again)."""
    for table in ("sample_stats", "score_stats", "score_rubrics"):
        conn.execute(f"DELETE FROM {table} WHERE dataset_id = ?", (did,))
    conn.execute("DELETE FROM meta WHERE key = ?", (f"review.position.{did}",))


def held(conn, did: int) -> str | None:
    """The unfinished delete or merge that holds dataset `did` (None if none does)."""
    for kind, run, info in conn.execute("SELECT kind, run, info FROM bulk_runs WHERE kind IN ('dataset-delete', "
                                        "'dataset-merge')"):
        i = orjson.loads(info or "{}")
        if i.get("id") == did or i.get("target") == did or did in [s for _, s in i.get("sources", [])]:
            return f"{kind.split('-')[1]} of {run!r}"
    return None


# --- delete ----------------------------------------------------------------------------------------------

def begin_delete(conn, did: int, name: str, kind: str, session: str) -> int:
    """Inside a transaction: take the dataset out of sight and mark its rows for deletion. Returns the marker."""
    bulk = conn.execute("INSERT INTO bulk_runs (kind, run, pid, info, started_at) VALUES ('dataset-delete', ?, ?, ?, "
                        "?)", (name, os.getpid(), _json({"id": did, "kind": kind, "session": session,
                                                         "gone": dict.fromkeys(COUNTED, 0)}), _now())).lastrowid
    forget_counts(conn, did)
    conn.execute("DELETE FROM imports WHERE dataset_id = ?", (did,))
    conn.execute("DELETE FROM datasets WHERE id = ?", (did,))
    return bulk


def finish_delete(conn, bulk: int) -> dict:
    """Outside any transaction: remove the marked dataset's rows in short transactions, then the marker. Returns
    what went {dataset, samples, decisions, judgments, candidates} (summed over every process that worked on it)."""
    name, info = conn.execute("SELECT run, info FROM bulk_runs WHERE id = ?", (bulk,)).fetchone()
    info = orjson.loads(info)
    did, gone = info["id"], info["gone"]
    in_chunk = "sample_id IN (SELECT id FROM samples WHERE dataset_id = ? AND id BETWEEN ? AND ?)"
    with roomy_wal(conn):
        return _delete_rows(conn, bulk, name, info, did, gone, in_chunk)


def _delete_rows(conn, bulk: int, name: str, info: dict, did: int, gone: dict, in_chunk: str) -> dict:
    with ShortTransactions(conn) as tx:
        fts_quiet.hold(conn, bulk)     # FTS5's own merges took seconds inside one chunk
        info["fts"] = 1
        while True:
            ids = conn.execute("SELECT id FROM samples WHERE dataset_id = ? ORDER BY id LIMIT ?",
                               (did, DELETE_CHUNK)).fetchall()
            if not ids:
                break
            lo, hi = ids[0][0], ids[-1][0]
            for table in ("decisions", "judgments", "candidates"):
                gone[table] += conn.execute(f"DELETE FROM {table} WHERE {in_chunk}", (did, lo, hi)).rowcount
            conn.execute(f"DELETE FROM selections WHERE {in_chunk}", (did, lo, hi))
            row = conn.execute("SELECT value FROM meta WHERE key = 'fts_upto'").fetchone()
            if row and int(row[0]) >= lo:   # external content: an indexed row's entries go by its text
                conn.execute("INSERT INTO samples_fts (samples_fts, rowid, instruction, input, response) "
                             "SELECT 'delete', id, instruction, input, response FROM samples "
                             "WHERE dataset_id = ? AND id BETWEEN ? AND ?", (did, lo, min(hi, int(row[0]))))
                fts_quiet.merge_a_little(conn)
            conn.execute(f"DELETE FROM sample_scores WHERE {in_chunk}", (did, lo, hi))
            gone["samples"] += conn.execute("DELETE FROM samples WHERE dataset_id = ? AND id BETWEEN ? AND ?",
                                            (did, lo, hi)).rowcount
            # ids freed at the top are given out again by the next insert (perhaps before this delete ends): the
            # search index and the Balance counts must take them as new rows
            conn.execute("UPDATE meta SET value = (SELECT coalesce(max(id), 0) FROM samples) WHERE key IN "
                         "('fts_upto', 'stats_upto') AND CAST(value AS INTEGER) > (SELECT coalesce(max(id), 0) "
                         "FROM samples)")
            conn.execute("UPDATE bulk_runs SET info = ? WHERE id = ?", (_json({**info, "gone": gone}), bulk))
            tx.next()
        fts_quiet.release(conn, bulk)
        forget_counts(conn, did)     # what a fold or a decision on a row not yet deleted counted meanwhile
        _log(conn, "dataset-delete", {"dataset": name, **gone, "id": did, "kind": info["kind"]}, {},
             info["session"])
        conn.execute("DELETE FROM bulk_runs WHERE id = ?", (bulk,))
    return {"dataset": name, **gone}


# --- merge -----------------------------------------------------------------------------------------------

def begin_merge(conn, sources: list[tuple[str, int]], into: str, tid: int, session: str) -> int:
    """Inside a transaction: mark the move of the sources' samples into `tid`. Returns the marker."""
    return conn.execute("INSERT INTO bulk_runs (kind, run, pid, info, started_at) VALUES ('dataset-merge', ?, ?, ?, "
                        "?)", (into, os.getpid(), _json({"target": tid, "sources": sources, "session": session,
                                                         "moved": 0}), _now())).lastrowid


def finish_merge(conn, bulk: int) -> dict:
    """Outside any transaction: move the marked sources' samples in short transactions, then remove the emptied
    sources and the marker. Returns {into, id, sources, moved}."""
    into, info = conn.execute("SELECT run, info FROM bulk_runs WHERE id = ?", (bulk,)).fetchone()
    info = orjson.loads(info)
    tid, moved = info["target"], info["moved"]
    with roomy_wal(conn), ShortTransactions(conn) as tx:
        for _, did in info["sources"]:
            if did == tid:
                continue
            while True:
                n = conn.execute("UPDATE samples SET dataset_id = ? WHERE id IN (SELECT id FROM samples WHERE "
                                 "dataset_id = ? ORDER BY id LIMIT ?)", (tid, did, MOVE_CHUNK)).rowcount
                if not n:
                    break
                moved += n
                conn.execute("UPDATE bulk_runs SET info = ? WHERE id = ?", (_json({**info, "moved": moved}), bulk))
                tx.next()
            # emptied: the source goes in the transaction that found it empty
            conn.execute("UPDATE imports SET dataset_id = ? WHERE dataset_id = ?", (tid, did))
            # the triggers moved the counts; the rubrics scored in the source are now scored in the target
            conn.execute("INSERT INTO score_rubrics (dataset_id, rubric, scale_min, scale_max) "
                         "SELECT ?, rubric, scale_min, scale_max FROM score_rubrics WHERE dataset_id = ? AND true "
                         "ON CONFLICT DO UPDATE SET scale_min = min(scale_min, excluded.scale_min), "
                         "scale_max = max(scale_max, excluded.scale_max)", (tid, did))
            forget_counts(conn, did)
            conn.execute("DELETE FROM datasets WHERE id = ?", (did,))
        _log(conn, "dataset-merge", {"datasets": [{"dataset": n, "id": d} for n, d in info["sources"]]},
             {"dataset": into, "id": tid, "moved": moved}, info["session"])
        conn.execute("DELETE FROM bulk_runs WHERE id = ?", (bulk,))
    return {"into": into, "id": tid, "sources": [n for n, _ in info["sources"]], "moved": moved}


def finish(conn: sqlite3.Connection, bulk: int, kind: str) -> dict:
    return finish_delete(conn, bulk) if kind == "dataset-delete" else finish_merge(conn, bulk)
