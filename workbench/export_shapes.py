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

import pickle
import sqlite3
from dataclasses import dataclass, field

import orjson

from .formats import LABEL_FIELDS, SHAREGPT_FROM
from .samples import SAMPLE_COLUMNS, decode_sample

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


def profile_and_spool(conn: sqlite3.Connection, where: str, params: tuple, with_meta: bool, spool,
                      batch: int = 2000) -> Profile:
    """The selected rows' Profile and the rows themselves, in one read of the store: each row's raw columns go to
    `spool` (an unnamed temp file; `spooled` reads them back) and the profile is aggregated from per-row SQL
    expressions (tests/test_export_profile.py holds it to the aggregate query it replaced). A profile query before
    the data pass read every row's pages twice: 16 KB pages hold a few rows each, and at 10M rows each pass read
    many times the file's size."""
    extra = ["system != '' OR (messages IS NOT NULL AND messages LIKE '%\"system\"%')",
             "messages IS NOT NULL AND json_array_length(messages) > 2"]
    if with_meta:
        extra.append("CASE WHEN metadata IS NOT NULL THEN (SELECT json_group_array(json_array(j.key, j.type)) "
                     "FROM json_each(metadata) j) END")
    width = len(SAMPLE_COLUMNS)
    idx = {c: i for i, c in enumerate(SAMPLE_COLUMNS)}
    p = Profile()
    labels = set()
    pairs: set = set()
    last = 0
    sql = (f"SELECT {', '.join(SAMPLE_COLUMNS)}, {', '.join(extra)} FROM samples WHERE ({where}) AND id > ? "
           f"ORDER BY id LIMIT ?")
    while True:
        rows = conn.execute(sql, (*params, last, batch)).fetchall()
        if not rows:
            break
        last = rows[-1][0]
        p.rows += len(rows)
        for r in rows:
            if r[width] == 1:
                p.has_system = True
            if r[width + 1] == 1:
                p.multi_turn = True
            if r[idx["rejected"]] is not None:
                p.has_rejected = True
            for f in LABEL_FIELDS:
                if r[idx[f]] is not None:
                    labels.add(f)
            if with_meta and r[width + 2] is not None:
                pairs.update((k, t) for k, t in orjson.loads(r[width + 2]))
        pickle.dump([r[:width] for r in rows], spool, protocol=pickle.HIGHEST_PROTOCOL)
    p.labels = tuple(f for f in LABEL_FIELDS if f in labels)
    if with_meta and p.rows:
        types: dict = {}
        for key, typ in sorted(pairs, key=_sqlite_order):    # as `GROUP BY 1, 2` orders them
            if typ != "null":
                types.setdefault(key, set()).add({"true": "bool", "false": "bool", "integer": "num",
                                                  "real": "num"}.get(typ, typ))
            else:
                types.setdefault(key, set())
        p.meta_keys = {k: ("json" if len(t) > 1 else "plain") for k, t in types.items()}
    spool.flush()
    spool.seek(0)
    return p


def _sqlite_order(pair) -> tuple:
    """SQLite's sort order of (key, type): NULL, then numbers, then text by its UTF-8 bytes."""
    key, typ = pair
    if key is None:
        k = (0, 0)
    elif isinstance(key, (int, float)):
        k = (1, key)
    else:
        k = (2, str(key).encode("utf-8", "surrogatepass"))
    return k, typ.encode()


def spooled(spool):
    """The samples `profile_and_spool` wrote, in id order, decoded as iter_samples gives them."""
    while True:
        try:
            rows = pickle.load(spool)
        except EOFError:
            return
        for r in rows:
            yield decode_sample(r)


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
