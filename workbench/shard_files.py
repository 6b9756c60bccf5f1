"""Reading what a distributed engine wrote back: a Parquet or JSONL file, or a directory of them (shards).

A directory is read recursively in name order. Hidden files and names starting with "_" are the engines' own
bookkeeping (Spark's _SUCCESS and .crc files, Parquet's _metadata, our .manifest.json) and are left out; any other
file that is not .parquet, .jsonl or .ndjson (optionally .gz) is refused, naming it - a file skipped silently could
hold rows that then count as missing.

Positions in messages: a JSONL file's line, a Parquet file's row (1-based).
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Iterator

import orjson

ID_COLUMN = "sample_id"
BATCH = 4096


class ShardError(ValueError):
    """A file cannot be used; the message names the file, the line or row and the field."""


def where(file, line: int | None = None, field: str | None = None, row: bool = False) -> str:
    out = str(file)
    if line is not None:
        out += f", {'row' if row else 'line'} {line}"
    if field is not None:
        out += f", field {field!r}"
    return out


def kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
        if name.endswith(".parquet"):
            return None
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    return None


def shard_files(path) -> list[Path]:
    """The files to read: `path` itself, or every shard under the directory (see the module doc)."""
    p = Path(path)
    if not p.exists():
        raise ShardError(f"{p}: no such file or directory")
    if p.is_file():
        if kind(p) is None:
            raise ShardError(f"{p}: not a Parquet or JSONL file (.parquet, .jsonl, .ndjson, .jsonl.gz)")
        return [p]
    out = []
    for root, dirs, files in os.walk(p):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
        for name in sorted(files):
            if name.startswith((".", "_")):
                continue
            f = Path(root) / name
            if kind(f) is None:
                raise ShardError(f"{f}: not a Parquet or JSONL shard; move it out of {p} (only .parquet, .jsonl and "
                                 f".ndjson files, optionally .gz, are read)")
            out.append(f)
    if not out:
        raise ShardError(f"{p}: holds no .parquet or .jsonl file")
    return out


def parquet_schema(path: Path):
    import pyarrow.parquet as pq
    try:
        return pq.read_schema(path)
    except Exception as e:   # ArrowInvalid / OSError for a damaged file
        raise ShardError(f"{path}: not a readable Parquet file ({e})") from None


def first_record(path: Path) -> dict | None:
    """The first JSONL record (None for an empty file)."""
    for _, rec in jsonl_records(path):
        return rec
    return None


def columns_of(path: Path) -> list[str]:
    if kind(path) == "parquet":
        return list(parquet_schema(path).names)
    rec = first_record(path)
    return list(rec) if rec else []


def jsonl_records(path: Path) -> Iterator[tuple[int, dict]]:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            for n, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                try:
                    rec = orjson.loads(raw)
                except orjson.JSONDecodeError as e:
                    raise ShardError(f"{where(path, n)}: not valid JSON ({e})") from None
                if not isinstance(rec, dict):
                    raise ShardError(f"{where(path, n)}: a JSON object per line is needed, got "
                                     f"{type(rec).__name__}")
                yield n, rec
    except (OSError, EOFError) as e:
        raise ShardError(f"{path}: cannot read ({e})") from None


def parquet_batches(path: Path, columns: list[str] | None = None):
    """(first row number, pyarrow RecordBatch) pairs."""
    import pyarrow.parquet as pq
    try:
        pf = pq.ParquetFile(path)
        row = 1
        for batch in pf.iter_batches(batch_size=BATCH, columns=columns):
            yield row, batch
            row += batch.num_rows
    except ShardError:
        raise
    except Exception as e:
        raise ShardError(f"{path}: not a readable Parquet file ({e})") from None


_ID_HINT = ("; an `id` column is not taken for it (datatrove writes its document ids there): write sample_id back "
            "(README, Parquet shards)")


def _bad_id(value) -> str:
    return f"{value!r} is not a sample id (a whole number; the sample_id column of an export)"


def iter_ids(path: Path) -> Iterator[tuple[int, int]]:
    """(line or row, sample id) of every row of one file; a row without a whole-number sample_id is refused."""
    if kind(path) == "parquet":
        import pyarrow as pa
        schema = parquet_schema(path)
        if ID_COLUMN not in schema.names:
            raise ShardError(f"{where(path, field=ID_COLUMN)}: no such column (columns: "
                             f"{', '.join(schema.names[:12])}); export with --with-ids and keep the column"
                             + _ID_HINT * ("id" in schema.names))
        t = schema.field(ID_COLUMN).type
        if not pa.types.is_integer(t):
            raise ShardError(f"{where(path, field=ID_COLUMN)}: the column holds {t}, not whole numbers")
        for first, batch in parquet_batches(path, [ID_COLUMN]):
            col = batch.column(0)
            if col.null_count:
                i = next(i for i, v in enumerate(col.to_pylist()) if v is None)
                raise ShardError(f"{where(path, first + i, ID_COLUMN, row=True)}: empty (null)")
            for i, v in enumerate(col.to_pylist()):
                yield first + i, v
        return
    for n, rec in jsonl_records(path):
        if ID_COLUMN not in rec:
            raise ShardError(f"{where(path, n, ID_COLUMN)}: missing (keys: {', '.join(list(rec)[:12])})"
                             + _ID_HINT * ("id" in rec))
        v = rec[ID_COLUMN]
        if isinstance(v, bool) or not isinstance(v, int):
            raise ShardError(f"{where(path, n, ID_COLUMN)}: {_bad_id(v)}")
        yield n, v


def is_row_position(path: Path) -> bool:
    return kind(path) == "parquet"
