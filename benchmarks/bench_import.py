"""Import/export at scale: a synthetic Alpaca JSONL with realistic lengths, imported by the workbench and by
`sqlite-utils insert --nl` in the same run; then the FTS5 build and a full export.

    python benchmarks/bench_import.py [--rows 1000000] [--keep]

Prints rows/s and peak RSS of each step (each runs in its own process so RSS is its own).
"""
from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import orjson

OUT = Path(__file__).parent / "out"
WORDS = ("the of and to in is for that with as on by be this are from at or an it which data model "
         "response question answer explain write list describe python function value example first time "
         "people water energy system language code number result process important different").split()


def make_file(path: Path, rows: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    vocab = WORDS + [f"w{i}" for i in range(2000)]

    def text(lo: int, hi: int) -> str:
        n = rng.randint(lo, hi)
        out, size = [], 0
        while size < n:
            w = rng.choice(vocab)
            out.append(w)
            size += len(w) + 1
        return " ".join(out)[:n]

    with open(path, "wb") as f:
        for i in range(rows):
            rec = {"instruction": text(10, 300), "input": text(0, 200) if rng.random() < 0.3 else "",
                   "output": text(50, 3000)}
            f.write(orjson.dumps(rec) + b"\n")


def in_child(step: str, db: Path) -> tuple[float, int, int]:
    """Run one step (Python that sets `n`) in a fresh interpreter on `conn`: (seconds, n, its peak RSS in MB)."""
    code = (f"import sys, resource; from workbench.store import open_store; conn = open_store({str(db)!r}); {step}; "
            "print(n, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, file=sys.stderr)")
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    n, rss = p.stderr.split()[-2:]
    return time.perf_counter() - t0, int(n), int(rss)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--keep", action="store_true", help="keep the generated files in benchmarks/out")
    a = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    src = OUT / f"alpaca_{a.rows}.jsonl"
    if not src.exists():
        t0 = time.perf_counter()
        make_file(src, a.rows)
        print(f"generated {src.name}: {src.stat().st_size / 1e6:.0f} MB in {time.perf_counter() - t0:.1f} s")
    wb_db, su_db = OUT / "bench_import.db", OUT / "bench_sqlite_utils.db"
    for p in (wb_db, su_db):
        for suffix in ("", "-wal", "-shm"):
            Path(str(p) + suffix).unlink(missing_ok=True)
    py = sys.executable
    su = shutil.which("sqlite-utils", path=str(Path(py).parent)) or "sqlite-utils"

    t0 = time.perf_counter()
    subprocess.run([su, "insert", str(su_db), "samples", str(src), "--nl"], check=True)
    su_secs = time.perf_counter() - t0
    print(f"sqlite-utils insert --nl: {su_secs:.1f} s, {a.rows / su_secs:,.0f} rows/s")

    t, rows, rss = in_child(f"from workbench.importer import import_file; "
                            f"n = import_file(conn, {str(src)!r}, dataset='bench').rows", wb_db)
    print(f"workbench import (normalize, hash, dup flags, indexes): {t:.1f} s, {rows / t:,.0f} rows/s, "
          f"peak RSS {rss} MB; {t / su_secs:.2f}x the sqlite-utils time (target <= 0.5x)")
    t, rows, rss = in_child("from workbench.store import fts_sync; n = fts_sync(conn)", wb_db)
    print(f"FTS5 index, after the rows landed (background in the CLI): {t:.1f} s for {rows:,} rows, peak RSS {rss} MB")
    t, rows, rss = in_child("from workbench.stats import fold; n = fold(conn)", wb_db)
    print(f"Balance counts, after the rows landed (background in the CLI): {t:.1f} s for {rows:,} rows")
    out = OUT / "bench_export.jsonl"
    t, rows, rss = in_child(f"from workbench.exporter import export; "
                            f"n = export(conn, {str(out)!r}, 'alpaca', status='all', force=True).rows", wb_db)
    print(f"export alpaca JSONL: {t:.1f} s for {rows:,} rows ({rows / t:,.0f} rows/s), peak RSS {rss} MB "
          "(target < 30 s)")
    print(f"store size: {wb_db.stat().st_size / 1e6:.0f} MB")
    if not a.keep:
        for p in (src, su_db, out, out.with_name(f".{out.name}.manifest.json")):
            p.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
