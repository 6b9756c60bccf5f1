"""Export samples in the formats trainers read; every export is a snapshot with a provenance manifest.

Targets:
  FILE            JSONL (a JSON array if the name ends in .json; gzip if it ends in .gz; Parquet for `parquet`), with
                  the manifest beside it as `.FILE.manifest.json` (hidden: `load_dataset` never reads it, where a
                  visible name - even `_FILE...` - is read as data once it holds a split name such as "train")
  DIR             (an existing directory, or a name without extension) the data under DIR/data/, a README.md dataset
                  card whose `configs:` make `load_dataset(DIR)` read exactly the data, and DIR/.manifest.json
  - / a pipe      written in place (no manifest file: the manifest is kept with the snapshot in the store)
Nothing is replaced without `force` and the store never (safe_output). The data and every file beside it are written
to temp files and renamed into place only once all are complete and the snapshot is recorded in the same
transaction: a failure leaves the old files, no snapshot and the store as it was. The snapshot's items are written
before that transaction, in short ones (workbench/snapshot_write.py), so other writers never wait long behind an
export. The selected rows are read from the store once (export_shapes.profile_and_spool): what provenance needs of
them is collected as they are written (provenance.Rows).
"""
from __future__ import annotations

import os
import sqlite3
import tempfile
from array import array
from contextlib import contextmanager
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from . import __version__, export_sidecars as sidecars, provenance, safe_output, scores, snapshot_write
from .export_shapes import (CONVERSATIONAL_CHOICE, EXPORT_FORMATS, NATIVE, SKIP_REASONS, make_shaper,
                            parquet_fields, profile_and_spool, spooled)
from .filters import FilterError, check_scores, filter_sql
from .origin_tags import origin_kind, tag as tag_origin
from .safe_output import OutputError
from .store import IN_A_DATASET, STATUSES, dataset_id, now, transaction

__all__ = ["CONVERSATIONAL_CHOICE", "EXPORT_FORMATS", "ExportFailed", "ExportResult", "describe_counts", "export",
           "parse_statuses"]

PARQUET_BATCH = 5000
DEFAULT_STATUSES = ("pending", "accepted")           # every sample that is not rejected
KTO_STATUSES = ("accepted", "rejected")              # KTO's labels are exactly the curator's decisions
BALANCE_DIMS = ("dataset", "task_type", "domain", "difficulty", "language")


class ExportFailed(Exception):
    """The export was refused or failed; nothing was replaced and no snapshot recorded. `counts` says what the
    selection held when the refusal is about the rows (zero rows)."""

    def __init__(self, message: str, counts: dict | None = None):
        super().__init__(message)
        self.counts = counts


@dataclass
class ExportResult:
    path: Path
    format: str
    rows: int
    skipped: int
    sha256: str
    manifest_path: Path | None
    snapshot_id: int
    counts: dict = field(default_factory=dict)
    files: list = field(default_factory=list)          # every file written (data, manifest, card, ...)
    axolotl: str | None = None


# --- what goes out -----------------------------------------------------------------------------------------

def parse_statuses(text, fmt: str | None = None) -> tuple[str, ...]:
    """`--status`: a comma list of statuses or `all`; none given: every status but rejected (KTO: the decided)."""
    if text is None:
        return KTO_STATUSES if fmt == "kto" else DEFAULT_STATUSES
    parts = text if isinstance(text, (list, tuple)) else str(text).split(",")
    parts = [p.strip() for p in parts]
    if parts == ["all"]:
        return STATUSES
    bad = [p for p in parts if p not in STATUSES]
    if bad or not parts:
        raise ExportFailed(f"--status {text!r}: {bad[0]!r} is not a status; give a comma list of "
                           f"{', '.join(STATUSES)}, or all" if bad else f"--status {text!r}: empty")
    return tuple(s for s in STATUSES if s in parts)


@dataclass
class Selection:
    where: str
    params: tuple
    filters: dict
    counts: dict


@contextmanager
def one_snapshot(conn: sqlite3.Connection):
    """The rows read in batches inside as one read snapshot: a bulk writer committing meanwhile is in all of them or
    none (batches each read alone saw part of a dataset being deleted)."""
    own = not conn.in_transaction
    if own:
        conn.execute("BEGIN")
    try:
        yield
    finally:
        if own:
            conn.execute("COMMIT")


def select(conn: sqlite3.Connection, dataset=None, statuses=DEFAULT_STATUSES, min_score=None, max_score=None,
           task_type=None, selection=None, include_stale: bool = False) -> Selection:
    """The WHERE clause, and how many rows the scope holds and each filter (in order) excluded.

    min_score / max_score name the rubric: 'curate=4.5', or a list of such (workbench/scores.py); a bare number,
    a rubric the scope has no score on and a bound off the rubric's scale are refused."""
    scope, params, filters = [], [], {}
    did = None
    if dataset:
        try:
            did = dataset_id(conn, dataset)
        except KeyError as e:
            raise ExportFailed(str(e.args[0])) from None
        scope.append("dataset_id = ?"), params.append(did)
        filters["dataset"] = dataset
    scope.append(IN_A_DATASET)      # a dataset whose delete begins after this: none of its rows, never a part
    if selection:
        if not conn.execute("SELECT 1 FROM selections WHERE name = ? LIMIT 1", (selection,)).fetchone():
            raise ExportFailed(f"no selection named {selection!r}")
        scope.append("id IN (SELECT sample_id FROM selections WHERE name = ?)"), params.append(selection)
        filters["selection"] = selection
    where = " AND ".join(scope) or "1"
    by_status = {s: 0 for s in STATUSES}
    for status, n in conn.execute(f"SELECT status, count(*) FROM samples WHERE {where} GROUP BY status", params):
        by_status[status] = n
    in_scope = sum(by_status.values())
    filters["status"] = ",".join(statuses)
    kept = sum(by_status[s] for s in statuses)
    excluded = {"status": in_scope - kept}
    where += f" AND status IN ({','.join('?' * len(statuses))})"
    params += list(statuses)
    # the score and label filters go through the filter code jobs and the TUI share
    try:
        check_scores(conn, did, {"min_score": min_score, "max_score": max_score, "include_stale": include_stale})
    except FilterError as e:
        raise ExportFailed(str(e)) from None
    if include_stale and (min_score is not None or max_score is not None):
        filters["include_stale"] = True
    unscored: dict[str, int] = {}    # of those a score filter excluded: how many have no score on its rubric
    for key, value in (("min_score", min_score), ("max_score", max_score), ("task_type", task_type)):
        if value is None:
            continue
        clause, args = filter_sql(None, {key: value, "include_stale": include_stale})
        before, before_args = where, list(params)
        where += f" AND {clause}"
        params += args
        filters[key] = value    # as given: the shared filter code reads it (a score filter may name a rubric)
        n = conn.execute(f"SELECT count(*) FROM samples WHERE {where}", params).fetchone()[0] if kept else 0
        if key != "task_type" and kept > n:
            # a score filter also drops every sample with no score on the rubric: say how many of the excluded
            # were never scored, so "excluded by min_score" is not read as "scored low"
            scored, sargs = scores.build(value, None, include_stale).unbounded().sql()
            has = conn.execute(f"SELECT count(*) FROM samples WHERE {before} AND {scored}",
                               [*before_args, *sargs]).fetchone()[0]
            if kept - has:
                unscored[key] = kept - has
        excluded[key] = kept - n
        kept = n
    counts = {"in_scope": in_scope, "in_scope_by_status": by_status, "selected": kept,
              "excluded_by_filter": excluded, "excluded_unscored": unscored}
    return Selection(where, tuple(params), filters, counts)


# --- where it goes -------------------------------------------------------------------------------------------

@dataclass
class Layout:
    data: safe_output.Output
    directory: Path | None = None
    manifest: safe_output.Output | None = None
    card: safe_output.Output | None = None
    dataset_info: safe_output.Output | None = None
    axolotl: safe_output.Output | None = None
    entry_name: str = ""
    as_array: bool = False
    force: bool = False

    def outputs(self) -> list[safe_output.Output]:
        return [o for o in (self.data, self.manifest, self.card, self.dataset_info, self.axolotl) if o is not None]


def _is_directory_target(text: str) -> bool:
    if text == "-" or safe_output.is_stream(text):
        return False
    p = Path(text)
    if p.is_dir():
        return True
    return not os.path.lexists(p) and p.suffix == ""


def plan_layout(conn, out_path, fmt: str, force: bool) -> Layout:
    store = safe_output.store_files(conn)
    text = os.fspath(out_path)
    ext = ".parquet" if fmt == "parquet" else ".jsonl"
    try:
        if text != "-":
            safe_output.check_name(Path(os.path.abspath(text)))
        if _is_directory_target(text):
            d = Path(os.path.realpath(text))
            safe_output.refuse_store(d, store)
            if d.is_dir() and any(d.iterdir()) and not force:
                raise OutputError(f"{text}: the directory is not empty; pass --force to write the export into it "
                                  f"(files of ours are replaced, others are left alone)")
            lay = Layout(safe_output.plan(d / "data" / f"train{ext}", force=force, store=store), directory=d,
                         force=force)
            lay.manifest = safe_output.plan(d / ".manifest.json", force=force, store=store)
            lay.card = safe_output.plan(d / "README.md", force=force, store=store)
            lay.entry_name = d.name
            side_dir, side_stem = d, None
        else:
            data = safe_output.plan(text, force=force, store=store)
            data.binary = fmt == "parquet"
            lay = Layout(data, force=force)
            name = data.final.name.lower()
            lay.as_array = name.endswith(".json") or name.endswith(".json.gz")
            if fmt == "parquet" and data.gz:
                raise OutputError(f"{text}: Parquet compresses itself; drop the .gz")
            if not data.stream and (fmt == "parquet") != name.endswith(".parquet"):
                raise OutputError(f"{text}: a {fmt} export needs a "
                                  + ("name ending in .parquet" if fmt == "parquet" else
                                     ".jsonl or .json name (.gz to compress)") + ", so readers take it for what it is")
            if data.stream:
                if fmt in ("llama-factory", "axolotl"):
                    raise OutputError(f"{text}: a {fmt} export writes a config file beside the data; give a file or "
                                      f"directory name, not a stream")
                return lay
            side_dir, side_stem = data.final.parent, data.final.name
            lay.manifest = safe_output.plan(side_dir / f".{side_stem}.manifest.json", force=force, store=store)
            stem = side_stem[:-3] if side_stem.lower().endswith(".gz") else side_stem
            lay.entry_name = stem.rsplit(".", 1)[0] if "." in stem else stem    # "sft.v2.jsonl" -> "sft.v2"
        if fmt == "llama-factory":
            if lay.data.gz:
                raise OutputError(f"{text}: LLaMA-Factory reads .json/.jsonl files, not .gz")
            lay.dataset_info = safe_output.plan(side_dir / "dataset_info.json", force=True, store=store)
            # refuse an unreadable file or a taken entry name now, before any data is written
            sidecars.merge_dataset_info(lay.dataset_info.final, lay.entry_name, {}, force)
        if fmt == "axolotl":
            name = "axolotl.yaml" if side_stem is None else f"{side_stem}.axolotl.yaml"
            lay.axolotl = safe_output.plan(side_dir / name, force=force, store=store)
        return lay
    except OutputError as e:
        raise ExportFailed(str(e)) from None
    except OSError as e:   # inspecting the path failed (a loop of symlinks, a permission)
        raise ExportFailed(safe_output.describe_error(text, e)) from None


# --- writing -------------------------------------------------------------------------------------------------

def export(conn: sqlite3.Connection, out_path, fmt: str, dataset=None, status=None, min_score=None,
           max_score=None, task_type=None, selection=None, name: str | None = None, *, force: bool = False,
           conversational: bool = False, with_ids: bool = False, include_stale: bool = False,
           origin_tags: dict | None = None) -> ExportResult:
    """`origin_tags` ({seed, augmented} texts, see origin_tags.py): each row's system prompt starts with its tag."""
    if fmt not in EXPORT_FORMATS:
        raise ExportFailed(f"unknown export format {fmt!r}; one of {', '.join(EXPORT_FORMATS)}")
    if conversational and fmt not in CONVERSATIONAL_CHOICE:
        raise ExportFailed(f"--conversational applies to {', '.join(CONVERSATIONAL_CHOICE)}; {fmt} has one layout")
    sel = select(conn, dataset, parse_statuses(status, fmt), min_score, max_score, task_type, selection,
                 include_stale)
    lay = plan_layout(conn, out_path, fmt, force)
    # the profile (which columns every row gets) must be known before the first row is written (Parquet declares
    # its schema up front; JSONL rows all carry the same keys): it is taken in the same read of the store as the
    # rows, which wait in an unnamed temp file (gone with the process, whatever happens) to be written
    try:
        spool = tempfile.TemporaryFile(prefix=safe_output.TEMP_PREFIX, dir=_spool_dir(lay))
    except OSError as e:
        raise ExportFailed(safe_output.describe_error(lay.data.path, e)) from None
    try:
        try:
            with one_snapshot(conn):
                prof = profile_and_spool(conn, sel.where, sel.params, fmt in NATIVE, spool)
        except OSError as e:     # the temp file beside the export: a full disk
            raise ExportFailed(safe_output.describe_error(lay.data.path, e)) from None
        if origin_tags is not None:
            prof.has_system = True           # every row gets a tag in its system prompt
        tagged: Counter = Counter()
        counts = {"rows": 0, **sel.counts, "skipped_by_reason": {}, "skipped": 0, "skipped_no_rejected": 0,
                  "by_status": {}, "by_dataset": {}}
        if prof.rows == 0:
            raise ExportFailed("no rows to export: " + describe_counts(counts), counts)

        shaper = make_shaper(fmt, prof, conversational)
        ids, hashes = array("q"), array("q")  # 16 bytes a row: a million-row export stays small
        skipped: Counter = Counter()
        balance = {d: Counter() for d in BALANCE_DIMS}
        templates: Counter = Counter()
        names = dict(conn.execute("SELECT id, name FROM datasets"))
        columns: list = parquet_fields(with_ids) if fmt == "parquet" else []
        lineage = provenance.Rows()     # collected in the data pass: the rows are not read again for the manifest

        def rows():
            for s in spooled(spool):
                if origin_tags is not None:
                    tagged[origin_kind(s)] += 1
                    s = tag_origin(s, origin_tags)
                row = shaper(s)
                if isinstance(row, str):
                    skipped[row] += 1
                    continue
                if with_ids:
                    row["sample_id"] = s["id"]
                if not columns:
                    columns.extend(row)
                elif fmt != "parquet" and list(row) != columns:   # one shape per file: a bug if it ever fires
                    raise AssertionError(f"sample {s['id']}: columns {list(row)} differ from the file's {columns}")
                ids.append(s["id"])
                hashes.append(s["content_hash"])
                lineage.add(s["id"], s["dataset_id"], s["import_id"], s["parent_id"], s["job_id"])
                balance["dataset"][names.get(s["dataset_id"], str(s["dataset_id"]))] += 1
                for d in BALANCE_DIMS[1:]:
                    if s.get(d) is not None:
                        balance[d][s[d]] += 1
                counts["by_status"][s["status"]] = counts["by_status"].get(s["status"], 0) + 1
                origin = s.get("origin") or {}
                if origin.get("template_version"):
                    templates[f"{origin.get('template', origin.get('task', '?'))}@{origin['template_version']}"] += 1
                yield row

        data = lay.data
        try:
            data.open()
        except OutputError as e:
            raise ExportFailed(str(e)) from None
        snap = None
        try:
            snap = snapshot_write.reserve(conn, data.tmp)
            try:
                if fmt == "parquet":
                    _write_parquet(data.writer, rows(), columns)
                else:
                    _write_json(data.writer, rows(), lay.as_array)
                digest = data.finish()
            except OSError as e:
                raise ExportFailed(safe_output.describe_error(data.path, e)) from None
            counts.update(rows=len(ids), skipped_by_reason={SKIP_REASONS[k]: n for k, n in skipped.items()},
                          skipped=sum(skipped.values()), skipped_no_rejected=skipped.get("no_rejected", 0),
                          by_dataset=dict(balance["dataset"]))
            if not ids:
                raise ExportFailed("no rows to export: " + describe_counts(counts), counts)
            manifest = _manifest(conn, lay, fmt, prof, conversational, with_ids, sel, counts, columns, digest,
                                 data.sink.bytes, templates, ids, lineage)
            if origin_tags is not None:
                manifest["origin_tags"] = {"tags": origin_tags, "rows": dict(tagged)}
            snapshot_write.write_items(conn, snap, ids, hashes)     # short transactions, before the snapshot exists
            _commit(conn, lay, manifest, snap, name, balance)
        except BaseException:
            for o in reversed(lay.outputs()):   # files beside the data first: then the directories made are empty
                o.discard()
            if snap is not None:
                snapshot_write.abandon(conn, snap)
            raise
        finally:
            provenance.drop_ids(conn)
        return ExportResult(data.final, fmt, len(ids), counts["skipped"], digest,
                            lay.manifest.final if lay.manifest else None, snap, counts,
                            [o.final for o in lay.outputs()],
                            manifest.get("axolotl_snippet"))
    finally:
        spool.close()


def _spool_dir(lay: Layout) -> str | None:
    """Beside the export (where its own bytes go), else the system's temp directory (a stream)."""
    if lay.data.stream:
        return None
    d = lay.data.final.parent
    while not d.is_dir() and d != d.parent:
        d = d.parent
    return str(d)


def _layout_name(fmt: str, prof, conversational: bool) -> str:
    if fmt in CONVERSATIONAL_CHOICE:
        return "conversational" if conversational else "standard"
    if fmt in ("llama-factory", "axolotl"):
        return "ranking" if prof.has_rejected else "sft"
    return fmt


def _manifest(conn, lay, fmt, prof, conversational, with_ids, sel, counts, columns, digest, nbytes,
              templates, ids, lineage) -> dict:
    provenance.load_ids(conn, ids, lineage)
    prov = provenance.export_provenance(conn, lineage)
    data = lay.data
    return {
        "file": str(data.final) if not data.stream else os.fspath(data.path),
        "format": fmt, "layout": _layout_name(fmt, prof, conversational),
        "compression": "gzip" if data.gz else None,
        "created_at": now(), "sha256": digest, "bytes": nbytes,
        "filters": sel.filters, "counts": counts, "columns": list(columns), "with_ids": with_ids,
        "licenses": prov["licenses"], "provenance": prov,
        "template_versions": dict(templates), "workbench_version": __version__,
        "manifest_name": lay.manifest.final.name if lay.manifest else None,
    }


def _commit(conn, lay: Layout, manifest: dict, snap: int, name, balance) -> None:
    """Publish the snapshot (its items are written), write the files beside the data, rename everything into
    place: one short transaction."""
    data = lay.data
    with transaction(conn):
        snapshot_write.publish(conn, snap, name, manifest)
        manifest["snapshot_id"] = snap
        data_rel = None
        if lay.directory is not None:
            data_rel = data.final.relative_to(lay.directory).as_posix()
        ranking = manifest["layout"] == "ranking"
        if lay.axolotl is not None:
            manifest["axolotl_snippet"] = sidecars.axolotl_snippet(str(data.final), ranking, data.gz, snap)
        if lay.dataset_info is not None:
            file_name = data_rel or data.final.name
            manifest["llama_factory_entry"] = {lay.entry_name: sidecars.llama_factory_entry(
                file_name, ranking, "system" in manifest["columns"])}
        text = orjson.dumps(manifest, option=orjson.OPT_INDENT_2).decode()
        conn.execute("UPDATE snapshots SET manifest = ? WHERE id = ?", (text, snap))
        try:
            if lay.manifest is not None:
                safe_output.write_small(lay.manifest, (text + "\n").encode())
            if lay.card is not None:
                tags = {"conversational": ["sft"], "standard": ["sft"], "ranking": ["dpo"]}.get(
                    manifest["layout"], ["sft"])
                if manifest["format"] == "preference":
                    tags = ["dpo"]
                elif manifest["format"] == "kto":
                    tags = ["kto"]
                card = sidecars.dataset_card(manifest, data_rel, lay.entry_name,
                                             {d: dict(c) for d, c in balance.items() if c and d != "dataset"}
                                             | {"dataset": dict(balance["dataset"])}, ["curation-workbench", *tags])
                safe_output.write_small(lay.card, card.encode())
            if lay.dataset_info is not None:
                merged = sidecars.merge_dataset_info(lay.dataset_info.final, lay.entry_name,
                                                     manifest["llama_factory_entry"][lay.entry_name],
                                                     force=lay.force)
                safe_output.write_small(lay.dataset_info, merged)
            if lay.axolotl is not None:
                safe_output.write_small(lay.axolotl, manifest["axolotl_snippet"].encode())
            for o in lay.outputs():
                o.commit()
        except OutputError as e:
            raise ExportFailed(str(e)) from None
        except OSError as e:
            raise ExportFailed(f"cannot put the export in place: {safe_output.describe_error(data.path, e)}") from None


def describe_counts(counts: dict) -> str:
    """One line: what the scope held, what each filter excluded, what the format could not carry."""
    parts = [f"{counts['in_scope']:,} in scope ("
             + ", ".join(f"{s} {n:,}" for s, n in counts["in_scope_by_status"].items()) + ")"]
    for k, n in counts["excluded_by_filter"].items():
        if n or k == "status":
            unscored = counts.get("excluded_unscored", {}).get(k)
            parts.append(f"{n:,} excluded by {k}" + (f" ({unscored:,} of them not scored on its rubric)"
                                                      if unscored else ""))
    for k, n in counts.get("skipped_by_reason", {}).items():
        parts.append(f"{n:,} skipped: {k}")
    return "; ".join(parts)


def _write_json(w, rows, as_array: bool) -> None:
    if as_array:
        w.write(b"[")
        first = True
        for row in rows:
            w.write(b"\n" if first else b",\n")
            w.write(orjson.dumps(row))
            first = False
        w.write(b"\n]\n")
    else:
        for row in rows:
            w.write(orjson.dumps(row) + b"\n")


def _write_parquet(w, rows, columns) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    schema = pa.schema([(c, pa.int64() if c == "sample_id" else pa.string()) for c in columns])
    with pq.ParquetWriter(pa.PythonFile(w, mode="w"), schema, compression="zstd") as pw:
        batch = []
        for row in rows:
            batch.append(row)
            if len(batch) >= PARQUET_BATCH:
                pw.write_table(pa.Table.from_pylist(batch, schema=schema))
                batch = []
        if batch:
            pw.write_table(pa.Table.from_pylist(batch, schema=schema))
