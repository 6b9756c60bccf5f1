"""Humpback's tagging by origin: on export, seed pairs and self-augmented pairs get different system prompts, so
a model trained on the mix can be told at inference which style to answer in (the paper found both tags together
best at inference).

A row is `augmented` when it was made by self-augmentation (a `backtranslate` job: its lineage says so), and
`seed` otherwise (imported or written by people). The tags are the project's own wording by default and can be
set per export (`--seed-tag`, `--augmented-tag`) or in the config:

    [export.origin_tags]
    seed = "..."
    augmented = "..."

A row's own system prompt is kept after the tag (tag, blank line, the row's system prompt).
"""
from __future__ import annotations

DEFAULT_TAGS = {
    "seed": "Reply the way a careful AI assistant would.",
    "augmented": "Reply drawing on knowledge found in text from the web.",
}
KINDS = tuple(DEFAULT_TAGS)


def origin_kind(sample: dict) -> str:
    origin = sample.get("origin") or {}
    if origin.get("task") == "backtranslate" or origin.get("method") == "self-augmentation":
        return "augmented"
    return "seed"


def resolve_tags(config: dict | None = None, seed: str | None = None, augmented: str | None = None) -> dict:
    """Defaults, overlaid with the config's [export.origin_tags], overlaid with the given texts."""
    tags = dict(DEFAULT_TAGS)
    table = ((config or {}).get("export") or {}).get("origin_tags") or {}
    if not isinstance(table, dict):
        raise ValueError("[export.origin_tags] must be a table with seed and augmented")
    unknown = sorted(set(table) - set(KINDS))
    if unknown:
        raise ValueError(f"[export.origin_tags]: unknown key {unknown[0]!r}; keys: {', '.join(KINDS)}")
    for k, v in table.items():
        if not isinstance(v, str) or not v.strip():
            raise ValueError(f"[export.origin_tags] {k}: a non-empty text")
        tags[k] = v
    for k, v in (("seed", seed), ("augmented", augmented)):
        if v is not None:
            if not v.strip():
                raise ValueError(f"the {k} tag is empty")
            tags[k] = v
    return tags


def tag(sample: dict, tags: dict) -> dict:
    """A copy of the sample with its origin's tag put first in its system prompt (also in stored messages)."""
    text = tags[origin_kind(sample)]
    out = dict(sample)
    out["system"] = f"{text}\n\n{sample['system']}" if sample.get("system") else text
    if sample.get("messages"):
        msgs = [dict(m) for m in sample["messages"]]
        if msgs and msgs[0].get("role") == "system":
            msgs[0]["content"] = f"{text}\n\n{msgs[0]['content']}" if msgs[0].get("content") else text
        out["messages"] = msgs
    return out
