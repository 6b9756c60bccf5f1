"""The CLI contract: endpoints, pools, run (help, params, errors), jobs controls, --wait watching another worker."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llm_server import LLMServer
from workbench import jobs as J
from workbench.config import load_config
from workbench.samples import insert_samples
from workbench.store import ensure_dataset, open_store, transaction

ROOT = Path(__file__).resolve().parent.parent


def make_dataset(db_path, n=3):
    conn = open_store(db_path)
    with transaction(conn):
        did = ensure_dataset(conn, "demo")
        insert_samples(conn, did, [{"instruction": f"Question {i}"} for i in range(n)])
    conn.close()


def test_endpoints_add_list_remove(cli, tmp_path):
    code, out, err = cli("endpoints", "add", "vllm", "--base-url", "http://10.0.0.5:8000/v1", "--model", "qwen",
                         "--api-key-env", "VLLM_KEY", "--max-concurrency", "64", "--rpm", "600",
                         "--param", "temperature=0.7", "--cost-in", "0.5")
    assert code == 0, err
    cfg = load_config(tmp_path / "config.toml")
    ep = cfg["endpoints"]["vllm"]
    assert ep["model"] == "qwen" and ep["api_key_env"] == "VLLM_KEY" and ep["max_concurrency"] == 64
    assert ep["rpm"] == 600 and ep["params"] == {"temperature": 0.7} and ep["cost_per_1k_input"] == 0.5
    code, out, _ = cli("endpoints", "list")
    assert code == 0 and "vllm" in out and "key $VLLM_KEY (unset)" in out
    code, out, _ = cli("endpoints", "list", "--json")
    assert '"key_set": false' in out
    assert cli("pools", "add", "p", "--endpoint", "vllm", "--mode", "each")[0] == 0
    code, _, err = cli("endpoints", "remove", "vllm")
    assert code == 2 and "used by pool(s) p" in err


@pytest.mark.parametrize("args,message", [
    (["--base-url", "localhost:8000", "--model", "m"], "base_url must be an http(s) URL"),
    (["--base-url", "http://h/v1", "--model", "m", "--api-key-env", "sk-abc.def"], "NAME of an environment variable"),
    (["--base-url", "http://h/v1", "--model", "m", "--max-concurrency", "0"], "--max-concurrency: '0': a whole number from 1"),
    (["--base-url", "http://h/v1", "--model", "m", "--param", "temperature"], "expected key=value"),
])
def test_endpoints_add_rejects_bad_input(cli, tmp_path, args, message):
    code, _, err = cli("endpoints", "add", "x", *args)
    assert code == 2 and message in err
    assert not (tmp_path / "config.toml").exists()


def test_pool_with_unknown_endpoint(cli):
    code, _, err = cli("pools", "add", "p", "--endpoint", "ghost")
    assert code == 2 and "--endpoint ghost: no endpoint named 'ghost'" in err


def test_bad_config_file_is_named(cli, tmp_path):
    (tmp_path / "config.toml").write_text("[endpoints.x\nbase_url = 1\n")
    code, _, err = cli("endpoints", "list")
    assert code == 1 and "config.toml" in err   # bad data (the exit-code table in the README)


def test_run_help_lists_params_and_filters(cli):
    code, out, _ = cli("run", "generate", "--help")
    assert code == 0
    assert "temperature = None" in out and "max_tokens" in out and "filter keys" in out and "no_response" in out
    code, out, _ = cli("run", "--help")
    assert code == 0 and "generate" in out


def test_run_errors(cli, db_path):
    make_dataset(db_path)
    cli("endpoints", "add", "local", "--base-url", "http://127.0.0.1:9/v1", "--model", "m")
    code, _, err = cli("run", "generate", "--dataset", "demo", "--endpoint", "local", "--param", "colour=red")
    assert code == 2 and "unknown param colour" in err and "valid params: system" in err
    code, _, err = cli("run", "generate", "--dataset", "nope", "--endpoint", "local")
    assert code == 2 and "no dataset named 'nope'" in err
    code, _, err = cli("run", "generate", "--dataset", "demo", "--endpoint", "local", "--pool", "x")
    assert code == 2                                  # argparse: not both
    code, _, err = cli("run", "generate", "--dataset", "demo", "--pool", "local")
    assert code == 2 and "no pool named 'local'" in err
    code, _, err = cli("run", "nosuchtask", "--dataset", "demo", "--endpoint", "local")
    assert code == 2
    assert open_store(db_path).execute("SELECT count(*) FROM jobs").fetchone()[0] == 0


def test_jobs_controls_cli(cli, db_path):
    make_dataset(db_path)
    cli("endpoints", "add", "local", "--base-url", "http://127.0.0.1:9/v1", "--model", "m")
    code, out, err = cli("run", "generate", "--dataset", "demo", "--endpoint", "local")
    assert code == 0 and out.strip() == "1" and "queued job 1: generate, 3 items into demo-generate" in err
    assert cli("jobs", "pause", "1")[1].strip() == "job 1: paused"
    code, _, err = cli("jobs", "pause", "1")
    assert code == 2 and "job 1 is paused: cannot pause it" in err
    assert cli("jobs", "resume", "1")[1].strip() == "job 1: queued"
    assert cli("jobs", "cancel", "1")[1].strip() == "job 1: cancelled"
    code, _, err = cli("jobs", "show", "99")
    assert code == 2 and "no job 99" in err
    code, out, _ = cli("jobs", "show", "1", "--json")
    assert code == 0 and '"status": "cancelled"' in out and '"failures": []' in out


def test_wait_watches_the_worker_that_holds_the_job(cli, db_path, tmp_path):
    make_dataset(db_path, n=40)
    with LLMServer(latency=0.05, capacity=2) as srv:
        cli("endpoints", "add", "local", "--base-url", srv.base_url, "--model", "test-model",
            "--max-concurrency", "2")
        code, out, _ = cli("run", "generate", "--dataset", "demo", "--endpoint", "local")
        jid = int(out)
        p = subprocess.Popen([sys.executable, "-m", "workbench", "worker", "--until-idle", "--db", str(db_path)],
                             cwd=ROOT, env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        conn = open_store(db_path)
        while J.get_job(conn, jid)["status"] != "running":
            time.sleep(0.05)
        from workbench.cli.jobs import wait_for_job
        assert wait_for_job(db_path, load_config(), jid) == 0     # watched it to the end, ran nothing itself
        assert p.wait(30) == 0
        j = J.get_job(conn, jid)
        assert (j["status"], j["done"]) == ("done", 40) and srv.stats.completions == 40
        conn.close()


def test_endpoints_test_reports_latency_models_and_a_wrong_model(cli):
    with LLMServer(latency=0.01) as srv:
        cli("endpoints", "add", "ok", "--base-url", srv.base_url, "--model", "test-model")
        code, out, err = cli("endpoints", "test", "ok")
        assert code == 0, err
        assert "endpoint ok: ok" in out and " ms," in out and "server models (1): test-model" in out
        cli("endpoints", "add", "typo", "--base-url", srv.base_url, "--model", "tset-model")
        code, out, err = cli("endpoints", "test", "typo")
    assert code == 1   # bad data (the exit-code table in the README)
    assert "endpoint typo failed" in err and "the server lists: test-model" in err
