"""Long writers and the store's write lock: an export and a keep at 1M rows while a decision writer runs, this
branch's code against a reference checkout (main's code) in the same run.

    git archive main | tar -x -C /tmp/base        # the code to compare against
    python benchmarks/bench_bulk_lock.py --base /tmp/base [--rows 1000000] [--work /tmp/bench_bulk_lock]

The store is benchmarks/synth_store.py's (built once with the reference code, cached in --work, then copied for
each code; this code migrates its copy). Jobs, each in its own process, each on its own copy:
  export   `export --dataset main --status accepted --format alpaca` (190k rows at 1M)
  keep     `keep --dataset main --ids-from F`: F lists every other pending row, so the other ~330k are rejected
  shards   `import F --dataset main --score-scale quality=0-1`: F holds a quality score for every other row of main
           (475k; shards carrying sample_id, workbench/shard_update.py)
For each: wall and CPU seconds, bytes read through SQLite (rchar of /proc/self/io, the process's own reads minus
its start-up), the longest write transaction (BEGIN IMMEDIATE .. COMMIT, from the connection's statement trace),
and a concurrent decision writer (another process of the same code: a write transaction through the workbench's
own `transaction()` every 0.2 s): its longest and p99 wait for the lock while the job ran.
Targets (issue 15): write transactions <= 250 ms, other writers wait <= 500 ms. The two exports' files must be
byte-identical and their manifests' provenance equal.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TARGET_TX_MS, TARGET_WAIT_MS = 250, 500

JOB = r'''
import json, resource, sys, time
from workbench.store import open_store
conn = open_store(DB)
holds, began = [], [None]
def trace(sql):
    head = sql.lstrip()[:15].upper()
    if head.startswith("BEGIN IMMEDIATE"):
        began[0] = time.monotonic()
    elif (head.startswith("COMMIT") or head.startswith("ROLLBACK")) and began[0] is not None:
        holds.append(time.monotonic() - began[0])
        began[0] = None
conn.set_trace_callback(trace)
def io():
    return dict((k, int(v)) for k, v in (l.split(": ") for l in open("/proc/self/io").read().splitlines()))
io0 = io()
start = time.time()
t0 = time.perf_counter()
STEP
wall = time.perf_counter() - t0
io1 = io()
ru = resource.getrusage(resource.RUSAGE_SELF)
import workbench
print(json.dumps({"code": workbench.__file__, "wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "rss_mb": ru.ru_maxrss / 1024,
                  "rchar": io1["rchar"] - io0["rchar"], "longest_tx": max(holds, default=0.0), "txs": len(holds),
                  "n": n, "start": start, "end": time.time()}))
'''

WRITER = r'''
import json, os, sys, time
from workbench.store import open_store, transaction
conn = open_store(DB)
ids = [r[0] for r in conn.execute("SELECT id FROM samples WHERE dataset_id = (SELECT id FROM datasets "
                                  "WHERE name = 'extra') ORDER BY id LIMIT 500")]
waits, i = [], 0
print("ready", file=sys.stderr, flush=True)
while not os.path.exists(STOP):
    t0 = time.monotonic()
    at = time.time()
    with transaction(conn):
        waited = time.monotonic() - t0
        conn.execute("UPDATE samples SET updated_at = ? WHERE id = ?", (str(at), ids[i % len(ids)]))
    waits.append((at, waited))
    i += 1
    time.sleep(0.2)
print(json.dumps(waits))
'''


def env_for(code: Path) -> dict:
    """Run in `code`'s directory with it on the path (python -c puts the working directory first)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(code)
    return env


def run_job(code: Path, db: Path, step: str, work: Path) -> dict:
    """The job in its own process with a decision writer beside it."""
    stop = work / "stop"
    stop.unlink(missing_ok=True)
    writer = subprocess.Popen([sys.executable, "-c", f"DB = {str(db)!r}; STOP = {str(stop)!r}\n" + WRITER],
                              env=env_for(code), cwd=code, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert writer.stderr.readline().strip() == "ready", "the writer did not start"
    time.sleep(0.5)
    p = subprocess.run([sys.executable, "-c", f"DB = {str(db)!r}\n" + JOB.replace("STEP", step)],
                       env=env_for(code), cwd=code, capture_output=True, text=True)
    stop.touch()
    out, err = writer.communicate()
    if p.returncode != 0:
        raise SystemExit(f"job failed ({code}): {p.stderr.strip()[-2000:]}")
    if writer.returncode != 0:
        raise SystemExit(f"writer failed ({code}): {err.strip()[-2000:]}")
    res = json.loads(p.stdout.strip().splitlines()[-1])
    assert res["code"].startswith(str(code)), f"the job ran {res['code']}, not {code}"
    waits = sorted(w for at, w in json.loads(out) if res["start"] <= at <= res["end"])
    res["writes"] = len(waits)
    res["wait_max"] = waits[-1] if waits else 0.0
    res["wait_p99"] = waits[min(len(waits) - 1, int(len(waits) * 0.99))] if waits else 0.0
    return res


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def provenance_of(path: Path) -> dict:
    manifest = json.loads((path.parent / f".{path.name}.manifest.json").read_text())
    return manifest["provenance"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_bulk_lock"))
    ap.add_argument("--base", type=Path, help="a checkout of the code to compare against (main's)")
    ap.add_argument("--jobs", default="export,keep,shards")
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    codes = ([("main", a.base.resolve())] if a.base else []) + [("this", ROOT)]
    built = a.work / f"built_{a.rows}.db"
    if not built.exists():
        code = codes[0][1]
        subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; sys.path.insert(0, "
                        f"{str(HERE)!r}); from synth_store import build; build(Path({str(built)!r}), {a.rows})"],
                       env=env_for(code), cwd=code, check=True)
    dbs = {}
    for label, _ in codes:
        dbs[label] = a.work / f"{label}.db"
        for suffix in ("-wal", "-shm", "-wait"):
            Path(str(dbs[label]) + suffix).unlink(missing_ok=True)
        shutil.copyfile(built, dbs[label])
    import sqlite3
    conn = sqlite3.connect(built)
    main_id = conn.execute("SELECT id FROM datasets WHERE name = 'main'").fetchone()[0]
    keep_ids = a.work / "kept.jsonl"
    with open(keep_ids, "w") as f:
        for (i,) in conn.execute("SELECT id FROM samples WHERE dataset_id = ? AND status = 'pending' AND id % 2 = 0 "
                                 "ORDER BY id", (main_id,)):
            f.write(f'{{"sample_id": {i}}}\n')
    scored = a.work / "scored.jsonl"
    with open(scored, "w") as f:
        for (i,) in conn.execute("SELECT id FROM samples WHERE dataset_id = ? AND id % 2 = 0 ORDER BY id", (main_id,)):
            f.write(f'{{"sample_id": {i}, "quality": {(i % 100) / 100}}}\n')
    conn.close()
    steps = {
        "export": "from workbench.exporter import export\n"
                  "r = export(conn, OUT, 'alpaca', dataset='main', status='accepted'); n = r.rows",
        "keep": f"from workbench.keep import keep\nr = keep(conn, 'main', {str(keep_ids)!r}, 'bench keep'); "
                "n = r.rejected",
        "shards": f"from pathlib import Path\nfrom workbench.shard_update import update_samples\n"
                  f"r = update_samples(conn, [Path({str(scored)!r})], 'main', ['quality=0-1']); n = r.rows",
    }
    results = {}
    for job in a.jobs.split(","):
        for label, code in codes:
            out = a.work / f"{label}_export.jsonl"
            if job == "export":
                for p in (out, out.parent / f".{out.name}.manifest.json"):
                    p.unlink(missing_ok=True)
            step = steps[job].replace("OUT", repr(str(out)))
            print(f"{job} with {label}'s code ({code}) ...", flush=True)
            results[job, label] = run_job(code, dbs[label], step, a.work)
    print(f"\n{a.rows:,}-row store; load average {os.getloadavg()[0]:.1f} at the end. Targets: longest write "
          f"transaction <= {TARGET_TX_MS} ms, writer wait <= {TARGET_WAIT_MS} ms.")
    print(f"{'job':8} {'code':5} {'rows':>9} {'wall s':>8} {'CPU s':>7} {'read MB':>9} {'RSS MB':>7} "
          f"{'txs':>6} {'longest tx ms':>14} {'writes':>7} {'wait max ms':>12} {'wait p99 ms':>12}")
    for (job, label), r in results.items():
        print(f"{job:8} {label:5} {r['n']:>9,} {r['wall']:>8.1f} {r['cpu']:>7.1f} {r['rchar'] / 1e6:>9.0f} "
              f"{r['rss_mb']:>7.0f} {r['txs']:>6} {r['longest_tx'] * 1000:>14.0f} {r['writes']:>7} "
              f"{r['wait_max'] * 1000:>12.0f} {r['wait_p99'] * 1000:>12.0f}")
    for job in a.jobs.split(","):
        this = results.get((job, "this"))
        if this:
            met = this["longest_tx"] * 1000 <= TARGET_TX_MS and this["wait_max"] * 1000 <= TARGET_WAIT_MS
            print(f"{job}: longest transaction {this['longest_tx'] * 1000:.0f} ms, writer max wait "
                  f"{this['wait_max'] * 1000:.0f} ms -> target {'met' if met else 'NOT met'}")
        ref = results.get((job, "main"))
        if this and ref:
            print(f"{job}: this / main: wall {this['wall'] / ref['wall']:.2f}x, CPU {this['cpu'] / ref['cpu']:.2f}x, "
                  f"bytes read {this['rchar'] / max(ref['rchar'], 1):.2f}x, longest transaction "
                  f"{this['longest_tx'] / max(ref['longest_tx'], 1e-9):.3f}x, writer max wait "
                  f"{this['wait_max'] / max(ref['wait_max'], 1e-9):.3f}x")
    if ("export", "main") in results and ("export", "this") in results:
        a_out, b_out = a.work / "main_export.jsonl", a.work / "this_export.jsonl"
        same = sha256(a_out) == sha256(b_out)
        prov = provenance_of(a_out) == provenance_of(b_out)
        print(f"export: files byte-identical: {'yes' if same else 'NO'}; manifest provenance equal: "
              f"{'yes' if prov else 'NO'}")


if __name__ == "__main__":
    main()
