"""The Review screen's dialogs: full-text search and the filter (status, score range, task type, domain, dataset).
"""
from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Select, Static

from widgets.safe_text import plain
from workbench import scores
from workbench.review import Filter
from workbench.safe_text import sanitize
from workbench.store import STATUSES


class SearchDialog(ModalScreen[str | None]):
    """Full-text search (FTS5): every word must appear; empty clears the search."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]
    DEFAULT_CSS = """
    SearchDialog { align: center middle; }
    SearchDialog > Vertical { width: 80; height: auto; border: round $accent; background: $panel; padding: 0 1; }
    """

    def __init__(self, current: str | None):
        super().__init__()
        self.current = current or ""

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Search instruction/input/response · Enter: search · empty: clear · Esc: cancel")
            yield Input(self.current, placeholder="words…", id="query", compact=True)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip())

    def action_cancel(self) -> None:
        self.dismiss(None)


ANY = "__any__"


class FilterDialog(ModalScreen[Filter | None]):
    """Filter what Review walks through: status, score range, task type, domain, dataset."""

    BINDINGS = [Binding("escape", "cancel", "Cancel"), Binding("ctrl+s", "apply", "Apply"),
                Binding("ctrl+r", "clear", "Clear all")]
    DEFAULT_CSS = """
    FilterDialog { align: center middle; }
    FilterDialog > Vertical { width: 80; height: auto; max-height: 100%; border: round $accent;
                              background: $panel; padding: 0 1; }
    FilterDialog .row { height: auto; margin-top: 1; }
    FilterDialog .label { width: 12; }
    FilterDialog #min_score { margin-right: 1; }
    FilterDialog Select { width: 1fr; }
    FilterDialog Input { width: 1fr; }
    FilterDialog #error { color: $error; height: auto; }
    """

    def __init__(self, flt: Filter, facets: dict):
        super().__init__()
        self.flt = flt
        self.facets = facets  # {"task_type": [...], "domain": [...], "datasets": [(id, name)]}

    def _select(self, id: str, values: list, current) -> Select:
        options = [(Text("any"), ANY)] + [(plain(label, 60), value) for label, value in values]
        if current is not None and current not in [v for _, v in values]:
            options.append((plain(current, 60), current))
        return Select(options, value=current if current is not None else ANY, allow_blank=False, id=id, compact=True)

    def compose(self) -> ComposeResult:
        f = self.flt
        with Vertical():
            yield Label("Filter · Tab: next field · Enter/ctrl+s: apply · ctrl+r: clear · Esc: cancel")
            with Horizontal(classes="row"):
                yield Label("status", classes="label")
                yield self._select("status", [(s, s) for s in STATUSES], f.status)
            with Horizontal(classes="row"):
                yield Label("score", classes="label")
                hint = ", ".join(sorted(self.facets.get("rubrics") or {})) or "no scores yet"
                yield Input(f.min_score or "", placeholder="min, e.g. curate=4", id="min_score", compact=True,
                            tooltip=f"RUBRIC=N; rubrics: {hint}")
                yield Input(f.max_score or "", placeholder="max, e.g. judge=6", id="max_score", compact=True,
                            tooltip=f"RUBRIC=N; rubrics: {hint}")
            with Horizontal(classes="row"):
                yield Label("task type", classes="label")
                yield self._select("task_type", [(v, v) for v in self.facets.get("task_type", [])], f.task_type)
            with Horizontal(classes="row"):
                yield Label("domain", classes="label")
                yield self._select("domain", [(v, v) for v in self.facets.get("domain", [])], f.domain)
            with Horizontal(classes="row"):
                yield Label("dataset", classes="label")
                yield self._select("dataset_id", [(n, i) for i, n in self.facets.get("datasets", [])], f.dataset_id)
            yield Static("", id="error")

    def _value(self, id: str):
        v = self.query_one(f"#{id}", Select).value
        return None if v == ANY or v == Select.BLANK else v

    def _score(self, id: str) -> str | None:
        """RUBRIC=N as typed (a bare number, an unknown rubric or a value off the scale is refused)."""
        raw = self.query_one(f"#{id}", Input).value.strip()
        return raw or None

    def action_apply(self) -> None:
        try:
            mins, maxs = self._score("min_score"), self._score("max_score")
            if mins or maxs:
                scores.build(mins, maxs, present=self.facets.get("rubrics") or {})
            flt = Filter(dataset_id=self._value("dataset_id"), status=self._value("status"),
                         min_score=mins, max_score=maxs, task_type=self._value("task_type"),
                         domain=self._value("domain"), search=self.flt.search, include_stale=self.flt.include_stale,
                         selection=self.flt.selection)
        except ValueError as e:
            self.query_one("#error", Static).update(Text(sanitize(str(e))))
            return
        self.dismiss(flt)

    def action_clear(self) -> None:
        for sel in self.query(Select):
            if sel.id != "dataset_id":
                sel.value = ANY
        for inp in self.query(Input):
            inp.value = ""

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.action_apply()

    def action_cancel(self) -> None:
        self.dismiss(None)
