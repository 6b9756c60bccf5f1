"""Balance in the real app: histograms match the store, follow another process's commits with no key pressed,
switch scope and dataset, show targets with gaps, and draw untrusted labels literally."""
from __future__ import annotations


import pytest

from workbench import review, scores, store
from workbench.app import WorkbenchApp
from workbench.samples import insert_samples
from pilotkit import wait_for

HOSTILE = "[bold]x[/]\x1b[2J"




@pytest.fixture
def balance_store(db_path):
    conn = store.open_store(db_path)
    with store.transaction(conn):
        a = store.ensure_dataset(conn, "a")
        insert_samples(conn, a, [{"instruction": f"q{i}", "response": "r" * (i * 7), "task_type": "qa" if i % 4 else "code",
                                  "domain": "law", "status": "accepted" if i % 2 else "pending"} for i in range(40)])
        b = store.ensure_dataset(conn, "b")
        insert_samples(conn, b, [{"instruction": "other", "task_type": HOSTILE, "status": "rejected"}] * 10)
    yield conn
    conn.close()


def bars(app, dim):
    hist = app.screen.query_one(f"#hist-{dim}")
    return {b.label: b.count for b in hist.bars}


def drawn(app, dim) -> str:
    return app.screen.query_one(f"#hist-{dim}").render().plain


async def open_balance(pilot, app):
    await wait_for(pilot, lambda: type(app.screen).__name__ == "BalanceScreen" and app.screen.refreshes >= 1)
    return app.screen


async def test_histograms_match_the_store_and_follow_another_connection_without_input(balance_store, db_path):
    app = WorkbenchApp(db=db_path, screen="balance")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_balance(pilot, app)
        assert bars(app, "task_type") == {"qa": 30, "code": 10, HOSTILE: 10}
        assert bars(app, "status") == {"pending": 20, "accepted": 20, "rejected": 10}
        assert sum(bars(app, "response_len").values()) == 50
        assert bars(app, "score") == {"unscored": 50}

        # nothing committed: polls keep running but nothing is re-read
        before = screen.refreshes
        await pilot.pause(1.2)
        assert screen.refreshes == before

        # another connection (a CLI import, a worker) commits; no key is pressed
        with store.transaction(balance_store):
            insert_samples(balance_store, 1, [{"instruction": "new", "task_type": "poetry"}] * 7)
        await wait_for(pilot, lambda: bars(app, "task_type").get("poetry") == 7)
        with store.transaction(balance_store):                        # a judge job scores four samples
            balance_store.execute("UPDATE samples SET status = 'accepted' WHERE id <= 4")
            for sid in range(1, 5):
                scores.record(balance_store, sid, "judge", 8.5, (1, 10))
        await wait_for(pilot, lambda: bars(app, "status")["accepted"] == 22)
        assert bars(app, "score") == {"8": 4, "unscored": 53}
        assert screen.query_one("#hist-score").title.startswith("score: judge (1-10)")
        assert "57 rows" in str(screen.query_one("#status").render())


async def test_scope_and_dataset_keys(balance_store, db_path):
    app = WorkbenchApp(db=db_path, screen="balance")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_balance(pilot, app)
        await pilot.press("a")                                    # accepted only: no query, counts already held
        assert bars(app, "status") == {"accepted": 20}
        assert bars(app, "task_type") == {"qa": 20}
        await pilot.press("a")
        assert bars(app, "status")["rejected"] == 10
        await pilot.press("d", "space", "enter")                  # choose a
        await wait_for(pilot, lambda: screen.dataset == "a" and sum(bars(app, "status").values()) == 40)
        assert HOSTILE not in bars(app, "task_type")
        await pilot.press("d", "space", "down", "space", "enter")  # a off, b on
        await wait_for(pilot, lambda: sum(bars(app, "status").values()) == 10)
        await pilot.press("d", "a", "enter")                      # all of them: all datasets
        await wait_for(pilot, lambda: screen.dataset is None and sum(bars(app, "status").values()) == 50)
        await pilot.press("end", "home", "j", "k")                # scrolling the histograms by keys
        assert app.screen is screen


async def test_targets_show_a_marker_and_the_gap_per_bar(balance_store, db_path, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('[balance.targets.task_type]\nqa = 50\ncode = 30\nmath = 20\n')
    app = WorkbenchApp(db=db_path, config=config, dataset="a", screen="balance")
    async with app.run_test(size=(80, 24)) as pilot:
        await open_balance(pilot, app)
        hist = app.screen.query_one("#hist-task_type")
        by_label = {b.label: b for b in hist.bars}
        assert by_label["qa"].gap == pytest.approx(0.75 - 0.5)
        assert by_label["code"].gap == pytest.approx(0.25 - 0.3)
        assert by_label["math"].count == 0 and by_label["math"].gap == pytest.approx(-0.2)
        text = drawn(app, "task_type")
        assert "+25.0pt" in text and "-5.0pt" in text and "-20.0pt" in text
        assert "┃" in text or "│" in text


async def test_bad_targets_are_reported_not_fatal(balance_store, db_path, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('[balance.targets.colour]\nred = 1\n')
    app = WorkbenchApp(db=db_path, config=config, screen="balance")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_balance(pilot, app)
        assert "colour" in str(screen.query_one("#warning").render())


async def test_untrusted_labels_are_drawn_literally(balance_store, db_path):
    app = WorkbenchApp(db=db_path, screen="balance")
    async with app.run_test(size=(80, 24)) as pilot:
        await open_balance(pilot, app)
        text = drawn(app, "task_type")
        assert "[bold]x[/]" in text and "\x1b" not in text and "␛[2J" in text
        assert app.is_running


async def test_a_big_unfolded_batch_is_counted_once_then_shown(balance_store, db_path):
    from workbench import stats
    app = WorkbenchApp(db=db_path, screen="balance")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_balance(pilot, app)
        n = stats.FOLD_MIN_TAIL + 500
        with store.transaction(balance_store):          # e.g. `workbench import` of a big file
            insert_samples(balance_store, 2, [{"instruction": f"bulk {i}", "task_type": "bulk"} for i in range(n)])
        await wait_for(pilot, lambda: bars(app, "task_type").get("bulk") == n)
        assert stats.tail_rows(balance_store) == 0      # folded into the maintained counts by the screen
        assert not screen.query_one("#warning").display


async def test_score_rubrics_cycle_and_the_agreement_panel_follows_decisions(balance_store, db_path):
    with store.transaction(balance_store):
        for sid in range(1, 11):
            scores.record(balance_store, sid, "curate", 5 if sid <= 5 else 2, (1, 5))
            scores.record(balance_store, sid, "judge", 7, (1, 10))
    app = WorkbenchApp(db=db_path, screen="balance", dataset="a")
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await open_balance(pilot, app)
        assert screen.counts.rubric == "curate"                          # the primary rubric first
        assert bars(app, "score") == {"2": 5, "3": 0, "4": 0, "5": 5, "unscored": 30}
        panel = lambda: screen.query_one("#agreement").render().plain    # noqa: E731
        assert "n = 0" in panel() and "UNRELIABLE" in panel()
        # the curator decides in another process: the panel follows, no key pressed
        for sid in (1, 2, 3):
            review.decide(balance_store, sid, "accept", "review:t")
        for sid in (6, 7):
            review.decide(balance_store, sid, "reject", "review:t")
        # 5 decided: accepted all score 5, rejected all 2 -> AUC 1, best threshold 5 with accuracy 1
        await wait_for(pilot, lambda: "n = 5 (3 accepted)" in panel())
        assert "AUC 1.000" in panel() and "best threshold 5 (accuracy 1.000)" in panel()
        await pilot.press("s")                                           # next rubric: judge
        await wait_for(pilot, lambda: screen.counts.rubric == "judge")
        assert bars(app, "score") == {"7": 10, "unscored": 30}
        assert screen.query_one("#hist-score").title.startswith("score: judge (1-10)")
        await wait_for(pilot, lambda: "judge (1-10) vs curator decisions" in panel())
        assert "AUC 0.500" in panel()                                    # one score for all: ties, 1/2
        await pilot.press("s")
        await wait_for(pilot, lambda: screen.counts.rubric == "curate")
