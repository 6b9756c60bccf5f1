"""Reading what dedup compares from the store: a lean query, rows turned into texts a block at a time, and the
blocks' signatures (near_dup.Sig) computed in worker processes for big scans.

The pool: the id range in scope is cut into slices; up to POOL_WORKERS fresh interpreters (not fork: the app has
threads; not multiprocessing's spawn either, which re-imports the caller's __main__) each open the store read-only
and return the Sigs of their slices, which are taken in id order, so the result is the same as reading in this
process (tests/test_dedup_speed.py checks that). The parent keeps only what the Sigs hold, as it does reading
itself.
"""
from __future__ import annotations

import os
import pickle
import secrets
import sqlite3
import subprocess
import sys
from typing import Iterator

import orjson

from .near_dup import BLOCK_ROWS, Sig, signatures

POOL_WORKERS = 2          # the machine's cores are shared with the UI and the workers
POOL_MIN_ROWS = 200_000   # below this (by id span) starting processes costs more than it saves
SLICES_PER_WORKER = 8
SLICE_IDS = 50_000        # at most this many ids per slice: a worker's memory stays the same at 10M rows


def row_texts(instruction: str, input_: str, response: str, messages: str | None, is_preference: bool,
              fields: tuple[str, ...]) -> tuple[str, str | None]:
    """(main, extra) raw texts of one row: main is the prompt (or the response when only it is compared), extra
    the response when both are compared. A conversation contributes all its user turns to the prompt and all
    assistant turns to the response (a preference row's chosen reply is its response column)."""
    prompt_fields = [f for f in fields if f != "response"]
    users, assistants = [], []
    if messages:
        for m in orjson.loads(messages):
            role, content = m.get("role"), m.get("content") or ""
            if role == "user":
                users.append(content)
            elif role == "assistant":
                assistants.append(content)
    prompt = ""
    if prompt_fields:
        parts = users if users else ([instruction] if "instruction" in prompt_fields else [])
        if "input" in prompt_fields and input_:
            parts = [*parts, input_]
        prompt = "\n".join(parts)
    reply = None
    if "response" in fields:
        if assistants and not is_preference:
            reply = "\n".join(assistants)
        else:
            reply = "\n".join([*assistants, response]) if assistants else response
    if not prompt_fields:
        return reply or "", None
    return prompt, reply


def _lean_sql(fields: tuple[str, ...]) -> str:
    """The row query with the columns `fields` does not compare read as '' (row_texts never looks at them)."""
    cols = [c if c in fields else "''" for c in ("instruction", "input", "response")]
    return f"SELECT id, {', '.join(cols)}, messages, rejected IS NOT NULL FROM samples"


def _block_texts(rows: list[tuple], fields: tuple[str, ...]) -> tuple[list[int], list[str], list[str] | None]:
    """A block of _lean_sql rows -> (ids, mains, extras or None), as row_texts gives them row by row. Blocks
    without conversations (the common case) take list-wide paths instead of a call per row."""
    ids, ins, inp, resp, msgs, pref = (list(c) for c in zip(*rows))
    prompt_fields = [f for f in fields if f != "response"]
    with_reply = "response" in fields and bool(prompt_fields)
    if any(msgs):
        pairs = [row_texts(a, b, c, m, bool(p), fields) for a, b, c, m, p in zip(ins, inp, resp, msgs, pref)]
        return ids, [p[0] for p in pairs], [p[1] or "" for p in pairs] if with_reply else None
    if not prompt_fields:
        return ids, resp, None
    if len(prompt_fields) == 2:
        mains = [a + "\n" + b if b else a for a, b in zip(ins, inp)]
    else:
        mains = ins if prompt_fields == ["instruction"] else inp
    return ids, mains, resp if with_reply else None


def stream_blocks(conn: sqlite3.Connection, where: str, params: list, fields: tuple[str, ...],
                  size: int = BLOCK_ROWS) -> Iterator[tuple[list[int], list[str], list[str] | None]]:
    """Blocks of (ids, mains, extras or None) raw texts for the rows in scope, in id order."""
    cur = conn.execute(f"{_lean_sql(fields)} WHERE {where} ORDER BY id", params)
    while rows := cur.fetchmany(size):
        yield _block_texts(rows, fields)


def _only(blocks, wanted: set[int]):
    for ids, mains, extras in blocks:
        keep = [k for k, i in enumerate(ids) if i in wanted]
        if keep:
            yield ([ids[k] for k in keep], [mains[k] for k in keep],
                   None if extras is None else [extras[k] for k in keep])


def fetch_extras(conn: sqlite3.Connection, ids: list[int], fields: tuple[str, ...]) -> dict[int, str | None]:
    """{id: raw extra text} for these ids (the responses that near_dup verifies pairs on)."""
    out = {}
    for i in range(0, len(ids), 900):
        chunk = ids[i:i + 900]
        rows = conn.execute(f"{_lean_sql(fields)} WHERE id IN ({','.join('?' * len(chunk))})", chunk).fetchall()
        if rows:
            got, _, extras = _block_texts(rows, fields)
            out.update(zip(got, extras))
    return out


def db_path(conn: sqlite3.Connection) -> str | None:
    for _, name, path in conn.execute("PRAGMA database_list"):
        if name == "main":
            return path or None
    return None


def scan_signatures(conn: sqlite3.Connection, where: str, params: list, fields: tuple[str, ...],
                    wanted: set[int] | None = None, workers: int | None = None) -> Iterator[Sig]:
    """The Sigs of the rows in scope, in id order: in worker processes when the scan is big (or `workers` > 1
    asks for them), else here."""
    # two ordered look-ups: min() and max() together would scan a whole index when no dataset is named
    lo, hi = (conn.execute(f"SELECT id FROM samples WHERE {where} ORDER BY id {d} LIMIT 1", params).fetchone()
              for d in ("ASC", "DESC"))
    lo, hi = (lo[0], hi[0]) if lo else (None, None)
    path = db_path(conn)
    if workers is None:
        workers = min(POOL_WORKERS, os.cpu_count() or 1) if lo is not None and hi - lo >= POOL_MIN_ROWS else 1
    if workers > 1 and lo is not None and path and wanted is None:
        return _pooled(path, where, params, fields, lo, hi, workers)
    blocks = stream_blocks(conn, where, params, fields)
    if wanted is not None:
        blocks = _only(blocks, wanted)
    return (signatures(*b) for b in blocks)


def _pooled(path: str, where: str, params: list, fields: tuple[str, ...], lo: int, hi: int,
            workers: int) -> Iterator[Sig]:
    """Slice k goes to worker k % workers; results are read back in slice order (each worker writes its own in
    order, so nobody waits on anybody but the reader). A worker that fails stops the scan with its error."""
    step = min(SLICE_IDS, max(BLOCK_ROWS, (hi - lo + 1) // (workers * SLICES_PER_WORKER) + 1))
    slices = [(a, min(a + step - 1, hi)) for a in range(lo, hi + 1, step)]
    workers = min(workers, len(slices))
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])),
           # the Sigs' hashes are Python's str hashes: the workers of one run must share their salt (a fresh one)
           "PYTHONHASHSEED": str(secrets.randbelow(2**32 - 1) + 1)}
    procs = []
    try:
        for w in range(workers):
            # a fresh interpreter running only this module's worker: nothing of the caller's __main__ is re-run
            proc = subprocess.Popen([sys.executable, "-c", "from workbench.dedup_scan import _worker; _worker()"],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
            procs.append(proc)
            pickle.dump((path, where, params, fields, slices[w::workers]), proc.stdin)
            proc.stdin.close()
        for k in range(len(slices)):
            proc = procs[k % workers]
            try:
                sigs = pickle.load(proc.stdout)
            except EOFError:
                proc.wait()
                err = proc.stderr.read().decode(errors="replace").strip().splitlines()
                raise RuntimeError(f"dedup worker failed: {err[-1] if err else f'exit {proc.returncode}'}") from None
            yield from sigs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            proc.stdout.close()
            proc.stderr.close()


def _worker() -> None:
    """A worker process: (store path, scope, fields, id slices) on stdin; one pickled list of Sigs per slice on
    stdout, in order."""
    path, where, params, fields, slices = pickle.load(sys.stdin.buffer)
    conn = sqlite3.connect(path, timeout=30)
    conn.execute("PRAGMA query_only = 1")
    conn.execute("PRAGMA cache_size = -8000")
    out = sys.stdout.buffer
    for a, b in slices:
        sigs = [signatures(*blk) for blk in stream_blocks(conn, f"{where} AND id BETWEEN ? AND ?", [*params, a, b],
                                                          fields)]
        pickle.dump(sigs, out, protocol=pickle.HIGHEST_PROTOCOL)
        out.flush()
