"""Figures for each method of "Methods in full" on the sample data, against the project's test server.

    python benchmarks/methods_figures.py [--json OUT.json] [--keep DIR]

Segments come from real text (the Rust book chapters in ../shared/data/rust-book-paragraphs/original) and need no
model. Every other figure runs the real CLI and worker over HTTP against tests/llm_server.py, whose scripted replies
below are a stand-in model: scores and verdicts are a hash of the prompt (so every run gives the same figures),
answers differ in length, and about one reply in fifteen of each scored kind is a near miss the readers must refuse
("Score: 4-5", "[1] Score: 7", "Yes and no", ...). These are counts of what each selection rule kept, dropped and
refused on those replies — not a measure of any real model (benchmarks/real_model.py is that).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from llm_server import LLMServer  # noqa: E402

SAMPLE = ROOT / "workbench" / "sample_data" / "self_instruct_seed.json"


def h(*parts) -> int:
    return int(hashlib.sha256(repr(parts).encode()).hexdigest()[:8], 16)


def block(prompt: str, label: str) -> str:
    m = re.search(re.escape(label) + r"\s*<<<\n(.*?)\n>>>", prompt, re.S)
    return m.group(1) if m else ""


CALLS: dict[str, int] = {}


def reply(messages, body) -> str:
    """A scripted stand-in model for every template (see the module doc)."""
    prompt = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    k = h(prompt)
    near = k % 15 == 0
    n = CALLS[prompt] = CALLS.get(prompt, 0) + 1          # repeated prompts (instances) get other answers
    if "Is this a classification task?" in prompt:
        if near:
            return "Yes and no, it depends."
        task = prompt.lower()
        return "Yes" if re.search(r"classif|sentiment|categor|true or false|which of|label|detect", task) else "No"
    if "Reply with one JSON object" in prompt and '"output"' in prompt:     # a Self-Instruct instance
        return json.dumps({"output": f"answer {k % 7 + n}", "input": f"input {k % 5 + n}"})
    if "Continue the list" in prompt:
        start = int(re.search(r"starting at (\d+)", prompt).group(1))
        return "\n".join(f"{start + i}. Write a short note about topic {k % 997 + i} for a colleague."
                         for i in range(8))
    if "Answer with exactly one of these two phrases" in prompt:           # evol-equal, augment meaning check
        return "Equal or not, hard to say." if near else ("Equal" if k % 10 == 1 else "Not Equal")
    if "Write only the user's request" in prompt:                           # backtranslate
        text = prompt.rsplit("<<<\n", 1)[1].split("\n>>>")[0]
        return "Explain " + " ".join(text.split()[:8]).strip("#*` ") + "?"
    if "Score: N" in prompt and "Score each" not in prompt and "[1] Score" not in prompt:   # curate
        return "The answer is on topic.\nScore: 4-5" if near else f"The answer is on topic.\nScore: {k % 5 + 1}"
    if "Reply with exactly one line of the form \"[1] Score: N\"" in prompt:   # deita-score
        return "[1] Score: 7" if near else f"[1] Score: {k % 6 + 1}"
    m = re.search(r"Score each of the (\d+)", prompt)
    if m:                                                                    # Deita's lists, scored together
        count = int(m.group(1))
        if near:
            return "\n".join(f"[{i}] Score: {i}" for i in range(1, count))    # one index missing
        return "\n".join(f"[{i}] Score: {h(k, i) % (count + 1) + 1}" for i in range(1, count + 1))
    if "Rate the answer below on four aspects" in prompt:                  # preference, aspects rubric
        r = [h(k, a) % 5 + 1 for a in range(4)]
        if near:
            r[0] = "4 or 5"
        return "\n".join(f"[{a}]\nRating: {v}\nRationale: fine." for a, v in
                         zip(("instruction following", "honesty", "truthfulness", "helpfulness"), r))
    if "[[A]] if A is better" in prompt:                                      # the tie-breaking second pass
        return "Reasons.\n[[A]]" if k % 3 == 0 else "Reasons.\n[[B]]" if k % 3 == 1 else "Reasons.\n[[C]]"
    if "Reply with the improved answer only" in prompt:                      # evol-quality
        return block(prompt, "Answer to improve:") + " More detail on the point."
    if "Reply with the new" in prompt:                                       # evol depth / breadth
        base = block(prompt, "Original prompt:") or block(prompt, "Prompt for inspiration:") or "a task"
        return base + f" Answer in at most {k % 5 + 2} sentences."
    if "Reply with the rewritten request only" in prompt or "Reply with the reworded request only" in prompt:
        req = block(prompt, "Request:") or block(prompt, "Original request:") or "the request"
        return req + (" Please." if k % 2 else " Thanks.")
    if "Reply with the translation only" in prompt:
        return block(prompt, "Text:") or "text"
    if "Reply with one JSON object and nothing else: {\"task_type\"" in prompt:
        return json.dumps({"task_type": ["open_qa", "classification", "rewriting"][k % 3],
                           "domain": "general", "difficulty": ["easy", "medium", "hard"][k % 3]})
    return "An answer. " + "It goes on with more detail. " * (k % 12)     # respond / generate / preference answers


class CLI:
    def __init__(self, work: Path):
        self.env = dict(os.environ, WORKBENCH_CONFIG=str(work / "config.toml"), WORKBENCH_DB=str(work / "wb.db"))
        self.db = work / "wb.db"

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        p = subprocess.run([sys.executable, "-m", "workbench", *args], env=self.env, capture_output=True, text=True,
                           cwd=ROOT)
        if check and p.returncode != 0:
            raise SystemExit(f"workbench {' '.join(args)} failed ({p.returncode}): {p.stderr.strip()[-1500:]}")
        return p

    def job(self, *args: str) -> dict:
        p = self("run", *args, "--wait", check=False)       # exit 1 when some items failed: counted below
        if not p.stdout.strip():
            raise SystemExit(f"workbench run {' '.join(args)} refused: {p.stderr.strip()[-1500:]}")
        job_id = int(p.stdout.split()[0])
        return self.job_row(job_id)

    def job_row(self, job_id: int) -> dict:
        from workbench import jobs as J
        from workbench.store import open_store
        conn = open_store(str(self.db))
        try:
            job = J.get_job(conn, job_id)
            counts = J.item_counts(conn, job_id)
            report = J.job_report(conn, job)
            no_raw = conn.execute("SELECT count(*) FROM job_items WHERE job_id = ? AND status = 'failed' AND "
                                  "(raw IS NULL OR raw = '')", (job_id,)).fetchone()[0]
        finally:
            conn.close()
        return {"job": job_id, "items": sum(counts.values()), "done": counts.get("done", 0),
                "failed": counts.get("failed", 0), "failed_without_raw": no_raw, "kept": job["kept"],
                "dropped": job.get("drop_reasons") or {}, "report": report}


def figures(work: Path, data: Path) -> dict:
    cli = CLI(work)
    out: dict = {}
    # Humpback segments, real text: every mode over the Rust book chapters
    # (file by file: an import of several files is refused as a whole when one of them leaves no segment)
    chapters = sorted((data / "rust-book-paragraphs" / "original").glob("*.md"))
    for mode in ("heading", "paragraph", "none"):
        fig = {"files": len(chapters), "files without a segment": 0, "rows": 0, "dropped": {}, "merged": 0,
               "split": 0}
        for f in chapters:
            p = cli("import", str(f), "--format", "text", "--segment", mode, "--dataset", f"book-{mode}", "--json",
                    check=False)
            if p.returncode:
                why = p.stderr.strip().splitlines()[-1] if p.stderr.strip() else "?"
                fig["files without a segment"] += 1
                fig.setdefault("refused", {})
                key = re.sub(r"^error: \S+: ", "", why)[:60]
                fig["refused"][key] = fig["refused"].get(key, 0) + 1
                continue
            rep = json.loads(p.stdout)
            fig["rows"] += rep.get("rows", 0)
            seg = rep.get("segments") or {}
            for k, v in (seg.get("dropped") or {}).items():
                fig["dropped"][k] = fig["dropped"].get(k, 0) + v
            fig["merged"] += seg.get("merged_paragraphs", 0)
            fig["split"] += seg.get("split_segments", 0)
        out[f"segments {mode}"] = fig
    cli("import", str(SAMPLE), "--dataset", "seed")
    with LLMServer(reply=reply, models=("model-a", "model-b", "judge-model")) as srv:
        cli("endpoints", "add", "a", "--base-url", srv.base_url, "--model", "model-a")
        cli("endpoints", "add", "b", "--base-url", srv.base_url, "--model", "model-b")
        cli("endpoints", "add", "judge", "--base-url", srv.base_url, "--model", "judge-model")
        cli("pools", "add", "ab", "--endpoint", "a", "--endpoint", "b", "--mode", "each")
        # Humpback: backtranslate (seed pairs as examples) -> curate round 1 -> round 2; then backtranslate round 2
        out["backtranslate r1"] = cli.job("backtranslate", "--dataset", "book-heading", "--endpoint", "a",
                                          "--param", "seed_dataset=seed")
        out["curate r1"] = cli.job("curate", "--dataset", "book-heading-backtranslate", "--endpoint", "judge",
                                   "--param", "seed_dataset=seed")
        out["curate r2"] = cli.job("curate", "--dataset", "book-heading-backtranslate", "--endpoint", "judge",
                                   "--param", "round=2")
        out["backtranslate r2"] = cli.job("backtranslate", "--dataset", "book-heading", "--endpoint", "a",
                                          "--into", "book-r2", "--param", "seed_dataset=book-heading-backtranslate",
                                          "--param", "round=2")
        for k in (1, 2):
            p = cli("samples", "--dataset", "book-heading-backtranslate", "--filter", f"round={k}", "--json")
            out[f"rows in round {k}"] = len(json.loads(p.stdout))
        out["export --tag-origin"] = cli("export", str(work / "tagged.jsonl"), "--format", "messages", "--dataset",
                                         "book-heading-backtranslate", "--min-score", "curate=4.5",
                                         "--tag-origin", "--json").stdout.strip()[:400]
        # Self-Instruct with its classification step
        out["self-instruct"] = cli.job("self-instruct", "--dataset", "seed", "--endpoint", "a",
                                       "--param", "num_instructions=40", "--param", "instances_per_instruction=2")
        # Evol-Instruct (complexity scored together) -> EvolQuality (quality scored together) -> Deita selection
        out["evol-instruct"] = cli.job("evol-instruct", "--dataset", "seed", "--endpoint", "a", "--judge", "judge",
                                       "--param", "rounds=2", "--filter", "limit=60")
        out["evol-quality"] = cli.job("evol-quality", "--dataset", "seed-evol-instruct", "--endpoint", "a",
                                      "--judge", "judge", "--param", "num_evolutions=2")
        # the standalone scorer on the imported seeds
        out["deita-score"] = cli.job("deita-score", "--dataset", "seed", "--endpoint", "judge")
        p = cli("sample", "--by", "deita", "--size", "50", "--dataset", "seed", "--into", "deita50", "--json")
        d = json.loads(p.stdout)
        out["sample --by deita (seed)"] = {k: d.get(k) for k in ("selected", "eligible", "missing", "skipped_similar")}
        # preference pairs: two generations per model, ties broken by a second pass, length ratio bound
        out["preference"] = cli.job("preference", "--dataset", "seed", "--pool", "ab", "--judge", "judge",
                                    "--param", "num_generations=2", "--filter", "limit=60")
        out["preference max_length_ratio=1.5"] = cli.job(
            "preference", "--dataset", "seed", "--pool", "ab", "--judge", "judge", "--into", "pref-bounded",
            "--param", "num_generations=2", "--param", "max_length_ratio=1.5", "--filter", "limit=60")
        # augmentation beyond paraphrase
        out["augment style=formal"] = cli.job("augment", "--dataset", "seed", "--endpoint", "a", "--judge", "judge",
                                              "--param", "method=style", "--param", "style=formal",
                                              "--filter", "limit=60")
        out["augment persona"] = cli.job("augment", "--dataset", "seed", "--endpoint", "a", "--judge", "judge",
                                         "--into", "seed-persona", "--param", "method=persona",
                                         "--param", "persona=a nurse on a night shift", "--filter", "limit=60")
        # balance on length and on two labels at once (labels from the label task)
        out["label"] = cli.job("label", "--dataset", "seed", "--endpoint", "a")
        targets = work / "targets.toml"
        targets.write_text('[targets.length]\n"0-300" = 0.5\n"300-1500" = 0.4\n"1500-" = 0.1\n\n'
                           '[joint]\ndims = ["task_type", "difficulty"]\n[joint.shares.open_qa]\neasy = 0.5\n'
                           '[joint.shares.classification]\nmedium = 0.3\n[joint.shares.rewriting]\nhard = 0.2\n')
        p = cli("sample", "--target", str(targets), "--size", "60", "--seed", "1", "--into", "mix", "--dataset",
                "seed", "--dry-run", "--json", check=False)
        out["sample length+joint (dry run)"] = json.loads(p.stdout) if p.stdout.strip() else p.stderr.strip()
        # a recipe end to end
        cli("datasets", "rename", "book-paragraph", "book2")
        p = cli("recipe", "run", "humpback", "--endpoint", "judge", "--var", "input=book2", "--var", "seeds=seed",
                "--wait", check=False)
        rid = int(p.stdout.split()[0])
        view = json.loads(cli("recipe", "show", str(rid), "--json").stdout)
        out["recipe humpback"] = {"status": view["status"],
                                  "steps": [(s["name"], s["status"], s["done"], s["kept"], s["failed"])
                                            for s in view["steps"]]}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--keep", type=Path, help="keep the store here")
    args = ap.parse_args(argv)
    data = next(p for p in (ROOT.parent / "shared" / "data", Path("/work/shared/data")) if p.is_dir())
    work = args.keep or Path(tempfile.mkdtemp(prefix="wb-methods-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        out = figures(work, data)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    for k, v in out.items():
        print(f"{k}: {json.dumps(v, default=str)}")
    print(f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
