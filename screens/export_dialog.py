"""Export dialog: format, dataset, status, score range, task type, layout and output path (a file, or a directory
for a dataset card export); the export runs off the event loop and reports the rows written, what each filter
excluded and what the format skipped, the file's sha256 and the manifest (each export is also a snapshot).
Existing files are only replaced when "Replace existing files" is ticked (never the store)."""
from __future__ import annotations

from functools import partial
from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Checkbox, Input, Label, Select, Static

from widgets.virtual_table import one_line
from workbench import exporter, scores
from workbench.store import STATUSES

ANY = "__any__"          # status: the default, every sample that is not rejected


def exports_dir() -> Path:
    """Where exports go unless the curator chose elsewhere before: the user data dir's exports/ (never the
    directory the TUI happened to be started in)."""
    import platformdirs
    from workbench.store import APP_NAME
    return Path(platformdirs.user_data_dir(APP_NAME)) / "exports"


def default_path(fmt: str, dataset: str | None, status: str | None, selection: str | None = None,
                 directory: Path | None = None) -> str:
    stem = "-".join([selection or dataset or "all", status or "not-rejected"])
    stem = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in stem)
    return str((directory or exports_dir()) / f"{stem}.{'parquet' if fmt == 'parquet' else 'jsonl'}")


def _choices(conn) -> tuple[list[str], list[str]]:
    """Dataset names and selection names (`workbench sample --into NAME`)."""
    return ([n for (n,) in conn.execute("SELECT name FROM datasets ORDER BY id")],
            [n for (n,) in conn.execute("SELECT DISTINCT name FROM selections ORDER BY name")])


def _score(text: str, label: str) -> str | None:
    """RUBRIC=N as typed; the exporter checks it against the rubrics present (a bare number is refused)."""
    text = text.strip()
    if not text:
        return None
    try:
        scores.parse_bound(text, label.replace(" ", "_"))
    except scores.ScoreFilterError as e:
        raise ValueError(str(e)) from None
    return text


class ExportDialog(ModalScreen):
    """Export samples: choose format and filters; shows rows written and the file's sha256."""

    PALETTE_TITLE = "Export"
    BINDINGS = [
        Binding("ctrl+s", "run_export", "Export", id="export.run"),
        Binding("escape", "close", "Close", id="export.close"),
    ]
    DEFAULT_CSS = """
    ExportDialog { align: center middle; }
    ExportDialog > Vertical { width: 100%; max-width: 100; height: auto; max-height: 100%; border: round $accent;
                              background: $panel; padding: 0 1; }
    ExportDialog Horizontal { height: 1; margin-bottom: 1; }
    ExportDialog .label { width: 11; }
    ExportDialog Input { width: 1fr; }
    ExportDialog Select { width: 1fr; }
    ExportDialog Checkbox { width: auto; height: 1; border: none; padding: 0; }
    ExportDialog #message { height: auto; max-height: 8; }
    ExportDialog #message.error { color: $error; }
    ExportDialog #hint { color: $text-muted; height: 1; }
    """

    def __init__(self, dataset: str | None = None):
        super().__init__()
        self.initial_dataset = dataset
        self.result: exporter.ExportResult | None = None
        self.running = False
        self._auto_path = ""

    def compose(self) -> ComposeResult:
        self.runner = self.app.store_runner()
        fmt_options = [(Text(f), f) for f in exporter.EXPORT_FORMATS]
        with Vertical():
            yield Label(Text("Export samples", style="bold"))
            with Horizontal():
                yield Label("Format", classes="label")
                yield Select(fmt_options, value=exporter.EXPORT_FORMATS[0], allow_blank=False, id="format",
                             compact=True)
            with Horizontal():
                yield Label("Dataset", classes="label")
                yield Select([(Text("all datasets"), ANY)], value=ANY, allow_blank=False, id="dataset",
                             compact=True)
            with Horizontal():
                yield Label("Selection", classes="label")
                yield Select([(Text("none (every row)"), ANY)], value=ANY, allow_blank=False, id="selection",
                             compact=True)
            with Horizontal():
                yield Label("Status", classes="label")
                yield Select([(Text("not rejected"), ANY)] + [(Text(s), s) for s in (*STATUSES, "all")],
                             value=ANY, allow_blank=False, id="status", compact=True)
            with Horizontal():
                yield Label("Score", classes="label")
                yield Input(placeholder="min, e.g. curate=4", id="min_score", compact=True)
                yield Label(" to ")
                yield Input(placeholder="max, e.g. judge=8", id="max_score", compact=True)
            with Horizontal():
                yield Label("Task type", classes="label")
                yield Input(placeholder="any", id="task_type", compact=True)
            with Horizontal():
                yield Label("Layout", classes="label")
                yield Checkbox("conversational (preference, trl-sft, kto)", id="conversational", compact=True)
            with Horizontal():
                yield Label("Output", classes="label")
                yield Input(id="path", compact=True)
            with Horizontal():
                yield Label("", classes="label")
                yield Checkbox("replace existing files", id="force", compact=True)
            yield Static(Text(""), id="message")
            yield Static(Text("ctrl+s: export · Tab: next field · Esc: close"), id="hint")

    async def on_mount(self) -> None:
        self.query_one("#format", Select).focus()
        self._suggest_path()
        names, selections = await self.runner.run(_choices)
        select = self.query_one("#dataset", Select)
        select.set_options([(Text("all datasets"), ANY)] + [(Text(one_line(n, 60)), n) for n in names])
        if self.initial_dataset in names:
            select.value = self.initial_dataset
        self.query_one("#selection", Select).set_options(
            [(Text("none (every row)"), ANY)] + [(Text(one_line(n, 60)), n) for n in selections])
        self._suggest_path()

    def on_unmount(self) -> None:
        self.runner.close()

    def _value(self, select_id: str) -> str | None:
        v = self.query_one(f"#{select_id}", Select).value
        return None if v == ANY or v == Select.BLANK else v

    def _suggest_path(self) -> None:
        """Follow format/dataset/status with the output name until the curator types their own."""
        box = self.query_one("#path", Input)
        if box.value and box.value != self._auto_path:
            return
        last = (getattr(self.app, "ui_state", None) or {}).get("export_dir")   # the directory used last time
        self._auto_path = default_path(self._value("format") or exporter.EXPORT_FORMATS[0], self._value("dataset"),
                                       self._value("status"), self._value("selection"),
                                       Path(last) if last else None)
        box.value = self._auto_path

    def on_select_changed(self, event: Select.Changed) -> None:
        self._suggest_path()

    def _message(self, text: Text | str, error: bool = False) -> None:
        box = self.query_one("#message", Static)
        box.update(text if isinstance(text, Text) else Text(text))
        box.set_class(error, "error")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_run_export()

    def action_run_export(self) -> None:
        if self.running:
            return
        try:
            min_score = _score(self.query_one("#min_score", Input).value, "min score")
            max_score = _score(self.query_one("#max_score", Input).value, "max score")
        except ValueError as e:
            self._message(Text(one_line(str(e), 500)), error=True)
            return
        out = self.query_one("#path", Input).value.strip()
        if not out:
            self._message("give an output file", error=True)
            return
        task_type = self.query_one("#task_type", Input).value.strip() or None
        self.running = True
        self._message("exporting…")
        options = {"force": self.query_one("#force", Checkbox).value,
                   "conversational": self.query_one("#conversational", Checkbox).value}
        self.run_worker(partial(self._export, str(Path(out).expanduser()), self._value("format"),
                                self._value("dataset"), self._value("status"), min_score, max_score, task_type,
                                self._value("selection"), options), group="export-run")

    async def _export(self, out, fmt, dataset, status, min_score, max_score, task_type, selection, options) -> None:
        call = partial(exporter.export, force=options["force"],
                       conversational=options["conversational"] and fmt in exporter.CONVERSATIONAL_CHOICE)
        try:
            if Path(out).parent == exports_dir():   # our own default directory: made on first use
                exports_dir().mkdir(parents=True, exist_ok=True)
            res = await self.runner.run(call, out, fmt, dataset, status, min_score, max_score, task_type, selection)
        except exporter.ExportFailed as e:
            self._message(Text("Not exported: " + one_line(str(e), 2000)), error=True)
            return
        except Exception as e:   # a path we cannot write, a full disk: said as it is
            self._message(Text(one_line(f"Not exported: {type(e).__name__}: {e}", 2000)), error=True)
            return
        finally:
            self.running = False
        self.result = res
        if str(out) != "-" and Path(out).parent.is_dir():   # a file or directory target, not stdout or a pipe
            self._remember_dir(Path(out).parent)
        text = Text(f"Exported {res.rows:,} rows ({res.format}) to ", style="bold")
        text.append(one_line(str(res.path), 500))
        text.append(f"\nsha256 {res.sha256}\nmanifest ")
        text.append(one_line(str(res.manifest_path), 500))
        text.append(f" · snapshot {res.snapshot_id}\n")
        text.append(one_line(exporter.describe_counts(res.counts), 2000))
        self._message(text)

    def _remember_dir(self, directory: Path) -> None:
        """The next export dialog (also after a restart) suggests this directory."""
        from workbench.config import save_ui_state
        state = {**(getattr(self.app, "ui_state", None) or {}), "export_dir": str(directory.resolve())}
        self.app.ui_state = state
        try:
            save_ui_state(state)
        except OSError as e:
            self.notify(f"export directory not remembered: {e}", severity="warning")

    def action_close(self) -> None:
        if self.running:
            self.notify("the export is still running", severity="warning")
            return
        self.dismiss(self.result)
