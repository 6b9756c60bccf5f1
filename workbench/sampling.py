"""Balanced sampling into a named selection (non-destructive: samples are never changed or deleted).

Target file (TOML):

    size = 1000                  # rows wanted (the CLI's --size wins)
    seed = 7                     # the CLI's --seed wins; same seed + same data = same selection
    datasets = ["alpaca"]        # optional; the CLI's --dataset wins; default: every dataset
    status = ["pending", "accepted"]   # eligible rows (default: everything not rejected)
    by = "random"                # or "score:RUBRIC" (e.g. "score:curate"): the best scores first within each bucket;
                                 # "score" alone ranks by scores.primary_rubric
    min_score = ["curate=4.5"]   # optional: only rows with these fresh scores (RUBRIC=N; also max_score)
    include_stale = false        # true: min_score/max_score also match scores given before an edit
    diversity = 0.85             # optional, Deita-style: skip rows this similar (0..1) to one already selected
    fields = ["instruction", "input"]  # what diversity compares
    fill = false                 # true: when buckets fall short, top up from buckets with rows to spare

    [targets.task_type]          # shares per label; fractions or percentages; "*" = every other value,
    open_qa = 0.4                # "(none)" = rows without a value. Unlisted values get nothing unless "*"
    coding = 0.3                 # is given. Also read: [balance.targets.<dim>], the Balance screen's targets
    "*" = 0.3                    # in the config, so a config file works as a target file.

    [targets.difficulty]
    easy = 30
    hard = 70

    [targets.length]             # length buckets: characters of instruction + response, "lo-hi" (hi excluded)
    "0-300" = 0.3                # or "lo-" for no upper bound; rows in no bucket are not eligible unless
    "300-1500" = 0.5             # "*" is given
    "1500-" = 0.2

    [joint]                      # a joint target over two labels: a share per combination (cell)
    dims = ["task_type", "difficulty"]
    [joint.shares.qa]
    easy = 0.2
    hard = 0.3
    [joint.shares.coding]
    hard = 0.5

Dimensions: task_type, domain, difficulty (labels as the `label` task assigns them: tasks/label.py DEFAULT_LABELS,
or the config's [labels]; the README's "Sampling targets" section shows a whole file), length, and the joint dimension ("task_type x difficulty", its labels
"qa / easy", ...; the two labels it joins cannot also have targets of their own). With several, the quotas per
combination of labels come from iterative proportional fitting over the combinations that exist, capped by how
many rows each has — so every dimension's shares are met at once where the data allow, and the preview names the
buckets (for the joint target: the cells) that cannot be, with the shortfall of each.
"""
from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson

from . import dedup, scores
from .stats import NONE_LABEL, parse_targets
from .store import STATUSES, now, transaction
from .config import ConfigError, read_toml

DIMS = ("task_type", "domain", "difficulty")
LENGTH = "length"
LENGTH_SQL = "(instruction_len + response_len)"
JOINT_SEP = " / "
OTHER = "*"
IPF_ROUNDS = 200


class TargetError(ValueError):
    """A target file that cannot be used; the message names the file and the entry."""


@dataclass
class Target:
    shares: dict[str, dict[str, float]]          # dim -> label -> share (sums to 1 per dim)
    size: int | None = None
    seed: int = 0
    datasets: list[str] | None = None
    statuses: list[str] = field(default_factory=lambda: ["pending", "accepted"])
    by: str = "random"
    diversity: float | None = None
    min_score: list[str] = field(default_factory=list)
    max_score: list[str] = field(default_factory=list)
    include_stale: bool = False
    fields: tuple[str, ...] = dedup.DEFAULT_FIELDS
    fill: bool = False
    source: str | None = None
    length_buckets: dict[str, tuple[int, int | None]] = field(default_factory=dict)   # label -> [lo, hi)
    joint: tuple[str, str] | None = None

    @property
    def dims(self) -> list[str]:
        order = [*DIMS, LENGTH] + ([joint_name(self.joint)] if self.joint else [])
        return [d for d in order if d in self.shares]

    def expr(self, dim: str) -> str:
        """The SQL expression whose value is the row's label on `dim` (labels are validated, never user SQL)."""
        if dim in DIMS:
            return dim
        if dim == LENGTH:
            whens = " ".join(f"WHEN {LENGTH_SQL} >= {lo}" + (f" AND {LENGTH_SQL} < {hi}" if hi is not None else "")
                             + f" THEN '{label}'" for label, (lo, hi) in self.length_buckets.items())
            return f"(CASE {whens} END)"
        a, b = self.joint
        part = "(CASE WHEN coalesce({0}, '') = '' THEN '{1}' ELSE {0} END)"
        return f"({part.format(a, NONE_LABEL)} || '{JOINT_SEP}' || {part.format(b, NONE_LABEL)})"


def joint_name(dims: tuple[str, str]) -> str:
    return f"{dims[0]} x {dims[1]}"


_BUCKET = re.compile(r"(\d+)-(\d*)")


def _length_buckets(table: dict, bad) -> tuple[dict[str, tuple[int, int | None]], dict[str, float]]:
    buckets, shares = {}, {}
    for label, v in table.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise bad(f"[targets.length] {label} = {v!r}: a share must be a number >= 0")
        shares[str(label)] = float(v)
        if label == OTHER:
            continue
        m = _BUCKET.fullmatch(str(label))
        if not m or (m.group(2) and int(m.group(2)) <= int(m.group(1))):
            raise bad(f"[targets.length] {label!r}: a bucket is \"lo-hi\" in characters (hi > lo, excluded) or "
                      "\"lo-\" (no upper bound), e.g. \"0-300\"")
        buckets[str(label)] = (int(m.group(1)), int(m.group(2)) if m.group(2) else None)
    spans = sorted(buckets.values(), key=lambda b: b[0])
    for (lo1, hi1), (lo2, _) in zip(spans, spans[1:]):
        if hi1 is None or hi1 > lo2:
            raise bad(f"[targets.length]: buckets overlap at {lo2} characters")
    return buckets, shares


def _joint(data: dict, bad) -> tuple[tuple[str, str], dict[str, float]]:
    dims = data.get("dims")
    if not isinstance(dims, list) or len(dims) != 2 or any(d not in DIMS for d in dims) or dims[0] == dims[1]:
        raise bad(f"[joint] dims = {dims!r}: two different labels of {', '.join(DIMS)}")
    shares_t = data.get("shares")
    if not isinstance(shares_t, dict) or not shares_t:
        raise bad("[joint.shares.<first label>] tables of <second label> = share are missing")
    unknown = sorted(set(data) - {"dims", "shares"})
    if unknown:
        raise bad(f"[joint]: unknown key {unknown[0]!r} (dims, shares)")
    shares = {}
    for a, row in shares_t.items():
        if not isinstance(row, dict):
            raise bad(f"[joint.shares.{a}] must be a table of {dims[1]} label = share")
        for b, v in row.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise bad(f"[joint.shares.{a}] {b} = {v!r}: a share must be a number >= 0")
            if JOINT_SEP in a or JOINT_SEP in b:
                raise bad(f"[joint.shares.{a}] {b}: labels containing {JOINT_SEP!r} cannot be told apart")
            shares[f"{a}{JOINT_SEP}{b}"] = float(v)
    return (dims[0], dims[1]), shares


def parse_target(data: dict, source: str = "target") -> Target:
    def bad(msg: str) -> TargetError:
        return TargetError(f"{source}: {msg}")

    tables = data.get("targets")
    if tables is None and isinstance(data.get("balance"), dict):
        tables = data["balance"].get("targets")
    if not isinstance(tables or {}, dict):
        raise bad(f"targets = {tables!r}: [targets.<dimension>] tables of label = share are needed")
    tables = dict(tables or {})
    extra: dict[str, dict[str, float]] = {}
    buckets, joint = {}, None
    if isinstance(tables.get(LENGTH), dict):
        buckets, extra[LENGTH] = _length_buckets(tables.pop(LENGTH), bad)
    if "joint" in data:
        if not isinstance(data["joint"], dict):
            raise bad("[joint] must be a table with dims and shares")
        joint, joint_shares = _joint(data["joint"], bad)
        extra[joint_name(joint)] = joint_shares
        both = [d for d in joint if d in tables]
        if both:
            raise bad(f"[targets.{both[0]}] and the joint target over {joint_name(joint)} would pull against each "
                      "other: give one or the other")
    if not tables and not extra:
        raise bad("no [targets.<dimension>] table (dimensions: " + ", ".join((*DIMS, LENGTH)) + ") and no [joint]")
    try:
        raw = parse_targets({"balance": {"targets": tables}}) if tables else {}
    except ValueError as e:
        raise bad(str(e)) from None
    for dim, table in extra.items():
        scale = 100.0 if any(v > 1 for v in table.values()) else 1.0
        raw[dim] = {label: v / scale for label, v in table.items()}
    shares = {}
    for dim, table in raw.items():
        if dim not in DIMS and dim not in extra:
            raise bad(f"[targets.{dim}]: balanced sampling works on {', '.join((*DIMS, LENGTH))} (and [joint])")
        total = sum(table.values())
        if total <= 0:
            raise bad(f"[targets.{dim}]: the shares add up to 0")
        shares[dim] = {label: v / total for label, v in table.items()}
    t = Target(shares, source=source, length_buckets=buckets, joint=joint)
    if "size" in data:
        if not isinstance(data["size"], int) or isinstance(data["size"], bool) or data["size"] < 1:
            raise bad(f"size = {data['size']!r}: a whole number >= 1")
        t.size = data["size"]
    if "seed" in data:
        if not isinstance(data["seed"], int) or isinstance(data["seed"], bool):
            raise bad(f"seed = {data['seed']!r}: a whole number")
        t.seed = data["seed"]
    if "datasets" in data:
        if not isinstance(data["datasets"], list) or not all(isinstance(d, str) for d in data["datasets"]):
            raise bad(f"datasets = {data['datasets']!r}: a list of dataset names")
        t.datasets = list(data["datasets"])
    if "status" in data:
        statuses = [data["status"]] if isinstance(data["status"], str) else data["status"]
        if not isinstance(statuses, list):
            raise bad(f"status = {statuses!r}: a status or a list of them ({', '.join(STATUSES)})")
        for s in statuses:
            if s not in STATUSES:
                raise bad(f"status {s!r}: one of {', '.join(STATUSES)}")
        t.statuses = statuses
    if "by" in data:
        try:
            t.by = check_by(data["by"])
        except ValueError as e:
            raise bad(str(e)) from None
    for key in ("min_score", "max_score"):
        if key in data:
            values = [data[key]] if isinstance(data[key], str) else data[key]
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise bad(f"{key} = {data[key]!r}: \"RUBRIC=N\" or a list of them, e.g. [\"curate=4.5\"]")
            try:
                scores.build(values if key == "min_score" else None, values if key == "max_score" else None)
            except scores.ScoreFilterError as e:
                raise bad(str(e)) from None
            setattr(t, key, values)
    if "include_stale" in data:
        if not isinstance(data["include_stale"], bool):
            raise bad(f"include_stale = {data['include_stale']!r}: true or false")
        t.include_stale = data["include_stale"]
    if "diversity" in data:
        d = data["diversity"]
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0 < d <= 1:
            raise bad(f"diversity = {d!r}: a similarity in (0, 1]")
        t.diversity = float(d)
    if "fields" in data:
        try:
            t.fields = dedup.parse_fields(data["fields"])
        except ValueError as e:
            raise bad(f"fields: {e}") from None
    if "fill" in data:
        t.fill = bool(data["fill"])
    return t


def check_by(by) -> str:
    """'random', 'score' (the primary rubric) or 'score:RUBRIC'."""
    if isinstance(by, str) and (by in ("random", "score") or (by.startswith("score:")
                                                              and scores.RUBRIC_RE.fullmatch(by[6:]))):
        return by
    raise ValueError(f"by = {by!r}: \"random\", or \"score:RUBRIC\" (e.g. \"score:curate\")")


def load_target(path: str | Path) -> Target:
    p = Path(path)
    try:
        data = read_toml(p)
    except FileNotFoundError:
        raise TargetError(f"{p}: no such file") from None
    except ConfigError as e:
        raise TargetError(str(e)) from None
    return parse_target(data, str(p))


# --- the plan -----------------------------------------------------------------------------------------------

@dataclass
class Shortfall:
    dim: str
    label: str
    target: int
    projected: int
    available: int


@dataclass
class Plan:
    target: Target
    size: int
    eligible: int
    available: dict[str, dict[str, int]]      # dim -> label -> eligible rows
    wanted: dict[str, dict[str, int]]         # dim -> label -> rows the shares ask for
    projected: dict[str, dict[str, int]]      # dim -> label -> rows selected
    ids: list[int]
    skipped_similar: int = 0                  # rows passed over by the diversity rule

    @property
    def short(self) -> list[Shortfall]:
        out = []
        for dim, labels in self.wanted.items():
            for label, want in labels.items():
                got = self.projected[dim].get(label, 0)
                if got < want:
                    out.append(Shortfall(dim, label, want, got, self.available[dim].get(label, 0)))
        return out

    def to_json(self) -> dict:
        return {"size": self.size, "selected": len(self.ids), "eligible": self.eligible, "seed": self.target.seed,
                "by": self.target.by, "diversity": self.target.diversity, "skipped_similar": self.skipped_similar,
                "histograms": {dim: {label: {"target": self.wanted[dim].get(label, 0),
                                             "projected": self.projected[dim].get(label, 0),
                                             "available": self.available[dim].get(label, 0)}
                                     for label in _labels(self, dim)} for dim in self.wanted},
                "short": [vars(s) for s in self.short]}


def _labels(plan: Plan, dim: str) -> list[str]:
    seen = list(plan.wanted[dim])
    seen += [lab for lab in plan.available[dim] if lab not in seen]
    return seen


def _label(value, table: dict[str, float]) -> str | None:
    if value is None or value == "":
        return NONE_LABEL if NONE_LABEL in table else (OTHER if OTHER in table else None)
    value = str(value)
    if value in table:
        return value
    return OTHER if OTHER in table else None


def _scope(conn, datasets, statuses) -> tuple[str, list]:
    ids = dedup.dataset_ids(conn, datasets)
    return dedup.scope_where(ids, statuses)


def _quotas(cells: list[tuple[tuple[str, ...], int]], dims: list[str], wanted: dict[str, dict[str, float]],
            size: int, fill: bool) -> list[int]:
    """Integer rows per cell: IPF towards every dimension's targets, capped by each cell's rows."""
    avail = np.array([n for _, n in cells], dtype=float)
    masks = [(np.array([c[d] == label for c, _ in cells]), want)
             for d, dim in enumerate(dims) for label, want in wanted[dim].items()]
    x = avail.copy()
    for _ in range(IPF_ROUNDS):
        prev = x.copy()
        for mask, want in masks:
            s = x[mask].sum()
            if s > 0:
                x[mask] *= want / s
        x = np.minimum(x, avail)
        if np.abs(x - prev).max() < 1e-6:
            break
    q = np.floor(x + 1e-9).astype(int)
    q = np.minimum(q, avail.astype(int))
    goal = min(int(round(x.sum())), size)
    rest = goal - int(q.sum())
    if rest > 0:     # largest remainders first
        frac = x - q
        for c in np.argsort(-frac, kind="stable")[:rest]:
            if q[c] < avail[c]:
                q[c] += 1
    if fill:
        deficit = size - int(q.sum())
        while deficit > 0:
            spare = avail - q
            room = np.flatnonzero(spare > 0)
            if room.size == 0:
                break
            weight = (x[room] + 1e-9) / (x[room] + 1e-9).sum()
            add = np.minimum(np.floor(weight * deficit).astype(int), spare[room].astype(int))
            if add.sum() == 0:                          # fewer rows to place than cells: one each, best first
                add[np.argsort(-weight, kind="stable")[:deficit]] = 1
                add = np.minimum(add, spare[room].astype(int))
            q[room] += add
            deficit -= int(add.sum())
    return q.tolist()


def plan(conn: sqlite3.Connection, target: Target, size: int | None = None, seed: int | None = None,
         datasets: list[str] | None = None) -> Plan:
    """Choose the rows (nothing is written): quotas per bucket, then rows in preference order within them."""
    size = size if size is not None else target.size
    if not size or size < 1:   # the command line lacks a size: usage, not a bad file
        raise ValueError("no target size: give --size N or size = N in the target file")
    if seed is not None:
        target.seed = seed
    if datasets:
        target.datasets = list(datasets)
    dims = target.dims
    cols = ", ".join(target.expr(d) for d in dims)
    where, params = _scope(conn, target.datasets, target.statuses)
    sf = scores.resolve(conn, target.min_score, target.max_score, target.include_stale)   # refuses bare numbers
    if sf:
        cond, cparams = sf.sql("samples.id")
        where, params = f"({where}) AND {cond}", [*params, *cparams]

    # eligible rows per combination of labels (an indexed GROUP BY; rows in no bucket are not eligible)
    cells: dict[tuple[str, ...], int] = {}
    available = {d: {} for d in dims}
    eligible = 0
    for *values, n in conn.execute(f"SELECT {cols}, count(*) FROM samples WHERE {where} "
                                   f"GROUP BY {', '.join(str(i + 1) for i in range(len(dims)))}", params):
        labels = tuple(_label(v, target.shares[d]) for v, d in zip(values, dims))
        if None in labels:
            continue
        cells[labels] = cells.get(labels, 0) + n
        eligible += n
        for d, lab in zip(dims, labels):
            available[d][lab] = available[d].get(lab, 0) + n
    wanted_f = {d: {lab: share * size for lab, share in target.shares[d].items()} for d in dims}
    wanted = {d: _round_shares(wanted_f[d], size) for d in dims}
    cell_list = sorted(cells.items())
    quotas = _quotas(cell_list, dims, wanted_f, size, target.fill) if cell_list else []
    quota = {c: q for (c, _), q in zip(cell_list, quotas)}

    ids, skipped = _pick(conn, target, dims, where, params, quota)
    projected = {d: {} for d in dims}
    for labels, n in _count_cells(conn, dims, target, ids).items():
        for d, lab in zip(dims, labels):
            projected[d][lab] = projected[d].get(lab, 0) + n
    return Plan(target, size, eligible, available, wanted, projected, ids, skipped)


def _round_shares(want: dict[str, float], size: int) -> dict[str, int]:
    """Whole-row targets that add up to the size (largest remainders)."""
    out = {lab: int(v) for lab, v in want.items()}
    rest = size - sum(out.values())
    for lab in sorted(want, key=lambda k: -(want[k] - int(want[k])))[:max(rest, 0)]:
        out[lab] += 1
    return out


def _pick(conn, target: Target, dims: list[str], where: str, params: list,
          quota: dict[tuple[str, ...], int]) -> tuple[list[int], int]:
    """Walk the eligible rows in preference order (seeded shuffle; best score first with by="score") and take
    each while its bucket has room — and, with diversity, while nothing similar is selected yet."""
    index = {c: i for i, c in enumerate(quota)}
    left = np.array([quota[c] for c in quota], dtype=np.int64)
    ids, cell_of, ranked = [], [], []
    rubric = None
    if target.by.startswith("score"):
        present = scores.rubrics(conn)
        rubric = target.by[6:] or scores.primary_rubric(present)
        if target.by != "score" and rubric not in present:
            raise TargetError(f"by = {target.by!r}: nothing is scored on {rubric!r}; "
                              + (f"rubrics present: {', '.join(sorted(present))}" if present else "no scores yet"))
    score_sql = scores.ranked_sql(rubric, "samples.id") if rubric else "NULL"
    for sid, score, *values in conn.execute(f"SELECT id, {score_sql}, {', '.join(target.expr(d) for d in dims)} "
                                            f"FROM samples WHERE {where} "
                                            f"ORDER BY id", params):
        labels = tuple(_label(v, target.shares[d]) for v, d in zip(values, dims))
        c = index.get(labels)
        if c is None or left[c] == 0:
            continue
        ids.append(sid)
        cell_of.append(c)
        ranked.append(np.nan if score is None else score)
    if not ids:
        return [], 0
    ids_a = np.array(ids, dtype=np.int64)
    shuffle = np.random.default_rng(target.seed).permutation(len(ids_a))
    if rubric is not None:
        s = np.array(ranked, dtype=float)
        s = np.where(np.isnan(s), -np.inf, s)
        order = np.lexsort((shuffle, -s))        # best score first; ties (and unscored) in seeded order
    else:
        order = np.argsort(shuffle)
    cluster_of = {}
    if target.diversity is not None:
        for k, members in enumerate(dedup.find_clusters(conn, target.datasets, fields=target.fields,
                                                        threshold=target.diversity, statuses=target.statuses,
                                                        ids=ids)):
            for m in members:
                cluster_of[m] = k
    taken_clusters: set[int] = set()
    chosen, skipped = [], 0
    need = int(left.sum())
    cells = np.array(cell_of, dtype=np.int64)
    for pos in order.tolist():
        c = cells[pos]
        if left[c] == 0:
            continue
        sid = int(ids_a[pos])
        k = cluster_of.get(sid)
        if k is not None:
            if k in taken_clusters:
                skipped += 1
                continue
            taken_clusters.add(k)
        chosen.append(sid)
        left[c] -= 1
        need -= 1
        if need == 0:
            break
    return sorted(chosen), skipped


def _count_cells(conn, dims: list[str], target: Target, ids: list[int]) -> dict[tuple[str, ...], int]:
    out: dict[tuple[str, ...], int] = {}
    for i in range(0, len(ids), 900):
        chunk = ids[i:i + 900]
        for values in conn.execute(f"SELECT {', '.join(target.expr(d) for d in dims)} FROM samples "
                                   f"WHERE id IN ({','.join('?' * len(chunk))})",
                                   chunk):
            labels = tuple(_label(v, target.shares[d]) for v, d in zip(values, dims))
            out[labels] = out.get(labels, 0) + 1
    return out


# --- selections ---------------------------------------------------------------------------------------------

class SelectionExists(ValueError):
    pass


def write_selection(conn: sqlite3.Connection, name: str, result: Plan, replace: bool = False) -> int:
    """Store the plan's rows as selection `name` (with how it was made, in meta 'selection:<name>')."""
    info = {"target": result.target.source, "size": result.size, "seed": result.target.seed,
            "by": result.target.by, "diversity": result.target.diversity, "datasets": result.target.datasets,
            "short": [vars(s) for s in result.short]}
    return store_selection(conn, name, result.ids, info, replace)


def store_selection(conn: sqlite3.Connection, name: str, ids: list[int], info: dict, replace: bool = False) -> int:
    """Rows `ids` as selection `name`, `info` (how it was made) in meta 'selection:<name>'; one transaction."""
    if not name.strip():
        raise ValueError("a selection needs a name")
    with transaction(conn):
        exists = conn.execute("SELECT 1 FROM selections WHERE name = ? LIMIT 1", (name,)).fetchone()
        if exists and not replace:
            raise SelectionExists(f"selection {name!r} exists; choose another name or replace it")
        conn.execute("DELETE FROM selections WHERE name = ?", (name,))
        conn.executemany("INSERT INTO selections (name, sample_id) VALUES (?, ?)", ((name, i) for i in ids))
        info = {"created_at": now(), **info, "rows": len(ids)}
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                     (f"selection:{name}", orjson.dumps(info).decode()))
    return len(ids)
