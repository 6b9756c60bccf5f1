"""The Task interface: what a job kind implements (plan, load, process, write) and the values it passes around
(Item, Result, TaskContext). How a job runs is described in workbench/tasks/__init__.py."""
from __future__ import annotations

import hashlib
import random
import sqlite3
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from ..filters import iter_filtered
from ..llm import Completion, LLM
from .params import Param, TaskError  # noqa: F401  (re-exported)
from .writes import write_result


@dataclass
class Item:
    """One unit of work. `key` is unique within the job; `payload` is any JSON the task wants back later.

    In `process`, `id` is the job_items row id, `sample` the input sample (decoded, or None) and `attempts`
    how many times it has been tried before.
    """
    key: str
    sample_id: int | None = None
    payload: Any = None
    id: int | None = None
    sample: dict | None = None
    attempts: int = 0

    def input_sample(self) -> dict:
        """The input sample; a TaskError (the item fails) if it was deleted after the job was queued."""
        if self.sample is None:
            raise TaskError(f"sample {self.sample_id} no longer exists")
        return self.sample


@dataclass
class Result:
    """What one item produced; written by `Task.write` in the same transaction as the item's status.

    samples:    new sample dicts for the job's target dataset (`samples.insert_samples` fields); parent_id defaults
                to the item's sample, job_id to the job, origin should come from `ctx.origin(...)`.
    candidates: {sample_id | sample_ref, model, endpoint, response}; `sample_ref: i` means `samples[i]` above.
    judgments:  {sample_id | sample_ref, candidate_id | candidate_ref, judge, rubric, rubric_version, scores (dict),
                overall, rationale, raw}: the full record (raw reply, rationale), kept for every judgment.
    scores:     {sample_id | sample_ref, rubric, score, scale: (lo, hi), judge, template_version}: the sample's
                latest score on that rubric (workbench/scores.py); every scoring task writes one per rubric.
    updates:    {"id": sample_id, field: value} for fields in UPDATABLE (labels, metadata).
    kept:       outputs kept (default: len(samples)); dropped: {rule: count} of outputs rejected by a rule.
    raw:        reply text to keep on the item row (useful for dropped items).
    summary:    small JSON stored in job_items.result.
    new_items:  further items to run in this job (dynamic tasks).
    """
    samples: list[dict] = field(default_factory=list)
    candidates: list[dict] = field(default_factory=list)
    judgments: list[dict] = field(default_factory=list)
    scores: list[dict] = field(default_factory=list)
    updates: list[dict] = field(default_factory=list)
    kept: int | None = None
    dropped: dict[str, int] = field(default_factory=dict)
    raw: str | None = None
    summary: dict | None = None
    new_items: list[Item] = field(default_factory=list)

    @property
    def kept_count(self) -> int:
        return len(self.samples) if self.kept is None else self.kept


# --- the context a task runs in --------------------------------------------------------------------

@dataclass
class TaskContext:
    """Everything about the job a task needs; the same object at queue time and in the worker."""
    task: str
    params: dict[str, Any]
    job_id: int | None = None
    dataset: str | None = None
    dataset_id: int | None = None
    into: str | None = None
    into_id: int | None = None
    filter: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    template_version: str = ""

    def input_samples(self, conn: sqlite3.Connection) -> Iterator[dict]:
        """The input dataset's samples that pass the job's filter, in id order."""
        if self.dataset_id is None:
            return iter(())
        return iter_filtered(conn, self.dataset_id, self.filter)

    def origin(self, completion: Completion | None = None, **extra) -> dict:
        o = {"task": self.task, "template_version": self.template_version,
             "params": {k: v for k, v in self.params.items() if v is not None}}
        if completion is not None:
            o.update(endpoint=completion.endpoint, model=completion.model)
        o.update(extra)
        return o


def item_rng(*parts) -> random.Random:
    """A random generator fixed by (seed, sample id, round, ...): the same choices on every resume."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


# --- the interface ------------------------------------------------------------------------------------

class Task:
    """Base class of every job kind. Subclass, set the class attributes, implement plan/process."""
    name: str = ""                   # registry key and `jobs.kind`
    summary: str = ""                # one line for `workbench run --help` and the launch dialog
    template_version: str = ""       # recorded in lineage; bump when the prompt changes
    params: dict[str, Param] = {}    # declared parameters with defaults
    needs_dataset: bool = True       # --dataset required
    writes_samples: bool = True      # creates the --into dataset (default "<dataset>-<name>")
    into_kind: str = "sft"           # kind of the --into dataset
    roles: tuple[str, ...] = ("generate",)   # LLM roles used; "judge" makes --judge meaningful
    max_attempts: int = 1            # process() tries per run before the item is marked failed

    def __init__(self, ctx: TaskContext):
        self.ctx = ctx
        self.p = ctx.params

    def default_into(self) -> str | None:
        return f"{self.ctx.dataset}-{self.name}" if self.writes_samples and self.ctx.dataset else None

    def validate(self, conn: sqlite3.Connection) -> None:
        """At queue time: raise TaskError for unusable params or inputs (before anything is written)."""

    def plan(self, conn: sqlite3.Connection) -> Iterable[Item]:
        """The job's initial items (default: one per filtered input sample, key "s:<id>")."""
        for s in self.ctx.input_samples(conn):
            yield Item(key=f"s:{s['id']}", sample_id=s["id"])

    def load(self, conn: sqlite3.Connection) -> None:
        """In the worker, once before items run (and again after a takeover)."""

    async def process(self, item: Item, llm: LLM) -> Result:
        raise NotImplementedError

    def candidate_sources(self, conn: sqlite3.Connection, generators: list) -> list[tuple[str | None, str]] | None:
        """(endpoint, model) of whatever the job's judge will rate, when the judge rates generated candidates
        (queue_job then refuses a judge among them: no self-judging); None for tasks whose judge rates no
        candidates of its own making. `generators` are the endpoints of the job's generator pool."""
        return None

    def more_items(self, conn: sqlite3.Connection, progress: dict) -> list[Item]:
        """Called when nothing is pending or in flight; return new items to continue, [] to finish."""
        return []

    def write(self, conn: sqlite3.Connection, item: Item, result: Result) -> dict:
        """Inside the batch transaction: store the item's outputs. Returns the JSON summary for job_items.result."""
        return write_result(conn, self.ctx, item, result)
