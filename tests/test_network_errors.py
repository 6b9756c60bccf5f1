"""Network errors named for what they are: refused, DNS failure, reset, closed, timeout. What the OS answers
at once (refused, no such host) fails at once; only loopback and `.invalid` names are ever contacted."""
from __future__ import annotations

import socket
import threading

import pytest

from llm_server import LLMServer, Rule, write_endpoint
from workbench import jobs as J
from workbench.endpoints import Endpoint
from workbench.llm import LLM, Client, LLMError, Pool
from workbench.samples import insert_samples
from workbench.store import ensure_dataset, open_store, transaction

MSG = [{"role": "user", "content": "hello there"}]


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


async def failure(base_url: str, **kw) -> tuple[LLMError, object]:
    ep = Endpoint(name="e", base_url=base_url, model="test-model", **{"timeout": 5.0, "max_retries": 3, **kw})
    client = Client(ep)
    llm = LLM({"generate": Pool([client])})
    try:
        with pytest.raises(LLMError) as e:
            await llm.complete(MSG)
        return e.value, llm.meter
    finally:
        await client.close()


async def test_refused_port_fails_at_once_and_says_refused():
    port = closed_port()
    err, meter = await failure(f"http://127.0.0.1:{port}/v1")
    assert f"connection refused by 127.0.0.1:{port}" in str(err)
    assert "timed out" not in str(err)
    assert meter.requests == 1 and meter.retries == 0          # not retried: the OS said no


async def test_dns_failure_says_dns():
    err, meter = await failure("http://no-such-host.invalid:8000/v1", max_retries=1)
    assert "DNS lookup" in str(err) and "no-such-host.invalid" in str(err), str(err)
    assert "timed out" not in str(err)
    if "not found" in str(err):                                 # a definite answer: not asked again
        assert meter.retries == 0


async def test_timeout_says_timeout_with_the_endpoints_timeout():
    with LLMServer(rules=[Rule("hang", hang=3)]) as srv:
        err, meter = await failure(srv.base_url, timeout=0.5, max_retries=1)
    assert "timed out after 0.5 s" in str(err) and "gave up after 2 attempts" in str(err)
    assert meter.retries == 1


async def test_dropped_connection_says_closed_without_a_reply():
    with LLMServer(rules=[Rule("drop")]) as srv:
        err, meter = await failure(srv.base_url, max_retries=1)
    assert "closed by 127.0.0.1" in str(err) and "without a reply" in str(err), str(err)
    assert "timed out" not in str(err) and meter.retries == 1    # transient: asked again


async def test_truncated_reply_says_cut_off():
    with LLMServer(rules=[Rule("truncated")]) as srv:
        err, meter = await failure(srv.base_url, max_retries=1)
    assert "cut off" in str(err) and "timed out" not in str(err), str(err)


class ResetServer:
    """Accepts, reads the request, then resets the connection (SO_LINGER 0: the peer gets an RST)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        import struct
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.settimeout(2)
            try:
                conn.recv(65536)
            except OSError:
                pass
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

    def close(self):
        self.sock.close()


async def test_reset_says_reset():
    srv = ResetServer()
    try:
        err, meter = await failure(f"http://127.0.0.1:{srv.port}/v1", max_retries=1)
    finally:
        srv.close()
    assert f"connection reset by 127.0.0.1:{srv.port}" in str(err), str(err)
    assert "timed out" not in str(err) and meter.retries == 1


def test_endpoints_test_on_a_refused_port(cli, tmp_path):
    port = closed_port()
    code, out, err = cli("endpoints", "add", "down", "--base-url", f"http://127.0.0.1:{port}/v1", "--model", "m")
    assert code == 0, err
    code, out, err = cli("endpoints", "test", "down")
    assert code == 1 and f"connection refused by 127.0.0.1:{port}" in err and "timed out" not in err, err
    assert "attempts" not in err


def test_endpoints_test_on_a_name_that_does_not_resolve(cli):
    code, out, err = cli("endpoints", "add", "nowhere", "--base-url", "http://workbench-test.invalid/v1",
                         "--model", "m", "--max-retries", "1")
    assert code == 0, err
    code, out, err = cli("endpoints", "test", "nowhere")
    assert code == 1 and "DNS lookup" in err and "workbench-test.invalid" in err and "timed out" not in err, err


def test_job_items_say_refused(cli, db_path, tmp_path):
    conn = open_store(db_path)
    with transaction(conn):
        insert_samples(conn, ensure_dataset(conn, "d"), [{"instruction": f"Q{i}"} for i in range(3)])
    conn.close()
    port = closed_port()
    with LLMServer() as srv:          # only to write a well-formed endpoint, then pointed at the closed port
        write_endpoint(tmp_path / "config.toml", srv)
    cfg = (tmp_path / "config.toml").read_text().replace(f":{srv.port}/", f":{port}/")
    (tmp_path / "config.toml").write_text(cfg)
    code, out, err = cli("run", "generate", "--dataset", "d", "--endpoint", "local", "--wait")
    assert code == 1, err
    conn = open_store(db_path)
    fails = J.failures(conn, 1, 10)
    job = J.get_job(conn, 1)
    conn.close()
    errors = [f["error"] for f in fails] + [job["error"] or ""]
    assert fails and all(f"connection refused by 127.0.0.1:{port}" in e for e in errors[:-1]), errors
    assert not any("timed out" in e for e in errors)
