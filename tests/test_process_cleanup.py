"""An import's helper processes (the parser pool, multiprocessing's resource tracker) die with it, even on kill -9;
`workbench jobs` shows a job whose worker stopped renewing its lease as stale."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson

from workbench.store import open_store, transaction

ROOT = Path(__file__).resolve().parent.parent

SLOW_IMPORT = r'''
import sys, time
from workbench import importer
from workbench.store import open_store
importer.PARALLEL_MIN_BYTES = 0              # use the parser process for this small file
importer.CHUNK_S = 0.0                       # small chunks ...
real_write = importer._StagedWriter._write

def slow_write(self, *a, **kw):
    time.sleep(0.5)                          # ... slowly: the import is still running when the test kills it
    return real_write(self, *a, **kw)
importer._StagedWriter._write = slow_write
print("started", flush=True)
importer.import_file(open_store(sys.argv[1]), sys.argv[2], dataset="big")
'''


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_kill_9_of_an_import_leaves_no_helper_process(tmp_path):
    data = tmp_path / "data.jsonl"
    line = orjson.dumps({"instruction": "q " * 200, "output": "a " * 300}) + b"\n"
    data.write_bytes(line * 8000)                # ~10 MB: several 1 MB blocks, half a second apart
    proc = subprocess.Popen([sys.executable, "-c", SLOW_IMPORT, str(tmp_path / "s.db"), str(data)], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "started"
        deadline = time.monotonic() + 60
        helpers: set[int] = set()
        while time.monotonic() < deadline and len(helpers) < 2:   # the parser and the resource tracker
            time.sleep(0.1)
            helpers = {p for p in descendants(proc.pid) if alive(p)}
        assert len(helpers) >= 2, f"expected a parser process and a resource tracker, saw {helpers}"
        cmdlines = [Path(f"/proc/{p}/cmdline").read_bytes() for p in helpers]
        assert any(b"resource_tracker" in c for c in cmdlines) and any(b"spawn_main" in c for c in cmdlines)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(alive(p) for p in helpers):
            time.sleep(0.1)
        assert not [p for p in helpers if alive(p)], "helper processes outlived the killed import"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()


def test_jobs_shows_a_job_whose_lease_expired_as_stale(db_path, cli):
    conn = open_store(db_path)
    with transaction(conn):
        live = conn.execute("INSERT INTO jobs (kind, params, status, lease_owner, lease_expires, created_at) "
                            "VALUES ('generate', '{}', 'running', 'host:1', ?, 'now')", (time.time() + 60,)).lastrowid
        dead = conn.execute("INSERT INTO jobs (kind, params, status, lease_owner, lease_expires, created_at) "
                            "VALUES ('judge', '{}', 'running', 'host:2', ?, 'now')", (time.time() - 90,)).lastrowid
    conn.close()
    code, out, err = cli("jobs", "--db", str(db_path))
    assert code == 0, err
    rows = {int(line.split()[0]): line.split()[2] for line in out.splitlines()[1:] if line.split()[0].isdigit()}
    assert rows == {live: "running", dead: "stale"}
    assert f"job {dead}: stale: its worker (host:2) stopped renewing its lease 9" in out
    code, out, err = cli("jobs", "--json", "--db", str(db_path))
    got = {j["id"]: (j["status"], j["stale"]) for j in orjson.loads(out)}
    assert got == {live: ("running", False), dead: ("running", True)}
