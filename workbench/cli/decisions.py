"""CLI: samples (list with scores and candidates), decide (Review's decisions from a script), spotcheck, agreement."""
from __future__ import annotations

import sys

from .. import agreement as agreement_mod
from .. import rounds
from .. import review, scores
from ..filters import FilterError, check_scores, iter_filtered, parse_filter
from ..samples import TEXT_FIELDS
from ..store import get_dataset
from ..decisions import UnknownIds
from ..names import name_problem
from .common import CliError, DataError, open_cli_store, print_json
from . import numbers
from .numbers import INT64_MAX


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
    p.add_argument("--limit", type=numbers.at_least(0), help="at most N samples")
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
    p.add_argument("--fraction", type=numbers.share, default=0.1, help="share of each bucket (default 0.1, at least 1)")
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

def _id_token(token: str) -> int | None:
    """A sample id in ASCII digits within SQLite's range, else None ('1e3', '0x10', '-1', '١' are not ids)."""
    if not token.isascii() or not token.isdigit():
        return None
    n = int(token)
    return n if 1 <= n <= INT64_MAX else None


def _parse_ids(text: str, where: str) -> dict[int, str]:
    """--ids 1,2,3 -> {id: where it was given}."""
    out: dict[int, str] = {}
    for part in text.split(","):
        part = part.strip()
        n = _id_token(part)
        if n is None:
            raise CliError(f"{where}: {_safe(part, 40)!r} is not a sample id (ids are whole numbers from 1, "
                           f"comma-separated)")
        out.setdefault(n, where)
    return out


def _read_ids(path: str) -> dict[int, str]:
    """--ids-from FILE -> {id: "FILE line N"} (its first line). A bad file is bad data (exit 1): unreadable, not
    UTF-8, or a line that is not one id; a UTF-8 byte order mark at the start is allowed (Windows editors)."""
    name = "stdin" if path == "-" else path
    try:
        data = sys.stdin.buffer.read() if path == "-" else open(path, "rb").read()
    except OSError as e:
        raise DataError(f"{name}: cannot read: {e.strerror or e}") from None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    out: dict[int, str] = {}
    for n, raw in enumerate(data.split(b"\n"), 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{name} line {n}: not UTF-8 text (byte {e.start + 1} of the line)") from None
        token = line.strip()
        if not token:
            continue
        sid = _id_token(token)
        if sid is None:
            raise DataError(f"{name} line {n}: {_safe(token, 40)!r} is not a sample id (one whole number from 1 "
                            f"a line)")
        out.setdefault(sid, f"{name} line {n}")
    return out


def _unknown(e: UnknownIds, where: dict[int, str], dataset: str) -> CliError:
    """The refusal naming where the first bad id was given (file and line, or --ids), and how many more."""
    bad = sorted([*e.missing, *e.elsewhere], key=list(where).index)
    first = bad[0]
    what = f"no sample with id {first}" if first in e.missing else f"sample {first} is not in dataset {dataset!r}"
    more = f"; {len(bad)} bad ids in all: {e.args[0]}" if len(bad) > 1 else " (nothing was decided)"
    err = DataError if where[first] != "--ids" else CliError      # a bad file: 1; the command line: 2
    return err(f"{where[first]}: {what}{more}")


def cmd_decide(args) -> int:
    if not args.ids and not args.ids_from:
        raise CliError("give --ids 1,2,3 or --ids-from FILE")
    where = _parse_ids(args.ids, "--ids") if args.ids else {}
    for sid, w in (_read_ids(args.ids_from) if args.ids_from else {}).items():
        where.setdefault(sid, w)
    ids = list(where)
    if not ids:
        raise DataError(f"{args.ids_from}: no sample ids in it (one whole number a line)")
    conn = _store(args)
    did = _dataset_id(conn, args.dataset)
    try:
        done = review.decide_many(conn, ids, args.action, review.curator_session(), args.reason, dataset_id=did)
    except UnknownIds as e:
        raise _unknown(e, where, args.dataset) from None
    if args.json:
        print_json(done)
    else:
        changed = sum(1 for d in done if d["before"] != d["after"])
        verb = {"accept": "accepted", "reject": "rejected", "reset": "reset to pending"}[args.action]
        print(f"{verb} {len(done)} sample{'s' if len(done) != 1 else ''} ({changed} changed status); "
              f"undo in Review with u")
        left = len(ids) - len(done)
        if left:
            print(f"left {left} sample{'s' if left != 1 else ''} as decided in Review while this ran")
    return 0


# --- spotcheck and agreement ----------------------------------------------------------------------------------

def cmd_spotcheck(args) -> int:
    problem = args.name is not None and name_problem(args.name, "selection")
    if problem:
        raise CliError(f"--name: {problem}")
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
