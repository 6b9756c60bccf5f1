"""Review decisions (no Textual): accept, reject, skip, reset, override, edit, swap and undo, each an append-only
`decisions` row committed before the function returns; samples.status is a cache of the latest one.

Undo scope: a curator's review decisions form one session that survives restarts (session = "review:<user>").
`undo` reverts the latest decision of that session (optionally within one dataset) that no 'undo' row reverts
yet, by appending an 'undo' row - so pressing it again walks further back, also after the app restarted.
"""
from __future__ import annotations

import getpass
import os
import sqlite3

import orjson

from . import automatic
from .bulk_recovery import note_range, roll_back_decided
from .short_tx import ShortTransactions
from .samples import require_sample, write_text
from .store import now, transaction

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


class UnknownIds(KeyError):
    """decide_many's refusal: `missing` ids no sample has, `elsewhere` ids of another dataset (in input order), so
    a caller reading them from a file can name the line."""

    def __init__(self, message: str, missing: list[int], elsewhere: list[int]):
        super().__init__(message)
        self.missing, self.elsewhere = missing, elsewhere


def decide_many(conn: sqlite3.Connection, ids: list[int], action: str, session: str, reason: str | None = None,
                dataset_id: int | None = None) -> list[dict]:
    """The same decision on several samples (`workbench decide`), all or none: every id must exist (and be in the
    dataset), else KeyError naming the bad ids and nothing is written.

    The ids are checked first; the decisions are then written in short transactions (workbench/short_tx.py: a
    Review decision or a worker never waits long behind 500k ids), each reading the statuses it changes. A
    `bulk_runs` row ('decide') lists the id ranges of the decisions written so far: a failure midway reverts them
    (an 'undo' decision each, as Review's u) before it is reported, and a process that died midway is reverted by
    the next open (workbench/bulk_recovery.py). A sample a curator changes meanwhile keeps the curator's status."""
    _check_action(action)
    ids = list(dict.fromkeys(ids))
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
        raise UnknownIds("; ".join(parts) + " (nothing was decided)", missing, elsewhere)
    if len(ids) <= DECIDE_CHUNK:       # a handful: one transaction, no marker
        with transaction(conn):
            return [_decide(conn, sid, action, session, reason) for sid in ids]
    out: list[dict] = []
    ranges: list[list[int]] = []
    bulk = None
    try:
        with ShortTransactions(conn) as tx:
            start = conn.execute("SELECT coalesce(max(id), 0) FROM decisions").fetchone()[0]
            bulk = conn.execute("INSERT INTO bulk_runs (kind, pid, info, started_at) VALUES ('decide', ?, ?, ?)",
                                (os.getpid(), '{"ranges": []}', now())).lastrowid
            for i in range(0, len(ids), DECIDE_CHUNK):
                chunk = ids[i:i + DECIDE_CHUNK]
                # a sample decided by anyone since the command started keeps that decision (the ids are distinct:
                # none of this command's own decisions is on a sample of a later chunk)
                since = {r[0] for r in conn.execute(
                    f"SELECT sample_id FROM decisions WHERE id > ? AND action != 'skip' AND sample_id IN "
                    f"({','.join('?' * len(chunk))})", (start, *chunk))}
                done = [_decide(conn, sid, action, session, reason) for sid in chunk if sid not in since]
                if done:
                    note_range(conn, bulk, ranges, done[0]["id"], done[-1]["id"])
                out += done
                tx.next()
            conn.execute("DELETE FROM bulk_runs WHERE id = ?", (bulk,))
    except BaseException:
        if bulk is not None and conn.execute("SELECT 1 FROM bulk_runs WHERE id = ?", (bulk,)).fetchone():
            roll_back_decided(conn, bulk)
        raise
    return out


DECIDE_CHUNK = 200     # samples decided per chunk (at 500: 0.33 s transactions under load); see short_tx.py


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
