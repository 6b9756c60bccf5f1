"""The launch dialog of the Jobs screen: task, dataset, filter, endpoint or pool, judge, target, parameters.

No store access here: the screen passes the dataset names and config in, and a `submit(request) -> job id` coroutine
that queues the job (raising ValueError-like errors, shown in the dialog, which then stays open).
"""
from __future__ import annotations

import re

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, Select, Static

from workbench import endpoints as E
from workbench.batch import POLL_SECONDS
from workbench.filters import parse_filter
from workbench.safe_text import sanitize
from workbench.tasks import load_tasks, parse_value, resolve_params


def generator_options(config: dict) -> list[tuple[str, str]]:
    out = []
    try:
        eps, pls = E.endpoints(config), E.pools(config)
    except E.EndpointError:
        return out
    out += [(f"endpoint {ep.name} ({ep.model})", f"endpoint:{ep.name}") for ep in eps.values()]
    out += [(f"pool {p.name} ({p.mode}: {', '.join(p.endpoints)})", f"pool:{p.name}") for p in pls.values()]
    return out


def _input_id(name: str) -> str:
    return "param-" + re.sub(r"[^A-Za-z0-9_-]", "_", name)


class LaunchDialog(ModalScreen):
    """Queue a new LLM job. Dismisses with the new job id, or None when cancelled."""

    BINDINGS = [Binding("escape", "cancel", "Cancel"), Binding("ctrl+s", "launch", "Launch")]
    DEFAULT_CSS = """
    LaunchDialog { align: center middle; }
    LaunchDialog > Vertical { width: 100; max-width: 100%; height: 90%; border: round $accent;
                              background: $surface; padding: 0 1; }
    LaunchDialog .row { height: auto; margin-bottom: 1; }
    LaunchDialog .row Label { width: 18; padding: 0 1 0 0; }
    LaunchDialog .row Input, LaunchDialog .row Select { width: 1fr; }
    LaunchDialog #launch-params { height: 1fr; border: tall $panel; }
    LaunchDialog #launch-params .row Input { width: 24; }
    LaunchDialog #launch-params .tip { width: 1fr; padding-left: 1; }
    LaunchDialog #launch-error { color: $error; height: auto; }
    LaunchDialog #launch-no-endpoints { width: 1fr; height: auto; }
    LaunchDialog #launch-buttons { height: auto; align-horizontal: right; }
    """

    def __init__(self, datasets: list[str], config: dict, submit, dataset: str | None = None,
                 task: str = "generate"):
        super().__init__()
        self.datasets = datasets
        self.config = config
        self.submit = submit
        self.tasks = load_tasks()
        self.task_name = task if task in self.tasks else next(iter(sorted(self.tasks)))
        self.dataset = dataset if dataset in datasets else (datasets[0] if datasets else None)
        self.generators = generator_options(config)

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(Text("Launch a job", style="bold"))
            with Horizontal(classes="row"):
                yield Label("Task")
                yield Select([(f"{n} — {c.summary}", n) for n, c in sorted(self.tasks.items())], value=self.task_name,
                             allow_blank=False, id="launch-task", compact=True)
            with Horizontal(classes="row"):
                yield Label("Dataset")
                yield Select([(d, d) for d in self.datasets], value=self.dataset if self.dataset else Select.NULL,
                             id="launch-dataset", compact=True)
            with Horizontal(classes="row"):
                yield Label("Filter")
                yield Input(placeholder="e.g. status=pending no_response=true limit=500", id="launch-filter",
                            compact=True)
            with Horizontal(classes="row"):
                yield Label("Endpoint / pool")
                if self.generators:   # never a blank "no endpoints" entry among the endpoints
                    yield Select(self.generators, id="launch-generator", value=self.generators[0][1],
                                 allow_blank=False, compact=True)
                else:
                    yield Static(Text("no endpoints yet: add one with `workbench endpoints add NAME --base-url URL "
                                      "--model M`, then reopen this dialog", style="bold"), id="launch-no-endpoints")
            with Horizontal(classes="row"):
                yield Label("Judge (optional)")
                yield Select(self.generators, id="launch-judge", prompt="same as the generators", compact=True)
            with Horizontal(classes="row"):
                yield Label("Into dataset")
                yield Input(id="launch-into", compact=True)
            with Horizontal(classes="row"):
                yield Label("Batch API")
                yield Checkbox("send the requests as batches (one endpoint; cheaper, replies within 24 h)",
                               id="launch-batch", compact=True)
            yield Static(Text("Parameters (defaults shown; edit to change)", style="italic"))
            yield VerticalScroll(id="launch-params")
            yield Static(Text(""), id="launch-error")
            with Horizontal(id="launch-buttons"):
                yield Button("Launch (ctrl+s)", variant="primary", id="launch-go")
                yield Button("Cancel (esc)", id="launch-cancel")

    def on_mount(self) -> None:
        self._show_task()

    def _show_task(self) -> None:
        cls = self.tasks[self.task_name]
        box = self.query_one("#launch-params", VerticalScroll)
        box.remove_children()
        rows = []
        for name, spec in cls.params.items():
            value = "" if spec.default is None else str(spec.default)
            tip = spec.help + (f" (one of: {', '.join(map(str, spec.choices))})" if spec.choices else "")
            inp = Input(value=value, placeholder="default" if spec.default is None else "", id=_input_id(name),
                        compact=True)
            inp.tooltip = tip or None
            rows.append(Horizontal(Label(name), inp, Static(Text(tip, style="dim"), classes="tip"), classes="row"))

        if not rows:
            rows.append(Static(Text("This task has no parameters.", style="dim")))
        box.mount_all(rows)
        into = self.query_one("#launch-into", Input)
        into.placeholder = f"<dataset>-{cls.name}" if cls.writes_samples else "(this task writes no samples)"
        into.disabled = not cls.writes_samples

    @on(Select.Changed, "#launch-task")
    def _task_changed(self, event: Select.Changed) -> None:
        if event.value is not Select.NULL and event.value != self.task_name:
            self.task_name = event.value
            self._show_task()

    def request(self) -> dict:
        """The form as keyword arguments for `jobs.queue_job` (plus the task name)."""
        cls = self.tasks[self.task_name]
        params = {}
        for name, spec in cls.params.items():
            text = self.query_one(f"#{_input_id(name)}", Input).value.strip()
            default = "" if spec.default is None else str(spec.default)
            if text == default or not text:   # an emptied field means the default
                continue
            params[name] = text if spec.kind is str else parse_value(text)
        gens = self.query("#launch-generator")
        gen = gens.first(Select).value if gens else Select.NULL
        judge = self.query_one("#launch-judge", Select).value
        dataset = self.query_one("#launch-dataset", Select).value
        kind, _, name = (gen if gen is not Select.NULL else ":").partition(":")
        return {"task": self.task_name, "dataset": None if dataset is Select.NULL else dataset,
                "endpoint": name if kind == "endpoint" else None, "pool": name if kind == "pool" else None,
                "judge": None if judge is Select.NULL else judge.partition(":")[2],
                "into": self.query_one("#launch-into", Input).value.strip() or None,
                "filter": self.query_one("#launch-filter", Input).value.strip(), "params": params,
                "batch": {"poll": POLL_SECONDS} if self.query_one("#launch-batch", Checkbox).value else None}

    def check(self, req: dict) -> None:
        """What can be told before queuing, from the form alone: each param's type and choices, the filter, the
        endpoints named. Raises ValueError with the message the dialog shows."""
        resolve_params(self.tasks[req["task"]], req["params"])
        parse_filter(req["filter"])
        names = {v.partition(":")[2] for _, v in self.generators}
        for role in ("endpoint", "pool", "judge"):
            if req[role] and req[role] not in names:
                raise ValueError(f"{role} {req[role]!r} is not in the config any more (reopen the dialog)")

    async def action_launch(self) -> None:
        error = self.query_one("#launch-error", Static)
        try:
            req = self.request()
        except ValueError as e:
            error.update(Text(str(e)))
            return
        if not req["endpoint"] and not req["pool"]:
            error.update(Text("choose an endpoint or pool (add one with `workbench endpoints add`)"))
            return
        try:
            self.check(req)
        except ValueError as e:   # shown here: nothing is queued
            error.update(Text(str(e)))
            return
        try:
            job_id = await self.submit(req)
        except ValueError as e:     # TaskError, EndpointError: the user can fix the form
            error.update(Text(sanitize(str(e))))
            return
        self.dismiss(job_id)

    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#launch-go")
    async def _go(self) -> None:
        await self.action_launch()

    @on(Button.Pressed, "#launch-cancel")
    def _cancel(self) -> None:
        self.action_cancel()
