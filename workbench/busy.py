"""Taking the store's write lock: every writer waits its turn, however long, and never gives up.

SQLite's own busy handler sleeps up to 100 ms between tries, so a writer waiting behind a bulk writer that commits
and starts again at once could keep missing the moment the lock is free and, after busy_timeout, fail with
"database is locked". Here BEGIN IMMEDIATE is tried without SQLite's handler and retried every POLL_S seconds for
as long as it takes: a waiter notices a free lock within a few ms, and a long writer ahead of it only makes it
wait (a warning is logged every WARN_EVERY_S seconds), never exit.

A waiting writer also touches `<store>-wait` every SIGNAL_EVERY_S: a bulk import, which keeps its transaction open
while nobody waits (each commit rewrites every index page the transaction touched, so committing every 0.1 s
doubled a million-row import), sees it (`someone_waiting`), commits at once and pauses YIELD_S
(`yield_to_waiters`) so the waiter gets its turn.
"""
from __future__ import annotations

import logging
import os
import sqlite3
import time

POLL_S = 0.001          # a waiter retries BEGIN this often
SIGNAL_EVERY_S = 0.005  # ... and touches the wait file this often
YIELD_S = 0.004         # a bulk writer's pause between transactions: a few of the waiters' polls
WARN_EVERY_S = 30.0
_BUSY_CODES = {getattr(sqlite3, "SQLITE_BUSY", 5), getattr(sqlite3, "SQLITE_LOCKED", 6)}

log = logging.getLogger(__name__)


def is_busy(e: sqlite3.OperationalError) -> bool:
    code = getattr(e, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in _BUSY_CODES
    return "locked" in str(e) or "busy" in str(e)


def begin(conn: sqlite3.Connection, immediate: bool = True) -> float:
    """Start a transaction; with `immediate`, wait for the write lock as long as it takes. Returns the seconds
    waited. The connection's busy_timeout is restored for the statements inside the transaction."""
    if not immediate:
        conn.execute("BEGIN")
        return 0.0
    timeout = conn.execute("PRAGMA busy_timeout").fetchone()[0]
    conn.execute("PRAGMA busy_timeout = 0")     # SQLite's own handler would sleep up to 100 ms between tries
    t0 = last_warn = time.monotonic()
    signal, signalled = None, 0.0
    try:
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return time.monotonic() - t0
            except sqlite3.OperationalError as e:
                if not is_busy(e):
                    raise
            if time.monotonic() - signalled >= SIGNAL_EVERY_S:
                signal = signal or wait_file(conn)
                _touch(signal)
                signalled = time.monotonic()
            time.sleep(POLL_S)
            if time.monotonic() - last_warn >= WARN_EVERY_S:
                last_warn = time.monotonic()
                log.warning("waiting %.0f s for the store's write lock (another writer holds it)", last_warn - t0)
    finally:
        conn.execute(f"PRAGMA busy_timeout = {int(timeout)}")


def yield_to_waiters() -> None:
    """Between a bulk writer's transactions: let writers polling in `begin` take the lock first."""
    time.sleep(YIELD_S)


def wait_file(conn: sqlite3.Connection) -> str | None:
    """The file waiting writers touch: beside the store, like its -wal and -shm (None for an in-memory store)."""
    name = conn.execute("PRAGMA database_list").fetchone()[2]
    return f"{name}-wait" if name else None


def _touch(path: str | None) -> None:
    if not path:
        return
    try:
        os.utime(path)
    except FileNotFoundError:
        try:
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        except OSError:
            pass
    except OSError:      # a read-only directory: the bulk writer commits on its time limit instead
        pass


def someone_waiting(path: str | None, since_ns: int) -> bool:
    """Whether a writer has been waiting for the lock since `since_ns` (time.time_ns())."""
    if not path:
        return False
    try:
        # mtimes come from the kernel's coarse clock (a few ms behind): waiters touch the file every few ms
        return os.stat(path).st_mtime_ns > since_ns - 10_000_000
    except OSError:
        return False
