"""Review: one sample at a time. Keys decide (accept/reject/skip), undo, edit, move, search and filter.

Every store call runs on the screen's StoreRunner thread; the sample on screen stays (marked "loading") until the
next one is ready. A decision is committed by `review.decide` before the next sample is even looked up, so what
the curator has seen decided is on disk. Keys that change the sample are queued and applied in the order typed,
each to the sample the previous one led to (see `_enqueue`). A decision is a compare-and-set on the sample's
latest change when it was loaded: another session's decision in between is named, never overwritten.
"""
from __future__ import annotations

import gc
import time
from collections import deque
from functools import partial

from rich.text import Text
from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Static

from screens.review_dialogs import ANY, FilterDialog, SearchDialog  # noqa: F401
from widgets.conversation import conversation_text, message_turns
from widgets.safe_text import DEFAULT_LIMIT, plain, titled_text
from widgets.review_text import lineage_text, why_text  # noqa: F401
from widgets.redraw import text_key
from widgets.sample_view import Block, SampleView
from widgets.scores import as_text, scores_renderable
from workbench import keymap, review, scores
from workbench.bigtext import PREVIEW_BYTES, sample_text_parts
from workbench.safe_text import invisible_counts, sanitize
from workbench.app import key_specs_bindings
from workbench.review import Filter
from workbench.stats import fold_if_needed
from workbench.store import STATUSES, data_version, fts_sync

STATUS_STYLES = {"pending": "bold yellow", "accepted": "bold green", "rejected": "bold red"}
COUNTS_REFRESH_SECONDS = 1.0
MORE_FACTOR = 4
PAGE_CHARS = 16_000       # the most of one field drawn at once: ~30 ms to lay out, where 64k took ~250 ms
LOADING_MARK_SECONDS = 0.15


def invisible_counts_of(s: dict) -> tuple[int, int]:
    """(zero-width characters, bidi controls) in every text a sample shows."""
    texts = [s.get(f) for f in ReviewScreen.TEXT_FIELDS]
    texts += [content for _, content in message_turns(s.get("messages"))]
    texts += [c.get("response") for c in s.get("candidates") or []]
    zero_width = bidi = 0
    for text in texts:
        if isinstance(text, str):
            z, b = invisible_counts(text)
            zero_width, bidi = zero_width + z, bidi + b
    return zero_width, bidi


def _decide_then_next(conn, sid: int, action: str, session: str, seen: int | None, flt: Filter
                      ) -> tuple[dict, dict | None, Exception | None]:
    """On the runner, in one trip: the decision on `sid`, committed (raises if refused), then the next sample, or
    the error that kept it from loading (the decision stands: the caller counts it, then reports the error)."""
    d = review.decide(conn, sid, action, session, seen=seen)
    try:
        return d, review.goto(conn, flt, "next", sid), None
    except Exception as e:  # noqa: BLE001 - handed back and raised by the caller, after recording the decision
        return d, None, e


def _no_hidden(make, arg) -> tuple[Text, int]:
    return make(arg), 0


def _scores_text(judgments: list[dict], console, width: int) -> tuple[Text, int]:
    return as_text(scores_renderable(judgments), console, width), 0


class ReviewScreen(Screen):
    """Review samples one at a time: accept, reject, skip, undo, edit, search, filter."""

    PALETTE_TITLE = "Review"
    BINDINGS = key_specs_bindings("review")
    DEFAULT_CSS = """
    ReviewScreen #status { height: auto; max-height: 3; padding: 0 1; background: $boost;
                           text-wrap: nowrap; text-overflow: ellipsis; }
    ReviewScreen #body { height: 1fr; overflow-x: hidden; overflow-y: scroll; }  /* a scrollbar that comes and goes
        with each sample's length would change the text's width: the whole body re-wrapped and laid out again */
    """
    TEXT_FIELDS = ("system", "instruction", "input", "response", "rejected")

    def __init__(self, dataset: str | None = None, sample_id: int | None = None, selection: str | None = None,
                 browse_order: review.BrowseOrder | None = None):
        super().__init__()
        self.dataset_name = dataset
        self.start_sample = sample_id
        self.start_selection = selection
        self.flt = Filter()
        self.order = browse_order          # entered from Browse: walk its rows in its order (None: id order)
        self.order_key: tuple | None = None   # where that walk stands
        self.sample: dict | None = None
        self.busy = False
        self.opening = True
        self.queue: deque[str] = deque()   # sample-changing keys not applied yet, in the order typed
        self.typed = 0                     # such keys typed since the screen opened (benchmarks read these)
        self.decided = 0
        self.queue_peak = 0
        self.limit: int = DEFAULT_LIMIT
        self.page_offset = 0          # `m` past PAGE_CHARS pages through the loaded start of long fields
        self.show_invisible = False     # zero-width characters drawn as they are (scripts need them) or marked
        self.session = review.curator_session()
        self.stats = review.SessionStats()
        self.counts: dict | None = None
        self._counts_running = False
        self._version = None
        self.note = ""
        self.timings: list[float] = []     # key handler -> next sample rendered, seconds (benchmarks read this)
        self.first_shown_at: float | None = None
        self._t0: float | None = None
        self._loading_marked = False
        self._status_key: tuple | None = None

    # --- layout ------------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        hint = f"{self._key('review.more')}: show more · {self._key('review.pager')}: $PAGER"
        self.more_hint = hint
        yield Static(Text("Opening…"), id="status")
        # one Line API widget for the whole body: a new sample re-wraps its blocks and repaints the lines that
        # changed, with no layout of child widgets (see widgets/sample_view.py)
        self.body = SampleView([
            Block("meta", margin_bottom=0),
            Block("empty", pad=(1, 2, 1, 2), margin_bottom=0),
            # the conversation (an hh pair's prompt turns) before the answers: read the question, then the replies
            *(Block(f) for f in ("system", "instruction", "input", "conversation", "response", "rejected", "why",
                                 "candidates")),
            Block("scores", no_wrap=True),
            Block("lineage"),
        ], id="body")
        yield self.body
        yield Footer(compact=True, show_command_palette=False)

    def _key(self, binding_id: str) -> str:
        overrides = getattr(self.app, "keymap_overrides", {}) if self.is_attached else {}
        keys = keymap.effective_keys(overrides)[binding_id]
        return keymap.display_key(keys[0])

    def on_mount(self) -> None:
        self.runner = self.app.store_runner()    # decisions and navigation, in order
        self.bg = self.app.store_runner()        # filter-dialog choices (DISTINCT scans), never in the key path
        self._run(self._open())
        self.set_interval(COUNTS_REFRESH_SECONDS, self._refresh_counts)
        self._run(self._index_new_rows())

    def on_unmount(self) -> None:
        self.runner.close()
        self.bg.close()
        gc.unfreeze()      # (see _first_rendered) what was frozen can be collected again: this screen, for one

    async def _index_new_rows(self) -> None:
        """Rows imported or generated since the last sync become searchable, and are folded into the maintained
        counts (own thread: may take a while on a big import; both commit in short chunks)."""
        runner = self.app.store_runner()
        try:
            await runner.run(fold_if_needed)
            n = await runner.run(fts_sync)
            if n and self.flt.search:
                self.notify(f"{n:,} new rows indexed for search")
        finally:
            runner.close()

    async def _open(self) -> None:
        try:
            self.flt, sample = await self.runner.run(review.open_view, self.dataset_name, self.start_sample,
                                                     self.start_selection)
            if self.order is not None and sample is not None:
                sample = await self._goto("id", sample["id"])
        except KeyError as e:
            self.opening = False
            self.note = str(e.args[0])
            self._show(None)
            return
        self.opening = False
        self._show(sample)
        self._drain()             # keys typed while the screen opened

    # --- drawing -----------------------------------------------------------------------------------

    def _show(self, sample: dict | None, note: str | None = None) -> None:
        """Draw `sample` (None: nothing matches). Called only with data already committed and loaded."""
        if not self.is_attached:  # the screen closed while the store answered
            return
        if sample is None or self.sample is None or sample["id"] != self.sample["id"]:
            self.page_offset = 0       # paging is within one sample
        self.sample = sample
        if note is not None:
            self.note = note
        body = self.body
        if sample is None:
            for b in body.blocks.values():
                b.display = False
            empty = body.block("empty")
            empty.display = True
            empty.set(Text(sanitize(self.note) if self.note else "No sample matches this filter. "
                           f"{self._key('review.filter')}: change the filter · "
                           f"{self._key('review.search')}: search", style="dim"))
            body.redraw(home=True)
        else:
            body.block("empty").display = False
            self._draw_sample(sample, home=True)
        self._draw_status()
        if self._t0 is not None:
            self.call_after_refresh(self._rendered, self._t0)
            self._t0 = None
        elif self.first_shown_at is None and sample is not None:
            self.call_after_refresh(self._first_rendered)

    def _rendered(self, t0: float) -> None:
        self.timings.append(time.perf_counter() - t0)

    def _first_rendered(self) -> None:
        self.first_shown_at = time.time()
        # what the app holds once the first sample is on screen lives as long as it does: out of the cyclic
        # collector's way, so that a full collection during the keys that follow walks only what they allocate
        # (otherwise ~50-200 ms about every 60 keys, measured at 1M rows in tmux); unfrozen when the screen closes
        gc.freeze()

    def _draw_sample(self, s: dict, home: bool = False) -> None:
        """Set every block of the body for sample `s`, then redraw it once (`home`: from its top)."""
        body = self.body
        meta = body.block("meta")
        t = Text(end="")
        for key in ("task_type", "domain", "difficulty", "language"):
            if s.get(key):
                t.append(f"{key}: ", style="dim")
                t.append_text(plain(s[key], 40))
                t.append("  ")
        if s.get("blind"):
            t.append("scores hidden until you decide (spot-check)  ", style="italic")
        elif s.get("scores"):
            t.append("scores: ", style="dim")
            t.append_text(plain(scores.describe(s["scores"]), 200))
            t.append("  ")
        if s.get("dup_of"):
            t.append(f"DUPLICATE of #{s['dup_of']}", style="bold magenta")
        if "messages" in s.get("clipped", {}):
            t.append(f"\nconversation of {s['clipped']['messages']:,} bytes, too long to show here "
                     f"({self._key('review.pager')}: open it in $PAGER)", style="bold yellow")
        zero_width, bidi = invisible_counts_of(s)
        if zero_width or bidi:
            # shown, not hidden: a homoglyph-free but reordered or joined text reads as something else
            parts = [f"{n} {what}" for n, what in ((zero_width, "zero-width"), (bidi, "bidi control")) if n]
            key = self._key("review.invisible")
            t.append(f"  ⚠ invisible: {', '.join(parts)} ({key}: {'hide' if self.show_invisible else 'show'})",
                     style="bold yellow")
        meta.set(t)
        meta.display = True
        messages = s.get("messages")
        preference = s.get("rejected") is not None
        # a conversation shows all its turns, so the turns mirrored in instruction/response are not repeated
        # (a preference row's conversation is the prompt only: its chosen/rejected answers are shown apart)
        mirrored = set()
        if messages:
            mirrored = {"instruction"} | (set() if preference else {"response"})
            if any(isinstance(m, dict) and m.get("role") == "system" for m in messages):
                mirrored.add("system")
        for f in self.TEXT_FIELDS:
            w = body.block(f)
            value = s.get(f)
            w.heading = {"response": "Chosen response" if preference else "Response",
                         "rejected": "Rejected response"}.get(f, f.capitalize())
            shown = f not in mirrored and (bool(value) or f in ("instruction", "response"))
            if shown:
                self._show_field(w, value or "", s.get("clipped", {}).get(f))
            w.display = shown
        conv = body.block("conversation")
        if messages:
            self._show_turns(conv, "Conversation", message_turns(messages))
        conv.display = bool(messages)
        why = review.why_chosen(s)
        why_w = body.block("why")
        if why is not None:
            why_w.fill(("why", why), partial(_no_hidden, why_text, why))
        why_w.display = why is not None
        cands = body.block("candidates")
        if s.get("candidates"):
            self._show_turns(cands, "Candidates", [
                (c["model"] if c["overall"] is None or s.get("blind") else f"{c['model']} · overall {c['overall']:g}",
                 c["response"] or "") for c in s["candidates"]], sizes=[c.get("size") for c in s["candidates"]])
        cands.display = bool(s.get("candidates"))
        table = body.block("scores")
        judgments = [] if s.get("blind") else s.get("judgments") or []
        width = max(20, (body.scrollable_content_region.width or self.app.size.width - 2) - 2)
        table.fill(("scores", judgments, width), partial(_scores_text, judgments, self.app.console, width))
        table.display = not s.get("blind")
        lin = body.block("lineage")
        lineage = s.get("lineage") or {}
        lin.fill(("lineage", lineage), partial(_no_hidden, lineage_text, lineage))
        lin.display = True
        body.redraw(home=home)

    def _show_turns(self, block: Block, title: str, turns: list[tuple[str, str]], sizes: list | None = None) -> None:
        block.fill((title, turns, self.limit, self.show_invisible, sizes, self.more_hint),
                   partial(conversation_text, turns, self.limit, self.more_hint, title, self.show_invisible, sizes))

    def _draw_status(self) -> None:
        if not self.is_attached:
            return
        s = self.sample
        t = Text(no_wrap=True, overflow="ellipsis", end="")
        t.append_text(plain(self.dataset_name or (s or {}).get("dataset") or "all datasets", 30))
        if s:
            t.append(f"  #{s['id']}  ")
            t.append(s["status"].upper(), style=STATUS_STYLES.get(s["status"], ""))
            if s.get("automatic"):   # set aside by a clean filter, dedup or the curate threshold: say which
                t.append(" by ", style="dim")
                t.append_text(plain(s["automatic"]["text"], 80))
                t.append(f" · {self._key('review.override')}: override", style="dim")
        if self.opening or (self.busy and self._loading_marked):
            t.append("  loading…", style="italic")
        line2 = Text(no_wrap=True, overflow="ellipsis", end="")
        if self.counts:
            line2.append(" · ".join(f"{self.counts[k]:,} {k}" for k in STATUSES))
            if self.counts.get("automatic"):
                line2.append(f" ({self.counts['automatic']:,} automatic)", style="dim")
            line2.append(" │ ")
        line2.append(f"session {self.stats.decisions}")
        if self.stats.undos:
            line2.append(f" ({self.stats.undos} undone)")
        line2.append(f" · {self.stats.rate_per_minute():.1f}/min")
        desc = self.flt.describe()
        if self.order is not None:
            line2.append(" │ ", style="dim")
            line2.append_text(plain(self.order.describe(), 80))
        elif desc:
            line2.append(" │ filter: ", style="dim")
            line2.append_text(plain(desc, 80))
        out = Text("\n", end="", no_wrap=True, overflow="ellipsis").join([t, line2])   # one line each, cut
        if self.note:
            out.append("\n")
            out.append_text(plain(self.note, 200))
        key = text_key(out)
        if key != self._status_key:
            status = self.query_one("#status", Static)
            # the status is 2 lines, 3 with a note: only a change of that height needs a layout of the screen
            status.update(out, layout=self._status_key is None or key[0].count("\n") != self._status_key[0].count("\n"))
            self._status_key = key

    # --- counts ------------------------------------------------------------------------------------------

    def _refresh_counts(self) -> None:
        """Re-count only when another connection committed (data_version of our own connection ignores our own
        decisions, which `_adjust_counts` applies as they are made)."""
        if not self._counts_running and not self.busy and self.is_current:
            self._counts_running = True
            self._run(self._load_counts())

    async def _load_counts(self) -> None:
        try:
            version = await self.runner.run(data_version)
            if version != self._version or self.counts is None:
                self._version = version
                self.counts = await self.runner.run(review.counts, self.flt.dataset_id)
                if not self.busy:
                    self._draw_status()
        finally:
            self._counts_running = False

    def _adjust_counts(self, before: dict, after: dict) -> None:
        if self.counts is None or "status" not in before or "status" not in after:
            return
        self.counts[before["status"]] = self.counts.get(before["status"], 0) - 1
        self.counts[after["status"]] = self.counts.get(after["status"], 0) + 1

    # --- actions -------------------------------------------------------------------------------------

    # Keys that change the sample go through one queue, applied in order: a key typed while the previous one is
    # still being committed applies to the sample that step leads to (the one the curator typed ahead for),
    # never dropped and never applied twice. A refused step (another session's decision, a store error) empties
    # the queue: the keys after it were meant for samples the curator has not seen the outcome of.
    QUEUED = {"accept", "reject", "skip", "undo", "next", "prev", "first_pending"}

    def _enqueue(self, action: str) -> None:
        self.queue.append(action)
        self.typed += 1
        self.queue_peak = max(self.queue_peak, len(self.queue))
        if not self.busy and not self.opening:
            self._drain()

    def _drain(self) -> None:
        if self.queue and not self.busy:
            self.busy = True
            self.note = ""
            self._loading_marked = False
            self.run_worker(self._drain_queue(), group="review")

    async def _drain_queue(self) -> None:
        try:
            while self.queue and self.is_attached:
                action = self.queue.popleft()
                self._t0 = time.perf_counter()
                self._loading_timer = self.set_timer(LOADING_MARK_SECONDS, self._mark_loading)
                try:
                    await self._step(action)
                except Exception as e:  # noqa: BLE001 - reported on screen, not swallowed
                    await self._refused(action, e)
                finally:
                    self._loading_timer.stop()
                    self._t0 = None
        finally:
            self.busy = False
            if self._loading_marked:
                self._loading_marked = False
                self._draw_status()

    async def _refused(self, action: str, e: Exception) -> None:
        """A step that failed committed nothing; say so, and drop (and count) the keys typed after it."""
        dropped = len(self.queue)
        self.queue.clear()
        msg = str(e) if isinstance(e, review.DecisionConflict) else f"error: {type(e).__name__}: {e}"
        if dropped:
            msg += f" · {dropped} key{'s' if dropped > 1 else ''} typed after {action} not applied"
        self.note = msg
        self.app.notify(plain(msg, 300).plain, severity="error", timeout=10)
        self._draw_status()
        if isinstance(e, review.DecisionConflict) and self.sample is not None:   # show what the other one decided
            self._show(await self.runner.run(review.goto, self.flt, "id", self.sample["id"]), msg)

    async def _step(self, action: str) -> None:
        if action in ("accept", "reject", "skip"):
            await self._decide(action)
        elif action == "undo":
            await self._undo()
        elif action == "next":
            await self._move("next", "last sample in this filter")
        elif action == "prev":
            await self._move("prev", "first sample in this filter")
        else:
            await self._move("first_pending", "no pending sample in this filter")

    def _begin(self, needs_sample: bool = True) -> bool:
        """A one-off change (search, filter, edit) when no queued step is in flight; keys typed meanwhile wait."""
        if self.busy or self.opening or (needs_sample and self.sample is None):
            return False
        self.busy = True
        self._t0 = time.perf_counter()
        self.note = ""
        self._loading_marked = False
        self._loading_timer = self.set_timer(LOADING_MARK_SECONDS, self._mark_loading)
        return True

    def _finish(self) -> None:
        self.busy = False
        self._t0 = None
        self._loading_timer.stop()
        if self._loading_marked:
            self._loading_marked = False
            self._draw_status()
        self._drain()

    def _mark_loading(self) -> None:
        if self.busy:
            self._loading_marked = True
            self._draw_status()

    def _run(self, coro) -> None:
        self.run_worker(self._reporting(coro), group="review")

    async def _reporting(self, coro) -> None:
        """A store error (a sample deleted meanwhile, a lock held past the busy timeout, a full disk) is shown and
        the curator keeps working; it never takes the app down. Nothing was committed for the failed step."""
        try:
            await coro
        except Exception as e:  # noqa: BLE001 - reported on screen, not swallowed
            self.note = str(e) if isinstance(e, review.DecisionConflict) else f"error: {type(e).__name__}: {e}"
            self.app.notify(self.note, severity="error", timeout=10)
            self._draw_status()

    async def _goto(self, how: str, ref: int | None) -> dict | None:
        """The sample `how` (next | prev | first_pending | id) from `ref`: in Browse's order when entered from
        Browse, else in id order within the filter."""
        if self.order is None:
            return await self.runner.run(review.goto, self.flt, how, ref)
        stay = how == "id" and self.sample is not None and ref == self.sample["id"] and self.order_key is not None
        sample, key = await self.runner.run(review.goto_ordered, self.order, how, self.order_key, ref, self.flt)
        if sample is not None and not stay:   # the same sample redrawn keeps its place in the walk
            self.order_key = key
        return sample

    def action_accept(self) -> None:
        self._enqueue("accept")

    def action_reject(self) -> None:
        self._enqueue("reject")

    def action_skip(self) -> None:
        self._enqueue("skip")

    async def _decide(self, action: str) -> None:
        if self.sample is None:
            self._show(None, f"nothing to {action}")
            return
        sid = self.sample["id"]
        error = None
        if self.order is None:      # one runner trip: under load each trip can cost more than the queries
            d, nxt, error = await self.runner.run(_decide_then_next, sid, action, self.session,
                                                  self.sample.get("seen"), self.flt)
        else:
            d = await self.runner.run(review.decide, sid, action, self.session, seen=self.sample.get("seen"))
        self.decided += 1
        self.stats.record(action)
        self._adjust_counts(d["before"], d["after"])
        if error is not None:
            raise error
        if self.order is not None:
            nxt = await self._goto("next", sid)
        if nxt is None:  # end of the filter: stay, showing the new status
            nxt = await self._goto("id", sid)
            self._show(nxt, f"{action}ed #{sid}: that was the last sample in this filter "
                            f"({self._key('review.first_pending')}: first pending)")
        else:
            self._show(nxt)

    def action_override(self) -> None:
        if self.sample is not None and not self.sample.get("automatic"):
            if not (self.busy or self.opening):
                self._show(self.sample, "nothing automatic to override on this sample")
            return
        if self._begin():
            self._run(self._override())

    async def _override(self) -> None:
        try:
            sid = self.sample["id"]
            was_run = self.sample["automatic"]["source"] in ("filter", "dedup")
            d = await self.runner.run(review.override, sid, self.session)   # committed: a curator's accept
            self.stats.record("accept")
            self._adjust_counts(d["before"], d["after"])
            if was_run and self.counts and self.counts.get("automatic"):
                self.counts["automatic"] -= 1
            sample = await self._goto("id", sid)
            self._show(sample, f"kept #{sid} over the automatic verdict ({self._key('review.undo')}: undo)")
        finally:
            self._finish()

    def action_undo(self) -> None:
        self._enqueue("undo")

    async def _undo(self) -> None:
        u = await self.runner.run(review.undo, self.session, self.flt.dataset_id)
        if u is None:
            self._show(self.sample, "nothing left to undo")
            return
        self.stats.record("undo")
        self._adjust_counts(u["before"], u["after"])
        self._version = None   # an undone override makes a rejection automatic again: recount at the next tick
        sample = await self._goto("id", u["sample_id"])
        self._show(sample, f"undid {u['undid']} of #{u['sample_id']}")

    def action_next(self) -> None:
        self._enqueue("next")

    def action_prev(self) -> None:
        self._enqueue("prev")

    def action_first_pending(self) -> None:
        self._enqueue("first_pending")

    async def _move(self, how: str, at_end: str) -> None:
        if how != "first_pending" and self.sample is None:
            return
        ref = self.sample["id"] if self.sample else None
        nxt = await self._goto(how, ref)
        if nxt is None:
            self._show(self.sample, at_end)
        else:
            self._show(nxt)

    def _show_field(self, w: Block, value: str, size: int | None) -> None:
        """A field from the current page on (`offset`; a field shorter than that is shown from its start)."""
        off = self.page_offset if len(value) > self.page_offset else 0
        if off:
            size = None if size is None else size - len(value[:off].encode("utf-8", "surrogatepass"))
            w.heading += f" · from character {off + 1:,}"
            value = value[off:]
        args = (w.heading, value, self.limit, self.show_invisible, size, self.more_hint)
        w.fill(args, partial(titled_text, *args))

    def action_more(self) -> None:
        """More of long fields: 4k, then 16k characters, then the next 16k page of the 64 KB loaded; the whole text
        is for the pager. A page is at most PAGE_CHARS so that drawing it never stalls the screen."""
        if self.sample is None:
            return
        if self.limit < PAGE_CHARS:
            self.limit = min(self.limit * MORE_FACTOR, PAGE_CHARS)
        else:
            longest = max([len(self.sample.get(f) or "") for f in self.TEXT_FIELDS] + [0])
            if self.page_offset + PAGE_CHARS >= longest:
                self.notify(f"that is all of the first {PREVIEW_BYTES:,} bytes loaded; "
                            f"{self._key('review.pager')}: open the whole sample in $PAGER")
                return
            self.page_offset += PAGE_CHARS
        self._draw_sample(self.sample)

    def action_pager(self) -> None:
        if self.sample is not None:
            self.run_worker(self.app.page_text(sample_text_parts, self.sample["id"]), group="pager")

    def action_toggle_invisible(self) -> None:
        """Show zero-width characters (ZWJ, ZWNJ, ZWSP, LRM, ...) as <U+200D> markers, or draw them as they are."""
        self.show_invisible = not self.show_invisible
        if self.sample is not None:
            self._draw_sample(self.sample)

    def action_page_down(self) -> None:
        self.body.complete()      # the whole sample's height, before scrolling by it
        self.body.scroll_page_down(animate=False)

    def action_page_up(self) -> None:
        self.body.complete()
        self.body.scroll_page_up(animate=False)

    def action_back(self) -> None:
        if len(self.app.screen_stack) > 2:
            self.app.pop_screen()
        else:
            self.app.switch_screen(self.app.make_screen("datasets"))

    # search / filter / edit: dialogs, then one store round trip

    def action_search(self) -> None:
        if not (self.busy or self.opening):
            self.app.push_screen(SearchDialog(self.flt.search), self._search_done)

    def _search_done(self, query: str | None) -> None:
        if query is None:
            return
        flt = Filter.from_dict({**self.flt.to_dict(), "search": query or None, "dataset_id": self.flt.dataset_id})
        if self._begin(needs_sample=False):
            self._run(self._apply_filter(flt))

    def action_filter(self) -> None:
        if not (self.busy or self.opening):
            self._run(self._open_filter())

    async def _open_filter(self) -> None:
        facets = await self.bg.run(review.facets, self.flt.dataset_id)
        self.app.push_screen(FilterDialog(self.flt, facets), self._filter_done)

    def _filter_done(self, flt: Filter | None) -> None:
        if flt is not None and self._begin(needs_sample=False):
            self._run(self._apply_filter(flt))

    async def _apply_filter(self, flt: Filter) -> None:
        try:
            sample = await self.runner.run(review.goto, flt, "first")
            if sample is None:
                self._show(self.sample, f"nothing matches {flt.describe() or 'that filter'}; filter unchanged")
                return
            if flt.dataset_id != self.flt.dataset_id:
                self.dataset_name = sample["dataset"] if flt.dataset_id is not None else None
                self.app.current_dataset = self.dataset_name or self.app.current_dataset
            if flt.dataset_id != self.flt.dataset_id:
                self.counts = None
            self.flt = flt
            left = self.order is not None
            self.order = self.order_key = None   # a filter or search of Review's own: walk it in id order
            self._show(sample, "left Browse's order: walking this filter in id order" if left else None)
        finally:
            self._finish()

    def action_swap(self) -> None:
        if self.sample is not None and self.sample.get("rejected") is None:
            self.notify("not a pair: nothing to swap", severity="warning")
            return
        if self._begin():
            self._run(self._swap())

    async def _swap(self) -> None:
        try:
            sid = self.sample["id"]
            await self.runner.run(review.swap, sid, self.session, seen=self.sample.get("seen"))   # committed, undoable
            self.stats.record("swap")
            sample = await self._goto("id", sid)
            self._show(sample, f"swapped chosen and rejected of #{sid} ({self._key('review.undo')}: undo)")
        finally:
            self._finish()

    def action_edit(self) -> None:
        if self.busy or self.opening or self.sample is None:
            return
        from .edit_dialog import EditDialog
        self.app.push_screen(EditDialog(self.sample), self._edit_done)

    def _edit_done(self, changes: dict | None) -> None:
        if changes and self._begin():
            self._run(self._save_edit(changes))

    async def _save_edit(self, changes: dict) -> None:
        try:
            sid = self.sample["id"]
            d = await self.runner.run(review.edit, sid, changes, self.session, seen=self.sample.get("seen"))
            if d is not None:
                self.stats.record("edit")
            sample = await self._goto("id", sid)
            self._show(sample, f"edited {', '.join(d['after'])} of #{sid}" if d else "no change to save")
        finally:
            self._finish()

