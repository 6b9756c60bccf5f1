"""A real OpenAI-compatible HTTP server for tests and benchmarks (aiohttp).

    /v1/chat/completions, /v1/models; configurable latency, a cap on concurrent requests (excess requests queue,
    as in vLLM), an optional required API key, and scripted faults chosen by rules:

    Rule(fault, match=None, every=None, times=None, rate=None, ...)
      fault:  "400" (a request the server refuses) | "429" (with Retry-After) | "500" | "hang" (sleep past the client's timeout) | "slow" (sleep `hang`
              seconds, then answer normally) | "drop" (close the
              connection without a reply) | "empty" (HTTP 200, empty body) | "truncated" (HTTP 200, body cut
              mid-JSON) | "nochoices" (HTTP 200, JSON with an empty choices list) | "nonjson" (prose where JSON
              was asked) | "length" (cut reply, finish_reason=length) | "blank" (a completion whose content is "") |
              "reply" (answer with `text`) | "chunked" (answer as usual, chunked, without Content-Length)
      match:  only requests whose prompt contains this substring
      every:  only every Nth request (by the server's request counter)
      rate:   a seeded random share of requests (benchmarks: 5 % faults)
      times:  apply at most this many times (then the rule is spent)

Batch API (files + batches, as OpenAI's): POST /v1/files (multipart, purpose=batch), GET /v1/files,
GET /v1/files/{id}/content, POST /v1/batches, GET /v1/batches, GET /v1/batches/{id}, POST /v1/batches/{id}/cancel.
Each input line is answered by the same reply logic and rules as /v1/chat/completions. A batch becomes terminal
on its `batch.polls`-th retrieve with `batch.outcome` (completed | expired | failed); `batch.answer` (a share) of
the requests is answered when it expires; `batch.mangle(out_lines, err_lines)` rewrites the files (malformed,
duplicate, unknown lines); `batch.hold_create` > 0 makes POST /v1/batches wait that long before answering, after
creating the batch when `batch.create_first` (the reply a killed worker never read).

In tests: `with LLMServer(latency=0.01) as srv: srv.base_url ...` (a thread with its own loop), or
`python tests/llm_server.py --latency 0.2 --capacity 64 --fault-rate 0.05` (a process; prints "PORT n").
`srv.reply = fn(messages, body) -> str` scripts the answers; the default echoes the last user message.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from aiohttp import web

FAULTS = ("400", "429", "500", "hang", "slow", "drop", "empty", "truncated", "nochoices", "nonjson", "length", "blank",
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
    waits: list = field(default_factory=list)       # seconds each request queued for a capacity slot, in order
    faults: dict = field(default_factory=dict)
    prompts: dict = field(default_factory=dict)     # prompt -> times answered with a completion
    bodies: list = field(default_factory=list)      # last request bodies (bounded)
    auth: set = field(default_factory=set)          # Authorization headers seen
    chunks_sent: int = 0                            # of the last "chunked" reply


class LLMServer:
    def __init__(self, *, latency: float = 0.0, capacity: int | None = None, models=("test-model",),
                 api_key: str | None = None, rules: list[Rule] | None = None, reply=None, seed: int = 0,
                 keep_bodies: int = 2000, response_format: bool = True, batch_api: bool = True,
                 upstream: str | None = None):
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
        self.batch = BatchPlan()
        self.batch_api = batch_api
        self.upstream = upstream     # a real server's base URL: batch lines are answered by it (benchmarks/real_model_batch.py)
        self.files: dict[str, dict] = {}
        self.batches: dict[str, dict] = {}

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # --- the app ---
    def app(self) -> web.Application:
        app = web.Application()
        if not self.batch_api:       # a server without the Batch API (vLLM, llama.cpp): 404 on those paths
            app.router.add_post("/v1/chat/completions", self.chat)
            app.router.add_get("/v1/models", self._keyed(self.list_models))
            return app
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_get("/v1/models", self._keyed(self.list_models))
        for method, path, handler in (("POST", "/v1/files", self.upload_file), ("GET", "/v1/files", self.list_files),
                                      ("GET", "/v1/files/{id}/content", self.file_content),
                                      ("POST", "/v1/batches", self.create_batch),
                                      ("GET", "/v1/batches", self.list_batches),
                                      ("GET", "/v1/batches/{id}", self.get_batch),
                                      ("POST", "/v1/batches/{id}/cancel", self.cancel_batch)):
            app.router.add_route(method, path, self._keyed(handler))
        return app

    def _keyed(self, handler):
        """The handler behind the API key check (401 without it)."""
        async def keyed(request: web.Request) -> web.StreamResponse:
            if not self._authorized(request):
                return _error(401, "invalid api key")
            return await handler(request)
        return keyed

    def _authorized(self, request: web.Request) -> bool:
        auth = request.headers.get("Authorization", "")
        self.stats.auth.add(auth)
        return self.api_key is None or auth == f"Bearer {self.api_key}"

    async def list_models(self, request: web.Request) -> web.Response:
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
            arrived = time.monotonic()
            await sem.acquire()
            st.waits.append(time.monotonic() - arrived)
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

    # --- Batch API ---
    async def upload_file(self, request: web.Request) -> web.Response:
        reader = await request.multipart()
        fields, data, name = {}, None, None
        async for part in reader:
            if part.name == "file":
                name, data = part.filename, await part.read()
            else:
                fields[part.name] = await part.text()
        if data is None or fields.get("purpose") != "batch":
            return _error(400, "need a file and purpose=batch")
        self.batch.uploads += 1
        return web.json_response(_public(self._new_file(name, "batch", data)))

    async def list_files(self, request: web.Request) -> web.Response:
        purpose = request.query.get("purpose")
        data = [_public(f) for f in reversed(self.files.values()) if purpose in (None, f["purpose"])]
        return web.json_response({"object": "list", "data": data, "has_more": False})

    async def file_content(self, request: web.Request) -> web.Response:
        f = self.files.get(request.match_info["id"])
        if f is None:
            return _error(404, "no such file")
        self.batch.downloads += 1
        return web.Response(body=f["data"], content_type="application/octet-stream")

    async def create_batch(self, request: web.Request) -> web.Response:
        body = await request.json()
        f = self.files.get(body.get("input_file_id"))
        if f is None or body.get("endpoint") != "/v1/chat/completions" or body.get("completion_window") != "24h":
            return _error(400, "bad batch request")
        plan = self.batch
        if plan.hold_create and not plan.create_first:
            await asyncio.sleep(plan.hold_create)
        bid = f"{plan.id_prefix}{len(self.batches) + 1:04d}"
        lines = [ln for ln in f["data"].split(b"\n") if ln.strip()]
        self.batches[bid] = {"id": bid, "object": "batch", "endpoint": body["endpoint"], "errors": None,
                             "input_file_id": f["id"], "completion_window": "24h", "status": "validating",
                             "output_file_id": None, "error_file_id": None, "created_at": int(time.time()),
                             "metadata": body.get("metadata"),
                             "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
                             "_lines": lines, "_polls": 0}
        plan.creates += 1
        if plan.hold_create and plan.create_first:
            await asyncio.sleep(plan.hold_create)
        return web.json_response(_public(self.batches[bid]))

    async def list_batches(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [_public(b) for b in reversed(self.batches.values())],
                                  "has_more": False})

    async def get_batch(self, request: web.Request) -> web.Response:
        b = self.batches.get(request.match_info["id"])
        if b is None:
            return _error(404, "no such batch")
        self.batch.polls += 1
        b["_polls"] += 1
        if b["status"] == "cancelling":
            self._finish_batch(b, "cancelled", 0.0)
        elif b["status"] not in ("completed", "failed", "expired", "cancelled"):
            if b["_polls"] >= self.batch.polls_to_finish:
                self._finish_batch(b, self.batch.outcome, self.batch.answer)
            else:
                b["status"] = "in_progress"
                b["request_counts"]["completed"] = len(b["_lines"]) * b["_polls"] // (self.batch.polls_to_finish + 1)
        if self.batch.fake_status:
            return web.json_response({**_public(b), "status": self.batch.fake_status})
        return web.json_response(_public(b))

    async def cancel_batch(self, request: web.Request) -> web.Response:
        b = self.batches.get(request.match_info["id"])
        if b is None:
            return _error(404, "no such batch")
        self.batch.cancels += 1
        if b["status"] in ("validating", "in_progress", "finalizing"):
            b["status"] = "cancelling"
        return web.json_response(_public(b))

    def _finish_batch(self, b: dict, outcome: str, answer: float) -> None:
        """Answer the lines (all when completed, a share when expired/cancelled, none when failed)."""
        if outcome == "failed":
            b.update(status="failed", errors={"object": "list", "data": [
                {"code": "invalid_request", "message": "the input file is not valid", "line": 1}]})
            return
        lines = b["_lines"] if outcome == "completed" else b["_lines"][:int(len(b["_lines"]) * answer)]
        out, err = [], []
        for ln in lines:
            req = json.loads(ln)
            status, body = self._batch_answer(req.get("body") or {})
            rec = {"id": f"batch_req_{len(out) + len(err)}", "custom_id": req.get("custom_id"),
                   "response": {"status_code": status, "request_id": "req_x", "body": body}, "error": None}
            (out if status == 200 else err).append(json.dumps(rec))
        if self.batch.mangle:
            out, err = self.batch.mangle(out, err)
        ok = sum(1 for ln in out if '"status_code": 200' in ln)
        b["request_counts"] = {"total": len(b["_lines"]), "completed": ok, "failed": len(b["_lines"]) - ok}
        for kind, rows in (("output_file_id", out), ("error_file_id", err)):
            if rows:
                b[kind] = self._new_file(f"{b['id']}_{kind}.jsonl", "batch_output",
                                         ("\n".join(rows) + "\n").encode())["id"]
        b["status"] = outcome

    def _new_file(self, name: str, purpose: str, data: bytes) -> dict:
        fid = f"file-{len(self.files) + 1:04d}"
        self.files[fid] = {"id": fid, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                           "filename": name, "purpose": purpose, "data": data}
        return self.files[fid]

    def _batch_answer(self, body: dict) -> tuple[int, dict]:
        """One batch line through the chat logic: (status code, response body)."""
        st = self.stats
        st.requests += 1
        messages = body.get("messages") or []
        prompt = "\n".join(str(m.get("content") or "") for m in messages)
        if body.get("model") not in self.models:
            return 404, {"error": {"message": f"model {body.get('model')!r} not found"}}
        if len(st.bodies) < self.keep_bodies:
            st.bodies.append(body)
        if self.upstream:
            return self._forward(body)
        rule = self._pick_rule(st.requests, prompt)
        fault = rule.fault if rule else None
        if rule is not None:
            st.faults[fault] = st.faults.get(fault, 0) + 1
        if fault in ("400", "429", "500", "hang", "drop", "empty", "truncated"):
            code = int(fault) if fault in ("400", "429") else 500
            return code, {"error": {"message": f"simulated {fault}", "type": "test_error"}}
        if fault == "nochoices":
            return 200, {"id": "x", "object": "chat.completion", "choices": []}
        return 200, self._completion(body, messages, prompt, rule)

    def _forward(self, body: dict) -> tuple[int, dict]:
        """A batch line sent to the upstream server as a chat completion: its status and body, untouched (blocking:
        the batch is answered while the poll that finishes it waits)."""
        req = urllib.request.Request(f"{self.upstream}/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=600) as r:
                out = (r.status, json.loads(r.read()))
        except urllib.error.HTTPError as e:
            out = (e.code, {"error": {"message": e.read().decode(errors="replace")[:2000]}})
        if out[0] == 200:
            self.stats.completions += 1
        return out

    def _completion(self, body: dict, messages: list, prompt: str, rule: Rule | None) -> dict:
        """A chat completion (online or a batch line), with the faults that shape its text; counted as answered."""
        fault = rule.fault if rule else None
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
        st = self.stats
        st.completions += 1
        st.prompts[prompt] = st.prompts.get(prompt, 0) + 1
        return {"id": f"chatcmpl-{st.requests}", "object": "chat.completion", "created": int(time.time()),
                "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
                "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": len(text.split()),
                          "total_tokens": len(prompt.split()) + len(text.split())}}

    async def _respond(self, request, body, messages, prompt, rule: Rule | None) -> web.StreamResponse:
        fault = rule.fault if rule else None
        if fault == "400":
            return _error(400, "simulated 400")
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
        payload = self._completion(body, messages, prompt, rule)
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


@dataclass
class BatchPlan:
    """How the test server's batches progress (see the module doc), and what it counted."""
    polls_to_finish: int = 2
    outcome: str = "completed"       # completed | expired | failed
    answer: float = 0.5              # share of requests answered by an expired batch
    mangle: object = None            # fn(out_lines, err_lines) -> (out_lines, err_lines)
    id_prefix: str = "batch_"         # what batch ids start with (tests: control characters)
    fake_status: str | None = None   # reported instead of the real status (tests: a status we do not know)
    hold_create: float = 0.0
    create_first: bool = False
    uploads: int = 0
    creates: int = 0
    polls: int = 0
    downloads: int = 0
    cancels: int = 0


def _public(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if not k.startswith("_") and k != "data"}


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
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, stop.set)
        print(f"PORT {srv.port}", flush=True)
        await stop.wait()
        # SIGINT: print what was served (benchmarks read it), then leave at once: the cleanup of asyncio.run
        # sometimes took over 30 s on a loaded machine after a 4000-request job (benchmarks timed out waiting)
        st = srv.stats
        print(json.dumps({"requests": st.requests, "completions": st.completions, "faults": st.faults,
                          "max_in_flight": st.max_in_flight, "busy_seconds": round(st.busy_seconds, 3),
                          "waits": [round(w, 4) for w in st.waits]}), flush=True)
        os._exit(0)
    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
