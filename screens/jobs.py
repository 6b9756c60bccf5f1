"""Jobs: every LLM job with progress, items/s, ETA, tokens, cost and its latest failures; launch and control them.

A recipe's jobs show as one group: a header row with the recipe's progress in steps, then one row per step in
order (its job's progress, or "waiting" until its input is complete and the step is queued).

Workers are separate processes (`workbench worker --until-idle`, started detached), so closing the TUI or losing
the SSH connection does not stop a job; reopening this screen shows its live progress. The screen polls
`PRAGMA data_version` from a thread and re-queries only when another connection committed.
It needs only `app.db_path`, `app.config_path` and `app.config`.
"""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Static

from widgets.list_table import ListTable
from widgets.jobs_launch import LaunchDialog
from widgets.safe_text import safe_text
from workbench import jobs as J
from workbench.batch_state import batch_lines
from workbench.recipes import list_recipes
from workbench.safe_text import label
from workbench.store import data_version, list_datasets, open_store

POLL_SECONDS = 0.5
BAR_WIDTH = 8
RAW_PREVIEW = 600
RAW_FULL_VIEW = 4000      # of each raw reply in the full view (v): 50 of them draw in well under 100 ms
FULL_FAILURES = 50        # failed items the full view (v) loads; `p` there pages all of their text
# Done / Dropped / Failed count items (an item that ran but kept nothing is Dropped, not Done); Kept counts what a
# filtering task kept ("-" for tasks that keep everything they make); the cost is in the detail below
COLUMNS = (("ID", 4), ("Task", 12), ("Status", 9), ("Progress", BAR_WIDTH + 5), ("Done", 9), ("Dropped", 7),
           ("Failed", 6), ("Kept", 6), ("Items/s", 7), ("ETA", 7), ("Tokens in/out", 11))
STATUS_STYLE = {"running": "bold green", "stale": "bold magenta", "queued": "yellow", "paused": "magenta", "done": "", "failed": "bold red",
                "cancelled": "dim"}


def fmt_eta(seconds) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def bar(fraction: float, failed_share: float = 0.0, width: int = BAR_WIDTH, dropped_share: float = 0.0) -> Text:
    filled = round(fraction * width)
    bad = min(filled, round(failed_share * width))
    dropped = min(filled - bad, round(dropped_share * width))
    t = Text("█" * (filled - bad - dropped), style="green")
    t.append("█" * dropped, style="yellow")
    t.append("█" * bad, style="red")
    t.append("░" * (width - filled), style="dim")
    t.append(f" {fraction:4.0%}")
    return t


def shown_status(j: dict) -> str:
    """A finished job none of whose items ran through is failed, whatever an older worker recorded."""
    if j["status"] == "done" and j["failed"] and j["done"] == 0:
        return "failed"
    return "stale" if j.get("stale") else j["status"]   # stale: running, but the worker's lease expired


def job_cells(j: dict) -> list:
    status = shown_status(j)
    dropped = j.get("items_dropped", 0)
    ok = j["done"] - dropped
    share = (lambda n: n / j["total"] if j["total"] else 0.0)
    filtering = bool(j["kept"] or j["dropped"])
    return [Text(str(j["id"])), Text(label(j["kind"])), Text(status, style=STATUS_STYLE.get(status, "")),
            bar(j["fraction"], share(j["failed"]), dropped_share=share(dropped)),
            Text(f"{ok}/{j['total']}"), Text(str(dropped), style="yellow" if dropped else ""),
            Text(str(j["failed"]), style="red" if j["failed"] else ""),
            Text(str(j["kept"]) if filtering else "-"),
            Text(f"{j['items_per_s']:.1f}" if j["live"] else "-"), Text(fmt_eta(j["eta_s"])),
            Text(f"{_k(j['tokens_in'])}/{_k(j['tokens_out'])}")]


def recipe_cells(r: dict) -> list:
    n = len(r["steps"])
    return [Text(f"R{r['id']}"), Text(f"recipe {label(r['name'])}", style="bold"),
            Text(r["status"], style=STATUS_STYLE.get(r["status"], "")),
            bar(r["steps_done"] / n if n else 0.0), Text(f"{r['steps_done']}/{n} steps"),
            Text(str(sum(s["failed"] for s in r["steps"]))), Text("-"), Text("-"), Text(""), Text("")]


def step_cells(r: dict, step: dict, job: dict | None) -> list:
    name = Text(f" ↳{step['idx'] + 1} {label(step['name'])}")
    if job is not None:
        cells = job_cells(job)
        return [cells[0], name, *cells[2:]]
    status = "waiting" if r["status"] == "running" else "not run"
    return [Text(""), name, Text(status, style="dim"), bar(0.0), Text(label(step["task"])), Text("")] + \
        [Text("-"), Text("-"), Text(""), Text("")]


def table_rows(jobs: list[dict], recipes_: list[dict]) -> list[tuple[str, list]]:
    """(row key, cells) in display order: jobs newest first, a recipe's group where its newest job is (or at the
    top when none of its steps is queued yet). Keys: job id, "r<recipe>", "r<recipe>.<step>"."""
    by_job = {s["job_id"]: r for r in recipes_ for s in r["steps"] if s["job_id"]}
    jobs_by_id = {j["id"]: j for j in jobs}
    out, placed = [], set()

    def group(r):
        placed.add(r["id"])
        out.append((f"r{r['id']}", recipe_cells(r)))
        for step in r["steps"]:
            job = jobs_by_id.get(step["job_id"])
            out.append((str(job["id"]) if job else f"r{r['id']}.{step['idx']}", step_cells(r, step, job)))
    for r in recipes_:
        if not any(s["job_id"] for s in r["steps"]):
            group(r)
    for j in jobs:
        r = by_job.get(j["id"])
        if r is None:
            out.append((str(j["id"]), job_cells(j)))
        elif r["id"] not in placed:
            group(r)
    return out


def recipe_text(r: dict) -> Text:
    t = Text()
    # recipe, step and variable names come from a file: untrusted, each through label()
    t.append(f"Recipe {r['id']} · {label(r['name'])} · {r['status']}\n", style="bold")
    if r["vars"]:
        t.append("vars " + " ".join(f"{label(k)}={label(v)}" for k, v in r["vars"].items()) + "\n")
    for s in r["steps"]:
        where = f"job {s['job_id']}" if s["job_id"] else "not queued yet"
        t.append(f"{s['idx'] + 1}. {label(s['name'])} ({label(s['task'])}): {s['status']}, {s['done']}/{s['total']} done, "
                 f"{s['failed']} failed, {s['kept']} kept · {where}\n")
    if r["error"]:
        t.append("error: ", style="bold red")
        t.append_text(safe_text(r["error"], None)[0])
    t.rstrip()
    return t


def _k(n: int) -> str:
    return f"{n / 1000:.1f}k" if n >= 10_000 else str(n)


def _key_value(key: str) -> int | str:
    """A row key as the screen keeps it: a job's id as int, a recipe row's key as text."""
    return int(key) if key.isdigit() else key


def load_view(conn, selected: int | str | None, n_failures: int = 20) -> dict:
    """Everything the screen shows, in one read (runs in the screen's DB thread)."""
    jobs = J.list_jobs(conn)
    recipes_ = list_recipes(conn)
    rows = table_rows(jobs, recipes_)
    keys = [k for k, _ in rows]
    sel = str(selected) if str(selected) in keys else (keys[0] if keys else None)
    sel = _key_value(sel) if sel is not None else None
    fails = J.failures(conn, sel, n_failures, clip=True) if isinstance(sel, int) else []
    orphaned = [j["id"] for j in jobs if j["status"] == "queued" or (j["status"] == "running" and not j["live"])]
    return {"jobs": jobs, "recipes": recipes_, "rows": rows, "selected": sel, "failures": fails,
            "orphaned": orphaned}


def detail_text(j: dict) -> Text:
    p = j["params"]
    t = Text()
    # dataset, endpoint and pool names, filters and params are untrusted: each goes through label()
    t.append(f"Job {j['id']} · {label(j['kind'])} · {label(shown_status(j))}\n", style="bold")
    src = p.get("endpoint") and f"endpoint {label(p['endpoint'])}" or p.get("pool") and f"pool {label(p['pool'])}" \
        or "-"
    t.append(f"dataset {label(p.get('dataset') or '-')} → {label(p.get('into') or '-')} · {src}")
    if p.get("judge"):
        t.append(f" · judge {label(p['judge'])}")
    if p.get("allow_self_judge"):
        t.append(" · self-judging allowed", style="bold yellow")
    t.append("\n")
    if p.get("filter"):
        t.append("filter " + " ".join(f"{label(k)}={label(v)}" for k, v in p["filter"].items()) + "\n")
    params = {k: v for k, v in (p.get("task") or {}).items() if v is not None and v != ""}
    if params:
        t.append("params " + " ".join(f"{label(k)}={label(v)}" for k, v in params.items()) + "\n")
    t.append(f"kept {j['kept']} · dropped {j['dropped']}")
    if j["drop_reasons"]:
        t.append(" (" + ", ".join(f"{label(k)}: {v}" for k, v in j["drop_reasons"].items()) + ")")
    t.append(f" · failed {j['failed']} · requests {j['requests']} · retries {j['retries']} · "
             f"cache hits {j['cache_hits']} · tokens {j['tokens_in']}+{j['tokens_out']} · cost {j['cost']:.4f}\n")
    for line in batch_lines(j) or J.endpoint_lines(j):
        t.append(label(line) + "\n")
    t.append(f"created {j['created_at']}" + (f" · finished {j['finished_at']}" if j["finished_at"] else ""))
    if j["error"]:
        t.append("\nerror: ", style="bold red")
        t.append_text(safe_text(j["error"], None)[0])
    return t


def failure_text(f: dict, limit: int = RAW_PREVIEW, more: str = "v: view more") -> Text:
    t = Text()
    t.append(f"item {label(f['key'])} · {f['status']} · {f['attempts']} attempt(s) · {f['updated_at']}\n", style="bold")
    clipped = f.get("clipped") or {}
    if f["error"]:
        shown, hidden = safe_text(f["error"], RAW_FULL_VIEW, style="red")
        t.append_text(shown)
        if hidden or "error" in clipped:
            t.append(" … (error cut; p in the full view: whole text)", style="dim")
        t.append("\n")
    if f["raw"] is not None:
        shown, hidden = safe_text(f["raw"], limit)
        t.append("raw reply: ", style="italic")
        t.append_text(shown if f["raw"] else Text("(empty)", style="dim"))
        if "raw" in clipped:
            t.append(f" … {clipped['raw']:,} bytes in all ({more})", style="dim")
        elif hidden:
            t.append(f" … {hidden} more characters ({more})", style="dim")
    t.rstrip()
    return t


class FailuresScreen(ModalScreen):
    """The latest failed items of one job: errors and the start of each raw reply; `o` pages all of it."""

    BINDINGS = [Binding("escape,q,v", "dismiss", "Close"), Binding("p", "pager", "Open in $PAGER")]
    DEFAULT_CSS = """
    FailuresScreen { align: center middle; }
    FailuresScreen .failure { margin-bottom: 1; }
    FailuresScreen > VerticalScroll { width: 90%; height: 90%; border: round $accent; background: $surface;
                                      padding: 0 1; }
    """

    def __init__(self, job_id: int, failures: list[dict]):
        super().__init__()
        self.job_id = job_id
        self.failures = failures

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="failures-full"):
            yield Static(Text(f"Job {self.job_id}: {len(self.failures)} latest failed/dropped items "
                              "(p: all of their text in $PAGER · Esc closes)", style="bold"))
            for f in self.failures:
                yield Static(failure_text(f, RAW_FULL_VIEW, "p: whole reply in $PAGER"), classes="failure")

    def action_pager(self) -> None:
        self.run_worker(self.app.page_text(J.failure_parts, [f["id"] for f in self.failures]), group="pager")


class JobsScreen(Screen):
    """Jobs: launch LLM tasks, watch progress, throughput, cost and failures; cancel, pause, resume, retry."""

    PALETTE_TITLE = "Jobs"
    # ids let the curator remap keys in the config's [keys.jobs] table (see workbench/keymap.py)
    BINDINGS = [
        Binding("n", "launch", "New job", id="jobs.launch"),
        Binding("p", "pause", "Pause", id="jobs.pause"),
        Binding("r", "resume", "Resume", id="jobs.resume"),
        Binding("c", "cancel_job", "Cancel", id="jobs.cancel"),
        Binding("t", "retry", "Retry", id="jobs.retry"),
        Binding("w", "start_worker", "Worker", id="jobs.worker"),
        Binding("v", "view_failures", "Failures", id="jobs.failures"),
        Binding("escape,q", "back", "Back", show=False, id="jobs.back"),
    ]
    DEFAULT_CSS = """
    JobsScreen #jobs-title { height: 1; padding: 0 1; background: $boost; text-style: bold; }
    JobsScreen #jobs-table { height: 2fr; }
    JobsScreen #jobs-detail { height: 3fr; border-top: solid $primary; padding: 0 1; }
    JobsScreen #jobs-hint { height: auto; padding: 0 1; color: $text-muted; }
    JobsScreen .failure { margin-bottom: 1; }
    JobsScreen #jobs-summary { margin-bottom: 1; }
    """

    def __init__(self, dataset: str | None = None):
        super().__init__()
        self.dataset = dataset
        self.view: dict = {"jobs": [], "recipes": [], "rows": [], "selected": None, "failures": [], "orphaned": []}
        self.selected: int | str | None = None     # a job id, or a recipe row's key "r<recipe>" / "r<recipe>.<step>"
        self._version: int | None = None
        self._busy = False
        self._db = ThreadPoolExecutor(1, thread_name_prefix="jobs-screen-db")
        self._conn = None
        self.loaded = asyncio.Event()

    # --- the screen's own connection, on its own thread ---
    def _call(self, fn, *args):
        if self._conn is None:
            self._conn = open_store(self.app.db_path)
        return fn(self._conn, *args)

    async def db(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._db, self._call, fn, *args)

    def compose(self) -> ComposeResult:
        yield Static(Text("Jobs"), id="jobs-title")
        table = ListTable(id="jobs-table", cursor_type="row", zebra_stripes=True)
        for label, width in COLUMNS:
            table.add_column(label, width=width)
        yield table
        with VerticalScroll(id="jobs-detail"):
            yield Static(Text(""), id="jobs-summary")
            yield Vertical(id="jobs-failures")
        yield Static(Text("Loading…"), id="jobs-hint")
        yield Footer(compact=True, show_command_palette=False)   # fits 80 columns

    def on_mount(self) -> None:
        self.run_worker(self.reload, group="jobs-load", exclusive=True)
        self.set_interval(POLL_SECONDS, self._poll)

    def on_unmount(self) -> None:
        def close():
            if self._conn is not None:
                self._conn.close()
        self._db.submit(close)
        self._db.shutdown(wait=False)

    def _poll(self) -> None:
        if not self._busy:
            self._busy = True
            self.run_worker(self._check(), group="jobs-poll")

    async def _check(self) -> None:
        try:
            v = await self.db(data_version)
            if v != self._version:
                await self.reload()
        finally:
            self._busy = False

    async def reload(self) -> None:
        self._version = await self.db(data_version)
        view = await self.db(load_view, self.selected)
        self.show(view)
        self.loaded.set()

    def show(self, view: dict) -> None:
        self.view = view
        self.selected = view["selected"]
        table = self.query_one("#jobs-table", DataTable)
        keys = [k for k, _ in view["rows"]]
        existing = [str(r.value) for r in table.rows]
        if keys == existing:
            for key, cells in view["rows"]:
                for col, cell in zip(table.columns, cells):
                    table.update_cell(key, col, cell)
        else:
            table.clear()
            for key, cells in view["rows"]:
                table.add_row(*cells, key=key)
            if self.selected is not None and str(self.selected) in keys:
                table.move_cursor(row=keys.index(str(self.selected)), animate=False)
        self._show_detail()
        hint = "n: new job"
        if view["orphaned"]:
            ids = ", ".join(map(str, view["orphaned"][:5]))
            hint = f"job(s) {ids} wait for a worker: w starts one · " + hint
        elif not view["jobs"]:
            hint = "No jobs yet. n: launch one (add endpoints with `workbench endpoints add`)"
        self.query_one("#jobs-hint", Static).update(Text(hint))

    def _show_detail(self) -> None:
        job = self.current_job()
        recipe = self.current_recipe() if job is None else None
        self.query_one("#jobs-summary", Static).update(
            detail_text(job) if job else recipe_text(recipe) if recipe else Text(""))
        box = self.query_one("#jobs-failures", Vertical)
        box.remove_children()
        fails = self.view["failures"] if job else []
        if fails:
            box.mount(Static(Text(f"Latest failures ({len(fails)} shown; v: all in full)", style="bold red")))
            box.mount_all([Static(failure_text(f), classes="failure") for f in fails])

    def current_job(self) -> dict | None:
        return next((j for j in self.view["jobs"] if j["id"] == self.selected), None)

    def current_recipe(self) -> dict | None:
        if not isinstance(self.selected, str) or not self.selected.startswith("r"):
            return None
        rid = int(self.selected[1:].split(".", 1)[0])
        return next((r for r in self.view["recipes"] if r["id"] == rid), None)

    @property
    def selected_job_id(self) -> int | None:
        return self.selected if isinstance(self.selected, int) else None

    @on(DataTable.RowHighlighted, "#jobs-table")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is None or event.row_key.value is None:
            return
        key = _key_value(str(event.row_key.value))
        if key != self.selected:
            self.selected = key
            self.run_worker(self.reload, group="jobs-load", exclusive=True)

    # --- actions ---
    async def _control(self, fn, verb: str, start_worker: bool = False) -> None:
        jid = self.selected_job_id
        if jid is None:
            rid = self.selected[1:] if isinstance(self.selected, str) and self.selected.startswith("r") else None
            self.notify("no job selected (a recipe row: select one of its steps"
                        + (f", or cancel the whole recipe with `workbench recipe cancel {rid.split('.')[0]}`"
                           if rid else "") + ")", severity="warning")
            return
        try:
            out = await self.db(fn, jid)
        except J.TaskError as e:
            self.notify(str(e), severity="warning")
            return
        if isinstance(out, int):
            self.notify(f"job {jid}: {out} failed item(s) queued again")
            start_worker = start_worker and out > 0
        else:
            self.notify(f"job {jid}: {verb}")
        if start_worker:
            self.start_worker()
        await self.reload()

    async def action_pause(self) -> None:
        await self._control(J.pause_job, "paused")

    async def action_resume(self) -> None:
        await self._control(J.resume_job, "resumed", start_worker=True)

    async def action_cancel_job(self) -> None:
        jid = self.selected_job_id
        await self._control(J.cancel_job, "cancelled")
        if jid is not None:
            self.run_worker(self._cancel_remote_batch(jid), group="batch-cancel")

    async def _cancel_remote_batch(self, jid: int) -> None:
        """A batch job's running batch is cancelled at the provider too (over the network: never awaited by a key)."""
        from workbench.batch import cancel_remote_batch
        from workbench.batch_state import open_round
        from workbench.endpoints import redact, secrets
        job, rnd = await self.db(lambda conn: (J.get_job(conn, jid), open_round(conn, jid)))
        if job["status"] != "cancelled" or not job["params"].get("batch") or rnd is None \
                or rnd["state"] != "submitted":
            return
        config = self._config()
        try:
            status = await cancel_remote_batch(config, job, rnd["batch_id"])
        except Exception as e:
            self.notify(label(f"job {jid}: could not cancel batch {rnd['batch_id']} at the provider: "
                              f"{redact(str(e), secrets(config))[:200]}; cancel it in the provider's console"),
                        severity="error", timeout=10)
            return
        self.notify(label(f"job {jid}: batch {rnd['batch_id']} at the provider: {status}"))

    async def action_retry(self) -> None:
        await self._control(J.retry_failed, "retry", start_worker=True)

    def action_start_worker(self) -> None:
        self.start_worker()

    def start_worker(self) -> None:
        from workbench.worker import spawn_detached
        try:
            pid, log = spawn_detached(self.app.db_path, getattr(self.app, "config_path", None))
        except OSError as e:
            self.notify(f"could not start a worker: {e}", severity="error")
            return
        self.notify(f"worker {pid} started; log: {log}", timeout=6)

    async def action_view_failures(self) -> None:
        jid = self.selected_job_id
        if jid is None or not self.view["failures"]:
            self.notify("no failed items in this job")
            return
        fails = await self.db(lambda conn: J.failures(conn, jid, FULL_FAILURES, clip=True))
        self.app.push_screen(FailuresScreen(jid, fails))

    def action_back(self) -> None:
        self.app.pop_screen()

    async def action_launch(self) -> None:
        names = [d["name"] for d in await self.db(list_datasets)]
        self.app.push_screen(LaunchDialog(names, self._config(), self._submit, self.dataset), self._launched)

    async def _submit(self, req: dict) -> int:
        req = dict(req)
        task = req.pop("task")
        filter_ = J.parse_filter(req.pop("filter"))
        config = self._config()
        return await self.db(lambda conn: J.queue_job(conn, task, config=config, filter=filter_, **req))

    def _config(self) -> dict:
        from workbench.config import ConfigError, load_config
        try:   # re-read: endpoints may have been added with the CLI since the app started
            return load_config(getattr(self.app, "config_path", None))
        except ConfigError:
            return getattr(self.app, "config", {}) or {}

    def _launched(self, job_id: int | None) -> None:
        if job_id is None:
            return
        self.selected = job_id
        self.notify(f"job {job_id} queued")
        self.start_worker()
        self.run_worker(self.reload, group="jobs-load", exclusive=True)
