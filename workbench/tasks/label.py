"""Labels for balance: classify each sample's task_type, domain and difficulty from fixed label sets.

The sets come from the config's `[labels]` table (`task_type = [...]`, `domain = [...]`, `difficulty = [...]`),
else the defaults below. A reply naming a label outside its set is an item error with the raw reply kept; a
label is matched ignoring case, spaces, hyphens and underscores, and stored spelled as in the set.
"""
from __future__ import annotations

import re

from ..parsing import ParseError, extract_json_object, normalized_keys
from . import Item, LLM, Param, Result, TaskError, register
from .common import SAMPLING_PARAMS, TemplatedTask

DEFAULT_LABELS = {
    "task_type": ["open_qa", "closed_qa", "classification", "brainstorming", "information_extraction",
                  "summarization", "creative_writing", "rewriting", "coding", "math", "reasoning", "conversation",
                  "other"],
    "domain": ["general", "science", "technology", "programming", "math", "health", "finance", "business", "law",
               "education", "arts", "entertainment", "history", "travel", "food", "sports", "other"],
    "difficulty": ["easy", "medium", "hard"],
}
FIELDS = tuple(DEFAULT_LABELS)


def label_sets(config: dict) -> dict[str, list[str]]:
    user = config.get("labels") or {}
    out = {}
    for f in FIELDS:
        values = user.get(f, DEFAULT_LABELS[f])
        if not isinstance(values, list) or not values or not all(isinstance(v, str) and v.strip() for v in values):
            raise TaskError(f"config [labels] {f} must be a non-empty list of label names")
        out[f] = values
    return out


def _key(label: str) -> str:
    return re.sub(r"[\s_-]+", "_", label.strip().lower())


def parse_labels(raw: str, sets: dict[str, list[str]]) -> dict[str, str]:
    obj = extract_json_object(raw)
    given = normalized_keys(obj, raw, _key)
    out = {}
    for f, allowed in sets.items():
        value = given.get(f)
        if not isinstance(value, str) or not value.strip():
            raise ParseError(f"label {f!r} is missing", raw)
        canon = {_key(a): a for a in allowed}.get(_key(value))
        if canon is None:
            raise ParseError(f"label {f}={value!r} is not one of: {', '.join(allowed)}", raw)
        out[f] = canon
    return out


def label_schema(sets: dict[str, list[str]]) -> dict:
    """The JSON schema for `response_format`: each field one of its set (stricter than the reader, which also
    takes another case or spacing), all required, nothing else."""
    props = {f: {"type": "string", "enum": list(allowed)} for f, allowed in sets.items()}
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


@register
class Label(TemplatedTask):
    name = "label"
    summary = "classify task_type, domain and difficulty from the label sets in config [labels]"
    templates = ("label",)

    def reader(self, name: str):
        sets = label_sets(self.ctx.config)   # the label sets come from the config: bind them here
        return lambda text: parse_labels(text, sets)
    params = {
        "only_missing": Param(False, "skip samples that already have all three labels"),
        **SAMPLING_PARAMS,
    }
    writes_samples = False
    roles = ("judge",)

    def validate(self, conn) -> None:
        self.validate_templates()
        label_sets(self.ctx.config)

    def load(self, conn) -> None:
        self.sets = label_sets(self.ctx.config)

    async def process(self, item: Item, llm: LLM) -> Result:
        s = item.input_sample()
        if self.p["only_missing"] and all(s.get(f) for f in FIELDS):
            return Result(dropped={"already labelled": 1})
        if not (s.get("instruction") or "").strip():
            return Result(dropped={"no instruction": 1})
        sets = self.sets
        messages = self.template("label").render(
            instruction=s["instruction"], input=s.get("input") or "", response=s.get("response") or "",
            task_types=", ".join(sets["task_type"]), domains=", ".join(sets["domain"]),
            difficulties=", ".join(sets["difficulty"]))
        c = await llm.complete(messages, role="judge", json=True, schema=label_schema(sets), params=self.sampling(),
                               validate=self.reader("label"))
        return Result(updates=[{"id": s["id"], **c.parsed}], kept=1, summary=dict(c.parsed))
