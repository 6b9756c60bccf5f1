"""Browse in a real terminal at 1M rows: each key -> its redraw fully written, inside tmux, and the bytes per key.

    python benchmarks/bench_browse_tmux.py [--rows 1000000] [--db PATH] [--size 120x40] [--rounds 3] [--out DIR]

The relay, the tmux driver, the references and the per-key split are bench_review_tmux.py's (imported, not
copied): a detached tmux session runs the real app, opened on Browse of dataset `main` of a synth_store.py store
(built in --out on first use, or --db), under a PTY relay that logs with CLOCK_MONOTONIC when each key reaches
the app's terminal and each chunk the app writes. A key's latency is key -> the last byte of the redraw that
holds the status line the key leads to (`row N of M`: the cursor's position, known in advance for every key);
bytes/key is everything the app wrote until the next key (what SSH carries).

Keys, paced like a curator (one every 90-150 ms): j, k, PgDn, PgUp in id order; End and Home; the same sorted by
length; then searches sorted by length: Enter on the query, PgDn, End (the last page of a common-word search,
among the shortest rows), Home. Printed per key kind: p50/p95/max and bytes/key, page keys against the 50 ms
target (p95), with the trivial Textual app (one line per key) of the same run as the reference.
"""
from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_review_tmux as rt   # noqa: E402  (the relay and the tmux driver)

HERE = Path(__file__).resolve()
PAGE_TARGET_MS = 50.0            # a page key (PgDn/PgUp/j/k, and End/Home) should show within this, p95
SEARCHES = ["python value", "energy data", "function"]


def browse_app() -> int:
    """The real app, opened on Browse of dataset main (there is no CLI command that opens Browse)."""
    from workbench.app import run_app
    return run_app(dataset="main", screen="browse")


def status_row(n: int, total: int) -> bytes:
    """The status line's position, as a pattern of the bytes written (not followed by more digits)."""
    return re.escape(f"row {n:,} of {total:,}".encode()) + rb"(?![\d,])"


def maybe_counted(n: int, total: int, from_end: bool = False) -> bytes:
    """The position while the count may still run: `of ?`, and `row ?` too for a position from the end."""
    row = f"(?:{n:,}|\\?)" if from_end else f"{n:,}"
    return rf"row {row} of (?:{total:,}|\?)(?![\d,])".encode()


LOADED = rb"(?! \xc2\xb7)"    # nothing after the position: no " · loading…", the rows are in


def plan(total: int, step: int, rounds: int) -> list[tuple[str, str, bytes, str]]:
    """(tmux key, label, marker, group) in order; the cursor's row number after each key is known in advance."""
    keys: list[tuple[str, str, bytes, str]] = []
    row = 1

    def go(key: str, label: str, to: int, of: int, group: str) -> None:
        nonlocal row
        row = to
        keys.append((key, label, status_row(to, of), group))

    for _ in range(rounds):
        for _ in range(10):
            go("j", "j", row + 1, total, "id")
        for _ in range(10):
            go("PageDown", "PgDn", row + step, total, "id")
        for _ in range(5):
            go("k", "k", row - 1, total, "id")
        for _ in range(5):
            go("PageUp", "PgUp", row - step, total, "id")
        go("End", "End", total, total, "id")
        for _ in range(3):
            go("PageUp", "PgUp", row - step, total, "id")
        go("Home", "Home", 1, total, "id")
    return keys


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--db", type=Path, help="a synth_store.py store (default: built in --out)")
    ap.add_argument("--size", default="120x40")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of each key sequence")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out")
    ap.add_argument("--browse-app", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.browse_app:
        return browse_app()
    if not shutil.which("tmux"):
        print("tmux is not installed", file=sys.stderr)
        return 1
    import atexit
    atexit.register(lambda: (rt.tmux("kill-server", check=False), rt.remove_socket()))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    args.out.mkdir(parents=True, exist_ok=True)
    db = args.db or args.out / f"browse_{args.rows}.db"
    if not db.exists():
        import synth_store
        print(f"building {db} ({args.rows:,} samples)…", flush=True)
        synth_store.build(db, args.rows)
    from workbench import browse, store
    from workbench.browse import Filter
    conn = store.open_store(db)
    main_id = store.dataset_id(conn, "main")
    total = browse.count(conn, Filter(dataset_id=main_id))
    counts = {q: browse.count(conn, Filter(dataset_id=main_id, search=q)) for q in SEARCHES}
    conn.close()
    size = tuple(int(x) for x in args.size.split("x"))
    cfg = args.out / "bench_browse_tmux.toml"
    cfg.write_text("")
    env = {"TERM": "tmux-256color", "WORKBENCH_DB": str(db), "WORKBENCH_CONFIG": str(cfg),
           "PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8",
           "PYTHONPATH": str(ROOT)}
    log = args.out / "bench_browse_tmux.relay"
    rng = random.Random(5)
    pace = (0.09, 0.15)

    # the framework's floor: a trivial Textual app redrawing one line per key (bench_review_tmux's)
    rt.session([sys.executable, str(rt.HERE), "--trivial"], size, env, log)
    rt.wait_for(r"#1\b", 60)
    time.sleep(0.5)
    sent = rt.press(60, "a", pace, rng)
    ref_app = rt.per_key(rt.end_session(log), sent, [b"#%d" % (i + 2) for i in range(len(sent))])

    # Browse
    t0 = time.monotonic()
    rt.session([sys.executable, str(HERE), "--browse-app"], size, env, log)
    rt.wait_for(rf"row 1 of {total:,}(?![\d,])", 120)
    opened = time.monotonic() - t0
    time.sleep(1.0)
    rt.tmux("send-keys", "-t", "bench", "PageDown")        # one page step, read off the screen (untimed)
    m = rt.wait_for(r"row (\d[\d,]*) of", 30)
    while int(m.group(1).replace(",", "")) == 1:
        m = rt.wait_for(r"row (\d[\d,]*) of", 30)
    step = int(m.group(1).replace(",", "")) - 1
    rt.tmux("send-keys", "-t", "bench", "Home")
    rt.wait_for(rf"row 1 of {total:,}(?![\d,])", 30)
    time.sleep(0.3)

    sequence = plan(total, step, args.rounds)
    sent, labels, markers = [], [], []

    def run(seq) -> None:
        for key, label, marker, group in seq:
            time.sleep(rng.uniform(*pace))
            sent.append(time.monotonic())
            rt.tmux("send-keys", "-t", "bench", key)
            labels.append((group, label))
            markers.append(marker)

    run(sequence)
    # sorted by length: `o` twice (id -> score -> length), untimed: wait until the rows are in
    for _ in range(2):
        rt.tmux("send-keys", "-t", "bench", "o")
        time.sleep(0.2)
    rt.wait_for(rf"sort: length · row 1 of {total:,}(?![\d,])(?! ·)", 60)
    time.sleep(0.5)
    run([(k, lab, mk, "length") for k, lab, mk, _ in plan(total, step, 1)])
    # searches sorted by length: type the query (untimed), Enter, PgDn, End, Home
    for q in SEARCHES:
        n = counts[q]
        rt.tmux("send-keys", "-t", "bench", "/")
        time.sleep(0.3)
        rt.tmux("send-keys", "-t", "bench", "C-u")            # clear the bar (it opens with the last query)
        rt.tmux("send-keys", "-t", "bench", "-l", q)
        time.sleep(0.5)
        # Enter: the new query's first rows drawn (the count may come later: `row 1 of ?`); the next keys wait for
        # them (a key pressed while they load moves the old rows, and the new ones then start at row 1 again)
        run([("Enter", "search Enter", re.escape(f"query: {q} · row 1 of ".encode()) + rb"[\d,?]+" + LOADED,
              "search")])
        rt.wait_for(rf"query: {re.escape(q)} · row 1 of [\d,?]+(?! ·)", 120)
        time.sleep(0.2)
        seq = []
        row = 1
        for _ in range(5):
            row += step
            seq.append(("PageDown", "PgDn", maybe_counted(row, n), "search"))
        # (the count runs beside the pages: until it is in, the position from the end shows as `?`)
        seq += [("End", "End", maybe_counted(n, n, True) + LOADED, "search"),
                ("PageUp", "PgUp", maybe_counted(n - step, n, True), "search"),
                ("Home", "Home", maybe_counted(1, n), "search")]
        run(seq)
        rt.wait_for(rf"row 1 of {n:,}(?![\d,])", 120)
    time.sleep(0.5)
    shown = rt.pane_text()
    events = rt.end_session(log)
    res = per_timed_key(events, sent, markers)
    print(f"tmux {os.popen('tmux -V').read().strip()}, pane {size[0]}x{size[1]}; store {db} "
          f"({total:,} rows in dataset main); Browse opened (launch -> first rows) in {opened:.2f} s; "
          f"page step {step} rows; {len(sent)} timed keys, one every {pace[0] * 1000:.0f}-{pace[1] * 1000:.0f} ms")
    print(f"reference, trivial Textual app (one line per key): {rt.fmt(ref_app['visible'])}; "
          f"bytes/key p95 {rt.pct(ref_app['bytes'], 95):.0f}")
    if os.environ.get("BENCH_DEBUG"):
        for i, (gl, mk) in enumerate(zip(labels, markers)):
            print("   ", i, gl, mk, res["visible"][i], res["bytes"][i])
    groups: dict[tuple[str, str], list[int]] = {}
    for i, gl in enumerate(labels):
        groups.setdefault(gl, []).append(i)
    ref95 = rt.pct(ref_app["visible"], 95)
    worst = 0.0
    for (group, label), idx in groups.items():
        v = [res["visible"][i] for i in idx if res["visible"][i] is not None]
        b = [res["bytes"][i] for i in idx]
        missing = sum(res["visible"][i] is None for i in idx)
        p95 = rt.pct(v, 95) if v else float("nan")
        if label != "search Enter":
            worst = max(worst, p95)
        print(f"  {group:7} {label:13} n={len(idx):3}  {rt.fmt(v)}  ({p95 / ref95:.1f}x the trivial app's p95)  "
              f"bytes/key p50 {statistics.median(b):.0f} p95 {rt.pct(b, 95):.0f}" + (f"  missing {missing}" if missing else ""))
    print(f"page keys (all but the search's Enter): worst p95 {worst:.1f} ms (target <= {PAGE_TARGET_MS:.0f} ms: "
          f"{'MET' if worst <= PAGE_TARGET_MS else 'NOT MET'})")
    ok = f"row 1 of {counts[SEARCHES[-1]]:,}" in shown
    print(f"  the pane shows the last search's first row at the end: {'yes' if ok else 'NO'}")
    log.unlink(missing_ok=True)
    return 0 if ok else 1


def per_timed_key(events: list, sent: list[float], markers: list[bytes], gap: float = 0.004) -> dict:
    """Like bench_review_tmux.per_key, for keys mixed with untimed input (the typed queries): each timed key is the
    first input the relay saw after it was sent; its bytes run to the next input of any kind; `markers` are
    patterns of the redraw the key leads to."""
    inputs = [i for i, (kind, _, _) in enumerate(events) if kind == "in"]
    out = {"visible": [], "bytes": []}
    for k, t_sent in enumerate(sent):
        i = next((i for i in inputs if events[i][1] >= t_sent), None)
        if i is None:
            out["visible"].append(None)
            out["bytes"].append(0)
            continue
        t_key = events[i][1]
        nxt = next((j for j in inputs if j > i), len(events))
        out["bytes"].append(sum(len(d) for kind, _, d in events[i + 1:nxt] if kind == "out"))
        last = rt.redraw_end([(t, d) for kind, t, d in events[i + 1:] if kind == "out"], markers[k], gap)
        out["visible"].append(None if last is None else (last - t_key) * 1000)
    return out


if __name__ == "__main__":
    sys.exit(main())
