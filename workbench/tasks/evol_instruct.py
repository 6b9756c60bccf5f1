"""Evol-Instruct (WizardLM, Xu et al. 2023): make instructions harder (in-depth) or rarer (in-breadth), over rounds.

Each round picks one of six operations with equal probability — add constraints, deepen, concretize, increase
reasoning steps, complicate the input, or in-breadth — from (seed, sample id, round), evolves the current
instruction, answers it, and applies the paper's elimination rules, each counted on its own:

  no information gain   an LLM says the evolved prompt is "Equal" to its parent ("Not Equal" is read first)
  sorry                 the response contains "sorry" and has fewer than 80 words
  empty response        the response is only punctuation and stop words
  template leak         the evolved prompt copies the template's markers ("given prompt", "rewritten prompt", ...)

A failed evolution leaves the instruction as it was, and the next round evolves that one again. Each surviving
evolution becomes a row in the target dataset; its parent is the row it was evolved from (round 1: the input
sample) and its lineage records the round and the operation.

With `complexity_scorer=deita` (default), Deita's complexity scorer then sees the original instruction and every
surviving evolution at once and answers one `[i] Score: N` line each (whole numbers 1..n, n+1 for "too complex to
answer"; anything else fails the item with the raw reply kept). Each row gets its `complexity_score` (and every
version's score) in its lineage, and a `deita-complexity` judgment and score (workbench/scores.py), which the
`deita` selection multiplies with a quality score.
"""
from __future__ import annotations

import re

from ..parsing import parse_answer, parse_equal, parse_text, parse_version_scores
from . import Item, LLM, Param, Result, TaskError, item_rng, register
from .common import (SAMPLING_PARAMS, TemplatedTask, indexed_block, judge_name, prompt_text, score_together,
                     word_count, write_chain)

# In-depth method -> the sentence inserted into the evol-depth template.
DEPTH_METHODS = {
    "add_constraints": "Add one more constraint or requirement that the answer must satisfy.",
    "deepen": "If the prompt asks about a topic, widen and deepen the inquiry: ask about it in more depth and breadth.",
    "concretize": "Replace general concepts in the prompt with more specific, concrete ones.",
    "increase_reasoning": "If the prompt can be solved with a few simple steps, rewrite it so that it explicitly "
                          "asks for reasoning in several steps.",
    "complicate_input": "Give the prompt a more complex input to work on: if it has none, add realistic input data "
                        "in a structured form (a table, JSON, XML, SQL, code or shell output) that the task must "
                        "use; if it has one, make that input richer and harder to handle.",
}
OPERATIONS = (*DEPTH_METHODS, "breadth")

LEAK_MARKERS = ("given prompt", "rewritten prompt", "#rewritten prompt#", "created prompt", "#created prompt#",
                "#given prompt#", "original prompt", "new prompt:", "inspiration prompt")

STOP_WORDS = frozenset("""a an the and or but if then else of to in on at by for with from as is are was were be been
being it its this that these those i you he she we they me him her us them my your his our their not no yes so do does
did have has had can could will would shall should may might must just than too very there here what which who whom
whose when where why how all any some such only own same also about into over under again further once up down out off
ok okay""".split())


def leaks_template(prompt: str) -> bool:
    low = prompt.lower()
    return any(m in low for m in LEAK_MARKERS)


def is_sorry(response: str) -> bool:
    return "sorry" in response.lower() and word_count(response) < 80


def is_empty_response(response: str) -> bool:
    """Only punctuation, whitespace and stop words."""
    words = re.findall(r"[^\W_]+", response.lower())
    return all(w in STOP_WORDS for w in words)


def choose_operation(seed, sample_id: int, round_: int) -> str:
    return item_rng(seed, sample_id, round_).choice(OPERATIONS)


@register
class EvolInstruct(TemplatedTask):
    name = "evol-instruct"
    summary = "evolve instructions in depth (constraints, deepen, concretize, reasoning, input) or breadth, rounds"
    templates = ("evol-depth", "evol-breadth", "evol-equal", "respond", "deita-complexity")
    readers = {"evol-depth": parse_text, "evol-breadth": parse_text, "evol-equal": parse_equal,
               "respond": parse_answer, "deita-complexity": parse_version_scores}
    params = {
        "rounds": Param(1, "evolution rounds per instruction (the paper: 4)"),
        "generate_answers": Param(True, "answer each evolved instruction (needed by the response elimination rules)"),
        "check_equal": Param(True, "ask the judge role whether the evolved prompt adds anything (rule 1)"),
        "seed": Param(42, "random seed for the choice of operation per (sample, round)"),
        "complexity_scorer": Param("deita", "deita: score the original and the evolutions together for complexity; "
                                            "none: no scores", choices=("deita", "none")),
        **SAMPLING_PARAMS,
    }

    def validate(self, conn) -> None:
        self.validate_templates()
        if self.p["rounds"] < 1:
            raise TaskError("param rounds must be at least 1")

    async def process(self, item: Item, llm: LLM) -> Result:
        s = item.input_sample()
        current = prompt_text(s)
        if not current.strip():
            return Result(dropped={"no instruction": 1})
        rows, dropped, ops = [], {}, []
        for r in range(1, self.p["rounds"] + 1):
            op = choose_operation(self.p["seed"], s["id"], r)
            ops.append(op)
            if op == "breadth":
                t = self.template("evol-breadth")
                messages = t.render(prompt=current)
            else:
                t = self.template("evol-depth")
                messages = t.render(prompt=current, method=DEPTH_METHODS[op])
            c = await llm.complete(messages, params=self.sampling(), validate=self.reader(t.name))
            evolved = c.parsed
            rule = await self.eliminate(llm, current, evolved, op)
            response, rc = "", None
            if rule is None and self.p["generate_answers"]:
                rc = await llm.complete(self.template("respond").render(instruction=evolved, input="", system=""),
                                        params=self.sampling(), validate=self.reader("respond"))
                response = rc.text
                rule = "sorry" if is_sorry(response) else "empty response" if is_empty_response(response) else None
            if rule is not None:
                dropped[rule] = dropped.get(rule, 0) + 1
                continue                    # the parent stays and is evolved again next round
            rows.append({"instruction": evolved, "input": "", "response": response, "system": s.get("system") or "",
                         "origin": self.origin(c, templates=(t.name, "evol-equal", "respond"), round=r,
                                               operation=op, responder=rc.model if rc else None)})
            current = evolved
        result = Result(samples=rows, dropped=dropped, summary={"operations": ops, "kept_rounds": len(rows)})
        if rows and self.p["complexity_scorer"] == "deita":
            await self.score_complexity(llm, prompt_text(s), result)
        return result

    async def score_complexity(self, llm: LLM, original: str, result: Result) -> None:
        versions = [original, *(r["instruction"] for r in result.samples)]
        scores, sc = await score_together(self, llm, "deita-complexity", versions,
                                          instructions=indexed_block("Instruction", versions))
        scale = [1, len(versions) + 1]
        for i, (row, score) in enumerate(zip(result.samples, scores[1:])):
            row["origin"] = {**row["origin"], "complexity_score": score, "complexity_scores": scores,
                             "complexity_scale": scale, "complexity_scorer": judge_name(sc)}
            result.judgments.append({"sample_ref": i, "judge": judge_name(sc), "rubric": "deita-complexity",
                                     "rubric_version": self.template("deita-complexity").version,
                                     "scores": {"complexity": score}, "overall": None,
                                     "rationale": f"version {i + 2} of {len(versions)} scored together",
                                     "raw": sc.text})
            result.scores.append({"sample_ref": i, "rubric": "deita-complexity", "score": score, "scale": tuple(scale),
                                  "judge": judge_name(sc),
                                  "template_version": self.template("deita-complexity").version})
        result.summary["complexity_scores"] = scores

    async def eliminate(self, llm: LLM, parent: str, evolved: str, op: str) -> str | None:
        """The first elimination rule the evolved prompt breaks (before answering it), or None."""
        if leaks_template(evolved):
            return "template leak"
        if self.p["check_equal"]:
            eq = await llm.complete(self.template("evol-equal").render(first=parent, second=evolved), role="judge",
                                    params={"temperature": 0}, validate=self.reader("evol-equal"))
            if eq.parsed:
                return "no information gain"
        return None

    write = write_chain
