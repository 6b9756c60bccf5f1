"""Pairwise import at scale: a synthetic AlpacaEval-style annotations JSONL (instruction, output_1, output_2,
generator_1, generator_2, preference 1.0/2.0/1.5), imported by the workbench (pairs, candidates, ties counted) and
by `sqlite-utils insert --nl` in the same run.

    python benchmarks/bench_import_pairwise.py [--rows 1000000] [--keep]

Prints rows/s and peak RSS (the workbench import runs in its own process) and the ratio to sqlite-utils.
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

from bench_import import OUT, WORDS, in_child


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
            rec = {"instruction": text(10, 300), "output_1": text(50, 1500), "generator_1": "reference_model",
                   "output_2": text(50, 1500), "generator_2": f"model_{i % 7}",
                   "preference": rng.choice((1.0, 2.0, 2.0, 1.0, 1.5))}
            f.write(orjson.dumps(rec) + b"\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--keep", action="store_true", help="keep the generated files in benchmarks/out")
    a = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    src = OUT / f"pairwise_{a.rows}.jsonl"
    if not src.exists():
        t0 = time.perf_counter()
        make_file(src, a.rows)
        print(f"generated {src.name}: {src.stat().st_size / 1e6:.0f} MB in {time.perf_counter() - t0:.1f} s")
    wb_db, su_db = OUT / "bench_pairwise.db", OUT / "bench_pairwise_sqlite_utils.db"
    for p in (wb_db, su_db):
        for suffix in ("", "-wal", "-shm"):
            Path(str(p) + suffix).unlink(missing_ok=True)
    su = shutil.which("sqlite-utils", path=str(Path(sys.executable).parent)) or "sqlite-utils"
    t0 = time.perf_counter()
    subprocess.run([su, "insert", str(su_db), "pairs", str(src), "--nl"], check=True)
    su_secs = time.perf_counter() - t0
    print(f"sqlite-utils insert --nl: {su_secs:.1f} s, {a.rows / su_secs:,.0f} rows/s")
    t, rows, rss = in_child(f"from workbench.importer import import_file; "
                            f"r = import_file(conn, {str(src)!r}, dataset='pairs'); n = r.rows + r.ties", wb_db)
    print(f"workbench import --format pairwise (pairs, 2 candidates each, ties counted, dup flags): {t:.1f} s, "
          f"{rows / t:,.0f} rows/s, peak RSS {rss} MB; {t / su_secs:.2f}x the sqlite-utils time")
    print(f"store size: {wb_db.stat().st_size / 1e6:.0f} MB")
    if not a.keep:
        for p in (src, su_db):
            p.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
