"""Skip a redraw that would draw the same thing again: each one costs a layout pass and bytes to the terminal
(Review redraws its widgets per key; consecutive samples often share their lineage, scores or meta line)."""
from __future__ import annotations

from rich.text import Text
from textual.containers import VerticalScroll
from textual.strip import Strip
from textual.visual import Visual
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


class WrappedOnce:
    """A mixin for Static text widgets of automatic height: the text is wrapped into lines once per (text, width)
    and those lines both size the widget and draw it. Textual's Static wraps it twice (once to measure the height
    for the layout, once more to draw), the larger share of the time Review spends drawing a new sample."""

    _wrapped_for: tuple = (None, 0, None, None)
    _wrapped: list[Strip] = []

    def _lines(self, width: int) -> list[Strip]:
        visual, style, selection = self._render(), self.visual_style, self.text_selection
        was_visual, was_width, was_style, was_selection = self._wrapped_for
        if not (visual is was_visual and width == was_width and style == was_style and selection == was_selection):
            self._wrapped = Visual.to_strips(self, visual, width, None, style)
            self._wrapped_for = (visual, width, style, selection)
        return self._wrapped

    def get_content_height(self, container, viewport, width: int) -> int:
        return len(self._lines(width)) if width else 0

    def render_line(self, y: int) -> Strip:
        lines = self._lines(self.size.width)
        return lines[y] if y < len(lines) else Strip.blank(self.size.width, self.visual_style.rich_style)


class BodyText(WrappedOnce, SettledOnResize, Static):
    """A short block of Review's body (meta line, lineage, why this pair)."""
