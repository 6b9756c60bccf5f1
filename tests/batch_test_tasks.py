"""A task plug-in for the batch backend's restart tests (loaded in worker processes via WORKBENCH_TASK_MODULES).

stall: one call per item; with $BATCH_STALL="Question N", the item whose reply ends with it sleeps for an hour
       after its reply arrived, i.e. while the worker ingests a downloaded batch (a kill there is "after the
       download, before (or partway through) the ingestion").
"""
from __future__ import annotations

import asyncio
import os

from workbench.tasks import Result, Task, register


class Stall(Task):
    name = "stall"
    summary = "answer each instruction; stalls while ingesting when $BATCH_STALL is set (test task)"
    template_version = "stall/1"

    async def process(self, item, llm):
        c = await llm.complete([{"role": "user", "content": item.input_sample()["instruction"]}])
        if os.environ.get("BATCH_STALL") and c.text.endswith(" " + os.environ["BATCH_STALL"]):
            await asyncio.sleep(3600)
        return Result(samples=[{"instruction": item.sample["instruction"], "response": c.text,
                                "origin": self.ctx.origin(c)}])


ALL = (Stall,)
for _cls in ALL:
    register(_cls)
