"""Dataset formats: layout detection and row parsing into sample dicts (the file readers are in workbench/readers.py,
re-exported here).

Parsers turn one record into a sample dict (the fields of samples.FIELDS) or raise RowError naming the field.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import orjson

from .readers import (FILE_TYPES, JSONL_BLOCK_BYTES, SUFFIXES, FormatError, RowError, _suffix,  # noqa: F401
                      block_lines, file_type, jsonl_blocks, jsonl_lines, open_bytes, parquet_conversions,
                      parse_jsonl_line, read_records)
from .textnorm import keep_as_written

FORMATS = ("alpaca", "dolly", "sharegpt", "messages", "preference", "hh", "pairwise", "prompt-completion", "kto",
           "prompts", "text")

# Columns the workbench itself understands in any format (they round-trip through every export).
LABEL_FIELDS = ("task_type", "domain", "difficulty", "language")

SCORE_CHOSEN = ("score_chosen", "chosen_score", "chosen_rating")
SCORE_REJECTED = ("score_rejected", "rejected_score", "rejected_rating")

# Per format: target field -> source columns, first present wins.
FORMAT_FIELDS: dict[str, dict[str, tuple[str, ...]]] = {
    # alpaca rows may also carry a conversation and a rejected reply (our Parquet export writes them)
    "alpaca": {"instruction": ("instruction",), "input": ("input",), "response": ("output", "response"),
               "system": ("system",), "messages": ("messages",), "rejected": ("rejected",), "history": ("history",)},
    "dolly": {"instruction": ("instruction",), "input": ("context", "input"), "response": ("response", "output"),
              "task_type": ("category",), "system": ("system",)},
    "sharegpt": {"messages": ("conversations",), "system": ("system",)},
    "messages": {"messages": ("messages",)},
    # explicit prompt (a string, a message list, or LLaMA-Factory's instruction + input or conversation) or the
    # prompt inside chosen/rejected message lists (UltraFeedback-binarized, TRL's implicit prompt)
    "preference": {"prompt": ("prompt", "instruction"), "input": ("input",), "messages": ("conversations", "messages"),
                   "response": ("chosen",), "rejected": ("rejected",), "system": ("system",),
                   "score_chosen": SCORE_CHOSEN, "score_rejected": SCORE_REJECTED,
                   "model_chosen": ("chosen_model", "model_chosen"), "model_rejected": ("rejected_model", "model_rejected")},
    # two answers and which one won (AlpacaEval annotations, arena dumps)
    "pairwise": {"prompt": ("instruction", "prompt", "question"), "input": ("input",), "system": ("system",)},
    "hh": {"response": ("chosen",), "rejected": ("rejected",)},
    "prompt-completion": {"instruction": ("prompt",), "response": ("completion",), "system": ("system",)},
    # unpaired preference: TRL (prompt, completion, label) or LLaMA-Factory (instruction, input, output, kto_tag)
    "kto": {"instruction": ("prompt", "instruction"), "input": ("input",), "response": ("completion", "output"),
            "system": ("system",), "label": ("label", "kto_tag")},
    "prompts": {"instruction": ("instruction", "prompt", "question", "query"), "input": ("input", "context"),
                "task_type": ("category",), "system": ("system",)},
    "text": {"response": ("text",)},
}
KIND = {"alpaca": "sft", "dolly": "sft", "sharegpt": "sft", "messages": "sft", "prompt-completion": "sft",
        "kto": "sft", "preference": "preference", "hh": "preference", "pairwise": "preference", "prompts": "prompts",
        "text": "text"}

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system"}
# pairwise files: the two answers' columns, their models' columns, and the column saying which won
PAIR_COLUMNS = (("output_1", "output_2"), ("response_a", "response_b"), ("response_1", "response_2"),
                ("answer_a", "answer_b"), ("answer_1", "answer_2"), ("completion_a", "completion_b"),
                ("conversation_a", "conversation_b"))
PAIR_MODELS = (("generator_1", "generator_2"), ("model_a", "model_b"), ("model_1", "model_2"))
PREFER_COLUMNS = ("preference", "winner")
SHAREGPT_FROM = {"user": "human", "assistant": "gpt", "system": "system"}


# --- detection -----------------------------------------------------------------------------------------

def pair_columns(keys) -> tuple[str, str] | None:
    """The two answer columns of a pairwise row, or None."""
    return next((p for p in PAIR_COLUMNS if p[0] in keys and p[1] in keys), None)


def detect_format(keys: set[str]) -> str | None:
    """The format a record's column names say it is, or None."""
    if pair_columns(keys):
        return "pairwise"
    if "chosen" in keys and "rejected" in keys:
        # with a prompt, instruction or conversation beside them: explicit prompt (TRL, LLaMA-Factory ranking);
        # alone: the prompt is inside each reply (HH transcripts, or message lists - see parse_record)
        return "preference" if keys & {"prompt", "instruction", "conversations", "messages"} else "hh"
    if "conversations" in keys:
        return "sharegpt"
    if "kto_tag" in keys or ("label" in keys and "completion" in keys):
        return "kto"
    if "instruction" in keys and keys & {"output", "response"}:
        return "dolly" if keys & {"context", "category"} else "alpaca"
    if "messages" in keys:
        return "messages"
    if "prompt" in keys and "completion" in keys:
        return "prompt-completion"
    has_instruction = bool(keys & {"instruction", "prompt", "question", "query"})
    if has_instruction:
        return "prompts"
    if "text" in keys:
        return "text"
    return None


def apply_mapping(rec: dict, mapping: dict[str, str]) -> dict:
    """--map target=source: rename source columns to the names the formats understand."""
    if not mapping:
        return rec
    out = {k: v for k, v in rec.items() if k not in mapping.values()}
    for target, source in mapping.items():
        if source in rec:
            out[target] = rec[source]
    return out


def field_mapping(fmt: str, keys: set[str], mapping: dict[str, str] | None = None,
                  prefer: str | None = None) -> dict[str, str]:
    """Target field -> source column, as it applies to records with these keys (for --dry-run)."""
    mapping = mapping or {}
    out = {}
    for target, sources in FORMAT_FIELDS[fmt].items():
        for s in sources:
            if s in keys:
                out[target] = mapping.get(s, s)
                break
    if fmt == "pairwise":
        pair = pair_columns(keys)
        if pair:
            out["first"], out["second"] = (mapping.get(c, c) for c in pair)
        prefer = prefer or next((c for c in PREFER_COLUMNS if c in keys), None)
        if prefer:
            out["preference"] = mapping.get(prefer, prefer)
        models = next((m for m in PAIR_MODELS if m[0] in keys or m[1] in keys), None)
        if models:
            out["first_model"], out["second_model"] = (mapping.get(c, c) for c in models)
    for f in LABEL_FIELDS:
        if f in keys and f not in out:
            out[f] = mapping.get(f, f)
    return out


# --- parsing one record --------------------------------------------------------------------------------

def _text(value, field: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return keep_as_written(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise RowError(f"expected text, got {type(value).__name__}", field=field)


def _first(rec: dict, sources: tuple[str, ...]) -> str | None:
    for s in sources:
        if s in rec and rec[s] is not None:
            return s
    return None


def _content(value, field: str) -> str:
    """A message's content: text, or OpenAI content parts whose text parts are joined with newlines (as vLLM and
    LLaMA-Factory read them). Any other part (an image, audio, a file) cannot be imported: the row is refused."""
    if not isinstance(value, list):
        return _text(value, field)
    texts = []
    for k, part in enumerate(value):
        if isinstance(part, str):
            texts.append(part)
            continue
        if not isinstance(part, dict):
            raise RowError(f"expected a content part object, got {type(part).__name__}", field=f"{field}[{k}]")
        kind = part.get("type")
        if kind != "text":
            raise RowError(f"a non-text content part (type {kind!r}); only text can be imported "
                           "(--skip-invalid skips such rows)", field=f"{field}[{k}].type")
        texts.append(_text(part.get("text"), f"{field}[{k}].text"))
    return keep_as_written("\n".join(texts))


def _messages(value, field: str) -> list[dict]:
    """A conversation: messages with role/content (OpenAI) or from/value (ShareGPT; human/gpt become user/assistant),
    one convention per conversation."""
    if isinstance(value, str) and value.startswith("["):  # a conversation stored as a JSON string (Parquet, CSV)
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise RowError("not a JSON list of messages", field=field) from None
    if not isinstance(value, list):
        raise RowError(f"expected a list of messages, got {type(value).__name__}", field=field)
    out = []
    keys = None
    for i, m in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(m, dict):
            raise RowError(f"expected a message object, got {type(m).__name__}", field=where)
        these = ("from", "value") if "from" in m or "value" in m else ("role", "content")
        if keys is None:
            keys = these
        elif these != keys:
            raise RowError(f"message uses '{these[0]}'/'{these[1]}' but the ones before it use "
                           f"'{keys[0]}'/'{keys[1]}'", field=where)
        role_key, content_key = keys
        if role_key not in m:
            raise RowError(f"message has no '{role_key}'", field=f"{where}.{role_key}")
        if content_key not in m:
            raise RowError(f"message has no '{content_key}'", field=f"{where}.{content_key}")
        role = m[role_key]
        if not isinstance(role, str):
            raise RowError("role must be a string", field=f"{where}.{role_key}")
        msg = {"role": SHAREGPT_ROLES.get(role, role), "content": _content(m[content_key], f"{where}.{content_key}")}
        extra = {k: v for k, v in m.items() if k not in (role_key, content_key)}
        if extra:
            msg.update(extra)
        out.append(msg)
    return out


def _from_conversation(sample: dict, msgs: list[dict]) -> None:
    """Fill instruction/response/system from a conversation, for display, search and Alpaca export."""
    sysmsgs = [m["content"] for m in msgs if m["role"] == "system"]
    if sysmsgs and not sample.get("system"):
        sample["system"] = sysmsgs[0]
    users = [i for i, m in enumerate(msgs) if m["role"] == "user"]
    if users:
        last_user = users[-1]
        sample["instruction"] = msgs[last_user]["content"]
        after = [m for m in msgs[last_user + 1:] if m["role"] == "assistant"]
        sample["response"] = after[0]["content"] if after else ""


def split_hh(transcript: str) -> tuple[list[dict], str]:
    """An HH-RLHF transcript ("\\n\\nHuman: ...\\n\\nAssistant: ...") -> (prompt turns, final assistant reply).

    Splits at the last "\\n\\nAssistant:" (a longest-common-prefix split can swallow the replies' shared first words).
    """
    cut = transcript.rfind("\n\nAssistant:")
    if cut < 0:
        raise RowError("no '\\n\\nAssistant:' turn in the transcript", field="chosen")
    prompt, reply = transcript[:cut], transcript[cut + len("\n\nAssistant:"):]
    if reply.startswith(" "):
        reply = reply[1:]
    turns = []
    for part in re.split(r"\n\n(?=(?:Human|Assistant):)", prompt):
        if not part.strip():
            continue
        if part.startswith("Human:"):
            turns.append({"role": "user", "content": part[len("Human:"):].removeprefix(" ")})
        elif part.startswith("Assistant:"):
            turns.append({"role": "assistant", "content": part[len("Assistant:"):].removeprefix(" ")})
        elif turns:
            turns[-1]["content"] += "\n\n" + part
        else:
            turns.append({"role": "user", "content": part})
    return turns, reply


def hh_transcript(turns: list[dict], reply: str) -> str:
    """Inverse of split_hh (used by tests and by the preference export's implicit-prompt mode)."""
    out = "".join(f"\n\n{'Human' if t['role'] == 'user' else 'Assistant'}: {t['content']}" for t in turns)
    return out + f"\n\nAssistant: {reply}"


@dataclass(frozen=True)
class ParseOptions:
    """What the user said about a file beyond its format (picklable: the parallel importer ships it to its worker)."""
    prefer: str | None = None          # pairwise: the column saying which answer won
    keep_ties: bool = False            # keep tied pairs as two candidates with no pair, instead of skipping them
    score_scale: tuple[float, float] | None = None   # the scale of score_chosen/score_rejected, when stated
    score_rubric: str = "import-score"


class TieRow(Exception):
    """A pair whose preference is a tie: skipped and counted (or kept with --keep-ties)."""

    def __init__(self, column: str, value):
        super().__init__(f"{column} = {value!r} is a tie")
        self.column, self.value = column, value


def parse_record(rec: dict, fmt: str, opts: ParseOptions | None = None) -> dict:
    """One source record -> sample dict. Columns the format does not use go into metadata.

    A pair read from a file may also carry `candidates` (each answer with its model and score) and an `origin`
    saying why the chosen answer is the chosen one; the importer stores them beside the sample."""
    opts = opts or ParseOptions()
    fields = FORMAT_FIELDS[fmt]
    used: set[str] = set()
    s: dict = {}
    if fmt == "pairwise":
        _parse_pairwise(rec, s, used, opts)
    elif fmt == "preference" or (fmt == "hh" and isinstance(rec.get("chosen"), (list, dict))):
        _parse_preference(rec, s, used, opts)
    else:
        for target, sources in fields.items():
            src = _first(rec, sources)
            if src is None:
                continue
            used.add(src)
            val = rec[src]
            if target == "messages":
                s["messages"] = _messages(val, src)
            elif target == "history":
                s["history"] = _history(val, src)
            elif target == "label":
                s.setdefault("metadata", {})[src] = _label(val, src)
            elif isinstance(val, list) and fmt in ("prompt-completion", "kto") and target in ("instruction", "response"):
                s["_prompt" if target == "instruction" else "_completion"] = _messages(val, src)
            else:
                s[target] = _text(val, src)
        if fmt == "hh":
            _parse_hh(s, rec)
        if fmt == "kto" and not any(isinstance(v, bool) for v in (s.get("metadata") or {}).values()):
            raise RowError("no label (true or false)", field=_first(rec, ("label", "kto_tag")) or
                           next((c for c in fields["label"] if c in rec), "label"))
        if "_prompt" in s or "_completion" in s:        # TRL's conversational prompt/completion
            _conversational_completion(s, rec)
        if "history" in s:
            _alpaca_history(s, rec)
    if s.get("messages") is not None and fmt in ("sharegpt", "messages"):
        if not s["messages"]:
            raise RowError("the conversation is empty", field=_first(rec, fields["messages"]))
        _from_conversation(s, s["messages"])
    for f in LABEL_FIELDS:
        if f not in s and rec.get(f) is not None and f not in used:
            s[f] = _text(rec[f], f)
            used.add(f)
    # a null column is an absent one: every row of a file carries the same fields whichever way it was written
    meta = {k: v for k, v in rec.items() if k not in used and v is not None}
    packed = meta.pop("metadata", None)
    if isinstance(packed, str) and packed.startswith("{"):  # our Parquet export packs metadata as one JSON column
        try:
            packed = orjson.loads(packed)
        except orjson.JSONDecodeError:
            pass
    if isinstance(packed, dict):
        meta = {**packed, **meta}
    elif packed is not None:
        meta["metadata"] = packed
    if meta:
        s.setdefault("metadata", {}).update(meta)
    if not _has_text(s):
        names = sorted(used) or sorted(rec)
        raise RowError("no text in any field", field=", ".join(names) if names else "(no columns)")
    return s


def _history(value, field: str) -> list[tuple[str, str]]:
    """LLaMA-Factory's alpaca `history`: [[query, answer], ...] before the instruction."""
    if isinstance(value, str) and value.startswith("["):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise RowError("not a JSON list of [query, answer] pairs", field=field) from None
    if not isinstance(value, list):
        raise RowError(f"expected a list of [query, answer] pairs, got {type(value).__name__}", field=field)
    out = []
    for i, pair in enumerate(value):
        if not isinstance(pair, list) or len(pair) != 2:
            raise RowError("expected a [query, answer] pair", field=f"{field}[{i}]")
        out.append((_text(pair[0], f"{field}[{i}][0]"), _text(pair[1], f"{field}[{i}][1]")))
    return out


def _alpaca_history(s: dict, rec: dict) -> None:
    """The earlier rounds and this one become the conversation; instruction/input/response stay as written."""
    history = s.pop("history")
    if s.get("messages") is not None:
        raise RowError("a row has both 'messages' and 'history'; keep one", field="history")
    if not history:
        return
    msgs = []
    for q, a in history:
        msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    user = s.get("instruction", "") + (("\n\n" + s["input"]) if s.get("input") else "")
    msgs += [{"role": "user", "content": user}, {"role": "assistant", "content": s.get("response", "")}]
    s["messages"] = msgs


def _conversational_completion(s: dict, rec: dict) -> None:
    prompt, completion = s.pop("_prompt", None), s.pop("_completion", None)
    if prompt is None and "instruction" in s:
        prompt = [{"role": "user", "content": s.pop("instruction")}]
    if completion is None and "response" in s:
        completion = [{"role": "assistant", "content": s.pop("response")}]
    msgs = (prompt or []) + (completion or [])
    if not msgs:
        raise RowError("the conversation is empty", field="prompt")
    s["messages"] = msgs
    _from_conversation(s, msgs)


def _label(value, field: str) -> bool:
    """A KTO label: true (desirable) or false. Anything else (1, "yes", "good") is refused, not guessed."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise RowError(f"expected true or false, got {value!r}", field=field)


def _reply(value, field: str) -> tuple[list[dict], str]:
    """A chosen/rejected answer: text, one message, or a conversation ending in the answer ->
    (the turns before it, its text)."""
    one = isinstance(value, dict)
    if one:
        value = [value]
    if isinstance(value, list):
        msgs = _messages(value, field)
        if not msgs:
            raise RowError("empty message list", field=field)
        where = field if one else f"{field}[{len(msgs) - 1}]"
        if msgs[-1]["role"] != "assistant":
            raise RowError(f"the answer must be the assistant's (got role {msgs[-1]['role']!r})", field=f"{where}.role")
        return msgs[:-1], msgs[-1]["content"]
    return [], _text(value, field)


def _number(rec: dict, col: str) -> float:
    v = rec[col]
    if isinstance(v, str):
        try:
            v = float(v.strip())
        except ValueError:
            raise RowError(f"expected a number, got {rec[col]!r}", field=col) from None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
        raise RowError(f"expected a number, got {rec[col]!r}", field=col)
    return float(v)


def _scores(rec: dict, used: set, opts: ParseOptions) -> tuple[tuple[str, float] | None, tuple[str, float] | None]:
    cols = (next((c for c in SCORE_CHOSEN if c in rec), None), next((c for c in SCORE_REJECTED if c in rec), None))
    if cols == (None, None):
        return None, None
    if None in cols:
        have, missing = (cols[0], "score_rejected") if cols[0] else (cols[1], "score_chosen")
        raise RowError(f"'{have}' without '{missing}': a score for one side only cannot rank the pair", field=missing)
    out = []
    for c in cols:
        used.add(c)
        v = _number(rec, c)
        if opts.score_scale and not opts.score_scale[0] <= v <= opts.score_scale[1]:
            lo, hi = opts.score_scale
            raise RowError(f"score {v:g} is outside the stated scale {lo:g}-{hi:g}", field=c)
        out.append((c, v))
    return out[0], out[1]


def _context(s: dict, ctx: list[dict]) -> None:
    """A pair's prompt turns: kept whole; instruction is the last user turn, system the first system turn."""
    s["messages"] = ctx
    users = [m["content"] for m in ctx if m["role"] == "user"]
    if users:
        s["instruction"] = users[-1]
    systems = [m["content"] for m in ctx if m["role"] == "system"]
    if systems and not s.get("system"):
        s["system"] = systems[0]


def _parse_preference(rec: dict, s: dict, used: set, opts: ParseOptions) -> None:
    """chosen/rejected with an explicit prompt (text, message list, LLaMA-Factory instruction+input or
    conversation) or the prompt inside the replies' message lists (UltraFeedback-binarized, TRL implicit prompt)."""
    f = FORMAT_FIELDS["preference"]
    ctx: list[dict] | None = None
    src = _first(rec, f["prompt"])
    if src:
        used.add(src)
        if isinstance(rec[src], list):
            ctx = _messages(rec[src], src)
        else:
            s["instruction"] = _text(rec[src], src)
    conv = _first(rec, f["messages"])
    if conv:
        used.add(conv)
        if ctx is not None:
            raise RowError(f"both '{src}' and '{conv}' hold a conversation; keep one", field=conv)
        ctx = _messages(rec[conv], conv)
    for target in ("input", "system"):
        c = _first(rec, f[target])
        if c:
            used.add(c)
            s[target] = _text(rec[c], c)
    for side in ("chosen", "rejected"):
        if side not in rec or rec[side] is None:
            raise RowError(f"no '{side}' answer", field=side)
        used.add(side)
    turns_c, chosen = _reply(rec["chosen"], "chosen")
    turns_r, rejected = _reply(rec["rejected"], "rejected")
    if turns_c != turns_r:
        raise RowError("the conversation before the rejected answer differs from the one before the chosen answer",
                       field="rejected")
    if conv and ctx and ctx[-1]["role"] == "assistant" and ctx[-1]["content"] == chosen and ctx[:-1] == turns_c:
        ctx = None   # UltraFeedback-binarized's `messages` repeats the chosen conversation: nothing new in it
    if turns_c:
        if ctx and turns_c[:len(ctx)] != ctx:
            raise RowError("the conversation in 'chosen' does not continue the prompt", field="chosen")
        if s.get("instruction") and not any(m["role"] == "user" and m["content"] == s["instruction"] for m in turns_c):
            raise RowError("the prompt is not one of the user turns in 'chosen'", field=src)
        ctx = turns_c
    if ctx is not None:
        if not ctx:
            raise RowError("the prompt conversation is empty", field=conv or src or "chosen")
        _context(s, ctx)
    s["response"], s["rejected"] = chosen, rejected
    sc, sr = _scores(rec, used, opts)
    models = []
    for side in ("chosen", "rejected"):
        c = _first(rec, f[f"model_{side}"])
        if c:
            used.add(c)
        models.append(_text(rec[c], c) if c else "")
    if sc is None and not any(models):
        return
    if sc is not None and sc[1] < sr[1]:
        raise RowError(f"{sc[0]} {sc[1]:g} is below {sr[0]} {sr[1]:g}: the file contradicts itself", field=sc[0])
    cands = [{"model": models[0], "response": chosen, "column": "chosen"},
             {"model": models[1], "response": rejected, "column": "rejected"}]
    if sc is not None:
        for c, (col, v) in zip(cands, (sc, sr)):
            c["score"] = {"column": col, "value": v}
    origin = {"task": "import", "why": "columns", "rubric": opts.score_rubric if sc else None,
              "scale": list(opts.score_scale) if opts.score_scale else None}
    if sc is not None and sc[1] == sr[1]:
        _tie(s, cands, origin, opts, TieRow(sc[0], sc[1]))
        return
    _pair(s, cands, origin, 0, 1)


def _pair(s: dict, cands: list[dict], origin: dict, ci: int, ri: int) -> None:
    origin = dict(origin)
    for side, i in (("chosen", ci), ("rejected", ri)):
        c = cands[i]
        origin[side] = {"column": c["column"], "model": c["model"], "candidate": i,
                        "score": c["score"]["value"] if "score" in c else None}
    if "score" in cands[ci]:
        origin["margin"] = cands[ci]["score"]["value"] - cands[ri]["score"]["value"]
    s["candidates"], s["origin"] = cands, origin
    s["response"], s["rejected"] = cands[ci]["response"], cands[ri]["response"]


def _tie(s: dict, cands: list[dict], origin: dict, opts: ParseOptions, tie: TieRow) -> None:
    if not opts.keep_ties:
        raise tie
    s["response"], s["rejected"] = "", None
    s["candidates"] = cands
    s["origin"] = {**origin, "tie": {"column": tie.column, "value": tie.value}}


_FIRST = {"1", "a", "model_a"}
_SECOND = {"2", "b", "model_b"}
_TIES = {"1.5", "tie", "tie (bothbad)"}


def read_preference(value, field: str) -> int | None:
    """Which answer won: 0 (the first), 1 (the second) or None (a tie). 1/2, 1.0/2.0 and 1.5 (AlpacaEval),
    a/b, model_a/model_b/tie/tie (bothbad) (arena dumps); anything else, a graded 1.3 included, is refused."""
    expected = "expected 1 or 2, 1.0 or 2.0, a or b, model_a or model_b, or a tie (1.5, tie, tie (bothbad))"
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise RowError(f"{expected}, got {value!r}", field=field)
    key = value.strip().lower() if isinstance(value, str) else value
    if isinstance(key, str):
        try:       # "1.0", "2.00" as written in a CSV
            key = float(key)
        except ValueError:
            pass
    if isinstance(key, float) or isinstance(key, int):   # exact values only: 1.0000001 is not 1
        key = {1: "1", 2: "2", 1.5: "1.5"}.get(key, repr(key))
    if key in _FIRST:
        return 0
    if key in _SECOND:
        return 1
    if key in _TIES:
        return None
    if isinstance(value, (int, float)) and 1 < value < 2:
        raise RowError(f"a graded preference ({value!r}) says neither answer won outright; only 1, 2 and the "
                       "tie 1.5 are read", field=field)
    raise RowError(f"{expected}, got {value!r}", field=field)


def _parse_pairwise(rec: dict, s: dict, used: set, opts: ParseOptions) -> None:
    """Two answers and a column saying which won (AlpacaEval annotations: instruction, output_1, output_2,
    generator_1/2, preference; arena dumps: conversation_a/b ending in the answers, model_a/b, winner)."""
    pair = pair_columns(rec)
    if pair is None:
        raise RowError("no pair of answer columns (" + ", ".join("/".join(p) for p in PAIR_COLUMNS) + ")",
                       field=", ".join(sorted(rec)))
    pcol = opts.prefer or next((c for c in PREFER_COLUMNS if c in rec), None)
    if pcol is None:
        raise RowError("no column says which answer won; name it with --prefer COLUMN", field="preference")
    if pcol not in rec:
        raise RowError("the --prefer column is missing from this row", field=pcol)
    used.update((pcol, *pair))
    which = read_preference(rec[pcol], pcol)
    ctxs, texts = [], []
    for col in pair:
        if col.startswith("conversation"):
            turns, text = _reply(rec[col], col)
            ctxs.append(turns)
        else:
            text = _text(rec[col], col)
        texts.append(text)
    f = FORMAT_FIELDS["pairwise"]
    src = _first(rec, f["prompt"])
    if src:
        used.add(src)
        if isinstance(rec[src], list):
            ctxs = ctxs or [_messages(rec[src], src)] * 2
        else:
            s["instruction"] = _text(rec[src], src)
    for target in ("input", "system"):
        c = _first(rec, f[target])
        if c:
            used.add(c)
            s[target] = _text(rec[c], c)
    if ctxs:
        if ctxs[0] != ctxs[1]:
            raise RowError(f"'{pair[1]}' differs from '{pair[0]}' before the last answer (a multi-turn battle: "
                           "the vote covers both whole conversations, not one answer)", field=pair[1])
        if not ctxs[0]:
            raise RowError("no prompt before the answer", field=pair[0])
        _context(s, ctxs[0])
    elif not src:
        raise RowError("no prompt column (" + ", ".join(f["prompt"]) + ")", field=f["prompt"][0])
    models = next((m for m in PAIR_MODELS if m[0] in rec or m[1] in rec), None)
    names = ["", ""]
    if models:
        used.update(models)
        names = [_text(rec.get(c), c) for c in models]
    cands = [{"model": names[i], "response": texts[i], "column": pair[i]} for i in (0, 1)]
    origin = {"task": "import", "why": "preference", "prefer": {"column": pcol, "value": rec[pcol]}}
    if which is None:
        _tie(s, cands, origin, opts, TieRow(pcol, rec[pcol]))
        return
    _pair(s, cands, origin, which, 1 - which)


def _parse_hh(s: dict, rec: dict) -> None:
    chosen, rejected = s.get("response", ""), s.get("rejected", "")
    turns_c, reply_c = split_hh(chosen)
    try:
        turns_r, reply_r = split_hh(rejected)
    except RowError:
        raise RowError("no '\\n\\nAssistant:' turn in the transcript", field="rejected") from None
    s["messages"] = turns_c
    s["response"], s["rejected"] = reply_c, reply_r
    users = [t for t in turns_c if t["role"] == "user"]
    s["instruction"] = users[-1]["content"] if users else ""
    if turns_r != turns_c:
        # the two transcripts diverge before the final reply: keep the row, and the rejected side's own prompt
        meta = s.setdefault("metadata", {})
        meta["prompt_mismatch"] = True
        meta["rejected_prompt"] = turns_r


def _has_text(s: dict) -> bool:
    if any((s.get(f) or "").strip() for f in ("instruction", "input", "response", "rejected", "system")):
        return True
    return any((m.get("content") or "").strip() for m in s.get("messages") or [])


def parse_mapping(spec: str | None) -> dict[str, str]:
    """"instruction=question,response=answer" -> {"instruction": "question", "response": "answer"}."""
    if not spec:
        return {}
    out = {}
    allowed = {"instruction", "input", "response", "rejected", "system", "prompt", "chosen", "text", "messages",
               "conversations", "context", "output", "category", "history", "completion", "label", "kto_tag",
               "output_1", "output_2", "generator_1", "generator_2", "preference", "score_chosen", "score_rejected",
               *LABEL_FIELDS}
    for part in spec.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise FormatError(f"--map: expected target=column, got {part.strip()!r}")
        target, source = (x.strip() for x in part.split("=", 1))
        if target not in allowed:
            raise FormatError(f"--map: unknown target field {target!r}; one of {', '.join(sorted(allowed))}")
        if not source:
            raise FormatError(f"--map: no source column for {target!r}")
        if target in out:    # bad-input: the last one winning would silently drop the other column
            raise FormatError(f"--map: {target!r} is mapped twice ({out[target]!r} and {source!r})")
        out[target] = source
    return out
