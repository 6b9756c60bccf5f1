"""Home: every dataset with its rows, review counts and progress; Enter opens Review on the one under the cursor."""
from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from widgets.list_table import ListTable
from widgets.safe_text import plain
from workbench.app import SCREEN_REGISTRY, key_specs_bindings
from workbench.review import progress
from workbench.store import data_version

POLL_SECONDS = 1.0
BAR_WIDTH = 6
# Reject counts every rejected row, Auto those a clean/dedup run rejected (no curator decided them); Reviewed is the
# curator's own decisions among the rows left to a curator (rows minus Auto)
COLUMNS = (("Kind", 4), ("Rows", 7), ("Accept", 7), ("Reject", 7), ("Auto", 6), ("Pending", 8),
           ("Reviewed", BAR_WIDTH + 5))
FIXED_WIDTH = sum(w + 2 for _, w in COLUMNS) + 2 + 2   # cell padding, the name's padding, a scrollbar


def progress_bar(done: int, total: int, width: int = BAR_WIDTH) -> Text:
    share = done / total if total else 0.0
    filled = round(share * width)
    bar = Text("█" * filled, style="green")
    bar.append("░" * (width - filled), style="dim")
    bar.append(f" {share:4.0%}")
    return bar


class DatasetsScreen(Screen):
    """Datasets: rows, accepted/rejected/pending and review progress per dataset."""

    PALETTE_TITLE = "Datasets"
    BINDINGS = key_specs_bindings("datasets")
    DEFAULT_CSS = """
    DatasetsScreen #title { height: 1; padding: 0 1; background: $boost; text-style: bold; }
    DatasetsScreen #hint { height: auto; padding: 0 1; color: $text-muted; }
    DatasetsScreen DataTable { height: 1fr; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.datasets: list[dict] = []
        self.loaded = False
        self._version: int | None = None
        self._polling = False

    def compose(self) -> ComposeResult:
        yield Static(Text("Datasets"), id="title")
        yield ListTable(id="datasets", cursor_type="row", zebra_stripes=True)
        yield Static(Text("Loading…"), id="hint")
        yield Footer(compact=True, show_command_palette=False)   # fits 80 columns; ctrl+p is in the hint

    def on_mount(self) -> None:
        self.runner = self.app.store_runner()
        self.set_interval(POLL_SECONDS, self._poll)

    def on_unmount(self) -> None:
        self.runner.close()

    def on_screen_resume(self) -> None:
        # also the first load: under a deep-linked Review this screen loads only once it is shown
        self.run_worker(self._reporting(self.reload()), group="datasets")

    async def reload(self) -> None:
        self._version = await self.runner.run(data_version)
        rows = await self.runner.run(progress)
        self.show(rows)

    def _poll(self) -> None:
        if not self._polling and self.loaded and self.is_current:
            self._polling = True
            self.run_worker(self._reporting(self._check_changed()), group="datasets")

    async def _check_changed(self) -> None:
        """Another connection committed (an import, a worker, the Review screen): re-query, else do nothing."""
        try:
            if await self.runner.run(data_version) != self._version:
                await self.reload()
        finally:
            self._polling = False

    async def _reporting(self, coro) -> None:
        try:
            await coro
        except Exception as e:  # noqa: BLE001 - reported on screen, not swallowed
            self.app.notify(f"error reading the store: {type(e).__name__}: {e}", severity="error", timeout=10)

    def show(self, rows: list[dict]) -> None:
        if not self.is_attached:  # closed while the store answered
            return
        table = self.query_one(DataTable)
        keep = self.selected_name()
        self.datasets = rows
        table.clear(columns=True)
        table.add_column("Dataset", width=max(12, self.size.width - FIXED_WIDTH))   # the name gets what is left
        for label, width in COLUMNS:
            table.add_column(label, width=width)
        for d in rows:
            table.add_row(plain(d["name"], 200), plain(d["kind"] or ""), Text(f"{d['rows']:,}", justify="right"),
                          Text(f"{d['accepted']:,}", justify="right"), Text(f"{d['rejected']:,}", justify="right"),
                          Text(f"{d['automatic']:,}", justify="right", style="dim"),
                          Text(f"{d['pending']:,}", justify="right"),
                          progress_bar(d["curated"], d["rows"] - d["automatic"]),
                          key=d["name"])
        names = [d["name"] for d in rows]
        # the app's current dataset wins: an import dialog or Review may have changed it while this screen was below
        target = self.app.current_dataset if self.app.current_dataset in names else keep
        if target in names:
            table.move_cursor(row=names.index(target))
        hint = self.query_one("#hint", Static)
        if rows:
            hint.update(Text("Enter: review the dataset under the cursor · ?: every key · ctrl+p: commands"))
        else:
            hint.update(Text("No datasets yet: press i to import a file, or run `workbench import FILE`."))
        self.loaded = True

    def selected_name(self) -> str | None:
        table = self.query_one(DataTable)
        if not self.datasets or table.cursor_row is None or not (0 <= table.cursor_row < len(self.datasets)):
            return None
        return self.datasets[table.cursor_row]["name"]

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        name = self.selected_name()
        if name and self.is_current:   # a reload under a dialog moves the cursor too; only the curator's moves count
            self.app.current_dataset = name

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_review()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "open":
            return parameters[0] in SCREEN_REGISTRY  # keys for screens not installed stay hidden
        return True

    def action_review(self) -> None:
        name = self.selected_name()
        if name is None:
            self.notify("no dataset to review yet", severity="warning")
            return
        self.app.current_dataset = name
        self.app.open_screen("review", dataset=name)

    def action_open(self, name: str) -> None:
        self.app.open_screen(name, dataset=self.selected_name())
