"""Browse queries: one page of samples at a time by keyset pagination, never OFFSET (flat cost at any depth).

A page is ordered by (sort value, id); the key of its last row is where the next page starts. A row-value
comparison `(score, id) > (?, ?)` only seeks on `score` in SQLite 3.40 (deep inside a run of equal scores it
scans), so each page is read as segments that each seek exactly: `score = v AND id > i`, then `score > v`;
NULLs (unscored, no task type) come first ascending, last descending. Every sort uses an index that starts with
dataset_id, so across all datasets the per-dataset pages are merged.
"""
from __future__ import annotations

import hashlib
import heapq
import shlex
import sqlite3
from dataclasses import dataclass, replace

from . import rounds, scores
from .store import IN_A_DATASET, STATUSES, fts_query, status_counts

SORT_KEYS = ("id", "score", "length", "status", "task_type")
_SORT_SQL = {"id": "id", "length": "instruction_len + response_len", "status": "status",
             "task_type": "task_type"}   # score: the fresh score of the Filter's rubric (scores.ranked_sql)
_NULLABLE = {"score", "task_type"}
PREVIEW_CHARS = 200   # enough for a table cell; the full text is in Review


def _sort_sql(key: str, rubric: str | None) -> str:
    if key == "score":
        return scores.ranked_sql(rubric, "samples.id") if rubric else "NULL"
    return _SORT_SQL[key]


def _columns(score: str, t: str = "") -> str:
    """The Row columns; `score` is the SQL of the score column, `t` a table prefix ("samples.")."""
    return (f"{t}id, {t}dataset_id, CASE WHEN {t}instruction != '' OR {t}messages IS NULL THEN substr({t}instruction, "
            f"1, {PREVIEW_CHARS}) ELSE substr({t}messages, 1, {PREVIEW_CHARS}) END, substr({t}response, 1, "
            f"{PREVIEW_CHARS}), {t}status, {score}, {t}task_type, {t}instruction_len + {t}response_len")


@dataclass(frozen=True)
class Filter:
    dataset_id: int | None = None
    status: str | None = None
    task_type: str | None = None
    domain: str | None = None
    scores: scores.ScoreFilter = scores.ScoreFilter()   # bounds per rubric (query: score:curate=4..5)
    rubric: str | None = None      # whose score the score column shows and the score sort orders by
    search: str | None = None      # words, all required (FTS5 over instruction, input, response)
    round: int | str | None = None  # Humpback round K, or "none" (workbench/rounds.py)

    def __post_init__(self):
        if self.status is not None and self.status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, not {self.status!r}")

    def sql(self, hits: "Hits | None" = None, sort_key: str = "id") -> tuple[str, tuple]:
        """WHERE clause and parameters; `hits`: the search's matching ids (see search_hits)."""
        conds, params = [], []
        for col in ("dataset_id", "status", "task_type", "domain"):
            if getattr(self, col) is not None:
                conds.append(f"{col} = ?")
                params.append(getattr(self, col))
        if self.dataset_id is None:
            conds.append(IN_A_DATASET)
        if self.scores:
            cond, cparams = self.scores.sql("samples.id")
            conds.append(cond)
            params.extend(cparams)
        if self.round is not None:
            cond, cparams = rounds.condition(self.round, "samples")
            conds.append(cond)
            params.extend(cparams)
        if hits:
            cond, hparams = hits.condition(sort_key)
            conds.append(cond)
            params.extend(hparams)
        elif self.search and fts_query(self.search):
            conds.append("id IN (SELECT rowid FROM samples_fts WHERE samples_fts MATCH ?)")
            params.append(fts_query(self.search))
        return " AND ".join(conds) or "1", tuple(params)


@dataclass(frozen=True)
class Sort:
    key: str = "id"
    descending: bool = False

    def __post_init__(self):
        if self.key not in SORT_KEYS:
            raise ValueError(f"sort must be one of {', '.join(SORT_KEYS)}, not {self.key!r}")


@dataclass(frozen=True)
class Row:
    id: int
    dataset_id: int
    instruction: str      # previews, capped at PREVIEW_CHARS
    response: str
    status: str
    score: float | None   # the Filter's rubric's fresh score
    task_type: str | None
    length: int           # instruction + response characters
    key: tuple            # (sort value, id): pass as after_key to continue from this row
    scores: tuple = ()    # every score of the sample (scores.of_samples), for display
    rounds: tuple = ()    # the Humpback rounds it is in (rounds.of_samples), for display


def _segments(col: str, nullable: bool, ascending: bool, after) -> list[tuple[str, tuple, str]]:
    """(where, params, order by) pieces that together list, in order, the rows after `after`."""
    d, cmp = ("", ">") if ascending else (" DESC", "<")
    if col == "id":
        return [("1" if after is None else f"id {cmp} ?", () if after is None else (after[1],), "id" + d)]
    nulls = [(f"{col} IS NULL", (), "id" + d)] if nullable else []
    values_all = (f"{col} IS NOT NULL" if nullable else "1", (), f"{col}{d}, id{d}")
    if after is None:
        return nulls + [values_all] if ascending else [values_all] + nulls
    v, i = after
    if v is None:   # inside the NULL run
        rest = (f"{col} IS NULL AND id {cmp} ?", (i,), "id" + d)
        return [rest, values_all] if ascending else [rest]
    segs = [(f"{col} = ? AND id {cmp} ?", (v, i), "id" + d), (f"{col} {cmp} ?", (v,), f"{col}{d}, id{d}")]
    return segs if ascending else segs + nulls


def _score_segments(ascending: bool, after, scored_only: bool = False) -> list[tuple[bool, str, tuple, str]]:
    """Like _segments for the score sort: (scored?, where, params, order by). Scored segments walk the index
    sample_scores(rubric, stale, score) (sample_id follows score in it, as the key's second part); unscored rows
    (no fresh score on the rubric) walk samples by id. `scored_only`: the filter needs a fresh score on the
    rubric, so no unscored row can match (walking them all to find none took 70 s at 1M rows, on End)."""
    d, cmp = ("", ">") if ascending else (" DESC", "<")
    nulls = [] if scored_only else [(False, "1", (), "id" + d)]
    values_all = (True, "1", (), f"sc.score{d}, sc.sample_id{d}")
    if after is None:
        return nulls + [values_all] if ascending else [values_all] + nulls
    v, i = after
    if v is None:
        rest = [] if scored_only else [(False, f"id {cmp} ?", (i,), "id" + d)]
        return rest + [values_all] if ascending else rest
    segs = [(True, f"sc.score = ? AND sc.sample_id {cmp} ?", (v, i), f"sc.sample_id{d}"),
            (True, f"sc.score {cmp} ?", (v,), f"sc.score{d}, sc.sample_id{d}")]
    return segs if ascending else segs + nulls


def _scan_scores(conn, where: str, params: tuple, ascending: bool, after, limit: int, rubric: str,
                 bounds: tuple | None = None, copied: str | None = None) -> list[Row]:
    """`bounds`: the filter's (lo, hi) on the fresh scores of `rubric` (scores.fresh_range), walked as a range of
    the index rather than tested row by row (walking up from the lowest score to reach them took seconds).
    `copied`: the table of a search's copied matches, also asked about each score before its sample row is read
    (a small dataset's page across all datasets read ~50,000 sample rows of the others for 100 matches)."""
    out: list[Row] = []
    rng, rng_params = "", ()
    if copied is not None:
        rng = f" AND +sc.sample_id IN (SELECT id FROM {copied})"
    if bounds is not None:
        for op, v in zip((">=", "<="), bounds):
            if v is not None:
                rng, rng_params = rng + f" AND sc.score {op} ?", (*rng_params, v)
    for scored, seg_where, seg_params, order in _score_segments(ascending, after, bounds is not None):
        if len(out) >= limit:
            break
        if scored:
            sql = (f"SELECT {_columns('sc.score')} FROM sample_scores sc "
                   f"JOIN samples ON samples.id = sc.sample_id WHERE sc.rubric = ? AND sc.stale = 0{rng} AND {where} "
                   f"AND {seg_where} ORDER BY {order} LIMIT ?")
        else:
            sql = (f"SELECT {_columns('NULL')} FROM samples WHERE {where} AND NOT EXISTS (SELECT 1 FROM sample_scores sc "
                   f"WHERE sc.sample_id = samples.id AND sc.rubric = ? AND sc.stale = 0) AND {seg_where} "
                   f"ORDER BY {order} LIMIT ?")
        args = (rubric, *rng_params, *params, *seg_params, limit - len(out)) if scored else \
            (*params, rubric, *seg_params, limit - len(out))
        out.extend(_row(r, "score") for r in conn.execute(sql, args))
    return out


def _scan(conn, where: str, params: tuple, sort: Sort, ascending: bool, after, limit: int,
          rubric: str | None = None, bounds: tuple | None = None, copied: str | None = None) -> list[Row]:
    if sort.key == "score" and rubric:
        return _scan_scores(conn, where, params, ascending, after, limit, rubric, bounds, copied)
    out: list[Row] = []
    col = _sort_sql(sort.key, rubric)
    for seg_where, seg_params, order in _segments(col, sort.key in _NULLABLE, ascending, after):
        if len(out) >= limit:
            break
        cur = conn.execute(f"SELECT {_columns(_sort_sql('score', rubric))} FROM samples WHERE {where} AND {seg_where} "
                           f"ORDER BY {order} "
                           f"LIMIT ?", (*params, *seg_params, limit - len(out)))
        out.extend(_row(r, sort.key) for r in cur)
    return out


def _scan_search_by_id(conn, flt: Filter, ascending: bool, after, limit: int) -> list[Row]:
    """A search in id order walks the index's matches in rowid order from `after`, so a page costs the same for a
    rare word and a common one: copying every match first (search_hits) took ~2 s of CPU at 10M rows for a
    word in most rows. CROSS JOIN keeps SQLite from starting at samples and asking the index row by row."""
    d, cmp = ("", ">") if ascending else (" DESC", "<")
    where, params = replace(flt, search=None).sql()
    seek, seek_params = ("", ()) if after is None else (f" AND samples_fts.rowid {cmp} ?", (after[1],))
    sql = (f"SELECT {_columns(_sort_sql('score', flt.rubric), 'samples.')} FROM samples_fts CROSS JOIN samples "
           f"ON samples.id = samples_fts.rowid WHERE samples_fts MATCH ?{seek} AND {where} "
           f"ORDER BY samples_fts.rowid{d} LIMIT ?")
    return [_row(r, "id") for r in conn.execute(sql, (fts_query(flt.search), *seek_params, *params, limit))]


_KEY_INDEX = {"id": 0, "status": 4, "score": 5, "task_type": 6, "length": 7}   # positions in _COLUMNS


def _row(r: tuple, sort_key: str) -> Row:
    return Row(*r, key=(r[_KEY_INDEX[sort_key]], r[0]))


def _order(row: Row):
    v, i = row.key
    return (0, 0, i) if v is None else (1, v, i)


def page(conn: sqlite3.Connection, flt: Filter = Filter(), sort: Sort = Sort(), after_key: tuple | None = None,
         limit: int = 50, backward: bool = False) -> list[Row]:
    """Up to `limit` rows after `after_key` in display order (None: from the start).

    backward=True gives the rows just before `after_key` (None: the last page), still in display order.
    """
    ascending = sort.descending == backward
    if sort.key == "id" and flt.search and fts_query(flt.search):
        rows = _scan_search_by_id(conn, flt, ascending, after_key, limit)
        by_id = scores.of_samples(conn, [r.id for r in rows])
        rows = [replace(r, scores=tuple(by_id[r.id])) for r in rows]
        return rows[::-1] if backward else rows
    hits = search_hits(conn, flt.search)
    probe = _Probe(limit, hits.estimate if hits else 0)
    conn.create_function("browse_probe", 1, probe)
    try:
        rows = _page(conn, flt, sort, after_key, limit, ascending, hits)
    except sqlite3.OperationalError:
        if not probe.gave_up:
            raise
        # the walk asked the search index about too many rows per match (a common word's matches are rare among
        # the shortest rows, where a length sort starts or ends): copy every match once, then walk on with the copy
        hits = search_hits(conn, flt.search, complete=True)
        rows = _page(conn, flt, sort, after_key, limit, ascending, hits)
    by_id = scores.of_samples(conn, [r.id for r in rows])
    in_rounds = rounds.of_samples(conn, [r.id for r in rows])
    rows = [replace(r, scores=tuple(by_id[r.id]), rounds=in_rounds[r.id]) for r in rows]
    return rows[::-1] if backward else rows


def _page(conn, flt: Filter, sort: Sort, after_key, limit: int, ascending: bool, hits: "Hits | None") -> list[Row]:
    where, params = flt.sql(hits, sort.key)
    bounds = flt.scores.fresh_range(flt.rubric) if flt.rubric else None
    copied = hits.table if hits is not None and hits.count >= 0 else None
    if flt.dataset_id is None and sort.key != "id":
        parts = []
        for (did,) in conn.execute("SELECT id FROM datasets ORDER BY id").fetchall():
            w, p = Filter(**{**flt.__dict__, "dataset_id": did}).sql(hits, sort.key)
            parts.append(_scan(conn, w, p, sort, ascending, after_key, limit, flt.rubric, bounds, copied))
        return list(heapq.merge(*parts, key=_order, reverse=not ascending))[:limit]
    return _scan(conn, where, params, sort, ascending, after_key, limit, flt.rubric, bounds, copied)


PROBE_SAMPLE = 200   # rows a walk asks the search index about before judging how often they match
COPY_PER_ASK = 800   # copying this many matches costs about one ask (~0.2 us a match; an ask ~100-300 us, 1M-3M)


class _Probe:
    """browse_probe(matched): counts the rows a page's walk asks the search index about and how many match. From
    PROBE_SAMPLE asks on, when the asks still needed to fill the page at the rate seen so far would cost more than
    copying every match (`estimate` of them), it stops the walk (the query fails, gave_up is set) and the page is
    read again against a copy. End of a three-word search sorted by length asked about ~12,000 short rows for 100
    matches (1.3 s CPU at 1M rows, 2.5 s at 3M, where the copy costs 0.2 s and 0.6 s); a two-word one ~2,000 (a
    copy is cheaper at 1M, the walk at 3M and up)."""

    def __init__(self, limit: int, estimate: int):
        self.limit, self.estimate = limit, estimate
        self.asked = self.matched = 0
        self.gave_up = False

    def __call__(self, matched: int) -> int:
        self.asked += 1
        self.matched += bool(matched)
        if self.asked >= PROBE_SAMPLE and self.matched < self.limit:
            still = (self.limit - self.matched) * self.asked / max(self.matched, 1)
            if still * COPY_PER_ASK > self.estimate:
                self.gave_up = True
                raise RuntimeError("copying the matches costs less than asking on")
        return matched


def row(conn: sqlite3.Connection, sample_id: int, sort: Sort = Sort(), rubric: str | None = None) -> Row | None:
    """One row as `page` would list it (its key places it in `sort`'s order; the score is `rubric`'s)."""
    r = conn.execute(f"SELECT {_columns(_sort_sql('score', rubric))} FROM samples WHERE id = ?",
                     (sample_id,)).fetchone()
    return _row(r, sort.key) if r else None


def count(conn: sqlite3.Connection, flt: Filter = Filter()) -> int:
    """Rows matching the filter (for the status line; run it off the UI thread, it can take ~50 ms at 1M).

    A filter on dataset and status alone (Browse as it opens) is read from the maintained counts: a count(*)
    over a dataset's rows took ~1 s at 10M."""
    if flt.task_type is None and flt.domain is None and not flt.scores and flt.search is None and flt.round is None:
        return sum(n for by in status_counts(conn, flt.dataset_id).values()
                   for status, n in by.items() if flt.status in (None, status))
    where, params = flt.sql(search_hits(conn, flt.search, complete=True))
    return conn.execute(f"SELECT count(*) FROM samples WHERE {where}", params).fetchone()[0]


DRIVE_FROM_HITS = 5000   # up to this many matches, read them all and sort; beyond, walk the sort's index
WALK_DENSITY = 0.1       # beyond DRIVE_FROM_HITS, a word in more than this share of rows is not copied (see Hits)


@dataclass(frozen=True)
class Hits:
    """The ids matching a search, in a TEMP table of this connection (see search_hits); count -1: more than
    DRIVE_FROM_HITS matches, not copied."""
    table: str
    count: int
    query: str = ""
    estimate: int = 0     # how many rows match: `count` when copied, else estimated from the first matches

    def condition(self, sort_key: str) -> tuple[str, tuple]:
        if self.count < 0:
            # many matches: walk the sort's index and ask the search index about each row (~0.1 ms a row at 10M
            # rows; copying every match of a common word first took 8.7 s there before the first page)
            # (browse_probe: see _Probe; a walk that finds matches too rarely copies them all after all)
            return ("browse_probe(EXISTS (SELECT 1 FROM samples_fts WHERE samples_fts MATCH ? AND rowid = samples.id))",
                    (self.query,))
        # `id IN` lets SQLite start from the matches: right for id order and for few matches (sorting them is
        # cheap), ruinous for a common word sorted by score (3 s a page at 1M rows: every match read and
        # sorted). `+id IN` keeps it walking the sort's index, testing each id against the table (~0.1 ms).
        drive = sort_key == "id" or self.count <= DRIVE_FROM_HITS
        return f"{'' if drive else '+'}id IN (SELECT id FROM {self.table})", ()


def search_hits(conn: sqlite3.Connection, search: str | None, complete: bool = False) -> Hits | None:
    """The ids matching `search`, in a TEMP table made once per search on this connection: all of them if
    `complete` (a count). For a page, a word in more than WALK_DENSITY of the rows (judged by how far into the
    ids its first DRIVE_FROM_HITS matches reach) is not copied: count -1, see Hits. Either way a page costs at
    most ~1/WALK_DENSITY index lookups a row, or copying WALK_DENSITY of the rows once.

    Re-running MATCH inside every page's query costs ~130 ms (sorted by id) to ~900 ms (sorted by score) per page
    for a common word at 1M rows. The table is rebuilt when the index changed: new rows indexed (fts_upto), an edit
    or a delete. The index's structure record (FTS5's %_data row 10, rewritten with a higher write counter by every
    change to the index) says so in one lookup; a decision that changes no text (accept, reject) keeps the table,
    so Review's keys on a Browse order do not copy the matches again after each decision.
    """
    query = fts_query(search or "")
    if not query:
        return None
    fts_upto = conn.execute("SELECT value FROM meta WHERE key = 'fts_upto'").fetchone()
    structure = conn.execute("SELECT block FROM samples_fts_data WHERE id = 10").fetchone()
    key = hashlib.blake2b(repr((query, fts_upto, structure)).encode(), digest_size=8).hexdigest()
    name = f"browse_hits_{key}"
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS browse_hits (name TEXT PRIMARY KEY, n INTEGER NOT NULL, "
                 "estimate INTEGER NOT NULL)")
    row = conn.execute("SELECT n, estimate FROM temp.browse_hits WHERE name = ?", (name,)).fetchone()
    if row is None or (complete and row[0] < 0):
        for (old,) in conn.execute("SELECT name FROM temp.browse_hits").fetchall():
            conn.execute(f"DROP TABLE IF EXISTS temp.{old}")   # one search's ids at a time
        conn.execute("DELETE FROM temp.browse_hits")
        conn.execute(f"CREATE TEMP TABLE {name} (id INTEGER PRIMARY KEY)")
        n = conn.execute(f"INSERT INTO temp.{name} SELECT rowid FROM samples_fts WHERE samples_fts MATCH ? LIMIT ?",
                         (query, -1 if complete else DRIVE_FROM_HITS + 1)).rowcount
        estimate = n
        if not complete and n > DRIVE_FROM_HITS:
            last = conn.execute(f"SELECT max(id) FROM temp.{name}").fetchone()[0]
            if n / last >= WALK_DENSITY:
                top = conn.execute("SELECT max(id) FROM samples").fetchone()[0] or last
                estimate = int(n / last * top)
                conn.execute(f"DELETE FROM temp.{name}")
                n = -1
            else:
                n += conn.execute(f"INSERT INTO temp.{name} SELECT rowid FROM samples_fts WHERE samples_fts MATCH ? "
                                  f"AND rowid > ?", (query, last)).rowcount
                estimate = n
        conn.execute("INSERT INTO temp.browse_hits (name, n, estimate) VALUES (?, ?, ?)", (name, n, estimate))
        row = (n, estimate)
    return Hits(f"temp.{name}", row[0], query, row[1])


QUERY_HELP = ("words to search, and filters: status:accepted task:qa domain:law dataset:NAME|* score:curate=4..5 "
              "(score:judge shows and sorts by judge) stale:include round:2|none")


def parse_query(text: str, datasets: dict[str, int], dataset_id: int | None = None,
                rubrics: dict | None = None) -> Filter:
    """The Browse query bar: search words plus key:value filters (quote values with spaces: dataset:'my set').

    Scores: `score:RUBRIC=LO..HI` (also =N, =LO.., =..HI; one per rubric, several rubrics allowed) keeps samples
    whose fresh score on RUBRIC is in the range; `score:RUBRIC` alone only picks the rubric the score column shows
    and the score sort orders by (default: the first score:RUBRIC named, else scores.primary_rubric);
    `stale:include` lets score ranges match stale scores too. `round:K` keeps the samples in Humpback round K,
    `round:none` those in no round (workbench/rounds.py). `rubrics` ({rubric: scale}, from scores.rubrics)
    refuses a rubric nothing is scored on and a bound off its scale; a bare `score:7..10` is always refused.

    `dataset_id` is the dataset shown when the query names none. Raises ValueError saying what is wrong.
    """
    try:
        tokens = shlex.split(text)
    except ValueError as e:
        raise ValueError(f"cannot read the query: {e}") from None
    fields: dict = {"dataset_id": dataset_id}
    words, mins, maxs, shown, include_stale = [], [], [], [], False
    present = rubrics if rubrics is not None else {}
    for tok in tokens:
        key, sep, value = tok.partition(":")
        key = key.lower()
        if not sep or not key:
            words.append(tok)
        elif key == "status":
            if value not in STATUSES:
                raise ValueError(f"status:{value}: one of {', '.join(STATUSES)}")
            fields["status"] = value
        elif key in ("task", "task_type"):
            fields["task_type"] = value
        elif key == "domain":
            fields["domain"] = value
        elif key == "dataset":
            if value in ("*", "all"):
                fields["dataset_id"] = None
            elif value in datasets:
                fields["dataset_id"] = datasets[value]
            else:
                raise ValueError(f"dataset:{value}: no such dataset" +
                                 (f" (one of {', '.join(datasets)})" if datasets else ""))
        elif key == "score":
            if "=" not in value and scores.RUBRIC_RE.fullmatch(value):
                _known(value, present, rubrics is not None)
                shown.append(value)
                continue
            rubric, lo, hi = scores.parse_range(value, present)
            shown.append(rubric)
            mins += [] if lo is None else [f"{rubric}={lo!r}"]
            maxs += [] if hi is None else [f"{rubric}={hi!r}"]
        elif key == "round":
            try:
                fields["round"] = rounds.parse(value)
            except rounds.RoundError as e:
                raise ValueError(f"round:{value}: {e}") from None
        elif key == "stale":
            if value != "include":
                raise ValueError(f"stale:{value}: only stale:include (score ranges also match stale scores)")
            include_stale = True
        else:
            raise ValueError(f"{key}: unknown filter; {QUERY_HELP} (to search for a word with a colon, quote it "
                             f"and leave out the colon)")
    sf = scores.build(mins, maxs, include_stale, rubrics)
    rubric = shown[0] if shown else scores.primary_rubric(present)
    return Filter(**fields, scores=sf, rubric=rubric, search=" ".join(words) or None)


def _known(rubric: str, present: dict, check: bool) -> None:
    if check and rubric not in present:
        raise ValueError(f"score:{rubric}: nothing is scored on {rubric!r}; "
                         + (f"rubrics present: {', '.join(sorted(present))}" if present else "no sample has a score"))
