"""Inputs as users hand them (directories, several files, stdin, .gz), re-import refusal, --dry-run as stored,
candidates from several model-output files, datasets rename/delete/merge, and --db in a missing directory."""
import gzip
import json
import subprocess
import sys

import pytest

from workbench import dataset_ops, importer, review
from workbench.candidates import candidates_from_datasets, import_candidates
from workbench.samples import iter_samples

LAYOUTS = __import__("pathlib").Path(__file__).parent / "data" / "layouts"


def count(conn, table="samples"):
    return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_directory_sorted_each_row_remembers_its_file(conn, tmp_path):
    d = tmp_path / "shards"
    d.mkdir()
    write(d / "b.jsonl", [{"instruction": "b1", "output": "x"}, {"instruction": "b2", "output": "x"}])
    write(d / "a.jsonl", [{"instruction": "a1", "output": "x"}])
    (d / "notes.bin").write_bytes(b"\x00")      # not a supported file: left out
    (d / ".hidden.jsonl").write_text("broken")
    res = importer.import_files(conn, [d])
    assert res.dataset == "shards" and res.rows == 3 and [f.file for f in res.files] == [str(d / "a.jsonl"),
                                                                                          str(d / "b.jsonl")]
    got = conn.execute("SELECT s.instruction, i.file, s.source_line FROM samples s JOIN imports i "
                       "ON i.id = s.import_id ORDER BY s.id").fetchall()
    assert got == [("a1", str(d / "a.jsonl"), 1), ("b1", str(d / "b.jsonl"), 1), ("b2", str(d / "b.jsonl"), 2)]
    assert all(len(sha) == 64 for (sha,) in conn.execute("SELECT sha256 FROM imports"))


def test_several_files_are_one_transaction(conn, tmp_path):
    good = write(tmp_path / "good.jsonl", [{"instruction": "i", "output": "o"}])
    bad = write(tmp_path / "bad.jsonl", [{"instruction": "i", "output": "o"}, {"instruction": 5, "output": [1]}])
    with pytest.raises(importer.ImportFailed) as e:
        importer.import_files(conn, [good, bad], "d")
    assert str(e.value).startswith(f"{bad}, line 2")
    assert count(conn) == 0 and count(conn, "imports") == 0 and count(conn, "datasets") == 0
    with pytest.raises(importer.ImportFailed) as e:
        importer.import_files(conn, [good, bad])
    assert "--dataset" in str(e.value)
    with pytest.raises(importer.ImportFailed) as e:
        importer.import_files(conn, [good, good], "d")
    assert "given twice" in str(e.value)


def test_gz_and_reimport_refused_unless_append(conn, tmp_path):
    gz = tmp_path / "pairs.jsonl.gz"
    with gzip.open(gz, "wt") as f:
        f.write(json.dumps({"instruction": "q", "output_1": "BETTER", "output_2": "WORSE", "preference": 1}) + "\n")
    res = importer.import_file(conn, gz)
    assert res.dataset == "pairs" and res.format == "pairwise" and res.rows == 1
    with pytest.raises(importer.ImportFailed) as e:
        importer.import_file(conn, gz)
    assert "already in dataset 'pairs'" in str(e.value) and "--append" in str(e.value)
    assert count(conn) == 1
    importer.import_file(conn, gz, dataset="other")               # another dataset: fine
    importer.import_file(conn, gz, append=True)
    assert count(conn) == 3
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(gz.read_bytes()[:20])
    with pytest.raises(importer.ImportFailed) as e:
        importer.import_file(conn, broken)
    assert str(e.value).startswith(str(broken))


def test_stdin_needs_format_and_is_named_dash(tmp_path, db_path):
    rows = "".join(json.dumps({"instruction": f"i{k}", "output": "o"}) + "\n" for k in range(3))
    run = lambda *a: subprocess.run([sys.executable, "-m", "workbench", "--db", str(db_path), "import", "-", *a],  # noqa
                                    input=rows, capture_output=True, text=True)
    p = run("--dataset", "s")
    assert p.returncode == 2 and "needs --format" in p.stderr
    p = run("--dataset", "s", "--format", "alpaca", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["rows"] == 3 and json.loads(p.stdout)["files"][0]["file"] == "-"
    p = run("--dataset", "s", "--format", "alpaca")
    assert p.returncode == 2 and "already in dataset 's'" in p.stderr


def test_dry_run_shows_rows_exactly_as_stored(conn, cli, tmp_path):
    code, out, err = cli("import", str(LAYOUTS / "alpacaeval_annotations.json"), "--dry-run", "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["format"] == "pairwise" and info["mapping"]["preference"] == "preference"
    assert info["mapping"]["first"] == "output_1" and info["mapping"]["second_model"] == "generator_2"
    importer.import_file(conn, LAYOUTS / "alpacaeval_annotations.json", dataset="ae")
    stored = list(iter_samples(conn))[:3]
    for p, s in zip(info["preview"], stored):
        for k in ("instruction", "input", "response", "rejected", "system", "messages", "metadata", "origin",
                  "source_line", "content_hash", "instruction_len", "response_len"):
            assert p[k] == s[k], k
        assert [c["model"] for c in p["candidates"]] == ["gpt4_1106_preview", "my_model"]
    assert count(conn) == 7


def test_db_in_a_missing_directory_is_an_error(cli, tmp_path, monkeypatch):
    missing = tmp_path / "nope" / "store.db"
    code, out, err = cli("--db", str(missing), "datasets")
    assert code == 2 and "does not exist" in err and not missing.parent.exists()
    monkeypatch.setenv("WORKBENCH_DB", str(missing))
    code, out, err = cli("datasets")
    assert code == 2 and "WORKBENCH_DB" in err and not missing.parent.exists()


# --- candidates from files and datasets ---------------------------------------------------------------------

def test_as_candidates_joins_on_normalized_instruction_and_reports_unmatched(conn):
    res = import_candidates(conn, [LAYOUTS / "outputs_model_a.json", LAYOUTS / "outputs_model_b.json"], "cands")
    assert res.prompts == 5 and res.candidates == 10 and res.models == ["model-a", "model-b"]
    assert [(u.file.endswith("outputs_model_b.json"), u.instruction) for u in res.unmatched] == \
        [(True, "Only model b answered this.")]
    for s in iter_samples(conn):
        cands = conn.execute("SELECT model, response FROM candidates WHERE sample_id = ? ORDER BY id",
                             (s["id"],)).fetchall()
        assert cands == [("model-a", f"A says: {s['instruction']}"), ("model-b", f"B says: {s['instruction']}")]
        assert s["response"] == "" and s["metadata"] == {"dataset": "helpful_base"}
    with pytest.raises(importer.ImportFailed):       # the same files again: refused
        import_candidates(conn, [LAYOUTS / "outputs_model_a.json", LAYOUTS / "outputs_model_b.json"], "cands")


def test_as_candidates_refuses_an_ambiguous_file(conn, tmp_path):
    a = write(tmp_path / "a.jsonl", [{"instruction": "Q", "output": "1"}, {"instruction": " q ", "output": "2"}])
    b = write(tmp_path / "b.jsonl", [{"instruction": "Q", "output": "3"}])
    with pytest.raises(importer.ImportFailed) as e:
        import_candidates(conn, [a, b], "c")
    assert f"{a}, line 2, field 'instruction'" in str(e.value) and "line 1" in str(e.value)
    assert count(conn) == 0


def test_shared_predictions_as_candidates(conn, shared_data):
    pred = shared_data / "self-instruct-user-oriented" / "predictions"
    files = [pred / "text-davinci-003_predictions.jsonl", pred / "davinci_predictions.jsonl"]
    res = import_candidates(conn, files, "uo", skip_invalid=True)
    assert res.prompts >= 240 and res.models == ["text-davinci-003_predictions", "davinci_predictions"]
    assert res.candidates == 2 * res.prompts


def test_candidates_from_datasets(conn):
    importer.import_file(conn, LAYOUTS / "outputs_model_a.json", dataset="A")
    importer.import_file(conn, LAYOUTS / "outputs_model_b.json", dataset="B")
    out = candidates_from_datasets(conn, "A", ["A", "B"])
    assert (out["matched"], out["added"], out["unmatched"]) == (5, 10, [])
    again = candidates_from_datasets(conn, "A", ["A", "B"])
    assert again["added"] == 0                       # not twice
    models = {m for (m,) in conn.execute("SELECT DISTINCT model FROM candidates")}
    assert models == {"model-a", "model-b"}
    with pytest.raises(importer.ImportFailed):
        candidates_from_datasets(conn, "A", ["nope"])


# --- datasets as things one manages ----------------------------------------------------------------------------

def test_rename_delete_merge_and_the_log(conn, cli):
    importer.import_file(conn, LAYOUTS / "alpacaeval_annotations.json", dataset="ae")
    importer.import_file(conn, LAYOUTS / "ultrafeedback_binarized.jsonl", dataset="uf")
    importer.import_file(conn, LAYOUTS / "trl_kto.jsonl", dataset="kto")
    sid = next(iter_samples(conn))["id"]
    review.decide(conn, sid, "accept", "s")
    code, out, err = cli("datasets", "rename", "ae", "uf")
    assert code == 2 and "already exists" in err
    assert cli("datasets", "rename", "ae", "pairs")[0] == 0
    code, out, err = cli("datasets", "merge", "pairs", "uf", "--into", "all", "--json")
    assert code == 0, err
    assert json.loads(out)["moved"] == 12
    assert [(d["name"], d["rows"], d["kind"]) for d in json.loads(cli("datasets", "--json")[1])] == \
        [("kto", 2, "sft"), ("all", 12, "preference")]
    code, out, err = cli("datasets", "delete", "all")        # stdin is not a terminal here: --yes is needed
    assert code == 2 and "--yes" in err and count(conn) == 14
    code, out, err = cli("datasets", "delete", "all", "--yes", "--json")
    assert code == 0, err
    gone = json.loads(out)
    assert gone["samples"] == 12 and gone["decisions"] == 1 and gone["judgments"] == 10 and gone["candidates"] == 24
    assert count(conn) == 2 and count(conn, "candidates") == 0 and count(conn, "judgments") == 0
    assert count(conn, "imports") == 1
    log = conn.execute("SELECT action FROM decisions WHERE sample_id = 0 ORDER BY id").fetchall()
    assert [a for (a,) in log] == ["dataset-rename", "dataset-merge", "dataset-delete"]
    assert review.undo(conn, "s") is None        # the deleted dataset's decision went with it
    # the re-import check follows the dataset: after the delete the file can come in again
    importer.import_file(conn, LAYOUTS / "alpacaeval_annotations.json", dataset="all")
    with pytest.raises(dataset_ops.DatasetError):
        dataset_ops.delete_dataset(conn, "nope", "s")


def test_run_preference_candidates_from_on_the_command_line(conn, cli):
    importer.import_file(conn, LAYOUTS / "outputs_model_a.json", dataset="A")
    importer.import_file(conn, LAYOUTS / "outputs_model_b.json", dataset="B")
    cli("endpoints", "add", "gen", "--base-url", "http://127.0.0.1:9/v1", "--model", "g")
    cli("endpoints", "add", "judge", "--base-url", "http://127.0.0.1:9/v1", "--model", "j")
    code, out, err = cli("run", "preference", "--dataset", "A", "--endpoint", "gen", "--judge", "judge",
                         "--candidates-from", "A,B", "--param", "candidates=generate")
    assert code == 2 and "candidates=generate" in err and count(conn, "candidates") == 0
    code, out, err = cli("run", "preference", "--dataset", "A", "--endpoint", "gen", "--judge", "judge",
                         "--candidates-from", "A,B")
    assert code == 0, err
    assert "10 added to 5 samples" in err
    params = json.loads(conn.execute("SELECT params FROM jobs ORDER BY id DESC LIMIT 1").fetchone()[0])
    assert params["task"]["candidates"] == "existing" and params["dataset"] == "A"


def test_samples_json_lists_imported_candidates_with_models_and_scores(conn, cli):
    importer.import_file(conn, LAYOUTS / "ultrafeedback_binarized.jsonl", dataset="uf",
                         opts=importer.ParseOptions(score_scale=(1, 10)))
    importer.import_file(conn, LAYOUTS / "alpacaeval_annotations.json", dataset="ae")
    code, out, err = cli("samples", "--dataset", "uf", "--json", "--limit", "1")
    assert code == 0, err
    cands = json.loads(out)[0]["candidates"]
    assert [c["text"][:6] for c in cands] == ["BETTER", "WORSE:"]
    assert [(s["rubric"], s["score"], s["scale"]) for c in cands for s in c["scores"]] == \
        [("import-score", 8.0, [1, 10]), ("import-score", 3.0, [1, 10])]
    code, out, err = cli("samples", "--dataset", "ae", "--json", "--limit", "1")
    assert [c["model"] for c in json.loads(out)[0]["candidates"]] == ["gpt4_1106_preview", "my_model"]


def test_a_gz_that_ends_early_in_the_parser_process_is_refused(conn, tmp_path, monkeypatch):
    """The parser process reads big JSONL files itself: what goes wrong there (a .gz cut short after rows were
    sent and inserted) is refused in the importing process as in the serial path, and nothing stays."""
    import random
    from workbench import readers
    rng = random.Random(3)
    gz = tmp_path / "cut.jsonl.gz"
    with gzip.open(gz, "wt") as f:
        for k in range(3000):
            text = "".join(rng.choices("abcdefgh ", k=300))      # hardly compressible: many blocks
            f.write(json.dumps({"instruction": f"q{k} {text}", "output": "o"}) + "\n")
    gz.write_bytes(gz.read_bytes()[: gz.stat().st_size * 2 // 3])
    monkeypatch.setattr(importer, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(readers, "JSONL_BLOCK_BYTES", 20_000)     # rows go in before the end is reached
    before = count(conn)
    with pytest.raises(importer.ImportFailed) as e:
        importer.import_file(conn, gz, dataset="cut")
    assert str(e.value).startswith(f"{gz}: cannot read the file"), str(e.value)
    assert count(conn) == before and conn.execute("SELECT count(*) FROM imports").fetchone()[0] == 0
