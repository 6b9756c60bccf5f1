"""The pool against real models: two llama-servers (SmolLM2-135M-Instruct), one killed mid-job.

    python benchmarks/real_model_pool.py [--rows 24] [--kill-after 0.3 | --no-kill] [--max-tokens 96] [--fixed N]

Builds (once, cached) what benchmarks/real_model.py builds, starts two llama-server processes on 127.0.0.1 (each
2 slots, 1 thread), puts both in a `spread` pool with default settings (no concurrency configured: the program
finds each server's limit), and runs `generate` on --rows seed prompts through the real CLI (`run ... --wait`).
When --kill-after of the items are done, one server is killed with SIGKILL, with requests in flight there.

Prints each endpoint's line from `jobs show` (limit found, share, rate, errors, DOWN), how long replies waited in
llama-server's queue against its service time (the client's mean latency minus the mean service time llama-server
logs per request, over that service time; target ~1x at most: a limit far above the server's 2 slots only makes
replies wait), and the figures the pool promises: items lost (not finished, or failed for a connection error) and items duplicated (a seed with more than
one generated row) must both be 0. Replies of a 135M model are messy: items whose reply could not be read are
failed with the raw reply kept, and are counted apart (that is the parsers' business, not the pool's).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import real_model as rm  # noqa: E402

SERVER_ARGS = ("-c", "4096", "-np", "2", "-t", "1")
CONNECTION_ERRORS = ("connection", "connect", "refused", "reset", "http")
SERVICE_MS = re.compile(r"\btotal time =\s*([0-9.]+) ms")


def _store_rows(db: Path, sql: str, args=()) -> list:
    conn = sqlite3.connect(db, timeout=30)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def _busy_slots(base_url: str) -> int | None:
    """Requests llama-server is working on (its /slots endpoint), or None when it does not say."""
    try:
        with urllib.request.urlopen(base_url.removesuffix("/v1") + "/slots", timeout=2) as r:
            return sum(1 for s in json.load(r) if s.get("is_processing"))
    except (OSError, ValueError):
        return None


def _service_ms(log_path: Path) -> list[float]:
    """Each request's service time as llama-server logs it (prompt + generation, queue wait excluded)."""
    return [float(m.group(1)) for m in SERVICE_MS.finditer(log_path.read_text(errors="replace"))]


def run(workdir: Path, rows: int, kill_after: float | None, max_tokens: int, log=print, fixed: int | None = None) -> dict:
    """The whole run (`kill_after` None: no server is killed; `fixed`: concurrency set by hand instead of found);
    returns the figures (also used by tests/test_real_model.py)."""
    server, model = rm.ensure_build()
    wb = rm.Workbench(workdir)
    procs: list[subprocess.Popen] = []
    with contextlib.ExitStack() as stack:
        urls = [stack.enter_context(rm.llama_server(server, model, workdir / f"llama-server-{i}.log",
                                                    args=SERVER_ARGS, procs=procs)) for i in range(2)]
        common = ["--timeout", "600", "--max-retries", "2", "--param", f"max_tokens={max_tokens}",
                  *(["--max-concurrency", str(fixed), "--fixed-concurrency"] if fixed else [])]
        for i, url in enumerate(urls):
            wb("endpoints", "add", f"smol{i}", "--base-url", url, "--model", "smollm2", *common)
        wb("pools", "add", "fleet", "--endpoint", "smol0", "--endpoint", "smol1", "--mode", "spread")
        wb("import", str(rm.shared_data() / "self-instruct-seed" / "seed_tasks_alpaca.json"), "--dataset", "seed")
        started = time.monotonic()
        job = subprocess.Popen([sys.executable, "-m", "workbench", "run", "generate", "--dataset", "seed",
                                "--pool", "fleet", "--filter", f"limit={rows}", "--wait"], env=wb.env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        killed_at = None
        while job.poll() is None:
            done = _store_rows(wb.db, "SELECT coalesce(sum(status IN ('done', 'failed', 'dropped')), 0) "
                                      "FROM job_items") if wb.db.exists() else [(0,)]
            if killed_at is None and kill_after is not None and done[0][0] >= kill_after * rows:
                busy = _busy_slots(urls[1])
                procs[1].kill()
                killed_at = {"items_finished": done[0][0], "slots_busy_there": busy,
                             "seconds": round(time.monotonic() - started, 1)}
                log(f"killed server smol1 at {killed_at}")
            time.sleep(0.2)
        out, err = job.communicate()
        wall = time.monotonic() - started
    if not out.strip():     # exit 1 with a job id only says some items failed: counted below
        raise SystemExit(f"run generate failed ({job.returncode}): {err.strip()[-2000:]}")
    job_id = int(out.split()[0])
    figures = rm.job_figures(wb, "generate (pool of 2, one killed)", job_id, wall)
    show = wb("jobs", "show", str(job_id)).stdout
    stats = json.loads(_store_rows(wb.db, "SELECT endpoint_stats FROM jobs WHERE id = ?", (job_id,))[0][0] or "[]")
    queueing = []
    for i, st in enumerate(stats):
        service = _service_ms(workdir / f"llama-server-{i}.log")
        if st.get("latency_ms") and service:
            mean_service = sum(service) / len(service)
            queueing.append({"endpoint": st["endpoint"], "limit": st["limit"], "peak": st["peak"],
                             "latency_ms": st["latency_ms"], "service_ms": round(mean_service, 1),
                             "wait_ratio": round((st["latency_ms"] - mean_service) / mean_service, 2)})
    written, seeds = _store_rows(wb.db, "SELECT count(*), count(DISTINCT parent_id) FROM samples WHERE job_id = ?",
                                 (job_id,))[0]
    failed = _store_rows(wb.db, "SELECT error FROM job_items WHERE job_id = ? AND status = 'failed'", (job_id,))
    lost_to_connection = sum(1 for (e,) in failed if any(w in (e or "").lower() for w in CONNECTION_ERRORS))
    return {**figures, "killed": killed_at, "written": written, "duplicated": written - seeds,
            "lost": figures["unfinished"] + lost_to_connection, "unreadable": len(failed) - lost_to_connection,
            "endpoint_lines": [ln.strip() for ln in show.splitlines() if ln.strip().startswith("smol")],
            "queueing": queueing}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=24)
    ap.add_argument("--kill-after", type=float, default=0.3, help="share of the items finished when smol1 is killed")
    ap.add_argument("--no-kill", action="store_true", help="kill no server (the queueing figures of a whole job)")
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--fixed", type=int, help="concurrency set by hand (e.g. 2, the slots: the reference)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="wb-real-pool-") as tmp:
        r = run(Path(tmp), args.rows, None if args.no_kill else args.kill_after, args.max_tokens,
                log=lambda m: print(m, file=sys.stderr), fixed=args.fixed)
    print(f"generate over a pool of two llama-servers ({SERVER_ARGS[3]} slots each), "
          f"{'concurrency fixed at ' + str(args.fixed) if args.fixed else 'concurrency found'}, {r['items']} items, "
          f"{r['seconds']} s; smol1 killed at {r['killed']}")
    for line in r["endpoint_lines"]:
        print("  " + line)
    for q in r["queueing"]:
        print(f"  {q['endpoint']}: limit {q['limit']} (peak {q['peak']}); mean latency {q['latency_ms']:.0f} ms, "
              f"mean service {q['service_ms']:.0f} ms: replies waited {q['wait_ratio']:.2f}x their service time "
              f"in the server's queue (target ~1x at most)")
    print(f"  finished {r['parsed'] + r['failed']} of {r['items']}: read {r['parsed']} (kept {r['kept']}), "
          f"unreadable replies {r['unreadable']} (raw kept)")
    for why, n in r["reasons"]:
        print(f"    {n}x {why}")
    ok = r["lost"] == 0 and r["duplicated"] == 0
    print(f"  lost {r['lost']}, duplicated {r['duplicated']} (target 0 and 0): {'met' if ok else 'NOT MET'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
