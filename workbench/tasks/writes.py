"""The default write of a task's results: new samples, candidates, judgments and label updates, in the worker's
batch transaction."""
from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

import orjson

from ..samples import insert_samples
from ..scores import record as record_score
from ..store import now
from .params import TaskError

if TYPE_CHECKING:
    from .base import Item, Result, TaskContext

UPDATABLE = ("task_type", "domain", "difficulty", "language", "metadata")   # scores: Result.scores


def write_result(conn: sqlite3.Connection, ctx: TaskContext, item: Item, result: Result) -> dict:
    return write_results(conn, ctx, [(item, result)])[0]


def write_results(conn: sqlite3.Connection, ctx: TaskContext, pairs: list[tuple[Item, Result]]) -> list[dict]:
    """The default write for several items at once: all their new samples in one `insert_samples` call (its
    duplicate flagging runs once per batch, not once per item), then each item's candidates, judgments, updates."""
    rows = []
    for item, result in pairs:
        if result.samples and ctx.into_id is None:
            raise TaskError(f"task {ctx.task} produced samples but the job has no target dataset")
        for s in result.samples:
            s = dict(s)
            s.setdefault("parent_id", item.sample_id)
            s.setdefault("job_id", ctx.job_id)
            s.setdefault("origin", ctx.origin())
            rows.append(s)
    first = insert_samples(conn, ctx.into_id, rows)[0] if rows else 0
    out, pos = [], first
    for item, result in pairs:
        n = len(result.samples)
        out.append(_write_links(conn, ctx, item, result, list(range(pos, pos + n))))
        pos += n
    return out


def _write_links(conn: sqlite3.Connection, ctx: TaskContext, item: Item, result: Result, sample_ids: list[int]) -> dict:
    ts = now()

    def target(d: dict) -> int | None:
        if "sample_ref" in d:
            return sample_ids[d["sample_ref"]]
        return d.get("sample_id", item.sample_id)

    cand_ids: list[int] = []
    for c in result.candidates:
        cand_ids.append(conn.execute(
            "INSERT INTO candidates (sample_id, model, endpoint, response, job_id, created_at) VALUES (?,?,?,?,?,?)",
            (target(c), c["model"], c.get("endpoint"), c["response"], ctx.job_id, ts)).lastrowid)
    judgment_ids = []
    for j in result.judgments:
        cid = cand_ids[j["candidate_ref"]] if "candidate_ref" in j else j.get("candidate_id")
        sid = target(j)
        judgment_ids.append(conn.execute(
            "INSERT INTO judgments (sample_id, candidate_id, judge, rubric, rubric_version, scores, overall, "
            "rationale, raw, job_id, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (sid, cid, j["judge"], j["rubric"], j["rubric_version"], _json(j.get("scores")), j.get("overall"),
             j.get("rationale"), j.get("raw"), ctx.job_id, ts)).lastrowid)
    for sc in result.scores:
        record_score(conn, target(sc), sc["rubric"], sc["score"], tuple(sc["scale"]), judge=sc.get("judge"),
                     template_version=sc.get("template_version"), job_id=ctx.job_id, ts=ts)
    for u in result.updates:
        fields = {k: v for k, v in u.items() if k != "id"}
        bad = set(fields) - set(UPDATABLE)
        if bad:
            raise TaskError(f"task {ctx.task} may not update sample fields {sorted(bad)}")
        if fields:
            sets = ", ".join(f"{k} = ?" for k in fields)
            conn.execute(f"UPDATE samples SET {sets}, updated_at = ? WHERE id = ?",
                         (*[_json(v) for v in fields.values()], ts, u["id"]))
    out = dict(result.summary or {})
    if sample_ids:
        out["samples"] = sample_ids
    if cand_ids:
        out["candidates"] = cand_ids
    if judgment_ids:
        out["judgments"] = judgment_ids
    return out


def _json(v):
    if v is None or isinstance(v, (str, int, float)):
        return v
    return orjson.dumps(v).decode()
