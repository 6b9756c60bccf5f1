"""CLI text output never carries control sequences from untrusted text: the raw bytes on a pty are searched."""
from __future__ import annotations

import json

import pytest

from hostile import NAME, OSC52, TEXT, forbidden, import_hostile, run_in_pty
from llm_server import LLMServer, write_endpoint
from workbench.safe_text import SafeStream, invisible_counts, json_safe, label, sanitize


def test_sanitize_shows_every_control_visibly():
    s = sanitize(TEXT)
    assert "\x1b" not in s and "\x07" not in s and "\x9b" not in s and "\r" not in s and "\x00" not in s
    assert "\u202e" not in s and "␛]52;c;SE9TVElMRQ==␇" in s and "<U+009B>1;1H" in s and "<U+202E>" in s
    assert "␍" in s and "␀" in s and "␈" in s
    assert sanitize("plain ascii") == "plain ascii"
    assert sanitize("two\nlines\tand tab") == "two\nlines\tand tab"
    assert label("two\nlines\tx") == "two␊lines␉x"
    assert label("a" * 50, 10) == "a" * 9 + "…"
    assert sanitize("\ud800 lone surrogate").encode("utf-8")     # encodable: no crash writing it
    # scripts keep their joiners unless asked to show them
    fa = "می\u200cخواهم"
    assert sanitize(fa) == fa and sanitize(fa, show_invisible=True) == "می<U+200C>خواهم"
    assert invisible_counts(fa + "\u200b\u202e\u2066") == (2, 2)
    assert invisible_counts("plain") == (0, 0)


def test_json_escapes_c1_and_bidi_but_stays_the_same_json():
    obj = {"name": NAME, "text": TEXT}
    out = json_safe(json.dumps(obj, ensure_ascii=False))
    assert json.loads(out) == obj
    assert "\x9b" not in out and "\u202e" not in out and "\x1b" not in out


def test_safe_stream_passes_text_and_sanitizes_controls():
    import io
    buf = io.StringIO()
    s = SafeStream(buf)
    s.write("ok\n")
    s.write(OSC52)
    assert buf.getvalue() == "ok\n␛]52;c;SE9TVElMRQ==␇"


@pytest.fixture
def hostile_store(tmp_path, cli):
    return import_hostile(tmp_path, cli)


def _check(raw: bytes) -> str:
    assert forbidden(raw) == [], raw[:3000]
    assert b"\x1b" not in raw and b"\x07" not in raw      # a plain command writes no control at all
    text = raw.decode("utf-8")
    assert "␛]52;c;SE9TVElMRQ==␇" in text, text
    return text


def test_datasets_stats_and_dry_run_on_a_terminal(hostile_store, tmp_path):
    _check(run_in_pty(["datasets"]))
    _check(run_in_pty(["import", str(hostile_store), "--dry-run"]))
    raw = run_in_pty(["review", "--dataset", NAME + "-missing"])      # the error message quotes the names
    text = _check(raw)
    assert "error: no dataset named" in text


def test_piped_output_is_sanitized_too(hostile_store, tmp_path):
    import subprocess
    import sys
    from hostile import ROOT
    p = subprocess.run([sys.executable, "-m", "workbench", "datasets"], capture_output=True, cwd=ROOT, timeout=60)
    assert p.returncode == 0
    _check(p.stdout)
    p = subprocess.run([sys.executable, "-m", "workbench", "datasets", "--json"], capture_output=True, cwd=ROOT,
                       timeout=60)
    assert b"\x1b" not in p.stdout and b"\xc2\x9b" not in p.stdout
    assert NAME in [d["name"] for d in json.loads(p.stdout)]          # --json keeps the exact value


def test_jobs_show_with_a_hostile_reply(hostile_store, tmp_path, cli):
    with LLMServer(reply=lambda messages, body: f"no score here {OSC52} {TEXT}") as srv:
        write_endpoint(tmp_path / "config.toml", srv)
        code, out, err = cli("run", "judge", "--dataset", NAME, "--endpoint", "local", "--wait")
    assert code == 1, err                       # every item failed: the reply has no score
    assert "\x1b" not in out + err
    text = _check(run_in_pty(["jobs", "show", "1"]))
    assert "raw reply:" in text
    for argv in (["jobs"], ["stats"], ["stats", "--dataset", NAME]):
        raw = run_in_pty(argv)
        assert forbidden(raw) == [] and b"\x1b" not in raw and b"\x07" not in raw, raw
