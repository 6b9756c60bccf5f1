"""Text normalization (`clean --normalize`): control sequences and invisible characters removed, HTML remnants and
entities, runs of spaces and blank lines; code spans are left exactly as written.
"""
from __future__ import annotations

import html
import re
import unicodedata
from typing import Callable

from .textnorm import drop_invisible, strip_controls


# --- normalization -------------------------------------------------------------------------------------------

NORMALIZE_DEFAULTS = {
    "unicode": "NFC",        # or "NFKC" (also folds full-width forms and ligatures; changes x² to x2), or false
    "invisible": True,       # drop zero-width characters and BOMs (ZWJ/ZWNJ kept inside words and emoji);
                             # no-break spaces become spaces
    "control": True,         # drop terminal escape sequences whole, then control characters but newline and tab
    "whitespace": True,      # trailing spaces, runs of spaces inside prose lines, 3+ blank lines, outer blanks
    "html": True,            # stray HTML outside code: <br>/<p> become line breaks, known tags go, entities decode
}

_FENCE = re.compile(r"(```.*?(?:```|\Z)|`[^`\n]*`)", re.S)     # code spans are left exactly as written
_HOLE = "\ue000"
_BREAK_TAG = re.compile(r"<br\s*/?>", re.I)
_PARA_TAG = re.compile(r"</?p(?:\s[^<>]*)?>", re.I)
_KNOWN_TAG = re.compile(r"</?(?:div|span|b|i|u|em|strong|font|center|small|big|section|article|html|body|"
                        r"blockquote|h[1-6]|ul|ol|li|table|tr|td|th|tbody|thead)(?:\s[^<>]*)?/?>", re.I)
_ENTITY = re.compile(r"&(?:[a-zA-Z]{2,8}|#\d{2,6}|#x[0-9a-fA-F]{2,5});")
_SPACES = re.compile(r"(?<=\S) {2,}(?=\S)")
_TRAILING = re.compile(r"[ \t]+$", re.M)
_BLANKS = re.compile(r"\n{3,}")


def normalize_options(config: dict | None) -> dict:
    opts = dict(NORMALIZE_DEFAULTS)
    user = ((config or {}).get("clean") or {}).get("normalize") or {}
    unknown = set(user) - set(opts)
    if unknown:
        raise ValueError(f"[clean.normalize]: unknown option {sorted(unknown)[0]!r} (one of {', '.join(opts)})")
    opts.update(user)
    if opts["unicode"] not in ("NFC", "NFKC", False):
        raise ValueError(f"[clean.normalize] unicode = {opts['unicode']!r}: one of \"NFC\", \"NFKC\", false")
    return opts


def _prose(text: str, fn: Callable[[str], str]) -> str:
    """Apply fn to the text outside code fences and inline code (each code span stands in as one private-use
    character while fn runs, so fn still sees what is next to it)."""
    if "`" not in text:
        return fn(text)
    parts = _FENCE.split(text)
    if len(parts) == 1 or any(_HOLE in p for p in parts):
        return fn(text) if len(parts) == 1 else text
    code = parts[1::2]
    out = fn(_HOLE.join(parts[0::2])).split(_HOLE)
    if len(out) != len(code) + 1:      # fn swallowed a span (e.g. inside a tag it removed): piece by piece
        return "".join(p if i % 2 else fn(p) for i, p in enumerate(parts))
    return "".join(p + (code[i] if i < len(code) else "") for i, p in enumerate(out))


def normalize_text(text: str, opts: dict = NORMALIZE_DEFAULTS) -> str:
    if not text:
        return text
    if opts["unicode"]:
        text = unicodedata.normalize(opts["unicode"], text)
    if opts["html"] and ("<" in text or "&" in text):
        def unmark(s: str) -> str:
            s = _BREAK_TAG.sub("\n", s)
            s = _PARA_TAG.sub("\n\n", s)
            s = _KNOWN_TAG.sub("", s)
            return _ENTITY.sub(lambda m: html.unescape(m.group(0)), s)
        text = _prose(text, unmark)
    if opts["control"]:
        text = strip_controls(text)      # first: an ESC sequence goes whole, not leaving "[31m" behind
    if opts["invisible"]:
        text = drop_invisible(text)
    if opts["whitespace"]:
        text = _prose(text, lambda s: _SPACES.sub(" ", s))
        text = _TRAILING.sub("", text)
        text = _BLANKS.sub("\n\n", text).strip()
    return text


def normalize_sample(s: dict, opts: dict) -> dict:
    """The text fields normalization would change: {field: new value} (messages as a list)."""
    changes = {}
    for f in ("instruction", "input", "response", "rejected", "system"):
        v = s.get(f)
        if v:
            new = normalize_text(v, opts)
            if new != v:
                changes[f] = new
    msgs = s.get("messages")
    if msgs:
        new_msgs = [{**m, "content": normalize_text(m["content"], opts)} if isinstance(m.get("content"), str) else m
                    for m in msgs]
        if new_msgs != msgs:
            changes["messages"] = new_msgs
    return changes
