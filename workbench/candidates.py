"""Candidates from several models' outputs: files (or datasets) answering the same instructions become one prompt
with one candidate per model, joined on the normalized instruction + input (casefolded, whitespace collapsed).

`run preference --param candidates=existing` then judges them and picks the pair.
"""
from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from . import formats
from .formats import FormatError
from .importer import (ImportFailed, ImportRefused, Skipped, _check_not_imported, _Writer, default_name, describe,
                       detect, expand_inputs, file_sha256, stdin_spooled)
from .samples import iter_samples, sample_row
from .store import dataset_id, ensure_dataset, now, transaction
from .textnorm import hash_key

MODEL_COLUMNS = ("generator", "model")   # AlpacaEval's outputs name the model in `generator`


def join_key(instruction: str | None, input: str | None) -> str:
    return hash_key(instruction or "") + "\x1f" + hash_key(input or "")


@dataclass
class Unmatched:
    file: str
    line: int
    instruction: str

    def to_dict(self) -> dict:
        return {"file": self.file, "line": self.line, "instruction": self.instruction[:200]}


@dataclass
class CandidatesResult:
    dataset: str
    dataset_id: int
    prompts: int
    candidates: int
    models: list[str]
    unmatched: list[Unmatched] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def _model_of(s: dict, fallback: str) -> str:
    meta = s.get("metadata") or {}
    for c in MODEL_COLUMNS:
        if isinstance(meta.get(c), str) and meta[c].strip():
            return meta[c].strip()
    return fallback


def _read_outputs(path: Path, det, mapping: dict, skip_invalid: bool, skipped: list) -> dict[str, tuple[int, dict]]:
    """One model-output file -> {join key: (line, parsed row)}; the same instruction twice is ambiguous (which
    answer is the model's?) and refused."""
    rows: dict[str, tuple[int, dict]] = {}
    try:
        for line, row, rec in formats.read_records(path, det.file_type):
            where = line if det.file_type in ("jsonl", "txt") else row
            try:
                if isinstance(rec, FormatError):
                    raise rec
                s = formats.parse_record(formats.apply_mapping(rec, mapping), det.format)
                key = join_key(s.get("instruction"), s.get("input"))
                if key in rows:
                    raise formats.RowError(f"the same instruction (and input) as line {rows[key][0]}: which answer "
                                           "is the model's is ambiguous", field="instruction")
            except FormatError as e:
                skip = Skipped(det.file, e.line or where, e.row, e.field, e.message)
                if not skip_invalid:
                    raise ImportFailed(str(skip)) from None
                skipped.append(skip)
                continue
            rows[key] = (where, s)
    except FormatError as e:
        raise ImportFailed(describe(det.file, e.line, e.row, e.field, e.message)) from None
    return rows


def import_candidates(conn: sqlite3.Connection, inputs, dataset: str, fmt: str | None = None,
                      mapping: dict | None = None, skip_invalid: bool = False, append: bool = False) -> CandidatesResult:
    """`import A.json B.json C.json --as-candidates --dataset D`: one prompt per instruction found in every file,
    one candidate per file (its model: the `generator`/`model` column, else the file's name). Rows whose
    instruction is not in every file are reported as unmatched and not imported."""
    if not dataset:
        raise ImportRefused("--as-candidates: name the dataset with --dataset")     # the command line: exit 2
    paths = expand_inputs(inputs)
    if len(paths) < 2:
        raise ImportRefused("--as-candidates needs at least two files (one per model)")
    mapping = mapping or {}
    skipped: list[Skipped] = []
    with stdin_spooled(paths, fmt) as paths:
        dets = [detect(p, fmt, mapping, skip_invalid) for p in paths]
        shas = [file_sha256(p) for p in paths]
        if not append:
            for det, sha in zip(dets, shas):
                _check_not_imported(conn, dataset, det.file, sha)
        per_file = [_read_outputs(p, d, mapping, skip_invalid, skipped) for p, d in zip(paths, dets)]
    common = set(per_file[0]).intersection(*per_file[1:])
    unmatched = [Unmatched(d.file, line, s.get("instruction") or "")
                 for d, rows in zip(dets, per_file) for key, (line, s) in rows.items() if key not in common]
    if not common:
        raise ImportFailed(f"--as-candidates: no instruction is in all {len(paths)} files "
                           f"({len(unmatched)} rows unmatched)")
    fallbacks = [default_name(p) if d.file != "-" else "stdin" for p, d in zip(paths, dets)]
    models: list[str] = []
    with transaction(conn):
        did = ensure_dataset(conn, dataset, "prompts")
        ts = now()
        ids = []
        for p, det, sha, rows in zip(paths, dets, shas, per_file):
            file_col = det.file if det.file == "-" else os.path.abspath(p)
            ids.append(conn.execute(
                "INSERT INTO imports (dataset_id, file, format, mapping, imported_at, sha256, bytes, rows) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (did, file_col, det.format, orjson.dumps({**det.mapping, "as": "candidates"}).decode(), ts, sha,
                 p.stat().st_size, sum(1 for k in rows if k in common))).lastrowid)
        writer = _Writer(conn, ts, formats.ParseOptions(), dets[0].file)
        for key, (line, first) in per_file[0].items():
            if key not in common:
                continue
            cands = []
            for rows, fallback in zip(per_file, fallbacks):
                s = rows[key][1]
                model = _model_of(s, fallback)
                cands.append({"model": model, "response": s.get("response") or ""})
                if model not in models:
                    models.append(model)
            meta = {k: v for k, v in (first.get("metadata") or {}).items() if k not in MODEL_COLUMNS}
            prompt = {"instruction": first.get("instruction"), "input": first.get("input"),
                      "system": first.get("system"), "metadata": meta or None, "import_id": ids[0],
                      "source_line": line, **{f: first.get(f) for f in formats.LABEL_FIELDS}}
            writer.add(sample_row(did, prompt, ts), cands)
        writer.flush()
    return CandidatesResult(dataset, did, writer.inserted, writer.candidates, models, unmatched, skipped)


def _source_model(s: dict, dataset: str) -> str:
    origin = s.get("origin") if isinstance(s.get("origin"), dict) else {}
    return _model_of(s, origin.get("model") or dataset)


def candidates_from_datasets(conn: sqlite3.Connection, dataset: str, sources: list[str]) -> dict:
    """`run preference --candidates-from D1,D2`: each sample of `dataset` gets one candidate per source dataset
    sample with the same normalized instruction + input (its response; its model from the `generator`/`model`
    column, the generating model, or the dataset's name). A candidate already stored is not added twice."""
    try:
        target = dataset_id(conn, dataset)
        src_ids = [(name, dataset_id(conn, name)) for name in sources]
    except KeyError as e:
        raise ImportFailed(str(e.args[0])) from None
    index: dict[str, list[tuple[str, str]]] = {}
    for name, sid in src_ids:
        seen: dict[str, int] = {}
        for s in iter_samples(conn, "dataset_id = ?", (sid,)):
            key = join_key(s["instruction"], s["input"])
            if key in seen:
                raise ImportFailed(f"dataset {name!r}: samples {seen[key]} and {s['id']} have the same instruction "
                                   "(and input): which is the model's answer is ambiguous")
            seen[key] = s["id"]
            if (s["response"] or "").strip():
                index.setdefault(key, []).append((_source_model(s, name), s["response"]))
    added = matched = 0
    unmatched: list[int] = []
    with transaction(conn):
        ts = now()
        for s in iter_samples(conn, "dataset_id = ?", (target,)):
            found = index.get(join_key(s["instruction"], s["input"]))
            if not found:
                unmatched.append(s["id"])
                continue
            matched += 1
            have = set(conn.execute("SELECT model, response FROM candidates WHERE sample_id = ?", (s["id"],)))
            for model, response in found:
                if (model, response) not in have:
                    conn.execute("INSERT INTO candidates (sample_id, model, response, created_at) VALUES (?,?,?,?)",
                                 (s["id"], model, response, ts))
                    added += 1
    return {"dataset": dataset, "sources": sources, "matched": matched, "added": added, "unmatched": unmatched}
