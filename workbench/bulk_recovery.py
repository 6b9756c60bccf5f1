"""Finishing off long writers that died (kill -9, power loss) midway through their short transactions.

An export writes its snapshot_items under a snapshot id reserved in `snapshot_writes` before the short transaction
that publishes the snapshots row: until then the items belong to no snapshot and nothing reads them. A keep applies
its rejections in chunks while `bulk_runs` holds its run id. The next `open_store` (any command) finds the rows
whose process has ended and undoes what they wrote, in short transactions of its own (an interruption is carried
on by the open after it):
  - an unpublished export: its snapshot_items, its temp file or directory, the reservation;
  - an unfinished keep: every rejection it made that is still as it left it is reverted with an 'undo' decision of
    the same run (as `clean --undo` does; a decision a curator made since is left alone), then the marker goes.
  - an unfinished `dataset delete` or `dataset merge` is finished (rolled forward; workbench/bulk_delete.py).
An unfinished shard import rewrote texts, which only samples.py can undo (it imports the store: this module may
not), so shard_update.recover undoes it: called by every open of the CLI and the TUI (workbench/recovery.py)
and by the next shard import.
The store is then as it was before the job, and the run log says a run was started and undone.
"""
from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import time
from pathlib import Path

import orjson

from . import bulk_delete, fts_quiet
from .import_recovery import _alive as alive
from .short_tx import ShortTransactions

log = logging.getLogger(__name__)

CHUNK = 5_000          # rows per statement inside a short transaction
TEMP_PREFIX = ".wb-tmp-"   # safe_output.TEMP_PREFIX: only such names are ever removed


def _now() -> str:     # store.now (store imports this module)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z"


def recover(conn: sqlite3.Connection) -> None:
    """On open: undo the exports and keeps whose process has ended, finish the dataset deletes and merges."""
    try:
        snaps = conn.execute("SELECT snapshot_id, pid FROM snapshot_writes").fetchall()
        runs = conn.execute("SELECT id, run, pid, kind FROM bulk_runs WHERE kind IN ('keep', 'filter', 'dedup', "
                            "'decide', 'dataset-delete', 'dataset-merge')").fetchall()
    except sqlite3.OperationalError:     # a store from before the migration (a read-only open of an old store)
        return
    try:
        for snap, pid in snaps:
            if not alive(pid) and claim(conn, "snapshot_writes", "snapshot_id", snap, pid):
                log.warning("removing the unpublished export snapshot %s: its process (%s) ended", snap, pid)
                discard_snapshot(conn, snap)
        for bulk_id, run, pid, kind in runs:
            if not alive(pid) and claim(conn, "bulk_runs", "id", bulk_id, pid):
                if kind in ("dataset-delete", "dataset-merge"):   # rolled forward: begun is as good as done
                    log.warning("finishing the %s of %r: its process (%s) ended before it completed", kind, run, pid)
                    bulk_delete.finish(conn, bulk_id, kind)
                elif kind == "decide":
                    log.warning("undoing an unfinished `decide`: its process (%s) ended before it completed", pid)
                    roll_back_decided(conn, bulk_id)
                else:
                    log.warning("undoing run %s: its process (%s) ended before it completed", run, pid)
                    roll_back_run(conn, run)
        if conn.execute("SELECT 1 FROM meta WHERE key = 'fts_saved'").fetchone():
            with ShortTransactions(conn):      # a writer killed while it held the search index's merging off
                fts_quiet.restore_abandoned(conn)
    except sqlite3.OperationalError as e:   # a read-only store, a full disk: the next writable open does it
        log.warning("cannot undo an unfinished export or keep yet: %s", e)


def claim(conn, table: str, key: str, value, pid) -> bool:
    """Take the row over (two processes opening at once must not both undo it)."""
    with ShortTransactions(conn):
        return conn.execute(f"UPDATE {table} SET pid = ? WHERE {key} = ? AND pid IS ?",
                            (os.getpid(), value, pid)).rowcount == 1


# --- exports ---------------------------------------------------------------------------------------------

def discard_snapshot(conn: sqlite3.Connection, snap: int) -> None:
    """Remove an unpublished snapshot's items, temp file and reservation (outside any transaction)."""
    row = conn.execute("SELECT temp FROM snapshot_writes WHERE snapshot_id = ?", (snap,)).fetchone()
    temp = row[0] if row else None
    if temp and Path(temp).name.startswith(TEMP_PREFIX):
        p = Path(temp)
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.exists() or p.is_symlink():
                p.unlink()
        except OSError as e:
            log.warning("cannot remove %s: %s", p, e)
    with ShortTransactions(conn) as tx:
        while conn.execute("DELETE FROM snapshot_items WHERE snapshot_id = ? AND sample_id IN (SELECT sample_id "
                           "FROM snapshot_items WHERE snapshot_id = ? LIMIT ?)", (snap, snap, CHUNK)).rowcount:
            tx.next()
        # a published snapshot's items are never touched: the reservation is gone once it is published
        conn.execute("DELETE FROM snapshot_writes WHERE snapshot_id = ?", (snap,))


# --- keeps -----------------------------------------------------------------------------------------------

def roll_back_run(conn: sqlite3.Connection, run: str) -> int:
    """Revert an unfinished run's status changes still as it left them (outside any transaction). Returns how
    many were reverted."""
    reverted, last = 0, 0
    with ShortTransactions(conn) as tx:
        undone = {r[0] for r in conn.execute("SELECT undoes FROM decisions WHERE session = ? AND action = 'undo'",
                                             (run,))}
        while True:
            rows = conn.execute(
                "SELECT d.id, d.sample_id, d.before, d.after, s.status FROM decisions d JOIN samples s ON "
                "s.id = d.sample_id WHERE d.session = ? AND d.action IN ('filter', 'dedup') AND d.id > ? ORDER BY "
                "d.id LIMIT ?", (run, last, CHUNK)).fetchall()
            if not rows:
                break
            ts, logs = _now(), []
            for did, sid, before, after, status in rows:
                if did in undone:
                    continue
                old = _status(before)
                new = _status(after)
                if old is None or new is None or status != new:
                    continue       # a curator changed it since: theirs stays
                conn.execute("UPDATE samples SET status = ?, updated_at = ? WHERE id = ?", (old, ts, sid))
                logs.append((sid, after, before, did, run, ts))
            conn.executemany("INSERT INTO decisions (sample_id, action, before, after, undoes, session, created_at) "
                             "VALUES (?, 'undo', ?, ?, ?, ?, ?)", logs)
            reverted += len(logs)
            last = rows[-1][0]
            tx.next()
        conn.execute("DELETE FROM bulk_runs WHERE run = ?", (run,))
    return reverted


# --- decide --ids-from ------------------------------------------------------------------------------------

def note_range(conn: sqlite3.Connection, bulk: int, ranges: list, lo: int, hi: int) -> None:
    """Inside a transaction: add the ids lo..hi of the decisions a chunked job just wrote to its marker."""
    if ranges and ranges[-1][1] == lo - 1:
        ranges[-1][1] = hi
    else:
        ranges.append([lo, hi])
    conn.execute("UPDATE bulk_runs SET info = ? WHERE id = ?", (orjson.dumps({"ranges": ranges}).decode(), bulk))


def marked_ranges(conn: sqlite3.Connection, bulk: int) -> list | None:
    """The decision id ranges the marker of `bulk` lists (None when the marker is gone)."""
    row = conn.execute("SELECT info FROM bulk_runs WHERE id = ?", (bulk,)).fetchone()
    return None if row is None else orjson.loads(row[0] or '{"ranges": []}').get("ranges", [])


def range_chunks(conn: sqlite3.Connection, ranges: list, sql: str, chunk: int):
    """The rows `sql` selects for each id range (its two `?`: the first and last id), `chunk` ids at a time."""
    for lo, hi in ranges:
        for at in range(lo, hi + 1, chunk):
            yield conn.execute(sql, (at, min(hi, at + chunk - 1))).fetchall()


def claim_dead(conn: sqlite3.Connection, kind: str) -> list[int]:
    """The bulk runs of `kind` whose process has ended, each taken over by this one (none on a store from before
    the migration, opened read-only)."""
    try:
        rows = conn.execute("SELECT id, pid FROM bulk_runs WHERE kind = ?", (kind,)).fetchall()
    except sqlite3.OperationalError:
        return []
    return [bulk for bulk, pid in rows if not alive(pid) and claim(conn, "bulk_runs", "id", bulk, pid)]


def roll_back_decided(conn: sqlite3.Connection, bulk: int) -> int:
    """Revert an unfinished `decide` (outside any transaction, in short ones): each decision it wrote (the id
    ranges its marker lists) whose sample still has the status it set gets an 'undo' decision of the same session,
    as Review's u writes, and its status back; a sample a curator changed since keeps theirs. Returns how many."""
    ranges = marked_ranges(conn, bulk)
    if ranges is None:
        return 0
    reverted = 0
    with ShortTransactions(conn) as tx:
        for rows in range_chunks(conn, ranges, (
                "SELECT d.id, d.sample_id, d.before, d.after, d.session, s.status FROM decisions d JOIN samples s "
                "ON s.id = d.sample_id WHERE d.id BETWEEN ? AND ? AND d.action IN ('accept', 'reject', 'reset', "
                "'skip') ORDER BY d.id"), CHUNK):
            ts, logs = _now(), []
            for did, sid, before, after, session, status in rows:
                old, new = _status(before), _status(after)
                if old is None or new is None or status != new:
                    continue       # a curator changed it since: theirs stays
                if old != new:
                    conn.execute("UPDATE samples SET status = ?, updated_at = ? WHERE id = ?", (old, ts, sid))
                logs.append((sid, after, before, did, session, ts))
            conn.executemany("INSERT INTO decisions (sample_id, action, before, after, undoes, session, "
                             "created_at) VALUES (?, 'undo', ?, ?, ?, ?, ?)", logs)
            reverted += len(logs)
            tx.next()
        conn.execute("DELETE FROM bulk_runs WHERE id = ?", (bulk,))
    return reverted


def _status(text):
    try:
        value = orjson.loads(text)
    except (orjson.JSONDecodeError, TypeError):
        return None
    return value.get("status") if isinstance(value, dict) and set(value) == {"status"} else None
