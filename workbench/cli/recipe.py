"""CLI: `recipe run FILE|NAME [--wait]`, `recipe list`, `recipe show ID`, `recipe cancel ID` (workbench/recipes.py)."""
from __future__ import annotations

import sys
import time

from .. import jobs as J
from .. import recipes
from ..store import resolve_db_path
from .common import CliError, print_json
from .common import load_cli_config, guard, open_cli_store
from . import numbers
from .jobs import add_batch_args, batch_opts, cancel_at_provider, report_line, summary_line
from ..batch_state import round_cell


def register(sub, common):
    p = sub.add_parser("recipe", parents=[common], help="run a sequence of tasks as one group of jobs")
    rs = p.add_subparsers(dest="recipe_command", metavar="ACTION", required=True)
    r = rs.add_parser("run", parents=[common], help="check a recipe, record it, queue its steps as inputs complete")
    r.add_argument("recipe", help="a .toml file, or the name of a shipped recipe (`workbench recipe list`)")
    r.add_argument("--endpoint", help="endpoint for steps that name none")
    r.add_argument("--pool", help="pool for steps that name none")
    r.add_argument("--judge", help="judge endpoint for steps that name none")
    r.add_argument("--var", action="append", metavar="NAME=VALUE", help="set a recipe variable (repeat)")
    r.add_argument("--wait", action="store_true", help="run the steps here until the recipe ends")
    add_batch_args(r)
    r.set_defaults(handler=guard(cmd_recipe_run))
    ls = rs.add_parser("list", parents=[common], help="shipped recipes and the recipes run in this store")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=guard(cmd_recipe_list))
    sh = rs.add_parser("show", parents=[common], help="one recipe run with each step's progress")
    sh.add_argument("id", type=numbers.sample_id)
    sh.add_argument("--json", action="store_true")
    sh.set_defaults(handler=guard(cmd_recipe_show))
    ca = rs.add_parser("cancel", parents=[common], help="cancel a running recipe: its unfinished jobs, and every "
                                                          "step not started yet")
    ca.add_argument("id", type=numbers.sample_id)
    ca.add_argument("--json", action="store_true")
    ca.set_defaults(handler=guard(cmd_recipe_cancel))


def _vars(pairs) -> dict[str, str]:
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise CliError(f"--var {pair!r}: expected NAME=VALUE")
        k, v = pair.split("=", 1)
        if k.strip() in out:
            raise CliError(f"--var {k.strip()} is given twice: give it once")
        out[k.strip()] = v
    return out


def cmd_recipe_run(args) -> int:
    cfg = load_cli_config(args)
    conn = open_cli_store(args)
    try:
        path = recipes.locate(args.recipe)
        rid = recipes.start(conn, path, _vars(args.var), cfg, endpoint=args.endpoint, pool=args.pool,
                            judge=args.judge, batch=batch_opts(args))
        view = recipes.recipe_view(conn, rid)
    except recipes.RecipeError as e:
        raise CliError(str(e)) from None
    finally:
        conn.close()
    print(rid, flush=True)
    print(f"recipe {rid} ({view['name']}): {len(view['steps'])} steps; "
          + ", ".join(f"{s['name']} ({s['task']})" for s in view["steps"]), file=sys.stderr)
    if view["status"] == "failed":
        print(f"recipe {rid} failed: {view['error']}", file=sys.stderr)
        return 1
    if not args.wait:
        print("the steps run in `workbench worker` (or the TUI's workers); `workbench recipe show "
              f"{rid}` shows their progress", file=sys.stderr)
        return 0
    return wait_for_recipe(resolve_db_path(getattr(args, "db", None)), cfg, rid)


def wait_for_recipe(db_path, cfg: dict, rid: int) -> int:
    from ..store import open_store
    from ..worker import run_worker
    conn = open_store(db_path)
    try:
        seen: set[int] = set()
        while True:
            outcomes = run_worker(db_path, cfg, until_idle=True)
            if outcomes and outcomes[-1] == "interrupted":
                print(f"stopped; recipe {rid} carries on with `workbench worker`", file=sys.stderr)
                return 130
            recipes.advance(conn, cfg, rid)
            view = recipes.recipe_view(conn, rid)
            for s in view["steps"]:
                if s["status"] == "done" and s["job_id"] not in seen:
                    seen.add(s["job_id"])
                    job = J.get_job(conn, s["job_id"])
                    print(f"step {s['idx'] + 1} ({s['name']}): {summary_line(job)}", file=sys.stderr)
                    report = J.job_report(conn, job)
                    if report:
                        print(report_line(report), file=sys.stderr)
            if view["status"] != "running":
                break
            time.sleep(0.5)       # another worker holds a step: watch it
        print(f"recipe {rid} {view['status']}" + (f": {view['error']}" if view["error"] else ""), file=sys.stderr)
        return 0 if view["status"] == "done" else 1
    finally:
        conn.close()


def _in_store(args, fn, *a):
    """fn(conn, *a) on the CLI's store, closed after; a RecipeError is the command's one-line error."""
    conn = open_cli_store(args)
    try:
        return fn(conn, *a)
    except recipes.RecipeError as e:
        raise CliError(str(e)) from None
    finally:
        conn.close()


def cmd_recipe_list(args) -> int:
    found = recipes.shipped()
    runs = _in_store(args, recipes.list_recipes)
    if args.json:
        print_json({"shipped": {k: str(v) for k, v in sorted(found.items())}, "runs": runs})
        return 0
    print("shipped recipes:")
    for name, path in sorted(found.items()):
        about = recipes.load(path).get("about", "")
        print(f"  {name:<12} {about}")
    if runs:
        print("runs:")
        for r in runs:
            print(f"  {r['id']:>4} {r['name']:<12} {r['status']:<8} {r['steps_done']}/{len(r['steps'])} steps done")
    return 0


def cmd_recipe_show(args) -> int:
    view = _in_store(args, recipes.recipe_view, args.id)
    if args.json:
        print_json(view)
        return 0
    print(f"recipe {view['id']} {view['name']}: {view['status']}, {view['steps_done']}/{len(view['steps'])} steps done"
          + (f"; {view['error']}" if view["error"] else ""))
    for s in view["steps"]:
        job = f"job {s['job_id']}" if s["job_id"] else "not queued"
        batch = f"; batch {round_cell(s['batch'])}" if "batch" in s else ""
        print(f"  {s['idx'] + 1}. {s['name']:<12} {s['task']:<14} {s['status']:<9} {s['done']}/{s['total']} done, "
              f"{s['failed']} failed, {s['kept']} kept ({job}{batch})")
    return 0


def cmd_recipe_cancel(args) -> int:
    out = _in_store(args, recipes.cancel, args.id)
    if args.json:
        print_json(out)
    else:
        view = out["recipe"]
        unstarted = [s for s in view["steps"] if not s["job_id"]]
        print(f"recipe {view['id']} ({view['name']}) cancelled; "
              + (f"jobs {', '.join(map(str, out['jobs']))} cancelled" if out["jobs"] else "no job was running")
              + (f"; steps not started: {', '.join(s['name'] for s in unstarted)}" if unstarted else ""))
    # a batch step's running batch is cancelled at the provider too, as `jobs cancel` does (stderr with --json)
    conn = open_cli_store(args)
    try:
        jobs = [J.get_job(conn, jid) for jid in out["jobs"]]
        codes = [cancel_at_provider(args, conn, j, sys.stderr if args.json else sys.stdout)
                 for j in jobs if j["params"].get("batch")]
    finally:
        conn.close()
    return max(codes, default=0)
