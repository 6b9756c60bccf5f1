"""Clean: preview heuristic filters (or normalization) per dataset, page through the rows they would hit, apply, undo.

One scan (on the store runner thread) evaluates every filter on every pending row; toggling a filter only
re-attributes rows in memory. Each row is counted once, under the first enabled filter it fails — the reason
applying rejects it with. `a` applies (press it twice: it rejects rows), `u` undoes the latest clean run, `m`
switches to normalization (text changes shown before → after).
"""
from __future__ import annotations

import time

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from widgets.list_table import ListTable
from widgets.safe_text import plain, safe_text
from workbench import automatic, clean
from workbench.review import curator_session
from workbench.safe_text import label, sanitize
from workbench.samples import get_sample

PAGE = 50
PANE_LIMIT = 3000
CONFIRM_SECONDS = 5.0
NORMALIZE = "normalize"


def scan_filters(conn, dataset: str | None, config: dict) -> clean.Scan:
    return clean.scan(conn, clean.FILTERS, [dataset] if dataset else None, config)


def scan_normalize(conn, dataset: str | None, config: dict) -> clean.NormalizePreview:
    return clean.preview_normalize(conn, [dataset] if dataset else None, config)


def latest_clean_run(conn) -> str | None:
    for r in clean.list_runs(conn):
        if r.action in ("filter", "normalize") and r.undone < r.rows:
            return r.run
    return None


def _field_text(label: str, value: str | None, style: str = "") -> Text:
    out = Text(end="")
    if not value:
        return out
    out.append(f"{label}: ", style="bold dim")
    body, hidden = safe_text(value, PANE_LIMIT, style)
    out.append_text(body)
    if hidden:
        out.append(f" … {hidden:,} more characters", style="italic dim")
    out.append("\n")
    return out


class CleanScreen(Screen):
    """Clean: filter preview with per-dataset counts and example rows; apply; undo."""

    PALETTE_TITLE = "Clean"
    BINDINGS = [
        Binding("space", "toggle", "On/off", id="clean.toggle"),
        Binding("tab", "switch_table", "Filters/rows", id="clean.switch"),
        Binding("n,right_square_bracket", "page(1)", "Next page", show=False, id="clean.next_page"),
        Binding("p,left_square_bracket", "page(-1)", "Prev page", show=False, id="clean.prev_page"),
        Binding("a", "apply", "Apply", id="clean.apply"),
        Binding("e", "exempt", "Keep row", id="clean.exempt"),
        Binding("u", "undo", "Undo run", id="clean.undo"),
        Binding("m", "mode", "Filters/normalize", show=False, id="clean.mode"),
        Binding("r", "rescan", "Rescan", show=False, id="clean.rescan"),
        Binding("escape,q", "back", "Back", show=False, id="clean.back"),
    ]
    DEFAULT_CSS = """
    CleanScreen #status { height: 1; padding: 0 1; background: $boost; }
    CleanScreen #top { height: 45%; }
    CleanScreen #filters { width: 2fr; }
    CleanScreen #rows { width: 3fr; }
    CleanScreen #text-pane { height: 1fr; padding: 0 1; border-top: solid $primary-darken-2; }
    CleanScreen #message { height: 1; padding: 0 1; color: $text-muted; }
    """

    def __init__(self, dataset: str | None = None):
        super().__init__()
        self.dataset = dataset
        self.mode = "filters"
        self.scan: clean.Scan | None = None
        self.norm: clean.NormalizePreview | None = None
        self.enabled: list[str] = []
        self.preview: clean.Preview | None = None
        self.selected: str | None = None            # filter whose rows are listed
        self.page_no = 0
        self.loaded = False
        self.busy = False
        self._confirm_at: float | None = None

    def compose(self) -> ComposeResult:
        self.runner = self.app.store_runner()
        yield Static(Text("Clean · scanning…"), id="status")
        with Horizontal(id="top"):
            yield ListTable(id="filters", cursor_type="row", zebra_stripes=True)
            yield ListTable(id="rows", cursor_type="row", zebra_stripes=True)
        with VerticalScroll(id="text-pane"):
            yield Static(Text(""), id="text")
        yield Static(Text(""), id="message")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        config = getattr(self.app, "config", {}) or {}
        try:
            self.enabled = list(clean.default_filters(config))
        except ValueError as e:
            self.enabled = list(clean.DEFAULT_FILTERS)
            self._message(f"[clean] filters ignored: {e}", error=True)
        self.run_worker(self.rescan, group="clean-scan", exclusive=True)

    def on_unmount(self) -> None:
        self.runner.close()

    # --- loading ----------------------------------------------------------------------------------------------

    async def rescan(self) -> None:
        self.busy = True
        config = getattr(self.app, "config", {}) or {}
        self._status("scanning…")
        try:
            if self.mode == "filters":
                self.scan = await self.runner.run(scan_filters, self.dataset, config)
            else:
                self.norm = await self.runner.run(scan_normalize, self.dataset, config)
        except Exception as e:   # a bad [clean] table in the config, an unknown dataset: say so
            self._message(f"cannot scan: {e}", error=True)
            self.busy = False
            return
        self.loaded = True
        self.busy = False
        self.redraw()

    def datasets(self) -> list[str]:
        source = self.scan.scanned if self.mode == "filters" and self.scan else (self.norm.scanned if self.norm else {})
        return sorted(source)

    def redraw(self) -> None:
        table = self.query_one("#filters", DataTable)
        row = table.cursor_row
        table.clear(columns=True)
        names = self.datasets()
        table.add_columns("on", "filter", "total", *(plain(n, 16) for n in names[:6]))
        if self.mode == "filters":
            if self.scan is None:
                return
            self.preview = self.scan.preview([n for n in clean.FILTERS if n in self.enabled])
            for n in clean.FILTERS:
                by = self.preview.counts.get(n, {})
                on = n in self.enabled
                table.add_row("●" if on else "○", n, f"{sum(by.values()):,}" if on else "–",
                              *(f"{by.get(d, 0):,}" if on else "" for d in names[:6]), key=n)
            total, scanned = self.preview.total, sum(self.scan.scanned.values())
            kept = sum(self.preview.exempted.values())
            self._status(f"{len(self.enabled)} filters would reject {total:,} of {scanned:,} pending rows"
                         + (f" ({kept:,} kept by the curator)" if kept else ""))
        else:
            if self.norm is None:
                return
            table.add_row("●", NORMALIZE, f"{self.norm.total:,}",
                          *(f"{self.norm.counts.get(d, 0):,}" for d in names[:6]), key=NORMALIZE)
            self._status(f"normalization would change {self.norm.total:,} of {sum(self.norm.scanned.values()):,} rows "
                         f"({', '.join(k for k, v in self.norm.options.items() if v)})")
        if row is not None and 0 <= row < table.row_count:
            table.move_cursor(row=row)
        self._select(self._cursor_filter())

    def _cursor_filter(self) -> str | None:
        table = self.query_one("#filters", DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key((max(table.cursor_row, 0), 0)).row_key
        return key.value

    def hits(self) -> list:
        if self.mode == "normalize":
            return self.norm.changes if self.norm else []
        if self.preview is None or self.selected is None:
            return []
        return self.preview.examples(self.selected)

    def _select(self, name: str | None, page: int = 0) -> None:
        self.selected = name
        hits = self.hits()
        pages = max(1, -(-len(hits) // PAGE))
        self.page_no = max(0, min(page, pages - 1))
        rows = self.query_one("#rows", DataTable)
        rows.clear(columns=True)
        rows.add_columns("id", "dataset", "why" if self.mode == "filters" else "fields")
        for h in hits[self.page_no * PAGE:(self.page_no + 1) * PAGE]:
            if self.mode == "filters":
                rows.add_row(str(h.id), plain(h.dataset, 20), plain(h.detail, 120), key=str(h.id))
            else:
                sid, dataset, _, after = h
                rows.add_row(str(sid), plain(dataset, 20), ", ".join(after), key=str(sid))
        label = name or ""
        self._message(f"{label}: {len(hits):,} rows · page {self.page_no + 1} of {pages} (n/p)" if hits
                      else f"{label}: no rows")
        self.run_worker(self._show_text, group="clean-text", exclusive=True)

    # --- the text pane ----------------------------------------------------------------------------------------

    def current_hit(self):
        rows = self.query_one("#rows", DataTable)
        if rows.row_count == 0:
            return None
        i = self.page_no * PAGE + max(rows.cursor_row, 0)
        hits = self.hits()
        return hits[i] if i < len(hits) else None

    async def _show_text(self) -> None:
        hit = self.current_hit()
        pane = self.query_one("#text", Static)
        if hit is None:
            pane.update(Text(""))
            return
        out = Text(end="")
        if self.mode == "filters":
            s = await self.runner.run(get_sample, hit.id)
            out.append(f"#{hit.id} [{label(hit.dataset, 60)}] ", style="bold")
            out.append_text(plain(hit.detail, 300))
            out.append("\n")
            if s is None:
                out.append("(gone)", style="dim")
            else:
                for f in ("instruction", "input", "response"):
                    out.append_text(_field_text(f, s.get(f)))
        else:
            sid, dataset, before, after = hit
            out.append(f"#{sid} [{label(dataset, 60)}]\n", style="bold")
            for f in after:
                if f == "messages":
                    out.append("messages: conversation turns normalized\n", style="bold dim")
                    continue
                out.append_text(_field_text(f"{f} before", before[f], "red"))
                out.append_text(_field_text(f"{f} after ", after[f], "green"))
        pane.update(out)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "filters":
            name = self._cursor_filter()
            if name != self.selected:
                self._select(name)
        else:
            self.run_worker(self._show_text, group="clean-text", exclusive=True)

    # --- actions ----------------------------------------------------------------------------------------------

    def action_toggle(self) -> None:
        if self.mode != "filters" or self.scan is None:
            return
        name = self._cursor_filter()
        if name in self.enabled:
            self.enabled.remove(name)
        elif name:
            self.enabled.append(name)
        self.redraw()

    def action_switch_table(self) -> None:
        target = "#rows" if self.focused is self.query_one("#filters") else "#filters"
        self.query_one(target, DataTable).focus()

    def action_page(self, step: int) -> None:
        self._select(self.selected, self.page_no + step)

    async def action_apply(self) -> None:
        if self.busy or not self.loaded:
            return
        count = self.preview.total if self.mode == "filters" and self.preview else (self.norm.total if self.norm else 0)
        if not count:
            self._message("nothing to apply")
            return
        now = time.monotonic()
        if self._confirm_at is None or now - self._confirm_at > CONFIRM_SECONDS:
            self._confirm_at = now
            verb = "reject" if self.mode == "filters" else "rewrite"
            self._message(f"press a again to {verb} {count:,} rows (undoable with u)")
            return
        self._confirm_at = None
        self.busy = True
        try:
            if self.mode == "filters":
                res = await self.runner.run(clean.apply_filters, self.preview)
                done = f"rejected {res.rejected:,} rows"
            else:
                res = await self.runner.run(clean.apply_normalize, self.norm)
                done = f"normalized {res.rejected:,} rows"
        finally:
            self.busy = False
        skipped = f"; {res.changed_since:,} changed since the preview, left alone" if res.changed_since else ""
        await self.rescan()
        self._message(f"{done} as {res.run} (u undoes){skipped}" if res.run else f"nothing applied{skipped}")

    async def action_exempt(self) -> None:
        """Keep the row under the cursor whatever its filter says (a recorded 'exempt' decision, see
        workbench/automatic.py): applying no longer rejects it, now or in later scans."""
        hit = self.current_hit() if self.mode == "filters" else None
        if self.busy or hit is None:
            return
        await self.runner.run(automatic.exempt, hit.id, hit.filter, curator_session())
        for i, (sid, dataset, status, details) in enumerate(self.scan.failures):   # as the next scan would see it
            if sid == hit.id and hit.filter in details:
                self.scan.failures[i] = (sid, dataset, status, {k: v for k, v in details.items() if k != hit.filter})
                self.scan.exempt.append((sid, hit.filter))
        row = self.query_one("#rows", DataTable).cursor_row
        self.redraw()
        rows = self.query_one("#rows", DataTable)
        if rows.row_count:
            rows.move_cursor(row=min(row, rows.row_count - 1))
        self._message(f"kept #{hit.id}: {hit.filter} no longer rejects it (`workbench clean --unexempt {hit.id} "
                      f"--filter {hit.filter}` withdraws)")

    async def action_undo(self) -> None:
        if self.busy:
            return
        run = await self.runner.run(latest_clean_run)
        if run is None:
            self._message("no clean run to undo")
            return
        res = await self.runner.run(clean.undo_run, run)
        left = f"; {len(res.changed_since):,} changed since, left alone" if res.changed_since else ""
        await self.rescan()
        self._message(f"undid {run}: {res.reverted:,} rows back{left}")

    def action_mode(self) -> None:
        self.mode = "normalize" if self.mode == "filters" else "filters"
        self._confirm_at = None
        self.run_worker(self.rescan, group="clean-scan", exclusive=True)

    def action_rescan(self) -> None:
        self.run_worker(self.rescan, group="clean-scan", exclusive=True)

    def action_back(self) -> None:
        self.app.pop_screen()

    # --- helpers ----------------------------------------------------------------------------------------------

    def _status(self, text: str) -> None:
        where = self.dataset or "all datasets"
        self.query_one("#status", Static).update(plain(f"Clean · {where} · {self.mode} · {text}", 400))

    def _message(self, text: str, error: bool = False) -> None:
        self.query_one("#message", Static).update(Text(sanitize(text), style="red" if error else ""))
