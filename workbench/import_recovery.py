"""Removing an import that did not finish: its rows, what hangs off them, its imports row, the dataset it created.

An import commits in many short transactions (so other writers never wait long behind it); until its last commit
its imports row says state = 'running' with the importing process's id. A refused import removes its own rows
before it reports the refusal; an import whose process died (kill -9, power loss) is removed by the next
`open_store` (any command), so no half dataset stays in the store looking complete. The removal runs in short
transactions too and can itself be interrupted: the next open carries it on.

Imported rows have ids >= the import's first_id (other writers' rows may be interleaved; they are left alone).
"""
from __future__ import annotations

import logging
import os
import sqlite3

from . import busy

log = logging.getLogger(__name__)

CHUNK = 2_000          # rows removed per transaction (~tens of ms)


def _alive(pid: int | None) -> bool:
    """Whether the process is running (the store is local to one machine: WAL needs shared memory)."""
    if not pid:
        return False
    if pid == os.getpid():
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")          # a zombie has ended: nothing will finish its import
    except FileNotFoundError:
        return False
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _tx(conn: sqlite3.Connection):
    class _T:
        def __enter__(self):
            busy.begin(conn)

        def __exit__(self, exc_type, exc, tb):
            conn.execute("ROLLBACK" if exc_type else "COMMIT")
            return False
    return _T()


def remove_abandoned(conn: sqlite3.Connection) -> int:
    """On open: remove the unfinished imports whose process has died. Returns how many were removed."""
    try:
        rows = conn.execute("SELECT id, pid FROM imports WHERE state IS NOT NULL ORDER BY id DESC").fetchall()
    except sqlite3.OperationalError:     # a store from before the migration (read-only open of an old store)
        return 0
    done = 0
    for import_id, pid in rows:
        if _alive(pid):
            continue
        try:
            with _tx(conn):   # claim it, so two processes opening at once do not both remove it
                claimed = conn.execute("UPDATE imports SET state = 'removing', pid = ? WHERE id = ? AND pid IS ?",
                                       (os.getpid(), import_id, pid)).rowcount
            if claimed:
                log.warning("removing import %s: its process (%s) ended before the import completed", import_id, pid)
                discard(conn, import_id)
                done += 1
        except sqlite3.OperationalError as e:   # a read-only store, a full disk: the next writable open removes it
            log.warning("cannot remove unfinished import %s yet: %s", import_id, e)
            break
    return done


def discard(conn: sqlite3.Connection, import_id: int) -> None:
    """Remove one unfinished import (outside any transaction; many short ones)."""
    row = conn.execute("SELECT dataset_id, first_id, made_dataset FROM imports WHERE id = ?", (import_id,)).fetchone()
    if row is None:
        return
    did, first_id, made_dataset = row
    first_id = first_id or 0
    while True:
        with _tx(conn):
            ids = [r[0] for r in conn.execute("SELECT id FROM samples WHERE id >= ? AND import_id = ? ORDER BY id "
                                              "LIMIT ?", (first_id, import_id, CHUNK))]
            if not ids:
                break
            lo, hi = ids[0], ids[-1]
            mine = f"sample_id BETWEEN {lo} AND {hi} AND sample_id IN (SELECT id FROM samples WHERE id BETWEEN " \
                   f"{lo} AND {hi} AND import_id = {int(import_id)})"
            for table in ("decisions", "judgments", "candidates"):
                conn.execute(f"DELETE FROM {table} WHERE {mine}")
            upto = conn.execute("SELECT value FROM meta WHERE key = 'fts_upto'").fetchone()
            if upto:   # the search index may have taken the rows in already (external content: delete by old text)
                conn.execute("INSERT INTO samples_fts (samples_fts, rowid, instruction, input, response) "
                             "SELECT 'delete', id, instruction, input, response FROM samples "
                             "WHERE id BETWEEN ? AND ? AND import_id = ? AND id <= ?",
                             (lo, hi, import_id, int(upto[0])))
            conn.execute("DELETE FROM samples WHERE id BETWEEN ? AND ? AND import_id = ?", (lo, hi, import_id))
            # ids freed at the top are given out again: the search index and the Balance counts must not count them
            # as done (the delete trigger lowers stats_upto only while a counted row is the top one)
            conn.execute("UPDATE meta SET value = (SELECT coalesce(max(id), 0) FROM samples) WHERE key IN "
                         "('fts_upto', 'stats_upto') AND CAST(value AS INTEGER) > (SELECT coalesce(max(id), 0) "
                         "FROM samples)")
            first_id = hi + 1
    with _tx(conn):
        # the Balance counts were kept right by the delete trigger; buckets left at 0 by it go (as before the import)
        conn.execute("DELETE FROM sample_stats WHERE dataset_id = ? AND n = 0", (did,))
        conn.execute("DELETE FROM selections WHERE sample_id >= ? AND sample_id NOT IN (SELECT id FROM samples)",
                     (row[1] or 0,))
        conn.execute("DELETE FROM imports WHERE id = ?", (import_id,))
        if made_dataset and conn.execute("SELECT NOT EXISTS (SELECT 1 FROM samples WHERE dataset_id = ?) AND NOT "
                                         "EXISTS (SELECT 1 FROM imports WHERE dataset_id = ?)",
                                         (did, did)).fetchone()[0]:
            conn.execute("DELETE FROM datasets WHERE id = ?", (did,))
            conn.execute("DELETE FROM meta WHERE key = ?", (f"review.position.{did}",))
