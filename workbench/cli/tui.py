"""`workbench review --dataset NAME`: open the TUI straight into Review (a deep link for scripts and SSH)."""
from __future__ import annotations

from .common import CliError
from . import numbers
from ..store import get_dataset, open_store


def register(sub, common) -> None:
    p = sub.add_parser("review", parents=[common], help="open the TUI on the Review screen of a dataset")
    p.add_argument("--dataset", required=True, help="dataset name (see `workbench datasets`)")
    p.add_argument("--sample", type=numbers.sample_id, default=None, help="start at this sample id instead of where you left off")
    p.add_argument("--selection", default=None,
                   help="walk only this named selection, in id order (a spot-check hides scores until you decide)")
    p.set_defaults(handler=review)


def review(args) -> int:
    db = getattr(args, "db", None)
    conn = open_store(db)
    try:
        if get_dataset(conn, args.dataset) is None:
            names = [r[0] for r in conn.execute("SELECT name FROM datasets ORDER BY id")]
            raise CliError(f"no dataset named {args.dataset!r}" + (f"; datasets: {', '.join(names)}" if names
                                                                     else "; the store has no dataset yet"))
        if args.sample is not None and conn.execute("SELECT 1 FROM samples WHERE id = ? AND dataset_id = "
                                                    "(SELECT id FROM datasets WHERE name = ?)",
                                                    (args.sample, args.dataset)).fetchone() is None:
            raise CliError(f"dataset {args.dataset!r} has no sample with id {args.sample}")
        if args.selection is not None and conn.execute(
                "SELECT 1 FROM selections WHERE name = ? LIMIT 1", (args.selection,)).fetchone() is None:
            names = [r[0] for r in conn.execute("SELECT DISTINCT name FROM selections ORDER BY name")]
            raise CliError(f"no selection named {args.selection!r}"
                           + (f"; selections: {', '.join(names)}" if names else ""))
    finally:
        conn.close()
    from ..app import run_app
    return run_app(db=db, config=getattr(args, "config", None), dataset=args.dataset, screen="review",
                   sample_id=args.sample, selection=args.selection)
