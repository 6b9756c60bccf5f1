"""Recording an export as a snapshot without holding the write lock for long.

The snapshot id is reserved first (`reserve`, a row in snapshot_writes naming the process and its temp file);
`write_items` then writes one snapshot_items row per exported row in short transactions (workbench/short_tx.py);
finally `publish`, inside the exporter's one short transaction that also renames the files into place, inserts the
snapshots row and drops the reservation. Until then the items belong to no snapshot (every reader goes through
`snapshots`), so a failure or a kill leaves no visible snapshot: a failing export removes its items itself
(`abandon`), a killed one's are removed by the next open (workbench/bulk_recovery.py).
"""
from __future__ import annotations

import logging
import os
import sqlite3

import orjson

from .bulk_recovery import discard_snapshot
from .short_tx import ShortTransactions
from .store import now, transaction

log = logging.getLogger(__name__)

CHUNK = 2_000     # items per executemany between two checks of the transaction's time


def reserve(conn: sqlite3.Connection, temp=None) -> int:
    """A snapshot id no snapshot, reservation or leftover item holds."""
    with transaction(conn):
        snap = 1 + conn.execute(
            "SELECT max(coalesce((SELECT max(id) FROM snapshots), 0), "
            "coalesce((SELECT max(snapshot_id) FROM snapshot_writes), 0), "
            "coalesce((SELECT max(snapshot_id) FROM snapshot_items), 0))").fetchone()[0]
        conn.execute("INSERT INTO snapshot_writes (snapshot_id, pid, temp, started_at) VALUES (?, ?, ?, ?)",
                     (snap, os.getpid(), os.fspath(temp) if temp is not None else None, now()))
    return snap


def write_items(conn: sqlite3.Connection, snap: int, ids, hashes) -> None:
    """The exported rows (sample id, content hash) of the reserved snapshot, in short transactions."""
    sql = "INSERT INTO snapshot_items (snapshot_id, sample_id, content_hash) VALUES (?, ?, ?)"
    with ShortTransactions(conn) as tx:
        for lo in range(0, len(ids), CHUNK):
            hi = min(lo + CHUNK, len(ids))
            conn.executemany(sql, ((snap, ids[j], hashes[j]) for j in range(lo, hi)))
            tx.next()


def publish(conn: sqlite3.Connection, snap: int, name, manifest: dict) -> None:
    """Inside the exporter's transaction: the snapshots row (its manifest is set by the caller) and no reservation."""
    conn.execute(
        "INSERT INTO snapshots (id, name, file, format, filters, counts, sha256, manifest, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (snap, name, manifest["file"], manifest["format"], _json(manifest["filters"]), _json(manifest["counts"]),
         manifest["sha256"], "", manifest["created_at"]))
    conn.execute("DELETE FROM snapshot_writes WHERE snapshot_id = ?", (snap,))


def abandon(conn: sqlite3.Connection, snap: int) -> None:
    """A failed export: its items go now (a failure here leaves them to the next open, never raises over the
    export's own error)."""
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        discard_snapshot(conn, snap)
    except Exception as e:   # noqa: BLE001 - the export's error is the one to report
        log.warning("export snapshot %s: its items are left to the next open: %s", snap, e)


def _json(value) -> str:
    return orjson.dumps(value).decode()
