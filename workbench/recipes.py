"""Recipes: a TOML file naming a sequence of tasks with their params, run as one group of jobs.

    name = "humpback"
    about = "one line"

    [vars]                        # `${name}` in any step string is replaced; `--var name=value` sets or overrides;
    input = ""                    # an empty default means the variable must be given
    seeds = ""

    [[step]]
    name = "augment"              # unique; later steps refer to it as "@augment"
    task = "backtranslate"
    input = "${input}"            # a dataset, or "@<step>" = that step's output; default: the previous step's output
    into = "${input}-pairs"       # optional (the task's default otherwise)
    params = { seed_dataset = "${seeds}" }
    # endpoint / pool / judge: optional, else the run's --endpoint/--pool/--judge; filter = { ... } optional

A step's output is the dataset its job wrote into, or, for a task that only annotates (curate, judge, label), the
dataset it read. `workbench recipe run FILE` checks every step (task, params, endpoints, references), records the
recipe and its steps in the store, and queues the steps whose inputs are complete. Each later step is queued — by
whichever worker gets there first, exactly once — when the job of the step that produces its input is done, so a
recipe survives restarts like every job: after a crash any `workbench worker` carries on. A step whose input job
ended failed or cancelled, or that cannot be queued, stops the recipe with the reason.

`workbench recipe run FILE --batch [--batch-poll S]` runs every step through its endpoint's Batch API, as
`workbench run TASK --batch` does (one batch per task step, each round's state stored so a killed worker resumes
it); the flag is kept with each step, so a later step queued by any worker is a batch job too.

`workbench recipe cancel ID` stops a running recipe for good: its queued, running and paused jobs are cancelled as
`workbench jobs cancel` does (their outputs so far stay), the recipe is marked cancelled, and no later step is ever
queued — the check is inside the transaction that would queue it, so a worker racing the cancel cannot start one,
and a restarted worker does not resume it.

Shipped recipes live in workbench/recipes/ (`workbench recipe list`); a file path works the same way.
"""
from __future__ import annotations

import re
import sqlite3
from importlib import resources
from pathlib import Path

import orjson

from . import endpoints as endpoints_mod
from . import jobs as J
from .store import get_dataset, now, transaction
from .config import ConfigError, read_toml
from .tasks import TaskError, get_task, resolve_params

STEP_KEYS = {"name", "task", "input", "into", "endpoint", "pool", "judge", "params", "filter"}
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class RecipeError(ValueError):
    """A recipe that cannot run; the message names the file and the step."""


def shipped() -> dict[str, Path]:
    """name -> path of the recipes in the package."""
    root = resources.files("workbench") / "recipes"
    return {p.name.removesuffix(".toml"): Path(str(p)) for p in root.iterdir() if p.name.endswith(".toml")}


def locate(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        if not p.is_file():
            raise RecipeError(f"{p}: no such recipe file")
        return p
    found = shipped().get(name_or_path)
    if found is None:
        raise RecipeError(f"no recipe {name_or_path!r}: give a .toml file or one of {', '.join(sorted(shipped()))}")
    return found


def load(path: Path) -> dict:
    try:
        data = read_toml(path)
    except ConfigError as e:
        raise RecipeError(str(e)) from None
    except OSError as e:
        raise RecipeError(f"{path}: {e.strerror}") from None
    return data


def _substitute(value, env: dict, where: str):
    if isinstance(value, str):
        def one(m):
            if m.group(1) not in env:
                raise RecipeError(f"{where}: ${{{m.group(1)}}} is not a variable of this recipe")
            return env[m.group(1)]
        return _VAR.sub(one, value)
    if isinstance(value, dict):
        return {k: _substitute(v, env, where) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, env, where) for v in value]
    return value


def resolve(data: dict, source: str, given: dict[str, str], config: dict, *, endpoint: str | None = None,
            pool: str | None = None, judge: str | None = None, batch: dict | None = None,
            conn: sqlite3.Connection | None = None) -> list[dict]:
    """The recipe's steps with variables filled in and every static check done. Raises RecipeError.
    `batch` ({"poll": seconds}, `recipe run --batch`): every step runs through its endpoint's Batch API."""
    unknown_top = sorted(set(data) - {"name", "about", "vars", "step"})
    if unknown_top:
        raise RecipeError(f"{source}: unknown key {unknown_top[0]!r} (name, about, vars, step)")
    defaults = data.get("vars") or {}
    if not isinstance(defaults, dict) or any(not isinstance(v, str) for v in defaults.values()):
        raise RecipeError(f"{source}: [vars] must be a table of name = \"text\"")
    extra = sorted(set(given) - set(defaults))
    if extra:
        raise RecipeError(f"{source}: --var {extra[0]} is not a variable of this recipe "
                          f"({', '.join(sorted(defaults)) or 'it has none'})")
    env = {**defaults, **given}
    missing = [k for k, v in env.items() if v == ""]
    if missing:
        raise RecipeError(f"{source}: give --var {missing[0]}=... (the recipe has no default for it)")
    raw = data.get("step")
    if not isinstance(raw, list) or not raw:
        raise RecipeError(f"{source}: no [[step]] tables")
    steps, names = [], {}
    for i, st in enumerate(raw):
        where = f"{source} step {i + 1}"
        if not isinstance(st, dict):
            raise RecipeError(f"{where}: must be a table")
        bad = sorted(set(st) - STEP_KEYS)
        if bad:
            raise RecipeError(f"{where}: unknown key {bad[0]!r} ({', '.join(sorted(STEP_KEYS))})")
        st = _substitute(st, env, where)
        name = st.get("name") or f"step{i + 1}"
        where = f"{source} step {i + 1} ({name})"
        if name in names:
            raise RecipeError(f"{where}: the name {name!r} is used by step {names[name] + 1} too")
        if not st.get("task"):
            raise RecipeError(f"{where}: no task")
        try:
            task_cls = get_task(st["task"])
            params = st.get("params") or {}
            if not isinstance(params, dict):
                raise RecipeError(f"{where}: params must be a table")
            resolve_params(task_cls, params)
            filt = st.get("filter") or {}
            if not isinstance(filt, dict):
                raise RecipeError(f"{where}: filter must be a table")
            ep, pl = st.get("endpoint"), st.get("pool")
            if ep and pl:
                raise RecipeError(f"{where}: give endpoint or pool, not both")
            if not ep and not pl:
                ep, pl = endpoint, pool
            if not ep and not pl:
                raise RecipeError(f"{where}: no endpoint or pool (give --endpoint or --pool, or name one in the step)")
            endpoints_mod.resolve(config, ep or pl, is_pool=bool(pl))
            jd = st.get("judge") or judge
            if jd:
                endpoints_mod.resolve(config, jd)
            if batch is not None:
                J.check_batch(ep, pl, jd, batch)     # refused now, not when a later step is queued
        except TaskError as e:
            raise RecipeError(f"{where}: {e}") from None
        except endpoints_mod.EndpointError as e:
            raise RecipeError(f"{where}: {e}") from None
        inp = st.get("input")
        if inp is None:
            inp = f"@{steps[-1]['name']}" if steps else None
        if task_cls.needs_dataset and not inp:
            raise RecipeError(f"{where}: no input dataset (input = \"<dataset>\" or \"@<step>\")")
        if inp and inp.startswith("@"):
            if inp[1:] not in names:
                raise RecipeError(f"{where}: input {inp!r} names no earlier step")
        elif inp and conn is not None and get_dataset(conn, inp) is None:
            raise RecipeError(f"{where}: no dataset named {inp!r}")
        names[name] = i
        steps.append({"name": name, "task": st["task"], "input": inp, "into": st.get("into"), "endpoint": ep,
                      "pool": pl, "judge": jd, "params": params, "filter": filt}
                     | ({"batch": batch} if batch is not None else {}))
    return steps


def start(conn: sqlite3.Connection, path: Path, given: dict[str, str], config: dict, **kw) -> int:
    """Check the recipe, record it and its steps, queue what can start now. Returns the recipe id."""
    data = load(path)
    steps = resolve(data, str(path), given, config, conn=conn, **kw)
    name = str(data.get("name") or path.stem)
    with transaction(conn):
        rid = conn.execute("INSERT INTO recipes (name, file, vars, created_at) VALUES (?,?,?,?)",
                           (name, str(path), orjson.dumps(given).decode(), now())).lastrowid
        conn.executemany("INSERT INTO recipe_steps (recipe_id, idx, name, task, spec) VALUES (?,?,?,?,?)",
                         [(rid, i, s["name"], s["task"], orjson.dumps(s).decode()) for i, s in enumerate(steps)])
    advance(conn, config, rid)
    return rid


def _output(step: dict, job: dict) -> str | None:
    return job["params"].get("into") or job["params"].get("dataset") or step.get("input")


def _fail(conn, rid: int, message: str) -> None:
    with transaction(conn):
        conn.execute("UPDATE recipes SET status = 'failed', error = ?, finished_at = ? WHERE id = ? AND "
                     "status = 'running'", (message, now(), rid))


def advance(conn: sqlite3.Connection, config: dict, recipe_id: int | None = None) -> int:
    """Queue every step of running recipes whose input is complete; mark recipes done or failed.
    Returns how many jobs were queued. Safe to call from several processes at once."""
    queued = 0
    where = "status = 'running'" + (" AND id = ?" if recipe_id is not None else "")
    for (rid,) in conn.execute(f"SELECT id FROM recipes WHERE {where} ORDER BY id",
                               (recipe_id,) if recipe_id is not None else ()).fetchall():
        rows = conn.execute("SELECT idx, name, spec, job_id FROM recipe_steps WHERE recipe_id = ? ORDER BY idx",
                            (rid,)).fetchall()
        steps = [dict(orjson.loads(spec), idx=idx, job_id=job_id) for idx, _, spec, job_id in rows]
        by_name = {s["name"]: s for s in steps}
        jobs = {s["job_id"]: J.get_job(conn, s["job_id"]) for s in steps if s["job_id"]}
        broken = next((j for j in jobs.values() if j["status"] in ("failed", "cancelled")), None)
        if broken is not None:
            step = next(s for s in steps if s["job_id"] == broken["id"])
            _fail(conn, rid, f"step {step['idx'] + 1} ({step['name']}): job {broken['id']} ended {broken['status']}"
                             + (f": {broken['error']}" if broken["error"] else ""))
            continue
        if steps and all(s["job_id"] and jobs[s["job_id"]]["status"] == "done" for s in steps):
            with transaction(conn):
                conn.execute("UPDATE recipes SET status = 'done', finished_at = ? WHERE id = ? AND status = 'running'",
                             (now(), rid))
            continue
        for s in steps:
            if s["job_id"]:
                continue
            inp = s["input"]
            if inp and inp.startswith("@"):
                src = by_name[inp[1:]]
                job = jobs.get(src["job_id"])
                if job is None or job["status"] != "done":
                    continue                     # its input is not complete yet
                inp = _output(src, job)
            try:
                J.queue_job(conn, s["task"], config=config, dataset=inp, endpoint=s["endpoint"], pool=s["pool"],
                            judge=s["judge"], into=s["into"], params=s["params"], filter=s["filter"],
                            recipe_step=(rid, s["idx"]), batch=s.get("batch"))
                queued += 1
            except J.StepTaken:
                continue
            except (TaskError, endpoints_mod.EndpointError, ValueError) as e:
                _fail(conn, rid, f"step {s['idx'] + 1} ({s['name']}): {e}")
                break
    return queued


def cancel(conn: sqlite3.Connection, recipe_id: int) -> dict:
    """Cancel a running recipe and its unfinished jobs in one transaction. Returns {"recipe", "jobs"}: the
    recipe's view and the ids of the jobs cancelled."""
    with transaction(conn):
        row = conn.execute("SELECT status FROM recipes WHERE id = ?", (recipe_id,)).fetchone()
        if row is None:
            raise RecipeError(f"no recipe {recipe_id}")
        if row[0] != "running":
            raise RecipeError(f"recipe {recipe_id} is {row[0]}: cannot cancel it")
        active = [jid for (jid,) in conn.execute(
            f"SELECT j.id FROM recipe_steps s JOIN jobs j ON j.id = s.job_id WHERE s.recipe_id = ? AND j.status IN "
            f"({','.join('?' * len(J.ACTIVE))}) ORDER BY j.id", (recipe_id, *J.ACTIVE))]
        stamp = now()
        conn.executemany("UPDATE jobs SET status = 'cancelled', finished_at = ? WHERE id = ?",
                         [(stamp, jid) for jid in active])
        conn.execute("UPDATE recipes SET status = 'cancelled', error = ?, finished_at = ? WHERE id = ?",
                     ("cancelled by the curator" + (f" (jobs {', '.join(map(str, active))} cancelled)"
                                                    if active else ""), stamp, recipe_id))
    return {"recipe": recipe_view(conn, recipe_id), "jobs": active}


def recipe_view(conn: sqlite3.Connection, recipe_id: int) -> dict:
    """A recipe with each step's job progress (for `recipe show` and the Jobs screen)."""
    row = conn.execute("SELECT id, name, file, vars, status, error, created_at, finished_at FROM recipes "
                       "WHERE id = ?", (recipe_id,)).fetchone()
    if row is None:
        raise RecipeError(f"no recipe {recipe_id}")
    r = dict(zip(("id", "name", "file", "vars", "status", "error", "created_at", "finished_at"), row))
    r["vars"] = orjson.loads(r["vars"]) if r["vars"] else {}
    r["steps"] = []
    for idx, name, task, job_id in conn.execute(
            "SELECT idx, name, task, job_id FROM recipe_steps WHERE recipe_id = ? ORDER BY idx", (recipe_id,)):
        step = {"idx": idx, "name": name, "task": task, "job_id": job_id, "status": "waiting",
                "done": 0, "total": 0, "failed": 0, "kept": 0}
        if job_id:
            j = J.get_job(conn, job_id)
            step.update(status=j["status"], done=j["done"], total=j["total"], failed=j["failed"], kept=j["kept"],
                        fraction=j["fraction"])
            if "batch" in j:                  # a batch step: its latest round (as `jobs --json`)
                step["batch"] = j["batch"]
        r["steps"].append(step)
    r["steps_done"] = sum(s["status"] == "done" for s in r["steps"])
    return r


def list_recipes(conn: sqlite3.Connection, limit: int = 100) -> list[dict]:
    return [recipe_view(conn, rid) for (rid,) in conn.execute("SELECT id FROM recipes ORDER BY id DESC LIMIT ?",
                                                              (limit,)).fetchall()]


def recipe_of_jobs(conn: sqlite3.Connection) -> dict[int, tuple[int, int]]:
    """job id -> (recipe id, step index), for grouping jobs by recipe."""
    return {job_id: (rid, idx) for rid, idx, job_id in
            conn.execute("SELECT recipe_id, idx, job_id FROM recipe_steps WHERE job_id IS NOT NULL")}
