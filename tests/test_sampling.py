"""Balanced sampling: targets met where the data allow, shortfalls reported where not, selections non-destructive."""
from __future__ import annotations

import json

import pytest

from workbench import exporter, sampling, scores
from workbench.samples import insert_samples
from workbench.store import ensure_dataset, transaction


def add(conn, rows, name="d"):
    with transaction(conn):
        did = ensure_dataset(conn, name)
        first, last = insert_samples(conn, did, rows)
    return list(range(first, last + 1))


@pytest.fixture
def pool(conn):
    """1000 rows: qa 500 / coding 300 / writing 200; difficulty easy on 60 % of each; no domain."""
    rows = []
    for task, n in (("qa", 500), ("coding", 300), ("writing", 200)):
        for i in range(n):
            rows.append({"instruction": f"{task} task number {i} about topic {i * 7919 % 1000}",
                         "response": f"answer {i}", "task_type": task,
                         "difficulty": "easy" if i % 10 < 6 else "hard"})
    return add(conn, rows)


def target(**kw) -> sampling.Target:
    data = {"targets": kw.pop("targets")}
    data.update(kw)
    return sampling.parse_target(data)


def marginals(conn, ids, dim):
    out = {}
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        for (v,) in conn.execute(f"SELECT {dim} FROM samples WHERE id IN ({','.join('?' * len(chunk))})", chunk):
            out[v] = out.get(v, 0) + 1
    return out


def test_targets_met_where_data_allow(conn, pool):
    plan = sampling.plan(conn, target(targets={"task_type": {"qa": 0.4, "coding": 0.4, "writing": 0.2}}), 500, 1)
    assert len(plan.ids) == len(set(plan.ids)) == 500
    assert marginals(conn, plan.ids, "task_type") == {"qa": 200, "coding": 200, "writing": 100}
    assert plan.projected["task_type"] == plan.wanted["task_type"] == {"qa": 200, "coding": 200, "writing": 100}
    assert plan.short == []


def test_two_dimensions_at_once(conn, pool):
    t = target(targets={"task_type": {"qa": 1, "coding": 1, "writing": 1}, "difficulty": {"easy": 50, "hard": 50}})
    plan = sampling.plan(conn, t, 300, 7)
    tasks, diffs = marginals(conn, plan.ids, "task_type"), marginals(conn, plan.ids, "difficulty")
    assert tasks == {"qa": 100, "coding": 100, "writing": 100}
    assert diffs == {"easy": 150, "hard": 150}


def test_shortfall_reported_and_fill_tops_up(conn, pool):
    t = target(targets={"task_type": {"qa": 0.2, "coding": 0.6, "writing": 0.2}})
    plan = sampling.plan(conn, t, 1000, 3)
    [short] = plan.short
    assert (short.dim, short.label, short.target, short.available, short.projected) == ("task_type", "coding", 600,
                                                                                        300, 300)
    assert marginals(conn, plan.ids, "task_type") == {"qa": 200, "coding": 300, "writing": 200}
    t.fill = True
    filled = sampling.plan(conn, t, 1000, 3)
    counts = marginals(conn, filled.ids, "task_type")
    assert len(filled.ids) == 1000 and counts == {"qa": 500, "coding": 300, "writing": 200}


def test_other_and_none_labels(conn, pool):
    extra = add(conn, [{"instruction": f"untyped {i}", "response": "x"} for i in range(20)])
    plan = sampling.plan(conn, target(targets={"task_type": {"qa": 0.5, "*": 0.5}}), 100, 1)
    got = marginals(conn, plan.ids, "task_type")
    assert got["qa"] == 50 and sum(got.values()) == 100
    plan = sampling.plan(conn, target(targets={"task_type": {"(none)": 1}}), 100, 1)
    assert sorted(plan.ids) == extra and [s.label for s in plan.short] == ["(none)"]


def test_seed_decides_the_rows(conn, pool):
    t = target(targets={"task_type": {"qa": 1}})
    a, b, c = (sampling.plan(conn, t, 50, s).ids for s in (5, 5, 6))
    assert a == b and a != c


def test_by_score_prefers_the_best_and_diversity_skips_near_copies(conn):
    topics = ["bronze casting", "the violin", "tea in China", "chess openings", "the bicycle", "paper money",
              "the compass", "coffee houses", "glass lenses", "the postal service"]
    ids = add(conn, [{"instruction": f"Explain the history of {t} in detail please", "task_type": "qa"}
                     for t in topics] +
              [{"instruction": "Explain the history of the printing press in detail please", "task_type": "qa"},
               {"instruction": "Explain the history of the printing press in detail, please!", "task_type": "qa"}])
    judged = {ids[i]: float(i + 1) for i in range(10)} | {ids[10]: 20.0, ids[11]: 19.0}
    with transaction(conn):
        for k, v in judged.items():
            scores.record(conn, k, "judge", v, (1, 20))
            scores.record(conn, k, "curate", 1 if v > 9 else 5, (1, 5))   # the opposite order: never used here
    t = target(targets={"task_type": {"qa": 1}}, by="score:judge")
    assert sampling.plan(conn, t, 3, 0).ids == sorted([ids[10], ids[11], ids[9]])
    t.diversity = 0.9
    plan = sampling.plan(conn, t, 3, 0)
    assert plan.ids == sorted([ids[10], ids[9], ids[8]]) and plan.skipped_similar == 1
    # a score bound names its rubric: judge >= 19 leaves the two printing-press rows, near copies of each other
    t = target(targets={"task_type": {"qa": 1}}, by="score:judge", min_score=["judge=19"])
    assert sampling.plan(conn, t, 3, 0).ids == sorted([ids[10], ids[11]])
    t = target(targets={"task_type": {"qa": 1}}, by="score:juge")
    with pytest.raises(sampling.TargetError, match="nothing is scored on 'juge'; rubrics present: curate, judge"):
        sampling.plan(conn, t, 3, 0)
    for bad, message in (({"by": "score:Judge"}, "score:RUBRIC"), ({"by": "best"}, "score:RUBRIC"),
                         ({"min_score": 19}, "RUBRIC=N"), ({"min_score": "19"}, "name the rubric"),
                         ({"min_score": ["judge=x"]}, "not a number"), ({"include_stale": "yes"}, "true or false")):
        with pytest.raises(sampling.TargetError, match=message):
            sampling.parse_target({"targets": {"task_type": {"qa": 1}}, **bad}, "t.toml")
    t = target(targets={"task_type": {"qa": 1}}, min_score=["curate=7"])
    with pytest.raises(ValueError, match="outside curate's scale 1-5"):
        sampling.plan(conn, t, 3, 0)


def test_cli_writes_a_named_selection_non_destructively(cli, conn, pool, tmp_path):
    f = tmp_path / "target.toml"
    f.write_text('[targets.task_type]\nqa = 20\ncoding = 60\nwriting = 20\n')
    before = conn.execute("SELECT count(*), group_concat(status) FROM samples").fetchone()
    code, out, err = cli("sample", "--target", str(f), "--size", "1000", "--seed", "4", "--into", "mix", "--dry-run")
    assert code == 0, err
    assert "cannot reach target: task_type=coding wants 600, 300 available" in out
    assert conn.execute("SELECT count(*) FROM selections").fetchone()[0] == 0
    code, out, err = cli("sample", "--target", str(f), "--size", "500", "--seed", "4", "--into", "mix", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["selection"] == "mix" and report["selected"] == 500 and report["short"] == []
    assert report["histograms"]["task_type"]["coding"] == {"target": 300, "projected": 300, "available": 300}
    assert conn.execute("SELECT count(*), group_concat(status) FROM samples").fetchone() == before
    assert conn.execute("SELECT count(*) FROM selections WHERE name = 'mix'").fetchone()[0] == 500

    code, _, err = cli("sample", "--target", str(f), "--size", "10", "--into", "mix")
    assert code == 2 and "exists" in err
    code, _, err = cli("sample", "--target", str(f), "--size", "10", "--into", "mix", "--replace")
    assert code == 0 and conn.execute("SELECT count(*) FROM selections WHERE name = 'mix'").fetchone()[0] == 10

    res = exporter.export(conn, tmp_path / "mix.jsonl", "alpaca", selection="mix")
    assert res.rows == 10
    exported = {i for (i,) in conn.execute("SELECT sample_id FROM snapshot_items WHERE snapshot_id = ?",
                                           (res.snapshot_id,))}
    assert exported == {i for (i,) in conn.execute("SELECT sample_id FROM selections WHERE name = 'mix'")}


def test_target_file_errors_name_the_file_and_entry(cli, conn, pool, tmp_path):
    bad = tmp_path / "bad.toml"
    for text, needle in (("[targets.colour]\nred = 1\n", "colour"), ("size = 10\n", "no [targets"),
                         ("[targets.task_type]\nqa = -1\n", "qa"), ("[targets.task_type\n", "bad.toml"),
                         ("by = 'best'\n[targets.task_type]\nqa = 1\n", "best")):
        bad.write_text(text)
        code, _, err = cli("sample", "--target", str(bad), "--size", "5", "--into", "x")
        assert code == 1 and needle in err and str(bad) in err, (text, err)   # bad data (the exit-code table in the README)
    code, _, err = cli("sample", "--target", str(tmp_path / "none.toml"), "--size", "5", "--into", "x")
    assert code == 1 and "no such file" in err
    good = tmp_path / "good.toml"
    good.write_text("[balance.targets.task_type]\nqa = 1\n")      # the config's Balance targets work too
    code, out, err = cli("sample", "--target", str(good), "--into", "x")
    assert code == 2 and "--size" in err
    code, out, err = cli("sample", "--target", str(good), "--size", "5", "--into", "x")
    assert code == 0, err


def test_cli_score_bounds_name_the_rubric(cli, conn, pool, tmp_path):
    f = tmp_path / "target.toml"
    f.write_text('[targets.task_type]\nqa = 50\ncoding = 50\n')
    with transaction(conn):
        for sid in pool[:10]:
            scores.record(conn, sid, "curate", 5, (1, 5))
    code, out, err = cli("sample", "--target", str(f), "--size", "10", "--dry-run", "--min-score", "4.5")
    assert code == 2 and "name the rubric" in err and "rubrics present: curate" in err
    code, out, err = cli("sample", "--target", str(f), "--size", "10", "--dry-run", "--json", "--min-score",
                         "curate=4.5", "--by", "score:curate")
    assert code == 0, err
    assert json.loads(out)["eligible"] == 10
