"""Browse: every sample in a table that reads only the pages it shows (keyset pagination), with sort, filter and
search in one query bar; Enter opens the sample under the cursor in Review.

Pages and counts are queried on the screen's StoreRunner threads (pages on one, counts on another so a slow count
never holds up scrolling); the rows on screen stay while the next ones load.
"""
from __future__ import annotations

from functools import partial

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Input, Static

from widgets.virtual_table import Column, TableRow, VirtualTable
from workbench import browse, review, rounds, scores
from workbench.browse import Filter, Sort
from workbench.safe_text import label, sanitize
from workbench.store import fts_sync

SORT_TITLES = {"id": "id", "score": "score", "length": "len", "status": "status", "task_type": "task"}


def _columns(sort: Sort, rubric: str | None = None, with_round: bool = False) -> list[Column]:
    """with_round: a column of each row's Humpback rounds (when the store ran backtranslate/curate, or the query
    names a round; otherwise the 80 columns go to the text)."""
    arrow = " ▼" if sort.descending else " ▲"
    titles = {**SORT_TITLES, "score": f"scores ({rubric} first)" if rubric else "scores"}
    t = {k: v + (arrow if k == sort.key else "") for k, v in titles.items()}
    return [Column(t["id"], 8, "right"), Column(t["status"], 9), Column(t["score"], 16),
            Column(t["task_type"], 10), Column(t["length"], 7, "right"),
            *([Column("round", 5)] if with_round else []), Column("instruction"), Column("response")]


def _cells(r: browse.Row, rubric: str | None = None, with_round: bool = False) -> tuple:
    """Every score with its scale ('curate 4/5 · judge 7/10'), the sort rubric's first, dimensions last."""
    shown = sorted(r.scores, key=lambda x: (x["rubric"] != rubric, x["rubric"].count("."), x["rubric"]))
    return (r.id, r.status, " · ".join(scores.label(x) for x in shown), r.task_type or "", f"{r.length:,}",
            *([rounds.text(r.rounds)] if with_round else []), r.instruction, r.response)


class BrowseTable(VirtualTable):
    """The samples table (defined here so the help screen lists its keys with Browse's)."""


def _datasets(conn) -> dict[str, int]:
    return {name: did for did, name in conn.execute("SELECT id, name FROM datasets ORDER BY id")}


class BrowseScreen(Screen):
    """Browse every sample in a table: sort, filter, search; Enter opens one in Review."""

    PALETTE_TITLE = "Browse"
    BINDINGS = [
        Binding("o", "cycle_sort", "Sort", id="browse.sort"),
        Binding("r", "reverse", "Reverse", id="browse.reverse"),
        Binding("slash,f", "query", "Search/filter", id="browse.query"),
        Binding("c", "clear_query", "Clear", id="browse.clear"),
        Binding("escape,q", "back", "Back", id="browse.back"),
    ]
    DEFAULT_CSS = """
    BrowseScreen #status { height: 1; padding: 0 1; background: $boost; }
    BrowseScreen #query { display: none; height: 3; }
    BrowseScreen #query.open { display: block; }
    BrowseScreen #error { display: none; height: auto; max-height: 3; padding: 0 1; color: $error; }
    BrowseScreen #error.shown { display: block; }
    """

    def __init__(self, dataset: str | None = None):
        super().__init__()
        self.dataset_name = dataset
        self.sort = Sort()
        self.query_text = ""
        self.flt: Filter | None = None        # None until the dataset names are known
        self.datasets: dict[str, int] = {}
        self.rubrics: dict = {}               # {rubric: scale} present in the store, read with the first page
        self.rounds_recorded = False          # rows may carry Humpback rounds (rounds.maybe_present)
        self.total: int | None = None
        self._count_generation = 0

    def compose(self) -> ComposeResult:
        # made here, not in on_mount: the table mounts (and asks for its first page) before the screen does
        self.runner = self.app.store_runner()
        self.counter = self.app.store_runner()
        yield Static(Text("Browse · opening…"), id="status")
        self.table = BrowseTable(_columns(self.sort), self._fetch, id="table")
        yield self.table
        yield Static(Text(""), id="error")
        yield Input(placeholder=browse.QUERY_HELP, id="query")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.table.focus()

    def on_unmount(self) -> None:
        self.runner.close()
        self.counter.close()

    def on_screen_resume(self) -> None:
        if self.flt is not None:   # back from Review: statuses may have changed under the cursor
            self.table.reload(keep_position=True)
            self._count()

    # --- data --------------------------------------------------------------------------------------------------

    async def _fetch(self, after, limit: int, backward: bool) -> list[TableRow]:
        if self.flt is None:
            self.datasets = await self.runner.run(_datasets)
            did = self.datasets.get(self.dataset_name) if self.dataset_name else None
            if self.dataset_name and did is None:
                self._show_error(f"no dataset named {self.dataset_name!r}; showing all datasets")
            self.rubrics = await self.runner.run(scores.rubrics)
            self.rounds_recorded = await self.runner.run(rounds.maybe_present)
            self.flt = Filter(dataset_id=did, rubric=scores.primary_rubric(self.rubrics))
            self.table.set_columns(_columns(self.sort, self.flt.rubric, self.with_round))
            self._count()
        elif after is None:   # a reload from the top: a job may have scored on a new rubric meanwhile
            self.rubrics = await self.runner.run(scores.rubrics)
        rows = await self.runner.run(browse.page, self.flt, self.sort, after, limit, backward)
        return [TableRow(r.key, _cells(r, self.flt.rubric, self.with_round), data=r) for r in rows]

    @property
    def with_round(self) -> bool:
        return self.rounds_recorded or (self.flt is not None and self.flt.round is not None)

    def _count(self) -> None:
        self._count_generation += 1
        self.total = None
        self.run_worker(partial(self._run_count, self.flt, self._count_generation), group="browse-count",
                        exclusive=True)

    async def _run_count(self, flt: Filter, generation: int) -> None:
        total = await self.counter.run(browse.count, flt)
        if generation == self._count_generation and self.is_attached:
            self.total = total
            self.table.total = total
            self._update_status()

    def _reload(self) -> None:
        table = self.table
        table.set_columns(_columns(self.sort, self.flt.rubric if self.flt else None, self.with_round))
        table.total = None
        table.reload()
        self._count()
        self._update_status()

    # --- status line -----------------------------------------------------------------------------------------

    def _update_status(self) -> None:
        table = self.table
        names = {v: k for k, v in self.datasets.items()}
        dataset = names.get(self.flt.dataset_id, "?") if self.flt and self.flt.dataset_id else "all"
        key = f"score ({self.flt.rubric or 'none scored'})" if self.sort.key == "score" and self.flt else self.sort.key
        parts = ["Browse", f"dataset: {label(dataset, 60)}", f"sort: {key}{' desc' if self.sort.descending else ''}"]
        if self.query_text:
            parts.append(f"query: {label(self.query_text, 200)}")
        pos = table.position
        total = "?" if self.total is None else f"{self.total:,}"
        parts.append(f"row {'?' if pos is None else f'{pos + 1:,}'} of {total}")
        if table.fetching:
            parts.append("loading…")
        self.query_one("#status", Static).update(Text(" · ".join(parts), no_wrap=True, overflow="ellipsis"),
                                                layout=False)   # one fixed line: no re-layout per key

    def on_virtual_table_highlighted(self, event: VirtualTable.Highlighted) -> None:
        self._update_status()

    def on_virtual_table_loaded(self, event: VirtualTable.Loaded) -> None:
        self._update_status()
        if event.error:
            self._show_error(f"could not load rows: {event.error}")

    def _show_error(self, message: str | None) -> None:
        error = self.query_one("#error", Static)
        error.update(Text(sanitize(message or "")))
        error.set_class(bool(message), "shown")

    # --- actions -----------------------------------------------------------------------------------------------

    def on_virtual_table_selected(self, event: VirtualTable.Selected) -> None:
        row: browse.Row = event.row.data
        names = {v: k for k, v in self.datasets.items()}
        order = review.BrowseOrder(self.flt, self.sort, self.query_text)   # Review walks these rows, in this order
        self.app.open_screen("review", dataset=names.get(row.dataset_id), sample_id=row.id, browse_order=order)

    def action_cycle_sort(self) -> None:
        keys = browse.SORT_KEYS
        self.sort = Sort(keys[(keys.index(self.sort.key) + 1) % len(keys)], self.sort.descending)
        self._reload()

    def action_reverse(self) -> None:
        self.sort = Sort(self.sort.key, not self.sort.descending)
        self._reload()

    def action_query(self) -> None:
        box = self.query_one("#query", Input)
        box.value = self.query_text
        box.add_class("open")
        box.focus()

    def action_clear_query(self) -> None:
        self._apply_query("")

    def action_back(self) -> None:
        if self.query_one("#query", Input).has_focus:   # Escape in the query bar closes only the bar
            self._close_query()
        else:
            self.app.pop_screen()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._apply_query(event.value.strip())

    def _apply_query(self, text: str) -> None:
        if self.flt is None:
            return
        base = self.datasets.get(self.dataset_name) if self.dataset_name else None
        try:
            flt = browse.parse_query(text, self.datasets, base, self.rubrics)
        except ValueError as e:
            self._show_error(str(e))
            return
        self._show_error(None)
        self.query_text, self.flt = text, flt
        self._close_query()
        self._reload()
        if flt.search:
            self.run_worker(self._index_new_rows, group="browse-fts", exclusive=True)

    async def _index_new_rows(self) -> None:
        """Rows imported or generated since the last index update become searchable, then the search re-runs."""
        runner = self.app.store_runner()
        try:
            n = await runner.run(fts_sync)
        except Exception as e:
            self._show_error(f"could not update the search index: {type(e).__name__}: {e}")
            return
        finally:
            runner.close()
        if n and self.flt.search:
            self.notify(f"{n:,} new rows indexed for search")
            self._reload()

    def _close_query(self) -> None:
        self.query_one("#query", Input).remove_class("open")
        self.table.focus()
