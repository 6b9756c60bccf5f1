"""Self-curation (instruction backtranslation, Li et al. 2023): rate each pair on the 5-point assistant-quality
scale with a brief reasoning and a last line `Score: N`; keep pairs at or above a threshold.

Default threshold 4.5 (the paper's A_5 set; with whole-number scores that means 5); 4 gives the larger A_4 set.
Every score is stored as a judgment (judge model + rubric version) and as the sample's `curate` score (scale 1-5);
the verdict is also written into the sample's metadata under "curation" ({score, kept, threshold, judge, job}), so
an export with `--min-score curate=4.5` or a filter on the flag yields the curated set. The job's `threshold` is
also what `workbench agreement --rubric curate` compares curator decisions against. Iterating as the paper does means running
curate again over the same candidates with a better curator (another endpoint); curated pairs can also seed the
next backtranslation round (`backtranslate --param seed_dataset=... seed_min_score=4.5`).
"""
from __future__ import annotations

from functools import partial

from ..parsing import parse_score
from . import Item, LLM, Param, Result, TaskError, register
from .common import SAMPLING_PARAMS, TemplatedTask, judge_name, merged_metadata


@register
class Curate(TemplatedTask):
    name = "curate"
    summary = "self-curation: 5-point score with reasoning, keep pairs scoring >= threshold"
    templates = ("curate",)
    readers = {"curate": partial(parse_score, lo=1, hi=5, integer=True)}
    params = {
        "threshold": Param(4.5, "keep pairs scoring at least this (4.5 = the paper's A5 set, 4 = A4)", type=float),
        **SAMPLING_PARAMS,
    }
    writes_samples = False
    roles = ("judge",)

    def validate(self, conn) -> None:
        self.validate_templates()
        if not 1 <= self.p["threshold"] <= 5:
            raise TaskError(f"param threshold: {self.p['threshold']} is outside the 1-5 scale")

    async def process(self, item: Item, llm: LLM) -> Result:
        s = item.input_sample()
        if not (s.get("instruction") or "").strip() or not (s.get("response") or "").strip():
            return Result(dropped={"no instruction or response": 1})
        t = self.template("curate")
        messages = t.render(instruction=s["instruction"], response=s["response"])
        c = await llm.complete(messages, role="judge", params=self.sampling(),
                               validate=self.reader("curate"))
        score, threshold = c.parsed.score, self.p["threshold"]
        kept = score >= threshold
        verdict = {"score": score, "kept": kept, "threshold": threshold, "judge": judge_name(c),
                   "rubric_version": t.version, "job": self.ctx.job_id}
        return Result(
            judgments=[{"sample_id": s["id"], "judge": judge_name(c), "rubric": t.name, "rubric_version": t.version,
                        "scores": {"curation": score}, "overall": score, "rationale": c.parsed.reason,
                        "raw": c.text}],
            scores=[{"sample_id": s["id"], "rubric": "curate", "score": score, "scale": (1, 5),
                     "judge": judge_name(c), "template_version": t.version}],
            updates=[{"id": s["id"], "metadata": merged_metadata(s, "curation", verdict)}],
            kept=1 if kept else 0, dropped={} if kept else {"below threshold": 1},
            raw=None if kept else c.text, summary={"score": score, "kept": kept})
