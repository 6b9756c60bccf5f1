"""Every key counts: keys typed ahead of a slow store are applied in order to the samples they were meant for, and a
decision on a sample another session changed after it was shown is refused, naming that decision."""
from __future__ import annotations

import time

import pytest

from screens.review import ReviewScreen
from workbench import review
from workbench.samples import insert_samples
from workbench.store import ensure_dataset, open_store, transaction

from pilotkit import wait_for
from test_app_review import SIZE, app_for, peek, review_ready, status_of

N = 12


def type_ahead(app, keys: str) -> None:
    """Deliver keys the way a terminal does when the curator types faster than the screen answers."""
    from textual import events
    for k in keys:
        event = events.Key(k, k)
        event.set_sender(app)
        app._driver.send_message(event)


@pytest.fixture
def store(db_path):
    conn = open_store(db_path)
    with transaction(conn):
        did = ensure_dataset(conn, "main")
        first, last = insert_samples(conn, did, [{"instruction": f"q{i}", "response": f"r{i}"} for i in range(N)])
    conn.close()
    return {"ids": list(range(first, last + 1)), "db": db_path}


def model(ids: list[int], keys: str) -> list[tuple[int, str]]:
    """What the keys mean, applied one after another from the first sample: the decision log they should make."""
    pos, log, live = 0, [], []          # live: indexes into log of decisions not undone yet
    for k in keys:
        if k in "axs":
            log.append((ids[pos], {"a": "accept", "x": "reject", "s": "skip"}[k]))
            live.append(len(log) - 1)
            pos = min(pos + 1, len(ids) - 1)
        elif k == "j":
            pos = min(pos + 1, len(ids) - 1)
        elif k == "k":
            pos = max(pos - 1, 0)
        elif k == "u" and live:
            sid = log[live.pop()][0]
            log.append((sid, "undo"))
            pos = ids.index(sid)
    return log


KEYS = "aaxsjjaxkkauuaxsaaxjsaxkaxxa"   # decisions, moves and undos, ending past the last sample


async def test_keys_typed_ahead_of_a_slow_store_are_all_applied_in_order(store, monkeypatch):
    ids, db = store["ids"], store["db"]
    real_decide = review.decide

    def slow_decide(*a, **kw):
        time.sleep(0.03)                 # a store slower than the typist: keys pile up in the queue
        return real_decide(*a, **kw)
    monkeypatch.setattr(review, "decide", slow_decide)
    app = app_for(store)
    async with app.run_test(size=SIZE) as pilot:
        screen = await review_ready(pilot)
        type_ahead(app, KEYS)            # a burst, as a terminal delivers it: no waiting between keys
        await wait_for(pilot, lambda: screen.typed == len(KEYS))
        assert screen.queue_peak > 5, "the keys must have been typed ahead of the store"
        await wait_for(pilot, lambda: not screen.busy and not screen.queue)
        await pilot.pause()
        expected = model(ids, KEYS)
        assert peek(db, "SELECT sample_id, action FROM decisions ORDER BY id") == expected
        assert screen.typed == len(KEYS)
        assert screen.decided == sum(1 for k in KEYS if k in "axs")
        assert "not applied" not in screen.note and "error" not in screen.note


async def test_keys_typed_while_the_screen_opens_are_kept(store, monkeypatch):
    import threading
    ids, db = store["ids"], store["db"]
    real_open = review.open_view
    gate = threading.Event()

    def slow_open(*a, **kw):
        gate.wait(10)                    # the store is slow to answer the first query
        return real_open(*a, **kw)
    monkeypatch.setattr(review, "open_view", slow_open)
    app = app_for(store)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ReviewScreen) and app.screen.is_mounted)
        screen = app.screen
        type_ahead(app, "axa")
        await wait_for(pilot, lambda: screen.typed == 3)
        assert screen.opening and screen.sample is None and len(screen.queue) == 3
        gate.set()
        await wait_for(pilot, lambda: not screen.opening and not screen.busy and not screen.queue)
        assert peek(db, "SELECT sample_id, action FROM decisions ORDER BY id") == \
            [(ids[0], "accept"), (ids[1], "reject"), (ids[2], "accept")]


async def test_a_decision_on_a_sample_another_session_decided_is_refused_and_named(store):
    ids, db = store["ids"], store["db"]
    app = app_for(store)
    async with app.run_test(size=SIZE) as pilot:
        screen = await review_ready(pilot)
        assert screen.sample["id"] == ids[0]
        other = open_store(db)                          # another Review window (same curator, even)
        theirs = review.decide(other, ids[0], "reject", screen.session)
        other.close()
        type_ahead(app, "aax")                          # the 2nd and 3rd were for the samples after it
        await wait_for(pilot, lambda: not screen.busy and not screen.queue)
        await pilot.pause()
        assert status_of(db, ids[0]) == "rejected"       # theirs stands
        assert peek(db, "SELECT id, sample_id, action FROM decisions ORDER BY id") == \
            [(theirs["id"], ids[0], "reject")]
        note = screen.note
        assert f"decision {theirs['id']}" in note and "reject" in note and "not applied" in note
        assert "2 keys typed after accept not applied" in note
        assert screen.sample["id"] == ids[0] and screen.sample["status"] == "rejected"   # shown as it now is
        await pilot.press("a")                          # now that it was shown: the curator's call
        await wait_for(pilot, lambda: not screen.busy and not screen.queue)
        assert status_of(db, ids[0]) == "accepted"


def test_decide_edit_and_undo_compare_and_set(db_path):
    conn = open_store(db_path)
    with transaction(conn):
        did = ensure_dataset(conn, "d")
        first, _ = insert_samples(conn, did, [{"instruction": "i", "response": "r"}, {"instruction": "j"}])
    me, them = "review:me", "review:them"
    seen = review.load_sample(conn, first)["seen"]
    assert seen == 0
    review.decide(conn, first, "skip", them)                       # a visit changes nothing: no conflict
    d = review.decide(conn, first, "accept", me, seen=seen)
    seen = review.load_sample(conn, first)["seen"]
    assert seen == d["id"]
    theirs = review.edit(conn, first, {"response": "theirs"}, them, seen=seen)
    with pytest.raises(review.DecisionConflict, match=rf"decision {theirs['id']}, edit by review:them"):
        review.edit(conn, first, {"response": "mine"}, me, seen=seen)
    with pytest.raises(review.DecisionConflict):
        review.decide(conn, first, "reject", me, seen=seen)
    assert review.load_sample(conn, first)["response"] == "theirs"
    # undo of my accept would revert their later edit's sample state: refused, naming their edit
    with pytest.raises(review.DecisionConflict, match=f"decision {theirs['id']}"):
        review.undo(conn, me)
    assert review.load_sample(conn, first)["status"] == "accepted"
    # my own undo chain is no conflict: decide, change my mind, undo twice
    second = first + 1
    a = review.decide(conn, second, "accept", me, seen=review.load_sample(conn, second)["seen"])
    review.decide(conn, second, "reject", me, seen=a["id"])
    assert review.undo(conn, me)["undid"] == "reject"
    assert review.undo(conn, me)["undid"] == "accept"
    assert review.load_sample(conn, second)["status"] == "pending"
    conn.close()
