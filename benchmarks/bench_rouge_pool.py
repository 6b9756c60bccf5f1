"""Self-Instruct's novelty check: one candidate's ROUGE-L against every instruction of a growing pool.

Prints ms per candidate for pools of 1k, 10k and 50k instructions (the 175 real seeds plus synthetic instructions
made of the seeds' words), for novel candidates (the whole pool is scanned) and near-copies (the scan stops at the
first hit >= 0.7). Run: python benchmarks/bench_rouge_pool.py
"""
from __future__ import annotations

import json
import random
import time
from pathlib import Path

from workbench.similarity import RougePool

SEEDS = Path(__file__).resolve().parents[2] / "shared" / "data" / "self-instruct-seed" / "seed_tasks_alpaca.json"


def main() -> None:
    seeds = [r["instruction"] for r in json.loads(SEEDS.read_text(encoding="utf-8"))]
    words = " ".join(seeds).split()
    rng = random.Random(0)

    def synthetic() -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(6, 30)))

    for size in (1_000, 10_000, 50_000):
        pool = RougePool(seeds)
        t0 = time.perf_counter()
        while len(pool) < size:
            pool.add(synthetic())
        build = time.perf_counter() - t0
        novel = [synthetic() for _ in range(50)]
        copies = [rng.choice(pool.texts) + " today" for _ in range(50)]
        for label, cands, stop in (("novel (full scan)", novel, 0.7), ("near-copy (stops at hit)", copies, 0.7)):
            t0 = time.perf_counter()
            for c in cands:
                pool.nearest(c, stop_at=stop)
            ms = (time.perf_counter() - t0) / len(cands) * 1000
            print(f"pool {size:>6,}: {label:<26} {ms:7.2f} ms per candidate   (pool built in {build:.2f} s)")


if __name__ == "__main__":
    main()
