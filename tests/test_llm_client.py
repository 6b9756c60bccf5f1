"""The client layer against the real test server with the real openai client: every fault, retries, cache, pools."""
from __future__ import annotations

import asyncio
import json
import time

import pytest

from llm_server import LLMServer, Rule
from workbench.endpoints import Endpoint
from workbench.llm import (LLM, Cache, Client, LLMError, ParseError, Pool, parse_json, retry_after, retry_delay,
                           write_cache_rows)

MSG = [{"role": "user", "content": "hello there"}]


@pytest.fixture
def srv():
    with LLMServer(latency=0.005) as s:
        yield s


def ep(srv, name="t", **kw) -> Endpoint:
    kw.setdefault("timeout", 1.0)
    kw.setdefault("max_retries", 3)
    return Endpoint(name=name, base_url=srv.base_url, model=kw.pop("model", "test-model"), **kw)


async def complete(srv, *, endpoint=None, **kw):
    client = Client(endpoint or ep(srv))
    llm = LLM({"generate": Pool([client])})
    try:
        return await llm.complete(MSG, **kw), llm.meter
    finally:
        await client.close()


@pytest.mark.parametrize("fault", ["500", "hang", "drop", "empty", "truncated", "nochoices"])
async def test_transient_faults_are_retried(srv, fault):
    srv.rules = [Rule(fault, times=1, hang=3)]
    c, meter = await complete(srv)
    assert c.text == "Response to: hello there"
    assert srv.stats.faults == {fault: 1}
    assert meter.requests == 2 and meter.retries == 1
    assert c.prompt_tokens == 2 and c.completion_tokens == 4


async def test_429_honours_retry_after(srv):
    srv.rules = [Rule("429", times=2, retry_after=0.4)]
    t0 = time.monotonic()
    c, meter = await complete(srv)
    assert c.text.startswith("Response to:")
    assert time.monotonic() - t0 >= 0.8          # waited what the server asked, twice
    assert meter.retries == 2


def test_retry_after_forms():
    assert retry_after({"retry-after": "3"}) == 3.0
    assert retry_after({"retry-after-ms": "250"}) == 0.25
    assert 0 <= retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) < 1   # a date in the past: now
    assert retry_after({}) is None
    delays = [retry_delay(a, None) for a in range(1, 8)]
    assert all(0 < d <= 30 for d in delays) and delays[-1] > delays[0]


async def test_gives_up_after_max_retries(srv):
    srv.rules = [Rule("500")]
    with pytest.raises(LLMError) as e:
        await complete(srv, endpoint=ep(srv, max_retries=2))
    assert e.value.retryable and "HTTP 500" in str(e.value) and "3 attempts" in str(e.value)
    assert srv.stats.requests == 3


async def test_client_error_is_not_retried(srv):
    with pytest.raises(LLMError) as e:
        await complete(srv, endpoint=ep(srv, model="no-such-model"))
    assert e.value.status == 404 and not e.value.retryable
    assert srv.stats.requests == 1


async def test_nonjson_reply_is_parse_error_with_raw(srv):
    srv.rules = [Rule("nonjson")]
    with pytest.raises(ParseError) as e:
        await complete(srv, json=True, validate=parse_json)
    assert "plain words" in e.value.raw
    assert srv.stats.requests == 2     # asked once more (parse_retries=1), then gave up
    assert srv.stats.bodies[0]["response_format"] == {"type": "json_object"}


async def test_json_reply_parsed_and_schema_sent(srv):
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    c, _ = await complete(srv, endpoint=ep(srv, json_mode="json_schema"), json=True, schema=schema,
                          validate=parse_json)
    assert c.parsed == {"answer": "echo: hello there"}
    assert srv.stats.bodies[0]["response_format"]["type"] == "json_schema"


async def test_response_format_rejected_falls_back(srv):
    srv.response_format = False
    srv.reply = lambda m, b: '{"ok": true}'
    c, _ = await complete(srv, json=True, validate=parse_json)
    assert c.parsed == {"ok": True}
    assert "response_format" not in srv.stats.bodies[-1]


@pytest.mark.parametrize("fault,message", [("length", "max_tokens"), ("blank", "empty reply")])
async def test_truncated_or_blank_completion_is_parse_error(srv, fault, message):
    srv.rules = [Rule(fault)]
    with pytest.raises(ParseError) as e:
        await complete(srv)
    assert message in str(e.value)


def test_parse_json_defensive():
    assert parse_json('```json\n{"a": 1}\n```') == {"a": 1}
    assert parse_json('Here you go: {"a": [1, 2]} hope it helps') == {"a": [1, 2]}
    with pytest.raises(ParseError) as e:
        parse_json("Score: 7")
    assert e.value.raw == "Score: 7"


async def test_cache_hit_costs_nothing(srv, conn):
    client = Client(ep(srv, cost_per_1k_input=1.0, cost_per_1k_output=2.0))
    llm = LLM({"generate": Pool([client])}, Cache(conn))
    c1 = await llm.complete(MSG, params={"temperature": 0})
    write_cache_rows(conn, llm.cache.drain())
    llm2 = LLM({"generate": Pool([client])}, Cache(conn))
    c2 = await llm2.complete(MSG, params={"temperature": 0})
    c3 = await llm2.complete(MSG, params={"temperature": 0.5})      # other params: another request
    await client.close()
    assert c2.cached and c2.text == c1.text and not c3.cached
    assert srv.stats.completions == 2
    assert llm.meter.cost == pytest.approx((2 * 1.0 + 4 * 2.0) / 1000)
    assert llm2.meter.cache_hits == 1 and llm2.meter.requests == 1


async def test_concurrency_cap_per_endpoint(srv):
    srv.latency = 0.05
    client = Client(ep(srv, max_concurrency=3))
    llm = LLM({"generate": Pool([client])})
    await asyncio.gather(*(llm.complete([{"role": "user", "content": f"q{i}"}]) for i in range(12)))
    await client.close()
    assert srv.stats.max_in_flight == 3 and srv.stats.completions == 12


async def test_spread_pool_uses_least_busy_and_fails_over():
    with LLMServer(latency=0.02) as a, LLMServer(latency=0.02) as b:
        b.rules = [Rule("500")]
        ca, cb = Client(ep(a, "a", max_concurrency=4)), Client(ep(b, "b", max_concurrency=4, max_retries=0))
        llm = LLM({"generate": Pool([ca, cb])})
        out = await asyncio.gather(*(llm.complete([{"role": "user", "content": f"q{i}"}]) for i in range(16)))
        await ca.close()
        await cb.close()
    assert {c.endpoint for c in out} == {"a"}        # b failed every time; its items went over to a
    assert b.stats.requests > 0 and a.stats.completions == 16


async def test_spread_pool_balances_load():
    with LLMServer(latency=0.05) as a, LLMServer(latency=0.05) as b:
        ca, cb = Client(ep(a, "a", max_concurrency=4)), Client(ep(b, "b", max_concurrency=4))
        llm = LLM({"generate": Pool([ca, cb])})
        await asyncio.gather(*(llm.complete([{"role": "user", "content": f"q{i}"}]) for i in range(16)))
        await ca.close()
        await cb.close()
    assert a.stats.completions == 8 and b.stats.completions == 8


async def test_each_mode_one_reply_per_model():
    with LLMServer(models=["m1"]) as a, LLMServer(models=["m2"]) as b:
        b.rules = [Rule("500")]
        ca = Client(ep(a, "a", model="m1"))
        ca2 = Client(ep(a, "a2", model="m1"))      # a second endpoint for m1: still one reply for m1
        cb = Client(ep(b, "b", model="m2", max_retries=0))
        llm = LLM({"generate": Pool([ca, ca2, cb], "each")})
        out = await llm.each(MSG)
        for c in (ca, ca2, cb):
            await c.close()
    assert len(out) == 2
    assert out[0].model == "m1" and isinstance(out[1], LLMError)
    assert a.stats.completions == 1


async def test_judge_role_uses_its_own_pool():
    with LLMServer(models=["gen"]) as g, LLMServer(models=["judge"]) as j:
        cg, cj = Client(ep(g, "g", model="gen")), Client(ep(j, "j", model="judge"))
        llm = LLM({"generate": Pool([cg]), "judge": Pool([cj])})
        a = await llm.complete(MSG)
        b = await llm.complete(MSG, role="judge")
        await cg.close()
        await cj.close()
    assert (a.model, b.model) == ("gen", "judge")


async def test_key_is_sent_and_redacted_from_errors(monkeypatch):
    secret = "sk-test-SECRET-0123456789"
    monkeypatch.setenv("MY_KEY", secret)
    with LLMServer(api_key=secret) as s:
        s.reply = lambda m, b: "fine"
        c, _ = await complete(s, endpoint=ep(s, api_key_env="MY_KEY"))
        assert c.text == "fine" and f"Bearer {secret}" in s.stats.auth
        s.rules = [Rule("reply")]
        s.api_key = "other"
        with pytest.raises(LLMError) as e:
            await complete(s, endpoint=ep(s, api_key_env="MY_KEY"))
    assert e.value.status == 401 and secret not in str(e.value) and "***" in str(e.value)


def test_missing_key_env_names_the_variable(monkeypatch):
    monkeypatch.delenv("ABSENT_KEY", raising=False)
    from workbench.endpoints import EndpointError
    e = Endpoint(name="x", base_url="http://127.0.0.1:1/v1", model="m", api_key_env="ABSENT_KEY")
    with pytest.raises(EndpointError, match="ABSENT_KEY is not set"):
        Client(e).client


def test_cache_rows_json(conn):
    from workbench.llm import Completion, cache_key
    cache = Cache(conn)
    k = cache_key("m", MSG, {"temperature": 0})
    cache.put(k, Completion(text="hi", model="m", endpoint="e", finish_reason="stop", prompt_tokens=1,
                            completion_tokens=2))
    write_cache_rows(conn, cache.drain())
    row = conn.execute("SELECT response, usage FROM llm_cache WHERE key = ?", (k,)).fetchone()
    assert json.loads(row[0])["text"] == "hi" and json.loads(row[1])["completion_tokens"] == 2
    assert Cache(conn).get(k).cached


async def test_requests_per_minute_window():
    from workbench.llm import _Window
    w = _Window(3, period=0.3)
    t0 = time.monotonic()
    for _ in range(4):
        await w.wait()
        w.add(1)
    assert time.monotonic() - t0 >= 0.29     # the 4th had to wait for the first to leave the window
    assert _Window(0).limit == 0             # 0 = unlimited


async def test_rpm_limit_spaces_requests(srv):
    client = Client(ep(srv, rpm=2, max_concurrency=8))
    client.rpm.period = 0.4                  # a 0.4 s "minute" keeps the test short
    llm = LLM({"generate": Pool([client])})
    t0 = time.monotonic()
    await asyncio.gather(*(llm.complete([{"role": "user", "content": f"q{i}"}]) for i in range(5)))
    await client.close()
    assert time.monotonic() - t0 >= 0.8 and srv.stats.completions == 5
