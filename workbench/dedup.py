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
to one row before the passes so they never use up a window.

Memory: the core keeps one normalized prompt string per row plus short response heads and tails (it never holds
rows as dicts); full responses are re-read from the store only for pairs whose prompts already matched.
"""
from __future__ import annotations

import re
import sqlite3
import string
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import numpy as np
import orjson
from rapidfuzz import process
from rapidfuzz.distance import Indel

from . import scores
from .clean import log_status_changes, new_run   # the undoable run log, shared with the filters
from .store import STATUSES, transaction

MATCH_FIELDS = ("instruction", "input", "response")
DEFAULT_FIELDS = ("instruction", "input")
DEFAULT_THRESHOLD = 0.9
WINDOW = 8            # neighbours compared after each row in each sorted pass
GATE = 8             # a neighbour must share this many leading key characters (fewer for short keys)
SNIPPET = 32          # response head/tail characters kept in memory (sort keys, short responses compared whole)
KEY_BYTES = 64        # sort keys other than the prompt itself: fixed-width bytes (no object per row at 1M)
VERIFY_BATCH = 20_000 # pairs whose responses are fetched from the store at once
CHUNK = 20_000        # candidate pairs scored per rapidfuzz call (their prompt copies are transient memory)
SCAN_CACHE_KIB = -8000  # page cache while scanning (negative = KiB)
WORKERS = 1           # rapidfuzz threads (the cores are shared with the UI and workers)
ANCHOR_MIN_WORDS = 4

_NONWORD = re.compile(r"[\W_]+")
_ASCII_PUNCT = bytes.maketrans(string.punctuation.encode(), b" " * len(string.punctuation))


def match_text(text: str) -> str:
    """What similarity is measured on: casefolded words separated by single spaces (punctuation dropped)."""
    if text.isascii():   # the common case, ~4x faster than the regex
        return " ".join(text.encode().translate(_ASCII_PUNCT).decode().lower().split())
    return _NONWORD.sub(" ", text.casefold()).strip()


# --- what a row contributes -----------------------------------------------------------------------------------

def parse_fields(spec: str | Iterable[str] | None) -> tuple[str, ...]:
    if spec is None:
        return DEFAULT_FIELDS
    names = [f.strip() for f in (spec.split(",") if isinstance(spec, str) else spec) if f.strip()]
    bad = [f for f in names if f not in MATCH_FIELDS]
    if bad or not names:
        raise ValueError(f"fields must be among {', '.join(MATCH_FIELDS)}; got {', '.join(bad) or 'none'}")
    return tuple(f for f in MATCH_FIELDS if f in names)


def row_texts(instruction: str, input_: str, response: str, messages: str | None, is_preference: bool,
              fields: tuple[str, ...]) -> tuple[str, str | None]:
    """(main, extra) raw texts of one row: main is the prompt (or the response when only it is compared), extra
    the response when both are compared. A conversation contributes all its user turns to the prompt and all
    assistant turns to the response (a preference row's chosen reply is its response column)."""
    prompt_fields = [f for f in fields if f != "response"]
    users, assistants = [], []
    if messages:
        for m in orjson.loads(messages):
            role, content = m.get("role"), m.get("content") or ""
            if role == "user":
                users.append(content)
            elif role == "assistant":
                assistants.append(content)
    prompt = ""
    if prompt_fields:
        parts = users if users else ([instruction] if "instruction" in prompt_fields else [])
        if "input" in prompt_fields and input_:
            parts = [*parts, input_]
        prompt = "\n".join(parts)
    reply = None
    if "response" in fields:
        if assistants and not is_preference:
            reply = "\n".join(assistants)
        else:
            reply = "\n".join([*assistants, response]) if assistants else response
    if not prompt_fields:
        return reply or "", None
    return prompt, reply


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
    return " AND ".join(clauses), params


def stream_texts(conn: sqlite3.Connection, where: str, params: list, fields: tuple[str, ...]
                 ) -> Iterator[tuple[int, str, str | None]]:
    """(id, main, extra) for every row in scope, in id order, straight off the cursor."""
    cur = conn.execute(f"{_ROW_SQL} WHERE {where} ORDER BY id", params)
    cur.arraysize = 2000
    for sid, ins, inp, resp, msgs, pref in cur:
        main, extra = row_texts(ins or "", inp or "", resp or "", msgs, bool(pref), fields)
        yield sid, main, extra


def fetch_texts(conn: sqlite3.Connection, ids: list[int], fields: tuple[str, ...]) -> dict[int, tuple[str, str | None]]:
    out = {}
    for i in range(0, len(ids), 900):
        chunk = ids[i:i + 900]
        for sid, ins, inp, resp, msgs, pref in conn.execute(
                f"{_ROW_SQL} WHERE id IN ({','.join('?' * len(chunk))})", chunk):
            out[sid] = row_texts(ins or "", inp or "", resp or "", msgs, bool(pref), fields)
    return out


# --- the core: (id, main, extra) stream -> clusters of ids ------------------------------------------------------

class _UnionFind:
    """Disjoint sets over row indices 0..n-1 in a compact array; the root is always the smallest index."""

    def __init__(self, n: int):
        self.parent = array("q", range(n))

    def find(self, x: int) -> int:
        parent = self.parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, a: int, b: int) -> bool:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        if ra > rb:
            ra, rb = rb, ra
        self.parent[rb] = ra
        return True


@dataclass
class Stats:
    rows: int = 0
    skipped_empty: int = 0
    exact_rows: int = 0          # rows in an exact group beyond its first
    compared: int = 0            # candidate pairs whose similarity was computed
    near_pairs: int = 0          # verified near pairs that joined two clusters
    passes: dict = field(default_factory=dict)      # pass name -> pairs compared
    seconds: dict = field(default_factory=dict)     # phase -> CPU seconds

    def lap(self, phase: str, t0: float) -> None:
        self.seconds[phase] = time.process_time() - t0 - sum(self.seconds.values())


def _anchor_key(main: str) -> str | None:
    """The text rotated to start at its (last) longest word: a start that edits at either end do not move.
    Templates put their fixed long words first and content later, hence the last one."""
    words = main.split(" ")
    if len(words) < ANCHOR_MIN_WORDS:
        return None
    pos = main.rfind(max(reversed(words), key=len))
    return (main[pos:] + " " + main[:pos])[:KEY_BYTES]


def _gated_neighbours(prefixes: np.ndarray, lens: np.ndarray, window: int) -> Iterator[tuple[np.ndarray, int]]:
    """For rows in sorted key order, given each key's first GATE bytes as a (rows, GATE) uint8 array: the pairs
    (p, p + d), d <= window, whose keys share their first min(GATE, len/4) bytes (len = the row's prompt
    length) — yielded per offset d as an array of p. Vectorized: no Python work per pair."""
    n = len(prefixes)
    if n < 2:
        return
    same = prefixes[1:] == prefixes[:-1]
    lcp = np.cumprod(same, axis=1, dtype=np.uint8).sum(axis=1, dtype=np.int16)   # capped at GATE
    del same
    need = np.clip(lens // 4, 2, GATE).astype(np.int16)
    run = lcp
    for d in range(1, min(window, n - 1) + 1):
        if d > 1:
            run = np.minimum(run[:-1], lcp[d - 1:])     # lcp of keys p and p+d = min over the steps between
        hits = np.flatnonzero(run >= need[:n - d])
        if hits.size == 0:
            break
        yield hits, d


def _similar(a_texts: list[str], b_texts: list[str], threshold: float) -> np.ndarray:
    """Elementwise similarity >= threshold, computed in C (rapidfuzz cpdist)."""
    scores = process.cpdist(a_texts, b_texts, scorer=Indel.normalized_similarity, score_cutoff=threshold,
                            workers=WORKERS)
    return scores >= threshold


def _ints(arr: np.ndarray, chunk: int = 65_536) -> Iterator[int]:
    """Python ints from an int array without materializing them all at once."""
    for lo in range(0, len(arr), chunk):
        yield from arr[lo:lo + chunk].tolist()


def _prefix_bytes(texts: Iterable[str], n: int) -> np.ndarray:
    return np.fromiter((t[:GATE].encode()[:GATE] for t in texts), dtype=f"S{GATE}", count=n) \
        .view(np.uint8).reshape(n, GATE)


class _Rows:
    """The in-memory side of a dedup run: one string per row — the prompt's match text, then (when responses
    are compared) \\x1f and the response's snippet: the whole response if short, else its head and tail.
    \\x1f never occurs in match text (str.split treats it as whitespace) and sorts below every character in it,
    so sorting these strings sorts by prompt, then by response."""

    def __init__(self):
        self.ids = array("q")
        self.texts: list[str] = []
        self.main_len = array("q")
        self.hashes = array("q")
        self.has_extra = False

    def add(self, sid: int, main: str, extra: str | None) -> None:
        self.ids.append(sid)
        self.main_len.append(len(main))
        self.hashes.append(hash((main, extra)))
        if extra is None:
            self.texts.append(main)
            return
        self.has_extra = True
        snip = extra if len(extra) <= 2 * SNIPPET else extra[:SNIPPET] + "\x1f" + extra[-SNIPPET:]
        self.texts.append(main + "\x1f" + snip)

    def main(self, i: int) -> str:
        return self.texts[i][:self.main_len[i]] if self.has_extra else self.texts[i]

    def snippet(self, i: int) -> str:
        return self.texts[i][self.main_len[i] + 1:]

    def whole_extra(self, i: int) -> bool:
        return len(self.texts[i]) - self.main_len[i] - 1 <= 2 * SNIPPET

    def backward_key(self, i: int) -> str:
        t, m = self.texts[i], self.main_len[i]
        key = t[max(m - KEY_BYTES, 0):m][::-1]
        return key + "\x1f" + t[:m:-1][:SNIPPET] if self.has_extra else key

    def anchored_key(self, i: int) -> str | None:
        key = _anchor_key(self.main(i))
        return key + "\x1f" + self.snippet(i)[:SNIPPET] if key and self.has_extra else key

    def exact_groups(self, uf: _UnionFind) -> array:
        """Join rows with identical match texts; returns the rows that start a group (the only ones the passes
        compare). Repeats' texts are dropped from memory."""
        n = len(self.ids)
        if n == 0:
            return array("q")
        h = np.frombuffer(self.hashes, dtype=np.int64)
        order = np.argsort(h, kind="stable")      # stable: within a group, the earliest row comes first
        hs = h[order]
        starts = np.ones(n, dtype=bool)
        starts[1:] = hs[1:] != hs[:-1]
        group_first = order[np.flatnonzero(starts)][np.cumsum(starts) - 1]
        repeats = np.flatnonzero(group_first != order)
        for k in repeats.tolist():
            i = int(order[k])
            uf.union(int(group_first[k]), i)
            self.texts[i] = ""
            self.main_len[i] = 0
        self.hashes = array("q")
        is_first = np.ones(n, dtype=bool)
        is_first[order[repeats]] = False
        return array("q", np.flatnonzero(is_first).tolist())

    def forward_order(self, rows_in: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows sorted by their whole string (prompt, then response), and each key's first GATE bytes."""
        keys = np.empty(len(rows_in), dtype=object)
        keys[:] = [self.texts[i] for i in _ints(rows_in)]
        order = rows_in[np.argsort(keys, kind="stable")]
        del keys
        return order, _prefix_bytes((self.texts[i] for i in _ints(order)), len(order))

    def keyed_order(self, rows_in: np.ndarray, keyfn: Callable[[int], str | None]) -> tuple[np.ndarray, np.ndarray]:
        """Rows sorted by keyfn (rows it gives None are left out), keys held as fixed-width UTF-8 bytes (no Python
        object per row; UTF-8 byte order is code point order)."""
        keys = np.fromiter(((keyfn(i) or "").encode()[:KEY_BYTES] for i in _ints(rows_in)),
                           dtype=f"S{KEY_BYTES}", count=len(rows_in))
        present = np.flatnonzero(keys != b"")
        if present.size < len(keys):
            keys, rows_in = keys[present], rows_in[present]
        perm = np.argsort(keys, kind="stable")
        prefixes = keys.view(np.uint8).reshape(len(keys), KEY_BYTES)[perm, :GATE]
        return rows_in[perm], prefixes


def near_duplicate_groups(rows: Iterable[tuple[int, str, str | None]], threshold: float = DEFAULT_THRESHOLD,
                          fetch_extra: Callable[[list[int]], dict[int, str | None]] | None = None,
                          window: int = WINDOW, stats: Stats | None = None) -> list[list[int]]:
    """Clusters (lists of ids, each sorted, size >= 2) over a stream of (id, main text, extra text or None).

    When rows carry an extra text (the response), only its short head and tail stay in memory; pairs whose main
    texts match are then verified on the full extra texts that `fetch_extra(ids) -> {id: raw extra}` returns.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold is a similarity in (0, 1], not {threshold}")
    st = stats if stats is not None else Stats()
    t0 = time.process_time()
    data = _Rows()
    for sid, main_raw, extra_raw in rows:
        st.rows += 1
        main = match_text(main_raw)
        extra = match_text(extra_raw) if extra_raw is not None else None
        if not main and not extra:
            st.skipped_empty += 1
            continue
        data.add(sid, main, extra)
    st.lap("read", t0)
    ids, has_extra = data.ids, data.has_extra
    n = len(ids)
    uf = _UnionFind(n)
    reps = data.exact_groups(uf)
    st.exact_rows = n - len(reps)
    if has_extra and fetch_extra is None:
        raise ValueError("rows carry response texts: pass fetch_extra to verify them")
    pending: list[tuple[int, int]] = []      # prompts matched; the full responses still to verify
    main_len = np.frombuffer(data.main_len, dtype=np.int64)
    st.lap("exact", t0)

    texts, mlen = data.texts, data.main_len
    rows_all = np.frombuffer(reps, dtype=np.int64)
    for name in ("forward", "backward", "anchored"):
        if name == "forward":
            order, prefixes = data.forward_order(rows_all)
        else:
            order, prefixes = data.keyed_order(rows_all, data.backward_key if name == "backward"
                                               else data.anchored_key)
        lens = main_len[order]
        compared = 0
        for hits, d in _gated_neighbours(prefixes, lens, window):
            # Indel similarity >= t needs 2 * min(len) >= t * (sum of lens): drop hopeless pairs before scoring
            la, lb = lens[hits], lens[hits + d]
            hits = hits[2 * np.minimum(la, lb) >= threshold * (la + lb)]
            for lo in range(0, hits.size, CHUNK):
                part = hits[lo:lo + CHUNK]
                a_idx, b_idx = order[part].tolist(), order[part + d].tolist()
                if has_extra:       # the prompt part of each row's string (inline: a method call per row costs)
                    a_txt = [texts[i][:mlen[i]] for i in a_idx]
                    b_txt = [texts[i][:mlen[i]] for i in b_idx]
                else:
                    a_txt, b_txt = [texts[i] for i in a_idx], [texts[i] for i in b_idx]
                ok = _similar(a_txt, b_txt, threshold)
                del a_txt, b_txt
                compared += part.size
                for k in np.flatnonzero(ok).tolist():
                    a, b = a_idx[k], b_idx[k]
                    if not has_extra:
                        joined = uf.union(a, b)
                    elif data.whole_extra(a) and data.whole_extra(b):     # short responses: whole in memory
                        joined = (Indel.normalized_similarity(data.snippet(a), data.snippet(b),
                                                              score_cutoff=threshold) >= threshold
                                  and uf.union(a, b))
                    else:
                        joined = False
                        if uf.find(a) != uf.find(b):
                            pending.append((a, b))
                    st.near_pairs += joined
        st.passes[name] = compared
        st.compared += compared
        del order, prefixes, lens
        st.lap(name, t0)

    for start in range(0, len(pending), VERIFY_BATCH):
        batch = [(a, b) for a, b in pending[start:start + VERIFY_BATCH] if uf.find(a) != uf.find(b)]
        texts = fetch_extra(sorted({ids[x] for p in batch for x in p}))
        for a, b in batch:
            ea, eb = texts.get(ids[a]), texts.get(ids[b])
            if ea is None or eb is None:
                continue
            if Indel.normalized_similarity(match_text(ea), match_text(eb), score_cutoff=threshold) >= threshold:
                st.near_pairs += uf.union(a, b)
    st.lap("verify", t0)

    # union keeps the smaller index as root, so a root is its cluster's first row
    groups: dict[int, list[int]] = {}
    for i in range(n):
        r = uf.find(i)
        if r != i:
            groups.setdefault(r, [ids[r]]).append(ids[i])
    return sorted(sorted(g) for g in groups.values())


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
                  stats: Stats | None = None) -> list[list[int]]:
    """Clusters of sample ids (each sorted, the list sorted by first id) among the rows in scope.

    Scope: the named datasets (all if None), rows with one of `statuses`, and if `ids` is given only those ids.
    """
    where, params = scope_where(dataset_ids(conn, datasets), statuses)
    rows = stream_texts(conn, where, params, fields)
    if ids is not None:
        wanted = set(ids)
        rows = (r for r in rows if r[0] in wanted)
    # with responses compared, full responses are read back from the store only for candidate pairs
    fetch = ((lambda batch: {k: v[1] for k, v in fetch_texts(conn, batch, fields).items()})
             if "response" in fields and len(fields) > 1 else None)
    # one sequential scan: a big page cache would only add its size to the peak memory
    cache = conn.execute("PRAGMA cache_size").fetchone()[0]
    conn.execute(f"PRAGMA cache_size = {SCAN_CACHE_KIB}")
    try:
        return near_duplicate_groups(rows, threshold, fetch_extra=fetch, stats=stats)
    finally:
        conn.execute(f"PRAGMA cache_size = {int(cache)}")


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


def reject_duplicates(conn: sqlite3.Connection, plan: list[tuple[int, int]], kind: str = "dedup",
                      run: str | None = None) -> tuple[str | None, int, int]:
    """Reject each (sample, keeper) pair's sample, logging a 'dedup' decision per row in one run (undoable with
    clean.undo_run). Rows already rejected are left alone, as are rows a curator accepted. Returns
    (run id or None if nothing changed, rejected, left because accepted)."""
    rejected = accepted = 0
    with transaction(conn):
        changes = []
        for sid, keeper in plan:
            row = conn.execute("SELECT status FROM samples WHERE id = ?", (sid,)).fetchone()
            if row is None or row[0] == "rejected":
                continue
            if row[0] == "accepted":
                accepted += 1
                continue
            changes.append((sid, row[0], f"duplicate of #{keeper}"))
        if not changes:
            return None, 0, accepted
        run = run or new_run(conn, kind)
        rejected = log_status_changes(conn, run, "dedup", changes, "rejected")
    return run, rejected, accepted


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
