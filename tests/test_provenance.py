"""Provenance a reviewer can audit: the manifest lists source files (sha256, format, mapping, rows), curation steps,
the jobs that made or judged rows (template name+version, models, params), filters, counts, columns, licences; and
`workbench provenance --dataset D --id N` answers "where did this row come from?"."""
import hashlib
import json

import pytest

from workbench import review
from workbench.store import open_store

from llm_server import LLMServer
from taskkit import config_for, run

SEED = ("self-instruct-seed", "seed_tasks_alpaca.json")


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _manifest(path):
    return json.loads((path.parent / f".{path.name}.manifest.json").read_text())


@pytest.fixture
def generated(cli, shared_data, db_path, conn):
    """The seed tasks imported under a licence, 5 of them answered by a generate job (the test server), one
    rejected by a curator, one accepted, one edited, one dropped by a clean run."""
    src = shared_data / SEED[0] / SEED[1]
    assert cli("import", str(src), "--dataset", "seed", "--license", "apache-2.0")[0] == 0
    with LLMServer(reply=lambda messages, body: "A generated answer of reasonable length for the test.") as srv:
        cfg = config_for(srv)
        job = run(conn, db_path, "generate", config=cfg, dataset="seed", into="gen", filter={"limit": 5})
    assert job["status"] == "done"
    gen = [r[0] for r in conn.execute("SELECT id FROM samples WHERE dataset_id = (SELECT id FROM datasets "
                                      "WHERE name = 'gen') ORDER BY id")]
    assert len(gen) == 5
    session = review.curator_session("tester")
    review.decide(conn, gen[0], "accept", session)
    review.decide(conn, gen[1], "reject", session)
    review.edit(conn, gen[2], {"response": "An edited answer."}, session)
    return {"src": src, "job": job, "gen": gen}


def test_manifest_lists_sources_steps_jobs_licences_and_columns(cli, generated, db_path, tmp_path):
    out = tmp_path / "gen.jsonl"
    code, text, err = cli("export", str(out), "--format", "trl-sft", "--dataset", "gen", "--with-ids", "--json")
    assert code == 0, err
    m = _manifest(out)
    assert m["counts"]["rows"] == 4 and m["counts"]["excluded_by_filter"] == {"status": 1}
    assert m["columns"] == ["prompt", "completion", "sample_id"] and m["with_ids"] is True
    assert m["filters"] == {"dataset": "gen", "status": "pending,accepted"}
    (src,) = m["provenance"]["sources"]            # the generated rows' parents came from the seed file
    assert src["file"] == str(generated["src"]) and src["sha256"] == _sha(generated["src"])
    assert src["format"] == "alpaca" and src["rows_imported"] == 175 and src["license"] == "Apache-2.0"
    assert src["mapping"]["instruction"] == "instruction" and src["lineage_rows"] == 4 and src["exported_rows"] == 0
    (job,) = m["provenance"]["jobs"]
    assert job["job_id"] == generated["job"]["id"] and job["task"] == "generate" and job["made_rows"] == 4
    assert job["models"] == [{"model": "test-model", "endpoint": "test-model"}]
    assert job["templates"] == [{"name": "generate", "version": "generate/1"}]
    assert "params" in job and job["endpoint"] == "test-model"
    review_step = next(s for s in m["provenance"]["steps"] if s["step"] == "review")
    assert review_step["decisions"] == {"accept": 1, "edit": 1}   # the rejected row was not exported
    assert m["licenses"] == ["Apache-2.0"]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["sample_id"] for r in rows] == [i for i in generated["gen"] if i != generated["gen"][1]]


def test_clean_and_dedup_runs_are_listed(cli, shared_data, db_path, tmp_path):
    cli("import", str(shared_data / SEED[0] / SEED[1]), "--dataset", "seed")
    code, text, err = cli("clean", "--dataset", "seed", "--normalize", "--apply")
    assert code == 0, err
    conn = open_store(db_path)
    normalized = conn.execute("SELECT count(DISTINCT sample_id) FROM decisions WHERE action = 'normalize'").fetchone()[0]
    out = tmp_path / "s.jsonl"
    assert cli("export", str(out), "--format", "alpaca", "--status", "all")[0] == 0
    steps = _manifest(out)["provenance"]["steps"]
    if normalized:
        norm = [s for s in steps if s["step"] == "normalize"]
        assert norm and sum(s["rows"] for s in norm) == normalized and norm[0]["run"]
    assert _manifest(out)["licenses"] == [] and _manifest(out)["provenance"]["rows_without_license"] == 175


def test_mixed_licences_are_all_listed(cli, shared_data, tmp_path):
    cli("import", str(shared_data / SEED[0] / SEED[1]), "--dataset", "seed", "--license", "Apache-2.0")
    cli("import", str(shared_data / "oasst-en100" / "oasst_en100_messages.jsonl"), "--dataset", "o",
        "--license", "CC-BY-4.0")
    out = tmp_path / "m.jsonl"
    assert cli("export", str(out), "--format", "messages")[0] == 0
    m = _manifest(out)
    assert m["licenses"] == ["Apache-2.0", "CC-BY-4.0"]
    assert {s["license"] for s in m["provenance"]["sources"]} == {"Apache-2.0", "CC-BY-4.0"}


@pytest.mark.parametrize("given,stored", [("MIT", "MIT"), ("mit", "MIT"), ("cc-by-sa-4.0", "CC-BY-SA-4.0"),
                                          ("LicenseRef-internal-only", "LicenseRef-internal-only")])
def test_license_ids_are_normalized(cli, shared_data, db_path, given, stored):
    assert cli("import", str(shared_data / SEED[0] / SEED[1]), "--license", given)[0] == 0
    assert open_store(db_path).execute("SELECT license FROM datasets").fetchone()[0] == stored


@pytest.mark.parametrize("given", ["apache", "CC-BY", "GPL", "MIT License", "Apache 2.0", "", "LicenseRef-",
                                   "MIT OR Apache-2.0"])
def test_license_that_almost_matches_is_refused(cli, shared_data, db_path, given):
    code, out, err = cli("import", str(shared_data / SEED[0] / SEED[1]), "--license", given)
    assert code == 2 and "--license" in err and ("LicenseRef-" in err or (not given and "--license is empty" in err))
    assert open_store(db_path).execute("SELECT count(*) FROM samples").fetchone()[0] == 0


def test_one_licence_per_dataset(cli, shared_data, db_path):
    src = str(shared_data / SEED[0] / SEED[1])
    assert cli("import", src, "--dataset", "d", "--license", "MIT")[0] == 0
    # the same file again needs --append (issue 12); with it, the licence is still checked
    code, out, err = cli("import", src, "--dataset", "d", "--license", "MIT")
    assert code == 2 and "--append" in err
    code, out, err = cli("import", src, "--dataset", "d", "--license", "Apache-2.0", "--append")
    assert code == 2 and "licensed MIT" in err
    code, out, err = cli("import", src, "--dataset", "d", "--append")
    assert code == 2 and "--license MIT" in err
    assert cli("import", src, "--dataset", "d", "--license", "mit", "--append")[0] == 0
    assert cli("import", src, "--dataset", "e")[0] == 0
    code, out, err = cli("import", src, "--dataset", "e", "--license", "MIT", "--append")
    assert code == 2 and "without a licence" in err
    conn = open_store(db_path)
    assert conn.execute("SELECT count(*) FROM samples").fetchone()[0] == 175 * 3


def test_provenance_command_tells_one_rows_history(cli, generated, db_path, tmp_path):
    out = tmp_path / "gen.jsonl"
    cli("export", str(out), "--format", "messages", "--dataset", "gen", "--with-ids")
    edited = generated["gen"][2]
    code, text, err = cli("provenance", "--dataset", "gen", "--id", str(edited), "--json")
    assert code == 0, err
    h = json.loads(text)
    assert h["sample_id"] == edited and h["dataset"] == "gen"
    assert h["job"]["job_id"] == generated["job"]["id"] and h["job"]["origin"]["model"] == "test-model"
    assert [d["action"] for d in h["decisions"]] == ["edit"]
    assert h["snapshots"][0]["file"] == str(out)
    parent = h["parent"]
    assert parent["dataset"] == "seed" and parent["source"]["file"] == str(generated["src"])
    assert parent["source"]["line_or_row"] >= 1 and parent["source"]["sha256"] == _sha(generated["src"])
    code, text, err = cli("provenance", "--dataset", "gen", "--id", str(edited))
    assert code == 0 and "made by job" in text and "edit" in text and str(generated["src"]) in text
    assert "exported in snapshot" in text


def test_provenance_refuses_a_sample_of_another_dataset(cli, generated):
    code, out, err = cli("provenance", "--dataset", "seed", "--id", str(generated["gen"][0]))
    assert code == 2 and "is in dataset 'gen'" in err
    code, out, err = cli("provenance", "--dataset", "gen", "--id", "999999")
    assert code == 2 and "no sample" in err


def test_provenance_text_is_safe_for_a_terminal(cli, tmp_path, db_path):
    evil = tmp_path / "x\x1b[31m.jsonl"
    evil.write_text(json.dumps({"instruction": "hi", "output": "there"}) + "\n")
    assert cli("import", str(evil), "--dataset", "d")[0] == 0
    code, text, err = cli("provenance", "--dataset", "d", "--id", "1")
    assert code == 0 and "\x1b" not in text and "\\x1b" in text
