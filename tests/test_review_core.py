"""Review core: append-only decisions, repeatable undo (also from a new connection), edits with FTS, navigation."""
from __future__ import annotations

import orjson
import pytest

from workbench import review, scores
from workbench.review import Filter
from workbench.samples import get_sample, insert_samples
from workbench.store import ensure_dataset, fts_sync, open_store, transaction

SESSION = "review:tester"


def make_rows(n, **extra):
    return [{"instruction": f"instruction {i}", "response": f"response {i}", **extra} for i in range(n)]


@pytest.fixture
def ds(conn):
    with transaction(conn):
        did = ensure_dataset(conn, "main")
        first, last = insert_samples(conn, did, make_rows(5, task_type="qa", domain="math"))
        other = ensure_dataset(conn, "other")
        insert_samples(conn, other, make_rows(3, task_type="code"))
    return did, list(range(first, last + 1))


def status(conn, sid):
    return conn.execute("SELECT status FROM samples WHERE id = ?", (sid,)).fetchone()[0]


def decisions(conn):
    return conn.execute("SELECT id, sample_id, action, before, after, undoes FROM decisions ORDER BY id").fetchall()


def test_decide_commits_and_logs_before_and_after(conn, db_path, ds):
    did, ids = ds
    d = review.decide(conn, ids[0], "accept", SESSION)
    assert d["before"] == {"status": "pending"} and d["after"] == {"status": "accepted"}
    other = open_store(db_path)  # another connection sees it at once: committed, not pending in a transaction
    assert status(other, ids[0]) == "accepted"
    review.decide(conn, ids[1], "reject", SESSION)
    review.decide(conn, ids[2], "skip", SESSION)
    assert [status(other, i) for i in ids[:3]] == ["accepted", "rejected", "pending"]
    rows = decisions(other)
    assert [r[2] for r in rows] == ["accept", "reject", "skip"]
    assert orjson.loads(rows[2][3]) == orjson.loads(rows[2][4]) == {"status": "pending"}
    other.close()
    with pytest.raises(ValueError):
        review.decide(conn, ids[0], "approve", SESSION)
    with pytest.raises(KeyError):
        review.decide(conn, 10_000, "accept", SESSION)


def test_undo_walks_back_through_the_session_and_never_deletes(conn, db_path, ds):
    did, ids = ds
    review.decide(conn, ids[0], "accept", SESSION)
    review.decide(conn, ids[1], "reject", SESSION)
    review.decide(conn, ids[1], "accept", SESSION)   # changed their mind on the same sample
    review.decide(conn, ids[4], "accept", "review:someone-else")
    n_before = len(decisions(conn))

    u1 = review.undo(conn, SESSION)
    assert (u1["sample_id"], u1["undid"]) == (ids[1], "accept") and status(conn, ids[1]) == "rejected"
    # a restart: a brand-new connection continues the same undo chain
    conn2 = open_store(db_path)
    u2 = review.undo(conn2, SESSION)
    assert (u2["sample_id"], u2["undid"]) == (ids[1], "reject") and status(conn2, ids[1]) == "pending"
    u3 = review.undo(conn2, SESSION)
    assert u3["sample_id"] == ids[0] and status(conn2, ids[0]) == "pending"
    assert review.undo(conn2, SESSION) is None
    assert status(conn2, ids[4]) == "accepted"           # other curators' decisions untouched
    rows = decisions(conn2)
    assert len(rows) == n_before + 3                       # append-only: three undo rows added, nothing deleted
    assert [r[5] for r in rows[-3:]] == [rows[2][0], rows[1][0], rows[0][0]]
    conn2.close()


def test_undo_can_be_scoped_to_a_dataset(conn, ds):
    did, ids = ds
    other_id = conn.execute("SELECT min(id) FROM samples WHERE dataset_id != ?", (did,)).fetchone()[0]
    review.decide(conn, ids[0], "accept", SESSION)
    review.decide(conn, other_id, "reject", SESSION)
    u = review.undo(conn, SESSION, dataset_id=did)
    assert u["sample_id"] == ids[0]
    assert status(conn, other_id) == "rejected"


def test_edit_keeps_the_original_updates_hash_fts_and_undo_restores(conn, ds):
    did, ids = ds
    fts_sync(conn)
    sid = ids[2]
    old_hash = conn.execute("SELECT content_hash FROM samples WHERE id = ?", (sid,)).fetchone()[0]
    d = review.edit(conn, sid, {"response": "a brand new zebra answer", "instruction": "instruction 2"}, SESSION)
    assert d["before"] == {"response": "response 2"} and d["after"] == {"response": "a brand new zebra answer"}
    row = conn.execute("SELECT response, response_len, content_hash FROM samples WHERE id = ?", (sid,)).fetchone()
    assert row[0] == "a brand new zebra answer" and row[1] == len(row[0]) and row[2] != old_hash
    assert review.next_id(conn, Filter(search="zebra"), 0) == sid
    assert not review.matches(conn, Filter(search="response"), sid)   # the old text left the index
    assert review.edit(conn, sid, {"response": "a brand new zebra answer"}, SESSION) is None  # no change, no row
    with pytest.raises(ValueError):
        review.edit(conn, sid, {"status": "accepted"}, SESSION)

    u = review.undo(conn, SESSION)
    assert u["undid"] == "edit"
    row = conn.execute("SELECT response, content_hash FROM samples WHERE id = ?", (sid,)).fetchone()
    assert row == ("response 2", old_hash)
    assert review.next_id(conn, Filter(search="zebra"), 0) is None
    assert review.matches(conn, Filter(search="response"), sid)


def test_edit_into_a_copy_flags_the_duplicate(conn, ds):
    did, ids = ds
    review.edit(conn, ids[3], {"instruction": "instruction 0", "response": "response 0"}, SESSION)
    assert conn.execute("SELECT dup_of FROM samples WHERE id = ?", (ids[3],)).fetchone()[0] == ids[0]


def test_editing_the_first_of_a_duplicate_group_repoints_the_others(conn, ds):
    did, ids = ds
    first, copy, other = ids[0], ids[4], ids[2]
    review.edit(conn, copy, {"instruction": "instruction 0", "response": "response 0"}, SESSION)

    def dup_of(sid):
        return conn.execute("SELECT dup_of FROM samples WHERE id = ?", (sid,)).fetchone()[0]
    assert (dup_of(first), dup_of(copy)) == (None, first)
    # the original now reads like `other`: its old copy is no longer a duplicate of anything, and `other`, later
    # than it, becomes its duplicate
    review.edit(conn, first, {"instruction": "instruction 2", "response": "response 2"}, SESSION)
    assert (dup_of(first), dup_of(copy), dup_of(other)) == (None, None, first)
    review.undo(conn, SESSION)
    assert (dup_of(first), dup_of(copy), dup_of(other)) == (None, first, None)


def test_edit_of_conversation_turns_keeps_turns_and_mirrors(conn, ds):
    did, _ = ds
    turns = [{"role": "system", "content": "be kind"}, {"role": "user", "content": "q1"},
             {"role": "assistant", "content": "a1"}, {"role": "user", "content": "q2"},
             {"role": "assistant", "content": "a2"}]
    with transaction(conn):
        sid, _ = insert_samples(conn, did, [{"system": "be kind", "instruction": "q2", "response": "a2",
                                             "messages": turns}])
    edited = [dict(t) for t in turns]
    edited[2]["content"] = "a1, better"                  # a middle turn: no field mirrors it
    edited[3]["content"] = "q2, clearer"                 # the last user turn: the instruction follows
    review.edit(conn, sid, {"messages": edited}, SESSION)
    s = get_sample(conn, sid)
    assert s["messages"] == edited and (s["instruction"], s["response"], s["system"]) == ("q2, clearer", "a2",
                                                                                          "be kind")
    for bad in (edited[:-1], [*edited[:4], {"role": "user", "content": "a2"}], [*edited[:4], {"role": "assistant"}]):
        with pytest.raises(ValueError):
            review.edit(conn, sid, {"messages": bad}, SESSION)
    review.undo(conn, SESSION)
    s = get_sample(conn, sid)
    assert s["messages"] == turns and s["instruction"] == "q2"


def test_navigation_within_filters(conn, ds):
    did, ids = ds
    review.decide(conn, ids[1], "accept", SESSION)
    with transaction(conn):
        scores.record(conn, ids[3], "judge", 8.5, (1, 10))
        scores.record(conn, ids[4], "judge", 3, (1, 10))
        scores.record(conn, ids[2], "curate", 3, (1, 5))      # a 3 on another rubric is not a judge 3
    flt = Filter(dataset_id=did)
    assert review.first_id(conn, flt) == ids[0]
    assert review.next_id(conn, flt, ids[0]) == ids[1]
    assert review.prev_id(conn, flt, ids[1]) == ids[0]
    assert review.prev_id(conn, flt, ids[0]) is None
    assert review.next_id(conn, flt, ids[-1]) is None           # the other dataset's rows are outside the filter
    pending = Filter(dataset_id=did, status="pending")
    assert review.next_id(conn, pending, ids[0]) == ids[2]
    assert review.first_pending(conn, Filter(dataset_id=did, status="accepted")) == ids[0]
    assert review.first_id(conn, Filter(dataset_id=did, min_score="judge=8")) == ids[3]
    assert review.first_id(conn, Filter(dataset_id=did, min_score="judge=2", max_score="judge=4")) == ids[4]
    assert review.first_id(conn, Filter(dataset_id=did, max_score="curate=3")) == ids[2]
    with pytest.raises(ValueError, match="name the rubric"):
        Filter(dataset_id=did, min_score=8)
    with pytest.raises(ValueError, match="name the rubric"):
        Filter(dataset_id=did, min_score="8")
    assert review.first_id(conn, Filter(task_type="code")) > ids[-1]
    assert review.first_id(conn, Filter(dataset_id=did, domain="physics")) is None
    fts_sync(conn)
    assert review.first_id(conn, Filter(dataset_id=did, search="response 3")) == ids[3]
    assert review.next_id(conn, Filter(search="instruction"), ids[-1]) == ids[-1] + 1
    assert review.matches(conn, Filter(search="response 3"), ids[3])
    assert not review.matches(conn, Filter(search="response 3"), ids[2])
    assert Filter(search="  ").search is None                  # blank search = no search
    with pytest.raises(ValueError):
        Filter(status="maybe")
    assert review.facet_values(conn, "task_type") == ["code", "qa"]
    assert review.facet_values(conn, "domain", did) == ["math"]


def test_resume_position_round_trips_and_falls_back(conn, ds):
    did, ids = ds
    fts_sync(conn)
    flt = Filter(dataset_id=did, status="pending", search="response")
    assert review.start_id(conn, flt, did) == ids[0]
    review.decide(conn, ids[0], "accept", SESSION)
    assert review.start_id(conn, Filter(dataset_id=did), did) == ids[1]   # first pending
    review.save_position(conn, did, ids[3], flt)
    sid, saved = review.load_position(conn, did)
    assert sid == ids[3] and saved == flt
    assert review.start_id(conn, flt, did) == ids[3]
    assert review.load_position(conn, None) == (None, None)


def test_load_sample_with_judgments_candidates_and_lineage(conn, ds):
    did, ids = ds
    conn.execute("INSERT INTO jobs (kind, params, status, created_at) VALUES ('evol', '{}', 'done', 'now')")
    with transaction(conn):
        (child, _) = insert_samples(conn, did, [{
            "instruction": "evolved", "response": "r", "parent_id": ids[0], "job_id": 1,
            "origin": {"task": "evol_instruct", "model": "m-7b", "template": "evol/v1"}}])
    for judge, overall in (("judge-a", 7.0), ("judge-b", 5.5)):
        conn.execute("INSERT INTO judgments (sample_id, judge, rubric, rubric_version, scores, overall, rationale, "
                     "created_at) VALUES (?, ?, 'quality', '1', ?, ?, 'because', 'now')",
                     (child, judge, orjson.dumps({"clarity": 8, "quality": 6}).decode(), overall))
    conn.execute("INSERT INTO candidates (sample_id, model, response, created_at) VALUES (?, 'm-13b', 'alt', 'now')",
                 (child,))
    s = review.load_sample(conn, child)
    assert s["dataset"] == "main"
    assert [j["judge"] for j in s["judgments"]] == ["judge-a", "judge-b"]
    assert s["judgments"][0]["scores"] == {"clarity": 8, "quality": 6}
    assert s["candidates"][0]["model"] == "m-13b"
    lin = s["lineage"]
    assert lin["parent"]["id"] == ids[0] and lin["parent"]["instruction"] == "instruction 0"
    assert lin["job"] == {"id": 1, "kind": "evol", "status": "done"}
    assert lin["origin"]["model"] == "m-7b"
    assert review.load_sample(conn, 99_999) is None
    assert review.counts(conn, did) == {"pending": 6, "accepted": 0, "rejected": 0, "automatic": 0}


def test_session_stats_rate():
    t = [100.0]
    st = review.SessionStats(clock=lambda: t[0])
    for _ in range(6):
        t[0] += 10
        st.record("accept")
    st.record("undo")
    assert (st.decisions, st.undos) == (6, 1)
    assert st.rate_per_minute() == pytest.approx(6.0)   # 6 decisions in 60 s
    t[0] += 600                                          # idle: the window forgets them
    assert st.rate_per_minute() == 0.0


def test_counts_agree_before_and_after_folding_and_follow_decisions(conn, ds):
    from workbench.stats import fold
    did, ids = ds
    review.decide(conn, ids[0], "accept", SESSION)
    before = review.counts(conn, did)
    assert before == {"pending": 4, "accepted": 1, "rejected": 0, "automatic": 0}
    fold(conn)                                            # now read from the maintained counts
    assert review.counts(conn, did) == before
    review.decide(conn, ids[1], "reject", SESSION)        # triggers keep folded rows right
    review.undo(conn, SESSION)
    review.undo(conn, SESSION)
    assert review.counts(conn, did) == {"pending": 5, "accepted": 0, "rejected": 0, "automatic": 0}
    assert review.counts(conn, None)["pending"] == 8
    prog = {d["name"]: d for d in review.progress(conn)}
    assert prog["main"]["rows"] == 5 and prog["other"]["pending"] == 3


def test_editing_a_conversation_edits_the_mirrored_turns_and_undo_restores_them(conn, ds):
    did, ids = ds
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "first q"},
            {"role": "assistant", "content": "first a"}, {"role": "user", "content": "last q"},
            {"role": "assistant", "content": "last a"}]
    with transaction(conn):
        sid, _ = insert_samples(conn, did, [{"instruction": "last q", "response": "last a", "system": "be brief",
                                             "messages": msgs}])
        pref, _ = insert_samples(conn, did, [{"instruction": "p", "response": "chosen", "rejected": "worse",
                                              "messages": [{"role": "user", "content": "p"}]}])
    d = review.edit(conn, sid, {"response": "better last a", "system": "be kind"}, SESSION)
    assert d["before"]["messages"] == msgs
    stored = review.load_sample(conn, sid)
    assert stored["messages"][4]["content"] == "better last a" and stored["messages"][0]["content"] == "be kind"
    assert stored["messages"][2]["content"] == "first a"           # other turns untouched
    review.undo(conn, SESSION)
    assert review.load_sample(conn, sid)["messages"] == msgs
    # a preference row's messages are the prompt only: editing the chosen answer leaves them alone
    d = review.edit(conn, pref, {"response": "chosen, improved"}, SESSION)
    assert "messages" not in d["after"]
