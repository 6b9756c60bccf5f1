"""10M rows: the store, Browse, Balance, Review, dedup and export at 10M rows, each as a ratio to the same step at
1M in the same run (linear scaling = 10x).

    python benchmarks/bench_10m.py [--sizes 1000000,10000000] [--dir /tmp/bench_10m] [--steps ...] [--rebuild]
                                   [--delete]

Stores are built by benchmarks/synth_store.py (direct executemany into the real schema, FTS and maintained counts
included) and cached in --dir (10M rows take ~16 GB there); --delete removes them at the end. Every step runs in
its own process, at nice 10 (--nice), so its peak RSS (VmHWM) and CPU seconds are its own:

- open:    the real app headless (Textual run_test): launch -> Browse's first rows drawn; keys j/PgDn, End, re-sort
- browse:  the core queries Browse runs: a first page and next pages per sort, filters, full-text search, count
- balance: the real app: launch -> Balance's histograms drawn; another connection commits -> histograms updated
- review:  the real app: launch -> first sample drawn in Review; `a` -> next sample
- dedup:   `workbench dedup --dataset main` (the CLI, preview only)
- export:  `workbench export` in two formats (--exports; accepted rows of dataset main), output deleted after each

The steps that press keys in Review or commit in Balance change a few hundred statuses: the stores are benchmark
scratch, rebuilt with --rebuild.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

NICE = 10   # --nice: the steps leave the shared cores to interactive work
EXPORT_FORMATS = ["alpaca", "parquet"]   # --exports
STEPS = ("open", "browse", "balance", "review", "export", "dedup")
EXPORTS = {"alpaca": "a.jsonl", "messages": "m.jsonl.gz", "parquet": "p.parquet"}   # format -> target


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM), MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))] if values else float("nan")


def db_bytes(path: Path) -> int:
    return sum(Path(str(path) + s).stat().st_size for s in ("", "-wal") if Path(str(path) + s).exists())


# --- steps, each run in a child process; each returns {"s": the step's headline time, ...figures} ------------------

def step_open(db: str, launched: float) -> dict:
    from bench_browse_balance import tui_browse
    r = asyncio.run(tui_browse(Path(db), 100))
    return {"s": r["open_s"], "note": "launch -> Browse's first rows drawn",
            "key_p95_ms": pct(r["keys_ms"], 95), "resort_ms": r["resort_ms"], "end_id": r["last_id"]}


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def step_browse(db: str, launched: float) -> dict:
    from workbench import browse, scores, store
    from workbench.browse import Filter, Sort
    conn = store.open_store(db)
    main = store.dataset_id(conn, "main")
    figures = {}
    t_all = time.perf_counter()
    cases = [("id", Filter(dataset_id=main, rubric="judge"), Sort("id", True)),
             ("score", Filter(dataset_id=main, rubric="judge"), Sort("score", True)),
             ("length", Filter(dataset_id=main, rubric="judge"), Sort("length")),
             ("all-datasets-score", Filter(rubric="judge"), Sort("score", True)),
             ("status", Filter(dataset_id=main, status="accepted", rubric="judge"), Sort("id", True)),
             ("task+score", Filter(dataset_id=main, task_type="code", scores=scores.build("judge=7"),
                                   rubric="judge"), Sort("score", True)),
             ("fts-common", Filter(dataset_id=main, search="energy python", rubric="judge"), Sort("id", True)),
             ("fts-common-by-score", Filter(dataset_id=main, search="energy python", rubric="judge"),
              Sort("score", True)),
             ("fts-rare", Filter(dataset_id=main, search="w0", rubric="judge"), Sort("id", True)),
             ("fts-common-by-length", Filter(dataset_id=main, search="energy python", rubric="judge"),
              Sort("length", True))]
    for label, flt, sort in cases:
        walk, after = [], None
        for _ in range(11):
            t = time.perf_counter()
            got = browse.page(conn, flt, sort, None if not walk else after, 100)
            walk.append((time.perf_counter() - t) * 1000)
            after = got[-1].key if got else None
        t = time.perf_counter()
        browse.page(conn, flt, sort, None, 100, backward=True)   # End: the last page
        figures[label] = {"first_ms": walk[0], "next_p95_ms": pct(walk[1:], 95),
                          "end_ms": (time.perf_counter() - t) * 1000}
    # End of a common-word search sorted by length descending: the shortest rows, where the words are rare. Against
    # main's way before tenm-ui (walk the length index asking the search index row by row until the page is full,
    # i.e. no PROBE_SAMPLE give-up), each on a fresh connection (no copy of the matches held yet)
    for label, search in (("end-search-by-length", "energy python"), ("end-search3-by-length", "python function value")):
        flt, sort = Filter(dataset_id=main, search=search, rubric="judge"), Sort("length", True)
        for way, sample in (("walk", 10 ** 12), ("new", browse.PROBE_SAMPLE)):
            fresh = store.open_store(db)
            saved, browse.PROBE_SAMPLE = browse.PROBE_SAMPLE, sample
            t, c = time.perf_counter(), cpu_s()
            got = browse.page(fresh, flt, sort, None, 100, backward=True)
            figures.setdefault(label, {})[f"{way}_ms"] = (time.perf_counter() - t) * 1000
            figures[label][f"{way}_cpu_ms"] = (cpu_s() - c) * 1000
            browse.PROBE_SAMPLE = saved
            figures[label].setdefault("ids", [r.id for r in got])
            assert figures[label]["ids"] == [r.id for r in got], "the two ways listed different rows"
            fresh.close()
        figures[label]["ratio_new_to_walk_cpu"] = figures[label]["new_cpu_ms"] / max(figures[label]["walk_cpu_ms"], 1e-9)
        del figures[label]["ids"]
    from workbench import review
    t = time.perf_counter()
    review.facets(conn)            # Review's filter dialog, all datasets
    figures["facets_all_ms"] = (time.perf_counter() - t) * 1000
    t = time.perf_counter()
    n = browse.count(conn, Filter(dataset_id=main))
    figures["count_ms"] = (time.perf_counter() - t) * 1000
    figures["count"] = n
    return {"s": time.perf_counter() - t_all, "note": "all the queries below", **figures}


def step_balance(db: str, launched: float) -> dict:
    from bench_browse_balance import tui_balance
    r = asyncio.run(tui_balance(Path(db)))
    return {"s": r["open_s"], "note": "launch -> Balance's histograms drawn",
            "update_p50_ms": pct(r["commit_to_screen_ms"], 50), "update_p95_ms": pct(r["commit_to_screen_ms"], 95),
            "query_p95_ms": pct(r["query_ms"], 95)}


def step_review(db: str, launched: float) -> dict:
    import bench_review
    bench_review.DATASET = "main"
    r = asyncio.run(bench_review.child(db, 100))
    ms = [t * 1000 for t in r["timings"]]
    return {"s": r["first_shown_at"] - launched, "note": "launch -> first sample drawn in Review",
            "key_p50_ms": pct(ms, 50), "key_p95_ms": pct(ms, 95)}


CHILD_STEPS = {"open": step_open, "browse": step_browse, "balance": step_balance, "review": step_review}


# --- the parent ---------------------------------------------------------------------------------------------------

def run_child(argv: list[str], env: dict) -> tuple[float, float, int, str, str, float]:
    """Run argv at nice NICE: (wall seconds, its peak RSS in MB from wait4, exit code, stdout, stderr, CPU seconds).
    CPU seconds (user + system) hardly depend on how busy the shared machine is; wall times do."""
    import threading
    t0 = time.perf_counter()
    p = subprocess.Popen(["nice", "-n", str(NICE), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=env, cwd=ROOT)   # nice execs the command in place: same pid
    chunks: dict[str, str] = {}
    readers = [threading.Thread(target=lambda n=n, f=f: chunks.__setitem__(n, f.read()))
               for n, f in (("out", p.stdout), ("err", p.stderr))]
    for t in readers:
        t.start()
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    for t in readers:
        t.join()
    p.returncode = os.waitstatus_to_exitcode(status)
    return (wall, usage.ru_maxrss / 1024, p.returncode, chunks["out"], chunks["err"],
            usage.ru_utime + usage.ru_stime)


class WriterProbe:
    """Meanwhile, another connection takes the write lock every 0.2 s (as a Review decision does): the longest
    wait, in ms, is how long a curator's key would stall behind the step."""

    def __init__(self, db: Path):
        import threading
        self.db, self.max_ms, self._stop = db, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import sqlite3
        conn = sqlite3.connect(self.db, timeout=600, isolation_level=None)
        while not self._stop.wait(0.2):
            t = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
            self.max_ms = max(self.max_ms, (time.perf_counter() - t) * 1000)
        conn.close()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def measure(rows: int, db: Path, step: str, work: Path, env: dict) -> list[dict]:
    """One step at one size in its own process(es): rows of {step, s, rss_mb, ...}."""
    wb = [sys.executable, "-m", "workbench", "--db", str(db)]
    if step in CHILD_STEPS:
        wall, rss, code, out, err, cpu = run_child([sys.executable, __file__, "--child", step, "--db", str(db),
                                                    "--launched", repr(time.time())], env)
        if code:
            return [{"step": step, "error": err.strip().splitlines()[-1] if err.strip() else f"exit {code}"}]
        r = json.loads(out.strip().splitlines()[-1])
        return [{"step": step, **r, "rss_mb": rss, "cpu_s": cpu}]
    if step == "dedup":
        wall, rss, code, out, err, cpu = run_child(wb + ["dedup", "--dataset", "main"], env)
        if code:
            return [{"step": step, "error": (err.strip().splitlines() or [f"exit {code}"])[-1], "s": wall}]
        return [{"step": step, "s": wall, "rss_mb": rss, "cpu_s": cpu, "note": "workbench dedup (CLI, preview)",
                 "found": out.splitlines()[0] if out else ""}]
    out_rows = []
    for fmt in EXPORT_FORMATS:
        name = EXPORTS[fmt]
        target = work / name
        with WriterProbe(db) as probe:
            wall, rss, code, out, err, cpu = run_child(wb + ["export", str(target), "--format", fmt, "--dataset",
                                                        "main", "--status", "accepted", "--json"], env)
        size = target.stat().st_size if target.exists() else 0
        for f in work.iterdir():       # the file and its manifest
            f.unlink()
        if code:
            out_rows.append({"step": f"export {fmt}", "error": (err.strip().splitlines() or [f"exit {code}"])[-1],
                             "s": wall})
            continue
        out_rows.append({"step": f"export {fmt}", "s": wall, "rss_mb": rss, "cpu_s": cpu, "out_mb": size / 1e6,
                         "note": f"workbench export --format {fmt} (accepted rows)",
                         "rows": json.loads(out).get("rows"), "writer_wait_max_ms": probe.max_ms})
    return out_rows


def build(rows: int, db: Path, env: dict) -> dict:
    """The cached store's build figures, building it first (in its own process) if it is missing."""
    figures = db.with_suffix(".build.json")
    if not db.exists() or not figures.exists():
        code = (f"import json, sys; sys.path[:0] = [{str(ROOT)!r}, {str(Path(__file__).parent)!r}]; "
                f"import synth_store; from pathlib import Path; "
                f"out = synth_store.build(Path({str(db)!r}), {rows}, "
                f"log=lambda s: print(s, file=sys.stderr, flush=True)); "
                f"Path({str(figures)!r}).write_text(json.dumps(out))")
        p = subprocess.run(["nice", "-n", str(NICE), sys.executable, "-c", code], env=env, cwd=ROOT)
        if p.returncode:
            raise SystemExit(f"building the {rows:,}-row store failed")
    f = json.loads(figures.read_text())
    return {"step": "build", "s": f["total_s"], "rss_mb": f["rss_mb"], "cpu_s": f.get("cpu_s"),
            "note": f"insert {f['insert_s']:.0f} s + fold {f['fold_s']:.0f} s + FTS {f['fts_s']:.0f} s"}


def fmt_ratio(a, b) -> str:
    return f"{b / a:.1f}x" if a and b is not None and a > 0 else "-"


def report(sizes: list[int], results: dict[int, dict[str, dict]], dbsize: dict[int, int]) -> None:
    ref, big = sizes[0], sizes[-1]
    names = list(dict.fromkeys(k for s in sizes for k in results[s]))
    print()
    print(f"ratios: {big:,} rows / {ref:,} rows (linear scaling = {big / ref:g}x). time: the step's headline time "
          f"(wall, on a shared machine); CPU: the step process's user+system seconds; RSS: its peak (VmHWM)")
    print(f"{'':16} {'time (wall)':^26}   {'CPU s':^22}   {'peak RSS MB':^20}")
    short = {n: f"{n / 1e6:g}M" if n >= 1e6 else f"{n / 1e3:g}k" for n in (ref, big)}
    print(f"{'step':16} " + " | ".join(f"{short[ref]:>{w}} {short[big]:>{w}} {'ratio':>6}" for w in (9, 7, 6)))
    for name in names:
        a, b = results[ref].get(name, {}), results[big].get(name, {})
        if "error" in a or "error" in b:
            print(f"{name:16} ERROR: {a.get('error') or b.get('error')}")
            continue
        cells = []
        for key, width, unit, digits in (("s", 8, "s", 2), ("cpu_s", 7, "", 1), ("rss_mb", 6, "", 0)):
            x, y = a.get(key), b.get(key)
            cells.append(" ".join(f"{v:>{width}.{digits}f}{unit}" if v is not None else f"{'-':>{width}}{unit}"
                                  for v in (x, y)) + f" {fmt_ratio(x, y):>6}")
        print(f"{name:16} " + " | ".join(cells) + f"  {b.get('note', '')}")
    print(f"{'DB size':16} {dbsize[ref] / 1e9:>7.2f}GB {dbsize[big] / 1e9:>7.2f}GB "
          f"{fmt_ratio(dbsize[ref], dbsize[big]):>6}")
    print()
    print("details (ms unless named):")
    for name in names:
        for size in sizes:
            extra = {k: v for k, v in results[size].get(name, {}).items()
                     if k not in ("step", "s", "rss_mb", "cpu_s", "note")}
            if extra:
                print(f"  {name} @ {size:,}: " + ", ".join(
                    f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in _flat(extra)))


def _flat(d: dict, prefix: str = ""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flat(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def main() -> int:
    global NICE
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000000,10000000", help="comma list; the first is the reference")
    ap.add_argument("--dir", default="/tmp/bench_10m")
    ap.add_argument("--steps", default=",".join(STEPS))
    ap.add_argument("--rebuild", action="store_true")
    ap.add_argument("--delete", action="store_true", help="delete the stores afterwards")
    ap.add_argument("--reuse", default="", metavar="SIZES",
                    help="comma list of sizes whose figures are read from an earlier run's results_SIZE.json "
                         "(say so when quoting: the reference was then measured under other load)")
    ap.add_argument("--nice", type=int, default=NICE, help="niceness of the steps' processes (default %(default)s)")
    ap.add_argument("--exports", default=",".join(EXPORT_FORMATS),
                    help=f"formats the export step writes, among {', '.join(EXPORTS)} (default %(default)s)")
    ap.add_argument("--child", choices=tuple(CHILD_STEPS), help=argparse.SUPPRESS)
    ap.add_argument("--db", help=argparse.SUPPRESS)
    ap.add_argument("--launched", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        r = CHILD_STEPS[args.child](args.db, args.launched)
        print(json.dumps({**r, "rss_mb": peak_rss_mb()}))
        return 0
    NICE = args.nice
    EXPORT_FORMATS[:] = [f for f in args.exports.split(",") if f]
    if any(f not in EXPORTS for f in EXPORT_FORMATS):
        ap.error(f"--exports: among {', '.join(EXPORTS)}")
    sizes = [int(s) for s in args.sizes.split(",")]
    steps = [s for s in args.steps.split(",") if s]
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        ap.error(f"unknown step(s) {', '.join(unknown)}; among {', '.join(STEPS)}")
    base = Path(args.dir)
    base.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "WORKBENCH_CONFIG": str(base / "config.toml"), "PYTHONPATH": str(ROOT)}
    results: dict[int, dict[str, dict]] = {}
    dbsize: dict[int, int] = {}
    reuse = {int(s) for s in args.reuse.split(",") if s}
    for size in sizes:
        db = base / f"store_{size}.db"
        saved = base / f"results_{size}.json"
        if size in reuse:
            results[size], dbsize[size] = json.loads(saved.read_text()), db_bytes(db)
            print(f"{size:,} rows: figures of an earlier run ({time.ctime(saved.stat().st_mtime)}) from {saved}")
            continue
        if args.rebuild:
            for suffix in ("", "-wal", "-shm"):
                Path(str(db) + suffix).unlink(missing_ok=True)
        # figures of steps not measured this time are kept from an earlier run (results_SIZE.json)
        results[size] = {**(json.loads(saved.read_text()) if saved.exists() else {}), "build": build(size, db, env)}
        dbsize[size] = db_bytes(db)
        work = base / f"export_{size}"
        work.mkdir(exist_ok=True)
        for step in steps:
            print(f"[{time.strftime('%H:%M:%S')}] {size:,} rows: {step}", flush=True)
            for r in measure(size, db, step, work, env):
                r["at"] = time.strftime("%H:%M")   # when: steps kept from an earlier run show theirs
                results[size][r["step"]] = r
                print("  " + json.dumps(r), flush=True)
        shutil.rmtree(work, ignore_errors=True)
        saved.write_text(json.dumps(results[size]))
    report(sizes, results, dbsize)
    if args.delete:
        for size in sizes:
            for suffix in ("", "-wal", "-shm"):
                Path(str(base / f"store_{size}.db") + suffix).unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
