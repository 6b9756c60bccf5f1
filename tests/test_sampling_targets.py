"""Balance on length buckets and on a joint target over two labels: achieved vs target, shortfall per cell."""
from __future__ import annotations

import json

import pytest

from taskkit import add_dataset
from workbench import sampling
from workbench.sampling import TargetError, parse_target


def rows_for(n, length, task_type, difficulty):
    return [{"instruction": f"q{task_type}{difficulty}{length}-{i}", "response": "x" * length,
             "task_type": task_type, "difficulty": difficulty} for i in range(n)]


@pytest.fixture
def data(conn):
    add_dataset(conn, "d", rows_for(10, 100, "qa", "easy") + rows_for(10, 800, "qa", "hard")
                + rows_for(3, 2000, "coding", "hard") + rows_for(6, 800, "coding", "easy"))


def test_length_buckets(conn, data):
    t = parse_target({"targets": {"length": {"0-300": 0.3, "300-1500": 0.5, "1500-": 0.2}}})
    p = sampling.plan(conn, t, size=10, seed=1)
    assert p.wanted["length"] == {"0-300": 3, "300-1500": 5, "1500-": 2}
    assert p.projected["length"] == p.wanted["length"] and p.short == []
    lengths = sorted(r[0] for r in conn.execute(
        f"SELECT length(instruction) + length(response) FROM samples WHERE id IN ({','.join(map(str, p.ids))})"))
    assert sum(x < 300 for x in lengths) == 3 and sum(x >= 1500 for x in lengths) == 2
    p = sampling.plan(conn, t, size=20, seed=1)           # 4 long rows wanted, 3 exist
    assert [(s.dim, s.label, s.target, s.projected, s.available) for s in p.short] == [
        ("length", "1500-", 4, 3, 3)]


def test_joint_target_cells(conn, data):
    t = parse_target({"joint": {"dims": ["task_type", "difficulty"],
                                "shares": {"qa": {"easy": 40, "hard": 30}, "coding": {"hard": 30}}}})
    p = sampling.plan(conn, t, size=20, seed=2)
    dim = "task_type x difficulty"
    assert p.wanted[dim] == {"qa / easy": 8, "qa / hard": 6, "coding / hard": 6}
    assert p.projected[dim] == {"qa / easy": 8, "qa / hard": 6, "coding / hard": 3}
    assert [(s.label, s.target - s.projected) for s in p.short] == [("coding / hard", 3)]
    # coding/easy has no share: none of its rows is taken
    picked = {r for (r,) in conn.execute(
        f"SELECT task_type || '/' || difficulty FROM samples WHERE id IN ({','.join(map(str, p.ids))})")}
    assert "coding/easy" not in picked
    # joint together with length: both met where the data allow
    t2 = parse_target({"targets": {"length": {"0-300": 0.5, "300-": 0.5}},
                       "joint": {"dims": ["task_type", "difficulty"], "shares": {"qa": {"easy": 1, "hard": 1}}}})
    p2 = sampling.plan(conn, t2, size=10, seed=3)
    assert p2.projected["length"] == {"0-300": 5, "300-": 5} and p2.short == []


@pytest.mark.parametrize("data, msg", [
    ({"targets": {"length": {"300-100": 1}}}, "hi > lo"),
    ({"targets": {"length": {"short": 1}}}, "a bucket is"),
    ({"targets": {"length": {"0-300": 1, "200-": 1}}}, "overlap"),
    ({"targets": {"length": {"0-300": -1}}}, ">= 0"),
    ({"joint": {"dims": ["task_type"], "shares": {"qa": {"easy": 1}}}}, "two different labels"),
    ({"joint": {"dims": ["task_type", "task_type"], "shares": {"qa": {"qa": 1}}}}, "two different labels"),
    ({"joint": {"dims": ["task_type", "mood"], "shares": {"qa": {"x": 1}}}}, "two different labels"),
    ({"joint": {"dims": ["task_type", "difficulty"]}}, "missing"),
    ({"joint": {"dims": ["task_type", "difficulty"], "shares": {"qa": 1}}}, "must be a table"),
    ({"joint": {"dims": ["task_type", "difficulty"], "shares": {"qa": {"easy": 1}}},
      "targets": {"task_type": {"qa": 1}}}, "pull against each other"),
    ({"joint": {"dims": ["task_type", "difficulty"], "shares": {"a / b": {"easy": 1}}}}, "cannot be told apart"),
    ({"joint": {"dims": ["task_type", "difficulty"], "shares": {"qa": {"easy": 1}}, "weights": 1}}, "unknown key"),
    ({}, "no [targets"),
])
def test_bad_targets_refused(data, msg):
    with pytest.raises(TargetError, match=None) as e:
        parse_target(data, "t.toml")
    assert msg in str(e.value) and str(e.value).startswith("t.toml:")


def test_cli_reports_cells(cli, conn, data, tmp_path):
    f = tmp_path / "t.toml"
    f.write_text('[joint]\ndims = ["task_type", "difficulty"]\n[joint.shares.qa]\neasy = 0.5\n'
                 '[joint.shares.coding]\nhard = 0.5\n', encoding="utf-8")
    code, out, err = cli("sample", "--target", str(f), "--size", "10", "--dry-run")
    assert code == 0, err
    assert "task_type x difficulty" in out and "coding / hard" in out and "short by 2" in out
    code, out, err = cli("sample", "--target", str(f), "--size", "10", "--dry-run", "--json")
    res = json.loads(out)
    assert res["histograms"]["task_type x difficulty"]["coding / hard"] == {"target": 5, "projected": 3,
                                                                             "available": 3}
    assert res["short"] == [{"dim": "task_type x difficulty", "label": "coding / hard", "target": 5,
                             "projected": 3, "available": 3}]
