"""CLI: import, export, datasets, stats, index."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from .. import exporter, formats, importer
from .common import CliError, print_json
from ..store import fts_sync, list_datasets, open_store, resolve_db_path


def register(sub, common) -> None:
    p = sub.add_parser("import", parents=[common],
                       help="import dataset files (JSONL, JSON, CSV, TSV, Parquet, TXT; .gz), directories or - (stdin)")
    p.add_argument("file", nargs="+", help="files, directories (every supported file, sorted) or - for stdin")
    p.add_argument("--dataset", help="dataset name (default: the file or directory name without extension)")
    p.add_argument("--format", choices=formats.FORMATS, help="force a format instead of detecting it")
    p.add_argument("--map", dest="mapping", metavar="TARGET=COLUMN,...",
                   help="map other columns, e.g. instruction=question,response=answer")
    p.add_argument("--skip-invalid", action="store_true", help="import the valid rows and report each skipped one")
    p.add_argument("--dry-run", action="store_true",
                   help="show the detected format, the mapping as applied and three rows exactly as stored")
    p.add_argument("--append", action="store_true", help="import a file even if its bytes are already in the dataset")
    p.add_argument("--prefer", metavar="COLUMN",
                   help="pairwise: the column saying which answer won (1/2, 1.0/2.0, a/b, model_a/model_b, tie)")
    p.add_argument("--keep-ties", action="store_true",
                   help="keep tied pairs as a prompt with two candidates (default: skip and count them)")
    p.add_argument("--score-scale", metavar="LO-HI", help="the scale of score_chosen/score_rejected, e.g. 1-10")
    p.add_argument("--score-rubric", default="import-score", help="rubric name for imported scores")
    p.add_argument("--as-candidates", action="store_true",
                   help="several model-output files: one prompt per shared instruction, one candidate per file")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_import)

    p = sub.add_parser("export", parents=[common], help="export samples (writes a manifest and a snapshot)")
    p.add_argument("out")
    p.add_argument("--format", required=True, choices=exporter.EXPORT_FORMATS)
    p.add_argument("--dataset")
    p.add_argument("--status", choices=("pending", "accepted", "rejected"))
    p.add_argument("--min-score", type=float)
    p.add_argument("--max-score", type=float)
    p.add_argument("--task-type")
    p.add_argument("--selection", help="only samples of this named selection (see `workbench sample`)")
    p.add_argument("--name", help="a name for the snapshot")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_export)

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
    return open_store(getattr(args, "db", None))


def _parse_opts(args) -> formats.ParseOptions:
    scale = None
    if args.score_scale:
        try:
            lo, hi = (float(x) for x in args.score_scale.split("-", 1))
        except ValueError:
            raise CliError(f"--score-scale: expected LO-HI such as 1-10, got {args.score_scale!r}") from None
        if lo >= hi:
            raise CliError(f"--score-scale: {args.score_scale!r} is not a range (LO must be below HI)")
        scale = (lo, hi)
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
        print("mapping: " + ", ".join(f"{t} <- {s}" for t, s in info["mapping"].items()))
        others = [c for c in info["columns"] if c not in info["mapping"].values()]
        if others:
            print("metadata columns: " + ", ".join(others))
        if info["ties"]:
            print(f"ties among the first rows: {info['ties']} (skipped; --keep-ties keeps them)")
        for i, s in enumerate(info["preview"], 1):
            print(f"--- row {i}, as stored")
            for k, v in s.items():
                if v is not None and v != "":
                    print(f"  {k}: {_short(v)}")
    return 0


def cmd_import(args) -> int:
    opts = _parse_opts(args)
    try:
        if args.dry_run:
            return _dry_run(args, opts)
        if args.as_candidates:
            return _import_candidates(args)
        conn = _store(args)
        progress = None if args.json or not sys.stderr.isatty() else \
            (lambda n: print(f"\r{n:,} rows", end="", file=sys.stderr, flush=True))
        res = importer.import_files(conn, args.file, args.dataset, args.format, args.mapping, args.skip_invalid,
                                    progress, opts=opts, append=args.append)
    except importer.ImportFailed as e:
        raise CliError(str(e)) from None
    if progress:
        print(file=sys.stderr)
    for s in res.skipped:
        print(f"skipped: {s}", file=sys.stderr)
    if args.json:
        print_json({"dataset": res.dataset, "format": res.format, "rows": res.rows, "skipped": len(res.skipped),
                    "duplicates": res.duplicates, "first_id": res.first_id, "last_id": res.last_id,
                    "ties": res.ties, "candidates": res.candidates,
                    "files": [{"file": f.file, "format": f.format, "rows": f.rows, "skipped": f.skipped,
                               "ties": f.ties, "sha256": f.sha256} for f in res.files]})
    else:
        print(f"imported {res.rows:,} rows into {res.dataset!r} as {res.format}"
              + (f" from {len(res.files)} files" if len(res.files) > 1 else "")
              + (f"; {len(res.skipped)} skipped" if res.skipped else "")
              + (f"; {res.ties:,} ties skipped (--keep-ties keeps them)" if res.ties else "")
              + (f"; {res.candidates:,} candidates" if res.candidates else "")
              + (f"; {res.duplicates} flagged as exact duplicates" if res.duplicates else ""))
    _index_in_background(getattr(args, "db", None))
    return 0


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
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / "index.log", "ab") as log:
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


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _short(v, n: int = 100) -> str:
    """One line of file text for the terminal: control characters (escape sequences, bidi overrides) shown escaped."""
    text = v if isinstance(v, str) else repr(v)
    text = _CONTROL.sub(lambda m: "\\n" if m.group() == "\n" else f"\\x{ord(m.group()):02x}"
                        if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}", text)
    return text if len(text) <= n else text[:n] + f"... ({len(text)} chars)"


def cmd_export(args) -> int:
    conn = _store(args)
    try:
        res = exporter.export(conn, args.out, args.format, args.dataset, args.status, args.min_score,
                              args.max_score, args.task_type, args.selection, args.name)
    except exporter.ExportFailed as e:
        raise CliError(str(e)) from None
    if args.json:
        print_json({"file": str(res.path), "format": res.format, "rows": res.rows, "skipped": res.skipped,
                    "sha256": res.sha256, "manifest": str(res.manifest_path), "snapshot": res.snapshot_id})
    else:
        print(f"exported {res.rows:,} rows to {res.path} ({res.format}); sha256 {res.sha256}; "
              f"snapshot {res.snapshot_id}; manifest {res.manifest_path}")
        if res.skipped:
            print(f"{res.skipped:,} rows without a rejected reply were left out of the preference export",
                  file=sys.stderr)
    return 0


def cmd_datasets(args) -> int:
    rows = list_datasets(_store(args))
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print("no datasets yet: `workbench import FILE`")
        return 0
    print(f"{'name':30} {'kind':10} {'rows':>9} {'pending':>9} {'accepted':>9} {'rejected':>9}")
    for r in rows:
        print(f"{r['name'][:30]:30} {r['kind']:10} {r['rows']:>9,} {r['pending']:>9,} {r['accepted']:>9,} "
              f"{r['rejected']:>9,}")
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
