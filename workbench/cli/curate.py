"""CLI: clean (filters, normalization, runs, undo), dedup, sample, snapshots, diff."""
from __future__ import annotations

import sys

from .. import clean, dedup, sampling, snapshots
from .common import CliError, DataError, open_cli_store, print_json
from . import numbers
from ..config import ConfigError, load_config
from ..names import name_problem

PREVIEW_CLUSTERS = 20


def register(sub, common) -> None:
    p = sub.add_parser("clean", parents=[common], help="preview and apply heuristic filters or normalization; undo runs",
                       description="Without --apply nothing changes: the preview says how many rows each filter "
                                   "would reject per dataset, with examples. Applied runs are undoable.")
    p.add_argument("--dataset", action="append", help="dataset name (repeat for several; default: all)")
    p.add_argument("--filter", action="append", metavar="NAME[,NAME]",
                   help=f"filters to run (default: [clean] filters in the config, else {', '.join(clean.DEFAULT_FILTERS)}); "
                        f"all: {', '.join(clean.FILTERS)}")
    p.add_argument("--normalize", action="store_true",
                   help="normalize text (Unicode, whitespace, stray HTML; options in [clean.normalize]) instead")
    p.add_argument("--status", default=None,
                   help="rows to judge, comma-separated (default: pending for filters, pending,accepted for "
                        "--normalize)")
    p.add_argument("--apply", action="store_true", help="apply: reject the rows (or write the normalized text)")
    p.add_argument("--examples", type=numbers.at_least(0), default=3, help="example rows per filter in the preview")
    p.add_argument("--runs", action="store_true", help="list applied clean/dedup runs")
    p.add_argument("--undo", metavar="RUN", help="undo an applied run (e.g. filter-3, dedup-5, normalize-4)")
    p.add_argument("--exempt", type=numbers.sample_id, action="append", metavar="ID",
                   help="keep this row whatever the --filter filters (default: every filter) say; recorded, "
                        "repeatable")
    p.add_argument("--unexempt", type=numbers.sample_id, action="append", metavar="ID",
                   help="withdraw the row's exemption from the --filter filters (default: the every-filter one)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_clean)

    p = sub.add_parser("dedup", parents=[common], help="exact and near-duplicate clusters; keep the best of each",
                       description="Similarity is rapidfuzz's normalized Indel ratio (0..1) of casefolded text "
                                   "without punctuation; every compared part must reach the threshold.")
    p.add_argument("--dataset", action="append", help="dataset name (repeat for several; default: all)")
    p.add_argument("--fields", default=None,
                   help="instruction,input (default; plain-text datasets: response), add response to require "
                        "similar responses too")
    p.add_argument("--threshold", type=numbers.share, default=dedup.DEFAULT_THRESHOLD,
                   help=f"similarity in 0..1 (default {dedup.DEFAULT_THRESHOLD})")
    p.add_argument("--status", default="pending,accepted", help="rows to consider (default: pending,accepted)")
    p.add_argument("--apply", choices=("keep-best",),
                   help="keep the best score per cluster (else the earliest), reject the rest")
    p.add_argument("--rubric", help="the score keep-best ranks by (default: curate, else judge, else the first "
                                    "rubric present; see workbench/scores.py)")
    p.add_argument("--json", action="store_true",
                   help="print the clusters as a JSON list; each cluster a list of {id, line, dataset, status, "
                        "score, rubric, keep, exact, similarity}")
    p.set_defaults(handler=cmd_dedup)

    p = sub.add_parser("sample", parents=[common], help="balanced sampling into a named selection",
                       description="Target shares per task_type/domain/difficulty from a TOML file (see "
                                   "workbench/sampling.py); the selection is a named list, no sample is changed.")
    p.add_argument("--target", metavar="FILE", help="TOML with [targets.<dimension>] shares (not with --by deita)")
    p.add_argument("--size", type=numbers.at_least(1), help="rows wanted (default: size in the target file)")
    p.add_argument("--seed", type=int, help="random seed (default: seed in the target file, else 0)")
    p.add_argument("--into", metavar="NAME", help="selection name to write (omit with --dry-run)")
    p.add_argument("--dataset", action="append", help="dataset name (repeat; default: the file's, else all)")
    p.add_argument("--by", metavar="random|score:RUBRIC|deita",
                   help="order within buckets: random, or the best RUBRIC scores first (default: the file's, else "
                        "random); deita: no buckets, the top rows by quality x complexity (Deita's scorers) under a "
                        "ROUGE-L diversity bound")
    p.add_argument("--max-rouge", type=numbers.share, default=0.7, metavar="R",
                   help="with --by deita: take a row only if its ROUGE-L to every taken row is below R (default 0.7)")
    p.add_argument("--fields", default=None,
                   help="with --by deita: fields compared for diversity (default instruction,input,response)")
    p.add_argument("--min-score", action="append", metavar="RUBRIC=N", help="only rows whose RUBRIC score is >= N")
    p.add_argument("--max-score", action="append", metavar="RUBRIC=N", help="only rows whose RUBRIC score is <= N")
    p.add_argument("--include-stale", action="store_true", help="score bounds also match stale scores")
    p.add_argument("--diversity", type=numbers.share, metavar="T",
                   help="Deita-style: skip rows at least T similar to one already selected")
    p.add_argument("--fill", action="store_true", help="top up short buckets' rows from buckets with rows to spare")
    p.add_argument("--replace", action="store_true", help="overwrite an existing selection of that name")
    p.add_argument("--dry-run", action="store_true", help="preview only: projected histograms and short buckets")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_sample)

    p = sub.add_parser("snapshots", parents=[common], help="list export snapshots")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_snapshots)

    p = sub.add_parser("diff", parents=[common], help="what was added, removed or changed between two snapshots")
    p.add_argument("a", metavar="SNAP_A", help="snapshot id or name")
    p.add_argument("b", metavar="SNAP_B", help="snapshot id or name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_diff)


def _store(args):
    return open_cli_store(args)


def _config(args) -> dict:
    try:
        return load_config(getattr(args, "config", None))
    except ConfigError as e:
        raise DataError(str(e)) from None


def _statuses(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def _err(e: Exception) -> CliError:
    if isinstance(e, (sampling.TargetError, ConfigError)):   # a file the command read is bad: exit 1
        return DataError(str(e))
    return CliError(e.args[0] if isinstance(e, KeyError) and e.args else str(e))


def _short(text: str, width: int = 70) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[:width - 1] + "…"


# --- clean ---------------------------------------------------------------------------------------------------

def _exempt(conn, args) -> int:
    from ..automatic import ALL_FILTERS, exempt, unexempt
    from ..review import curator_session
    if args.apply or args.normalize:
        raise CliError("--exempt/--unexempt record the curator's choice on their own: leave out --apply/--normalize")
    names = clean.parse_filters(args.filter) if args.filter else [ALL_FILTERS]
    both = sorted(set(args.exempt or []) & set(args.unexempt or []))
    if both:
        raise CliError(f"#{both[0]} is given to both --exempt and --unexempt: say one")
    args.exempt, args.unexempt = (list(dict.fromkeys(x or [])) for x in (args.exempt, args.unexempt))
    for sid in [*(args.exempt or []), *(args.unexempt or [])]:   # all or nothing: check every id first
        if conn.execute("SELECT 1 FROM samples WHERE id = ?", (sid,)).fetchone() is None:
            raise CliError(f"--exempt/--unexempt: no sample with id {sid}")
    session, out = curator_session(), {"exempted": [], "unexempted": []}
    for sid in args.exempt or []:
        for n in names:
            exempt(conn, sid, n, session)
            out["exempted"].append({"id": sid, "filter": n})
    for sid in args.unexempt or []:
        for n in names:
            if not unexempt(conn, sid, n, session):
                raise CliError(f"#{sid} has no exemption from {'every filter' if n == ALL_FILTERS else n}")
            out["unexempted"].append({"id": sid, "filter": n})
    if args.json:
        print_json(out)
    else:
        for key, verb in (("exempted", "kept"), ("unexempted", "no longer kept")):
            for e in out[key]:
                what = "every filter" if e["filter"] == ALL_FILTERS else e["filter"]
                print(f"#{e['id']}: {verb} whatever {what} says")
    return 0


def cmd_clean(args) -> int:
    conn = _store(args)
    try:
        if args.runs:
            return _print_runs(conn, args.json)
        if args.undo:
            res = clean.undo_run(conn, args.undo)
            if args.json:
                print_json({"run": res.run, "reverted": res.reverted, "changed_since": res.changed_since,
                            "already_undone": res.already_undone})
            else:
                print(f"undid {res.reverted} rows of {res.run}")
                if res.changed_since:
                    print(f"left {len(res.changed_since)} rows alone: changed after the run "
                          f"(e.g. #{', #'.join(map(str, res.changed_since[:5]))})")
                if res.already_undone:
                    print(f"{res.already_undone} rows were undone before")
            return 0
        if args.exempt or args.unexempt:
            return _exempt(conn, args)
        config = _config(args)
        if args.normalize:
            if args.filter:
                raise CliError("--normalize and --filter are separate steps: run one, then the other")
            return _normalize(conn, args, config)
        statuses = _statuses(args.status or "pending")
        result = clean.preview(conn, args.filter, args.dataset, config, statuses)
    except (KeyError, ValueError) as e:
        raise _err(e) from None
    applied = clean.apply_filters(conn, result) if args.apply else None
    if args.json:
        out = result.to_json(args.examples)
        if applied:
            out["applied"] = {"run": applied.run, "rejected": applied.rejected, "skipped": applied.changed_since}
        print_json(out)
        return 0
    scanned = sum(result.scanned.values())
    print(f"{'Applied' if applied else 'Preview'}: {', '.join(result.filters)} over {scanned:,} "
          f"{'/'.join(statuses)} rows in {len(result.scanned)} dataset(s)")
    datasets = sorted(result.scanned)
    for name in result.filters:
        by = result.counts[name]
        total = sum(by.values())
        per = ", ".join(f"{d} {by[d]:,}" for d in datasets if by.get(d))
        print(f"  {name:<20} {total:>8,}" + (f"   ({per})" if per and len(datasets) > 1 else ""))
        for h in result.examples(name, args.examples):
            print(f"      #{h.id} [{h.dataset}] {_short(h.detail)}")
    print(f"  {'would reject' if not applied else 'matched':<20} {result.total:>8,} of {scanned:,}")
    if result.exempted:
        print(f"  kept by the curator   {sum(result.exempted.values()):>7,}   (--exempt; "
              + ", ".join(f"{k} {v:,}" for k, v in result.exempted.items()) + ")")
    if applied:
        if applied.run:
            print(f"rejected {applied.rejected:,} rows as run {applied.run} "
                  f"(undo: workbench clean --undo {applied.run})")
        if applied.changed_since:
            print(f"left {applied.changed_since:,} rows alone: their status changed since the preview")
    elif result.total:
        print("nothing changed; add --apply to reject these rows")
    return 0


def _normalize(conn, args, config) -> int:
    result = clean.preview_normalize(conn, args.dataset, config, _statuses(args.status or "pending,accepted"))
    applied = clean.apply_normalize(conn, result) if args.apply else None
    if args.json:
        out = {"options": result.options, "scanned": result.scanned, "would_change": result.total,
               "by_dataset": result.counts,
               "examples": [{"id": sid, "dataset": ds, "before": b, "after": a}
                            for sid, ds, b, a in result.changes[:args.examples]]}
        if applied:
            out["applied"] = {"run": applied.run, "changed": applied.rejected, "skipped": applied.changed_since}
        print_json(out)
        return 0
    print(f"normalization ({', '.join(k for k, v in result.options.items() if v)}) "
          f"{'changed' if applied else 'would change'} {result.total:,} of {sum(result.scanned.values()):,} rows")
    for ds, n in sorted(result.counts.items()):
        print(f"  {ds:<30} {n:>8,}")
    for sid, ds, before, after in result.changes[:args.examples]:
        for f in after:
            print(f"  #{sid} {f}: {_short(repr(before[f]), 60)}\n  {' ' * len(str(sid))}  {'':{len(f)}}→ "
                  f"{_short(repr(after[f]), 60)}")
    if applied and applied.run:
        print(f"wrote {applied.rejected:,} rows as run {applied.run} (undo: workbench clean --undo {applied.run})")
    elif not applied and result.total:
        print("nothing changed; add --apply to write it")
    return 0


def _print_runs(conn, as_json: bool) -> int:
    runs = clean.list_runs(conn)
    if as_json:
        print_json([vars(r) for r in runs])
        return 0
    if not runs:
        print("no curation runs yet")
        return 0
    print(f"{'run':<16} {'rows':>8} {'undone':>8}  {'when':<20}  reasons")
    for r in runs:
        reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(r.reasons.items()))
        print(f"{r.run:<16} {r.rows:>8,} {r.undone:>8,}  {r.created_at:<20}  {reasons}")
    return 0


# --- dedup ---------------------------------------------------------------------------------------------------

def cmd_dedup(args) -> int:
    conn = _store(args)
    try:
        fields = dedup.parse_fields(args.fields) if args.fields is not None else dedup.fields_for(conn, args.dataset)
        if not 0 < args.threshold <= 1:
            raise ValueError(f"--threshold is a similarity in (0, 1], not {args.threshold}")
        stats = dedup.Stats()
        ids = dedup.find_clusters(conn, args.dataset, fields, args.threshold, _statuses(args.status), stats=stats)
        clusters = dedup.describe(conn, ids, fields, rubric=args.rubric)
    except (KeyError, ValueError) as e:
        raise _err(e) from None
    plan = dedup.plan_keep_best(clusters)     # one computation: the preview prints it, --apply carries it out
    applied = dedup.apply_keep_best(conn, plan) if args.apply else None
    if args.json:
        print_json([[m.to_json() for m in c.members] for c in clusters])
        if applied:
            _applied_line(applied, file=sys.stderr)
        return 0
    rows = sum(len(c.members) for c in clusters)
    left = f", leave {len(plan.accepted):,} accepted" if plan.accepted else ""
    print(f"{len(clusters):,} clusters ({rows:,} rows; keep-best would reject {len(plan.reject):,}{left}) among "
          f"{stats.rows:,} rows, fields {','.join(fields)}, threshold {args.threshold}")
    for n, c in enumerate(clusters[:PREVIEW_CLUSTERS], 1):
        k = c.keeper
        others = ", ".join(f"#{m.id}" + (f" line {m.line}" if m.line else "") +
                           (" exact" if m.exact else f" {m.similarity:.2f}") for m in c.members if not m.keep)
        print(f"  {n:>3}. {c.kind:<5} keep #{k.id}" + (f" line {k.line}" if k.line else "") +
              (f" {k.rubric} {k.score:g}" if k.score is not None else "") + f" [{k.dataset}]  drop {_short(others, 80)}")
    if len(clusters) > PREVIEW_CLUSTERS:
        print(f"  … {len(clusters) - PREVIEW_CLUSTERS:,} more (--json lists them all)")
    if applied:
        _applied_line(applied)
    elif clusters:
        print("nothing changed; --apply keep-best rejects all but the best of each cluster")
    return 0


def _applied_line(applied: dedup.ApplyResult, file=None) -> None:
    file = file or sys.stdout
    if applied.run:
        print(f"rejected {applied.rejected:,} rows as run {applied.run} (undo: workbench clean --undo {applied.run})",
              file=file)
    else:
        print("nothing to reject", file=file)
    if applied.kept_accepted:
        print(f"left {applied.kept_accepted:,} accepted rows as they are (a curator accepted them)", file=file)


# --- sample --------------------------------------------------------------------------------------------------

def cmd_sample(args) -> int:
    if not args.dry_run and not args.into:
        raise CliError("--into NAME is needed to write a selection (or --dry-run to preview)")
    problem = args.into is not None and name_problem(args.into, "selection")
    if problem:
        raise CliError(f"--into: {problem}")
    if args.by == "deita":
        return _sample_deita(args)
    if not args.target:
        raise CliError("--target FILE is needed (or --by deita, which ranks by Deita's scores instead of buckets)")
    conn = _store(args)
    try:
        target = sampling.load_target(args.target)
        if args.by:
            target.by = sampling.check_by(args.by)
        if args.min_score:
            target.min_score = args.min_score
        if args.max_score:
            target.max_score = args.max_score
        if args.include_stale:
            target.include_stale = True
        if args.diversity is not None:
            if not 0 < args.diversity <= 1:
                raise ValueError(f"--diversity is a similarity in (0, 1], not {args.diversity}")
            target.diversity = args.diversity
        if args.fill:
            target.fill = True
        if args.size is not None and args.size < 1:
            raise ValueError("--size must be at least 1")
        result = sampling.plan(conn, target, args.size, args.seed, args.dataset)
        written = None
        if not args.dry_run:
            written = sampling.write_selection(conn, args.into, result, replace=args.replace)
    except (KeyError, ValueError) as e:
        raise _err(e) from None
    if args.json:
        out = result.to_json()
        out["selection"] = args.into if written is not None else None
        print_json(out)
        return 0
    print(f"{'selected' if written is not None else 'would select'} {len(result.ids):,} of {result.size:,} wanted "
          f"({result.eligible:,} eligible rows, seed {result.target.seed}, by {result.target.by}"
          + (f", diversity {result.target.diversity}, {result.skipped_similar:,} similar rows passed over"
             if result.target.diversity else "") + ")")
    for dim in result.wanted:
        print(f"  {dim:<24} {'target':>8} {'projected':>10} {'available':>10}")
        for label in sampling._labels(result, dim):
            want = result.wanted[dim].get(label, 0)
            got = result.projected[dim].get(label, 0)
            note = f"  short by {want - got:,}" if got < want else ""
            print(f"    {_short(label, 22):<22} {want:>8,} {got:>10,} {result.available[dim].get(label, 0):>10,}{note}")
    short = result.short
    if short:
        print("cannot reach target: " + "; ".join(f"{s.dim}={s.label} wants {s.target:,}, "
                                                 f"{s.available:,} available, {s.projected:,} selected"
                                                 for s in short))
    if written is not None:
        print(f"wrote selection {args.into!r} ({written:,} rows); export it with "
              f"`workbench export OUT --format alpaca --selection {args.into}`")
    return 0


def _sample_deita(args) -> int:
    from .. import deita
    if args.target or args.diversity is not None or args.fill:
        raise CliError("--by deita takes no --target, --diversity or --fill: it ranks by quality x complexity and "
                       "bounds similarity with --max-rouge")
    if not args.size:
        raise CliError("--by deita needs --size N")
    conn = _store(args)
    try:
        fields = tuple(f.strip() for f in args.fields.split(",") if f.strip()) if args.fields is not None \
            else deita.DEFAULT_FIELDS
        result = deita.plan(conn, args.size, datasets=args.dataset, max_rouge=args.max_rouge, fields=fields)
        written = None
        if not args.dry_run:
            written = sampling.store_selection(conn, args.into, result.ids, {
                "by": "deita", "size": args.size, "max_rouge": args.max_rouge, "fields": list(fields),
                "datasets": args.dataset, "missing": result.missing, "skipped_similar": result.skipped_similar},
                replace=args.replace)
    except (KeyError, ValueError) as e:
        raise _err(e) from None
    if args.json:
        print_json({**result.to_json(), "selection": args.into if written is not None else None})
        return 0
    missing = ", ".join(f"{v:,} without {k}" for k, v in sorted(result.missing.items()))
    print(f"{'selected' if written is not None else 'would select'} {len(result.ids):,} of {args.size:,} wanted by "
          f"quality x complexity ({result.eligible:,} scored rows{'; ' + missing if missing else ''}; "
          f"{result.skipped_similar:,} passed over at ROUGE-L >= {args.max_rouge})")
    if result.ids:
        top = [result.scores[i][0] * result.scores[i][1] for i in result.ids]
        print(f"  score (quality x complexity): best {top[0]:g}, last taken {top[-1]:g}")
    if written is not None:
        print(f"wrote selection {args.into!r} ({written:,} rows); export it with "
              f"`workbench export OUT --format alpaca --selection {args.into}`")
    return 0


# --- snapshots and diff ----------------------------------------------------------------------------------------

def cmd_snapshots(args) -> int:
    conn = _store(args)
    snaps = snapshots.list_snapshots(conn)
    if args.json:
        print_json([s.to_json() for s in snaps])
        return 0
    if not snaps:
        print("no snapshots yet: every `workbench export` makes one")
        return 0
    print(f"{'id':>4}  {'name':<16} {'created':<20} {'format':<12} {'rows':>8}  {'sha256':<12}  file")
    for s in snaps:
        print(f"{s.id:>4}  {_short(s.name or '', 16):<16} {s.created_at:<20} {s.format:<12} {s.rows:>8,}  "
              f"{s.sha256[:12]:<12}  {s.file}")
    return 0


def cmd_diff(args) -> int:
    conn = _store(args)
    try:
        d = snapshots.diff(conn, args.a, args.b)
    except KeyError as e:
        raise _err(e) from None
    if args.json:
        print_json(d.to_json())
        return 0
    print(f"{d.a.label()} -> {d.b.label()}: {len(d.added):,} added, {len(d.removed):,} removed, "
          f"{len(d.changed):,} changed, {d.unchanged:,} unchanged")
    for label, ids in (("added", d.added), ("removed", d.removed), ("changed", d.changed)):
        if ids:
            more = f" … {len(ids) - 20:,} more (--json lists them all)" if len(ids) > 20 else ""
            print(f"  {label}: #" + ", #".join(map(str, ids[:20])) + more)
    return 0
