"""Import dialog: choose a file, see the detected format, field mapping and three parsed rows, name the dataset,
import. Detection and the import run off the event loop; a refused file is explained literally (file, line,
field) and leaves the store as it was."""
from __future__ import annotations

import asyncio
from functools import partial
from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Checkbox, Input, Label, Select, Static

from widgets.virtual_table import one_line
from workbench import formats, importer, stats

AUTO = "auto"
DETECT_DELAY = 0.3    # seconds after the last keystroke in the path before the file is read
PREVIEW_FIELDS = ("system", "instruction", "input", "response", "rejected", "messages", "task_type", "domain")
SKIPPED_SHOWN = 20


def _field_line(name: str, value) -> Text:
    text = Text(f"  {name}: ", style="dim")
    text.append(one_line(value if isinstance(value, str) else repr(value), 200))
    return text


def detection_text(det: importer.Detection) -> Text:
    """What the file is and how its columns map, then each preview row, one line per field (literal text)."""
    out = Text(no_wrap=True, overflow="ellipsis")
    out.append("Detected: ", style="bold")
    out.append(one_line(f"{det.format} ({det.kind}) from a {det.file_type} file"))
    out.append("\nMapping: ", style="bold")
    out.append(one_line(", ".join(f"{t} <- {s}" for t, s in det.mapping.items()) or "(none)", 500))
    extra = [c for c in det.columns if c not in det.mapping.values()]
    if extra:
        out.append("\nKept as metadata: ", style="bold")
        out.append(one_line(", ".join(extra), 500))
    for i, row in enumerate(det.preview, 1):
        out.append(f"\nrow {i}", style="bold")
        for name in PREVIEW_FIELDS:
            if row.get(name) not in (None, "", []):
                out.append("\n")
                out.append_text(_field_line(name, row[name]))
    return out


class ImportDialog(ModalScreen):
    """Import a file: detected format, mapping and preview before anything is written."""

    PALETTE_TITLE = "Import a file"
    BINDINGS = [
        Binding("ctrl+s", "run_import", "Import", id="import.run"),
        Binding("escape", "close", "Close", id="import.close"),
    ]
    DEFAULT_CSS = """
    ImportDialog { align: center middle; }
    ImportDialog > Vertical { width: 100%; max-width: 100; height: 100%; max-height: 30; border: round $accent;
                              background: $panel; padding: 0 1; }
    ImportDialog Horizontal { height: 1; margin-bottom: 1; }
    ImportDialog .label { width: 9; }
    ImportDialog Input { width: 1fr; }
    ImportDialog Select { width: 24; }
    ImportDialog #detected { height: 1fr; }
    ImportDialog #message { height: auto; max-height: 8; }
    ImportDialog #message.error, ImportDialog #detection.error { color: $error; }
    ImportDialog #hint { color: $text-muted; height: 1; }
    """

    def __init__(self, dataset: str | None = None, path: str | None = None):
        super().__init__()
        self.initial_path = path or ""
        self.detection: importer.Detection | None = None
        self.result: importer.ImportResult | None = None
        self.running = False
        self._name_edited = False
        self._auto_name = ""
        self._detect_generation = 0

    def compose(self) -> ComposeResult:
        self.runner = self.app.store_runner()
        with Vertical():
            yield Label(Text("Import a file", style="bold"))
            with Horizontal():
                yield Label("File", classes="label")
                yield Input(self.initial_path, placeholder="path to a JSONL, JSON, CSV, TSV, Parquet or TXT file",
                            id="path", compact=True)
            with Horizontal():
                yield Label("Format", classes="label")
                yield Select([(Text("detect"), AUTO)] + [(Text(f), f) for f in formats.FORMATS], value=AUTO,
                             allow_blank=False, id="format", compact=True)
                yield Label(" Dataset ", classes="label")
                yield Input(placeholder="name (default: the file name)", id="dataset", compact=True)
            with Horizontal():
                yield Label("Map", classes="label")
                yield Input(placeholder="optional: instruction=question,response=answer", id="mapping",
                            compact=True)
            yield Checkbox("Skip invalid rows (each one is reported)", id="skip", compact=True)
            with VerticalScroll(id="detected", can_focus=True):
                yield Static(Text("Type a path: the format and three rows are shown before anything is imported."),
                             id="detection")
            yield Static(Text(""), id="message")
            yield Static(Text("ctrl+s: import · Tab: next field · Esc: close"), id="hint")

    def on_mount(self) -> None:
        self.query_one("#path", Input).focus()
        if self.initial_path:
            self._schedule_detect(0)

    def on_unmount(self) -> None:
        self.runner.close()

    # --- detection ---------------------------------------------------------------------------------------------

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "dataset":
            self._name_edited = event.value.strip() != self._auto_name
        elif event.input.id in ("path", "mapping"):
            self._schedule_detect(DETECT_DELAY)

    def on_select_changed(self, event: Select.Changed) -> None:
        self._schedule_detect(0)

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        self._schedule_detect(0)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if event.input.id in ("path", "mapping"):
            self._schedule_detect(0)

    def _options(self) -> tuple[str, str | None, str | None, bool]:
        fmt = self.query_one("#format", Select).value
        mapping = self.query_one("#mapping", Input).value.strip() or None
        return (self.query_one("#path", Input).value.strip(), None if fmt == AUTO else fmt, mapping,
                self.query_one("#skip", Checkbox).value)

    def _schedule_detect(self, delay: float) -> None:
        self._detect_generation += 1
        self.run_worker(partial(self._detect, self._detect_generation, delay), group="import-detect", exclusive=True)

    async def _detect(self, generation: int, delay: float) -> None:
        await asyncio.sleep(delay)
        path, fmt, mapping, skip = self._options()
        self.detection = None
        if not path:
            return
        path = str(Path(path).expanduser())
        try:
            files = await asyncio.to_thread(importer.expand_inputs, [path])   # a directory: every supported file
            det = await asyncio.to_thread(importer.detect, files[0], fmt, mapping, skip)
        except importer.ImportFailed as e:
            if generation == self._detect_generation:
                self._show_detection(Text(one_line(str(e), 2000)), error=True)
            return
        except Exception as e:   # an unreadable file, a mapping we cannot parse: say what and where
            if generation == self._detect_generation:
                self._show_detection(Text(one_line(f"{path}: {type(e).__name__}: {e}", 2000)), error=True)
            return
        if generation != self._detect_generation:
            return
        self.detection = det
        text = detection_text(det)
        if len(files) > 1:
            head = Text(f"{len(files)} files in the directory, imported together; the first:\n", style="bold")
            text = head + text
        self._show_detection(text)
        if not self._name_edited:
            self._auto_name = importer.default_name(path)
            self.query_one("#dataset", Input).value = self._auto_name

    def _show_detection(self, text: Text, error: bool = False) -> None:
        box = self.query_one("#detection", Static)
        box.update(text)
        box.set_class(error, "error")

    # --- import ------------------------------------------------------------------------------------------------

    def _message(self, text: Text | str, error: bool = False) -> None:
        box = self.query_one("#message", Static)
        box.update(text if isinstance(text, Text) else Text(text))
        box.set_class(error, "error")

    def action_run_import(self) -> None:
        if self.running:
            return
        path, fmt, mapping, skip = self._options()
        if not path:
            self._message("choose a file first", error=True)
            return
        name = self.query_one("#dataset", Input).value.strip() or None
        self.running = True
        self._message("importing…")
        self.run_worker(partial(self._import, str(Path(path).expanduser()), name, fmt, mapping, skip),
                        group="import-run")

    async def _import(self, path: str, name: str | None, fmt: str | None, mapping: str | None, skip: bool) -> None:
        def progress(n: int) -> None:   # on the runner thread
            self.app.call_from_thread(self._message, f"importing… {n:,} rows")
        try:
            res = await self.runner.run(importer.import_files, [path], name, fmt, mapping, skip, progress)
            if res.rows >= stats.FOLD_MIN_TAIL:   # so Balance opens at once (~1 s per 100k rows, once)
                self._message(f"imported {res.rows:,} rows; counting them for the Balance histograms…")
                await self.runner.run(stats.fold)
        except importer.ImportFailed as e:
            self._message(Text("Not imported (the store is unchanged): " + one_line(str(e), 2000)), error=True)
            return
        except Exception as e:
            self._message(Text(one_line(f"Not imported: {type(e).__name__}: {e}", 2000)), error=True)
            return
        finally:
            self.running = False
        self.result = res
        self.app.current_dataset = res.dataset
        text = Text(f"Imported {res.rows:,} rows into ", style="bold")
        text.append(one_line(res.dataset), style="bold")
        text.append(f" as {res.format}")
        if len(res.files) > 1:
            text.append(f" from {len(res.files)} files")
        if res.ties:
            text.append(f"; {res.ties:,} tied pairs skipped")
        if res.candidates:
            text.append(f"; {res.candidates:,} candidates")
        if res.duplicates:
            text.append(f"; {res.duplicates:,} flagged as exact duplicates")
        if res.skipped:
            text.append(f"; {len(res.skipped):,} rows skipped:")
            for s in res.skipped[:SKIPPED_SHOWN]:
                text.append("\n  " + one_line(str(s), 300))
            if len(res.skipped) > SKIPPED_SHOWN:
                text.append(f"\n  … and {len(res.skipped) - SKIPPED_SHOWN:,} more")
        self._message(text)

    def action_close(self) -> None:
        if self.running:
            self.notify("the import is still running; it is all or nothing, wait for it to finish",
                        severity="warning")
            return
        self.dismiss(self.result)
