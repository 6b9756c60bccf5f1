"""Text generation: a response for every (filtered) instruction of a dataset, as new samples with lineage.

With a pool in `each` mode every model answers, one new sample per model.
"""
from __future__ import annotations

from . import Item, LLM, Param, Result, Task, register


def prompt_messages(sample: dict, system: str = "") -> list[dict]:
    """The conversation to send: the sample's prompt turns (multi-turn up to the last user turn), or
    instruction + input; an explicit system param replaces the sample's own system prompt."""
    system = system or sample.get("system") or ""
    msgs = sample.get("messages")
    if msgs:
        turns = [{"role": m.get("role", "user"), "content": m.get("content") or ""} for m in msgs
                 if m.get("role") != "system"]
        last_user = max((i for i, m in enumerate(turns) if m["role"] == "user"), default=-1)
        turns = turns[:last_user + 1]
    else:
        text = sample.get("instruction") or ""
        if sample.get("input"):
            text = f"{text}\n\n{sample['input']}" if text else sample["input"]
        turns = [{"role": "user", "content": text}] if text.strip() else []
    return ([{"role": "system", "content": system}] if system else []) + turns


@register
class Generate(Task):
    name = "generate"
    summary = "a response for every instruction (one per model with an 'each' pool)"
    template_version = "generate/1"
    params = {
        "system": Param("", "system prompt (replaces the sample's own)"),
        "temperature": Param(None, "sampling temperature (default: the endpoint's)", type=float),
        "max_tokens": Param(None, "reply length cap (default: the endpoint's)", type=int),
        "top_p": Param(None, "nucleus sampling (default: the endpoint's)", type=float),
        "seed": Param(None, "sampling seed sent to the server", type=int),
    }

    def request_params(self) -> dict:
        return {k: self.p[k] for k in ("temperature", "max_tokens", "top_p", "seed") if self.p.get(k) is not None}

    async def process(self, item: Item, llm: LLM) -> Result:
        sample = item.input_sample()
        messages = prompt_messages(sample, self.p["system"])
        if not any(m["role"] == "user" for m in messages):
            return Result(dropped={"no instruction": 1})
        params = self.request_params()
        errors: list[str] = []
        if llm.pool().mode == "each":
            replies = await llm.each(messages, params=params)
            failed = [r for r in replies if isinstance(r, BaseException)]
            if len(failed) == len(replies):
                raise failed[0]
            errors = [str(e) for e in failed]
            replies = [r for r in replies if not isinstance(r, BaseException)]
        else:
            replies = [await llm.complete(messages, params=params)]
        summary = {"models": [c.model for c in replies]}
        if errors:
            summary["errors"] = errors
        return Result(samples=[self.output_row(sample, messages, c) for c in replies],
                      dropped={"model failed": len(errors)} if errors else {}, summary=summary)

    def output_row(self, sample: dict, messages: list[dict], c) -> dict:
        row = {k: sample.get(k) for k in ("instruction", "input", "task_type", "domain", "difficulty", "language")}
        row["system"] = self.p["system"] or sample.get("system") or ""
        row["response"] = c.text
        if sample.get("messages"):
            row["messages"] = [m for m in messages if m["role"] != "system"] + [
                {"role": "assistant", "content": c.text}]
        row["origin"] = self.ctx.origin(c)
        return row
