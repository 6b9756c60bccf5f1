"""Datasets as things one manages: rename, delete (with everything hanging off its samples), merge.

Each operation is one transaction and is recorded in the decisions log (sample_id 0: it concerns a dataset, not a
sample) with what it changed, so the history says where a dataset went.
"""
from __future__ import annotations

import sqlite3

import orjson

from .store import get_dataset, now, transaction

ACTIONS = ("dataset-rename", "dataset-delete", "dataset-merge")
ACTIVE_JOBS = ("queued", "running", "paused")


class DatasetError(ValueError):
    """The operation was refused; nothing changed."""


def _need(conn: sqlite3.Connection, name: str) -> tuple[int, str]:
    row = get_dataset(conn, name)
    if row is None:
        raise DatasetError(f"no dataset named {name!r}")
    return row[0], row[2]


def _check_name(name: str) -> None:
    if not name or not name.strip() or name != name.strip():
        raise DatasetError(f"{name!r} is not a usable dataset name (empty, or spaces at either end)")


def _no_active_jobs(conn: sqlite3.Connection, did: int, name: str) -> None:
    row = conn.execute(f"SELECT id, kind, status FROM jobs WHERE (dataset_id = ? OR into_dataset_id = ?) AND status "
                       f"IN ({','.join('?' * len(ACTIVE_JOBS))}) ORDER BY id LIMIT 1", (did, did, *ACTIVE_JOBS)).fetchone()
    if row:
        raise DatasetError(f"job {row[0]} ({row[1]}, {row[2]}) reads or writes dataset {name!r}; cancel it or let it "
                           "finish first")


def _log(conn: sqlite3.Connection, action: str, before: dict, after: dict, session: str) -> None:
    conn.execute("INSERT INTO decisions (sample_id, action, before, after, session, created_at) "
                 "VALUES (0, ?, ?, ?, ?, ?)",
                 (action, orjson.dumps(before).decode(), orjson.dumps(after).decode(), session, now()))


def _forget_positions(conn: sqlite3.Connection, did: int) -> None:
    conn.execute("DELETE FROM meta WHERE key = ?", (f"review.position.{did}",))


def counts(conn: sqlite3.Connection, name: str) -> dict:
    """What a delete would remove (for the confirmation question)."""
    did, _ = _need(conn, name)
    q = "SELECT count(*) FROM {} WHERE sample_id IN (SELECT id FROM samples WHERE dataset_id = ?)"
    return {"dataset": name, "samples": conn.execute("SELECT count(*) FROM samples WHERE dataset_id = ?",
                                                     (did,)).fetchone()[0],
            "decisions": conn.execute(q.format("decisions"), (did,)).fetchone()[0],
            "judgments": conn.execute(q.format("judgments"), (did,)).fetchone()[0],
            "candidates": conn.execute(q.format("candidates"), (did,)).fetchone()[0]}


def rename_dataset(conn: sqlite3.Connection, old: str, new: str, session: str) -> dict:
    _check_name(new)
    with transaction(conn):
        did, _ = _need(conn, old)
        if get_dataset(conn, new) is not None:
            raise DatasetError(f"a dataset named {new!r} already exists (merge them with `datasets merge`)")
        conn.execute("UPDATE datasets SET name = ? WHERE id = ?", (new, did))
        _log(conn, "dataset-rename", {"dataset": old, "id": did}, {"dataset": new, "id": did}, session)
    return {"id": did, "old": old, "new": new}


def delete_dataset(conn: sqlite3.Connection, name: str, session: str) -> dict:
    """The dataset, its samples, and their decisions, judgments, candidates, selections and search entries."""
    with transaction(conn):
        did, kind = _need(conn, name)
        _no_active_jobs(conn, did, name)
        gone = counts(conn, name)
        in_ds = "sample_id IN (SELECT id FROM samples WHERE dataset_id = ?)"
        for table in ("decisions", "judgments", "candidates", "selections"):
            conn.execute(f"DELETE FROM {table} WHERE {in_ds}", (did,))
        row = conn.execute("SELECT value FROM meta WHERE key = 'fts_upto'").fetchone()
        if row:   # the search index has external content: drop the indexed rows' entries by their old text
            conn.execute("INSERT INTO samples_fts (samples_fts, rowid, instruction, input, response) "
                         "SELECT 'delete', id, instruction, input, response FROM samples "
                         "WHERE dataset_id = ? AND id <= ?", (did, int(row[0])))
        conn.execute("DELETE FROM samples WHERE dataset_id = ?", (did,))
        # ids freed at the top are given out again by the next insert: the search index and the Balance counts must
        # take them as new rows (the delete trigger lowers stats_upto only while a counted row is the top one, and
        # nothing lowered fts_upto: search and Balance missed every reused id)
        conn.execute("UPDATE meta SET value = (SELECT coalesce(max(id), 0) FROM samples) WHERE key IN "
                     "('fts_upto', 'stats_upto') AND CAST(value AS INTEGER) > (SELECT coalesce(max(id), 0) "
                     "FROM samples)")
        # the dataset id is given out again too: its maintained counts (all 0 now) and rubrics go with it
        for table in ("sample_stats", "score_stats", "score_rubrics"):
            conn.execute(f"DELETE FROM {table} WHERE dataset_id = ?", (did,))
        conn.execute("DELETE FROM imports WHERE dataset_id = ?", (did,))
        conn.execute("DELETE FROM datasets WHERE id = ?", (did,))
        _forget_positions(conn, did)
        _log(conn, "dataset-delete", {**gone, "id": did, "kind": kind}, {}, session)
    return gone


def merge_datasets(conn: sqlite3.Connection, sources: list[str], into: str, session: str) -> dict:
    """The sources' samples (with their decisions, judgments and candidates, which follow the sample ids) move into
    `into`, created if new; the emptied sources are removed."""
    _check_name(into)
    if len(set(sources)) != len(sources) or len(sources) < 2:
        raise DatasetError("merge needs two or more different datasets")
    with transaction(conn):
        found = [(n, *_need(conn, n)) for n in sources]
        for n, did, _ in found:
            _no_active_jobs(conn, did, n)
        kinds = {k for _, _, k in found}
        target = get_dataset(conn, into)
        if target is None:
            tid = conn.execute("INSERT INTO datasets (name, kind, created_at) VALUES (?, ?, ?)",
                               (into, kinds.pop() if len(kinds) == 1 else "mixed", now())).lastrowid
        else:
            tid = target[0]
            if any(k != target[2] for k in kinds):
                conn.execute("UPDATE datasets SET kind = 'mixed' WHERE id = ?", (tid,))
        moved = 0
        for n, did, _ in found:
            if did == tid:
                continue
            moved += conn.execute("UPDATE samples SET dataset_id = ? WHERE dataset_id = ?", (tid, did)).rowcount
            conn.execute("UPDATE imports SET dataset_id = ? WHERE dataset_id = ?", (tid, did))
            # the triggers moved the counts; the rubrics scored in the source are now scored in the target
            conn.execute("INSERT INTO score_rubrics (dataset_id, rubric, scale_min, scale_max) "
                         "SELECT ?, rubric, scale_min, scale_max FROM score_rubrics WHERE dataset_id = ? AND true "
                         "ON CONFLICT DO UPDATE SET scale_min = min(scale_min, excluded.scale_min), "
                         "scale_max = max(scale_max, excluded.scale_max)", (tid, did))
            for table in ("sample_stats", "score_stats", "score_rubrics"):
                conn.execute(f"DELETE FROM {table} WHERE dataset_id = ?", (did,))
            conn.execute("DELETE FROM datasets WHERE id = ?", (did,))
            _forget_positions(conn, did)
        _log(conn, "dataset-merge", {"datasets": [{"dataset": n, "id": d} for n, d, _ in found]},
             {"dataset": into, "id": tid, "moved": moved}, session)
    return {"into": into, "id": tid, "sources": sources, "moved": moved}
