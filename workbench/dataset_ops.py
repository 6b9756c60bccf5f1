"""Datasets as things one manages: rename, delete (with everything hanging off its samples), merge.

Rename is one transaction; delete and merge are short ones rolled forward through a marker (workbench/bulk_delete.py).
Each operation is recorded in the decisions log (sample_id 0: it concerns a dataset, not a sample) with what it
changed, so the history says where a dataset went.
"""
from __future__ import annotations

import logging
import sqlite3

import orjson

from . import bulk_delete
from .store import get_dataset, now, transaction

log = logging.getLogger(__name__)

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
        _not_held(conn, did, old)
        if conn.execute("SELECT 1 FROM bulk_runs WHERE kind = 'dataset-delete' AND run = ?", (new,)).fetchone():
            raise DatasetError(f"a dataset named {new!r} is still being deleted; try again once it has finished")
        conn.execute("UPDATE datasets SET name = ? WHERE id = ?", (new, did))
        _log(conn, "dataset-rename", {"dataset": old, "id": did}, {"dataset": new, "id": did}, session)
    return {"id": did, "old": old, "new": new}


def _not_held(conn: sqlite3.Connection, did: int, name: str) -> None:
    busy_with = bulk_delete.held(conn, did)
    if busy_with:
        raise DatasetError(f"dataset {name!r} is part of an unfinished {busy_with}; try again once it has finished")
    row = conn.execute("SELECT id FROM imports WHERE dataset_id = ? AND state = 'running' LIMIT 1", (did,)).fetchone()
    if row:
        raise DatasetError(f"an import into dataset {name!r} is running (import {row[0]}); try again once it has "
                           "finished")


def delete_dataset(conn: sqlite3.Connection, name: str, session: str) -> dict:
    """The dataset, its samples, and their decisions, judgments, candidates, selections and search entries.

    One short transaction takes the dataset out of sight (no list, view, export or count has it from then on; its
    name stays taken) and marks it; its rows then go in short transactions (workbench/bulk_delete.py), so other
    writers wait at most one of them. A delete killed midway is finished by the next open of the store."""
    with transaction(conn):
        did, kind = _need(conn, name)
        _no_active_jobs(conn, did, name)
        _not_held(conn, did, name)
        bulk = bulk_delete.begin_delete(conn, did, name, kind, session)
    return _finish(conn, bulk, bulk_delete.finish_delete)


def merge_datasets(conn: sqlite3.Connection, sources: list[str], into: str, session: str) -> dict:
    """The sources' samples (with their decisions, judgments and candidates, which follow the sample ids) move into
    `into`, created if new; the emptied sources are removed. In short transactions, rolled forward: a merge killed
    midway is finished by the next open of the store (workbench/bulk_delete.py)."""
    _check_name(into)
    if len(set(sources)) != len(sources) or len(sources) < 2:
        raise DatasetError("merge needs two or more different datasets")
    with transaction(conn):
        found = [(n, *_need(conn, n)) for n in sources]
        for n, did, _ in found:
            _no_active_jobs(conn, did, n)
            _not_held(conn, did, n)
        kinds = {k for _, _, k in found}
        target = get_dataset(conn, into)
        if target is None:
            tid = conn.execute("INSERT INTO datasets (name, kind, created_at) VALUES (?, ?, ?)",
                               (into, kinds.pop() if len(kinds) == 1 else "mixed", now())).lastrowid
        else:
            tid = target[0]
            _not_held(conn, tid, into)
            if any(k != target[2] for k in kinds):
                conn.execute("UPDATE datasets SET kind = 'mixed' WHERE id = ?", (tid,))
        bulk = bulk_delete.begin_merge(conn, [[n, d] for n, d, _ in found], into, tid, session)
    return _finish(conn, bulk, bulk_delete.finish_merge)


def _finish(conn: sqlite3.Connection, bulk: int, finish) -> dict:
    """Run the begun delete or merge to its end; one that fails (a full disk, Ctrl-C) is handed to the next open of
    the store, which finishes it (its marker no longer names this process, which may live on: the TUI)."""
    try:
        return finish(conn, bulk)
    except BaseException:
        try:
            with transaction(conn):
                conn.execute("UPDATE bulk_runs SET pid = NULL WHERE id = ?", (bulk,))
        except sqlite3.Error as e:     # the error being raised says more; this one is only logged
            log.warning("the unfinished dataset operation %s is finished once this process ends: %s", bulk, e)
        raise
