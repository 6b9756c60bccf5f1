"""Review's sample body as ONE scrolling Line API widget: a stack of blocks (meta line, fields, conversation,
scores, lineage), each a rich Text wrapped into lines once per (text, width).

Why not one Static per block in a VerticalScroll: every new sample then changed the height of child widgets, and
Textual laid the whole screen out again (~10 ms a key at 1M rows) before repainting all of it. Here a new sample
re-wraps only the blocks whose text changed, sets the scrollable height without a layout (the scrollbar is always
shown, so the width never depends on the sample), and repaints only the screen lines that differ from what is on
the terminal: fewer bytes per key over SSH. A layout happens only when the widget itself is resized, and then the
blocks are wrapped again at the new width.

The text of a block is built by the caller from untrusted data through widgets/safe_text.py (`safe_text`,
`plain`): this widget draws Text as Text, never parsing markup, so its guarantees hold here unchanged.
"""
from __future__ import annotations

from typing import Callable

from rich.segment import Segment
from rich.text import Text
from textual.content import Content
from textual.geometry import Region, Size
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.visual import RenderOptions
from textual.widget import Widget

from widgets.redraw import text_key


class Block:
    """One block of the body: its Text, whether it is shown, and how it sits (padding, margin below).

    Its text is set at once (`set`) or built when first needed (`fill`): a block below the window of a new sample
    is built and wrapped after that sample is on the terminal."""

    def __init__(self, id: str, *, pad: tuple[int, int, int, int] = (0, 1, 0, 1), margin_bottom: int = 1,
                 no_wrap: bool = False):
        self.id = id
        self.pad = pad                  # top, right, bottom, left (cells)
        self.margin_bottom = margin_bottom
        self.no_wrap = no_wrap          # pre-laid-out text (the scores table): cropped, never re-wrapped
        self.display = False
        self.heading = ""
        self.built_from: tuple | None = None   # what the text was built from: the same again is not rebuilt
        self.version = 0                # changes with the text: the wrapped lines are cached per (version, width)
        self._text = Text(end="")
        self._key: tuple = text_key(self._text)
        self._hidden = 0
        self._build: Callable[[], tuple[Text, int]] | None = None
        self._wrapped: tuple = (-1, None, [])  # (version, (text width, line width), strips)

    def set(self, text: Text) -> None:
        """Show `text` (unchanged text: nothing to redo)."""
        key = text_key(text)
        if key != self._key or self._build is not None:
            self._text, self._key, self._hidden, self._build = text, key, 0, None
            self.built_from = None
            self.version += 1

    def fill(self, built_from: tuple, build: Callable[[], tuple[Text, int]]) -> None:
        """Show what `build()` -> (Text, hidden) makes, built when first drawn, unless already built from
        `built_from` (`build` must depend on nothing else)."""
        if built_from != self.built_from:
            self.built_from, self._build = built_from, build
            self.version += 1

    def _built(self) -> None:
        if self._build is not None:
            self._text, self._hidden = self._build()
            self._key, self._build = text_key(self._text), None

    @property
    def text(self) -> Text:
        self._built()
        return self._text

    @property
    def hidden(self) -> int:
        """Characters (bytes of a clipped field) not drawn: the "more" note's count."""
        self._built()
        return self._hidden

    def lines(self, view: SampleView, width: int) -> list[Strip]:
        """The block's lines at `width` cells (padding and margin included); cached per (text, width)."""
        version, was_width, strips = self._wrapped
        key = (width, view.size.width)
        if version == self.version and was_width == key:
            return strips
        strips = view.wrap(self, width)
        self._wrapped = (self.version, key, strips)
        return strips


class SampleView(ScrollView, can_focus=False):
    """A vertical stack of `Block`s drawn line by line. Change blocks (`block(id).set(...)`, `.display`), then call
    `redraw()` once: it re-wraps what changed and repaints only the lines that differ on screen."""

    DEFAULT_CSS = """
    SampleView { height: 1fr; overflow-x: hidden; overflow-y: scroll; }
    """

    def __init__(self, blocks: list[Block], **kwargs):
        super().__init__(**kwargs)
        self.blocks = {b.id: b for b in blocks}
        self._lines: list[Strip] = []
        self._width = 0          # the width `_lines` were wrapped at (0: not yet)
        self._rest: int | None = None    # the first block not wrapped yet (below the window), None: all wrapped
        self._base = None
        self.repainted: list[int] = []   # the screen rows the last redraw repainted (tests and benchmarks read it)

    def block(self, id: str) -> Block:
        return self.blocks[id]

    # --- wrapping ----------------------------------------------------------------------------------------------

    def wrap(self, block: Block, width: int) -> list[Strip]:
        base = self._base or self.rich_style
        top, right, bottom, left = block.pad
        inner = max(1, width - left - right)
        content = Content.from_rich_text(block.text, console=self.app.console)
        rules = {"text_wrap": "nowrap", "text_overflow": "crop"} if block.no_wrap else {}
        strips = content.render_strips(inner, None, self.visual_style, RenderOptions(self._get_style, rules))
        full = max(width, self.size.width)   # lines as wide as the widget: Textual pads them so under the scrollbar
        blank = Strip.blank(full, base)
        out = [blank] * top
        edge_l = [Segment(" " * left, base)] if left else []
        for s in strips or [Strip([])]:
            if s.cell_length > inner:
                s = s.crop(0, inner)
            fill = full - left - s.cell_length       # the rest of the line and the right padding
            # runs of one style joined into one segment: each segment costs its own escape sequences on the wire
            # (the text's offset meta is for mouse selection, which this widget does not offer: dropped, so that
            # it does not keep apart segments of one style)
            out.append(Strip(Segment.simplify([*edge_l, *s.discard_meta(), Segment(" " * fill, base)]), full))
        return out + [blank] * (bottom + block.margin_bottom)

    def _build(self, width: int, need: int | None = None) -> tuple[list[Strip], int | None]:
        """The shown blocks' lines, or (`need`) only as many blocks as fill that many lines: -> (lines, the index
        of the first block left out, None if none)."""
        lines: list[Strip] = []
        self._base = self.rich_style        # the background and colour every line is drawn on (costly to compute)
        blocks = list(self.blocks.values())
        for i, b in enumerate(blocks):
            if need is not None and len(lines) >= need:
                return lines, i
            if b.display:
                lines.extend(b.lines(self, width))
        return lines, None

    def complete(self) -> None:
        """Wrap the blocks left below the window by the last redraw, and size the scrollbar to the whole sample."""
        if self._rest is None or not self._width:
            return
        blocks = list(self.blocks.values())[self._rest:]
        self._rest = None
        for b in blocks:
            if b.display:
                self._lines.extend(b.lines(self, self._width))
        self._set_height(len(self._lines))

    def top_of(self, id: str) -> int | None:
        """The body line a shown block starts on (None: not shown)."""
        if not self.blocks[id].display:
            return None
        width = self._width or max(20, self.scrollable_content_region.width)
        y = 0
        for b in self.blocks.values():
            if b.id == id:
                return y
            if b.display:
                y += len(b.lines(self, width))
        return None

    def text_of(self, id: str) -> str:
        """The plain text a block draws at the current width (all of it, also what is scrolled out of view)."""
        b = self.blocks[id]
        width = self._width or max(20, self.scrollable_content_region.width)
        return "\n".join(s.text.rstrip() for s in b.lines(self, width))

    # --- drawing -----------------------------------------------------------------------------------------------

    def _set_height(self, height: int) -> None:
        """The scrollable height, without a layout: the scrollbar is always there, so nothing else moves. The bar
        is repainted only if it changes (a sample shorter than the window: the same empty bar as the last one)."""
        size = Size(self._width, height)
        if size != self.virtual_size:
            self.set_reactive(Widget.virtual_size, size)
            window = self.scrollable_content_region.height
            bar = self.vertical_scrollbar
            bar.window_size = window                      # both reactive: repainted only when they change
            bar.window_virtual_size = max(height, window)
            self.scroll_y = self.validate_scroll_y(self.scroll_y)

    def redraw(self, home: bool = False) -> None:
        """Apply the blocks' changes: re-wrap what changed, repaint the screen lines that differ. `home`: a new
        sample, shown from its top; the blocks below the window are wrapped once it is on the terminal."""
        width = self.scrollable_content_region.width
        if not width:                  # not laid out yet: the first resize wraps everything
            return
        height = self.scrollable_content_region.height
        old, old_y = self._lines, round(self.scroll_y)
        self._width = width
        y = 0 if home else old_y
        self._lines, self._rest = self._build(width, y + height if home else None)
        if self._rest is None:
            self._set_height(len(self._lines))
            y = min(y, max(0, len(self._lines) - height))
        else:
            self.call_after_refresh(self.complete)
        if y != old_y:
            self.scroll_to(y=y, animate=False, immediate=True)   # moves the window: repaints it all
            self.repainted = list(range(height))
            return
        rows = []
        for row in range(height):
            i = y + row
            a = old[i] if i < len(old) else None
            b = self._lines[i] if i < len(self._lines) else None
            if a != b:
                rows.append(row)
        self.repainted = rows
        for start, count in _runs(rows):    # the text area only: the scrollbar beside it has not changed
            self.refresh(Region(0, start, width, count))

    def on_resize(self) -> None:
        """A new width wraps every block again (a block's wrapped lines are cached per width)."""
        width = self.scrollable_content_region.width
        if not width:
            return
        if width != self._width:        # (a repaint at the new width may have wrapped them already)
            self._width = width
            self._lines, self._rest = self._build(width)
            self.refresh()
        self.complete()
        self._set_height(len(self._lines))

    def notify_style_update(self) -> None:
        """A new theme: the colours are in the wrapped lines, so every block is wrapped again."""
        super().notify_style_update()
        if self._base is not None and self.rich_style != self._base:
            for b in self.blocks.values():
                b._wrapped = (-1, None, [])
            if self._width:
                self._lines, self._rest = self._build(self._width)
                self.refresh()

    def render_lines(self, crop: Region) -> list[Strip]:
        """The lines as wrapped, through the app's line filters: Textual's per-line styling pass (borders,
        padding, tint, opacity: none of which this widget has) would only rebuild each line to the same one. (Its
        link hover styling has nothing to act on either: the lines carry no links, nor any meta.)"""
        styles = self.styles
        if styles.tint.a or self.opacity != 1.0 or styles.border.spacing or styles.padding:
            return super().render_lines(crop)
        filters = self.get_line_filters()
        background = self.background_colors[1]
        strips = []
        for y in crop.line_range:
            strip = self.render_line(y)
            for f in filters:
                strip = strip.apply_filter(f, background)
            strips.append(strip)
        if crop.column_span != (0, self.region.width):
            strips = [strip.crop(*crop.column_span) for strip in strips]
        return strips

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        if width != self._width:        # drawn before the resize handler ran: wrap for this width now
            self._width = width
            self._lines, self._rest = self._build(width)
        i = y + round(self.scroll_y)
        if i >= len(self._lines) and self._rest is not None:
            self.complete()
        if i < len(self._lines):
            return self._lines[i]
        return Strip.blank(max(width, self.size.width), self.rich_style)


def _runs(rows: list[int]):
    """Consecutive rows as (start, count) runs: one refresh region each."""
    start = prev = None
    for r in rows:
        if start is None:
            start = prev = r
        elif r == prev + 1:
            prev = r
        else:
            yield start, prev - start + 1
            start = prev = r
    if start is not None:
        yield start, prev - start + 1
