"""Which workers are running on a store: each worker process leaves a file named by its pid while it runs
(`<user state dir>/workers/<hash of the store path>/<pid>`), so `run` and the TUI can tell a queued job that a
worker will pick up from one that waits for nobody. Files, not store rows: an idle worker polling every 2 s would
otherwise commit every 2 s and wake every screen that re-reads on a commit.

A file whose process is gone (a killed worker) is removed when seen. Same machine only, like the SQLite store.
"""
from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from pathlib import Path

import platformdirs

from .store import APP_NAME


def _dir(db_path: str | os.PathLike) -> Path:
    key = hashlib.blake2b(str(Path(db_path).resolve()).encode(), digest_size=8).hexdigest()
    return Path(platformdirs.user_state_dir(APP_NAME)) / "workers" / key


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # someone else's process: alive
        return True
    return True


@contextmanager
def registered(db_path: str | os.PathLike):
    """While the block runs, this process counts as a worker of the store."""
    d = _dir(db_path)
    f = d / str(os.getpid())
    try:
        d.mkdir(parents=True, exist_ok=True)
        f.write_text(str(Path(db_path).resolve()))
    except OSError:   # an unwritable state dir must not stop the work; `run` may then say "no worker" wrongly
        f = None
    try:
        yield
    finally:
        if f is not None:
            f.unlink(missing_ok=True)


def running_workers(db_path: str | os.PathLike) -> list[int]:
    """Pids of the live workers of this store."""
    d = _dir(db_path)
    out = []
    try:
        entries = list(d.iterdir())
    except OSError:
        return []
    for f in entries:
        if not f.name.isdigit():
            continue
        if _alive(int(f.name)):
            out.append(int(f.name))
        else:
            f.unlink(missing_ok=True)
    return sorted(out)
