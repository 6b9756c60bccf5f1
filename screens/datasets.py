"""Home: every dataset with its rows, review counts and progress; Enter opens Review on the one under the cursor."""
from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Input, Label, Static

from widgets.list_table import ListTable
from widgets.safe_text import plain
from workbench.app import SCREEN_REGISTRY, key_specs_bindings
from workbench import dataset_ops
from workbench.review import curator_session, progress
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


class AskDialog(ModalScreen[str | None]):
    """One line of text for a dataset operation: Enter answers, Esc cancels."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]
    DEFAULT_CSS = """
    AskDialog { align: center middle; }
    AskDialog > Vertical { width: 80; height: auto; border: round $accent; background: $panel; padding: 0 1; }
    """

    def __init__(self, question: str, value: str = ""):
        super().__init__()
        self.question, self.value = question, value

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(Text(self.question))
            yield Input(self.value, id="answer", compact=True)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip())

    def action_cancel(self) -> None:
        self.dismiss(None)


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
        # Textual counts the screen just under the top one as "current" (it may show through): under Review this
        # screen is hidden, and re-counting every dataset each second there cost Review's keys up to 0.9 s at 1M rows
        top = self.app.screen
        visible = top is self or (top.is_modal and self.is_current)
        if not self._polling and self.loaded and visible:
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

    # --- rename, delete, merge: each one transaction in the store, recorded in the decisions log ------------

    def _ask(self, question: str, value: str, then) -> None:
        self.app.push_screen(AskDialog(question, value), then)

    def _do(self, fn, *args, done: str) -> None:
        async def run() -> None:
            try:
                await self.runner.run(fn, *args)
            except dataset_ops.DatasetError as e:
                self.app.notify(str(e), severity="error", timeout=10)
                return
            self.app.notify(done)
            await self.reload()
        self.run_worker(self._reporting(run()), group="datasets-ops")

    def action_rename(self) -> None:
        name = self.selected_name()
        if name is None:
            return

        def answered(new: str | None) -> None:
            if new and new != name:
                self._do(dataset_ops.rename_dataset, name, new, curator_session(), done=f"renamed {name} to {new}")
                if self.app.current_dataset == name:
                    self.app.current_dataset = new
        self._ask(f"Rename dataset {name} to (Enter: rename · Esc: cancel):", name, answered)

    def action_delete(self) -> None:
        name = self.selected_name()
        if name is None:
            return
        row = next(d for d in self.datasets if d["name"] == name)

        def answered(typed: str | None) -> None:
            if typed is None:
                return
            if typed != name:
                self.app.notify("not deleted: the name typed does not match", severity="warning")
                return
            self._do(dataset_ops.delete_dataset, name, curator_session(), done=f"deleted {name}")
        self._ask(f"Delete dataset {name} and its {row['rows']:,} samples with their decisions, judgments and "
                  "candidates? Type its name to confirm (Esc: cancel):", "", answered)

    def action_merge(self) -> None:
        name = self.selected_name()
        if name is None:
            return

        def got_others(others: str | None) -> None:
            names = [n.strip() for n in (others or "").split(",") if n.strip()]
            if not names:
                return

            def got_target(into: str | None) -> None:
                if into:
                    self._do(dataset_ops.merge_datasets, [name, *names], into, curator_session(),
                             done=f"merged {', '.join([name, *names])} into {into}")
            self._ask(f"Merge {', '.join([name, *names])} into dataset (new, or one of them):", name, got_target)
        self._ask(f"Merge {name} with (dataset names, comma-separated · Esc: cancel):", "", got_others)

    def action_open(self, name: str) -> None:
        self.app.open_screen(name, dataset=self.selected_name())
