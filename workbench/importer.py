"""Import a dataset file into the store: detect format -> map fields -> normalize -> hash -> insert.

Streaming (memory stays flat) and all or nothing: rows are committed as they go (every MAX_TX_S, and at once
when another writer waits: see _StagedWriter), the import is 'running' until its last commit, and a refused or
killed import is removed (workbench/import_recovery.py), leaving the store as it was.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sqlite3
import sys
import tempfile
import time
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Callable

import orjson

from . import busy, formats, import_recovery, licenses, segments
from .formats import FormatError, ParseOptions, RowError, TieRow
from .samples import _INSERT, INSERT_COLUMNS, sample_row
from .store import BUSY_TIMEOUT_MS, WAL_AUTOCHECKPOINT, get_dataset, now, transaction

DETECT_SAMPLE = 20
PROGRESS_EVERY = 10_000
PARALLEL_MIN_BYTES = 16 << 20   # below this, starting a worker process costs more than it saves
BATCH = 5_000             # rows per executemany: a pair's candidates and scores are written right after its batch
CHUNK_S = 0.03            # rows per executemany of an import: sized to take this long (a waiting writer is
FIRST_BATCH = 500         # noticed between chunks); the first chunk, then sized from the pace
MIN_BATCH, MAX_BATCH = 100, 20_000
MAX_TX_S = 0.2            # below the 250 ms bound: a chunk or a commit can run over its estimate (0.25 gave 288 ms)
IDLE_POLL_S = 0.005       # while the parser has no rows ready, a waiting writer is looked for this often
STDIN = "-"
log = logging.getLogger(__name__)
GZIP_ERRORS = (OSError, EOFError, zlib.error)   # what a damaged .gz raises while it is read


class ImportFailed(Exception):
    """The import was refused; the message names the file, the line (or row) and the field."""


class ImportRefused(ImportFailed):
    """The command line does not fit, not the file's content: --license (not SPDX, or not the dataset's licence),
    a file already in the dataset without --append, stdin without --format, several files without --dataset
    (the CLI exits 2 for these, 1 for a bad file)."""


@dataclass
class Skipped:
    file: str
    line: int | None
    row: int | None
    field: str | None
    message: str

    def __str__(self) -> str:
        return describe(self.file, self.line, self.row, self.field, self.message)


@dataclass
class Detection:
    file: str
    file_type: str
    format: str
    kind: str
    mapping: dict[str, str]
    columns: list[str]
    preview: list[dict] = field(default_factory=list)   # three rows exactly as they would be stored
    ties: int = 0                                        # tied pairs among the rows read for the preview


@dataclass
class FileResult:
    file: str
    format: str
    import_id: int
    sha256: str
    rows: int = 0
    skipped: int = 0
    ties: int = 0
    candidates: int = 0


@dataclass
class ImportResult:
    dataset: str
    dataset_id: int
    import_id: int
    format: str
    rows: int
    skipped: list[Skipped]
    duplicates: int
    first_id: int
    last_id: int
    ties: int = 0
    candidates: int = 0
    files: list[FileResult] = field(default_factory=list)
    segments: dict | None = None      # text segmented for backtranslation: kept and dropped counts (all files)


def describe(file: str, line: int | None, row: int | None, fld: str | None, message: str) -> str:
    where = [file]
    if line is not None:
        where.append(f"line {line}" + (f" (row {row})" if row is not None and row != line else ""))
    elif row is not None:
        where.append(f"row {row}")
    if fld:
        where.append(f"field {fld!r}")
    return ": ".join([", ".join(where), message])


def _check_file(path: Path) -> None:
    if not path.exists():
        raise ImportFailed(f"{path}: no such file")
    if path.is_dir():
        raise ImportFailed(f"{path}: is a directory, not a file")
    if path.stat().st_size == 0:
        raise ImportFailed(f"{path}, line 1: the file is empty")


def default_name(path) -> str:
    """The dataset name a file or directory gives by default: `train.jsonl.gz` -> "train"."""
    path = Path(path)
    name = path.name[:-3] if path.name.lower().endswith(".gz") else path.name
    return Path(name).stem if path.is_file() or not path.exists() else name


def expand_inputs(inputs) -> list[Path]:
    """Files, directories (every supported file in them, sorted by name; hidden files left out) and "-" (stdin, kept
    as "-" until `stdin_spooled`), in the order given. A name given twice is refused: it would import twice."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    out: list[Path] = []
    for item in inputs:
        if str(item) == STDIN:
            out.append(Path(STDIN))
            continue
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith(".")
                           and formats._suffix(f) in formats.SUFFIXES)
            if not found:
                raise ImportFailed(f"{p}: no file in the directory ends in one of "
                                   f"{', '.join(formats.SUFFIXES)} (optionally .gz)")
            out.extend(found)
        else:
            out.append(p)
    seen: set = set()
    for p in out:
        key = os.path.abspath(p) if str(p) != STDIN else STDIN
        if key in seen:
            raise ImportRefused(f"{p}: given twice")
        seen.add(key)
    return out


@contextmanager
def stdin_spooled(paths: list[Path], fmt: str | None):
    """Stdin read once into a temporary file (detection reads the start, the import reads it all, sha256 is taken)."""
    if not any(str(p) == STDIN for p in paths):
        yield paths
        return
    if fmt is None:
        raise ImportRefused("-: reading stdin needs --format (there is no file name to go by)")
    tmp = tempfile.mkdtemp(prefix="workbench-stdin-")
    try:
        spooled = Path(tmp) / "stdin"
        with open(spooled, "wb") as out:
            shutil.copyfileobj(sys.stdin.buffer, out)
        yield [spooled if str(p) == STDIN else p for p in paths]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _shown(path: Path) -> str:
    """How a file is named in messages and in the imports table: stdin as "-"."""
    return STDIN if path.parent.name.startswith("workbench-stdin-") and path.name == "stdin" else str(path)


def detect(path, fmt: str | None = None, mapping: dict[str, str] | str | None = None,
           skip_invalid: bool = False, opts: ParseOptions | None = None) -> Detection:
    path = Path(path)
    shown = _shown(path)
    _check_file(path)
    if isinstance(mapping, str):
        mapping = _mapping(mapping)
    mapping = mapping or {}
    opts = opts or ParseOptions()
    if fmt is not None and fmt not in formats.FORMATS:
        raise ImportRefused(f"unknown format {fmt!r}; one of {', '.join(formats.FORMATS)}")
    try:
        ftype = formats.file_type(path, fmt)
        keys: set[str] = set()
        columns: list[str] = []
        records = []
        for line, row, rec in islice(formats.read_records(path, ftype), DETECT_SAMPLE):
            if isinstance(rec, FormatError):
                if skip_invalid:
                    continue
                raise rec
            rec = formats.apply_mapping(rec, mapping)
            for k in rec:
                if k not in keys:
                    keys.add(k)
                    columns.append(k)
            records.append((line, row, rec))
    except FormatError as e:
        raise ImportFailed(describe(shown, e.line, e.row, e.field, e.message)) from None
    except GZIP_ERRORS as e:   # a broken .gz
        raise ImportFailed(f"{shown}: cannot read the file: {e}") from None
    if not records:
        raise ImportFailed(describe(shown, 1, None, None, "the file has no records"))
    found = fmt or formats.detect_format(keys)
    if found == "hh" and isinstance(records[0][2].get("chosen"), (list, dict)):
        found = "preference"     # TRL's implicit prompt: the prompt turns are inside chosen/rejected
    if found is None:
        raise ImportFailed(f"{shown}: cannot tell the dataset format from the columns {columns}; "
                           f"use --format ({', '.join(formats.FORMATS)}) or --map target=column")
    if opts.prefer and opts.prefer not in keys:
        raise ImportRefused(f"{shown}: --prefer {opts.prefer!r} is not a column of the file (columns: {columns})")
    det = Detection(shown, ftype, found, formats.KIND[found],
                    formats.field_mapping(found, keys, {v: k for k, v in mapping.items()}, opts.prefer), columns)
    ctx = _Context(shown, ftype, found, mapping, 0, 0, "", opts)
    for line, row, rec in records:
        if len(det.preview) == 3:
            break
        built = _build(ctx, line, row, rec)
        if isinstance(built, Tied):
            det.ties += 1
        elif isinstance(built, Skipped):
            if not skip_invalid:
                raise ImportFailed(str(built))
        else:
            det.preview.append(stored_view(*built))
    return det


def stored_view(row: tuple, cands: list | None) -> dict:
    """A built row as the store will hold it (the samples columns, JSON decoded), with its candidates."""
    s = dict(zip(INSERT_COLUMNS, row))
    for k in ("dataset_id", "created_at", "updated_at", "import_id"):
        s.pop(k)
    for k in ("messages", "metadata", "origin"):
        if s[k] is not None:
            s[k] = orjson.loads(s[k])
    if cands:
        s["candidates"] = [{"model": c["model"], "response": c["response"],
                            **({"score": c["score"]} if "score" in c else {})} for c in cands]
    return s


def _mapping(spec: str) -> dict[str, str]:
    try:
        return formats.parse_mapping(spec)
    except FormatError as e:
        raise ImportFailed(e.message) from None


@dataclass
class _Context:
    """What a worker needs to turn records into sample rows (picklable)."""
    file: str
    file_type: str
    format: str
    mapping: dict
    dataset_id: int
    import_id: int
    ts: str
    opts: ParseOptions = field(default_factory=ParseOptions)


@dataclass
class Tied:
    """A tied pair, skipped and counted."""
    line: int


def _build(ctx: _Context, line: int, row: int, rec) -> tuple | Skipped | Tied:
    """One record -> (samples row tuple, candidates or None), or a Skipped saying where and why, or a Tied."""
    if isinstance(rec, bytes):
        rec = formats.parse_jsonl_line(rec, line, row)
    try:
        if isinstance(rec, FormatError):
            raise rec
        s = formats.parse_record(formats.apply_mapping(rec, ctx.mapping), ctx.format, ctx.opts)
    except FormatError as e:
        return Skipped(ctx.file, e.line or line, e.row or row, e.field, e.message)
    except TieRow:
        return Tied(line)
    s["import_id"] = ctx.import_id
    s["source_line"] = line if ctx.file_type in ("jsonl", "txt") else row
    return sample_row(ctx.dataset_id, s, ctx.ts), s.get("candidates")


PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """In a helper process: the kernel sends it SIGKILL when its parent dies (Linux prctl PR_SET_PDEATHSIG), so
    no parser outlives an import that was killed. Elsewhere a no-op (the pool's pipes end them at the next read)."""
    import ctypes
    import signal
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:    # the parent died before the prctl took effect
        os._exit(1)


def _build_block(ctx: _Context, first_line: int, block: bytes) -> list:
    """In the worker: one block of JSONL lines -> one item per non-blank line, rows numbered from 1 in the block."""
    return [_build(ctx, line, row, raw) for line, row, raw in formats.block_lines(first_line, block)]


def _parse_file(out, ctx: _Context, path: Path, block_bytes: int, parent_pid: int, want_sha: bool) -> None:
    """The parser process: reads the JSONL file itself, builds each block's rows and sends them pickled, in file
    order, then ("end", the file's sha256 if `want_sha`); a failure is sent as ("error", exception). The inserting
    process neither reads the file nor ships it here, and the pipe's capacity bounds how far ahead this runs
    (memory stays flat)."""
    import pickle
    import queue
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from . import readers
    die_with_parent(parent_pid)
    readers.JSONL_BLOCK_BYTES = block_bytes
    # A sending thread with a few blocks queued lets this process run ahead of the inserts (on a busy machine the
    # two processes get the CPU in bursts); the importing process stays single-threaded.
    ready: queue.Queue = queue.Queue(maxsize=IN_FLIGHT)

    def sender() -> None:
        while (item := ready.get()) is not None:
            out.send_bytes(item)
    sending = threading.Thread(target=sender, daemon=True)
    sending.start()

    def send(item: bytes) -> None:
        while True:
            try:
                return ready.put(item, timeout=0.5)
            except queue.Full:
                if not sending.is_alive():      # the importing process stopped reading (it ends this one)
                    raise BrokenPipeError("the importing process stopped reading") from None
    # the file's sha256 is taken here, in a thread (hashlib releases the GIL): the inserting process is the
    # import's bottleneck, this one has time to spare
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        sha = pool.submit(file_sha256, path) if want_sha else None
        for first_line, block in formats.jsonl_blocks(path):
            send(pickle.dumps(("rows", _build_block(ctx, first_line, block)), pickle.HIGHEST_PROTOCOL))
        send(pickle.dumps(("end", sha.result() if sha else None)))
    except BaseException as e:      # e.g. a .gz that ends early: raised again in the importing process (at once:
        try:                        # the importing process ends this one, sha256 thread and all)
            payload = pickle.dumps(("error", e))
        except Exception:
            payload = pickle.dumps(("error", RuntimeError(f"the parser process failed: {e!r}")))
        try:
            send(payload)
        except BrokenPipeError:
            pass
    finally:
        pool.shutdown(wait=False)
        try:
            send(None)
        except BrokenPipeError:
            pass
        sending.join()


PIPE_BYTES = 1 << 20      # one more block in the pipe itself (Linux F_SETPIPE_SZ)
IN_FLIGHT = 3             # built blocks the parser may have ready ahead of the inserts (~1 MB each)


def _widen_pipe(conn) -> None:
    try:
        import fcntl
        fcntl.fcntl(conn.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_BYTES)
    except (OSError, ImportError, AttributeError):   # another OS, or a lower pipe-max-size: 64 KB pipes work too
        pass


SERIAL_BLOCK = 1_000       # rows handed to the writer at a time when this process parses


def _built_blocks(ctx: _Context, path: Path, parallel: bool, segmented=None, writer: "_Writer | None" = None,
                  sha: dict | None = None):
    """Lists of built rows in file order. Big JSONL files are read, parsed, normalized and hashed in a parser
    process while this process inserts: the two halves of the work run on two cores. Its results are received (and
    unpickled) in this thread: a receiving thread would fight the inserting one for the GIL at every row. When the
    parser has nothing ready the writer's `idle` lets a waiting writer in. Segmented text comes as (line, text)
    records already. With `sha`, the parser process also takes the file's sha256 (into sha["sha256"])."""
    if segmented is not None:
        items = (_build(ctx, line, row, {"text": text}) for row, (line, text) in enumerate(segmented.records, 1))
        while block := list(islice(items, SERIAL_BLOCK)):
            yield block
        return
    if not parallel:
        items = (_build(ctx, line, row, rec) for line, row, rec in formats.read_records(path, ctx.file_type))
        while block := list(islice(items, SERIAL_BLOCK)):
            yield block
        return
    import multiprocessing
    import pickle

    from . import readers
    # spawn, not fork: the TUI imports from a thread, and forking a threaded process can deadlock.
    # The parser dies with this process even on kill -9 (die_with_parent; then the resource tracker ends too)
    mp = multiprocessing.get_context("spawn")
    receive, send = mp.Pipe(duplex=False)
    _widen_pipe(send)
    proc = mp.Process(target=_parse_file, args=(send, ctx, path, readers.JSONL_BLOCK_BYTES, os.getpid(),
                                                sha is not None),
                      name="workbench-import-parser", daemon=True)
    proc.start()
    send.close()
    receiving = open(receive.fileno(), "rb", buffering=0, closefd=False)
    rows_before = 0
    try:
        while True:
            if writer is not None and not receive.poll():
                t0 = time.perf_counter()
                while not receive.poll(IDLE_POLL_S):
                    writer.idle()
                writer.timing.parser_wait += time.perf_counter() - t0
            try:
                kind, payload = pickle.loads(_recv_message(receiving))
            except EOFError:
                proc.join(5)
                raise ImportFailed(f"{ctx.file}: the import's parser process ended unexpectedly (exit code "
                                   f"{proc.exitcode}; out of memory?); nothing was imported") from None
            if kind == "end":
                if sha is not None:
                    sha["sha256"] = payload
                return
            if kind == "error":
                raise payload
            for r in payload:
                if isinstance(r, Skipped) and r.row is not None:
                    r.row += rows_before          # the parser counted rows from its block's start
            rows_before += len(payload)
            yield payload
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()
        receive.close()


def _recv_message(f) -> bytearray:
    """One message of multiprocessing's wire format (a signed 4-byte big-endian length, -1 then 8 bytes for a big
    one), read straight into its buffer: Connection.recv_bytes copies every chunk through a BytesIO, and at a
    million rows those copies cost as much as the rows' inserts (benchmarks/bench_import.py's profile)."""
    size = int.from_bytes(_read_exactly(f, bytearray(4)), "big", signed=True)
    if size == -1:
        size = int.from_bytes(_read_exactly(f, bytearray(8)), "big")
    return _read_exactly(f, bytearray(size))


def _read_exactly(f, buf: bytearray) -> bytearray:
    view, got = memoryview(buf), 0
    while got < len(buf):
        n = f.readinto(view[got:])
        if not n:
            raise EOFError
        got += n
    return buf


def _parallel(path: Path, det: Detection) -> bool:
    """Whether the file is parsed in a parser process beside the inserting one (big JSONL files)."""
    return det.file_type == "jsonl" and path.stat().st_size >= PARALLEL_MIN_BYTES


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _check_not_imported(conn: sqlite3.Connection, name: str, shown: str, sha: str) -> None:
    row = conn.execute("SELECT i.file, i.imported_at FROM imports i JOIN datasets d ON d.id = i.dataset_id "
                       "WHERE d.name = ? AND i.sha256 = ? ORDER BY i.id LIMIT 1", (name, sha)).fetchone()
    if row:
        raise ImportRefused(f"{shown}: this file (sha256 {sha[:12]}...) is already in dataset {name!r} "
                           f"(imported from {row[0]} at {row[1]}); use --append to import it again")


class _Writer:
    """Inserts built rows in batches inside the caller's transaction; a pair's candidates (and their scores, as
    judgments) follow its batch. Sample and candidate ids are assigned in insertion order."""

    def __init__(self, conn: sqlite3.Connection, ts: str, opts: ParseOptions, file: str):
        self.conn, self.ts, self.opts, self.file = conn, ts, opts, file
        self.rows: list[tuple] = []
        self.cands: list[tuple[int, list]] = []
        self.inserted = self.candidates = self.duplicates = 0
        self.first_id, self.last_id = 0, -1      # the ids written (other writers' rows may lie between)
        self.limit = BATCH
        self.timing = Timing()

    def add(self, row: tuple, cands: list | None) -> None:
        self.rows.append(row)
        if cands:
            self.cands.append((len(self.rows) - 1, cands))
        if len(self.rows) >= self.limit:
            self.flush()

    def add_many(self, built: list) -> None:
        """Built rows, (row, candidates) each, in order; written in batches of `limit` rows."""
        i = 0
        while i < len(built):
            part = built[i:i + max(1, self.limit - len(self.rows))]
            i += len(part)
            for row, cands in part:
                if cands:
                    self.cands.append((len(self.rows), cands))
                self.rows.append(row)
            if len(self.rows) >= self.limit:
                self.flush()

    def idle(self) -> None:
        """No rows are ready yet (see _StagedWriter)."""

    def flush(self) -> None:
        if self.rows:
            self._write()
            self.rows, self.cands = [], []

    def _write(self, flag_duplicates: bool = False) -> None:
        """Insert the batch: ids follow max(id), read under the write lock (the rows are inserted as built, and
        the few duplicates get their dup_of right after, which is cheaper than rebuilding every row's tuple)."""
        conn = self.conn
        t0 = time.perf_counter()
        base = conn.execute("SELECT coalesce(max(id), 0) FROM samples").fetchone()[0] + 1
        dups = _duplicate_targets(conn, self.rows, base) if flag_duplicates else []
        t1 = time.perf_counter()
        conn.executemany(_INSERT, self.rows)
        self.timing.probing += t1 - t0
        self.timing.inserting += time.perf_counter() - t1
        top = conn.execute("SELECT max(id) FROM samples").fetchone()[0]
        if top != base + len(self.rows) - 1:      # cannot happen while we hold the write lock; never guess ids
            raise RuntimeError(f"import: expected ids {base}..{base + len(self.rows) - 1}, the store has {top}")
        if dups:
            conn.executemany("UPDATE samples SET dup_of = ? WHERE id = ?", dups)
            self.duplicates += len(dups)
        if self.cands:
            cbase = conn.execute("SELECT coalesce(max(id), 0) FROM candidates").fetchone()[0]
            crows, jrows = [], []
            for offset, cands in self.cands:
                sid = base + offset
                line = self.rows[offset][_LINE]
                for c in cands:
                    crows.append((sid, c["model"], c["response"], self.ts))
                    if "score" in c:
                        col, v = c["score"]["column"], c["score"]["value"]
                        jrows.append((sid, cbase + len(crows), "import", self.opts.score_rubric, "",
                                      orjson.dumps({col: v}).decode(), v,
                                      f"column {col} of {self.file}, line {line}", repr(v), self.ts))
            conn.executemany("INSERT INTO candidates (sample_id, model, response, created_at) VALUES (?,?,?,?)",
                             crows)
            conn.executemany(
                "INSERT INTO judgments (sample_id, candidate_id, judge, rubric, rubric_version, scores, overall, "
                "rationale, raw, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)", jrows)
            self.candidates += len(crows)
        self.inserted += len(self.rows)
        self.first_id = self.first_id or base
        self.last_id = base + len(self.rows) - 1


_HASH = INSERT_COLUMNS.index("content_hash")
_LINE = INSERT_COLUMNS.index("source_line")


def _duplicate_targets(conn: sqlite3.Connection, rows: list[tuple], base: int) -> list[tuple[int, int]]:
    """(dup_of, id) of each row of the batch (ids from `base`) whose content hash an earlier sample has: one
    already stored (an index probe per distinct hash of the batch) or an earlier row of the batch. Flagged as the
    rows go in, this saves a pass over the whole import at its end."""
    first: dict[int, int] = {}
    for i, r in enumerate(rows):
        first.setdefault(r[_HASH], base + i)
    stored = dict(conn.execute("SELECT content_hash, min(id) FROM samples WHERE content_hash IN "
                               "(SELECT value FROM json_each(?)) GROUP BY content_hash",
                               (orjson.dumps(list(first)).decode(),)))
    out = []
    for i, r in enumerate(rows):
        h = r[_HASH]
        target = stored.get(h) or first[h]
        if target != base + i:
            out.append((target, base + i))
    return out


DISK_RESERVE = 16 << 20      # free bytes kept for removing a refused import (deleting rows writes pages too)
RESERVE_PER_ROW = 400         # ... and per row already written (its entries in the samples table and indexes)


def store_dir(conn: sqlite3.Connection) -> str | None:
    name = conn.execute("PRAGMA database_list").fetchone()[2]
    return os.path.dirname(name) if name else None


def free_bytes(directory: str | None) -> int | None:
    if not directory:
        return None
    try:
        st = os.statvfs(directory)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def check_space(directory: str | None, need: int, shown: str) -> None:
    """Refuse before the disk fills: an import that commits as it goes must keep room to remove itself."""
    free = free_bytes(directory)
    if free is not None and free < need:
        raise ImportFailed(f"{shown}: the disk is full or nearly: {free / 1e6:.1f} MB free in {directory}, "
                           f"the import needs about {need / 1e6:.0f} MB more; free some space and import again")


class _StagedWriter(_Writer):
    """An import's writer. Rows go in by chunks of about CHUNK_S; the write transaction stays open across chunks
    until another writer is waiting for the lock (busy.someone_waiting: then it commits at once and pauses for
    it) or another chunk and the commit would take it past MAX_TX_S. Every commit rewrites each index page the
    transaction touched (the content hash and length indexes take rows at random places), so more commits cost
    time: see benchmarks/bench_import.py. Rows get their dup_of as they are inserted."""

    def __init__(self, conn: sqlite3.Connection, ts: str, opts: ParseOptions, file: str, stats: "TxStats"):
        super().__init__(conn, ts, opts, file)
        self.stats = stats
        self.limit = FIRST_BATCH
        self.per_row: float | None = None
        self.dir = store_dir(conn)
        self.wait_file = busy.wait_file(conn)
        self.tx_began: float | None = None
        self.tx_began_ns = 0
        self.last_commit = 0.0         # how long the last COMMIT took: the next one is expected to take as long

    def add(self, row: tuple, cands: list | None) -> None:
        super().add(row, cands)
        # rows may come slower than they go in (a slow parser): look for a waiting writer meanwhile too
        if len(self.rows) % 256 == 0:
            self.idle()

    def add_many(self, built: list) -> None:
        super().add_many(built)
        self.idle()

    def idle(self) -> None:
        """Between rows, or while the parser has no rows ready: commit at once if another writer waits (or the
        transaction is near its time limit)."""
        if self.tx_began is None:
            return
        if self.rows and busy.someone_waiting(self.wait_file, self.tx_began_ns):
            self.flush()
        else:
            self._maybe_commit(IDLE_POLL_S)

    def batch_bytes(self) -> int:
        if not self.rows:
            return 0
        sample = self.rows[:: max(1, len(self.rows) // 20)]
        return sum(len(r[1]) + len(r[2]) + len(r[3]) + len(r[11] or "") for r in sample) * len(self.rows) // len(sample)

    def flush(self) -> None:
        if not self.rows:
            return
        if self.tx_began is None:
            check_space(self.dir, DISK_RESERVE + RESERVE_PER_ROW * self.inserted + 2 * self.batch_bytes(), self.file)
            self.stats.waited = max(self.stats.waited, busy.begin(self.conn))
            self.tx_began, self.tx_began_ns = time.perf_counter(), time.time_ns()
        t0 = time.perf_counter()
        try:
            self._write(flag_duplicates=True)
        except BaseException:
            self.rollback()
            raise
        took = time.perf_counter() - t0
        # the next chunk sized to take about CHUNK_S at the recent pace (smoothed: on a busy machine one chunk
        # that lost the CPU for a while must not halve the next ones)
        per_row = took / len(self.rows)
        self.per_row = per_row if self.per_row is None else 0.7 * self.per_row + 0.3 * per_row
        self.limit = max(MIN_BATCH, min(MAX_BATCH, 2 * len(self.rows), int(CHUNK_S / max(self.per_row, 1e-7))))
        self.rows, self.cands = [], []
        self._maybe_commit(took)

    def _maybe_commit(self, next_step: float) -> None:
        """Commit if a writer waits, or if the next step (a chunk, a poll) and the commit would take the
        transaction past MAX_TX_S."""
        if self.tx_began is None:
            return
        waiting = busy.someone_waiting(self.wait_file, self.tx_began_ns)
        if waiting or time.perf_counter() - self.tx_began + next_step + self.last_commit >= MAX_TX_S:
            self.commit()
            if waiting:
                self.stats.yielded += 1
                busy.yield_to_waiters()

    def commit(self) -> None:
        if self.tx_began is None:
            return
        t0 = time.perf_counter()
        self.conn.execute("COMMIT")
        self.last_commit = time.perf_counter() - t0
        self.timing.committing += self.last_commit
        self.stats.note(time.perf_counter() - self.tx_began, self.last_commit)
        self.tx_began = None

    def rollback(self) -> None:
        if self.tx_began is not None:
            self.tx_began = None
            self.conn.execute("ROLLBACK")

    def finish(self) -> None:
        self.flush()
        self.commit()


@dataclass
class TxStats:
    """The import's write transactions: how many, the longest (seconds), the longest wait for the lock."""
    count: int = 0
    longest: float = 0.0
    waited: float = 0.0
    yielded: int = 0          # commits made because another writer was waiting

    longest_commit: float = 0.0   # how much of the longest one its COMMIT took

    def note(self, took: float, commit: float) -> None:
        self.count += 1
        if took > self.longest:
            self.longest, self.longest_commit = took, commit


@dataclass
class Timing:
    """Where an import's inserting process spends its time (seconds), for benchmarks/bench_import.py."""
    probing: float = 0.0         # looking up the batch's content hashes (duplicates)
    inserting: float = 0.0       # executemany: the rows and their index entries
    committing: float = 0.0      # COMMIT: the transaction's pages written to the WAL
    parser_wait: float = 0.0     # waiting for the parser process's next block
    checkpointing: float = 0.0   # copying the import from the WAL into the database file, at its end


LAST_TIMING = Timing()
LAST_TX_STATS = TxStats()    # the last import's figures in this process (benchmarks/bench_import.py prints them)


def import_file(conn: sqlite3.Connection, path, dataset: str | None = None, fmt: str | None = None,
                mapping: dict[str, str] | str | None = None, skip_invalid: bool = False,
                progress: Callable[[int], None] | None = None, license: str | None = None, *,
                opts: ParseOptions | None = None, append: bool = False, segment: str | None = None,
                segment_min: int = segments.DEFAULT_MIN, segment_max: int = segments.DEFAULT_MAX) -> ImportResult:
    """Import one file, a directory or "-" (stdin); see import_files."""
    return import_files(conn, [path], dataset, fmt, mapping, skip_invalid, progress, license, opts=opts,
                        append=append, segment=segment, segment_min=segment_min, segment_max=segment_max)


def import_files(conn: sqlite3.Connection, inputs, dataset: str | None = None, fmt: str | None = None,
                 mapping: dict[str, str] | str | None = None, skip_invalid: bool = False,
                 progress: Callable[[int], None] | None = None, license: str | None = None, *,
                 opts: ParseOptions | None = None, append: bool = False, segment: str | None = None,
                 segment_min: int = segments.DEFAULT_MIN, segment_max: int = segments.DEFAULT_MAX) -> ImportResult:
    """Import files into one dataset in one transaction: all of them, or (on any refusal) none.

    Each file gets its own imports row (file, format, sha256), so each sample remembers its file and line. A file
    whose sha256 is already in the dataset is refused unless `append`. `segment` (heading | paragraph | none) cuts
    unlabeled text into candidate responses (workbench/segments.py)."""
    if isinstance(mapping, str):
        mapping = _mapping(mapping)
    mapping = mapping or {}
    opts = opts or ParseOptions()
    if license is not None:     # an SPDX identifier recorded per import and per dataset (provenance for exports)
        try:
            license = licenses.normalize(license)
        except licenses.LicenseError as e:
            raise ImportRefused(str(e)) from None
    given = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    paths = expand_inputs(given)
    _refuse_shards_with_ids(paths)
    if dataset is None:
        if len(given) != 1 or str(given[0]) == STDIN:
            raise ImportRefused("several files or stdin: name the dataset with --dataset")
        dataset = default_name(given[0])
    with stdin_spooled(paths, fmt) as paths:
        dets = [detect(p, fmt, mapping, skip_invalid, opts) for p in paths]
        segs = _segmented(paths, dets, segment, segment_min, segment_max)
        sizes = [p.stat().st_size for p in paths]
        if append or not _maybe_imported(conn, dataset, sizes):
            # no file of these sizes is in the dataset (or --append): the sha256 is only recorded, so it is taken
            # in a thread while the import runs (hashlib releases the GIL)
            from concurrent.futures import ThreadPoolExecutor
            with ThreadPoolExecutor(max_workers=1) as pool:
                shas = [None if _parallel(p, d) else pool.submit(file_sha256, p) for p, d in zip(paths, dets)]
                return _import_all(conn, paths, dets, shas, sizes, dataset, mapping, skip_invalid, progress, opts,
                                   license, segs)
        shas = [file_sha256(p) for p in paths]
        for det, sha in zip(dets, shas):
            _check_not_imported(conn, dataset, det.file, sha)
        dup = [d.file for d, sha in zip(dets, shas) if shas.count(sha) > 1]
        if dup:
            raise ImportRefused(f"{dup[1]}: the same bytes as {dup[0]}; use --append to import both")
        return _import_all(conn, paths, dets, shas, sizes, dataset, mapping, skip_invalid, progress, opts,
                                   license, segs)


def _refuse_shards_with_ids(paths: list[Path]) -> None:
    """Shards carrying sample_id come back to update their samples (shard_update.py), never to be added again."""
    from .shard_update import UpdateRefused, carries_ids
    try:
        carrying = carries_ids(paths)
    except UpdateRefused as e:
        raise ImportRefused(str(e)) from None
    if carrying:
        raise ImportRefused(f"{paths[0]}: carries sample_id (an export's shards coming back): `workbench import PATH "
                            f"--dataset D` updates those samples instead of adding them again")


def _maybe_imported(conn: sqlite3.Connection, name: str, sizes: list[int]) -> bool:
    """Whether a file of one of these sizes is already in the dataset, or two given files have the same size."""
    if len(set(sizes)) < len(sizes):
        return True
    return conn.execute(f"SELECT 1 FROM imports i JOIN datasets d ON d.id = i.dataset_id WHERE d.name = ? AND "
                        f"i.bytes IN ({','.join('?' * len(sizes))}) LIMIT 1", (name, *sizes)).fetchone() is not None


def _segmented(paths, dets, segment, lo, hi) -> list | None:
    """Each text file's segments, or None without --segment; refused for other files or when nothing is left."""
    if segment in (None, "none"):
        return None
    out = []
    for path, det in zip(paths, dets):
        if det.format != "text" or det.file_type != "txt":
            raise ImportFailed(f"{det.file}: --segment {segment} works on plain text files (--format text), "
                               f"not {det.format} ({det.file_type})")
        try:
            seg = segments.read_segments(path, segment, lo, hi)
        except ValueError as e:      # UnicodeDecodeError is a ValueError too
            raise ImportFailed(f"{det.file}: {e}") from None
        if not seg.records:
            raise ImportFailed(f"{det.file}: no segment of {lo}-{hi} characters is left; "
                               f"dropped: {seg.report()['dropped']}")
        out.append(seg)
    return out


def _segments_report(segs: list) -> dict:
    total = segments.Segmented()
    for seg in segs:
        total.records += seg.records
        total.dropped.update(seg.dropped)
        total.merged += seg.merged
        total.split += seg.split
    return total.report()


def _import_all(conn, paths, dets, shas, sizes, name, mapping, skip_invalid, progress, opts,
                license, segs=None) -> ImportResult:
    skipped: list[Skipped] = []
    counted = [0]
    files: list[FileResult] = []

    def rows(ctx: _Context, path: Path, det: Detection, fr: FileResult, writer: _Writer, seg, sha: dict | None):
        for block in _built_blocks(ctx, path, seg is None and _parallel(path, det), seg, writer, sha):
            built = []
            for r in block:
                if type(r) is tuple:
                    built.append(r)
                elif isinstance(r, Skipped):
                    if not skip_invalid:
                        raise ImportFailed(str(r))
                    skipped.append(r)
                    fr.skipped += 1
                else:       # Tied
                    fr.ties += 1
            before = counted[0]
            counted[0] += len(built)
            fr.rows += len(built)
            writer.add_many(built)
            if progress and before // PROGRESS_EVERY != counted[0] // PROGRESS_EVERY:
                progress(counted[0] // PROGRESS_EVERY * PROGRESS_EVERY)

    check_space(store_dir(conn), DISK_RESERVE + sum(sizes), dets[0].file)
    # The import's pages are copied from the WAL into the database file once, at its end (_checkpoint_after):
    # not by this connection as it goes, and not by the other writers' automatic checkpoints, which would each
    # copy what the import wrote since the last one (a Review decision every 3 s took 300-600 ms that way).
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    pin = _pin_wal(conn)
    current = dets[0].file
    import_ids: list[int] = []
    stats, timing = TxStats(), Timing()
    made, did, dups, first, last = False, None, 0, 0, -1
    try:
        # Many transactions, not one: other writers (Review decisions, workers) wait a chunk, not the import.
        # Until the last one the imports rows say 'running'; a refusal removes what was written (below), a killed
        # import is removed by the next open (import_recovery). The dataset's kind and licence change last.
        with transaction(conn):
            kinds = {d.kind for d in dets}
            kind = kinds.pop() if len(kinds) == 1 else "mixed"
            found = get_dataset(conn, name)
            made = found is None
            did = (conn.execute("INSERT INTO datasets (name, kind, created_at, license) VALUES (?, ?, ?, ?)",
                                (name, kind, now(), license)).lastrowid if made else found[0])
            if not made:
                _check_license(conn, did, name, license)
            ts = now()
        for k, (path, det, sha, size) in enumerate(zip(paths, dets, shas, sizes)):
            current = det.file
            file_col = det.file if det.file == STDIN else os.path.abspath(path)
            with transaction(conn):
                import_id = conn.execute(
                    "INSERT INTO imports (dataset_id, file, format, mapping, imported_at, bytes, license, state, pid, "
                    "first_id, made_dataset) VALUES (?, ?, ?, ?, ?, ?, ?, 'running', ?, "
                    "(SELECT coalesce(max(id), 0) + 1 FROM samples), ?)",
                    (did, file_col, det.format, orjson.dumps(det.mapping).decode(), ts, size, license, os.getpid(),
                     int(made and k == 0))).lastrowid
            import_ids.append(import_id)
            fr = FileResult(det.file, det.format, import_id, "")
            ctx = _Context(det.file, det.file_type, det.format, mapping, did, import_id, ts, opts)
            writer = _StagedWriter(conn, ts, opts, det.file, stats)
            writer.timing = timing
            try:
                taken = {} if sha is None else None      # the parser process takes the sha256 (import_files)
                rows(ctx, path, det, fr, writer, segs[k] if segs else None, taken)
                writer.finish()
            except BaseException:
                writer.rollback()
                raise
            fr.candidates = writer.candidates
            dups += writer.duplicates
            if writer.inserted:
                first = first or writer.first_id
                last = writer.last_id
            if fr.rows == 0:
                raise ImportFailed(f"{det.file}: no valid rows to import ({fr.skipped} skipped"
                                   + (f", {fr.ties} ties" if fr.ties else "") + ")")
            fr.sha256 = sha if isinstance(sha, str) else taken["sha256"] if sha is None else sha.result()
            files.append(fr)
        with transaction(conn):     # the import becomes complete in one step
            for fr in files:
                conn.execute("UPDATE imports SET rows = ?, skipped = ?, sha256 = ?, state = NULL, pid = NULL "
                             "WHERE id = ?", (fr.rows, fr.skipped, fr.sha256, fr.import_id))
            if not made:
                if found[2] != kind:
                    conn.execute("UPDATE datasets SET kind = 'mixed' WHERE id = ? AND kind != ?", (did, kind))
                conn.execute("UPDATE datasets SET license = ? WHERE id = ? AND license IS NOT ?", (license, did, license))
    except BaseException as e:
        try:
            for import_id in reversed(import_ids):     # the store as it was: remove what was written
                import_recovery.discard(conn, import_id)
            if made and not import_ids and did is not None:
                with transaction(conn):
                    conn.execute("DELETE FROM datasets WHERE id = ? AND NOT EXISTS (SELECT 1 FROM imports WHERE "
                                 "dataset_id = ?)", (did, did))
        except sqlite3.Error as cleanup:   # e.g. the disk filled up: the next open, after this process, removes it
            log.warning("could not remove the unfinished import yet (%s); the next open of the store will", cleanup)
        if isinstance(e, FormatError):  # a file-level problem found mid-stream (a JSON array truncated at the end)
            raise ImportFailed(describe(current, e.line, e.row, e.field, e.message)) from None
        if isinstance(e, UnicodeDecodeError):
            raise ImportFailed(f"{current}: not valid UTF-8 ({e.reason})") from None
        if isinstance(e, GZIP_ERRORS):   # e.g. a .gz that ends early
            raise ImportFailed(f"{current}: cannot read the file: {e}") from None
        raise
    finally:
        conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT}")
        timing.checkpointing = _checkpoint_after(conn, pin)
        LAST_TX_STATS.__dict__.update(stats.__dict__)
        LAST_TIMING.__dict__.update(timing.__dict__)
    if progress:
        progress(counted[0])
    fmts = {f.format for f in files}
    return ImportResult(name, did, files[0].import_id, fmts.pop() if len(fmts) == 1 else "mixed", counted[0],
                        skipped, dups, first, last, sum(f.ties for f in files), sum(f.candidates for f in files),
                        files, _segments_report(segs) if segs else None)


def _pin_wal(conn: sqlite3.Connection) -> sqlite3.Connection | None:
    """A read transaction held open for the whole import on a connection of its own. A checkpoint copies WAL
    pages only up to the oldest open read, so the other writers' automatic checkpoints find nothing of the
    import's to copy: a decision's commit stays a commit. (It ends with this process, even on kill -9.)"""
    path = conn.execute("PRAGMA database_list").fetchone()[2]
    if not path:     # an in-memory store has no WAL
        return None
    pin = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
    pin.execute("BEGIN")
    pin.execute("SELECT 1 FROM meta LIMIT 1").fetchall()      # the read starts here, at the WAL's current end
    return pin


def _checkpoint_after(conn: sqlite3.Connection, pin: sqlite3.Connection | None) -> float:
    """The import's pages into the database file now, once (PASSIVE: readers are not waited for), so the next
    writer's automatic checkpoint does not copy a whole import inside, say, a Review decision. Returns the
    seconds it took."""
    if pin is None:
        return 0.0
    pin.close()
    t0 = time.perf_counter()
    try:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    except sqlite3.OperationalError as e:     # a full disk: the next checkpoint, anyone's, does it
        log.warning("could not copy the import into the database file yet (%s)", e)
    return time.perf_counter() - t0


def _check_license(conn: sqlite3.Connection, did: int, name: str, license: str | None) -> None:
    """Before an import into an existing dataset: one licence per dataset. A different one, or rows added without
    one to a licensed dataset (or with one to rows that have none), is refused: an export must be able to list them
    all. (An empty dataset takes the import's licence when the import completes.)"""
    current, rows = conn.execute("SELECT license, EXISTS (SELECT 1 FROM samples WHERE dataset_id = ?) FROM datasets "
                                 "WHERE id = ?", (did, did)).fetchone()
    if license == current:
        return
    if current is None and not rows:
        return
    if current is None:
        raise ImportRefused(f"dataset {name!r} holds rows imported without a licence; import {license} data into "
                           f"another dataset")
    raise ImportRefused(f"dataset {name!r} is licensed {current}; "
                       + (f"pass --license {current} to add rows to it" if license is None
                          else f"{license} data goes into another dataset"))
