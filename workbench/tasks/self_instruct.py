"""Self-Instruct (Wang et al. 2022): grow new instructions from seed tasks, reject near-copies, then answer them.

Every round shows the model 8 instructions (6 human seeds + 2 generated in this job, once there are some; all
human before that), shuffled and numbered, and asks it to continue the list. Each proposed instruction is
dropped, and the rule counted, if it is too short (<= 3 words) or too long (> 150), asks for something a text
model cannot do (image, picture, graph, file, map, draw, plot, go to), starts with "Write a program", with
punctuation or with a non-ASCII character, was cut off by max_tokens, or has a ROUGE-L F1 >= the similarity
threshold with any instruction already in the pool (the seeds, the target dataset, and everything kept so far in
this run). Each kept instruction is then sorted, as in the paper, by asking the model whether it is a classification
task (a one-word Yes/No reply; anything else is an item error for that instruction, never a guess). It then gets
`instances_per_instruction` instances: an input (empty when the task needs none) and its output, written input-first
for open tasks and output-first (label, then an input with that label) for classification tasks, so labels do not all
follow the inputs' most obvious reading. Instances are sampled at the task's `temperature`, each call salted with its
index, so several instances of one instruction differ (a temperature of 0 would repeat one instance). An instance is
dropped, and the rule counted, when its output is empty, its input equals its output, either ends with ":", it
repeats another instance of the same instruction, or it shares its input with one that has a different output (all
of those are dropped). Each kept instance is one row: instruction, input and output, with `is_classification` and the
instance order in its lineage.

Rounds run in waves of `rounds_in_flight`; the generated examples a round may show are those kept in earlier
waves, and the sample is drawn from (seed, job, round), so a resumed job shows the same examples again.
"""
from __future__ import annotations

import asyncio
import re

from ..llm import LLMError
from ..parsing import ParseError, instance_schema, parse_instance, parse_numbered_list, parse_yes_no
from ..similarity import RougePool
from . import Item, LLM, Param, Result, TaskError, item_rng, register
from .common import TemplatedTask, add_drop, word_count

UNSUPPORTED = re.compile(r"\b(images?|graphs?|pictures?|files?|maps?|draw|plot|go to)\b", re.I)


def drop_rule(instruction: str, min_words: int, max_words: int) -> str | None:
    """The first Self-Instruct filter an instruction fails (before the similarity check), or None."""
    n = word_count(instruction)
    if n < min_words:
        return "too short"
    if n > max_words:
        return "too long"
    if UNSUPPORTED.search(instruction):
        return "needs more than text"
    if instruction.lower().startswith("write a program"):
        return "write a program"
    if not instruction[0].isalnum():
        return "starts with punctuation" if instruction[0].isascii() else "starts with non-ASCII"
    if not instruction[0].isascii():
        return "starts with non-ASCII"
    return None


def instance_drop_rule(given_input: str, output: str) -> str | None:
    """The first Self-Instruct instance filter an (input, output) pair fails, or None."""
    if not output:
        return "instance without output"
    if given_input == output:
        return "input equals output"
    if given_input.endswith(":") or output.endswith(":"):
        return "instance ends with ':'"
    return None


def clean_example(instruction: str) -> str:
    return " ".join(instruction.split()).rstrip(":")


@register
class SelfInstruct(TemplatedTask):
    name = "self-instruct"
    summary = "new instructions from seed tasks (8 in context: 6 human + 2 generated), near-copies rejected"
    templates = ("self-instruct", "self-instruct-instance", "self-instruct-classify")
    readers = {"self-instruct": parse_numbered_list, "self-instruct-instance": parse_instance,
               "self-instruct-classify": parse_yes_no}
    params = {
        "num_instructions": Param(100, "how many new instructions to keep"),
        "seeds_per_prompt": Param(8, "instructions shown in each prompt"),
        "machine_per_prompt": Param(2, "of those, how many generated ones (once available)"),
        "similarity_threshold": Param(0.7, "reject an instruction whose ROUGE-L with any pool instruction is >= this",
                                      type=float),
        "min_words": Param(4, "drop instructions with fewer words"),
        "max_words": Param(150, "drop instructions with more words"),
        "generate_responses": Param(True, "write instances (input and output) for each kept instruction"),
        "instances_per_instruction": Param(1, "instances written per kept instruction (one row each)"),
        "identify_classification": Param(True, "ask per kept instruction whether it is a classification task "
                                               "(else: every instruction is one exactly when `classification`)"),
        "rounds_in_flight": Param(8, "rounds run concurrently (one wave)"),
        "max_rounds": Param(0, "give up after this many rounds (0: 10 + 2 x num_instructions)"),
        "classification": Param(False, "ask for classification tasks (with their output labels) in each round"),
        "seed": Param(42, "random seed for the choice of in-context examples per round"),
        "temperature": Param(0.7, "sampling temperature for new instructions and their instances (the paper: 0.7)",
                             type=float),
        "top_p": Param(0.5, "nucleus sampling for new instructions (the paper: 0.5)", type=float),
        "max_tokens": Param(1024, "reply cap for new instructions (the paper: 1024)", type=int),
    }
    needs_dataset = True

    @property
    def max_rounds(self) -> int:
        return self.p["max_rounds"] or 10 + 2 * self.p["num_instructions"]

    def validate(self, conn) -> None:
        self.validate_templates()
        p = self.p
        if min(p["num_instructions"], p["seeds_per_prompt"], p["rounds_in_flight"], p["instances_per_instruction"]) < 1:
            raise TaskError("params num_instructions, seeds_per_prompt, rounds_in_flight and instances_per_instruction "
                            "must be at least 1")
        if not 0 <= p["machine_per_prompt"] <= p["seeds_per_prompt"]:
            raise TaskError("param machine_per_prompt must be between 0 and seeds_per_prompt")
        if p["generate_responses"] and p["instances_per_instruction"] > 1 and not p["temperature"]:
            raise TaskError("several instances per instruction need a temperature above 0 (at 0 they repeat)")
        if not 0 < p["similarity_threshold"] <= 1:
            raise TaskError("param similarity_threshold must be in (0, 1]")
        if not any((s.get("instruction") or "").strip() for s in self.ctx.input_samples(conn)):
            raise TaskError(f"dataset {self.ctx.dataset!r} has no instructions to use as seeds")

    def plan(self, conn):
        return self.wave(0)

    def wave(self, start: int) -> list[Item]:
        end = min(start + self.p["rounds_in_flight"], self.max_rounds)
        return [Item(key=f"round-{r}", payload={"round": r}) for r in range(start, end)]

    def load(self, conn) -> None:
        self.humans = [(s["id"], s["instruction"]) for s in self.ctx.input_samples(conn)
                       if (s.get("instruction") or "").strip()]
        self.pool = RougePool(inst for _, inst in self.humans)
        if self.ctx.into_id is not None:
            for (inst,) in conn.execute("SELECT instruction FROM samples WHERE dataset_id = ?", (self.ctx.into_id,)):
                self.pool.add(inst)
        self.load_machine(conn)

    def load_machine(self, conn) -> None:
        """(round, instruction, first sample id) of every instruction this job kept, for in-context examples
        (an instruction with several instances has several rows; it counts once)."""
        self.machine = sorted(
            (r or 0, inst, sid) for sid, inst, r in conn.execute(
                "SELECT min(id), instruction, json_extract(origin, '$.round') FROM samples WHERE job_id = ? "
                "AND dataset_id = ? GROUP BY instruction", (self.ctx.job_id, self.ctx.into_id)))
        self.accepted = len(self.machine)

    def more_items(self, conn, progress: dict) -> list[Item]:
        self.load_machine(conn)     # the wave just committed: its rows now have ids
        if self.accepted >= self.p["num_instructions"]:
            return []
        keys = conn.execute("SELECT key FROM job_items WHERE job_id = ? AND key LIKE 'round-%'",
                            (self.ctx.job_id,)).fetchall()
        nxt = 1 + max((int(k[0].split("-", 1)[1]) for k in keys), default=-1)
        return self.wave(nxt) if nxt < self.max_rounds else []

    def examples(self, round_: int) -> tuple[list[str], list[int]]:
        """The in-context instructions of a round and the sample ids they came from."""
        p = self.p
        rng = item_rng(p["seed"], self.ctx.job_id, round_)
        wave_start = round_ - round_ % p["rounds_in_flight"]
        generated = [(inst, sid) for r, inst, sid in self.machine if r < wave_start]
        picked = rng.sample(generated, min(p["machine_per_prompt"], len(generated)))
        humans = [(inst, sid) for sid, inst in self.humans]
        picked += rng.sample(humans, min(p["seeds_per_prompt"] - len(picked), len(humans)))
        rng.shuffle(picked)
        return [clean_example(i) for i, _ in picked], [sid for _, sid in picked]

    async def process(self, item: Item, llm: LLM) -> Result:
        p = self.p
        round_ = int(item.payload["round"])
        shown, shown_ids = self.examples(round_)
        listing = "\n".join(f"{i}. {inst}" for i, inst in enumerate(shown, start=1))
        t = self.template("self-instruct")
        messages = t.render(examples=listing, next_number=len(shown) + 1,
                            classification="yes" if p["classification"] else "")
        c = await llm.complete(messages, params=self.sampling("temperature", "top_p", "max_tokens"),
                               allow_truncated=True, validate=self.reader("self-instruct"))
        proposed = list(c.parsed)
        dropped: dict[str, int] = {}
        if c.finish_reason == "length" and proposed:
            proposed.pop()                  # the last item was cut off mid-sentence
            add_drop(dropped, "cut off")
        accepted = []                       # (instruction, similarity, pool index)
        for inst in proposed:
            rule = drop_rule(inst, p["min_words"], p["max_words"])
            if rule is None:
                score, _ = self.pool.nearest(inst, stop_at=p["similarity_threshold"])
                if score >= p["similarity_threshold"]:
                    rule = "too similar"
                elif self.accepted >= p["num_instructions"]:
                    rule = "enough already"
            if rule:
                add_drop(dropped, rule)
                continue
            # claim it now (no await since the check), so concurrent rounds compare against it too
            self.pool.add(inst)
            self.accepted += 1
            accepted.append((inst, round(score, 4), len(self.pool) - 1))
        made = await asyncio.gather(*(self.instances(llm, a[0]) for a in accepted)) if p["generate_responses"] \
            else [(None, [None], {}, []) for _ in accepted]
        rows, errors, kept_instructions = [], [], 0
        for (inst, score, idx), (is_clf, instances, inst_dropped, inst_errors) in zip(accepted, made):
            for rule, n in inst_dropped.items():
                add_drop(dropped, rule, n)
            errors += [f"{inst[:60]}: {e}" for e in inst_errors]
            if not instances:
                self.pool.discard(idx)      # never written: stop it blocking others
                self.accepted -= 1
                continue
            kept_instructions += 1
            for k, reply in enumerate(instances):
                given_input, output = reply.parsed if reply else ("", "")
                extra = {} if reply is None else {
                    "is_classification": is_clf, "instance": k,
                    "instance_order": "output-first" if is_clf else "input-first"}
                rows.append({"instruction": inst, "input": given_input, "response": output,
                             "origin": self.origin(c, round=round_, similarity=score, examples=shown_ids,
                                                   responder=reply.model if reply else None, **extra)})
        summary = {"proposed": len(c.parsed), "kept": kept_instructions, "rows": len(rows)}
        if errors:
            summary["errors"] = errors
        return Result(samples=rows, dropped=dropped, summary=summary, raw=None if rows else c.text)

    async def is_classification(self, llm: LLM, instruction: str) -> bool:
        """The model's one-word verdict (the paper asks the generator too); deterministic, so asked at T=0."""
        c = await llm.complete(self.template("self-instruct-classify").render(instruction=instruction),
                               params={"temperature": 0}, validate=self.reader("self-instruct-classify"))
        return c.parsed

    async def instances(self, llm: LLM, instruction: str) -> tuple[bool | None, list, dict, list[str]]:
        """(is_classification, kept instance Completions (.parsed = (input, output)), {drop rule: n}, errors).

        An instruction whose classification reply cannot be read gets no instances (counted, the raw kept in errors).
        """
        p = self.p
        dropped: dict[str, int] = {}
        try:
            is_clf = await self.is_classification(llm, instruction) if p["identify_classification"] \
                else bool(p["classification"])
        except (ParseError, LLMError) as e:
            add_drop(dropped, "classification unreadable")
            return None, [], dropped, [f"classification: {e}" + (f" (reply: {e.raw[:200]!r})"
                                                                   if getattr(e, "raw", None) else "")]
        t = self.template("self-instruct-instance")
        messages = t.render(instruction=instruction, classification="yes" if is_clf else "",
                            open="" if is_clf else "yes")

        async def one(k: int):
            try:
                # salted per index: k identical prompts must not collapse into one cached reply
                return await llm.complete(messages, json=True, schema=instance_schema(bool(is_clf)),
                                          validate=self.reader("self-instruct-instance"), salt=k or None,
                                          params={"temperature": p["temperature"]})
            except (ParseError, LLMError) as e:
                return e
        replies = await asyncio.gather(*(one(k) for k in range(p["instances_per_instruction"])))
        errors, good = [], []
        for reply in replies:
            rule = "instance failed" if isinstance(reply, Exception) else instance_drop_rule(*reply.parsed)
            if rule:
                add_drop(dropped, rule)
                if isinstance(reply, Exception):
                    errors.append(str(reply))
                continue
            if any(g.parsed == reply.parsed for g in good):
                add_drop(dropped, "duplicate instance")
                continue
            good.append(reply)
        # the same input with different outputs: the task is ill-posed for that input, drop every one of them
        outputs: dict[str, set] = {}
        for g in good:
            outputs.setdefault(g.parsed[0], set()).add(g.parsed[1])
        clash = {i for i, outs in outputs.items() if len(outs) > 1}
        if clash:
            add_drop(dropped, "same input, different outputs", sum(g.parsed[0] in clash for g in good))
            good = [g for g in good if g.parsed[0] not in clash]
        return is_clf, good, dropped, errors
