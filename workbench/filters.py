"""The sample filter shared by jobs, the CLI and the TUI: `k=v` pairs -> SQL over one dataset's samples."""
from __future__ import annotations

import re
import sqlite3
from typing import Any, Iterator

from . import rounds, scores
from .samples import decode_sample, SAMPLE_COLUMNS
from .store import STATUSES, fts_query


class FilterError(ValueError):
    """A filter the user typed that cannot be read (the CLI prints it, exit 2; the TUI shows it in the form)."""


def parse_value(text: str) -> Any:
    """`--param k=v` value as int, float, bool, None or str (in that order of preference)."""
    low = text.strip().lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low in ("none", "null"):
        return None
    if re.fullmatch(r"\s*[+-]?[0-9]+\s*", text):     # ASCII digits only: int() also takes '1_000' and '١٢'
        return int(text)
    try:
        return float(text) if text.isascii() else text
    except ValueError:
        return text


FILTER_KEYS = {
    "status": "review status: pending | accepted | rejected",
    "task_type": "task_type equals", "domain": "domain equals", "difficulty": "difficulty equals",
    "language": "language equals",
    "search": "full-text search words (all required)",
    "no_response": "true: only samples without a response",
    "min_score": "RUBRIC=N: that rubric's score >= N (e.g. curate=4.5; repeat for several rubrics)",
    "max_score": "RUBRIC=N: that rubric's score <= N (e.g. judge=6)",
    "include_stale": "true: score filters also match scores given before the text was edited",
    "limit": "at most N samples",
    "unique": "true: skip samples flagged as exact duplicates",
    "round": "K: samples in Humpback round K (made by backtranslate or curated in it); none: in no round",
}


def parse_filter(pairs: list[str] | str | None) -> dict:
    """`k=v` pairs (a list, or one whitespace-separated string as typed in the TUI) -> a filter dict."""
    if not pairs:
        return {}
    if isinstance(pairs, str):
        pairs = pairs.split()
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise FilterError(f"filter {pair!r}: expected key=value; keys: {', '.join(FILTER_KEYS)}")
        k, v = pair.split("=", 1)
        if k not in FILTER_KEYS:
            raise FilterError(f"unknown filter key {k!r}; keys: {', '.join(FILTER_KEYS)}")
        if k in out and k not in ("min_score", "max_score"):
            raise FilterError(f"filter {k} is given twice ({out[k]!r} and {v!r}): give it once")
        if k in ("min_score", "max_score"):   # RUBRIC=N, checked against the store by check_scores
            out.setdefault(k, []).append(v)
        elif k == "status":
            if v not in STATUSES:
                raise FilterError(f"filter status={v!r}: one of {', '.join(STATUSES)}")
            out[k] = v
        elif k == "limit":
            if not (v.isascii() and v.isdigit()):
                raise FilterError(f"filter limit={v!r}: a whole number >= 0")
            out[k] = int(v)
        elif k in ("no_response", "unique", "include_stale"):
            if not isinstance(parse_value(v), bool):
                raise FilterError(f"filter {k}={v!r}: true or false")
            out[k] = parse_value(v)
        elif k == "round":
            try:
                out[k] = rounds.parse(v)
            except rounds.RoundError as e:
                raise FilterError(f"filter round={v}: {e}") from None
        else:
            out[k] = v if k == "search" else parse_value(v)
    return out


def score_filter(f: dict) -> scores.ScoreFilter:
    """The filter's score bounds (min_score / max_score: 'RUBRIC=N' or lists of them)."""
    try:
        return scores.build(f.get("min_score"), f.get("max_score"), bool(f.get("include_stale")))
    except scores.ScoreFilterError as e:
        raise FilterError(str(e)) from None


def check_scores(conn: sqlite3.Connection, dataset_id: int | None, f: dict) -> None:
    """Refuse score bounds naming a rubric the dataset has no score on, or outside its scale (FilterError)."""
    if f.get("min_score") is None and f.get("max_score") is None:
        return
    try:
        scores.resolve(conn, f.get("min_score"), f.get("max_score"), bool(f.get("include_stale")), dataset_id)
    except scores.ScoreFilterError as e:
        raise FilterError(str(e)) from None


def filter_sql(dataset_id: int | None, f: dict) -> tuple[str, list]:
    """SQL for the filter over one dataset's samples, or over every dataset's (None: export across datasets)."""
    where, args = (["dataset_id = ?"], [dataset_id]) if dataset_id is not None else ([], [])
    for col in ("status", "task_type", "domain", "difficulty", "language"):
        if f.get(col) is not None:
            where.append(f"{col} = ?")
            args.append(str(f[col]))
    if f.get("no_response"):
        where.append("response = ''")
    if f.get("unique"):
        where.append("dup_of IS NULL")
    if f.get("round") is not None:
        cond, cargs = rounds.condition(rounds.parse(f["round"]), "samples")
        where.append(cond)
        args += cargs
    sf = score_filter(f)
    if sf:
        cond, cargs = sf.sql("samples.id")
        where.append(cond)
        args += cargs
    if f.get("search"):
        where.append("id IN (SELECT rowid FROM samples_fts WHERE samples_fts MATCH ?)")
        args.append(fts_query(str(f["search"])))
    return " AND ".join(where) or "1", args


def iter_filtered(conn: sqlite3.Connection, dataset_id: int, f: dict | None = None) -> Iterator[dict]:
    f = f or {}
    where, args = filter_sql(dataset_id, f)
    limit = int(f["limit"]) if f.get("limit") else None
    cols = ", ".join(SAMPLE_COLUMNS)
    last, n = 0, 0
    while True:
        rows = conn.execute(f"SELECT {cols} FROM samples WHERE {where} AND id > ? ORDER BY id LIMIT 1000",
                            (*args, last)).fetchall()
        if not rows:
            return
        for r in rows:
            if limit is not None and n >= limit:
                return
            n += 1
            yield decode_sample(r)
        last = rows[-1][0]
