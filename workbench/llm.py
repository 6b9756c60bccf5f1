"""The client layer over `openai.AsyncOpenAI`: bounded concurrency, retries, cache, accounting, pools.

One `Client` per endpoint (one AsyncOpenAI, an adaptive concurrency limit under max_concurrency, rpm/tpm
windows). A `Pool` serves a role either `spread` (the endpoint with the most free room first; an endpoint whose
connection fails is set aside for a while and its requests go to the others) or `each` (one reply per distinct
model). An `LLM`
binds pools to a job: its `complete`/`each` look up and fill the `llm_cache`, and add tokens, cost, requests,
retries and cache hits to a `Meter` the worker flushes into the job row.
"""
from __future__ import annotations

import asyncio
import email.utils
import errno
import hashlib
import random
import socket
import sqlite3
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlparse

import orjson

from .concurrency import AdaptiveLimit
from .endpoints import Endpoint, redact
from .parsing import ParseError, repetition_loop  # one class for the parsers and the client layer
from .store import now

RETRY_STATUS = {408, 409, 429}
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0
RETRY_AFTER_CAP = 300.0
DOWN_SECONDS = 5.0         # an endpoint whose connection failed is skipped this long (doubling while it stays down)
DOWN_CAP = 60.0


class LLMError(Exception):
    """A request that failed for good (retries exhausted or a non-retryable status)."""

    def __init__(self, message: str, *, endpoint: str = "", status: int | None = None, retryable: bool = False):
        super().__init__(message)
        self.endpoint = endpoint
        self.status = status
        self.retryable = retryable


class ReplyTooLarge(Exception):
    """A reply over the endpoint's max_reply_bytes: the item fails; only its first bytes are kept (`raw`)."""

    def __init__(self, message: str, raw: str | None = None):
        super().__init__(message)
        self.raw = raw


RAW_HEAD_CHARS = 4096   # what is kept of a reply too large to store


class _Retry(Exception):
    def __init__(self, message: str, delay: float | None = None, status: int | None = None,
                 connection: bool = False):
        super().__init__(message)
        self.delay = delay
        self.status = status
        self.connection = connection     # no HTTP reply at all: the endpoint may be down


@dataclass
class Completion:
    text: str
    model: str
    endpoint: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False
    latency: float = 0.0
    parsed: Any = None
    cache_key: str | None = None


@dataclass
class Meter:
    """Counters since the last flush; the worker adds them to the job row with each commit."""
    requests: int = 0
    retries: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0
    cache_hits: int = 0

    def add(self, other: "Meter") -> None:
        for k in ("requests", "retries", "tokens_in", "tokens_out", "cost", "cache_hits"):
            setattr(self, k, getattr(self, k) + getattr(other, k))

    def take(self) -> "Meter":
        out = Meter(self.requests, self.retries, self.tokens_in, self.tokens_out, self.cost, self.cache_hits)
        self.requests = self.retries = self.tokens_in = self.tokens_out = self.cache_hits = 0
        self.cost = 0.0
        return out


# --- cache -------------------------------------------------------------------------------------------

def cache_key(model: str, messages: list[dict], params: dict, response_format: Any = None, salt: Any = None) -> str:
    blob = orjson.dumps({"model": model, "messages": messages, "params": params, "rf": response_format,
                         "salt": salt}, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(blob).hexdigest()


class Cache:
    """llm_cache reads on a connection of its own; writes are queued and committed by the worker's writer
    (with the job's usage), so an answer survives a crash as soon as its batch commits."""

    def __init__(self, conn: sqlite3.Connection | None):
        self.conn = conn
        self.pending: dict[str, tuple] = {}

    def get(self, key: str) -> Completion | None:
        row = self.pending.get(key)
        if row is None and self.conn is not None:
            row = self.conn.execute("SELECT key, model, response, usage FROM llm_cache WHERE key = ?",
                                    (key,)).fetchone()
        if row is None:
            return None
        resp = orjson.loads(row[2])
        usage = orjson.loads(row[3]) if row[3] else {}
        return Completion(text=resp["text"], model=row[1], endpoint=resp.get("endpoint", ""),
                          finish_reason=resp.get("finish_reason"), prompt_tokens=usage.get("prompt_tokens", 0),
                          completion_tokens=usage.get("completion_tokens", 0), cached=True, cache_key=key)

    def put(self, key: str, c: Completion) -> None:
        if self.conn is None:
            return
        resp = orjson.dumps({"text": c.text, "finish_reason": c.finish_reason, "endpoint": c.endpoint}).decode()
        usage = orjson.dumps({"prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens}).decode()
        self.pending[key] = (key, c.model, resp, usage, now())

    def drain(self) -> list[tuple]:
        rows = list(self.pending.values())
        self.pending.clear()
        return rows


def write_cache_rows(conn: sqlite3.Connection, rows: list[tuple]) -> None:
    if rows:
        conn.executemany("INSERT OR IGNORE INTO llm_cache (key, model, response, usage, created_at) "
                         "VALUES (?,?,?,?,?)", rows)


# --- one endpoint ----------------------------------------------------------------------------------------

class _Window:
    """Requests or tokens in the last 60 s, to stay under rpm / tpm."""

    def __init__(self, limit: int, period: float = 60.0):
        self.limit = limit
        self.period = period
        self.events: deque[tuple[float, int]] = deque()
        self.total = 0

    def _trim(self, t: float) -> None:
        while self.events and self.events[0][0] <= t - self.period:
            self.total -= self.events.popleft()[1]

    async def wait(self) -> None:
        while self.limit:
            t = time.monotonic()
            self._trim(t)
            if self.total < self.limit:
                return
            await asyncio.sleep(max(0.01, self.events[0][0] + self.period - t))

    def add(self, n: int) -> None:
        if self.limit and n:
            self.events.append((time.monotonic(), n))
            self.total += n


class Client:
    def __init__(self, ep: Endpoint, secrets: list[str] | None = None):
        self.ep = ep
        self.sem = AdaptiveLimit(ep.max_concurrency, adaptive=ep.adaptive)
        self.busy = 0              # requests waiting for or holding a slot
        self.down_until = 0.0      # monotonic time before which the pool skips this endpoint
        self.down_for = DOWN_SECONDS
        self.ok = 0                # per-job figures for the Jobs screen
        self.errors = 0
        self.latency_sum = 0.0
        self.json_mode = ep.json_mode
        self.rpm = _Window(ep.rpm)
        self.tpm = _Window(ep.tpm)
        self.secrets = list(secrets or [])
        self._client: openai.AsyncOpenAI | None = None

    @property
    def client(self) -> openai.AsyncOpenAI:
        import openai  # ~0.9 s to import: loaded on first use, so the CLI and the TUI start fast
        if self._client is None:
            key = self.ep.api_key()
            self.secrets.append(key)
            # our own retry loop (below) honours Retry-After and keeps the semaphore free while backing off
            self._client = openai.AsyncOpenAI(base_url=self.ep.base_url, api_key=key, max_retries=0,
                                              timeout=self.ep.timeout, http_client=_http_client())
        return self._client

    def load(self) -> float:
        return self.busy / self.sem.size

    @property
    def down(self) -> bool:
        return self.down_until > time.monotonic()

    def _mark_down(self) -> None:
        self.down_until = time.monotonic() + self.down_for
        self.down_for = min(DOWN_CAP, self.down_for * 2)

    def figures(self) -> dict:
        """What the Jobs screen shows per endpoint: the limit found, replies, errors, mean latency."""
        return {"endpoint": self.ep.name, "limit": self.sem.size, "peak": self.sem.peak, "in_flight": self.sem.in_use,
                "ok": self.ok, "errors": self.errors, "down": self.down,
                "latency_ms": round(1000 * self.latency_sum / self.ok, 1) if self.ok else None}

    def _clean(self, text: str) -> str:
        return redact(text, self.secrets)

    def response_format(self, want_json: bool, schema: dict | None) -> dict | None:
        if not want_json or self.json_mode == "none":
            return None
        if schema is not None and self.json_mode == "json_schema":
            return {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}
        return {"type": "json_object"}

    async def chat(self, messages: list[dict], params: dict, *, want_json: bool = False,
                   schema: dict | None = None, meter: Meter | None = None, failover: bool = False) -> Completion:
        """One completion with retries. Raises LLMError when it fails for good; with `failover` (the pool has other
        endpoints) a connection failure raises at once, so the request moves to another endpoint."""
        import openai  # lazily: see Client.client
        meter = meter if meter is not None else Meter()
        attempts = self.ep.max_retries + 1
        attempt = 0
        self.busy += 1
        try:
            while True:
                rf = self.response_format(want_json, schema)
                try:
                    c = await self._once(messages, params, rf, meter)
                    self.down_for = DOWN_SECONDS
                    return c
                except _Retry as e:
                    attempt += 1
                    self.errors += 1
                    if e.connection:
                        self._mark_down()
                    if attempt >= attempts or (failover and e.connection):
                        raise LLMError(f"{self.ep.name}: {e} (gave up after {attempt} attempts)",
                                       endpoint=self.ep.name, status=e.status, retryable=True) from None
                    meter.retries += 1
                    await asyncio.sleep(retry_delay(attempt, e.delay))
                except openai.BadRequestError as e:
                    if rf is not None and "response_format" in str(e):
                        # the server does not take this response_format: step down and ask again
                        self.json_mode = "json_object" if rf.get("type") == "json_schema" else "none"
                        continue
                    raise LLMError(f"{self.ep.name}: HTTP 400: {self._clean(_message(e))[:500]}",
                                   endpoint=self.ep.name, status=400) from None
                except openai.APIStatusError as e:
                    raise LLMError(f"{self.ep.name}: HTTP {e.status_code}: {self._clean(_message(e))[:500]}",
                                   endpoint=self.ep.name, status=e.status_code) from None
        finally:
            self.busy -= 1

    async def _once(self, messages, params, rf, meter: Meter) -> Completion:
        import openai  # lazily: see Client.client
        await self.rpm.wait()
        self.rpm.add(1)      # reserve the slot at once, so concurrent waiters cannot all pass
        await self.tpm.wait()
        body = {**params, "model": self.ep.model, "messages": messages}
        if rf is not None:
            body["response_format"] = rf
        client = self.client      # built before the clock starts: its cost is not the server's latency
        sent_with = await self.sem.acquire()
        rtt, overloaded = None, False
        try:
            meter.requests += 1
            t0 = time.monotonic()
            try:
                # chat.completions.create without its typed-dict param transform and pydantic reply model: they
                # cost ~2 ms of CPU a request (measured: 3.0 -> 1.6 ms per item), which decides the throughput of
                # a worker on a small box; our params are plain dicts and we read four fields of the reply
                # streamed, read in chunks up to max_reply_bytes: a 20 MB reply is refused after 1 MB is read,
                # instead of being held whole (and again as text, JSON and the stored raw reply)
                http = await client.post("/chat/completions", body=body, cast_to=_http_response_type(),
                                              stream=True, options={"security": {"bearer_auth": True}})
                raw = await self._read_capped(http)
            except (openai.APIConnectionError, *_transport_errors()) as e:
                # APITimeoutError too: its transport calls a refusal a timeout. The transport's own errors come
                # from the body, which we read ourselves (openai maps only the headers')
                overloaded = True
                failure = connection_failure(e, self.ep.base_url, self.ep.timeout)
                timed_out = isinstance(e, openai.APITimeoutError) and failure.message.startswith("timed out")
                if not failure.retry:                  # the OS answered: asking again in a second changes nothing
                    self.errors += 1
                    self._mark_down()
                    raise LLMError(f"{self.ep.name}: {self._clean(failure.message)}", endpoint=self.ep.name,
                                   retryable=True) from None
                # no reply at all (reset, closed): the endpoint may be going down; a timeout only says it is slow
                raise _Retry(self._clean(failure.message), connection=not timed_out) from None
            except openai.APIStatusError as e:
                if e.status_code in RETRY_STATUS or e.status_code >= 500:
                    overloaded = e.status_code in (429, 503)
                    raise _Retry(f"HTTP {e.status_code}: {self._clean(_message(e))[:500]}",
                                 delay=retry_after(e.response.headers), status=e.status_code) from None
                raise
            latency = rtt = time.monotonic() - t0
        finally:
            self.sem.release(sent_with, rtt=rtt, overloaded=overloaded)
        try:
            resp = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise _Retry(f"malformed reply: {self._clean(str(e))[:200]}") from None
        choices = resp.get("choices") if isinstance(resp, dict) else None
        if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
            raise _Retry("reply has no choices")
        msg = choices[0].get("message") or {}
        text = msg.get("content") if isinstance(msg, dict) else None
        if text is not None and not isinstance(text, str):
            raise _Retry(f"malformed reply: message content is {type(text).__name__}, not text")
        usage = resp.get("usage") if isinstance(resp.get("usage"), dict) else {}
        tin, tout = (n if isinstance(n := usage.get(k), int) else 0 for k in ("prompt_tokens", "completion_tokens"))
        self.tpm.add(tin + tout)
        meter.tokens_in += tin
        meter.tokens_out += tout
        meter.cost += self.ep.cost(tin, tout)
        model = resp.get("model")
        self.ok += 1
        self.latency_sum += latency
        # a reply that echoes the key (a prompt-injected model, a debugging proxy) is redacted here, before the
        # cache, the job item, a judgment or a sample can store it
        return Completion(text=self._clean(text or ""),
                          model=model if isinstance(model, str) and model else self.ep.model,
                          endpoint=self.ep.name, finish_reason=choices[0].get("finish_reason"), prompt_tokens=tin,
                          completion_tokens=tout, latency=latency)

    async def _read_capped(self, http) -> bytes:
        """The body, read in chunks; past max_reply_bytes (or announced so by Content-Length) ReplyTooLarge,
        after reading no more than the cap (a head of it is kept)."""
        cap = self.ep.max_reply_bytes
        length = http.headers.get("content-length")
        length = int(length) if length and length.isdigit() else None
        chunks, total = [], 0
        try:
            async for chunk in http.aiter_bytes():
                chunks.append(chunk)
                total += len(chunk)
                if total > cap or (length is not None and length > cap and total >= RAW_HEAD_CHARS * 4):
                    break
            else:
                if length is None or length <= cap:
                    return b"".join(chunks)
        finally:
            await http.aclose()
        raise self._too_large(length, b"".join(chunks)[:RAW_HEAD_CHARS * 4])

    def _too_large(self, length: int | None, head: bytes) -> ReplyTooLarge:
        size = f"{length:,} bytes" if length is not None else f"over {self.ep.max_reply_bytes:,} bytes"
        text = head.decode("utf-8", "replace")[:RAW_HEAD_CHARS]
        return ReplyTooLarge(f"{self.ep.name}: reply too large: {size}, the endpoint's max_reply_bytes is "
                             f"{self.ep.max_reply_bytes:,}; not stored (its first {len(text):,} characters are kept)",
                             raw=self._clean(text) if text else None)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()


def _transport_errors() -> tuple:
    from openai._httpx2 import request_exceptions  # noqa: PLC0415 - the classes openai itself maps
    return request_exceptions()


def _http_response_type():
    """The HTTP response class openai hands back unread when asked for it (with stream=True)."""
    from openai._httpx2 import http_response_types  # noqa: PLC0415 - no public name for it
    return http_response_types()[0]


def _http_client():
    """openai's aiohttp transport when aiohttp is installed: measured here at ~40 % less client CPU per request
    than the default httpx transport (1.5-2.0 ms vs 2.8 ms), which decides throughput on a loaded 2-core box."""
    import openai  # lazily: see Client.client
    try:
        return openai.DefaultAioHttpClient()
    except RuntimeError:   # the aiohttp extra is missing
        return None


def _message(e: openai.APIStatusError) -> str:
    body = e.body
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:100_000]  # cut again after redaction
    return str(e.message)[:100_000]


@dataclass
class ConnectionFailure:
    message: str
    retry: bool        # worth another attempt on this endpoint (a timeout, a reset), or final (refused, no DNS)


# getaddrinfo's "no such name" answers (EAI_NONAME, EAI_NODATA, EAI_FAIL); EAI_AGAIN is a temporary failure
_DNS_FINAL = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", -5), socket.EAI_FAIL}
_UNREACHABLE = {errno.ENETUNREACH: "network unreachable", errno.EHOSTUNREACH: "host unreachable",
                errno.EADDRNOTAVAIL: "address not available"}


def _chain(e: BaseException) -> list[BaseException]:
    """e and its causes, the deepest (what the OS said) first."""
    out, seen = [], set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        out.append(e)
        e = e.__cause__ or e.__context__
    return out[::-1]


def connection_failure(e: BaseException, base_url: str, timeout: float) -> ConnectionFailure:
    """What a failed connection really was, from the exception chain the HTTP client raised. openai's aiohttp
    transport reports a refused port or a failed DNS lookup as "Request timed out" (ConnectTimeout): the OS's own
    error at the bottom of the chain says what happened."""
    u = urlparse(base_url)
    where = f"{u.hostname}:{u.port or (443 if u.scheme == 'https' else 80)}"
    chain = _chain(e)
    for c in chain:
        if isinstance(c, socket.gaierror):
            if c.errno in _DNS_FINAL:
                return ConnectionFailure(f"DNS lookup failed: host {u.hostname} not found ({c.strerror})", False)
            return ConnectionFailure(f"DNS lookup of {u.hostname} failed for now ({c.strerror})", True)
        if isinstance(c, ConnectionRefusedError):
            return ConnectionFailure(f"connection refused by {where} (no server listening there?)", False)
        if isinstance(c, ConnectionResetError):
            return ConnectionFailure(f"connection reset by {where}", True)
        if isinstance(c, OSError) and c.errno in _UNREACHABLE:
            return ConnectionFailure(f"cannot connect to {where}: {_UNREACHABLE[c.errno]}", False)
    names = {type(c).__name__ for c in chain}
    if names & {"ServerDisconnectedError", "RemoteProtocolError"}:
        return ConnectionFailure(f"connection closed by {where} without a reply", True)
    if names & {"ClientPayloadError", "ContentLengthError", "IncompleteRead"}:
        return ConnectionFailure(f"reply from {where} cut off: the connection closed mid-reply", True)
    if any(isinstance(c, TimeoutError) or "Timeout" in type(c).__name__ for c in chain):
        return ConnectionFailure(f"timed out after {timeout:g} s", True)
    root = chain[0]
    return ConnectionFailure(f"connection error: {type(root).__name__}: {root}", True)


def retry_after(headers) -> float | None:
    """Seconds the server asked us to wait (Retry-After seconds or HTTP date, or retry-after-ms)."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if not ra:
        return None
    try:
        return float(ra)
    except ValueError:
        try:
            return max(0.0, email.utils.parsedate_to_datetime(ra).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def retry_delay(attempt: int, server_delay: float | None) -> float:
    """Exponential backoff with jitter; a server's Retry-After wins (plus a little jitter to spread the herd)."""
    if server_delay is not None:
        return min(RETRY_AFTER_CAP, server_delay) * (1 + 0.1 * random.random())
    return min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)


# --- pools and the per-job handle --------------------------------------------------------------------------

class Pool:
    def __init__(self, clients: list[Client], mode: str = "spread"):
        if not clients:
            raise ValueError("a pool needs at least one endpoint")
        self.clients = clients
        self.mode = mode
        self._rr = 0

    @property
    def capacity(self) -> int:
        """Requests the pool takes at once now (the endpoints' current limits)."""
        return sum(c.sem.size for c in self.clients)

    def pick(self, exclude: set[str] = frozenset()) -> Client | None:
        """The least busy endpoint (relative to its current limit), rotating among equals; endpoints marked down
        only when every other one is down too."""
        cands = [c for c in self.clients if c.ep.name not in exclude]
        if not cands:
            return None
        cands = [c for c in cands if not c.down] or sorted(cands, key=lambda c: c.down_until)[:1]
        self._rr += 1
        n = len(cands)
        return min((cands[(self._rr + i) % n] for i in range(n)), key=Client.load)

    def per_model(self) -> list[list[Client]]:
        """Endpoints grouped by model, in pool order: `each` asks one endpoint of every group."""
        groups: dict[str, list[Client]] = {}
        for c in self.clients:
            groups.setdefault(c.ep.model, []).append(c)
        return list(groups.values())


class LLM:
    """A job's view of the LLM layer: roles -> pools, plus cache and meter."""

    def __init__(self, pools: dict[str, Pool], cache: Cache | None = None, meter: Meter | None = None,
                 parse_retries: int = 1):
        self.pools = pools
        self.cache = cache or Cache(None)
        self.meter = meter or Meter()
        self.parse_retries = parse_retries

    def pool(self, role: str = "generate") -> Pool:
        return self.pools.get(role) or self.pools["generate"]

    def pool_of(self, client: Client) -> Pool:
        return next(p for p in self.pools.values() if client in p.clients)

    def clients(self) -> list[Client]:
        """Every endpoint of the job once."""
        seen: dict[int, Client] = {}
        for p in self.pools.values():
            for c in p.clients:
                seen.setdefault(id(c), c)
        return list(seen.values())

    def models(self, role: str = "generate") -> list[str]:
        return [g[0].ep.model for g in self.pool(role).per_model()]

    async def complete(self, messages: list[dict], *, role: str = "generate", params: dict | None = None,
                       json: bool = False, schema: dict | None = None,
                       validate: Callable[[str], Any] | None = None, allow_empty: bool = False,
                       allow_truncated: bool = False, salt: Any = None, _clients: list[Client] | None = None
                       ) -> Completion:
        """One reply from the role's pool (least busy endpoint; another endpoint if one fails for good).

        The reply is checked (empty, cut at max_tokens, `validate(text)`) before it is cached; a failed check is
        asked again `parse_retries` times, then raises ParseError with the raw text.
        """
        pool = self.pool(role)
        tried: set[str] = set()
        last: LLMError | None = None
        while True:
            client = _clients[0] if _clients else pool.pick(tried)
            if client is None:
                raise last  # every endpoint failed for good
            try:
                return await self._complete_on(client, messages, params, json, schema, validate, allow_empty,
                                               allow_truncated, salt)
            except LLMError as e:
                if not e.retryable or _clients or len(pool.clients) == 1:
                    raise
                tried.add(client.ep.name)
                last = e

    async def each(self, messages: list[dict], *, role: str = "generate", **kw) -> list[Completion | Exception]:
        """One reply per distinct model of the role's pool, concurrently; a failure is returned, not raised."""
        groups = self.pool(role).per_model()

        async def one(group: list[Client]):
            client = min(group, key=Client.load)
            return await self.complete(messages, role=role, _clients=[client], **kw)
        return list(await asyncio.gather(*(one(g) for g in groups), return_exceptions=True))

    def _lookup(self, client: Client, messages, params, want_json, schema, validate, allow_empty, allow_truncated,
                salt) -> tuple[dict, Any, str, Completion | None]:
        """A request's merged params, response_format and cache key, and its cached reply if that still passes
        today's checks (None when not cached, or cached under an older parser: ask again). Online and batch."""
        merged = {**client.ep.params, **(params or {})}
        rf = client.response_format(want_json, schema)
        key = cache_key(client.ep.model, messages, merged, rf, salt)
        hit = self.cache.get(key)
        if hit is not None:
            try:
                hit.parsed = _check(hit, validate, allow_empty, allow_truncated)
            except ParseError:
                hit = None
        return merged, rf, key, hit

    async def _complete_on(self, client: Client, messages, params, want_json, schema, validate, allow_empty,
                           allow_truncated, salt) -> Completion:
        merged, _, key, hit = self._lookup(client, messages, params, want_json, schema, validate, allow_empty,
                                           allow_truncated, salt)
        if hit is not None:
            self.meter.cache_hits += 1
            return hit
        failover = len(self.pool_of(client).clients) > 1
        for attempt in range(self.parse_retries + 1):
            c = await client.chat(messages, merged, want_json=want_json, schema=schema, meter=self.meter,
                                  failover=failover)
            c.cache_key = key
            try:
                c.parsed = _check(c, validate, allow_empty, allow_truncated)
            except ParseError as e:
                if attempt >= self.parse_retries:
                    if e.raw is None:
                        e.raw = c.text
                    raise
                self.meter.retries += 1
                continue
            self.cache.put(key, c)
            return c
        raise AssertionError("unreachable")


def _check(c: Completion, validate, allow_empty: bool, allow_truncated: bool) -> Any:
    if not allow_truncated and c.finish_reason == "length":
        unit = repetition_loop(c.text)
        if unit is not None:
            raise ParseError(f"looped to max_tokens: the reply repeats {unit[:60]!r} until it is cut off at "
                             "max_tokens (finish_reason=length)", c.text)
        raise ParseError("reply cut off at max_tokens (finish_reason=length)", c.text)
    if not allow_empty and not c.text.strip():
        raise ParseError("empty reply", c.text)
    if validate is None:
        return None
    try:
        return validate(c.text)
    except ParseError:
        raise
    except (ValueError, KeyError, TypeError, IndexError) as e:  # a parser's own error still means "unparseable"
        raise ParseError(f"{type(e).__name__}: {e}", c.text) from None


def parse_json(text: str) -> Any:
    """The JSON object in a reply, tolerating code fences and prose around it; ParseError otherwise."""
    s = text.strip()
    if s.startswith("```"):
        s = s.split("\n", 1)[1] if "\n" in s else ""
        s = s.rsplit("```", 1)[0]
    try:
        return orjson.loads(s)
    except orjson.JSONDecodeError:
        pass
    start, end = s.find("{"), s.rfind("}")
    if start != -1 and end > start:
        try:
            return orjson.loads(s[start:end + 1])
        except orjson.JSONDecodeError:
            pass
    raise ParseError("reply is not valid JSON", text)


def build_pools(config: dict, generate: str, *, is_pool: bool | None = None, judge: str | None = None,
                secrets: list[str] | None = None) -> dict[str, Pool]:
    """Pools for the roles of a job: 'generate' (endpoint or pool name) and optionally 'judge'."""
    from .endpoints import resolve
    clients: dict[str, Client] = {}

    def make(name: str, pool_flag: bool | None) -> Pool:
        eps, mode = resolve(config, name, is_pool=pool_flag)
        return Pool([clients.setdefault(ep.name, Client(ep, secrets)) for ep in eps], mode)
    out = {"generate": make(generate, is_pool)}
    if judge:
        out["judge"] = make(judge, None)
    return out


async def close_pools(pools: dict[str, Pool]) -> None:
    seen = set()
    for p in pools.values():
        for c in p.clients:
            if id(c) not in seen:
                seen.add(id(c))
                await c.close()
