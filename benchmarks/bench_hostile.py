"""Huge fields, huge replies and fast typists, each against a reference measured in the same run.

    python benchmarks/bench_hostile.py [--field-mb 50] [--reply-mb 20] [--replies 8] [--keys 481]

1. Max UI stall (the longest the event loop did not run, seen by a 10 ms ticker inside the real app, headless at
   80x24) while Review opens a sample with a --field-mb response and `m` is pressed until it goes no further, then
   while the Jobs screen and its `v` view show a failed item whose stored raw reply is --reply-mb (a store from before
   the reply cap). Reference: the same steps on a 2 KB field / 1 KB raw reply. Target: <= 100 ms.
2. Peak RSS of a real worker process (`workbench worker --until-idle`, VmHWM) answering --replies items whose replies
   are --reply-mb each, from the test server: with the default max_reply_bytes (1 MiB), and with the cap raised
   above the reply size (what every reply cost before the cap). Reference: the same job with short replies.
3. Keys typed ahead vs decisions made: --keys decision keys (a/x/s) delivered as one burst into Review, against a
   store made slower than the typist (each decision 5 ms); decisions counted in the store afterwards.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def make_store(path: Path, response: str, raw: str) -> None:
    from workbench.samples import insert_samples
    from workbench.stats import fold
    from workbench.store import ensure_dataset, fts_sync, open_store, transaction
    conn = open_store(path)
    with transaction(conn):
        did = ensure_dataset(conn, "bench")
        insert_samples(conn, did, [{"instruction": "before", "response": "r"},
                                   {"instruction": "the sample", "response": response},
                                   {"instruction": "after", "response": "r"}])
        jid = conn.execute("INSERT INTO jobs (kind, params, status, total, failed, created_at) "
                           "VALUES ('generate', '{}', 'done', 1, 1, 'now')").lastrowid
        conn.execute("INSERT INTO job_items (job_id, key, status, error, raw, updated_at) VALUES "
                     "(?, 's:2', 'failed', 'unparseable reply: reply is not valid JSON', ?, 'now')", (jid, raw))
    fts_sync(conn)          # as after any import: Review's background sync then finds nothing to do
    fold(conn)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


async def stalls(db: Path) -> dict:
    """Max event-loop gap (s) in each phase: Review open + m..., j/k past the sample, Jobs + v."""
    from screens.jobs import FailuresScreen, JobsScreen
    from screens.review import ReviewScreen
    from workbench.app import WorkbenchApp
    app = WorkbenchApp(db=db, dataset="bench", screen="review", sample_id=2)
    gaps: list[float] = []
    out = {}
    async with app.run_test(size=(80, 24)) as pilot:
        last = [time.perf_counter()]

        def tick():
            t = time.perf_counter()
            gaps.append(t - last[0] - 0.01)
            last[0] = t
        app.set_interval(0.01, tick)
        while not (isinstance(app.screen, ReviewScreen) and app.screen.sample and not app.screen.busy):
            await asyncio.sleep(0.005)
        screen = app.screen
        await pilot.pause(0.3)
        out["review open"] = max(gaps)
        gaps.clear()
        for _ in range(4):
            await pilot.press("m")
            await pilot.pause(0.15)
        out["review m (4 times)"] = max(gaps)
        gaps.clear()
        for key in "jkkj":
            await pilot.press(key)
            while screen.busy:
                await asyncio.sleep(0.005)
            await pilot.pause(0.1)
        out["review j/k across it"] = max(gaps)
        app.push_screen(JobsScreen(dataset="bench"))
        await pilot.pause(0.1)
        jobs = app.screen
        while not (jobs.loaded.is_set() and jobs.view.get("failures")):
            await asyncio.sleep(0.01)
        await pilot.pause(0.3)
        gaps.clear()
        await pilot.press("v")
        while not isinstance(app.screen, FailuresScreen):
            await asyncio.sleep(0.005)
        await pilot.pause(0.3)
        out["jobs detail + v"] = max(gaps)
    return out


def run_stalls(field_mb: int, raw_mb: int, tmp: Path) -> None:
    print(f"1. max UI stall (event-loop gap), field {field_mb} MB / raw reply {raw_mb} MB vs 2 KB / 1 KB:")
    results = {}
    for label, response, raw in (("reference", "word " * 400, "x" * 1000),
                                 ("huge", "word " * (field_mb * 1024 * 1024 // 5), "z" * (raw_mb << 20))):
        db = tmp / f"stall-{label}.db"
        make_store(db, response, raw)
        del response, raw
        results[label] = asyncio.run(stalls(db))
    for phase in results["reference"]:
        ref, big = results["reference"][phase], results["huge"][phase]
        print(f"   {phase:<24} {big * 1000:7.1f} ms  (reference {ref * 1000:6.1f} ms, x{big / max(ref, 1e-3):.1f})")
    worst = max(results["huge"].values())
    print(f"   worst: {worst * 1000:.1f} ms  (target <= 100 ms: {'OK' if worst <= 0.1 else 'OVER'})")


def peak_rss_of_worker(db: Path, cfg: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WORKBENCH_DB": str(db), "WORKBENCH_CONFIG": str(cfg)}
    p = subprocess.Popen([sys.executable, "-m", "workbench", "worker", "--until-idle"], env=env, cwd=ROOT,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0
    while p.poll() is None:
        try:
            for line in Path(f"/proc/{p.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.05)
    err = p.stderr.read()
    p.stderr.close()
    if p.returncode not in (0, 1):
        raise SystemExit(f"worker failed ({p.returncode}): {err[-500:]}")
    return peak / 1024


def run_rss(reply_mb: int, replies: int, tmp: Path) -> None:
    from llm_server import LLMServer
    from workbench import jobs as J
    from workbench.config import load_config
    from workbench.samples import insert_samples
    from workbench.store import ensure_dataset, open_store, transaction
    print(f"2. worker peak RSS, {replies} items, replies of {reply_mb} MB vs short replies:")
    huge = "y" * (reply_mb << 20)
    with LLMServer() as srv:
        rows = {}
        for label, big, cap in (("reference (short replies)", False, None), ("20 MB replies, default cap", True, None),
                                ("20 MB replies, cap raised", True, (reply_mb + 44) << 20)):
            srv.reply = (lambda m, b: huge) if big else (lambda m, b: "a short answer " * 20)
            db, cfg = tmp / f"rss-{len(rows)}.db", tmp / f"rss-{len(rows)}.toml"
            conn = open_store(db)
            with transaction(conn):
                did = ensure_dataset(conn, "d")
                insert_samples(conn, did, [{"instruction": f"question {i}"} for i in range(replies)])
            argv = ["endpoints", "add", "local", "--base-url", srv.base_url, "--model", "test-model",
                    "--max-retries", "0", "--max-concurrency", str(replies)]
            if cap:
                argv += ["--max-reply-bytes", str(cap)]
            subprocess.run([sys.executable, "-m", "workbench", *argv, "--config", str(cfg)], cwd=ROOT, check=True,
                           capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
            jid = J.queue_job(conn, "generate", config=load_config(cfg), dataset="d", endpoint="local")
            conn.close()
            rss = peak_rss_of_worker(db, cfg)
            conn = open_store(db)
            j = J.get_job(conn, jid)
            stored = conn.execute("SELECT coalesce(sum(length(response)), 0) FROM samples WHERE job_id = ?",
                                  (jid,)).fetchone()[0] + conn.execute(
                "SELECT coalesce(sum(length(raw)), 0) FROM job_items WHERE job_id = ?", (jid,)).fetchone()[0]
            conn.close()
            rows[label] = rss
            print(f"   {label:<28} {rss:7.0f} MB  (done {j['done']}, failed {j['failed']}, "
                  f"{stored / 1e6:.1f} MB of reply text stored)")
        ref = rows["reference (short replies)"]
        for label, rss in rows.items():
            print(f"   {label:<28} x{rss / ref:.2f} of the reference")


async def typeahead(db: Path, keys: str) -> tuple[int, int, float, int]:
    from textual import events
    from screens.review import ReviewScreen
    from workbench import review
    from workbench.app import WorkbenchApp
    real = review.decide

    def slow(*a, **kw):
        time.sleep(0.005)
        return real(*a, **kw)
    review.decide = slow
    try:
        app = WorkbenchApp(db=db, dataset="keys", screen="review")
        async with app.run_test(size=(80, 24)) as pilot:
            while not (isinstance(app.screen, ReviewScreen) and app.screen.sample and not app.screen.busy):
                await asyncio.sleep(0.005)
            screen = app.screen
            t0 = time.perf_counter()
            for k in keys:
                ev = events.Key(k, k)
                ev.set_sender(app)
                app._driver.send_message(ev)
            while screen.typed < len(keys) or screen.busy or screen.queue:
                await pilot.pause(0.01)
            took = time.perf_counter() - t0
            return screen.typed, screen.decided, took, screen.queue_peak
    finally:
        review.decide = real


def run_keys(n: int, tmp: Path) -> None:
    import sqlite3
    from workbench.samples import insert_samples
    from workbench.store import ensure_dataset, open_store, transaction
    db = tmp / "keys.db"
    conn = open_store(db)
    with transaction(conn):
        did = ensure_dataset(conn, "keys")
        insert_samples(conn, did, [{"instruction": f"q{i}", "response": f"a{i}"} for i in range(n + 10)])
    conn.close()
    rng = random.Random(7)
    keys = "".join(rng.choice("aaaxs") for _ in range(n))
    typed, decided, took, peak = asyncio.run(typeahead(db, keys))
    c = sqlite3.connect(db)
    stored = c.execute("SELECT count(*) FROM decisions").fetchone()[0]
    per_sample = c.execute("SELECT max(k) FROM (SELECT count(*) AS k FROM decisions GROUP BY sample_id)").fetchone()[0]
    in_order = [r[0] for r in c.execute("SELECT action FROM decisions ORDER BY id")] == \
        [{"a": "accept", "x": "reject", "s": "skip"}[k] for k in keys]
    c.close()
    print(f"3. keys typed ahead vs decisions made (store 5 ms a decision, keys as one burst):")
    print(f"   keys typed {typed}, decisions made {decided}, decisions in the store {stored} "
          f"(ratio {stored / len(keys):.3f}); at most {per_sample} per sample; in typed order: {in_order}; "
          f"queue peaked at {peak}; all applied in {took:.2f} s")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--field-mb", type=int, default=50)
    ap.add_argument("--reply-mb", type=int, default=20)
    ap.add_argument("--replies", type=int, default=8)
    ap.add_argument("--keys", type=int, default=481)
    ap.add_argument("--only", choices=("stall", "rss", "keys"), default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as d:
        tmp = Path(d)
        if args.only in (None, "stall"):
            run_stalls(args.field_mb, args.reply_mb, tmp)
        if args.only in (None, "rss"):
            run_rss(args.reply_mb, args.replies, tmp)
        if args.only in (None, "keys"):
            run_keys(args.keys, tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
