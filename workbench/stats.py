"""Balance histograms: task_type, domain, difficulty, length buckets, score buckets and status.

Scores are one histogram per rubric (from `sample_scores`, fresh scores only, whole-number buckets: 4.5 counts
as 4): the `score` histogram shows one rubric at a time, the one asked for, else scores.primary_rubric of the
rubrics present. (samples.score, which sample_stats still counts, is no longer written.)

Counts come from `sample_stats` (maintained counts, see store.py) plus a GROUP BY over the "tail" of rows not yet
folded into it, read in one snapshot, so a refresh costs a few milliseconds at any store size. One read answers
both "all samples" and "accepted only": every count is kept per status.
"""
from __future__ import annotations

import sqlite3
from collections import defaultdict
from dataclasses import dataclass

from . import scores
from .short_tx import ShortTransactions
from .store import (IN_A_DATASET, STATS_DIMS, STATS_LENGTH_EDGES, STATUSES, dataset_id as _dataset_id, stats_bucket_sql,
                    transaction)

FOLD_CHUNK = 2_500           # rows per fold statement (~40 ms); transactions end as workbench/short_tx.py says
FOLD_MIN_TAIL = 2_000        # below this, reading the tail (~10 ms) is cheaper than writing a fold
NONE_LABEL = "(none)"
UNSCORED_LABEL = "unscored"
LENGTH_DIMS = ("instruction_len", "response_len")
DIM_TITLES = {
    "status": "status", "task_type": "task type", "domain": "domain", "difficulty": "difficulty",
    "instruction_len": "instruction length (chars)", "response_len": "response length (chars)",
    "score": "score",
}


def _stats_upto(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key = 'stats_upto'").fetchone()
    return int(row[0]) if row else 0


def tail_rows(conn: sqlite3.Connection) -> int:
    """How many samples are not yet folded into the maintained counts."""
    return conn.execute("SELECT count(*) FROM samples WHERE id > ?", (_stats_upto(conn),)).fetchone()[0]


# One read of the chunk's rows (their bucket keys into a materialized CTE), then a GROUP BY per dimension over that
# small table: reading the wide rows once per dimension made a fold of 10M rows take ~6x as long.
_FOLD_SQL = (
    "WITH t AS MATERIALIZED (SELECT dataset_id, status, "
    + ", ".join(f"{stats_bucket_sql(d)} AS b{k}" for k, d in enumerate(STATS_DIMS))
    + f" FROM samples WHERE id > ? AND id <= ? AND {IN_A_DATASET}) "
    "INSERT INTO sample_stats (dataset_id, status, dim, bucket, n) "
    + " UNION ALL ".join(f"SELECT dataset_id, status, '{d}', b{k}, count(*) FROM t GROUP BY dataset_id, status, b{k}"
                         for k, d in enumerate(STATS_DIMS))
    + " ON CONFLICT DO UPDATE SET n = n + excluded.n")


def fold(conn: sqlite3.Connection, *, chunk: int = FOLD_CHUNK) -> int:
    """Add the counts of not-yet-counted samples to `sample_stats`, in short transactions; returns rows folded.

    Safe to run from several processes at once: each chunk re-reads the watermark inside its transaction.
    Call it after bulk loads (like store.fts_sync); readers are correct either way, only slower on a long tail.
    """
    total = 0
    with ShortTransactions(conn) as tx:     # a waiting writer gets its turn between two chunks
        while True:
            upto = _stats_upto(conn)
            top, n = conn.execute("SELECT max(id), count(*) FROM (SELECT id FROM samples WHERE id > ? ORDER BY id "
                                  "LIMIT ?)", (upto, chunk)).fetchone()
            if top is None:
                return total
            conn.execute(_FOLD_SQL, (upto, top))
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('stats_upto', ?)", (str(top),))
            total += n
            tx.next()


def fold_if_needed(conn: sqlite3.Connection, min_tail: int = FOLD_MIN_TAIL) -> int:
    """Fold only when the tail is long enough to matter: a reader polling often should rarely write."""
    top = conn.execute("SELECT max(id) FROM samples").fetchone()[0] or 0
    if top - _stats_upto(conn) < min_tail or tail_rows(conn) < min_tail:
        return 0
    return fold(conn)


@dataclass
class Counts:
    """Counts per dimension -> bucket key -> status, for one dataset or all of them; the score dimension is the
    scores of `rubric` (None: nothing scored), on the scale `scales[rubric]`."""
    cells: dict[str, dict[str, dict[str, int]]]
    rubric: str | None = None
    scales: dict | None = None

    def score_title(self) -> str:
        if not self.rubric:
            return "score (nothing scored)"
        lo, hi = (self.scales or {}).get(self.rubric, (None, None))
        return f"score: {self.rubric}" + (f" ({lo:g}-{hi:g})" if lo is not None else "")

    def total(self, statuses: tuple[str, ...] | None = None) -> int:
        return sum(self.status_counts(statuses).values())

    def status_counts(self, statuses: tuple[str, ...] | None = None) -> dict[str, int]:
        """Rows per status (every row is counted once per dimension, so any dimension gives the totals)."""
        per = defaultdict(int)
        for by_status in self.cells.get("task_type", {}).values():
            for status, n in by_status.items():
                per[status] += n
        names = list(STATUSES) + sorted(set(per) - set(STATUSES))
        return {s: per.get(s, 0) for s in names if statuses is None or s in statuses}

    def histogram(self, dim: str, statuses: tuple[str, ...] | None = None) -> list[tuple[str, int]]:
        """(label, count) pairs in display order: categories by count, lengths and scores by value."""
        if dim == "status":
            return list(self.status_counts(statuses).items())
        counts = {key: sum(n for s, n in by_status.items() if statuses is None or s in statuses)
                  for key, by_status in self.cells.get(dim, {}).items()}
        if dim in LENGTH_DIMS:
            return [(length_label(lo), counts.get(str(lo), 0)) for lo in STATS_LENGTH_EDGES]
        if dim == "score":
            return _score_histogram(counts)
        items = [(key or NONE_LABEL, n) for key, n in counts.items() if n]
        return sorted(items, key=lambda kv: (-kv[1], kv[0]))


def length_label(lo: int) -> str:
    edges = STATS_LENGTH_EDGES
    i = edges.index(lo)
    return f"{lo}+" if i == len(edges) - 1 else f"{lo}-{edges[i + 1] - 1}"


def _score_histogram(counts: dict[str, int]) -> list[tuple[str, int]]:
    scored = {int(k): n for k, n in counts.items() if k != "" and n}
    out = []
    if scored:
        lo, hi = min(scored), max(scored)
        out = [(str(v), scored.get(v, 0)) for v in range(lo, hi + 1)]   # gaps shown as empty bars
    if counts.get("", 0):
        out.append((UNSCORED_LABEL, counts[""]))
    return out


def read_counts(conn: sqlite3.Connection, dataset_id: int | list[int] | None = None,
                rubric: str | None = None) -> Counts:
    """Maintained counts plus the unfolded tail, read in one snapshot (a fold committing between the two
    reads would otherwise count rows twice); the score histogram is `rubric`'s (default: the primary one).
    `dataset_id`: one dataset, a list of them (summed), None: all."""
    cells: dict[str, dict[str, dict[str, int]]] = {d: defaultdict(lambda: defaultdict(int)) for d in STATS_DIMS}
    ids = [dataset_id] if isinstance(dataset_id, int) else dataset_id
    where, params = ((f"AND dataset_id IN ({','.join('?' * len(ids))})", tuple(ids)) if ids is not None
                     else (f"AND {IN_A_DATASET}", ()))
    own_txn = not conn.in_transaction
    if own_txn:
        conn.execute("BEGIN")
    try:
        scales = _rubrics(conn, ids)
        rubric = rubric if rubric in scales else scores.primary_rubric(scales)
        upto = _stats_upto(conn)
        for dim, bucket, status, n in conn.execute(
                f"SELECT dim, bucket, status, sum(n) FROM sample_stats WHERE 1 {where} "
                f"GROUP BY dim, bucket, status", params):
            if dim in cells and n:
                cells[dim][str(bucket)][status] += n
        if (conn.execute("SELECT max(id) FROM samples").fetchone()[0] or 0) > upto:
            for dim in STATS_DIMS:
                for bucket, status, n in conn.execute(
                        f"SELECT {stats_bucket_sql(dim)}, status, count(*) FROM samples WHERE id > ? {where} "
                        f"GROUP BY 1, 2", (upto, *params)):
                    cells[dim][str(bucket)][status] += n
        cells["score"] = _score_cells(conn, ids, rubric, cells["task_type"])
    finally:
        if own_txn:
            conn.execute("COMMIT")
    return Counts({d: {k: dict(v) for k, v in by.items()} for d, by in cells.items()}, rubric, scales)


def _rubrics(conn, ids: list[int] | None) -> dict[str, tuple[float, float]]:
    """The rubrics scored in these datasets (None: anywhere), each with its widest scale."""
    if ids is None:
        return scores.rubrics(conn)
    out: dict[str, tuple[float, float]] = {}
    for did in ids:
        for r, (lo, hi) in scores.rubrics(conn, did).items():
            out[r] = (min(lo, out[r][0]), max(hi, out[r][1])) if r in out else (lo, hi)
    return out


def _score_cells(conn, ids: list[int] | None, rubric: str | None, any_dim: dict) -> dict:
    """bucket -> status -> n for `rubric`'s fresh scores; '' = the rest of the rows (unscored or stale)."""
    out: dict = defaultdict(lambda: defaultdict(int))
    totals: dict = defaultdict(int)
    for by_status in any_dim.values():        # every row is in exactly one bucket of any dimension
        for status, n in by_status.items():
            totals[status] += n
    if rubric is not None:
        for did in ids if ids is not None else [None]:
            for bucket, status, n in scores.histogram_cells(conn, rubric, did):
                out[str(bucket)][status] += n
                totals[status] -= n
    for status, n in totals.items():
        if n:
            out[""][status] += n
    return out


def distinct_values(conn: sqlite3.Connection, column: str, dataset_id: int | None = None,
                    limit: int = 200) -> list[str]:
    """The distinct non-NULL values of task_type/domain/difficulty (in one dataset or all), sorted, the first
    `limit`: the buckets of the maintained counts still holding a row, plus the unfolded tail's values, in one
    snapshot. A DISTINCT over the samples' index read every entry (~5 s at 10M rows for all datasets).
    The counts keep NULL and '' in one bucket: whether '' itself occurs is one index seek per dataset."""
    if column not in ("task_type", "domain", "difficulty"):
        raise ValueError(column)
    ds, params = ("AND dataset_id = ?", (dataset_id,)) if dataset_id is not None else ("", ())
    own_txn = not conn.in_transaction
    if own_txn:
        conn.execute("BEGIN")
    try:
        values = {b for (b,) in conn.execute(
            f"SELECT bucket FROM sample_stats WHERE dim = ? {ds} GROUP BY bucket HAVING sum(n) > 0", (column, *params))}
        # `+dataset_id`: the tail is found by id (see store.status_counts)
        values |= {v for (v,) in conn.execute(
            f"SELECT DISTINCT {column} FROM samples WHERE id > ? {ds.replace('dataset_id', '+dataset_id')} "
            f"AND {column} IS NOT NULL", (_stats_upto(conn), *params))}
        if "" in values:
            ids = [dataset_id] if dataset_id is not None else [d for (d,) in conn.execute("SELECT id FROM datasets")]
            if not any(conn.execute(f"SELECT 1 FROM samples WHERE dataset_id = ? AND {column} = '' LIMIT 1", (d,))
                       .fetchone() for d in ids):
                values.discard("")     # the bucket held NULLs only
    finally:
        if own_txn:
            conn.execute("COMMIT")
    return sorted(values)[:limit]


HISTOGRAM_DIMS = ("status",) + STATS_DIMS


def stats_summary(conn: sqlite3.Connection, dataset: str | None = None) -> dict:
    """Everything `workbench stats --json` prints: totals and every histogram, for all rows and accepted only.

    Raises KeyError for an unknown dataset name.
    """
    did = _dataset_id(conn, dataset) if dataset is not None else None
    fold_if_needed(conn)
    counts = read_counts(conn, did)
    per_rubric = {r: read_counts(conn, did, r) for r in sorted(counts.scales or {})}

    def section(statuses):
        # score: the primary rubric's histogram (score_rubric names it); scores: every rubric's
        return {"total": counts.total(statuses),
                **{dim: dict(counts.histogram(dim, statuses)) for dim in HISTOGRAM_DIMS},
                "score_rubric": counts.rubric,
                "scores": {r: dict(c.histogram("score", statuses)) for r, c in per_rubric.items()}}

    return {"dataset": dataset, **section(None), "accepted": section(("accepted",))}


# --- targets ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Bar:
    label: str
    count: int
    share: float                   # of the histogram's total, 0..1
    target: float | None = None    # target share, 0..1
    other: bool = False            # the bar that sums the categories beyond the top N

    @property
    def gap(self) -> float | None:
        """Share minus target (positive: over-represented)."""
        return None if self.target is None else self.share - self.target


def parse_targets(config: dict) -> dict[str, dict[str, float]]:
    """`[balance.targets.<dim>]` tables of label = share. Shares are fractions (0.25) or, when any value is
    above 1, percentages (25). Raises ValueError naming the bad entry."""
    raw = (config.get("balance") or {}).get("targets") or {}
    if not isinstance(raw, dict):
        raise ValueError("[balance.targets] must be a table of tables, e.g. [balance.targets.task_type]")
    out = {}
    for dim, table in raw.items():
        if dim not in HISTOGRAM_DIMS:
            raise ValueError(f"[balance.targets.{dim}]: unknown histogram (one of {', '.join(HISTOGRAM_DIMS)})")
        if not isinstance(table, dict):
            raise ValueError(f"[balance.targets.{dim}] must be a table of label = share")
        for label, v in table.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < float("inf"):   # nan too
                raise ValueError(f"[balance.targets.{dim}] {label} = {v!r}: a share must be a number >= 0")
        scale = 100.0 if any(v > 1 for v in table.values()) else 1.0
        out[dim] = {str(label): float(v) / scale for label, v in table.items()}
    return out


def bars(hist: list[tuple[str, int]], targets: dict[str, float] | None = None, top: int | None = None) -> list[Bar]:
    """Bars with shares and target shares. Beyond `top` categories the rest sum into one 'other' bar, but a
    category with a target is always shown; targets for labels absent from the data show as empty bars."""
    targets = targets or {}
    total = sum(n for _, n in hist) or 0
    share = (lambda n: n / total) if total else (lambda n: 0.0)
    present = {label for label, _ in hist}
    rows = list(hist) + [(label, 0) for label in targets if label not in present]
    if top is not None and len(rows) > top:
        keep = rows[:top] + [r for r in rows[top:] if r[0] in targets]
        rest = [r for r in rows[top:] if r[0] not in targets]
        rows = keep
    else:
        rest = []
    out = [Bar(label, n, share(n), targets.get(label)) for label, n in rows]
    if rest:
        n = sum(c for _, c in rest)
        out.append(Bar(f"({len(rest)} more)", n, share(n), None, other=True))
    return out
