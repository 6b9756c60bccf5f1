"""Jobs in the store: queue, lease + heartbeat, batched commits of item results, controls, progress figures.

A job's status: queued -> running (a worker holds the lease) -> done | failed | cancelled; paused in between.
A `running` job whose lease expired (its worker died) is claimable again; a worker whose lease was taken over
stops. Every item's outputs are committed in the same transaction as its status, so after a kill -9 the
pending items are exactly those whose outputs are not in the store.
"""
from __future__ import annotations

import os
import socket
import sqlite3
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from .bigtext import preview_sql, preview_value, stream_field
from . import batch_state
from . import endpoints as endpoints_mod
from .filters import FILTER_KEYS, FilterError, filter_sql, iter_filtered, parse_filter  # noqa: F401  (re-exported)
from .filters import check_scores
from .samples import decode_sample, SAMPLE_COLUMNS
from .store import ensure_dataset, get_dataset, now, transaction
from .tasks import Item, Result, Task, TaskContext, TaskError, get_task, resolve_params, write_results

ACTIVE = ("queued", "running", "paused")
FINISHED = ("done", "failed", "cancelled")
LEASE_SECONDS = 30.0
ITEM_INSERT_CHUNK = 1000

# --- queueing --------------------------------------------------------------------------------------------

class StepTaken(Exception):
    """A recipe step was queued by another process (the job was not created)."""


def queue_job(conn: sqlite3.Connection, task_name: str, *, config: dict, dataset: str | None = None,
              endpoint: str | None = None, pool: str | None = None, judge: str | None = None,
              into: str | None = None, params: dict | None = None, filter: dict | None = None,
              allow_self_judge: bool = False, recipe_step: tuple[int, int] | None = None,
              batch: dict | None = None) -> int:
    """Check everything, then create the job and its items in one transaction. Returns the job id.

    `recipe_step` (recipe id, step index): the step is marked as this job in the same transaction; if another
    process queued it first, StepTaken is raised and nothing is written.
    `batch` ({"poll": seconds}): run the job through the endpoint's Batch API (workbench/batch.py)."""
    task_cls = get_task(task_name)
    if bool(endpoint) == bool(pool):
        raise TaskError("give exactly one of --endpoint NAME or --pool NAME")
    generators, _ = endpoints_mod.resolve(config, endpoint or pool, is_pool=bool(pool))   # raises EndpointError
    if batch is not None:
        check_batch(endpoint, pool, judge, batch)
    judges = endpoints_mod.resolve(config, judge)[0] if judge else generators
    resolved = resolve_params(task_cls, params or {})
    if task_cls.needs_dataset and not dataset:
        raise TaskError(f"task {task_name} needs --dataset NAME")
    ds = get_dataset(conn, dataset) if dataset else None
    if dataset and ds is None:
        raise TaskError(f"no dataset named {dataset!r}")
    try:
        check_scores(conn, ds[0] if ds else None, filter or {})
    except FilterError as e:
        raise TaskError(f"--filter: {e}") from None
    ctx = TaskContext(task=task_name, params=resolved, dataset=dataset, dataset_id=ds[0] if ds else None,
                      filter=dict(filter or {}), config=config, template_version=task_cls.template_version)
    task = task_cls(ctx)
    ctx.into = into or task.default_into()
    if ctx.into and ctx.into == dataset:
        raise TaskError("--into must name a different dataset than --dataset")
    task.validate(conn)
    self_judge = self_judging(task, conn, generators, judges, judge)
    if self_judge and not allow_self_judge:
        named = ", ".join(f"{j['endpoint']} (model {j['model']})" for j in self_judge)
        raise TaskError(f"the judge {named} is also a generator of the candidates it would rate: give --judge NAME "
                        "an endpoint or pool of another model, or pass --allow-self-judge to accept self-judging")
    job_params = {"task": resolved, "dataset": dataset, "into": ctx.into, "endpoint": endpoint, "pool": pool,
                  "judge": judge, "filter": ctx.filter}
    if self_judge:
        job_params.update(allow_self_judge=True, self_judge=self_judge)
    if batch is not None:
        job_params["batch"] = batch
    with transaction(conn):
        if ctx.into:
            ctx.into_id = ensure_dataset(conn, ctx.into, task_cls.into_kind)
        job_id = conn.execute(
            "INSERT INTO jobs (kind, params, status, dataset_id, into_dataset_id, created_at) VALUES (?,?,?,?,?,?)",
            (task_name, _dumps(job_params), "queued", ctx.dataset_id, ctx.into_id, now())).lastrowid
        ctx.job_id = job_id
        if recipe_step is not None and not conn.execute(
                "UPDATE recipe_steps SET job_id = ? WHERE recipe_id = ? AND idx = ? AND job_id IS NULL AND "
                "(SELECT status FROM recipes WHERE id = recipe_id) = 'running'", (job_id, *recipe_step)).rowcount:
            # queued by another process first, or the recipe was cancelled (or ended) since it was read
            raise StepTaken(f"recipe {recipe_step[0]} step {recipe_step[1]} is queued already or the recipe ended")
        if not add_items(conn, job_id, task.plan(conn)):
            raise TaskError(f"nothing to do: task {task_name} found no input items"
                            + (f" in dataset {dataset!r}" if dataset else "")
                            + (f" matching the filter {ctx.filter}" if ctx.filter else ""))
    return job_id


def check_batch(endpoint: str | None, pool: str | None, judge: str | None, batch: dict) -> None:
    """A batch goes to one provider account and one model: one endpoint, its own judge."""
    if pool or not endpoint:
        raise TaskError("--batch sends every request of the job to one endpoint's Batch API: give --endpoint NAME, "
                        "not --pool")
    if judge and judge != endpoint:
        raise TaskError("--batch: the judge must be the job's endpoint (one batch holds one endpoint's requests); "
                        "run the judging as a job of its own")
    poll = batch.get("poll")
    if not isinstance(poll, (int, float)) or isinstance(poll, bool) or not 0 < poll <= 3600:
        raise TaskError(f"--batch-poll: give seconds between 0 and 3600, not {poll!r}")


def self_judging(task, conn: sqlite3.Connection, generators: list, judges: list, judge: str | None) -> list[dict]:
    """The judge endpoints that also generated what they would rate (same endpoint or same model), or []."""
    sources = task.candidate_sources(conn, generators)
    if not sources or "judge" not in task.roles:
        return []
    names = {e for e, _ in sources if e}
    models = {m for _, m in sources if m}
    return [{"endpoint": ep.name, "model": ep.model} for ep in judges if ep.name in names or ep.model in models]


def add_items(conn: sqlite3.Connection, job_id: int, items) -> int:
    """Inside a transaction: insert items (a key already in the job is skipped) and raise the job's total."""
    added, chunk = 0, []

    def flush():
        nonlocal added
        before = conn.total_changes
        conn.executemany("INSERT OR IGNORE INTO job_items (job_id, key, sample_id, payload, status) "
                         "VALUES (?,?,?,?, 'pending')", chunk)
        added += conn.total_changes - before
        chunk.clear()
    for it in items:
        chunk.append((job_id, it.key, it.sample_id, None if it.payload is None else _dumps(it.payload)))
        if len(chunk) >= ITEM_INSERT_CHUNK:
            flush()
    if chunk:
        flush()
    if added:
        conn.execute("UPDATE jobs SET total = total + ? WHERE id = ?", (added, job_id))
    return added


def _dumps(v: Any) -> str:
    return orjson.dumps(v).decode()


# --- reading --------------------------------------------------------------------------------------------

JOB_COLUMNS = ("id", "kind", "params", "status", "dataset_id", "into_dataset_id", "total", "done", "failed", "kept",
               "dropped", "drop_reasons", "tokens_in", "tokens_out", "cost", "cache_hits", "lease_owner",
               "lease_expires", "heartbeat_at", "error", "created_at", "started_at", "finished_at", "rate",
               "run_seconds", "requests", "retries", "endpoint_stats")


def _job(row) -> dict:
    j = dict(zip(JOB_COLUMNS, row))
    j["params"] = orjson.loads(j["params"]) if j["params"] else {}
    j["drop_reasons"] = orjson.loads(j["drop_reasons"]) if j["drop_reasons"] else {}
    j["endpoint_stats"] = orjson.loads(j["endpoint_stats"]) if j["endpoint_stats"] else []
    j.update(progress_figures(j))
    return j


def progress_figures(j: dict) -> dict:
    """Remaining items, items/s, ETA (s) and whether a live worker holds the job."""
    remaining = max(0, j["total"] - j["done"] - j["failed"])
    rate = j.get("rate") or 0.0
    if not rate and j.get("run_seconds"):
        rate = j["done"] / j["run_seconds"] if j["run_seconds"] > 0 else 0.0
    live = j["status"] == "running" and (j.get("lease_expires") or 0) > time.time()
    # running, but its worker's lease ran out: the worker died (kill -9, a crash, a lost machine); the next worker
    # takes the job over
    stale = j["status"] == "running" and not live
    return {"remaining": remaining, "items_per_s": rate, "eta_s": remaining / rate if rate > 0 and live else None,
            "live": live, "stale": stale,
            "fraction": (j["done"] + j["failed"]) / j["total"] if j["total"] else 0.0}


def endpoint_lines(j: dict) -> list[str]:
    """One line per endpoint of the job's latest run: the limit the program found, its share of the replies,
    replies/s, errors, mean latency."""
    figs = j.get("endpoint_stats") or []
    total = sum(f.get("ok", 0) for f in figs) or 1
    secs = j.get("run_seconds") or 0
    out = []
    for f in figs:
        rate = f"{f['ok'] / secs:.1f}/s" if secs > 0 else "-"
        lat = f"{f['latency_ms']:.0f} ms" if f.get("latency_ms") is not None else "-"
        out.append(f"{f['endpoint']}: limit {f['limit']} (peak {f['peak']}) · {f['ok']} replies "
                   f"({100 * f['ok'] / total:.0f} %) · {rate} · {f['errors']} errors · {lat}"
                   + (" · DOWN" if f.get("down") else ""))
    return out


def get_job(conn: sqlite3.Connection, job_id: int) -> dict:
    row = conn.execute(f"SELECT {', '.join(JOB_COLUMNS)} FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None:
        raise TaskError(f"no job {job_id}")
    return _with_batch(conn, _job(row))


def _with_batch(conn: sqlite3.Connection, j: dict) -> dict:
    """A batch job carries its latest round (state, remote status, request counts) as j['batch']."""
    if j["params"].get("batch"):
        j["batch"] = batch_state.summary(conn, j["id"])
    return j


def job_report(conn: sqlite3.Connection, job: dict) -> dict:
    """Task-specific figures about a job's outputs (a task class may define `report(conn, job)`), or {}."""
    try:
        fn = getattr(get_task(job["kind"]), "report", None)
    except TaskError:
        return {}
    return fn(conn, job) if fn else {}


def list_jobs(conn: sqlite3.Connection, limit: int = 500) -> list[dict]:
    rows = conn.execute(f"SELECT {', '.join(JOB_COLUMNS)} FROM jobs ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
    jobs = [_with_batch(conn, _job(r)) for r in rows]
    # items that ran and kept nothing (counted in `done` too): the Jobs screen shows them apart (index job_items_status)
    dropped = dict(conn.execute(
        f"SELECT job_id, count(*) FROM job_items WHERE status = 'dropped' AND job_id IN "
        f"({','.join('?' * len(jobs))}) GROUP BY job_id", [j["id"] for j in jobs]).fetchall()) if jobs else {}
    for j in jobs:
        j["items_dropped"] = dropped.get(j["id"], 0)
    return jobs


def failures(conn: sqlite3.Connection, job_id: int, limit: int = 50, *, clip: bool = False) -> list[dict]:
    """The latest failed (and dropped-with-raw) items, newest first, with error text and raw reply.

    clip=True (screens): error and raw hold at most PREVIEW_BYTES; `clipped` maps a longer one to its size."""
    cols = [preview_sql(c) if clip else f"{c}, NULL" for c in ("error", "raw")]
    rows = conn.execute(
        f"SELECT id, key, sample_id, status, attempts, {cols[0]}, {cols[1]}, updated_at FROM job_items "
        "WHERE job_id = ? AND status IN ('failed', 'dropped') ORDER BY updated_at DESC, id DESC LIMIT ?",
        (job_id, limit)).fetchall()
    out = []
    for r in rows:
        f = dict(zip(("id", "key", "sample_id", "status", "attempts"), r[:5]), updated_at=r[9], clipped={})
        for name, value, size in (("error", r[5], r[6]), ("raw", r[7], r[8])):
            f[name], cut = preview_value(value)
            if cut:
                f["clipped"][name] = size
        out.append(f)
    return out


def failure_parts(conn: sqlite3.Connection, item_ids: list[int]):
    """The whole error and raw reply of some items, for $PAGER."""
    for iid in item_ids:
        key = conn.execute("SELECT key FROM job_items WHERE id = ?", (iid,)).fetchone()
        if key is None:
            continue
        for column in ("error", "raw"):
            yield f"===== item {key[0]} · {column} =====\n"
            yield from stream_field(conn, "job_items", column, iid)
            yield "\n\n"


def item_counts(conn: sqlite3.Connection, job_id: int) -> dict[str, int]:
    return dict(conn.execute("SELECT status, count(*) FROM job_items WHERE job_id = ? GROUP BY status", (job_id,)))


# --- controls (CLI and TUI) -------------------------------------------------------------------------------

def _set_status(conn, job_id: int, allowed: tuple, status: str, what: str, **extra) -> dict:
    with transaction(conn):
        job = get_job(conn, job_id)
        if job["status"] not in allowed:
            raise TaskError(f"job {job_id} is {job['status']}: cannot {what} it")
        sets = ", ".join(["status = ?"] + [f"{k} = ?" for k in extra])
        conn.execute(f"UPDATE jobs SET {sets} WHERE id = ?", (status, *extra.values(), job_id))
    return get_job(conn, job_id)


def cancel_job(conn, job_id: int) -> dict:
    return _set_status(conn, job_id, ACTIVE, "cancelled", "cancel", finished_at=now())


def pause_job(conn, job_id: int) -> dict:
    return _set_status(conn, job_id, ("queued", "running"), "paused", "pause")


def resume_job(conn, job_id: int) -> dict:
    return _set_status(conn, job_id, ("paused",), "queued", "resume", error=None)


def retry_failed(conn, job_id: int) -> int:
    """Failed items back to pending and the job back in the queue. Returns how many items will run again.
    Items a cancelled job never ran get the item status 'cancelled' and are not run."""
    with transaction(conn):
        job = get_job(conn, job_id)
        if job["status"] == "running" and job["live"]:
            raise TaskError(f"job {job_id} is running: pause it first, or let it finish")
        if job["status"] == "cancelled":
            # what the curator cancelled stays cancelled: only the failed items run again
            conn.execute("UPDATE job_items SET status = 'cancelled', updated_at = ? WHERE job_id = ? AND "
                         "status = 'pending'", (now(), job_id))
        # (a stray line of a batch's output is no request: it stays failed, its raw line kept)
        n = conn.execute("UPDATE job_items SET status = 'pending', error = NULL, updated_at = ? "
                         "WHERE job_id = ? AND status = 'failed' AND key NOT LIKE 'batch-line:%'",
                         (now(), job_id)).rowcount
        pending = conn.execute("SELECT count(*) FROM job_items WHERE job_id = ? AND status = 'pending'",
                               (job_id,)).fetchone()[0]
        if pending or job["status"] not in FINISHED:
            conn.execute("UPDATE jobs SET status = 'queued', failed = failed - ?, error = NULL, finished_at = NULL "
                         "WHERE id = ?", (n, job_id))
    return n


# --- leases ------------------------------------------------------------------------------------------------

def new_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _owner_dead(owner: str | None) -> bool:
    """A lease held by a process on this host that no longer exists can be taken over at once."""
    if not owner:
        return True
    host, _, rest = owner.partition(":")
    pid = rest.split(":", 1)[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def claim_job(conn: sqlite3.Connection, owner: str, lease_seconds: float = LEASE_SECONDS,
              job_id: int | None = None) -> dict | None:
    """Take the oldest runnable job (or job_id): queued, or running with an expired or orphaned lease."""
    with transaction(conn):
        t = time.time()
        sql = "SELECT id, lease_owner, lease_expires, status FROM jobs WHERE status IN ('queued', 'running')"
        args: tuple = ()
        if job_id is not None:
            sql += " AND id = ?"
            args = (job_id,)
        for jid, lowner, lexp, status in conn.execute(sql + " ORDER BY id", args).fetchall():
            if status == "running" and lowner and (lexp or 0) > t and not _owner_dead(lowner):
                continue
            conn.execute("UPDATE jobs SET status = 'running', lease_owner = ?, lease_expires = ?, heartbeat_at = ?, "
                         "started_at = coalesce(started_at, ?), error = NULL WHERE id = ?",
                         (owner, t + lease_seconds, t, now(), jid))
            return get_job(conn, jid)
    return None


class LeaseLost(Exception):
    """Another worker owns the job now (ours expired): stop without writing."""


def heartbeat(conn: sqlite3.Connection, job_id: int, owner: str, lease_seconds: float = LEASE_SECONDS,
              *, rate: float | None = None, run_seconds: float = 0.0, error: str | None = None,
              endpoints: list[dict] | None = None) -> str:
    """Extend the lease and record rate/run time and each endpoint's figures; returns the job's status (a pause or
    cancel shows here)."""
    with transaction(conn):
        row = conn.execute("SELECT lease_owner, status FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None or row[0] != owner:
            raise LeaseLost(f"job {job_id} is now held by another worker")
        t = time.time()
        conn.execute("UPDATE jobs SET lease_expires = ?, heartbeat_at = ?, rate = ?, "
                     "run_seconds = run_seconds + ?, error = coalesce(?, error), "
                     "endpoint_stats = coalesce(?, endpoint_stats) WHERE id = ?",
                     (t + lease_seconds, t, rate, run_seconds, error,
                      orjson.dumps(endpoints).decode() if endpoints else None, job_id))
        return row[1]


def record_endpoint_stats(conn: sqlite3.Connection, job_id: int, figures: list[dict]) -> None:
    with transaction(conn):
        conn.execute("UPDATE jobs SET endpoint_stats = ? WHERE id = ?", (orjson.dumps(figures).decode(), job_id))


def release(conn: sqlite3.Connection, job_id: int, owner: str, status: str | None = None,
            error: str | None = None) -> None:
    """Give the job up: finished (status done/failed), or back to the queue if it was still running."""
    with transaction(conn):
        row = conn.execute("SELECT lease_owner, status FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None or row[0] != owner:
            return
        new = status or ("queued" if row[1] == "running" else row[1])
        fin = now() if new in FINISHED else None
        conn.execute("UPDATE jobs SET status = ?, lease_owner = NULL, lease_expires = NULL, rate = NULL, "
                     "error = coalesce(?, error), finished_at = coalesce(?, finished_at) WHERE id = ?",
                     (new, error, fin, job_id))


# --- items in the worker --------------------------------------------------------------------------------------

def pending_items(conn: sqlite3.Connection, job_id: int, after_id: int, limit: int) -> list[Item]:
    """Pending items after `after_id` (keyset), each with its input sample loaded."""
    rows = conn.execute("SELECT id, key, sample_id, payload, attempts FROM job_items "
                        "WHERE job_id = ? AND status = 'pending' AND id > ? ORDER BY id LIMIT ?",
                        (job_id, after_id, limit)).fetchall()
    ids = [r[2] for r in rows if r[2] is not None]
    samples = {}
    if ids:
        cols = ", ".join(SAMPLE_COLUMNS)
        for i in range(0, len(ids), 500):
            part = ids[i:i + 500]
            for r in conn.execute(f"SELECT {cols} FROM samples WHERE id IN ({','.join('?' * len(part))})", part):
                samples[r[0]] = decode_sample(r)
    return [Item(key=k, sample_id=sid, payload=orjson.loads(p) if p else None, id=iid, sample=samples.get(sid),
                 attempts=att) for iid, k, sid, p, att in rows]


@dataclass
class Outcome:
    """What happened to one item in the worker: a Result, or an error (with the raw reply if there was one)."""
    item: Item
    result: Result | None = None
    error: str | None = None
    raw: str | None = None


def commit_batch(conn: sqlite3.Connection, job_id: int, owner: str, task: Task, outcomes: list[Outcome],
                 usage=None, cache_rows: list[tuple] | None = None) -> None:
    """One transaction: cache rows, usage, and every item's outputs together with its status and the job's counts.

    Raises LeaseLost (and writes nothing) if another worker has taken the job over.
    """
    from .llm import write_cache_rows
    with transaction(conn):
        row = conn.execute("SELECT lease_owner FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None or row[0] != owner:
            raise LeaseLost(f"job {job_id} is now held by another worker")
        write_cache_rows(conn, cache_rows or [])
        done = failed = kept = dropped = 0
        reasons: dict[str, int] = {}
        ts = now()
        settled = _write_outcomes(conn, job_id, task, _unsettled(conn, outcomes))
        for o, summary in settled:
            if o.result is not None:
                r = o.result
                k = r.kept_count
                d = sum(r.dropped.values())
                item_status = "dropped" if k == 0 and d > 0 else "done"
                conn.execute("UPDATE job_items SET status = ?, attempts = attempts + 1, error = NULL, raw = ?, "
                             "result = ?, updated_at = ? WHERE id = ?",
                             (item_status, r.raw, _dumps(summary) if summary else None, ts, o.item.id))
                done += 1
                kept += k
                dropped += d
                for rule, n in r.dropped.items():
                    reasons[rule] = reasons.get(rule, 0) + n
            else:
                conn.execute("UPDATE job_items SET status = 'failed', attempts = attempts + 1, error = ?, raw = ?, "
                             "updated_at = ? WHERE id = ?", (o.error, o.raw, ts, o.item.id))
                failed += 1
        sets = ["done = done + ?", "failed = failed + ?", "kept = kept + ?", "dropped = dropped + ?"]
        args: list = [done, failed, kept, dropped]
        if reasons:
            old = conn.execute("SELECT drop_reasons FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]
            merged = orjson.loads(old) if old else {}
            for rule, n in reasons.items():
                merged[rule] = merged.get(rule, 0) + n
            sets.append("drop_reasons = ?")
            args.append(_dumps(merged))
        if usage is not None:
            sets += ["tokens_in = tokens_in + ?", "tokens_out = tokens_out + ?", "cost = cost + ?",
                     "cache_hits = cache_hits + ?", "requests = requests + ?", "retries = retries + ?"]
            args += [usage.tokens_in, usage.tokens_out, usage.cost, usage.cache_hits, usage.requests, usage.retries]
        conn.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE id = ?", (*args, job_id))


def _unsettled(conn: sqlite3.Connection, outcomes: list[Outcome]) -> list[Outcome]:
    """Outcomes whose item is still pending: an item's outputs are never written twice."""
    ids = [o.item.id for o in outcomes]
    pending = set()
    for i in range(0, len(ids), 500):
        part = ids[i:i + 500]
        pending.update(r[0] for r in conn.execute(
            f"SELECT id FROM job_items WHERE status = 'pending' AND id IN ({','.join('?' * len(part))})", part))
    out = []
    for o in outcomes:
        if o.item.id in pending:
            pending.discard(o.item.id)      # one outcome per item, even if it was run twice
            out.append(o)
    return out


def _write_outcomes(conn: sqlite3.Connection, job_id: int, task: Task,
                    outcomes: list[Outcome]) -> list[tuple[Outcome, dict | None]]:
    """Write the results: all at once when the task keeps the default write (one duplicate check per batch), else,
    or if that fails, item by item in savepoints so a write that fails fails its own item only."""
    ok = [o for o in outcomes if o.result is not None]
    out: list[tuple[Outcome, dict | None]] = [(o, None) for o in outcomes if o.result is None]
    if ok and type(task).write is Task.write:
        conn.execute("SAVEPOINT batch")
        try:
            summaries = write_results(conn, task.ctx, [(o.item, o.result) for o in ok])
            for o in ok:
                if o.result.new_items:
                    add_items(conn, job_id, o.result.new_items)
        except Exception:
            conn.execute("ROLLBACK TO batch")    # find the culprit below, item by item
        else:
            conn.execute("RELEASE batch")
            return out + list(zip(ok, summaries))
        conn.execute("RELEASE batch")
    for o in ok:
        conn.execute("SAVEPOINT item")
        try:
            summary = task.write(conn, o.item, o.result)
            if o.result.new_items:
                add_items(conn, job_id, o.result.new_items)
        except Exception as e:
            conn.execute("ROLLBACK TO item")
            conn.execute("RELEASE item")
            out.append((Outcome(o.item, error=f"writing results failed: {type(e).__name__}: {e}"), None))
        else:
            conn.execute("RELEASE item")
            out.append((o, summary))
    return out


def job_context(conn: sqlite3.Connection, job: dict, config: dict) -> TaskContext:
    p = job["params"]
    task_cls = get_task(job["kind"])
    return TaskContext(task=job["kind"], params=p.get("task") or {}, job_id=job["id"], dataset=p.get("dataset"),
                       dataset_id=job["dataset_id"], into=p.get("into"), into_id=job["into_dataset_id"],
                       filter=p.get("filter") or {}, config=config, template_version=task_cls.template_version)


def progress_snapshot(conn: sqlite3.Connection, job_id: int) -> dict:
    """Committed counts a task's `more_items` sees."""
    j = get_job(conn, job_id)
    return {k: j[k] for k in ("total", "done", "failed", "kept", "dropped", "drop_reasons")}
