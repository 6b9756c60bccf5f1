"""The Batch API backend against the online path on the same items, in the same run.

    python benchmarks/bench_batch.py [--items 2000] [--task generate]
    python benchmarks/bench_batch.py --output-mb 512 [--items 2000] [--ref a7b9b4f] [--dir /tmp/x]

One test server (tests/llm_server.py, no latency, its batches complete on the first poll) and the same items in two
datasets: an online job (one HTTP request per item) and a batch job (`--batch`: prepare, upload, create, poll,
download, ingest), each run by the real worker in this process, with an empty reply cache. Prints each path's wall
time and items/s, the batch path's time per step, and the ratios batch / online: the batch path's own overhead
(what it costs this machine to drive a batch, the provider's queueing time excluded) and its ingest rate.

--output-mb N: memory instead. One batch job whose output file is N MB (--items replies of N/items MB each), run by
`workbench worker` in a process of its own, whose peak RSS (wait4) is printed: with this code at N MB and at N/8 MB
(flat memory: the ratio is ~1), and with the code of --ref (git revision, default: main before the files were
streamed) at N MB, in the same run. Stores go under --dir (default: a temp dir), removed after.
"""
from __future__ import annotations

import argparse
import os
import subprocess
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
    ap.add_argument("--output-mb", type=float, default=None, help="measure the worker's peak RSS at this output size")
    ap.add_argument("--ref", default="a7b9b4f", help="with --output-mb: the git revision to compare with ('': none)")
    ap.add_argument("--dir", default=None, help="with --output-mb: where the stores go (default: a temp dir)")
    args = ap.parse_args(argv)
    if args.output_mb is not None:
        return memory(args)

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


SETUP = """
import sys
from workbench import jobs as J
from workbench.config import load_config
from workbench.samples import insert_samples
from workbench.store import ensure_dataset, open_store, transaction
db, cfg, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
conn = open_store(db)
with transaction(conn):
    insert_samples(conn, ensure_dataset(conn, "big"), [{"instruction": f"Write about topic {i}."} for i in range(n)])
print(J.queue_job(conn, "generate", config=load_config(cfg), dataset="big", endpoint="local", batch={"poll": 0.01}))
"""


SERVE = """
import sys
sys.path.insert(0, sys.argv[1])
from llm_server import LLMServer
size = int(sys.argv[2])
text = ("The tide comes in twice a day. " * (size // 30 + 1))[:size]
with LLMServer(keep_bodies=0, reply=lambda msgs, body: text) as srv:
    srv.batch.polls_to_finish = 1
    print(srv.base_url, flush=True)
    sys.stdin.read()                     # until the bench closes it
    print(sum(f["bytes"] for f in srv.files.values() if f["purpose"] == "batch_output"), flush=True)
"""


def memory(args) -> int:
    """Peak RSS of a worker process ingesting one batch whose output file is args.output_mb MB. The test server
    runs in a process of its own: a worker forked from a process holding the server's files would count the
    parent's pages in its peak RSS (wait4's ru_maxrss covers the process from fork on)."""
    import shutil
    from types import SimpleNamespace
    from llm_server import write_endpoint
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="bench-batch-mem-"))
    base.mkdir(parents=True, exist_ok=True)
    ref_src = base / "ref-src"
    ref_src.mkdir(exist_ok=True)
    if args.ref:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.ref, "workbench"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(ref_src)], input=archive, check=True)

    def run(name: str, src: Path, mb: float) -> tuple[int, float, int]:
        size = int(mb * 2**20 / args.items)
        server = subprocess.Popen([sys.executable, "-c", SERVE, str(ROOT / "tests"), str(size)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            srv = SimpleNamespace(base_url=server.stdout.readline().strip(), models=["test-model"])
            d = base / "".join(ch if ch.isalnum() else "-" for ch in name)
            d.mkdir()
            cfg = d / "config.toml"
            write_endpoint(cfg, srv, max_concurrency=32, timeout=600, max_reply_bytes=2 * size + 2**20)
            env = dict(os.environ, PYTHONPATH=str(src), WORKBENCH_CONFIG=str(cfg))
            subprocess.run([sys.executable, "-c", SETUP, str(d / "store.db"), str(cfg), str(args.items)], env=env,
                           cwd=src, check=True, capture_output=True)
            t0 = time.perf_counter()
            p = subprocess.Popen([sys.executable, "-m", "workbench", "worker", "--until-idle", "--quiet", "--db",
                                  str(d / "store.db"), "--config", str(cfg)], env=env, cwd=src)
            _, status, usage = os.wait4(p.pid, 0)
            p.returncode = os.waitstatus_to_exitcode(status)
            wall = time.perf_counter() - t0
            assert p.returncode == 0, f"{name}: worker exit {p.returncode}"
            server.stdin.close()
            out = int(server.stdout.readline())
        finally:
            server.kill()
            server.wait()
        shutil.rmtree(d)
        print(f"{name:>16}: output file {out / 2**20:7.1f} MB, worker peak RSS {usage.ru_maxrss / 1024:7.1f} MB, "
              f"{wall:6.1f} s", flush=True)
        return usage.ru_maxrss, wall, out

    try:
        small, _, _ = run("this code, 1/8", ROOT, args.output_mb / 8)
        big, t_big, _ = run("this code", ROOT, args.output_mb)
        ref, t_ref, _ = run(f"ref {args.ref}", ref_src, args.output_mb) if args.ref else (None, None, None)
    finally:
        shutil.rmtree(ref_src, ignore_errors=True)
        if not args.dir:
            shutil.rmtree(base, ignore_errors=True)
    print(f"ratio peak RSS, this code at {args.output_mb:g} MB / at 1/8 of it (flat = 1): {big / small:.2f}")
    if ref:
        print(f"ratio peak RSS, this code / {args.ref} at {args.output_mb:g} MB: {big / ref:.2f}")
        print(f"ratio wall time, this code / {args.ref}: {t_big / t_ref:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
