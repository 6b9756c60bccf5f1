"""Several processes opening one store: the migration runs once, under the write lock; a newer store is refused."""
import os
import subprocess
import sys
from pathlib import Path

from workbench import store

ROOT = Path(__file__).resolve().parent.parent
OPEN_AND_WRITE = r'''
import sys
from workbench.store import open_store, transaction, ensure_dataset
conn = open_store(sys.argv[1])
with transaction(conn):
    ensure_dataset(conn, "ds-" + sys.argv[2])
conn.close()
'''


def test_twenty_processes_opening_a_new_store_at_once_all_succeed(tmp_path):
    for trial in range(2):
        db = tmp_path / f"new-{trial}.db"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        procs = [subprocess.Popen([sys.executable, "-c", OPEN_AND_WRITE, str(db), str(i)], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(20)]
        results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
        for p in procs:
            p.stdout.close()
            p.stderr.close()
        assert [code for code, _ in results] == [0] * 20, [err for code, err in results if code][:2]
        c = store.open_store(db)
        assert c.execute("PRAGMA user_version").fetchone()[0] == store.SCHEMA_VERSION
        assert c.execute("SELECT count(*) FROM datasets").fetchone()[0] == 20
        c.close()


def test_a_migration_interrupted_half_way_leaves_the_old_version(db_path, monkeypatch):
    """All pending migrations run in one transaction: a failure leaves the store as it was, retried next open."""
    real = store._run_migration

    def failing(conn, target):
        if target == 3:
            raise RuntimeError("disk gone")
        real(conn, target)
    monkeypatch.setattr(store, "_run_migration", failing)
    try:
        store.open_store(db_path)
    except RuntimeError:
        pass
    else:
        raise AssertionError("the migration failure must surface")
    import sqlite3
    c = sqlite3.connect(db_path)
    assert c.execute("PRAGMA user_version").fetchone()[0] == 0
    assert c.execute("SELECT count(*) FROM sqlite_master WHERE name = 'datasets'").fetchone()[0] == 0
    c.close()
    monkeypatch.setattr(store, "_run_migration", real)
    assert store.open_store(db_path).execute("PRAGMA user_version").fetchone()[0] == store.SCHEMA_VERSION


def test_a_newer_store_is_refused_by_the_cli_with_a_message(db_path, cli):
    c = store.open_store(db_path)
    c.execute(f"PRAGMA user_version = {store.SCHEMA_VERSION + 3}")
    c.close()
    before = db_path.read_bytes()
    for argv in (["datasets"], ["stats"], ["jobs"], ["export", str(db_path.parent / "o.jsonl"), "--format", "alpaca"]):
        code, out, err = cli(*argv, "--db", str(db_path))
        assert code != 0, (argv, err)
        assert "Traceback" not in err and err.count("\n") == 1
        assert f"schema version {store.SCHEMA_VERSION + 3}" in err and "newer" in err and str(db_path) in err
    assert db_path.read_bytes() == before


def test_switching_a_new_file_to_wal_waits_for_a_writer_instead_of_failing(tmp_path):
    """SQLite refuses `PRAGMA journal_mode = WAL` at once (no busy handler) while another connection of a
    still rollback-journal file holds the write lock: what twenty processes opening a new store race into."""
    import sqlite3
    import threading
    db = tmp_path / "new.db"
    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE t(x)")
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO t VALUES (1)")
    refused = sqlite3.connect(db, isolation_level=None, timeout=5)
    try:
        refused.execute("PRAGMA journal_mode = WAL")
    except sqlite3.OperationalError as e:
        assert "locked" in str(e)
    else:
        raise AssertionError("SQLite no longer refuses: this test no longer covers the race")
    finally:
        refused.close()
    attempts = []
    real_sleep = store.time.sleep

    def commit_on_first_retry(s):      # the holder lets go only once connect() is retrying
        attempts.append(s)
        if len(attempts) == 1:
            threading.Thread(target=holder.execute, args=("COMMIT",)).start()
        real_sleep(s)
    store.time.sleep = commit_on_first_retry
    try:
        conn = store.connect(db)
    finally:
        store.time.sleep = real_sleep
    assert attempts, "connect() never met the lock"
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]
    conn.close()
    holder.close()
