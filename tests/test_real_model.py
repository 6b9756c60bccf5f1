"""A real model behind a real OpenAI-compatible server: llama.cpp's llama-server serving SmolLM2-135M-Instruct.

Off by default (`-m real_model` runs it). It needs the build that `python benchmarks/real_model.py` makes and caches;
without it the test is skipped with the reason. A 135M model fails many templates: what is checked is that every
failure is itemized with its raw reply and that whatever was read is on the scale or in the label set."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import real_model as rm  # noqa: E402

pytestmark = [pytest.mark.real_model, pytest.mark.timeout(1800)]

ROWS = 4
CACHE = rm.cache_dir()      # read before the per-test HOME applies


@pytest.fixture(scope="module")
def wb(tmp_path_factory):
    server, model = rm.find_server(), rm.find_model()
    if server is None or model is None:
        pytest.skip(f"llama-server or {rm.MODEL_FILE} not cached under {rm.cache_dir()}: "
                    "run `python benchmarks/real_model.py` once to download and build them")
    try:
        data = rm.shared_data()
    except SystemExit as e:
        pytest.skip(str(e))
    work = tmp_path_factory.mktemp("real")
    w = rm.Workbench(work)
    with rm.llama_server(server, model, work / "llama-server.log") as url:
        rm.setup(w, url, 192, data)
        yield w


def _rows(w, sql, args=()):
    import sqlite3
    conn = sqlite3.connect(w.db)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


@pytest.mark.parametrize("task", ["generate", "curate", "judge", "label"])
def test_task_on_a_real_model_itemizes_failures_and_invents_nothing(wb, task):
    r = rm.run_task(wb, task, ROWS, 192)
    assert "error" not in r, r
    assert r["items"] == ROWS and r["parsed"] + r["failed"] == ROWS
    assert r["failed_without_raw"] == 0                       # every unreadable reply is kept with its item
    for error, raw in _rows(wb, "SELECT error, raw FROM job_items WHERE job_id = ? AND status = 'failed'", (r["job"],)):
        assert error and (raw or "HTTP" in error)
    if task == "judge":
        for scores, overall in _rows(wb, "SELECT scores, overall FROM judgments WHERE job_id = ?", (r["job"],)):
            assert all(isinstance(v, int) and 1 <= v <= 10 for v in json.loads(scores).values()) and 1 <= overall <= 10
    if task == "curate":
        for (overall,) in _rows(wb, "SELECT overall FROM judgments WHERE job_id = ?", (r["job"],)):
            assert overall in (1, 2, 3, 4, 5)
    if task == "label":
        from workbench.tasks.label import DEFAULT_LABELS
        for tt, dom, dif in _rows(wb, "SELECT task_type, domain, difficulty FROM samples WHERE task_type IS NOT NULL"):
            assert tt in DEFAULT_LABELS["task_type"] and dom in DEFAULT_LABELS["domain"] \
                and dif in DEFAULT_LABELS["difficulty"]
    if task == "generate":
        # plain generation reads every reply the model finished; the only failure is one it did not finish
        # (SmolLM2 runs past 192 tokens on 1-2 of these prompts, varying from run to run)
        assert r["parsed"] >= 1
        assert {why for why, _ in r["reasons"]} <= {"reply cut off at max_tokens (finish_reason=length)",
                                                    "looped to max_tokens"}, r["reasons"]


def test_a_pool_of_two_real_servers_loses_nothing_when_one_is_killed_mid_job(tmp_path, monkeypatch):
    if rm.find_server(CACHE) is None or rm.find_model(CACHE) is None:
        pytest.skip(f"llama-server or {rm.MODEL_FILE} not cached under {CACHE}")
    monkeypatch.setenv("WORKBENCH_REAL_MODEL_DIR", str(CACHE))     # tests run with a HOME of their own
    import real_model_pool
    r = real_model_pool.run(tmp_path, rows=10, kill_after=0.3, max_tokens=64, log=lambda m: None)
    assert r["killed"] is not None and r["items"] == 10
    assert (r["lost"], r["duplicated"]) == (0, 0), r["failures"]
    assert r["parsed"] + r["failed"] == 10 and r["failed_without_raw"] == 0
    assert any(line.startswith("smol1:") and "DOWN" in line for line in r["endpoint_lines"]), r["endpoint_lines"]


def test_the_batch_backend_on_a_real_model_reads_or_itemizes_every_reply(tmp_path, monkeypatch):
    if rm.find_server(CACHE) is None or rm.find_model(CACHE) is None:
        pytest.skip(f"llama-server or {rm.MODEL_FILE} not cached under {CACHE}")
    monkeypatch.setenv("WORKBENCH_REAL_MODEL_DIR", str(CACHE))
    import real_model_batch
    (r,) = real_model_batch.run(tmp_path, ["judge"], rows=3, max_tokens=128, log=lambda m: None)
    assert "error" not in r, r
    assert r["items"] == 3 and r["parsed"] + r["failed"] == 3 and r["failed_without_raw"] == 0
    assert r["upstream_completions"] >= 3                       # the real model answered the batch's lines
    assert any("ingested" in line for line in r["batch_lines"]), r["batch_lines"]
    for scores, overall in _rows(rm.Workbench(tmp_path), "SELECT scores, overall FROM judgments WHERE job_id = ?",
                                 (r["job"],)):
        assert all(isinstance(v, int) and 1 <= v <= 10 for v in json.loads(scores).values()) and 1 <= overall <= 10
