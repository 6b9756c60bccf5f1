"""Humpback rounds on rows: which rounds a sample took part in, as SQL for Browse, Balance, filters and agreement.

A sample is in round k when
  - backtranslate made it with `--param round=k` (`origin.task = "backtranslate"`, `origin.round = k`), or
  - curate gave it a round-k verdict (`--param round=k`: key "k" of `metadata.curation_rounds`).
So one sample can be in several rounds (made in round 1, re-scored by curate in rounds 1 and 2): per-round counts
are not a partition of the rows, and each count says how many rows took part in that round. A sample in no
round (imported seeds, rows of other tasks, a curate verdict recorded before rounds existed) is "none" — never
counted as round 1. The `round` that evol-instruct and evol-quality write into their lineage is how many times the
text was evolved, not a Humpback round, and is not read here.

The score of a sample in round k (agreement per round, Balance's score histogram within a round): for the `curate`
rubric, round k's own verdict (`metadata.curation_rounds."k".score`), so round 1's curator can still be read after
round 2 re-scored the row, counted only while the row's curate score is fresh (not made stale by an edit); for any
other rubric, the sample's fresh score.
"""
from __future__ import annotations

import sqlite3
from collections import defaultdict

from . import scores as scores_mod
from . import stats
from .store import STATS_DIMS, stats_bucket_sql

NONE = "none"      # the name of "no round" in filters, queries and JSON keys

# the round backtranslate made the row in (NULL for any other row)
ORIGIN_ROUND = ("(CASE WHEN json_valid({t}origin) AND json_extract({t}origin, '$.task') = 'backtranslate' "
                "THEN json_extract({t}origin, '$.round') END)")
_META = "(CASE WHEN json_valid({t}metadata) THEN {t}metadata END)"


class RoundError(ValueError):
    """A round that cannot be read (the message quotes it)."""


def parse(value) -> int | str:
    """A round as typed: a whole number >= 1, or 'none' (rows in no round). Anything else is refused."""
    text = str(value).strip().lower()
    if text in (NONE, "(none)"):
        return NONE
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise RoundError(f"round {value!r}: a whole number from 1 (a Humpback round) or 'none' (rows in no round)")


def condition(k: int | str, table: str = "samples") -> tuple[str, tuple]:
    """WHERE condition (and its parameters) for the rows in round k, or in no round (k = 'none')."""
    t = f"{table}." if table else ""
    origin, meta = ORIGIN_ROUND.format(t=t), _META.format(t=t)
    if k == NONE:
        return f"({origin} IS NULL AND json_type({meta}, '$.curation_rounds') IS NULL)", ()
    return f"({origin} = ? OR json_type({meta}, ?) IS NOT NULL)", (int(k), f'$.curation_rounds."{int(k)}"')


def _pairs_sql(where: str) -> str:
    """SELECT DISTINCT (id, status, round) for every round each row of `where` is in."""
    origin, meta = ORIGIN_ROUND.format(t="s."), _META.format(t="s.")
    return (f"SELECT id, status, r FROM (SELECT s.id AS id, s.status AS status, {origin} AS r FROM samples s "
            f"WHERE {where} AND {origin} IS NOT NULL "
            f"UNION SELECT s.id, s.status, CAST(j.key AS INTEGER) FROM samples s, "
            f"json_each(coalesce({meta}, '{{}}'), '$.curation_rounds') j WHERE {where})")


def _scope(dataset_ids: list[int] | None) -> tuple[str, tuple]:
    if dataset_ids is None:
        return "1", ()
    return f"s.dataset_id IN ({','.join('?' * len(dataset_ids))})", tuple(dataset_ids)


def counts(conn: sqlite3.Connection, dataset_ids: list[int] | None = None) -> dict[str, dict[str, int]]:
    """round ('1', '2', ..., 'none') -> status -> rows; rounds in number order, 'none' last (only when > 0).

    A full scan of the rows in scope (~1 s per million rows): call it off the UI thread, and only when asked."""
    where, params = _scope(dataset_ids)
    out: dict[int, dict[str, int]] = {}
    for r, status, n in conn.execute(f"SELECT r, status, count(*) FROM ({_pairs_sql(where)}) GROUP BY r, status",
                                     params * 2):
        if isinstance(r, int):
            out.setdefault(r, {})[status] = n
    res = {str(r): out[r] for r in sorted(out)}
    cond, cparams = condition(NONE, "s")
    none = dict(conn.execute(f"SELECT status, count(*) FROM samples s WHERE {where} AND {cond} GROUP BY status",
                             (*params, *cparams)).fetchall())
    if none:
        res[NONE] = none
    return res


def of_samples(conn: sqlite3.Connection, ids: list[int]) -> dict[int, tuple[int, ...]]:
    """sample id -> the rounds it is in (ascending; () for none), for a page of rows."""
    out: dict[int, set] = {i: set() for i in ids}
    for start in range(0, len(ids), 400):
        chunk = ids[start:start + 400]
        where = f"s.id IN ({','.join('?' * len(chunk))})"
        for sid, _, r in conn.execute(_pairs_sql(where), (*chunk, *chunk)):
            if isinstance(r, int):
                out[sid].add(r)
    return {i: tuple(sorted(v)) for i, v in out.items()}


def maybe_present(conn: sqlite3.Connection) -> bool:
    """Whether rows may carry rounds: a backtranslate or curate job has run in this store (a cheap look at the
    jobs table, for Browse to decide whether to give rounds a column; filters never rely on it)."""
    return conn.execute("SELECT 1 FROM jobs WHERE kind IN ('backtranslate', 'curate') LIMIT 1").fetchone() is not None


def text(rounds: tuple[int, ...]) -> str:
    return ",".join(map(str, rounds))


def score_sql(rubric: str, k: int | str, table: str = "s") -> tuple[str, tuple]:
    """SQL for a sample's score on `rubric` read in round k (see the module doc), NULL when it has none; needs the
    sample's fresh sample_scores row joined as `sc`."""
    if rubric == "curate" and k != NONE:
        meta = _META.format(t=f"{table}.")
        return f"json_extract({meta}, ?)", (f'$.curation_rounds."{int(k)}".score',)
    return "sc.score", ()


def read_counts(conn: sqlite3.Connection, dataset_ids: list[int] | None, rubric: str | None,
                k: int | str):
    """Balance's counts (a stats.Counts) over the rows in round k only ('none': in no round), the score histogram
    read as in that round. Counted straight from the rows (a scan of the scope, ~1 s per million rows; the
    maintained counts have no round): run it off the UI thread, only when a round is asked for."""
    where, params = _scope(dataset_ids)
    cond, cparams = condition(k, "s")
    cells: dict = {d: defaultdict(lambda: defaultdict(int)) for d in STATS_DIMS if d != "score"}
    own_txn = not conn.in_transaction
    if own_txn:
        conn.execute("BEGIN")                     # one snapshot for every histogram
    try:
        scales = stats._rubrics(conn, dataset_ids)
        rubric = rubric if rubric in scales else scores_mod.primary_rubric(scales)
        for dim in cells:
            for bucket, status, n in conn.execute(
                    f"SELECT {stats_bucket_sql(dim, 's.')}, s.status, count(*) FROM samples s "
                    f"WHERE {where} AND {cond} GROUP BY 1, 2", (*params, *cparams)):
                cells[dim][str(bucket)][status] += n
        score = defaultdict(lambda: defaultdict(int))
        totals: dict = defaultdict(int)
        for by_status in cells["task_type"].values():
            for status, n in by_status.items():
                totals[status] += n
        if rubric is not None:
            expr, eparams = score_sql(rubric, k, "s")
            for bucket, status, n in conn.execute(
                    f"SELECT CAST({expr} AS INTEGER), s.status, count(*) FROM samples s JOIN sample_scores sc "
                    f"ON sc.sample_id = s.id AND sc.rubric = ? AND sc.stale = 0 WHERE {where} AND {cond} "
                    f"AND {expr} IS NOT NULL GROUP BY 1, 2", (*eparams, rubric, *params, *cparams, *eparams)):
                score[str(bucket)][status] += n
                totals[status] -= n
        for status, n in totals.items():
            if n:
                score[""][status] += n
        cells["score"] = score
    finally:
        if own_txn:
            conn.execute("COMMIT")
    return stats.Counts({d: {b: dict(v) for b, v in by.items()} for d, by in cells.items()}, rubric, scales)
