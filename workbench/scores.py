"""One latest score per sample and rubric (table `sample_scores`), and score filters that name the rubric.

Rubrics written by the tasks (each with its scale):
    judge                     the judge template's overall, 1-10
    judge.<dimension>         each judged dimension (judge.instruction_clarity, judge.response_quality,
                              judge.alignment), 1-10
    curate                    self-curation, 1-5
    preference.chosen         on a preference pair: the chosen answer's score (aspects 1-5, or judge 1-10)
    preference.rejected       the rejected answer's score, same scale
A later scorer records its own rubric with `record`. A score is "stale" once the sample's text changed after it
was given (an edit or normalization; undoing the edit makes it fresh again): shown as stale, left out of score
filters unless the filter says include_stale.

Filters name the rubric: `curate=4.5` (min or max bound), in Browse `score:curate=4..5`. A bare number is refused
with the rubrics present, a rubric with no score in scope is refused, and so is a bound outside the rubric's scale.
"""
from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass

from .store import now

RUBRIC_RE = re.compile(r"[a-z][a-z0-9_-]*(\.[a-z0-9_-]+)*")
# where one score must be picked for ranking (Browse's score column, keep-best, Balance) and none is named:
# the first of these that has scores, else the first rubric present in name order
PRIMARY_ORDER = ("curate", "judge", "preference.chosen")


# scales of the judgments the bundled templates produce (candidates' scores live in `judgments` only)
TEMPLATE_SCALES = {"judge": [1, 10], "curate": [1, 5], "preference-rate": [1, 5]}


class ScoreFilterError(ValueError):
    """A score filter or score that cannot be used; the message says why and what would work."""


def _check_rubric(rubric: str) -> str:
    if not isinstance(rubric, str) or not RUBRIC_RE.fullmatch(rubric):
        raise ScoreFilterError(f"rubric {rubric!r}: lowercase letters, digits, _ and -, parts joined by dots "
                               "(e.g. judge.alignment)")
    return rubric


# --- writing ---------------------------------------------------------------------------------------------

def record(conn: sqlite3.Connection, sample_id: int, rubric: str, score: float, scale: tuple[float, float], *,
           judge: str | None = None, template_version: str | None = None, job_id: int | None = None,
           ts: str | None = None) -> None:
    """Inside a transaction: the sample's latest score on `rubric` (replacing an older one), fresh."""
    _check_rubric(rubric)
    lo, hi = scale
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not lo <= score <= hi:
        raise ScoreFilterError(f"score {score!r} for rubric {rubric} is outside its scale {lo:g}-{hi:g}")
    conn.execute(_UPSERT, (rubric, float(score), float(lo), float(hi), judge, template_version, job_id, ts or now(),
                           sample_id))


def record_many(conn: sqlite3.Connection, rubric: str, scale: tuple[float, float], items, *, judge: str | None = None,
                ts: str | None = None) -> None:
    """Inside a transaction: record(...) for many (sample_id, score) pairs of one rubric, already checked against
    the scale (an import of a score column)."""
    _check_rubric(rubric)
    lo, hi = float(scale[0]), float(scale[1])
    ts = ts or now()
    conn.executemany(_UPSERT, ((rubric, float(score), lo, hi, judge, None, None, ts, sid) for sid, score in items))


# an upsert, not INSERT OR REPLACE: the maintained counts (store.py, score_stats) follow it by triggers
_UPSERT = ("INSERT INTO sample_scores (sample_id, rubric, score, scale_min, scale_max, judge, "
           "template_version, job_id, content_hash, stale, created_at) "
           "SELECT id, ?, ?, ?, ?, ?, ?, ?, content_hash, 0, ? FROM samples WHERE id = ? "
           "ON CONFLICT (sample_id, rubric) DO UPDATE SET score = excluded.score, scale_min = excluded.scale_min, "
           "scale_max = excluded.scale_max, judge = excluded.judge, template_version = excluded.template_version, "
           "job_id = excluded.job_id, content_hash = excluded.content_hash, stale = 0, "
           "created_at = excluded.created_at")


def text_changed(conn: sqlite3.Connection, sample_id: int, content_hash: int) -> None:
    """Inside the transaction that changed a sample's text: its scores are stale unless the text is back to
    what was scored."""
    conn.execute("UPDATE sample_scores SET stale = (content_hash IS NOT ?) WHERE sample_id = ? "
                 "AND stale IS NOT (content_hash IS NOT ?)", (content_hash, sample_id, content_hash))


# --- reading ---------------------------------------------------------------------------------------------

_COLS = "sample_id, rubric, score, scale_min, scale_max, judge, template_version, job_id, stale, created_at"


def _row(r) -> dict:
    return {"rubric": r[1], "score": r[2], "scale": [r[3], r[4]], "judge": r[5], "template_version": r[6],
            "job_id": r[7], "stale": bool(r[8]), "created_at": r[9]}


def of_sample(conn: sqlite3.Connection, sample_id: int) -> list[dict]:
    return [_row(r) for r in conn.execute(f"SELECT {_COLS} FROM sample_scores WHERE sample_id = ? ORDER BY rubric",
                                          (sample_id,))]


def of_samples(conn: sqlite3.Connection, ids: list[int]) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {i: [] for i in ids}
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        for r in conn.execute(f"SELECT {_COLS} FROM sample_scores WHERE sample_id IN ({','.join('?' * len(chunk))}) "
                              "ORDER BY sample_id, rubric", chunk):
            out[r[0]].append(_row(r))
    return out


def rubrics(conn: sqlite3.Connection, dataset_id: int | None = None) -> dict[str, tuple[float, float]]:
    """Rubrics scored (in the dataset, or anywhere), each with its widest scale (maintained table: instant)."""
    ds, params = ("WHERE dataset_id = ?", (dataset_id,)) if dataset_id is not None else ("", ())
    rows = conn.execute(f"SELECT rubric, min(scale_min), max(scale_max) FROM score_rubrics {ds} GROUP BY rubric",
                        params)
    return {r[0]: (r[1], r[2]) for r in rows}


def histogram_cells(conn: sqlite3.Connection, rubric: str, dataset_id: int | None = None) -> list[tuple]:
    """(bucket, status, n) of `rubric`'s fresh scores, from the maintained counts (score_stats)."""
    ds, params = ("AND dataset_id = ?", (dataset_id,)) if dataset_id is not None else ("", ())
    return conn.execute(f"SELECT bucket, status, sum(n) FROM score_stats WHERE rubric = ? {ds} "
                        f"GROUP BY bucket, status HAVING sum(n) != 0", (rubric, *params)).fetchall()


def primary_rubric(present) -> str | None:
    """The rubric used when one score must be picked and none is named (see PRIMARY_ORDER)."""
    for r in PRIMARY_ORDER:
        if r in present:
            return r
    return min(present) if present else None


def _num(v: float) -> str:
    return f"{v:g}"


def label(s: dict) -> str:
    """'curate 4/5', 'judge 7/10 (stale)'; a scale not starting at 1 is spelled out: 'x 0.5 (0-1)'."""
    lo, hi = s["scale"]
    text = f"{s['rubric']} {_num(s['score'])}/{_num(hi)}" if lo == 1 else \
        f"{s['rubric']} {_num(s['score'])} ({_num(lo)}-{_num(hi)})"
    return text + (" (stale)" if s["stale"] else "")


def describe(scores: list[dict], *, hide: set[str] | None = None) -> str:
    """Every score with its scale, main rubrics before their dimensions: 'curate 4/5 · judge 7/10 · ...'."""
    shown = [s for s in scores if not (hide and _hidden(s["rubric"], hide))]
    shown.sort(key=lambda s: (s["rubric"].count("."), s["rubric"]))
    return " · ".join(label(s) for s in shown)


def _hidden(rubric: str, hide: set[str]) -> bool:
    return any(rubric == h or rubric.startswith(h + ".") for h in hide)


# --- filters ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ScoreFilter:
    """Bounds per rubric, ((rubric, lo, hi), ...) sorted by rubric; None = unbounded on that side."""
    bounds: tuple[tuple[str, float | None, float | None], ...] = ()
    include_stale: bool = False

    def __bool__(self) -> bool:
        return bool(self.bounds)

    def sql(self, id_expr: str = "id") -> tuple[str, list]:
        """A WHERE condition on the sample whose id is `id_expr` ('1' if there are no bounds)."""
        conds, params = [], []
        for rubric, lo, hi in self.bounds:
            c = f"EXISTS (SELECT 1 FROM sample_scores sc WHERE sc.sample_id = {id_expr} AND sc.rubric = ?"
            params.append(rubric)
            if lo is not None:
                c += " AND sc.score >= ?"
                params.append(lo)
            if hi is not None:
                c += " AND sc.score <= ?"
                params.append(hi)
            if not self.include_stale:
                c += " AND sc.stale = 0"
            conds.append(c + ")")
        return " AND ".join(conds) or "1", params

    def unbounded(self) -> "ScoreFilter":
        """The same rubrics with no bounds: matches the samples that have a score on each."""
        return ScoreFilter(tuple((r, None, None) for r, _, _ in self.bounds), self.include_stale)

    def fresh_range(self, rubric: str) -> tuple[float | None, float | None] | None:
        """(lo, hi) when only samples with a fresh score on `rubric` in that range can pass (a bound on it, stale
        scores excluded), else None."""
        if self.include_stale:
            return None
        return next(((lo, hi) for r, lo, hi in self.bounds if r == rubric), None)

    def to_dict(self) -> dict:
        """JSON form (export manifests, saved Review filters): {"min_score": [...], "max_score": [...]}."""
        out: dict = {}
        mins = [f"{r}={_num(lo)}" for r, lo, _ in self.bounds if lo is not None]
        maxs = [f"{r}={_num(hi)}" for r, _, hi in self.bounds if hi is not None]
        if mins:
            out["min_score"] = mins
        if maxs:
            out["max_score"] = maxs
        if self.include_stale and self.bounds:
            out["include_stale"] = True
        return out

    def describe(self) -> str:
        parts = []
        for r, lo, hi in self.bounds:
            parts.append(f"{r}={'' if lo is None else _num(lo)}..{'' if hi is None else _num(hi)}")
        return " ".join(parts) + (" (incl. stale)" if self.include_stale and parts else "")


def _items(value) -> list[str]:
    """A bound given as 'curate=4', 'curate=4,judge=6' or a list of those (floats are bare numbers)."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        out = []
        for v in value:
            out += _items(v)
        return out
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [repr(value)]
    return [p.strip() for p in str(value).split(",") if p.strip()]


def _present_hint(present) -> str:
    return ("rubrics present: " + ", ".join(sorted(present))) if present else "no sample has a score yet"


def _parse_number(text: str, what: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise ScoreFilterError(f"{what}: {text!r} is not a number") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise ScoreFilterError(f"{what}: {text!r} is not a number")
    return v


def parse_bound(text: str, which: str, present=()) -> tuple[str, float]:
    """'curate=4.5' -> ('curate', 4.5). `which` is 'min_score' or 'max_score' (for messages)."""
    rubric, sep, value = text.partition("=")
    rubric = rubric.strip()
    if not sep:
        raise ScoreFilterError(f"{which} {text!r}: name the rubric, e.g. {which}=curate=4.5 or --{which.replace('_', '-')} "
                               f"curate=4.5 (every rubric has its own scale); {_present_hint(present)}")
    if not RUBRIC_RE.fullmatch(rubric):
        raise ScoreFilterError(f"{which} {text!r}: {rubric!r} is not a rubric name; {_present_hint(present)}")
    return rubric, _parse_number(value.strip(), f"{which} {text!r}")


def build(mins=None, maxs=None, include_stale: bool = False, present: dict | None = None) -> ScoreFilter:
    """A ScoreFilter from min/max bounds ('rubric=value', see _items). With `present` ({rubric: scale}, from
    `rubrics`), a rubric without scores and a bound outside the rubric's scale are refused too."""
    known = present or {}
    bounds: dict[str, list] = {}
    for which, values, i in (("min_score", mins, 0), ("max_score", maxs, 1)):
        for text in _items(values):
            rubric, v = parse_bound(text, which, known)
            if present is not None:
                if rubric not in present:
                    raise ScoreFilterError(f"{which} {text!r}: no sample in scope has a {rubric!r} score; "
                                           f"{_present_hint(present)}")
                lo, hi = present[rubric]
                if not lo <= v <= hi:
                    raise ScoreFilterError(f"{which} {text!r}: {_num(v)} is outside {rubric}'s scale "
                                           f"{_num(lo)}-{_num(hi)}")
            slot = bounds.setdefault(rubric, [None, None])
            if slot[i] is not None and slot[i] != v:
                raise ScoreFilterError(f"{which}: two different bounds for {rubric} ({_num(slot[i])} and {_num(v)})")
            slot[i] = v
    for rubric, (lo, hi) in bounds.items():
        if lo is not None and hi is not None and lo > hi:
            raise ScoreFilterError(f"score filter on {rubric}: min {_num(lo)} is above max {_num(hi)}")
    return ScoreFilter(tuple((r, lo, hi) for r, (lo, hi) in sorted(bounds.items())), bool(include_stale))


def resolve(conn: sqlite3.Connection, mins=None, maxs=None, include_stale: bool = False,
            dataset_id: int | None = None) -> ScoreFilter:
    """`build`, checked against the rubrics present in the dataset (or the whole store)."""
    if not _items(mins) and not _items(maxs):
        return ScoreFilter((), bool(include_stale))
    return build(mins, maxs, include_stale, rubrics(conn, dataset_id))


def parse_range(text: str, present=()) -> tuple[str, float | None, float | None]:
    """Browse's `score:RUBRIC=LO..HI` value (also RUBRIC=N, RUBRIC=LO.., RUBRIC=..HI)."""
    rubric, sep, value = text.partition("=")
    if not sep:
        raise ScoreFilterError(f"score:{text}: name the rubric, e.g. score:curate=4..5 or score:judge=7..; "
                               f"{_present_hint(present)}")
    rubric = rubric.strip()
    if not RUBRIC_RE.fullmatch(rubric):
        raise ScoreFilterError(f"score:{text}: {rubric!r} is not a rubric name; {_present_hint(present)}")
    lo, dots, hi = value.partition("..")
    what = f"score:{text}"
    if not dots:
        v = _parse_number(lo.strip(), what)
        return rubric, v, v
    if (not lo.strip() and not hi.strip()) or hi.startswith(".") or lo.endswith("."):   # '..', '7...9'
        raise ScoreFilterError(f"{what}: a number or a range like 7..10, 7.. or ..5")
    return (rubric, _parse_number(lo.strip(), what) if lo.strip() else None,
            _parse_number(hi.strip(), what) if hi.strip() else None)


def ranked_sql(rubric: str, id_expr: str = "id") -> str:
    """An SQL expression: the sample's fresh score on `rubric` (NULL if none or stale), for ordering."""
    _check_rubric(rubric)
    return (f"(SELECT sc.score FROM sample_scores sc WHERE sc.sample_id = {id_expr} AND sc.rubric = '{rubric}' "
            "AND sc.stale = 0)")
