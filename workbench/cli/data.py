"""CLI: import, export, datasets, stats, index."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .. import exporter, formats, importer
from .common import CliError, print_json
from ..store import fts_sync, list_datasets, open_store, resolve_db_path


def register(sub, common) -> None:
    p = sub.add_parser("import", parents=[common], help="import a dataset file (JSONL, JSON, CSV, TSV, Parquet, TXT)")
    p.add_argument("file")
    p.add_argument("--dataset", help="dataset name (default: the file name without extension)")
    p.add_argument("--format", choices=formats.FORMATS, help="force a format instead of detecting it")
    p.add_argument("--map", dest="mapping", metavar="TARGET=COLUMN,...",
                   help="map other columns, e.g. instruction=question,response=answer")
    p.add_argument("--skip-invalid", action="store_true", help="import the valid rows and report each skipped one")
    p.add_argument("--dry-run", action="store_true", help="show the detected format, mapping and three parsed rows")
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

    p = sub.add_parser("datasets", parents=[common], help="list datasets with their counts")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_datasets)

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


def cmd_import(args) -> int:
    try:
        if args.dry_run:
            det = importer.detect(args.file, args.format, args.mapping, args.skip_invalid)
            info = {"file": det.file, "file_type": det.file_type, "format": det.format, "kind": det.kind,
                    "mapping": det.mapping, "columns": det.columns, "preview": det.preview}
            if args.json:
                print_json(info)
            else:
                print(f"file:    {det.file} ({det.file_type})\nformat:  {det.format} ({det.kind})")
                print("mapping: " + ", ".join(f"{t} <- {s}" for t, s in det.mapping.items()))
                others = [c for c in det.columns if c not in det.mapping.values()]
                if others:
                    print("metadata columns: " + ", ".join(others))
                for i, s in enumerate(det.preview, 1):
                    print(f"--- row {i}")
                    for k, v in s.items():
                        print(f"  {k}: {_short(v)}")
            return 0
        conn = _store(args)
        progress = None if args.json or not sys.stderr.isatty() else \
            (lambda n: print(f"\r{n:,} rows", end="", file=sys.stderr, flush=True))
        res = importer.import_file(conn, args.file, args.dataset, args.format, args.mapping, args.skip_invalid,
                                   progress)
    except importer.ImportFailed as e:
        raise CliError(str(e)) from None
    if progress:
        print(file=sys.stderr)
    for s in res.skipped:
        print(f"skipped: {s}", file=sys.stderr)
    if args.json:
        print_json({"dataset": res.dataset, "format": res.format, "rows": res.rows, "skipped": len(res.skipped),
                    "duplicates": res.duplicates, "first_id": res.first_id, "last_id": res.last_id})
    else:
        print(f"imported {res.rows:,} rows into {res.dataset!r} as {res.format}"
              + (f"; {len(res.skipped)} skipped" if res.skipped else "")
              + (f"; {res.duplicates} flagged as exact duplicates" if res.duplicates else ""))
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


def _short(v, n: int = 100) -> str:
    text = v if isinstance(v, str) else repr(v)
    text = text.replace("\n", "\\n")
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
