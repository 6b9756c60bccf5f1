"""Automatic verdicts and the curator's word over them: why a row was set aside without a curator (a clean filter,
a dedup run, the curate task's threshold), how many rows that is, and the curator's override and exemptions.

A row's status comes from its latest status decision that no 'undo' reverts (accept, reject, or a run's filter /
dedup). When that decision is a run's, the rejection is automatic. Curate never changes a status: its verdict
lives in the row's metadata ("curation": {kept: false, ...}), which Review shows beside a pending status.

Overriding is a curator decision: an 'accept' (reason "override ..."), undoable with Review's undo like any other.
An exemption keeps a row that a clean filter would drop: an 'exempt' decision (reason: the filter, or "*" for
every filter) that `clean.scan` honours; `unexempt` appends an 'undo' of it.
"""
from __future__ import annotations

import sqlite3

from .store import now, transaction

AUTO_ACTIONS = ("filter", "dedup")
STATUS_ACTIONS = ("accept", "reject", *AUTO_ACTIONS)
ALL_FILTERS = "*"
# run sessions are "<kind>-<n>": these ranges let the session index find a run's rows without a scan
_RUN_SESSIONS = " OR ".join(f"(a.session >= '{k}-' AND a.session < '{k}.')" for k in AUTO_ACTIONS)
_ALIVE = "NOT EXISTS (SELECT 1 FROM decisions u WHERE u.sample_id = d.sample_id AND u.undoes = d.id)"
_LATEST = (f"SELECT d.id FROM decisions d WHERE d.sample_id = s.id AND d.action IN "
           f"({', '.join(repr(a) for a in STATUS_ACTIONS)}) AND {_ALIVE} ORDER BY d.id DESC LIMIT 1")


def status_decision(conn: sqlite3.Connection, sample_id: int) -> dict | None:
    """The decision that set the row's status (None: never decided)."""
    row = conn.execute(
        f"SELECT d.id, d.action, d.reason, d.session, d.created_at FROM decisions d WHERE d.sample_id = ? AND "
        f"d.action IN ({', '.join('?' * len(STATUS_ACTIONS))}) AND {_ALIVE} ORDER BY d.id DESC LIMIT 1",
        (sample_id, *STATUS_ACTIONS)).fetchone()
    if row is None:
        return None
    return dict(zip(("id", "action", "reason", "session", "created_at"), row))


def reason(conn: sqlite3.Connection, sample: dict) -> dict | None:
    """Why an automatic step set this row aside, or None: {source, run, text} (text: what Review shows)."""
    if sample["status"] == "rejected":
        d = status_decision(conn, sample["id"])
        if d and d["action"] in AUTO_ACTIONS:
            what = f"filter {d['reason']}" if d["action"] == "filter" else (d["reason"] or "duplicate")
            return {"source": d["action"], "run": d["session"], "text": f"{what} ({d['session']})"}
    verdict = (sample.get("metadata") or {}).get("curation") if isinstance(sample.get("metadata"), dict) else None
    if sample["status"] == "pending" and isinstance(verdict, dict) and verdict.get("kept") is False:
        job = f" (job {verdict['job']})" if verdict.get("job") is not None else ""
        return {"source": "curate", "run": verdict.get("job"),
                "text": f"curate: score {verdict.get('score')} < threshold {verdict.get('threshold')}{job}"}
    return None


def automatic_counts(conn: sqlite3.Connection) -> dict[int, int]:
    """{dataset id: rows rejected by a run (filter, dedup) and not decided since}; reads only runs' rows."""
    return dict(conn.execute(
        f"SELECT s.dataset_id, count(DISTINCT s.id) FROM decisions a JOIN samples s ON s.id = a.sample_id "
        f"WHERE ({_RUN_SESSIONS}) AND a.action IN ('filter', 'dedup') AND s.status = 'rejected' "
        f"AND a.id = ({_LATEST}) GROUP BY s.dataset_id").fetchall())


# --- exemptions: rows a curator keeps although a clean filter would drop them ---------------------------------

def exempt(conn: sqlite3.Connection, sample_id: int, filter_name: str, session: str) -> int:
    """Record that the curator keeps this row whatever `filter_name` (or "*": any filter) says. Returns the id."""
    with transaction(conn):
        if conn.execute("SELECT 1 FROM samples WHERE id = ?", (sample_id,)).fetchone() is None:
            raise KeyError(f"no sample with id {sample_id}")
        return conn.execute(
            "INSERT INTO decisions (sample_id, action, before, after, reason, session, created_at) "
            "VALUES (?, 'exempt', NULL, NULL, ?, ?, ?)", (sample_id, filter_name, session, now())).lastrowid


def unexempt(conn: sqlite3.Connection, sample_id: int, filter_name: str, session: str) -> int:
    """Withdraw the row's exemptions for `filter_name` (appending 'undo' rows). Returns how many."""
    with transaction(conn):
        ids = [r[0] for r in conn.execute(
            f"SELECT d.id FROM decisions d WHERE d.sample_id = ? AND d.action = 'exempt' AND d.reason = ? AND {_ALIVE}",
            (sample_id, filter_name))]
        conn.executemany("INSERT INTO decisions (sample_id, action, undoes, session, created_at) "
                         "VALUES (?, 'undo', ?, ?, ?)", [(sample_id, i, session, now()) for i in ids])
    return len(ids)


def exemptions(conn: sqlite3.Connection) -> dict[int, set[str]]:
    """{sample id: filters it is exempt from ("*": all)}."""
    out: dict[int, set[str]] = {}
    for sid, name in conn.execute(f"SELECT d.sample_id, d.reason FROM decisions d WHERE d.action = 'exempt' "
                                  f"AND {_ALIVE}"):
        out.setdefault(sid, set()).add(name)
    return out


def is_exempt(exempt_from: dict[int, set[str]], sample_id: int, filter_name: str) -> bool:
    names = exempt_from.get(sample_id)
    return bool(names) and (filter_name in names or ALL_FILTERS in names)
