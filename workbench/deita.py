"""Deita selection (Liu et al. 2023, Algorithm 1): rank rows by quality x complexity, then take the best ones
greedily while they stay diverse. Non-destructive: the result is a named selection, no sample changes.

Scores come from the Deita scorers: the `deita-quality` (evol-quality) and `deita-complexity` (evol-instruct)
rubrics of workbench/scores.py; a score made stale by an edit of the row does not count. A row without its own score takes it from its nearest ancestor with the same
prompt (instruction and input): evol-quality keeps the instruction of the evol-instruct row it rewrote, so the
complexity found there is the complexity of this row's prompt. Rows with either score missing are not eligible
and are counted, never scored by default.

Diversity without embeddings: a row is taken only if its ROUGE-L F1 to every row taken so far is below `max_rouge`
(Self-Instruct's measure, workbench/similarity.py), on the fields named (default instruction, input, response).
Ties in score go to the lower row id, so the same store always gives the same selection.
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from . import dedup
from .similarity import RougePool

QUALITY, COMPLEXITY = "deita-quality", "deita-complexity"
DEFAULT_FIELDS = ("instruction", "input", "response")


@dataclass
class DeitaPlan:
    size: int
    max_rouge: float
    fields: tuple[str, ...]
    eligible: int = 0
    missing: dict[str, int] = field(default_factory=dict)     # "quality" / "complexity" / "both" -> rows
    skipped_similar: int = 0
    ids: list[int] = field(default_factory=list)               # selected, best first
    scores: dict[int, tuple[float, float]] = field(default_factory=dict)   # id -> (quality, complexity)

    def to_json(self) -> dict:
        return {"method": "deita", "size": self.size, "selected": len(self.ids), "eligible": self.eligible,
                "max_rouge": self.max_rouge, "fields": list(self.fields), "missing": self.missing,
                "skipped_similar": self.skipped_similar,
                "rows": [{"id": i, "quality": self.scores[i][0], "complexity": self.scores[i][1],
                          "score": self.scores[i][0] * self.scores[i][1]} for i in self.ids]}


def _latest(conn: sqlite3.Connection, rubric: str, ids: list[int], stale: set[int]) -> dict[int, float]:
    """The sample's score on `rubric` (workbench/scores.py), for these samples; stale ones (the text changed since
    it was scored) are left out and noted in `stale`."""
    out: dict[int, float] = {}
    for i in range(0, len(ids), 900):
        chunk = ids[i:i + 900]
        for sid, score, is_stale in conn.execute(
                f"SELECT sample_id, score, stale FROM sample_scores WHERE rubric = ? AND sample_id IN "
                f"({','.join('?' * len(chunk))})", (rubric, *chunk)):
            if is_stale:
                stale.add(sid)
            else:
                out[sid] = float(score)
    return out


def _ancestors(conn: sqlite3.Connection, rows: dict[int, tuple]) -> dict[int, list[int]]:
    """For each row: the chain of ancestors with the same instruction and input, nearest first."""
    cache: dict[int, tuple | None] = {}

    def get(sid: int) -> tuple | None:
        if sid in rows:
            return rows[sid]
        if sid not in cache:
            cache[sid] = conn.execute("SELECT parent_id, instruction, input FROM samples WHERE id = ?",
                                      (sid,)).fetchone()
        return cache[sid]
    out = {}
    for sid, (parent, inst, inp) in rows.items():
        chain, seen = [], {sid}
        while parent is not None and parent not in seen:
            seen.add(parent)
            row = get(parent)
            if row is None or (row[1] or "", row[2] or "") != (inst or "", inp or ""):
                break
            chain.append(parent)
            parent = row[0]
        out[sid] = chain
    return out


def plan(conn: sqlite3.Connection, size: int, *, datasets: list[str] | None = None,
         statuses: list[str] | None = None, max_rouge: float = 0.7,
         fields: tuple[str, ...] = DEFAULT_FIELDS) -> DeitaPlan:
    if size < 1:
        raise ValueError("size must be at least 1")
    if not 0 < max_rouge <= 1:
        raise ValueError(f"max_rouge is a ROUGE-L F1 bound in (0, 1], not {max_rouge}")
    bad = [f for f in fields if f not in dedup.MATCH_FIELDS]
    if bad or not fields:
        raise ValueError(f"fields: {', '.join(bad) or 'none given'}; choose from {', '.join(dedup.MATCH_FIELDS)}")
    where, params = dedup.scope_where(dedup.dataset_ids(conn, datasets), statuses or ["pending", "accepted"])
    rows = {sid: (parent, inst, inp) for sid, parent, inst, inp in conn.execute(
        f"SELECT id, parent_id, instruction, input FROM samples WHERE {where}", params)}
    chains = _ancestors(conn, rows)
    every = sorted(set(rows) | {a for c in chains.values() for a in c})
    stale: set[int] = set()
    quality, complexity = _latest(conn, QUALITY, every, stale), _latest(conn, COMPLEXITY, every, stale)
    out = DeitaPlan(size, max_rouge, tuple(fields))
    ranked = []
    for sid in sorted(rows):
        q = next((quality[a] for a in (sid, *chains[sid]) if a in quality), None)
        c = next((complexity[a] for a in (sid, *chains[sid]) if a in complexity), None)
        if q is None or c is None:
            what = "both" if q is None and c is None else "quality" if q is None else "complexity"
            if stale & {sid, *chains[sid]}:
                what += " (stale)"
            out.missing[what] = out.missing.get(what, 0) + 1
            continue
        out.scores[sid] = (q, c)
        ranked.append((-q * c, sid))
    ranked.sort()
    out.eligible = len(ranked)
    pool = RougePool()
    cols = ", ".join(fields)
    for start in range(0, len(ranked), 500):
        if len(out.ids) >= size:
            break
        chunk = [sid for _, sid in ranked[start:start + 500]]
        texts = {sid: "\n".join(v or "" for v in vals) for sid, *vals in conn.execute(
            f"SELECT id, {cols} FROM samples WHERE id IN ({','.join('?' * len(chunk))})", chunk)}
        for sid in chunk:
            text = texts[sid]
            best, _ = pool.nearest(text, stop_at=max_rouge)
            if best >= max_rouge:
                out.skipped_similar += 1
                continue
            pool.add(text)
            out.ids.append(sid)
            if len(out.ids) >= size:
                break
    return out
