"""Task plug-ins used by the worker tests (loaded in worker processes via WORKBENCH_TASK_MODULES=llm_test_tasks).

two-stage: two calls per item (draft, then final), so a crash between them leaves cached drafts behind.
grow:      dynamic items: proposes instructions round by round until `wanted` are kept.
"""
from __future__ import annotations

from workbench.tasks import Item, Param, ParseError, Result, Task, register


class TwoStage(Task):
    name = "two-stage"
    summary = "draft then final answer (test task)"
    template_version = "two-stage/1"

    async def process(self, item, llm):
        draft = await llm.complete([{"role": "user", "content": f"Stage A: {item.sample['instruction']}"}])
        final = await llm.complete([{"role": "user", "content": f"Stage B: {draft.text}"}])
        return Result(samples=[{"instruction": item.sample["instruction"], "response": final.text,
                                "origin": self.ctx.origin(final, draft_model=draft.model)}])


class Grow(Task):
    name = "grow"
    summary = "propose instructions until enough are kept (test task)"
    template_version = "grow/1"
    needs_dataset = False
    params = {"wanted": Param(5, "instructions to keep"), "max_rounds": Param(50, "bound on rounds")}

    def default_into(self):
        return "grown"

    def plan(self, conn):
        return [Item(f"round-{k}", payload={"round": k}) for k in range(2)]

    async def process(self, item, llm):
        c = await llm.complete([{"role": "user", "content": f"Propose instruction, round {item.payload['round']}"}])
        text = c.text.strip()
        if text.startswith("ERR"):
            raise ParseError("proposal not understood", c.text)
        if "dup" in text:
            return Result(dropped={"near-copy": 1}, raw=c.text)
        return Result(samples=[{"instruction": text, "origin": self.ctx.origin(c, round=item.payload["round"])}])

    def more_items(self, conn, progress):
        rounds = progress["total"]
        if progress["kept"] >= self.p["wanted"] or rounds >= self.p["max_rounds"]:
            return []
        return [Item(f"round-{k}", payload={"round": k}) for k in range(rounds, min(rounds + 2, self.p["max_rounds"]))]


ALL = (TwoStage, Grow)
for _cls in ALL:
    register(_cls)
