"""Bulk work in short write transactions, so other writers (a Review decision, a worker) never wait long behind it.

`ShortTransactions` holds one transaction open and `due()` says when to end it: after LIMIT_S, or at once when
another writer waits for the lock (it touches `<store>-wait`, workbench/busy.py). `next()` commits, pauses so the
waiter gets its turn, and begins again. The caller keeps every step between two `next()` calls consistent on its
own (a marker row says the whole job is unfinished; workbench/bulk_recovery.py finishes it after a crash).
"""
from __future__ import annotations

import sqlite3
import time
from contextlib import contextmanager

from . import busy

LIMIT_S = 0.1           # a transaction ends at the first chunk boundary past this (issue 15: <= 250 ms held)

longest_s = 0.0         # the longest transaction held in this process (benchmarks read it)
# Each commit rewrites the pages of the random indexes (content hash, length) its rows were in; a checkpoint every
# 1000 pages (the store's) copied most of them to the database again at every commit of a chunked delete (4 GB
# read for 200k rows). A bigger WAL lets one checkpoint copy such a page once for many commits.
WAL_PAGES = 10_000


class ShortTransactions:
    def __init__(self, conn: sqlite3.Connection, limit_s: float | None = None):
        self.conn, self.limit_s = conn, LIMIT_S if limit_s is None else limit_s
        self.signal = busy.wait_file(conn)
        self.started = 0.0
        self.started_ns = 0
        self.commits = 0

    def __enter__(self) -> "ShortTransactions":
        self._begin()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._end("ROLLBACK" if exc_type else "COMMIT")
        return False

    def _begin(self) -> None:
        busy.begin(self.conn)
        self.started = time.monotonic()
        self.started_ns = time.time_ns()

    def _end(self, how: str) -> None:
        global longest_s
        self.conn.execute(how)
        longest_s = max(longest_s, time.monotonic() - self.started)

    def due(self) -> bool:
        return (time.monotonic() - self.started >= self.limit_s
                or busy.someone_waiting(self.signal, self.started_ns))

    def next(self, force: bool = False) -> None:
        """Commit and begin the next transaction, if it is time (or `force`)."""
        if force or self.due():
            self._end("COMMIT")
            self.commits += 1
            busy.yield_to_waiters()
            self._begin()


@contextmanager
def roomy_wal(conn):
    """This connection checkpoints every WAL_PAGES pages instead of the store's 1000 while a chunked writer runs."""
    wal = conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
    conn.execute(f"PRAGMA wal_autocheckpoint = {max(wal, WAL_PAGES)}")
    try:
        yield
    finally:
        conn.execute(f"PRAGMA wal_autocheckpoint = {wal}")
