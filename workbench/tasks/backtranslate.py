"""Instruction backtranslation, self-augmentation (Li et al. 2023): for each unlabeled text segment, generate the
instruction it best answers. The segment becomes the response unchanged, byte for byte.

Input rows are segments with no instruction and the text in `response` (what `workbench import FILE --format
text` or a `text` column produces). The paper fine-tunes a backward model on seed pairs; here a prompted model plays
that role, optionally shown a few seed pairs in reverse (answer first, then its request) from `seed_dataset` —
for instance pairs a previous round's `curate` kept (`seed_min_score=curate=4.5`: a rubric's score, see
workbench/scores.py). Curate the output next.

Rounds: with `round=k` (k > 1) the examples are the pairs of `seed_dataset` that curate round k-1 kept at its
threshold (`metadata.curation_rounds`), so round k's backward prompts learn from round k-1's curated pairs. Every
output row records its `round` in its lineage (round 1 by default).
"""
from __future__ import annotations

from .. import scores
from ..parsing import parse_text
from ..store import get_dataset
from . import Item, LLM, Param, Result, TaskError, item_rng, register
from .common import TemplatedTask
from .curate import kept_in_round

# Examples are shown in the prompt up to this many characters of their answer.
EXAMPLE_MAX_CHARS = 1500


@register
class Backtranslate(TemplatedTask):
    name = "backtranslate"
    summary = "self-augmentation: write the instruction each unlabeled text answers (the text is the response)"
    templates = ("backtranslate",)
    readers = {"backtranslate": parse_text}
    params = {
        "seed_dataset": Param("", "dataset of (instruction, response) pairs to show as examples (empty: none)"),
        "num_examples": Param(3, "seed pairs shown per prompt"),
        "seed_min_score": Param(None, "only seed pairs with at least this score on a rubric, RUBRIC=N "
                                      "(e.g. curate=4.5)", type=str),
        "seed": Param(42, "random seed for the choice of examples (per segment, stable across resumes)"),
        "round": Param(1, "Humpback round: k > 1 shows seed_dataset's pairs that curate round k-1 kept"),
        "min_chars": Param(0, "skip segments shorter than this many characters (0: no limit)"),
        "max_chars": Param(0, "skip segments longer than this many characters (0: no limit)"),
        "min_instruction_chars": Param(10, "drop generated instructions shorter than this"),
        "max_instruction_chars": Param(800, "drop generated instructions longer than this"),
        "temperature": Param(0.7, "sampling temperature (the paper: 0.7)", type=float),
        "top_p": Param(0.9, "nucleus sampling (the paper: 0.9)", type=float),
        "max_tokens": Param(None, "reply length cap (default: the endpoint's)", type=int),
    }

    def validate(self, conn) -> None:
        self.validate_templates()
        if self.p["seed_dataset"] and get_dataset(conn, self.p["seed_dataset"]) is None:
            raise TaskError(f"param seed_dataset: no dataset named {self.p['seed_dataset']!r}")
        if self.p["num_examples"] < 0:
            raise TaskError("param num_examples must be >= 0")
        if self.p["round"] < 1:
            raise TaskError("param round must be at least 1")
        if self.p["round"] > 1:
            if not self.p["seed_dataset"]:
                raise TaskError(f"round {self.p['round']} takes its examples from curated pairs: give "
                                "--param seed_dataset=<the dataset curate ran on>")
            ds = get_dataset(conn, self.p["seed_dataset"])
            if self.p["num_examples"] and not kept_in_round(conn, ds[0], self.p["round"] - 1, limit=1):
                raise TaskError(f"round {self.p['round']}: no pair of {self.p['seed_dataset']!r} was kept by curate "
                                f"round {self.p['round'] - 1}")
        if self.p["seed_min_score"] is not None:
            seed_ds = get_dataset(conn, self.p["seed_dataset"]) if self.p["seed_dataset"] else None
            try:
                scores.resolve(conn, self.p["seed_min_score"], dataset_id=seed_ds[0] if seed_ds else None)
            except scores.ScoreFilterError as e:
                raise TaskError(f"param seed_min_score: {e}") from None

    def load(self, conn) -> None:
        self.seeds: list[tuple[int, str, str]] = []
        name = self.p["seed_dataset"]
        if not name or not self.p["num_examples"]:
            return
        row = get_dataset(conn, name)
        if row is None:
            raise TaskError(f"param seed_dataset: no dataset named {name!r}")
        if self.p["round"] > 1:
            self.seeds = kept_in_round(conn, row[0], self.p["round"] - 1)
            return
        sql = ("SELECT id, instruction, substr(response, 1, ?) FROM samples WHERE dataset_id = ? "
               "AND trim(instruction) != '' AND trim(response) != '' AND status != 'rejected'")
        args: list = [EXAMPLE_MAX_CHARS, row[0]]
        if self.p["seed_min_score"] is not None:
            try:
                cond, cargs = scores.build(self.p["seed_min_score"]).sql("samples.id")
            except scores.ScoreFilterError as e:
                raise TaskError(f"param seed_min_score: {e}") from None
            sql += f" AND {cond}"
            args += cargs
        self.seeds = [tuple(r) for r in conn.execute(sql + " ORDER BY id", args)]

    def examples_for(self, sample_id: int) -> list[tuple[int, str, str]]:
        k = min(self.p["num_examples"], len(self.seeds))
        if not k:
            return []
        return item_rng(self.p["seed"], sample_id).sample(self.seeds, k)

    async def process(self, item: Item, llm: LLM) -> Result:
        s = item.input_sample()
        text = s.get("response") or ""
        if (s.get("instruction") or "").strip():
            return Result(dropped={"already has an instruction": 1})
        if not text.strip():
            return Result(dropped={"empty text": 1})
        if self.p["min_chars"] and len(text) < self.p["min_chars"]:
            return Result(dropped={"segment too short": 1})
        if self.p["max_chars"] and len(text) > self.p["max_chars"]:
            return Result(dropped={"segment too long": 1})
        examples = self.examples_for(s["id"])
        shown = "\n\n".join(f"Answer:\n<<<\n{resp}\n>>>\nRequest: {inst}" for _, inst, resp in examples)
        messages = self.template("backtranslate").render(text=text, examples=shown)
        c = await llm.complete(messages, params=self.sampling("temperature", "top_p", "max_tokens"),
                               validate=self.reader("backtranslate"))
        instruction = c.parsed
        if not self.p["min_instruction_chars"] <= len(instruction) <= self.p["max_instruction_chars"]:
            return Result(dropped={"instruction length": 1}, raw=c.text)
        row = {"instruction": instruction, "input": "", "response": text,   # the segment itself, untouched
               "language": s.get("language"),
               "origin": self.origin(c, method="self-augmentation", seed_examples=[e[0] for e in examples],
                                     round=self.p["round"])}
        return Result(samples=[row], summary={"instruction_chars": len(instruction)})
