"""Generation throughput: 2,000 items against the OpenAI-compatible test server (0.2 s latency, 64 slots: a limit of
320 requests/s), run by a real `workbench worker` process.

    python benchmarks/bench_generate.py [--items 2000] [--latency 0.2] [--capacity 64] [--concurrency 128]
                                        [--fault-rates 0,0.05]

The server runs in its own process so it shares neither the worker's event loop nor its interpreter. For each fault
rate prints: items/s and its share of the limit, HTTP requests/s, retries, lost items (target 0), the worker's peak
RSS and CPU per item. Throughput is over the job as the worker logs it (claim to done, including client set-up and
the tail of retries); the whole process, minus its start-up on an empty queue, is printed beside it.
Targets: >= 90 % of the limit without faults, >= 80 % with 5 % faults, zero lost items, RSS <= 200 MB.
Faults drawn at the rate: 429 (Retry-After 0.2 s), 500, dropped connection, truncated body, equally.
Keypress latency while a job runs is measured by the TUI benchmarks (bench_review.py), not here.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def start_server(latency: float, capacity: int, fault_rate: float) -> tuple[subprocess.Popen, int]:
    p = subprocess.Popen([sys.executable, str(ROOT / "tests" / "llm_server.py"), "--latency", str(latency),
                          "--capacity", str(capacity), "--fault-rate", str(fault_rate)],
                         stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    if not line.startswith("PORT "):
        p.kill()
        raise SystemExit(f"test server did not start: {line!r}")
    return p, int(line.split()[1])


def stop_server(p: subprocess.Popen) -> dict:
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=30)
    return json.loads(out.strip().splitlines()[-1])


def run_worker(db: Path, cfg: Path, env: dict, log: Path | None = None, code: Path = ROOT) -> tuple[float, int, int, float]:
    """(seconds, exit status, peak RSS in KB, CPU seconds) of one `workbench worker --until-idle` process (of the
    checkout `code`: another one's code can be measured in the same run)."""
    t0 = time.perf_counter()
    out = open(log, "wb") if log else subprocess.DEVNULL
    p = subprocess.Popen([sys.executable, "-m", "workbench", "worker", "--until-idle", "--db", str(db),
                          "--config", str(cfg)], stdout=out, stderr=out, env=env, cwd=code)
    _, status, usage = os.wait4(p.pid, 0)
    if log:
        out.close()
    p.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - t0, p.returncode, usage.ru_maxrss, usage.ru_utime + usage.ru_stime


def one_run(args, fault_rate: float, startup: float, startup_cpu: float) -> dict:
    from workbench import jobs as J
    from workbench.config import load_config, save_config
    from workbench.endpoints import Endpoint, add_endpoint
    from workbench.samples import insert_samples
    from workbench.store import ensure_dataset, open_store, transaction

    tmp = Path(tempfile.mkdtemp(prefix="bench-generate-"))
    db, cfg = tmp / "store.db", tmp / "config.toml"
    env = {**os.environ, "WORKBENCH_DB": str(db), "WORKBENCH_CONFIG": str(cfg), "XDG_STATE_HOME": str(tmp)}
    srv, port = start_server(args.latency, args.capacity, fault_rate)
    try:
        save_config(add_endpoint({}, Endpoint(name="bench", base_url=f"http://127.0.0.1:{port}/v1", model="test-model",
                                              max_concurrency=args.concurrency, timeout=30, max_retries=8)), cfg)
        conn = open_store(db)
        with transaction(conn):
            did = ensure_dataset(conn, "bench")
            insert_samples(conn, did, [{"instruction": f"Write a short note about topic number {i}."}
                                       for i in range(args.items)])
        jid = J.queue_job(conn, "generate", config=load_config(cfg), dataset="bench", endpoint="bench")
        seconds, code, rss_kb, cpu = run_worker(db, cfg, env, tmp / "worker.log")
        stats = stop_server(srv)
    except BaseException:
        srv.kill()
        raise
    job = J.get_job(conn, jid)
    written = conn.execute("SELECT count(*), count(DISTINCT parent_id) FROM samples WHERE job_id = ?",
                           (jid,)).fetchone()
    conn.close()
    limit = args.capacity / args.latency
    busy = job_window(tmp / "worker.log", jid)
    wall = max(seconds - startup, 1e-9)
    return {"fault_rate": fault_rate, "exit": code, "wall_s": seconds, "run_s": busy,
            "items_per_s": job["done"] / busy, "share": job["done"] / busy / limit,
            "share_process": job["done"] / wall / limit,
            "http_per_s": stats["requests"] / busy, "server_requests": stats["requests"],
            "faults_served": stats["faults"], "server_max_in_flight": stats["max_in_flight"],
            "retries": job["retries"], "done": job["done"], "failed": job["failed"],
            "lost": args.items - written[1], "duplicates": written[0] - written[1], "rss_mb": rss_kb / 1024,
            "cpu_ms_per_item": 1000 * (cpu - startup_cpu) / max(job["done"], 1)}


def job_window(log: Path, jid: int) -> float:
    """Seconds from the worker's "job N ... claimed" log line to its "job N: done" line (ms timestamps)."""
    stamps = {}
    for line in log.read_text().splitlines():
        for key, marker in (("start", f"job {jid} (generate): claimed"), ("end", f"job {jid}: done")):
            if marker in line:
                stamps[key] = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return stamps["end"] - stamps["start"]


def startup_cost(args) -> tuple[float, float]:
    """(seconds, CPU seconds) of a worker process on an empty queue: interpreter + imports + store open."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-generate-empty-"))
    env = {**os.environ, "WORKBENCH_DB": str(tmp / "s.db"), "WORKBENCH_CONFIG": str(tmp / "c.toml")}
    runs = [run_worker(tmp / "s.db", tmp / "c.toml", env) for _ in range(3)]
    return min(r[0] for r in runs), min(r[3] for r in runs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--capacity", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=128, help="the endpoint's max_concurrency")
    ap.add_argument("--fault-rates", default="0,0.05")
    args = ap.parse_args()
    startup, startup_cpu = startup_cost(args)
    limit = args.capacity / args.latency
    print(f"{args.items} items, server latency {args.latency} s x {args.capacity} slots = limit {limit:.0f} req/s; "
          f"endpoint max_concurrency {args.concurrency}; worker start-up on an empty queue {startup:.2f} s "
          f"(subtracted); cpus {os.cpu_count()}, load {os.getloadavg()[0]:.1f}")
    ok = True
    for rate in (float(r) for r in args.fault_rates.split(",")):
        load0 = os.getloadavg()[0]
        r = one_run(args, rate, startup, startup_cpu)
        print(f"faults {rate:4.0%}: {r['items_per_s']:6.1f} items/s = {r['share']:5.1%} of the limit over the job "
              f"({r['run_s']:.2f} s from claim to done; whole process {r['wall_s']:.2f} s, "
              f"{r['share_process']:.1%} with start-up subtracted); HTTP {r['http_per_s']:.1f} req/s, "
              f"{r['server_requests']} requests, faults served {r['faults_served']}, retries {r['retries']}, "
              f"server peak in flight {r['server_max_in_flight']}; done {r['done']} failed {r['failed']} "
              f"lost {r['lost']} duplicates {r['duplicates']}; worker peak RSS {r['rss_mb']:.0f} MB, "
              f"CPU {r['cpu_ms_per_item']:.2f} ms/item; exit {r['exit']}; load {load0:.1f} -> {os.getloadavg()[0]:.1f}")
        target = 0.90 if rate == 0 else 0.80
        ok &= r["share"] >= target and r["lost"] == 0 and r["duplicates"] == 0 and r["rss_mb"] <= 200
    print("targets met" if ok else "targets NOT met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
