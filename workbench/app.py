"""The Textual app shell: hosts every screen, owns the theme, the keymap and the command palette.

Screens are found through SCREEN_REGISTRY (name -> "module:Class"), imported only when first opened. To add a
screen, add one line there. A screen class is built with the keyword arguments it declares among
`dataset` (dataset name or None) and `sample_id`; everything else it reads from `self.app`:
`app.db_path`, `app.config_path`, `app.config`, `app.current_dataset`, `app.open_screen(name, **kw)` and
`app.store_runner()` (one thread with its own connection: `await runner.run(fn, *args)` calls `fn(conn, *args)`
off the event loop, in order).

This is the only module under workbench/ that imports Textual.
"""
from __future__ import annotations

import asyncio
import os
import importlib
import inspect
import sqlite3
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable

from textual.app import App, SuspendNotSupported, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from . import keymap
from .config import ConfigError, load_config, load_ui_state, resolve_config_path, save_ui_state
from .safe_text import sanitize
from .recovery import open_recovered
from .store import resolve_db_path

# name -> "module:Class". List only modules that exist: a missing one is an error when opened, not hidden.
SCREEN_REGISTRY: dict[str, str] = {
    "datasets": "screens.datasets:DatasetsScreen",
    "browse": "screens.browse:BrowseScreen",
    "balance": "screens.balance:BalanceScreen",
    "import": "screens.import_dialog:ImportDialog",
    "export": "screens.export_dialog:ExportDialog",
    "review": "screens.review:ReviewScreen",
    "help": "screens.help:HelpScreen",
    "duplicates": "screens.duplicates:DuplicatesScreen",
    "clean": "screens.clean:CleanScreen",
    "jobs": "screens.jobs:JobsScreen",
}

THEMES = {"dark": "textual-dark", "light": "textual-light"}
QUEUE_CHECK_SECONDS = 5.0


def queued_without_worker(conn: sqlite3.Connection, db_path: Path) -> list[int]:
    """Ids of queued jobs when no worker of this store is running (nobody will pick them up)."""
    from .presence import running_workers
    ids = [r[0] for r in conn.execute("SELECT id FROM jobs WHERE status = 'queued' ORDER BY id")]
    if not ids or running_workers(db_path):
        return []
    worker = sys.modules.get("workbench.worker")   # loaded only if this app started workers (it pulls in openai)
    if worker is not None and worker.reap_spawned():
        return []   # one we started is still starting up
    return ids


def screen_class(name: str) -> type[Screen]:
    module, _, cls = SCREEN_REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def screen_title(name: str) -> str:
    return getattr(screen_class(name), "PALETTE_TITLE", None) or name.capitalize()


def key_specs_bindings(screen: str) -> list[Binding]:
    """The Textual bindings of one keymap section (screens use this for their BINDINGS)."""
    return [Binding(s.keys, s.action, s.description, show=s.show, id=s.id,
                    key_display=keymap.display_key(s.keys.split(",")[0]))
            for s in keymap.SPECS[screen]]


class StoreRunner:
    """One worker thread with its own store connection. Calls run in submission order, never on the event loop."""

    def __init__(self, db_path: Path):
        self.db_path = db_path
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []

    def _call(self, fn: Callable, args: tuple, kwargs: dict):
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = open_recovered(self.db_path)   # as the CLI's open
            self._conns.append(conn)
        return fn(conn, *args, **kwargs)

    async def run(self, fn: Callable[..., Any], *args, **kwargs) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._call, fn, args, kwargs)

    def close(self) -> None:
        def _close():
            for c in self._conns:
                c.close()
        try:
            self._pool.submit(_close)
        except RuntimeError:  # already shut down
            return
        self._pool.shutdown(wait=False)


class WorkbenchApp(App):
    TITLE = "Curation Workbench"
    BINDINGS = key_specs_bindings("app")

    def __init__(self, db: str | Path | None = None, config: str | Path | None = None,
                 dataset: str | None = None, screen: str | None = None, sample_id: int | None = None,
                 selection: str | None = None):
        super().__init__()
        self.db_path = resolve_db_path(db)
        self.config_path = resolve_config_path(config)
        self.config = load_config(self.config_path)
        self.ui_state = load_ui_state()   # read here, with the config, before the event loop runs
        self.keymap_overrides = keymap.load_keymap(self.config)
        self.current_dataset: str | None = dataset
        self._start_screen = screen
        self._start_sample = sample_id
        self._start_selection = selection
        self.store_ready = asyncio.Event()
        self.sample_import: str | None = None  # message about the first-run sample import, once done
        self._offered_worker_for: tuple = ()    # the queued jobs we last offered to start a worker for

    # --- lifecycle -----------------------------------------------------------------------------------

    def on_mount(self) -> None:
        # an explicit `[ui] theme` in the config wins; else the theme the curator toggled to last time
        theme = (self.config.get("ui") or {}).get("theme") or self.ui_state.get("theme", "dark")
        self.theme = THEMES.get(theme, theme) if THEMES.get(theme, theme) in self.available_themes else THEMES["dark"]
        self.set_keymap(self.keymap_overrides)
        self.run_worker(self._startup(), name="startup", group="startup")

    async def _startup(self) -> None:
        runner = self.store_runner()
        try:
            await runner.run(lambda conn: None)  # open + migrate before any screen reads
        except Exception as e:  # a store we cannot open: say why and leave
            runner.close()
            self.exit(return_code=1, message=sanitize(f"error: cannot open store {self.db_path}: {e}"))
            return
        self.store_ready.set()
        self._queue_runner = self.store_runner()
        self.set_interval(QUEUE_CHECK_SECONDS, self._check_queue)
        self.call_later(self._check_queue)
        self.push_screen(self.make_screen("datasets"))
        if self._start_screen:
            self.open_screen(self._start_screen, dataset=self.current_dataset, sample_id=self._start_sample,
                             selection=self._start_selection)
        try:
            from .sample import ensure_sample
            if await runner.run(ensure_sample):
                self.sample_import = "Imported the bundled sample dataset"
                self.notify(self.sample_import, title="First run")
        except Exception as e:
            self.notify(f"could not import the bundled sample: {e}", severity="error", timeout=10)
        finally:
            runner.close()

    # --- queued jobs and no worker ------------------------------------------------------------------------

    def _check_queue(self) -> None:
        self.run_worker(self._offer_worker(), group="queue-check", exclusive=True)

    async def _offer_worker(self) -> None:
        try:
            ids = await self._queue_runner.run(queued_without_worker, self.db_path)
        except Exception:   # noqa: BLE001 - a busy store: ask again at the next tick
            return
        if ids and tuple(ids) != self._offered_worker_for:
            shown = ", ".join(map(str, ids[:5])) + ("…" if len(ids) > 5 else "")
            self.notify(f"job(s) {shown} wait in the queue and no worker is running. ctrl+w starts one "
                        f"(or `workbench worker`)", title="No worker", severity="warning", timeout=15)
        self._offered_worker_for = tuple(ids)

    def action_start_worker(self) -> None:
        from .worker import spawn_detached
        try:
            pid, log = spawn_detached(self.db_path, self.config_path)
        except OSError as e:
            self.notify(f"could not start a worker: {e}", severity="error")
            return
        self.notify(f"worker {pid} started; log: {log}", timeout=6)

    def notify(self, message, *, title: str = "", severity="information", timeout=None, markup: bool = True) -> None:
        """Every notification (screens' and widgets' go through here) is plain sanitized text: messages quote
        names, paths and errors, which must neither reach the terminal as controls nor be parsed as markup."""
        super().notify(sanitize(str(message)), title=sanitize(title, one_line=True), severity=severity,
                       timeout=timeout, markup=False)

    # --- screens -------------------------------------------------------------------------------------

    def store_runner(self) -> StoreRunner:
        return StoreRunner(self.db_path)

    def make_screen(self, name: str, **kwargs) -> Screen:
        cls = screen_class(name)
        params = inspect.signature(cls.__init__).parameters
        accepted = {k: v for k, v in kwargs.items() if k in params}
        return cls(**accepted)

    def open_screen(self, name: str, **kwargs) -> None:
        """Push screen `name` (built with the keyword arguments it accepts: dataset, sample_id)."""
        if name not in SCREEN_REGISTRY:
            self.notify(f"the {name} screen is not available yet", severity="warning")
            return
        kwargs.setdefault("dataset", self.current_dataset)
        self.push_screen(self.make_screen(name, **kwargs))

    def action_open(self, name: str) -> None:
        self.open_screen(name)

    def action_help(self) -> None:
        if type(self.screen).__name__ != "HelpScreen":
            self.open_screen("help")

    def action_home(self) -> None:
        while len(self.screen_stack) > 2:
            self.pop_screen()

    def action_toggle_theme(self) -> None:
        name = "light" if self.theme == THEMES["dark"] else "dark"
        self.theme = THEMES[name]
        self.ui_state = {**self.ui_state, "theme": name}
        try:
            # a ~20-byte local file, written here rather than in a worker so that quitting right after the toggle
            # cannot cancel the write
            save_ui_state(self.ui_state)
        except OSError as e:
            self.notify(f"theme not remembered: {e}", severity="warning")

    async def page_text(self, parts_fn: Callable, *args) -> None:
        """Whole stored text in $PAGER (default `less`): written to a private temp file on a store thread (never
        held in the UI), the terminal handed to the pager meanwhile. parts_fn(conn, *args) yields the text."""
        import shlex
        import subprocess
        from .bigtext import write_pager_file
        runner = self.store_runner()
        try:
            path = await runner.run(lambda conn: write_pager_file(parts_fn(conn, *args)))
        finally:
            runner.close()
        cmd = shlex.split(os.environ.get("PAGER") or "less") + [path]
        try:
            try:
                with self.suspend():
                    subprocess.run(cmd, check=False)
            except SuspendNotSupported:   # no terminal to hand over (headless, a test): run it as it is
                await asyncio.to_thread(subprocess.run, cmd, check=False, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL)
        except OSError as e:
            self.notify(f"cannot run the pager {cmd[0]!r}: {e.strerror or e}; the text is in {path}",
                        severity="error", timeout=10)
            return
        os.unlink(path)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Toggle light/dark theme", "Switch between the light and dark themes",
                            self.action_toggle_theme)
        yield SystemCommand("Home", "Back to the Datasets screen", self.action_home)
        yield SystemCommand("Start a worker", "Run the queued jobs in a background worker", self.action_start_worker)
        for name in SCREEN_REGISTRY:
            if name == "datasets":
                continue
            cls = screen_class(name)
            doc = (inspect.getdoc(cls) or "").splitlines()
            yield SystemCommand(screen_title(name), doc[0] if doc else f"Open the {name} screen",
                                partial(self.open_screen, name))


def run_app(db: str | Path | None = None, config: str | Path | None = None, dataset: str | None = None,
            screen: str | None = None, sample_id: int | None = None, selection: str | None = None) -> int:
    """Start the TUI; returns the exit code. A bad config or keymap stops before the terminal is taken over."""
    from .store import StoreLocationError, check_location
    try:
        check_location(db)
        app = WorkbenchApp(db=db, config=config, dataset=dataset, screen=screen, sample_id=sample_id,
                           selection=selection)
    except (ConfigError, keymap.KeymapError, StoreLocationError) as e:
        import sys
        print(sanitize(f"error: {e}"), file=sys.stderr)   # a config error may quote its text
        return 1   # bad data (the config file), as the CLI's exit codes
    app.run()
    return app.return_code or 0
