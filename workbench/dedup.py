"""Exact and near-duplicate clusters over prompts (instruction + input) and, optionally, responses.

Similarity is rapidfuzz's normalized Indel similarity (`fuzz.ratio` / 100) of the *match text*: casefolded, every
run of punctuation and whitespace collapsed to one space. Two rows are near-duplicates when each compared part
(the prompt; the response too when asked) is at least `threshold` similar; clusters are the connected components
(union-find) of those pairs plus the exact groups (identical match text, which includes every import-time
exact duplicate: equal content_hash implies equal match text).

Candidates come from a multi-pass sorted neighbourhood instead of MinHash LSH (measured in issue 6: MinHash took
50 s at 100k rows for recall 0.975, 510 s and 7.6 GB at 1M). Each pass sorts the rows by one key and compares
each row with the next WINDOW rows that share the first GATE characters of that key:

- forward: the prompt (then the response's head) — finds copies edited anywhere but their first characters;
- backward: the reversed prompt (then the reversed response tail) — finds copies edited at the start;
- anchored: the prompt rotated to start at its (last) longest word — finds copies edited at both ends.

A near copy is missed only if every key has an edit within its first few characters. Exact groups are collapsed
to one row before the passes so they never use up a window. Before a neighbour pair is scored, a lower bound on
its Indel distance from 32-bucket character counts rules most non-matches out (exact: it never drops a pair that
reaches the threshold; ~90 % of the pairs at 1M rows). Rows are read and turned into per-row signatures (match
text, sort keys, counts, a BLAKE2b hash) a block at a time, in up to 2 worker processes for big scans
(dedup_scan.py).

Memory: per row the core keeps its text (the normalized prompt, then short response heads and tails) as UTF-8
in one buffer, two 64-byte sort keys, 32 bytes of counts and a few integers in numpy arrays (no Python object per
row); texts past near_dup.TEXT_MEMORY_BYTES go to a temporary file beside the store, read back (pread) only for
the pairs compared. Full responses are re-read from the store only for pairs whose prompts already matched.
About 0.4 KB per row at 1M rows (it was 0.9 KB with a Python string per row).
"""
from __future__ import annotations

import os
import sqlite3
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterable

from rapidfuzz.distance import Indel

from . import scores
from .dedup_scan import db_path, fetch_extras, row_texts, scan_signatures
from .near_dup import (ANCHOR_MIN_WORDS, CHUNK, DEFAULT_THRESHOLD, GATE, KEY_BYTES,  # noqa: F401
                       SNIPPET, VERIFY_BATCH, WINDOW, WORKERS, Stats, match_text, near_duplicate_groups,
                       near_duplicate_sigs)
from .runs import MarkedRun, log_status_changes   # the undoable run log, shared with the filters
from .short_tx import ShortTransactions
from .store import IN_A_DATASET, STATUSES, open_store, transaction

MATCH_FIELDS = ("instruction", "input", "response")
DEFAULT_FIELDS = ("instruction", "input")
SCAN_CACHE_KIB = -8000  # page cache while scanning (negative = KiB)


# --- what a row contributes -----------------------------------------------------------------------------------

def parse_fields(spec: str | Iterable[str] | None) -> tuple[str, ...]:
    if spec is None:
        return DEFAULT_FIELDS
    names = [f.strip() for f in (spec.split(",") if isinstance(spec, str) else spec) if f.strip()]
    bad = [f for f in names if f not in MATCH_FIELDS]
    if bad or not names:
        raise ValueError(f"fields must be among {', '.join(MATCH_FIELDS)}; got {', '.join(bad) or 'none'}")
    return tuple(f for f in MATCH_FIELDS if f in names)


_ROW_SQL = "SELECT id, instruction, input, response, messages, rejected IS NOT NULL FROM samples"


def scope_where(dataset_ids: list[int] | None, statuses: Iterable[str]) -> tuple[str, list]:
    statuses = list(statuses)
    bad = [s for s in statuses if s not in STATUSES]
    if bad:
        raise ValueError(f"unknown status {bad[0]!r}; one of {', '.join(STATUSES)}")
    clauses, params = [f"status IN ({','.join('?' * len(statuses))})"], list(statuses)
    if dataset_ids is not None:
        clauses.append(f"dataset_id IN ({','.join('?' * len(dataset_ids))})")
        params += dataset_ids
    else:
        clauses.append(IN_A_DATASET)
    return " AND ".join(clauses), params


def fetch_texts(conn: sqlite3.Connection, ids: list[int], fields: tuple[str, ...]) -> dict[int, tuple[str, str | None]]:
    out = {}
    for i in range(0, len(ids), 900):
        chunk = ids[i:i + 900]
        for sid, ins, inp, resp, msgs, pref in conn.execute(
                f"{_ROW_SQL} WHERE id IN ({','.join('?' * len(chunk))})", chunk):
            out[sid] = row_texts(ins or "", inp or "", resp or "", msgs, bool(pref), fields)
    return out


# --- over the store ------------------------------------------------------------------------------------------

ACTIVE = ("pending", "accepted")   # rejected rows are out of the data already


def default_fields(kind: str | None) -> tuple[str, ...]:
    """Prompts for most datasets; the text itself for plain-text datasets (their prompt is empty)."""
    return ("response",) if kind == "text" else DEFAULT_FIELDS


def fields_for(conn: sqlite3.Connection, datasets: Iterable[str] | None) -> tuple[str, ...]:
    """The default fields for these datasets (all if None): what the CLI and the Duplicates screen both compare."""
    names = list(datasets or [])
    kinds = {r[0] for r in conn.execute(
        "SELECT kind FROM datasets" + (f" WHERE name IN ({','.join('?' * len(names))})" if names else ""), names)}
    return default_fields("text" if kinds == {"text"} else None)


def dataset_ids(conn: sqlite3.Connection, names: Iterable[str] | None) -> list[int] | None:
    if not names:
        return None
    out = []
    for name in names:
        row = conn.execute("SELECT id FROM datasets WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise KeyError(f"no dataset named {name!r}")
        out.append(row[0])
    return out


def find_clusters(conn: sqlite3.Connection, datasets: Iterable[str] | None = None,
                  fields: tuple[str, ...] = DEFAULT_FIELDS, threshold: float = DEFAULT_THRESHOLD,
                  statuses: Iterable[str] = ACTIVE, ids: Iterable[int] | None = None,
                  stats: Stats | None = None, workers: int | None = None,
                  progress: Callable[[str, int, int], None] | None = None) -> list[list[int]]:
    """Clusters of sample ids (each sorted, the list sorted by first id) among the rows in scope.

    Scope: the named datasets (all if None), rows with one of `statuses`, and if `ids` is given only those ids.
    `workers`: processes that read and sign the rows (None: up to 2 for big scans, see dedup_scan).
    `progress(phase, done, total)`: see near_dup.near_duplicate_sigs; what it raises stops the scan (its worker
    processes are ended before this returns).
    """
    where, params = scope_where(dataset_ids(conn, datasets), statuses)
    # with responses compared, full responses are read back from the store only for candidate pairs
    fetch = (lambda batch: fetch_extras(conn, batch, fields)) if "response" in fields and len(fields) > 1 else None
    # one sequential scan: a big page cache would only add its size to the peak memory
    cache = conn.execute("PRAGMA cache_size").fetchone()[0]
    conn.execute(f"PRAGMA cache_size = {SCAN_CACHE_KIB}")
    sigs = None
    try:
        sigs = scan_signatures(conn, where, params, fields, None if ids is None else set(ids), workers)
        path = db_path(conn)    # texts past near_dup.TEXT_MEMORY_BYTES go beside the store (/tmp may be RAM)
        return near_duplicate_sigs(sigs, threshold, fetch_extra=fetch, stats=stats, progress=progress,
                                   spill_dir=os.path.dirname(os.path.abspath(path)) if path else None)
    finally:
        if sigs is not None:
            sigs.close()       # a scan stopped early: end its worker processes now, not when collected
        conn.execute(f"PRAGMA cache_size = {int(cache)}")


class Cancelled(Exception):
    """A scan stopped because its caller asked (find_clusters_at's `stop`)."""


def find_clusters_at(store_path, datasets: Iterable[str] | None, fields: tuple[str, ...], threshold: float,
                     stop=None, progress: Callable[[str, int, int], None] | None = None) -> list[list[int]]:
    """find_clusters on a connection of its own, for a thread of its own (the Duplicates screen: the app's store
    runner stays free for the screen's other reads). `stop` (a threading.Event) set: Cancelled is raised at the
    next progress point."""
    def report(phase: str, done: int, total: int) -> None:
        if stop is not None and stop.is_set():
            raise Cancelled()
        if progress is not None:
            progress(phase, done, total)

    conn = open_store(store_path)
    try:
        report("start", 0, 0)
        return find_clusters(conn, datasets, fields, threshold, progress=report)
    finally:
        conn.close()


# --- clusters for people: members, the keeper, applying keep-best -------------------------------------------

@dataclass
class Member:
    id: int
    line: int | None             # samples.source_line: line/row in the imported file
    dataset: str
    status: str
    score: float | None          # the fresh score on the rubric keep-best ranks by (see describe)
    content_hash: int
    rubric: str | None = None
    exact: bool = False          # another member has the same content hash (an import-time exact duplicate)
    similarity: float = 1.0      # to the keeper, over the compared fields (the lowest of them)
    keep: bool = False

    def to_json(self) -> dict:
        return {"id": self.id, "line": self.line, "dataset": self.dataset, "status": self.status,
                "score": self.score, "rubric": self.rubric, "keep": self.keep, "exact": self.exact,
                "similarity": round(self.similarity, 4)}


@dataclass
class Cluster:
    members: list[Member]

    @property
    def keeper(self) -> Member:
        return next(m for m in self.members if m.keep)

    @property
    def kind(self) -> str:
        return "exact" if len({m.content_hash for m in self.members}) == 1 else "near"


def best_member(members: list[Member]) -> Member:
    """Keep-best: the highest score on the rubric; without scores (or on a tie) the earliest sample."""
    return min(members, key=lambda m: (m.score is None, -(m.score or 0.0), m.id))


def _similarity(a: tuple[str, str | None], b: tuple[str, str | None]) -> float:
    sims = [Indel.normalized_similarity(match_text(a[0]), match_text(b[0]))]
    if a[1] is not None or b[1] is not None:
        sims.append(Indel.normalized_similarity(match_text(a[1] or ""), match_text(b[1] or "")))
    return min(sims)


def ranking_rubric(conn: sqlite3.Connection, rubric: str | None = None) -> str | None:
    """The rubric keep-best ranks by: the one named (it must have scores), else scores.primary_rubric."""
    present = scores.rubrics(conn)
    if rubric is not None:
        if rubric not in present:
            raise ValueError(f"--rubric {rubric}: nothing is scored on it; "
                             + (f"rubrics present: {', '.join(sorted(present))}" if present else "no scores yet"))
        return rubric
    return scores.primary_rubric(present)


def describe(conn: sqlite3.Connection, clusters: list[list[int]], fields: tuple[str, ...] = DEFAULT_FIELDS,
             with_similarity: bool = True, rubric: str | None = None) -> list[Cluster]:
    """Clusters of ids -> Cluster objects with each member's line, dataset, status, score and the keep-best pick.
    Scores are `rubric`'s fresh ones (default: see ranking_rubric)."""
    names = dict(conn.execute("SELECT id, name FROM datasets"))
    rubric = ranking_rubric(conn, rubric)
    score_sql = scores.ranked_sql(rubric, "samples.id") if rubric else "NULL"
    out = []
    for ids in clusters:
        rows = {}
        for i in range(0, len(ids), 900):
            chunk = ids[i:i + 900]
            for r in conn.execute(f"SELECT id, source_line, dataset_id, status, {score_sql}, content_hash FROM samples "
                                  f"WHERE id IN ({','.join('?' * len(chunk))})", chunk):
                rows[r[0]] = Member(r[0], r[1], names.get(r[2], str(r[2])), r[3], r[4], r[5], rubric)
        members = [rows[i] for i in ids if i in rows]
        if len(members) < 2:
            continue
        keeper = best_member(members)
        keeper.keep = True
        texts = fetch_texts(conn, [m.id for m in members], fields) if with_similarity else {}
        hashes = Counter(m.content_hash for m in members)
        for m in members:
            m.exact = hashes[m.content_hash] > 1
            if with_similarity and m is not keeper:
                m.similarity = (1.0 if m.content_hash == keeper.content_hash
                                else _similarity(texts[keeper.id], texts[m.id]))
        out.append(Cluster(members))
    return out


@dataclass
class ApplyResult:
    run: str | None
    clusters: int = 0
    rejected: int = 0
    kept_accepted: int = 0       # non-keepers a curator had accepted: left as they are


APPLY_ROWS = 500        # rows looked up and changed per statement batch (a waiting writer is noticed between them)


def reject_duplicates(conn: sqlite3.Connection, plan: list[tuple[int, int]]) -> tuple[str | None, int, int]:
    """Reject each (sample, keeper) pair's sample, logging a 'dedup' decision per row in one run (undoable with
    clean.undo_run). Rows already rejected are left alone, as are rows a curator accepted. Returns
    (run id or None if nothing changed, rejected, left because accepted).

    The rows go in id order in short write transactions (workbench/short_tx.py: ended at once when another writer
    waits for the lock, which then goes first), so a curator's decision or a worker never waits long behind a big
    keep-best. Each row's status is read inside the transaction that changes it. `bulk_runs` marks the run
    unfinished until its last chunk: a failure midway undoes what was written before it is reported, and a process
    that died midway is undone by the next open (workbench/bulk_recovery.py), as `clean --apply` is."""
    rejected = accepted = 0
    todo = sorted(plan)
    if not todo:
        return None, 0, 0
    with MarkedRun(conn, "dedup") as marked, ShortTransactions(conn) as tx:
        for i in range(0, len(todo), APPLY_ROWS):
            chunk = todo[i:i + APPLY_ROWS]
            status = dict(conn.execute(f"SELECT id, status FROM samples WHERE id IN "
                                       f"({','.join('?' * len(chunk))})", [sid for sid, _ in chunk]))
            changes = []
            for sid, keeper in chunk:
                st = status.get(sid)
                if st is None or st == "rejected":
                    continue
                if st == "accepted":
                    accepted += 1
                    continue
                changes.append((sid, st, f"duplicate of #{keeper}"))
            if changes:
                rejected += log_status_changes(conn, marked.id(), "dedup", changes, "rejected")
            tx.next()
        marked.finish()
    run = marked.run
    return (run if rejected else None), rejected, accepted


@dataclass
class KeepBestPlan:
    """What keep-best does to described clusters: the preview prints it, apply carries out exactly it."""
    clusters: int
    reject: list[tuple[int, int]]     # (sample, its keeper): rows it rejects
    accepted: list[int]               # non-keepers a curator accepted: left as they are


def plan_keep_best(clusters: list[Cluster]) -> KeepBestPlan:
    reject, accepted = [], []
    for c in clusters:
        for m in c.members:
            if m.keep or m.status == "rejected":
                continue
            (accepted.append(m.id) if m.status == "accepted" else reject.append((m.id, c.keeper.id)))
    return KeepBestPlan(len(clusters), reject, accepted)


def apply_keep_best(conn: sqlite3.Connection, clusters: list[Cluster] | KeepBestPlan) -> ApplyResult:
    """Keep the best member of every cluster, reject the rest (one undoable run): the plan the preview showed
    (reject_duplicates re-checks each row's status, so a row decided since the preview is left alone)."""
    plan = clusters if isinstance(clusters, KeepBestPlan) else plan_keep_best(clusters)
    run, rejected, accepted = reject_duplicates(conn, plan.reject)
    return ApplyResult(run, plan.clusters, rejected, accepted + len(plan.accepted))
