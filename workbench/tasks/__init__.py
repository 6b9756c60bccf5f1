"""LLM tasks: every job kind is a Task subclass registered in TASKS.

Where things are: `base.py` the interface (Task, Item, Result, TaskContext), `params.py` task parameters,
`writes.py` the default write of results, `registry.py` the registry; one module per task beside them
(`common.py` holds what templated tasks share). Import them all from `workbench.tasks`.

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
from ..llm import Completion, LLM, ParseError  # noqa: F401  (re-exported for task modules)
from .base import Item, Result, Task, TaskContext, item_rng  # noqa: F401
from .params import Param, TaskError, coerce, params_help, parse_value, resolve_params  # noqa: F401
from .registry import TASKS, get_task, load_tasks, register  # noqa: F401
from .writes import UPDATABLE, write_result, write_results  # noqa: F401
