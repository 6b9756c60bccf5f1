"""Parquet shards for distributed engines (Spark, Ray Data, NeMo Curator, datatrove): `export --format parquet
--shard-rows N DIR` writes DIR/part-00000.parquet, part-00001.parquet, ... of at most N rows each, and
DIR/.manifest.json listing every shard with its rows and sha256 (hidden: engines and `load_dataset` skip it).

Every shard has the same explicit schema (the single-file Parquet export's columns: strings, plus an int64
`sample_id` with --with-ids), so a shard whose rows all lack a value still has the column typed as the others do.

The set is written into a temp directory beside DIR and renamed into place only when every shard is complete and
the snapshot is recorded (same transaction): a failure leaves no shard behind. A non-empty DIR is refused unless
--force; even then only a shard set of ours (part-NNNNN.parquet, .manifest.json) is replaced, never other files.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import sqlite3
import tempfile
from array import array
from collections import Counter
from pathlib import Path

import orjson

from . import __version__, provenance, safe_output, snapshot_write
from .export_shapes import parquet_fields
from .exporter import ExportFailed, ExportResult, describe_counts, one_snapshot, parse_statuses, select
from .fileperms import DIR_MODE, FILE_MODE
from .safe_output import OutputError
from .store import now, transaction

SHARD_NAME = "part-{:05d}.parquet"
SHARD_RE = re.compile(r"part-\d{5}\.parquet")
MANIFEST = ".manifest.json"
BATCH = 5000


def shard_schema(columns: list[str]):
    import pyarrow as pa
    return pa.schema([(c, pa.int64() if c == "sample_id" else pa.string()) for c in columns])


def _ours(name: str) -> bool:
    return bool(SHARD_RE.fullmatch(name)) or name == MANIFEST


def _plan_dir(conn, out_dir, force: bool) -> Path:
    text = os.fspath(out_dir)
    if text == "-" or safe_output.is_stream(text):
        raise ExportFailed(f"{text}: shards are a directory of files; give a directory name")
    d = Path(os.path.abspath(text))
    try:
        safe_output.check_name(d / SHARD_NAME.format(0))
        if os.path.lexists(d) and not d.is_dir():
            raise OutputError(f"{text}: exists and is not a directory")
        d = Path(os.path.realpath(d))
        safe_output.refuse_store(d, safe_output.store_files(conn))
        if d.is_dir():
            names = sorted(os.listdir(d))
            if names and not force:
                raise OutputError(f"{text}: the directory is not empty; pass --force to replace the shard set in it")
            others = [n for n in names if not _ours(n)]
            if others:
                raise OutputError(f"{text}: holds files that are not shards of an export ("
                                  + ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
                                  + "); --force replaces only a shard set, so move them or pick another directory")
    except OutputError as e:
        raise ExportFailed(str(e)) from None
    except OSError as e:
        raise ExportFailed(safe_output.describe_error(text, e)) from None
    return d


class _Shard:
    """One shard file being written in the temp directory: hashed as it goes, synced when closed."""

    def __init__(self, path: Path, schema):
        import pyarrow as pa
        import pyarrow.parquet as pq
        self.path = path
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        self.raw = os.fdopen(fd, "wb", buffering=1 << 20)
        self.sink = safe_output.HashingSink(self.raw)
        self.writer = pq.ParquetWriter(pa.PythonFile(self.sink, mode="w"), schema, compression="zstd")
        self.rows = 0

    def write(self, table) -> None:
        self.writer.write_table(table)
        self.rows += table.num_rows

    def close(self) -> dict:
        self.writer.close()
        self.sink.flush()
        os.fsync(self.raw.fileno())
        self.raw.close()
        return {"file": self.path.name, "rows": self.rows, "sha256": self.sink.sha.hexdigest(),
                "bytes": self.sink.bytes}


def export_shards(conn: sqlite3.Connection, out_dir, shard_rows: int, dataset=None, status=None, min_score=None,
                  max_score=None, task_type=None, selection=None, name: str | None = None, *, force: bool = False,
                  with_ids: bool = False, include_stale: bool = False) -> ExportResult:
    import pyarrow as pa
    if not isinstance(shard_rows, int) or isinstance(shard_rows, bool) or shard_rows < 1:
        raise ExportFailed(f"--shard-rows {shard_rows!r}: a whole number of rows per shard, at least 1")
    sel = select(conn, dataset, parse_statuses(status, "parquet"), min_score, max_score, task_type, selection,
                 include_stale)
    counts = {"rows": 0, **sel.counts, "skipped_by_reason": {}, "skipped": 0, "by_status": {}, "by_dataset": {}}
    if sel.counts["selected"] == 0:
        raise ExportFailed("no rows to export: " + describe_counts(counts), counts)
    d = _plan_dir(conn, out_dir, force)
    columns = parquet_fields(with_ids)
    schema = shard_schema(columns)
    names = dict(conn.execute("SELECT id, name FROM datasets"))
    by_status: Counter = Counter()
    by_dataset: Counter = Counter()
    ids, hashes = array("q"), array("q")
    lineage = provenance.Rows()     # collected in the data pass: the rows are not read again for the manifest
    created = _make_parents(d.parent)
    tmp = Path(tempfile.mkdtemp(prefix=safe_output.TEMP_PREFIX, dir=d.parent))
    shards: list[dict] = []
    snap = None
    try:
        snap = snapshot_write.reserve(conn, tmp)
        try:
            shard: _Shard | None = None
            batch: list[tuple] = []
            width = len(columns)

            def flush():
                nonlocal batch
                if batch:   # column by column: several times faster than Table.from_pylist on rows of strings
                    shard.write(pa.Table.from_arrays([pa.array([r[i] for r in batch], f.type)
                                                      for i, f in enumerate(schema)], schema=schema))
                    batch = []

            with one_snapshot(conn):
                for r in _rows(conn, sel.where, sel.params, with_ids):
                    if shard is None:
                        shard = _Shard(tmp / SHARD_NAME.format(len(shards)), schema)
                    sid, chash, status, ds, import_id, parent_id, job_id = r[width:]
                    batch.append(r)
                    ids.append(sid)
                    hashes.append(chash)
                    lineage.add(sid, ds, import_id, parent_id, job_id)
                    by_status[status] += 1
                    by_dataset[names.get(ds, str(ds))] += 1
                    if len(batch) >= BATCH or shard.rows + len(batch) >= shard_rows:
                        flush()
                    if shard.rows >= shard_rows:
                        shards.append(shard.close())
                        shard = None
            if shard is not None:
                flush()
                shards.append(shard.close())
        except OSError as e:
            raise ExportFailed(safe_output.describe_error(d, e)) from None
        if not ids:
            raise ExportFailed("no rows to export: " + describe_counts(counts), counts)
        counts.update(rows=len(ids), by_status=dict(by_status), by_dataset=dict(by_dataset))
        provenance.load_ids(conn, ids, lineage)
        prov = provenance.export_provenance(conn, lineage)
        # the set's digest: sha256 over "sha256  name" lines (a SHA256SUMS file of the shards, in order)
        digest = hashlib.sha256("".join(f"{s['sha256']}  {s['file']}\n" for s in shards).encode()).hexdigest()
        manifest = {"file": str(d), "format": "parquet", "layout": "shards", "shard_rows": shard_rows,
                    "shards": shards, "created_at": now(), "sha256": digest,
                    "bytes": sum(s["bytes"] for s in shards), "filters": sel.filters, "counts": counts,
                    "columns": columns, "schema": {f.name: str(f.type) for f in schema}, "with_ids": with_ids,
                    "licenses": prov["licenses"], "provenance": prov, "workbench_version": __version__,
                    "manifest_name": MANIFEST}
        snapshot_write.write_items(conn, snap, ids, hashes)     # short transactions, before the snapshot exists
        _commit(conn, d, tmp, manifest, snap, name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if snap is not None:
            snapshot_write.abandon(conn, snap)
        for p in reversed(created):
            try:
                p.rmdir()
            except OSError:
                pass
        raise
    finally:
        provenance.drop_ids(conn)
    return ExportResult(d, "parquet", len(ids), 0, digest, d / MANIFEST, snap, counts,
                        [d / s["file"] for s in shards] + [d / MANIFEST])


# the values export_shapes.parquet_row gives, read as stored: messages and metadata are already the JSON text it
# would write (samples.py stores them with orjson), so they are not decoded and encoded again; an empty list or
# object is written as null, as parquet_row does. tests/test_shards.py holds the two to the same rows.
_SELECT_COLUMNS = {"output": "response", "messages": "CASE WHEN messages = '[]' THEN NULL ELSE messages END",
                   "metadata": "CASE WHEN metadata IN ('{}', 'null') THEN NULL ELSE metadata END", "sample_id": "id"}


def _rows(conn, where: str, params: tuple, with_ids: bool, batch: int = 2000):
    """Tuples: the shard's columns, then id, content_hash, status, dataset_id, import_id, parent_id, job_id; in id
    order, keyset-paginated."""
    cols = ", ".join(_SELECT_COLUMNS.get(c, c) for c in parquet_fields(with_ids))
    last = 0
    while True:
        rows = conn.execute(f"SELECT {cols}, id, content_hash, status, dataset_id, import_id, parent_id, job_id "
                            f"FROM samples "
                            f"WHERE ({where}) AND id > ? ORDER BY id LIMIT ?", (*params, last, batch)).fetchall()
        if not rows:
            return
        yield from rows
        last = rows[-1][-7]


def _make_parents(d: Path) -> list[Path]:
    missing = []
    while not d.exists():
        missing.append(d)
        d = d.parent
    for p in reversed(missing):
        try:
            p.mkdir(mode=DIR_MODE)
        except OSError as e:
            raise ExportFailed(safe_output.describe_error(p, e)) from None
    return missing


def _commit(conn, d: Path, tmp: Path, manifest: dict, snap: int, name) -> None:
    """Publish the snapshot (its items are written) and rename the finished set into place: one short
    transaction."""
    with transaction(conn):
        snapshot_write.publish(conn, snap, name, manifest)
        manifest["snapshot_id"] = snap
        text = orjson.dumps(manifest, option=orjson.OPT_INDENT_2).decode()
        conn.execute("UPDATE snapshots SET manifest = ? WHERE id = ?", (text, snap))
        try:
            fd = os.open(tmp / MANIFEST, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
            with os.fdopen(fd, "wb") as f:
                f.write((text + "\n").encode())
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, _dir_mode(d))
            _swap_in(d, tmp)
        except OSError as e:
            raise ExportFailed(f"cannot put the shards in place: {safe_output.describe_error(d, e)}") from None


def _dir_mode(d: Path) -> int:
    try:
        return os.stat(d).st_mode & 0o7777
    except OSError:
        return DIR_MODE


def _swap_in(d: Path, tmp: Path) -> None:
    """tmp becomes d. An empty d is replaced by the rename itself; a previous shard set (--force, checked by
    _plan_dir) is moved aside first and removed only once the new set is in place."""
    if not d.exists() or not any(d.iterdir()):
        os.rename(tmp, d)       # atomic; fails (ENOTEMPTY) if something appeared in d meanwhile
        return
    others = [n for n in os.listdir(d) if not _ours(n)]
    if others:
        raise OSError(17, f"files appeared while exporting ({', '.join(others[:3])})")
    old = Path(tempfile.mkdtemp(prefix=safe_output.TEMP_PREFIX, dir=d.parent))
    os.rename(d, old / "old")
    try:
        os.rename(tmp, d)
    except OSError:
        os.rename(old / "old", d)
        shutil.rmtree(old, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
