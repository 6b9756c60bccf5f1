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

from . import formats, licenses, segments
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
    segments: dict | None = None      # text segmented for backtranslation: kept and dropped counts


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


def _build_block(ctx: _Context, first_line: int, block: bytes) -> list:
    """In the worker: one block of JSONL lines -> one item per non-blank line, rows numbered from 1 in the block."""
    return [_build(ctx, line, row, raw) for line, row, raw in formats.block_lines(first_line, block)]


def _built_rows(ctx: _Context, path: Path, parallel: bool, segmented=None):
    """Rows in file order. Big JSONL files are parsed, normalized and hashed in a worker process while this
    process inserts: the two halves of the work run on two cores. A bounded number of blocks is in flight, so
    memory stays flat whatever the file size. Segmented text comes as (line, text) records already."""
    if segmented is not None:
        for row, (line, text) in enumerate(segmented.records, 1):
            yield _build(ctx, line, row, {"text": text})
        return
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

    # spawn, not fork: the TUI imports from a thread, and forking a threaded process can deadlock
    with ProcessPoolExecutor(max_workers=PARALLEL_WORKERS, mp_context=multiprocessing.get_context("spawn")) as pool:
        pending: deque = deque()
        for first_line, block in formats.jsonl_blocks(path):
            pending.append(pool.submit(_build_block, ctx, first_line, block))
            if len(pending) >= IN_FLIGHT:
                yield from in_order(pending.popleft())
        while pending:
            yield from in_order(pending.popleft())


def import_file(conn: sqlite3.Connection, path, dataset: str | None = None, fmt: str | None = None,
                mapping: dict[str, str] | str | None = None, skip_invalid: bool = False,
                progress: Callable[[int], None] | None = None, license: str | None = None,
                segment: str | None = None, segment_min: int = segments.DEFAULT_MIN,
                segment_max: int = segments.DEFAULT_MAX) -> ImportResult:
    """`segment` (heading | paragraph | none) cuts unlabeled text into candidate responses (workbench/segments.py)."""
    path = Path(path)
    if isinstance(mapping, str):
        mapping = _mapping(mapping)
    mapping = mapping or {}
    if license is not None:
        try:
            license = licenses.normalize(license)
        except licenses.LicenseError as e:
            raise ImportFailed(str(e)) from None
    det = detect(path, fmt, mapping, skip_invalid)
    segmented = None
    if segment not in (None, "none"):
        if det.format != "text" or det.file_type != "txt":
            raise ImportFailed(f"{path}: --segment {segment} works on plain text files (--format text), "
                               f"not {det.format} ({det.file_type})")
        try:
            segmented = segments.read_segments(path, segment, segment_min, segment_max)
        except ValueError as e:      # UnicodeDecodeError is a ValueError too
            raise ImportFailed(f"{path}: {e}") from None
        if not segmented.records:
            raise ImportFailed(f"{path}: no segment of {segment_min}-{segment_max} characters is left; "
                               f"dropped: {segmented.report()['dropped']}")
    name = dataset or path.stem
    digest = _sha256(path)
    skipped: list[Skipped] = []
    counted = [0]
    parallel = det.file_type == "jsonl" and path.stat().st_size >= PARALLEL_MIN_BYTES

    def rows(ctx: _Context):
        for r in _built_rows(ctx, path, parallel, segmented):
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
            _record_license(conn, did, name, license)
            ts = now()
            import_id = conn.execute(
                "INSERT INTO imports (dataset_id, file, format, mapping, imported_at, sha256, license) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (did, os.path.abspath(path), det.format, orjson.dumps(det.mapping).decode(), ts, digest,
                 license)).lastrowid
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
    return ImportResult(name, did, import_id, det.format, counted[0], skipped, dups, first, last,
                        segmented.report() if segmented is not None else None)


def _sha256(path: Path) -> str:
    """The source file's hash, listed by every export of its rows (provenance)."""
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _record_license(conn: sqlite3.Connection, did: int, name: str, license: str | None) -> None:
    """Inside the import's transaction: one licence per dataset. A different one, or rows added without one to a
    licensed dataset (or with one to rows that have none), is refused: an export must be able to list them all."""
    current, rows = conn.execute("SELECT license, (SELECT count(*) FROM samples WHERE dataset_id = ?) FROM datasets "
                                 "WHERE id = ?", (did, did)).fetchone()
    if license == current:
        return
    if current is None and rows == 0:
        conn.execute("UPDATE datasets SET license = ? WHERE id = ?", (license, did))
        return
    if current is None:
        raise ImportFailed(f"dataset {name!r} holds rows imported without a licence; import {license} data into "
                           f"another dataset")
    raise ImportFailed(f"dataset {name!r} is licensed {current}; "
                       + (f"pass --license {current} to add rows to it" if license is None
                          else f"{license} data goes into another dataset"))
