"""Judge: instruction clarity, response quality and alignment (1-10 each), an overall score and a rationale.

One pair per call, JSON requested (response_format where the endpoint supports it) and parsed defensively. Each
judgment is stored with the judge model and the rubric template's version, so several judges (or rubric
versions) can score the same sample side by side; the sample's latest scores are kept per rubric: `judge` (the
overall) and `judge.<dimension>` (workbench/scores.py).
"""
from __future__ import annotations

from ..parsing import JUDGE_DIMENSIONS, judge_schema, parse_judge_json
from . import Item, LLM, Result, register
from .common import SAMPLING_PARAMS, TemplatedTask, judge_name

SCALE = (1, 10)   # every dimension and the overall; sample scores: rubric "judge" and "judge.<dimension>"

SCHEMA = judge_schema(JUDGE_DIMENSIONS)


@register
class Judge(TemplatedTask):
    name = "judge"
    summary = "score each pair 1-10 on instruction clarity, response quality, alignment, plus overall and rationale"
    templates = ("judge",)
    readers = {"judge": parse_judge_json}
    params = {**SAMPLING_PARAMS}
    writes_samples = False
    roles = ("judge",)

    def validate(self, conn) -> None:
        self.validate_templates()

    async def process(self, item: Item, llm: LLM) -> Result:
        s = item.input_sample()
        if not (s.get("instruction") or "").strip() or not (s.get("response") or "").strip():
            return Result(dropped={"no instruction or response": 1})
        t = self.template("judge")
        messages = t.render(instruction=s["instruction"], input=s.get("input") or "", response=s["response"])
        c = await llm.complete(messages, role="judge", json=True, schema=SCHEMA, params=self.sampling(),
                               validate=self.reader("judge"))
        r = c.parsed
        rationale = r.rationale
        if r.extra:   # the judge explained dimensions one by one: keep that too (scores stay plain numbers)
            rationale += "\n" + "\n".join(f"{dim}: {why}" for dim, why in r.extra.items())
        who = {"sample_id": s["id"], "judge": judge_name(c), "template_version": t.version, "scale": SCALE}
        return Result(
            judgments=[{"sample_id": s["id"], "judge": judge_name(c), "rubric": t.name, "rubric_version": t.version,
                        "scores": r.scores, "overall": r.overall, "rationale": rationale, "raw": c.text}],
            scores=[{**who, "rubric": "judge", "score": r.overall},
                    *({**who, "rubric": f"judge.{dim}", "score": v} for dim, v in r.scores.items())],
            kept=1, summary={"overall": r.overall, "judge": judge_name(c)})
