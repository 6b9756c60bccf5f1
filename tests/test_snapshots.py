"""Versioned exports: list snapshots, diff two of them (added, removed, changed text)."""
from __future__ import annotations

import json

from workbench import exporter, review, snapshots
from workbench.samples import insert_samples
from workbench.store import ensure_dataset, transaction


def add(conn, rows, name="d"):
    with transaction(conn):
        did = ensure_dataset(conn, name)
        first, last = insert_samples(conn, did, rows)
    return list(range(first, last + 1))


def test_diff_between_two_exports(cli, conn, tmp_path):
    ids = add(conn, [{"instruction": f"Question {i}?", "response": f"Answer {i}."} for i in range(5)])
    a = exporter.export(conn, tmp_path / "v1.jsonl", "alpaca", dataset="d", name="v1")
    review.decide(conn, ids[1], "reject", "review:test")
    review.edit(conn, ids[2], {"response": "A better answer 2."}, "review:test")
    [new] = add(conn, [{"instruction": "Question 5?", "response": "Answer 5."}])
    b = exporter.export(conn, tmp_path / "v2.jsonl", "alpaca", dataset="d", status="pending", name="v2")

    d = snapshots.diff(conn, a.snapshot_id, b.snapshot_id)
    assert (d.added, d.removed, d.changed, d.unchanged) == ([new], [ids[1]], [ids[2]], 3)
    assert snapshots.diff(conn, "v2", "v1").added == [ids[1]]          # by name, and the other way round
    assert snapshots.diff(conn, "v1", "#1").to_json()["counts"] == {"added": 0, "removed": 0, "changed": 0,
                                                                     "unchanged": 5}

    code, out, err = cli("snapshots", "--json")
    assert code == 0, err
    listed = json.loads(out)
    assert [(s["id"], s["name"], s["rows"], s["format"]) for s in listed] == [
        (a.snapshot_id, "v1", 5, "alpaca"), (b.snapshot_id, "v2", 5, "alpaca")]
    assert listed[0]["sha256"] == a.sha256
    code, out, err = cli("snapshots")
    assert code == 0 and "v1" in out and "v2" in out

    code, out, err = cli("diff", str(a.snapshot_id), "v2", "--json")
    assert code == 0, err
    got = json.loads(out)
    assert (got["added"], got["removed"], got["changed"]) == ([new], [ids[1]], [ids[2]])
    code, out, err = cli("diff", "v1", "v2")
    assert code == 0 and "1 added, 1 removed, 1 changed, 3 unchanged" in out


def test_diff_from_snapshot_rows_written_directly(conn):
    """The diff reads snapshot_items only; rows another tool recorded diff the same way."""
    for sid, name in ((1, "a"), (2, "b")):
        conn.execute("INSERT INTO snapshots (id, name, file, format, sha256, manifest, created_at) "
                     "VALUES (?, ?, 'f', 'alpaca', 'x', '{}', '2024-01-01T00:00:00Z')", (sid, name))
    conn.executemany("INSERT INTO snapshot_items VALUES (?, ?, ?)",
                     [(1, 10, 1), (1, 11, 2), (1, 12, 3), (2, 11, 2), (2, 12, 4), (2, 13, 5)])
    d = snapshots.diff(conn, "a", "b")
    assert (d.added, d.removed, d.changed, d.unchanged) == ([13], [10], [12], 1)


def test_unknown_snapshot(cli, conn):
    code, out, err = cli("snapshots")
    assert code == 0 and "no snapshots yet" in out
    code, _, err = cli("diff", "1", "nope")
    assert code == 2 and "'1'" in err
