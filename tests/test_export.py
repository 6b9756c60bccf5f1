"""Export through the CLI: formats trainers read, manifests and snapshots, exact round trips."""
import hashlib
import json

import pytest

from workbench.samples import iter_samples
from workbench import review, scores
from workbench.store import open_store, transaction

from test_import import SHARED_FILES

# the export format that carries each source format's fields
ROUND_TRIP = {"alpaca": "alpaca", "dolly": "alpaca", "sharegpt": "sharegpt", "messages": "messages",
              "preference": "preference", "hh": "preference", "prompts": "alpaca", "text": "alpaca"}
KEPT = ("instruction", "input", "response", "rejected", "system", "messages", "task_type", "domain", "difficulty",
        "language", "metadata")


def fields(db_path, dataset):
    conn = open_store(db_path)
    did = conn.execute("SELECT id FROM datasets WHERE name = ?", (dataset,)).fetchone()[0]
    return [{k: s[k] for k in KEPT} for s in iter_samples(conn, "dataset_id = ?", (did,))]


@pytest.mark.parametrize("folder,name,fmt,rows", SHARED_FILES)
@pytest.mark.parametrize("via", ["native", "parquet"])
def test_import_export_import_keeps_every_field(cli, shared_data, db_path, tmp_path, folder, name, fmt, rows, via):
    assert cli("import", str(shared_data / folder / name), "--dataset", "a")[0] == 0
    out_fmt = ROUND_TRIP[fmt] if via == "native" else "parquet"
    out = tmp_path / ("out.parquet" if via == "parquet" else "out.json" if fmt == "alpaca" else "out.jsonl")
    code, text, err = cli("export", str(out), "--format", out_fmt, "--dataset", "a", "--json")
    assert code == 0, err
    assert json.loads(text)["rows"] == rows
    code, text, err = cli("import", str(out), "--dataset", "b")
    assert code == 0, err
    assert fields(db_path, "b") == fields(db_path, "a")


def test_manifest_and_snapshot(cli, shared_data, db_path, tmp_path):
    cli("import", str(shared_data / "self-instruct-seed" / "seed_tasks_alpaca.json"), "--dataset", "seed")
    out = tmp_path / "seed.jsonl"
    code, text, err = cli("export", str(out), "--format", "messages", "--dataset", "seed", "--status", "pending",
                          "--json")
    assert code == 0, err
    info = json.loads(text)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    assert info["sha256"] == digest
    manifest = json.loads((tmp_path / "seed.jsonl.manifest.json").read_text())
    assert manifest["sha256"] == digest
    assert manifest["filters"] == {"dataset": "seed", "status": "pending"}
    assert manifest["counts"]["rows"] == 175 and manifest["counts"]["by_dataset"] == {"seed": 175}
    conn = open_store(db_path)
    snap = conn.execute("SELECT id, sha256, format FROM snapshots").fetchall()
    assert snap == [(info["snapshot"], digest, "messages")]
    assert conn.execute("SELECT count(*) FROM snapshot_items WHERE snapshot_id = ?", (snap[0][0],)).fetchone()[0] == 175
    first = json.loads(out.read_text().splitlines()[0])
    assert first["messages"][0]["role"] == "user" and first["messages"][1]["role"] == "assistant"
    assert first["id"] == "seed_task_0"


def test_filters_by_status_score_and_task_type(cli, shared_data, db_path, tmp_path):
    cli("import", str(shared_data / "fastchat-bench-questions" / "mt_bench_questions.csv"), "--dataset", "mt")
    conn = open_store(db_path)
    conn.execute("UPDATE samples SET status = 'accepted' WHERE id <= 10")
    with transaction(conn):
        for sid in range(1, 21):   # judge 8/10 on 1-10, 3/10 on 11-20; curate 2/5 on 1-5 (a 1-5 scale)
            scores.record(conn, sid, "judge", 8 if sid <= 10 else 3, (1, 10))
            if sid <= 5:
                scores.record(conn, sid, "curate", 2, (1, 5))
    out = tmp_path / "x.jsonl"
    code, text, err = cli("export", str(out), "--format", "alpaca", "--status", "accepted", "--json")
    assert json.loads(text)["rows"] == 10
    code, text, err = cli("export", str(out), "--format", "alpaca", "--min-score", "judge=5", "--json")
    assert code == 0, err
    assert json.loads(text)["rows"] == 10
    manifest = json.loads(out.with_name(out.name + ".manifest.json").read_text())
    assert manifest["filters"]["min_score"] == ["judge=5"]
    # two rubrics at once: judge >= 5 and curate <= 2 -> rows 1-5
    code, text, err = cli("export", str(out), "--format", "alpaca", "--min-score", "judge=5", "--max-score",
                          "curate=2", "--json")
    assert json.loads(text)["rows"] == 5
    # a curate 2/5 is not a judge 2/10: the old shared column would have mixed them
    code, text, err = cli("export", str(out), "--format", "alpaca", "--max-score", "judge=2", "--json")
    assert json.loads(text)["rows"] == 0
    code, text, err = cli("export", str(out), "--format", "alpaca", "--task-type", "math", "--json")
    assert json.loads(text)["rows"] == 10
    assert all(json.loads(line)["task_type"] == "math" for line in out.read_text().splitlines())


def test_preference_export_is_trl_shaped(cli, shared_data, db_path, tmp_path):
    cli("import", str(shared_data / "oasst-en100" / "oasst_en100_preference.jsonl"))
    cli("import", str(shared_data / "self-instruct-seed" / "seed_tasks_alpaca.json"))
    out = tmp_path / "pref.jsonl"
    code, text, err = cli("export", str(out), "--format", "preference", "--json")
    assert code == 0, err
    assert json.loads(text)["rows"] == 212 and json.loads(text)["skipped"] == 175
    row = json.loads(out.read_text().splitlines()[0])
    assert row["prompt"][-1]["role"] == "user"
    assert row["chosen"][0]["role"] == "assistant" and row["rejected"][0]["role"] == "assistant"


def test_sharegpt_export_of_single_turn_rows(cli, shared_data, db_path, tmp_path):
    cli("import", str(shared_data / "self-instruct-user-oriented" / "user_oriented_dolly.jsonl"))
    out = tmp_path / "sg.json"
    assert cli("export", str(out), "--format", "sharegpt")[0] == 0
    rows = json.loads(out.read_text())
    assert len(rows) == 252
    assert [t["from"] for t in rows[0]["conversations"]] == ["human", "gpt"]
    assert rows[0]["conversations"][0]["value"].endswith(rows[0]["conversations"][0]["value"].split("\n\n")[-1])


def test_unknown_dataset_and_bad_path(cli, tmp_path):
    code, out, err = cli("export", str(tmp_path / "x.jsonl"), "--format", "alpaca", "--dataset", "nope")
    assert code == 2 and "nope" in err
    code, out, err = cli("export", str(tmp_path), "--format", "alpaca")
    assert code == 2 and "directory" in err


def test_datasets_json(cli, shared_data):
    cli("import", str(shared_data / "self-instruct-seed" / "seed_tasks_alpaca.json"))
    code, out, err = cli("datasets", "--json")
    rows = json.loads(out)
    assert rows[0]["name"] == "seed_tasks_alpaca" and rows[0]["rows"] == 175 and rows[0]["pending"] == 175


@pytest.mark.parametrize("flag, value, message", [
    ("--min-score", "4.5", "name the rubric"),                       # a bare number: which scale?
    ("--min-score", "4", "rubrics present: curate, judge"),          # ...and the message lists the rubrics
    ("--max-score", "curat=4", "no sample in scope has a 'curat' score"),
    ("--min-score", "curate=7", "outside curate's scale 1-5"),
    ("--min-score", "judge=high", "is not a number"),
    ("--min-score", "judge=nan", "is not a number"),
    ("--min-score", "Judge=4", "not a rubric name"),
    ("--min-score", "=4", "not a rubric name"),
])
def test_score_filters_name_a_rubric(cli, shared_data, db_path, tmp_path, flag, value, message):
    cli("import", str(shared_data / "fastchat-bench-questions" / "mt_bench_questions.csv"), "--dataset", "mt")
    conn = open_store(db_path)
    with transaction(conn):
        scores.record(conn, 1, "judge", 7, (1, 10))
        scores.record(conn, 1, "curate", 4, (1, 5))
    out = tmp_path / "x.jsonl"
    code, text, err = cli("export", str(out), "--format", "alpaca", flag, value)
    assert code == 2 and message in err, err
    assert not out.exists() and "Traceback" not in err
    assert conn.execute("SELECT count(*) FROM snapshots").fetchone()[0] == 0


def test_min_and_max_on_one_rubric_must_not_cross(cli, shared_data, db_path, tmp_path):
    cli("import", str(shared_data / "fastchat-bench-questions" / "mt_bench_questions.csv"), "--dataset", "mt")
    conn = open_store(db_path)
    with transaction(conn):
        scores.record(conn, 1, "judge", 7, (1, 10))
    code, text, err = cli("export", str(tmp_path / "x.jsonl"), "--format", "alpaca", "--min-score", "judge=8",
                          "--max-score", "judge=6")
    assert code == 2 and "min 8 is above max 6" in err


def test_edited_samples_scores_are_stale_until_the_edit_is_undone(cli, shared_data, db_path, tmp_path):
    cli("import", str(shared_data / "fastchat-bench-questions" / "mt_bench_questions.csv"), "--dataset", "mt")
    conn = open_store(db_path)
    with transaction(conn):
        for sid in (1, 2):
            scores.record(conn, sid, "judge", 9, (1, 10))
    review.edit(conn, 1, {"response": "an edited answer"}, "review:t")
    assert [s["stale"] for s in scores.of_sample(conn, 1)] == [True]
    out = tmp_path / "x.jsonl"
    code, text, err = cli("export", str(out), "--format", "alpaca", "--min-score", "judge=8", "--json")
    assert json.loads(text)["rows"] == 1                      # the edited sample's 9 was given to other text
    code, text, err = cli("export", str(out), "--format", "alpaca", "--min-score", "judge=8", "--include-stale",
                          "--json")
    assert json.loads(text)["rows"] == 2
    review.undo(conn, "review:t")                             # the text is back to what was scored: fresh again
    assert [s["stale"] for s in scores.of_sample(conn, 1)] == [False]
