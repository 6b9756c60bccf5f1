"""Spot-checks and judge-curator agreement: is a rubric's score worth trusting on this data?

`spotcheck` draws a named selection of pending samples with a fresh score on the rubric, stratified over its
score buckets (whole-number buckets: 4.5 is in bucket 4): from each bucket round(fraction * n) samples, at least
one, seeded. Review walks it (`workbench review --dataset D --selection NAME`) hiding that rubric's scores until
the sample is decided, so the curator is not anchored by the judge.

`agreement` compares the rubric's fresh scores with curator decisions: a sample counts when its latest
status-changing decision is a curator's accept or reject (Review keys or `workbench decide`), not an automatic
rejection (clean filters, dedup) and not an undone decision. Figures:
    n               samples with both a score and a curator decision
    buckets         per score value: n, accepted (a count) and accept_rate
    auc             ROC AUC of score against accept: the chance that an accepted sample scores above a rejected
                    one, ties counting 1/2 (midranks); None without both classes
    best_threshold  the threshold t (a score value; accept when score >= t) that reproduces the most decisions,
                    the lowest such t on a tie, with its `accuracy`
    kappa           Cohen's kappa between "score >= threshold" and accept, at the rubric's configured threshold:
                    curate -> the `threshold` param of the newest curate job that scored these samples (4.5 if
                    none is recorded); any other rubric -> the middle of its scale (judge 1-10: 5.5); `--threshold`
                    overrides. None when chance agreement is 1 (one class only on both sides).
Below MIN_RELIABLE decided samples the figures are still reported, flagged `unreliable` with a note.
"""
from __future__ import annotations

import math
import random
import sqlite3

import orjson

from . import rounds, scores
from .store import now, transaction

MIN_RELIABLE = 30
CURATE_DEFAULT_THRESHOLD = 4.5
# the decisions that set a sample's status; the latest of them says who decided it
STATUS_ACTIONS = ("accept", "reject", "reset", "filter", "dedup", "undo")
META_PREFIX = "spotcheck:"


class AgreementError(ValueError):
    """A spot-check or agreement request that cannot be answered; the message says why."""


def _dataset(conn: sqlite3.Connection, name: str | None) -> int | None:
    if name is None:
        return None
    row = conn.execute("SELECT id FROM datasets WHERE name = ?", (name,)).fetchone()
    if row is None:
        names = [r[0] for r in conn.execute("SELECT name FROM datasets ORDER BY id")]
        raise AgreementError(f"no dataset named {name!r}" + (f"; datasets: {', '.join(names)}" if names else ""))
    return row[0]


def _check_rubric(conn, rubric: str, dataset_id: int | None, dataset: str | None) -> tuple[float, float]:
    present = scores.rubrics(conn, dataset_id)
    if rubric not in present:
        where = f"dataset {dataset!r}" if dataset else "the store"
        raise AgreementError(f"no sample in {where} has a {rubric!r} score; "
                             + (f"rubrics present: {', '.join(sorted(present))}" if present else "none is scored yet"))
    return present[rubric]


def bucket_of(score: float) -> int:
    return math.floor(score)


# --- spot-check ------------------------------------------------------------------------------------------

def spotcheck(conn: sqlite3.Connection, dataset: str, rubric: str, fraction: float = 0.1, seed: int = 0,
              name: str | None = None, replace: bool = False) -> dict:
    if not 0 < fraction <= 1:
        raise AgreementError(f"--fraction {fraction:g}: a share in (0, 1], e.g. 0.1")
    did = _dataset(conn, dataset)
    _check_rubric(conn, rubric, did, dataset)
    name = name or f"spotcheck-{dataset}-{rubric}"
    by_bucket: dict[int, list[int]] = {}
    for sid, score in conn.execute(
            "SELECT s.id, sc.score FROM sample_scores sc JOIN samples s ON s.id = sc.sample_id "
            "WHERE sc.rubric = ? AND sc.stale = 0 AND s.dataset_id = ? AND s.status = 'pending' ORDER BY s.id",
            (rubric, did)):
        by_bucket.setdefault(bucket_of(score), []).append(sid)
    if not by_bucket:
        raise AgreementError(f"no pending sample in {dataset!r} has a fresh {rubric!r} score to spot-check")
    rng = random.Random(seed)
    chosen, buckets = [], []
    for b in sorted(by_bucket):
        ids = by_bucket[b]
        k = min(len(ids), max(1, math.floor(fraction * len(ids) + 0.5)))
        pick = sorted(rng.sample(ids, k))
        chosen += pick
        buckets.append({"bucket": b, "eligible": len(ids), "selected": k})
    chosen.sort()   # the order Review walks them in
    info = {"name": name, "dataset": dataset, "rubric": rubric, "fraction": fraction, "seed": seed,
            "eligible": sum(len(v) for v in by_bucket.values()), "selected": len(chosen), "buckets": buckets,
            "created_at": now()}
    with transaction(conn):
        if conn.execute("SELECT 1 FROM selections WHERE name = ? LIMIT 1", (name,)).fetchone():
            if not replace:
                raise AgreementError(f"a selection named {name!r} exists; give --name or --replace")
            conn.execute("DELETE FROM selections WHERE name = ?", (name,))
        conn.executemany("INSERT INTO selections (name, sample_id) VALUES (?, ?)", ((name, i) for i in chosen))
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                     (META_PREFIX + name, orjson.dumps(info).decode()))
    return {**info, "ids": chosen}


def spotcheck_info(conn: sqlite3.Connection, name: str | None) -> dict | None:
    """What `spotcheck` recorded about a selection (None: not a spot-check)."""
    if not name:
        return None
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (META_PREFIX + name,)).fetchone()
    return orjson.loads(row[0]) if row else None


def decided_by_curator(conn: sqlite3.Connection, sample_id: int) -> bool:
    """Whether the sample's status was last set by a curator's accept or reject."""
    row = conn.execute(f"SELECT action FROM decisions WHERE sample_id = ? AND action IN "
                       f"({','.join('?' * len(STATUS_ACTIONS))}) ORDER BY id DESC LIMIT 1",
                       (sample_id, *STATUS_ACTIONS)).fetchone()
    return bool(row) and row[0] in ("accept", "reject")


# --- agreement -------------------------------------------------------------------------------------------

def decided_pairs(conn: sqlite3.Connection, rubric: str, dataset_id: int | None,
                  round_: int | str | None = None) -> list[tuple[float, bool]]:
    """(score, accepted) for every sample with a fresh score on `rubric` and a curator decision; with `round_`
    only the samples in that Humpback round (or in none: 'none'), scored as read in that round (workbench/rounds.py)."""
    return [(score, acc) for _, score, acc in decided_rows(conn, rubric, dataset_id, round_)]


def decided_rows(conn: sqlite3.Connection, rubric: str, dataset_id: int | None,
                 round_: int | str | None = None) -> list[tuple[int, float, bool]]:
    """(sample id, score, accepted); see decided_pairs."""
    ds = "AND s.dataset_id = ?" if dataset_id is not None else ""
    score, sparams, rcond, rparams = "sc.score", (), "", ()
    if round_ is not None:
        score, sparams = rounds.score_sql(rubric, round_, "s")
        cond, cparams = rounds.condition(round_, "s")
        rcond, rparams = f"AND {cond} AND {score} IS NOT NULL", (*cparams, *sparams)
    # driven from the curator's decisions (index decisions_action): as cheap as there are human decisions
    sql = (f"SELECT s.id, {score}, d.action FROM (SELECT DISTINCT sample_id FROM decisions "
           f"WHERE action IN ('accept', 'reject')) c JOIN samples s ON s.id = c.sample_id "
           f"JOIN sample_scores sc ON sc.sample_id = s.id AND sc.rubric = ? AND sc.stale = 0 "
           f"JOIN decisions d ON d.id = (SELECT max(id) FROM decisions WHERE sample_id = s.id AND action IN "
           f"({','.join('?' * len(STATUS_ACTIONS))})) "
           f"WHERE ((d.action = 'accept' AND s.status = 'accepted') OR (d.action = 'reject' AND s.status = 'rejected')) "
           f"{ds} {rcond}")
    params = (*sparams, rubric, *STATUS_ACTIONS, *((dataset_id,) if dataset_id is not None else ()), *rparams)
    return [(sid, float(sc), action == "accept") for sid, sc, action in conn.execute(sql, params)]


def auc(pairs: list[tuple[float, bool]]) -> float | None:
    """ROC AUC by the rank-sum (Mann-Whitney) formula with midranks for tied scores."""
    pos = sum(1 for _, a in pairs if a)
    neg = len(pairs) - pos
    if not pos or not neg:
        return None
    ordered = sorted(s for s, _ in pairs)
    midrank: dict[float, float] = {}
    i = 0
    while i < len(ordered):
        j = i
        while j < len(ordered) and ordered[j] == ordered[i]:
            j += 1
        midrank[ordered[i]] = (i + 1 + j) / 2     # ranks i+1..j, averaged
        i = j
    rank_sum = sum(midrank[s] for s, a in pairs if a)
    return (rank_sum - pos * (pos + 1) / 2) / (pos * neg)


def accuracy_at(pairs: list[tuple[float, bool]], threshold: float) -> float:
    return sum(1 for s, a in pairs if (s >= threshold) == a) / len(pairs)


def kappa_at(pairs: list[tuple[float, bool]], threshold: float) -> float | None:
    """Cohen's kappa between 'score >= threshold' and the curator's accept."""
    n = len(pairs)
    if not n:
        return None
    po = accuracy_at(pairs, threshold)
    p_pred = sum(1 for s, _ in pairs if s >= threshold) / n
    p_true = sum(1 for _, a in pairs if a) / n
    pe = p_pred * p_true + (1 - p_pred) * (1 - p_true)
    if pe >= 1:
        return None
    return (po - pe) / (1 - pe)


def configured_threshold(conn: sqlite3.Connection, rubric: str, dataset_id: int | None,
                         scale: tuple[float, float]) -> tuple[float, str]:
    """(threshold, where it comes from) for kappa; see the module doc."""
    if rubric == "curate":
        ds = "AND s.dataset_id = ?" if dataset_id is not None else ""
        row = conn.execute(
            f"SELECT j.id, j.params FROM jobs j WHERE j.kind = 'curate' AND j.id IN (SELECT sc.job_id FROM "
            f"sample_scores sc JOIN samples s ON s.id = sc.sample_id WHERE sc.rubric = 'curate' {ds}) "
            f"ORDER BY j.id DESC LIMIT 1", (dataset_id,) if dataset_id is not None else ()).fetchone()
        if row:
            t = ((orjson.loads(row[1]) or {}).get("task") or {}).get("threshold")
            if isinstance(t, (int, float)):
                return float(t), f"curate job {row[0]} param threshold"
        return CURATE_DEFAULT_THRESHOLD, "curate's default threshold"
    lo, hi = scale
    return (lo + hi) / 2, f"middle of the {lo:g}-{hi:g} scale"


def _figures(pairs: list[tuple[float, bool]], threshold: float) -> dict:
    """n, accepted, buckets, auc, best threshold and its accuracy, accuracy and kappa at `threshold`."""
    n = len(pairs)
    per: dict[float, list[int]] = {}
    for s, a in pairs:
        cell = per.setdefault(s, [0, 0])
        cell[0] += 1
        cell[1] += a
    buckets = [{"score": s, "n": k, "accepted": a, "accept_rate": a / k} for s, (k, a) in sorted(per.items())]
    best, best_acc = None, None
    for t in sorted(per):
        acc = accuracy_at(pairs, t)
        if best_acc is None or acc > best_acc:
            best, best_acc = t, acc
    return {"n": n, "accepted": sum(1 for _, a in pairs if a), "buckets": buckets, "auc": auc(pairs),
            "best_threshold": best, "accuracy": best_acc,
            "threshold_accuracy": accuracy_at(pairs, threshold) if n else None, "kappa": kappa_at(pairs, threshold),
            "unreliable": n < MIN_RELIABLE}


def _note(n: int, rubric: str, where: str = "") -> str:
    return (f"only {n} sample{'s' if n != 1 else ''}{where} with both a {rubric} score and a curator decision "
            f"(fewer than {MIN_RELIABLE}): these figures are unreliable")


def agreement(conn: sqlite3.Connection, dataset: str | None, rubric: str, threshold: float | None = None,
              round_: int | str | None = None, by_round: bool = False) -> dict:
    """The figures of the module doc. `round_`: only the samples in that Humpback round ('none': in no round),
    each scored as read in that round (workbench/rounds.py). `by_round`: also `rounds`, the same figures for each
    round the decided samples are in, and for those in none (`"round": null`)."""
    did = _dataset(conn, dataset)
    scale = _check_rubric(conn, rubric, did, dataset)
    if threshold is None:
        threshold, source = configured_threshold(conn, rubric, did, scale)
    else:
        source = "--threshold"
    pairs = decided_pairs(conn, rubric, did, round_)
    out = {"dataset": dataset, "rubric": rubric, "scale": list(scale), **_figures(pairs, threshold),
           "threshold": threshold, "threshold_source": source}
    if round_ is not None:
        out["round"] = None if round_ == rounds.NONE else int(round_)
    if out["unreliable"]:
        out["note"] = _note(out["n"], rubric, "" if round_ is None else f" of round {round_}")
    if by_round:
        out["rounds"] = []
        ids = [sid for sid, _, _ in decided_rows(conn, rubric, did)]
        present = sorted({r for rs in rounds.of_samples(conn, ids).values() for r in rs})
        for k in [*present, rounds.NONE]:
            fig = _figures(decided_pairs(conn, rubric, did, k), threshold)
            if k == rounds.NONE and not fig["n"]:
                continue
            fig.pop("buckets")
            out["rounds"].append({"round": None if k == rounds.NONE else k, **fig})
    return out


def _fmt(v, spec: str = ".3f") -> str:
    return "n/a" if v is None else format(v, spec)


def report_lines(res: dict) -> list[str]:
    """The agreement figures as plain lines (the CLI prints them, Balance shows them)."""
    lo, hi = res["scale"]
    scope = "" if "round" not in res else f" in round {res['round']}" if res["round"] is not None else \
        " in no round"
    lines = [f"{res['rubric']} ({lo:g}-{hi:g}) vs curator decisions in {res['dataset'] or 'all datasets'}{scope}: "
             f"n = {res['n']} ({res['accepted']} accepted)"]
    if res.get("note"):
        lines.append(f"UNRELIABLE: {res['note']}")
    lines.append(f"{'score':>7} {'n':>6} {'accepted':>9} {'rate':>6}")
    for b in res["buckets"]:
        lines.append(f"{b['score']:>7g} {b['n']:>6} {b['accepted']:>9} {b['accept_rate']:>6.0%}")
    lines.append(f"AUC {_fmt(res['auc'])} · best threshold {_fmt(res['best_threshold'], 'g')} "
                 f"(accuracy {_fmt(res['accuracy'])}) · kappa {_fmt(res['kappa'])} at {res['threshold']:g} "
                 f"({res['threshold_source']})")
    if any(r["round"] is not None for r in res.get("rounds") or ()):
        lines.append("per Humpback round (a sample can be in several; curate: each round's own verdict):")
        lines.append(f"{'round':>7} {'n':>6} {'accepted':>9} {'AUC':>6} {'kappa':>6}")
        for r in res["rounds"]:
            name = "none" if r["round"] is None else str(r["round"])
            lines.append(f"{name:>7} {r['n']:>6} {r['accepted']:>9} {_fmt(r['auc'], '.2f'):>6} "
                         f"{_fmt(r['kappa'], '.2f'):>6}" + ("  (unreliable)" if r["unreliable"] else ""))
    return lines
