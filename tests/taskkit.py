"""Helpers for the task tests: a config pointing at the test LLM server, datasets, and a job run to the end.

Jobs run exactly as in production: `jobs.queue_job` (what `workbench run` calls), then a real worker
(`worker.run_worker`) drives the real openai client against tests/llm_server.py over HTTP.
"""
from __future__ import annotations

import json
import re

from workbench import jobs, store
from workbench.samples import insert_samples
from workbench.worker import run_worker


def config_for(server, models=("test-model",), *, pool_mode="each", json_mode="json_object") -> dict:
    """One endpoint per model on the server (named after the model) and a pool 'all' of them."""
    eps = {m: {"base_url": server.base_url, "model": m, "max_concurrency": 8, "timeout": 10, "max_retries": 1,
               "json_mode": json_mode} for m in models}
    return {"endpoints": eps, "pools": {"all": {"endpoints": list(models), "mode": pool_mode}}}


def add_dataset(conn, name: str, rows: list[dict], kind: str = "sft") -> list[int]:
    with store.transaction(conn):
        did = store.ensure_dataset(conn, name, kind)
        first, last = insert_samples(conn, did, rows)
    return list(range(first, last + 1))


def run(conn, db_path, task: str, *, config: dict, dataset: str | None = None, endpoint: str | None = None,
        pool: str | None = None, judge: str | None = None, into: str | None = None, params: dict | None = None,
        filter: dict | None = None) -> dict:
    """Queue a job, run a worker until it is idle, and return the finished job row."""
    if endpoint is None and pool is None:
        endpoint = next(iter(config["endpoints"]))
    job_id = jobs.queue_job(conn, task, config=config, dataset=dataset, endpoint=endpoint, pool=pool, judge=judge,
                            into=into, params=params or {}, filter=filter)
    run_worker(db_path, config, until_idle=True, job_id=job_id)
    return jobs.get_job(conn, job_id)


def rows(conn, sql: str, args=()) -> list[dict]:
    cur = conn.execute(sql, args)
    names = [d[0] for d in cur.description]
    out = []
    for r in cur.fetchall():
        d = dict(zip(names, r))
        for k in ("origin", "metadata", "scores", "result", "drop_reasons", "params"):
            if isinstance(d.get(k), str):
                d[k] = json.loads(d[k])
        out.append(d)
    return out


def samples_of(conn, dataset: str) -> list[dict]:
    return rows(conn, "SELECT * FROM samples WHERE dataset_id = ? ORDER BY id", (store.dataset_id(conn, dataset),))


def scores_of(conn, sample_id: int, *, with_scale: bool = False) -> dict:
    """{rubric: score} of one sample (with_scale: {rubric: (score, lo, hi, stale)})."""
    rows_ = conn.execute("SELECT rubric, score, scale_min, scale_max, stale FROM sample_scores WHERE sample_id = ?",
                         (sample_id,)).fetchall()
    return {r[0]: (r[1], r[2], r[3], bool(r[4])) if with_scale else r[1] for r in rows_}


def items_of(conn, job_id: int) -> list[dict]:
    return rows(conn, "SELECT * FROM job_items WHERE job_id = ? ORDER BY id", (job_id,))


def between(text: str, start: str, end: str = ">>>") -> str:
    """The text a template put between `start` and the next `end` marker (what the prompt was about)."""
    m = re.search(re.escape(start) + r"\s*<<<\n(.*?)\n" + re.escape(end), text, re.S)
    return m.group(1) if m else ""


def last_user(messages: list[dict]) -> str:
    return next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
