"""Parquet shards out and decisions back at scale (default 1M rows), each step against a reference in the same run.

    python benchmarks/bench_shards.py [--rows 1000000] [--shard-rows 100000]

Steps, each in a fresh interpreter (its peak RSS is its own), each on a fresh copy of the same store:
  export     `export DIR --format parquet --shard-rows N --with-ids --status all`
             reference: a plain pyarrow write of the same rows and columns into shards of N (a keyset SQL read, no
             decoding, shaping, hashing, manifest or snapshot)
  keep       `workbench keep --ids-from ENGINE_OUT` with 80 % of the ids kept (Parquet, as an engine writes them)
             reference: `workbench decide --ids-from FILE --reject` of exactly the rows keep rejects
  import     `workbench import SCORES --score-scale quality=0-1`: one float column for every row comes back as a rubric
             reference: the same scores read with pyarrow and upserted into sample_scores in one executemany
Data (the store, its copies, the shards) lives under /tmp/shards/bench and is removed at the end except the store.
"""
from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_export import build_store  # noqa: E402  (the same mixed 1M-row store as the export benchmark)

ROOT = Path("/tmp/shards/bench")


def child(code: str) -> tuple[float, int]:
    """Run Python in a fresh interpreter: (seconds, its peak RSS in MB). The code may print; the last stderr line
    is ours."""
    # VmHWM, not ru_maxrss: getrusage keeps the parent's peak across fork+exec, VmHWM is this process's own
    wrapped = code + ("\nimport sys\n"
                      "hwm = next(l for l in open('/proc/self/status') if l.startswith('VmHWM'))\n"
                      "print('RSS', int(hwm.split()[1]) // 1024, file=sys.stderr)")
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", wrapped], capture_output=True, text=True)
    t = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"failed:\n{p.stdout}\n{p.stderr}")
    return t, int(p.stderr.strip().splitlines()[-1].split()[1])


def cli(*argv: str) -> str:
    return f"from workbench.cli import main\nrc = main({list(argv)!r})\nassert rc == 0, rc"


def fresh(base: Path, name: str) -> Path:
    dst = ROOT / name
    for suffix in ("", "-wal", "-shm"):
        Path(str(dst) + suffix).unlink(missing_ok=True)
    shutil.copyfile(base, dst)
    return dst


def row(label: str, t: float, rss: int, ref_t: float, ref_label: str, ref_rss: int) -> None:
    print(f"{label:8} {t:7.1f} s  peak RSS {rss:5} MB   reference ({ref_label}) {ref_t:6.1f} s, {ref_rss} MB   "
          f"ratio {t / ref_t:5.2f}x")


PLAIN_EXPORT = """
import os, sqlite3, pyarrow as pa, pyarrow.parquet as pq
from workbench.export_shards import shard_schema
from workbench.export_shapes import parquet_fields
cols = parquet_fields(True)
schema = shard_schema(cols)
db = sqlite3.connect({db!r})
sql_cols = ", ".join("response" if c == "output" else "id" if c == "sample_id" else c for c in cols)
os.makedirs({out!r})
last, shard, w, rows = 0, 0, None, 0
while True:
    batch = db.execute(f"SELECT {{sql_cols}} FROM samples WHERE id > ? ORDER BY id LIMIT 5000", (last,)).fetchall()
    if not batch:
        break
    last = batch[-1][-1]
    if w is None:
        w = pq.ParquetWriter(os.path.join({out!r}, f"part-{{shard:05d}}.parquet"), schema, compression="zstd")
    w.write_table(pa.Table.from_arrays([pa.array([r[i] for r in batch], f.type) for i, f in enumerate(schema)],
                                       schema=schema))
    rows += len(batch)
    if rows >= {shard_rows} * (shard + 1):
        w.close(); w = None; shard += 1
if w is not None:
    w.close()
"""

PLAIN_SCORES = """
import sqlite3, pyarrow.parquet as pq
t = pq.read_table({path!r})
db = sqlite3.connect({db!r}, isolation_level=None)
db.execute("BEGIN IMMEDIATE")
db.executemany(
    "INSERT INTO sample_scores (sample_id, rubric, score, scale_min, scale_max, judge, template_version, job_id, "
    "content_hash, stale, created_at) SELECT id, 'quality', ?, 0, 1, NULL, NULL, NULL, content_hash, 0, 'now' "
    "FROM samples WHERE id = ? ON CONFLICT (sample_id, rubric) DO UPDATE SET score = excluded.score",
    zip(t.column("quality").to_pylist(), t.column("sample_id").to_pylist()))
db.execute("COMMIT")
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--shard-rows", type=int, default=100_000)
    a = ap.parse_args()
    ROOT.mkdir(parents=True, exist_ok=True)
    base = ROOT / f"store_{a.rows}.db"
    if not base.exists():
        build_store(base, a.rows)
    import pyarrow as pa
    import pyarrow.parquet as pq
    from workbench.store import open_store
    conn = open_store(base)
    ids = [r[0] for r in conn.execute("SELECT id FROM samples ORDER BY id")]
    pending = {r[0] for r in conn.execute("SELECT id FROM samples WHERE status = 'pending'")}
    conn.close()
    rng = random.Random(7)
    kept = sorted(rng.sample(ids, int(len(ids) * 0.8)))
    keep_set = set(kept)
    rejected = [i for i in ids if i in pending and i not in keep_set]
    engine = ROOT / "engine_out"
    shutil.rmtree(engine, ignore_errors=True)
    engine.mkdir()
    for n, start in enumerate(range(0, len(kept), a.shard_rows)):   # as NeMo's writer leaves them: sample_id only
        pq.write_table(pa.table({"sample_id": pa.array(kept[start:start + a.shard_rows], pa.int64())}),
                       engine / f"{n:04x}.parquet")
    (ROOT / "reject_ids.txt").write_text("".join(f"{i}\n" for i in rejected))
    scores_dir = ROOT / "scores_back"
    shutil.rmtree(scores_dir, ignore_errors=True)
    scores_dir.mkdir()
    pq.write_table(pa.table({"sample_id": pa.array(ids, pa.int64()),
                             "quality": pa.array([rng.random() for _ in ids], pa.float64())}),
                   scores_dir / "part-0.parquet")
    print(f"{len(ids):,} rows; shards of {a.shard_rows:,}; keep list {len(kept):,} ids ({len(rejected):,} pending rows "
          f"to reject); timings include interpreter start (~0.3 s)")

    # --- export: ours vs a plain pyarrow write; the reference runs first and again last (page cache, load) ---
    db = fresh(base, "work.db")
    out = ROOT / "shards_plain"
    shutil.rmtree(out, ignore_errors=True)
    child(PLAIN_EXPORT.format(db=str(db), out=str(out), shard_rows=a.shard_rows))      # warms the page cache
    shutil.rmtree(out)
    ref_t, ref_rss = child(PLAIN_EXPORT.format(db=str(db), out=str(out), shard_rows=a.shard_rows))
    ours = ROOT / "shards"
    shutil.rmtree(ours, ignore_errors=True)
    t, rss = child(cli("--db", str(db), "export", str(ours), "--format", "parquet", "--shard-rows",
                       str(a.shard_rows), "--with-ids", "--status", "all"))
    shutil.rmtree(out)
    ref_t2, _ = child(PLAIN_EXPORT.format(db=str(db), out=str(out), shard_rows=a.shard_rows))
    row("export", t, rss, (ref_t + ref_t2) / 2, "plain pyarrow write", ref_rss)
    size = sum(f.stat().st_size for f in ours.iterdir())
    print(f"         {len(list(ours.glob('part-*.parquet')))} shards, {size / 1e6:.0f} MB; plain write "
          f"{ref_t:.1f} s before and {ref_t2:.1f} s after")
    shutil.rmtree(out)
    shutil.rmtree(ours)

    # --- keep vs decide --ids-from of the same rejections ---
    db = fresh(base, "work.db")
    t, rss = child(cli("--db", str(db), "keep", "--dataset", "bench", "--ids-from", str(engine), "--reason",
                       "external dedup"))
    db = fresh(base, "work.db")
    ref_t, ref_rss = child(cli("--db", str(db), "decide", "--dataset", "bench", "--ids-from",
                               str(ROOT / "reject_ids.txt"), "--reject", "--reason", "external dedup"))
    row("keep", t, rss, ref_t, "decide --ids-from", ref_rss)

    # --- import of a score column vs a plain executemany upsert of the same scores ---
    db = fresh(base, "work.db")
    t, rss = child(cli("--db", str(db), "import", str(scores_dir), "--dataset", "bench", "--score-scale",
                       "quality=0-1"))
    db = fresh(base, "work.db")
    ref_t, ref_rss = child(PLAIN_SCORES.format(path=str(scores_dir / "part-0.parquet"), db=str(db)))
    row("import", t, rss, ref_t, "plain upsert", ref_rss)
    for name in ("work.db", "work.db-wal", "work.db-shm", "reject_ids.txt"):
        (ROOT / name).unlink(missing_ok=True)
    shutil.rmtree(engine, ignore_errors=True)
    shutil.rmtree(scores_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
