"""Deleting the dataset that holds the top ids frees those ids: SQLite gives them out again to the next import.
The search index (fts_upto) and the Balance counts (stats_upto) must then take the new rows as new, not as rows
they already hold (before the fix, search and Balance missed every reused id)."""
import json

import pytest

from workbench import browse, importer, review, scores, stats, store
from workbench.browse import Filter, Sort


def write(path, word, n, task):
    path.write_text("".join(json.dumps({"instruction": f"{word} question {i}", "output": f"{word} answer {i}",
                                        "task_type": task}) + "\n" for i in range(n)))
    return path


def meta(conn, key):
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return int(row[0]) if row else None


def balance_rows(conn, did):
    return dict(stats.read_counts(conn, did).histogram("task_type"))


def brute(conn, did):
    out = {}
    for (t,) in conn.execute("SELECT task_type FROM samples WHERE dataset_id = ?", (did,)):
        out[t or stats.NONE_LABEL] = out.get(t or stats.NONE_LABEL, 0) + 1
    return out


@pytest.mark.parametrize("fold_chunk", [None, 7, 1000])   # b: not counted, counted in part, counted whole
@pytest.mark.parametrize("indexed", [False, True])         # b's rows in the search index or not yet
def test_ids_reused_after_deleting_the_last_dataset_are_searched_and_counted(conn, cli, tmp_path, fold_chunk,
                                                                           indexed):
    importer.import_file(conn, write(tmp_path / "a.jsonl", "apple", 20, "qa"), dataset="a")
    store.fts_sync(conn)
    stats.fold(conn)
    importer.import_file(conn, write(tmp_path / "b.jsonl", "banana", 15, "code"), dataset="b")
    b_ids = [i for (i,) in conn.execute("SELECT id FROM samples WHERE dataset_id = ? ORDER BY id",
                                        (store.dataset_id(conn, "b"),))]
    if indexed:
        store.fts_sync(conn)
    if fold_chunk == 7:      # the watermark ends inside b
        with store.transaction(conn):
            conn.execute("UPDATE meta SET value = ? WHERE key = 'stats_upto'", (str(b_ids[6]),))
            conn.execute(stats._FOLD_SQL, (b_ids[0] - 1, b_ids[6]))
    elif fold_chunk:
        stats.fold(conn, chunk=fold_chunk)
    code, out, err = cli("datasets", "delete", "b", "--yes")
    assert code == 0, err
    top = conn.execute("SELECT max(id) FROM samples").fetchone()[0]
    assert meta(conn, "fts_upto") <= top and meta(conn, "stats_upto") <= top

    importer.import_file(conn, write(tmp_path / "c.jsonl", "cherry", 12, "math"), dataset="c")
    c = store.dataset_id(conn, "c")
    c_ids = [i for (i,) in conn.execute("SELECT id FROM samples WHERE dataset_id = ? ORDER BY id", (c,))]
    assert c_ids[0] == b_ids[0]          # the ids were given out again
    store.fts_sync(conn)
    # search: every new row is found, in Browse and Review
    for flt in (Filter(search="cherry"), Filter(dataset_id=c, search="cherry")):
        assert browse.count(conn, flt) == 12
        assert [r.id for r in browse.page(conn, flt, Sort("id"), None, 50)] == c_ids
        assert [r.id for r in browse.page(conn, flt, Sort("length"), None, 50)] == c_ids   # equal lengths: id order
    assert browse.count(conn, Filter(search="banana")) == 0
    assert review.goto(conn, review.Filter(dataset_id=c, search="cherry"), "first")["id"] == c_ids[0]
    # Balance: the new rows counted once, folded or not, and none of the deleted ones
    for _ in range(2):
        assert balance_rows(conn, c) == brute(conn, c) == {"math": 12}
        assert balance_rows(conn, None) == {"qa": 20, "math": 12}
        assert browse.count(conn, Filter(dataset_id=c)) == 12
        stats.fold(conn)


def test_a_deleted_dataset_leaves_no_counts_or_rubrics_for_a_new_one_with_its_id(conn, cli, tmp_path):
    """The dataset id itself is given out again: its maintained counts and rubrics must go with it."""
    importer.import_file(conn, write(tmp_path / "a.jsonl", "apple", 5, "qa"), dataset="a")
    importer.import_file(conn, write(tmp_path / "b.jsonl", "banana", 6, "code"), dataset="b")
    b = store.dataset_id(conn, "b")
    stats.fold(conn)
    with store.transaction(conn):
        for (sid,) in conn.execute("SELECT id FROM samples WHERE dataset_id = ?", (b,)).fetchall():
            scores.record(conn, sid, "judge", 7, (1, 10))
    assert "judge" in scores.rubrics(conn)
    assert cli("datasets", "delete", "b", "--yes")[0] == 0
    assert scores.rubrics(conn) == {}
    assert conn.execute("SELECT count(*) FROM sample_stats WHERE dataset_id = ?", (b,)).fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM score_stats WHERE dataset_id = ?", (b,)).fetchone()[0] == 0
    importer.import_file(conn, write(tmp_path / "c.jsonl", "cherry", 4, "math"), dataset="c")
    c = store.dataset_id(conn, "c")
    assert c == b
    assert scores.rubrics(conn, c) == {}
    assert balance_rows(conn, c) == {"math": 4}
    assert stats.read_counts(conn, c).histogram("score") == [(stats.UNSCORED_LABEL, 4)]


def test_a_merge_carries_the_sources_rubrics_and_leaves_no_counts_behind(conn, cli, tmp_path):
    importer.import_file(conn, write(tmp_path / "a.jsonl", "apple", 5, "qa"), dataset="a")
    importer.import_file(conn, write(tmp_path / "b.jsonl", "banana", 6, "code"), dataset="b")
    a, b = store.dataset_id(conn, "a"), store.dataset_id(conn, "b")
    stats.fold(conn)
    with store.transaction(conn):
        for (sid,) in conn.execute("SELECT id FROM samples WHERE dataset_id = ?", (b,)).fetchall():
            scores.record(conn, sid, "judge", 7, (1, 10))
    assert cli("datasets", "merge", "a", "b", "--into", "a")[0] == 0
    assert scores.rubrics(conn, a) == {"judge": (1, 10)}      # Browse's score:judge and Balance in the target
    assert balance_rows(conn, a) == {"code": 6, "qa": 5}
    assert stats.read_counts(conn, a).histogram("score") == [("7", 6), (stats.UNSCORED_LABEL, 5)]
    for table in ("sample_stats", "score_stats", "score_rubrics"):
        assert conn.execute(f"SELECT count(*) FROM {table} WHERE dataset_id = ?", (b,)).fetchone()[0] == 0, table
