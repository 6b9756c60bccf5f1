"""Untrusted text shown literally: no markup, no escape sequences reaching the terminal, long fields capped.

Dataset text goes through `safe_text()` into a rich `Text` (never parsed as markup). Control characters (ESC, BEL,
NUL, C1 codes, lone CR), bidi override/isolate controls and lone surrogates are replaced by the core sanitizer's
visible stand-ins (workbench/safe_text.py: ␛, ␇, <U+202E>, ...) in reverse video, so they can neither
recolour nor move the screen nor crash the UTF-8 writer. Tabs become spaces. Past `limit` characters (or
`MAX_LINES` lines) the rest is counted, not drawn: a 100k-character field would cost ~170 ms a draw.
"""
from __future__ import annotations

import re

from rich.text import Text

from workbench.safe_text import UNSAFE, ZERO_WIDTH, label, visible  # noqa: F401 (label: for callers)

_UNSAFE_OR_INVISIBLE = re.compile(f"{UNSAFE.pattern}|{ZERO_WIDTH.pattern}")
DEFAULT_LIMIT = 4000
MAX_LINES = 400
TAB_SIZE = 4
CONTROL_STYLE = "reverse"


def cap(value: str, limit: int, max_lines: int = MAX_LINES) -> tuple[str, int]:
    """The part of `value` to draw and how many characters are left out."""
    shown = value[:limit]
    nl = -1
    for _ in range(max_lines):
        nl = shown.find("\n", nl + 1)
        if nl < 0:
            break
    else:
        shown = shown[:nl]
    return shown, len(value) - len(shown)


def safe_text(value, limit: int | None = DEFAULT_LIMIT, style: str = "", show_invisible: bool = False
              ) -> tuple[Text, int]:
    """(Text to draw, characters not drawn). `limit=None` draws everything. `show_invisible` also marks the
    zero-width characters (ZWJ, ZWNJ, ...) that are otherwise drawn as they are."""
    value = "" if value is None else str(value)
    value = value.replace("\r\n", "\n")
    shown, hidden = cap(value, limit) if limit is not None else (value, 0)
    text = Text(style=style, overflow="fold", no_wrap=False, end="")
    pos = 0
    for m in (_UNSAFE_OR_INVISIBLE if show_invisible else UNSAFE).finditer(shown):
        if m.start() > pos:
            text.append(shown[pos:m.start()])
        text.append(visible(m.group()), style=CONTROL_STYLE)
        pos = m.end()
    text.append(shown[pos:])
    if "\t" in shown:
        text.expand_tabs(TAB_SIZE)
    return text, hidden


def plain(value, limit: int | None = 200) -> Text:
    """A short untrusted label (a name, a role, a model): one line, sanitized."""
    text, hidden = safe_text(str(value if value is not None else "").replace("\n", " "), limit)
    if hidden:
        text.append("…")
    return text


def more_note(hidden: int, hint: str, size: int | None = None) -> Text:
    if size is not None:   # a clipped field: only its start was loaded, so the rest is known in bytes
        return Text(f"… {hidden:,} more bytes of {size:,} not shown ({hint})", style="italic dim")
    return Text(f"… {hidden:,} more characters not shown ({hint})", style="italic dim")


def clipped_hidden(value: str, hidden: int, size: int) -> int:
    """Bytes of a clipped field (`size` bytes stored, `value` its loaded start) not drawn when `hidden` characters
    of `value` were left out."""
    drawn = value.replace("\r\n", "\n")
    drawn = drawn[:len(drawn) - hidden]
    return max(0, size - len(drawn.encode("utf-8", "surrogatepass")) - value.count("\r\n"))


def titled_text(heading: str, value: str | None, limit: int | None = DEFAULT_LIMIT, show_invisible: bool = False,
                size: int | None = None, more_hint: str = "m: show more") -> tuple[Text, int]:
    """A titled field of untrusted text: (heading, the text up to `limit`, a note on what is not drawn), and how
    many characters are not drawn (bytes, for a clipped field: `size` is then its stored size)."""
    body, hidden = safe_text(value, limit, show_invisible=show_invisible)
    if size is not None:
        hidden = clipped_hidden(value or "", hidden, size)
    out = Text(end="")
    if heading:
        out.append(heading + "\n", style="bold")
    out.append_text(body)
    if hidden:
        out.append("\n")
        out.append_text(more_note(hidden, more_hint, size))
    return out, hidden
