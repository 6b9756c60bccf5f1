"""Redraws skipped when nothing changed (Review and Balance per key / per commit), and the Datasets screen hidden
under Review not re-counting every dataset each second: both were costs on Review's key path at 1M rows."""
from __future__ import annotations

import asyncio

from rich.text import Text
from textual.app import App

import screens.datasets as datasets_screen
from widgets.histogram import Histogram
from widgets.safe_text import titled_text
from widgets.sample_view import Block
from workbench import review, stats, store
from workbench.app import WorkbenchApp
from workbench.samples import insert_samples
from pilotkit import wait_for


class Holder(App):
    def compose(self):
        yield Histogram("task type", id="h")


def test_a_block_given_the_same_text_is_not_wrapped_again_but_any_change_of_text_or_style_is():
    b = Block("x")
    v = b.version
    b.set(Text("a", style="bold"))
    assert b.version == v + 1
    b.set(Text("a", style="bold"))                                      # the same again: nothing to redo
    assert b.version == v + 1
    for t in (Text("a", style="italic"), Text("a", style="italic", no_wrap=True)):   # Text == Text ignores style
        b.set(t)
    assert b.version == v + 3
    t = Text("ab")
    t.stylize("red", 0, 1)
    b.set(t)
    b.set(Text("ab"))                                                   # spans differ
    assert b.version == v + 5


def test_a_field_shown_again_is_not_rebuilt_but_any_change_is():
    b = Block("response")
    builds = []

    def show(*args):
        b.fill(args, lambda: (builds.append(args), titled_text(*args))[1])
        return b.hidden

    assert show("Response", "x" * 5000, 4000) == 1000
    assert show("Response", "x" * 5000, 4000) == 1000 and len(builds) == 1    # same: hidden still reported
    show("Response", "x" * 5000, 16000)                                       # more shown
    show("Response", "x" * 5000, 16000, True)
    show("Chosen response", "x" * 5000, 16000, True)
    show("Chosen response", "y\x1b[2J", 16000, True)                         # new text: built, still sanitized
    assert len(builds) == 5
    assert "␛" in b.text.plain and "\x1b" not in b.text.plain


async def test_a_histogram_given_the_same_bars_is_not_repainted(monkeypatch):
    async with Holder().run_test() as pilot:
        h = pilot.app.query_one("#h", Histogram)
        bars = stats.bars([("qa", 3), ("code", 1)])
        h.set_bars(bars, 4)
        await pilot.pause()
        refreshes = []
        monkeypatch.setattr(h, "refresh", lambda *a, **k: refreshes.append(k))
        h.set_bars(list(bars), 4)
        assert refreshes == []
        h.set_bars(stats.bars([("qa", 3), ("code", 2)]), 5)
        h.title = "task type (other)"
        h.set_bars(stats.bars([("qa", 3), ("code", 2)]), 5)                    # only the title changed
        assert len(refreshes) == 2


async def test_datasets_under_review_does_not_recount_while_hidden(db_path, monkeypatch):
    conn = store.open_store(db_path)
    with store.transaction(conn):
        did = store.ensure_dataset(conn, "main")
        insert_samples(conn, did, [{"instruction": f"q{i}", "response": "r"} for i in range(5)])
    calls = []
    real = datasets_screen.progress
    monkeypatch.setattr(datasets_screen, "progress", lambda c: (calls.append(1), real(c))[1])
    monkeypatch.setattr(datasets_screen, "POLL_SECONDS", 0.05)
    app = WorkbenchApp(db=db_path, dataset="main", screen="review")
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ReviewScreen" and app.screen.sample)
        await wait_for(pilot, lambda: app.screen_stack[1].loaded)
        before = len(calls)
        for i in range(3):                      # other connections commit: data_version changes each time
            with store.transaction(conn):
                insert_samples(conn, did, [{"instruction": f"new {i}"}])
            await asyncio.sleep(0.15)
        assert len(calls) == before             # hidden under Review: no re-count
        await pilot.press("escape")             # back to Datasets: it counts again, and shows the new rows
        await wait_for(pilot, lambda: type(app.screen).__name__ == "DatasetsScreen")
        await wait_for(pilot, lambda: app.screen.datasets and app.screen.datasets[0]["rows"] == 8)
        assert len(calls) > before
    conn.close()
    assert review.progress(store.open_store(db_path))[0]["rows"] == 8
