"""Export through the CLI: formats trainers read, manifests and snapshots, exact round trips."""
import hashlib
import json

import pytest

from workbench.samples import iter_samples, write_text
from workbench import review, scores
from workbench.store import open_store, transaction

from test_import import SHARED_FILES

# the export format (and flags) that carries each source format's fields; prompt-only and raw-text sets have no
# response, so no SFT format carries them honestly: only the full-fidelity Parquet export round-trips them
ROUND_TRIP = {"alpaca": ("alpaca",), "dolly": ("alpaca",), "sharegpt": ("sharegpt",), "messages": ("messages",),
              "preference": ("preference", "--conversational"), "hh": ("preference", "--conversational"),
              "prompts": None, "text": None}
KEPT = ("instruction", "input", "response", "rejected", "system", "messages", "task_type", "domain", "difficulty",
        "language", "metadata")


def fields(db_path, dataset, snapshot=None):
    """The kept fields of a dataset's samples (only those a snapshot exported, if given)."""
    conn = open_store(db_path)
    did = conn.execute("SELECT id FROM datasets WHERE name = ?", (dataset,)).fetchone()[0]
    where, params = "dataset_id = ?", (did,)
    if snapshot is not None:
        where += " AND id IN (SELECT sample_id FROM snapshot_items WHERE snapshot_id = ?)"
        params += (snapshot,)
    out = [{k: s[k] for k in KEPT} for s in iter_samples(conn, where, params)]
    for s in out:  # a source column some rows lack is exported as null there (one column set per file)
        s["metadata"] = {k: v for k, v in (s["metadata"] or {}).items() if v is not None} or None
    return out


@pytest.mark.parametrize("folder,name,fmt,rows", SHARED_FILES)
@pytest.mark.parametrize("via", ["native", "parquet"])
def test_import_export_import_keeps_every_field(cli, shared_data, db_path, tmp_path, folder, name, fmt, rows, via):
    assert cli("import", str(shared_data / folder / name), "--dataset", "a")[0] == 0
    out = tmp_path / ("out.parquet" if via == "parquet" else "out.json" if fmt == "alpaca" else "out.jsonl")
    if via == "native" and ROUND_TRIP[fmt] is None:
        code, text, err = cli("export", str(out), "--format", "alpaca", "--dataset", "a")
        assert code == 2 and "no rows to export" in err and f"{rows:,} skipped" in err
        assert not out.exists() and list(tmp_path.glob("*manifest*")) + list(tmp_path.glob(".*manifest*")) == []
        return
    out_fmt, *flags = ROUND_TRIP[fmt] if via == "native" else ("parquet",)
    code, text, err = cli("export", str(out), "--format", out_fmt, *flags, "--dataset", "a", "--json")
    assert code == 0, err
    info = json.loads(text)
    # HH holds 4 rows with an empty chosen reply and 4 whose prompt ends in an assistant turn: skipped, counted
    assert info["rows"] + info["skipped"] == rows and info["skipped"] == (8 if fmt == "hh" and via == "native" else 0)
    code, text, err = cli("import", str(out), "--dataset", "b")
    assert code == 0, err
    assert fields(db_path, "b") == fields(db_path, "a", info["snapshot"])


def test_manifest_and_snapshot(cli, shared_data, db_path, tmp_path):
    cli("import", str(shared_data / "self-instruct-seed" / "seed_tasks_alpaca.json"), "--dataset", "seed")
    out = tmp_path / "seed.jsonl"
    code, text, err = cli("export", str(out), "--format", "messages", "--dataset", "seed", "--status", "pending",
                          "--json")
    assert code == 0, err
    info = json.loads(text)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    assert info["sha256"] == digest
    manifest = json.loads((tmp_path / ".seed.jsonl.manifest.json").read_text())
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
    conn.execute("UPDATE samples SET response = 'an answer'")
    code, text, err = cli("export", str(out), "--format", "alpaca", "--status", "accepted", "--json")
    assert json.loads(text)["rows"] == 10
    code, text, err = cli("export", str(out), "--format", "alpaca", "--min-score", "judge=5", "--json", "--force")
    assert code == 0, err
    info = json.loads(text)
    assert info["rows"] == 10 and info["excluded_by_filter"] == {"status": 0, "min_score": 70}
    assert info["excluded_unscored"] == {"min_score": 60}      # 60 never judged, 10 judged 3/10
    code, text, err = cli("export", str(out), "--format", "alpaca", "--min-score", "judge=5", "--force")
    assert "70 excluded by min_score (60 of them not scored on its rubric)" in text + err
    filters = json.loads(conn.execute("SELECT filters FROM snapshots ORDER BY id DESC LIMIT 1").fetchone()[0])
    assert filters["min_score"] == ["judge=5"]
    # two rubrics at once: judge >= 5 and curate <= 2 -> rows 1-5
    code, text, err = cli("export", str(out), "--format", "alpaca", "--min-score", "judge=5", "--max-score",
                          "curate=2", "--json", "--force")
    assert json.loads(text)["rows"] == 5
    assert json.loads(text)["excluded_unscored"] == {"min_score": 60, "max_score": 5}   # 6-10 have no curate score
    # a curate 2/5 is not a judge 2/10: the old shared column would have mixed them
    code, text, err = cli("export", str(out), "--format", "alpaca", "--max-score", "judge=2", "--json", "--force")
    assert code == 2 and "no rows to export" in err
    code, text, err = cli("export", str(out), "--format", "alpaca", "--task-type", "math", "--json", "--force")
    assert json.loads(text)["rows"] == 10
    assert all(json.loads(line)["task_type"] == "math" for line in out.read_text().splitlines())


def test_preference_export_is_trl_shaped(cli, shared_data, db_path, tmp_path):
    cli("import", str(shared_data / "oasst-en100" / "oasst_en100_preference.jsonl"))
    cli("import", str(shared_data / "self-instruct-seed" / "seed_tasks_alpaca.json"))
    out = tmp_path / "pref.jsonl"
    code, text, err = cli("export", str(out), "--format", "preference", "--conversational", "--json")
    assert code == 0, err
    assert json.loads(text)["rows"] == 212 and json.loads(text)["skipped"] == 175
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(r["prompt"][-1]["role"] == "user" for r in rows)
    assert all(r["chosen"] == [{"role": "assistant", "content": r["chosen"][0]["content"]}] for r in rows)
    assert all(len(r["rejected"]) == 1 and r["rejected"][0]["role"] == "assistant" for r in rows)
    # multi-turn context survives: every earlier turn of the source is in the prompt
    src = [json.loads(line) for line in (shared_data / "oasst-en100" / "oasst_en100_preference.jsonl").open()]
    assert sum(len(r["prompt"]) > 1 for r in rows) == sum(len(r["prompt"]) > 1 for r in src) > 100
    assert [r["prompt"] for r in rows] == [r["prompt"] for r in src]


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
    assert not (tmp_path / "x.jsonl").exists()


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
            write_text(conn, sid, {"response": "an answer"})     # questions only: give them an answer to export
            scores.record(conn, sid, "judge", 9, (1, 10))
    review.edit(conn, 1, {"response": "an edited answer"}, "review:t")
    assert [s["stale"] for s in scores.of_sample(conn, 1)] == [True]
    out = tmp_path / "x.jsonl"
    code, text, err = cli("export", str(out), "--format", "alpaca", "--min-score", "judge=8", "--json")
    assert json.loads(text)["rows"] == 1                      # the edited sample's 9 was given to other text
    code, text, err = cli("export", str(out), "--format", "alpaca", "--min-score", "judge=8", "--include-stale",
                          "--json", "--force")
    assert json.loads(text)["rows"] == 2
    review.undo(conn, "review:t")                             # the text is back to what was scored: fresh again
    assert [s["stale"] for s in scores.of_sample(conn, 1)] == [False]


# --- what goes out ----------------------------------------------------------------------------------------------

def _decide(db_path, accepted=(), rejected=()):
    conn = open_store(db_path)
    for ids, status in ((accepted, "accepted"), (rejected, "rejected")):
        for i in ids:
            conn.execute("UPDATE samples SET status = ? WHERE id = ?", (status, i))
    conn.close()


def _seed(cli, shared_data, db_path, accepted=range(1, 11), rejected=range(11, 16)):
    assert cli("import", str(shared_data / "self-instruct-seed" / "seed_tasks_alpaca.json"), "--dataset", "seed")[0] == 0
    _decide(db_path, accepted, rejected)


def test_default_status_is_every_sample_not_rejected(cli, shared_data, db_path, tmp_path):
    _seed(cli, shared_data, db_path)
    code, text, err = cli("export", str(tmp_path / "a.jsonl"), "--format", "alpaca", "--json")
    info = json.loads(text)
    assert code == 0 and info["rows"] == 170
    assert info["by_status"] == {"accepted": 10, "pending": 160} or info["by_status"] == {"pending": 160, "accepted": 10}
    assert info["in_scope_by_status"] == {"pending": 160, "accepted": 10, "rejected": 5}
    assert info["excluded_by_filter"] == {"status": 5}
    manifest = json.loads((tmp_path / ".a.jsonl.manifest.json").read_text())
    assert manifest["filters"]["status"] == "pending,accepted"


@pytest.mark.parametrize("spec,rows", [("accepted", 10), ("accepted,pending", 170), ("pending,accepted", 170),
                                       ("rejected", 5), ("all", 175), ("accepted, rejected", 15),
                                       ("accepted,accepted", 10)])
def test_status_comma_list(cli, shared_data, db_path, tmp_path, spec, rows):
    _seed(cli, shared_data, db_path)
    code, text, err = cli("export", str(tmp_path / "a.jsonl"), "--format", "alpaca", "--status", spec, "--json")
    assert code == 0, err
    assert json.loads(text)["rows"] == rows


@pytest.mark.parametrize("spec", ["accept", "Accepted", "all,accepted", "", ",", "accepted,", "not-rejected",
                                  "pending;accepted", "*"])
def test_status_that_almost_matches_is_refused(cli, shared_data, db_path, tmp_path, spec):
    _seed(cli, shared_data, db_path)
    code, text, err = cli("export", str(tmp_path / "a.jsonl"), "--format", "alpaca", "--status", spec)
    assert code == 2 and "--status" in err
    assert not (tmp_path / "a.jsonl").exists()
    assert open_store(db_path).execute("SELECT count(*) FROM snapshots").fetchone()[0] == 0


def test_counts_printed_by_status_and_by_filter(cli, shared_data, db_path, tmp_path):
    _seed(cli, shared_data, db_path)
    conn = open_store(db_path)
    with transaction(conn):
        for sid in range(1, 11):
            scores.record(conn, sid, "judge", 8 if sid <= 5 else 2, (1, 10))
    code, text, err = cli("export", str(tmp_path / "a.jsonl"), "--format", "alpaca", "--status", "accepted",
                          "--min-score", "judge=5")
    assert code == 0, err
    assert "by status: accepted 5" in text
    assert "175 in scope (pending 160, accepted 10, rejected 5)" in text
    assert "165 excluded by status" in text and "5 excluded by min_score" in text


def test_zero_rows_exit_non_zero_with_counts_and_nothing_written(cli, shared_data, db_path, tmp_path):
    _seed(cli, shared_data, db_path, accepted=(), rejected=())
    out = tmp_path / "a.jsonl"
    code, text, err = cli("export", str(out), "--format", "alpaca", "--status", "accepted")
    assert code == 2
    assert "no rows to export" in err and "175 in scope (pending 175, accepted 0, rejected 0)" in err
    assert "175 excluded by status" in err
    assert list(tmp_path.glob("*a.jsonl*")) == []
    assert open_store(db_path).execute("SELECT count(*) FROM snapshots").fetchone()[0] == 0
    # all rows filtered out by a later filter: named as such
    with transaction(conn := open_store(db_path)):
        scores.record(conn, 1, "curate", 3, (1, 5))
    code, text, err = cli("export", str(out), "--format", "alpaca", "--min-score", "curate=5")
    assert code == 2 and "175 excluded by min_score" in err


def test_prompt_only_rows_are_skipped_and_counted_never_hollow(cli, shared_data, db_path, tmp_path):
    cli("import", str(shared_data / "fastchat-bench-questions" / "mt_bench_questions.csv"), "--dataset", "mt")
    _seed(cli, shared_data, db_path, accepted=(), rejected=())
    for fmt in ("alpaca", "sharegpt", "messages", "trl-sft", "llama-factory", "axolotl"):
        out = tmp_path / f"{fmt}.jsonl"
        code, text, err = cli("export", str(out), "--format", fmt, "--json")
        assert code == 0, (fmt, err)
        info = json.loads(text)
        assert info["rows"] == 175 and info["skipped"] == 80, fmt
        assert list(info["skipped_by_reason"].values()) == [80]
        assert "no response" in next(iter(info["skipped_by_reason"]))
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert len(rows) == 175
    # only the prompt-only set: nothing to write, non-zero exit
    code, text, err = cli("export", str(tmp_path / "mt.jsonl"), "--format", "messages", "--dataset", "mt")
    assert code == 2 and "80 skipped: no response" in err and not (tmp_path / "mt.jsonl").exists()


def _types_by_column(rows):
    """Each column's JSON types over all rows (null left out: a metadata column some sources lack)."""
    types = {}
    for r in rows:
        for k, v in r.items():
            types.setdefault(k, set())
            if v is not None:
                types[k].add(type(v).__name__)
    return types


@pytest.fixture(scope="module")
def mixed_store(tmp_path_factory):
    """OASST (multi-turn message lists), HH (transcripts) and the seed tasks (single-turn strings) in one store,
    built once for the module; each test works on its own copy."""
    from conftest import SHARED_DATA, run_cli
    if not SHARED_DATA.is_dir():
        pytest.skip("shared data not found")
    db = tmp_path_factory.mktemp("mixed") / "store.db"
    for path, name in (("oasst-en100/oasst_en100_preference.jsonl", "oasst"),
                       ("hh-rlhf-harmless-test/harmless-base-test.jsonl", "hh"),
                       ("self-instruct-seed/seed_tasks_alpaca.json", "seed")):
        assert run_cli("--db", str(db), "import", str(SHARED_DATA / path), "--dataset", name)[0] == 0
    conn = open_store(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return db


@pytest.fixture
def mixed(mixed_store, db_path):
    import sqlite3
    # SQLite's backup, not a file copy: the imports' background `index` processes may still be committing into
    # the WAL, and a copy of the main file alone could miss rows
    src, dst = sqlite3.connect(mixed_store), sqlite3.connect(db_path)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()
    return db_path


@pytest.mark.parametrize("fmt,flags", [("preference", []), ("preference", ["--conversational"]),
                                       ("trl-sft", []), ("trl-sft", ["--conversational"]), ("llama-factory", []),
                                       ("axolotl", []), ("alpaca", []), ("sharegpt", []), ("messages", [])])
def test_one_shape_per_file(cli, mixed, tmp_path, fmt, flags):
    """Mixed sources (single-turn strings, multi-turn message lists, HH transcripts): every row of a file has the
    same columns with the same JSON types."""
    out = tmp_path / "o.jsonl"
    code, text, err = cli("export", str(out), "--format", fmt, *flags, "--json")
    assert code == 0, err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == json.loads(text)["rows"] > 0
    assert len({tuple(r) for r in rows}) == 1
    types = _types_by_column(rows)
    assert all(len(t) <= 1 for t in types.values()), types
    if fmt in ("trl-sft", "llama-factory", "axolotl"):    # trainer formats: no nullable extras at all
        assert all(v is not None for r in rows for v in r.values())
    if fmt in ("preference", "trl-sft") and not flags:
        assert all(isinstance(r["prompt"], str) for r in rows)
        assert "needs_conversational" not in text and "cannot hold" in "".join(json.loads(text)["skipped_by_reason"])
    if flags:
        assert all(isinstance(r["prompt"], list) for r in rows)
        # HH and OASST multi-turn context survives in the conversational layout
        assert sum(len(r["prompt"]) > 1 for r in rows) > 1000
