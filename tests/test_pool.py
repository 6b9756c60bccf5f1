"""A pool over several servers of unknown capacity: the limit each endpoint gets is found by the program (Vegas on
latency, halving on overload), and an endpoint that goes down mid-job hands its items to the others."""
from __future__ import annotations

import asyncio
import heapq
import random
import threading
import time

import pytest

from llm_server import LLMServer, write_endpoint
from workbench import jobs as J
from workbench.concurrency import FLOOR, AdaptiveLimit
from workbench.config import load_config, save_config
from workbench.endpoints import add_pool
from workbench.samples import insert_samples
from workbench.store import ensure_dataset, open_store, transaction
from workbench.worker import run_worker


async def _drive(limit: AdaptiveLimit, capacity: int, latency: float, requests: int, inflight: int) -> int:
    """A server that serves `capacity` requests at once and queues the rest (as vLLM does); returns the most
    requests it ever had in service at once."""
    server = asyncio.Semaphore(capacity)
    state = {"serving": 0, "max": 0}

    async def one():
        sent_with = await limit.acquire()
        t0 = time.monotonic()
        async with server:
            state["serving"] += 1
            state["max"] = max(state["max"], state["serving"])
            await asyncio.sleep(latency)
            state["serving"] -= 1
        limit.release(sent_with, rtt=time.monotonic() - t0)

    queue = asyncio.Semaphore(inflight)

    async def gated():
        async with queue:
            await one()
    await asyncio.gather(*(gated() for _ in range(requests)))
    return state["max"]


async def test_overload_halves_the_limit_and_a_fixed_limit_never_moves():
    limit = AdaptiveLimit(64)
    await _drive(limit, 32, 0.005, requests=800, inflight=256)
    before = limit.size
    await limit.acquire()
    limit.release(overloaded=True)
    assert limit.size == max(1, before // 2)

    fixed = AdaptiveLimit(8, adaptive=False)
    await _drive(fixed, 2, 0.005, requests=100, inflight=64)
    assert fixed.size == 8


async def test_limit_does_not_grow_when_the_caller_does_not_use_it():
    limit = AdaptiveLimit(256)
    start = limit.size
    await _drive(limit, 64, 0.005, requests=200, inflight=1)   # one at a time: no evidence of more room
    assert limit.size <= start + 2


async def test_a_cancelled_waiter_leaves_the_count_right():
    limit = AdaptiveLimit(1, initial=1)
    await limit.acquire()
    waiter = asyncio.ensure_future(limit.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    limit.release(1, rtt=0.01)
    assert limit.in_use == 0
    await asyncio.wait_for(limit.acquire(), 1)
    assert limit.in_use == 1


def _simulate(limit: AdaptiveLimit, capacity: int, service, requests: int) -> dict:
    """The controller's decisions against a server of `capacity` slots with a FIFO queue behind them, in virtual
    time (no clock, no sleeps): `service(i)` is request i's service time. Requests are sent as the limit allows;
    each reply's latency (queue wait + service) goes to `release`. Returns the limits after each reply, each
    request's queue wait and service time, and when the last reply came."""
    loop = asyncio.new_event_loop()
    events, queue, out = [], [], {"limits": [], "waits": [], "services": [], "end": 0.0}
    busy, sent = 0, 0

    def start(now, req):
        nonlocal busy
        busy += 1
        req["start"], req["service"] = now, service(req["i"])
        heapq.heappush(events, (now + req["service"], req["i"], req))

    def send(now):
        nonlocal sent
        while limit.in_use < limit.size and sent < requests:
            req = {"i": sent, "sent": now, "sent_with": loop.run_until_complete(limit.acquire())}
            sent += 1
            start(now, req) if busy < capacity else queue.append(req)

    send(0.0)
    while events:
        now, _, req = heapq.heappop(events)
        busy -= 1
        if queue:
            start(now, queue.pop(0))
        limit.release(req["sent_with"], rtt=now - req["sent"])
        out["limits"].append(limit.size)
        out["waits"].append(req["start"] - req["sent"])
        out["services"].append(req["service"])
        out["end"] = now
        send(now)
    loop.close()
    return out


def _settled(out: dict) -> tuple[int, int, float]:
    """(lowest, highest limit, mean wait / mean service time) over the second half of the replies."""
    half = len(out["limits"]) // 2
    waits, services = out["waits"][half:], out["services"][half:]
    return min(out["limits"][half:]), max(out["limits"][half:]), sum(waits) / sum(services)


@pytest.mark.parametrize("capacity", [1, 2, 3, 4, 8])
def test_a_small_server_gets_a_limit_near_its_slots_and_a_short_queue(capacity):
    # the pool used to settle at 12-17 against a 2-slot llama-server: each reply waited ~8 service times
    out = _simulate(AdaptiveLimit(256), capacity, lambda i: 2.0, requests=400 * capacity)
    low, high, wait = _settled(out)
    assert capacity <= low and high <= max(4, 2 * capacity), (low, high)
    assert wait <= (3.0 if capacity == 1 else 1.0), wait        # one slot: the latency floor of 4 allows 3 waiting
    ideal = 400 * capacity * 2.0 / capacity                     # the server never idle
    assert out["end"] <= 1.02 * ideal


@pytest.mark.parametrize("capacity", [16, 32, 64])
def test_a_large_server_is_kept_full_with_a_queue_under_one_service_time(capacity):
    out = _simulate(AdaptiveLimit(256), capacity, lambda i: 2.0, requests=60 * capacity)
    low, high, wait = _settled(out)
    assert capacity < low and high <= 2 * capacity, (low, high)
    assert wait <= 1.0, wait
    assert out["end"] <= 1.05 * 60 * 2.0


@pytest.mark.parametrize("capacity,tokens", [(2, 40), (4, 40), (4, 5), (64, 5)])
def test_replies_of_different_lengths_are_not_read_as_a_queue(capacity, tokens):
    # an LLM's service time follows its reply's length (here `tokens`-96 tokens at 28 ms each after a 0.3 s
    # prompt): the averaged latency keeps the server full without a queue of many service times (the lowest
    # single latency as the baseline kept a 64-slot server at a limit of 12, a fifth of its capacity)
    rnd = random.Random(7)
    out = _simulate(AdaptiveLimit(256), capacity, lambda i: 0.3 + rnd.randint(tokens, 96) * 0.028,
                    requests=300 * capacity)
    low, high, wait = _settled(out)
    assert capacity <= low and high <= 2 * capacity, (low, high)
    assert wait <= 1.0, wait
    assert out["end"] <= 1.03 * sum(out["services"]) / capacity


def test_latency_alone_never_takes_the_limit_below_the_floor_but_overload_does():
    limit = AdaptiveLimit(256)
    # a baseline from two very short first replies, then replies ten times as long on a server with room for all:
    # read as a deep queue that shrinking does not drain, the limit stops at the floor instead of 1
    out = _simulate(limit, 64, lambda i: 0.1 if i < 2 else 1.0, requests=2000)
    assert min(out["limits"]) >= FLOOR and out["limits"][-1] == FLOOR
    for _ in range(3):                     # a 429/503/dropped connection still halves it, to 1
        limit.release(asyncio.run(limit.acquire()), overloaded=True)
    assert limit.size == 1 and limit.in_use == 0


def test_a_fixed_limit_ignores_latency_samples():
    limit = AdaptiveLimit(6, adaptive=False)
    out = _simulate(limit, 2, lambda i: 2.0, requests=100)
    assert set(out["limits"]) == {6}


# --- a pool over three real servers ---------------------------------------------------------------------------

def _setup(db_path, cfg_path, servers, n):
    for i, s in enumerate(servers):
        write_endpoint(cfg_path, s, name=f"s{i}", max_concurrency=256, timeout=30, max_retries=4)
    cfg = load_config(cfg_path)
    save_config(add_pool(cfg, "fleet", [f"s{i}" for i in range(len(servers))]), cfg_path)
    conn = open_store(db_path)
    with transaction(conn):
        did = ensure_dataset(conn, "demo")
        insert_samples(conn, did, [{"instruction": f"Question {i}"} for i in range(n)])
    jid = J.queue_job(conn, "generate", config=load_config(cfg_path), dataset="demo", pool="fleet")
    return conn, jid


def test_a_pool_fills_servers_of_different_capacities(db_path, tmp_path):
    cfg_path = tmp_path / "config.toml"
    caps = (4, 8, 16)
    with LLMServer(latency=0.15, capacity=caps[0]) as a, LLMServer(latency=0.1, capacity=caps[1]) as b, \
            LLMServer(latency=0.2, capacity=caps[2]) as c:
        conn, jid = _setup(db_path, cfg_path, (a, b, c), 600)
        run_worker(db_path, load_config(cfg_path), until_idle=True)
        job = J.get_job(conn, jid)
        assert (job["status"], job["done"], job["failed"]) == ("done", 600, 0)
        # each server had every slot busy at some point: the program found each capacity by itself
        assert [s.stats.max_in_flight for s in (a, b, c)] == list(caps)
        figures = {e["endpoint"]: e for e in job["endpoint_stats"]}
        assert sorted(figures) == ["s0", "s1", "s2"]
        assert sum(e["ok"] for e in figures.values()) == 600
        for i, cap in enumerate(caps):
            assert figures[f"s{i}"]["peak"] >= cap
        # the Jobs screen and `jobs show` print one line per endpoint
        from screens.jobs import detail_text
        detail = detail_text(job).plain
        assert all(f"s{i}: limit " in detail for i in range(3)), detail
        conn.close()


def test_an_endpoint_that_goes_down_mid_job_loses_nothing(db_path, tmp_path):
    cfg_path = tmp_path / "config.toml"
    n = 300
    with LLMServer(latency=0.05, capacity=8) as a, LLMServer(latency=0.05, capacity=8) as b, \
            LLMServer(latency=0.05, capacity=8) as c:
        conn, jid = _setup(db_path, cfg_path, (a, b, c), n)
        t = threading.Thread(target=run_worker, args=(db_path, load_config(cfg_path)), kwargs={"until_idle": True})
        t.start()
        deadline = time.monotonic() + 60
        while b.stats.completions < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        b.stop()                                     # mid-job, with requests in flight there
        t.join(120)
        assert not t.is_alive()
        job = J.get_job(conn, jid)
        assert (job["status"], job["done"], job["failed"]) == ("done", n, 0)
        written = conn.execute("SELECT count(*), count(DISTINCT parent_id) FROM samples WHERE job_id = ?",
                               (jid,)).fetchone()
        assert written == (n, n)                     # 0 lost, 0 duplicated
        assert a.stats.completions + c.stats.completions + b.stats.completions >= n
        figures = {e["endpoint"]: e for e in job["endpoint_stats"]}
        assert figures["s1"]["errors"] >= 1
        conn.close()
