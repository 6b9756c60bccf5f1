"""CLI for LLM work: `endpoints`, `pools`, `run TASK`, `worker`, `jobs`."""
from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
import time
from pathlib import Path

from .. import endpoints as E
from .. import jobs as J
from .common import CliError, guard, load_cli_config, open_cli_store, parse_kv, print_json
from . import numbers
from ..store import open_store, resolve_db_path
from ..tasks import TaskError, load_tasks, params_help
from ..safe_text import raw_stream
from ..batch_state import batch_cell, batch_lines

WORKER_NICE = 10


def register(sub, common):
    _register_run(sub, common)
    w = sub.add_parser("worker", parents=[common], help="run queued LLM jobs (keep it running, or --until-idle)")
    w.add_argument("--until-idle", action="store_true", help="exit when no job is left to run")
    w.add_argument("--job", type=numbers.sample_id, default=None, help="run only this job")
    w.add_argument("--lease-seconds", type=numbers.number_at_least(0, above=True), default=J.LEASE_SECONDS,
                   help="how long a silent worker keeps its job before another may take it over")
    w.add_argument("--max-inflight", type=numbers.at_least(1), default=None,
                   help="items in flight at once (default: twice the pool's total concurrency)")
    w.set_defaults(handler=cmd_worker)
    _register_jobs(sub, common)


# --- run -------------------------------------------------------------------------------------------------------

def _register_run(sub, common):
    p = sub.add_parser("run", parents=[common], help="queue an LLM task as a job (see `workbench run TASK --help`)")
    ts = p.add_subparsers(dest="task", metavar="TASK", required=True)
    for name, cls in sorted(load_tasks().items()):
        tp = ts.add_parser(name, parents=[common], help=cls.summary, description=cls.summary,
                           epilog=f"params (--param k=v):\n{params_help(cls)}\n\nfilter keys (--filter k=v): "
                                  + ", ".join(J.FILTER_KEYS),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        tp.add_argument("--dataset", required=cls.needs_dataset, help="input dataset")
        g = tp.add_mutually_exclusive_group(required=True)
        g.add_argument("--endpoint", help="endpoint name")
        g.add_argument("--pool", help="pool name")
        tp.add_argument("--judge", default=None, help="endpoint or pool that judges (default: the generators)")
        if "judge" in cls.roles:
            tp.add_argument("--allow-self-judge", action="store_true",
                            help="let a judge rate candidates its own model generated (refused by default)")
        if cls.writes_samples:
            tp.add_argument("--into", default=None, help=f"target dataset (default: <dataset>-{name})")
        tp.add_argument("--param", action="append", metavar="K=V", help="task parameter (see below)")
        tp.add_argument("--filter", action="append", metavar="K=V", help="only input samples matching")
        tp.add_argument("--wait", action="store_true", help="run a worker here until the job ends, with progress")
        add_batch_args(tp)
        if name == "preference":
            tp.add_argument("--candidates-from", metavar="D1,D2,...",
                            help="add the answers in these datasets (joined on the normalized instruction + input) "
                                 "as candidates, then judge the stored candidates (implies candidates=existing)")
        tp.set_defaults(handler=guard(cmd_run))


def cmd_run(args) -> int:
    from .data import check_dataset_name
    check_dataset_name(getattr(args, "into", None), "--into")
    cfg = load_cli_config(args)
    conn = open_cli_store(args)
    if getattr(args, "candidates_from", None):
        _add_candidates(conn, args)
    try:
        job_id = J.queue_job(conn, args.task, config=cfg, dataset=args.dataset, endpoint=args.endpoint,
                             pool=args.pool, judge=args.judge, into=getattr(args, "into", None),
                             params=parse_kv(args.param, "--param"), filter=J.parse_filter(args.filter),
                             allow_self_judge=getattr(args, "allow_self_judge", False),
                             batch=batch_opts(args))
        job = J.get_job(conn, job_id)
    finally:
        conn.close()
    print(job_id, flush=True)
    print(f"queued job {job_id}: {args.task}, {job['total']} items"
          + (f" into {job['params']['into']}" if job["params"].get("into") else ""), file=sys.stderr)
    if not args.wait:
        _say_if_no_worker(args, cfg, job_id)
        return 0
    return wait_for_job(resolve_db_path(getattr(args, "db", None)), cfg, job_id, quiet=args.quiet)


def add_batch_args(p) -> None:
    """--batch / --batch-poll, the same for `run TASK` and `recipe run`."""
    p.add_argument("--batch", action="store_true",
                   help="send the requests through the endpoint's Batch API (files + batches: cheaper, up to "
                        "24 h); a multi-step task takes one batch per step")
    p.add_argument("--batch-poll", type=float, default=None, metavar="SECONDS",
                   help="with --batch: first interval between status polls (default 30, backing off to 300)")


def batch_opts(args) -> dict | None:
    from ..batch import POLL_SECONDS
    if not args.batch:
        if args.batch_poll is not None:
            raise CliError("--batch-poll goes with --batch")
        return None
    return {"poll": POLL_SECONDS if args.batch_poll is None else args.batch_poll}


def _say_if_no_worker(args, cfg: dict, job_id: int) -> None:
    """A queued job with no worker running waits for nobody: say so, and at a terminal offer to start one."""
    from ..presence import running_workers
    db = resolve_db_path(getattr(args, "db", None))
    if running_workers(db):
        return
    print(f"no worker is running: job {job_id} waits in the queue. Start one with `workbench worker` (keeps "
          f"running) or `workbench worker --until-idle`, or queue with --wait to run it here.", file=sys.stderr)
    if args.quiet or getattr(args, "json", False) or not (sys.stdin.isatty() and sys.stderr.isatty()):
        return
    try:
        answer = input("start a worker in the background now? [y/N] ")
    except EOFError:
        return
    if answer.strip().lower() in ("y", "yes"):
        from ..worker import spawn_detached
        config = getattr(args, "config", None)
        pid, log = spawn_detached(db, Path(config) if config else None)
        print(f"worker {pid} started (`workbench worker --until-idle`); log: {log}", file=sys.stderr)


def _add_candidates(conn, args) -> None:
    from ..candidates import candidates_from_datasets
    from ..importer import ImportFailed
    sources = [x.strip() for x in args.candidates_from.split(",") if x.strip()]
    if not sources:
        raise CliError("--candidates-from: name one or more datasets, e.g. D1,D2")
    params = parse_kv(args.param, "--param")
    if params.get("candidates", "existing") != "existing":
        raise CliError("--candidates-from judges stored candidates: it cannot go with candidates="
                       f"{params['candidates']}")
    try:
        out = candidates_from_datasets(conn, args.dataset, sources)
    except ImportFailed as e:
        raise CliError(str(e)) from None
    args.param = [p for p in (args.param or []) if not p.startswith("candidates=")] + ["candidates=existing"]
    print(f"candidates from {', '.join(sources)}: {out['added']} added to {out['matched']} samples of "
          f"{args.dataset!r}; {len(out['unmatched'])} samples matched no row", file=sys.stderr)


def wait_for_job(db_path, cfg: dict, job_id: int, quiet: bool = False) -> int:
    """Run the job here (or watch the worker that holds it) until it ends; progress on stderr."""
    from ..worker import run_worker
    printer = ProgressPrinter(io.StringIO() if quiet else None)   # --quiet: no progress lines
    conn = open_store(db_path)
    try:
        while True:
            outcomes = run_worker(db_path, cfg, job_id=job_id, on_progress=printer)
            if outcomes and outcomes[-1] == "interrupted":
                printer.end()
                print(f"stopped; job {job_id} is back in the queue (`workbench worker` resumes it)", file=sys.stderr)
                return 130
            job = J.get_job(conn, job_id)
            if job["status"] not in ("queued", "running"):
                break
            printer(job)      # another worker holds it: watch until it ends
            time.sleep(1.0)
        printer.end()
        if not quiet:
            print(summary_line(job), file=sys.stderr)
            report = J.job_report(conn, job)
            if report:
                print(report_line(report), file=sys.stderr)
        if job["error"]:
            print(f"job {job_id}: {job['error']}", file=sys.stderr)
        return 0 if job["status"] == "done" and not job["failed"] else 1
    finally:
        conn.close()


def summary_line(j: dict) -> str:
    out = f"job {j['id']} {j['kind']} {j['status']}: {j['done']}/{j['total']} done, {j['failed']} failed, " \
          f"{j['kept']} kept, {j['dropped']} dropped"
    if j["drop_reasons"]:
        out += " (" + ", ".join(f"{k}: {v}" for k, v in j["drop_reasons"].items()) + ")"
    out += f"; {j['requests']} requests, {j['cache_hits']} cache hits, {j['retries']} retries, " \
           f"tokens {j['tokens_in']}+{j['tokens_out']}, cost {j['cost']:.4f}"
    return out


def report_line(report: dict) -> str:
    return "report: " + ", ".join(f"{k} {v}" for k, v in report.items())


def fmt_eta(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def progress_line(j: dict) -> str:
    pct = 100 * j["fraction"]
    return (f"job {j['id']} {j['kind']} {j['status']}: {j['done'] + j['failed']}/{j['total']} ({pct:.0f}%), "
            f"{j['failed']} failed, {j['items_per_s']:.1f} items/s, ETA {fmt_eta(j['eta_s'])}, "
            f"tokens {j['tokens_in']}+{j['tokens_out']}, cost {j['cost']:.4f}")


class ProgressPrinter:
    """One updating line on a terminal; a line every few seconds otherwise."""

    def __init__(self, stream=None, every: float = 5.0):
        self.stream = raw_stream(stream or sys.stderr)   # our own line, with CR: no untrusted text in it
        self.tty = self.stream.isatty()
        self.every = every
        self.last = 0.0
        self.width = 0

    def __call__(self, job: dict) -> None:
        line = progress_line(job)
        if self.tty:
            self.stream.write("\r" + line.ljust(self.width))
            self.width = len(line)
            self.stream.flush()
        elif time.monotonic() - self.last >= self.every:
            self.stream.write(line + "\n")
            self.stream.flush()
            self.last = time.monotonic()

    def end(self) -> None:
        if self.tty and self.width:
            self.stream.write("\n")
            self.width = 0


# --- worker and jobs ------------------------------------------------------------------------------------------

def cmd_worker(args) -> int:
    from ..worker import run_worker
    cfg = load_cli_config(args)
    if args.job is not None:      # a job that does not exist would leave the worker with nothing to do, silently
        conn = open_cli_store(args)
        try:
            status = J.get_job(conn, args.job)["status"]
        except TaskError as e:
            raise CliError(str(e)) from None
        finally:
            conn.close()
        if status not in ("queued", "running"):
            raise CliError(f"job {args.job} is {status}: nothing to run (`workbench jobs resume` or `jobs retry` "
                           f"queues it again)")
    handler = logging.StreamHandler(sys.stderr)
    # the log is a file (the TUI's workers) that outlives the run: no key in it, whatever a message quotes
    handler.setFormatter(RedactingFormatter(E.secrets(cfg),
                                            "%(asctime)s %(name)s pid=%(process)d %(levelname)s %(message)s"))
    level = logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=level, handlers=[handler], force=True)
    for noisy in ("httpx", "httpx2", "openai"):   # one line per request would drown the log
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        # background work yields the CPU to the curator's TUI: on a 2-core box a worker at full speed took Review's
        # keypress p95 from 35 to 74 ms; at nice 10, 45 ms (bench_review.py --with-job)
        os.nice(WORKER_NICE)
    except OSError as e:
        logging.getLogger("workbench.worker").warning("cannot lower the worker's priority: %s", e)
    ran = run_worker(resolve_db_path(getattr(args, "db", None)), cfg, until_idle=args.until_idle, job_id=args.job,
                     lease_seconds=args.lease_seconds, max_inflight=args.max_inflight)
    logging.getLogger("workbench.worker").info("worker exits after %d job run(s)", len(ran))
    return 0


class RedactingFormatter(logging.Formatter):
    def __init__(self, secrets: list[str], fmt: str):
        super().__init__(fmt)
        self.secrets = secrets

    def format(self, record: logging.LogRecord) -> str:
        return E.redact(super().format(record), self.secrets)


def _cancel_batch(args, conn, job: dict) -> int:
    """The job is cancelled in the store; a batch it had running at the provider is cancelled there too."""
    print(f"job {args.id}: {job['status']}")
    return cancel_at_provider(args, conn, job, sys.stdout)


def cancel_at_provider(args, conn, job: dict, out) -> int:
    """A batch job just cancelled in the store (`jobs cancel`, `recipe cancel`): its running batch is cancelled at
    the provider too, saying so on `out`. 1 when the provider could not be told (the batch may still bill)."""
    import asyncio
    from ..batch import cancel_remote_batch
    from ..batch_state import note_remote_status, open_round
    rnd = open_round(conn, job["id"])
    if rnd is None or rnd["state"] != "submitted":
        return 0
    try:
        status = asyncio.run(cancel_remote_batch(load_cli_config(args), job, rnd["batch_id"]))
    except Exception as e:      # the store says cancelled either way: say plainly what still runs remotely
        print(f"job {job['id']}: could not cancel batch {rnd['batch_id']} at the provider: "
              f"{E.redact(f'{type(e).__name__}: {e}', E.secrets(load_cli_config(args)))[:300]}; it may still run "
              "(and be billed); cancel it in the provider's console", file=sys.stderr)
        return 1
    note_remote_status(conn, rnd["id"], status)
    print(f"job {job['id']}: batch {rnd['batch_id']} at the provider: {status}", file=out)
    return 0


def _register_jobs(sub, common):
    p = sub.add_parser("jobs", parents=[common], help="list LLM jobs; cancel, pause, resume, retry, show")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=guard(cmd_jobs))
    js = p.add_subparsers(dest="jobs_command", metavar="ACTION")
    for action, help_ in (("cancel", "stop a job for good (its outputs so far stay)"),
                          ("pause", "stop a job; resume continues where it stopped"),
                          ("resume", "queue a paused job again"),
                          ("retry", "run the failed items of a job again"),
                          ("show", "one job in full, with its latest failures")):
        a = js.add_parser(action, parents=[common], help=help_)
        a.add_argument("id", type=numbers.sample_id)
        if action == "show":
            a.add_argument("--json", action="store_true")
            a.add_argument("--failures", type=numbers.at_least(0), default=10, help="how many failed items to show")
        a.set_defaults(handler=guard(cmd_job_action), action=action)


def cmd_jobs(args) -> int:
    conn = open_cli_store(args)
    try:
        jobs = J.list_jobs(conn)
    finally:
        conn.close()
    keys = ("id", "kind", "status", "total", "done", "failed", "kept", "dropped", "items_per_s", "eta_s",
            "tokens_in", "tokens_out", "cost", "cache_hits", "error", "stale", "lease_owner")
    if args.json:
        print_json([{k: j[k] for k in keys} | {"params": j["params"]} | ({"batch": j["batch"]} if "batch" in j else {})
                    for j in jobs])
        return 0
    if not jobs:
        print("no jobs")
        return 0
    print(f"{'id':>4} {'kind':<16} {'status':<10} {'total':>7} {'done':>7} {'failed':>6} {'items/s':>8} {'eta':>8}  "
          "batch")
    for j in jobs:
        status = "stale" if j["stale"] else j["status"]
        print(f"{j['id']:>4} {j['kind']:<16} {status:<10} {j['total']:>7} {j['done']:>7} {j['failed']:>6} "
              f"{j['items_per_s']:>8.1f} {fmt_eta(j['eta_s']):>8}  {batch_cell(j)}")
    stale = [j for j in jobs if j["stale"]]
    for j in stale:
        print(f"job {j['id']}: stale: its worker ({j['lease_owner'] or 'unknown'}) stopped renewing its lease "
              f"{time.time() - (j['lease_expires'] or 0):.0f} s ago; `workbench worker` takes it over")
    return 0


def cmd_job_action(args) -> int:
    conn = open_cli_store(args)
    try:
        if args.action == "show":
            job = J.get_job(conn, args.id)
            fails = J.failures(conn, args.id, args.failures)
            report = J.job_report(conn, job)
            if args.json:
                print_json({**job, "failures": fails, "report": report})
                return 0
            print(summary_line(job))
            if report:
                print(report_line(report))
            print(f"params: {json.dumps(job['params'], ensure_ascii=False)}")
            for line in batch_lines(job) or J.endpoint_lines(job):
                print(line)
            if job["error"]:
                print(f"error: {job['error']}")
            for f in fails:
                print(f"--- item {f['key']} ({f['status']}, {f['attempts']} attempt(s)) at {f['updated_at']}")
                if f["error"]:
                    print(f["error"])
                if f["raw"] is not None:
                    print("raw reply:")
                    print(f["raw"])
            return 0
        if args.action == "cancel":
            job = J.cancel_job(conn, args.id)
            if job["params"].get("batch"):
                return _cancel_batch(args, conn, job)
        elif args.action == "pause":
            job = J.pause_job(conn, args.id)
        elif args.action == "resume":
            job = J.resume_job(conn, args.id)
        else:
            n = J.retry_failed(conn, args.id)
            job = J.get_job(conn, args.id)
            print(f"job {args.id}: {n} failed item(s) queued again; status {job['status']}")
            return 0
        print(f"job {args.id}: {job['status']}")
        if args.action == "resume":
            print("run `workbench worker` (or open the Jobs screen) to continue it", file=sys.stderr)
        return 0
    finally:
        conn.close()
