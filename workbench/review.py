"""Review core (no Textual): navigation within a filter, resume positions, sample views, counts. The decisions
(accept, reject, edit, swap, undo, ...) are in workbench/decisions.py and re-exported here.

Every decision is committed before its function returns, so a caller that shows the next sample only after the
call returns never shows it before the decision is durable.
"""
from __future__ import annotations

import sqlite3
import time
from collections import deque
from dataclasses import asdict, dataclass, fields, replace

import orjson

from . import automatic, browse, scores, stats
from .agreement import decided_by_curator, spotcheck_info
from .bigtext import PREVIEW_BYTES, preview_sql, preview_value
from .samples import SAMPLE_COLUMNS
from .decisions import (DECISION_STATUS, EDITABLE, RUBRIC_SCALES, UNDOABLE, DecisionConflict,  # noqa: F401
                        _dumps, _loads, curator_session, decide, decide_many, edit, last_undoable, latest_change,
                        mirror_turns, override, swap, undo, why_chosen)
from .store import STATUSES, fts_query, status_counts

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
    """Distinct task_type/domain values for the filter dialog, sorted (the first `limit`), from the maintained
    counts (stats.distinct_values): a DISTINCT over every row took ~5 s at 10M rows."""
    if column not in ("task_type", "domain"):
        raise ValueError(column)
    return stats.distinct_values(conn, column, dataset_id, limit)


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
    return status_counts(conn, dataset_id)


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
