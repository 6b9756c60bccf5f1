"""Batch API as a job backend (`workbench run TASK ... --batch`): the job's requests go to the provider's Batch
API (files + batches) instead of one HTTP request each.

How a task runs unchanged: its `process(item, llm)` is called with a `BatchLLM`. A request that is neither in the
reply cache nor among the downloaded replies of the current round is recorded (custom_id = its llm_cache key)
and the item stays pending; a reply found goes through the same checks and parsers (`validate=`) as online and
into the same cache. So a task that asks one question per item needs one round; a multi-step task (evol-instruct,
preference, ...) needs one round per step, each replaying the earlier steps from the cache.

A round goes through these states (table job_batches), each change committed before the next remote call:

    prepared   requests stored (batch_requests)           -> upload the JSONL input file
    uploaded   input_file_id stored                        -> create the batch
    submitted  batch_id stored                             -> poll until completed / failed / expired / cancelled
    downloaded every request's verdict stored (batch_replies), stray lines as failed items, tokens on the job
    ingested   replies run through the task; outputs written with each item's status (never twice: jobs.py)

A worker killed anywhere resumes from the stored state. The two remote calls whose answer could be lost by a kill
right after they succeeded are made idempotent by looking first: the upload carries a name unique to the round
(files.list finds an earlier upload of it), and a batch is looked up by its input_file_id (batches.list) before
one is created. So a restart never submits a round twice.

The output and error files are streamed to a temporary directory and read line by line (batch_files.FileReading),
their verdicts stored a chunk at a time, and the replies looked up one by one while ingesting: memory does not grow
with the size of the files. A line the online client would have retried (429, 408/409, 5xx, a timeout) sends its
request again in a follow-up round, after the online backoff, up to the endpoint's max_retries. Requests a finished
batch did not answer (expired, failed, cancelled by someone else, a line missing, a line with any other error or
status, two lines for one request, a reply over max_reply_bytes) fail their items with the reason and the raw
line(s); `workbench jobs retry ID` sends them again in a new round. A reply that the task's parser refuses is asked again in
the next round (as often as online: `parse_retries`), then fails its item with the reply kept.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import tempfile
from pathlib import Path

import orjson

from . import batch_state as B
from . import jobs as J
from .batch_files import BATCH_URL, FileReading, input_file
from .endpoints import redact
from .llm import LLM, Completion, LLMError, ParseError, _check, retry_delay

log = logging.getLogger("workbench.batch")

POLL_SECONDS = 30.0          # default first poll interval; it backs off by POLL_BACKOFF up to POLL_CAP
POLL_BACKOFF = 1.5
POLL_CAP = 300.0
MAX_ROUNDS = 16              # a task still asking after this many rounds fails its remaining items
MAX_REQUESTS = 50_000        # per batch (the provider's limit); more go to the next round
MAX_INPUT_BYTES = 190 * 2**20   # the provider's limit is 200 MB
REMOTE_RETRIES = 6
LOOKBACK = 1000              # files / batches listed when looking for an upload or batch a killed worker made
TERMINAL = ("completed", "failed", "expired", "cancelled")
KNOWN = ("validating", "in_progress", "finalizing", "cancelling") + TERMINAL
INGEST_CHUNK = 500
INGEST_BYTES = 16 * 2**20    # of replies held before a commit (and per chunk of a download read into the store)


class NeedRequest(Exception):
    """A request this round has no reply for yet (the item stays pending)."""


class BatchReplyError(LLMError):
    """The batch answered a request with an error (or not at all): the item fails, the raw line(s) kept."""

    def __init__(self, message: str, raw: str | None, endpoint: str):
        super().__init__(message, endpoint=endpoint)
        self.raw = raw


class RemoteError(Exception):
    """A Batch API call failed for good: the job pauses with this message (resume retries the same step)."""


class BatchLLM(LLM):
    """The LLM handle a task sees in a batch job: answers from the cache or from the round's downloaded replies;
    any other request is recorded for the next round (and the item it came from is set aside)."""

    def __init__(self, pools, cache, secrets: list[str]):
        super().__init__(pools, cache)
        self.secrets = secrets
        self.replies: dict[str, tuple] = {}
        self.wanted: dict[str, str] = {}       # custom_id -> request body JSON
        self.missed = False                    # the current item asked for something not answered yet
        self.sent: dict[str, int] = {}         # custom_id -> rounds that sent it (a cache hit on one is a replay)
        self.counted: set[str] = set()
        self.backoff = 0                       # the highest attempt among the requests asked again after an error
        self.bytes_read = 0                    # of reply text since the last commit

    async def _complete_on(self, client, messages, params, want_json, schema, validate, allow_empty,
                           allow_truncated, salt) -> Completion:
        merged, rf, key, hit = self._lookup(client, messages, params, want_json, schema, validate, allow_empty,
                                            allow_truncated, salt)
        if hit is not None:
            if key not in self.sent and key not in self.counted:
                self.counted.add(key)
                self.meter.cache_hits += 1
            return hit
        found = self.replies.get(key)
        if found is None:
            self._want(key, client, messages, merged, rf)
        reply, error, raw, retryable = found
        if reply is None:
            sent = self.sent.get(key, 0)
            if retryable and sent <= client.ep.max_retries:
                # online, the client asks again after a backoff; here, in a follow-up batch after the same backoff
                # (workbench/llm.py retry_delay), up to the same limit: max_retries + 1 sends in all
                self.meter.retries += 1
                self.backoff = max(self.backoff, sent)
                self._want(key, client, messages, merged, rf)
            raise BatchReplyError(f"{client.ep.name}: {error}" + (f" (gave up after {sent} batches)" if retryable
                                                                   else ""), raw, client.ep.name)
        self.bytes_read += len(reply["text"])
        c = Completion(text=redact(reply["text"], self.secrets), model=reply["model"] or client.ep.model,
                       endpoint=client.ep.name, finish_reason=reply["finish_reason"],
                       prompt_tokens=reply["prompt_tokens"], completion_tokens=reply["completion_tokens"],
                       cache_key=key)
        try:
            c.parsed = _check(c, validate, allow_empty, allow_truncated)
        except ParseError as e:
            if self.sent.get(key, 0) <= self.parse_retries:
                # online, the worker asks again at once; here, in the next round (the key is sent again)
                self.meter.retries += 1
                self._want(key, client, messages, merged, rf)
            if e.raw is None:
                e.raw = c.text
            raise
        self.cache.put(key, c)
        return c

    def _want(self, key: str, client, messages, merged: dict, rf) -> None:
        body = {**merged, "model": client.ep.model, "messages": messages}
        if rf is not None:
            body["response_format"] = rf
        self.wanted.setdefault(key, orjson.dumps(body).decode())
        self.missed = True
        raise NeedRequest(key)


def describe(e: BaseException) -> str:
    if isinstance(e, LLMError):
        return str(e)
    name = type(e).__name__
    return f"{name}: {e}" if name != "ParseError" else f"unparseable reply: {e}"


def _give_big_blocks_back() -> None:
    """glibc raises its mmap threshold each time a large block is freed; after that, replies of a few hundred KB
    are carved from the heap, whose free holes then grow with the size of the files read (measured: a worker's
    peak RSS 265 MB at 128 MB of output, 554 MB at 1 GB). A fixed threshold hands each such block back when it is
    freed, so the peak stays that of one chunk. Process-wide, from the first batch job of a worker on."""
    import ctypes
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, 128 * 1024)      # M_MMAP_THRESHOLD
    except (OSError, AttributeError) as e:                      # not glibc: its own allocator decides
        log.debug("mallopt not available (%s): memory is left to the allocator", e)


class BatchJob:
    """Runs one claimed batch job for a JobRunner (workbench/worker.py): its lease, heartbeat, stop and finish."""

    def __init__(self, runner, task, llm: BatchLLM):
        self.r = runner
        self.task = task
        self.llm = llm
        self.client = llm.clients()[0]
        opts = runner.job["params"].get("batch") or {}
        self.poll_base = float(opts.get("poll") or POLL_SECONDS)
        self.polls_here = 0
        self.polling: int | None = None

    async def db(self, fn, *args, **kw):
        return await self.r.db(fn, *args, **kw)

    @property
    def api(self):
        return self.client.client

    def clean(self, text: str) -> str:
        return redact(text, self.r.secrets + self.client.secrets)

    async def run(self) -> str:
        r = self.r
        _give_big_blocks_back()
        beat = asyncio.create_task(r._heartbeat())
        beat.add_done_callback(r._background_done)
        outcome = "done"
        try:
            self.llm.sent = await self.db(B.sent_ids, r.conn, r.job_id)
            outcome = await self._steps()
        except (J.LeaseLost, B.LeaseLost):
            return "lost"
        except B.JobStopped as e:
            r.stop(e.status)
            outcome = e.status
        except RemoteError as e:
            r.fatal = self.clean(str(e))
            outcome = "error"
        finally:
            beat.cancel()
            await asyncio.gather(beat, return_exceptions=True)
        if outcome == "cancelled":
            await self._cancel_remote()
        return await r._finish(outcome)

    async def _steps(self) -> str:
        r = self.r
        while r.stop_reason is None:
            rnd = await self.db(B.open_round, r.conn, r.job_id)
            if rnd is None:
                if not await self._prepare():
                    return "done"
            elif rnd["state"] == "prepared":
                await self._upload(rnd)
            elif rnd["state"] == "uploaded":
                await self._submit(rnd)
            elif rnd["state"] == "submitted":
                await self._poll(rnd)
            else:
                await self._ingest(rnd)
        return r.stop_reason

    # --- running items through the task ---------------------------------------------------------------------

    async def _pass(self, replies: dict) -> None:
        """Every pending item through the task once: finished ones are committed (with the cache rows), the ones
        that asked for something unanswered stay pending and their requests are in llm.wanted."""
        r = self.r
        self.llm.replies, self.llm.wanted = replies, {}
        after, outcomes, full = 0, [], False
        while r.stop_reason is None and not full:
            items = await self.db(J.pending_items, r.conn, r.job_id, after, INGEST_CHUNK)
            if not items:
                break
            after = items[-1].id
            for item in items:
                if len(self.llm.wanted) >= MAX_REQUESTS:
                    full = True       # the other items wait for the next round
                    break
                if (o := await self._one(item)) is not None:
                    outcomes.append(o)
                if self.llm.bytes_read >= INGEST_BYTES:      # long replies: commit sooner, memory stays flat
                    await self._commit(outcomes)
                    outcomes = []
            await self._commit(outcomes)
            outcomes = []

    async def _one(self, item) -> J.Outcome | None:
        self.llm.missed = False
        try:
            try:
                result = await self.task.process(item, self.llm)
            finally:
                await asyncio.sleep(0)   # calls a task started with gather() finish before the next item starts
        except Exception as e:
            if self.llm.missed:
                return None
            return J.Outcome(item, error=self.clean(describe(e)), raw=self.clean(getattr(e, "raw", None) or "")
                             or None)
        if self.llm.missed:
            # the task went on without an answer it asked for (e.g. it caught the exception): not a result
            return None
        return J.Outcome(item, result=result)

    async def _commit(self, outcomes: list) -> None:
        r = self.r
        self.llm.bytes_read = 0
        cache_rows = self.llm.cache.drain()
        usage = self.llm.meter.take()
        if outcomes or cache_rows or usage.cache_hits:
            await self.db(J.commit_batch, r.conn, r.job_id, r.owner, self.task, outcomes, usage, cache_rows)

    # --- the steps of a round ------------------------------------------------------------------------------

    async def _prepare(self) -> bool:
        """A new round from the pending items; False when the job has nothing left to do."""
        r = self.r
        await self._pass({})
        if r.stop_reason is not None:
            return True
        wanted = self.llm.wanted
        if not wanted:
            snapshot = await self.db(J.progress_snapshot, r.conn, r.job_id)
            more = await self.db(self.task.more_items, r.conn, snapshot)
            if more:
                await self.db(r._add_items, more)
                return True
            return False
        done = await self.db(lambda c: c.execute("SELECT coalesce(max(round), 0) FROM job_batches WHERE job_id = ?",
                                                 (r.job_id,)).fetchone()[0], r.conn)
        if done >= MAX_ROUNDS:
            await self._fail_pending(f"the task still asked for replies after {MAX_ROUNDS} batch rounds")
            return True
        if self.llm.backoff:
            # requests the last batch answered with a 429, 5xx or timeout: wait as the online client would before
            # asking again (a restart in this wait asks at once; nothing was stored yet, so nothing is sent twice)
            delay = retry_delay(self.llm.backoff, None)
            self.llm.backoff = 0
            log.info("job %s: %.1f s before the batch that asks again", r.job_id, delay)
            await self._sleep(delay)
            if r.stop_reason is not None:
                return True
        wanted = self._fit(wanted)
        await self.db(B.create_round, r.conn, r.job_id, r.owner, done + 1, wanted)
        for cid in wanted:
            self.llm.sent[cid] = self.llm.sent.get(cid, 0) + 1
        log.info("job %s: batch round %d prepared, %d requests", r.job_id, done + 1, len(wanted))
        return True

    @staticmethod
    def _fit(wanted: dict[str, str]) -> dict[str, str]:
        """At most MAX_INPUT_BYTES of input; the rest waits for the next round (its items stay pending)."""
        out, size = {}, 0
        for cid, body in sorted(wanted.items()):
            size += len(body) + len(cid) + 80
            if out and size > MAX_INPUT_BYTES:
                break
            out[cid] = body
        return out

    async def _fail_pending(self, why: str) -> None:
        r = self.r
        while True:
            items = await self.db(J.pending_items, r.conn, r.job_id, 0, INGEST_CHUNK)
            if not items:
                return
            await self.db(J.commit_batch, r.conn, r.job_id, r.owner, self.task,
                          [J.Outcome(i, error=why) for i in items])

    async def _upload(self, rnd: dict) -> None:
        r = self.r
        data = input_file(await self.db(B.requests_of, r.conn, rnd["id"]))
        tag = await self.db(B.store_tag, r.conn)
        name = f"workbench-{tag}-job{r.job_id}-round{rnd['round']}-{hashlib.sha256(data).hexdigest()[:16]}.jsonl"
        file_id = await self._find_upload(name, len(data))
        if file_id is None:
            f = await self._remote("upload the batch input file", lambda: self.api.files.create(
                file=(name, data, "application/jsonl"), purpose="batch"))
            file_id = f.id
        self._check_id(file_id, "file id")
        await self.db(B.update_round, r.conn, r.job_id, r.owner, rnd["id"], input_file_id=file_id, state="uploaded")
        log.info("job %s: round %d uploaded as %s (%d bytes)", r.job_id, rnd["round"], file_id, len(data))

    async def _find_upload(self, name: str, size: int) -> str | None:
        async def look():
            n = 0
            async for f in self.api.files.list(purpose="batch"):
                if f.filename == name and f.bytes == size:
                    return f.id
                n += 1
                if n >= LOOKBACK:
                    break
            return None
        return await self._remote("list uploaded files", look)

    async def _submit(self, rnd: dict) -> None:
        r = self.r

        async def look():
            n = 0
            async for b in self.api.batches.list():
                if b.input_file_id == rnd["input_file_id"]:
                    return b
                n += 1
                if n >= LOOKBACK:
                    break
            return None
        b = await self._remote("list batches", look)
        if b is None:
            b = await self._remote("create the batch", lambda: self.api.batches.create(
                completion_window="24h", endpoint=BATCH_URL, input_file_id=rnd["input_file_id"],
                metadata={"workbench": f"job {r.job_id} round {rnd['round']}"}))
        self._check_id(b.id, "batch id")
        await self.db(B.update_round, r.conn, r.job_id, r.owner, rnd["id"], batch_id=b.id, state="submitted",
                      remote_status=self._status(b), counts=_counts(b))
        log.info("job %s: round %d submitted as batch %s", r.job_id, rnd["round"], b.id)

    def _status(self, b) -> str:
        status = b.status
        if status not in KNOWN:
            raise RemoteError(f"batch {b.id}: the server reports an unknown status {self.clean(str(status))[:80]!r}")
        return status

    def _check_id(self, value, what: str) -> None:
        if not isinstance(value, str) or not value or len(value) > 200 or not value.isprintable():
            raise RemoteError(f"the server returned an unusable {what}: {self.clean(repr(value))[:120]}")

    async def _poll(self, rnd: dict) -> None:
        r = self.r
        b = await self._remote("poll the batch", lambda: self.api.batches.retrieve(rnd["batch_id"]))
        status = self._status(b)
        fields = {"remote_status": status, "counts": _counts(b), "polls": rnd["polls"] + 1}
        if status not in TERMINAL:
            await self.db(B.update_round, r.conn, r.job_id, r.owner, rnd["id"], **fields)
            if self.polling != rnd["id"]:
                self.polling, self.polls_here = rnd["id"], 0      # each round's batch starts at the base interval
            delay = min(POLL_CAP, self.poll_base * POLL_BACKOFF ** self.polls_here)
            self.polls_here += 1
            await self._sleep(delay)
            return
        why = {"completed": "the batch completed without a line for this request",
               "expired": "the batch expired (24 h window) before answering this request",
               "failed": "the batch failed" + _errors(b, self.clean),
               "cancelled": "the batch was cancelled before answering this request"}[status]
        error = None if status == "completed" else f"batch {status}" + (_errors(b, self.clean) if status == "failed"
                                                                          else "")
        sent = await self.db(B.request_ids, r.conn, rnd["id"])
        reading = FileReading(sent, self.clean, reply_cap=self.client.ep.max_reply_bytes)
        # to disk first, then line by line, a chunk of replies into the store at a time: flat memory whatever
        # the size of the files (the directory goes with its files, also when this fails)
        with tempfile.TemporaryDirectory(prefix="workbench-batch-") as tmp:
            files = [(what, path) for what, fid in (("output", b.output_file_id), ("error", b.error_file_id))
                     if (path := await self._download(fid, what, Path(tmp))) is not None]
            chunks = reading.chunks(files, INGEST_CHUNK, INGEST_BYTES)
            while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
                await self.db(B.store_verdicts, r.conn, r.job_id, r.owner, rnd["id"], chunk.verdicts, chunk.strays)
            last = await asyncio.to_thread(reading.finish, files, why)
        cost = self.client.ep.cost(reading.tokens_in, reading.tokens_out, batch=True)   # at the batch price
        await self.db(B.store_download, r.conn, r.job_id, r.owner, rnd["id"], last,
                      (reading.tokens_in, reading.tokens_out, cost), len(sent),
                      {**fields, "output_file_id": b.output_file_id, "error_file_id": b.error_file_id,
                       "error": error})
        log.info("job %s: round %d %s; %d lines matched, %d requests without a usable line, %d stray lines",
                 r.job_id, rnd["round"], status, len(reading.first), len(last), reading.strays)

    async def _download(self, file_id, what: str, into: Path) -> Path | None:
        """The file streamed to `into` (never whole in memory); None when the batch has no such file."""
        if not file_id:
            return None
        self._check_id(file_id, f"{what} file id")
        path = into / what

        async def fetch():
            with open(path, "wb") as f:      # a retry starts the file again
                async with self.api.files.with_streaming_response.content(file_id) as resp:
                    async for block in resp.iter_bytes(1 << 20):
                        f.write(block)
        await self._remote(f"download the {what} file", fetch)
        return path

    async def _ingest(self, rnd: dict) -> None:
        r = self.r
        await self._pass(B.StoredReplies(self.llm.cache.conn, rnd["id"]))
        if r.stop_reason is None:
            await self.db(B.update_round, r.conn, r.job_id, r.owner, rnd["id"], state="ingested")

    async def _sleep(self, seconds: float) -> None:
        r = self.r
        r.wake.clear()
        try:
            await asyncio.wait_for(r.wake.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    async def _remote(self, what: str, call):
        """One Batch API call, retried on connection errors, 408/409/429 and 5xx; RemoteError when it fails for
        good (the job pauses; resuming repeats the same step, which is safe: see the module doc)."""
        import openai
        for attempt in range(1, REMOTE_RETRIES + 1):
            try:
                return await call()
            except openai.APIStatusError as e:
                if e.status_code not in (408, 409, 429) and e.status_code < 500 or attempt == REMOTE_RETRIES:
                    raise RemoteError(f"batch API: cannot {what}: HTTP {e.status_code}: "
                                      f"{self.clean(str(e.message))[:300]}") from None
            except (openai.APIConnectionError, asyncio.TimeoutError) as e:
                if attempt == REMOTE_RETRIES:
                    raise RemoteError(f"batch API: cannot {what}: {self.clean(str(e))[:300]}") from None
            if self.r.stop_reason is not None:
                raise RemoteError(f"batch API: cannot {what}: stopped while retrying")
            await self._sleep(min(30.0, 0.5 * 2 ** (attempt - 1)) * (0.5 + random.random() / 2))

    async def _cancel_remote(self) -> None:
        r = self.r
        rnd = await self.db(B.open_round, r.conn, r.job_id)
        if rnd is None or rnd["state"] != "submitted":
            return
        try:
            b = await self.api.batches.cancel(rnd["batch_id"])
            await self.db(B.update_round, r.conn, r.job_id, r.owner, rnd["id"], remote_status=self._status(b))
        except Exception as e:     # the job is cancelled here either way; say that the remote one may still run
            log.warning("job %s: could not cancel batch %s: %s", r.job_id, rnd["batch_id"], self.clean(str(e)))


def _counts(b) -> dict | None:
    c = getattr(b, "request_counts", None)
    if c is None:
        return None
    return {k: v for k in ("total", "completed", "failed") if isinstance(v := getattr(c, k, None), int)}


def _errors(b, clean) -> str:
    errs = getattr(getattr(b, "errors", None), "data", None) or []
    msgs = [clean(f"{e.code or ''} {e.message or ''}".strip())[:300] for e in errs[:5]]
    return (": " + "; ".join(msgs)) if msgs else ""


async def cancel_remote_batch(config: dict, job: dict, batch_id: str) -> str:
    """`jobs cancel` on a batch job: ask the provider to cancel the job's running batch; returns its status."""
    from .endpoints import secrets
    from .llm import build_pools, close_pools
    pools = build_pools(config, job["params"]["endpoint"], is_pool=False, secrets=secrets(config))
    try:
        client = pools["generate"].clients[0]
        b = await client.client.batches.cancel(batch_id)
        if b.status not in KNOWN:
            raise RemoteError(f"the server answered the cancel with an unknown status {redact(str(b.status), secrets(config))[:80]!r}")
        return b.status
    finally:
        await close_pools(pools)
