"""A real OpenAI-compatible HTTP server for tests and benchmarks (aiohttp).

    /v1/chat/completions, /v1/models; configurable latency, a cap on concurrent requests (excess requests queue,
    as in vLLM), an optional required API key, and scripted faults chosen by rules:

    Rule(fault, match=None, every=None, times=None, rate=None, ...)
      fault:  "429" (with Retry-After) | "500" | "hang" (sleep past the client's timeout) | "slow" (sleep `hang`
              seconds, then answer normally) | "drop" (close the
              connection without a reply) | "empty" (HTTP 200, empty body) | "truncated" (HTTP 200, body cut
              mid-JSON) | "nochoices" (HTTP 200, JSON with an empty choices list) | "nonjson" (prose where JSON
              was asked) | "length" (cut reply, finish_reason=length) | "blank" (a completion whose content is "") |
              "reply" (answer with `text`) | "chunked" (answer as usual, chunked, without Content-Length)
      match:  only requests whose prompt contains this substring
      every:  only every Nth request (by the server's request counter)
      rate:   a seeded random share of requests (benchmarks: 5 % faults)
      times:  apply at most this many times (then the rule is spent)

In tests: `with LLMServer(latency=0.01) as srv: srv.base_url ...` (a thread with its own loop), or
`python tests/llm_server.py --latency 0.2 --capacity 64 --fault-rate 0.05` (a process; prints "PORT n").
`srv.reply = fn(messages, body) -> str` scripts the answers; the default echoes the last user message.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import threading
import time
from dataclasses import dataclass, field

from aiohttp import web

FAULTS = ("429", "500", "hang", "slow", "drop", "empty", "truncated", "nochoices", "nonjson", "length", "blank",
          "reply", "chunked")


@dataclass
class Rule:
    fault: str
    match: str | None = None
    every: int | None = None
    rate: float | None = None
    times: int | None = None
    retry_after: float = 0.2
    hang: float = 30.0
    text: str = ""
    used: int = 0

    def __post_init__(self):
        if self.fault not in FAULTS:
            raise ValueError(f"unknown fault {self.fault!r}")


def default_reply(messages: list[dict], body: dict) -> str:
    last = next((m.get("content") or "" for m in reversed(messages) if m.get("role") == "user"), "")
    if (body.get("response_format") or {}).get("type") in ("json_object", "json_schema"):
        return json.dumps({"answer": f"echo: {last[:80]}"})
    return f"Response to: {last}"


@dataclass
class Stats:
    requests: int = 0
    completions: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    busy_seconds: float = 0.0                       # summed time requests held a capacity slot
    faults: dict = field(default_factory=dict)
    prompts: dict = field(default_factory=dict)     # prompt -> times answered with a completion
    bodies: list = field(default_factory=list)      # last request bodies (bounded)
    auth: set = field(default_factory=set)          # Authorization headers seen
    chunks_sent: int = 0                            # of the last "chunked" reply


class LLMServer:
    def __init__(self, *, latency: float = 0.0, capacity: int | None = None, models=("test-model",),
                 api_key: str | None = None, rules: list[Rule] | None = None, reply=None, seed: int = 0,
                 keep_bodies: int = 2000, response_format: bool = True):
        self.latency = latency
        self.capacity = capacity
        self.models = list(models)
        self.api_key = api_key
        self.rules: list[Rule] = list(rules or [])
        self.reply = reply or default_reply
        self.random = random.Random(seed)
        self.keep_bodies = keep_bodies
        self.response_format = response_format     # False: answer 400 to any response_format, as some servers do
        self.stats = Stats()
        self.port: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._sem: asyncio.Semaphore | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # --- the app ---
    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_get("/v1/models", self.list_models)
        return app

    def _authorized(self, request: web.Request) -> bool:
        auth = request.headers.get("Authorization", "")
        self.stats.auth.add(auth)
        return self.api_key is None or auth == f"Bearer {self.api_key}"

    async def list_models(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _error(401, "invalid api key")
        return web.json_response({"object": "list", "data": [
            {"id": m, "object": "model", "created": 0, "owned_by": "test"} for m in self.models]})

    def _pick_rule(self, n: int, prompt: str) -> Rule | None:
        for r in self.rules:
            if r.times is not None and r.used >= r.times:
                continue
            if r.match is not None and r.match not in prompt:
                continue
            if r.every is not None and n % r.every != 0:
                continue
            if r.rate is not None and self.random.random() >= r.rate:
                continue
            r.used += 1
            return r
        return None

    async def chat(self, request: web.Request) -> web.StreamResponse:
        st = self.stats
        st.requests += 1
        n = st.requests
        if not self._authorized(request):
            # like some real servers, echo the key that was presented: the client must redact it
            return _error(401, f"incorrect API key provided: {request.headers.get('Authorization', '')[7:]}")
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return _error(400, "body is not JSON")
        messages = body.get("messages") or []
        prompt = "\n".join(str(m.get("content") or "") for m in messages)
        if body.get("model") not in self.models:
            return _error(404, f"model {body.get('model')!r} not found")
        if body.get("response_format") and not self.response_format:
            return _error(400, "response_format is not supported by this server")
        if len(st.bodies) < self.keep_bodies:
            st.bodies.append(body)
        rule = self._pick_rule(n, prompt)
        if rule is not None:
            st.faults[rule.fault] = st.faults.get(rule.fault, 0) + 1
        sem = self._sem
        if sem is None and self.capacity:
            sem = self._sem = asyncio.Semaphore(self.capacity)
        if sem is not None:
            await sem.acquire()
        st.in_flight += 1
        st.max_in_flight = max(st.max_in_flight, st.in_flight)
        held_from = time.monotonic()
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
            return await self._respond(request, body, messages, prompt, rule)
        finally:
            st.in_flight -= 1
            st.busy_seconds += time.monotonic() - held_from
            if sem is not None:
                sem.release()

    async def _respond(self, request, body, messages, prompt, rule: Rule | None) -> web.StreamResponse:
        fault = rule.fault if rule else None
        if fault == "429":
            return _error(429, "rate limited", headers={"Retry-After": f"{rule.retry_after:g}"})
        if fault == "500":
            return _error(500, "internal error")
        if fault in ("hang", "slow"):
            await asyncio.sleep(rule.hang)
        if fault == "drop":
            request.transport.close()
            raise asyncio.CancelledError()  # aiohttp drops the handler; the client sees a closed connection
        if fault == "empty":
            return web.Response(status=200, body=b"", content_type="application/json")
        if fault == "nochoices":
            return web.json_response({"id": "x", "object": "chat.completion", "choices": []})
        finish = "stop"
        if fault == "nonjson":
            text = "Sure! Here is my answer, in plain words rather than JSON."
        elif fault == "blank":
            text = ""
        elif fault == "reply":
            text = rule.text
        else:
            text = self.reply(messages, body)
        if fault == "length":
            text, finish = text[: max(1, len(text) // 2)], "length"
        self.stats.completions += 1
        self.stats.prompts[prompt] = self.stats.prompts.get(prompt, 0) + 1
        payload = {
            "id": f"chatcmpl-{self.stats.requests}", "object": "chat.completion", "created": int(time.time()),
            "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
            "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": len(text.split()),
                      "total_tokens": len(prompt.split()) + len(text.split())},
        }
        data = json.dumps(payload).encode()
        if fault == "truncated":
            resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
            resp.content_length = len(data)
            await resp.prepare(request)
            await resp.write(data[: len(data) // 2])
            request.transport.close()
            return resp
        if fault == "chunked":   # no Content-Length: the client only learns the size by reading
            resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            self.stats.chunks_sent = 0
            for i in range(0, len(data), 1 << 16):
                await resp.write(data[i:i + (1 << 16)])
                self.stats.chunks_sent += 1
            await resp.write_eof()
            return resp
        return web.Response(body=data, content_type="application/json")

    # --- running it ---
    def __enter__(self) -> "LLMServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> str:
        ready = threading.Event()

        def serve():
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self._start())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            pending = asyncio.all_tasks(loop)   # requests still hanging (fault "hang")
            for t in pending:
                t.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()
        self._thread = threading.Thread(target=serve, name="llm-server", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("test LLM server did not start")
        return self.base_url

    async def _start(self, port: int = 0) -> None:
        self._runner = web.AppRunner(self.app(), handle_signals=False, access_log=None, shutdown_timeout=0.2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port, backlog=1024)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None


def _error(status: int, message: str, headers: dict | None = None) -> web.Response:
    return web.json_response({"error": {"message": message, "type": "test_error", "code": status}},
                             status=status, headers=headers)


def write_endpoint(config_path, srv: "LLMServer", name: str = "local", **fields) -> None:
    """Add an endpoint for this server to a workbench config file (as `workbench endpoints add` would)."""
    from workbench.config import load_config, save_config
    from workbench.endpoints import Endpoint, add_endpoint
    fields.setdefault("timeout", 5.0)
    fields.setdefault("max_concurrency", 8)
    model = fields.pop("model", srv.models[0])
    cfg = load_config(config_path)
    save_config(add_endpoint(cfg, Endpoint(name=name, base_url=srv.base_url, model=model, **fields)), config_path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="OpenAI-compatible test server")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--capacity", type=int, default=None)
    ap.add_argument("--model", action="append", default=None)
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--fault-rate", type=float, default=0.0, help="share of requests that get a random fault")
    ap.add_argument("--faults", default="429,500,drop,truncated", help="faults drawn from at --fault-rate")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rules = []
    if args.fault_rate:
        kinds = args.faults.split(",")
        rules = [Rule(k, rate=args.fault_rate / len(kinds) / (1 - i * args.fault_rate / len(kinds)),
                      retry_after=0.2, hang=5.0) for i, k in enumerate(kinds)]
    srv = LLMServer(latency=args.latency, capacity=args.capacity, models=args.model or ["test-model"],
                    api_key=args.api_key, rules=rules, seed=args.seed, keep_bodies=0)

    async def run():
        await srv._start(args.port)
        print(f"PORT {srv.port}", flush=True)
        while True:
            await asyncio.sleep(3600)
    try:
        asyncio.run(run())
    except KeyboardInterrupt:   # SIGINT: print what was served (benchmarks read it)
        st = srv.stats
        print(json.dumps({"requests": st.requests, "completions": st.completions, "faults": st.faults,
                          "max_in_flight": st.max_in_flight, "busy_seconds": round(st.busy_seconds, 3)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
