"""CLI: import, export, datasets, stats, index."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from .. import exporter, formats, importer, safe_output, scores
from .common import CliError, DataError, open_cli_store, print_json
from . import numbers
from ..store import fts_sync, list_datasets, resolve_db_path
from ..names import name_problem
from ..fileperms import open_private, private_dir
from ..safe_text import label, raw_stream


def register(sub, common) -> None:
    p = sub.add_parser("import", parents=[common],
                       help="import dataset files (JSONL, JSON, CSV, TSV, Parquet, TXT; .gz), directories or - (stdin)")
    p.add_argument("file", nargs="+", help="files, directories (every supported file, sorted) or - for stdin")
    p.add_argument("--dataset", help="dataset name (default: the file or directory name without extension)")
    p.add_argument("--format", choices=formats.FORMATS, help="force a format instead of detecting it")
    p.add_argument("--map", dest="mapping", metavar="TARGET=COLUMN,...",
                   help="map other columns, e.g. instruction=question,response=answer")
    p.add_argument("--skip-invalid", action="store_true", help="import the valid rows and report each skipped one")
    p.add_argument("--segment", choices=("heading", "paragraph", "none"),
                   help="text for backtranslation: a heading with its text, or paragraphs merged, as one row each; "
                        "boilerplate and duplicates dropped (default none: each blank-line block is a row)")
    p.add_argument("--segment-min", type=numbers.at_least(0), default=600, metavar="CHARS",
                   help="with --segment: drop segments shorter than this (default 600)")
    p.add_argument("--segment-max", type=numbers.at_least(1), default=3000, metavar="CHARS",
                   help="with --segment: split longer segments at paragraph ends (default 3000)")
    p.add_argument("--license", metavar="SPDX", help="the data's licence (an SPDX id such as CC-BY-4.0), recorded for "
                   "the dataset and listed by every export of its rows")
    p.add_argument("--dry-run", action="store_true",
                   help="show the detected format, the mapping as applied and three rows exactly as stored")
    p.add_argument("--append", action="store_true", help="import a file even if its bytes are already in the dataset")
    p.add_argument("--prefer", metavar="COLUMN",
                   help="pairwise: the column saying which answer won (1/2, 1.0/2.0, a/b, model_a/model_b, tie)")
    p.add_argument("--keep-ties", action="store_true",
                   help="keep tied pairs as a prompt with two candidates (default: skip and count them)")
    p.add_argument("--score-scale", metavar="LO-HI", action="append",
                   help="the scale of score_chosen/score_rejected, e.g. 1-10; for shards carrying sample_id: "
                        "COLUMN=LO-HI, the scale of a numeric column that becomes a rubric (repeatable)")
    p.add_argument("--score-rubric", default="import-score", help="rubric name for imported scores")
    p.add_argument("--as-candidates", action="store_true",
                   help="several model-output files: one prompt per shared instruction, one candidate per file")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_import)

    p = sub.add_parser("export", parents=[common], help="export samples (writes a manifest and a snapshot)")
    p.add_argument("out", help="a file (.json: a JSON array, .gz: gzip), a directory (or a name without extension: "
                   "data/, README.md dataset card, manifest), or - for stdout")
    p.add_argument("--format", required=True, choices=exporter.EXPORT_FORMATS)
    p.add_argument("--dataset")
    p.add_argument("--status", metavar="S[,S...]", help="a comma list of pending, accepted, rejected, or all "
                   "(default: every sample that is not rejected; kto: accepted,rejected)")
    p.add_argument("--min-score", action="append", metavar="RUBRIC=N",
                   help="only samples whose RUBRIC score is >= N, e.g. curate=4.5 (repeat for several rubrics)")
    p.add_argument("--max-score", action="append", metavar="RUBRIC=N", help="only samples whose RUBRIC score is <= N")
    p.add_argument("--include-stale", action="store_true",
                   help="score filters also match scores given before the sample's text was edited")
    p.add_argument("--task-type")
    p.add_argument("--selection", help="only samples of this named selection (see `workbench sample`)")
    p.add_argument("--conversational", action="store_true",
                   help="preference, trl-sft, kto: TRL's conversational layout (message lists) instead of strings")
    p.add_argument("--with-ids", action="store_true", help="add a sample_id column (see `workbench provenance`)")
    p.add_argument("--shard-rows", type=int, metavar="N",
                   help="parquet: write OUT as a directory of shards part-00000.parquet... of at most N rows each, "
                        "for Spark, Ray Data, NeMo Curator or datatrove (bring decisions back with `workbench keep` "
                        "or `import`)")
    p.add_argument("--force", action="store_true", help="replace existing files (never the store)")
    p.add_argument("--name", help="a name for the snapshot")
    p.add_argument("--json", action="store_true")
    p.add_argument("--tag-origin", action="store_true",
                   help="Humpback: start each row's system prompt with a tag for its origin (seed or self-augmented)")
    p.add_argument("--seed-tag", metavar="TEXT", help="with --tag-origin: the seed rows' tag")
    p.add_argument("--augmented-tag", metavar="TEXT", help="with --tag-origin: the self-augmented rows' tag")
    p.set_defaults(handler=cmd_export)

    p = sub.add_parser("provenance", parents=[common],
                       help="one sample's full history: source line, jobs, judgments, edits, decisions, exports")
    p.add_argument("--dataset", required=True)
    p.add_argument("--id", type=numbers.sample_id, required=True, help="the sample id (an export's sample_id column)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_provenance)

    p = sub.add_parser("datasets", parents=[common], help="list datasets with their counts; rename, delete, merge")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_datasets)
    dsub = p.add_subparsers(dest="datasets_command", metavar="ACTION")
    r = dsub.add_parser("rename", parents=[common], help="rename a dataset")
    r.add_argument("old")
    r.add_argument("new")
    r.add_argument("--json", action="store_true")
    r.set_defaults(handler=cmd_datasets_rename)
    d = dsub.add_parser("delete", parents=[common],
                        help="delete a dataset with its samples, decisions, judgments and candidates")
    d.add_argument("name")
    d.add_argument("--yes", action="store_true", help="do not ask (needed when stdin is not a terminal)")
    d.add_argument("--json", action="store_true")
    d.set_defaults(handler=cmd_datasets_delete)
    m = dsub.add_parser("merge", parents=[common], help="move the samples of two or more datasets into one")
    m.add_argument("sources", nargs="+", metavar="DATASET")
    m.add_argument("--into", required=True, help="the merged dataset (new, or one of the sources)")
    m.add_argument("--json", action="store_true")
    m.set_defaults(handler=cmd_datasets_merge)

    p = sub.add_parser("stats", parents=[common],
                       help="counts by status, task_type, domain, difficulty and length bucket")
    p.add_argument("--dataset")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_stats)

    p = sub.add_parser("index", parents=[common],
                       help="bring the search index and the Balance counts up to date (runs after each import)")
    p.set_defaults(handler=cmd_index)


def _store(args):
    return open_cli_store(args)


def _parse_opts(args) -> formats.ParseOptions:
    scale = None
    if args.score_scale:
        if len(args.score_scale) > 1:
            raise CliError("--score-scale: given more than once; several scales (COLUMN=LO-HI) apply only to shards "
                           "carrying sample_id")
        text = args.score_scale[0]
        try:
            lo, hi = (numbers.finite(x) for x in text.split("-", 1))
        except (ValueError, argparse.ArgumentTypeError):
            raise CliError(f"--score-scale: expected LO-HI such as 1-10 (finite numbers), got {text!r}") from None
        if lo >= hi:
            raise CliError(f"--score-scale: {text!r} is not a range (LO must be below HI)")
        scale = (lo, hi)
    if not scores.RUBRIC_RE.fullmatch(args.score_rubric):
        raise CliError(f"--score-rubric {args.score_rubric!r}: a rubric name is lowercase letters, digits, '_', '-' "
                       f"and '.'")
    return formats.ParseOptions(prefer=args.prefer, keep_ties=args.keep_ties, score_scale=scale,
                                score_rubric=args.score_rubric)


def _detection_info(det) -> dict:
    return {"file": det.file, "file_type": det.file_type, "format": det.format, "kind": det.kind,
            "mapping": det.mapping, "columns": det.columns, "preview": det.preview, "ties": det.ties}


def _dry_run(args, opts) -> int:
    paths = importer.expand_inputs(args.file)
    with importer.stdin_spooled(paths, args.format) as paths:
        infos = [_detection_info(importer.detect(p, args.format, args.mapping, args.skip_invalid, opts))
                 for p in paths]
    if args.json:
        print_json(infos[0] if len(infos) == 1 else {"files": infos})
        return 0
    for info in infos:
        print(f"file:    {info['file']} ({info['file_type']})\nformat:  {info['format']} ({info['kind']})")
        print("mapping: " + ", ".join(f"{t} <- {label(s)}" for t, s in info["mapping"].items()))
        others = [c for c in info["columns"] if c not in info["mapping"].values()]
        if others:
            print("metadata columns: " + ", ".join(map(label, others)))
        if info["ties"]:
            print(f"ties among the first rows: {info['ties']} (skipped; --keep-ties keeps them)")
        for i, s in enumerate(info["preview"], 1):
            print(f"--- row {i}, as stored")
            for k, v in s.items():
                if v is not None and v != "":
                    print(f"  {k}: {_short(v)}")
    return 0


def check_dataset_name(name: str | None, flag: str = "--dataset") -> None:
    """A dataset name given on the command line: not empty, no spaces at either end (as `datasets rename`)."""
    if name is not None and (not name.strip() or name != name.strip()):
        raise CliError(f"{flag} {name!r} is not a usable dataset name (empty, or spaces at either end)")


def cmd_import(args) -> int:
    check_dataset_name(args.dataset)
    if args.segment_min > args.segment_max:
        raise CliError(f"--segment-min {args.segment_min} is above --segment-max {args.segment_max}")
    if _update_from_shards(args):
        return 0
    opts = _parse_opts(args)
    try:
        if args.dry_run:
            return _dry_run(args, opts)
        if args.as_candidates:
            return _import_candidates(args)
        conn = _store(args)
        progress = None if args.json or args.quiet or not sys.stderr.isatty() else \
            (lambda n: print(f"\r{n:,} rows", end="", file=raw_stream(sys.stderr), flush=True))
        res = importer.import_files(conn, args.file, args.dataset, args.format, args.mapping, args.skip_invalid,
                                    progress, args.license, opts=opts, append=args.append, segment=args.segment,
                                    segment_min=args.segment_min, segment_max=args.segment_max)
    except importer.ImportRefused as e:    # the command line (--license, --append, --dataset, ...): usage (2)
        raise CliError(str(e)) from None
    except importer.ImportFailed as e:     # the file: bad data (1)
        raise DataError(str(e)) from None
    if progress:
        print(file=sys.stderr)
    for s in res.skipped:
        print(f"skipped: {s}", file=sys.stderr)
    if args.json:
        print_json({"dataset": res.dataset, "format": res.format, "rows": res.rows, "skipped": len(res.skipped),
                    "duplicates": res.duplicates, "first_id": res.first_id, "last_id": res.last_id,
                    "ties": res.ties, "candidates": res.candidates,
                    "files": [{"file": f.file, "format": f.format, "rows": f.rows, "skipped": f.skipped,
                               "ties": f.ties, "sha256": f.sha256} for f in res.files]}
                   | ({"segments": res.segments} if res.segments is not None else {}))
    else:
        print(f"imported {res.rows:,} rows into {res.dataset!r} as {res.format}"
              + (f" from {len(res.files)} files" if len(res.files) > 1 else "")
              + (f"; {len(res.skipped)} skipped" if res.skipped else "")
              + (f"; {res.ties:,} ties skipped (--keep-ties keeps them)" if res.ties else "")
              + (f"; {res.candidates:,} candidates" if res.candidates else "")
              + (f"; {res.duplicates} flagged as exact duplicates" if res.duplicates else ""))
        if res.segments is not None:
            seg = res.segments
            print(f"segments: {seg['segments']:,} kept ({args.segment_min}-{args.segment_max} characters), "
                  f"{seg['merged_paragraphs']:,} paragraphs merged, {seg['split_segments']:,} split; dropped: "
                  + (", ".join(f"{k} {v:,}" for k, v in seg["dropped"].items()) or "none"))
    _index_in_background(getattr(args, "db", None))
    return 0


def _update_from_shards(args) -> bool:
    """Shards carrying sample_id (an export coming back from an engine) update their samples: True if done."""
    from .. import shard_update
    try:
        paths = importer.expand_inputs(args.file)
        if not shard_update.carries_ids(paths):
            return False
    except importer.ImportFailed:
        return False                        # the ordinary import says what is wrong with the inputs
    except shard_update.UpdateRefused as e:
        raise CliError(str(e)) from None
    other = [flag for flag, on in (("--format", args.format), ("--map", args.mapping), ("--dry-run", args.dry_run),
                                   ("--as-candidates", args.as_candidates), ("--segment", args.segment),
                                   ("--license", args.license), ("--append", args.append), ("--prefer", args.prefer),
                                   ("--skip-invalid", args.skip_invalid)) if on]
    if other:
        raise CliError(f"{other[0]} does not apply here: these files carry sample_id, so they update samples of "
                       f"--dataset (see README, 'Parquet shards')")
    try:
        res = shard_update.update_samples(_store(args), paths, args.dataset, args.score_scale)
    except shard_update.UpdateRefused as e:
        raise CliError(str(e)) from None
    except shard_update.UpdateError as e:
        raise DataError(str(e)) from None
    if args.json:
        print_json({"dataset": res.dataset, "updated_from": res.files, "rows": res.rows, "changed": res.changed,
                    "run": res.run, "rubrics": res.rubrics, "metadata_columns": res.metadata_columns,
                    "kept_store_text": res.kept_store_text, "not_applied": res.not_applied})
    else:
        print(f"read {res.rows:,} rows carrying sample_id from {len(res.files)} file{'s' if len(res.files) != 1 else ''}"
              f": {res.changed:,} samples of {label(res.dataset)!r} changed"
              + (f" as run {res.run} (undo: workbench clean --undo {res.run})" if res.run else "")
              + "; no sample added")
        for name, r in res.rubrics.items():
            obs = f", observed {r['observed'][0]:g}-{r['observed'][1]:g}" if r["observed"] else ""
            print(f"  rubric {label(name)}: {r['scores']:,} scores on the scale {r['scale'][0]:g}-{r['scale'][1]:g}"
                  f"{obs}" + (f"; {r['no_value']:,} rows without a value" if r["no_value"] else ""))
        if res.metadata_columns:
            print("  stored in metadata: " + ", ".join(label(c) for c in res.metadata_columns))
        if res.kept_store_text:
            print(f"  kept the store's text of {res.kept_store_text:,} samples edited since the export (the file "
                  f"held the exported text)")
        for col, n in res.not_applied.items():
            print(f"  not applied: {col} differs from the store on {n:,} rows (the export's copy; send a new "
                  f"column instead)")
    if res.changed:
        _index_in_background(getattr(args, "db", None))
    return True


def _import_candidates(args) -> int:
    from ..candidates import import_candidates
    conn = _store(args)
    res = import_candidates(conn, args.file, args.dataset, args.format, importer._mapping(args.mapping or ""),
                            args.skip_invalid, args.append)
    for s in res.skipped:
        print(f"skipped: {s}", file=sys.stderr)
    for u in res.unmatched[:20]:
        print(f"unmatched: {u.file}, line {u.line}: {_short(u.instruction, 80)}", file=sys.stderr)
    if len(res.unmatched) > 20:
        print(f"unmatched: ... and {len(res.unmatched) - 20} more (--json lists them all)", file=sys.stderr)
    if args.json:
        print_json({"dataset": res.dataset, "format": "candidates", "rows": res.prompts, "candidates": res.candidates,
                    "models": res.models, "skipped": len(res.skipped),
                    "unmatched": [u.to_dict() for u in res.unmatched]})
    else:
        print(f"imported {res.prompts:,} prompts into {res.dataset!r} with {res.candidates:,} candidates from "
              f"{len(res.models)} models ({_short(', '.join(res.models), 300)}); {len(res.unmatched)} rows unmatched")
    _index_in_background(getattr(args, "db", None))
    return 0


def _index_in_background(db) -> None:
    """Index the new rows (FTS, Balance counts) in a detached process: the curator is not held up by it.

    Its output goes to index.log in the user log dir; if it fails, the next `workbench index`, search or Balance
    screen catches up (both steps resume from their watermark)."""
    import platformdirs
    from ..store import APP_NAME
    log_dir = Path(platformdirs.user_log_dir(APP_NAME))
    private_dir(log_dir)
    with open_private(log_dir / "index.log", "ab") as log:
        subprocess.Popen([sys.executable, "-m", "workbench", "--db", str(resolve_db_path(db)), "index"],
                         stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)


def cmd_index(args) -> int:
    from ..stats import fold
    conn = _store(args)
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")  # the import left its pages in the WAL; move them now
    n = fts_sync(conn)
    counted = fold(conn)
    print(f"search index: {n:,} new rows; Balance counts: {counted:,} new rows")
    return 0


def _short(v, n: int = 100) -> str:
    text = v if isinstance(v, str) else repr(v)
    shown = label(text.replace("\n", "\\n"))
    return shown if len(shown) <= n else shown[:n] + f"... ({len(text)} chars)"   # the text's length, not the escaped


def cmd_export(args) -> int:
    tags = None
    if args.tag_origin:
        from ..config import load_config
        from ..origin_tags import resolve_tags
        try:
            tags = resolve_tags(load_config(getattr(args, "config", None)), args.seed_tag, args.augmented_tag)
        except ValueError as e:
            raise CliError(f"--tag-origin: {e}") from None
    elif args.seed_tag is not None or args.augmented_tag is not None:
        raise CliError("--seed-tag and --augmented-tag go with --tag-origin")
    if args.name is not None:
        if not args.name.strip() or args.name.strip().lstrip("#").isdigit():
            raise CliError(f"--name {args.name!r}: a snapshot name that is empty or a number would be read as a "
                           f"snapshot id by `workbench diff`")
        problem = name_problem(args.name, "snapshot")
        if problem:
            raise CliError(f"--name: {problem}")
    conn = _store(args)
    if args.shard_rows is not None:
        return _export_shards(args, conn, tags)
    try:
        res = exporter.export(conn, args.out, args.format, args.dataset, args.status, args.min_score,
                              args.max_score, args.task_type, args.selection, args.name, force=args.force,
                              conversational=args.conversational, with_ids=args.with_ids,
                              include_stale=args.include_stale, origin_tags=tags)
    except exporter.ExportFailed as e:
        raise CliError(str(e)) from None
    # with `-` or /dev/stdout the data is on stdout: everything else goes to stderr
    say = sys.stderr if safe_output.is_stream(args.out) else sys.stdout
    c = res.counts
    if args.json:
        info = {"file": str(res.path), "format": res.format, "rows": res.rows, "skipped": res.skipped,
                "sha256": res.sha256, "manifest": str(res.manifest_path) if res.manifest_path else None,
                "snapshot": res.snapshot_id, "files": [str(f) for f in res.files], "by_status": c["by_status"],
                "in_scope": c["in_scope"], "in_scope_by_status": c["in_scope_by_status"],
                "excluded_by_filter": c["excluded_by_filter"], "excluded_unscored": c["excluded_unscored"],
                "skipped_by_reason": c["skipped_by_reason"]}
        say.write(json.dumps(info, ensure_ascii=False, indent=2) + "\n")
        return 0
    print(f"exported {res.rows:,} rows to {res.path} ({res.format}); sha256 {res.sha256}; snapshot {res.snapshot_id}"
          + (f"; manifest {res.manifest_path}" if res.manifest_path else ""), file=say)
    print("  by status: " + ", ".join(f"{s} {n:,}" for s, n in c["by_status"].items()), file=say)
    print("  " + exporter.describe_counts(c), file=say)
    if res.axolotl:
        print(res.axolotl.rstrip(), file=say)
    return 0


def _export_shards(args, conn, tags) -> int:
    from ..export_shards import export_shards
    if args.format != "parquet":
        raise CliError(f"--shard-rows writes Parquet shards; use --format parquet (not {args.format})")
    if tags is not None or args.conversational:
        raise CliError("--shard-rows writes the parquet layout; --tag-origin and --conversational do not apply")
    try:
        res = export_shards(conn, args.out, args.shard_rows, args.dataset, args.status, args.min_score,
                            args.max_score, args.task_type, args.selection, args.name, force=args.force,
                            with_ids=args.with_ids, include_stale=args.include_stale)
    except exporter.ExportFailed as e:
        raise CliError(str(e)) from None
    c = res.counts
    shards = len(res.files) - 1
    if args.json:
        print_json({"directory": str(res.path), "format": "parquet", "rows": res.rows, "shards": shards,
                    "sha256": res.sha256, "manifest": str(res.manifest_path), "snapshot": res.snapshot_id,
                    "files": [str(f) for f in res.files], "by_status": c["by_status"], "in_scope": c["in_scope"],
                    "in_scope_by_status": c["in_scope_by_status"], "excluded_by_filter": c["excluded_by_filter"],
                    "excluded_unscored": c["excluded_unscored"]})
        return 0
    print(f"exported {res.rows:,} rows to {res.path} as {shards} Parquet shard{'s' if shards != 1 else ''}; "
          f"snapshot {res.snapshot_id}; manifest {res.manifest_path}")
    print("  by status: " + ", ".join(f"{s} {n:,}" for s, n in c["by_status"].items()))
    print("  " + exporter.describe_counts(c))
    return 0


def cmd_provenance(args) -> int:
    from ..provenance import sample_history
    conn = _store(args)
    try:
        history = sample_history(conn, args.dataset, args.id)
    except KeyError as e:
        raise CliError(str(e.args[0])) from None
    if args.json:
        print_json(history)
        return 0
    _print_history(history, "")
    return 0


def _print_history(h: dict, indent: str) -> None:
    def p(text: str) -> None:  # file names, reasons, model names are untrusted: no control sequence reaches the tty
        print(indent + "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode() for ch in text))
    p(f"sample {h['sample_id']} in dataset {h['dataset']!r}: {h['status']}"
      + (f", scores {scores.describe(h['scores'])}" if h["scores"] else "")
      + (f", duplicate of {h['duplicate_of']}" if h["duplicate_of"] else "")
      + (f"; licence {h['license']}" if h["license"] else ""))
    src = h["source"]
    if src:
        p(f"  source: {src['file']} line/row {src['line_or_row']} ({src['format']}, sha256 {src['sha256'] or '?'}, "
          f"imported {src['imported_at']})")
    if h.get("job"):
        j = h["job"]
        o = j.get("origin") or {}
        p(f"  made by job {j['job_id']} ({j.get('task', o.get('task'))}): template "
          f"{o.get('template', o.get('task', '?'))}@{o.get('template_version', '?')}, model {o.get('model', '?')}")
    for c in h["candidates"]:
        p(f"  candidate {c['id']} from {c['model']} (job {c['job_id']})")
    for j in h["judgments"]:
        p(f"  judged by {j['judge']} with {j['rubric']}@{j['rubric_version']}: {j['overall']} (job {j['job_id']})")
    for d in h["decisions"]:
        what = d["action"] + (f" ({d['reason']})" if d["reason"] else "")
        if d["action"] == "edit" and isinstance(d["before"], dict):
            what += ": " + ", ".join(sorted(d["before"]))
        p(f"  {d['at']} {what}")
    for s in h["snapshots"]:
        p(f"  exported in snapshot {s['snapshot_id']} ({s['format']}) to {s['file']}")
    if h.get("parent"):
        par = h["parent"]
        if "dataset" in par:
            p("  made from:")
            _print_history(par, indent + "    ")
        else:
            p(f"  made from sample {par['sample_id']} (" + ("missing" if par.get("missing") else "deeper") + ")")


def cmd_datasets(args) -> int:
    conn = _store(args)
    rows = list_datasets(conn)
    from ..automatic import automatic_counts
    auto = automatic_counts(conn)
    for r in rows:   # rejected by a clean/dedup run rather than by a curator
        r["automatic"] = auto.get(r["id"], 0)
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print("no datasets yet: `workbench import FILE`")
        return 0
    print(f"{'name':30} {'kind':10} {'rows':>9} {'pending':>9} {'accepted':>9} {'rejected':>9} {'automatic':>9}")
    for r in rows:
        print(f"{label(r['name'], 30):30} {label(r['kind'], 10):10}"
              f" {r['rows']:>9,} {r['pending']:>9,} {r['accepted']:>9,} "
              f"{r['rejected']:>9,} {r['automatic']:>9,}")
    return 0


def _session() -> str:
    from ..review import curator_session
    return curator_session()


def cmd_datasets_rename(args) -> int:
    from ..dataset_ops import DatasetError, rename_dataset
    try:
        out = rename_dataset(_store(args), args.old, args.new, _session())
    except DatasetError as e:
        raise CliError(str(e)) from None
    print_json(out) if args.json else print(f"renamed {args.old!r} to {args.new!r}")
    return 0


def cmd_datasets_delete(args) -> int:
    from ..dataset_ops import DatasetError, counts, delete_dataset
    conn = _store(args)
    try:
        what = counts(conn, args.name)
        if not args.yes:
            if not sys.stdin.isatty():
                raise CliError(f"deleting {args.name!r} removes {what['samples']:,} samples; stdin is not a terminal "
                               "to ask, so pass --yes")
            answer = input(f"delete dataset {args.name!r}: {what['samples']:,} samples, {what['decisions']:,} "
                           f"decisions, {what['judgments']:,} judgments, {what['candidates']:,} candidates? "
                           "type the dataset's name to confirm: ")
            if answer.strip() != args.name:
                print("not deleted", file=sys.stderr)
                return 1
        gone = delete_dataset(conn, args.name, _session())
    except DatasetError as e:
        raise CliError(str(e)) from None
    if args.json:
        print_json(gone)
    else:
        print(f"deleted {args.name!r}: {gone['samples']:,} samples, {gone['decisions']:,} decisions, "
              f"{gone['judgments']:,} judgments, {gone['candidates']:,} candidates")
    return 0


def cmd_datasets_merge(args) -> int:
    from ..dataset_ops import DatasetError, merge_datasets
    try:
        out = merge_datasets(_store(args), args.sources, args.into, _session())
    except DatasetError as e:
        raise CliError(str(e)) from None
    print_json(out) if args.json else print(f"merged {', '.join(args.sources)} into {args.into!r} "
                                            f"({out['moved']:,} samples moved)")
    return 0


def cmd_stats(args) -> int:
    from ..stats import stats_summary
    conn = _store(args)
    try:
        summary = stats_summary(conn, args.dataset)
    except KeyError as e:
        raise CliError(str(e.args[0])) from None
    if args.json:
        print_json(summary)
        return 0
    _print_counts(summary)
    return 0


def _print_counts(d: dict, indent: str = "") -> None:
    for key, value in d.items():
        if isinstance(value, dict):
            print(f"{indent}{key}:")
            _print_counts(value, indent + "  ")
        elif isinstance(value, int):
            print(f"{indent}{str(key):28} {value:>9,}")
        else:
            print(f"{indent}{key}: {value}")
