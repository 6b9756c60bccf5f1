"""Self-curation (instruction backtranslation, Li et al. 2023): rate each pair on the 5-point assistant-quality
scale with a brief reasoning and a last line `Score: N`; keep pairs at or above a threshold.

Default threshold 4.5 (the paper's A_5 set; with whole-number scores that means 5); 4 gives the larger A_4 set.
Every score is stored as a judgment (judge model + rubric version) and as the sample's `curate` score (scale 1-5);
the verdict is also written into the sample's metadata under "curation" ({score, kept, threshold, judge, job}), so
an export with `--min-score curate=4.5` or a filter on the flag yields the curated set. The job's `threshold` is
also what `workbench agreement --rubric curate` compares curator decisions against. Iterating as the paper does means running
curate again over the same candidates with a better curator (another endpoint); curated pairs can also seed the
next backtranslation round (`backtranslate --param seed_dataset=... seed_min_score=4.5`).

Rounds (the paper's iterations; a prompted curator stands in for the fine-tuned M0, M1, ...): round 1 shows
`num_examples` seed pairs (`seed_dataset`) in each prompt; round k > 1 re-scores the same candidates showing pairs
that round k-1 kept at the threshold (never the pair being rated). Each verdict records its round, and `metadata.curation_rounds` keeps every round's
verdict ({"1": {...}, "2": {...}}), so rounds can be compared row by row; `metadata.curation` is the latest.
"""
from __future__ import annotations

from functools import partial

from ..parsing import parse_score
from ..store import get_dataset
from . import Item, LLM, Param, Result, TaskError, item_rng, register
from .common import SAMPLING_PARAMS, TemplatedTask, judge_name

EXAMPLE_MAX_CHARS = 1500       # an example's answer is shown up to this many characters


def kept_in_round(conn, dataset_id: int, round_: int, limit: int | None = None) -> list[tuple[int, str, str]]:
    """(id, instruction, response head) of the rows that curate round `round_` kept, in id order."""
    sql = ("SELECT id, instruction, substr(response, 1, ?) FROM samples WHERE dataset_id = ? AND "
           "json_valid(metadata) AND json_extract(metadata, ?) = 1 ORDER BY id")
    rows = conn.execute(sql + (f" LIMIT {int(limit)}" if limit else ""),
                        (EXAMPLE_MAX_CHARS, dataset_id, f'$.curation_rounds."{round_}".kept'))
    return [tuple(r) for r in rows]

@register
class Curate(TemplatedTask):
    name = "curate"
    summary = "self-curation: 5-point score with reasoning, keep pairs scoring >= threshold"
    templates = ("curate",)
    readers = {"curate": partial(parse_score, lo=1, hi=5, integer=True)}
    params = {
        "threshold": Param(4.5, "keep pairs scoring at least this (4.5 = the paper's A5 set, 4 = A4)", type=float),
        "round": Param(1, "Humpback round: round k > 1 re-scores showing pairs that round k-1 kept as examples"),
        "seed_dataset": Param("", "round 1's examples: seed pairs from this dataset (empty: none)"),
        "num_examples": Param(3, "example pairs shown per prompt"),
        "seed": Param(42, "random seed for the choice of examples (per pair and round, stable across resumes)"),
        **SAMPLING_PARAMS,
    }
    writes_samples = False
    roles = ("judge",)

    def validate(self, conn) -> None:
        self.validate_templates()
        if not 1 <= self.p["threshold"] <= 5:
            raise TaskError(f"param threshold: {self.p['threshold']} is outside the 1-5 scale")
        if self.p["round"] < 1 or self.p["num_examples"] < 0:
            raise TaskError("param round must be >= 1 and num_examples >= 0")
        if self.p["seed_dataset"] and get_dataset(conn, self.p["seed_dataset"]) is None:
            raise TaskError(f"param seed_dataset: no dataset named {self.p['seed_dataset']!r}")
        k = self.p["round"]
        if k > 1 and self.p["num_examples"] and not kept_in_round(conn, self.ctx.dataset_id, k - 1, limit=1):
            raise TaskError(f"round {k} shows pairs that round {k - 1} kept, and no pair of {self.ctx.dataset!r} "
                            f"was kept in round {k - 1}; run `curate --param round={k - 1}` first (or "
                            f"num_examples=0)")

    def load(self, conn) -> None:
        k, self.examples = self.p["round"], []
        if not self.p["num_examples"]:
            return
        if k > 1:
            self.examples = kept_in_round(conn, self.ctx.dataset_id, k - 1)
        elif self.p["seed_dataset"]:
            row = get_dataset(conn, self.p["seed_dataset"])
            if row is None:
                raise TaskError(f"param seed_dataset: no dataset named {self.p['seed_dataset']!r}")
            self.examples = [tuple(r) for r in conn.execute(
                "SELECT id, instruction, substr(response, 1, ?) FROM samples WHERE dataset_id = ? AND "
                "trim(instruction) != '' AND trim(response) != '' AND status != 'rejected' ORDER BY id",
                (EXAMPLE_MAX_CHARS, row[0]))]

    def examples_for(self, sample_id: int) -> list[tuple[int, str, str]]:
        pool = [e for e in self.examples if e[0] != sample_id]     # never the pair being rated
        k = min(self.p["num_examples"], len(pool))
        return item_rng(self.p["seed"], sample_id, self.p["round"]).sample(pool, k) if k else []

    async def process(self, item: Item, llm: LLM) -> Result:
        s = item.input_sample()
        if not (s.get("instruction") or "").strip() or not (s.get("response") or "").strip():
            return Result(dropped={"no instruction or response": 1})
        t = self.template("curate")
        examples = self.examples_for(s["id"])
        shown = "\n\n".join(f"Example request:\n<<<\n{inst}\n>>>\nExample answer:\n<<<\n{resp}\n>>>"
                             for _, inst, resp in examples)
        messages = t.render(instruction=s["instruction"], response=s["response"], examples=shown)
        c = await llm.complete(messages, role="judge", params=self.sampling(),
                               validate=self.reader("curate"))
        score, threshold = c.parsed.score, self.p["threshold"]
        kept = score >= threshold
        verdict = {"score": score, "kept": kept, "threshold": threshold, "judge": judge_name(c),
                   "rubric_version": t.version, "job": self.ctx.job_id, "round": self.p["round"],
                   "examples": [e[0] for e in examples]}
        meta = s.get("metadata")
        meta = dict(meta) if isinstance(meta, dict) else {}
        meta["curation"] = verdict
        meta["curation_rounds"] = {**(meta.get("curation_rounds") or {}), str(self.p["round"]): verdict}
        return Result(
            judgments=[{"sample_id": s["id"], "judge": judge_name(c), "rubric": t.name, "rubric_version": t.version,
                        "scores": {"curation": score}, "overall": score, "rationale": c.parsed.reason,
                        "raw": c.text}],
            scores=[{"sample_id": s["id"], "rubric": "curate", "score": score, "scale": (1, 5),
                     "judge": judge_name(c), "template_version": t.version}],
            updates=[{"id": s["id"], "metadata": meta}],
            kept=1 if kept else 0, dropped={} if kept else {"below threshold": 1},
            raw=None if kept else c.text, summary={"score": score, "kept": kept})
