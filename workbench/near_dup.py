"""The near-duplicate core: a stream of (id, prompt match text, response) -> clusters of ids, with no store.

Multi-pass sorted neighbourhood (forward, backward, anchored keys; see workbench/dedup.py for why not MinHash),
candidate pairs scored in batches with rapidfuzz's Indel similarity, clusters by union-find.
"""
from __future__ import annotations

import os
import re
import string
import tempfile
import time
from array import array
from dataclasses import dataclass, field
from itertools import islice
from typing import Callable, Iterable, Iterator

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import Indel

DEFAULT_THRESHOLD = 0.9
WINDOW = 8            # neighbours compared after each row in each sorted pass
GATE = 8             # a neighbour must share this many leading key characters (fewer for short keys)
SNIPPET = 32          # response head/tail characters kept in memory (sort keys, short responses compared whole)
KEY_BYTES = 64        # sort keys other than the prompt itself: fixed-width bytes (no object per row at 1M)
VERIFY_BATCH = 20_000 # pairs whose responses are fetched from the store at once
CHUNK = 20_000        # candidate pairs scored per rapidfuzz call (their prompt copies are transient memory)
WORKERS = 1           # rapidfuzz threads (the cores are shared with the UI and workers)
BUCKETS = 32          # character-histogram buckets per row (uint8 counts): the prefilter's lower bound
HIST_ROWS = 8_192     # rows whose histograms are built per numpy call (its temporaries stay in cache)
ANCHOR_MIN_WORDS = 4

_NONWORD = re.compile(r"[\W_]+")
# ASCII byte -> what match_text makes of it: punctuation and whitespace (as str.split sees it) a space, A-Z lower
_ASCII_MAP = bytes(32 if chr(b) in string.punctuation or chr(b).isspace() else ord(chr(b).lower()) if b < 128 else b
                   for b in range(256))


def match_text(text: str) -> str:
    """What similarity is measured on: casefolded words separated by single spaces (punctuation dropped)."""
    if text.isascii():   # the common case, several times faster than the regex: one byte map, then collapse
        s = text.encode().translate(_ASCII_MAP)
        while b"  " in s:
            s = s.replace(b"  ", b" ")
        return s.strip(b" ").decode()
    return _NONWORD.sub(" ", text.casefold()).strip()


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
    filtered: int = 0            # candidate pairs the character-count bound ruled out before scoring
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


def _histograms(texts: list[str], lens: np.ndarray, has_extra: bool) -> np.ndarray:
    """Each row's prompt as a histogram of its code points over BUCKETS buckets (code point mod BUCKETS), counts
    saturated at 255: (rows, BUCKETS) uint8, built in numpy a block of rows at a time."""
    n = len(texts)
    hist = np.zeros((n, BUCKETS), dtype=np.uint8)
    for lo in range(0, n, HIST_ROWS):
        hi = min(lo + HIST_ROWS, n)
        block_lens = lens[lo:hi]
        block = texts[lo:hi] if not has_extra else [t[:m] for t, m in zip(texts[lo:hi], block_lens.tolist())]
        cps = np.frombuffer("".join(block).encode("utf-32-le", "surrogatepass"), dtype=np.int32)  # < 2**21
        del block
        slots = np.repeat(np.arange(0, (hi - lo) * BUCKETS, BUCKETS, dtype=np.int32), block_lens)
        slots += cps & (BUCKETS - 1)
        hist[lo:hi] = np.minimum(np.bincount(slots, minlength=(hi - lo) * BUCKETS), 255).reshape(-1, BUCKETS)
    return hist


def _may_reach(hist: np.ndarray, a: np.ndarray, b: np.ndarray, la: np.ndarray, lb: np.ndarray,
               threshold: float) -> np.ndarray:
    """False where rows a and b provably have Indel similarity < threshold. The Indel distance is
    la + lb - 2 * LCS and the LCS holds at most min(count in a, count in b) of each character, so the distance is
    at least the L1 distance of the character counts, and of any bucketing or saturation of them (a sum of
    |x - y| never grows when counts are merged or capped). Similarity >= t needs distance <= (1 - t) * (la + lb);
    the +1 keeps pairs at the floating-point edge for the exact scorer to decide."""
    l1 = np.abs(hist[a].astype(np.int16) - hist[b].astype(np.int16)).sum(axis=1, dtype=np.int32)
    return l1 <= (1.0 - threshold) * (la + lb) + 1


def _backward_keys(texts: list[str], mlen: list[int], has_extra: bool) -> list[bytes]:
    """The prompt reversed (then the response's tail reversed), as KEY_BYTES of UTF-8."""
    kb = KEY_BYTES
    if not has_extra:
        return [t[::-1][:kb].encode("utf-8", "surrogatepass")[:kb] for t in texts]
    # a prompt of KEY_BYTES characters already fills the key: the response's tail is cut off anyway
    return [(t[m - kb:m][::-1] if m >= kb else t[:m][::-1] + "\x1f" + t[:m:-1][:SNIPPET])
            .encode("utf-8", "surrogatepass")[:kb] for t, m in zip(texts, mlen)]


def _anchored_keys(texts: list[str], mlen: list[int], has_extra: bool) -> list[bytes]:
    """The prompt rotated to start at its (last) longest word (then the response's head); b"" for prompts of
    fewer than ANCHOR_MIN_WORDS words."""
    kb = KEY_BYTES
    if not has_extra:
        return [(_anchor_key(t) or "").encode("utf-8", "surrogatepass")[:kb] for t in texts]
    out = []
    for t, m in zip(texts, mlen):
        key = _anchor_key(t[:m])
        out.append((key + "\x1f" + t[m + 1:m + 1 + SNIPPET]).encode("utf-8", "surrogatepass")[:kb] if key else b"")
    return out


@dataclass
class Sig:
    """What a block of rows leaves in memory (see _Rows); built by `signatures`, in worker processes for big
    scans (it pickles as a few buffers and one list of strings)."""
    rows: int                    # rows read, empty ones included
    has_extra: bool
    ids: np.ndarray              # int64, the rows kept (something to compare)
    blob: bytes                  # the rows' texts (see _Rows), UTF-8 (surrogatepass), one after another
    text_len: np.ndarray         # int64, bytes of each row's text in blob
    main_len: np.ndarray         # int64, code points of the prompt part of each text
    hashes: np.ndarray           # int64, Python's hash of the whole match texts (exact groups): salted per
                                 # process, so one run's workers share a PYTHONHASHSEED (dedup_scan)
    backward: np.ndarray         # S{KEY_BYTES}
    anchored: np.ndarray         # S{KEY_BYTES}, b"" when the prompt is too short to anchor
    hist: np.ndarray             # (rows kept, BUCKETS) uint8


def signatures(ids: list[int], mains: list[str], extras: list[str] | None) -> Sig:
    """One block of raw rows -> its Sig: match texts, then everything the passes need per row."""
    mt = match_text
    mains = [mt(t) for t in mains]
    rows = len(ids)
    if extras is None:
        keep = [k for k, m in enumerate(mains) if m]
        if len(keep) < rows:
            ids, mains = [ids[k] for k in keep], [mains[k] for k in keep]
        texts = mains
        hashes = [hash(m) for m in mains]
    else:
        extras = [mt(t) for t in extras]
        keep = [k for k, (m, e) in enumerate(zip(mains, extras)) if m or e]
        if len(keep) < rows:
            ids, mains, extras = [ids[k] for k in keep], [mains[k] for k in keep], [extras[k] for k in keep]
        hashes = [hash(p) for p in zip(mains, extras)]
        two = 2 * SNIPPET
        texts = [m + "\x1f" + (e if len(e) <= two else e[:SNIPPET] + "\x1f" + e[-SNIPPET:])
                 for m, e in zip(mains, extras)]
    mlen = [len(m) for m in mains]
    has_extra = extras is not None
    main_len = np.array(mlen, dtype=np.int64)
    encoded = [t.encode("utf-8", "surrogatepass") for t in texts]
    return Sig(rows, has_extra, np.array(ids, dtype=np.int64), b"".join(encoded),
               np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)), main_len,
               np.array(hashes, dtype=np.int64),
               np.array(_backward_keys(texts, mlen, has_extra), dtype=f"S{KEY_BYTES}"),
               np.array(_anchored_keys(texts, mlen, has_extra), dtype=f"S{KEY_BYTES}"),
               _histograms(texts, main_len, has_extra))


FORWARD_ROWS = 16_384  # rows whose forward keys are gathered per numpy call (its index temporaries stay small)
TEXT_MEMORY_BYTES = 32 << 20    # row texts held in memory; the rest go to a temporary file (see _Rows)


class _Growing:
    """A numpy array filled block by block, its capacity doubled when full. Capacity is allocated with np.empty:
    memory pages count only once filled, so the unused tail costs address space, not memory."""

    def __init__(self):
        self.buf: np.ndarray | None = None
        self.used = 0

    def add(self, block: np.ndarray) -> None:
        need = self.used + len(block)
        if self.buf is None or need > len(self.buf):
            size = max(need, 1024, 0 if self.buf is None else 2 * len(self.buf))
            new = np.empty((size, *block.shape[1:]), dtype=block.dtype)
            if self.buf is not None:
                new[:self.used] = self.buf[:self.used]
            self.buf = new
        self.buf[self.used:need] = block
        self.used = need

    def array(self) -> np.ndarray:
        out, self.buf = self.buf[:self.used], None
        return out


class _Rows:
    """The in-memory side of a dedup run: one text per row — the prompt's match text, then (when responses are
    compared) \\x1f and the response's snippet: the whole response if short, else its head and tail.
    \\x1f never occurs in match text (str.split treats it as whitespace) and sorts below every character in it,
    so sorting these texts sorts by prompt, then by response. The texts are held as UTF-8 in one bytearray with
    an offset per row (a Python str per row cost ~60 bytes more each, and scattered them over the heap), and
    decoded only for the rows a pass compares. Beside them, per row: fixed-width sort keys and a character
    histogram (numpy arrays, no Python object per row)."""

    def __init__(self, sigs: Iterable[Sig], stats: Stats, progress: Callable[[str, int, int], None] | None = None,
                 text_memory: int | None = None, spill_dir: str | None = None):
        text_memory = TEXT_MEMORY_BYTES if text_memory is None else text_memory
        self.blob = bytearray()
        self.in_memory = None             # bytes of texts in blob; the rest are in the spill file from offset 0
        self._spill = None
        # each per-row array is filled in place as the blocks come (a list of blocks concatenated at the end
        # held both at once, and the freed blocks left the heap fragmented: ~40 % of the peak at 1M rows)
        grow = {k: _Growing() for k in ("ids", "text_len", "main_len", "hashes", "backward", "anchored", "hist")}
        self.has_extra = None
        try:
            self._read(sigs, stats, progress, text_memory, spill_dir, grow)
        except BaseException:      # stopped (a cancel, a worker's error): the spill file goes at once
            self.close()
            raise
        self.has_extra = bool(self.has_extra)
        empty = {"ids": np.zeros(0, np.int64), "text_len": np.zeros(0, np.int64), "main_len": np.zeros(0, np.int64),
                 "hashes": np.zeros(0, np.int64), "backward": np.zeros(0, f"S{KEY_BYTES}"),
                 "anchored": np.zeros(0, f"S{KEY_BYTES}"), "hist": np.zeros((0, BUCKETS), np.uint8)}
        for k, g in grow.items():
            setattr(self, k, g.array() if g.used else empty[k])
        self.start = np.zeros(len(self.text_len) + 1, dtype=np.int64)     # row i's text: blob[start[i]:start[i + 1]]
        np.cumsum(self.text_len, out=self.start[1:])
        self.text_len = None
        if self._spill is None:
            self.in_memory = len(self.blob)
        else:
            self._spill.flush()
        self._fd = None if self._spill is None else self._spill.fileno()
        self._view, self._start = memoryview(self.blob), memoryview(self.start)   # fast scalar access

    def _read(self, sigs, stats, progress, text_memory, spill_dir, grow) -> None:
        for sig in sigs:
            if self.has_extra is None:
                self.has_extra = sig.has_extra
            elif self.has_extra != sig.has_extra:
                raise ValueError("some blocks carry extra texts and some do not")
            stats.rows += sig.rows
            stats.skipped_empty += sig.rows - len(sig.ids)
            if self._spill is None and len(self.blob) + len(sig.blob) > text_memory and self.blob:
                # unlinked at once: gone when closed, or when the process dies
                self._spill = tempfile.TemporaryFile(prefix="workbench-dedup-", dir=spill_dir)
                self.in_memory = len(self.blob)
            if self._spill is None:
                self.blob += sig.blob
            else:
                try:
                    self._spill.write(sig.blob)
                except OSError as e:     # a full disk: say where
                    raise OSError(e.errno, f"dedup's temporary file in {spill_dir or tempfile.gettempdir()}: "
                                           f"{e.strerror}") from None
            for k, g in grow.items():
                g.add(getattr(sig, k))
            del sig
            if progress is not None:
                progress("read", stats.rows, 0)

    def close(self) -> None:
        if self._spill is not None:
            self._spill.close()
            self._spill = self._fd = None

    def texts_of(self, rows: Iterable[int]) -> list[str]:
        view, start = self._view, self._start
        if self._fd is None:
            return [str(view[start[i]:start[i + 1]], "utf-8", "surrogatepass") for i in rows]
        fd, mem, pread = self._fd, self.in_memory, os.pread
        out = []
        for i in rows:
            a, b = start[i], start[i + 1]
            out.append(str(view[a:b], "utf-8", "surrogatepass") if b <= mem
                       else pread(fd, b - a, a - mem).decode("utf-8", "surrogatepass"))
        return out

    def exact_groups(self, uf: _UnionFind) -> np.ndarray:
        """Join rows with identical match texts; returns the rows that start a group (the only ones the passes
        compare)."""
        n = len(self.ids)
        if n == 0:
            return np.zeros(0, np.int64)
        h = self.hashes
        order = np.argsort(h, kind="stable")      # stable: within a group, the earliest row comes first
        hs = h[order]
        starts = np.ones(n, dtype=bool)
        starts[1:] = hs[1:] != hs[:-1]
        group_first = order[np.flatnonzero(starts)][np.cumsum(starts) - 1]
        repeats = np.flatnonzero(group_first != order)
        for k in repeats.tolist():
            uf.union(int(group_first[k]), int(order[k]))
        self.hashes = None
        is_first = np.ones(n, dtype=bool)
        is_first[order[repeats]] = False
        return np.flatnonzero(is_first)

    def _forward_keys(self, rows_in: np.ndarray) -> np.ndarray:
        """Each row's first KEY_BYTES bytes of text (zero-padded, as numpy's S dtype pads), gathered from the blob
        (and from the spill file, read a slice of rows at a time)."""
        n = len(rows_in)
        keys = np.zeros(n, dtype=f"S{KEY_BYTES}")
        if n == 0:
            return keys
        if (np.diff(rows_in) < 0).any():     # the passes give ascending rows; anything else is sorted first
            perm = np.argsort(rows_in, kind="stable")
            keys[perm] = self._forward_keys(rows_in[perm])
            return keys
        out = keys.view(np.uint8).reshape(n, KEY_BYTES)
        span = np.arange(KEY_BYTES, dtype=np.int64)
        mem = self.in_memory
        flat = np.frombuffer(self.blob, dtype=np.uint8) if mem else None
        for lo in range(0, n, FORWARD_ROWS):
            rows = rows_in[lo:lo + FORWARD_ROWS]
            begin, end = self.start[rows], self.start[rows + 1]
            here = np.searchsorted(end, mem, side="right")          # rows [0, here) are in memory
            for part, src, base in ((slice(0, here), flat, 0), (slice(here, len(rows)), None, None)):
                b, e = begin[part], end[part]
                if len(b) == 0:
                    continue
                if src is None:            # spilled rows: their bytes are one contiguous stretch of the file
                    base = int(b[0])
                    src = np.frombuffer(os.pread(self._fd, int(e[-1]) - base, base - mem), dtype=np.uint8)
                idx = (b - base)[:, None] + span
                inside = idx < (e - base)[:, None]
                np.minimum(idx, len(src) - 1, out=idx)
                out[lo + part.start:lo + part.stop] = np.where(inside, src[idx], 0)
        del flat
        return keys

    def forward_order(self, rows_in: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows sorted by their whole text (prompt, then response; stable, like the index order of rows_in), and
        each key's first GATE bytes. Sorted by the fixed-width first KEY_BYTES bytes in numpy (UTF-8 byte order is
        code point order, so a strict order of the keys is the order of the texts), then each run of equal keys by
        its decoded texts: the same order as sorting the texts themselves."""
        keys = self._forward_keys(rows_in)
        n = len(keys)
        perm = np.argsort(keys, kind="stable")
        order = rows_in[perm]
        prefixes = keys.view(np.uint8).reshape(n, KEY_BYTES)[perm, :GATE]
        # adjacent equal keys, a slice at a time (no sorted copy of all the keys)
        ties = [np.flatnonzero(k[1:] == k[:-1]) + lo
                for lo in range(0, max(n - 1, 0), FORWARD_ROWS) for k in (keys[perm[lo:lo + FORWARD_ROWS + 1]],)]
        del keys, perm
        ties = np.concatenate(ties) if ties else np.zeros(0, np.int64)
        if ties.size:
            breaks = np.flatnonzero(np.diff(ties) != 1)
            firsts = ties[np.concatenate(([0], breaks + 1))]
            lasts = ties[np.concatenate((breaks, [ties.size - 1]))] + 2     # exclusive
            for a, b in zip(firsts.tolist(), lasts.tolist()):
                seg = order[a:b].tolist()
                texts = self.texts_of(seg)
                order[a:b] = [seg[k] for k in sorted(range(len(seg)), key=texts.__getitem__)]
        return order, prefixes

    def keyed_order(self, rows_in: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Rows of rows_in (ascending) sorted by the pass's key (rows whose key is b"" are left out); the keys are
        fixed-width UTF-8 bytes (UTF-8 byte order is code point order). All rows' keys are sorted in place of a
        copy of rows_in's (stable, so the same order), then filtered. The pass's keys are dropped after."""
        keys = getattr(self, name)
        setattr(self, name, None)
        n = len(keys)
        wanted = np.zeros(n, dtype=bool)
        wanted[rows_in] = True
        wanted &= keys != b""
        perm = np.argsort(keys, kind="stable")
        perm = perm[wanted[perm]]
        del wanted
        prefixes = keys.view(np.uint8).reshape(n, KEY_BYTES)[perm, :GATE]
        return perm, prefixes


BLOCK_ROWS = 4096     # rows read, normalized and appended together


def _blocks(rows: Iterable[tuple[int, str, str | None]]) -> Iterator[tuple[list[int], list[str], list[str] | None]]:
    it = iter(rows)
    while chunk := list(islice(it, BLOCK_ROWS)):
        ids, mains, extras = zip(*chunk)
        yield list(ids), list(mains), (None if all(e is None for e in extras)
                                       else [e if e is not None else "" for e in extras])


def near_duplicate_groups(rows: Iterable[tuple[int, str, str | None]], threshold: float = DEFAULT_THRESHOLD,
                          fetch_extra: Callable[[list[int]], dict[int, str | None]] | None = None,
                          window: int = WINDOW, stats: Stats | None = None) -> list[list[int]]:
    """Clusters (lists of ids, each sorted, size >= 2) over a stream of (id, main text, extra text or None).
    See near_duplicate_blocks."""
    return near_duplicate_blocks(_blocks(rows), threshold, fetch_extra, window, stats)


def near_duplicate_blocks(blocks: Iterable[tuple[list[int], list[str], list[str] | None]],
                          threshold: float = DEFAULT_THRESHOLD,
                          fetch_extra: Callable[[list[int]], dict[int, str | None]] | None = None,
                          window: int = WINDOW, stats: Stats | None = None) -> list[list[int]]:
    """Clusters over blocks of raw rows: (ids, main texts, extra texts or None), in id order."""
    return near_duplicate_sigs((signatures(*b) for b in blocks), threshold, fetch_extra, window, stats)


def near_duplicate_sigs(sigs: Iterable[Sig], threshold: float = DEFAULT_THRESHOLD,
                        fetch_extra: Callable[[list[int]], dict[int, str | None]] | None = None,
                        window: int = WINDOW, stats: Stats | None = None,
                        progress: Callable[[str, int, int], None] | None = None,
                        spill_dir: str | None = None) -> list[list[int]]:
    """Clusters (lists of ids, each sorted, size >= 2) over the signatures of blocks of rows in id order (every
    block carries extra texts or none does).

    When rows carry an extra text (the response), only its short head and tail stay in memory; pairs whose main
    texts match are then verified on the full extra texts that `fetch_extra(ids) -> {id: raw extra}` returns.

    `progress(phase, done, total)` is called often ("read", rows read, 0; "compare", pass, 3; "verify", pairs
    verified, pairs to verify): what it raises stops the run (a screen's cancel). Row texts past
    TEXT_MEMORY_BYTES are kept in a temporary file in `spill_dir` (default: the system's temp dir).
    """
    report = progress or (lambda phase, done, total: None)
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold is a similarity in (0, 1], not {threshold}")
    st = stats if stats is not None else Stats()
    t0 = time.process_time()
    data = _Rows(sigs, st, progress, spill_dir=spill_dir)
    try:
        return _clusters(data, st, t0, threshold, fetch_extra, window, report)
    finally:
        data.close()


def _clusters(data: _Rows, st: Stats, t0: float, threshold: float,
              fetch_extra: Callable[[list[int]], dict[int, str | None]] | None, window: int,
              report: Callable[[str, int, int], None]) -> list[list[int]]:
    st.lap("read", t0)
    ids, has_extra = array("q", data.ids.tobytes()), data.has_extra
    n = len(ids)
    uf = _UnionFind(n)
    reps = data.exact_groups(uf)
    st.exact_rows = n - len(reps)
    if has_extra and fetch_extra is None:
        raise ValueError("rows carry response texts: pass fetch_extra to verify them")
    pending: list[tuple[int, int]] = []      # prompts matched; the full responses still to verify
    main_len = data.main_len
    st.lap("exact", t0)

    hist = data.hist
    rows_all = reps
    two = 2 * SNIPPET
    for number, name in enumerate(("forward", "backward", "anchored")):
        report("compare", number, 3)
        if name == "forward":
            order, prefixes = data.forward_order(rows_all)
        else:
            order, prefixes = data.keyed_order(rows_all, name)
        lens = main_len[order]
        compared = 0
        for hits, d in _gated_neighbours(prefixes, lens, window):
            # Indel similarity >= t needs 2 * min(len) >= t * (sum of lens): drop hopeless pairs before scoring
            la, lb = lens[hits], lens[hits + d]
            keep = 2 * np.minimum(la, lb) >= threshold * (la + lb)
            hits, la, lb = hits[keep], la[keep], lb[keep]
            # and the character counts must be close enough (exact lower bound; no candidate that could pass is lost)
            keep = np.concatenate([_may_reach(hist, order[hits[lo:lo + CHUNK]], order[hits[lo:lo + CHUNK] + d],
                                              la[lo:lo + CHUNK], lb[lo:lo + CHUNK], threshold)
                                   for lo in range(0, hits.size, CHUNK)]) if hits.size else np.zeros(0, bool)
            st.filtered += int(hits.size - keep.sum())
            hits = hits[keep]
            for lo in range(0, hits.size, CHUNK):
                report("compare", number, 3)
                part = hits[lo:lo + CHUNK]
                a_idx, b_idx = order[part].tolist(), order[part + d].tolist()
                a_all, b_all = data.texts_of(a_idx), data.texts_of(b_idx)
                if has_extra:       # the prompt part of each row's text
                    a_len, b_len = lens[part].tolist(), lens[part + d].tolist()
                    a_txt = [t[:m] for t, m in zip(a_all, a_len)]
                    b_txt = [t[:m] for t, m in zip(b_all, b_len)]
                else:
                    a_txt, b_txt = a_all, b_all
                ok = _similar(a_txt, b_txt, threshold)
                del a_txt, b_txt
                compared += part.size
                for k in np.flatnonzero(ok).tolist():
                    a, b = a_idx[k], b_idx[k]
                    if not has_extra:
                        joined = uf.union(a, b)
                        st.near_pairs += joined
                        continue
                    # the response snippet: the whole response when short (then compared here, in memory)
                    sa, sb = a_all[k][a_len[k] + 1:], b_all[k][b_len[k] + 1:]
                    if len(sa) <= two and len(sb) <= two:
                        joined = (Indel.normalized_similarity(sa, sb, score_cutoff=threshold) >= threshold
                                  and uf.union(a, b))
                    else:
                        joined = False
                        if uf.find(a) != uf.find(b):
                            pending.append((a, b))
                    st.near_pairs += joined
                del a_all, b_all
        st.passes[name] = compared
        st.compared += compared
        del order, prefixes, lens
        st.lap(name, t0)

    for start in range(0, len(pending), VERIFY_BATCH):
        report("verify", start, len(pending))
        batch = [(a, b) for a, b in pending[start:start + VERIFY_BATCH] if uf.find(a) != uf.find(b)]
        texts = fetch_extra(sorted({ids[x] for p in batch for x in p}))
        for a, b in batch:
            ea, eb = texts.get(ids[a]), texts.get(ids[b])
            if ea is None or eb is None:
                continue
            if Indel.normalized_similarity(match_text(ea), match_text(eb), score_cutoff=threshold) >= threshold:
                st.near_pairs += uf.union(a, b)
    st.lap("verify", t0)

    # union keeps the smaller index as root, so a root is its cluster's first row; roots by pointer jumping
    root = np.frombuffer(uf.parent, dtype=np.int64).copy()
    while True:
        up = root[root]
        if np.array_equal(up, root):
            break
        root = up
    joined = np.flatnonzero(root != np.arange(n))
    if joined.size == 0:
        return []
    members = np.concatenate([joined, np.unique(root[joined])])
    members = members[np.lexsort((members, root[members]))]      # by cluster (its first row), then row
    ids_np = data.ids[members]
    cuts = np.flatnonzero(np.diff(root[members])) + 1
    return sorted(sorted(g) for g in (c.tolist() for c in np.split(ids_np, cuts)))
