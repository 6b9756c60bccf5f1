"""`workbench worker`: claims jobs and runs their items through the LLM pool.

One asyncio loop keeps a continuous pool of items in flight (never gather-a-batch-then-wait): as soon as one
finishes another starts, and finished items are committed every FLUSH_SECONDS or FLUSH_ITEMS, each item's outputs
with its status. A failure fails its item only. The lease is renewed every heartbeat; a pause or cancel set by
the TUI/CLI is seen there, and so is a takeover (our lease expired), after which we stop without writing.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import signal
import sqlite3
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from . import jobs as J
from .fileperms import open_private, private_dir
from .endpoints import EndpointError, redact, secrets as config_secrets
from .llm import LLM, Cache, LLMError, ReplyTooLarge, build_pools, close_pools
from .store import connect, open_store
from .tasks import TaskError, get_task

log = logging.getLogger("workbench.worker")

FLUSH_SECONDS = 0.25
FLUSH_ITEMS = 64
HEARTBEAT_SECONDS = 1.0
BREAKER_FAILURES = 20        # this many request failures in a row (none succeeding) pause the job
RATE_WINDOW = 30.0
MAX_INFLIGHT_CAP = 1024
MAX_COMMIT_FAILURES = 5      # commits failing in a row (disk full, ...) pause the job


class JobRunner:
    """Runs one claimed job until it ends, is paused/cancelled, loses its lease, or `stop()` is called."""

    def __init__(self, db_path: Path, job: dict, config: dict, owner: str, *,
                 lease_seconds: float = J.LEASE_SECONDS, max_inflight: int | None = None,
                 on_progress: Callable[[dict], None] | None = None):
        self.db_path = Path(db_path)
        self.job = job
        self.job_id = job["id"]
        self.config = config
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.max_inflight = max_inflight
        self.on_progress = on_progress
        self.secrets = config_secrets(config)
        self.buffer: list[J.Outcome] = []
        self.stop_reason: str | None = None
        self.wake = asyncio.Event()
        self.finished_at: deque[float] = deque()
        self.consecutive_failures = 0
        self.last_error: str | None = None
        self.fatal: str | None = None
        self.commit_failures = 0
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="wb-db")

    # all writes go through one connection on one thread, in order
    async def db(self, fn, *args, **kw):
        return await asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(fn, *args, **kw))

    @property
    def limit(self) -> int:
        """Items in flight: twice what the endpoints take at once now (their limits adapt), so each endpoint
        has the next requests waiting when a slot frees."""
        if self.max_inflight:
            return self.max_inflight
        return max(4, min(MAX_INFLIGHT_CAP, 2 * sum(c.sem.size for c in self.llm.clients())))

    def stop(self, reason: str = "interrupted") -> None:
        self.stop_reason = self.stop_reason or reason
        self.wake.set()

    async def run(self) -> str:
        """Returns how it ended: done | failed | paused | cancelled | interrupted | lost."""
        self.conn = connect(self.db_path, check_same_thread=False)
        self.reader = connect(self.db_path)
        try:
            return await self._run()
        finally:
            self._pool.shutdown(wait=True)
            self.conn.close()
            self.reader.close()

    async def _run(self) -> str:
        try:
            ctx = J.job_context(self.conn, self.job, self.config)
            task = get_task(self.job["kind"])(ctx)
            p = self.job["params"]
            pools = build_pools(self.config, p.get("endpoint") or p.get("pool"), is_pool=bool(p.get("pool")),
                                judge=p.get("judge"), secrets=self.secrets)
            for pool in pools.values():
                for c in pool.clients:
                    c.client  # builds the client now: a missing API key pauses the job instead of failing items
            await self.db(task.load, self.conn)
        except (EndpointError, TaskError, LLMError) as e:
            await self.db(J.release, self.conn, self.job_id, self.owner, "paused",
                          redact(f"cannot start: {e}", self.secrets))
            return "paused"
        self.task = task
        if p.get("batch"):      # the provider's Batch API instead of one request per call (workbench/batch.py)
            from .batch import BatchJob, BatchLLM
            self.llm = BatchLLM(pools, Cache(self.reader), self.secrets)
            try:
                return await BatchJob(self, task, self.llm).run()
            finally:
                await close_pools(pools)
        self.llm = LLM(pools, Cache(self.reader))
        try:
            return await self._loop()
        finally:
            await close_pools(pools)

    async def _loop(self) -> str:
        in_flight: set[asyncio.Task] = set()
        queue: deque = deque()
        after_id = 0
        exhausted = False
        beat = asyncio.create_task(self._heartbeat())
        flusher = asyncio.create_task(self._flusher())
        for t in (beat, flusher):
            t.add_done_callback(self._background_done)
        outcome = "done"
        try:
            while self.stop_reason is None:
                while len(in_flight) < self.limit and self.stop_reason is None:
                    if not queue and not exhausted:
                        items = await self.db(J.pending_items, self.conn, self.job_id, after_id, 500)
                        if items:
                            after_id = items[-1].id
                            queue.extend(items)
                        else:
                            exhausted = True
                    if not queue:
                        break
                    t = asyncio.create_task(self._run_item(queue.popleft()))
                    in_flight.add(t)
                    t.add_done_callback(in_flight.discard)
                    t.add_done_callback(lambda _: self.wake.set())
                if not in_flight and not queue and self.stop_reason is None:
                    # everything handed out has finished: commit, then ask the task for more or finish
                    await self.flush()
                    snapshot = await self.db(J.progress_snapshot, self.conn, self.job_id)
                    more = await self.db(self.task.more_items, self.conn, snapshot)
                    if more:
                        await self.db(self._add_items, more)
                    # a re-scan from the start also catches items whose commit failed or were added meanwhile
                    after_id, exhausted = 0, False
                    if not more and not await self.db(J.pending_items, self.conn, self.job_id, 0, 1):
                        break
                    continue
                self.wake.clear()
                await self.wake.wait()
            if self.stop_reason:
                outcome = self.stop_reason
        except J.LeaseLost:
            outcome = "lost"
        finally:
            for t in in_flight:
                t.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)
            flusher.cancel()
            beat.cancel()
            await asyncio.gather(flusher, beat, return_exceptions=True)
        if outcome == "lost":
            return outcome
        try:
            await self.flush()
        except J.LeaseLost:
            return "lost"
        if self.stop_reason == "error":      # the last commit failed too
            outcome = "error"
        return await self._finish(outcome)

    def _background_done(self, t: asyncio.Task) -> None:
        if not t.cancelled() and t.exception() is not None:
            e = t.exception()
            log.error("job %s: %s stopped: %r", self.job_id, t.get_coro().__name__, e)
            self.fatal = redact(f"worker error: {type(e).__name__}: {e}", self.secrets)
            self.stop("error")

    def _add_items(self, items) -> int:
        from .store import transaction
        with transaction(self.conn):
            return J.add_items(self.conn, self.job_id, items)

    async def _finish(self, outcome: str) -> str:
        await self.db(J.record_endpoint_stats, self.conn, self.job_id, [c.figures() for c in self.llm.clients()])
        if outcome == "breaker":
            await self.db(J.release, self.conn, self.job_id, self.owner, "paused",
                          f"paused after {self.consecutive_failures} failed requests in a row; last error: "
                          f"{self.last_error}")
            return "paused"
        if outcome == "error":
            await self.db(J.release, self.conn, self.job_id, self.owner, "paused", self.fatal)
            return "paused"
        if outcome in ("paused", "cancelled"):
            await self.db(J.release, self.conn, self.job_id, self.owner)
            return outcome
        if outcome == "interrupted":
            await self.db(J.release, self.conn, self.job_id, self.owner)   # back to the queue
            return outcome
        job = await self.db(J.get_job, self.conn, self.job_id)
        status = "failed" if job["failed"] and not job["done"] else "done"
        if (await self.db(J.item_counts, self.conn, self.job_id)).get("cancelled"):
            status = "cancelled"          # a cancelled job whose failed items were retried: still not all run
        error = f"{job['failed']} item(s) failed" if job["failed"] else None
        await self.db(J.release, self.conn, self.job_id, self.owner, status, error)
        return status

    async def _run_item(self, item) -> None:
        outcome = None
        for attempt in range(max(1, self.task.max_attempts)):
            try:
                result = await self.task.process(item, self.llm)
                outcome = J.Outcome(item, result=result)
                self.consecutive_failures = 0
                break
            except asyncio.CancelledError:
                raise
            except Exception as e:
                outcome = J.Outcome(item, error=redact(_describe(e), self.secrets),
                                    raw=redact(getattr(e, "raw", None), self.secrets))
                if isinstance(e, LLMError):
                    self.consecutive_failures += 1
                    self.last_error = outcome.error
                    if self.consecutive_failures >= BREAKER_FAILURES:
                        self.stop("breaker")
                        return  # the item stays pending: it runs again on resume
                else:
                    self.consecutive_failures = 0
        self.buffer.append(outcome)
        self.finished_at.append(time.monotonic())
        if len(self.buffer) >= FLUSH_ITEMS:
            self.wake.set()

    async def flush(self) -> None:
        outcomes, self.buffer = self.buffer, []
        cache_rows = self.llm.cache.drain()
        usage = self.llm.meter.take()
        if not outcomes and not cache_rows and not usage.requests and not usage.cache_hits:
            return
        try:
            await self.db(J.commit_batch, self.conn, self.job_id, self.owner, self.task, outcomes, usage,
                          cache_rows)
        except J.LeaseLost:
            raise
        except sqlite3.Error as e:
            # nothing was written: keep everything for the next flush, and give up after a few tries in a row
            self.commit_failures += 1
            log.warning("job %s: commit failed (%s); attempt %d", self.job_id, e, self.commit_failures)
            self.buffer[:0] = outcomes
            for row in cache_rows:
                self.llm.cache.pending.setdefault(row[0], row)
            self.llm.meter.add(usage)
            if self.commit_failures >= MAX_COMMIT_FAILURES:
                self.fatal = f"worker error: cannot write to the store: {e}"
                self.stop("error")
        else:
            self.commit_failures = 0

    async def _flusher(self) -> None:
        try:
            while True:
                await asyncio.sleep(FLUSH_SECONDS)
                await self.flush()
        except J.LeaseLost:
            self.stop("lost")

    def rate(self) -> float:
        t = time.monotonic()
        while self.finished_at and self.finished_at[0] < t - RATE_WINDOW:
            self.finished_at.popleft()
        if len(self.finished_at) < 2:
            return 0.0
        span = max(t - self.finished_at[0], 1.0)
        return len(self.finished_at) / span

    async def _heartbeat(self) -> None:
        last = time.monotonic()
        try:
            while True:
                await asyncio.sleep(HEARTBEAT_SECONDS)
                t = time.monotonic()
                status = await self.db(J.heartbeat, self.conn, self.job_id, self.owner, self.lease_seconds,
                                       rate=self.rate(), run_seconds=t - last,
                                       endpoints=[c.figures() for c in self.llm.clients()])
                last = t
                if status in ("paused", "cancelled"):
                    self.stop(status)
                if self.on_progress:
                    self.on_progress(await self.db(J.get_job, self.conn, self.job_id))
        except J.LeaseLost:
            self.stop("lost")


def _describe(e: BaseException) -> str:
    if isinstance(e, (LLMError, ReplyTooLarge)):
        return str(e)
    name = type(e).__name__
    return f"{name}: {e}" if name != "ParseError" else f"unparseable reply: {e}"


# --- the worker process ----------------------------------------------------------------------------------

def run_job(db_path: Path, job: dict, config: dict, owner: str, **kw) -> str:
    runner_box: list[JobRunner] = []

    async def main():
        runner = JobRunner(db_path, job, config, owner, **kw)
        runner_box.append(runner)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            try:
                loop.add_signal_handler(sig, runner.stop)
            except (NotImplementedError, RuntimeError, ValueError):
                pass  # not the main thread (tests): stop() is called directly
        return await runner.run()
    return asyncio.run(main())


def advance_recipes(conn, config: dict) -> None:
    from .recipes import advance
    try:
        advance(conn, config)
    except Exception:               # a recipe problem must not stop the worker's other jobs
        log.exception("advancing recipes failed")


def run_worker(db_path: Path, config: dict, *, until_idle: bool = False, job_id: int | None = None,
               lease_seconds: float = J.LEASE_SECONDS, poll_seconds: float = 2.0,
               max_inflight: int | None = None, on_progress=None) -> list[str]:
    """Claim and run jobs until idle (or forever, or until interrupted). Returns how each job run ended."""
    import openai  # noqa: F401  (llm imports it on first use: 0.9 s that would otherwise stall a job's first requests)
    from .presence import registered
    with registered(db_path):   # `run` and the TUI see a worker of this store until it returns
        conn = open_store(db_path)
        owner = J.new_owner()
        ran: list[str] = []
        try:
            while True:
                if job_id is None:
                    advance_recipes(conn, config)     # queue recipe steps whose input just became complete
                job = J.claim_job(conn, owner, lease_seconds, job_id)
                if job is None:
                    if until_idle or job_id is not None:
                        return ran
                    time.sleep(poll_seconds)
                    continue
                log.info("job %s (%s): claimed, %s/%s items done", job["id"], job["kind"], job["done"], job["total"])
                outcome = run_job(db_path, job, config, owner, lease_seconds=lease_seconds, max_inflight=max_inflight,
                                  on_progress=on_progress)
                ran.append(outcome)
                final = J.get_job(conn, job["id"])
                log.info("job %s: %s (done %s, failed %s, kept %s, dropped %s)", job["id"], outcome, final["done"],
                         final["failed"], final["kept"], final["dropped"])
                if outcome == "interrupted":
                    return ran
        finally:
            conn.close()


def spawn_detached(db_path: Path, config_path: Path | None = None) -> tuple[int, Path]:
    """Start `workbench worker --until-idle` in its own session: closing the TUI or losing SSH does not stop it.

    Returns (pid, log file). The log goes to the user log dir (platformdirs), one file per worker.
    """
    import os
    import subprocess
    import sys
    import platformdirs
    from .store import APP_NAME
    log_dir = Path(platformdirs.user_log_dir(APP_NAME))
    private_dir(log_dir)
    log_path = log_dir / f"worker-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{time.monotonic_ns() % 10**6}.log"
    cmd = [sys.executable, "-m", "workbench", "worker", "--until-idle", "--db", str(db_path)]
    if config_path is not None:
        cmd += ["--config", str(config_path)]
    with open_private(log_path, "ab") as log:
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                             close_fds=True)
    reap_spawned()
    _spawned.append(p)
    return p.pid, log_path


_spawned: list = []


def reap_spawned() -> int:
    """Collect the exit status of workers we started that have ended (no zombies while the TUI runs).
    Returns how many are still running."""
    _spawned[:] = [p for p in _spawned if p.poll() is None]
    return len(_spawned)
