"""The installed CLI as a script sees it: a real subprocess, exit codes, JSON output."""
import json
import subprocess
import sys


def run(*argv, db):
    return subprocess.run([sys.executable, "-m", "workbench", "--db", str(db), *argv], capture_output=True, text=True)


def test_import_stats_and_datasets_in_a_subprocess(shared_data, tmp_path):
    db = tmp_path / "cli.db"
    p = run("import", str(shared_data / "fastchat-bench-questions" / "vicuna_bench_questions.tsv"), "--dataset", "v",
            db=db)
    assert p.returncode == 0, p.stderr
    assert "imported 80 rows into 'v'" in p.stdout
    stats = json.loads(run("stats", "--json", db=db).stdout)
    assert stats["status"] == {"pending": 80, "accepted": 0, "rejected": 0}
    assert stats["task_type"]["generic"] == 10 and stats["task_type"]["coding"] == 7
    sets = json.loads(run("datasets", "--json", db=db).stdout)
    assert [(d["name"], d["rows"]) for d in sets] == [("v", 80)]


def test_bad_file_exits_non_zero_without_traceback(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n{"instruction": 5\n')
    p = run("import", str(bad), db=tmp_path / "x.db")
    assert p.returncode == 1   # bad data (the exit-code table in the README)
    assert p.stderr.startswith(f"error: {bad}, line 2") and "Traceback" not in p.stderr


def test_db_option_after_the_command_and_env(tmp_path, shared_data, monkeypatch):
    db = tmp_path / "after.db"
    p = subprocess.run([sys.executable, "-m", "workbench", "import", "--db", str(db),
                        str(shared_data / "self-instruct-seed" / "seed_tasks_alpaca.json")], capture_output=True,
                       text=True)
    assert p.returncode == 0, p.stderr
    monkeypatch.setenv("WORKBENCH_DB", str(db))
    p = subprocess.run([sys.executable, "-m", "workbench", "datasets", "--json"], capture_output=True, text=True)
    assert json.loads(p.stdout)[0]["rows"] == 175


def test_import_brings_the_search_index_up_to_date_in_the_background(tmp_path, shared_data):
    import time
    from workbench.store import open_store
    db = tmp_path / "bg.db"
    env_home = tmp_path / "logs"
    p = subprocess.run([sys.executable, "-m", "workbench", "--db", str(db), "import",
                        str(shared_data / "self-instruct-seed" / "seed_tasks_alpaca.json")], capture_output=True,
                       text=True, env={**__import__("os").environ, "XDG_STATE_HOME": str(env_home)})
    assert p.returncode == 0, p.stderr
    conn = open_store(db)
    deadline = time.time() + 60
    while time.time() < deadline:
        row = conn.execute("SELECT value FROM meta WHERE key = 'fts_upto'").fetchone()
        if row and int(row[0]) == 175:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the background index did not catch up")
    hits = conn.execute("SELECT count(*) FROM samples_fts WHERE samples_fts MATCH ?", ('"breakfast"',)).fetchone()[0]
    assert hits >= 1
