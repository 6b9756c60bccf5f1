"""The Batch API backend against a real model: llama-server (SmolLM2-135M-Instruct) behind a Batch API.

    python benchmarks/real_model_batch.py [--rows 6] [--tasks generate,judge] [--max-tokens 128]

llama.cpp has no Batch API, so the project's test server (tests/llm_server.py) plays the provider: it takes the
uploaded input file and the batch, and answers each line by sending it to a real llama-server
(`LLMServer(upstream=...)`), keeping the model's reply, status and finish_reason untouched. The workbench side is
the real one: `run TASK --batch --wait` writes the input file, uploads it, creates the batch, polls, downloads the
output and error files and ingests them with the same parsers as online.

Per task it prints the table of benchmarks/real_model.py (items, parsed, failed, parsed share) and each job's batch
round. What is checked: every item ends (read or failed with its raw reply), nothing is invented.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import real_model as rm  # noqa: E402
from llm_server import LLMServer  # noqa: E402


def run(workdir: Path, tasks: list[str], rows: int, max_tokens: int, log=print) -> list[dict]:
    server, model = rm.ensure_build()
    wb = rm.Workbench(workdir)
    results = []
    with rm.llama_server(server, model, workdir / "llama-server.log") as url, \
            LLMServer(upstream=url, models=("smollm2",), keep_bodies=0) as provider:
        wb("endpoints", "add", "provider", "--base-url", provider.base_url, "--model", "smollm2", "--timeout", "600",
           "--max-retries", "1", "--param", f"max_tokens={max_tokens}")
        wb("import", str(rm.shared_data() / "self-instruct-seed" / "seed_tasks_alpaca.json"), "--dataset", "seed")
        for task in tasks:
            p = wb("run", task, "--dataset", "seed", "--endpoint", "provider", "--batch", "--batch-poll", "1",
                   "--filter", f"limit={rows}", "--wait", check=False)
            if not p.stdout.strip():
                results.append({"task": task, "error": p.stderr.strip()[-500:]})
                continue
            job_id = int(p.stdout.split()[0])
            r = rm.job_figures(wb, f"{task} --batch", job_id, 0.0)
            r["batch_lines"] = [ln.strip() for ln in wb("jobs", "show", str(job_id)).stdout.splitlines()
                                if "batch" in ln.lower()]
            r["upstream_completions"] = provider.stats.completions
            log(f"{task}: {r['parsed']}/{r['items']} parsed")
            results.append(r)
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=6)
    ap.add_argument("--tasks", default="generate,judge")
    ap.add_argument("--max-tokens", type=int, default=128)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="wb-real-batch-") as tmp:
        results = run(Path(tmp), [t.strip() for t in args.tasks.split(",") if t.strip()], args.rows,
                      args.max_tokens, log=lambda m: print(m, file=sys.stderr))
    rm.print_table(results)
    for r in results:
        for line in r.get("batch_lines", []):
            print(f"{r['task']}: {line}")
    return 0 if all("error" not in r and r["parsed"] + r["failed"] == r["items"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
