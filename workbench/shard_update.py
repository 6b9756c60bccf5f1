"""`import PATH` of shards that carry `sample_id` (an export's shards coming back from an engine): the samples they
name are updated, never duplicated.

Columns, by name:
  sample_id                      which sample a row updates: it must exist, belong to the named dataset and appear
                                 once in the whole input
  instruction input output       (response also accepted for output) system rejected messages task_type domain
  ...                            difficulty language metadata: the export's own columns. A value that differs from
                                 the sample's updates it, as an edit does (content hash, duplicate flags, search
                                 index; its scores turn stale); null leaves the field as it is. `messages` may change
                                 the turns' text, not which turns there are.
  any other numeric column       (integers or floats, nulls allowed) a rubric named after the column, one score per
                                 sample (scores.record), on the scale stated with --score-scale COLUMN=LO-HI (a
                                 bare LO-HI when the input has one such column). Without a scale the import is
                                 refused: the range a score is on is not in the numbers, and the observed range is
                                 not a scale. A value off the scale is refused; NaN counts as no value.
  any other column               (strings, booleans, lists, structs) stored in the sample's metadata under its name
  prompt, completion, chosen,    other export layouts' columns and an engine's text copy: refused, naming the
  conversations, label, history, column (they are not sample fields; taking them as metadata would hide that the
  text, id                       wrong files were given)
A column whose values mix numbers and other types is refused at the first row that breaks the pattern.

Every text, label or metadata change is one 'update' decision of a run ("update-N", the undoable run log of
workbench/runs.py): `workbench clean --undo update-N` reverts them; scores written stay, as a scoring job's do.

All or nothing, without holding the write lock for long: every row of every file is checked first with nothing
written (a refusal names file, line (row for Parquet) and field, and leaves the store as it was); the rows are
then applied in short transactions (workbench/short_tx.py), each reading the samples it changes, so an edit a
curator makes meanwhile is never overwritten (see _engine_changed). A `bulk_runs` row marks the import unfinished
and `bulk_run_scores` keeps the scores it replaces: an import failing midway (a file changed since it was checked)
undoes itself before it reports, and one whose process died (kill -9) is undone by the next command's open
(`recover`, called by workbench/recovery.py: the CLI's and the TUI's open) or the next shard import.
"""
from __future__ import annotations

import logging
import math
import os
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from . import scores
from .bulk_recovery import claim_dead
from .decisions import _check_turn_edit, _mirrored_messages, mirror_turns
from .formats import LABEL_FIELDS
from .runs import current_fields, new_run
from .samples import SAMPLE_COLUMNS, decode_sample, hash_of, write_text
from .shard_files import (ID_COLUMN, ShardError, columns_of, jsonl_records, kind, parquet_batches, parquet_schema,
                          where)
from .short_tx import ShortTransactions
from .store import dataset_id as _dataset_id, now

TEXT_COLUMNS = {"instruction": "instruction", "input": "input", "output": "response", "response": "response",
                "system": "system", "rejected": "rejected"}
REFUSED = ("prompt", "completion", "chosen", "conversations", "label", "history", "text", "id")
SCALE_RE = re.compile(r"(?:(?P<col>[^=]+)=)?(?P<lo>-?\d+(?:\.\d+)?)-(?P<hi>-?\d+(?:\.\d+)?)")
FETCH = 200          # rows per batch: the apply pass commits between batches (workbench/short_tx.py)

log = logging.getLogger(__name__)


class UpdateError(ValueError):
    """The update was refused (a file, a row, a column); the store is as it was."""


class UpdateRefused(UpdateError):
    """The command line does not fit (no dataset named, a scale that is not LO-HI)."""


@dataclass
class UpdateResult:
    dataset: str
    rows: int = 0
    changed: int = 0                              # samples whose text, labels or metadata changed
    run: str | None = None
    rubrics: dict = field(default_factory=dict)   # name -> {scores, no_value, scale, observed}
    metadata_columns: list = field(default_factory=list)
    files: list = field(default_factory=list)
    kept_store_text: int = 0                      # the file held the exported text, the store a later edit: kept
    not_applied: dict = field(default_factory=dict)   # label/metadata column -> rows differing (copies, see doc)


# --- which files, which columns ---------------------------------------------------------------------------

def carries_ids(paths: list[Path]) -> bool:
    """Whether these import inputs are shards coming back (Parquet/JSONL with a sample_id column): all or none."""
    flags = []
    for p in paths:
        if str(p) == "-" or kind(p) is None or not p.is_file():
            flags.append(False)
            continue
        try:
            flags.append(ID_COLUMN in columns_of(p))
        except ShardError:
            flags.append(False)      # the ordinary import reports what is wrong with the file
    if any(flags) and not all(flags):
        with_ids = next(p for p, f in zip(paths, flags) if f)
        without = next(p for p, f in zip(paths, flags) if not f)
        raise UpdateRefused(f"{with_ids} carries sample_id (it updates samples) but {without} does not (it would add "
                            f"new ones); import them separately")
    return bool(flags) and all(flags)


def parse_scales(specs) -> dict:
    """--score-scale values: "COLUMN=LO-HI" or a bare "LO-HI" (key None)."""
    out: dict = {}
    for spec in specs or ():
        m = SCALE_RE.fullmatch(spec.strip())
        if not m:
            raise UpdateRefused(f"--score-scale {spec!r}: expected COLUMN=LO-HI such as quality=0-1 (or LO-HI)")
        lo, hi = float(m["lo"]), float(m["hi"])
        if lo >= hi:
            raise UpdateRefused(f"--score-scale {spec!r}: not a range (LO must be below HI)")
        col = m["col"].strip() if m["col"] else None
        if col in out:
            raise UpdateRefused(f"--score-scale: {col or 'a bare LO-HI'} given twice")
        out[col] = (lo, hi)
    return out


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class _Columns:
    """What each column of the input is, decided once per column (Parquet: from the schema; JSONL: from the first
    value that is not null) and held to for every row."""

    def __init__(self, conn, did: int, scales: dict, res: UpdateResult):
        self.kinds: dict[str, str] = {}          # column -> known | score | meta | empty
        self.first: dict[str, str] = {}          # where the kind was decided (for messages)
        self.scales = scales
        self.scale: dict[str, tuple] = {}
        self.present = scores.rubrics(conn, did)
        self.res = res
        self.conn = conn
        self.checked: dict = {}     # see update_samples
        self.applying = False       # the apply pass (else the check pass)

    def exported_hash(self, sid: int) -> int | None:
        """The content hash of the sample's latest published export (snapshot_items' sample index)."""
        row = self.conn.execute("SELECT i.content_hash FROM snapshot_items i JOIN snapshots s ON s.id = i.snapshot_id "
                                "WHERE i.sample_id = ? ORDER BY i.snapshot_id DESC LIMIT 1", (sid,)).fetchone()
        return row[0] if row else None

    def decide(self, col: str, value_kind: str | None, at: str) -> str:
        """value_kind: "number" | "other" | None (only nulls so far)."""
        k = self.kinds.get(col)
        if k is not None and k != "empty":
            if k == "score" and value_kind == "other" or k == "meta" and value_kind == "number":
                raise UpdateError(f"{at}: column {col!r} mixes numbers and other values (numbers: a rubric, "
                                  f"others: metadata; it was decided at {self.first[col]}); make it one type")
            return k
        if col in TEXT_COLUMNS or col in LABEL_FIELDS or col in ("messages", "metadata"):
            k = "known"
        elif col in REFUSED:
            raise UpdateError(f"{at}: column {col!r} is not a field of the samples (another export layout's column, "
                              f"or an engine's copy of the text); leave it out of the engine's output")
        elif value_kind is None:
            k = "empty"
        elif value_kind == "number":
            k = self._score_column(col, at)
        else:
            k = "meta"
            self.res.metadata_columns.append(col)
        self.kinds[col] = k
        self.first.setdefault(col, at)
        return k

    def _score_column(self, col: str, at: str) -> str:
        if not scores.RUBRIC_RE.fullmatch(col):
            raise UpdateError(f"{at}: column {col!r} holds numbers, so it becomes a rubric, but a rubric name is "
                              f"lowercase letters, digits, _ and - (e.g. quality_score); rename the column")
        scale = self.scales.get(col)
        if scale is None and None in self.scales:
            if any(c for c, k in self.kinds.items() if k == "score"):
                raise UpdateRefused(f"--score-scale: a bare LO-HI fits one numeric column, and {col!r} is a second; "
                                    f"give COLUMN=LO-HI for each")
            scale = self.scales[None]
        if scale is None:
            raise UpdateRefused(f"{at}: column {col!r} holds numbers and becomes the rubric {col!r}; state the scale "
                                f"its scores are on with --score-scale {col}=LO-HI (e.g. 0-1) - the observed "
                                f"values are not a scale")
        have = self.present.get(col)
        if have is not None and tuple(have) != tuple(scale):
            raise UpdateRefused(f"{at}: rubric {col!r} is on the scale {have[0]:g}-{have[1]:g} in this dataset; the "
                                f"scale given is {scale[0]:g}-{scale[1]:g}")
        self.scale[col] = scale
        self.res.rubrics[col] = {"scores": 0, "no_value": 0, "scale": list(scale), "observed": None}
        return "score"


# --- the update ------------------------------------------------------------------------------------------

def _records(path: Path, cols: _Columns):
    """(position, record) batches of one file, each column's kind decided."""
    if kind(path) == "parquet":
        import pyarrow as pa
        schema = parquet_schema(path)
        for f in schema:
            if f.name == ID_COLUMN:
                if not pa.types.is_integer(f.type):
                    raise UpdateError(f"{where(path, field=ID_COLUMN)}: the column holds {f.type}, not whole numbers")
                continue
            t = f.type
            vk = None if pa.types.is_null(t) else "number" if (pa.types.is_integer(t) or pa.types.is_floating(t)) \
                else "other"
            cols.decide(f.name, vk, where(path, field=f.name))
        for first, batch in parquet_batches(path):
            recs = batch.to_pylist()
            for lo in range(0, len(recs), FETCH):      # FETCH rows at a time: one short transaction each
                yield [(first + i, rec) for i, rec in enumerate(recs[lo:lo + FETCH], lo)]
        return
    batch = []
    for n, rec in jsonl_records(path):
        batch.append((n, rec))
        if len(batch) >= FETCH:
            yield batch
            batch = []
    if batch:
        yield batch


def update_samples(conn: sqlite3.Connection, paths: list[Path], dataset: str | None, score_scale=None
                   ) -> UpdateResult:
    if not dataset:
        raise UpdateRefused("these files carry sample_id, so they update samples of an existing dataset: name it "
                            "with --dataset")
    try:
        did = _dataset_id(conn, dataset)
    except KeyError as e:
        raise UpdateRefused(str(e.args[0])) from None
    scales = parse_scales(score_scale)
    recover(conn)            # an earlier import killed midway is undone before this one reads the samples
    checked: dict = {}       # sample id -> its content hash when checked, for the rows whose text the input changes
    check = UpdateResult(dataset)
    try:         # every row checked, nothing written, no write lock held
        _update(conn, did, paths, scales, check, None, checked)
    except ShardError as e:
        raise UpdateError(str(e)) from None
    res = UpdateResult(dataset, files=[str(p) for p in paths])
    bulk = None
    try:
        with ShortTransactions(conn) as tx:
            ts = now()
            bulk = conn.execute("INSERT INTO bulk_runs (kind, pid, info, started_at) VALUES ('update', ?, ?, ?)",
                                (os.getpid(), orjson.dumps({"judges": [_judge(p) for p in paths]}).decode(),
                                 ts)).lastrowid
            tx.next(force=True)        # the mark is in before the first change
            _update(conn, did, paths, scales, res, _Apply(tx, bulk, ts, list(check.rubrics)), checked)
            conn.execute("DELETE FROM bulk_runs WHERE id = ?", (bulk,))      # done: the import is complete
    except BaseException as e:
        if bulk is not None and conn.execute("SELECT 1 FROM bulk_runs WHERE id = ?", (bulk,)).fetchone():
            roll_back(conn, bulk)
        if isinstance(e, ShardError):
            raise UpdateError(str(e) + " (nothing was imported)") from None
        raise
    try:
        _drop_saved_scores(conn, bulk)
    except sqlite3.Error as e:     # the import is complete; the next recover() drops them
        log.warning("the scores import %s replaced are dropped later: %s", bulk, e)
    return res


@dataclass
class _Apply:
    """The apply pass: its transactions, its bulk_runs row, the time its scores carry."""
    tx: ShortTransactions
    bulk: int
    ts: str
    rubrics: list       # the input's score columns (found by the check pass)


def _judge(path) -> str:
    return f"import {path}"


def _update(conn, did: int, paths: list[Path], scales: dict, res: UpdateResult, apply: _Apply | None,
            checked: dict) -> None:
    """One pass over the input: with `apply` None every row is checked and nothing written; else the rows are
    written, a short transaction per batch."""
    top = conn.execute("SELECT coalesce(max(id), 0) FROM samples").fetchone()[0]
    in_ds = bytearray(top + 1)
    for (i,) in conn.execute("SELECT id FROM samples WHERE dataset_id = ?", (did,)):
        in_ds[i] = 1
    seen = bytearray(top + 1)
    cols = _Columns(conn, did, scales, res)
    cols.checked, cols.applying = checked, apply is not None
    for path in paths:
        row_pos = kind(path) == "parquet"
        for batch in _records(path, cols):
            ids = []
            for pos, rec in batch:
                sid = rec.get(ID_COLUMN)
                at = where(path, pos, ID_COLUMN, row_pos)
                if sid is None:
                    raise UpdateError(f"{at}: " + ("missing" if ID_COLUMN not in rec else "empty (null)"))
                if isinstance(sid, bool) or not isinstance(sid, int):
                    raise UpdateError(f"{at}: {sid!r} is not a sample id (a whole number)")
                if not (0 < sid <= top and in_ds[sid]):
                    exists = 0 < sid <= top and conn.execute("SELECT 1 FROM samples WHERE id = ?", (sid,)).fetchone()
                    raise UpdateError(f"{at}: " + (f"sample {sid} is not in dataset {res.dataset!r}" if exists
                                                   else f"no sample with id {sid}") + " (nothing was imported)")
                if seen[sid]:
                    raise UpdateError(f"{at}: sample {sid} appears twice in the input (nothing was imported)")
                seen[sid] = 1
                ids.append(sid)
            stored = {}
            # only score columns (the usual way back): the samples themselves need not be read
            names = set().union(*(rec.keys() for _, rec in batch)) - {ID_COLUMN}
            if any(cols.kinds.get(c) != "score" for c in names):
                for i in range(0, len(ids), FETCH):
                    chunk = ids[i:i + FETCH]
                    for r in conn.execute(f"SELECT {', '.join(SAMPLE_COLUMNS)} FROM samples WHERE id IN "
                                          f"({','.join('?' * len(chunk))})", chunk):
                        stored[r[0]] = decode_sample(r)
            recorded: dict[str, list] = {}
            stale: list = []
            if apply is not None:     # before the text changes mark them stale
                for rubric in apply.rubrics:
                    _save_scores(conn, apply.bulk, rubric, ids)
            for pos, rec in batch:
                sid = rec[ID_COLUMN]
                _apply(conn, path, pos, row_pos, rec, stored.get(sid) or {"id": sid}, cols, res, recorded, stale,
                       apply)
                res.rows += 1
            if apply is None:
                continue
            for col, items in recorded.items():
                scores.record_many(conn, col, cols.scale[col], items, judge=_judge(path), ts=apply.ts)
            # scored on the exported text, not on the edit made since: stale, as an edit makes them
            conn.executemany("UPDATE sample_scores SET content_hash = ?, stale = 1 WHERE sample_id = ? AND rubric = ?",
                             stale)
            apply.tx.next()
    unused = [c for c in scales if c is not None and c not in res.rubrics]
    if unused:   # a misspelt column would otherwise leave its scores unrecorded without a word
        raise UpdateRefused(f"--score-scale {unused[0]}=...: the input has no numeric column {unused[0]!r} "
                            f"(nothing was imported)")


def _value_kind(v) -> str | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return "number" if _is_number(v) else "other"


def _apply(conn, path, pos, row_pos, rec: dict, s: dict, cols: _Columns, res: UpdateResult, recorded: dict,
           stale: list, apply: _Apply | None) -> None:
    """One row: its text changes written now; its scores added to `recorded` ({rubric: [(id, score)]}) and, when
    they were given to text the store has changed since, to `stale`."""
    changed: dict = {}
    meta = dict(s["metadata"]) if isinstance(s.get("metadata"), dict) else s.get("metadata")
    meta_changed = False
    for col, v in rec.items():
        if col == ID_COLUMN:
            continue
        at = where(path, pos, col, row_pos)
        k = cols.decide(col, _value_kind(v), at)
        if v is None:
            continue
        if k == "score":
            if isinstance(v, float) and math.isnan(v):
                res.rubrics[col]["no_value"] += 1
                continue
            lo, hi = cols.scale[col]
            if not lo <= v <= hi:
                raise UpdateError(f"{at}: {v!r} is off the scale {lo:g}-{hi:g} given for rubric {col!r}")
            obs = res.rubrics[col]["observed"]
            res.rubrics[col]["observed"] = [min(obs[0], v), max(obs[1], v)] if obs else [v, v]
            res.rubrics[col]["scores"] += 1
            continue     # recorded after the text changes: a score is on the text the engine saw
        if k == "meta":
            if not isinstance(meta, dict):
                meta = {} if meta is None else {"metadata": meta}
            if meta.get(col) != v:
                meta[col] = v
                meta_changed = True
            continue
        if col in TEXT_COLUMNS:
            if not isinstance(v, str):
                raise UpdateError(f"{at}: text expected, got {type(v).__name__}")
            f = TEXT_COLUMNS[col]
            if f in changed and changed[f] != v:
                raise UpdateError(f"{at}: output and response disagree; give one of them")
            if v != (s.get(f) or ("" if f != "rejected" else None)):
                changed[f] = v
        elif col in LABEL_FIELDS or col == "metadata":
            # the export's copies: an engine passes them through, and a label or metadata a task set since the
            # export would be reverted by them; differences are counted and reported, never applied
            stored = s.get(col)
            if col == "metadata":
                v = _json_value(v, at)
            if v != stored:
                res.not_applied[col] = res.not_applied.get(col, 0) + 1
        elif col == "messages":
            msgs = _json_value(v, at)
            if msgs != s.get("messages"):
                try:
                    _check_turn_edit(s.get("messages"), msgs)
                except ValueError as e:
                    raise UpdateError(f"{at}: {e}") from None
                changed["messages"] = msgs
    seen_text = None     # the text the engine saw, when it is not the store's (an edit since the export)
    if changed and not cols.applying:
        cols.checked[s["id"]] = s["content_hash"]
    if changed and cols.applying and s["content_hash"] != cols.checked.get(s["id"], s["content_hash"]):
        raise UpdateError(f"{where(path, pos, None, row_pos)}: sample {s['id']} was edited in the store while this "
                          f"import ran, and the file changes its text too; resolve it by hand (nothing was imported)")
    if changed and cols.applying and s["id"] not in cols.checked:
        # the text was the store's when checked: a curator edited it since (during the import); theirs stays
        res.kept_store_text += 1
        changed, seen_text = {}, hash_of({**s, **changed})
    elif changed and not _engine_changed(conn, s, changed, cols, res, where(path, pos, None, row_pos)):
        changed, seen_text = {}, cols.exported_hash(s["id"])
    if meta_changed:
        changed["metadata"] = meta
    if changed and apply is not None:
        _write(conn, s, changed, res, path, apply)
    for col, v in rec.items():
        if cols.kinds.get(col) == "score" and v is not None and not (isinstance(v, float) and math.isnan(v)):
            recorded.setdefault(col, []).append((s["id"], v))
            if seen_text is not None:
                stale.append((seen_text, s["id"], col))


def _engine_changed(conn, s: dict, changed: dict, cols: "_Columns", res: UpdateResult, at: str) -> bool:
    """The file's text differs from the store's: did the engine change it, or was the sample edited in the store
    after the export (the file then holds the exported text, which must not revert the edit)? Decided on the
    content hash the latest export of the sample recorded (snapshot_items)."""
    exported = cols.exported_hash(s["id"])
    if exported is None or s["content_hash"] == exported:
        return True
    if hash_of({**s, **changed}) == exported:
        res.kept_store_text += 1
        return False
    raise UpdateError(f"{at}: sample {s['id']} was edited in the store after it was exported, and the engine changed "
                      f"its text too ({', '.join(sorted(changed))}); resolve it by hand (nothing was imported)")


def _json_value(v, at: str):
    if isinstance(v, str):
        try:
            return orjson.loads(v)
        except orjson.JSONDecodeError as e:
            raise UpdateError(f"{at}: not valid JSON ({e})") from None
    return v


def _write(conn, s: dict, changed: dict, res: UpdateResult, path, apply: _Apply) -> None:
    """One sample's update, as an edit writes it (mirrored turns follow their field, and the reverse), logged."""
    if "messages" in changed:
        for f, i in mirror_turns({**s, **changed}).items():
            if changed["messages"][i]["content"] != (s["messages"][i]["content"] if s.get("messages") else None):
                changed.setdefault(f, changed["messages"][i]["content"])
    else:
        msgs = _mirrored_messages({**s, **changed}, changed)
        if msgs is not None:
            changed["messages"] = msgs
    values = dict(changed)
    if "metadata" in values:
        values["metadata"] = orjson.dumps(values["metadata"]).decode()
    before = {k: s.get(k) for k in values}
    if before.get("metadata") is not None:
        before["metadata"] = orjson.dumps(before["metadata"]).decode()
    write_text(conn, s["id"], values)
    if res.run is None:
        res.run = new_run(conn, "update")
        conn.execute("UPDATE bulk_runs SET run = ? WHERE id = ?", (res.run, apply.bulk))
    conn.execute("INSERT INTO decisions (sample_id, action, before, after, reason, session, created_at) "
                 "VALUES (?, 'update', ?, ?, ?, ?, ?)",
                 (s["id"], orjson.dumps(before).decode(), orjson.dumps(values).decode(), f"import {path}", res.run,
                  now()))
    res.changed += 1


# --- undoing an import that did not finish ----------------------------------------------------------------

CHUNK = 500


def _save_scores(conn, bulk: int, rubric: str, ids) -> None:
    """Inside the apply pass: the scores these samples have on the rubric before it (the first import of a score
    column finds none: nothing is saved)."""
    conn.executemany(
        "INSERT OR IGNORE INTO bulk_run_scores (bulk_id, sample_id, rubric, score, scale_min, scale_max, judge, "
        "template_version, job_id, content_hash, stale, created_at) SELECT ?, sample_id, rubric, score, scale_min, "
        "scale_max, judge, template_version, job_id, content_hash, stale, created_at FROM sample_scores "
        "WHERE sample_id = ? AND rubric = ?", ((bulk, sid, rubric) for sid in ids))


def _drop_saved_scores(conn, bulk: int) -> None:
    with ShortTransactions(conn) as tx:
        while conn.execute("DELETE FROM bulk_run_scores WHERE bulk_id = ? AND (sample_id, rubric) IN (SELECT "
                           "sample_id, rubric FROM bulk_run_scores WHERE bulk_id = ? LIMIT ?)",
                           (bulk, bulk, CHUNK * 4)).rowcount:
            tx.next()


def recover(conn: sqlite3.Connection) -> int:
    """Undo the shard imports whose process died midway. Returns how many were undone."""
    try:
        orphans = conn.execute("SELECT 1 FROM bulk_run_scores WHERE bulk_id NOT IN (SELECT id FROM bulk_runs) "
                               "LIMIT 1").fetchone()
    except sqlite3.OperationalError:      # a store from before the migration, opened read-only
        return 0
    dead = claim_dead(conn, "update")
    for bulk in dead:
        roll_back(conn, bulk)
    if orphans:   # a finished import killed while it dropped the scores it had kept
        for (bulk,) in conn.execute("SELECT DISTINCT bulk_id FROM bulk_run_scores WHERE bulk_id NOT IN "
                                    "(SELECT id FROM bulk_runs)").fetchall():
            _drop_saved_scores(conn, bulk)
    return len(dead)


def roll_back(conn: sqlite3.Connection, bulk: int) -> None:
    """Undo an unfinished import (outside any transaction, in short ones): its text changes still as it left them
    (an 'undo' decision each, as `clean --undo` writes), its scores still as it left them (the replaced ones come
    back), then its mark."""
    run, info, ts = conn.execute("SELECT run, info, started_at FROM bulk_runs WHERE id = ?", (bulk,)).fetchone()
    judges = set(orjson.loads(info)["judges"]) if info else set()
    with ShortTransactions(conn) as tx:
        if run is not None:
            undone = {r[0] for r in conn.execute("SELECT undoes FROM decisions WHERE session = ? AND action = 'undo'",
                                                 (run,))}
            last = None
            while True:
                rows = conn.execute(
                    "SELECT id, sample_id, before, after FROM decisions WHERE session = ? AND action = 'update' "
                    + ("AND id < ? " if last is not None else "") + "ORDER BY id DESC LIMIT ?",
                    (run, last, CHUNK) if last is not None else (run, CHUNK)).fetchall()
                if not rows:
                    break
                for did, sid, before_s, after_s in rows:
                    if did in undone:
                        continue
                    before, after = orjson.loads(before_s), orjson.loads(after_s)
                    current = current_fields(conn, sid, after)
                    if current != after:
                        continue        # edited since: the curator's text stays
                    write_text(conn, sid, before)
                    conn.execute("INSERT INTO decisions (sample_id, action, before, after, undoes, session, "
                                 "created_at) VALUES (?, 'undo', ?, ?, ?, ?, ?)",
                                 (sid, orjson.dumps(current).decode(), before_s, did, run, now()))
                last = rows[-1][0]
                tx.next()
        # its scores (judge and time its own; a score given since by anyone else stays) go: one scan, in chunks
        marks = (*sorted(judges), ts)
        same = f"judge IN ({','.join('?' * len(judges))}) AND created_at = ?"
        last = 0
        while True:
            rows = conn.execute(f"SELECT sample_id, rubric FROM sample_scores WHERE sample_id >= ? AND {same} "
                                f"ORDER BY sample_id LIMIT ?", (last, *marks, CHUNK)).fetchall()
            if not rows:
                break
            conn.executemany("DELETE FROM sample_scores WHERE sample_id = ? AND rubric = ?", rows)
            last = rows[-1][0]       # >=: its other rubrics may be past the LIMIT (the deleted ones are gone)
            tx.next()
        # and the ones they replaced come back, unless the sample was scored again since
        key = (0, "")
        while True:
            rows = conn.execute(
                "SELECT sample_id, rubric, score, scale_min, scale_max, judge, template_version, job_id, "
                "content_hash, stale, created_at FROM bulk_run_scores WHERE bulk_id = ? AND (sample_id, rubric) > "
                "(?, ?) ORDER BY sample_id, rubric LIMIT ?", (bulk, *key, CHUNK)).fetchall()
            if not rows:
                break
            conn.executemany(   # an insert, not a replace: the maintained score counts follow it by triggers
                "INSERT INTO sample_scores (sample_id, rubric, score, scale_min, scale_max, judge, template_version, "
                "job_id, content_hash, stale, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (sample_id, rubric) DO NOTHING", rows)
            key = (rows[-1][0], rows[-1][1])
            tx.next()
        conn.execute("DELETE FROM bulk_runs WHERE id = ?", (bulk,))
    _drop_saved_scores(conn, bulk)
