"""Keys: --api-key-env takes a variable NAME only, --api-key-file is checked for its mode, a key echoed in a reply
is redacted before anything stores it, and every file the workbench creates is 0600 (directories 0700)."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from llm_server import LLMServer
from workbench.endpoints import key_env_problem
from workbench.samples import insert_samples
from workbench.store import ensure_dataset, open_store, transaction

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-proj-Q7f3a9c1E5b2d4f60a8e1Zx"

PASTED = [
    KEY,                                          # an OpenAI-style key
    "sk_live_51HxYzAbCdEf1234567890",             # Stripe-style, only name characters
    "hf_AbCdEfGhIjKlMnOpQrStUv1234",              # Hugging Face token
    "ghp_16C7e42F292c6912E7710c838347Ae178B4a",   # GitHub token
    "AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUv",     # Google API key
    "xoxb-123456789012-abcdefABCDEF",             # Slack
    "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6",           # 32 hex characters
    "Q7f3a9c1E5b2d4f60a8e1",                      # mixed case and digits, 21 characters
    "OPENAI_API_KEY=sk-abc",                      # an assignment pasted whole
    "$OPENAI_API_KEY",                            # the shell's expansion syntax
    "my key",                                     # spaces
    "9LIVES",                                     # starts with a digit
    "",                                           # empty
]
NAMES = ["OPENAI_API_KEY", "WB_GOOD_KEY", "my_local_key", "LLM_KEY_2024", "key_for_local_llm", "HF_TOKEN",
         "ANTHROPIC_API_KEY", "_PRIVATE", "X", "SK_LIVE_KEY_FOR_TESTS_2024"]


@pytest.mark.parametrize("value", PASTED)
def test_pasted_keys_are_refused_without_being_repeated(cli, tmp_path, value):
    config = tmp_path / "config.toml"
    code, out, err = cli("endpoints", "add", "x", "--base-url", "http://127.0.0.1:9/v1", "--model", "m",
                         "--api-key-env", value)
    assert code == 2, err
    if not value:      # an empty value is refused for every option (tests/test_hostile_args.py)
        assert "--api-key-env is empty" in err
        return
    assert "NAME of an environment variable" in err and "--api-key-file" in err and "not stored" in err
    if len(value) > 3:
        assert value not in out + err
    assert not config.exists()                      # nothing written


@pytest.mark.parametrize("name", NAMES)
def test_variable_names_are_accepted(name):
    assert key_env_problem(name) is None


def test_the_value_of_an_environment_variable_is_refused(monkeypatch):
    monkeypatch.setenv("SOME_PROVIDER_TOKEN", "plainlowercasetokenvalue")
    assert "value of an environment variable" in key_env_problem("plainlowercasetokenvalue")


def test_a_key_in_an_existing_config_is_refused_without_being_shown(cli, tmp_path):
    (tmp_path / "config.toml").write_text(f'[endpoints.x]\nbase_url = "http://127.0.0.1:9/v1"\nmodel = "m"\n'
                                          f'api_key_env = "{KEY}"\n')
    code, out, err = cli("endpoints", "list")
    assert code == 1 and "NAME of an environment variable" in err and KEY not in out + err   # a bad config: 1
    assert "remove it from the config file" in err


def test_key_file_mode_is_checked(cli, tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    for mode in (0o644, 0o640, 0o604, 0o660, 0o602):
        os.chmod(key_file, mode)
        code, out, err = cli("endpoints", "add", "x", "--base-url", "http://127.0.0.1:9/v1", "--model", "m",
                             "--api-key-file", str(key_file))
        assert code == 2 and f"mode {mode:04o}" in err and "chmod 600" in err, err
        assert KEY not in out + err and not (tmp_path / "config.toml").exists()
    code, out, err = cli("endpoints", "add", "x", "--base-url", "http://127.0.0.1:9/v1", "--model", "m",
                         "--api-key-file", str(tmp_path / "missing"))
    assert code == 2 and "cannot read key file" in err
    empty = tmp_path / "empty"
    empty.write_text("\n")
    os.chmod(empty, 0o600)
    code, out, err = cli("endpoints", "add", "x", "--base-url", "http://127.0.0.1:9/v1", "--model", "m",
                         "--api-key-file", str(empty))
    assert code == 2 and "is empty" in err
    code, out, err = cli("endpoints", "add", "x", "--base-url", "http://127.0.0.1:9/v1", "--model", "m",
                         "--api-key-env", "A", "--api-key-file", str(empty))
    assert code == 2 and "not allowed with" in err


def test_key_file_is_used_and_echoed_key_is_redacted_everywhere(cli, tmp_path, db_path):
    """A server that requires the key and puts it in every reply: the store (cache, items, judgments, samples),
    the worker's log, the exports and every output hold *** instead."""
    key_file = tmp_path / "keys" / "local"
    key_file.parent.mkdir()
    key_file.write_text(KEY + "\n")
    os.chmod(key_file, 0o600)
    conn = open_store(db_path)
    with transaction(conn):
        did = ensure_dataset(conn, "demo")
        insert_samples(conn, did, [{"instruction": f"Question {i}", "response": f"Answer {i}"} for i in range(4)])
    conn.close()
    outputs = []

    def echo(messages, body):
        return f"Sure. Your key is {KEY} and the answer is 4. Score: nothing"
    log = tmp_path / "worker.log"
    with LLMServer(api_key=KEY, reply=echo) as srv:
        outputs.append(cli("endpoints", "add", "local", "--base-url", srv.base_url, "--model", "test-model",
                           "--api-key-file", str(key_file)))
        assert outputs[-1][0] == 0, outputs[-1][2]
        outputs.append(cli("endpoints", "list"))
        assert f"key file {key_file}" in outputs[-1][1]
        outputs.append(cli("endpoints", "test", "local"))
        assert outputs[-1][0] == 0 and "***" in outputs[-1][1], outputs[-1]
        outputs.append(cli("run", "generate", "--dataset", "demo", "--endpoint", "local", "--into", "gen"))
        outputs.append(cli("run", "judge", "--dataset", "demo", "--endpoint", "local"))
        with open(log, "wb") as f:
            p = subprocess.run([sys.executable, "-m", "workbench", "worker", "--until-idle", "--db", str(db_path)],
                               stdout=f, stderr=f, cwd=ROOT, env=dict(os.environ), timeout=120)
        assert p.returncode == 0, log.read_text()
        assert f"Bearer {KEY}" in srv.stats.auth           # the key from the file was sent
    outputs.append(cli("jobs", "show", "2"))
    assert "***" in outputs[-1][1]                         # the judge's unparseable raw reply, redacted
    outputs.append(cli("export", str(tmp_path / "out.jsonl"), "--format", "messages", "--dataset", "gen"))
    assert outputs[-1][0] == 0, outputs[-1][2]
    conn = open_store(db_path)
    gen = conn.execute("SELECT response FROM samples WHERE response LIKE 'Sure.%'").fetchall()
    assert gen and all("***" in r[0] for r in gen)
    assert conn.execute("SELECT count(*) FROM llm_cache").fetchone()[0] > 0
    conn.close()
    for f in tmp_path.rglob("*"):
        if f.is_file() and f != key_file:
            assert KEY.encode() not in f.read_bytes(), f"key found in {f}"
    for code, out, err in outputs:
        assert KEY not in out + err


def test_created_files_are_private(cli, tmp_path, monkeypatch):
    old = os.umask(0o022)              # a usual umask: files would be 0644, directories 0755
    try:
        # only the default store location is created (a --db in a missing directory is an error, issue 12)
        code, out, err = cli("datasets", "--db", str(tmp_path / "new" / "deep" / "store.db"))
        assert code == 2 and "does not exist" in err and not (tmp_path / "new").exists()
        monkeypatch.delenv("WORKBENCH_DB")
        from workbench.store import default_db_path
        db = default_db_path()
        assert not db.parent.parent.exists()
        config = tmp_path / "conf" / "config.toml"
        data = tmp_path / "in.jsonl"
        data.write_text('{"instruction": "a", "response": "b"}\n')
        code, out, err = cli("import", str(data), "--dataset", "d", "--config", str(config))
        assert code == 0, err
        code, out, err = cli("endpoints", "add", "x", "--base-url", "http://127.0.0.1:9/v1", "--model", "m",
                             "--config", str(config))
        assert code == 0, err
        out_file = tmp_path / "exports" / "out.jsonl"
        code, out, err = cli("export", str(out_file), "--format", "alpaca", "--db", str(db))
        assert code == 0, err
        code, out, err = cli("export", str(tmp_path / "out.parquet"), "--format", "parquet", "--db", str(db))
        assert code == 0, err
        conn = open_store(db)          # WAL mode: -wal and -shm exist while a connection is open
        try:
            conn.execute("SELECT count(*) FROM samples").fetchone()
            files = [db, Path(f"{db}-wal"), Path(f"{db}-shm"), config, out_file,
                     out_file.with_name(".out.jsonl.manifest.json"), tmp_path / "out.parquet",
                     tmp_path / ".out.parquet.manifest.json"]
            for f in files:
                assert f.exists(), f
                assert stat.S_IMODE(f.stat().st_mode) == 0o600, (f, oct(f.stat().st_mode))
        finally:
            conn.close()
        for d in (db.parent.parent, db.parent, tmp_path / "conf", tmp_path / "exports"):
            assert stat.S_IMODE(d.stat().st_mode) == 0o700, (d, oct(d.stat().st_mode))
    finally:
        os.umask(old)


def test_existing_directory_is_not_chmodded(cli, tmp_path):
    old = os.umask(0o022)
    try:
        existing = tmp_path / "shared"
        existing.mkdir(mode=0o755)
        os.chmod(existing, 0o755)
        code, out, err = cli("import", str(_one_row(tmp_path)), "--dataset", "d", "--db", str(existing / "s.db"))
        assert code == 0, err
        assert stat.S_IMODE(existing.stat().st_mode) == 0o755
        assert stat.S_IMODE((existing / "s.db").stat().st_mode) == 0o600
    finally:
        os.umask(old)


def _one_row(tmp_path) -> Path:
    p = tmp_path / "one.jsonl"
    p.write_text('{"instruction": "a", "response": "b"}\n')
    return p
