"""Review core (no Textual): decisions, undo, edits, navigation within a filter, resume positions, sample views.

Decisions are an append-only log (`decisions`); samples.status is a cache of the latest one. Every write runs in
its own transaction and is committed before the function returns, so a caller that shows the next sample only
after the call returns never shows it before the decision is durable.

Undo scope: a curator's review decisions form one session that survives restarts (session = "review:<user>").
`undo` reverts the latest decision of that session (optionally within one dataset) that no 'undo' row reverts
yet, by appending an 'undo' row — so pressing it again walks further back, also after the app restarted.
"""
from __future__ import annotations

import getpass
import sqlite3
import time
from collections import deque
from dataclasses import asdict, dataclass, fields

import orjson

from .bigtext import PREVIEW_BYTES, preview_sql, preview_value
from .samples import SAMPLE_COLUMNS, require_sample, write_text
from .store import STATUSES, fts_query, now, transaction

DECISION_STATUS = {"accept": "accepted", "reject": "rejected"}
UNDOABLE = ("accept", "reject", "skip", "edit")
EDITABLE = ("system", "instruction", "input", "response", "rejected", "messages")


def curator_session(user: str | None = None) -> str:
    try:
        user = user or getpass.getuser()
    except (KeyError, OSError):  # no passwd entry in some containers
        user = "curator"
    return f"review:{user}"


def _dumps(obj) -> str:
    return orjson.dumps(obj).decode()


def _loads(text):
    return orjson.loads(text) if text else None


# --- filters and navigation -----------------------------------------------------------------------

@dataclass
class Filter:
    """What the Review screen walks through, in id order. None = no constraint."""
    dataset_id: int | None = None
    status: str | None = None
    min_score: float | None = None
    max_score: float | None = None
    task_type: str | None = None
    domain: str | None = None
    search: str | None = None

    def __post_init__(self):
        if self.status is not None and self.status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, not {self.status!r}")
        if self.search is not None and not fts_query(self.search):
            self.search = None

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, d: dict | None) -> "Filter":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (d or {}).items() if k in names})

    def where(self, alias: str = "s") -> tuple[str, list]:
        clauses, params = [], []
        for col in ("dataset_id", "status", "task_type", "domain"):
            value = getattr(self, col)
            if value is not None:
                clauses.append(f"{alias}.{col} = ?")
                params.append(value)
        if self.min_score is not None:
            clauses.append(f"{alias}.score >= ?")
            params.append(self.min_score)
        if self.max_score is not None:
            clauses.append(f"{alias}.score <= ?")
            params.append(self.max_score)
        return (" AND ".join(clauses) or "1"), params

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in self.to_dict().items() if k not in ("dataset_id", "search")]
        if self.search:
            parts.append(f"search={self.search!r}")
        return ", ".join(parts)


def _step(conn: sqlite3.Connection, flt: Filter, ref: int, forward: bool) -> int | None:
    op, order = (">", "ASC") if forward else ("<", "DESC")
    where, params = flt.where("s")
    if flt.search:
        sql = (f"SELECT s.id FROM samples_fts JOIN samples s ON s.id = samples_fts.rowid "
               f"WHERE samples_fts MATCH ? AND samples_fts.rowid {op} ? AND {where} "
               f"ORDER BY samples_fts.rowid {order} LIMIT 1")
        params = [fts_query(flt.search), ref, *params]
    else:
        sql = f"SELECT s.id FROM samples s WHERE s.id {op} ? AND {where} ORDER BY s.id {order} LIMIT 1"
        params = [ref, *params]
    row = conn.execute(sql, params).fetchone()
    return row[0] if row else None


def next_id(conn: sqlite3.Connection, flt: Filter, after: int) -> int | None:
    return _step(conn, flt, after, True)


def prev_id(conn: sqlite3.Connection, flt: Filter, before: int) -> int | None:
    return _step(conn, flt, before, False)


def first_id(conn: sqlite3.Connection, flt: Filter) -> int | None:
    return _step(conn, flt, 0, True)


def first_pending(conn: sqlite3.Connection, flt: Filter) -> int | None:
    """The first pending sample under the filter's other constraints (its status constraint is replaced)."""
    return first_id(conn, Filter(**{**asdict(flt), "status": "pending"}))


def matches(conn: sqlite3.Connection, flt: Filter, sample_id: int) -> bool:
    where, params = flt.where("s")
    sql = f"SELECT 1 FROM samples s WHERE s.id = ? AND {where}"
    if flt.search:
        sql += " AND s.id IN (SELECT rowid FROM samples_fts WHERE samples_fts MATCH ? AND rowid = ?)"
        params = [*params, fts_query(flt.search), sample_id]
    return conn.execute(sql, [sample_id, *params]).fetchone() is not None


def facet_values(conn: sqlite3.Connection, column: str, dataset_id: int | None = None, limit: int = 200) -> list[str]:
    """Distinct task_type/domain values for the filter dialog (index scans on (dataset_id, column))."""
    if column not in ("task_type", "domain"):
        raise ValueError(column)
    if dataset_id is None:
        sql, params = f"SELECT DISTINCT {column} FROM samples WHERE {column} IS NOT NULL LIMIT ?", (limit,)
    else:
        sql = f"SELECT DISTINCT {column} FROM samples WHERE dataset_id = ? AND {column} IS NOT NULL LIMIT ?"
        params = (dataset_id, limit)
    return sorted(r[0] for r in conn.execute(sql, params))


def facets(conn: sqlite3.Connection, dataset_id: int | None = None) -> dict:
    """Choices for the filter dialog."""
    return {"task_type": facet_values(conn, "task_type", dataset_id),
            "domain": facet_values(conn, "domain", dataset_id),
            "datasets": conn.execute("SELECT id, name FROM datasets ORDER BY id").fetchall()}


# --- resume positions -----------------------------------------------------------------------------

def _position_key(dataset_id: int | None) -> str:
    return f"review.position.{dataset_id if dataset_id is not None else 'all'}"


def save_position(conn: sqlite3.Connection, dataset_id: int | None, sample_id: int, flt: Filter) -> None:
    value = _dumps({"sample_id": sample_id, "filter": flt.to_dict()})
    conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                 (_position_key(dataset_id), value))


def load_position(conn: sqlite3.Connection, dataset_id: int | None) -> tuple[int | None, Filter | None]:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (_position_key(dataset_id),)).fetchone()
    if not row:
        return None, None
    data = orjson.loads(row[0])
    try:
        flt = Filter.from_dict(data.get("filter"))
    except ValueError:
        flt = None
    return data.get("sample_id"), flt


def goto(conn: sqlite3.Connection, flt: Filter, how: str, ref: int | None = None) -> dict | None:
    """Find the sample to show (how: next | prev | first | first_pending | start | id), load it, remember it as the
    resume position of the filter's dataset. None if there is no such sample."""
    if how == "next":
        sid = next_id(conn, flt, ref or 0)
    elif how == "prev":
        sid = prev_id(conn, flt, ref or 0)
    elif how == "first":
        sid = first_id(conn, flt)
    elif how == "first_pending":
        sid = first_pending(conn, flt)
    elif how == "start":
        sid = ref if ref is not None else start_id(conn, flt, flt.dataset_id)
    elif how == "id":
        sid = ref
    else:
        raise ValueError(how)
    sample = load_sample(conn, sid) if sid is not None else None
    if sample is not None:
        save_position(conn, flt.dataset_id, sample["id"], flt)
    return sample


def open_view(conn: sqlite3.Connection, dataset: str | None, sample_id: int | None = None) -> tuple[Filter, dict | None]:
    """What Review shows when it opens on `dataset` (None = all): the saved filter and position, or a fresh start."""
    did = None
    if dataset is not None:
        row = conn.execute("SELECT id FROM datasets WHERE name = ?", (dataset,)).fetchone()
        if row is None:
            raise KeyError(f"no dataset named {dataset!r}")
        did = row[0]
    _, saved = load_position(conn, did)
    flt = saved or Filter()
    flt.dataset_id = did
    return flt, goto(conn, flt, "start", sample_id)


def start_id(conn: sqlite3.Connection, flt: Filter, dataset_id: int | None) -> int | None:
    """Where Review opens: the saved position if that sample still exists, else the first pending, else the first."""
    saved, _ = load_position(conn, dataset_id)
    if saved is not None and conn.execute("SELECT 1 FROM samples WHERE id = ?", (saved,)).fetchone():
        return saved
    return first_pending(conn, flt) or first_id(conn, flt)


# --- decisions ------------------------------------------------------------------------------------

def _status(conn: sqlite3.Connection, sample_id: int) -> str:
    row = conn.execute("SELECT status FROM samples WHERE id = ?", (sample_id,)).fetchone()
    if row is None:
        raise KeyError(f"no sample with id {sample_id}")
    return row[0]


def _log(conn, sample_id, action, before, after, session, undoes=None, reason=None) -> int:
    return conn.execute(
        "INSERT INTO decisions (sample_id, action, before, after, reason, undoes, session, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (sample_id, action, _dumps(before), _dumps(after), reason, undoes, session, now())).lastrowid


class DecisionConflict(Exception):
    """Another session decided the sample after it was shown here: refused, nothing overwritten."""


def latest_change(conn: sqlite3.Connection, sample_id: int) -> int:
    """Id of the sample's latest decision that changed something (0 if none). A skip only logs a visit."""
    row = conn.execute("SELECT max(id) FROM decisions WHERE sample_id = ? AND action != 'skip'",
                       (sample_id,)).fetchone()
    return row[0] or 0


def _check_unchanged(conn: sqlite3.Connection, sample_id: int, seen: int | None, *, undoing: bool = False) -> None:
    """Compare-and-set: `seen` is latest_change() when the sample was shown. A later change (another Review
    window, even of the same curator; a cleaning run) refuses the write, naming that decision. An undo ignores
    the later rows of its own undo chain (undo rows and the decisions they reverted)."""
    if seen is None:
        return
    chain = ("AND d.action != 'undo' AND NOT EXISTS (SELECT 1 FROM decisions u WHERE u.sample_id = d.sample_id "
             "AND u.undoes = d.id)") if undoing else ""
    row = conn.execute("SELECT d.id, d.action, d.session, d.created_at, d.after FROM decisions d "
                       f"WHERE d.sample_id = ? AND d.action != 'skip' AND d.id > ? {chain} ORDER BY d.id DESC LIMIT 1",
                       (sample_id, seen)).fetchone()
    if row is not None:
        did, action, other, at, after = row
        status = (_loads(after) or {}).get("status") if action != "edit" else None
        what = action + (f" (now {status})" if status else "")
        raise DecisionConflict(f"#{sample_id} was changed after it was shown: decision {did}, {what} by "
                               f"{other or 'another process'} at {at}; yours was not applied")


def decide(conn: sqlite3.Connection, sample_id: int, action: str, session: str, reason: str | None = None,
           *, seen: int | None = None) -> dict:
    """accept / reject / skip one sample; committed when this returns. Skip logs the visit, status unchanged.

    `seen`: latest_change() of the sample when it was shown; a later change by another session is refused
    (DecisionConflict) instead of overwritten."""
    if action not in ("accept", "reject", "skip"):
        raise ValueError(f"unknown review action {action!r}")
    with transaction(conn):
        old = _status(conn, sample_id)
        _check_unchanged(conn, sample_id, seen)
        new = DECISION_STATUS.get(action, old)
        if new != old:
            conn.execute("UPDATE samples SET status = ?, updated_at = ? WHERE id = ?", (new, now(), sample_id))
        did = _log(conn, sample_id, action, {"status": old}, {"status": new}, session, reason=reason)
    return {"id": did, "sample_id": sample_id, "action": action, "before": {"status": old}, "after": {"status": new}}


def mirror_turns(sample: dict) -> dict[str, int]:
    """Which turn of `messages` each of instruction/response/system mirrors (the importer's convention: the last
    user turn, the assistant turn after it, the first system turn; a preference row's messages hold only the
    prompt, so its response mirrors nothing)."""
    msgs = sample.get("messages")
    if not isinstance(msgs, list):
        return {}
    roles = [m.get("role") if isinstance(m, dict) else None for m in msgs]
    targets = {}
    users = [i for i, r in enumerate(roles) if r == "user"]
    if users:
        targets["instruction"] = users[-1]
        if sample.get("rejected") is None:
            after = [i for i in range(users[-1] + 1, len(msgs)) if roles[i] == "assistant"]
            if after:
                targets["response"] = after[0]
    systems = [i for i, r in enumerate(roles) if r == "system"]
    if systems:
        targets["system"] = systems[0]
    return targets


def _mirrored_messages(sample: dict, changed: dict) -> list | None:
    """Editing a mirror field edits its turn too, so exports in any format agree. None if no turn changes."""
    targets = {f: i for f, i in mirror_turns(sample).items() if f in changed}
    if not targets:
        return None
    msgs = [dict(m) if isinstance(m, dict) else m for m in sample["messages"]]
    for field, i in targets.items():
        msgs[i]["content"] = changed[field]
    return msgs


def _check_turn_edit(current: list | None, new) -> None:
    """An edit may change what the turns say, not which turns there are."""
    if (not isinstance(current, list) or not isinstance(new, list) or len(new) != len(current)
            or any(not isinstance(n, dict) or not isinstance(n.get("content"), str)
                   or not isinstance(c, dict) or n.get("role") != c.get("role") for n, c in zip(new, current))):
        raise ValueError("an edit of messages must keep the same turns and roles and change only their text")


def edit(conn: sqlite3.Connection, sample_id: int, changes: dict, session: str, *,
         seen: int | None = None) -> dict | None:
    """Change text fields; the decision keeps the original text (before) and the new (after). None if unchanged.
    `seen` as for decide()."""
    bad = set(changes) - set(EDITABLE)
    if bad:
        raise ValueError(f"fields that cannot be edited: {', '.join(sorted(bad))}")
    with transaction(conn):
        current = require_sample(conn, sample_id)
        _check_unchanged(conn, sample_id, seen)
        changed = {k: v for k, v in changes.items() if v != current[k]}
        if not changed:
            return None
        if "messages" in changed:      # a conversation's other turns, edited in place
            _check_turn_edit(current["messages"], changed["messages"])
        msgs = _mirrored_messages({**current, **changed}, changed)
        if msgs is not None:
            changed["messages"] = msgs
        if "messages" in changed:      # a mirrored turn edited directly: its field follows
            for f, i in mirror_turns({**current, **changed}).items():
                if changed["messages"][i]["content"] != current["messages"][i]["content"]:
                    changed.setdefault(f, changed["messages"][i]["content"])
        before = {k: current[k] for k in changed}
        write_text(conn, sample_id, changed)
        did = _log(conn, sample_id, "edit", before, changed, session)
    return {"id": did, "sample_id": sample_id, "action": "edit", "before": before, "after": changed}


def last_undoable(conn: sqlite3.Connection, session: str, dataset_id: int | None = None) -> dict | None:
    sql = ("SELECT d.id, d.sample_id, d.action, d.before, d.after FROM decisions d "
           "WHERE d.session = ? AND d.action IN ('accept', 'reject', 'skip', 'edit') "
           "AND NOT EXISTS (SELECT 1 FROM decisions u WHERE u.sample_id = d.sample_id AND u.undoes = d.id)")
    params: list = [session]
    if dataset_id is not None:
        sql += " AND d.sample_id IN (SELECT id FROM samples WHERE dataset_id = ?)"
        params.append(dataset_id)
    row = conn.execute(sql + " ORDER BY d.id DESC LIMIT 1", params).fetchone()
    if row is None:
        return None
    return {"id": row[0], "sample_id": row[1], "action": row[2], "before": _loads(row[3]), "after": _loads(row[4])}


def undo(conn: sqlite3.Connection, session: str, dataset_id: int | None = None) -> dict | None:
    """Revert the session's latest not-yet-undone decision by appending an 'undo' row. None if nothing is left."""
    with transaction(conn):
        target = last_undoable(conn, session, dataset_id)
        if target is None:
            return None
        sid, restore = target["sample_id"], target["before"] or {}
        _check_unchanged(conn, sid, target["id"], undoing=True)  # another session's later change is not reverted
        if target["action"] == "edit":
            now_values = require_sample(conn, sid)
            current = {k: now_values[k] for k in restore}
            write_text(conn, sid, restore)
        else:
            current = {"status": _status(conn, sid)}
            if restore.get("status") and restore["status"] != current["status"]:
                conn.execute("UPDATE samples SET status = ?, updated_at = ? WHERE id = ?",
                             (restore["status"], now(), sid))
        did = _log(conn, sid, "undo", current, restore, session, undoes=target["id"])
    return {"id": did, "sample_id": sid, "action": "undo", "undid": target["action"], "undoes": target["id"],
            "before": current, "after": restore}


# --- one sample with everything the Review screen shows -----------------------------------------------

_CLIPPED = ("instruction", "input", "response", "rejected", "system", "messages", "metadata", "origin")
_JSON_COLUMNS = ("messages", "metadata", "origin")


def load_sample(conn: sqlite3.Connection, sample_id: int) -> dict | None:
    """One sample as Review shows it. Text fields hold at most PREVIEW_BYTES of text; `clipped` maps each longer
    field to its full size in bytes (a JSON column that long is not decoded: None). Edit only fields not clipped."""
    cols = [preview_sql(f"s.{c}") if c in _CLIPPED else f"s.{c}" for c in SAMPLE_COLUMNS]
    row = conn.execute("SELECT " + ", ".join(cols) + ", d.name FROM samples s "
                       "LEFT JOIN datasets d ON d.id = s.dataset_id WHERE s.id = ?", (sample_id,)).fetchone()
    if row is None:
        return None
    s, clipped, i = {}, {}, 0
    for c in SAMPLE_COLUMNS:
        if c in _CLIPPED:
            s[c], cut = preview_value(row[i])
            if cut:
                clipped[c] = row[i + 1]
                if c in _JSON_COLUMNS:      # half a JSON document means nothing: not decoded
                    s[c] = None
            elif c in _JSON_COLUMNS and s[c] is not None:
                s[c] = orjson.loads(s[c])
            i += 2
        else:
            s[c] = row[i]
            i += 1
    s["clipped"] = clipped
    s["dataset"] = row[-1]
    s["seen"] = latest_change(conn, sample_id)   # for the compare-and-set of a decision made on what is shown
    s["judgments"] = [
        {"judge": r[0], "rubric": r[1], "rubric_version": r[2], "scores": _loads(r[3]) or {}, "overall": r[4],
         "rationale": r[5], "candidate_id": r[6], "created_at": r[7]}
        for r in conn.execute("SELECT judge, rubric, rubric_version, scores, overall, "
                              f"substr(rationale, 1, {PREVIEW_BYTES}), candidate_id, "
                              "created_at FROM judgments WHERE sample_id = ? ORDER BY id", (sample_id,))]
    s["candidates"] = [
        {"id": r[0], "model": r[1], "endpoint": r[2], "job_id": r[3], "response": preview_value(r[4])[0],
         "size": r[5] if isinstance(r[4], bytes) else None}
        for r in conn.execute(f"SELECT id, model, endpoint, job_id, {preview_sql('response')} FROM candidates "
                              "WHERE sample_id = ? ORDER BY id", (sample_id,))]
    # preference judging scores each candidate alone: name the candidate in its judgment, the score in the candidate
    models = {c["id"]: c["model"] for c in s["candidates"]}
    for j in s["judgments"]:
        j["candidate_model"] = models.get(j["candidate_id"])
    for c in s["candidates"]:
        overalls = [j["overall"] for j in s["judgments"] if j["candidate_id"] == c["id"] and j["overall"] is not None]
        c["overall"] = sum(overalls) / len(overalls) if overalls else None
    s["lineage"] = lineage(conn, s)
    return s


def lineage(conn: sqlite3.Connection, s: dict) -> dict:
    """Where a sample came from: import file and line, parent sample, job, and the task/model in its origin."""
    out: dict = {}
    if s.get("import_id"):
        r = conn.execute("SELECT file, format FROM imports WHERE id = ?", (s["import_id"],)).fetchone()
        if r:
            out["import"] = {"file": r[0], "format": r[1], "line": s.get("source_line")}
    if s.get("parent_id"):
        r = conn.execute("SELECT s.id, d.name, substr(s.instruction, 1, 200) FROM samples s "
                         "LEFT JOIN datasets d ON d.id = s.dataset_id WHERE s.id = ?", (s["parent_id"],)).fetchone()
        out["parent"] = ({"id": r[0], "dataset": r[1], "instruction": r[2]} if r
                         else {"id": s["parent_id"], "missing": True})
    if s.get("job_id"):
        r = conn.execute("SELECT id, kind, status FROM jobs WHERE id = ?", (s["job_id"],)).fetchone()
        out["job"] = {"id": r[0], "kind": r[1], "status": r[2]} if r else {"id": s["job_id"], "missing": True}
    origin = s.get("origin")
    if isinstance(origin, dict):
        out["origin"] = origin
    if s.get("dup_of"):
        out["dup_of"] = s["dup_of"]
    return out


def _status_counts(conn: sqlite3.Connection, dataset_id: int | None) -> dict[int, dict[str, int]]:
    """{dataset_id: {status: n}} from the maintained Balance counts (sample_stats, kept right by triggers) plus a
    GROUP BY over the not-yet-folded tail, in one read snapshot: a few ms at any size once folded."""
    ds, params = ("AND dataset_id = ?", (dataset_id,)) if dataset_id is not None else ("", ())
    out: dict[int, dict[str, int]] = {}
    own = not conn.in_transaction
    if own:
        conn.execute("BEGIN")
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'stats_upto'").fetchone()
        upto = int(row[0]) if row else 0
        for did, status, n in conn.execute(
                f"SELECT dataset_id, status, sum(n) FROM sample_stats WHERE dim = 'task_type' {ds} "
                "GROUP BY dataset_id, status", params):
            by = out.setdefault(did, {})
            by[status] = by.get(status, 0) + (n or 0)
        for did, status, n in conn.execute(f"SELECT dataset_id, status, count(*) FROM samples WHERE id > ? {ds} "
                                           "GROUP BY dataset_id, status", (upto, *params)):
            by = out.setdefault(did, {})
            by[status] = by.get(status, 0) + n
    finally:
        if own:
            conn.execute("COMMIT")
    return out


def counts(conn: sqlite3.Connection, dataset_id: int | None) -> dict:
    """Samples per status in one dataset (None: all), for the Review status line."""
    out = {s: 0 for s in STATUSES}
    for by in _status_counts(conn, dataset_id).values():
        for status, n in by.items():
            out[status] = out.get(status, 0) + n
    return out


def progress(conn: sqlite3.Connection) -> list[dict]:
    """Every dataset with rows and counts per status, for the Datasets screen (cheap at any size)."""
    per = _status_counts(conn, None)
    out = []
    for did, name, kind in conn.execute("SELECT id, name, kind FROM datasets ORDER BY id"):
        by = {s: 0 for s in STATUSES}
        by.update(per.get(did, {}))
        out.append({"id": did, "name": name, "kind": kind, "rows": sum(by.values()), **by})
    return out


# --- the session counter ----------------------------------------------------------------------------

class SessionStats:
    """Decisions made since the screen opened, and the pace over the last few minutes."""

    WINDOW = 300.0

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.started = clock()
        self.decisions = 0
        self.undos = 0
        self._times: deque[float] = deque()

    def record(self, action: str) -> None:
        if action == "undo":
            self.undos += 1
            return
        self.decisions += 1
        self._times.append(self.clock())

    def rate_per_minute(self) -> float:
        t = self.clock()
        while self._times and t - self._times[0] > self.WINDOW:
            self._times.popleft()
        span = min(self.WINDOW, t - self.started)
        return len(self._times) / span * 60 if span > 0 else 0.0
