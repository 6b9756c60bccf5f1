"""Export through the CLI: formats trainers read, manifests and snapshots, exact round trips."""
import hashlib
import json

import pytest

from workbench.samples import iter_samples
from workbench.store import open_store

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
    conn.execute("UPDATE samples SET status = 'accepted', score = 8 WHERE id <= 10")
    conn.execute("UPDATE samples SET score = 3 WHERE id > 10 AND id <= 20")
    out = tmp_path / "x.jsonl"
    code, text, err = cli("export", str(out), "--format", "alpaca", "--status", "accepted", "--json")
    assert json.loads(text)["rows"] == 10
    code, text, err = cli("export", str(out), "--format", "alpaca", "--min-score", "5", "--json")
    assert json.loads(text)["rows"] == 10
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
