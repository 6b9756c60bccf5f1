"""Faults for tests of a bulk writer: a failure on the Nth call of a function, and a kill -9 midway."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from workbench import busy
from workbench.store import open_store

ROOT = Path(__file__).resolve().parent.parent


def fail_on_call(monkeypatch, owner, name: str, n: int) -> None:
    """`owner.name` raises a disk error on its n-th call; the others go through."""
    real, calls = getattr(owner, name), []

    def flaky(*a, **k):
        calls.append(1)
        if len(calls) == n:
            raise sqlite3.OperationalError("disk I/O error")
        return real(*a, **k)
    monkeypatch.setattr(owner, name, flaky)


def wait_for(pred, timeout=120.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.001)
    raise AssertionError("condition not reached in time")


def kill_midway(db: Path, child: str, args: list[str], midway) -> None:
    """Run `python -c child DB ARGS...` (a bulk job) in a process; once `midway(conn)`, hold the write lock (the job
    stops at its next chunk boundary), check it is still midway, and kill -9 it."""
    p = subprocess.Popen([sys.executable, "-c", child, str(db), *args], cwd=ROOT)
    watcher = open_store(db)
    try:
        wait_for(lambda: midway(watcher) or p.poll() is not None)
        busy.begin(watcher)
        assert midway(watcher), "the job ended before it could be killed midway"
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        if watcher.in_transaction:
            watcher.execute("ROLLBACK")
        watcher.close()
