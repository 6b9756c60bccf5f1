"""Balance histograms: maintained counts + unfolded tail must always equal a brute-force count of the rows."""
import random
from collections import Counter

import pytest

from workbench import scores, stats, store
from workbench.samples import insert_samples

EDGES = (0, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


def _length_bucket(n):
    return max(e for e in EDGES if n >= e)


def brute(conn, dataset_id=None, statuses=None):
    """What the histograms must say, counted in Python straight from the rows."""
    rows = conn.execute("SELECT dataset_id, status, task_type, domain, difficulty, instruction_len, response_len, "
                        "(SELECT score FROM sample_scores WHERE sample_id = samples.id AND rubric = 'judge' "
                        "AND stale = 0) FROM samples").fetchall()
    rows = [r for r in rows if (dataset_id is None or r[0] == dataset_id) and (statuses is None or r[1] in statuses)]
    h = {"status": Counter(r[1] for r in rows),
         "task_type": Counter(r[2] or "(none)" for r in rows),
         "domain": Counter(r[3] or "(none)" for r in rows),
         "difficulty": Counter(r[4] or "(none)" for r in rows),
         "instruction_len": Counter(_length_bucket(r[5]) for r in rows),
         "response_len": Counter(_length_bucket(r[6]) for r in rows),
         "score": Counter("unscored" if r[7] is None else str(int(r[7])) for r in rows)}
    return h


def as_counters(counts, statuses=None):
    out = {}
    for dim in stats.HISTOGRAM_DIMS:
        c = Counter()
        for label, n in counts.histogram(dim, statuses):
            if dim in stats.LENGTH_DIMS:
                label = int(label.split("-")[0].rstrip("+"))
            if n:
                c[label] += n
        out[dim] = c
    return out


def check(conn, dataset_ids):
    # `workbench datasets` reads its counts per status from the same maintained counts
    by = Counter()
    for did, status, n in conn.execute("SELECT dataset_id, status, count(*) FROM samples GROUP BY 1, 2"):
        by[did, status] = n
    for d in store.list_datasets(conn):
        assert {s: d[s] for s in store.STATUSES} == {s: by[d["id"], s] for s in store.STATUSES}, d
        assert d["rows"] == sum(by[d["id"], s] for s in store.STATUSES)
    for did in [None, *dataset_ids]:
        counts = read_judge(conn, did)
        assert counts.rubric == "judge" and counts.score_title() == "score: judge (1-10)"
        for statuses in (None, ("accepted",)):
            assert as_counters(counts, statuses) == {k: +v for k, v in brute(conn, did, statuses).items()}, \
                (did, statuses)


def make_rows(rng, n):
    return [{"instruction": "i" * rng.choice([0, 10, 60, 150, 700, 3000, 12000]),
             "response": "r" * rng.randint(0, 2500),
             "task_type": rng.choice(["qa", "code", "math", None]),
             "domain": rng.choice(["bio", "law", None]),
             "difficulty": rng.choice(["easy", "hard", None]),
             "status": rng.choice(["pending", "accepted", "rejected"])} for _ in range(n)]


@pytest.fixture
def two_datasets(conn):
    rng = random.Random(7)
    with store.transaction(conn):
        a = store.ensure_dataset(conn, "a")
        b = store.ensure_dataset(conn, "b")
        insert_samples(conn, a, make_rows(rng, 300))
        insert_samples(conn, b, make_rows(rng, 200))
    with store.transaction(conn):
        for (sid,) in conn.execute("SELECT id FROM samples WHERE id % 3 = 0").fetchall():
            scores.record(conn, sid, "judge", sid % 9 + 1.5, (1, 10))
        for (sid,) in conn.execute("SELECT id FROM samples WHERE id % 2 = 0").fetchall():
            scores.record(conn, sid, "curate", 2, (1, 5))          # another rubric: its own histogram
        conn.execute("UPDATE sample_scores SET stale = 1 WHERE sample_id % 7 = 0")   # edited since: not counted
    return conn, (a, b), rng


def read_judge(conn, did=None):
    return stats.read_counts(conn, did, "judge")


def test_unfolded_folded_and_partly_folded_counts_match_the_rows(two_datasets):
    conn, dids, rng = two_datasets
    check(conn, dids)                                   # all tail
    assert stats.fold(conn, chunk=120) == 500           # several chunks
    assert stats.tail_rows(conn) == 0
    check(conn, dids)                                   # all maintained
    with store.transaction(conn):
        insert_samples(conn, dids[0], make_rows(rng, 50))
    assert stats.tail_rows(conn) == 50
    check(conn, dids)                                   # maintained + tail


def test_updates_deletes_and_reused_ids_keep_folded_counts_right(two_datasets):
    conn, dids, rng = two_datasets
    stats.fold(conn)
    conn.execute("UPDATE samples SET status = 'accepted' WHERE id % 4 = 0")          # review decisions
    with store.transaction(conn):                                                     # a judge run
        for (sid,) in conn.execute("SELECT id FROM samples WHERE id % 5 = 0").fetchall():
            scores.record(conn, sid, "judge", 9.9, (1, 10))
    conn.execute("UPDATE samples SET task_type = 'code', response_len = 7 WHERE id % 7 = 0")  # an edit
    conn.execute("UPDATE samples SET dataset_id = ? WHERE id BETWEEN 10 AND 20", (dids[1],))
    conn.execute("DELETE FROM samples WHERE id > 480")                                # the top ids go away...
    check(conn, dids)
    with store.transaction(conn):                                                     # ...and get reused
        first, _ = insert_samples(conn, dids[1], make_rows(rng, 30))
    assert first == 481 and stats.tail_rows(conn) == 30   # the reused ids are tail, counted by fold
    check(conn, dids)
    stats.fold(conn)
    check(conn, dids)


def test_a_no_op_update_does_not_touch_the_counts(two_datasets):
    conn, dids, _ = two_datasets
    stats.fold(conn)
    before = conn.execute("SELECT * FROM sample_stats ORDER BY 1, 2, 3, 4").fetchall()
    conn.execute("UPDATE samples SET updated_at = 'later', status = status")
    assert conn.execute("SELECT * FROM sample_stats ORDER BY 1, 2, 3, 4").fetchall() == before


def test_fold_if_needed_only_writes_for_a_long_tail(two_datasets):
    conn, dids, _ = two_datasets
    assert stats.fold_if_needed(conn, min_tail=1000) == 0
    assert stats.tail_rows(conn) == 500
    assert stats.fold_if_needed(conn, min_tail=100) == 500


def test_stats_summary_has_status_and_every_histogram(two_datasets, db_path):
    conn, dids, _ = two_datasets
    summary = stats.stats_summary(conn)
    exp = brute(conn)
    assert summary["dataset"] is None
    assert summary["total"] == 500
    assert set(summary["status"]) == {"pending", "accepted", "rejected"}
    assert summary["status"] == {s: exp["status"][s] for s in ("pending", "accepted", "rejected")}
    assert summary["task_type"] == dict(exp["task_type"])
    assert sum(summary["instruction_len"].values()) == 500
    assert summary["instruction_len"]["10000+"] == exp["instruction_len"][10000]
    assert summary["score_rubric"] == "curate"                  # the primary rubric (scores.PRIMARY_ORDER)
    assert summary["scores"]["judge"]["unscored"] == exp["score"]["unscored"]
    assert summary["scores"]["judge"] == {k: v for k, v in dict(read_judge(conn).histogram("score")).items()}
    assert summary["scores"]["curate"]["2"] == conn.execute(
        "SELECT count(*) FROM sample_scores WHERE rubric = 'curate' AND stale = 0").fetchone()[0]
    assert summary["accepted"]["total"] == exp["status"]["accepted"]
    one = stats.stats_summary(conn, "b")
    assert one["dataset"] == "b" and one["total"] == 200
    with pytest.raises(KeyError):
        stats.stats_summary(conn, "nope")


def test_score_histogram_fills_gaps_and_lists_unscored_last(conn):
    with store.transaction(conn):
        did = store.ensure_dataset(conn, "d")
        insert_samples(conn, did, [{"instruction": str(i)} for i in range(4)])
    with store.transaction(conn):
        for sid, v in ((1, 2.0), (2, 5.5), (3, 5.9)):
            scores.record(conn, sid, "judge", v, (1, 10))
        scores.record(conn, 4, "curate", 1, (1, 5))
    assert stats.read_counts(conn, rubric="judge").histogram("score") == [("2", 1), ("3", 0), ("4", 0), ("5", 2),
                                                                         ("unscored", 1)]
    assert stats.read_counts(conn, rubric="curate").histogram("score") == [("1", 1), ("unscored", 3)]
    assert stats.read_counts(conn, rubric="nope").rubric == "curate"     # not present: the primary one


def test_targets_parse_fractions_or_percentages_and_reject_nonsense():
    assert stats.parse_targets({}) == {}
    assert stats.parse_targets({"balance": {"targets": {"task_type": {"qa": 0.5, "code": 0.25}}}}) == \
        {"task_type": {"qa": 0.5, "code": 0.25}}
    assert stats.parse_targets({"balance": {"targets": {"domain": {"bio": 40, "law": 60}}}}) == \
        {"domain": {"bio": 0.4, "law": 0.6}}
    with pytest.raises(ValueError, match="colour"):
        stats.parse_targets({"balance": {"targets": {"colour": {"red": 1}}}})
    with pytest.raises(ValueError, match="qa"):
        stats.parse_targets({"balance": {"targets": {"task_type": {"qa": "lots"}}}})


def test_bars_show_gap_keep_targeted_categories_and_sum_the_rest():
    hist = [("qa", 50), ("code", 30), ("math", 15), ("poetry", 5)]
    out = stats.bars(hist, {"poetry": 0.2, "legal": 0.1}, top=2)
    assert [b.label for b in out] == ["qa", "code", "poetry", "legal", "(1 more)"]
    poetry = out[2]
    assert poetry.share == pytest.approx(0.05) and poetry.gap == pytest.approx(-0.15)
    assert out[3].count == 0 and out[3].gap == pytest.approx(-0.1)
    assert out[4].other and out[4].count == 15 and out[4].gap is None
    assert stats.bars([("a", 0)], None)[0].share == 0.0


def test_counts_of_one_dataset_read_only_the_unfolded_tail(conn):
    """Review's status line and Browse's count read the maintained counts plus the rows not folded yet; the tail
    must be found by id, not by reading every row of the dataset (seconds at 10M rows, between two Review keys).
    Measured in SQLite VM steps, not time."""
    rng = random.Random(1)
    with store.transaction(conn):
        a = store.ensure_dataset(conn, "a")
        b = store.ensure_dataset(conn, "b")
        insert_samples(conn, a, make_rows(rng, 4000))
        insert_samples(conn, b, make_rows(rng, 100))
    stats.fold(conn)
    with store.transaction(conn):
        insert_samples(conn, a, make_rows(rng, 3))
    conn.execute("ANALYZE")          # the planner's statistics as a long-lived store has them
    steps = [0]

    def count_step():
        steps[0] += 1
    conn.set_progress_handler(count_step, 10)
    try:
        got = store.status_counts(conn, a)
    finally:
        conn.set_progress_handler(None, 0)
    assert sum(got[a].values()) == 4003
    assert steps[0] * 10 < 4000, f"{steps[0] * 10} VM steps for a 3-row tail of a 4,000-row dataset"


def brute_distinct(conn, column, did=None):
    where, params = ("AND dataset_id = ?", (did,)) if did is not None else ("", ())
    return sorted(v for (v,) in conn.execute(f"SELECT DISTINCT {column} FROM samples WHERE {column} IS NOT NULL "
                                             f"{where}", params))


def test_distinct_values_follow_the_rows_folded_or_not(two_datasets):
    """The filter dialog's choices (task types, domains) come from the maintained counts plus the tail: always the
    rows' distinct values, including '' (kept in one bucket with NULL by the counts) and never a value gone."""
    conn, (a, b), rng = two_datasets

    def check():
        for column in ("task_type", "domain", "difficulty"):
            for did in (None, a, b):
                assert stats.distinct_values(conn, column, did) == brute_distinct(conn, column, did), (column, did)
    check()
    stats.fold(conn, chunk=120)
    check()
    conn.execute("UPDATE samples SET task_type = 'rare' WHERE id = 7")
    conn.execute("UPDATE samples SET domain = '' WHERE id = 8")                  # '' is a value, NULL is not
    conn.execute("UPDATE samples SET task_type = 'math' WHERE task_type = 'code' AND dataset_id = ?", (b,))
    check()
    assert "rare" in stats.distinct_values(conn, "task_type") and "" in stats.distinct_values(conn, "domain")
    conn.execute("DELETE FROM samples WHERE id = 7")
    conn.execute("UPDATE samples SET domain = NULL WHERE id = 8")
    with store.transaction(conn):
        insert_samples(conn, b, [{"instruction": "x", "task_type": "late", "domain": ""}])   # tail
    check()
    assert "rare" not in stats.distinct_values(conn, "task_type") and "late" in stats.distinct_values(conn, "task_type")
    assert stats.distinct_values(conn, "task_type", limit=2) == brute_distinct(conn, "task_type")[:2]
    with pytest.raises(ValueError):
        stats.distinct_values(conn, "instruction")


def test_distinct_values_of_all_datasets_read_no_row_index(conn):
    """Across all datasets a DISTINCT over samples read every entry of the (dataset_id, task_type) index (~5 s at
    10M rows each time Review's filter dialog opened). Measured in SQLite VM steps, not time."""
    from workbench import review
    rng = random.Random(2)
    with store.transaction(conn):
        for name in ("a", "b"):
            insert_samples(conn, store.ensure_dataset(conn, name), make_rows(rng, 3000))
    stats.fold(conn)
    conn.execute("ANALYZE")
    steps = [0]

    def count_step():
        steps[0] += 1
    conn.set_progress_handler(count_step, 10)
    try:
        got = review.facets(conn)
    finally:
        conn.set_progress_handler(None, 0)
    assert got["task_type"] == ["code", "math", "qa"] and got["domain"] == ["bio", "law"]
    assert steps[0] * 10 < 3000, f"{steps[0] * 10} VM steps for the choices of 6,000 rows"
