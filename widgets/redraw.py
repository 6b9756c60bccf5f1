"""Skip a redraw that would draw the same thing again: each one costs a layout pass and bytes to the terminal
(Review redraws its widgets per key; consecutive samples often share their lineage, scores or meta line)."""
from __future__ import annotations

from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static


def text_key(text: Text) -> tuple:
    """Everything that decides how a rich Text draws (Text == Text compares only the characters and spans)."""
    return (text.plain, tuple(text.spans), str(text.style), text.no_wrap, text.overflow, text.justify, text.end)


def update_if_changed(widget: Static, text: Text) -> bool:
    """`widget.update(text)` unless it already shows exactly this; True if it was updated."""
    key = text_key(text)
    if getattr(widget, "_drawn_key", None) == key:
        return False
    widget._drawn_key = key
    widget.update(text)
    return True


class SettledOnResize:
    """A mixin for text widgets of automatic height inside a scrolled body: when a new text changes the widget's
    height, Textual lays the screen out, then (the widget's virtual size being reactive) asks for a second layout
    and repaint of the same text a frame later, ~2 KB more per Review key. The layout that sized the widget
    already placed it; its virtual size (it does not scroll) is recorded without asking again."""

    def _size_updated(self, size, virtual_size, container_size, layout: bool = True) -> bool:
        return super()._size_updated(size, virtual_size, container_size, layout=False)


class SettledScroll(SettledOnResize, VerticalScroll):
    """Review's scrolled body: its new virtual size (a new sample's height) updates the scrollbar, without a second
    layout and repaint of the whole body a frame after the one that drew the sample."""
