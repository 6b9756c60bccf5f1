"""A batch job's rounds as stored (table job_batches): what `jobs show`, `jobs` and the Jobs screen read, and the
state changes the batch backend (workbench/batch.py) makes, each in one transaction checked against the lease."""
from __future__ import annotations

import secrets
import sqlite3

import orjson

from .store import now, transaction

ROUND_COLUMNS = ("id", "job_id", "round", "state", "requests", "input_file_id", "batch_id", "remote_status",
                 "counts", "output_file_id", "error_file_id", "error", "polls", "created_at", "updated_at")
OPEN_STATES = ("prepared", "uploaded", "submitted", "downloaded")


def _round(row) -> dict:
    r = dict(zip(ROUND_COLUMNS, row))
    r["counts"] = orjson.loads(r["counts"]) if r["counts"] else None
    return r


def rounds(conn: sqlite3.Connection, job_id: int) -> list[dict]:
    return [_round(r) for r in conn.execute(
        f"SELECT {', '.join(ROUND_COLUMNS)} FROM job_batches WHERE job_id = ? ORDER BY round", (job_id,))]


def open_round(conn: sqlite3.Connection, job_id: int) -> dict | None:
    """The round a worker is in the middle of (at most one is open at a time), or None."""
    row = conn.execute(f"SELECT {', '.join(ROUND_COLUMNS)} FROM job_batches WHERE job_id = ? AND state IN "
                       f"({','.join('?' * len(OPEN_STATES))}) ORDER BY round DESC LIMIT 1",
                       (job_id, *OPEN_STATES)).fetchone()
    return _round(row) if row else None


def summary(conn: sqlite3.Connection, job_id: int) -> dict | None:
    """The latest round of a batch job, plus how many rounds it has had; None before the first."""
    rs = conn.execute(f"SELECT {', '.join(ROUND_COLUMNS)} FROM job_batches WHERE job_id = ? ORDER BY round DESC "
                      "LIMIT 1", (job_id,)).fetchone()
    return {**_round(rs), "rounds": _round(rs)["round"]} if rs else None


def batch_cell(j: dict) -> str:
    """The `jobs` table's batch column: '-' for an online job, else its latest round (round_cell)."""
    return round_cell(j.get("batch")) if j["params"].get("batch") else "-"


def round_cell(b: dict | None) -> str:
    """A batch job's latest round in a few words: its state, the provider's status, completed/total (failed).
    Every part is ours or checked (a status outside KNOWN pauses the job before it is stored): terminal-safe."""
    if not b:
        return "waiting"
    out = f"r{b['round']} {b['state']}"
    if b["remote_status"]:
        out += f"/{b['remote_status']}"
    c = b.get("counts") or {}
    if c:
        out += f" {c.get('completed', 0)}/{c.get('total', 0)}" + (f" ({c['failed']} failed)" if c.get("failed")
                                                                  else "")
    return out


def batch_lines(j: dict) -> list[str]:
    """What the Jobs screen and `jobs show` print about a batch job (the caller sanitizes: ids come from a server)."""
    if not j["params"].get("batch"):
        return []
    b = j.get("batch")
    if not b:
        return ["batch: no round prepared yet"]
    c = b.get("counts") or {}
    counts = (f" · {c.get('completed', 0)}/{c.get('total', 0)} completed, {c.get('failed', 0)} failed"
              if c else "")
    remote = f" · remote {b['remote_status']}" if b["remote_status"] else ""
    line = (f"batch round {b['round']}: {b['state']}{remote}{counts} · {b['requests']} requests · "
            f"batch {b['batch_id'] or '-'} · input file {b['input_file_id'] or '-'} · polled {b['polls']} times")
    return [line] + ([f"batch error: {b['error']}"] if b["error"] else [])


class LeaseLost(Exception):
    """Another worker holds the job now: nothing was written."""


class JobStopped(Exception):
    """The job was paused or cancelled (by the CLI or the TUI) since the worker last looked: nothing was written."""

    def __init__(self, status: str):
        super().__init__(status)
        self.status = status


def check_owner(conn: sqlite3.Connection, job_id: int, owner: str) -> None:
    """Inside the transaction of a state change: still ours and still running (a cancel between two heartbeats
    must not be followed by a download or ingestion that finishes the job as done or failed)."""
    row = conn.execute("SELECT lease_owner, status FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None or row[0] != owner:
        raise LeaseLost(f"job {job_id} is now held by another worker")
    if row[1] in ("paused", "cancelled"):
        raise JobStopped(row[1])


def store_tag(conn: sqlite3.Connection) -> str:
    """A random tag of this store, part of every upload's name: the name by which a restarted worker finds its
    upload again must not match another store's upload of the same job id and bytes on the same account (it
    would adopt that store's batch)."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'batch_tag'").fetchone()
    if row:
        return row[0]
    with transaction(conn):
        conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('batch_tag', ?)", (secrets.token_hex(6),))
    return conn.execute("SELECT value FROM meta WHERE key = 'batch_tag'").fetchone()[0]


def create_round(conn: sqlite3.Connection, job_id: int, owner: str, round_no: int,
                 requests: dict[str, str]) -> int:
    """The round and its requests (custom_id -> body JSON), in one transaction."""
    with transaction(conn):
        check_owner(conn, job_id, owner)
        ts = now()
        rid = conn.execute("INSERT INTO job_batches (job_id, round, state, requests, created_at, updated_at) "
                           "VALUES (?,?,?,?,?,?)", (job_id, round_no, "prepared", len(requests), ts, ts)).lastrowid
        conn.executemany("INSERT INTO batch_requests (batch, custom_id, body) VALUES (?,?,?)",
                         [(rid, cid, body) for cid, body in requests.items()])
    return rid


def update_round(conn: sqlite3.Connection, job_id: int, owner: str, round_id: int, **fields) -> None:
    with transaction(conn):
        check_owner(conn, job_id, owner)
        _set(conn, round_id, fields)


def note_remote_status(conn: sqlite3.Connection, round_id: int, status: str) -> None:
    """After `jobs cancel` asked the provider to cancel: the status it answered (the job is no longer running)."""
    with transaction(conn):
        _set(conn, round_id, {"remote_status": status})


def _set(conn, round_id: int, fields: dict) -> None:
    if "counts" in fields and fields["counts"] is not None:
        fields["counts"] = orjson.dumps(fields["counts"]).decode()
    fields["updated_at"] = now()
    conn.execute(f"UPDATE job_batches SET {', '.join(f'{k} = ?' for k in fields)} WHERE id = ?",
                 (*fields.values(), round_id))


def requests_of(conn: sqlite3.Connection, round_id: int) -> list[tuple[str, str]]:
    return conn.execute("SELECT custom_id, body FROM batch_requests WHERE batch = ? ORDER BY custom_id",
                        (round_id,)).fetchall()


def sent_ids(conn: sqlite3.Connection, job_id: int) -> dict[str, int]:
    """custom_id -> how many rounds of this job sent it."""
    return dict(conn.execute("SELECT custom_id, count(*) FROM batch_requests WHERE batch IN "
                             "(SELECT id FROM job_batches WHERE job_id = ?) GROUP BY custom_id", (job_id,)))


def request_ids(conn: sqlite3.Connection, round_id: int) -> set[str]:
    return {cid for (cid,) in conn.execute("SELECT custom_id FROM batch_requests WHERE batch = ?", (round_id,))}


class StoredReplies:
    """The replies of a downloaded round, looked up one at a time (a round's replies can be gigabytes): `get(cid)`
    -> (reply dict or None, error or None, raw, retryable) or None. On the worker's read connection."""

    def __init__(self, conn: sqlite3.Connection, round_id: int):
        self.conn = conn
        self.round_id = round_id

    def get(self, cid: str) -> tuple | None:
        row = self.conn.execute("SELECT reply, error, raw, retryable FROM batch_replies WHERE batch = ? AND "
                                "custom_id = ?", (self.round_id, cid)).fetchone()
        if row is None:
            return None
        reply, error, raw, retryable = row
        return (orjson.loads(reply) if reply else None, error, raw, bool(retryable))


def _put_verdicts(conn, job_id: int, round_id: int, verdicts: dict, strays: list) -> None:
    """Inside a transaction: a verdict per request (replacing an earlier one: a download read again after a
    restart, or a duplicate found later in the file), each stray line as a failed item of the job, counted once
    (its key names the round, file and line)."""
    conn.executemany("INSERT OR REPLACE INTO batch_replies (batch, custom_id, reply, error, raw, retryable) "
                     "VALUES (?,?,?,?,?,?)",
                     [(round_id, cid, orjson.dumps(v.reply).decode() if v.reply is not None else None,
                       v.error, "\n".join(v.raw) or None, int(v.retryable)) for cid, v in verdicts.items()])
    if not strays:
        return
    ts = now()
    rnd = conn.execute("SELECT round FROM job_batches WHERE id = ?", (round_id,)).fetchone()[0]
    added = 0
    for s in strays:
        added += conn.execute(
            "INSERT OR IGNORE INTO job_items (job_id, key, sample_id, payload, status, attempts, error, raw, "
            "updated_at) VALUES (?,?,NULL,?, 'failed', 1, ?,?,?)",
            (job_id, f"batch-line:{rnd}:{s.source}:{s.line}",
             orjson.dumps({"batch_stray": True}).decode(),
             f"round {rnd}, {s.source} file line {s.line}: {s.reason}; the line is kept, nothing was written",
             s.raw, ts)).rowcount
    conn.execute("UPDATE jobs SET total = total + ?, failed = failed + ? WHERE id = ?", (added, added, job_id))


def store_verdicts(conn: sqlite3.Connection, job_id: int, owner: str, round_id: int, verdicts: dict,
                   strays: list) -> None:
    """One chunk of a download as it is read (the round stays 'submitted' until store_download)."""
    with transaction(conn):
        check_owner(conn, job_id, owner)
        _put_verdicts(conn, job_id, round_id, verdicts, strays)


def store_download(conn: sqlite3.Connection, job_id: int, owner: str, round_id: int, verdicts: dict,
                   tokens: tuple[int, int, float], requests: int, fields: dict) -> None:
    """One transaction: the last verdicts (duplicates, requests without a line), the batch's tokens and requests on
    the job row, and the round marked downloaded."""
    with transaction(conn):
        check_owner(conn, job_id, owner)
        _put_verdicts(conn, job_id, round_id, verdicts, [])
        tin, tout, cost = tokens
        conn.execute("UPDATE jobs SET tokens_in = tokens_in + ?, tokens_out = tokens_out + ?, cost = cost + ?, "
                     "requests = requests + ? WHERE id = ?", (tin, tout, cost, requests, job_id))
        _set(conn, round_id, {**fields, "state": "downloaded"})
