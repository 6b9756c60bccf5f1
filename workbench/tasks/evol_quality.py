"""EvolQuality (Liu et al. 2023, "What Makes Good Data for Alignment?"): rewrite a response to improve it in one
respect per round — more helpful, more relevant, deeper, more creative, more detailed.

Each of `num_evolutions` rounds picks a mutation at random and rewrites the latest response (the whole text: an
older public implementation sent only its last character). The choice is derived from (seed, sample id, round),
so a resumed or re-batched job makes the same choices.

With `scorer=deita` (default), as Deita does it, the original response and all its rewrites are then scored together
by one quality-scorer call that sees every version at once and answers one `[i] Score: N` line per version (whole
numbers 1..n, n+1 for "could not be better"; anything else is an item error with the raw reply kept). The best
version is kept (a tie goes to the earlier version: a rewrite must beat what it rewrote): one output row per input
sample, whose lineage lists every evolution with its mutation, score and length, and which carries a
`deita-quality` judgment and score (workbench/scores.py). With `store_evolutions` every round is a row instead (each row's parent is
the previous round's row, the original first with `include_original_response`), each with its score and `selected`
marking the best. With `scorer=none` nothing is scored and the last evolution is the output (or every round with
`store_evolutions`).
"""
from __future__ import annotations

from ..parsing import parse_text, parse_version_scores
from . import Item, LLM, Param, Result, TaskError, item_rng, register
from .common import SAMPLING_PARAMS, TemplatedTask, indexed_block, judge_name, prompt_text, score_together, write_chain

# Mutation -> how the template's "Make the answer ..." sentence ends.
MUTATIONS = {
    "HELPFULNESS": "more helpful to the user: address their actual need and add what they would want to know.",
    "RELEVANCE": "more relevant to the prompt: keep to what was asked and drop or tighten anything beside it.",
    "DEEPENING": "deeper: go further into the substance, with more insight, reasoning or nuance.",
    "CREATIVITY": "more creative: find a more original, vivid or engaging way to deliver the same content.",
    "DETAILS": "more detailed: add specific facts, steps or examples where the answer is thin.",
}
NAMES = tuple(MUTATIONS)


def choose_mutations(seed, sample_id: int, rounds: int) -> list[str]:
    """The mutation of each round, a pure function of (seed, sample id, round)."""
    return [item_rng(seed, sample_id, r).choice(NAMES) for r in range(rounds)]


@register
class EvolQuality(TemplatedTask):
    name = "evol-quality"
    summary = "rewrite responses to be more helpful/relevant/deep/creative/detailed (random mutation per round)"
    templates = ("evol-quality", "deita-quality")
    readers = {"evol-quality": parse_text, "deita-quality": parse_version_scores}
    params = {
        "num_evolutions": Param(1, "rounds of rewriting per response"),
        "store_evolutions": Param(False, "keep every round's response (else only the last)"),
        "include_original_response": Param(False, "with store_evolutions: also store the original pair first"),
        "seed": Param(42, "random seed: the same seed gives the same mutations for the same samples"),
        "scorer": Param("deita", "deita: score the original and every rewrite together and keep the best; "
                                 "none: keep the last rewrite unscored", choices=("deita", "none")),
        **SAMPLING_PARAMS,
    }

    def validate(self, conn) -> None:
        self.validate_templates()
        if self.p["num_evolutions"] < 1:
            raise TaskError("param num_evolutions must be at least 1")

    async def process(self, item: Item, llm: LLM) -> Result:
        s = item.input_sample()
        if not (s.get("instruction") or "").strip() or not (s.get("response") or "").strip():
            return Result(dropped={"no instruction or response": 1})
        t = self.template("evol-quality")
        instruction = prompt_text(s)
        base = {k: s.get(k) for k in ("instruction", "input", "system", "task_type", "domain", "difficulty",
                                      "language")}
        mutations = choose_mutations(self.p["seed"], s["id"], self.p["num_evolutions"])
        versions, calls = [s["response"]], [None]          # round r's response is versions[r]
        for mutation in mutations:
            messages = t.render(instruction=instruction, response=versions[-1], method=MUTATIONS[mutation])
            c = await llm.complete(messages, params=self.sampling(), validate=self.reader("evol-quality"))
            versions.append(c.parsed)
            calls.append(c)
        rounds = [None, *mutations]
        if self.p["scorer"] == "none":
            keep = range(0 if self.p["include_original_response"] else 1, len(versions)) \
                if self.p["store_evolutions"] else [len(versions) - 1]
            rows = [{**base, "response": versions[r], "origin": self.origin(calls[r], round=r, mutation=rounds[r],
                                                                             mutations=mutations[:r])} for r in keep]
            return Result(samples=rows, summary={"mutations": mutations})

        scores, sc = await score_together(self, llm, "deita-quality", versions, instruction=instruction,
                                          answers=indexed_block("Answer", versions))
        best = max(range(len(versions)), key=lambda r: (scores[r], -r))     # a tie: the earlier version
        evolutions = [{"round": r, "mutation": rounds[r], "score": scores[r], "chars": len(v)}
                      for r, v in enumerate(versions)]
        scoring = {"scorer": judge_name(sc), "scale": [1, len(versions) + 1], "evolutions": evolutions,
                   "best_round": best}
        if self.p["store_evolutions"]:
            keep = list(range(0 if self.p["include_original_response"] else 1, len(versions)))
        else:
            keep = [best]
        rows, judgments, rubric_scores = [], [], []
        version = self.template("deita-quality").version
        for i, r in enumerate(keep):
            rows.append({**base, "response": versions[r], "origin": self.origin(
                calls[r], templates=("evol-quality", "deita-quality"), round=r, mutation=rounds[r],
                mutations=mutations[:r], quality_score=scores[r], selected=r == best, **scoring)})
            judgments.append({"sample_ref": i, "judge": judge_name(sc), "rubric": "deita-quality",
                              "rubric_version": self.template("deita-quality").version,
                              "scores": {"quality": scores[r]}, "overall": None,
                              "rationale": f"version {r + 1} of {len(versions)} scored together", "raw": sc.text})
            rubric_scores.append({"sample_ref": i, "rubric": "deita-quality", "score": scores[r],
                                  "scale": (1, len(versions) + 1), "judge": judge_name(sc),
                                  "template_version": version})
        return Result(samples=rows, judgments=judgments, scores=rubric_scores,
                      summary={"mutations": mutations, "scores": scores, "best_round": best})

    write = write_chain
