"""Row shapes of every export format: one shape per file, the same columns with the same types on every row.

A shaper turns a sample into a row, or into the name of the reason the format cannot carry it honestly (no response
for an SFT format, no rejected reply for a preference format, ...): such a row is skipped and counted, never written
hollow. What varies between exports (a system column, label columns, metadata columns, Alpaca's history) is decided
once per export from a `Profile` of the selected rows, so every row gets the same columns.

Layouts (as the trainers document them):
  TRL standard      prompt/completion (or chosen/rejected) strings: one user turn and one answer, nothing else
  TRL conversational prompt = every message before the final answer (system first), completion/chosen/rejected =
                    a list holding one assistant message
  LLaMA-Factory     its sharegpt layout: conversations of alternating human/gpt turns, a system column, and for
                    ranking data chosen/rejected as single {"from": "gpt", "value": ...} objects
  Axolotl           `messages` for `type: chat_template`; messages + chosen/rejected message objects for
                    `type: chat_template.default` (DPO)
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

import orjson

from .formats import LABEL_FIELDS, SHAREGPT_FROM

NATIVE = ("alpaca", "sharegpt", "messages", "preference")        # carry labels and metadata columns (round trips)
TRAINER = ("trl-sft", "kto", "llama-factory", "axolotl")
EXPORT_FORMATS = (*NATIVE, "parquet", *TRAINER)
CONVERSATIONAL_CHOICE = ("preference", "trl-sft", "kto")          # formats with a standard and a conversational layout

SKIP_REASONS = {
    "no_response": "no response (an SFT row needs the assistant's answer)",
    "no_prompt": "no prompt text",
    "no_rejected": "no rejected reply (a preference row needs one)",
    "no_decision": "no accept/reject decision (KTO's label)",
    "needs_conversational": "a system prompt or earlier turns, which the standard layout cannot hold "
                            "(use --conversational)",
    "turn_order": "turns that do not alternate user/assistant",
}


@dataclass
class Profile:
    """What the selected rows hold, measured once before writing (decides the column set)."""
    rows: int = 0
    has_system: bool = False
    labels: tuple = ()
    multi_turn: bool = False
    has_rejected: bool = False
    meta_keys: dict = field(default_factory=dict)    # key -> "plain" | "json" (mixed types: JSON text)


def profile(conn: sqlite3.Connection, where: str, params: tuple, with_meta: bool) -> Profile:
    labels = ", ".join(f"max({f} IS NOT NULL)" for f in LABEL_FIELDS)
    row = conn.execute(
        f"SELECT count(*), coalesce(max(system != '' OR (messages IS NOT NULL AND messages LIKE '%\"system\"%')), 0), "
        f"{labels}, coalesce(max(rejected IS NOT NULL), 0), "
        f"coalesce(max(messages IS NOT NULL AND json_array_length(messages) > 2), 0) FROM samples WHERE {where}",
        params).fetchone()
    p = Profile(rows=row[0], has_system=bool(row[1]),
                labels=tuple(f for f, has in zip(LABEL_FIELDS, row[2:2 + len(LABEL_FIELDS)]) if has),
                has_rejected=bool(row[-2]), multi_turn=bool(row[-1]))
    if with_meta and p.rows:
        types: dict[str, set] = {}
        for key, typ in conn.execute(
                f"SELECT j.key, j.type FROM (SELECT metadata FROM samples WHERE metadata IS NOT NULL AND ({where})) s, "
                f"json_each(s.metadata) j GROUP BY 1, 2", params):
            if typ != "null":
                types.setdefault(key, set()).add({"true": "bool", "false": "bool", "integer": "num",
                                                  "real": "num"}.get(typ, typ))
            else:
                types.setdefault(key, set())
        p.meta_keys = {k: ("json" if len(t) > 1 else "plain") for k, t in types.items()}
    return p


# --- the conversation of a sample ------------------------------------------------------------------------

@dataclass
class Turns:
    system: str
    context: list          # user/assistant turns before the answer, {"role", "content"} only
    answer: str            # the final assistant reply ('' if none)
    rejected: str | None
    odd_system: bool       # a system message after the first turn: no layout here can place it


def turns(s: dict) -> Turns:
    system, odd = s.get("system") or "", False
    if s.get("messages"):
        msgs = []
        for m in s["messages"]:
            if m["role"] == "system":
                if msgs:
                    odd = True
                elif not system:
                    system = m["content"]
                continue
            msgs.append({"role": m["role"], "content": m["content"]})
        if s.get("rejected") is not None:      # preference rows store the prompt turns; the replies apart
            context, answer = msgs, s["response"]
        elif msgs and msgs[-1]["role"] == "assistant":
            context, answer = msgs[:-1], msgs[-1]["content"]
        else:
            context, answer = msgs, ""
    else:
        user = s["instruction"] + (("\n\n" + s["input"]) if s["input"] else "")
        context = [{"role": "user", "content": user}] if user.strip() else []
        answer = s["response"]
    return Turns(system, context, answer or "", s.get("rejected"), odd)


def _common_skip(t: Turns, need_rejected: bool) -> str | None:
    if not t.context or not any(m["content"].strip() for m in t.context if m["role"] == "user"):
        return "no_prompt"
    if t.context[-1]["role"] != "user":
        return "turn_order"
    if t.odd_system:
        return "turn_order"
    if not t.answer.strip():
        return "no_response"
    if need_rejected and not (t.rejected or "").strip():
        return "no_rejected"
    return None


def _alternates(context: list) -> bool:
    return all(m["role"] == ("user" if i % 2 == 0 else "assistant") for i, m in enumerate(context))


def _standard_fits(t: Turns) -> bool:
    return len(t.context) == 1 and not t.system


def _prompt_messages(t: Turns) -> list:
    return ([{"role": "system", "content": t.system}] if t.system else []) + t.context


def _assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


# --- extras of the native formats --------------------------------------------------------------------------

def _extras(s: dict, row: dict, prof: Profile) -> dict:
    """Labels and the source's other columns ride along (import -> export -> import keeps every field), with the
    same keys on every row: a column some rows lack is null there; one whose type varies is JSON text."""
    for f in prof.labels:
        row[f] = s.get(f)
    meta = s.get("metadata") or {}
    for k, mode in prof.meta_keys.items():
        if k in row:
            continue
        v = meta.get(k)
        row[k] = orjson.dumps(v).decode() if mode == "json" and v is not None else v
    return row


# --- shapers ---------------------------------------------------------------------------------------------

def _conversation(s: dict) -> list[dict]:
    """The whole stored conversation (with its messages' extra keys) plus the chosen reply of a preference row."""
    if s.get("messages"):
        msgs = list(s["messages"])
        if s.get("rejected") is not None:
            msgs.append({"role": "assistant", "content": s["response"]})
    else:
        user = s["instruction"] + (("\n\n" + s["input"]) if s["input"] else "")
        msgs = [{"role": "user", "content": user}, {"role": "assistant", "content": s["response"]}]
    if s.get("system") and not any(m["role"] == "system" for m in msgs):
        msgs.insert(0, {"role": "system", "content": s["system"]})
    return msgs


def make_shaper(fmt: str, prof: Profile, conversational: bool = False):
    """A function sample -> row dict | skip-reason str, fixed for one export."""

    def alpaca(s):
        t = turns(s)
        if not (s["instruction"] + s["input"]).strip():
            return "no_prompt"
        if not (s["response"] or "").strip():
            return "no_response"
        row = {"instruction": s["instruction"], "input": s["input"], "output": s["response"]}
        if prof.has_system:
            row["system"] = t.system
        if prof.multi_turn:   # earlier turns as LLaMA-Factory's history [[query, answer], ...]
            earlier = t.context[:-1]
            if t.odd_system or not _alternates(earlier):
                return "turn_order"
            row["history"] = [[earlier[i]["content"], earlier[i + 1]["content"]]
                              for i in range(0, len(earlier) - 1, 2)]
        return _extras(s, row, prof)

    def sharegpt(s):
        conv, system = [], ""
        msgs = _conversation(s)
        if msgs[-1]["role"] != "assistant" or not (msgs[-1]["content"] or "").strip():
            return "no_response"
        for m in msgs:
            if m["role"] == "system" and not system and not conv:
                system = m["content"]
                continue
            turn = {"from": SHAREGPT_FROM.get(m["role"], m["role"]), "value": m["content"]}
            turn.update({k: v for k, v in m.items() if k not in ("role", "content")})
            conv.append(turn)
        row = {"conversations": conv}
        if prof.has_system:
            row["system"] = system
        return _extras(s, row, prof)

    def messages(s):
        msgs = _conversation(s)
        if msgs[-1]["role"] != "assistant" or not (msgs[-1]["content"] or "").strip():
            return "no_response"
        return _extras(s, {"messages": msgs}, prof)

    def preference(s):
        t = turns(s)
        why = _common_skip(t, need_rejected=True)
        if why:
            return why
        if conversational:
            row = {"prompt": _prompt_messages(t), "chosen": [_assistant(t.answer)],
                   "rejected": [_assistant(t.rejected)]}
        else:
            if not _standard_fits(t):
                return "needs_conversational"
            row = {"prompt": t.context[0]["content"], "chosen": t.answer, "rejected": t.rejected}
        return _extras(s, row, prof)

    def trl_sft(s):
        t = turns(s)
        why = _common_skip(t, need_rejected=False)
        if why:
            return why
        if conversational:
            return {"prompt": _prompt_messages(t), "completion": [_assistant(t.answer)]}
        if not _standard_fits(t):
            return "needs_conversational"
        return {"prompt": t.context[0]["content"], "completion": t.answer}

    def kto(s):
        if s["status"] not in ("accepted", "rejected"):
            return "no_decision"
        row = trl_sft(s)
        if isinstance(row, dict):
            row["label"] = s["status"] == "accepted"
        return row

    def llama_factory(s):
        t = turns(s)
        why = _common_skip(t, need_rejected=prof.has_rejected)
        if why:
            return why
        if not _alternates(t.context):
            return "turn_order"
        conv = [{"from": SHAREGPT_FROM[m["role"]], "value": m["content"]} for m in t.context]
        if prof.has_rejected:
            row = {"conversations": conv, "chosen": {"from": "gpt", "value": t.answer},
                   "rejected": {"from": "gpt", "value": t.rejected}}
        else:
            row = {"conversations": conv + [{"from": "gpt", "value": t.answer}]}
        if prof.has_system:
            row["system"] = t.system
        return row

    def axolotl(s):
        t = turns(s)
        why = _common_skip(t, need_rejected=prof.has_rejected)
        if why:
            return why
        if prof.has_rejected:
            return {"messages": _prompt_messages(t), "chosen": _assistant(t.answer), "rejected": _assistant(t.rejected)}
        return {"messages": _prompt_messages(t) + [_assistant(t.answer)]}

    return {"alpaca": alpaca, "sharegpt": sharegpt, "messages": messages, "preference": preference,
            "parquet": parquet_row, "trl-sft": trl_sft, "kto": kto, "llama-factory": llama_factory,
            "axolotl": axolotl}[fmt]


def parquet_row(s: dict) -> dict:
    """Full fidelity: the Alpaca columns plus the conversation and metadata packed as JSON text."""
    row = {"instruction": s["instruction"], "input": s["input"], "output": s["response"], "system": s["system"],
           "rejected": s.get("rejected"),
           "messages": orjson.dumps(s["messages"]).decode() if s.get("messages") else None}
    for f in LABEL_FIELDS:
        row[f] = s.get(f)
    row["metadata"] = orjson.dumps(s["metadata"]).decode() if s.get("metadata") else None
    return row


def parquet_fields(with_ids: bool) -> list[str]:
    return ["instruction", "input", "output", "system", "rejected", "messages", *LABEL_FIELDS, "metadata",
            *(["sample_id"] if with_ids else [])]
