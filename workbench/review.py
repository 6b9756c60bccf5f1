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
from dataclasses import asdict, dataclass, fields, replace

import orjson

from . import automatic, browse, scores
from .agreement import decided_by_curator, spotcheck_info
from .bigtext import PREVIEW_BYTES, preview_sql, preview_value
from .samples import SAMPLE_COLUMNS, require_sample, write_text
from .store import STATUSES, fts_query, now, transaction

DECISION_STATUS = {"accept": "accepted", "reject": "rejected", "reset": "pending"}
UNDOABLE = ("accept", "reject", "skip", "edit", "reset", "swap")
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
    min_score: str | None = None       # RUBRIC=N (or several, comma-separated): see workbench/scores.py
    max_score: str | None = None
    task_type: str | None = None
    domain: str | None = None
    search: str | None = None
    include_stale: bool = False        # score bounds also match scores given before an edit
    selection: str | None = None       # only this named selection (e.g. a spot-check), in id order

    def __post_init__(self):
        if self.status is not None and self.status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, not {self.status!r}")
        if self.search is not None and not fts_query(self.search):
            self.search = None
        for name in ("min_score", "max_score"):   # a saved filter from before per-rubric scores held a bare number
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise ValueError(f"{name}: name the rubric, e.g. curate=4.5")
        self.scores = scores.build(self.min_score, self.max_score, self.include_stale)  # refuses a bare number

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None and v is not False}

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
        if self.scores:
            cond, cparams = self.scores.sql(f"{alias}.id")
            clauses.append(cond)
            params += cparams
        if self.selection is not None:
            clauses.append(f"{alias}.id IN (SELECT sample_id FROM selections WHERE name = ?)")
            params.append(self.selection)
        return (" AND ".join(clauses) or "1"), params

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in self.to_dict().items()
                 if k not in ("dataset_id", "search", "min_score", "max_score", "include_stale")]
        if self.scores:
            parts.append(f"score {self.scores.describe()}")
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
            "rubrics": scores.rubrics(conn),
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
        sample["blind"] = blind(conn, flt, sample["id"])
    return sample


@dataclass(frozen=True)
class BrowseOrder:
    """Review entered from Browse walks Browse's rows: its filter and query, in its sort order."""
    flt: "browse.Filter"
    sort: "browse.Sort"
    query: str = ""          # the query text, to show

    def describe(self) -> str:
        order = f"{self.sort.key}{' desc' if self.sort.descending else ''}"
        return f"Browse order ({order}{', ' + self.query if self.query else ''})"


def goto_ordered(conn: sqlite3.Connection, order: BrowseOrder, how: str, key: tuple | None = None,
                 sample_id: int | None = None, flt: Filter | None = None) -> tuple[dict | None, tuple | None]:
    """Like `goto`, in Browse's order: (sample, its Browse key). `key` is where the walk stands (the key the shown
    sample had when it was shown: a decision may change its sort value, the walk goes on from where it was)."""
    if how in ("next", "prev"):
        rows = browse.page(conn, order.flt, order.sort, key, 1, backward=how == "prev")
    elif how == "first":
        rows = browse.page(conn, order.flt, order.sort, None, 1)
    elif how == "first_pending":
        rows = browse.page(conn, replace(order.flt, status="pending"), order.sort, None, 1)
    elif how == "id":
        r = browse.row(conn, sample_id, order.sort, order.flt.rubric) if sample_id is not None else None
        rows = [r] if r else []
    else:
        raise ValueError(how)
    if not rows:
        return None, None
    sample = load_sample(conn, rows[0].id)
    if sample is not None and flt is not None:   # the resume position of Review's own filter
        save_position(conn, flt.dataset_id, sample["id"], flt)
        sample["blind"] = blind(conn, flt, sample["id"])
    return sample, rows[0].key


def blind(conn: sqlite3.Connection, flt: Filter, sample_id: int) -> bool:
    """Walking a spot-check, a sample's scores stay hidden until a curator decided it (see agreement.py)."""
    return spotcheck_info(conn, flt.selection) is not None and not decided_by_curator(conn, sample_id)


def open_view(conn: sqlite3.Connection, dataset: str | None, sample_id: int | None = None,
              selection: str | None = None) -> tuple[Filter, dict | None]:
    """What Review shows when it opens on `dataset` (None = all): the saved filter and position, or a fresh start.
    With `selection`: that selection alone (e.g. a spot-check), from its first pending sample."""
    did = None
    if dataset is not None:
        row = conn.execute("SELECT id FROM datasets WHERE name = ?", (dataset,)).fetchone()
        if row is None:
            raise KeyError(f"no dataset named {dataset!r}")
        did = row[0]
    if selection is not None:
        if not conn.execute("SELECT 1 FROM selections WHERE name = ? LIMIT 1", (selection,)).fetchone():
            raise KeyError(f"no selection named {selection!r}")
        flt = Filter(dataset_id=did, selection=selection)
        start = sample_id if sample_id is not None else (first_pending(conn, flt) or first_id(conn, flt))
        return flt, goto(conn, flt, "id", start) if start is not None else None
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
    """accept / reject / skip / reset (back to pending) one sample; committed when this returns. Skip logs the
    visit, status unchanged.

    `seen`: latest_change() of the sample when it was shown; a later change by another session is refused
    (DecisionConflict) instead of overwritten."""
    _check_action(action)
    with transaction(conn):
        _check_unchanged(conn, sample_id, seen)
        return _decide(conn, sample_id, action, session, reason)


def decide_many(conn: sqlite3.Connection, ids: list[int], action: str, session: str, reason: str | None = None,
                dataset_id: int | None = None) -> list[dict]:
    """The same decision on several samples (`workbench decide`), all or none: every id must exist (and be in the
    dataset), else KeyError naming the bad ids and nothing is written."""
    _check_action(action)
    ids = list(dict.fromkeys(ids))
    with transaction(conn):
        found = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            found.update(conn.execute(f"SELECT id, dataset_id FROM samples WHERE id IN ({','.join('?' * len(chunk))})",
                                      chunk).fetchall())
        missing = [i for i in ids if i not in found]
        elsewhere = [i for i in ids if i in found and dataset_id is not None and found[i] != dataset_id]
        if missing or elsewhere:
            parts = []
            if missing:
                parts.append(f"no sample with id {_id_list(missing)}")
            if elsewhere:
                parts.append(f"not in this dataset: {_id_list(elsewhere)}")
            raise KeyError("; ".join(parts) + " (nothing was decided)")
        return [_decide(conn, sid, action, session, reason) for sid in ids]


def _id_list(ids: list[int], limit: int = 10) -> str:
    return ", ".join(map(str, ids[:limit])) + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def _check_action(action: str) -> None:
    if action not in ("accept", "reject", "skip", "reset"):
        raise ValueError(f"unknown review action {action!r}")


def _decide(conn, sample_id: int, action: str, session: str, reason: str | None) -> dict:
    old = _status(conn, sample_id)
    new = DECISION_STATUS.get(action, old)
    if new != old:
        conn.execute("UPDATE samples SET status = ?, updated_at = ? WHERE id = ?", (new, now(), sample_id))
    did = _log(conn, sample_id, action, {"status": old}, {"status": new}, session, reason=reason)
    return {"id": did, "sample_id": sample_id, "action": action, "before": {"status": old}, "after": {"status": new}}


def override(conn: sqlite3.Connection, sample_id: int, session: str) -> dict:
    """The curator keeps a row an automatic step set aside (clean filter, dedup, curate threshold): an 'accept'
    decision naming what it overrides (undoable like any decision). ValueError if nothing automatic applies."""
    sample = require_sample(conn, sample_id)
    why = automatic.reason(conn, sample)
    if why is None:
        raise ValueError(f"#{sample_id} was not set aside by an automatic step: nothing to override")
    return decide(conn, sample_id, "accept", session, reason=f"override: {why['text']}")


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


def swap(conn: sqlite3.Connection, sample_id: int, session: str, *, seen: int | None = None) -> dict:
    """Swap a pair's chosen and rejected answers: a decision like an edit (logged, undoable). `seen` as for
    decide()."""
    with transaction(conn):
        current = require_sample(conn, sample_id)
        _check_unchanged(conn, sample_id, seen)
        if current["rejected"] is None:
            raise ValueError(f"sample #{sample_id} is not a pair: there is no rejected answer to swap with")
        before = {"response": current["response"], "rejected": current["rejected"]}
        after = {"response": current["rejected"], "rejected": current["response"]}
        write_text(conn, sample_id, after)
        did = _log(conn, sample_id, "swap", before, after, session)
    return {"id": did, "sample_id": sample_id, "action": "swap", "before": before, "after": after}


# the scale each rubric scores on (a rubric stated by an import carries its own in the origin)
RUBRIC_SCALES = {"aspects": (1, 5), "preference-rate": (1, 5), "judge": (1, 10)}


def why_chosen(s: dict) -> dict | None:
    """For a pair (generated or imported): the candidates behind chosen and rejected, their models, each score
    with its scale, the margin, and what decided it. None for a sample that is not a pair."""
    origin = s.get("origin") if isinstance(s.get("origin"), dict) else {}
    if s.get("rejected") is None and not origin.get("tie"):
        return None
    cands = s.get("candidates") or s.get("pair_candidates") or []
    scale = origin.get("scale")
    if scale is None and origin.get("rubric") in RUBRIC_SCALES:
        scale = list(RUBRIC_SCALES[origin["rubric"]])

    def side(name: str, text) -> dict:
        c = next((c for c in cands if c["response"] == text), None)
        recorded = origin.get(name) if isinstance(origin.get(name), dict) else {}
        out = {"model": c["model"] if c else recorded.get("model"),
               "score": c["overall"] if c and c.get("overall") is not None else
               (recorded.get("score") if c is None else None),
               "candidate_id": c["id"] if c else None, "scale": scale}
        if recorded.get("column"):
            out["column"] = recorded["column"]
        if c is None and cands:
            out["edited"] = True       # the text matches no candidate any more: shown as recorded, marked
        return out

    if origin.get("tie"):
        return {"tie": origin["tie"], "candidates": [{"model": c["model"], "score": c.get("overall"),
                                                      "scale": scale} for c in cands], "by": _decided_by(origin)}
    chosen, rejected = side("chosen", s["response"]), side("rejected", s["rejected"])
    # which side the source picked: a swap (or an edit) by the curator shows as a difference
    picked = origin.get("chosen", {}).get("model") if isinstance(origin.get("chosen"), dict) else None
    rec = origin.get("rejected") if isinstance(origin.get("rejected"), dict) else {}
    was_rejected = next((c for c in cands if c["id"] == rec.get("candidate_id")), None)
    if was_rejected is None and isinstance(rec.get("candidate"), int) and 0 <= rec["candidate"] < len(cands):
        was_rejected = cands[rec["candidate"]]
    swapped = was_rejected is not None and was_rejected["response"] == s["response"]
    margin = (chosen["score"] - rejected["score"]) if None not in (chosen["score"], rejected["score"]) else None
    return {"chosen": chosen, "rejected": rejected, "margin": margin, "by": _decided_by(origin),
            "swapped": swapped, "source_chosen_model": picked}


def _decided_by(origin: dict) -> str:
    if origin.get("task") == "import":
        if origin.get("prefer"):
            p = origin["prefer"]
            return f"the file's {p['column']} column = {p['value']!r}"
        return "the file's chosen/rejected columns" + (f" (scores as rubric {origin['rubric']})"
                                                     if origin.get("rubric") else "")
    if origin.get("judge"):
        return f"judge {origin['judge']}, rubric {origin.get('rubric')}, margin at least {origin.get('margin')}"
    return "not recorded"


def last_undoable(conn: sqlite3.Connection, session: str, dataset_id: int | None = None) -> dict | None:
    sql = ("SELECT d.id, d.sample_id, d.action, d.before, d.after FROM decisions d "
           "WHERE d.session = ? AND d.action IN ('accept', 'reject', 'skip', 'edit', 'reset', 'swap') "
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
        if target["action"] in ("edit", "swap"):
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
        c["scores"] = candidate_scores(s["judgments"], c["id"])
        origin = s["origin"] if isinstance(s.get("origin"), dict) else {}
        for sc in c["scores"]:     # an imported score's scale is the one the import stated (--score-scale)
            if sc["scale"] is None and origin.get("task") == "import" and sc["rubric"] == origin.get("rubric"):
                sc["scale"] = origin.get("scale")
    s["scores"] = scores.of_sample(conn, sample_id)
    s["pair_candidates"] = _pair_candidates(conn, s)
    s["lineage"] = lineage(conn, s)
    s["automatic"] = automatic.reason(conn, s)
    return s


def _pair_candidates(conn: sqlite3.Connection, s: dict) -> list[dict]:
    """A generated pair's candidates live on its prompt: fetch the two its origin names, with their scores."""
    origin = s.get("origin") if isinstance(s.get("origin"), dict) else {}
    ids = [origin[k].get("candidate_id") for k in ("chosen", "rejected") if isinstance(origin.get(k), dict)]
    ids = [i for i in ids if isinstance(i, int)]
    if s["candidates"] or not ids:
        return []
    out = []
    for cid, model, response in conn.execute(
            f"SELECT id, model, substr(response, 1, {PREVIEW_BYTES}) FROM candidates WHERE id IN ({','.join('?' * len(ids))}) ORDER BY id", ids):
        got = [r[0] for r in conn.execute("SELECT overall FROM judgments WHERE candidate_id = ? AND overall IS NOT "
                                          "NULL", (cid,))]
        out.append({"id": cid, "model": model, "response": response,
                    "overall": sum(got) / len(got) if got else None})
    return out


def candidate_scores(judgments: list[dict], candidate_id: int) -> list[dict]:
    """A candidate's judgments as scores: {rubric, score, scale, judge, dimensions} (scale None if unknown)."""
    return [{"rubric": j["rubric"], "score": j["overall"], "scale": scores.TEMPLATE_SCALES.get(j["rubric"]),
             "judge": j["judge"], "dimensions": j["scores"]}
            for j in judgments if j["candidate_id"] == candidate_id and j["overall"] is not None]


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
    """Samples per status in one dataset (None: all), for the Review status line; "automatic": the rejected ones
    a clean/dedup run rejected (no curator decided them)."""
    out = {s: 0 for s in STATUSES}
    for by in _status_counts(conn, dataset_id).values():
        for status, n in by.items():
            out[status] = out.get(status, 0) + n
    auto = automatic.automatic_counts(conn)
    out["automatic"] = sum(auto.values()) if dataset_id is None else auto.get(dataset_id, 0)
    return out


def progress(conn: sqlite3.Connection) -> list[dict]:
    """Every dataset with rows and counts per status, for the Datasets screen (cheap at any size)."""
    per = _status_counts(conn, None)
    auto = automatic.automatic_counts(conn)
    out = []
    for did, name, kind in conn.execute("SELECT id, name, kind FROM datasets ORDER BY id"):
        by = {s: 0 for s in STATUSES}
        by.update(per.get(did, {}))
        # automatic: rejected by a clean/dedup run, not by a curator; curated: the curator's own decisions
        a = auto.get(did, 0)
        out.append({"id": did, "name": name, "kind": kind, "rows": sum(by.values()), **by, "automatic": a,
                    "curated": by["accepted"] + by["rejected"] - a})
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
