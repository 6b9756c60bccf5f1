import subprocess
import sys

from workbench import store
from workbench.samples import insert_samples, get_sample


def test_schema_is_versioned_and_reopen_is_idempotent(db_path):
    c = store.open_store(db_path)
    assert c.execute("PRAGMA user_version").fetchone()[0] == store.SCHEMA_VERSION
    assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert c.execute("PRAGMA page_size").fetchone()[0] == store.PAGE_SIZE
    c.close()
    c = store.open_store(db_path)
    assert c.execute("PRAGMA user_version").fetchone()[0] == store.SCHEMA_VERSION


def test_schema_has_the_design_tables(db_path):
    import sqlite_utils
    store.open_store(db_path).close()
    db = sqlite_utils.Database(db_path)
    assert {"datasets", "imports", "samples", "judgments", "candidates", "decisions", "jobs", "job_items",
            "llm_cache", "snapshots", "snapshot_items", "selections", "samples_fts"} <= set(db.table_names())
    cols = db["samples"].columns_dict
    for c in ("parent_id", "job_id", "origin", "status", "content_hash", "dup_of", "source_line", "import_id"):
        assert c in cols


def test_search_index_merges_lazily(db_path):
    c = store.open_store(db_path)
    assert c.execute("SELECT v FROM samples_fts_config WHERE k = 'automerge'").fetchone() == (16,)


def test_an_existing_store_keeps_its_page_size(db_path):
    import sqlite3
    old = sqlite3.connect(db_path)
    old.execute("CREATE TABLE t (x)")          # made with SQLite's default 4 KB pages, before PAGE_SIZE existed
    old.close()
    c = store.open_store(db_path)
    assert c.execute("PRAGMA page_size").fetchone()[0] == 4096
    assert c.execute("PRAGMA user_version").fetchone()[0] == store.SCHEMA_VERSION


def test_newer_schema_is_refused(db_path):
    c = store.open_store(db_path)
    c.execute(f"PRAGMA user_version = {store.SCHEMA_VERSION + 1}")
    c.close()
    try:
        store.open_store(db_path)
    except store.SchemaTooNew as e:
        assert "newer" in str(e)
    else:
        raise AssertionError("a newer schema must be refused")


def test_db_path_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("WORKBENCH_DB", str(tmp_path / "env.db"))
    assert store.resolve_db_path() == tmp_path / "env.db"
    assert store.resolve_db_path(tmp_path / "x.db") == tmp_path / "x.db"
    monkeypatch.delenv("WORKBENCH_DB")
    assert store.resolve_db_path().name == "workbench.db"


def test_duplicates_are_flagged_not_dropped(conn):
    with store.transaction(conn):
        did = store.ensure_dataset(conn, "d")
        first, last = insert_samples(conn, did, [
            {"instruction": "Name a colour.", "response": "Red."},
            {"instruction": "name  a colour.", "response": "red."},   # same after normalization
            {"instruction": "Name a fruit.", "response": "Apple."},
        ])
    assert (first, last) == (1, 3)
    assert get_sample(conn, 2)["dup_of"] == 1
    assert get_sample(conn, 1)["dup_of"] is None and get_sample(conn, 3)["dup_of"] is None


def test_fts_sync_indexes_new_rows_and_follows_edits(conn):
    with store.transaction(conn):
        did = store.ensure_dataset(conn, "d")
        insert_samples(conn, did, [{"instruction": "Explain ownership in Rust", "response": "Borrowing rules."}])
    assert store.fts_sync(conn) == 1
    assert store.fts_sync(conn) == 0
    q = store.fts_query("ownership")
    assert conn.execute("SELECT rowid FROM samples_fts WHERE samples_fts MATCH ?", (q,)).fetchall() == [(1,)]
    old = get_sample(conn, 1)
    new = dict(old, instruction="Explain lifetimes")
    with store.transaction(conn):
        conn.execute("UPDATE samples SET instruction = ? WHERE id = 1", (new["instruction"],))
        store.fts_replace(conn, 1, old, new)
    assert conn.execute("SELECT rowid FROM samples_fts WHERE samples_fts MATCH ?", (q,)).fetchall() == []
    assert conn.execute("SELECT rowid FROM samples_fts WHERE samples_fts MATCH ?",
                        (store.fts_query("lifetimes"),)).fetchall() == [(1,)]


def test_fts_query_neutralises_syntax_and_splits_like_the_index(conn):
    assert store.fts_query('a"b OR c* NEAR(x)') == '"a" "b" "OR" "c" "NEAR" "x"'
    assert store.fts_query("don't  e-mail 東京 café_au") == '"don" "t" "e" "mail" "東京" "café" "au"'
    assert store.fts_query("  ?! ") == ""
    with store.transaction(conn):
        did = store.ensure_dataset(conn, "d")
        insert_samples(conn, did, [{"instruction": "Don't e-mail me about AND/OR logic", "response": "ok"}])
    store.fts_sync(conn)
    for words in ("don't", "E-MAIL", "and/or", 'logic"'):
        assert conn.execute("SELECT rowid FROM samples_fts WHERE samples_fts MATCH ?",
                            (store.fts_query(words),)).fetchall() == [(1,)], words


def test_core_does_not_import_textual():
    code = ("import sys, importlib, pkgutil, workbench\n"
            "for m in pkgutil.walk_packages(workbench.__path__, 'workbench.'):\n"
            "    if m.name not in ('workbench.app', 'workbench.__main__'): importlib.import_module(m.name)\n"
            "print('textual' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_duplicate_flags_for_a_small_batch_into_a_big_store(conn):
    with store.transaction(conn):
        did = store.ensure_dataset(conn, "d")
        insert_samples(conn, did, [{"instruction": f"q{i}", "response": "a"} for i in range(100)])
    with store.transaction(conn):  # a worker-sized commit takes the per-row probe path
        first, last = insert_samples(conn, did, [{"instruction": "Q7", "response": "A"}, {"instruction": "new"}])
    assert [get_sample(conn, i)["dup_of"] for i in (first, last)] == [8, None]


def test_a_store_from_before_migration_5_gets_its_search_index_rebuilt(db_path):
    c = store.connect(db_path)
    for target in range(4):
        with store.transaction(c):
            store._run_migration(c, target)
    with store.transaction(c):
        did = store.ensure_dataset(c, "old")
        insert_samples(c, did, [{"instruction": "Explain borrowing", "response": "References."}])
    store.fts_sync(c)
    c.close()
    c = store.open_store(db_path)
    assert c.execute("PRAGMA user_version").fetchone()[0] == store.SCHEMA_VERSION
    assert store.fts_sync(c) == 1
    assert c.execute("SELECT rowid FROM samples_fts WHERE samples_fts MATCH ?",
                     (store.fts_query("borrowing"),)).fetchall() == [(1,)]


def test_a_store_from_before_migration_8_gets_one_score_per_rubric(db_path):
    """Judgments and preference lineage of an old store become per-rubric scores; samples.score is emptied."""
    c = store.connect(db_path)
    for target in range(7):   # every migration before the scores one
        with store.transaction(c):
            store._run_migration(c, target)
    with store.transaction(c):
        did = store.ensure_dataset(c, "old")
        insert_samples(c, did, [{"instruction": f"q{i}", "response": "a"} for i in range(4)])
        ins = ("INSERT INTO judgments (sample_id, candidate_id, judge, rubric, rubric_version, scores, overall, "
               "created_at) VALUES (?, ?, ?, ?, '1', ?, ?, ?)")
        c.execute(ins, (1, None, "m1", "judge", '{"alignment": 9, "response_quality": 6}', 7, "2026-01-01T00:00:00Z"))
        c.execute(ins, (1, None, "m2", "curate", '{"curation": 4}', 4, "2026-01-01T00:00:01Z"))
        c.execute(ins, (1, None, "m3", "curate", '{"curation": 5}', 5, "2026-01-01T00:00:02Z"))  # the latest wins
        c.execute(ins, (2, 99, "m1", "judge", "{}", 3, "2026-01-01T00:00:00Z"))      # a candidate's: not the sample's
        c.execute(ins, (3, None, "m1", "curate", '{"curation": 2}', 2, "2026-01-01T00:00:00Z"))
        c.execute("INSERT INTO decisions (sample_id, action, created_at) VALUES (3, 'edit', '2026-02-01T00:00:00Z')")
        c.execute("UPDATE samples SET score = 5 WHERE id IN (1, 3)")
        c.execute("""UPDATE samples SET job_id = 1, origin = '{"task": "preference", "rubric": "aspects", "judge": "m1",
                     "chosen": {"score": 4.5}, "rejected": {"score": 2}}' WHERE id = 4""")
    c.close()
    c = store.open_store(db_path)
    got = {(r[0], r[1]): r[2:] for r in c.execute(
        "SELECT sample_id, rubric, score, scale_min, scale_max, judge, stale FROM sample_scores")}
    assert got == {(1, "judge"): (7, 1, 10, "m1", 0), (1, "judge.alignment"): (9, 1, 10, "m1", 0),
                   (1, "judge.response_quality"): (6, 1, 10, "m1", 0), (1, "curate"): (5, 1, 5, "m3", 0),
                   (3, "curate"): (2, 1, 5, "m1", 1),                   # edited after it was scored: stale
                   (4, "preference.chosen"): (4.5, 1, 5, "m1", 0), (4, "preference.rejected"): (2, 1, 5, "m1", 0)}
    assert c.execute("SELECT count(*) FROM samples WHERE score IS NOT NULL").fetchone()[0] == 0
