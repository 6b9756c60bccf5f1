"""Writing and reading sample rows. Import and every task that makes new samples go through `insert_samples`."""
from __future__ import annotations

import sqlite3
from typing import Iterable

import orjson

from . import scores
from .store import fts_replace, now
from .textnorm import content_hash

# Columns a caller may give in a sample dict (besides the ones computed here).
FIELDS = ("instruction", "input", "response", "rejected", "system", "messages", "task_type", "domain",
          "difficulty", "language", "metadata", "import_id", "source_line", "parent_id", "job_id", "origin",
          "status")
TEXT_FIELDS = ("instruction", "input", "response", "rejected", "system")

_INSERT = ("INSERT INTO samples (dataset_id, instruction, input, response, rejected, system, messages, task_type, "
           "domain, difficulty, language, metadata, import_id, source_line, parent_id, job_id, origin, status, "
           "content_hash, instruction_len, response_len, created_at, updated_at) "
           "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")
INSERT_COLUMNS = tuple(c.strip() for c in _INSERT[_INSERT.index("(") + 1:_INSERT.index(")")].split(","))


def _json(v):
    if v is None or isinstance(v, str):
        return v
    return orjson.dumps(v).decode()


def hash_of(s: dict) -> int:
    """The exact-duplicate key: every text a reviewer would compare, including all conversation turns."""
    msgs = s.get("messages")
    if msgs and not isinstance(msgs, str):
        turns = [f"{m.get('role', '')}:{m.get('content', '')}" for m in msgs]
    else:
        turns = [msgs or ""]
    return content_hash(s.get("system") or "", s.get("instruction") or "", s.get("input") or "",
                        s.get("response") or "", s.get("rejected") or "", *turns)


def sample_row(dataset_id: int, s: dict, ts: str) -> tuple:
    instruction = s.get("instruction") or ""
    response = s.get("response") or ""
    return (dataset_id, instruction, s.get("input") or "", response, s.get("rejected"), s.get("system") or "",
            _json(s.get("messages")), s.get("task_type"), s.get("domain"), s.get("difficulty"), s.get("language"),
            _json(s.get("metadata") or None), s.get("import_id"), s.get("source_line"), s.get("parent_id"),
            s.get("job_id"), _json(s.get("origin")), s.get("status") or "pending", hash_of(s),
            len(instruction), len(response), ts, ts)


def insert_samples(conn: sqlite3.Connection, dataset_id: int, samples: Iterable[dict]) -> tuple[int, int]:
    """Inside the caller's transaction: insert rows, then flag exact duplicates among and before them.

    Returns (first_id, last_id) of the inserted range, or (0, -1) if nothing was inserted.
    """
    ts = now()
    before = conn.execute("SELECT coalesce(max(id), 0) FROM samples").fetchone()[0]
    conn.executemany(_INSERT, (sample_row(dataset_id, s, ts) for s in samples))
    last = conn.execute("SELECT coalesce(max(id), 0) FROM samples").fetchone()[0]
    if last <= before:
        return 0, -1
    flag_duplicates(conn, before + 1, last)
    return before + 1, last


def flag_duplicates(conn: sqlite3.Connection, first: int, last: int) -> int:
    """Point dup_of of each new row at the earliest sample with the same content hash (flagged, not dropped)."""
    top = conn.execute("SELECT max(id) FROM samples").fetchone()[0] or 0  # O(log n), unlike count(*)
    if (last - first + 1) * 20 < top:
        # a small batch (a worker's commit): one index probe per new row, cost independent of the store's size
        dup = "EXISTS (SELECT 1 FROM samples s3 WHERE s3.content_hash = samples.content_hash AND s3.id < samples.id)"
    else:
        # a bulk import: one sequential scan of the hash index beats a random probe per row (0.5 s vs 1.9 s / 100k)
        dup = ("content_hash IN (SELECT content_hash FROM samples GROUP BY content_hash HAVING count(*) > 1) "
               "AND id != (SELECT min(s3.id) FROM samples s3 WHERE s3.content_hash = samples.content_hash)")
    return conn.execute(
        "UPDATE samples SET dup_of = (SELECT min(s2.id) FROM samples s2 WHERE s2.content_hash = samples.content_hash) "
        f"WHERE id BETWEEN ? AND ? AND {dup}", (first, last)).rowcount


SAMPLE_COLUMNS = ("id", "dataset_id", "instruction", "input", "response", "rejected", "system", "messages",
                  "task_type", "domain", "difficulty", "language", "metadata", "content_hash", "dup_of", "import_id",
                  "source_line", "parent_id", "job_id", "origin", "status", "instruction_len",
                  "response_len", "created_at", "updated_at")   # scores: workbench/scores.py (per rubric)
_SELECT = "SELECT " + ", ".join(SAMPLE_COLUMNS) + " FROM samples"


def decode_sample(row: tuple) -> dict:
    s = dict(zip(SAMPLE_COLUMNS, row))
    for k in ("messages", "metadata", "origin"):
        if s[k] is not None:
            s[k] = orjson.loads(s[k])
    return s


def get_sample(conn: sqlite3.Connection, sample_id: int) -> dict | None:
    row = conn.execute(_SELECT + " WHERE id = ?", (sample_id,)).fetchone()
    return decode_sample(row) if row else None


def require_sample(conn: sqlite3.Connection, sample_id: int) -> dict:
    s = get_sample(conn, sample_id)
    if s is None:
        raise KeyError(f"no sample with id {sample_id}")
    return s


def iter_samples(conn: sqlite3.Connection, where: str = "1", params: tuple = (), batch: int = 2000):
    """Every matching sample, in id order, by keyset pagination: memory stays flat at any size."""
    last = 0
    while True:
        rows = conn.execute(f"{_SELECT} WHERE ({where}) AND id > ? ORDER BY id LIMIT ?",
                            (*params, last, batch)).fetchall()
        if not rows:
            return
        for r in rows:
            yield decode_sample(r)
        last = rows[-1][0]


FTS_FIELDS = ("instruction", "input", "response")


def write_text(conn: sqlite3.Connection, sample_id: int, values: dict, fts_later: list | None = None) -> None:
    """Inside a transaction: set text fields (`messages` as a list) of one sample (an edit, a cleaning fix or their
    undo), then recompute its content hash, lengths and FTS entry, and the duplicate flags of the rows that shared
    its old hash or share its new one, and the stale flag of its scores. With `fts_later`, the FTS change is
    appended there for the caller's store.fts_replace_many (a bulk rewrite: one sample once per batch)."""
    current = require_sample(conn, sample_id)
    new = {**current, **values}
    h = hash_of(new)
    stored = {k: (orjson.dumps(v).decode() if k == "messages" and v is not None else v) for k, v in values.items()}
    sets = ", ".join(f"{k} = ?" for k in stored)
    conn.execute(f"UPDATE samples SET {sets}, content_hash = ?, instruction_len = ?, response_len = ?, updated_at = ? "
                 "WHERE id = ?", (*stored.values(), h, len(new["instruction"] or ""), len(new["response"] or ""),
                                  now(), sample_id))
    for group in {current["content_hash"], h}:
        _reflag_duplicates(conn, group)
    scores.text_changed(conn, sample_id, h)   # its scores were given to other text: stale (fresh again on undo)
    if any(k in FTS_FIELDS for k in values):
        change = (sample_id, {k: current[k] or "" for k in FTS_FIELDS}, {k: new[k] or "" for k in FTS_FIELDS})
        if fts_later is None:
            fts_replace(conn, *change)
        else:
            fts_later.append(change)


def _reflag_duplicates(conn: sqlite3.Connection, content_hash: int | None) -> None:
    """The rows of one hash point at the group's earliest sample, which points at none (as import flags them)."""
    if content_hash is None:
        return
    first = conn.execute("SELECT min(id) FROM samples WHERE content_hash = ?", (content_hash,)).fetchone()[0]
    conn.execute("UPDATE samples SET dup_of = nullif(?, id) WHERE content_hash = ? AND dup_of IS NOT nullif(?, id)",
                 (first, content_hash, first))
