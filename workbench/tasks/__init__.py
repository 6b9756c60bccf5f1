"""The Task interface and registry: every LLM job kind is a Task subclass registered in TASKS.

How a job runs (workbench/jobs.py queues it, workbench/worker.py runs it):

1. Queue (CLI `workbench run TASK ...` or the TUI launch dialog), inside one transaction:
   `task = TaskClass(ctx)`; `task.plan(conn)` yields `Item`s -> one `job_items` row each (status pending).
   Keys must be deterministic and unique within the job ("s:123", "s:123:r2", "round-4", ...): a resumed job
   re-runs exactly the rows still pending and never adds a key twice (INSERT OR IGNORE).
2. Run (a `workbench worker` process; after a crash another worker takes the job over):
   `task.load(conn)` once (read anything the task needs in memory: seed pool, existing instructions, ...),
   then for every pending item, many concurrently on one asyncio loop:
   `result = await task.process(item, llm)`; the worker commits results in small batches, each item's outputs
   together with its status, in one transaction via `task.write(conn, item, result)` (tasks that keep the
   default write have a whole batch written by `write_results`, one duplicate check per batch; override
   `write` only for outputs the default cannot express).
   - `llm.complete(messages, ...)` makes one call through the job's generator pool (least busy endpoint first);
     `llm.each(messages, ...)` asks every model of the pool once (preference data); `role="judge"` uses the
     job's judge endpoint/pool (`--judge NAME`, falling back to the generator pool). Calls are cached in
     `llm_cache` (an identical request is never paid twice, so a resumed item re-costs nothing), retried on
     429/5xx/timeouts, and counted in the job's tokens and cost.
   - Pass `validate=fn` to `complete`: fn(text) returns the parsed value (Completion.parsed) or raises
     `ParseError(message, raw)`; an unparseable reply is not cached and is retried `parse_retries` times, then the
     ParseError propagates. Any exception out of `process` marks the item failed with its message; a ParseError
     also keeps the raw reply (shown in the Jobs screen). Never substitute a default score for a parse failure.
   - Random choices derive from `item_rng(seed, *parts)` (e.g. seed, sample id, round), never from batch order.
3. Dynamic items: return `Result(new_items=[...])` to add items as you go, and/or override `more_items(conn,
   progress)`, which the worker calls whenever no pending item is left and nothing is in flight (it sees the
   job's committed counts, e.g. `progress['kept']`); return [] to end the job. Self-Instruct: plan
   "round-0".."round-7", and in more_items add "round-8".. while kept < wanted and rounds < a bound.
4. The job summary adds up every item's `kept` and `dropped` ({rule: count}); items that produced nothing kept
   but dropped something get status 'dropped' (their raw reply kept if Result.raw is set).

Lineage: `ctx.origin(completion, **extra)` gives {task, endpoint, model, params, template_version, ...} for the
`origin` column; the default `write` fills parent_id (the item's sample), job_id and origin on new samples.

Registering a task: subclass Task in any module of this package (workbench/tasks/<name>.py) and decorate it
with `@register`; every module here is imported by `load_tasks()` (and any module named in
$WORKBENCH_TASK_MODULES, for tasks kept outside the package). The CLI (`workbench run TASK --help`) and the TUI
launch dialog list its params.
"""
from __future__ import annotations

import hashlib
import importlib
import os
import pkgutil
import random
import sqlite3
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import orjson

from ..llm import Completion, LLM, ParseError  # noqa: F401  (re-exported for task modules)
from ..samples import insert_samples
from ..scores import record as record_score
from ..store import now

TASK_MODULES = ["workbench.tasks.generate"]

TASKS: dict[str, type["Task"]] = {}


class TaskError(ValueError):
    """A user-fixable problem with a task's parameters or inputs (the CLI prints it, exit 2)."""


# --- parameters ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Param:
    """One declared task parameter. The type comes from `type`, else from the default's type."""
    default: Any
    help: str = ""
    type: type | None = None
    choices: tuple | None = None

    @property
    def kind(self) -> type:
        return self.type or (type(self.default) if self.default is not None else str)


def parse_value(text: str) -> Any:
    """`--param k=v` value as int, float, bool, None or str (in that order of preference)."""
    low = text.strip().lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low in ("none", "null"):
        return None
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def coerce(name: str, spec: Param, value: Any) -> Any:
    kind = spec.kind
    if value is None:
        out = None
    elif kind is bool:
        if isinstance(value, str):
            value = parse_value(value)
        if not isinstance(value, bool):
            raise TaskError(f"param {name}: expected true/false, got {value!r}")
        out = value
    elif kind in (int, float):
        if isinstance(value, str):
            value = parse_value(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
            raise TaskError(f"param {name}: expected {kind.__name__}, got {value!r}")
        out = kind(value)
    elif kind is str:
        out = str(value)
    else:
        out = value
    if spec.choices and out not in spec.choices:
        raise TaskError(f"param {name}: {out!r} is not one of {', '.join(map(str, spec.choices))}")
    return out


def resolve_params(task_cls: type["Task"], given: dict[str, Any]) -> dict[str, Any]:
    """Declared defaults overlaid with the given values, each coerced to its declared type."""
    unknown = sorted(set(given) - set(task_cls.params))
    if unknown:
        valid = ", ".join(f"{k} (default {v.default!r})" for k, v in task_cls.params.items()) or "none"
        raise TaskError(f"unknown param {', '.join(unknown)} for task {task_cls.name}; valid params: {valid}")
    out = {}
    for k, spec in task_cls.params.items():
        out[k] = coerce(k, spec, given[k]) if k in given else spec.default
    return out


def params_help(task_cls: type["Task"]) -> str:
    lines = [f"  {k} = {v.default!r}" + (f"  ({v.help})" if v.help else "") for k, v in task_cls.params.items()]
    return "\n".join(lines) or "  (none)"


# --- items and results ------------------------------------------------------------------------------

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


UPDATABLE = ("task_type", "domain", "difficulty", "language", "metadata")   # scores: Result.scores


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
        from ..jobs import iter_filtered  # late: jobs imports this module
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

    def more_items(self, conn: sqlite3.Connection, progress: dict) -> list[Item]:
        """Called when nothing is pending or in flight; return new items to continue, [] to finish."""
        return []

    def write(self, conn: sqlite3.Connection, item: Item, result: Result) -> dict:
        """Inside the batch transaction: store the item's outputs. Returns the JSON summary for job_items.result."""
        return write_result(conn, self.ctx, item, result)


def write_result(conn: sqlite3.Connection, ctx: TaskContext, item: Item, result: Result) -> dict:
    return write_results(conn, ctx, [(item, result)])[0]


def write_results(conn: sqlite3.Connection, ctx: TaskContext, pairs: list[tuple[Item, Result]]) -> list[dict]:
    """The default write for several items at once: all their new samples in one `insert_samples` call (its
    duplicate flagging runs once per batch, not once per item), then each item's candidates, judgments, updates."""
    rows = []
    for item, result in pairs:
        if result.samples and ctx.into_id is None:
            raise TaskError(f"task {ctx.task} produced samples but the job has no target dataset")
        for s in result.samples:
            s = dict(s)
            s.setdefault("parent_id", item.sample_id)
            s.setdefault("job_id", ctx.job_id)
            s.setdefault("origin", ctx.origin())
            rows.append(s)
    first = insert_samples(conn, ctx.into_id, rows)[0] if rows else 0
    out, pos = [], first
    for item, result in pairs:
        n = len(result.samples)
        out.append(_write_links(conn, ctx, item, result, list(range(pos, pos + n))))
        pos += n
    return out


def _write_links(conn: sqlite3.Connection, ctx: TaskContext, item: Item, result: Result, sample_ids: list[int]) -> dict:
    ts = now()

    def target(d: dict) -> int | None:
        if "sample_ref" in d:
            return sample_ids[d["sample_ref"]]
        return d.get("sample_id", item.sample_id)

    cand_ids: list[int] = []
    for c in result.candidates:
        cand_ids.append(conn.execute(
            "INSERT INTO candidates (sample_id, model, endpoint, response, job_id, created_at) VALUES (?,?,?,?,?,?)",
            (target(c), c["model"], c.get("endpoint"), c["response"], ctx.job_id, ts)).lastrowid)
    judgment_ids = []
    for j in result.judgments:
        cid = cand_ids[j["candidate_ref"]] if "candidate_ref" in j else j.get("candidate_id")
        sid = target(j)
        judgment_ids.append(conn.execute(
            "INSERT INTO judgments (sample_id, candidate_id, judge, rubric, rubric_version, scores, overall, "
            "rationale, raw, job_id, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (sid, cid, j["judge"], j["rubric"], j["rubric_version"], _json(j.get("scores")), j.get("overall"),
             j.get("rationale"), j.get("raw"), ctx.job_id, ts)).lastrowid)
    for sc in result.scores:
        record_score(conn, target(sc), sc["rubric"], sc["score"], tuple(sc["scale"]), judge=sc.get("judge"),
                     template_version=sc.get("template_version"), job_id=ctx.job_id, ts=ts)
    for u in result.updates:
        fields = {k: v for k, v in u.items() if k != "id"}
        bad = set(fields) - set(UPDATABLE)
        if bad:
            raise TaskError(f"task {ctx.task} may not update sample fields {sorted(bad)}")
        if fields:
            sets = ", ".join(f"{k} = ?" for k in fields)
            conn.execute(f"UPDATE samples SET {sets}, updated_at = ? WHERE id = ?",
                         (*[_json(v) for v in fields.values()], ts, u["id"]))
    out = dict(result.summary or {})
    if sample_ids:
        out["samples"] = sample_ids
    if cand_ids:
        out["candidates"] = cand_ids
    if judgment_ids:
        out["judgments"] = judgment_ids
    return out


def _json(v):
    if v is None or isinstance(v, (str, int, float)):
        return v
    return orjson.dumps(v).decode()


# --- registry --------------------------------------------------------------------------------------------

def register(cls: type[Task]) -> type[Task]:
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    TASKS[cls.name] = cls
    return cls


_loaded = False


def load_tasks() -> dict[str, type[Task]]:
    """Import every module of this package once (each task module registers its classes), plus the modules
    named in $WORKBENCH_TASK_MODULES (comma-separated): the curator's own tasks."""
    global _loaded
    if not _loaded:
        names = [f"{__name__}.{m.name}" for m in pkgutil.iter_modules(__path__)]
        names += [m.strip() for m in os.environ.get("WORKBENCH_TASK_MODULES", "").split(",") if m.strip()]
        for name in names:
            importlib.import_module(name)
        _loaded = True
    return TASKS


def get_task(name: str) -> type[Task]:
    tasks = load_tasks()
    if name not in tasks:
        raise TaskError(f"unknown task {name!r}; known tasks: {', '.join(sorted(tasks))}")
    return tasks[name]
