"""The real TUI on a pseudo-terminal, over a store full of hostile names and text: the raw bytes it writes carry
none of the payload's control sequences (OSC 52 clipboard, OSC 0/2 title, CSI colours, BEL, bidi overrides)."""
from __future__ import annotations

import re

from hostile import NAME, OSC52, TEXT, forbidden, import_hostile, run_in_pty
from llm_server import LLMServer, write_endpoint

# Textual's own pointer-shape sequence ends in BEL; nothing else may
_POINTER_SHAPE = re.compile(rb"\x1b\]22;[a-z-]*\x07")


def test_tui_screens_write_no_hostile_controls(tmp_path, cli):
    import_hostile(tmp_path, cli)
    with LLMServer(reply=lambda messages, body: f"no score {OSC52} {TEXT}") as srv:
        write_endpoint(tmp_path / "config.toml", srv)
        code, out, err = cli("run", "judge", "--dataset", NAME, "--endpoint", "local", "--wait")
    assert code == 1, err      # every item failed: its raw reply (hostile) is kept and shown in Jobs
    step = 2.5
    keys = [(6.0, b"\r"),              # Datasets -> Review of the hostile dataset
            (step, b"i"),              # show invisible characters
            (step, b"\x1b"),           # back
            (step, b"b"), (step, b"\x1b"),     # Browse
            (step, b"l"), (step, b"\x1b"),     # Balance
            (step, b"d"), (step + 1, b"\x1b"),     # Duplicates: the three rows are near-duplicates
            (step, b"c"), (step + 1, b"\x1b"),     # Clean: filter hits name the dataset
            (step, b"t"),              # Jobs: the failed job's detail and raw replies
            (step + 1, b"\x11")]       # ctrl+q
    raw = run_in_pty(["--db", str(tmp_path / "store.db")], keys=keys, timeout=90)
    assert forbidden(raw) == [], [raw[max(0, raw.find(b"\x1b]52") - 200):][:400]]
    assert b"\x07" not in _POINTER_SHAPE.sub(b"", raw)
    text = raw.decode("utf-8", "replace")
    # each screen was drawn, with the payload shown as visible stand-ins
    for seen in ("]52;c;SE9TVElMRQ==", "Browse", "Balance", "Duplicates", "Clean", "Jobs", "raw reply", "<U+200C>",
                 "invisible: 1 zero-width, 2 bidi control (i: hide)"):
        assert seen in text, seen
