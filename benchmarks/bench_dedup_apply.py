"""`workbench dedup --apply keep-best` on a big store: its time, peak RSS, and how long another writer waits
behind it (a curator's decision every WRITER_EVERY_S on its own connection, taken as the app takes it:
workbench.busy.begin, then one UPDATE and COMMIT). The longest such wait is the longest the apply kept a writer
out.

    python benchmarks/bench_dedup_apply.py --rows 1000000 --store-dir /tmp/x \\
        --reference-python /work/main/.venv/bin/python

The synthetic store is bench_dedup's (planted copies: keep-best rejects ~5 % of the rows) and `--fields
instruction,input,response` as bench_dedup compares; each run gets its own copy of it. With --reference-python
another checkout's code runs the same apply on another copy, and the ratios are printed.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_dedup  # noqa: E402

sys.path.insert(0, str(ROOT))
from workbench import busy  # noqa: E402

WRITER_EVERY_S = 0.2
TARGET_WAIT_S = 0.5      # issue 15: writers never wait > 0.5 s behind a bulk write


class Writer(threading.Thread):
    """A curator deciding a row now and then: records how long each BEGIN IMMEDIATE waited for the lock."""

    def __init__(self, db: Path):
        super().__init__(daemon=True)
        self.db, self.waits, self.stop, self.errors = db, [], threading.Event(), []

    def run(self) -> None:
        conn = sqlite3.connect(self.db, timeout=30, isolation_level=None)
        sid = conn.execute("SELECT max(id) FROM samples").fetchone()[0]
        while not self.stop.wait(WRITER_EVERY_S):
            try:
                self.waits.append(busy.begin(conn))
                conn.execute("UPDATE samples SET updated_at = updated_at WHERE id = ?", (sid,))
                conn.execute("COMMIT")
            except sqlite3.OperationalError as e:      # "database is locked": what a curator would see
                self.errors.append(str(e))
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
        conn.close()


def run_apply(db: Path, python: str | None) -> dict:
    """`workbench dedup --apply keep-best` in a child (this checkout's code, or another checkout's interpreter
    run from its root), with the writer running beside it."""
    cwd = str(ROOT)
    if python:
        if Path(python).parent.parent.name != ".venv":
            raise SystemExit(f"--reference-python {python}: expected a checkout's .venv/bin/python")
        cwd = str(Path(python).absolute().parent.parent.parent)
    writer = Writer(db)
    writer.start()
    t0 = time.perf_counter()
    proc = subprocess.Popen([python or sys.executable, "-m", "workbench", "--db", str(db), "dedup", "--fields",
                             ",".join(bench_dedup.FIELDS), "--apply", "keep-best"], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = "", ""
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    out, err = proc.stdout.read(), proc.stderr.read()
    proc.returncode = os.waitstatus_to_exitcode(status)
    writer.stop.set()
    writer.join()
    if proc.returncode != 0:
        raise SystemExit(f"dedup --apply failed ({proc.returncode}): {err.strip()[-500:]}")
    conn = sqlite3.connect(db)
    rejected = conn.execute("SELECT count(*) FROM decisions WHERE action = 'dedup'").fetchone()[0]
    conn.close()
    return {"seconds": seconds, "rss_mb": usage.ru_maxrss / 1024, "cpu": usage.ru_utime + usage.ru_stime,
            "waits": writer.waits, "errors": writer.errors, "rejected": rejected,
            "line": next((ln for ln in out.splitlines() if ln.startswith("rejected")), out.strip()[-200:])}


def report(label: str, res: dict) -> None:
    waits = sorted(res["waits"])
    worst = waits[-1] if waits else 0.0
    p95 = waits[int(0.95 * (len(waits) - 1))] if waits else 0.0
    print(f"  {label}: {res['seconds']:.1f} s (CPU {res['cpu']:.1f} s), peak RSS {res['rss_mb']:.0f} MB; "
          f"{res['rejected']:,} rows rejected ({res['line']})")
    print(f"    a writer every {WRITER_EVERY_S} s: {len(waits)} decisions, wait p95 {p95 * 1000:.0f} ms, "
          f"max {worst * 1000:.0f} ms" + (f", {len(res['errors'])} FAILED: {res['errors'][0]}" if res["errors"] else ""))
    ok = worst <= TARGET_WAIT_S and not res["errors"]
    print(f"    target: a writer waits <= {TARGET_WAIT_S} s behind the apply: {'met' if ok else 'NOT met'} "
          f"(max {worst:.2f} s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--store-dir", default=None, help="keep the synthetic store here and reuse it (bench_dedup's)")
    ap.add_argument("--workdir", default=None, help="where the copies go (default: a temp dir)")
    ap.add_argument("--reference-python", default=None,
                    help="also run another checkout's code (e.g. /work/main/.venv/bin/python) on a copy")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        keep = Path(args.store_dir) if args.store_dir else None
        db, _, note = bench_dedup._store(args.rows, bench_dedup.THRESHOLD, work, keep)
        print(f"dedup --apply keep-best, {args.rows:,} rows ({note})")
        results = {}
        for label, python in [("this code", None)] + ([("reference", args.reference_python)]
                                                       if args.reference_python else []):
            copy = work / f"apply-{label.replace(' ', '-')}.db"
            shutil.copyfile(db, copy)
            try:
                results[label] = run_apply(copy, python)
            finally:
                for f in work.glob(copy.name + "*"):
                    f.unlink()
            report(label if python is None else f"reference ({python})", results[label])
        if "reference" in results:
            a, b = results["this code"], results["reference"]
            worst = (max(a["waits"], default=0.0), max(b["waits"], default=0.0))
            print(f"  this code / reference: time {a['seconds'] / b['seconds']:.2f}x, CPU {a['cpu'] / b['cpu']:.2f}x, "
                  f"peak RSS {a['rss_mb'] / b['rss_mb']:.2f}x, longest writer wait {worst[0] * 1000:.0f} ms vs "
                  f"{worst[1] * 1000:.0f} ms; same rows rejected: {a['rejected'] == b['rejected']}")


if __name__ == "__main__":
    main()
