"""The Batch API's files: our JSONL input, and reading the provider's output and error files line by line.

Nothing here touches the network or the store (workbench/batch.py does). Every line of an output or error file
ends up somewhere a curator can see it: a reply for the request it names, an error for that request, or a
"stray" line (malformed, no custom_id, a custom_id we never sent) kept with its raw text.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import orjson

BATCH_URL = "/v1/chat/completions"
RAW_CAP = 64 * 1024        # of one raw line kept in the store (a line can hold a whole reply)


def input_line(custom_id: str, body: dict) -> bytes:
    return orjson.dumps({"custom_id": custom_id, "method": "POST", "url": BATCH_URL, "body": body}) + b"\n"


def input_file(requests: list[tuple[str, str]]) -> bytes:
    """The input JSONL from (custom_id, body JSON) pairs, in custom_id order: the same bytes on every restart."""
    return b"".join(input_line(cid, orjson.loads(body)) for cid, body in sorted(requests))


@dataclass
class Verdict:
    """What the batch said about one request: a reply (dict for Completion) or an error; raw = its line(s)."""
    reply: dict | None = None
    error: str | None = None
    raw: list[str] = field(default_factory=list)


@dataclass
class Stray:
    source: str        # "output" | "error"
    line: int          # 1-based
    reason: str
    raw: str


@dataclass
class Reading:
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    strays: list[Stray] = field(default_factory=list)
    tokens_in: int = 0
    tokens_out: int = 0


def _clip(text: str) -> str:
    return text if len(text) <= RAW_CAP else text[:RAW_CAP] + f"… [{len(text) - RAW_CAP:,} more characters]"


def read_files(sent: set[str], output: bytes | None, errors: bytes | None, clean) -> Reading:
    """Match the lines of the output and error files to the requests sent (custom_ids). `clean(text)` redacts
    keys from everything kept. A request with two lines (in either file) is an error naming both, never "the
    last one"; a request with no line at all gets no verdict here (the caller says why: expired, failed...)."""
    r = Reading()
    seen: dict[str, list[tuple[str, dict]]] = {}
    for source, blob in (("output", output), ("error", errors)):
        if not blob:
            continue
        for n, line in enumerate(blob.split(b"\n"), start=1):
            if not line.strip():
                continue
            text = clean(line.decode("utf-8", "replace"))
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as e:
                r.strays.append(Stray(source, n, f"not JSON ({e})", _clip(text)))
                continue
            cid = obj.get("custom_id") if isinstance(obj, dict) else None
            if not isinstance(cid, str) or not cid:
                r.strays.append(Stray(source, n, "no custom_id", _clip(text)))
                continue
            if cid not in sent:
                r.strays.append(Stray(source, n, "custom_id matches no request of this batch", _clip(text)))
                continue
            seen.setdefault(cid, []).append((f"{source} line {n}: {text}", obj))
    for cid, lines in seen.items():
        raw = [_clip(t) for t, _ in lines]
        if len(lines) > 1:
            where = ", ".join(t.split(":", 1)[0] for t, _ in lines)
            r.verdicts[cid] = Verdict(error=f"the batch returned {len(lines)} lines for this request ({where}); "
                                            "none is used", raw=raw)
            continue
        v = _verdict(lines[0][1], clean)
        v.raw = raw if v.reply is None else []      # an answer is kept as its fields; an error with its line
        if v.reply is not None:
            r.tokens_in += v.reply["prompt_tokens"]
            r.tokens_out += v.reply["completion_tokens"]
        r.verdicts[cid] = v
    return r


def _verdict(obj: dict, clean) -> Verdict:
    err = obj.get("error")
    if err is not None:
        msg = err.get("message") if isinstance(err, dict) else err
        code = err.get("code") if isinstance(err, dict) else None
        return Verdict(error=clean(f"the batch reported an error{f' ({code})' if code else ''}: {msg}")[:2000])
    resp = obj.get("response")
    if not isinstance(resp, dict):
        return Verdict(error="line has neither a response nor an error")
    status, body = resp.get("status_code"), resp.get("body")
    if status != 200:
        detail = body.get("error", body) if isinstance(body, dict) else body
        if isinstance(detail, dict):
            detail = detail.get("message", detail)
        return Verdict(error=clean(f"HTTP {status}: {detail}")[:2000])
    try:
        reply = reply_fields(body)
    except ValueError as e:
        return Verdict(error=f"malformed reply: {clean(str(e))}")
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
