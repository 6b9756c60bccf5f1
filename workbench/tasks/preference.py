"""Preference pairs: every model of a pool answers a prompt, a judge rates each answer on its own, and the best
answer becomes `chosen`, a worse one by at least `margin` becomes `rejected`.

The judge sees one candidate per call (single-answer grading), so the order candidates are listed in cannot bias
it. Rubric `aspects` (default): UltraFeedback's four aspects rated 1-5 (honesty may be N/A), the candidate's score
is their mean; rubric `judge`: the judge template's overall 1-10. Ties (best - worst < margin) give no pair.
With `candidates=existing` the task judges the candidates already stored for each prompt instead of generating.

Output: one preference row per prompt in the target dataset (instruction + input, response = chosen, rejected),
its lineage naming both candidates' models and scores and the judge; the candidates and every judgment are kept
(`candidates`, `judgments`), so Review can show why a pair was chosen. The pair gets two sample scores:
`preference.chosen` and `preference.rejected` (scale 1-5 with aspects, 1-10 with judge).
"""
from __future__ import annotations

import asyncio

import orjson

from ..parsing import judge_schema, parse_aspect_ratings, parse_judge_json
from . import Item, LLM, Param, Result, TaskError, item_rng, register, write_result
from .common import TemplatedTask, judge_name
from .generate import prompt_messages


def select_pair(scores: list[float], margin: float, rng=None) -> tuple[int, int] | None:
    """(chosen, rejected) indexes: chosen = the best score (first on ties), rejected = the worst, or with an rng a
    random one among those at least `margin` below the best; None when no candidate is that much worse."""
    if len(scores) < 2:
        return None
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    worse = [i for i, s in enumerate(scores) if scores[best] - s >= margin]
    if not worse:
        return None
    if rng is None:
        return best, min(worse, key=lambda i: (scores[i], i))
    return best, rng.choice(worse)


@register
class Preference(TemplatedTask):
    name = "preference"
    summary = "every pool model answers, a judge rates each answer alone; chosen = best, rejected = worse by a margin"
    templates = ("preference-rate", "judge")
    readers = {"preference-rate": parse_aspect_ratings, "judge": parse_judge_json}
    params = {
        "candidates": Param("generate", "generate: ask every model of the pool; existing: judge stored candidates",
                            choices=("generate", "existing")),
        "rubric": Param("aspects", "aspects: four aspects 1-5 (mean); judge: the judge template's overall 1-10",
                        choices=("aspects", "judge")),
        "margin": Param(None, "minimum score gap chosen - rejected (default 1 on 1-5, 2 on 1-10)", type=float),
        "rejected": Param("random", "which worse candidate: random (seeded) or lowest", choices=("random", "lowest")),
        "seed": Param(42, "random seed for picking the rejected candidate"),
        "max_tokens": Param(None, "reply cap for candidate answers (default: the endpoint's)", type=int),
    }
    into_kind = "preference"
    roles = ("generate", "judge")

    @property
    def margin(self) -> float:
        if self.p["margin"] is not None:
            return self.p["margin"]
        return 1.0 if self.p["rubric"] == "aspects" else 2.0

    def validate(self, conn) -> None:
        self.validate_templates()
        if self.margin <= 0:
            raise TaskError("param margin must be > 0 (a tie is never a preference)")

    def candidate_sources(self, conn, generators: list) -> list[tuple[str | None, str]]:
        if self.p["candidates"] == "generate":
            return [(ep.name, ep.model) for ep in generators]
        if self.ctx.dataset_id is None:
            return []
        return [tuple(r) for r in conn.execute(
            "SELECT DISTINCT c.endpoint, c.model FROM candidates c JOIN samples s ON s.id = c.sample_id "
            "WHERE s.dataset_id = ?", (self.ctx.dataset_id,))]

    def load(self, conn) -> None:
        self.stored: dict[int, list[tuple]] = {}
        if self.p["candidates"] == "existing" and self.ctx.dataset_id is not None:
            for cid, sid, model, endpoint, response in conn.execute(
                    "SELECT c.id, c.sample_id, c.model, c.endpoint, c.response FROM candidates c "
                    "JOIN samples s ON s.id = c.sample_id WHERE s.dataset_id = ? ORDER BY c.id",
                    (self.ctx.dataset_id,)):
                self.stored.setdefault(sid, []).append((cid, model, endpoint, response))

    async def process(self, item: Item, llm: LLM) -> Result:
        s = item.input_sample()
        if not (s.get("instruction") or "").strip():
            return Result(dropped={"no instruction": 1})
        result = Result()
        prompt = prompt_messages(s)
        # candidates: (candidate_id or None, model, endpoint, text)
        if self.p["candidates"] == "existing":
            cands = self.stored.get(s["id"], [])
        else:
            params = {"max_tokens": self.p["max_tokens"]} if self.p["max_tokens"] else None
            replies = await llm.each(prompt, params=params)
            failed = [r for r in replies if isinstance(r, BaseException)]
            cands = [(None, r.model, r.endpoint, r.text) for r in replies if not isinstance(r, BaseException)]
            if failed:
                result.dropped["candidate failed"] = len(failed)
                result.summary = {"errors": [str(e) for e in failed]}
            result.candidates = [{"sample_id": s["id"], "model": m, "endpoint": e, "response": t}
                                 for _, m, e, t in cands]
        if self.p["candidates"] == "generate" and not cands:
            raise failed[0]                 # every model failed: an item error, not a drop
        if len(cands) < 2:
            result.dropped["fewer than 2 candidates"] = 1
            return result
        # one judge call per candidate, all at once; any unreadable judgment fails the item (raw kept)
        judged = await asyncio.gather(*(self.rate(llm, s, text) for _, _, _, text in cands))
        scores = [score for score, _ in judged]
        for i, ((cid, *_), (score, j)) in enumerate(zip(cands, judged)):
            j["sample_id"] = s["id"]
            if cid is None:
                j["candidate_ref"] = i
            else:
                j["candidate_id"] = cid
            result.judgments.append(j)
        rng = item_rng(self.p["seed"], s["id"]) if self.p["rejected"] == "random" else None
        pair = select_pair(scores, self.margin, rng)
        summary = dict(result.summary or {}, scores=scores, models=[c[1] for c in cands])
        result.summary = summary
        if pair is None:
            result.dropped["no margin"] = 1
            return result
        ci, ri = pair
        judge = result.judgments[0]["judge"]
        origin = self.origin(
            templates=(result.judgments[0]["rubric"],), judge=judge, rubric=self.p["rubric"],
            self_judged=judge in {c[1] for c in cands},   # only with --allow-self-judge; Review shows it
            margin=self.margin,
            chosen={"model": cands[ci][1], "score": scores[ci], "candidate_id": cands[ci][0],
                    "chars": len(cands[ci][3])},
            rejected={"model": cands[ri][1], "score": scores[ri], "candidate_id": cands[ri][0],
                      "chars": len(cands[ri][3])})
        scale = (1, 5) if self.p["rubric"] == "aspects" else (1, 10)
        result.scores = [{"sample_ref": 0, "rubric": f"preference.{side}", "score": scores[i], "scale": scale,
                          "judge": judge, "template_version": result.judgments[0]["rubric_version"]}
                         for side, i in (("chosen", ci), ("rejected", ri))]
        result.samples = [{"instruction": s["instruction"], "input": s.get("input") or "",
                           "system": s.get("system") or "",
                           "messages": [m for m in prompt if m["role"] != "system"] if s.get("messages") else None,
                           "response": cands[ci][3], "rejected": cands[ri][3], "origin": origin}]
        summary.update(chosen=ci, rejected=ri)
        return result

    def write(self, conn, item: Item, result: Result) -> dict:
        out = write_result(conn, self.ctx, item, result)
        if result.samples and out.get("candidates"):
            # generated candidates get their ids only now: record them in the pair's lineage
            origin = dict(result.samples[0]["origin"])
            for side, i in (("chosen", result.summary["chosen"]), ("rejected", result.summary["rejected"])):
                origin[side] = {**origin[side], "candidate_id": out["candidates"][i]}
            conn.execute("UPDATE samples SET origin = ? WHERE id = ?",
                         (orjson.dumps(origin).decode(), out["samples"][0]))
        return out

    async def rate(self, llm: LLM, s: dict, text: str) -> tuple[float, dict]:
        """(score, judgment dict) for one candidate judged alone."""
        if self.p["rubric"] == "aspects":
            t = self.template("preference-rate")
            c = await llm.complete(t.render(instruction=s["instruction"], input=s.get("input") or "", response=text),
                                   role="judge", params={"temperature": 0},
                                   validate=self.reader("preference-rate"))
            r = c.parsed
            score = round(r.mean, 4)
            scores = {k.replace(" ", "_"): v for k, v in r.ratings.items()}
            rationale = "\n".join(f"{k}: {v}" for k, v in r.rationales.items() if v)
        else:
            t = self.template("judge")
            c = await llm.complete(t.render(instruction=s["instruction"], input=s.get("input") or "", response=text),
                                   role="judge", json=True, schema=judge_schema(), params={"temperature": 0},
                                   validate=self.reader("judge"))
            score, scores, rationale = c.parsed.overall, c.parsed.scores, c.parsed.rationale
        return score, {"judge": judge_name(c), "rubric": t.name, "rubric_version": t.version, "scores": scores,
                       "overall": score, "rationale": rationale, "raw": c.text}
