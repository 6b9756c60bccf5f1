"""Huge replies: an endpoint's max_reply_bytes fails the item with "reply too large", reads no more than the cap, and
stores only the reply's head (real openai client -> real test server -> real store)."""
from __future__ import annotations

import pytest

from llm_server import LLMServer, Rule
from workbench import jobs as J
from workbench.config import load_config
from workbench.endpoints import DEFAULT_MAX_REPLY_BYTES, Endpoint
from workbench.llm import RAW_HEAD_CHARS, Client, ReplyTooLarge
from workbench.store import open_store
from workbench.worker import run_worker

from test_worker import make_dataset

BIG = "<big>" + "y" * (3 << 20)          # 3 MB of text: over the 1 MiB default


@pytest.fixture
def srv():
    with LLMServer() as s:
        s.reply = lambda msgs, body: BIG if "huge" in msgs[-1]["content"] else "a short answer"
        yield s


def user(text):
    return [{"role": "user", "content": text}]


@pytest.mark.parametrize("fault", [None, "chunked"])
async def test_a_reply_over_the_cap_is_refused_with_its_head_kept(srv, fault):
    if fault:
        srv.rules = [Rule(fault)]
    client = Client(Endpoint(name="t", base_url=srv.base_url, model="test-model", max_retries=2))
    try:
        assert client.ep.max_reply_bytes == DEFAULT_MAX_REPLY_BYTES == 1 << 20
        assert (await client.chat(user("small please"), {})).text == "a short answer"
        with pytest.raises(ReplyTooLarge) as e:
            await client.chat(user("huge please"), {})
        msg = str(e.value)
        assert msg.startswith("t: reply too large: ") and "1,048,576" in msg and "not stored" in msg
        if fault is None:
            assert "3,146," in msg                       # the announced size, read no further than the head
        assert 0 < len(e.value.raw) <= RAW_HEAD_CHARS and "<big>yyy" in e.value.raw
        assert srv.stats.completions == 2                # a size refusal is not asked again
        if fault == "chunked":                           # no size announced: it stopped reading past the cap
            assert "reply too large: over 1,048,576 bytes" in msg
    finally:
        await client.close()


async def test_a_reply_just_under_the_cap_passes():
    with LLMServer() as srv:
        srv.reply = lambda msgs, body: "z" * 5000
        client = Client(Endpoint(name="t", base_url=srv.base_url, model="test-model", max_reply_bytes=6000))
        try:
            assert len((await client.chat(user("q"), {})).text) == 5000      # body ~5.3 KB
            client.ep = Endpoint(**{**client.ep.__dict__, "max_reply_bytes": 5000})
            with pytest.raises(ReplyTooLarge):
                await client.chat(user("q"), {})
        finally:
            await client.close()


def test_the_worker_fails_only_the_huge_item_and_stores_no_huge_text(srv, db_path, tmp_path, cli):
    cfg = tmp_path / "config.toml"
    make_dataset(db_path, n=6, fmt="Question {i}")
    conn = open_store(db_path)
    conn.execute("UPDATE samples SET instruction = 'Question huge' WHERE instruction = 'Question 2'")
    conn.close()
    code, out, err = cli("endpoints", "add", "local", "--base-url", srv.base_url, "--model", "test-model",
                         "--max-reply-bytes", "100000", "--config", str(cfg))
    assert code == 0, err
    assert "max_reply_bytes = 100000" in cfg.read_text()
    code, out, err = cli("endpoints", "add", "bad", "--base-url", srv.base_url, "--model", "m",
                         "--max-reply-bytes", "0", "--config", str(cfg))
    assert code == 2 and "--max-reply-bytes: '0': a whole number from 1" in err and "Traceback" not in err
    code, out, err = cli("run", "generate", "--dataset", "demo", "--endpoint", "local", "--config", str(cfg))
    assert code == 0, err
    jid = int(out.split()[0])
    run_worker(db_path, load_config(cfg), until_idle=True)
    conn = open_store(db_path)
    j = J.get_job(conn, jid)
    assert (j["status"], j["done"], j["failed"]) == ("done", 5, 1)      # not paused: not an endpoint failure
    (fail,) = J.failures(conn, jid)
    assert "reply too large" in fail["error"] and "100,000" in fail["error"]
    assert len(fail["raw"]) <= RAW_HEAD_CHARS
    biggest = max(n or 0 for (n,) in conn.execute(
        "SELECT max(length(response)) FROM samples UNION ALL SELECT max(length(raw)) FROM job_items "
        "UNION ALL SELECT max(length(response)) FROM llm_cache UNION ALL SELECT max(length(error)) FROM job_items"))
    assert biggest < 10_000
    conn.close()
