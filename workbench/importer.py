"""Import a dataset file into the store: detect format -> map fields -> normalize -> hash -> insert.

Streaming (memory stays flat) and atomic (one transaction: a failed import leaves the store as it was).
"""
from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Callable

import orjson

from . import formats
from .formats import FormatError, RowError
from .samples import _INSERT, flag_duplicates, sample_row
from .store import WAL_AUTOCHECKPOINT, ensure_dataset, now, transaction

DETECT_SAMPLE = 20
PROGRESS_EVERY = 10_000
PARALLEL_MIN_BYTES = 16 << 20   # below this, starting a worker process costs more than it saves
PARALLEL_WORKERS = 1            # one parser beside the inserting process: two cores, both busy
IN_FLIGHT = 3             # 1 MB blocks queued to the worker: enough to keep it busy, little memory


class ImportFailed(Exception):
    """The import was refused; the message names the file, the line (or row) and the field."""


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
    preview: list[dict] = field(default_factory=list)


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


def detect(path, fmt: str | None = None, mapping: dict[str, str] | str | None = None,
           skip_invalid: bool = False) -> Detection:
    path = Path(path)
    _check_file(path)
    if isinstance(mapping, str):
        mapping = _mapping(mapping)
    mapping = mapping or {}
    if fmt is not None and fmt not in formats.FORMATS:
        raise ImportFailed(f"unknown format {fmt!r}; one of {', '.join(formats.FORMATS)}")
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
        raise ImportFailed(describe(str(path), e.line, e.row, e.field, e.message)) from None
    if not records:
        raise ImportFailed(describe(str(path), 1, None, None, "the file has no records"))
    found = fmt or formats.detect_format(keys)
    if found is None:
        raise ImportFailed(f"{path}: cannot tell the dataset format from the columns {columns}; "
                           f"use --format ({', '.join(formats.FORMATS)}) or --map target=column")
    det = Detection(str(path), ftype, found, formats.KIND[found],
                    formats.field_mapping(found, keys, {v: k for k, v in mapping.items()}), columns)
    for line, row, rec in records:
        if len(det.preview) == 3:
            break
        try:
            det.preview.append(formats.parse_record(rec, found))
        except RowError as e:
            if not skip_invalid:
                raise ImportFailed(describe(str(path), line, row, e.field, e.message)) from None
    return det


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


def _build(ctx: _Context, line: int, row: int, rec) -> tuple | Skipped:
    """One record -> a samples row tuple, or a Skipped saying where and why."""
    if isinstance(rec, bytes):
        rec = formats.parse_jsonl_line(rec, line, row)
    try:
        if isinstance(rec, FormatError):
            raise rec
        s = formats.parse_record(formats.apply_mapping(rec, ctx.mapping), ctx.format)
    except FormatError as e:
        return Skipped(ctx.file, e.line or line, e.row or row, e.field, e.message)
    s["import_id"] = ctx.import_id
    s["source_line"] = line if ctx.file_type in ("jsonl", "txt") else row
    return sample_row(ctx.dataset_id, s, ctx.ts)


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


def _built_rows(ctx: _Context, path: Path, parallel: bool):
    """Rows in file order. Big JSONL files are parsed, normalized and hashed in a worker process while this
    process inserts: the two halves of the work run on two cores. A bounded number of blocks is in flight, so
    memory stays flat whatever the file size."""
    if not parallel:
        for line, row, rec in formats.read_records(path, ctx.file_type):
            yield _build(ctx, line, row, rec)
        return
    import multiprocessing
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor
    rows_before = 0

    def in_order(future) -> list:
        nonlocal rows_before
        built = future.result()
        for r in built:
            if isinstance(r, Skipped) and r.row is not None:
                r.row += rows_before          # the worker counted rows from its block's start
        rows_before += len(built)
        return built

    # spawn, not fork: the TUI imports from a thread, and forking a threaded process can deadlock.
    # The workers die with this process even on kill -9 (then the resource tracker, whose pipe they hold, ends too)
    with ProcessPoolExecutor(max_workers=PARALLEL_WORKERS, mp_context=multiprocessing.get_context("spawn"),
                             initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
        pending: deque = deque()
        for first_line, block in formats.jsonl_blocks(path):
            pending.append(pool.submit(_build_block, ctx, first_line, block))
            if len(pending) >= IN_FLIGHT:
                yield from in_order(pending.popleft())
        while pending:
            yield from in_order(pending.popleft())


def import_file(conn: sqlite3.Connection, path, dataset: str | None = None, fmt: str | None = None,
                mapping: dict[str, str] | str | None = None, skip_invalid: bool = False,
                progress: Callable[[int], None] | None = None) -> ImportResult:
    path = Path(path)
    if isinstance(mapping, str):
        mapping = _mapping(mapping)
    mapping = mapping or {}
    det = detect(path, fmt, mapping, skip_invalid)
    name = dataset or path.stem
    skipped: list[Skipped] = []
    counted = [0]
    parallel = det.file_type == "jsonl" and path.stat().st_size >= PARALLEL_MIN_BYTES

    def rows(ctx: _Context):
        for r in _built_rows(ctx, path, parallel):
            if isinstance(r, Skipped):
                if not skip_invalid:
                    raise ImportFailed(str(r))
                skipped.append(r)
                continue
            counted[0] += 1
            if progress and counted[0] % PROGRESS_EVERY == 0:
                progress(counted[0])
            yield r

    # Copying a big import from the WAL into the database file takes ~10 s a million rows: leave it to the
    # follow-up `workbench index` step (or the next commit) instead of holding the curator up here.
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    try:
        with transaction(conn):
            did = ensure_dataset(conn, name, det.kind)
            ts = now()
            import_id = conn.execute(
                "INSERT INTO imports (dataset_id, file, format, mapping, imported_at) VALUES (?, ?, ?, ?, ?)",
                (did, os.path.abspath(path), det.format, orjson.dumps(det.mapping).decode(), ts)).lastrowid
            before = conn.execute("SELECT coalesce(max(id), 0) FROM samples").fetchone()[0]
            ctx = _Context(str(path), det.file_type, det.format, mapping, did, import_id, ts)
            conn.executemany(_INSERT, rows(ctx))
            if counted[0] == 0:
                raise ImportFailed(f"{path}: no valid rows to import ({len(skipped)} skipped)")
            first, last = before + 1, before + counted[0]
            dups = flag_duplicates(conn, first, last)
            conn.execute("UPDATE imports SET rows = ?, skipped = ? WHERE id = ?", (counted[0], len(skipped), import_id))
    except FormatError as e:  # a file-level problem found mid-stream (e.g. a JSON array truncated at the end)
        raise ImportFailed(describe(str(path), e.line, e.row, e.field, e.message)) from None
    except UnicodeDecodeError as e:
        raise ImportFailed(f"{path}: not valid UTF-8 ({e.reason})") from None
    finally:
        conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT}")
    if progress:
        progress(counted[0])
    return ImportResult(name, did, import_id, det.format, counted[0], skipped, dups, first, last)
