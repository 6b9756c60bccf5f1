"""EvolQuality (Liu et al. 2023, "What Makes Good Data for Alignment?"): rewrite a response to improve it in one
respect per round — more helpful, more relevant, deeper, more creative, more detailed.

Each of `num_evolutions` rounds picks a mutation at random and rewrites the latest response (the whole text: an
older public implementation sent only its last character). The choice is derived from (seed, sample id, round),
so a resumed or re-batched job makes the same choices. Output rows go to the target dataset with the instruction
unchanged: the last evolution only, or with `store_evolutions` every round (each row's parent is the previous
round's row), plus the original pair first with `include_original_response`.
"""
from __future__ import annotations

from ..parsing import parse_text
from . import Item, LLM, Param, Result, TaskError, item_rng, register
from .common import SAMPLING_PARAMS, TemplatedTask, prompt_text, write_chain

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
    templates = ("evol-quality",)
    readers = {"evol-quality": parse_text}
    params = {
        "num_evolutions": Param(1, "rounds of rewriting per response"),
        "store_evolutions": Param(False, "keep every round's response (else only the last)"),
        "include_original_response": Param(False, "with store_evolutions: also store the original pair first"),
        "seed": Param(42, "random seed: the same seed gives the same mutations for the same samples"),
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
        rows = []
        if self.p["store_evolutions"] and self.p["include_original_response"]:
            rows.append({**base, "response": s["response"], "origin": self.origin(round=0, mutation=None)})
        response = s["response"]
        mutations = choose_mutations(self.p["seed"], s["id"], self.p["num_evolutions"])
        for r, mutation in enumerate(mutations, start=1):
            messages = t.render(instruction=instruction, response=response, method=MUTATIONS[mutation])
            c = await llm.complete(messages, params=self.sampling(), validate=self.reader("evol-quality"))
            response = c.parsed
            if self.p["store_evolutions"] or r == len(mutations):
                rows.append({**base, "response": response,
                             "origin": self.origin(c, round=r, mutation=mutation, mutations=mutations[:r])})
        return Result(samples=rows, summary={"mutations": mutations})

    write = write_chain
