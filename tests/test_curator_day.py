"""A curator's day (issue 16): Review in Browse's order, hh pairs read top-down, automatic rejections explained and
overridable, curator-only progress, help and footer, list keys. The real app driven by Pilot over a real store."""
from __future__ import annotations

import sqlite3

import pytest

from workbench import store
from workbench.app import WorkbenchApp
from workbench.samples import insert_samples

from pilotkit import wait_for


def peek(db_path, sql, params=()):
    c = sqlite3.connect(str(db_path))
    try:
        return c.execute(sql, params).fetchall()
    finally:
        c.close()


@pytest.fixture
def day_store(db_path):
    conn = store.open_store(db_path)
    with store.transaction(conn):
        did = store.ensure_dataset(conn, "d")
        insert_samples(conn, did, [{"instruction": f"question {i}", "response": f"answer {i} " + "r" * i,
                                    "task_type": "code" if i % 2 else "qa"} for i in range(40)])
    # scores that put the rows in an order unlike their ids
    conn.execute("UPDATE samples SET score = (id * 7) % 11")
    yield conn
    conn.close()


async def screen_named(pilot, name: str):
    await wait_for(pilot, lambda: type(pilot.app.screen).__name__ == name)
    return pilot.app.screen


async def review_settled(pilot):
    screen = await screen_named(pilot, "ReviewScreen")
    await wait_for(pilot, lambda: not screen.opening and not screen.busy and screen.sample is not None)
    await pilot.pause()
    return screen


async def test_review_from_browse_walks_browses_rows_in_its_order(day_store, db_path):
    app = WorkbenchApp(db=db_path, dataset="d", screen="browse")
    async with app.run_test(size=(120, 36)) as pilot:
        browse = await screen_named(pilot, "BrowseScreen")
        table = browse.table
        await wait_for(pilot, lambda: bool(table.rows))
        await pilot.press("o", "r")                                     # score, descending
        await pilot.press("slash", *"task:code", "enter")               # odd ids only
        await wait_for(pilot, lambda: not table.fetching and browse.total == 20)
        order = [r.data.id for r in table.rows]
        expected = [r[0] for r in day_store.execute(
            "SELECT id FROM samples WHERE task_type = 'code' ORDER BY score DESC, id DESC")]
        assert order == expected
        await pilot.press("j")
        await pilot.press("enter")
        review = await review_settled(pilot)
        assert review.sample["id"] == order[1]
        seen = [review.sample["id"]]
        await pilot.press("a")                       # decide: the next one in Browse's order
        await wait_for(pilot, lambda: not review.busy)
        seen.append(review.sample["id"])
        await pilot.press("j")
        await wait_for(pilot, lambda: not review.busy)
        seen.append(review.sample["id"])
        await pilot.press("k", "k")
        await wait_for(pilot, lambda: not review.busy)
        seen.append(review.sample["id"])
        assert seen == [order[1], order[2], order[3], order[1]]
        assert peek(db_path, "SELECT status FROM samples WHERE id = ?", (order[1],))[0][0] == "accepted"
        assert "Browse order" in str(review.query_one("#status").render())


async def test_hh_pairs_show_the_conversation_before_the_answers(db_path):
    conn = store.open_store(db_path)
    with store.transaction(conn):
        did = store.ensure_dataset(conn, "hh")
        insert_samples(conn, did, [{
            "instruction": "and then?", "response": "the chosen end", "rejected": "the rejected end",
            "messages": [{"role": "user", "content": "tell me a story"}, {"role": "assistant", "content": "once"},
                         {"role": "user", "content": "and then?"}]}])
    conn.close()
    app = WorkbenchApp(db=db_path, dataset="hh", screen="review")
    async with app.run_test(size=(120, 36)) as pilot:
        review = await review_settled(pilot)
        conv, chosen, rejected = (review.query_one(f"#{w}") for w in ("conversation", "response", "rejected"))
        assert conv.display and chosen.display and rejected.display
        assert conv.region.y < chosen.region.y < rejected.region.y
