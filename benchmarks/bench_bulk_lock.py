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
  undo     `clean --undo RUN` of a filter run of every other pending row of main (~330k at 1M; made by plain SQL)
  decide   `decide --ids-from F --accept` of 200k pending samples of main
  filters  `clean` applying a filter pass's preview of every third pending sample of main (~220k)
  index    the FTS `index` build of 300k rows not yet indexed;  stats: the Balance counts fold of 300k rows
  normalize `clean --normalize --apply` of a preview changing the response of every 20th pending row of main
           (~33k at 1M: text, hash, duplicate flags and search entries rewritten)
  merge    `dataset merge main extra --into main` (extra's 50k rows move);  delete: `dataset delete main` (last:
           950k rows with their judgments, scores and search entries)
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
SETUP
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
                                  "WHERE name = 'extra') ORDER BY id LIMIT 500")] or [0]   # 0: after the merge
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


def run_job(code: Path, db: Path, step: str, work: Path, setup: str = "") -> dict:
    """The job in its own process with a decision writer beside it."""
    stop = work / "stop"
    stop.unlink(missing_ok=True)
    writer = subprocess.Popen([sys.executable, "-c", f"DB = {str(db)!r}; STOP = {str(stop)!r}\n" + WRITER],
                              env=env_for(code), cwd=code, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert writer.stderr.readline().strip() == "ready", "the writer did not start"
    time.sleep(0.5)
    p = subprocess.run([sys.executable, "-c", f"DB = {str(db)!r}\n" + JOB.replace("SETUP", setup).replace("STEP", step)],
                       env=env_for(code), cwd=code, capture_output=True, text=True)
    stop.touch()
    out, err = writer.communicate()
    if p.returncode != 0:
        raise SystemExit(f"job failed ({code}): {p.stderr.strip()[-2000:]}")
    if writer.returncode != 0:
        raise SystemExit(f"writer failed ({code}, exit {writer.returncode}): {err.strip()[-2000:]}")
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
    ap.add_argument("--jobs", default="export,keep,shards,undo,filters,decide,index,stats,normalize,merge,delete",
                    help="comma-separated, run in this order on one store per code (delete last: it removes main)")
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
    # every other bulk writer a curator runs (the setup, untimed and outside the traced window, makes the state
    # the job needs with plain SQL, the same for both codes)
    steps.update({
        "undo": "from workbench.runs import undo_run\nr = undo_run(conn, 'filter-99999'); n = r.reverted",
        "decide": "from workbench.decisions import decide_many\n"
                  "r = decide_many(conn, IDS, 'accept', 'bench', 'bench decide', dataset_id=DID); n = len(r)",
        "filters": "from workbench.clean import apply_filters\nr = apply_filters(conn, PREVIEW); n = r.rejected",
        "normalize": "from workbench.clean import apply_normalize\nr = apply_normalize(conn, PREVIEW); n = r.rejected",
        "index": "from workbench.store import fts_sync\nn = fts_sync(conn)",
        "stats": "from workbench import stats\nn = stats.fold(conn)",
        "merge": "from workbench.dataset_ops import merge_datasets\n"
                 "r = merge_datasets(conn, ['main', 'extra'], 'main', 'bench'); n = r['moved']",
        "delete": "from workbench.dataset_ops import delete_dataset\n"
                  "r = delete_dataset(conn, 'main', 'bench'); n = r.get('samples', r.get('rows', 0)) if isinstance(r, dict) else 0",
    })
    setups = {
        # a filter run of every other pending row of main (~330k at 1M), as `clean` or `keep` leaves it
        "undo": "import orjson\nconn.execute('BEGIN IMMEDIATE')\n"
                "ids = [r[0] for r in conn.execute(\"SELECT id FROM samples WHERE dataset_id = (SELECT id FROM datasets "
                "WHERE name = 'main') AND status = 'pending' AND id % 2 = 1\")]\n"
                "conn.executemany(\"UPDATE samples SET status = 'rejected' WHERE id = ?\", ((i,) for i in ids))\n"
                "conn.executemany(\"INSERT INTO decisions (sample_id, action, before, after, reason, session, created_at) "
                "VALUES (?, 'filter', '{\\\"status\\\":\\\"pending\\\"}', '{\\\"status\\\":\\\"rejected\\\"}', 'bench', "
                "'filter-99999', '2026-01-01T00:00:00Z')\", ((i,) for i in ids))\nconn.execute('COMMIT')",
        # `decide --ids-from` of 200k pending samples of main
        "decide": "DID = conn.execute(\"SELECT id FROM datasets WHERE name = 'main'\").fetchone()[0]\n"
                  "IDS = [r[0] for r in conn.execute(\"SELECT id FROM samples WHERE dataset_id = ? AND status = 'pending' "
                  "ORDER BY id LIMIT 200000\", (DID,))]",
        # a filter pass's preview of every third pending sample of main (~200k at 1M)
        "filters": "from workbench.clean import Hit, Preview\n"
                   "PREVIEW = Preview(['too_short'], hits=[Hit(r[0], 'main', 'too_short', '', 'pending') for r in "
                   "conn.execute(\"SELECT id FROM samples WHERE dataset_id = (SELECT id FROM datasets WHERE name = "
                   "'main') AND status = 'pending' AND id % 3 = 0 ORDER BY id\")])",
        # a normalize preview changing the response of every 20th pending sample of main (~33k at 1M)
        "normalize": "from workbench.clean import NormalizePreview\n"
                     "PREVIEW = NormalizePreview({}, changes=[(i, 'main', {'response': r}, {'response': r + ' .'}) "
                     "for i, r in conn.execute(\"SELECT id, response FROM samples WHERE dataset_id = (SELECT id FROM "
                     "datasets WHERE name = 'main') AND status = 'pending' AND id % 20 = 1 ORDER BY id\")])",
        # the search index and the Balance counts 300k rows behind, as after a big import
        "index": "conn.execute(\"UPDATE meta SET value = CAST(value AS INTEGER) - 300000 WHERE key = 'fts_upto'\"); conn.commit()",
        "stats": "conn.execute(\"UPDATE meta SET value = CAST(value AS INTEGER) - 300000 WHERE key = 'stats_upto'\"); conn.commit()",
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
            results[job, label] = run_job(code, dbs[label], step, a.work, setups.get(job, ""))
    print(f"\n{a.rows:,}-row store; load average {os.getloadavg()[0]:.1f} at the end. Targets: longest write "
          f"transaction <= {TARGET_TX_MS} ms, writer wait <= {TARGET_WAIT_MS} ms.")
    print(f"{'job':9} {'code':5} {'rows':>9} {'wall s':>8} {'CPU s':>7} {'read MB':>9} {'RSS MB':>7} "
          f"{'txs':>6} {'longest tx ms':>14} {'writes':>7} {'wait max ms':>12} {'wait p99 ms':>12}")
    for (job, label), r in results.items():
        print(f"{job:9} {label:5} {r['n']:>9,} {r['wall']:>8.1f} {r['cpu']:>7.1f} {r['rchar'] / 1e6:>9.0f} "
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
