"""A DataTable that moves like every list in the app: j/k or arrows, pgdn/pgup (ctrl+d/u), Home/End to the first
and last row. The binding ids are the ones VirtualTable uses (table.*), so one remapping moves every list."""
from __future__ import annotations

from textual.binding import Binding
from textual.widgets import DataTable


class ListTable(DataTable):
    BINDINGS = [
        Binding("j,down", "cursor_down", "Down", show=False, id="table.down"),
        Binding("k,up", "cursor_up", "Up", show=False, id="table.up"),
        Binding("pagedown,ctrl+d", "page_down", "Page down", show=False, id="table.page_down"),
        Binding("pageup,ctrl+u", "page_up", "Page up", show=False, id="table.page_up"),
        Binding("home", "first", "First", show=False, id="table.first"),
        Binding("end", "last", "Last", show=False, id="table.last"),
    ]

    def action_first(self) -> None:
        if self.row_count:
            self.move_cursor(row=0)

    def action_last(self) -> None:
        if self.row_count:
            self.move_cursor(row=self.row_count - 1)
