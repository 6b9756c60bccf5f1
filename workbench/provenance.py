"""Where exported rows came from: the provenance block of an export's manifest, and one sample's full history.

An export's provenance covers its rows and their lineage (the samples they were made from, through `parent_id`):
the source files (sha256, format, mapping, rows), every clean/dedup/review step applied, every job that made or
judged a row (task, template name and version, models, params), and the licences of the datasets involved.
"""
from __future__ import annotations

import sqlite3
from array import array
from collections import Counter

import orjson

from . import scores

IDS = "temp.export_ids"          # filled by the exporter: the ids of the rows written
LINEAGE = "temp.export_lineage"  # those ids and all their ancestors
CURATION_ACTIONS = ("filter", "normalize", "dedup", "update")   # update: shards imported back (shard_update.py)


def _loads(text):
    if text is None:
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


class Rows:
    """What provenance needs of the exported rows, collected while the exporter writes them (the rows' pages are
    then not read again: at 10M rows the two passes that looked every exported row up in `samples` read as much
    as the data pass)."""

    def __init__(self):
        self.by_import: Counter = Counter()     # import_id -> exported rows
        self.by_dataset: Counter = Counter()    # dataset_id -> exported rows
        self.pairs: set = set()                 # (dataset_id, import_id): the licences
        self.parents = array("q")               # parent ids of exported rows (the lineage's start)
        self.job_rows = array("q")              # exported rows a job made

    def add(self, sid: int, dataset_id, import_id, parent_id, job_id) -> None:
        self.by_import[import_id] += 1
        self.by_dataset[dataset_id] += 1
        self.pairs.add((dataset_id, import_id))
        if parent_id is not None:
            self.parents.append(parent_id)
        if job_id is not None:
            self.job_rows.append(sid)


ANCESTORS = "temp.export_ancestors"   # lineage rows that were not exported (read from samples: few)
JOB_ROWS = "temp.export_job_rows"     # lineage rows a job made


def load_ids(conn: sqlite3.Connection, ids, rows: Rows) -> None:
    """The exported ids into temp tables (the store file is not touched), and their ancestors: only those are
    read from `samples`."""
    drop_ids(conn)
    conn.execute(f"CREATE TABLE {IDS} (id INTEGER PRIMARY KEY)")
    conn.executemany(f"INSERT INTO {IDS} (id) VALUES (?)", ((i,) for i in ids))
    conn.execute("CREATE TABLE temp.export_parents (id INTEGER PRIMARY KEY)")
    conn.executemany("INSERT OR IGNORE INTO temp.export_parents (id) VALUES (?)", ((i,) for i in rows.parents))
    # every ancestor, exported or not (an exported row's parent is among the parents already)
    conn.execute("CREATE TABLE temp.export_up (id INTEGER PRIMARY KEY)")
    conn.execute(
        f"INSERT INTO temp.export_up (id) WITH RECURSIVE up(id) AS (SELECT id FROM temp.export_parents "
        f"UNION SELECT s.parent_id FROM up JOIN samples s ON s.id = up.id WHERE s.parent_id IS NOT NULL "
        f"AND up.id NOT IN (SELECT id FROM {IDS})) SELECT id FROM up")
    conn.execute(f"CREATE TABLE {ANCESTORS} (id INTEGER PRIMARY KEY, dataset_id INTEGER, import_id INTEGER, "
                 f"job_id INTEGER)")
    conn.execute(f"INSERT INTO {ANCESTORS} (id, dataset_id, import_id, job_id) SELECT s.id, s.dataset_id, "
                 f"s.import_id, s.job_id FROM temp.export_up u JOIN samples s ON s.id = u.id "
                 f"WHERE u.id NOT IN (SELECT id FROM {IDS})")
    conn.execute(f"CREATE TABLE {LINEAGE} (id INTEGER PRIMARY KEY)")
    conn.execute(f"INSERT INTO {LINEAGE} (id) SELECT id FROM {IDS} UNION SELECT id FROM temp.export_up")
    conn.execute(f"CREATE TABLE {JOB_ROWS} (id INTEGER PRIMARY KEY)")
    conn.executemany(f"INSERT INTO {JOB_ROWS} (id) VALUES (?)", ((i,) for i in rows.job_rows))
    conn.execute(f"INSERT OR IGNORE INTO {JOB_ROWS} (id) SELECT id FROM {ANCESTORS} WHERE job_id IS NOT NULL")


def drop_ids(conn: sqlite3.Connection) -> None:
    for t in (IDS, LINEAGE, ANCESTORS, JOB_ROWS, "temp.export_parents", "temp.export_up"):
        conn.execute(f"DROP TABLE IF EXISTS {t}")


def export_provenance(conn: sqlite3.Connection, rows: Rows) -> dict:
    """Inside no transaction, after load_ids: the manifest's provenance sections."""
    lineage_by_import = Counter(rows.by_import)
    pairs = set(rows.pairs)
    for did, iid in conn.execute(f"SELECT dataset_id, import_id FROM {ANCESTORS}"):
        lineage_by_import[iid] += 1
        pairs.add((did, iid))
    sources = []
    wanted = sorted(i for i in lineage_by_import if i is not None)
    for (iid, did, dname, file, fmt, mapping, n, skipped, sha, lic, at) in _by_ids(
            conn, "SELECT i.id, i.dataset_id, d.name, i.file, i.format, i.mapping, i.rows, i.skipped, i.sha256, "
                  "i.license, i.imported_at FROM imports i LEFT JOIN datasets d ON d.id = i.dataset_id "
                  "WHERE i.id IN ({})", wanted):
        direct = rows.by_import.get(iid, 0)
        sources.append({"import_id": iid, "dataset": dname, "file": file, "sha256": sha, "format": fmt,
                        "mapping": _loads(mapping), "rows_imported": n, "rows_skipped_at_import": skipped,
                        "license": lic, "imported_at": at, "exported_rows": direct,
                        "lineage_rows": lineage_by_import[iid] - direct})
    sources.sort(key=lambda src: src["import_id"])
    steps = []
    for action, session, reason, n, first, last in conn.execute(
            f"SELECT action, session, reason, count(*), min(created_at), max(created_at) FROM decisions "
            f"WHERE sample_id IN (SELECT id FROM {LINEAGE}) AND action IN ({','.join('?' * len(CURATION_ACTIONS))}) "
            f"GROUP BY session, action, reason ORDER BY min(id)", CURATION_ACTIONS):
        steps.append({"step": action, "run": session, "reason": reason, "rows": n, "at": first})
    undone = dict(conn.execute(
        f"SELECT session, count(*) FROM decisions WHERE action = 'undo' AND sample_id IN (SELECT id FROM {LINEAGE}) "
        f"AND session IN (SELECT DISTINCT session FROM decisions WHERE action IN "
        f"({','.join('?' * len(CURATION_ACTIONS))})) GROUP BY session", CURATION_ACTIONS))
    for st in steps:
        if st["run"] in undone:
            st["undone_rows"] = undone[st["run"]]
    review = {a: n for a, n in conn.execute(
        f"SELECT action, count(*) FROM decisions WHERE sample_id IN (SELECT id FROM {IDS}) "
        f"AND action NOT IN ({','.join('?' * len(CURATION_ACTIONS))}) GROUP BY action ORDER BY action",
        CURATION_ACTIONS)}
    if review:
        steps.append({"step": "review", "decisions": review})
    jobs = _jobs(conn)
    ds_license = dict(conn.execute("SELECT id, license FROM datasets"))
    imp_license = dict(_by_ids(conn, "SELECT id, license FROM imports WHERE id IN ({})",
                               sorted({i for _, i in pairs if i is not None})))
    # a dataset's licence, else its import's (coalesce(d.license, i.license) as the rows were joined before)
    licenses = sorted({lic for did, iid in pairs
                       if (lic := ds_license.get(did) if ds_license.get(did) is not None else imp_license.get(iid))})
    unlicensed = sum(n for did, n in rows.by_dataset.items() if ds_license.get(did) is None)
    return {"sources": sources, "steps": steps, "jobs": jobs, "licenses": licenses,
            "rows_without_license": unlicensed}


def _by_ids(conn: sqlite3.Connection, sql: str, ids: list, chunk: int = 500):
    """Rows of `sql` (one `IN ({})`) for a list of ids, a chunk at a time (SQLite caps bound parameters)."""
    for lo in range(0, len(ids), chunk):
        part = ids[lo:lo + chunk]
        yield from conn.execute(sql.format(",".join("?" * len(part))), part)


def _jobs(conn: sqlite3.Connection) -> list[dict]:
    made: dict[int, dict] = {}
    for job, task, tmpl, version, model, endpoint, n in conn.execute(
            f"SELECT s.job_id, json_extract(s.origin, '$.task'), json_extract(s.origin, '$.template'), "
            f"json_extract(s.origin, '$.template_version'), json_extract(s.origin, '$.model'), "
            f"json_extract(s.origin, '$.endpoint'), count(*) "
            f"FROM {JOB_ROWS} l JOIN samples s ON s.id = l.id WHERE s.job_id IS NOT NULL "
            f"AND json_valid(s.origin) GROUP BY 1, 2, 3, 4, 5, 6"):
        j = made.setdefault(job, {"job_id": job, "made_rows": 0, "judged_rows": 0, "templates": [], "models": []})
        j["made_rows"] += n
        if version or tmpl:
            t = {"name": tmpl or task, "version": version}
            if t not in j["templates"]:
                j["templates"].append(t)
        if model and {"model": model, "endpoint": endpoint} not in j["models"]:
            j["models"].append({"model": model, "endpoint": endpoint})
    for job, judge, rubric, version, n in conn.execute(
            f"SELECT j.job_id, j.judge, j.rubric, j.rubric_version, count(DISTINCT j.sample_id) FROM judgments j "
            f"WHERE j.sample_id IN (SELECT id FROM {LINEAGE}) GROUP BY 1, 2, 3, 4"):
        key = job if job is not None else f"judge:{judge}"
        j = made.setdefault(key, {"job_id": job, "made_rows": 0, "judged_rows": 0, "templates": [], "models": []})
        j["judged_rows"] += n
        t = {"name": rubric, "version": version}
        if t not in j["templates"]:
            j["templates"].append(t)
        if {"model": judge, "endpoint": None} not in j["models"]:
            j["models"].append({"model": judge, "endpoint": None})
    out = []
    for key, j in sorted(made.items(), key=lambda kv: str(kv[0])):
        if j["job_id"] is not None:
            row = conn.execute("SELECT kind, params, status, created_at, finished_at FROM jobs WHERE id = ?",
                               (j["job_id"],)).fetchone()
            if row:
                params = _loads(row[1]) or {}
                j.update(task=row[0], params=params.get("task", params), status=row[2], created_at=row[3],
                         finished_at=row[4], endpoint=params.get("endpoint"), pool=params.get("pool"),
                         judge=params.get("judge"), input_filter=params.get("filter"))
        out.append(j)
    return out


# --- one sample --------------------------------------------------------------------------------------------

def sample_history(conn: sqlite3.Connection, dataset: str, sample_id: int, depth: int = 20) -> dict:
    """Everything the store knows about one sample: source line, lineage, jobs, judgments, edits, decisions and
    the snapshots it went out in. KeyError if the dataset has no such sample."""
    row = conn.execute(
        "SELECT s.id, d.name, d.license, s.status, s.import_id, s.source_line, s.parent_id, s.job_id, "
        "s.origin, s.dup_of, s.created_at, s.updated_at FROM samples s JOIN datasets d ON d.id = s.dataset_id "
        "WHERE s.id = ?", (sample_id,)).fetchone()
    if row is None:
        raise KeyError(f"no sample with id {sample_id}")
    if row[1] != dataset:
        raise KeyError(f"sample {sample_id} is in dataset {row[1]!r}, not {dataset!r}")
    sid, dname, lic, status, import_id, line, parent, job, origin, dup_of, created, updated = row
    # scores: each rubric's latest, with its scale and stale flag (workbench/scores.py)
    out = {"sample_id": sid, "dataset": dname, "license": lic, "status": status, "scores": scores.of_sample(conn, sid),
           "duplicate_of": dup_of, "created_at": created, "updated_at": updated, "source": None, "job": None}
    if import_id is not None:
        imp = conn.execute("SELECT file, format, mapping, sha256, license, imported_at FROM imports WHERE id = ?",
                           (import_id,)).fetchone()
        if imp:
            out["source"] = {"import_id": import_id, "file": imp[0], "line_or_row": line, "format": imp[1],
                             "mapping": _loads(imp[2]), "sha256": imp[3], "license": imp[4], "imported_at": imp[5]}
    if job is not None:
        j = conn.execute("SELECT kind, params, status, created_at FROM jobs WHERE id = ?", (job,)).fetchone()
        out["job"] = {"job_id": job, "origin": _loads(origin),
                      **({"task": j[0], "params": _loads(j[1]), "status": j[2], "created_at": j[3]} if j else {})}
    elif origin:
        out["origin"] = _loads(origin)
    out["judgments"] = [
        {"id": r[0], "judge": r[1], "rubric": r[2], "rubric_version": r[3], "scores": _loads(r[4]), "overall": r[5],
         "rationale": r[6], "job_id": r[7], "candidate_id": r[8], "created_at": r[9]}
        for r in conn.execute("SELECT id, judge, rubric, rubric_version, scores, overall, rationale, job_id, "
                              "candidate_id, created_at FROM judgments WHERE sample_id = ? ORDER BY id", (sid,))]
    out["candidates"] = [
        {"id": r[0], "model": r[1], "endpoint": r[2], "job_id": r[3], "created_at": r[4]}
        for r in conn.execute("SELECT id, model, endpoint, job_id, created_at FROM candidates WHERE sample_id = ? "
                              "ORDER BY id", (sid,))]
    out["decisions"] = [
        {"id": r[0], "action": r[1], "before": _loads(r[2]), "after": _loads(r[3]), "reason": r[4],
         "undoes": r[5], "session": r[6], "at": r[7]}
        for r in conn.execute("SELECT id, action, before, after, reason, undoes, session, created_at FROM decisions "
                              "WHERE sample_id = ? ORDER BY id", (sid,))]
    out["snapshots"] = [
        {"snapshot_id": r[0], "name": r[1], "file": r[2], "format": r[3], "created_at": r[4]}
        for r in conn.execute("SELECT s.id, s.name, s.file, s.format, s.created_at FROM snapshot_items i "
                              "JOIN snapshots s ON s.id = i.snapshot_id WHERE i.sample_id = ? ORDER BY s.id", (sid,))]
    if parent is not None:
        if depth <= 0:
            out["parent"] = {"sample_id": parent, "truncated": True}
        else:
            pds = conn.execute("SELECT d.name FROM samples s JOIN datasets d ON d.id = s.dataset_id WHERE s.id = ?",
                               (parent,)).fetchone()
            out["parent"] = (sample_history(conn, pds[0], parent, depth - 1) if pds
                             else {"sample_id": parent, "missing": True})
    return out
