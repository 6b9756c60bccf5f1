"""CLI: samples (list with scores and candidates), decide (Review's decisions from a script), spotcheck, agreement."""
from __future__ import annotations

import sys

from .. import agreement as agreement_mod
from .. import rounds
from .. import review, scores
from ..filters import FilterError, check_scores, iter_filtered, parse_filter
from ..samples import TEXT_FIELDS
from ..store import get_dataset
from .common import CliError, open_cli_store, print_json


def register(sub, common) -> None:
    p = sub.add_parser("samples", parents=[common], help="list a dataset's samples with their scores and candidates",
                       description="Samples in id order: id, status, every rubric's score with its scale and stale "
                                   "flag, the text fields, and the candidates (model, text, scores).")
    p.add_argument("--dataset", required=True)
    p.add_argument("--filter", action="append", metavar="K=V",
                   help="the job filter keys (status=, task_type=, min_score=RUBRIC=N, ...; repeatable)")
    p.add_argument("--min-score", action="append", metavar="RUBRIC=N", help="same as --filter min_score=RUBRIC=N")
    p.add_argument("--max-score", action="append", metavar="RUBRIC=N", help="same as --filter max_score=RUBRIC=N")
    p.add_argument("--include-stale", action="store_true", help="score bounds also match stale scores")
    p.add_argument("--limit", type=int, help="at most N samples")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_samples)

    p = sub.add_parser("decide", parents=[common], help="accept, reject or reset samples, as the Review keys do",
                       description="Each decision is logged like a Review key press (append-only, undoable with "
                                   "`u` in Review). All ids are checked first: one bad id and nothing is decided.")
    p.add_argument("--dataset", required=True)
    p.add_argument("--ids", metavar="1,2,3", help="sample ids, comma-separated")
    p.add_argument("--ids-from", metavar="FILE", help="sample ids, one per line ('-': stdin)")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--accept", dest="action", action="store_const", const="accept")
    how.add_argument("--reject", dest="action", action="store_const", const="reject")
    how.add_argument("--reset", dest="action", action="store_const", const="reset", help="back to pending")
    p.add_argument("--reason", help="recorded with each decision")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_decide)

    p = sub.add_parser("spotcheck", parents=[common], help="a named selection for checking a rubric's scores by hand",
                       description="Pending samples with a fresh score on the rubric, stratified over its score "
                                   "buckets. Walk it with `workbench review --dataset D --selection NAME` (the "
                                   "rubric's scores stay hidden until you decide), then run `workbench agreement`.")
    p.add_argument("--dataset", required=True)
    p.add_argument("--rubric", required=True, help="e.g. curate, judge, judge.alignment")
    p.add_argument("--fraction", type=float, default=0.1, help="share of each bucket (default 0.1, at least 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", help="selection name (default: spotcheck-DATASET-RUBRIC)")
    p.add_argument("--replace", action="store_true", help="overwrite an existing selection of that name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_spotcheck)

    p = sub.add_parser("agreement", parents=[common], help="how well a rubric's scores match curator decisions",
                       description="Over samples with a fresh score and a curator accept/reject: accept rate per "
                                   "score, ROC AUC, the best threshold and its accuracy, Cohen's kappa at the "
                                   "configured threshold (see workbench/agreement.py).")
    p.add_argument("--dataset", required=True)
    p.add_argument("--rubric", required=True)
    p.add_argument("--threshold", type=float, help="kappa at this threshold instead of the configured one")
    p.add_argument("--round", metavar="K|none",
                   help="only the samples in Humpback round K (curate: round K's own verdicts), or in no round")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_agreement)


def _store(args):
    return open_cli_store(args)


def _dataset_id(conn, name: str) -> int:
    row = get_dataset(conn, name)
    if row is None:
        names = [r[0] for r in conn.execute("SELECT name FROM datasets ORDER BY id")]
        raise CliError(f"no dataset named {name!r}" + (f"; datasets: {', '.join(names)}" if names else ""))
    return row[0]


def _safe(text, n: int | None = None) -> str:
    """One line of untrusted text for the terminal: control characters escaped, never interpreted."""
    text = "" if text is None else str(text)
    if n is not None and len(text) > n:
        text = text[:n - 1] + "…"
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


# --- samples -----------------------------------------------------------------------------------------------

def sample_record(s: dict) -> dict:
    """What `samples --json` prints for one sample (from review.load_sample)."""
    return {"id": s["id"], "dataset": s["dataset"], "status": s["status"],
            "scores": [{"rubric": x["rubric"], "score": x["score"], "scale": x["scale"], "stale": x["stale"],
                        "judge": x["judge"], "template_version": x["template_version"],
                        "created_at": x["created_at"]} for x in s["scores"]],
            "stale": any(x["stale"] for x in s["scores"]),
            **{f: s.get(f) for f in TEXT_FIELDS}, "messages": s.get("messages"),
            "task_type": s.get("task_type"), "domain": s.get("domain"),
            "candidates": [{"id": c["id"], "model": c["model"], "endpoint": c["endpoint"], "text": c["response"],
                            "scores": c["scores"]} for c in s["candidates"]]}


def cmd_samples(args) -> int:
    conn = _store(args)
    did = _dataset_id(conn, args.dataset)
    try:
        f = parse_filter(args.filter)
        for key, values in (("min_score", args.min_score), ("max_score", args.max_score)):
            if values:
                f[key] = list(f.get(key) or []) + values
        if args.include_stale:
            f["include_stale"] = True
        if args.limit is not None:
            if args.limit < 0:
                raise FilterError(f"--limit {args.limit}: a number >= 0")
            f["limit"] = args.limit
        check_scores(conn, did, f)
        ids = [s["id"] for s in iter_filtered(conn, did, f)]
    except (FilterError, ValueError) as e:
        raise CliError(str(e)) from None
    records = [sample_record(review.load_sample(conn, i)) for i in ids]
    if args.json:
        print_json(records)
        return 0
    for r in records:
        shown = scores.describe([{**x, "scale": x["scale"]} for x in r["scores"]])
        print(f"#{r['id']}  {r['status']:8}  {_safe(shown) or 'unscored'}")
        print(f"    {_safe(r['instruction'], 100)}")
        for c in r["candidates"]:
            print(f"    candidate #{c['id']} {_safe(c['model'], 40)}: {_safe(c['text'], 80)}")
    print(f"{len(records)} sample{'s' if len(records) != 1 else ''}", file=sys.stderr)
    return 0


# --- decide --------------------------------------------------------------------------------------------------

def _parse_ids(text: str, where: str) -> list[int]:
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or not part.isascii():
            raise CliError(f"{where}: {part!r} is not a sample id (ids are whole numbers, comma-separated)")
        out.append(int(part))
    return out


def _read_ids(path: str) -> list[int]:
    try:
        text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
    except (OSError, UnicodeDecodeError) as e:
        raise CliError(f"{path}: cannot read: {e}") from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        token = line.strip()
        if not token:
            continue
        if not token.isdigit() or not token.isascii():
            raise CliError(f"{path} line {n}: {_safe(token, 40)!r} is not a sample id (one whole number a line)")
        out.append(int(token))
    return out


def cmd_decide(args) -> int:
    if not args.ids and not args.ids_from:
        raise CliError("give --ids 1,2,3 or --ids-from FILE")
    ids = (_parse_ids(args.ids, "--ids") if args.ids else []) + (_read_ids(args.ids_from) if args.ids_from else [])
    if not ids:
        raise CliError("no sample ids given")
    conn = _store(args)
    did = _dataset_id(conn, args.dataset)
    try:
        done = review.decide_many(conn, ids, args.action, review.curator_session(), args.reason, dataset_id=did)
    except KeyError as e:
        raise CliError(e.args[0]) from None
    if args.json:
        print_json(done)
    else:
        changed = sum(1 for d in done if d["before"] != d["after"])
        verb = {"accept": "accepted", "reject": "rejected", "reset": "reset to pending"}[args.action]
        print(f"{verb} {len(done)} sample{'s' if len(done) != 1 else ''} ({changed} changed status); "
              f"undo in Review with u")
    return 0


# --- spotcheck and agreement ----------------------------------------------------------------------------------

def cmd_spotcheck(args) -> int:
    conn = _store(args)
    try:
        res = agreement_mod.spotcheck(conn, args.dataset, args.rubric, args.fraction, args.seed, args.name,
                                      args.replace)
    except agreement_mod.AgreementError as e:
        raise CliError(str(e)) from None
    if args.json:
        print_json(res)
        return 0
    print(f"selection {res['name']!r}: {res['selected']} of {res['eligible']} pending samples with a {res['rubric']} "
          f"score")
    for b in res["buckets"]:
        print(f"  bucket {b['bucket']:>4}: {b['selected']:>5} of {b['eligible']:>6}")
    print(f"review it: workbench review --dataset {args.dataset} --selection {res['name']}")
    return 0


def cmd_agreement(args) -> int:
    conn = _store(args)
    try:
        round_ = None if args.round is None else rounds.parse(args.round)
        res = agreement_mod.agreement(conn, args.dataset, args.rubric, args.threshold, round_=round_,
                                      by_round=round_ is None)
    except (agreement_mod.AgreementError, rounds.RoundError) as e:
        raise CliError(str(e)) from None
    if args.json:
        print_json(res)
        return 0
    for line in agreement_mod.report_lines(res):
        print(line)
    return 0
