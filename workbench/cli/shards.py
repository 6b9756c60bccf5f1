"""CLI: keep (what a distributed engine kept comes back as one undoable run of rejections)."""
from __future__ import annotations

from ..keep import KeepError, KeepRefused, keep
from ..safe_text import label
from .common import CliError, DataError, open_cli_store, print_json


def register(sub, common) -> None:
    p = sub.add_parser("keep", parents=[common],
                       help="reject every sample of a dataset that an engine's output does not list (one undoable run)",
                       description="PATH is a Parquet or JSONL file, or a directory of shards, holding the sample_id "
                                   "column of `export --with-ids` (e.g. a NeMo Curator or datatrove run's output). "
                                   "Every other pending sample of the dataset is rejected with --reason, as one run "
                                   "that `workbench clean --undo RUN` reverts. Samples a curator accepted are left "
                                   "alone and counted. One bad, unknown or repeated id and nothing is decided.")
    p.add_argument("--dataset", required=True)
    p.add_argument("--ids-from", required=True, metavar="PATH", help="a .parquet/.jsonl file or a directory of them")
    p.add_argument("--reason", required=True, help='recorded with each rejection, e.g. "external dedup"')
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_keep)


def cmd_keep(args) -> int:
    conn = open_cli_store(args)
    try:
        res = keep(conn, args.dataset, args.ids_from, args.reason)
    except KeepRefused as e:
        raise CliError(str(e)) from None
    except KeepError as e:
        raise DataError(str(e)) from None
    if args.json:
        print_json({"dataset": res.dataset, "run": res.run, "kept": res.kept, "rejected": res.rejected,
                    "accepted_left_alone": res.accepted_left, "already_rejected": res.already_rejected,
                    "snapshot": res.snapshot, "not_exported_left_alone": res.not_exported, "files": res.files})
        return 0
    print(f"{label(res.dataset)}: {res.kept:,} samples kept (from {len(res.files)} file"
          f"{'s' if len(res.files) != 1 else ''}); {res.rejected:,} rejected"
          + (f" as run {res.run} (undo: workbench clean --undo {res.run})" if res.run else ""))
    if res.accepted_left:
        print(f"  left alone: {res.accepted_left:,} samples a curator accepted (not on the list; reject them with "
              f"`workbench decide` if the engine is right)")
    if res.snapshot is None:
        print("  the listed ids are in no export: judged against the whole dataset")
    elif res.not_exported:
        print(f"  left alone: {res.not_exported:,} samples not in export snapshot {res.snapshot} (the engine never "
              f"saw them)")
    if res.already_rejected:
        print(f"  {res.already_rejected:,} not on the list were already rejected")
    return 0
