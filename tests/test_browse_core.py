"""Keyset pagination for Browse: walking pages forward or backward, in any sort, lists exactly the matching rows in
order, with ties and NULLs, within one dataset or merged across all."""
import random

import pytest

from workbench import browse, store
from workbench.browse import Filter, Sort
from workbench.samples import insert_samples

VALUE = {"id": lambda r: r["id"], "score": lambda r: r["score"], "status": lambda r: r["status"],
         "task_type": lambda r: r["task_type"], "length": lambda r: r["instruction_len"] + r["response_len"]}


@pytest.fixture
def rows(conn):
    rng = random.Random(3)
    with store.transaction(conn):
        a = store.ensure_dataset(conn, "a")
        b = store.ensure_dataset(conn, "b")
        for did, n in ((a, 90), (b, 60), (a, 30)):   # interleaved ids across datasets
            insert_samples(conn, did, [{
                "instruction": f"{rng.choice(['borrow checker', 'tax law', 'poems'])} {i} " + "x" * rng.randint(0, 3),
                "response": "y" * rng.randint(0, 3),                      # few distinct lengths: many ties
                "task_type": rng.choice(["qa", "code", None]),
                "domain": rng.choice(["bio", "law"]),
                "status": rng.choice(store.STATUSES)} for i in range(n)])
    for (sid,) in conn.execute("SELECT id FROM samples").fetchall():
        conn.execute("UPDATE samples SET score = ? WHERE id = ?", (rng.choice([None, 3.0, 7.0, 7.5, 9.0]), sid))
    store.fts_sync(conn)
    cur = conn.execute("SELECT * FROM samples")
    names = [d[0] for d in cur.description]
    return conn, [dict(zip(names, r)) for r in cur.fetchall()], (a, b)


def expected(all_rows, flt: Filter, sort: Sort):
    def keep(r):
        return all([flt.dataset_id is None or r["dataset_id"] == flt.dataset_id,
                    flt.status is None or r["status"] == flt.status,
                    flt.task_type is None or r["task_type"] == flt.task_type,
                    flt.domain is None or r["domain"] == flt.domain,
                    flt.min_score is None or (r["score"] is not None and r["score"] >= flt.min_score),
                    flt.max_score is None or (r["score"] is not None and r["score"] <= flt.max_score),
                    flt.search is None or all(w in r["instruction"].split() for w in flt.search.split())])

    def order(r):
        v = VALUE[sort.key](r)
        return (0, 0, r["id"]) if v is None else (1, v, r["id"])
    return [r["id"] for r in sorted(filter(keep, all_rows), key=order, reverse=sort.descending)]


def walk_forward(conn, flt, sort, size):
    out, key = [], None
    while True:
        got = browse.page(conn, flt, sort, key, size)
        assert len(got) <= size
        if not got:
            return out
        out += [r.id for r in got]
        key = got[-1].key


def walk_backward(conn, flt, sort, size):
    out, key = [], None
    while True:
        got = browse.page(conn, flt, sort, key, size, backward=True)
        if not got:
            return out
        out = [r.id for r in got] + out
        key = got[0].key


FILTERS = [Filter(), Filter(status="accepted"), Filter(task_type="qa", min_score=7.0),
           Filter(max_score=7.5, domain="law"), Filter(search="borrow")]


@pytest.mark.parametrize("key", browse.SORT_KEYS)
@pytest.mark.parametrize("descending", [False, True])
def test_pages_walk_every_matching_row_in_order_both_ways(rows, key, descending):
    conn, all_rows, dids = rows
    sort = Sort(key, descending)
    for base in FILTERS:
        for did in (None, dids[0]):
            flt = Filter(**{**base.__dict__, "dataset_id": did})
            exp = expected(all_rows, flt, sort)
            assert exp, flt
            assert walk_forward(conn, flt, sort, 7) == exp, (flt, sort)
            assert walk_backward(conn, flt, sort, 5) == exp, (flt, sort)
            assert browse.count(conn, flt) == len(exp)


def test_a_page_continues_from_any_row_and_steps_back_to_it(rows):
    conn, all_rows, _ = rows
    sort = Sort("score", descending=True)
    exp = expected(all_rows, Filter(), sort)
    full = browse.page(conn, Filter(), sort, None, len(exp))
    assert [r.id for r in full] == exp
    for i in (0, 10, 57, len(exp) - 2):
        after = browse.page(conn, Filter(), sort, full[i].key, 4)
        assert [r.id for r in after] == exp[i + 1:i + 5]
        before = browse.page(conn, Filter(), sort, full[i].key, 4, backward=True)
        assert [r.id for r in before] == exp[max(0, i - 4):i]


def test_rows_carry_previews_and_lengths(conn):
    with store.transaction(conn):
        did = store.ensure_dataset(conn, "d")
        insert_samples(conn, did, [
            {"instruction": "[bold]x[/]" + "z" * 5000, "response": "ok"},
            {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}])
    first, second = browse.page(conn, Filter(dataset_id=did))
    assert first.instruction.startswith("[bold]x[/]") and len(first.instruction) == browse.PREVIEW_CHARS
    assert first.length == 5012 and first.response == "ok" and first.status == "pending"
    assert '"hi"' in second.instruction            # multi-turn rows preview their conversation


def test_bad_sort_or_status_is_refused():
    with pytest.raises(ValueError, match="sort"):
        Sort("colour")
    with pytest.raises(ValueError, match="status"):
        Filter(status="maybe")


def test_query_bar_reads_words_and_filters():
    ds = {"alpaca": 1, "my set": 2}
    f = browse.parse_query("borrow checker status:accepted task:qa domain:law score:7..10", ds, dataset_id=1)
    assert f == Filter(dataset_id=1, status="accepted", task_type="qa", domain="law", min_score=7.0,
                       max_score=10.0, search="borrow checker")
    assert browse.parse_query("dataset:'my set' score:..5", ds).dataset_id == 2
    assert browse.parse_query("score:..5", ds).max_score == 5.0 and browse.parse_query("score:6", ds).min_score == 6
    assert browse.parse_query("dataset:*", ds, dataset_id=1).dataset_id is None
    assert browse.parse_query("", ds, dataset_id=1) == Filter(dataset_id=1)
    for bad, msg in [("status:maybe", "status"), ("dataset:nope", "no such dataset"), ("score:high", "score"),
                     ("colour:red", "unknown filter"), ("'unclosed", "cannot read")]:
        with pytest.raises(ValueError, match=msg):
            browse.parse_query(bad, ds)


def test_search_results_follow_newly_indexed_rows(rows):
    conn, all_rows, (a, _) = rows
    flt = Filter(dataset_id=a, search="borrow")
    before = browse.count(conn, flt)
    assert before == len(walk_forward(conn, flt, Sort("score", True), 9))
    with store.transaction(conn):
        insert_samples(conn, a, [{"instruction": "borrow again"}])
    assert browse.count(conn, flt) == before          # not indexed yet
    store.fts_sync(conn)
    assert browse.count(conn, flt) == before + 1
    assert len(walk_forward(conn, flt, Sort("id"), 9)) == before + 1


@pytest.mark.parametrize("drive_from_hits", [0, 10_000])
def test_search_pages_are_right_whichever_way_sqlite_walks(rows, monkeypatch, drive_from_hits):
    conn, all_rows, (a, _) = rows
    monkeypatch.setattr(browse, "DRIVE_FROM_HITS", drive_from_hits)
    for key in browse.SORT_KEYS:
        for flt in (Filter(search="borrow"), Filter(dataset_id=a, search="tax", status="pending")):
            sort = Sort(key, descending=key == "score")
            exp = expected(all_rows, flt, sort)
            assert walk_forward(conn, flt, sort, 6) == exp and walk_backward(conn, flt, sort, 4) == exp
