"""Export at scale: every format from a store of N samples (default 1M), each in its own process.

    python benchmarks/bench_export.py [--rows 1000000] [--formats alpaca,kto,...]

The store is built once and cached under benchmarks/out/ (60 % single-turn SFT rows, 20 % multi-turn conversations,
20 % preference pairs; statuses mixed so KTO has labels; a metadata object on every row). Each export runs in a fresh
interpreter, so its peak RSS is its own. The reference is a plain dump of the same rows (keyset read + orjson, no
shaping, no manifest) in the same kind of process: the ratio is what shaping, the one-shape checks, hashing, the
provenance manifest and the snapshot cost on top of reading and writing.
"""
from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(__file__).parent / "out"
WORDS = ("the of and to in is for that with as on by be this are from at or an it which data model "
         "response question answer explain write list describe python function value example first time").split()
CHUNK = 20_000

CASES = [  # (label, format, extra kwargs, output name)
    ("alpaca", "alpaca", {}, "a.jsonl"),
    ("sharegpt", "sharegpt", {}, "s.jsonl"),
    ("messages", "messages", {}, "m.jsonl"),
    ("messages .gz", "messages", {}, "m.jsonl.gz"),
    ("preference", "preference", {}, "p.jsonl"),
    ("preference --conversational", "preference", {"conversational": True}, "pc.jsonl"),
    ("trl-sft", "trl-sft", {}, "t.jsonl"),
    ("trl-sft --conversational", "trl-sft", {"conversational": True}, "tc.jsonl"),
    ("kto", "kto", {}, "k.jsonl"),
    ("llama-factory", "llama-factory", {}, "lf.jsonl"),
    ("axolotl", "axolotl", {}, "ax.jsonl"),
    ("parquet", "parquet", {"status": "all"}, "all.parquet"),
    ("directory (card + manifest)", "messages", {}, "dir"),
]


def build_store(db: Path, rows: int, seed: int = 1) -> None:
    from workbench.samples import insert_samples
    from workbench.store import ensure_dataset, open_store, transaction
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

    def sample(i: int) -> dict:
        r = rng.random()
        status = rng.choices(("pending", "accepted", "rejected"), (5, 4, 1))[0]
        meta = {"source": "bench", "n": i}
        if r < 0.6:
            return {"instruction": text(10, 300), "input": text(0, 200) if rng.random() < 0.3 else "",
                    "response": text(50, 1500), "status": status, "task_type": rng.choice(("qa", "code", "chat")),
                    "metadata": meta}
        if r < 0.8:
            turns = []
            for t in range(rng.choice((2, 4, 6))):
                turns.append({"role": "user" if t % 2 == 0 else "assistant", "content": text(20, 400)})
            return {"instruction": turns[-2]["content"], "response": turns[-1]["content"], "messages": turns,
                    "status": status, "metadata": meta}
        return {"instruction": text(10, 300), "response": text(50, 1000), "rejected": text(50, 1000),
                "status": status, "metadata": meta}

    conn = open_store(db)
    t0 = time.perf_counter()
    with transaction(conn):
        did = ensure_dataset(conn, "bench", "mixed")
    for start in range(0, rows, CHUNK):
        with transaction(conn):
            insert_samples(conn, did, (sample(i) for i in range(start, min(rows, start + CHUNK))))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    print(f"built {db.name}: {rows:,} rows, {db.stat().st_size / 1e6:.0f} MB in {time.perf_counter() - t0:.0f} s")


def in_child(step: str, db: Path) -> tuple[float, int, int]:
    """Run one step (Python that sets `n`) in a fresh interpreter on `conn`: (seconds, n, its peak RSS in MB)."""
    code = (f"import sys, resource; from workbench.store import open_store; conn = open_store({str(db)!r}); {step}; "
            "print(n, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, file=sys.stderr)")
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(p.stderr)
    n, rss = p.stderr.split()[-2:]
    return time.perf_counter() - t0, int(n), int(rss)


REFERENCE = ("import orjson; from workbench.samples import iter_samples\n"
             "n = 0\n"
             "with open({out!r}, 'wb') as f:\n"
             "    for s in iter_samples(conn):\n"
             "        f.write(orjson.dumps({{k: s[k] for k in ('instruction', 'input', 'response', 'rejected', "
             "'messages')}}) + b'\\n'); n += 1")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--formats", help="comma list of case labels (default: all)")
    a = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    db = OUT / f"bench_export_{a.rows}.db"
    if not db.exists():
        build_store(db, a.rows)
    work = OUT / "export_runs"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    # twice: the first run warms the page cache, so the reference is not slower than the exports it is compared to
    cold = in_child(REFERENCE.format(out=str(work / "reference.jsonl")), db)[0]
    ref_t, ref_n, ref_rss = in_child(REFERENCE.format(out=str(work / "reference.jsonl")), db)
    print(f"reference dump (read + orjson, no shaping): {ref_t:.1f} s warm ({cold:.1f} s cold), "
          f"{ref_n / ref_t:,.0f} rows/s, peak RSS {ref_rss} MB")
    wanted = set(a.formats.split(",")) if a.formats else None
    print(f"{'case':32} {'rows':>10} {'skipped':>9} {'s':>7} {'rows/s':>9} {'x ref':>6} {'RSS MB':>7} {'MB out':>7}")
    for label, fmt, kw, name in CASES:
        if wanted and label not in wanted:
            continue
        out = work / name
        step = (f"from workbench.exporter import export; r = export(conn, {str(out)!r}, {fmt!r}, **{kw!r}); "
                f"n = r.rows; sys.stdout.write(str(r.skipped))")
        code = (f"import sys, resource; from workbench.store import open_store; conn = open_store({str(db)!r}); "
                f"{step}; print(n, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, file=sys.stderr)")
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        t = time.perf_counter() - t0
        if p.returncode != 0:
            print(f"{label:32} failed: {p.stderr.strip().splitlines()[-1]}")
            continue
        n, rss = (int(x) for x in p.stderr.split()[-2:])
        size = sum(f.stat().st_size for f in ([out] if out.is_file() else out.rglob("*")) if f.is_file())
        print(f"{label:32} {n:>10,} {int(p.stdout or 0):>9,} {t:>7.1f} {n / t:>9,.0f} {t / ref_t:>6.2f} {rss:>7} "
              f"{size / 1e6:>7.0f}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
