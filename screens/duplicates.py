"""Duplicates: walk the near- and exact-duplicate clusters one at a time; keep one, reject the rest, or keep all.

The keeper starts as keep-best (the highest score on dedup.ranking_rubric, else the earliest sample); move the cursor and press
space to keep another. `x` rejects every other member in one undoable run (decisions action 'dedup'), `a` keeps
them all, `u` undoes this screen's last rejection. Clusters are found by the same dedup.find_clusters as
`workbench dedup`, on a thread and connection of their own (dedup.find_clusters_at): a scan of a big store takes
a while, and on the store runner every other read of the app would queue behind it. The status line shows its
progress; a new scan (threshold, fields, rescan) or leaving the screen stops it. Members are read one cluster
at a time on the runner.
"""
from __future__ import annotations

import asyncio
import threading
from functools import partial

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from widgets.list_table import ListTable
from widgets.safe_text import plain, safe_text
from workbench import clean, dedup
from workbench.safe_text import sanitize
from workbench.samples import get_sample

THRESHOLD_STEP = 0.05
PANE_LIMIT = 3000
PROGRESS_EVERY_S = 0.25
PHASES = {"start": "starting", "read": "reading rows", "compare": "comparing", "verify": "verifying responses"}


def progress_text(phase: str, done: int, total: int) -> str:
    if phase == "read":
        return f"reading rows: {done:,}"
    if phase == "compare":
        return f"comparing: pass {done + 1} of {total}"
    if phase == "verify":
        return f"verifying responses: {done:,} of {total:,} pairs"
    return PHASES.get(phase, phase)


def load_cluster(conn, ids: list[int], fields: tuple[str, ...]) -> dedup.Cluster | None:
    described = dedup.describe(conn, [ids], fields)
    return described[0] if described else None


def sample_text(s: dict | None, title: str) -> Text:
    out = Text(end="")
    out.append(title + "\n", style="bold")
    if s is None:
        out.append("(gone)", style="dim")
        return out
    parts = [("instruction", s.get("instruction")), ("input", s.get("input")), ("response", s.get("response"))]
    if s.get("messages") and len(s["messages"]) > 2:
        parts = [(m.get("role", "?"), m.get("content")) for m in s["messages"]]
    for label, value in parts:
        if not value:
            continue
        out.append(f"{label}: ", style="bold dim")
        body, hidden = safe_text(value, PANE_LIMIT)
        out.append_text(body)
        if hidden:
            out.append(f" … {hidden:,} more characters", style="italic dim")
        out.append("\n")
    return out


class DuplicatesScreen(Screen):
    """Duplicates: near- and exact-duplicate clusters, one at a time; keep one, reject the rest."""

    PALETTE_TITLE = "Duplicates"
    BINDINGS = [
        Binding("space,enter", "keep", "Keep", id="duplicates.keep"),
        Binding("x", "reject_rest", "Reject rest", id="duplicates.reject_rest"),
        Binding("a", "keep_all", "Keep all", id="duplicates.keep_all"),
        Binding("n,right_square_bracket", "next_cluster", "Next", id="duplicates.next"),
        Binding("p,left_square_bracket", "prev_cluster", "Prev", id="duplicates.prev"),
        Binding("u", "undo", "Undo", id="duplicates.undo"),
        Binding("plus,equals_sign", "threshold(1)", "Stricter", show=False, id="duplicates.stricter"),
        Binding("minus", "threshold(-1)", "Looser", show=False, id="duplicates.looser"),
        Binding("f", "toggle_response", "Fields", id="duplicates.fields"),
        Binding("r", "rescan", "Rescan", show=False, id="duplicates.rescan"),
        Binding("escape,q", "back", "Back", show=False, id="duplicates.back"),
    ]
    DEFAULT_CSS = """
    DuplicatesScreen #status { height: 1; padding: 0 1; background: $boost; }
    DuplicatesScreen #members { height: 40%; }
    DuplicatesScreen #panes { height: 1fr; }
    DuplicatesScreen .pane { width: 1fr; padding: 0 1; border-left: solid $primary-darken-2; }
    DuplicatesScreen #message { height: 1; padding: 0 1; color: $text-muted; }
    """

    def __init__(self, dataset: str | None = None, fields: tuple[str, ...] | None = None,
                 threshold: float = dedup.DEFAULT_THRESHOLD):
        super().__init__()
        self.dataset = dataset
        self.fields = fields      # None until the store says which datasets: the CLI's default (dedup.fields_for)
        self.threshold = threshold
        self.clusters: list[list[int]] = []
        self.index = 0
        self.cluster: dedup.Cluster | None = None
        self.keeper_id: int | None = None
        self.runs: list[tuple[str, int]] = []     # (run id, cluster index) applied here, for undo
        self.loaded = False
        self.busy = False
        self.scanning = False
        self._scan_stop: threading.Event | None = None
        self._progress: tuple[str, int, int] | None = None   # the scan thread's latest, shown by a timer

    def compose(self) -> ComposeResult:
        self.runner = self.app.store_runner()
        yield Static(Text("Duplicates · finding clusters…"), id="status")
        table = ListTable(id="members", cursor_type="row", zebra_stripes=True)
        table.add_columns("", "id", "line", "dataset", "status", "score", "similar", "instruction")
        yield table
        with Horizontal(id="panes"):
            with VerticalScroll(classes="pane"):
                yield Static(Text(""), id="keeper-text")
            with VerticalScroll(classes="pane"):
                yield Static(Text(""), id="member-text")
        yield Static(Text(""), id="message")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.run_worker(self.rescan, group="dup-scan", exclusive=True)

    def on_unmount(self) -> None:
        self._stop_scan()
        self.runner.close()

    def _stop_scan(self) -> None:
        if self._scan_stop is not None:
            self._scan_stop.set()

    # --- loading ----------------------------------------------------------------------------------------------

    async def rescan(self, keep_index: bool = False) -> None:
        self.busy = True
        if self.fields is None:
            self.fields = await self.runner.run(dedup.fields_for, [self.dataset] if self.dataset else None)
        label = f"finding clusters (fields {','.join(self.fields)}, threshold {self.threshold:.2f})"
        self._status(label + "…")
        self._stop_scan()                      # a scan still running for the old settings
        stop = self._scan_stop = threading.Event()
        self._progress = None
        timer = self.set_interval(PROGRESS_EVERY_S, partial(self._show_progress, label, stop))
        self.scanning = True
        try:
            clusters = await asyncio.to_thread(dedup.find_clusters_at, self.app.db_path,
                                               [self.dataset] if self.dataset else None, self.fields, self.threshold,
                                               stop, self._note_progress)
        except asyncio.CancelledError:         # superseded by a new scan, or the screen is going away
            stop.set()
            raise
        except dedup.Cancelled:
            return
        except Exception as e:   # an unknown dataset, a locked store: say so, keep the screen
            self._message(f"cannot find clusters: {e}", error=True)
            self.busy = False
            return
        finally:
            timer.stop()
            if self._scan_stop is stop:
                self.scanning = False
        self.clusters = clusters
        self.index = min(self.index, max(len(self.clusters) - 1, 0)) if keep_index else 0
        self.loaded = True
        await self.show_cluster()
        self.busy = False

    def _note_progress(self, phase: str, done: int, total: int) -> None:
        """On the scan's thread: only remember it (the timer draws it on the event loop)."""
        self._progress = (phase, done, total)

    def _show_progress(self, label: str, stop: threading.Event) -> None:
        if self._progress is not None and not stop.is_set():
            self._status(f"{label}: {progress_text(*self._progress)}… (esc stops)")

    async def show_cluster(self) -> None:
        table = self.query_one("#members", DataTable)
        table.clear()
        self.cluster = None
        if not self.clusters:
            self._status("no duplicates" + (f" in {self.dataset}" if self.dataset else "") +
                         f" at threshold {self.threshold:.2f} (fields {','.join(self.fields)})")
            self.query_one("#keeper-text", Static).update(Text(""))
            self.query_one("#member-text", Static).update(Text(""))
            return
        self.cluster = await self.runner.run(load_cluster, self.clusters[self.index], self.fields)
        if self.cluster is None:
            self._status(f"cluster {self.index + 1} is gone (rows deleted)")
            return
        self.keeper_id = self.cluster.keeper.id
        self._fill_table()
        table.move_cursor(row=0)
        await self._show_texts()

    def _fill_table(self) -> None:
        table = self.query_one("#members", DataTable)
        row = table.cursor_row
        table.clear()
        c = self.cluster
        for m in c.members:
            mark = Text("★ keep", style="bold green") if m.id == self.keeper_id else Text("")
            table.add_row(mark, str(m.id), str(m.line or ""), plain(m.dataset, 24), m.status,
                          "" if m.score is None else f"{m.score:g}",
                          "exact" if m.exact and m.similarity == 1.0 else f"{m.similarity:.2f}",
                          Text(""), key=str(m.id))
        if row is not None and 0 <= row < len(c.members):
            table.move_cursor(row=row)
        rejected = sum(1 for m in c.members if m.status == "rejected")
        self._status(f"cluster {self.index + 1} of {len(self.clusters)} · {c.kind} · {len(c.members)} rows"
                     + (f" ({rejected} rejected)" if rejected else "") +
                     f" · keep #{self.keeper_id} · fields {','.join(self.fields)} ≥ {self.threshold:.2f}")
        self.run_worker(self._fill_previews, group="dup-preview", exclusive=True)

    async def _fill_previews(self) -> None:
        """The instruction column: read on the runner, one query for the whole cluster."""
        ids = [m.id for m in self.cluster.members]
        texts = await self.runner.run(dedup.fetch_texts, ids, ("instruction", "input"))
        table = self.query_one("#members", DataTable)
        col = list(table.columns)[-1]
        for sid in ids:
            if str(sid) in table.rows:
                table.update_cell(str(sid), col, plain(texts.get(sid, ("", None))[0], 200), update_width=True)

    async def _show_texts(self) -> None:
        if self.cluster is None:
            return
        keeper = await self.runner.run(get_sample, self.keeper_id)
        self.query_one("#keeper-text", Static).update(sample_text(keeper, f"keep #{self.keeper_id}"))
        current = self.current_member()
        if current is not None:
            s = await self.runner.run(get_sample, current.id)
            sim = "" if current.id == self.keeper_id else f" · similarity {current.similarity:.2f}"
            self.query_one("#member-text", Static).update(sample_text(s, f"#{current.id} ({current.status}){sim}"))

    def current_member(self) -> dedup.Member | None:
        if self.cluster is None:
            return None
        row = self.query_one("#members", DataTable).cursor_row
        return self.cluster.members[row] if 0 <= row < len(self.cluster.members) else None

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.run_worker(self._show_texts, group="dup-texts", exclusive=True)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_keep()        # enter on a row (the table takes enter before the screen's binding)

    # --- actions ----------------------------------------------------------------------------------------------

    def action_keep(self) -> None:
        m = self.current_member()
        if m is None:
            return
        self.keeper_id = m.id
        self._fill_table()
        self.run_worker(self._show_texts, group="dup-texts", exclusive=True)

    async def action_reject_rest(self) -> None:
        if self.cluster is None or self.busy:
            return
        plan = [(m.id, self.keeper_id) for m in self.cluster.members if m.id != self.keeper_id]
        self.busy = True
        try:
            run, rejected, accepted = await self.runner.run(dedup.reject_duplicates, plan)
        finally:
            self.busy = False
        if run:
            self.runs.append((run, self.index))
        note = f" ({accepted} accepted rows left as they are)" if accepted else ""
        self._message(f"kept #{self.keeper_id}, rejected {rejected}" + (f" as {run} · u undoes" if run else "") + note)
        await self._advance()

    async def action_keep_all(self) -> None:
        if self.cluster is not None:
            self._message(f"kept all {len(self.cluster.members)} rows of cluster {self.index + 1}")
            await self._advance()

    async def _advance(self) -> None:
        if self.index + 1 < len(self.clusters):
            self.index += 1
            await self.show_cluster()
        else:
            self.cluster = await self.runner.run(load_cluster, self.clusters[self.index], self.fields)
            if self.cluster is not None:
                self._fill_table()
            self._message("that was the last cluster")

    async def action_next_cluster(self) -> None:
        if self.index + 1 < len(self.clusters):
            self.index += 1
            await self.show_cluster()

    async def action_prev_cluster(self) -> None:
        if self.index > 0:
            self.index -= 1
            await self.show_cluster()

    async def action_undo(self) -> None:
        if not self.runs or self.busy:
            self._message("nothing to undo on this screen")
            return
        run, index = self.runs.pop()
        res = await self.runner.run(clean.undo_run, run)
        left = f"; {len(res.changed_since)} changed since, left alone" if res.changed_since else ""
        self._message(f"undid {run}: {res.reverted} rows back{left}")
        self.index = index
        await self.show_cluster()

    def action_threshold(self, direction: int) -> None:
        self.threshold = round(min(1.0, max(0.5, self.threshold + direction * THRESHOLD_STEP)), 2)
        self.run_worker(self.rescan, group="dup-scan", exclusive=True)

    def action_toggle_response(self) -> None:
        if self.fields is None:   # still asking the store for the default
            return
        self.fields = (dedup.DEFAULT_FIELDS if "response" in self.fields
                       else (*dedup.DEFAULT_FIELDS, "response"))
        self.run_worker(self.rescan, group="dup-scan", exclusive=True)

    def action_rescan(self) -> None:
        self.run_worker(partial(self.rescan, keep_index=True), group="dup-scan", exclusive=True)

    def action_back(self) -> None:
        self.app.pop_screen()

    # --- helpers ----------------------------------------------------------------------------------------------

    def _status(self, text: str) -> None:
        where = self.dataset or "all datasets"
        self.query_one("#status", Static).update(plain(f"Duplicates · {where} · {text}", 400))

    def _message(self, text: str, error: bool = False) -> None:
        self.query_one("#message", Static).update(Text(sanitize(text), style="red" if error else ""))
