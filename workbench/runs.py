"""Runs: the undoable log of applied curation steps (a filter pass, a normalization pass, a dedup keep-best).

Every row a run changes gets a `decisions` row (action 'filter' | 'normalize' | 'dedup', before/after, reason)
whose `session` is the run id ("filter-3"). `undo_run` reverts a run by appending 'undo' decisions - nothing is
ever deleted - and leaves alone any row a curator changed after the run.
"""
from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass, field
from typing import Iterable

import orjson

from .bulk_recovery import claim_dead, marked_ranges, note_range, range_chunks, roll_back_run
from .samples import write_text
from .short_tx import ShortTransactions
from .store import now, transaction


# --- runs: the undoable log --------------------------------------------------------------------------------

RUN_ACTIONS = ("filter", "normalize", "dedup", "update")   # update: shards imported back (shard_update.py)


def json_text(obj) -> str:
    return orjson.dumps(obj).decode()


def new_run(conn: sqlite3.Connection, kind: str) -> str:
    """Inside a transaction: the next run id, e.g. 'filter-3' (one sequence for every kind)."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'curation_run_seq'").fetchone()
    seq = int(row[0]) + 1 if row else 1
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('curation_run_seq', ?)", (str(seq),))
    return f"{kind}-{seq}"


class MarkedRun:
    """A bulk run of status changes kept one undoable step across short transactions: its run id and its
    `bulk_runs` mark are made with its first change (`id()`), the mark goes with `finish()` inside the last
    transaction, and a failure before that undoes what was written (a process that died: the next open,
    workbench/bulk_recovery.py). Enter it outside the ShortTransactions, so a failure is undone after the open
    transaction is rolled back."""

    def __init__(self, conn: sqlite3.Connection, kind: str):
        self.conn, self.kind, self.run = conn, kind, None

    def __enter__(self) -> "MarkedRun":
        return self

    def id(self) -> str:
        """Inside a transaction: the run's id, made (with its mark) on the first call."""
        if self.run is None:
            self.run = new_run(self.conn, self.kind)
            self.conn.execute("INSERT INTO bulk_runs (kind, run, pid, started_at) VALUES (?, ?, ?, ?)",
                              (self.kind, self.run, os.getpid(), now()))
        return self.run

    def finish(self) -> None:
        if self.run is not None:
            self.conn.execute("DELETE FROM bulk_runs WHERE run = ?", (self.run,))

    def __exit__(self, kind, exc, tb) -> None:
        if exc is not None and self.run is not None and \
                self.conn.execute("SELECT 1 FROM bulk_runs WHERE run = ?", (self.run,)).fetchone():
            roll_back_run(self.conn, self.run)


def log_status_changes(conn: sqlite3.Connection, run: str, action: str, changes: list[tuple[int, str, str]],
                       new_status: str) -> int:
    """Inside a transaction: set status for each (sample id, old status, reason) and log a decision per row."""
    ts = now()
    conn.executemany("UPDATE samples SET status = ?, updated_at = ? WHERE id = ?",
                     ((new_status, ts, sid) for sid, _, _ in changes))
    after = json_text({"status": new_status})
    conn.executemany(
        "INSERT INTO decisions (sample_id, action, before, after, reason, session, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        ((sid, action, json_text({"status": old}), after, reason, run, ts) for sid, old, reason in changes))
    return len(changes)


def current_fields(conn: sqlite3.Connection, sample_id: int, keys: Iterable[str]) -> dict | None:
    keys = list(keys)
    row = conn.execute(f"SELECT {', '.join(keys)} FROM samples WHERE id = ?", (sample_id,)).fetchone()
    if row is None:
        return None
    out = dict(zip(keys, row))
    if out.get("messages") is not None:
        out["messages"] = orjson.loads(out["messages"])
    return out


@dataclass
class RunInfo:
    run: str
    action: str
    rows: int
    undone: int
    reasons: dict[str, int]
    created_at: str


def list_runs(conn: sqlite3.Connection) -> list[RunInfo]:
    """Every applied curation run, newest first, with how many of its rows have been undone."""
    runs: dict[str, RunInfo] = {}
    for session, action, reason, n, created in conn.execute(
            "SELECT session, action, reason, count(*), min(created_at) FROM decisions "
            f"WHERE action IN ({','.join('?' * len(RUN_ACTIONS))}) AND session IS NOT NULL "
            "GROUP BY session, action, reason", RUN_ACTIONS):
        info = runs.setdefault(session, RunInfo(session, action, 0, 0, {}, created))
        info.rows += n
        key = reason if action == "filter" else action
        info.reasons[key] = info.reasons.get(key, 0) + n
    for session, n in conn.execute(
            "SELECT session, count(*) FROM decisions WHERE action = 'undo' AND session IN "
            f"(SELECT DISTINCT session FROM decisions WHERE action IN ({','.join('?' * len(RUN_ACTIONS))})) "
            "GROUP BY session", RUN_ACTIONS):
        if session in runs:
            runs[session].undone = n
    return sorted(runs.values(), key=lambda r: int(r.run.rsplit("-", 1)[-1]) if r.run.rsplit("-", 1)[-1].isdigit()
                  else 0, reverse=True)


@dataclass
class UndoResult:
    run: str
    reverted: int = 0
    changed_since: list[int] = field(default_factory=list)   # rows a curator changed after the run: left alone
    already_undone: int = 0


def undo_run(conn: sqlite3.Connection, run: str) -> UndoResult:
    """Revert every row of a run that is still as the run left it, appending 'undo' decisions.

    In short transactions (a keep's run at 1M rows is ~350k decisions; workbench/short_tx.py), each reading the
    rows it reverts: a decision a curator makes meanwhile is seen and stays. A `bulk_runs` row ('undo') marks the
    undo unfinished and lists the id ranges of the undo rows written so far; a failure midway takes them back
    (`unwind_undo`) before it is reported, and a process that died midway is unwound by the next CLI or TUI open
    (`recover`): the run is then exactly as before the undo, and `clean --undo` can be run again."""
    res = UndoResult(run)
    recover(conn)       # an undo of this run that died midway (a plain open_store does not unwind it)
    with transaction(conn):
        running = conn.execute("SELECT pid FROM bulk_runs WHERE run = ?", (run,)).fetchone()
        if running:     # a keep, a shard import or an undo still writing it (a dead one's is undone by the next open)
            raise ValueError(f"{run} is still being written (process {running[0]}); undo it once it has finished")
        if not conn.execute("SELECT 1 FROM decisions WHERE session = ? AND action IN "
                            f"({','.join('?' * len(RUN_ACTIONS))}) LIMIT 1", (run, *RUN_ACTIONS)).fetchone():
            raise KeyError(f"no curation run named {run!r} (see `workbench clean --runs`)")
        bulk = conn.execute("INSERT INTO bulk_runs (kind, run, pid, info, started_at) VALUES ('undo', ?, ?, ?, ?)",
                            (run, os.getpid(), json_text({"ranges": []}), now())).lastrowid
    try:
        _revert(conn, run, res, bulk)
    except BaseException:
        unwind_undo(conn, bulk)
        raise
    return res


def _revert(conn: sqlite3.Connection, run: str, res: UndoResult, bulk: int | None) -> None:
    """In short transactions: revert the run's decisions newest first (each one still as the run left it), then
    drop the marker `bulk` (the undo's own) or, without one, the run's own marker (an unfinished run taken back)."""
    ranges: list[list[int]] = []
    with ShortTransactions(conn) as tx:
        undone = {r[0] for r in conn.execute("SELECT undoes FROM decisions WHERE session = ? AND action = 'undo'",
                                             (run,))}
        last = None
        while True:
            rows = conn.execute(
                "SELECT d.id, d.sample_id, d.action, d.before, d.after FROM decisions d WHERE d.session = ? AND "
                f"d.action IN ({','.join('?' * len(RUN_ACTIONS))}) AND d.id < ? ORDER BY d.id DESC LIMIT ?",
                (run, *RUN_ACTIONS, last if last is not None else 1 << 62, UNDO_CHUNK)).fetchall()
            if not rows:
                break
            last = rows[-1][0]
            _undo_chunk(conn, run, rows, undone, res, bulk, ranges)
            tx.next()
        if bulk is not None:
            conn.execute("DELETE FROM bulk_runs WHERE id = ?", (bulk,))
        else:
            conn.execute("DELETE FROM bulk_runs WHERE run = ?", (run,))


def roll_back_unfinished(conn: sqlite3.Connection, run: str) -> UndoResult:
    """Take back a run that never finished (`clean --normalize --apply` failing or killed midway), outside any
    transaction: every change still as it left it gets an 'undo' decision of the run, as `clean --undo` writes;
    a sample a curator changed since keeps theirs. The run's marker goes last (an interruption: the next open)."""
    res = UndoResult(run)
    _revert(conn, run, res, None)
    return res


UNDO_CHUNK = 200       # decisions reverted per chunk (at 500: 0.4 s transactions under load); see short_tx.py


def _undo_chunk(conn, run, rows, undone, res: UndoResult, bulk: int | None, ranges: list) -> None:
    """Inside a transaction: revert one chunk of the run's decisions, newest first, and record the undo rows'
    ids in the marker of `bulk` if given (they are contiguous: no other writer inserts inside this transaction)."""
    ts = now()
    logs = []
    for did, sid, action, before_s, after_s in rows:
        if did in undone:
            res.already_undone += 1
            continue
        before, after = orjson.loads(before_s), orjson.loads(after_s)
        current = current_fields(conn, sid, after)
        if current != after:
            res.changed_since.append(sid)
            continue
        if set(before) == {"status"}:
            conn.execute("UPDATE samples SET status = ?, updated_at = ? WHERE id = ?", (before["status"], ts, sid))
        else:
            write_text(conn, sid, before)
        logs.append((sid, json_text(current), json_text(before), did, run, ts))
        res.reverted += 1
    if not logs:
        return
    conn.executemany("INSERT INTO decisions (sample_id, action, before, after, undoes, session, created_at) "
                     "VALUES (?, 'undo', ?, ?, ?, ?, ?)", logs)
    if bulk is not None:
        hi = conn.execute("SELECT max(id) FROM decisions").fetchone()[0]
        note_range(conn, bulk, ranges, hi - len(logs) + 1, hi)


def unwind_undo(conn: sqlite3.Connection, bulk: int) -> int:
    """Take back an unfinished undo (outside any transaction, in short ones): each undo row it wrote whose sample
    is still as it left it is reverted and removed (the step never completed, as a rolled-back transaction leaves
    nothing); one a curator changed since stays, with the curator's decision after it. Returns rows taken back."""
    ranges = marked_ranges(conn, bulk)
    if ranges is None:
        return 0
    back = 0
    with ShortTransactions(conn) as tx:
        for rows in range_chunks(conn, ranges, "SELECT id, sample_id, before, after FROM decisions WHERE id "
                                               "BETWEEN ? AND ? AND action = 'undo' ORDER BY id", UNDO_CHUNK):
            ts = now()
            for did, sid, before_s, after_s in rows:
                before, after = orjson.loads(before_s), orjson.loads(after_s)
                if current_fields(conn, sid, after) != after:
                    continue          # a curator changed it after the undo: theirs stays
                if set(before) == {"status"}:
                    conn.execute("UPDATE samples SET status = ?, updated_at = ? WHERE id = ?",
                                 (before["status"], ts, sid))
                else:
                    write_text(conn, sid, before)
                conn.execute("DELETE FROM decisions WHERE id = ?", (did,))
                back += 1
            tx.next()
        conn.execute("DELETE FROM bulk_runs WHERE id = ?", (bulk,))
    return back


def recover(conn: sqlite3.Connection) -> int:
    """Unwind the undos and normalize runs whose process died midway (called by every open through
    workbench/recovery.py, as shard_update.recover: open_store cannot, reverting text needs samples.py). Returns
    how many were unwound."""
    dead = claim_dead(conn, "undo")
    for bulk in dead:
        unwind_undo(conn, bulk)
    normalizing = claim_dead(conn, "normalize")       # a normalize run killed midway: taken back whole
    for bulk in normalizing:
        run = conn.execute("SELECT run FROM bulk_runs WHERE id = ?", (bulk,)).fetchone()[0]
        roll_back_unfinished(conn, run)
    return len(dead) + len(normalizing)
