"""Balance: live histograms of task type, domain, difficulty, lengths, scores and status, for all samples
or only accepted ones, with target shares from `[balance.targets.<histogram>]` and the gap per bar.

Scores are shown one rubric at a time (`s` cycles the rubrics present), with that rubric's agreement with the
curator's decisions (workbench/agreement.py: accept rate per score, AUC, best threshold, kappa) in a panel that
follows new decisions like the histograms do.

Every POLL_SECONDS a StoreRunner thread reads `PRAGMA data_version` (microseconds); only when another connection
has committed (a CLI import, a worker, the Review screen) are the counts read again — a few milliseconds, from the
maintained counts in workbench/stats.py. Under a stream of commits (a worker) refreshes are throttled to one per
REFRESH_GAP (or 5x the last refresh's cost, if more), and a histogram whose bars did not change is not redrawn.
Nothing waits for a key press, and the event loop never waits on SQLite.
"""
from __future__ import annotations

import time

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, Label, SelectionList, Static

from widgets.histogram import Histogram
from widgets.safe_text import plain
from workbench import agreement, rounds, stats
from workbench.store import data_version
from workbench.safe_text import label

POLL_SECONDS = 0.04      # a change shows within ~50 ms; the poll itself costs microseconds on the runner thread
REFRESH_GAP = 0.05       # the least time between two refreshes while commits keep coming (~12/s, a few % CPU)
TOP_CATEGORIES = 12      # more categories than this are summed into one bar (targeted ones always shown)
SCOPES = {"all": None, "accepted": ("accepted",)}
ALL_ROUNDS = "all"       # the round split on, every row shown


def read_balance(conn, dataset: str | list[str] | None, seen_version: int | None,
                 rubric: str | None = None, round_: int | str | None = None) -> dict | None:
    """On the runner thread: None if nothing was committed since `seen_version`; {"fold": n} if n new rows must
    first be added to the maintained counts; else fresh counts. `dataset`: a name, a chosen set, None: all.
    `round_`: None: no round split (the maintained counts only); "all": every row plus the rows per Humpback
    round; K or "none": only the rows in round K (in no round), counted from the rows (workbench/rounds.py)."""
    version = data_version(conn)          # read before the counts: a commit in between is seen next time
    if version == seen_version:
        return None
    unfolded = stats.tail_rows(conn)
    if unfolded >= stats.FOLD_MIN_TAIL:   # e.g. after a big import: count them once, saying so, then read
        return {"version": version, "fold": unfolded}
    names = [n for (n,) in conn.execute("SELECT name FROM datasets ORDER BY id")]
    did = None
    if dataset is not None:
        ids = dict(conn.execute("SELECT name, id FROM datasets"))
        chosen = [dataset] if isinstance(dataset, str) else list(dataset)
        missing = [n for n in chosen if n not in ids]
        if missing:
            return {"version": version, "datasets": names, "counts": None, "missing": ", ".join(missing)}
        did = [ids[n] for n in chosen]
    t0 = time.perf_counter()
    in_round = round_ not in (None, ALL_ROUNDS)
    counts = rounds.read_counts(conn, did, rubric, round_) if in_round else stats.read_counts(conn, did, rubric)
    per_round = rounds.counts(conn, did) if round_ is not None else None
    agreed = None
    if counts.rubric is not None and not isinstance(dataset, list):   # agreement is per dataset (or all of them)
        try:
            agreed = agreement.agreement(conn, dataset, counts.rubric, round_=round_ if in_round else None)
        except agreement.AgreementError:
            agreed = None
    return {"version": version, "datasets": names, "counts": counts, "agreement": agreed, "rounds": per_round,
            "query_ms": (time.perf_counter() - t0) * 1000}


class DatasetChooser(ModalScreen[list[str] | None]):
    """Which datasets Balance counts: space toggles one, a: all or none, Enter: show, Esc: cancel."""

    HELP_TITLE = "Datasets"
    BINDINGS = [Binding("enter", "apply", "Show", priority=True), Binding("a", "all", "All/none"),
                Binding("escape", "cancel", "Cancel")]
    DEFAULT_CSS = """
    DatasetChooser { align: center middle; }
    DatasetChooser > Vertical { width: 60; max-width: 100%; height: auto; max-height: 90%; border: round $accent;
                                background: $panel; padding: 0 1; }
    DatasetChooser SelectionList { height: auto; max-height: 20; }
    """

    def __init__(self, names: list[str], chosen: list[str]):
        super().__init__()
        self.names, self.chosen = names, set(chosen)

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Datasets to count · space: toggle · a: all/none · Enter: show (none chosen: all) · Esc")
            yield SelectionList(*((plain(n, 50), n, n in self.chosen) for n in self.names), id="chooser")

    def action_all(self) -> None:
        box = self.query_one(SelectionList)
        box.deselect_all() if len(box.selected) == len(self.names) else box.select_all()

    def action_apply(self) -> None:
        picked = set(self.query_one(SelectionList).selected)
        self.dismiss([n for n in self.names if n in picked])

    def action_cancel(self) -> None:
        self.dismiss(None)


class BalanceScreen(Screen):
    """Balance: live histograms for all or accepted samples, with target shares and gaps."""

    PALETTE_TITLE = "Balance"
    BINDINGS = [
        Binding("a", "toggle_scope", "All/accepted", id="balance.scope"),
        Binding("d", "choose_datasets", "Datasets", id="balance.dataset"),
        Binding("s", "next_rubric", "Score rubric", id="balance.rubric"),
        Binding("r", "next_round", "Round", id="balance.round"),
        Binding("j,down", "scroll('down')", "Scroll", show=False, id="balance.down"),
        Binding("k,up", "scroll('up')", "Scroll up", show=False, id="balance.up"),
        Binding("pagedown,space", "scroll('page_down')", "Page down", show=False, id="balance.page_down"),
        Binding("pageup", "scroll('page_up')", "Page up", show=False, id="balance.page_up"),
        Binding("home", "scroll('home')", "Top", show=False, id="balance.top"),
        Binding("end", "scroll('end')", "Bottom", show=False, id="balance.bottom"),
        Binding("escape,q", "back", "Back", id="balance.back"),
    ]
    DEFAULT_CSS = """
    BalanceScreen #status { height: 1; padding: 0 1; background: $boost; }
    BalanceScreen #warning { display: none; height: auto; padding: 0 1; color: $warning; }
    BalanceScreen #warning.shown { display: block; }
    BalanceScreen #histograms { height: 1fr; }
    BalanceScreen #agreement { height: auto; padding: 0 1; margin-bottom: 1; }
    BalanceScreen #hist-round.hidden { display: none; }
    """

    def __init__(self, dataset: str | None = None):
        super().__init__()
        self.dataset = dataset
        self.scope = "all"
        self.datasets: list[str] = []
        self.counts: stats.Counts | None = None
        self.version: int | None = None
        self.refreshes = 0               # how many times fresh counts were drawn (tests and benchmarks read it)
        self.last_query_ms = 0.0
        self.last_draw_ms = 0.0
        self.updated_at: str | None = None
        self._polling = False
        self._stale = True
        self._next_refresh = 0.0          # monotonic time before which a poll is skipped (throttle)
        self._warnings: dict[str, str] = {}
        self.targets: dict[str, dict[str, float]] = {}
        self.rubric: str | None = None          # the score histogram's rubric (None: the primary one)
        self.agreement: dict | None = None
        self.round: int | str | None = None     # None: no split; "all": rows per round shown; K / "none": one round
        self.round_counts: dict | None = None    # round -> status -> rows (workbench/rounds.py)
        self._agreement_drawn: object = False     # what the agreement panel shows (False: nothing yet)

    def compose(self) -> ComposeResult:
        self.runner = self.app.store_runner()
        yield Static(Text("Balance · loading…"), id="status")
        yield Static(Text(""), id="warning")
        with VerticalScroll(id="histograms", can_focus=False):   # screen keys scroll it, without animation
            yield Histogram("Humpback rounds", id="hist-round", classes="hidden")
            for dim in stats.HISTOGRAM_DIMS:
                yield Histogram(stats.DIM_TITLES[dim], id=f"hist-{dim}")
                if dim == "score":
                    yield Static(Text(""), id="agreement")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        try:
            self.targets = stats.parse_targets(getattr(self.app, "config", {}) or {})
        except ValueError as e:
            self._warn("targets", f"targets ignored: {e}")
        self.set_interval(POLL_SECONDS, self._poll)
        self._poll(force=True)

    def on_unmount(self) -> None:
        self.runner.close()

    # --- polling -----------------------------------------------------------------------------------------------

    def _poll(self, force: bool = False) -> None:
        if force:
            self._stale = True
        elif time.monotonic() < self._next_refresh:
            return
        if not self._polling:
            self._polling = True
            self.run_worker(self._check, group="balance-poll")

    async def _check(self) -> None:
        try:
            while True:
                dataset, rubric, round_, stale = self.dataset, self.rubric, self.round, self._stale
                self._stale = False
                try:
                    result = await self.runner.run(read_balance, dataset, None if stale else self.version, rubric,
                                                   round_)
                    if result is not None and "fold" in result:
                        self._warn("fold", f"counting {result['fold']:,} new rows for the histograms…")
                        await self.runner.run(stats.fold)
                        self._warn("fold", None)
                        self._stale = True
                        continue
                except Exception as e:   # shown; the histograms keep their last counts and polling goes on
                    self._warn("fold", None)
                    self._warn("read", f"could not read the counts: {type(e).__name__}: {e}")
                    return
                self._warn("read", None)
                if dataset != self.dataset or rubric != self.rubric or round_ != self.round or self._stale:   # the question changed: ask again
                    self._stale = True
                    continue
                if result is not None and result["counts"] is None:
                    self._warn("dataset", f"no dataset named {result['missing']!r}; showing all datasets")
                    self.dataset, self._stale = None, True
                    continue
                if result is not None:
                    t0 = time.perf_counter()
                    self._show(result)
                    cost = result["query_ms"] / 1000 + time.perf_counter() - t0
                    self._next_refresh = time.monotonic() + max(REFRESH_GAP, 5 * cost)
                return
        finally:
            self._polling = False

    def _show(self, result: dict) -> None:
        if not self.is_attached:   # closed while the counts were read
            return
        self.version = result["version"]
        self.datasets = result["datasets"]
        self.counts = result["counts"]
        self.agreement = result["agreement"]
        self.round_counts = result.get("rounds")
        self.last_query_ms = result["query_ms"]
        self.updated_at = time.strftime("%H:%M:%S")
        self.redraw()
        self.refreshes += 1

    # --- drawing -----------------------------------------------------------------------------------------------

    def redraw(self) -> None:
        if self.counts is None:
            return
        t0 = time.perf_counter()
        statuses = SCOPES[self.scope]
        for dim in stats.HISTOGRAM_DIMS:
            hist = self.counts.histogram(dim, statuses)
            bars = stats.bars(hist, self.targets.get(dim), top=TOP_CATEGORIES)
            widget = self.query_one(f"#hist-{dim}", Histogram)
            if dim == "score":
                widget.title = self.counts.score_title() + " · s: next rubric"
            widget.set_bars(bars, sum(n for _, n in hist))
        self._draw_rounds(statuses)
        self._draw_agreement()
        self.last_draw_ms = (time.perf_counter() - t0) * 1000
        self._update_status()

    def _draw_rounds(self, statuses) -> None:
        """Rows per Humpback round (a row can be in several rounds; "none": in no round)."""
        widget = self.query_one("#hist-round", Histogram)
        widget.set_class(self.round is None, "hidden")
        if self.round is None or self.round_counts is None:
            return
        hist = [(f"round {r}" if r != rounds.NONE else "(no round)",
                 sum(n for st, n in by.items() if statuses is None or st in statuses))
                for r, by in self.round_counts.items()]
        shown = "all rows" if self.round == ALL_ROUNDS else \
            "histograms below: rows in no round" if self.round == rounds.NONE else \
            f"histograms below: round {self.round} only"
        widget.title = f"Humpback rounds (a row can be in several) · {shown} · r: next"
        widget.set_bars(stats.bars(hist), sum(n for _, n in hist))

    def _draw_agreement(self) -> None:
        box = self.query_one("#agreement", Static)
        res = self.agreement
        drawn = None if res is None else (tuple(agreement.report_lines(res)), res["unreliable"])
        if drawn == self._agreement_drawn:
            return      # unchanged: no repaint
        self._agreement_drawn = drawn
        if res is None:
            box.update(Text("agreement: no scores to compare with curator decisions", style="dim"))
            return
        lines = drawn[0]
        text = Text("Agreement with curator decisions\n", style="bold", no_wrap=True, overflow="ellipsis")
        text.append("\n".join(lines), style="" if not res["unreliable"] else "yellow")
        box.update(text)

    def _update_status(self) -> None:
        total = self.counts.total(SCOPES[self.scope]) if self.counts else 0
        shown = "all" if self.dataset is None else label(
            self.dataset if isinstance(self.dataset, str) else ", ".join(self.dataset), 60)
        parts = ["Balance", f"{'datasets' if isinstance(self.dataset, list) else 'dataset'}: {shown}",
                 "accepted only" if self.scope == "accepted" else "all samples", f"{total:,} rows"]
        if self.round not in (None, ALL_ROUNDS):
            parts.insert(3, "no round" if self.round == rounds.NONE else f"round {self.round}")
        if self.updated_at:
            parts.append(f"updated {self.updated_at}")
        self.query_one("#status", Static).update(Text(" · ".join(parts), no_wrap=True, overflow="ellipsis"),
                                                layout=False)   # one fixed line: no re-layout per key

    def _warn(self, topic: str, message: str | None) -> None:
        if not self.is_attached:
            return
        if message:
            self._warnings[topic] = message
        else:
            self._warnings.pop(topic, None)
        boxes = self.query("#warning").results(Static)
        box = next(boxes, None)
        if box is None:   # the screen is being taken down (a poll's worker finishing after its widgets went)
            return
        box.update(Text("\n".join(self._warnings.values())))
        box.set_class(bool(self._warnings), "shown")

    # --- actions -----------------------------------------------------------------------------------------------

    def action_toggle_scope(self) -> None:
        self.scope = "accepted" if self.scope == "all" else "all"
        self.redraw()          # the counts hold every status: no query needed

    def action_choose_datasets(self) -> None:
        """All datasets, or a chosen set of them (one is a set of one)."""
        chosen = [self.dataset] if isinstance(self.dataset, str) else list(self.dataset or [])
        self.app.push_screen(DatasetChooser(self.datasets, chosen), self._datasets_chosen)

    def _datasets_chosen(self, chosen: list[str] | None) -> None:
        if chosen is None:   # cancelled
            return
        self.dataset = None if not chosen or len(chosen) == len(self.datasets) else (
            chosen[0] if len(chosen) == 1 else chosen)
        self._update_status()
        self._poll(force=True)

    def action_next_rubric(self) -> None:
        names = sorted((self.counts.scales or {}) if self.counts else {})
        if not names:
            return
        current = self.counts.rubric if self.counts else None
        i = names.index(current) if current in names else -1
        self.rubric = names[(i + 1) % len(names)]
        self._poll(force=True)

    def action_next_round(self) -> None:
        """No split -> every row with the rows per round -> each round present -> rows in no round -> no split."""
        present = [r for r in (self.round_counts or {}) if r != rounds.NONE]
        cycle = [None, ALL_ROUNDS, *(int(r) for r in present), *([rounds.NONE] if self.round_counts and
                                                               rounds.NONE in self.round_counts else [])]
        i = cycle.index(self.round) if self.round in cycle else 0
        self.round = cycle[(i + 1) % len(cycle)]
        if self.round == ALL_ROUNDS or self.round_counts is None:
            self.round = ALL_ROUNDS                 # the rounds present are known once they are counted
        self._update_status()
        self._poll(force=True)

    def action_scroll(self, where: str) -> None:
        box = self.query_one("#histograms", VerticalScroll)
        {"down": box.scroll_down, "up": box.scroll_up, "page_down": box.scroll_page_down,
         "page_up": box.scroll_page_up, "home": box.scroll_home, "end": box.scroll_end}[where](animate=False)

    def action_back(self) -> None:
        self.app.pop_screen()
