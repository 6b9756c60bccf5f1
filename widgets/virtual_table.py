"""A table that draws only its visible lines and holds only a few pages of rows, whatever the size of the data.

Rows come from a data source callback, page by page by keyset: `fetch(after_key, limit, backward)` returns up to
`limit` rows after `after_key` in display order (None: from the start), or with backward=True the rows just before
it (None: the last page), still in display order. A plain function is run in a thread; a coroutine function is
awaited (the screen runs its query off the event loop). The widget has no SQL: screens own the queries.

While a page loads, the rows already held stay on screen (stale-while-loading). Cells are literal text: control
characters are replaced, never sent to the terminal, and nothing is parsed as markup.
"""
from __future__ import annotations

import asyncio
import inspect
from dataclasses import dataclass
from functools import partial
from typing import Any, Awaitable, Callable, Hashable, Sequence

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding
from textual.events import Click, MouseScrollDown, MouseScrollUp, Resize
from textual.geometry import Region
from textual.message import Message
from textual.strip import Strip
from textual.widget import Widget

from workbench.safe_text import sanitize

CELL_CHARS = 300   # a cell never needs more characters than a terminal is wide

# line breaks and tabs become spaces in a cell; every other control goes through the one sanitizer
_BREAKS = str.maketrans({c: " " for c in "\t\n\r\x0b\x0c\u2028\u2029"})


def one_line(text: Any, limit: int = CELL_CHARS) -> str:
    """Untrusted text as one printable line (ESC shows as ␛, other controls as visible stand-ins, see
    workbench/safe_text.py), capped at `limit` chars."""
    s = "" if text is None else str(text)
    return sanitize(s[:limit].translate(_BREAKS))


def fit(text: str, width: int, justify: str = "left") -> str:
    """Exactly `width` cells: padded, or cut with an ellipsis (wide CJK/emoji characters counted as two)."""
    if width <= 0:
        return ""
    n = cell_len(text)
    if n > width:
        return set_cell_size(text, width - 1) + "…"
    return " " * (width - n) + text if justify == "right" else text + " " * (width - n)


@dataclass(frozen=True)
class Column:
    title: str
    width: int | None = None     # fixed width in cells; None shares what is left among the flexible columns
    justify: str = "left"


@dataclass(frozen=True)
class TableRow:
    key: Hashable                # handed back to fetch to continue after (or before) this row
    cells: tuple                 # one value per column; shown as literal one-line text
    data: Any = None             # whatever the screen wants back on select (e.g. the sample id)


Fetch = Callable[[Any, int, bool], "Sequence[TableRow] | Awaitable[Sequence[TableRow]]"]


class VirtualTable(Widget, can_focus=True):
    """Keys: j/k or arrows, PgUp/PgDn, Home/End, Enter selects."""

    BINDINGS = [
        Binding("j,down", "cursor_down", "Down", show=False, id="table.down"),
        Binding("k,up", "cursor_up", "Up", show=False, id="table.up"),
        Binding("pagedown,ctrl+d", "page_down", "Page down", show=False, id="table.page_down"),
        Binding("pageup,ctrl+u", "page_up", "Page up", show=False, id="table.page_up"),
        Binding("home", "first", "First", show=False, id="table.first"),
        Binding("end", "last", "Last", show=False, id="table.last"),
        Binding("enter", "select", "Open", id="table.select"),
    ]
    COMPONENT_CLASSES = {"virtual-table--header", "virtual-table--cursor", "virtual-table--message"}
    DEFAULT_CSS = """
    VirtualTable { height: 1fr; }
    VirtualTable > .virtual-table--header { text-style: bold; background: $boost; }
    VirtualTable > .virtual-table--cursor { background: $accent 40%; }
    VirtualTable:focus > .virtual-table--cursor { background: $accent; color: $text; }
    VirtualTable > .virtual-table--message { color: $text-muted; text-style: italic; }
    """

    class Highlighted(Message):
        """The cursor moved to `row` (None when the table is empty)."""

        def __init__(self, table: "VirtualTable", row: TableRow | None) -> None:
            super().__init__()
            self.table, self.row = table, row

    class Selected(Message):
        def __init__(self, table: "VirtualTable", row: TableRow) -> None:
            super().__init__()
            self.table, self.row = table, row

    class Loaded(Message):
        """A page arrived (or failed: `error` set). Screens use it to update their status line."""

        def __init__(self, table: "VirtualTable", error: str | None = None) -> None:
            super().__init__()
            self.table, self.error = table, error

    def __init__(self, columns: Sequence[Column], fetch: Fetch, *, page_size: int = 100, max_rows: int = 500,
                 name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.columns = list(columns)
        self._fetch = fetch
        self.page_size = page_size
        self.max_rows = max(max_rows, 3 * page_size)
        self.rows: list[TableRow] = []
        self.cursor_index = 0                  # index into rows
        self.top_index = 0                     # index of the first visible row
        self.at_start = self.at_end = False
        self.first_position: int | None = None   # absolute position of rows[0], when known
        self.total: int | None = None            # rows in the whole result, if the screen counted them
        self.fetching = False
        self.load_error: str | None = None
        self._generation = 0
        self._pending: set[str] = set()
        self._widths: list[int] = []
        self._line_width = 0
        self._lines: dict[int, tuple] = {}
        self._styles: dict[str | None, Style] = {}

    # --- public ----------------------------------------------------------------------------------------------

    @property
    def current(self) -> TableRow | None:
        return self.rows[self.cursor_index] if self.rows else None

    @property
    def position(self) -> int | None:
        """0-based position of the cursor in the whole result, when known (counted from the start, or from
        the end when the screen set `total`)."""
        if not self.rows:
            return None
        if self.first_position is not None:
            return self.first_position + self.cursor_index
        if self.at_end and self.total is not None:
            return self.total - len(self.rows) + self.cursor_index
        return None

    def reload(self, *, keep_position: bool = False) -> None:
        """Start over with fresh data (new filter or sort). keep_position re-reads from the rows on screen
        (after returning from Review, say) and keeps the cursor on the same line."""
        keep = None
        if keep_position and self.rows:
            first = self.top_index
            keep = {"after": self.rows[first - 1].key if first else None, "cursor": self.cursor_index - first,
                    "at_start": self.at_start and first == 0,
                    "offset": None if self.first_position is None else self.first_position + first}
            if first == 0 and not self.at_start:   # nothing held above the screen to continue after
                keep = None
        self._restart()
        self._load("reset", keep["after"] if keep else None, False, keep)

    def _restart(self) -> None:
        self._generation += 1
        self._pending.clear()

    def set_columns(self, columns: Sequence[Column]) -> None:
        self.columns = list(columns)
        self._layout()
        self.refresh()

    # --- loading -----------------------------------------------------------------------------------------------

    def on_mount(self) -> None:
        self.reload()

    def _load(self, kind: str, key, backward: bool, keep=None) -> None:
        if kind in self._pending:
            return
        self._pending.add(kind)
        self.fetching = True
        self.refresh(self._message_region())
        self.run_worker(partial(self._run_fetch, kind, key, backward, self._generation, keep),
                        group=f"virtual-table-{kind}", exclusive=True)

    async def _run_fetch(self, kind: str, key, backward: bool, generation: int, keep) -> None:
        try:
            if inspect.iscoroutinefunction(self._fetch):
                rows = await self._fetch(key, self.page_size, backward)
            else:
                rows = await asyncio.to_thread(self._fetch, key, self.page_size, backward)
        except Exception as e:   # shown in the table and passed on; the rows held stay
            if generation == self._generation:
                self._pending.discard(kind)
                self.fetching = bool(self._pending)
                self.load_error = f"{type(e).__name__}: {e}"
                self.refresh()
                self.post_message(self.Loaded(self, self.load_error))
            return
        if generation != self._generation:   # a reload happened meanwhile: these rows answer an old question
            return
        self._pending.discard(kind)
        self.fetching = bool(self._pending)
        self.load_error = None
        edge = None if not self.rows else (self.rows[-1] if kind == "forward" else self.rows[0]).key
        if kind == "reset" or edge == key:   # else the buffer was trimmed at that end meanwhile: not contiguous
            self._apply(kind, list(rows), backward, keep)
        self.post_message(self.Loaded(self))

    def _apply(self, kind: str, rows: list[TableRow], backward: bool, keep) -> None:
        full = len(rows) >= self.page_size
        before = self.current
        if kind == "reset":
            self.rows, self.top_index = rows, 0
            if backward:                       # End
                self.at_end, self.at_start = True, not full
                self.first_position = 0 if self.at_start else None
                self.cursor_index = max(0, len(rows) - 1)
            else:
                self.at_start = keep["at_start"] if keep else True
                self.at_end = not full
                self.first_position = (keep["offset"] if keep else 0)
                self.cursor_index = max(0, min(keep["cursor"] if keep else 0, len(rows) - 1))
        elif kind == "forward":
            self.rows += rows
            self.at_end = not full
            drop = min(len(self.rows) - self.max_rows, self.top_index)   # never the rows on screen
            if drop > 0:
                self.rows = self.rows[drop:]
                self.cursor_index, self.top_index = self.cursor_index - drop, max(0, self.top_index - drop)
                self.at_start = False
                self.first_position = None if self.first_position is None else self.first_position + drop
        else:                                  # backward
            self.rows = rows + self.rows
            self.cursor_index += len(rows)
            self.top_index += len(rows)
            self.at_start = not full
            self.first_position = None if self.first_position is None else self.first_position - len(rows)
            if self.at_start and self.first_position is None:
                self.first_position = 0
            keep_rows = max(self.max_rows, self.top_index + self._visible_rows() + 1)
            if len(self.rows) > keep_rows:
                self.rows = self.rows[:keep_rows]
                self.at_end = False
        self._scroll_to_cursor(force=True)
        if self.current is not before:
            self.post_message(self.Highlighted(self, self.current))
        self._prefetch()

    def _prefetch(self) -> None:
        margin = max(self._visible_rows() * 2, self.page_size // 2)
        if self.rows and not self.at_end and len(self.rows) - self.cursor_index <= margin:
            self._load("forward", self.rows[-1].key, False)
        if self.rows and not self.at_start and self.cursor_index < margin:
            self._load("backward", self.rows[0].key, True)

    # --- moving --------------------------------------------------------------------------------------------------

    def _move(self, delta: int) -> None:
        if not self.rows:
            return
        old = self.cursor_index
        self.cursor_index = max(0, min(len(self.rows) - 1, self.cursor_index + delta))
        if self.cursor_index != old:
            old_y = old - self.top_index + 1
            if self._scroll_to_cursor():
                self.refresh()
            else:
                width = self.size.width
                self.refresh(Region(0, old_y, width, 1), Region(0, self.cursor_index - self.top_index + 1, width, 1))
            self.post_message(self.Highlighted(self, self.current))
        self._prefetch()

    def _scroll_to_cursor(self, force: bool = False) -> bool:
        """Keep the cursor on screen; True if the view scrolled (everything must be redrawn)."""
        visible = max(1, self._visible_rows())
        top = self.top_index
        if self.cursor_index < top:
            top = self.cursor_index
        elif self.cursor_index >= top + visible:
            top = self.cursor_index - visible + 1
        top = max(0, min(top, max(0, len(self.rows) - visible)))
        changed = top != self.top_index
        self.top_index = top
        if force:
            self.refresh()
        return changed

    def action_cursor_down(self) -> None:
        self._move(1)

    def action_cursor_up(self) -> None:
        self._move(-1)

    def action_page_down(self) -> None:
        self._move(max(1, self._visible_rows() - 1))

    def action_page_up(self) -> None:
        self._move(-max(1, self._visible_rows() - 1))

    # While a reset (End, Home, a new query) loads, the rows held are the old ones: Home or End must load its own
    # page then, else the pending reset lands after it and wins (End then Home at once ended on the last page).

    def action_first(self) -> None:
        if self.at_start and self.rows and "reset" not in self._pending:
            self._move(-self.cursor_index)
        else:
            self._restart()
            self._load("reset", None, False)

    def action_last(self) -> None:
        if self.at_end and self.rows and "reset" not in self._pending:
            self._move(len(self.rows) - 1 - self.cursor_index)
        else:
            self._restart()
            self._load("reset", None, True)

    def action_select(self) -> None:
        if self.current is not None:
            self.post_message(self.Selected(self, self.current))

    def on_mouse_scroll_down(self, event: MouseScrollDown) -> None:
        event.stop()
        self._move(3)

    def on_mouse_scroll_up(self, event: MouseScrollUp) -> None:
        event.stop()
        self._move(-3)

    def on_click(self, event: Click) -> None:
        index = self.top_index + event.y - 1
        if event.y >= 1 and 0 <= index < len(self.rows):
            self._move(index - self.cursor_index)
            if event.chain > 1:
                self.action_select()

    # --- drawing -------------------------------------------------------------------------------------------------

    def _visible_rows(self) -> int:
        return max(0, self.size.height - 1)   # one line of header

    def _message_region(self) -> Region:
        return Region(0, min(len(self.rows) - self.top_index, self._visible_rows()) + 1, self.size.width, 1)

    def on_resize(self, event: Resize) -> None:
        self._layout()
        self._scroll_to_cursor(force=True)
        self._prefetch()

    def _layout(self) -> None:
        width = self.size.width
        gaps = max(0, len(self.columns) - 1)
        fixed = sum(c.width or 0 for c in self.columns)
        flex = [i for i, c in enumerate(self.columns) if c.width is None]
        spare = max(0, width - fixed - gaps)
        widths = [c.width or 0 for c in self.columns]
        for n, i in enumerate(flex):
            widths[i] = spare // len(flex) + (1 if n < spare % len(flex) else 0)
        self._widths = widths
        self._line_width = sum(widths) + gaps
        self._lines.clear()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles.clear()   # theme or focus changed

    def _style(self, component: str | None = None) -> Style:
        """The widget's style, plus a component's: looked up once per style change, not once per line."""
        style = self._styles.get(component)
        if style is None:
            style = self.rich_style
            if component:
                style += self.get_component_rich_style(component)
            self._styles[component] = style
        return style

    def _line_text(self, row_or_cells) -> str:
        """A row as exactly the widget's width of text, cached per row until the columns change."""
        if len(self._widths) != len(self.columns):
            self._layout()
        cached = self._lines.get(id(row_or_cells))
        if cached is not None and cached[0] is row_or_cells:
            return cached[1]
        cells = row_or_cells.cells if isinstance(row_or_cells, TableRow) else row_or_cells
        text = " ".join(fit(one_line(v), w, c.justify) for v, w, c in zip(cells, self._widths, self.columns))
        if len(self._lines) > 2 * self.max_rows:
            self._lines.clear()
        self._lines[id(row_or_cells)] = (row_or_cells, text)   # the row is kept with it, so its id stays unique
        return text

    def _strip(self, text: str, style: Style, exact: bool = False) -> Strip:
        """One line as a Strip; `exact`: the text is a table line, known to be `_line_width` cells."""
        width = self.size.width
        if exact and self._line_width == width:
            return Strip([Segment(text, style)], width)
        return Strip([Segment(text, style)]).adjust_cell_length(width, style)

    def render_line(self, y: int) -> Strip:
        if y == 0:
            return self._strip(self._line_text(tuple(c.title for c in self.columns)),
                               self._style("virtual-table--header"), exact=True)
        index = self.top_index + y - 1
        if 0 <= index < len(self.rows):
            style = self._style("virtual-table--cursor" if index == self.cursor_index else None)
            return self._strip(self._line_text(self.rows[index]), style, exact=True)
        if index == len(self.rows):
            message = self._status_message()
            if message:
                return self._strip(fit(one_line(message), self.size.width), self._style("virtual-table--message"))
        return Strip.blank(self.size.width, self._style())

    def _status_message(self) -> str:
        if self.load_error:
            return f"could not load rows: {self.load_error}"
        if self.fetching:
            return "loading…"
        if not self.rows:
            return "no rows"
        return ""
