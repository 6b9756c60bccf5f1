"""The Batch API backend against the online path on the same items, in the same run.

    python benchmarks/bench_batch.py [--items 2000] [--task generate]

One test server (tests/llm_server.py, no latency, its batches complete on the first poll) and the same items in two
datasets: an online job (one HTTP request per item) and a batch job (`--batch`: prepare, upload, create, poll,
download, ingest), each run by the real worker in this process, with an empty reply cache. Prints each path's wall
time and items/s, the batch path's time per step, and the ratios batch / online: the batch path's own overhead
(what it costs this machine to drive a batch, the provider's queueing time excluded) and its ingest rate.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--task", default="generate")
    args = ap.parse_args(argv)

    from llm_server import LLMServer, write_endpoint
    from workbench import batch as BA
    from workbench import jobs as J
    from workbench.config import load_config
    from workbench.samples import insert_samples
    from workbench.store import ensure_dataset, open_store, transaction
    from workbench.worker import run_worker

    # time per step of the batch path, measured around the backend's own methods
    steps: dict[str, float] = defaultdict(float)

    def timed(name, fn):
        async def wrapper(self, *a, **kw):
            t0 = time.perf_counter()
            try:
                return await fn(self, *a, **kw)
            finally:
                steps[name] += time.perf_counter() - t0
        return wrapper
    for name in ("_prepare", "_upload", "_submit", "_poll", "_ingest"):
        setattr(BA.BatchJob, name, timed(name.strip("_"), getattr(BA.BatchJob, name)))

    tmp = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    db, cfg_path = tmp / "store.db", tmp / "config.toml"
    with LLMServer(keep_bodies=0) as srv:
        srv.batch.polls_to_finish = 1
        write_endpoint(cfg_path, srv, max_concurrency=32, timeout=60)
        cfg = load_config(cfg_path)
        conn = open_store(db)
        with transaction(conn):
            for name in ("online", "batch"):
                did = ensure_dataset(conn, name)
                insert_samples(conn, did, [{"instruction": f"Write a short note about topic number {i}."}
                                           for i in range(args.items)])
        out = {}
        for name in ("online", "batch"):
            conn.execute("DELETE FROM llm_cache")
            jid = J.queue_job(conn, args.task, config=cfg, dataset=name, endpoint="local",
                              batch={"poll": 0.01} if name == "batch" else None)
            t0 = time.perf_counter()
            ended = run_worker(db, cfg, job_id=jid)
            wall = time.perf_counter() - t0
            j = J.get_job(conn, jid)
            assert ended == ["done"] and (j["done"], j["failed"]) == (args.items, 0), (ended, j)
            out[name] = wall
            print(f"{name:>6}: {wall:7.2f} s  {args.items / wall:8.0f} items/s  ({j['requests']} requests, "
                  f"{j['kept']} kept)")
        conn.close()
    batch_steps = ", ".join(f"{k} {v:.2f} s" for k, v in steps.items())
    print(f" batch steps: {batch_steps}")
    ingest = steps["ingest"] + steps["poll"]        # poll = the last poll + download + storing every verdict
    print(f"ratio batch / online, wall time (this machine's work for the same items): {out['batch'] / out['online']:.2f}")
    print(f"ratio batch ingest rate (download + store + parse + write) / online rate: "
          f"{(args.items / ingest) / (args.items / out['online']):.2f}")
    for p in tmp.iterdir():
        p.unlink()
    tmp.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
