"""Review in a real terminal: key -> next sample on screen, at 1M rows, inside tmux, and the bytes per key.

    python benchmarks/bench_review_tmux.py [--rows 1000000] [--presses 200] [--size 120x40] [--out DIR]
                                           [--command CMD] [--compare CMD]

A detached tmux session (its own server socket, TERM=tmux-256color inside) runs the real `workbench review` on the
1M-row store of bench_review.py (built there on first use, cached in --out). Between tmux's pane and the app sits
a small PTY relay (this file, `--relay`): it passes bytes both ways untouched and logs, with CLOCK_MONOTONIC
times, each key as it reaches the app's terminal and each chunk the app writes. Keys go in with
`tmux send-keys`, paced like a curator (one every 90-150 ms). Per key:

  latency  = key reaches the app's pty -> the last byte of the redraw holding the next sample (`#<id>` in the
             status line), i.e. when the terminal has it all; also the first byte, and from `tmux send-keys`;
  bytes    = everything the app wrote between this key and the next (what an SSH session carries).

References in the same run, through the same tmux + relay: an echo (a raw-mode process writing one byte back per
key: the floor of the pipe), and a trivial Textual app that redraws one line per key (the framework's floor).
The figure is printed in ms against the 16 ms target and as ratios to both references.

`--compare CMD` also times another build of the app (e.g. main's: `env PYTHONPATH=/path/to/main python -m workbench`)
in the same run, in alternating halves (this build, that one, this, that: a load that changes during the run
weighs on both), and prints this build's figures as ratios to that one's. Run it from outside a worktree, so that
neither build imports the other's modules from the current directory.
"""
from __future__ import annotations

import argparse
import os
import pickle
import random
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
HERE = Path(__file__).resolve()
TARGET_MS = 16.0
SOCKETS = iter(f"wb-bench-{os.getpid()}-{i}" for i in range(1000))   # a fresh tmux server per session
SOCKET = next(SOCKETS)


# --- the relay: runs inside tmux, the app runs under it ------------------------------------------------------------

def relay(log_path: str, argv: list[str]) -> int:
    """Pass bytes between our terminal (tmux's pane) and a child on a fresh pty; log times and sizes."""
    import fcntl
    import pty
    import select
    import termios
    import tty
    size = fcntl.ioctl(0, termios.TIOCGWINSZ, b"\0" * 8)
    pid, master = pty.fork()
    if pid == 0:
        fcntl.ioctl(0, termios.TIOCSWINSZ, size)
        os.execvp(argv[0], argv)
    old = termios.tcgetattr(0)
    tty.setraw(0)
    events: list[tuple[str, float, bytes]] = []    # ("in" | "out", monotonic time, bytes)
    try:
        while True:
            ready, _, _ = select.select([0, master], [], [])
            if master in ready:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    break
                if not data:
                    break
                t = time.monotonic()
                os.write(1, data)
                events.append(("out", t, data))
            if 0 in ready:
                data = os.read(0, 1024)
                if not data:
                    break
                os.write(master, data)
                events.append(("in", time.monotonic(), data))
    finally:
        termios.tcsetattr(0, termios.TCSADRAIN, old)
        with open(log_path + ".part", "wb") as f:
            pickle.dump(events, f)
        os.replace(log_path + ".part", log_path)
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    return 0


def echo() -> int:
    """The pipe's floor: raw mode, one byte back per byte read."""
    import termios
    import tty
    old = termios.tcgetattr(0)
    tty.setraw(0)
    try:
        while True:
            b = os.read(0, 1)
            if not b or b == b"\x11":       # ctrl+q ends it
                return 0
            os.write(1, b"*")
    finally:
        termios.tcsetattr(0, termios.TCSADRAIN, old)


def trivial_app() -> int:
    """The framework's floor: a Textual app that shows `#<n>` on one line and counts it up per `a`."""
    from textual.app import App
    from textual.widgets import Static

    class Trivial(App):
        BINDINGS = [("a", "next", "next")]

        def compose(self):
            self.n = 1
            yield Static(f"  #{self.n}  ", id="line")

        def action_next(self):
            self.n += 1
            self.query_one("#line", Static).update(f"  #{self.n}  ")

    Trivial().run()
    return 0


# --- the driver --------------------------------------------------------------------------------------------------

def tmux(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["tmux", "-L", SOCKET, *args], capture_output=True, text=True)
    if check and done.returncode:
        raise SystemExit(f"tmux {' '.join(args[:3])}… failed: {done.stderr.strip()}")
    return done


def remove_socket() -> None:
    """tmux leaves its server's socket file behind after kill-server: remove ours (only ours, by its name)."""
    base = os.environ.get("TMUX_TMPDIR") or "/tmp"
    Path(base, f"tmux-{os.getuid()}", SOCKET).unlink(missing_ok=True)


def pane_text() -> str:
    return tmux("capture-pane", "-p", "-t", "bench").stdout


def wait_for(pattern: str, timeout: float) -> re.Match:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        m = re.search(pattern, pane_text())
        if m:
            return m
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {pattern!r} in the tmux pane; it shows:\n{pane_text()}")


def session(cmd: list[str], size: tuple[int, int], env: dict, log: Path) -> None:
    global SOCKET
    SOCKET = next(SOCKETS)
    log.unlink(missing_ok=True)
    inner = [sys.executable, str(HERE), "--relay", str(log), "--", *cmd]
    tmux("-f", "/dev/null", "new-session", "-d", "-s", "bench", "-x", str(size[0]), "-y", str(size[1]),
         *[a for k, v in env.items() for a in ("-e", f"{k}={v}")], " ".join(map(shlex_quote, inner)))
    tmux("set-option", "-t", "bench", "default-terminal", "tmux-256color", check=False)


def shlex_quote(s: str) -> str:
    import shlex
    return shlex.quote(s)


def end_session(log: Path, quit_key: str = "C-q") -> list:
    tmux("send-keys", "-t", "bench", quit_key, check=False)
    end = time.monotonic() + 20
    while not log.exists() and time.monotonic() < end:
        time.sleep(0.05)
    tmux("kill-server", check=False)
    remove_socket()
    if not log.exists():
        raise SystemExit("the relay wrote no log (the app did not quit?)")
    with open(log, "rb") as f:
        return pickle.load(f)


def press(keys: int, key: str, pace: tuple[float, float], rng: random.Random) -> list[float]:
    sent = []
    for _ in range(keys):
        time.sleep(rng.uniform(*pace))
        sent.append(time.monotonic())
        tmux("send-keys", "-t", "bench", key)
    time.sleep(0.3)
    return sent


def per_key(events: list, sent: list[float], markers: list[bytes] | None, gap: float = 0.004) -> dict:
    """Split the relay's log at each key that reached the app; per key: first byte, the redraw holding the marker
    (its last chunk: the chunks of one write arrive back to back, `gap` apart at most), bytes until the next key."""
    inputs = [i for i, (kind, _, _) in enumerate(events) if kind == "in"]
    if len(inputs) < len(sent) + 1:
        raise SystemExit(f"the relay saw {len(inputs)} inputs for {len(sent)} keys and the quit key")
    keys = inputs[-1 - len(sent):-1]    # the presses are the last inputs before the quit key (before them: the
    out = {"first": [], "visible": [], "bytes": [], "delivery": [], "missing": 0}   # terminal's query replies)
    for k, i in enumerate(keys):
        t_key = events[i][1]
        end = inputs[inputs.index(i) + 1]
        out["bytes"].append(sum(len(d) for kind, _, d in events[i + 1:end] if kind == "out"))
        out["delivery"].append((t_key - sent[k]) * 1000)
        # the redraw may come after the next key (a slow step): look on until the quit key; a sample never drawn
        # (superseded within one frame by the next key's) counts as missing
        chunks = [(t, d) for kind, t, d in events[i + 1:inputs[-1]] if kind == "out"]
        if not chunks:
            out["missing"] += 1
            continue
        out["first"].append((chunks[0][0] - t_key) * 1000)
        last = redraw_end(chunks, None if markers is None else re.escape(markers[k]) + rb"(?!\d)", gap)
        if last is None:
            out["missing"] += 1
            continue
        out["visible"].append((last - t_key) * 1000)
    return out


def redraw_end(chunks: list, pattern: bytes | None, gap: float) -> float | None:
    """When the redraw holding `pattern` (None: any output) was all written: the time of its last chunk (the chunks
    of one write arrive back to back, `gap` apart at most); None if no chunk holds it."""
    seen = b""
    for j, (t, d) in enumerate(chunks):
        seen = seen[-96:] + d             # a marker split across two chunks is still found
        if pattern is None or re.search(pattern, seen):
            last = t
            for t2, _ in chunks[j + 1:]:
                if t2 - last > gap:
                    break
                last = t2
            return last
    return None


def fresh_start(db: Path) -> None:
    """No position, no decisions, every sample pending: each run of Review starts at the same sample."""
    c = sqlite3.connect(db)
    c.execute("DELETE FROM meta WHERE key LIKE 'review.position.%'")
    c.execute("UPDATE samples SET status = 'pending' WHERE id IN (SELECT sample_id FROM decisions)")
    c.execute("DELETE FROM decisions")
    c.commit()
    c.close()


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))] if values else float("nan")


def fmt(values) -> str:
    if not values:
        return "n/a"
    return f"p50 {statistics.median(values):.2f} ms, p95 {pct(values, 95):.2f} ms, max {max(values):.2f} ms"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--presses", type=int, default=200)
    ap.add_argument("--size", default="120x40")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out")
    ap.add_argument("--key", default="a", help="the key timed (a: accept, j: next)")
    ap.add_argument("--command", help="the command run in the pane instead of `workbench` (its arguments follow: "
                                      "review --dataset bench-review), e.g. a traced copy of the app")
    ap.add_argument("--compare", help="another build's command, timed in the same run (ratios printed)")
    ap.add_argument("--relay", help=argparse.SUPPRESS)
    ap.add_argument("--echo", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--trivial", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("cmd", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.relay:
        return relay(args.relay, args.cmd)
    if args.echo:
        return echo()
    if args.trivial:
        return trivial_app()
    if not shutil.which("tmux"):
        print("tmux is not installed", file=sys.stderr)
        return 1
    import atexit                           # a run that stops half-way leaves no tmux server or socket behind
    atexit.register(lambda: (tmux("kill-server", check=False), remove_socket()))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))     # a killed run cleans up too (atexit runs on exit)
    import bench_review
    size = tuple(int(x) for x in args.size.split("x"))
    args.out.mkdir(parents=True, exist_ok=True)
    db = args.out / f"review_{args.rows}.db"
    if not db.exists():
        print(f"building {db} ({args.rows:,} samples)…", flush=True)
        bench_review.build_store(db, args.rows, 0.2)
    fresh_start(db)
    cfg = args.out / "bench_review_tmux.toml"
    cfg.write_text("")
    env = {"TERM": "tmux-256color", "WORKBENCH_DB": str(db), "WORKBENCH_CONFIG": str(cfg),
           "PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8",
           }   # no COLORTERM: an SSH session does not forward it, so 256 colours
    log = args.out / "bench_review_tmux.relay"
    rng = random.Random(5)
    pace = (0.09, 0.15)
    workbench = str(Path(sys.executable).parent / "workbench")
    if not Path(workbench).exists():
        workbench = shutil.which("workbench") or "workbench"

    # 1. the pipe's floor: echo
    session([sys.executable, str(HERE), "--echo"], size, env, log)
    time.sleep(0.5)
    sent = press(min(args.presses, 100), "a", pace, rng)
    ref_echo = per_key(end_session(log), sent, None)

    # 2. the framework's floor: one line redrawn per key
    session([sys.executable, str(HERE), "--trivial"], size, env, log)
    wait_for(r"#1\b", 30)
    time.sleep(0.5)
    sent = press(min(args.presses, 100), "a", pace, rng)
    ref_app = per_key(end_session(log), sent, [b"#%d" % (i + 2) for i in range(len(sent))])

    # 3. Review at 1M rows (and the build compared with, in alternating halves)
    def review_run(cmd: list[str], presses: int) -> dict:
        fresh_start(db)
        t0 = time.monotonic()
        session([*cmd, "review", "--dataset", bench_review.DATASET], size, {**env, **{
            k: v for k, v in os.environ.items() if k == "TRACE"}}, log)
        first = int(wait_for(r"#(\d+)\s+PENDING", 60).group(1))
        opened = time.monotonic() - t0
        time.sleep(1.5)                     # the screen's first counts and background index check settle
        step = 1 if args.key in ("a", "j", "x", "s") else 0
        sent = press(presses, args.key, pace, rng)
        shown = pane_text()
        events = end_session(log)
        out = per_key(events, sent, [b"#%d" % (first + step * (i + 1)) for i in range(len(sent))])
        last = first + step * len(sent)
        out.update(opened=opened, events=events, sent=len(sent), last=last,
                   ok=re.search(rf"#{last}(?!\d)", shown) is not None)
        return out

    def pooled(runs: list[dict]) -> dict:
        out = {k: [v for r in runs for v in r[k]] for k in ("visible", "first", "bytes", "delivery")}
        out.update(missing=sum(r["missing"] for r in runs), ok=all(r["ok"] for r in runs), sent=sum(
            r["sent"] for r in runs), opened=max(r["opened"] for r in runs), last=runs[-1]["last"],
            events=runs[-1]["events"])
        return out

    app_cmd = args.command.split() if args.command else [workbench]
    if args.compare:
        halves = (args.presses // 2, args.presses - args.presses // 2)
        runs = {"this": [], "that": []}
        for n in halves:
            runs["this"].append(review_run(app_cmd, n))
            runs["that"].append(review_run(args.compare.split(), n))
        review, other = pooled(runs["this"]), pooled(runs["that"])
    else:
        review, other = review_run(app_cmd, args.presses), None
    sent, events, last, ok, opened = ([None] * review["sent"], review["events"], review["last"], review["ok"],
                                      review["opened"])

    c = sqlite3.connect(db)
    decided = c.execute("SELECT count(*) FROM decisions").fetchone()[0]
    c.close()
    print(f"tmux {subprocess.run(['tmux', '-V'], capture_output=True, text=True).stdout.strip()}, pane "
          f"{size[0]}x{size[1]}, TERM=tmux-256color; store {args.rows:,} samples; {len(sent)} presses of "
          f"{args.key!r}, one every {pace[0] * 1000:.0f}-{pace[1] * 1000:.0f} ms; Review opened in {opened:.2f} s")
    print(f"reference, echo through the same tmux + pty: {fmt(ref_echo['visible'])}; "
          f"tmux send-keys -> pty {fmt(ref_echo['delivery'])}")
    print(f"reference, trivial Textual app (one line per key): {fmt(ref_app['visible'])}; "
          f"bytes/key mean {statistics.mean(ref_app['bytes']):.0f}, p95 {pct(ref_app['bytes'], 95):.0f}")
    v = review["visible"]
    print(f"Review {args.key!r} -> next sample fully written to the terminal: {fmt(v)}   (target p95 <= "
          f"{TARGET_MS:.0f} ms: {'MET' if pct(v, 95) <= TARGET_MS else 'NOT MET'})")
    print(f"  first byte of the redraw: {fmt(review['first'])}; from `tmux send-keys` add {fmt(review['delivery'])}")
    e50, a50 = statistics.median(ref_echo["visible"]), statistics.median(ref_app["visible"])
    print(f"  ratios: p50 {statistics.median(v) / e50:.0f}x the echo, {statistics.median(v) / a50:.2f}x the "
          f"trivial Textual app; p95 {pct(v, 95) / pct(ref_app['visible'], 95):.2f}x the trivial app's p95")
    b = review["bytes"]
    print(f"  bytes written to the terminal per key (what SSH carries): mean {statistics.mean(b):.0f}, "
          f"p50 {statistics.median(b):.0f}, p95 {pct(b, 95):.0f}, max {max(b)}; "
          f"{statistics.mean(b) / statistics.mean(ref_app['bytes']):.1f}x the trivial app's")
    if other is not None:
        ov, ob = other["visible"], other["bytes"]
        print(f"build compared with ({args.compare}), same run, alternating halves: {fmt(ov)}; bytes/key p50 "
              f"{statistics.median(ob):.0f}, p95 {pct(ob, 95):.0f}")
        print(f"  this build / that one: p50 {statistics.median(v) / statistics.median(ov):.2f}x, p95 "
              f"{pct(v, 95) / pct(ov, 95):.2f}x, max {max(v) / max(ov):.2f}x; bytes/key p50 "
              f"{statistics.median(b) / statistics.median(ob):.2f}x, p95 {pct(b, 95) / pct(ob, 95):.2f}x")
        ok = ok and other["ok"]
    print(f"  keys whose next sample was never drawn (superseded by the next key's): {review['missing']}; the pane shows #{last} at the end: "
          f"{'yes' if ok else 'NO'}; decisions in the store (the last run's): {decided}")
    log.unlink(missing_ok=True)
    if os.environ.get("BENCH_KEEP_EVENTS"):
        with open(os.environ["BENCH_KEEP_EVENTS"], "wb") as f:
            pickle.dump(events, f)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
