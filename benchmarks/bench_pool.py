"""A pool over three test servers of different capacity and latency, with default endpoint settings (the
concurrency per endpoint is found by the program), against the same job on one endpoint hand-tuned to the exact
total capacity (the reference), in the same run.

    python benchmarks/bench_pool.py [--items 4000] [--capacities 16,32,64] [--latencies 2,1.6,2.4]
                                    [--small-slots 2,4] [--small-latency 0.5] [--only fleet|small]
                                    [--compare-code DIR]

Each server runs in its own process and queues what exceeds its capacity (as vLLM does). Prints, per run: items/s
as a share of the summed limit (sum of capacity/latency); "capacity busy", the slot-seconds the servers spent on
requests over their summed capacity times the job's run time (the ramp-up and the last round trip count against
it); the limit each endpoint found and its share of the replies; then both as ratios to the reference's.
Target: >= 90 % of the summed capacity busy. The default latencies are seconds, as LLM replies are: at 0.5 s the
client's own CPU on a shared 2-core machine, not the scheduling, bounds the rate.
The small-server case: one server with a few slots (--small-slots, each count in turn) and the queue behind them,
as a llama-server with `-np 2` is, driven with defaults against the same server with the limit set by hand to
its slots (the reference). Targets: the limit found settles within 2x the slots, the requests' mean wait in the
server's queue (second half of the job, after the start's first burst of 16) stays <= 1x the service time, and
items/s >= 95 % of the reference's.
--compare-code DIR runs the pool (and the small servers' defaults) once more with the worker of another checkout
(e.g. main's, `git archive main | tar -x -C DIR`), in the same run, for a before/after ratio.
Failover (an endpoint going down mid-job: 0 lost, 0 duplicated) is tested in tests/test_pool.py.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_generate import ROOT, job_window, run_worker, start_server, stop_server  # noqa: E402

sys.path.insert(0, str(ROOT))


def one_run(items: int, servers: list[tuple[int, float]], fixed: int | None, code: Path = ROOT) -> dict:
    from workbench import jobs as J
    from workbench.config import save_config
    from workbench.endpoints import Endpoint, add_endpoint, add_pool
    from workbench.samples import insert_samples
    from workbench.store import ensure_dataset, open_store, transaction

    tmp = Path(tempfile.mkdtemp(prefix="bench-pool-"))
    db, cfg_path = tmp / "store.db", tmp / "config.toml"
    env = {**os.environ, "WORKBENCH_DB": str(db), "WORKBENCH_CONFIG": str(cfg_path), "XDG_STATE_HOME": str(tmp)}
    procs = [start_server(lat, cap, 0.0) for cap, lat in servers]
    try:
        cfg: dict = {}
        for i, (_, port) in enumerate(procs):
            ep = Endpoint(name=f"s{i}", base_url=f"http://127.0.0.1:{port}/v1", model="test-model", timeout=60,
                          max_retries=8, **({"max_concurrency": fixed, "adaptive": False} if fixed else {}))
            cfg = add_endpoint(cfg, ep)
        cfg = add_pool(cfg, "fleet", [f"s{i}" for i in range(len(procs))])
        save_config(cfg, cfg_path)
        conn = open_store(db)
        with transaction(conn):
            did = ensure_dataset(conn, "bench")
            insert_samples(conn, did, [{"instruction": f"Write a short note about topic number {i}."}
                                       for i in range(items)])
        jid = J.queue_job(conn, "generate", config=cfg, dataset="bench", pool="fleet")
        _, code, rss_kb, _ = run_worker(db, cfg_path, env, tmp / "worker.log", code=code)
        stats = [stop_server(p) for p, _ in procs]
    except BaseException:
        for p, _ in procs:
            p.kill()
        raise
    job = J.get_job(conn, jid)
    written = conn.execute("SELECT count(*), count(DISTINCT parent_id) FROM samples WHERE job_id = ?",
                           (jid,)).fetchone()
    conn.close()
    busy = job_window(tmp / "worker.log", jid)
    shutil.rmtree(tmp, ignore_errors=True)     # (store, config and log of this run: nothing to keep)
    limit = sum(cap / lat for cap, lat in servers)
    # what the servers saw: slot-seconds held by requests over the capacity they offered during the job
    busy_share = sum(s["busy_seconds"] for s in stats) / (sum(cap for cap, _ in servers) * busy)
    return {"exit": code, "share": job["done"] / busy / limit, "busy": busy_share, "items_per_s": job["done"] / busy, "run_s": busy,
            "done": job["done"], "failed": job["failed"], "lost": items - written[1],
            "duplicates": written[0] - written[1], "rss_mb": rss_kb / 1024,
            "peak_in_flight": [s["max_in_flight"] for s in stats], "lines": J.endpoint_lines(job),
            "limits": [f["limit"] for f in job.get("endpoint_stats") or []], "waits": [s["waits"] for s in stats]}


def small_server(slots: int, latency: float, items: int, other: Path | None) -> bool:
    """One server of `slots` slots: defaults against the limit set by hand to `slots` (and, given `other`, that
    checkout's defaults); prints; True if met."""
    ref = one_run(items, [(slots, latency)], fixed=slots)
    found = one_run(items, [(slots, latency)], fixed=None)
    runs = [("hand-set limit = slots", ref), ("defaults (limit found)", found)]
    if other:
        runs.append((f"defaults, code of {other}", one_run(items, [(slots, latency)], fixed=None, code=other)))
    for name, r in runs:
        waits = r["waits"][0]
        late = waits[len(waits) // 2:]
        r["wait_ratio"] = sum(late) / max(1, len(late)) / latency
        r["wait_all"] = sum(waits) / max(1, len(waits)) / latency
        print(f"  {slots} slots, {name}: {r['items_per_s']:.2f} items/s over {r['run_s']:.1f} s; limit {r['limits']}, "
              f"server peak in flight {r['peak_in_flight']}; mean wait in the server's queue {r['wait_ratio']:.2f}x "
              f"the service time (second half; whole job {r['wait_all']:.2f}x); done {r['done']} lost {r['lost']} "
              f"duplicates {r['duplicates']}; exit {r['exit']}")
    rate = found["items_per_s"] / ref["items_per_s"]
    limit = found["limits"][0]
    ok = limit <= 2 * slots and found["wait_ratio"] <= 1.05 and rate >= 0.95
    print(f"  {slots} slots: limit found {limit} (target <= {2 * slots}), wait {found['wait_ratio']:.2f}x service "
          f"(target ~1x: <= 1.05; hand-set: {ref['wait_ratio']:.2f}x), items/s {rate:.2f}x the hand-set limit's "
          f"(target >= 0.95): {'met' if ok else 'NOT met'}")
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=4000)
    ap.add_argument("--capacities", default="16,32,64")
    ap.add_argument("--latencies", default="2,1.6,2.4")
    ap.add_argument("--small-slots", default="2,4", help="slot counts of the small-server case, each run in turn")
    ap.add_argument("--small-latency", type=float, default=0.5, help="service time of the small server, seconds")
    ap.add_argument("--small-items", type=int, default=40, help="items per slot in the small-server case")
    ap.add_argument("--only", choices=("fleet", "small"))
    ap.add_argument("--compare-code", type=Path, help="another checkout whose worker is measured too (same run)")
    args = ap.parse_args()
    if args.only != "fleet":
        print(f"small server: {args.small_items} items per slot, service time {args.small_latency} s; cpus "
              f"{os.cpu_count()}, load {os.getloadavg()[0]:.1f}")
        for slots in (int(x) for x in args.small_slots.split(",")):
            small_server(slots, args.small_latency, args.small_items * slots, args.compare_code)
    if args.only == "small":
        return 0
    caps = [int(c) for c in args.capacities.split(",")]
    lats = [float(x) for x in args.latencies.split(",")]
    limit = sum(c / l for c, l in zip(caps, lats))
    print(f"{args.items} items; servers (capacity x latency): "
          + ", ".join(f"{c} x {l} s" for c, l in zip(caps, lats)) + f"; summed limit {limit:.0f} req/s; "
          f"cpus {os.cpu_count()}, load {os.getloadavg()[0]:.1f}")
    # reference: one server of the summed capacity at the mean latency, endpoint fixed at exactly that capacity
    mean_lat = sum(c for c in caps) / limit
    ref = one_run(args.items, [(sum(caps), mean_lat)], fixed=sum(caps))
    pool = one_run(args.items, list(zip(caps, lats)), fixed=None)
    runs = [("reference (one server, hand-tuned)", ref), ("pool (defaults, limits found)", pool)]
    if args.compare_code:
        other = one_run(args.items, list(zip(caps, lats)), fixed=None, code=args.compare_code)
        runs.append((f"pool, code of {args.compare_code}", other))
    for name, r in runs:
        print(f"{name}: {r['items_per_s']:.1f} items/s = {r['share']:.1%} of the summed limit over "
              f"{r['run_s']:.2f} s; capacity busy {r['busy']:.1%}; server peak in flight {r['peak_in_flight']}; done {r['done']} failed "
              f"{r['failed']} lost {r['lost']} duplicates {r['duplicates']}; RSS {r['rss_mb']:.0f} MB; exit {r['exit']}")
        for line in r["lines"]:
            print("   ", line)
    print(f"pool / reference: {pool['share'] / ref['share']:.2f}x items/s, {pool['busy'] / ref['busy']:.2f}x "
          f"capacity busy; pool keeps {pool['busy']:.1%} of the summed capacity busy (target >= 90 %): "
          f"{'met' if pool['busy'] >= 0.9 else 'NOT met'}")
    if args.compare_code:
        print(f"pool / pool with {args.compare_code}'s code: {pool['busy'] / other['busy']:.3f}x capacity busy "
              f"({pool['busy']:.1%} vs {other['busy']:.1%}), {pool['items_per_s'] / other['items_per_s']:.3f}x items/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
