"""Keyset pagination for Browse: walking pages forward or backward, in any sort, lists exactly the matching rows in
order, with ties and NULLs, within one dataset or merged across all."""
import random

import pytest

from workbench import browse, scores, store
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
    judged = {}
    with store.transaction(conn):
        for (sid,) in conn.execute("SELECT id FROM samples").fetchall():
            score = rng.choice([None, 3.0, 7.0, 7.5, 9.0])
            if score is not None:
                scores.record(conn, sid, "judge", score, (1, 10))
                judged[sid] = score
            scores.record(conn, sid, "curate", rng.choice([1, 5]), (1, 5))     # another rubric: never mixed in
        for sid in list(judged)[::7]:      # scores given before an edit: stale, outside filters and the sort
            conn.execute("UPDATE sample_scores SET stale = 1 WHERE sample_id = ? AND rubric = 'judge'", (sid,))
            del judged[sid]
    store.fts_sync(conn)
    cur = conn.execute("SELECT * FROM samples")
    names = [d[0] for d in cur.description]
    out = [dict(zip(names, r)) for r in cur.fetchall()]
    for r in out:
        r["score"] = judged.get(r["id"])
    return conn, out, (a, b)


def expected(all_rows, flt: Filter, sort: Sort):
    def keep(r):
        return all([flt.dataset_id is None or r["dataset_id"] == flt.dataset_id,
                    flt.status is None or r["status"] == flt.status,
                    flt.task_type is None or r["task_type"] == flt.task_type,
                    flt.domain is None or r["domain"] == flt.domain,
                    all(r["score"] is not None and (lo is None or r["score"] >= lo) and (hi is None or r["score"] <= hi)
                        for _, lo, hi in flt.scores.bounds),
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


def F(**kw) -> Filter:
    """A filter whose score column and sort are the judge's."""
    return Filter(rubric="judge", **kw)


FILTERS = [F(), F(status="accepted"), F(task_type="qa", scores=scores.build("judge=7")),
           F(scores=scores.build(maxs="judge=7.5"), domain="law"), F(search="borrow")]


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
    exp = expected(all_rows, F(), sort)
    full = browse.page(conn, F(), sort, None, len(exp))
    assert [r.id for r in full] == exp
    # each row carries all its scores, with scales, for the scores column
    assert {x["rubric"] for x in full[0].scores} >= {"curate"} and all(x["scale"] for x in full[0].scores)
    for i in (0, 10, 57, len(exp) - 2):
        after = browse.page(conn, F(), sort, full[i].key, 4)
        assert [r.id for r in after] == exp[i + 1:i + 5]
        before = browse.page(conn, F(), sort, full[i].key, 4, backward=True)
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
    present = {"judge": (1, 10), "curate": (1, 5), "judge.alignment": (1, 10)}
    f = browse.parse_query("borrow checker status:accepted task:qa domain:law score:judge=7..10", ds, dataset_id=1,
                           rubrics=present)
    assert f == Filter(dataset_id=1, status="accepted", task_type="qa", domain="law",
                       scores=scores.ScoreFilter((("judge", 7.0, 10.0),)), rubric="judge", search="borrow checker")
    assert browse.parse_query("dataset:'my set' score:curate=..5", ds).dataset_id == 2
    assert browse.parse_query("score:curate=..4", ds).scores.bounds == (("curate", None, 4.0),)
    assert browse.parse_query("score:curate=4", ds).scores.bounds == (("curate", 4.0, 4.0),)
    both = browse.parse_query("score:curate=4.. score:judge.alignment=..3 stale:include", ds, rubrics=present)
    assert both.scores == scores.ScoreFilter((("curate", 4.0, None), ("judge.alignment", None, 3.0)), True)
    assert both.rubric == "curate"                         # the first rubric named is the one shown and sorted by
    shown = browse.parse_query("score:judge", ds, rubrics=present)
    assert shown.rubric == "judge" and not shown.scores    # a rubric alone: shown, not filtered
    assert browse.parse_query("", ds, rubrics=present).rubric == "curate"      # scores.PRIMARY_ORDER
    assert browse.parse_query("dataset:*", ds, dataset_id=1).dataset_id is None
    assert browse.parse_query("", ds, dataset_id=1) == Filter(dataset_id=1)
    for bad, msg in [("status:maybe", "status"), ("dataset:nope", "no such dataset"),
                     ("score:high", "nothing is scored on .high.; rubrics present"), ("score:Judge=7", "not a rubric name"),
                     ("score:7..10", "name the rubric, e.g. score:curate=4..5.*rubrics present: curate, judge"),
                     ("score:6", "name the rubric"), ("score:judge=high", "not a number"),
                     ("score:judge=..", "a number or a range"), ("score:judge=9..7", "min 9 is above max 7"),
                     ("score:curate=7..", "outside curate's scale 1-5"), ("score:jugde=7..", "no sample in scope"),
                     ("score:jugde", "nothing is scored on 'jugde'"), ("stale:yes", "stale:include"),
                     ("colour:red", "unknown filter"), ("'unclosed", "cannot read")]:
        with pytest.raises(ValueError, match=msg):
            browse.parse_query(bad, ds, rubrics=present)


def test_search_results_follow_newly_indexed_rows(rows):
    conn, all_rows, (a, _) = rows
    flt = Filter(dataset_id=a, search="borrow")
    before = browse.count(conn, flt)
    assert before == len(walk_forward(conn, Filter(dataset_id=a, search="borrow", rubric="judge"), Sort("score", True), 9))
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
        for flt in (F(search="borrow"), F(dataset_id=a, search="tax", status="pending")):
            sort = Sort(key, descending=key == "score")
            exp = expected(all_rows, flt, sort)
            assert walk_forward(conn, flt, sort, 6) == exp and walk_backward(conn, flt, sort, 4) == exp


def test_a_score_bound_on_the_sorted_rubric_never_walks_the_unscored_rows(rows):
    """Sorted by the rubric a filter bounds, no unscored row can match: the pages must not scan for them (at 1M
    rows End took 70 s, reading every row of the dataset to find none)."""
    conn, all_rows, (a, _) = rows
    seen: list[str] = []
    conn.set_trace_callback(seen.append)
    try:
        for flt in (F(task_type="qa", scores=scores.build("judge=7")),
                    F(dataset_id=a, scores=scores.build(maxs="judge=7.5"))):
            for descending in (False, True):
                sort = Sort("score", descending)
                exp = expected(all_rows, flt, sort)
                assert exp and walk_forward(conn, flt, sort, 4) == exp and walk_backward(conn, flt, sort, 3) == exp
    finally:
        conn.set_trace_callback(None)
    walks = [q for q in seen if "FROM samples WHERE" in q and "NOT EXISTS" in q]
    assert not walks, walks[0]
    # and the score index walk starts at the bound instead of testing every lower score
    scored = [q for q in seen if "FROM sample_scores sc JOIN samples" in q]
    assert scored and all("sc.score >= 7" in q or "sc.score <= 7.5" in q for q in scored), scored[0]


def test_stale_scores_let_in_by_the_filter_are_still_listed(rows):
    """With stale:include a bound also matches stale scores, which the sort shows as unscored: those rows must
    still be walked (only a fresh-only bound may skip them)."""
    conn, all_rows, _ = rows
    stale = {r for (r,) in conn.execute("SELECT sample_id FROM sample_scores WHERE rubric = 'judge' AND stale = 1 "
                                        "AND score >= 7")}
    assert stale
    flt = F(scores=scores.build("judge=7", include_stale=True))
    for descending in (False, True):
        got = walk_forward(conn, flt, Sort("score", descending), 5)
        assert set(got) >= stale and len(got) == len(set(got))
        assert walk_backward(conn, flt, Sort("score", descending), 5) == got


def test_counts_by_dataset_and_status_follow_the_rows_folded_or_not(rows):
    """Such counts come from the maintained counts (plus the unfolded tail): right before and after folding and
    after decisions, edits of the status and deletes."""
    from workbench import stats
    conn, _, (a, b) = rows

    def check():
        for did in (None, a, b):
            for status in (None, *store.STATUSES):
                flt = Filter(dataset_id=did, status=status)
                where, params = flt.sql()
                assert browse.count(conn, flt) == conn.execute(f"SELECT count(*) FROM samples WHERE {where}",
                                                               params).fetchone()[0], flt
    check()
    stats.fold(conn, chunk=50)
    check()
    conn.execute("UPDATE samples SET status = 'accepted' WHERE id % 3 = 0")
    conn.execute("DELETE FROM samples WHERE id % 11 = 0")
    with store.transaction(conn):
        insert_samples(conn, b, [{"instruction": "late", "response": "row", "status": "rejected"}] * 4)
    check()


def test_a_search_in_id_order_pages_through_the_index_without_copying_every_match(rows):
    """In id order a page walks the search index's matches from the last key (a common word at 10M rows took
    ~2 s of CPU to copy into a match table before the first page); other sorts still use the match table."""
    conn, all_rows, (a, _) = rows
    tables = "SELECT count(*) FROM sqlite_temp_master WHERE name LIKE 'browse_hits_%'"
    for flt in (F(search="borrow"), F(dataset_id=a, search="tax", status="pending")):
        for descending in (False, True):
            exp = expected(all_rows, flt, Sort("id", descending))
            assert walk_forward(conn, flt, Sort("id", descending), 4) == exp
            assert walk_backward(conn, flt, Sort("id", descending), 3) == exp
    assert conn.execute(tables).fetchone()[0] == 0
    walk_forward(conn, F(search="borrow"), Sort("score", True), 4)
    assert conn.execute(tables).fetchone()[0] == 1


def test_a_common_word_sorted_by_score_copies_no_more_than_a_few_matches(rows, monkeypatch):
    """Past DRIVE_FROM_HITS matches a page asks the search index about each row of the sort's walk instead of
    copying every match first (8.7 s at 10M rows for a common word); the count still counts them all."""
    conn, all_rows, (a, _) = rows
    monkeypatch.setattr(browse, "DRIVE_FROM_HITS", 5)
    monkeypatch.setattr(browse, "WALK_DENSITY", 0.2)   # "borrow" is in about a third of the rows
    flt = F(search="borrow")
    copied = "SELECT coalesce(sum(n), 0) FROM temp.browse_hits"
    for key in ("score", "length", "status"):
        sort = Sort(key, descending=True)
        exp = expected(all_rows, flt, sort)
        assert len(exp) > 5 and walk_forward(conn, flt, sort, 6) == exp and walk_backward(conn, flt, sort, 4) == exp
        assert conn.execute(copied).fetchone()[0] == -1          # "more than 5", none kept
        rows_in_tables = sum(conn.execute(f"SELECT count(*) FROM temp.{name}").fetchone()[0] for (name,) in
                             conn.execute("SELECT name FROM sqlite_temp_master WHERE name LIKE 'browse_hits_%' "
                                          "AND type = 'table'").fetchall())
        assert rows_in_tables == 0
    assert browse.count(conn, flt) == len(expected(all_rows, flt, Sort()))
    assert walk_forward(conn, flt, Sort("score", True), 6) == expected(all_rows, flt, Sort("score", True))


def test_a_word_in_few_rows_is_copied_whole_past_the_first_matches(rows, monkeypatch):
    """Rarer than WALK_DENSITY, a word's matches are copied (all of them, past the first DRIVE_FROM_HITS):
    walking the sort's index would ask the search index about many rows per match."""
    conn, all_rows, _ = rows
    monkeypatch.setattr(browse, "DRIVE_FROM_HITS", 5)
    monkeypatch.setattr(browse, "WALK_DENSITY", 0.9)
    flt = F(search="borrow")
    sort = Sort("score", descending=True)
    exp = expected(all_rows, flt, sort)
    assert walk_forward(conn, flt, sort, 6) == exp and walk_backward(conn, flt, sort, 4) == exp
    assert conn.execute("SELECT sum(n) FROM temp.browse_hits").fetchone()[0] == len(exp)


@pytest.fixture
def sparse_short(conn):
    """A word in most rows but in few of the short ones (as a common word is among the shortest texts)."""
    rng = random.Random(5)
    with store.transaction(conn):
        did = store.ensure_dataset(conn, "d")
        insert_samples(conn, did, [{
            "instruction": ("alpha " if (long or rng.random() < 0.03) else "beta ") + "w " * (50 if long else 1),
            "response": "z" * rng.randint(0, 5),
            "status": rng.choice(store.STATUSES)} for long in [rng.random() < 0.6 for _ in range(600)]])
    store.fts_sync(conn)
    cur = conn.execute("SELECT * FROM samples")
    names = [d[0] for d in cur.description]
    return conn, [{**dict(zip(names, r)), "score": None} for r in cur.fetchall()], did


def forget_matches(conn) -> None:
    for (name,) in conn.execute("SELECT name FROM sqlite_temp_master WHERE type = 'table' AND name LIKE 'browse_hits%'"
                                ).fetchall():
        conn.execute(f"DROP TABLE temp.{name}")


def copied(conn) -> int | None:
    row = conn.execute("SELECT n FROM temp.browse_hits").fetchone()
    return row[0] if row else None


@pytest.mark.parametrize("descending", [False, True])
def test_a_walk_that_finds_matches_too_rarely_copies_them_and_lists_the_same_rows(sparse_short, monkeypatch,
                                                                                 descending):
    """End of a common-word search sorted by length (or its first page, ascending) starts among the shortest rows,
    where the word is rare: the walk asked the search index about ~12,000 rows for a page (1.4 s at 1M rows, ~6 s
    at 10M). From PROBE_SAMPLE asks on, once asking on would cost more than copying the matches, they are copied
    once and the walk goes on against the copy: same rows, same order, from either end and from any row."""
    conn, all_rows, did = sparse_short
    monkeypatch.setattr(browse, "DRIVE_FROM_HITS", 5)       # "alpha" counts as a common word: walked, not copied
    monkeypatch.setattr(browse, "PROBE_SAMPLE", 20)
    asked = []
    real = browse._Probe.__call__

    def spy(self, matched):
        asked.append(matched)
        return real(self, matched)
    monkeypatch.setattr(browse._Probe, "__call__", spy)
    sort = Sort("length", descending)
    for flt in (F(search="alpha"), F(dataset_id=did, search="alpha"), F(dataset_id=did, search="alpha w"),
                F(search="alpha", status="pending")):
        exp = expected(all_rows, flt, sort)
        assert len(exp) > 100
        forget_matches(conn)
        # the long rows' end (End ascending, the first page descending): walked, nothing copied
        dense = browse.page(conn, flt, sort, None, 10, backward=not descending)
        assert [r.id for r in dense] == (exp[-10:] if not descending else exp[:10])
        assert copied(conn) == -1
        # the short rows' end: copied after PROBE_SAMPLE asks, and the same rows
        asked.clear()
        sparse = browse.page(conn, flt, sort, None, 10, backward=descending)
        assert [r.id for r in sparse] == (exp[:10] if not descending else exp[-10:])
        assert copied(conn) == len(expected(all_rows, Filter(search="alpha"), Sort())) if "w" not in flt.search \
            else copied(conn) > 0
        assert 20 <= len(asked) <= 20 * 2            # a second dataset's walk may have started before the stop
        asked.clear()
        assert walk_forward(conn, flt, sort, 7) == exp and walk_backward(conn, flt, sort, 9) == exp
        assert not asked                              # the copy is kept for the search: no walk asks again
        mid = browse.page(conn, flt, sort, None, 60)[-1]
        assert [r.id for r in browse.page(conn, flt, sort, mid.key, 5)] == exp[60:65]
        assert [r.id for r in browse.page(conn, flt, sort, mid.key, 5, backward=True)] == exp[54:59]


def test_the_copy_of_the_matches_outlives_decisions_not_edits(sparse_short, monkeypatch):
    """A decision changes no text: the copied matches stay (Review stepping through a Browse order would copy them
    again after every key). An edit changes what matches: the copy is made again and the pages follow the edit."""
    from workbench import decisions, review
    conn, all_rows, did = sparse_short
    flt, sort = F(search="alpha"), Sort("length")
    browse.page(conn, flt, sort, None, 10)
    table = conn.execute("SELECT name FROM temp.browse_hits").fetchone()[0]
    n = copied(conn)
    assert n > 0
    short = min((r for r in all_rows if "beta" in r["instruction"]), key=lambda r: r["instruction_len"])
    review.decide(conn, short["id"], "accept", "s")
    browse.page(conn, flt, sort, None, 10)
    assert conn.execute("SELECT name, n FROM temp.browse_hits").fetchone() == (table, n)
    decisions.edit(conn, short["id"], {"instruction": "alpha"}, "s")
    first = browse.page(conn, flt, sort, None, 10)
    assert conn.execute("SELECT name FROM temp.browse_hits").fetchone()[0] != table
    assert first[0].id == short["id"]             # now the shortest match
    assert browse.count(conn, flt) == n + 1


def test_a_walk_gives_up_only_when_asking_on_costs_more_than_copying(monkeypatch):
    """The judgement itself: the asks still needed at the rate seen so far, against copying the estimated matches
    (a common two-word search is cheaper walked at 3M rows, copied at 1M; a three-word one copied at both)."""
    monkeypatch.setattr(browse, "PROBE_SAMPLE", 200)

    def asks_until_stop(limit, estimate, every):
        probe = browse._Probe(limit, estimate)
        for i in range(1, 100_000):
            try:
                probe(i % every == 0)
            except RuntimeError:
                return probe.asked
            if probe.matched >= limit:
                return None          # the page filled: walked to the end
        return None
    per_ask = browse.COPY_PER_ASK
    assert asks_until_stop(100, 738_000, 20) == 200              # 2,000 asks to go cost more than 738k copies
    assert asks_until_stop(100, 2_200_000, 20) is None           # ... less than 2.2M copies: walked
    assert asks_until_stop(100, 2_000_000, 125) == 200           # 1 match in 125: copied
    assert asks_until_stop(1, 10 ** 6, 125) is None              # one row (Review's next): never copied for it
    assert asks_until_stop(100, 10 ** 9, 2) is None              # dense: never
    assert asks_until_stop(100, 0, 1000) == 200                  # nothing estimated (a copied search): at once
    assert 100 * 20 * per_ask > 738_000 and 100 * 20 * per_ask < 2_200_000   # what the cases above stand on


def test_a_copied_search_sorted_by_score_asks_the_copy_before_reading_the_sample(rows, monkeypatch):
    """Across all datasets each dataset's score walk reads the sample row of every score to learn its dataset; with
    a search's matches copied, the copy is asked first (a small dataset's page read ~50,000 other rows for 100
    matches at 1M rows: 0.4 s). Same rows either way; the query plan shows the order."""
    conn, all_rows, _ = rows
    monkeypatch.setattr(browse, "DRIVE_FROM_HITS", 5)
    monkeypatch.setattr(browse, "WALK_DENSITY", 0.9)        # "borrow" is copied
    seen: list[str] = []
    conn.set_trace_callback(seen.append)
    try:
        for flt in (F(search="borrow"), F(search="borrow", status="pending")):
            for descending in (False, True):
                sort = Sort("score", descending)
                exp = expected(all_rows, flt, sort)
                assert walk_forward(conn, flt, sort, 6) == exp and walk_backward(conn, flt, sort, 4) == exp
    finally:
        conn.set_trace_callback(None)
    scored = [q for q in seen if "FROM sample_scores sc JOIN samples" in q]
    assert scored
    for q in scored:
        plan = [r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + q)]
        sample = next(i for i, step in enumerate(plan) if step.startswith("SEARCH samples"))
        copy = next(i for i, step in enumerate(plan) if "browse_hits_" in step)
        assert copy < sample, plan
