"""Browse and Balance at a million rows: query costs, the TUI's open time and per-key latency, histogram
refresh time, live-update latency and peak RSS.

    python benchmarks/bench_browse_balance.py [--rows 1000000] [--rebuild]

The store (benchmarks/out/browse_<rows>.db, built once with a direct executemany, FTS and maintained counts
included) is cached. Each step runs in its own process so its peak RSS is its own. Keys are timed inside the app
from the key's action to the next screen update composed (Pilot's own per-key overhead is not included; the
headless driver skips only the terminal write).
"""
from __future__ import annotations

import argparse
import asyncio
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
OUT = Path(__file__).parent / "out"



def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def ms(values: list[float]) -> str:
    return f"p50 {pct(values, 50):.2f} ms, p95 {pct(values, 95):.2f} ms, max {max(values):.2f} ms (n={len(values)})"


# --- build ------------------------------------------------------------------------------------------------------

def build(path: Path, rows: int) -> None:
    from synth_store import build as build_store    # shared with bench_10m.py
    build_store(path, rows)


# --- core queries ------------------------------------------------------------------------------------------------

def core(path: Path) -> None:
    from workbench import browse, scores, stats, store
    from workbench.browse import Filter, Sort
    conn = store.open_store(path)
    main_id = store.dataset_id(conn, "main")
    total = conn.execute("SELECT max(id) FROM samples").fetchone()[0]

    def timed(fn, n=20):
        out = []
        for _ in range(n):
            t = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t) * 1000)
        return out

    print(f"histograms, all 7, read_counts (maintained + tail), all datasets: {ms(timed(lambda: stats.read_counts(conn)))}")
    print(f"histograms, one dataset: {ms(timed(lambda: stats.read_counts(conn, main_id)))}")
    t = time.perf_counter()
    conn.execute("SELECT task_type, count(*) FROM samples WHERE dataset_id = ? GROUP BY task_type", (main_id,)).fetchall()
    print(f"  for comparison, ONE indexed GROUP BY task_type over the dataset: {(time.perf_counter() - t) * 1000:.0f} ms")
    # a tail of 4,000 unfolded rows (a worker's recent output) read by GROUP BY beside the maintained counts
    upto = conn.execute("SELECT value FROM meta WHERE key = 'stats_upto'").fetchone()[0]
    conn.execute("UPDATE meta SET value = ? WHERE key = 'stats_upto'", (str(total - 4000),))
    conn.execute("DELETE FROM sample_stats")   # (counts are rebuilt below; only the tail's cost is measured here)
    tail = timed(lambda: stats.read_counts(conn), 10)
    conn.execute("UPDATE meta SET value = '0' WHERE key = 'stats_upto'")
    t = time.perf_counter()
    stats.fold(conn)
    refold = time.perf_counter() - t
    assert conn.execute("SELECT value FROM meta WHERE key = 'stats_upto'").fetchone()[0] == upto
    print(f"histograms with a 4,000-row unfolded tail: {ms(tail)}; full re-fold of {total:,} rows: {refold:.1f} s")

    for key in browse.SORT_KEYS:
        for desc in (False, True):
            sort = Sort(key, desc)
            for flt, label in ((Filter(dataset_id=main_id, rubric="judge"), "dataset"),
                               (Filter(rubric="judge"), "all datasets")):
                first = browse.page(conn, flt, sort, None, 100)
                deep_key = browse.page(conn, flt, sort, None, 1, backward=True)[0].key   # the last row
                walk, deep = [], []
                after = first[-1].key
                for _ in range(20):
                    t = time.perf_counter()
                    got = browse.page(conn, flt, sort, after, 100)
                    walk.append((time.perf_counter() - t) * 1000)
                    after = got[-1].key
                for _ in range(20):
                    t = time.perf_counter()
                    got = browse.page(conn, flt, sort, deep_key, 100, backward=True)
                    deep.append((time.perf_counter() - t) * 1000)
                    deep_key = got[0].key
                print(f"browse sort={key}{' desc' if desc else ''} ({label}): next page {ms(walk)}; "
                      f"pages back from the end {ms(deep)}")
    for flt, label in ((Filter(dataset_id=main_id, status="accepted", rubric="judge"), "status=accepted"),
                       (Filter(dataset_id=main_id, task_type="code", scores=scores.build("judge=7"), rubric="judge"),
                        "task=code score:judge=7.."),
                       (Filter(dataset_id=main_id, search="energy python", rubric="judge"), "search 'energy python'"),
                       (Filter(dataset_id=main_id, search="w0", rubric="judge"), "search 'w0' (rare word)")):
        conn.execute("DROP TABLE IF EXISTS temp.browse_hits")   # a new search: its match table is built again
        for key in ("id", "score"):
            sort, walk, after = Sort(key, True), [], None
            for _ in range(11):
                t = time.perf_counter()
                got = browse.page(conn, flt, sort, after, 100)
                walk.append((time.perf_counter() - t) * 1000)
                after = got[-1].key if got else None
            print(f"browse {label}, sort={key} desc: first page {walk[0]:.1f} ms"
                  f"{' (incl. building the match table)' if flt.search and key == 'id' else ''}; "
                  f"next pages {ms(walk[1:])}")
    t = time.perf_counter()
    n = browse.count(conn, Filter(dataset_id=main_id))
    print(f"count of the dataset ({n:,} rows, status line, off the key path): {(time.perf_counter() - t) * 1000:.0f} ms")
    print(f"core peak RSS {rss_mb():.0f} MB")


# --- the TUI -----------------------------------------------------------------------------------------------------

class KeyClock:
    """Times each key inside the app: from the table's action to the next composed screen update (`latency`,
    which includes waiting for Textual's next 60 fps frame), and the work alone: the action plus composing
    that update (`work`)."""

    def __init__(self, app, screen, target, methods):
        self.latency: list[float] = []
        self.work: list[float] = []
        self.slowest: list[tuple[float, str, float, float]] = []   # (work, action, action ms, compose ms)
        self._start: float | None = None
        self._name = ""
        self._action = 0.0
        original_update = screen._on_timer_update

        def update():
            t = time.perf_counter()
            original_update()
            if self._start is not None and self._composed:
                end = time.perf_counter()
                self.latency.append((end - self._start) * 1000)
                self.work.append((self._action + end - t) * 1000)
                self.slowest = sorted(self.slowest + [(self.work[-1], self._name, self._action * 1000,
                                                       (end - t) * 1000)], reverse=True)[:3]
                self._start = None
        screen._update_timer._callback = update     # the frame timer holds the bound method it was made with
        self._composed = False
        original_display = app._display

        def display(scr, renderable):
            original_display(scr, renderable)
            self._composed = renderable is not None
        app._display = display
        for name in methods:
            original = getattr(target, name)

            def wrapped(*a, _original=original, _name=name, **kw):
                self._composed = False
                self._name = _name
                self._start = t = time.perf_counter()
                result = _original(*a, **kw)
                self._action = time.perf_counter() - t
                return result
            setattr(target, name, wrapped)


async def tui_browse(path: Path, presses: int) -> dict:
    from widgets.virtual_table import VirtualTable
    from workbench.app import WorkbenchApp
    t0 = time.perf_counter()
    app = WorkbenchApp(db=path, dataset="main", screen="browse")
    out = {}
    async with app.run_test(size=(80, 24)) as pilot:
        while type(app.screen).__name__ != "BrowseScreen" or not any(t.rows for t in app.screen.query(VirtualTable)):
            await asyncio.sleep(0.005)
        await pilot.pause(0)
        out["open_s"] = time.perf_counter() - t0
        table = app.screen.query_one(VirtualTable)
        clock = KeyClock(app, app.screen, table, ["action_cursor_down", "action_cursor_up", "action_page_down",
                                      "action_page_up"])
        keys = (["pagedown"] * (presses // 4) + ["j"] * (presses // 4))
        for k in keys:
            await pilot.press(k)
        out["forward_rows"] = table.position
        await pilot.press("end")
        while not (table.at_end and not table.fetching):
            await asyncio.sleep(0.005)
        for k in ["pageup"] * (presses // 4) + ["k"] * (presses // 4):
            await pilot.press(k)
        out["keys_ms"], out["work_ms"], out["slowest"] = clock.latency, clock.work, clock.slowest
        out["last_id"] = table.current.data.id
        from workbench import store
        conn = store.open_store(path)
        # the top fresh score, walked down the score index (a max() over every score joined to its sample read
        # the whole table: 2.3 s of CPU at 1M rows, 7.8 s at 3M, counted in the step's CPU and blocking the app)
        top = conn.execute("SELECT sc.score FROM sample_scores sc JOIN samples s ON s.id = sc.sample_id "
                           "WHERE sc.rubric = 'judge' AND sc.stale = 0 AND s.dataset_id = ? ORDER BY sc.score DESC "
                           "LIMIT 1", (store.dataset_id(conn, "main"),)).fetchone()[0]
        conn.close()
        await pilot.press("o")                     # sort by score, then reverse: time the second reload
        while table.fetching:
            await asyncio.sleep(0.002)
        t = time.perf_counter()
        await pilot.press("r")
        while table.fetching or table.rows[0].data.score != top:
            await asyncio.sleep(0.002)
        out["resort_ms"] = (time.perf_counter() - t) * 1000
    out["rss_mb"] = rss_mb()
    return out


async def tui_balance(path: Path) -> dict:
    from workbench import store
    from workbench.app import WorkbenchApp
    t0 = time.perf_counter()
    app = WorkbenchApp(db=path, screen="balance")
    out = {"query_ms": [], "draw_ms": [], "commit_to_screen_ms": [], "commit_ms": [], "toggle_ms": []}
    writer = store.open_store(path)
    rng = random.Random(3)

    async def painted(screen) -> None:
        """Until the screen's next frame is composed (the redraw on the terminal, not just the widgets updated)."""
        done = asyncio.Event()
        screen.call_after_refresh(done.set)
        await done.wait()

    async with app.run_test(size=(80, 24)) as pilot:
        while type(app.screen).__name__ != "BalanceScreen" or not app.screen.refreshes:
            await asyncio.sleep(0.005)
        out["open_s"] = time.perf_counter() - t0
        screen = app.screen
        changed = []
        for i in range(40):                         # another process commits; time until the screen shows it
            await asyncio.sleep(rng.uniform(0.05, 0.6))   # at a random phase of the screen's poll
            seen = screen.refreshes
            ids = [r[0] for r in writer.execute("SELECT id FROM samples WHERE status = 'pending' LIMIT 50 OFFSET ?",
                                                (i * 50,))]
            changed += ids
            t = time.perf_counter()
            writer.execute(f"UPDATE samples SET status = 'accepted' WHERE id IN ({','.join(map(str, ids))})")
            out["commit_ms"].append((time.perf_counter() - t) * 1000)
            while screen.refreshes == seen:
                await asyncio.sleep(0.002)
            await painted(screen)
            out["commit_to_screen_ms"].append((time.perf_counter() - t) * 1000)
            out["query_ms"].append(screen.last_query_ms)
            out["draw_ms"].append(screen.last_draw_ms)
        writer.execute(f"UPDATE samples SET status = 'pending' WHERE id IN ({','.join(map(str, changed))})")
        # the same under a stream of commits (a worker writing a row every 10 ms, from its own connection): the
        # screen's refreshes are throttled, the marked commits timed as above
        import threading
        stop = threading.Event()

        def worker_writes():
            conn = store.open_store(path)
            ids = [r[0] for r in conn.execute("SELECT id FROM samples WHERE status = 'rejected' LIMIT 2000")]
            n = 0
            while not stop.is_set():
                conn.execute("UPDATE samples SET difficulty = ? WHERE id = ?", (("easy", "hard")[n % 2], ids[n % 2000]))
                n += 1
                time.sleep(0.01)
            out["worker_commits"] = n
            conn.close()
        thread = threading.Thread(target=worker_writes)
        thread.start()
        out["stream_ms"] = []
        refreshes0, t_stream = screen.refreshes, time.perf_counter()
        try:
            for i in range(20):
                await asyncio.sleep(rng.uniform(0.05, 0.4))
                ids = [r[0] for r in writer.execute("SELECT id FROM samples WHERE status = 'pending' LIMIT 50 "
                                                    "OFFSET ?", (5000 + i * 50,))]
                t = time.perf_counter()
                writer.execute(f"UPDATE samples SET status = 'accepted' WHERE id IN ({','.join(map(str, ids))})")
                want = screen.counts.total(("accepted",)) + len(ids)
                while screen.counts.total(("accepted",)) < want:
                    await asyncio.sleep(0.002)
                await painted(screen)
                out["stream_ms"].append((time.perf_counter() - t) * 1000)
                writer.execute(f"UPDATE samples SET status = 'pending' WHERE id IN ({','.join(map(str, ids))})")
                while screen.counts.total(("accepted",)) >= want:
                    await asyncio.sleep(0.002)
        finally:
            stop.set()
            thread.join()
        out["stream_refresh_per_s"] = (screen.refreshes - refreshes0) / (time.perf_counter() - t_stream)
        await pilot.pause(0.5)
        toggles = []
        for _ in range(10):                         # the reference: a redraw with no query, key to frame
            t = time.perf_counter()
            await pilot.press("a")
            await painted(screen)
            out["toggle_ms"].append((time.perf_counter() - t) * 1000)
            toggles.append(screen.last_draw_ms)
        out["toggle_draw_ms"] = toggles
    out["rss_mb"] = rss_mb()
    return out


def tui(path: Path, which: str, presses: int) -> None:
    if which == "browse":
        r = asyncio.run(tui_browse(path, presses))
        print(f"Browse: open to first rows drawn {r['open_s']:.2f} s; cursor reached row {r['forward_rows']:,}, "
              f"then End and back up to id {r['last_id']:,}")
        print(f"Browse keys (j/k/PgUp/PgDn), action to screen update composed, incl. the wait for the next "
              f"60 fps frame: {ms(r['keys_ms'])}")
        print(f"Browse keys, work only (action + composing the update): {ms(r['work_ms'])}")
        print("  slowest: " + "; ".join(f"{name} {w:.0f} ms (action {a:.0f} + compose {c:.0f})"
                                        for w, name, a, c in r["slowest"]))
        print(f"Browse re-sort by score desc (key press incl. Pilot's overhead, to new rows): {r['resort_ms']:.0f} ms; peak RSS {r['rss_mb']:.0f} MB")
    else:
        r = asyncio.run(tui_balance(path))
        print(f"Balance: open to histograms drawn {r['open_s']:.2f} s")
        print(f"Balance refresh, all 7 histograms: query {ms(r['query_ms'])}; draw {ms(r['draw_ms'])}")
        live = r["commit_to_screen_ms"]
        from screens.balance import POLL_SECONDS
        print(f"Balance live update: another connection commits -> histograms redrawn with the new counts "
              f"(frame composed; {POLL_SECONDS * 1000:.0f} ms poll): {ms(live)}   (target p95 <= 150 ms: "
              f"{'MET' if pct(live, 95) <= 150 else 'NOT MET'})")
        print(f"  reference, the all/accepted toggle key (redraw with no query) to frame, incl. Pilot's delivery: "
              f"{ms(r['toggle_ms'])}; live update p50 = {pct(live, 50) / pct(r['toggle_ms'], 50):.1f}x it, "
              f"p95 = {pct(live, 95) / pct(r['toggle_ms'], 95):.1f}x; the writer's commit itself {ms(r['commit_ms'])}")
        print(f"Balance live update while a worker commits every 10 ms ({r['worker_commits']:,} commits): "
              f"{ms(r['stream_ms'])}   (target p95 <= 150 ms: {'MET' if pct(r['stream_ms'], 95) <= 150 else 'NOT MET'}); "
              f"refreshes {r['stream_refresh_per_s']:.1f}/s (throttled)")
        print(f"Balance all/accepted toggle (redraw code only): {ms(r['toggle_draw_ms'])}; peak RSS {r['rss_mb']:.0f} MB")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--rebuild", action="store_true")
    ap.add_argument("--presses", type=int, default=500)
    ap.add_argument("--step", choices=("build", "core", "browse", "balance"))
    ap.add_argument("--out", type=Path, default=OUT, help="where the cached store lives (default benchmarks/out)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"browse_{args.rows}.db"
    if args.step == "build":
        build(path, args.rows)
    elif args.step == "core":
        core(path)
    elif args.step:
        tui(path, args.step, args.presses)
    else:
        steps = (["build"] if args.rebuild or not path.exists() else []) + ["core", "browse", "balance"]
        for step in steps:
            subprocess.run([sys.executable, __file__, "--rows", str(args.rows), "--presses", str(args.presses),
                            "--out", str(args.out), "--step", step], check=True)


if __name__ == "__main__":
    main()
