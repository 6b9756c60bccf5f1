"""Deita's scorers on any dataset (Liu et al. 2023): a quality score of each (prompt, answer) pair and a complexity
score of each prompt, so `workbench sample --by deita` works on imported data, not only on evol outputs.

Deita's trained scorers read one sample at a time and give 1-6 (the six ranks of its training lists: an original
and five evolutions). A prompted model stands in for them: one call per score, the sample alone, a fixed 1-6 scale
spelled out in the prompt, the reply a one-line `[i] Score: N` list (`[1] Score: 4`) read by the same list reader as
evol-quality's and evol-instruct's scorers (workbench/parsing.py, parse_indexed_scores), so every near miss — another
index, no index, a range, a value off 1-6, two different scores — fails the item with the raw reply kept; nothing
is guessed. The scores are written as the `deita-quality` and `deita-complexity` rubrics (scale 1-6) with a judgment
each, replacing a sample's earlier score on the same rubric (e.g. one evol-quality gave on its own 1..n+1 scale:
scores from both scorers are raw numbers, so score a selection's rows with one of them).

`scores=quality|complexity|both` (default both); a sample with no prompt is dropped, one with no answer gets only
its complexity (quality is counted as dropped: "no response").
"""
from __future__ import annotations

from functools import partial

from ..parsing import parse_indexed_scores
from . import Item, LLM, Param, Result, TaskError, register
from .common import SAMPLING_PARAMS, TemplatedTask, judge_name, prompt_text

SCALE = (1, 6)
read_single = partial(parse_indexed_scores, n=1, lo=SCALE[0], hi=SCALE[1], integer=True)


@register
class DeitaScore(TemplatedTask):
    name = "deita-score"
    summary = "Deita's quality and complexity scores (1-6) of existing samples, for `sample --by deita`"
    templates = ("deita-score-quality", "deita-score-complexity")
    readers = {"deita-score-quality": read_single, "deita-score-complexity": read_single}
    params = {
        "scores": Param("both", "which scores: quality (prompt + answer), complexity (prompt), or both",
                        choices=("both", "quality", "complexity")),
        **SAMPLING_PARAMS,
    }
    writes_samples = False
    roles = ("judge",)

    def validate(self, conn) -> None:
        self.validate_templates()
        if self.p["scores"] not in ("both", "quality", "complexity"):
            raise TaskError(f"param scores: {self.p['scores']!r} is not one of both, quality, complexity")

    async def process(self, item: Item, llm: LLM) -> Result:
        s = item.input_sample()
        prompt = prompt_text(s)
        if not prompt.strip():
            return Result(dropped={"no instruction": 1})
        wanted = ("quality", "complexity") if self.p["scores"] == "both" else (self.p["scores"],)
        result = Result(summary={})
        for kind in wanted:
            if kind == "quality" and not (s.get("response") or "").strip():
                result.dropped["no response"] = result.dropped.get("no response", 0) + 1
                continue
            t = self.template(f"deita-score-{kind}")
            messages = t.render(instruction=prompt, response=s.get("response") or "") if kind == "quality" \
                else t.render(instruction=prompt)
            params = {"temperature": 0, **self.sampling()}
            c = await llm.complete(messages, role="judge", params=params, validate=self.reader(t.name))
            score = c.parsed[0]
            result.judgments.append({"sample_id": s["id"], "judge": judge_name(c), "rubric": f"deita-{kind}",
                                     "rubric_version": t.version, "scores": {kind: score}, "overall": None,
                                     "rationale": "scored alone on the 1-6 scale", "raw": c.text})
            result.scores.append({"sample_id": s["id"], "rubric": f"deita-{kind}", "score": score, "scale": SCALE,
                                  "judge": judge_name(c), "template_version": t.version})
            result.summary[kind] = score
        result.kept = 1 if result.scores else 0
        return result
