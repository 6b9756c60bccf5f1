"""Near-duplicate benchmark: seconds, peak RSS, precision and recall on synthetic rows with planted copies and hard
negatives, and cluster counts on the real datasets in ../shared/data.

    python benchmarks/bench_dedup.py                      # 100k synthetic + the real datasets
    python benchmarks/bench_dedup.py --rows 100000 1000000 --no-real

Synthetic set (`generate`): templated instructions (a template with three slot words plus a free context
sentence), an input on 30 % of rows, a 20-80 word response. Of the rows, `copy_rate` are planted copies of an
earlier row (exact; case/punctuation/whitespace changes; 1-3 typos per field; 1-2 edited words in the prompt and
1-3 in the response), and `negative_rate` are hard negatives: the same template with different content, or the
same prompt with a different response. A planted copy counts as a near-duplicate when every compared field is at
least `threshold` similar to its original (the generator makes fewer edits until it is: the threshold is what
"near" means). Precision and recall are over pairs: two rows in one found cluster vs. two rows of one planted
group (an original and its copies).

The dedup itself runs in a child process, so its peak RSS (ru_maxrss) is the dedup's alone: the store is read
row by row; the generator and the truth stay in this process. Its CPU seconds (the child's and its worker
processes' user+system) are printed too: on a loaded machine they compare runs better than wall time.

    --reference-python /work/main/.venv/bin/python   # also run another checkout's code on the same store
    --store-dir /tmp/x                                # keep the synthetic stores there and reuse them
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import string
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# a reference run (--reference-python) imports the other checkout's code: its root comes first on the path
sys.path.insert(0, os.environ.get("BENCH_CODE_ROOT") or str(ROOT))

from rapidfuzz.distance import Indel  # noqa: E402

from workbench import dedup  # noqa: E402
from workbench.samples import insert_samples  # noqa: E402
from workbench.store import ensure_dataset, open_store, transaction  # noqa: E402

FIELDS = ("instruction", "input", "response")
THRESHOLD = 0.9

TEMPLATES = [
    "Write a {0} poem about {1} in the style of {2}.",
    "Explain how {0} affects {1} for a {2} audience.",
    "Summarize the following {0} report about {1} and {2}.",
    "Translate this note about {0} into {1}, keeping the tone {2}.",
    "Give three reasons why {0} is better than {1} at {2}.",
    "What is the difference between {0}, {1} and {2}?",
    "Classify the sentiment of this review of the {0} {1} by {2}.",
    "Draft an email to {0} asking about the {1} {2}.",
    "Write Python code that sorts {0} by {1} and prints {2}.",
    "List the steps to prepare {0} with {1} and {2}.",
    "Create a quiz with questions on {0}, {1} and {2}.",
    "Rewrite the sentence so that {0} sounds more {1} to {2}.",
    "Describe a day in the life of a {0} who loves {1} and {2}.",
    "Compare the {0} of {1} with that of {2}.",
    "Suggest names for a {0} company selling {1} to {2}.",
    "Find the error in this {0} proof about {1} and {2}.",
]
_SYL = ["ka", "lo", "mi", "ter", "an", "bel", "cor", "dun", "e", "fra", "gil", "hon", "is", "jul", "ken", "lum",
        "mor", "nal", "o", "pra", "quin", "ros", "sel", "tu", "ul", "var", "wen", "xo", "yar", "zed", "ri", "sta"]


class Vocab:
    def __init__(self, seed: int = 7, size: int = 40_000):
        rng = random.Random(seed)
        words = set()
        while len(words) < size:
            words.add("".join(rng.choice(_SYL) for _ in range(rng.randint(1, 4))))
        self.words = sorted(words)
        # Zipf-like weights for running text; slot fillers are uniform (so hard negatives really differ)
        self.cum = []
        total = 0.0
        for r in range(len(self.words)):
            total += 1.0 / (r + 10)
            self.cum.append(total)

    def text(self, rng: random.Random, k: int) -> str:
        return " ".join(rng.choices(self.words, cum_weights=self.cum, k=k))

    def slot(self, rng: random.Random) -> str:
        return rng.choice(self.words)


def base_row(vocab: Vocab, seed: int, pos: int, template: int | None = None) -> dict:
    rng = random.Random(seed * 1_000_003 + pos)
    t = TEMPLATES[template if template is not None else rng.randrange(len(TEMPLATES))]
    instruction = t.format(*(vocab.slot(rng) for _ in range(3)))
    instruction += " " + vocab.text(rng, rng.randint(4, 20)).capitalize() + "."
    inp = vocab.text(rng, rng.randint(10, 40)) if rng.random() < 0.3 else ""
    response = vocab.text(rng, rng.randint(20, 80)).capitalize() + "."
    return {"instruction": instruction, "input": inp, "response": response}


def template_of(seed: int, pos: int) -> int:
    return random.Random(seed * 1_000_003 + pos).randrange(len(TEMPLATES))


# --- edits that keep a copy near ------------------------------------------------------------------------------

def _typo(rng: random.Random, s: str) -> str:
    if len(s) < 4:
        return s
    i = rng.randrange(1, len(s) - 1)
    op = rng.randrange(4)
    c = rng.choice(string.ascii_lowercase)
    if op == 0:
        return s[:i] + c + s[i + 1:]
    if op == 1:
        return s[:i] + s[i + 1:]
    if op == 2:
        return s[:i] + c + s[i:]
    return s[:i - 1] + s[i] + s[i - 1] + s[i + 1:]


def _word_edit(rng: random.Random, vocab: Vocab, s: str) -> str:
    words = s.split(" ")
    if len(words) < 3:
        return s
    i = rng.randrange(len(words))
    op = rng.randrange(3)
    if op == 0:
        words[i] = vocab.slot(rng)
    elif op == 1:
        words.insert(i, vocab.slot(rng))
    else:
        del words[i]
    return " ".join(words)


def _surface(rng: random.Random, s: str) -> str:
    """Case, punctuation and whitespace changes only (no word changes)."""
    out = []
    for w in s.split(" "):
        r = rng.random()
        if r < 0.1:
            w = w.upper()
        elif r < 0.2:
            w = w + rng.choice([",", ";", "!", " -", "..."])
        elif r < 0.25:
            w = w + " "
        out.append(w)
    return " ".join(out).replace(".", rng.choice([".", "!", ""]))


def _near(a: str, b: str) -> float:
    return Indel.normalized_similarity(dedup.match_text(a), dedup.match_text(b))


def make_copy(rng: random.Random, vocab: Vocab, row: dict, threshold: float) -> tuple[dict, str]:
    kind = rng.choices(["exact", "surface", "typos", "words"], weights=[2, 2, 3, 3])[0]
    for attempt in range(6):
        new = dict(row)
        for f in FIELDS:
            s = row[f]
            if not s:
                continue
            if kind == "surface":
                s = _surface(rng, s)
            elif kind == "typos":
                for _ in range(rng.randint(1, max(1, 3 - attempt))):
                    s = _typo(rng, s)
            elif kind == "words":
                edits = rng.randint(1, 2) if f != "response" else rng.randint(1, 3)
                for _ in range(max(1, edits - attempt)):
                    s = _word_edit(rng, vocab, s)
            new[f] = s
        if all(_near(row[f], new[f]) >= threshold for f in FIELDS if row[f] or new[f]):
            return new, kind
    return dict(row), "exact"


def generate(n: int, seed: int = 1, copy_rate: float = 0.05, negative_rate: float = 0.05,
             threshold: float = THRESHOLD, vocab: Vocab | None = None):
    """Yields (row dict, truth group or None, kind): the group is the position of the original a copy repeats."""
    vocab = vocab or Vocab()
    rng = random.Random(seed)
    bases = array("q")
    for pos in range(n):
        r = rng.random()
        if bases and r < copy_rate:
            orig = bases[rng.randrange(len(bases))]
            row, kind = make_copy(rng, vocab, base_row(vocab, seed, orig), threshold)
            yield row, orig, "copy-" + kind
        elif bases and r < copy_rate + negative_rate:
            orig = bases[rng.randrange(len(bases))]
            if rng.random() < 0.5:     # same template, different content
                yield base_row(vocab, seed, pos, template=template_of(seed, orig)), None, "neg-template"
            else:                      # same prompt, different response
                row = base_row(vocab, seed, orig)
                row["response"] = base_row(vocab, seed, pos)["response"]
                yield row, None, "neg-prompt"
        else:
            bases.append(pos)
            yield base_row(vocab, seed, pos), pos, "base"


def build_store(db: Path, n: int, seed: int = 1, **kw) -> tuple[list[list[int]], dict]:
    """Fill a fresh store with the synthetic set; returns (planted groups as id lists, count per row kind)."""
    conn = open_store(db)
    groups: dict[int, list[int]] = {}
    kinds: dict[str, int] = {}
    with transaction(conn):
        did = ensure_dataset(conn, "synthetic")
        first = (conn.execute("SELECT coalesce(max(id), 0) FROM samples").fetchone()[0]) + 1
        truth = array("q")

        def rows():
            for i, (row, group, kind) in enumerate(generate(n, seed, **kw)):
                truth.append(-1 if group is None else group)
                kinds[kind] = kinds.get(kind, 0) + 1
                row["source_line"] = i + 1
                yield row
        insert_samples(conn, did, rows())
    conn.close()
    for pos, g in enumerate(truth):
        if g >= 0:
            groups.setdefault(g, []).append(first + pos)
    return [ids for ids in groups.values() if len(ids) > 1], kinds


def pair_scores(found: list[list[int]], truth: list[list[int]]) -> tuple[float, float, int, int]:
    """(precision, recall, found pairs, true pairs) over pairs of rows."""
    label = {}
    for g, ids in enumerate(truth):
        for i in ids:
            label[i] = g
    true_pairs = sum(len(g) * (len(g) - 1) // 2 for g in truth)
    found_pairs = hit = 0
    for c in found:
        found_pairs += len(c) * (len(c) - 1) // 2
        per = {}
        for i in c:
            if i in label:
                per[label[i]] = per.get(label[i], 0) + 1
        hit += sum(k * (k - 1) // 2 for k in per.values())
    precision = hit / found_pairs if found_pairs else 1.0
    recall = hit / true_pairs if true_pairs else 1.0
    return precision, recall, found_pairs, true_pairs


# --- the measured child ---------------------------------------------------------------------------------------

def plain_read(conn, fields: tuple[str, ...]) -> float:
    """The reference: seconds to read the compared columns of the rows in scope, in id order, and do nothing."""
    cols = ", ".join(["id", *fields, "messages"])
    where, params = dedup.scope_where(None, dedup.ACTIVE)
    t0 = time.perf_counter()
    for _ in conn.execute(f"SELECT {cols} FROM samples WHERE {where} ORDER BY id", params):
        pass
    return time.perf_counter() - t0


def child(db: str, fields: str, threshold: float, out: str, workers: int | None) -> None:
    conn = open_store(db)
    fields = dedup.parse_fields(fields)
    read_s = plain_read(conn, fields)
    stats = dedup.Stats()
    t0, c0 = time.perf_counter(), os.times()
    clusters = dedup.find_clusters(conn, fields=fields, threshold=threshold, stats=stats, workers=workers)
    seconds, c1 = time.perf_counter() - t0, os.times()
    cpu = sum(c1[:4]) - sum(c0[:4])       # user+system of this process and of the workers it waited for
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024   # the largest worker process
    with open(out, "w") as f:
        json.dump({"seconds": seconds, "cpu_seconds": cpu, "read_seconds": read_s, "rss_mb": rss_mb,
                   "worker_rss_mb": child_mb,
                   "clusters": clusters,
                   "stats": {"rows": stats.rows, "exact_rows": stats.exact_rows, "compared": stats.compared,
                             "filtered": stats.filtered, "passes": stats.passes, "cpu": stats.seconds}}, f)


def run_child(db: Path, fields: str, threshold: float, workers: int | None = None,
              python: str | None = None) -> dict:
    """The dedup in a fresh process: this checkout's code, or (python: another checkout's interpreter, e.g.
    /work/main/.venv/bin/python) that checkout's, run from its root so its worker processes import it too."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    env, cwd = None, None
    if python:
        cwd = str(Path(python).absolute().parent.parent.parent) if Path(python).parent.parent.name == ".venv" else None
        if cwd is None:
            raise SystemExit(f"--reference-python {python}: expected a checkout's .venv/bin/python")
        env = {**os.environ, "BENCH_CODE_ROOT": cwd}
    try:
        subprocess.run([python or sys.executable, str(Path(__file__).resolve()), "--child", str(db), fields,
                        str(threshold), out, str(workers or 0)], check=True, env=env, cwd=cwd)
        with open(out) as f:
            return json.load(f)
    finally:
        os.unlink(out)


TARGET_ROWS, TARGET_SECONDS = 1_000_000, 20.0     # issue 15: dedup of 1M rows <= 20 s, P and R >= 0.99
TARGET_KB_PER_ROW = 0.5    # peak RSS of the dedup's process per row in scope (0.88 at 1M before dedup-mem)


def _store(n: int, threshold: float, workdir: Path, keep: Path | None) -> tuple[Path, list[list[int]], str]:
    """The synthetic store of n rows and its planted groups: built in workdir, or kept in (and reused from)
    `keep` with the groups beside it."""
    if keep is not None:
        db, truth_file = keep / f"synthetic-{n}-t{threshold}.db", keep / f"synthetic-{n}-t{threshold}.truth.json"
        if db.exists() and truth_file.exists():
            return db, json.loads(truth_file.read_text()), f"reused {db}"
    else:
        db = workdir / f"synthetic-{n}.db"
    for f in db.parent.glob(db.name + "*"):
        f.unlink()
    t0 = time.perf_counter()
    truth, kinds = build_store(db, n, threshold=threshold)
    note = f"built in {time.perf_counter() - t0:.0f} s; {', '.join(f'{k} {v:,}' for k, v in sorted(kinds.items()))}"
    if keep is not None:
        truth_file.write_text(json.dumps(truth))
    return db, truth, note


def _report(label: str, res: dict, truth: list[list[int]], n: int) -> tuple[float, float]:
    p, r, fp, tp = pair_scores(res["clusters"], truth)
    secs, ref = res["seconds"], res["read_seconds"]
    kb = res["rss_mb"] * 1024 / n
    print(f"  {label}: fields {','.join(FIELDS)}: {secs:.1f} s = {secs / ref:.1f}x a plain read of the same rows "
          f"({ref:.1f} s, same process); CPU {res.get('cpu_seconds', float('nan')):.1f} s (with its workers); "
          f"peak RSS {res['rss_mb']:.0f} MB = {kb:.2f} KB/row (+ worker {res['worker_rss_mb']:.0f} MB)")
    print(f"    precision {p:.4f}, recall {r:.4f} ({tp:,} planted pairs, {fp:,} found), "
          f"{len(res['clusters']):,} clusters, {res['stats']['compared']:,} pairs compared "
          f"{res['stats']['passes']} after {res['stats']['filtered']:,} ruled out by character counts")
    return p, r


def bench_synthetic(n: int, threshold: float, workdir: Path, workers: list[int | None],
                    reference: str | None = None, keep: Path | None = None) -> None:
    db, truth, note = _store(n, threshold, workdir, keep)
    print(f"synthetic {n:>9,} rows ({note})")
    for w in workers:
        res = run_child(db, ",".join(FIELDS), threshold, w)
        p, r = _report(f"workers {w or 'auto'}", res, truth, n)
        secs, kb = res["seconds"], res["rss_mb"] * 1024 / n
        if reference:
            ref = run_child(db, ",".join(FIELDS), threshold, w, python=reference)
            _report(f"reference ({reference})", ref, truth, n)
            same = "identical clusters" if ref["clusters"] == res["clusters"] else "DIFFERENT clusters"
            print(f"    this code / reference: time {secs / ref['seconds']:.2f}x, CPU "
                  f"{res['cpu_seconds'] / ref['cpu_seconds']:.2f}x, peak RSS {res['rss_mb'] / ref['rss_mb']:.2f}x; "
                  f"{same}")
        if n == TARGET_ROWS:
            ok = secs <= TARGET_SECONDS and p >= 0.99 and r >= 0.99
            print(f"    target: {TARGET_ROWS:,} rows in <= {TARGET_SECONDS:.0f} s with P and R >= 0.99: "
                  f"{'met' if ok else 'NOT met'} ({secs:.1f} s, P {p:.4f}, R {r:.4f}; wall time on shared cores)")
        if n >= TARGET_ROWS:     # below, the interpreter and its libraries (~80 MB) dominate the figure
            print(f"    target: peak RSS <= {TARGET_KB_PER_ROW} KB/row: {'met' if kb <= TARGET_KB_PER_ROW else 'NOT met'} "
                  f"({kb:.2f} KB/row, {res['rss_mb']:.0f} MB for {n:,} rows)")
        cpu = res["stats"]["cpu"]
        print(f"    CPU seconds of this process by phase: {', '.join(f'{k} {v:.1f}' for k, v in cpu.items())} "
              f"(total {sum(cpu.values()):.1f}; the workers' CPU is not in here)")
    if keep is None:
        for f in workdir.glob(db.name + "*"):
            f.unlink()


REAL = [
    ("fastchat-sharegpt/dummy_conversation.json", None),
    ("hh-rlhf-harmless-test/harmless-base-test.jsonl", None),
    ("oasst-en100/oasst_en100_preference.jsonl", None),
    ("self-instruct-seed/seed_tasks_alpaca.json", None),
    ("self-instruct-user-oriented/user_oriented_dolly.jsonl", None),
    ("fastchat-bench-questions/mt_bench_questions.csv", None),
    ("rust-book-paragraphs/rust_book_paragraphs.jsonl", None),
]


def bench_real(threshold: float, workdir: Path) -> None:
    from workbench import importer
    data = Path(os.environ.get("WORKBENCH_SHARED_DATA") or ROOT.parent / "shared" / "data")
    if not data.is_dir() and Path("/work/shared/data").is_dir():    # a worktree under /work/wt (as conftest.py)
        data = Path("/work/shared/data")
    if not data.is_dir():
        print(f"real datasets: {data} not found")
        return
    print(f"real datasets (threshold {threshold}):")
    for rel, fmt in REAL:
        path = data / rel
        db = workdir / "real.db"
        for f in workdir.glob("real.db*"):
            f.unlink()
        conn = open_store(db)
        res = importer.import_file(conn, path, fmt=fmt)
        kind = conn.execute("SELECT kind FROM datasets").fetchone()[0]
        for fields in (dedup.default_fields(kind), FIELDS):
            stats = dedup.Stats()
            t0 = time.perf_counter()
            clusters = dedup.find_clusters(conn, fields=fields, threshold=threshold, stats=stats)
            secs = time.perf_counter() - t0
            rows = sum(len(c) for c in clusters)
            print(f"  {rel:<55} {res.rows:>5} rows  fields {','.join(fields):<26} {len(clusters):>4} clusters "
                  f"({rows} rows, {stats.exact_rows} exact repeats)  {secs * 1000:.0f} ms")
            if fields == FIELDS:
                break
        conn.close()
    for f in workdir.glob("real.db*"):
        f.unlink()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5], int(sys.argv[6]) or None)
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="*", default=[100_000])
    ap.add_argument("--threshold", type=float, default=THRESHOLD)
    ap.add_argument("--no-real", action="store_true")
    ap.add_argument("--workers", type=int, nargs="*", default=[0],
                    help="worker processes to measure with, one run each (0: the default choice)")
    ap.add_argument("--workdir", default=None, help="where the temporary stores go (default: a temp dir)")
    ap.add_argument("--store-dir", default=None, help="keep the synthetic stores here and reuse them")
    ap.add_argument("--reference-python", default=None,
                    help="also run the dedup with another checkout's interpreter and code (e.g. "
                         "/work/main/.venv/bin/python) on the same store, and print the ratios")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        for n in args.rows:
            bench_synthetic(n, args.threshold, work, [w or None for w in args.workers], args.reference_python,
                            Path(args.store_dir) if args.store_dir else None)
        if not args.no_real:
            bench_real(args.threshold, work)


if __name__ == "__main__":
    main()
