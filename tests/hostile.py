"""Hostile text for the sanitizer tests, and a pty runner that returns the raw bytes a process writes."""
from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

OSC52 = "\x1b]52;c;SE9TVElMRQ==\x07"          # writes "HOSTILE" to the clipboard
TITLE = "\x1b]0;pwned-title\x07\x1b]2;pwned2\x1b\\"
COLOUR = "\x1b[31mred\x1b[0m\x9b1;1H"        # CSI as ESC [ and as the 8-bit C1 form
# a name: each kind of control, a bidi override, a CR that would overwrite the line
NAME = f"evil{OSC52}{TITLE}{COLOUR}\u202egnp.exe\rX"
TEXT = f"Question {OSC52} and {TITLE}; {COLOUR}\x07\x08 bell\u202e and a CR\rhere\x00nul"


def import_hostile(tmp_path, cli) -> Path:
    """Import three rows of hostile text (and a hostile column name) as the dataset NAME; returns the file."""
    import json
    data = tmp_path / "hostile.jsonl"
    rows = [{"instruction": TEXT + f" {i} می\u200cخواهم", "response": "answer " + TEXT, f"col{OSC52}": "x"}
            for i in range(3)]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    code, out, err = cli("import", str(data), "--dataset", NAME)
    assert code == 0, err
    return data


def forbidden(raw: bytes) -> list[str]:
    """What of the payload reached the output as controls (empty: nothing)."""
    found = []
    for what, needle in (("OSC 52", b"\x1b]52"), ("OSC 0 title", b"\x1b]0;"), ("OSC 2 title", b"\x1b]2;"),
                         ("hostile CSI", b"\x1b[31mred"), ("8-bit CSI", b"\xc2\x9b"),
                         ("bidi override", "\u202e".encode()),
                         ("clipboard payload", b"52;c;SE9TVElMRQ==\x07")):
        if needle in raw:
            found.append(what)
    return found


def run_in_pty(argv: list[str], env: dict | None = None, keys: list[tuple[float, bytes]] = (),
               timeout: float = 60.0, rows: int = 40, cols: int = 160) -> bytes:
    """Run `python -m workbench ARGV` on a pseudo-terminal; write `keys` (after their delay, seconds) and return
    every byte it wrote, exactly as a terminal would receive them."""
    import fcntl
    import struct
    import termios
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    full_env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": str(cols), "LINES": str(rows), **(env or {})}
    p = subprocess.Popen([sys.executable, "-m", "workbench", *argv], stdin=slave, stdout=slave, stderr=slave,
                         cwd=ROOT, env=full_env, start_new_session=True)
    os.close(slave)
    out = bytearray()
    pending = list(keys)
    start = last = time.monotonic()
    try:
        while True:
            now = time.monotonic()
            if now - start > timeout:
                raise TimeoutError(f"{argv} still running after {timeout} s; output so far: {bytes(out[-2000:])!r}")
            if pending and now - last >= pending[0][0]:
                os.write(master, pending.pop(0)[1])
                last = now
            r, _, _ = select.select([master], [], [], 0.05)
            if r:
                try:
                    chunk = os.read(master, 65536)
                except OSError:       # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            elif p.poll() is not None and not pending:
                # drain what is left
                while select.select([master], [], [], 0.2)[0]:
                    try:
                        chunk = os.read(master, 65536)
                    except OSError:
                        chunk = b""
                    if not chunk:
                        break
                    out += chunk
                break
    finally:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=10)
        os.close(master)
    return bytes(out)
