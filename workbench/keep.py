"""`workbench keep`: what a distributed engine kept comes back as decisions.

Given the sample ids an engine kept (its output shards, holding `sample_id`), every other pending sample of the
dataset is rejected with the reason given, as ONE run of the undoable run log (workbench/runs.py; action
'filter', reason as given): `workbench clean --undo RUN` (or the Clean screen) reverts the whole keep in one step,
and Review shows each row as set aside by that run (the curator can override it like any automatic rejection).

Left alone, as a dedup run leaves them: samples a curator accepted (counted and reported), samples already
rejected, and every sample on the kept list whatever its status.

All or nothing: every id must be a whole number, exist, belong to the dataset and appear once; the first that
does not refuses the whole keep, naming its file, line (row for Parquet) and field, and nothing is written.
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from .runs import log_status_changes, new_run
from .shard_files import ID_COLUMN, ShardError, iter_ids, is_row_position, shard_files, where
from .store import dataset_id as _dataset_id, transaction


class KeepError(ValueError):
    """The keep was refused for what it read (a file, an id); nothing was written."""


class KeepRefused(KeepError):
    """The command line does not fit (no such dataset, no reason); nothing was written."""


@dataclass
class KeepResult:
    dataset: str
    run: str | None
    kept: int
    rejected: int
    accepted_left: int            # not on the list, but a curator accepted them: left as they are
    already_rejected: int
    files: list[str] = field(default_factory=list)


def _bitmap(n: int) -> bytearray:
    return bytearray(n + 1)


def read_kept(conn: sqlite3.Connection, did: int, path) -> tuple[bytearray, int, list[Path]]:
    """The kept ids as a bitmap over sample ids, checked against the dataset (see the module doc)."""
    try:
        files = shard_files(path)
    except ShardError as e:
        raise KeepError(str(e)) from None
    top = conn.execute("SELECT coalesce(max(id), 0) FROM samples").fetchone()[0]
    in_ds = _bitmap(top)
    for (i,) in conn.execute("SELECT id FROM samples WHERE dataset_id = ?", (did,)):
        in_ds[i] = 1
    kept = _bitmap(top)
    n = 0
    try:
        for f in files:
            row = is_row_position(f)
            for pos, sid in iter_ids(f):
                if not (0 < sid <= top and in_ds[sid]):
                    exists = 0 < sid <= top and conn.execute("SELECT 1 FROM samples WHERE id = ?",
                                                             (sid,)).fetchone()
                    raise KeepError(f"{where(f, pos, ID_COLUMN, row)}: "
                                    + (f"sample {sid} is not in this dataset" if exists else f"no sample with id {sid}")
                                    + " (nothing was decided)")
                if kept[sid]:
                    raise KeepError(f"{where(f, pos, ID_COLUMN, row)}: sample {sid} is listed twice; an engine's "
                                    f"output holds each row once - is an older run's output in the same directory? "
                                    f"(nothing was decided)")
                kept[sid] = 1
                n += 1
    except ShardError as e:
        raise KeepError(str(e) + " (nothing was decided)") from None
    if n == 0:
        raise KeepError(f"{path}: lists no sample id; keeping nothing would reject the whole dataset - use "
                        f"`workbench decide --reject` for that (nothing was decided)")
    return kept, n, files


def keep(conn: sqlite3.Connection, dataset: str, path, reason: str) -> KeepResult:
    if not reason or not reason.strip():
        raise KeepRefused("--reason: say why the other samples go (e.g. \"external dedup\"); it is recorded with each")
    try:
        did = _dataset_id(conn, dataset)
    except KeyError as e:
        raise KeepRefused(str(e.args[0])) from None
    kept, n, files = read_kept(conn, did, path)
    accepted = already = 0
    changes = []
    with transaction(conn):     # statuses read inside: a decision made meanwhile is seen, never overwritten
        for sid, status in conn.execute("SELECT id, status FROM samples WHERE dataset_id = ?", (did,)):
            if sid < len(kept) and kept[sid]:
                continue
            if status == "pending":
                changes.append((sid, status, reason))
            elif status == "accepted":
                accepted += 1
            else:
                already += 1
        run = None
        if changes:
            run = new_run(conn, "filter")
            log_status_changes(conn, run, "filter", changes, "rejected")
    return KeepResult(dataset, run, n, len(changes), accepted, already, [str(f) for f in files])
