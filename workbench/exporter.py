"""Export samples in the formats trainers read; every export is a snapshot with a manifest.

JSON formats write JSONL, or a JSON array when the output name ends in .json. The file is written to a temp
name and renamed, so a failed export never leaves a half-written file under the requested name.
"""
from __future__ import annotations

import hashlib
import os
from array import array
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import orjson

from . import __version__
from .fileperms import create_private, open_private, private_dir
from .formats import LABEL_FIELDS, SHAREGPT_FROM
from .origin_tags import origin_kind, tag as tag_origin
from .samples import iter_samples
from .store import STATUSES, dataset_id, now, transaction

EXPORT_FORMATS = ("alpaca", "sharegpt", "messages", "preference", "parquet")
PARQUET_BATCH = 5000


class ExportFailed(Exception):
    pass


@dataclass
class ExportResult:
    path: Path
    format: str
    rows: int
    skipped: int
    sha256: str
    manifest_path: Path
    snapshot_id: int


# --- row shapes -----------------------------------------------------------------------------------------

def _extras(s: dict, row: dict) -> dict:
    """Labels and the source's other columns ride along, so import -> export -> import keeps every field."""
    for f in LABEL_FIELDS:
        if s.get(f) is not None:
            row[f] = s[f]
    for k, v in (s.get("metadata") or {}).items():
        row.setdefault(k, v)
    return row


def _conversation(s: dict) -> list[dict]:
    """The whole conversation as messages: the stored turns, or the single pair."""
    if s.get("messages"):
        msgs = list(s["messages"])
        if s.get("rejected") is not None:  # preference rows store only the prompt turns
            msgs.append({"role": "assistant", "content": s["response"]})
    else:
        user = s["instruction"] + (("\n\n" + s["input"]) if s["input"] else "")
        msgs = [{"role": "user", "content": user}, {"role": "assistant", "content": s["response"]}]
    if s.get("system") and not any(m["role"] == "system" for m in msgs):
        msgs.insert(0, {"role": "system", "content": s["system"]})
    return msgs


def alpaca_row(s: dict) -> dict:
    row = {"instruction": s["instruction"], "input": s["input"], "output": s["response"]}
    if s.get("system"):
        row["system"] = s["system"]
    msgs = [m for m in (s.get("messages") or []) if m["role"] in ("user", "assistant")]
    if len(msgs) > 2:  # earlier turns as LLaMA-Factory's history [[query, answer], ...]
        turns = msgs[:-2] if msgs[-1]["role"] == "assistant" else msgs[:-1]
        row["history"] = [[turns[i]["content"], turns[i + 1]["content"]] for i in range(0, len(turns) - 1, 2)]
    return _extras(s, row)


def sharegpt_row(s: dict) -> dict:
    conv, system = [], None
    for m in _conversation(s):
        if m["role"] == "system" and system is None and not conv:
            system = m["content"]
            continue
        turn = {"from": SHAREGPT_FROM.get(m["role"], m["role"]), "value": m["content"]}
        turn.update({k: v for k, v in m.items() if k not in ("role", "content")})
        conv.append(turn)
    row = {"conversations": conv}
    if system is not None:
        row["system"] = system
    return _extras(s, row)


def messages_row(s: dict) -> dict:
    return _extras(s, {"messages": _conversation(s)})


def preference_row(s: dict) -> dict | None:
    if s.get("rejected") is None:
        return None
    if s.get("messages"):
        prompt = list(s["messages"])
        if s.get("system") and not any(m["role"] == "system" for m in prompt):
            prompt.insert(0, {"role": "system", "content": s["system"]})
        row = {"prompt": prompt, "chosen": [{"role": "assistant", "content": s["response"]}],
               "rejected": [{"role": "assistant", "content": s["rejected"]}]}
    else:
        row = {"prompt": s["instruction"] + (("\n\n" + s["input"]) if s["input"] else ""),
               "chosen": s["response"], "rejected": s["rejected"]}
        if s.get("system"):
            row["system"] = s["system"]
    return _extras(s, row)


def parquet_row(s: dict) -> dict:
    """Full fidelity: the Alpaca columns plus the conversation and metadata packed as JSON text."""
    row = {"instruction": s["instruction"], "input": s["input"], "output": s["response"], "system": s["system"],
           "rejected": s.get("rejected"),
           "messages": orjson.dumps(s["messages"]).decode() if s.get("messages") else None}
    for f in LABEL_FIELDS:
        row[f] = s.get(f)
    row["metadata"] = orjson.dumps(s["metadata"]).decode() if s.get("metadata") else None
    return row


ROW_SHAPES = {"alpaca": alpaca_row, "sharegpt": sharegpt_row, "messages": messages_row, "preference": preference_row}


# --- selection -------------------------------------------------------------------------------------------

def build_filter(conn: sqlite3.Connection, dataset=None, status=None, min_score=None, max_score=None,
                 task_type=None, selection=None) -> tuple[str, tuple, dict]:
    where, params, filters = [], [], {}
    if dataset:
        try:
            did = dataset_id(conn, dataset)
        except KeyError as e:
            raise ExportFailed(str(e.args[0])) from None
        where.append("dataset_id = ?"), params.append(did)
        filters["dataset"] = dataset
    if status:
        if status not in STATUSES:
            raise ExportFailed(f"unknown status {status!r}; one of {', '.join(STATUSES)}")
        where.append("status = ?"), params.append(status)
        filters["status"] = status
    if min_score is not None:
        where.append("score >= ?"), params.append(float(min_score))
        filters["min_score"] = float(min_score)
    if max_score is not None:
        where.append("score <= ?"), params.append(float(max_score))
        filters["max_score"] = float(max_score)
    if task_type:
        where.append("task_type = ?"), params.append(task_type)
        filters["task_type"] = task_type
    if selection:
        if not conn.execute("SELECT 1 FROM selections WHERE name = ? LIMIT 1", (selection,)).fetchone():
            raise ExportFailed(f"no selection named {selection!r}")
        where.append("id IN (SELECT sample_id FROM selections WHERE name = ?)"), params.append(selection)
        filters["selection"] = selection
    return " AND ".join(where) or "1", tuple(params), filters


# --- writing ---------------------------------------------------------------------------------------------

def export(conn: sqlite3.Connection, out_path, fmt: str, dataset=None, status=None, min_score=None,
           max_score=None, task_type=None, selection=None, name: str | None = None,
           origin_tags: dict | None = None) -> ExportResult:
    """`origin_tags` ({seed, augmented} texts, see origin_tags.py): each row's system prompt starts with its tag."""
    if fmt not in EXPORT_FORMATS:
        raise ExportFailed(f"unknown export format {fmt!r}; one of {', '.join(EXPORT_FORMATS)}")
    out = Path(out_path)
    if out.is_dir():
        raise ExportFailed(f"{out}: is a directory; give a file name")
    private_dir(out.parent)
    where, params, filters = build_filter(conn, dataset, status, min_score, max_score, task_type, selection)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    ids, hashes = array("q"), array("q")  # 16 bytes a row: a million-row export stays small
    stats = {"rows": 0, "skipped_no_rejected": 0, "status": {}, "datasets": {}, "template_versions": {},
             "origin_tags": {}}
    names = dict(conn.execute("SELECT id, name FROM datasets"))

    def rows():
        for s in iter_samples(conn, where, params):
            if origin_tags is not None:
                kind = origin_kind(s)
                stats["origin_tags"][kind] = stats["origin_tags"].get(kind, 0) + 1
                s = tag_origin(s, origin_tags)
            if fmt == "parquet":
                row = parquet_row(s)
            else:
                row = ROW_SHAPES[fmt](s)
                if row is None:
                    stats["skipped_no_rejected"] += 1
                    continue
            ids.append(s["id"])
            hashes.append(s["content_hash"])
            stats["rows"] += 1
            stats["status"][s["status"]] = stats["status"].get(s["status"], 0) + 1
            dname = names.get(s["dataset_id"], str(s["dataset_id"]))
            stats["datasets"][dname] = stats["datasets"].get(dname, 0) + 1
            origin = s.get("origin") or {}
            if origin.get("template"):
                key = f"{origin['template']}@{origin.get('template_version', '?')}"
                stats["template_versions"][key] = stats["template_versions"].get(key, 0) + 1
            yield row

    try:
        create_private(tmp)       # the writers below keep the mode of the file they truncate: 0600
        if fmt == "parquet":
            _write_parquet(tmp, rows())
        else:
            _write_json(tmp, rows(), as_array=out.suffix.lower() == ".json")
        digest = _sha256(tmp)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    manifest = {
        "file": str(out.resolve()), "format": fmt, "created_at": now(), "sha256": digest,
        "filters": filters, "counts": {"rows": stats["rows"], "skipped_no_rejected": stats["skipped_no_rejected"],
                                       "by_status": stats["status"], "by_dataset": stats["datasets"]},
        "template_versions": stats["template_versions"], "workbench_version": __version__,
    }
    if origin_tags is not None:
        manifest["origin_tags"] = {"tags": origin_tags, "rows": stats["origin_tags"]}
    manifest_path = out.with_name(out.name + ".manifest.json")
    with transaction(conn):
        snap = conn.execute(
            "INSERT INTO snapshots (name, file, format, filters, counts, sha256, manifest, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (name, manifest["file"], fmt, orjson.dumps(filters).decode(), orjson.dumps(manifest["counts"]).decode(),
             digest, "", manifest["created_at"])).lastrowid
        manifest["snapshot_id"] = snap
        text = orjson.dumps(manifest, option=orjson.OPT_INDENT_2).decode()
        conn.execute("UPDATE snapshots SET manifest = ? WHERE id = ?", (text, snap))
        conn.executemany("INSERT INTO snapshot_items (snapshot_id, sample_id, content_hash) VALUES (?, ?, ?)",
                         ((snap, i, h) for i, h in zip(ids, hashes)))
    with open_private(manifest_path, "w") as f:
        f.write(text + "\n")
    return ExportResult(out, fmt, stats["rows"], stats["skipped_no_rejected"], digest, manifest_path, snap)


def _write_json(path: Path, rows, as_array: bool) -> None:
    with open(path, "wb", buffering=1 << 20) as f:
        if as_array:
            f.write(b"[")
            first = True
            for row in rows:
                f.write(b"\n" if first else b",\n")
                f.write(orjson.dumps(row))
                first = False
            f.write(b"\n]\n")
        else:
            for row in rows:
                f.write(orjson.dumps(row))
                f.write(b"\n")


def _write_parquet(path: Path, rows) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    fields = [("instruction", pa.string()), ("input", pa.string()), ("output", pa.string()),
              ("system", pa.string()), ("rejected", pa.string()), ("messages", pa.string()),
              *((f, pa.string()) for f in LABEL_FIELDS), ("metadata", pa.string())]
    schema = pa.schema(fields)
    with pq.ParquetWriter(path, schema, compression="zstd") as w:
        batch = []
        for row in rows:
            batch.append(row)
            if len(batch) >= PARQUET_BATCH:
                w.write_table(pa.Table.from_pylist(batch, schema=schema))
                batch = []
        if batch:
            w.write_table(pa.Table.from_pylist(batch, schema=schema))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
