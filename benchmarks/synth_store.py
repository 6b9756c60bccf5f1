"""A synthetic store at any size for the scale benchmarks (bench_browse_balance.py, bench_10m.py): direct
executemany into the real schema, FTS and maintained counts included, so the app finds nothing to catch up on.

Two datasets: `main` (19 of 20 rows) and `extra`; statuses 70/20/10 % pending/accepted/rejected; 40 % of the
rows scored by rubric `judge` (1-10, sample_scores plus a judgment). Rows are written in transactions of
`commit_every` rows, so the WAL stays small at 10M rows (one transaction would grow it past the store's size).
"""
from __future__ import annotations

import itertools
import random
import resource
import time
from pathlib import Path

TASKS = ["qa", "code", "math", "writing", "summarize", "classify", "extract", "brainstorm", "rewrite", "chat",
         "reasoning", "translate"]
DOMAINS = [f"domain-{i}" for i in range(30)]
WORDS = ("the of and to in is for that with as on by be this are from at or an it which data model response "
         "question answer explain write list describe python function value example first time people water "
         "energy system language code number result process important different").split()


def build(path: Path, rows: int, *, commit_every: int = 200_000, log=print) -> dict:
    """Write a fresh store of `rows` samples at `path`; returns the build's figures (seconds, bytes)."""
    from workbench import stats, store
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    rng = random.Random(42)
    pool = [" ".join(rng.choice(WORDS + [f"w{j}"]) for j in range(rng.randint(5, 700))) for _ in range(4000)]
    conn = store.open_store(path)
    t0 = time.perf_counter()
    ts = store.now()
    with store.transaction(conn):
        main_id = store.ensure_dataset(conn, "main")
        extra_id = store.ensure_dataset(conn, "extra")
    first = (conn.execute("SELECT max(id) FROM samples").fetchone()[0] or 0) + 1

    def gen():
        for i in range(rows):
            ins = pool[i % 4000][: rng.randint(10, 400)]
            resp = pool[(i * 7) % 4000][: rng.choice([60, 200, 600, 1500, 3000])]
            r = rng.random()
            status = "pending" if r < 0.7 else ("accepted" if r < 0.9 else "rejected")
            score = round(rng.uniform(1, 10), 1) if rng.random() < 0.4 else None
            yield (extra_id if i % 20 == 19 else main_id, ins, resp, rng.choices(TASKS, weights=range(12, 0, -1))[0],
                   rng.choice(DOMAINS), rng.choice(["easy", "medium", "hard", None]), status, score,
                   rng.getrandbits(63), len(ins), len(resp), ts, ts)

    rows_iter = gen()
    done = 0
    while True:
        chunk = list(itertools.islice(rows_iter, commit_every))
        if not chunk:
            break
        scored = [(first + done + k, row[7], row[8]) for k, row in enumerate(chunk) if row[7] is not None]
        with store.transaction(conn):
            # samples.score is not read any more (workbench/scores.py): one score per rubric in sample_scores
            conn.executemany("INSERT INTO samples (dataset_id, instruction, response, task_type, domain, difficulty, "
                             "status, score, content_hash, instruction_len, response_len, created_at, updated_at) "
                             "VALUES (?,?,?,?,?,?,?,NULL,?,?,?,?,?)", (r[:7] + r[8:] for r in chunk))
            conn.executemany("INSERT INTO judgments (sample_id, judge, rubric, rubric_version, overall, created_at) "
                             "VALUES (?, 'bench-judge', 'judge', '1', ?, ?)", ((i, s, ts) for i, s, _ in scored))
            conn.executemany("INSERT INTO sample_scores (sample_id, rubric, score, scale_min, scale_max, judge, "
                             "content_hash, created_at) VALUES (?, 'judge', ?, 1, 10, 'bench-judge', ?, ?)",
                             ((i, s, h, ts) for i, s, h in scored))
        done += len(chunk)
        if done % 1_000_000 == 0:
            log(f"  {done:,} rows, {time.perf_counter() - t0:.0f} s")
    t1 = time.perf_counter()
    folded = stats.fold(conn, chunk=100_000)
    t2 = time.perf_counter()
    store.fts_sync(conn, chunk=50_000)
    t3 = time.perf_counter()
    conn.execute("ANALYZE")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    out = {"rows": rows, "insert_s": t1 - t0, "fold_s": t2 - t1, "fts_s": t3 - t2, "total_s": time.perf_counter() - t0,
           "bytes": path.stat().st_size, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "cpu_s": sum(resource.getrusage(resource.RUSAGE_SELF)[:2])}
    log(f"build: {rows:,} rows inserted in {out['insert_s']:.1f} s; stats.fold of {folded:,} rows "
        f"{out['fold_s']:.1f} s; FTS {out['fts_s']:.1f} s; file {out['bytes'] / 1e9:.2f} GB; "
        f"peak RSS {out['rss_mb']:.0f} MB")
    return out
