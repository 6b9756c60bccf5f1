"""What decides how a rich Text draws, as a key: Review redraws a block of its body (and its status line) only when
that key changes (consecutive samples often share their lineage, scores or meta line)."""
from __future__ import annotations

from rich.text import Text


def text_key(text: Text) -> tuple:
    """Everything that decides how a rich Text draws (Text == Text compares only the characters and spans)."""
    return (text.plain, tuple(text.spans), str(text.style), text.no_wrap, text.overflow, text.justify, text.end)
