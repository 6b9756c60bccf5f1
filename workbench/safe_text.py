"""Untrusted text made safe to show: the one sanitizer for the TUI and for the CLI's text output.

Dataset text, names, file names, model replies and error messages that quote them are untrusted. On a terminal,
ESC starts a control sequence (OSC 52 writes the clipboard, OSC 0/2 sets the window title, CSI moves the cursor),
BEL rings, CR overwrites a line, the C1 codes U+0080-U+009F are 8-bit forms of the same, bidi overrides reorder
what is read, and a lone surrogate cannot even be encoded. `sanitize()` replaces each such character with a
visible stand-in (`␛]52;…` shows what was there), so nothing of it reaches the terminal as a control.

Zero-width characters (ZWJ, ZWNJ, ZWSP, word joiner, BOM, soft hyphen, LRM/RLM) are kept by default: Persian,
Hindi and emoji sequences need ZWJ/ZWNJ. `invisible_counts()` counts them (and the bidi controls) so Review can
flag them, and `sanitize(..., show_invisible=True)` shows them as `<U+200D>`.

Pure Python, no UI imports: widgets/safe_text.py builds on it for the TUI, `SafeStream` wraps the CLI's output.
"""
from __future__ import annotations

import re

# C0 except TAB and LF, DEL, C1, bidi embeddings/overrides/isolates, lone surrogates
UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")
# shown as they are by default (scripts need them); flagged and counted in Review
ZERO_WIDTH = re.compile("[\u00ad\u061c\u180e\u200b-\u200f\u2060-\u2064\ufeff]")
_LINE_BREAKS = {"\n": "␊", "\t": "␉"}


def visible(ch: str) -> str:
    """A visible stand-in for one unsafe or invisible character."""
    o = ord(ch)
    if o < 0x20:
        return chr(0x2400 + o)  # Unicode "control pictures": ␀ … ␛ …
    if o == 0x7F:
        return "␡"
    return f"<U+{o:04X}>"


def sanitize(value, *, one_line: bool = False, show_invisible: bool = False) -> str:
    """`value` as text that is safe to write to a terminal. `one_line` also shows LF and TAB as ␊ ␉ (for
    names in tables and headers); `show_invisible` also shows zero-width characters as <U+200D> markers."""
    text = "" if value is None else str(value)
    if text.isascii() and text.isprintable():
        return text      # the common case, no regex
    text = UNSAFE.sub(lambda m: visible(m.group()), text)
    if one_line:
        text = text.translate(str.maketrans(_LINE_BREAKS))
    if show_invisible:
        text = ZERO_WIDTH.sub(lambda m: visible(m.group()), text)
    return text


def label(value, limit: int | None = None) -> str:
    """A short untrusted name (dataset, column, model) on one line, at most `limit` characters."""
    text = sanitize(value, one_line=True)
    if limit is not None and len(text) > limit:
        text = text[:max(0, limit - 1)] + "…"
    return text


def invisible_counts(text: str | None) -> tuple[int, int]:
    """(zero-width characters, bidi controls) in `text`."""
    if not text or text.isascii():
        return 0, 0
    return len(ZERO_WIDTH.findall(text)), len(BIDI.findall(text))


_JSON_UNSAFE = re.compile("[\x7f-\x9f\u202a-\u202e\u2066-\u2069\u2028\u2029]")


def json_safe(dumped: str) -> str:
    """JSON text (json.dumps with ensure_ascii=False) with DEL, C1 and bidi controls written as \\uXXXX escapes:
    still the same JSON value, but nothing a terminal acts on (json.dumps escapes C0 itself)."""
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", dumped)


class SafeStream:
    """A text stream that sanitizes everything written to it (TAB and LF pass). The CLI wraps stdout and stderr
    in it, so no command can print untrusted text raw. `raw` is the wrapped stream, for our own progress lines
    (they need CR) that carry no untrusted text."""

    def __init__(self, raw):
        self.raw = raw

    def write(self, s: str) -> int:
        self.raw.write(sanitize(s))
        return len(s)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name):       # flush, isatty, fileno, encoding, ...
        return getattr(self.raw, name)


def raw_stream(stream):
    """The stream under a SafeStream (or the stream itself): for trusted output that needs CR."""
    return getattr(stream, "raw", stream) if isinstance(stream, SafeStream) else stream
