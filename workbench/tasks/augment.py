"""Augmentation: new wordings of each instruction: back-translation through a pivot language, paraphrase, style
transfer or a persona.

Back-translation translates the instruction into `pivot_language` and back; paraphrase rewords it directly; style
rewrites it in a target `style` (formal, casual or concise; the style is recorded); persona rewrites it as a named
kind of user (`persona`, e.g. "a nurse on a night shift") would ask it. A
variant is kept only if it keeps the meaning — per the judge role ("Equal" / "Not Equal", with `check=judge`) or
per a ROUGE-L bound against the original (`check=similarity`: at least `min_similarity`) — and is not a copy of
the original (ROUGE-L below `max_similarity`). The kept variant is a new row with the original's input and
response, its parent the original, and lineage naming the augmentation (and pivot language).
"""
from __future__ import annotations

from ..parsing import parse_equal, parse_text
from ..similarity import rouge_l
from . import Item, LLM, Param, Result, TaskError, register
from .common import SAMPLING_PARAMS, TemplatedTask

# style -> what it means, told to the rewriter
STYLES = {
    "formal": "formal and courteous, complete sentences, no slang or contractions",
    "casual": "relaxed and conversational, as in a chat with a friend; contractions and everyday words are fine",
    "concise": "as short as it can be while keeping every requirement, detail and piece of data",
}


@register
class Augment(TemplatedTask):
    name = "augment"
    summary = "reword instructions by back-translation through a pivot language and/or paraphrase, meaning checked"
    templates = ("augment-translate", "augment-paraphrase", "augment-equivalence", "augment-style", "augment-persona")
    readers = {"augment-translate": parse_text, "augment-paraphrase": parse_text, "augment-equivalence": parse_equal,
               "augment-style": parse_text, "augment-persona": parse_text}
    params = {
        "method": Param("backtranslation", "backtranslation, paraphrase, both (the first two), style or persona",
                        choices=("backtranslation", "paraphrase", "both", "style", "persona")),
        "style": Param("formal", "with method=style: the target style", choices=tuple(STYLES)),
        "persona": Param("", "with method=persona: who asks (e.g. 'a nurse on a night shift')"),
        "pivot_language": Param("French", "language to translate through"),
        "source_language": Param("English", "language of the instructions (translated back into it)"),
        "check": Param("judge", "how meaning is checked: judge (Equal/Not Equal) or similarity (ROUGE-L bound)",
                       choices=("judge", "similarity")),
        "min_similarity": Param(0.5, "with check=similarity: keep variants with ROUGE-L at least this", type=float),
        "max_similarity": Param(0.95, "drop variants this close to the original (nothing new)", type=float),
        **SAMPLING_PARAMS,
    }

    def validate(self, conn) -> None:
        self.validate_templates()
        if not 0 <= self.p["min_similarity"] <= self.p["max_similarity"] <= 1:
            raise TaskError("params need 0 <= min_similarity <= max_similarity <= 1")
        if not self.p["pivot_language"].strip():
            raise TaskError("param pivot_language is empty")
        if self.p["method"] == "persona" and not self.p["persona"].strip():
            raise TaskError("method=persona needs --param persona='<who asks>', e.g. 'a nurse on a night shift'")

    async def process(self, item: Item, llm: LLM) -> Result:
        s = item.input_sample()
        original = s.get("instruction") or ""
        if not original.strip():
            return Result(dropped={"no instruction": 1})
        methods = ("backtranslation", "paraphrase") if self.p["method"] == "both" else (self.p["method"],)
        rows, dropped = [], {}
        for method in methods:
            variant, used, c = await self.variant(llm, method, original)
            rule = await self.check(llm, original, variant)
            if rule:
                dropped[rule] = dropped.get(rule, 0) + 1
                continue
            extra = {"backtranslation": {"pivot_language": self.p["pivot_language"]}, "style": {"style": self.p["style"]},
                     "persona": {"persona": self.p["persona"]}}.get(method, {})
            rows.append({**{k: s.get(k) for k in ("input", "response", "system", "task_type", "domain",
                                                   "difficulty", "language")},
                         "instruction": variant,
                         "origin": self.origin(c, templates=used, augmentation=method, check=self.p["check"],
                                               similarity=round(rouge_l(original, variant), 4), **extra)})
        return Result(samples=rows, dropped=dropped)

    async def variant(self, llm: LLM, method: str, text: str):
        """(new wording, templates used, last completion)."""
        if method == "paraphrase":
            c = await llm.complete(self.template("augment-paraphrase").render(text=text), params=self.sampling(),
                                   validate=self.reader("augment-paraphrase"))
            return c.parsed, ("augment-paraphrase", "augment-equivalence"), c
        if method == "style":
            style = self.p["style"]
            c = await llm.complete(self.template("augment-style").render(text=text, style=style,
                                                                         style_rule=STYLES[style]),
                                   params=self.sampling(), validate=self.reader("augment-style"))
            return c.parsed, ("augment-style", "augment-equivalence"), c
        if method == "persona":
            c = await llm.complete(self.template("augment-persona").render(text=text, persona=self.p["persona"]),
                                   params=self.sampling(), validate=self.reader("augment-persona"))
            return c.parsed, ("augment-persona", "augment-equivalence"), c
        t = self.template("augment-translate")
        there = await llm.complete(t.render(text=text, language=self.p["pivot_language"]), params=self.sampling(),
                                   validate=self.reader(t.name))
        back = await llm.complete(t.render(text=there.parsed, language=self.p["source_language"]),
                                  params=self.sampling(), validate=self.reader(t.name))
        return back.parsed, ("augment-translate", "augment-equivalence"), back

    async def check(self, llm: LLM, original: str, variant: str) -> str | None:
        """The rule a variant breaks, or None to keep it."""
        sim = rouge_l(original, variant)
        if variant.strip() == original.strip() or sim >= self.p["max_similarity"]:
            return "unchanged"
        if self.p["check"] == "similarity":
            return None if sim >= self.p["min_similarity"] else "meaning changed"
        eq = await llm.complete(self.template("augment-equivalence").render(original=original, rewritten=variant),
                                role="judge", params={"temperature": 0},
                                validate=self.reader("augment-equivalence"))
        return None if eq.parsed else "meaning changed"
