"""The API key lives only in the environment: never in the store file, the config, a log, an export or an error."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from llm_server import LLMServer
from workbench.samples import insert_samples
from workbench.store import ensure_dataset, open_store, transaction

ROOT = Path(__file__).resolve().parent.parent
GOOD = "sk-good-7f3a9c1e5b2d4f60a8e1"
WRONG = "sk-wrong-0d9e8f7a6b5c4d3e2f1a"


def test_key_never_written_anywhere(cli, db_path, tmp_path, monkeypatch):
    monkeypatch.setenv("WB_GOOD_KEY", GOOD)
    monkeypatch.setenv("WB_WRONG_KEY", WRONG)
    conn = open_store(db_path)
    with transaction(conn):
        did = ensure_dataset(conn, "demo")
        insert_samples(conn, did, [{"instruction": f"Question {i}"} for i in range(6)])
    conn.close()
    log = tmp_path / "worker.log"
    outputs = []
    # a 401 reply echoes the key it was given, as some servers do
    with LLMServer(api_key=GOOD, models=["model-a", "model-b"]) as srv:
        for name, var, model in (("good", "WB_GOOD_KEY", "model-a"), ("bad", "WB_WRONG_KEY", "model-b")):
            code, out, err = cli("endpoints", "add", name, "--base-url", srv.base_url, "--model", model,
                                 "--api-key-env", var)
            assert code == 0, err
        outputs.append(cli("endpoints", "list"))
        outputs.append(cli("endpoints", "test", "good"))
        outputs.append(cli("endpoints", "test", "bad"))
        assert outputs[-1][0] == 1 and "HTTP 401" in outputs[-1][2] and "***" in outputs[-1][2]   # bad data (the exit-code table in the README)
        for name in ("good", "bad"):
            code, out, err = cli("run", "generate", "--dataset", "demo", "--endpoint", name, "--into", f"out-{name}")
            assert code == 0, err
        with open(log, "wb") as f:      # a real worker process, logging as the TUI's detached workers do
            p = subprocess.run([sys.executable, "-m", "workbench", "worker", "--until-idle", "--db", str(db_path)],
                               stdout=f, stderr=f, cwd=ROOT, env=dict(os.environ), timeout=120)
        assert p.returncode == 0
        assert f"Bearer {GOOD}" in srv.stats.auth and f"Bearer {WRONG}" in srv.stats.auth
    outputs.append(cli("jobs", "--json"))
    outputs.append(cli("jobs", "show", "2"))
    assert "HTTP 401" in outputs[-1][1] and "incorrect API key provided: ***" in outputs[-1][1]
    export = tmp_path / "out.jsonl"
    outputs.append(cli("export", str(export), "--format", "messages", "--dataset", "out-good"))
    assert outputs[-1][0] == 0, outputs[-1][2]

    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"store.db", "store.db-wal", "config.toml", "worker.log", "out.jsonl"} <= names | {"store.db-wal"}
    assert ".out.jsonl.manifest.json" in names     # the export's manifest
    for p in files:
        data = p.read_bytes()
        for key in (GOOD, WRONG):
            assert key.encode() not in data, f"key found in {p}"
    for code, out, err in outputs:
        assert GOOD not in out + err and WRONG not in out + err
    assert b"WB_GOOD_KEY" in (tmp_path / "config.toml").read_bytes()   # only the variable's name is stored
