"""How fast can an import be on this machine? The parts of an import measured alone, each as a ratio to
`sqlite-utils insert --nl` of the same file in the same run (the reference of issue 15's "<= 0.5x" target).

    python benchmarks/bench_import_floor.py [--rows 1000000] [--out DIR] [--keep]

1. Building the rows (read, parse, map, normalize, hash) on one core, with the workbench's own code.
2. The store alone: rows already built and held in memory, inserted with executemany into a new store, then the
   WAL checkpointed into the database file. No parsing, no duplicate lookups, no other process: the least any
   import into this store can cost. Measured with the store's schema as it is, and with the samples table's
   secondary indexes dropped; in transactions of MAX_TX_S (as an import must, so other writers never wait long)
   and in one transaction.
An import runs parts 1 and 2 on two cores at once, so it cannot be faster than the slower of the two.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.bench_import import OUT, clean_db, make_file   # noqa: E402

# One child per measurement: each builds the rows, then times only its own part.
CHILD = r"""
import os, sys, time
from itertools import islice
from workbench import importer
from workbench.samples import _INSERT
from workbench.store import open_store
src, rows, variant, db = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = importer._Context(src, "jsonl", "alpaca", {}, 1, 1, "2026-01-01T00:00:00")
t0 = time.perf_counter()
with open(src, "rb") as f:
    built = [importer._build(ctx, i, i, line)[0] for i, line in enumerate(islice(f, rows), 1)]
build_s = time.perf_counter() - t0
if variant == "build":
    print(build_s)
    sys.exit()
conn = open_store(db)
conn.execute("INSERT INTO datasets (name, kind, created_at) VALUES ('floor', 'sft', 'x')")
conn.execute("INSERT INTO imports (dataset_id, file, format, imported_at) VALUES (1, 'f', 'alpaca', 'x')")
if variant.startswith("bare"):
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'samples' "
                                "AND sql IS NOT NULL").fetchall():
        conn.execute(f"DROP INDEX {name}")
conn.execute("PRAGMA wal_autocheckpoint = 0")
one_tx = variant.endswith("one")
t0 = time.perf_counter()
i, step = 0, 2000
while i < len(built):
    t1 = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    while i < len(built) and (one_tx or time.perf_counter() - t1 < importer.MAX_TX_S - 0.03):
        conn.executemany(_INSERT, built[i:i + step])
        i += step
    conn.execute("COMMIT")
t1 = time.perf_counter()
conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
print(t1 - t0, time.perf_counter() - t1)
"""


def child(src: Path, rows: int, variant: str, db: Path) -> list[float]:
    clean_db(db)
    p = subprocess.run([sys.executable, "-c", CHILD, str(src), str(rows), variant, str(db)], capture_output=True,
                       text=True, cwd=Path(__file__).resolve().parent.parent)
    clean_db(db)
    if p.returncode:
        sys.exit(f"{variant} failed:\n{p.stderr[-3000:]}")
    return [float(x) for x in p.stdout.split()]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--keep", action="store_true", help="keep the generated file")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    src = a.out / f"alpaca_{a.rows}.jsonl"
    if not src.exists():
        make_file(src, a.rows)
        os.sync()      # the file's dirty pages written out now, not during the reference run
    su_db, db = a.out / "floor_sqlite_utils.db", a.out / "floor.db"
    clean_db(su_db)
    su = shutil.which("sqlite-utils", path=str(Path(sys.executable).parent)) or "sqlite-utils"
    t0 = time.perf_counter()
    subprocess.run([su, "insert", str(su_db), "samples", str(src), "--nl"], check=True)
    su_s = time.perf_counter() - t0
    clean_db(su_db)
    print(f"reference: sqlite-utils insert --nl of {a.rows:,} rows ({src.stat().st_size / 1e6:.0f} MB): {su_s:.1f} s")
    build_s = child(src, a.rows, "build", db)[0]
    print(f"1. building the rows on one core (read, parse, normalize, hash): {build_s:.1f} s = "
          f"{build_s / su_s:.2f}x sqlite-utils")
    for variant, what in (("schema", "the store's schema (its indexes and triggers)"),
                          ("bare", "no secondary index on samples"),
                          ("schema-one", "the store's schema, one transaction"),
                          ("bare-one", "no secondary index, one transaction")):
        ins, ckpt = child(src, a.rows, variant, db)
        print(f"2. the store alone, {what}: inserts {ins:.1f} s + checkpoint {ckpt:.1f} s = "
              f"{(ins + ckpt) / su_s:.2f}x sqlite-utils (inserts alone {ins / su_s:.2f}x)")
    print("the 0.5x target is below the floor wherever the store alone is above 0.5x: the import also parses (part "
          "1, on the other core), receives the rows from the parser and looks up duplicates")
    if not a.keep:
        src.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
