"""Helpers shared by the generation, evolution and judging tasks (not a task itself)."""
from __future__ import annotations

import re
from functools import partial
from typing import Any, Callable

from .. import templating
from ..samples import insert_samples
from . import Param, Task, TaskError
from .writes import _write_links as write_links

# Sampling parameters every LLM task accepts; None means "the endpoint's default".
SAMPLING_PARAMS = {
    "temperature": Param(None, "sampling temperature (default: the endpoint's)", type=float),
    "max_tokens": Param(None, "reply length cap (default: the endpoint's)", type=int),
}


class TemplatedTask(Task):
    """A task whose prompts come from `workbench/templates/` (or the user's overrides of them)."""

    templates: tuple[str, ...] = ()      # template names the task uses, first = the main one
    # template name -> the function that reads the model's replies to it (ParseError when it cannot); the task
    # calls it through `reader()`, and so does `workbench templates parse`, so a curator checks the same code
    readers: dict[str, Callable[[str], Any]] = {}

    def reader(self, name: str) -> Callable[[str], Any]:
        return self.readers[name]

    def template(self, name: str) -> templating.Template:
        cache = self.__dict__.setdefault("_templates", {})
        if name not in cache:
            # overrides live beside the config file; TaskContext may carry its path (else $WORKBENCH_CONFIG)
            cache[name] = templating.load(name, getattr(self.ctx, "config_path", None))
        return cache[name]

    def validate_templates(self) -> None:
        """At queue time: every template loads (an edited override with a broken header fails here)."""
        for name in self.templates:
            try:
                self.template(name)
            except templating.TemplateError as e:
                raise TaskError(str(e)) from None

    def template_refs(self, *names: str) -> dict:
        """{name: version} of the templates used, for lineage."""
        return {n: self.template(n).version for n in (names or self.templates)}

    def origin(self, completion=None, *, templates: tuple[str, ...] = (), **extra) -> dict:
        names = templates or self.templates
        refs = self.template_refs(*names)
        main = names[0]
        return self.ctx.origin(completion, template=main, template_version=refs[main], templates=refs, **extra)

    def sampling(self, *names: str) -> dict:
        """Request params from the task's params of these names (default: SAMPLING_PARAMS); None = the endpoint's."""
        return {k: self.p[k] for k in (names or SAMPLING_PARAMS) if self.p.get(k) is not None}


def prompt_text(sample: dict) -> str:
    """The prompt a human would see: instruction, then the input on the next line (WizardLM feeds Alpaca so)."""
    inst = sample.get("instruction") or ""
    inp = sample.get("input") or ""
    return f"{inst}\n{inp}" if inp else inst


def merged_metadata(sample: dict, key: str, value) -> dict:
    """The sample's metadata with `key` set (metadata updates replace the whole JSON object)."""
    meta = sample.get("metadata")
    meta = dict(meta) if isinstance(meta, dict) else {}
    meta[key] = value
    return meta


def word_count(text: str) -> int:
    return len(re.findall(r"\S+", text))


def judge_name(completion) -> str:
    """How a judgment names its judge: the model (Review groups judgments by it)."""
    return completion.model or completion.endpoint


def add_drop(dropped: dict, rule: str, n: int = 1) -> None:
    if n:
        dropped[rule] = dropped.get(rule, 0) + n


def write_chain(task: Task, conn, item, result) -> dict:
    """A Task.write that chains its rows: each row's parent is the row before it (the first's: the input sample).
    The result's judgments (`sample_ref: i` = the i-th row) are written as by the default write."""
    parent, ids = item.sample_id, []
    for row in result.samples:
        first, _ = insert_samples(conn, task.ctx.into_id, [{**row, "parent_id": parent, "job_id": task.ctx.job_id}])
        ids.append(first)
        parent = first
    return write_links(conn, task.ctx, item, result, ids)


def indexed_block(label: str, texts: list[str]) -> str:
    """Texts numbered for a scorer that sees them all at once: `<label> [i]:` then the text between markers."""
    return "\n\n".join(f"{label} [{i}]:\n<<<\n{t}\n>>>" for i, t in enumerate(texts, start=1))


async def score_together(task: "TemplatedTask", llm, template: str, texts: list[str], **render) -> tuple[list, object]:
    """Deita's scorers: every text in one call, the reply exactly one `[i] Score: N` line per text, each score a
    whole number from 1 to len(texts) + 1 (the top one for "could not be better" / "too complex"). An unreadable
    reply raises ParseError with the raw text (the item fails); there is no default score."""
    n = len(texts)
    t = task.template(template)
    c = await llm.complete(t.render(count=str(n), top=str(n + 1), **render), role="judge",
                           params={"temperature": 0}, validate=partial(task.reader(template), n=n))
    return list(c.parsed), c
