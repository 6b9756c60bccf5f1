"""Opening the store as every front end does (CLI commands, the TUI): open_store, which migrates and finishes or
undoes what a killed export, keep, decide, import, dataset delete or merge left (workbench/bulk_recovery.py), plus
the recoveries that need modules above the store (rewriting text needs samples.py, which open_store may not
import): a shard import, a `clean --undo` and a `clean --normalize --apply` killed midway are taken back."""
from __future__ import annotations

import sqlite3

from . import runs, shard_update
from .store import open_store


def recover(conn: sqlite3.Connection) -> None:
    shard_update.recover(conn)
    runs.recover(conn)


def open_recovered(path=None, **kwargs) -> sqlite3.Connection:
    conn = open_store(path, **kwargs)
    recover(conn)
    return conn
