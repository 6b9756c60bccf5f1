"""`workbench keep`: what a distributed engine kept comes back as decisions.

Given the sample ids an engine kept (its output shards, holding `sample_id`), every other pending sample of the
dataset is rejected with the reason given, as ONE run of the undoable run log (workbench/runs.py; action
'filter', reason as given): `workbench clean --undo RUN` (or the Clean screen) reverts the whole keep in one step,
and Review shows each row as set aside by that run (the curator can override it like any automatic rejection).

The engine judged the rows of one export: the latest snapshot holding the list's first id. Only that export's
samples are rejected; samples of the dataset it did not hold (imported or made since) are left alone and counted,
and a listed id that export did not hold is refused (outputs of two exports mixed). A list whose ids were never
exported is taken against the whole dataset.

Left alone, as a dedup run leaves them: samples a curator accepted (counted and reported), samples already
rejected, and every sample on the kept list whatever its status.

All or nothing: every id must be a whole number, exist, belong to the dataset and appear once; the first that
does not refuses the whole keep, naming its file, line (row for Parquet) and field, and nothing is written.
The ids are all checked before the first write. The rejections are then written in short transactions (other
writers never wait long behind a keep of millions of rows), each reading the statuses it changes: a decision a
curator makes meanwhile is seen, never overwritten. `bulk_runs` marks the run unfinished until the last chunk; a
keep that fails midway undoes what it wrote before it reports, and one whose process died (kill -9) is undone by
the next open (workbench/bulk_recovery.py).
"""
from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass, field

from .bulk_recovery import roll_back_run
from .runs import log_status_changes, new_run
from .shard_files import ID_COLUMN, ShardError, iter_ids, is_row_position, shard_files, where
from .short_tx import ShortTransactions
from .store import dataset_id as _dataset_id, now

CHUNK = 500            # samples read and decided per statement (a few ms); commits: workbench/short_tx.py


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
    snapshot: int | None = None   # the export the list was judged against (None: no export holds its ids)
    not_exported: int = 0         # samples of the dataset that export did not hold: left alone


def _bitmap(n: int) -> bytearray:
    return bytearray(n + 1)


def _source_snapshot(conn: sqlite3.Connection, sid: int) -> int | None:
    """The latest published snapshot holding the sample (an unpublished export's items have no snapshots row)."""
    row = conn.execute("SELECT max(i.snapshot_id) FROM snapshot_items i JOIN snapshots s ON s.id = i.snapshot_id "
                       "WHERE i.sample_id = ?", (sid,)).fetchone()
    return row[0] if row else None


def read_kept(conn: sqlite3.Connection, did: int, path):
    """(kept ids as a bitmap over sample ids, how many, files, the export's snapshot, its ids as a bitmap or None),
    every id checked (see the module doc)."""
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
    snap, exported = None, None
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
                if n == 0:
                    snap = _source_snapshot(conn, sid)
                    if snap is not None:
                        exported = _bitmap(top)
                        for (i,) in conn.execute("SELECT sample_id FROM snapshot_items WHERE snapshot_id = ?", (snap,)):
                            if i <= top:
                                exported[i] = 1
                elif exported is not None and not exported[sid]:
                    raise KeepError(f"{where(f, pos, ID_COLUMN, row)}: sample {sid} was not in export snapshot {snap}, "
                                    f"which the list's first id comes from; give the output of one export at a time "
                                    f"(nothing was decided)")
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
    return kept, n, files, snap, exported


def keep(conn: sqlite3.Connection, dataset: str, path, reason: str) -> KeepResult:
    if not reason or not reason.strip():
        raise KeepRefused("--reason: say why the other samples go (e.g. \"external dedup\"); it is recorded with each")
    try:
        did = _dataset_id(conn, dataset)
    except KeyError as e:
        raise KeepRefused(str(e.args[0])) from None
    kept, n, files, snap, exported = read_kept(conn, did, path)
    res = KeepResult(dataset, None, n, 0, 0, 0, [str(f) for f in files], snap, 0)
    try:
        with ShortTransactions(conn) as tx:
            for status in ("accepted", "rejected", "pending"):   # pending last: the others counted as before
                last = 0
                while True:
                    ids = [r[0] for r in conn.execute(
                        "SELECT id FROM samples WHERE dataset_id = ? AND status = ? AND id > ? ORDER BY id LIMIT ?",
                        (did, status, last, CHUNK))]
                    if not ids:
                        break
                    last = ids[-1]
                    _decide(conn, res, ids, status, kept, exported, reason)
                    tx.next()
            if res.run is not None:
                conn.execute("DELETE FROM bulk_runs WHERE run = ?", (res.run,))
    except BaseException:
        if res.run is not None:
            roll_back_run(conn, res.run)
        raise
    return res


def _decide(conn: sqlite3.Connection, res: KeepResult, ids: list, status: str, kept, exported, reason: str) -> None:
    """Inside a transaction: one chunk of the dataset's samples of one status, read in it."""
    changes = []
    for sid in ids:
        if sid < len(kept) and kept[sid]:
            continue
        if exported is not None and (sid >= len(exported) or not exported[sid]):
            res.not_exported += 1            # the engine never saw it
        elif status == "pending":
            changes.append((sid, status, reason))
        elif status == "accepted":
            res.accepted_left += 1
        else:
            res.already_rejected += 1
    if not changes:
        return
    if res.run is None:   # the run and its unfinished mark start with its first rejection, in the same transaction
        res.run = new_run(conn, "filter")
        conn.execute("INSERT INTO bulk_runs (kind, run, pid, started_at) VALUES ('keep', ?, ?, ?)",
                     (res.run, os.getpid(), now()))
    log_status_changes(conn, res.run, "filter", changes, "rejected")
    res.rejected += len(changes)
