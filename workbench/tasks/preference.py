"""Preference pairs: every model of a pool answers (`num_generations` times each), a judge rates each answer on
its own, and the best answer becomes `chosen`, a worse one by at least `margin` becomes `rejected`.

The judge sees one candidate per call (single-answer grading), so the order candidates are listed in cannot bias
it. Rubric `aspects` (default): UltraFeedback's four aspects rated 1-5 (honesty may be N/A), the candidate's score
is their mean; rubric `judge`: the judge template's overall 1-10. No candidate worse by `margin` gives no pair.

Ties at the top are never broken by the order the pool listed its models in. With `tie_break=rejudge` (default)
the tied answers go to a second judging pass: each two of them are compared side by side in both orders, and an
answer is chosen only if it wins every comparison in both orders (a judge that flips with the order has no
preference); otherwise, and always with `tie_break=drop`, the prompt gives no pair. (Tied answers that are
byte-identical need no second pass: the pair's text is the same whichever is taken.)

Judges favour length: every pair records the chosen/rejected length ratio, `workbench jobs show` reports its
spread per job, and `max_length_ratio=R` drops a pair whose chosen answer is more than R times as long as the
rejected one. With `candidates=existing` the task judges the candidates already stored for each prompt.

Output: one preference row per prompt in the target dataset (instruction + input, response = chosen, rejected).
Its lineage records every candidate (model, generation, score, length, candidate id), the scale and margin, the
judge, the chosen and rejected sides, the length ratio and any tie-break verdicts; the candidates and every
judgment are kept (`candidates`, `judgments`), so Review can show why a pair was chosen. The pair gets two
sample scores: `preference.chosen` and `preference.rejected` (scale 1-5 with aspects, 1-10 with judge).
"""
from __future__ import annotations

import asyncio
import statistics
from collections import Counter

import orjson

from ..parsing import judge_schema, parse_aspect_ratings, parse_judge_json, parse_pair_verdict
from . import Item, LLM, Param, Result, TaskError, item_rng, register, write_result
from .common import TemplatedTask, judge_name
from .generate import prompt_messages

SCALES = {"aspects": (1, 5), "judge": (1, 10)}


def top_indices(scores: list[float]) -> list[int]:
    best = max(scores)
    return [i for i, s in enumerate(scores) if s == best]


def select_pair(scores: list[float], margin: float, rng=None, best: int | None = None) -> tuple[int, int] | None:
    """(chosen, rejected) indexes: chosen = `best`, or the single best score (None when several share the top:
    position never breaks a tie); rejected = the worst, or with an rng a random one among those at least `margin`
    below the chosen; None when no candidate is that much worse."""
    if len(scores) < 2:
        return None
    if best is None:
        top = top_indices(scores)
        if len(top) > 1:
            return None
        best = top[0]
    worse = [i for i, s in enumerate(scores) if scores[best] - s >= margin]
    if not worse:
        return None
    if rng is None:
        return best, min(worse, key=lambda i: (scores[i], i))
    return best, rng.choice(worse)


def tie_winner(tied: list[int], verdicts: dict[tuple[int, int], str]) -> int | None:
    """The tied candidate that beat every other one in both orders, from verdicts {(first, second): "A"|"B"|"C"}."""
    wins = Counter()
    for (a, b), v in verdicts.items():
        if v == "A":
            wins[(a, b)] += 1
        elif v == "B":
            wins[(b, a)] += 1
    for i in tied:
        if all(wins[(i, j)] == 2 for j in tied if j != i):
            return i
    return None


def length_ratio(chosen: str, rejected: str) -> float:
    """len(chosen) / len(rejected) in characters (an empty rejected counts as one character)."""
    return round(len(chosen) / max(1, len(rejected)), 4)


@register
class Preference(TemplatedTask):
    name = "preference"
    summary = "every pool model answers, a judge rates each answer alone; chosen = best, rejected = worse by a margin"
    templates = ("preference-rate", "judge", "preference-compare")
    readers = {"preference-rate": parse_aspect_ratings, "judge": parse_judge_json,
               "preference-compare": parse_pair_verdict}
    params = {
        "candidates": Param("generate", "generate: ask every model of the pool; existing: judge stored candidates",
                            choices=("generate", "existing")),
        "rubric": Param("aspects", "aspects: four aspects 1-5 (mean); judge: the judge template's overall 1-10",
                        choices=("aspects", "judge")),
        "margin": Param(None, "minimum score gap chosen - rejected (default 1 on 1-5, 2 on 1-10)", type=float),
        "rejected": Param("random", "which worse candidate: random (seeded) or lowest", choices=("random", "lowest")),
        "num_generations": Param(1, "answers per model of the pool (each a separate, salted call)"),
        "tie_break": Param("rejudge", "ties at the top: rejudge (pairwise, both orders, a clear winner or no pair) "
                                      "or drop", choices=("rejudge", "drop")),
        "max_length_ratio": Param(None, "drop a pair whose chosen answer is more than R times the rejected's length",
                                  type=float),
        "temperature": Param(None, "sampling temperature for the answers (default: the endpoint's)", type=float),
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
        if self.p["num_generations"] < 1:
            raise TaskError("param num_generations must be at least 1")
        if self.p["num_generations"] > 1 and self.p["temperature"] == 0:
            raise TaskError("several generations per model need a temperature above 0 (at 0 they repeat)")
        if self.p["max_length_ratio"] is not None and self.p["max_length_ratio"] < 1:
            raise TaskError("param max_length_ratio must be at least 1 (a ratio of chosen to rejected length)")

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
            gens = [None] * len(cands)
        else:
            params = {k: self.p[k] for k in ("max_tokens", "temperature") if self.p[k] is not None} or None
            # generation k of every model; the salt keeps k identical requests from collapsing into one cached reply
            batches = await asyncio.gather(*(llm.each(prompt, params=params, salt=k or None)
                                             for k in range(self.p["num_generations"])))
            replies = [r for batch in batches for r in batch]
            gens = [k for k, batch in enumerate(batches) for r in batch if not isinstance(r, BaseException)]
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
        summary = dict(result.summary or {}, scores=scores, models=[c[1] for c in cands])
        result.summary = summary
        lo, hi = SCALES[self.p["rubric"]]
        listed = [{"model": m, "endpoint": e, "generation": g, "score": sc, "chars": len(t), "candidate_id": cid}
                  for (cid, m, e, t), sc, g in zip(cands, scores, gens)]
        top = top_indices(scores)
        best, tie = (top[0] if len(top) == 1 else None), None
        if best is None:
            if self.p["tie_break"] == "drop":
                result.dropped["tie at the top"] = 1
                return result
            best, tie = await self.break_tie(llm, s, cands, top)
            summary["tie_break"] = tie
            if best is None:
                result.dropped["tie at the top unresolved"] = 1
                return result
        rng = item_rng(self.p["seed"], s["id"]) if self.p["rejected"] == "random" else None
        pair = select_pair(scores, self.margin, rng, best=best)
        if pair is None:
            result.dropped["no margin"] = 1
            return result
        ci, ri = pair
        ratio = length_ratio(cands[ci][3], cands[ri][3])
        summary.update(chosen=ci, rejected=ri, length_ratio=ratio)
        if self.p["max_length_ratio"] is not None and ratio > self.p["max_length_ratio"]:
            result.dropped["length ratio"] = 1
            return result
        judge = result.judgments[0]["judge"]
        origin = self.origin(
            templates=(result.judgments[0]["rubric"],) + (("preference-compare",) if tie else ()), judge=judge,
            rubric=self.p["rubric"], self_judged=judge in {c[1] for c in cands},   # only with --allow-self-judge
            scale=[lo, hi], margin=self.margin, candidates=listed, length_ratio=ratio,
            chosen={**listed[ci], "index": ci}, rejected={**listed[ri], "index": ri},
            **({"tie_break": tie} if tie else {}))
        result.scores = [{"sample_ref": 0, "rubric": f"preference.{side}", "score": scores[i], "scale": (lo, hi),
                          "judge": judge, "template_version": result.judgments[0]["rubric_version"]}
                         for side, i in (("chosen", ci), ("rejected", ri))]
        result.samples = [{"instruction": s["instruction"], "input": s.get("input") or "",
                           "system": s.get("system") or "",
                           "messages": [m for m in prompt if m["role"] != "system"] if s.get("messages") else None,
                           "response": cands[ci][3], "rejected": cands[ri][3], "origin": origin}]
        return result

    async def break_tie(self, llm: LLM, s: dict, cands: list, tied: list[int]) -> tuple[int | None, dict]:
        """The second judging pass: every two tied answers side by side, in both orders."""
        if len({cands[i][3] for i in tied}) == 1:
            # byte-identical answers: the pair's text is the same whichever is picked (origin lists every tied one)
            return tied[0], {"tied": tied, "identical": True, "winner": tied[0]}
        t = self.template("preference-compare")
        order = [(a, b) for a in tied for b in tied if a != b]

        async def compare(a: int, b: int) -> str:
            c = await llm.complete(t.render(instruction=s["instruction"], input=s.get("input") or "",
                                            first=cands[a][3], second=cands[b][3]),
                                   role="judge", params={"temperature": 0}, validate=self.reader("preference-compare"))
            return c.parsed
        verdicts = dict(zip(order, await asyncio.gather(*(compare(a, b) for a, b in order))))
        winner = tie_winner(tied, verdicts)
        return winner, {"tied": tied, "verdicts": [[a, b, v] for (a, b), v in verdicts.items()], "winner": winner}

    def write(self, conn, item: Item, result: Result) -> dict:
        out = write_result(conn, self.ctx, item, result)
        if result.samples and out.get("candidates"):
            # generated candidates get their ids only now: record them in the pair's lineage
            origin = dict(result.samples[0]["origin"])
            for side, i in (("chosen", result.summary["chosen"]), ("rejected", result.summary["rejected"])):
                origin[side] = {**origin[side], "candidate_id": out["candidates"][i]}
            origin["candidates"] = [{**c, "candidate_id": cid} for c, cid in zip(origin["candidates"],
                                                                                out["candidates"])]
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

    @classmethod
    def report(cls, conn, job: dict) -> dict:
        """Per job: how much longer chosen answers are than rejected ones (judges favour length)."""
        ratios = sorted(r for (r,) in conn.execute(
            "SELECT json_extract(origin, '$.length_ratio') FROM samples WHERE job_id = ? AND dataset_id = ? "
            "AND json_extract(origin, '$.length_ratio') IS NOT NULL", (job["id"], job.get("into_dataset_id"))))
        if not ratios:
            return {"pairs": 0}
        return {"pairs": len(ratios), "length_ratio_median": round(statistics.median(ratios), 3),
                "length_ratio_mean": round(statistics.fmean(ratios), 3),
                "chosen_longer": round(sum(r > 1 for r in ratios) / len(ratios), 3),
                "length_ratio_max": max(ratios),
                "dropped_for_length": job["drop_reasons"].get("length ratio", 0)}
