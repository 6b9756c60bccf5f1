"""What a name typed on the command line and shown in tables and messages may hold (endpoint, pool, snapshot,
selection).

Dataset names are not checked here: imports name datasets after files from the wild, and the display layer
(safe_text.py) shows whatever they hold safely.
"""
from __future__ import annotations

from .safe_text import UNSAFE


def name_problem(name, what: str) -> str | None:
    """A name typed on the command line and shown in tables: not empty, no control character or newline, no space
    at either end."""
    if not isinstance(name, str) or not name.strip():
        return f"{what} name is empty"
    if UNSAFE.search(name) or "\n" in name or "\t" in name:
        return f"{what} name {name!r} holds a control character (a newline, ESC, ...)"
    if name != name.strip():
        return f"{what} name {name!r} has spaces at either end"
    return None
