"""The Batch API's files: our JSONL input, and reading the provider's output and error files line by line.

Nothing here touches the network or the store (workbench/batch.py does). Every line of an output or error file
ends up somewhere a curator can see it: a reply for the request it names, an error for that request, or a
"stray" line (malformed, no custom_id, a custom_id we never sent) kept with its raw text.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import orjson

from .llm import RETRY_STATUS

BATCH_URL = "/v1/chat/completions"
RAW_CAP = 64 * 1024        # of one raw line kept in the store (a line can hold a whole reply)
LINE_CAP = 64 * 2**20      # a longer line is not read into memory: a stray line with its head kept
# error codes of a batch line (the `error` object) that the provider uses for "ask again later"; any other code
# stays an item error (with its line) that `jobs retry` can send again by hand
RETRYABLE_CODES = {"rate_limit_exceeded", "server_error", "timeout", "request_timeout", "service_unavailable"}


def input_line(custom_id: str, body: dict) -> bytes:
    return orjson.dumps({"custom_id": custom_id, "method": "POST", "url": BATCH_URL, "body": body}) + b"\n"


def input_file(requests: list[tuple[str, str]]) -> bytes:
    """The input JSONL from (custom_id, body JSON) pairs, in custom_id order: the same bytes on every restart."""
    return b"".join(input_line(cid, orjson.loads(body)) for cid, body in sorted(requests))


@dataclass
class Verdict:
    """What the batch said about one request: a reply (dict for Completion) or an error; raw = its line(s).
    retryable: the error is one the online client would ask again (429, 408/409, 5xx, a timeout)."""
    reply: dict | None = None
    error: str | None = None
    raw: list[str] = field(default_factory=list)
    retryable: bool = False


@dataclass
class Stray:
    source: str        # "output" | "error"
    line: int          # 1-based
    reason: str
    raw: str


@dataclass
class Chunk:
    """What a stretch of the files said: verdicts to store now, stray lines to store as failed items."""
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    strays: list[Stray] = field(default_factory=list)


def _clip(text: str) -> str:
    return text if len(text) <= RAW_CAP else text[:RAW_CAP] + f"… [{len(text) - RAW_CAP:,} more characters]"


def _lines(f, cap: int):
    """(line number, byte offset, line) of a binary file, one line at a time; a line over `cap` bytes is
    (n, offset, None, its first bytes), and the rest of it is skipped without being held."""
    offset, n = 0, 0
    while True:
        line = f.readline(cap + 1)
        if not line:
            return
        n += 1
        start = offset
        offset += len(line)
        if len(line) > cap and not line.endswith(b"\n"):
            head = line[:RAW_CAP]
            while line and not line.endswith(b"\n"):
                line = f.readline(1 << 20)
                offset += len(line)
            yield n, start, None, head
            continue
        yield n, start, line, None


class FileReading:
    """The output and error files of one batch (downloaded to disk), matched line by line to the requests sent
    (custom_ids), in chunks, holding no more than a chunk of replies: a 2 GB output file is read at flat memory.
    `clean(text)` redacts keys from everything kept.

    A request with two lines (in either file) is an error naming both, never "the last one": the first line's
    verdict goes out with its chunk and is replaced in `finish()`, which re-reads both lines by their offsets.
    A request with no line at all gets `why` there (the batch completed without it, expired, failed ...)."""

    def __init__(self, sent: set[str], clean, line_cap: int = LINE_CAP, reply_cap: int | None = None):
        self.sent = sent
        self.clean = clean
        self.line_cap = line_cap
        self.reply_cap = reply_cap         # the endpoint's max_reply_bytes: a longer reply fails, as online
        self.first: dict[str, tuple] = {}     # custom_id -> (source, line, offset, tokens in, tokens out)
        self.more: dict[str, list[tuple]] = {}   # custom_id -> its further lines (source, line, offset)
        self.tokens_in = self.tokens_out = 0
        self.strays = 0

    def chunks(self, files: list[tuple[str, Path]], size: int = 500, max_bytes: int = 16 * 2**20) -> Iterator[Chunk]:
        """Chunks of at most `size` lines or about `max_bytes` of them."""
        chunk, held = Chunk(), 0
        for source, path in files:
            with open(path, "rb") as f:
                for n, offset, line, head in _lines(f, self.line_cap):
                    self._one(chunk, source, n, offset, line, head)
                    held += len(line) if line is not None else len(head)
                    if len(chunk.verdicts) + len(chunk.strays) >= size or held >= max_bytes:
                        yield chunk
                        chunk, held = Chunk(), 0
        if chunk.verdicts or chunk.strays:
            yield chunk

    def _one(self, chunk: Chunk, source: str, n: int, offset: int, line: bytes | None, head: bytes | None) -> None:
        if line is None:
            text = self.clean(head.decode("utf-8", "replace"))
            self._stray(chunk, source, n, f"line longer than {self.line_cap:,} bytes", text)
            return
        if not line.strip():
            return
        text = self.clean(line.decode("utf-8", "replace").rstrip("\r\n"))
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as e:
            self._stray(chunk, source, n, f"not JSON ({e})", text)
            return
        cid = obj.get("custom_id") if isinstance(obj, dict) else None
        if not isinstance(cid, str) or not cid:
            self._stray(chunk, source, n, "no custom_id", text)
            return
        if cid not in self.sent:
            self._stray(chunk, source, n, "custom_id matches no request of this batch", text)
            return
        if cid in self.first:
            self.more.setdefault(cid, []).append((source, n, offset))
            chunk.verdicts.pop(cid, None)
            return
        v = _verdict(obj, self.clean, self.reply_cap)
        tin, tout = (v.reply["prompt_tokens"], v.reply["completion_tokens"]) if v.reply is not None else (0, 0)
        self.tokens_in += tin
        self.tokens_out += tout
        self.first[cid] = (source, n, offset, tin, tout)
        if v.reply is None:           # an answer is kept as its fields; an error with its line
            v.raw = [_clip(f"{source} line {n}: {text}")]
        chunk.verdicts[cid] = v

    def _stray(self, chunk: Chunk, source: str, n: int, reason: str, text: str) -> None:
        self.strays += 1
        chunk.strays.append(Stray(source, n, reason, _clip(text)))

    def finish(self, files: list[tuple[str, Path]], why: str) -> dict[str, Verdict]:
        """The verdicts not given with the chunks: requests with two or more lines (their tokens taken back), and
        requests with none (`why`)."""
        paths = dict(files)
        out = {}
        for cid, more in self.more.items():
            source, n, offset, tin, tout = self.first[cid]
            self.tokens_in -= tin
            self.tokens_out -= tout
            places = [(source, n, offset)] + more
            raw = [_clip(f"{s} line {k}: {self._reread(paths[s], off)}") for s, k, off in places]
            where = ", ".join(f"{s} line {k}" for s, k, _ in places)
            out[cid] = Verdict(error=f"the batch returned {len(places)} lines for this request ({where}); "
                                     "none is used", raw=raw)
        for cid in self.sent:
            if cid not in self.first:
                out[cid] = Verdict(error=why)
        return out

    def _reread(self, path: Path, offset: int) -> str:
        with open(path, "rb") as f:
            f.seek(offset)
            return self.clean(f.readline(RAW_CAP + 1).decode("utf-8", "replace").rstrip("\r\n"))


def _verdict(obj: dict, clean, reply_cap: int | None = None) -> Verdict:
    err = obj.get("error")
    if err is not None:
        msg = err.get("message") if isinstance(err, dict) else err
        code = err.get("code") if isinstance(err, dict) else None
        return Verdict(error=clean(f"the batch reported an error{f' ({code})' if code else ''}: {msg}")[:2000],
                       retryable=code in RETRYABLE_CODES)
    resp = obj.get("response")
    if not isinstance(resp, dict):
        return Verdict(error="line has neither a response nor an error")
    status, body = resp.get("status_code"), resp.get("body")
    if status != 200:
        detail = body.get("error", body) if isinstance(body, dict) else body
        if isinstance(detail, dict):
            detail = detail.get("message", detail)
        # the statuses the online client retries (workbench/llm.py), and only real ones: a status that is no
        # whole number 100-599 is not "a 5xx"
        real = isinstance(status, int) and not isinstance(status, bool) and 100 <= status <= 599
        return Verdict(error=clean(f"HTTP {status}: {detail}")[:2000],
                       retryable=real and (status in RETRY_STATUS or status >= 500))
    try:
        reply = reply_fields(body)
    except ValueError as e:
        return Verdict(error=f"malformed reply: {clean(str(e))}")
    size = len(reply["text"].encode())
    if reply_cap is not None and size > reply_cap:
        return Verdict(error=f"reply too large: {size:,} bytes, the endpoint's max_reply_bytes is {reply_cap:,}; not "
                             f"stored (the start of its line is kept)")
    reply["text"] = clean(reply["text"])     # a reply that echoes the key: redacted before anything stores it
    return Verdict(reply=reply)


def reply_fields(body) -> dict:
    """The fields of a chat completion we keep (the same checks as the online client); ValueError if malformed."""
    if not isinstance(body, dict):
        raise ValueError(f"response body is {type(body).__name__}, not an object")
    choices = body.get("choices")
    if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
        raise ValueError("reply has no choices")
    msg = choices[0].get("message") or {}
    text = msg.get("content") if isinstance(msg, dict) else None
    if text is not None and not isinstance(text, str):
        raise ValueError(f"message content is {type(text).__name__}, not text")
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
    tin, tout = (n if isinstance(n := usage.get(k), int) and n >= 0 else 0
                 for k in ("prompt_tokens", "completion_tokens"))
    model = body.get("model")
    finish = choices[0].get("finish_reason")
    return {"text": text or "", "model": model if isinstance(model, str) and model else None,
            "finish_reason": finish if isinstance(finish, str) else None,
            "prompt_tokens": tin, "completion_tokens": tout}
