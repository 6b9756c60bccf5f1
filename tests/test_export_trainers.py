"""Every export format loaded with the real `datasets` library: row counts, column sets and types as TRL,
LLaMA-Factory and Axolotl document them; directory exports that `load_dataset(DIR)` reads exactly; manifests it
never reads; LLaMA-Factory's dataset_info.json merged without losing the user's entries; the Axolotl snippet."""
import gzip
import json
import os
import shutil

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")   # before datasets is imported: no network in tests
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import datasets  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402  (datasets depends on PyYAML)

from workbench.store import open_store  # noqa: E402

from conftest import SHARED_DATA, run_cli  # noqa: E402

datasets.disable_progress_bars()
MSG = {"role": datasets.Value("string"), "content": datasets.Value("string")}
TURN = {"from": datasets.Value("string"), "value": datasets.Value("string")}
S = datasets.Value("string")


@pytest.fixture(autouse=True)
def hf_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


@pytest.fixture(scope="module")
def store_template(tmp_path_factory):
    """OASST preference pairs (multi-turn), HH, the seed tasks; 20 seed rows accepted and 10 rejected (KTO's labels),
    built once; each test gets a copy."""
    if not SHARED_DATA.is_dir():
        pytest.skip("shared data not found")
    db = tmp_path_factory.mktemp("trainers") / "store.db"
    for path, name, lic in (("oasst-en100/oasst_en100_preference.jsonl", "oasst", "Apache-2.0"),
                            ("hh-rlhf-harmless-test/harmless-base-test.jsonl", "hh", "MIT"),
                            ("self-instruct-seed/seed_tasks_alpaca.json", "seed", "Apache-2.0")):
        code, out, err = run_cli("--db", str(db), "import", str(SHARED_DATA / path), "--dataset", name,
                                 "--license", lic)
        assert code == 0, err
    conn = open_store(db)
    seed = conn.execute("SELECT min(id) FROM samples WHERE dataset_id = (SELECT id FROM datasets WHERE name = 'seed')"
                        ).fetchone()[0]
    conn.execute("UPDATE samples SET status = 'accepted' WHERE id BETWEEN ? AND ?", (seed, seed + 19))
    conn.execute("UPDATE samples SET status = 'rejected' WHERE id BETWEEN ? AND ?", (seed + 20, seed + 29))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return db


@pytest.fixture
def store(store_template, db_path):
    shutil.copy(store_template, db_path)
    return db_path


def export(*args):
    code, out, err = run_cli("export", *args, "--json")
    assert code == 0, err
    return json.loads(out)


def load(path, kind="json"):
    return datasets.load_dataset(kind, data_files=str(path), split="train")


def features(ds) -> dict:
    return dict(ds.features)


# --- TRL ----------------------------------------------------------------------------------------------------

def test_trl_preference_standard(store, tmp_path):
    info = export(str(tmp_path / "p.jsonl"), "--format", "preference", "--dataset", "oasst")
    ds = load(tmp_path / "p.jsonl")
    assert ds.num_rows == info["rows"] == 99 and info["skipped"] == 113   # 113 multi-turn rows need --conversational
    f = features(ds)
    assert (f["prompt"], f["chosen"], f["rejected"]) == (S, S, S)
    assert ds[0]["prompt"].startswith("How can I find the best 401k plan")


def test_trl_preference_conversational_keeps_every_turn(store, tmp_path):
    info = export(str(tmp_path / "p.jsonl"), "--format", "preference", "--conversational", "--dataset", "oasst")
    ds = load(tmp_path / "p.jsonl")
    assert ds.num_rows == info["rows"] == 212 and info["skipped"] == 0
    f = features(ds)
    assert f["prompt"] == datasets.List(MSG) and f["chosen"] == datasets.List(MSG) and f["rejected"] == datasets.List(MSG)
    assert sum(len(p) > 1 for p in ds["prompt"]) == 113
    assert all(len(c) == 1 and c[0]["role"] == "assistant" for c in ds["chosen"])
    assert all(p[-1]["role"] == "user" for p in ds["prompt"])


def test_trl_sft_prompt_completion_both_layouts(store, tmp_path):
    info = export(str(tmp_path / "s.jsonl"), "--format", "trl-sft", "--dataset", "seed")
    ds = load(tmp_path / "s.jsonl")
    assert ds.num_rows == info["rows"] == 165 and features(ds) == {"prompt": S, "completion": S}
    info = export(str(tmp_path / "c.jsonl"), "--format", "trl-sft", "--conversational", "--dataset", "hh")
    ds = load(tmp_path / "c.jsonl")
    assert ds.num_rows == info["rows"] == 2304
    assert features(ds) == {"prompt": datasets.List(MSG), "completion": datasets.List(MSG)}


def test_kto_labels_are_the_curator_decisions(store, tmp_path):
    info = export(str(tmp_path / "k.jsonl"), "--format", "kto")
    ds = load(tmp_path / "k.jsonl")
    assert ds.num_rows == info["rows"] == 30
    assert features(ds) == {"prompt": S, "completion": S, "label": datasets.Value("bool")}
    assert sum(ds["label"]) == 20 and ds["label"].count(False) == 10
    assert info["in_scope_by_status"]["pending"] > 0 and info["excluded_by_filter"]["status"] > 2000


def test_kto_with_pending_rows_asked_for_skips_them_as_undecided(store, tmp_path):
    info = export(str(tmp_path / "k.jsonl"), "--format", "kto", "--dataset", "seed", "--status", "all",
                  "--conversational")
    assert info["rows"] == 30 and any("decision" in k for k in info["skipped_by_reason"])
    ds = load(tmp_path / "k.jsonl")
    assert features(ds) == {"prompt": datasets.List(MSG), "completion": datasets.List(MSG),
                            "label": datasets.Value("bool")}


# --- LLaMA-Factory ----------------------------------------------------------------------------------------------

def _llama_factory_reads(directory, name):
    """LLaMA-Factory's own reading of a sharegpt entry, as its data/README.md states it: the file named by
    file_name in the dataset dir; `columns` name real columns; human/observation at odd positions, gpt at even;
    a ranking row's chosen/rejected are single gpt messages after a conversation that ends with the human."""
    info = json.loads((directory / "dataset_info.json").read_text())
    entry = info[name]
    assert entry["formatting"] == "sharegpt"
    ds = load(directory / entry["file_name"])
    for col in entry["columns"].values():
        assert col in ds.column_names
    ranking = entry.get("ranking", False)
    for row in ds:
        conv = row[entry["columns"]["messages"]]
        assert [t["from"] for t in conv] == [("human" if i % 2 == 0 else "gpt") for i in range(len(conv))]
        if ranking:
            assert len(conv) % 2 == 1
            assert row["chosen"]["from"] == "gpt" and row["rejected"]["from"] == "gpt"
            assert row["chosen"]["value"] and row["rejected"]["value"]
        else:
            assert len(conv) % 2 == 0 and conv[-1]["value"]
    return ds


def test_llama_factory_ranking_with_multi_turn_context(store, tmp_path):
    info = export(str(tmp_path / "lf.jsonl"), "--format", "llama-factory", "--dataset", "oasst")
    ds = _llama_factory_reads(tmp_path, "lf")
    assert ds.num_rows == info["rows"] == 212                 # none dropped
    assert features(ds) == {"conversations": datasets.List(TURN), "chosen": TURN, "rejected": TURN}
    assert sum(len(c) > 1 for c in ds["conversations"]) == 113


def test_llama_factory_sft_and_merge_keeps_user_entries(store, tmp_path):
    user = {"mine": {"file_name": "mine.json", "columns": {"prompt": "q"}}}
    (tmp_path / "dataset_info.json").write_text(json.dumps(user))
    info = export(str(tmp_path / "seed.jsonl"), "--format", "llama-factory", "--dataset", "seed")
    ds = _llama_factory_reads(tmp_path, "seed")
    assert ds.num_rows == info["rows"] == 165
    merged = json.loads((tmp_path / "dataset_info.json").read_text())
    assert merged["mine"] == user["mine"] and set(merged) == {"mine", "seed"}
    assert merged["seed"] == {"file_name": "seed.jsonl", "formatting": "sharegpt",
                              "columns": {"messages": "conversations"}}


def test_llama_factory_refuses_a_broken_or_taken_dataset_info(store, tmp_path):
    (tmp_path / "dataset_info.json").write_text("{not json")
    code, out, err = run_cli("export", str(tmp_path / "seed.jsonl"), "--format", "llama-factory", "--dataset", "seed")
    assert code == 2 and "cannot read it as JSON" in err
    assert (tmp_path / "dataset_info.json").read_text() == "{not json" and not (tmp_path / "seed.jsonl").exists()
    (tmp_path / "dataset_info.json").write_text(json.dumps({"seed": {"file_name": "theirs.json"}}))
    code, out, err = run_cli("export", str(tmp_path / "seed.jsonl"), "--format", "llama-factory", "--dataset", "seed")
    assert code == 2 and "already has an entry 'seed'" in err
    assert json.loads((tmp_path / "dataset_info.json").read_text()) == {"seed": {"file_name": "theirs.json"}}
    code, out, err = run_cli("export", str(tmp_path / "seed.jsonl.gz"), "--format", "llama-factory")
    assert code == 2 and "not .gz" in err


# --- Axolotl ------------------------------------------------------------------------------------------------

def test_axolotl_chat_template_snippet_names_real_fields(store, tmp_path):
    info = export(str(tmp_path / "ax.jsonl"), "--format", "axolotl", "--dataset", "seed")
    ds = load(tmp_path / "ax.jsonl")
    assert ds.num_rows == info["rows"] == 165 and features(ds) == {"messages": datasets.List(MSG)}
    cfg = yaml.safe_load((tmp_path / "ax.jsonl.axolotl.yaml").read_text())
    d = cfg["datasets"][0]
    assert d["type"] == "chat_template" and d["field_messages"] in ds.column_names
    assert d["message_property_mappings"] == {"role": "role", "content": "content"}
    assert d["path"] == str(tmp_path / "ax.jsonl") and d["ds_type"] == "json" and "rl" not in cfg


def test_axolotl_dpo_snippet(store, tmp_path):
    info = export(str(tmp_path / "ax.jsonl"), "--format", "axolotl", "--dataset", "oasst")
    ds = load(tmp_path / "ax.jsonl")
    assert ds.num_rows == info["rows"] == 212
    assert features(ds) == {"messages": datasets.List(MSG), "chosen": MSG, "rejected": MSG}
    cfg = yaml.safe_load((tmp_path / "ax.jsonl.axolotl.yaml").read_text())
    d = cfg["datasets"][0]
    assert cfg["rl"] == "dpo" and d["type"] == "chat_template.default"
    assert {d["field_messages"], d["field_chosen"], d["field_rejected"]} == set(ds.column_names)


# --- native formats, compression, arrays, Parquet -----------------------------------------------------------------

@pytest.mark.parametrize("fmt,cols", [("alpaca", {"instruction", "input", "output", "history"}),
                                      ("sharegpt", {"conversations"}), ("messages", {"messages"})])
def test_native_formats_load(store, tmp_path, fmt, cols):
    info = export(str(tmp_path / "n.jsonl"), "--format", fmt, "--status", "all")
    ds = load(tmp_path / "n.jsonl")
    assert ds.num_rows == info["rows"] and cols <= set(ds.column_names)


def test_gzip_and_json_array(store, tmp_path):
    info = export(str(tmp_path / "m.jsonl.gz"), "--format", "messages", "--dataset", "seed")
    raw = (tmp_path / "m.jsonl.gz").read_bytes()
    assert raw[:2] == b"\x1f\x8b" and len(gzip.decompress(raw).splitlines()) == info["rows"] == 165
    assert load(tmp_path / "m.jsonl.gz").num_rows == 165
    info = export(str(tmp_path / "a.json"), "--format", "trl-sft", "--dataset", "seed")
    assert isinstance(json.loads((tmp_path / "a.json").read_text()), list)
    assert load(tmp_path / "a.json").num_rows == info["rows"]
    export(str(tmp_path / "a.json.gz"), "--format", "trl-sft", "--dataset", "seed")
    assert json.loads(gzip.decompress((tmp_path / "a.json.gz").read_bytes())) == json.loads(
        (tmp_path / "a.json").read_text())


def test_parquet_with_ids(store, tmp_path):
    info = export(str(tmp_path / "all.parquet"), "--format", "parquet", "--status", "all", "--with-ids")
    ds = load(tmp_path / "all.parquet", "parquet")
    assert ds.num_rows == info["rows"] == 2699 and ds.features["sample_id"] == datasets.Value("int64")
    assert sorted(ds["sample_id"]) == list(range(1, 2700))


def test_a_format_name_mismatch_is_refused(store, tmp_path):
    for name, fmt in (("x.parquet", "messages"), ("x.jsonl", "parquet"), ("x.parquet.gz", "parquet")):
        code, out, err = run_cli("export", str(tmp_path / name), "--format", fmt)
        assert code == 2, name
    code, out, err = run_cli("export", str(tmp_path / "x.jsonl"), "--format", "alpaca", "--conversational")
    assert code == 2 and "--conversational applies to" in err


# --- directory exports and where manifests go --------------------------------------------------------------------

def test_directory_export_is_what_load_dataset_reads(store, tmp_path):
    d = tmp_path / "pairs"
    info = export(str(d), "--format", "preference", "--conversational", "--with-ids")
    assert sorted(p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file()) == \
        [".manifest.json", "README.md", "data/train.jsonl"]
    for ds in (datasets.load_dataset(str(d), split="train"),
               datasets.load_dataset("json", data_dir=str(d), split="train")):
        assert ds.num_rows == info["rows"] == 2516
        assert set(ds.column_names) >= {"prompt", "chosen", "rejected", "sample_id"}
    card = (d / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["configs"] == [{"config_name": "default", "data_files": [{"split": "train",
                                                                            "path": "data/train.jsonl"}]}]
    assert front["license"] == "other" and "Apache-2.0" in front["license_name"] and "MIT" in front["license_name"]
    assert front["size_categories"] == ["1K<n<10K"] and front["task_categories"] == ["text-generation"]
    assert "| oasst | 212 |" in card and "harmless-base-test.jsonl" in card and "## Provenance" in card


def test_directory_from_a_name_without_extension_single_licence(store, tmp_path):
    info = export(str(tmp_path / "out" / "seedset"), "--format", "trl-sft", "--dataset", "seed")
    d = tmp_path / "out" / "seedset"
    front = yaml.safe_load((d / "README.md").read_text().split("---")[1])
    assert front["license"] == "apache-2.0" and front["size_categories"] == ["n<1K"]
    assert datasets.load_dataset(str(d), split="train").num_rows == info["rows"] == 165


@pytest.mark.parametrize("name", ["train.jsonl", "data.jsonl", "x.json"])
def test_single_file_manifest_is_never_read_as_data(store, tmp_path, name):
    d = tmp_path / "d"
    d.mkdir()
    info = export(str(d / name), "--format", "messages", "--dataset", "seed")
    assert (d / f".{name}.manifest.json").exists()
    assert datasets.load_dataset("json", data_dir=str(d), split="train").num_rows == info["rows"]
    assert datasets.load_dataset("json", data_files=str(d / name), split="train").num_rows == info["rows"]
    assert datasets.load_dataset(str(d), split="train").num_rows == info["rows"]


def test_a_column_whose_type_varies_between_sources_is_json_text(tmp_path, db_path):
    """One file says "id": "7", another "id": 7: written as they are, `datasets` would type the column by whichever
    it met first or fail; the export writes that column as JSON text on every row, so nothing is coerced."""
    (tmp_path / "a.jsonl").write_text(json.dumps({"instruction": "q1", "output": "a1", "id": "7", "tag": "x"}) + "\n")
    (tmp_path / "b.jsonl").write_text(json.dumps({"instruction": "q2", "output": "a2", "id": 7}) + "\n")
    for name in ("a", "b"):
        assert run_cli("import", str(tmp_path / f"{name}.jsonl"), "--dataset", name)[0] == 0
    info = export(str(tmp_path / "out.jsonl"), "--format", "alpaca")
    ds = load(tmp_path / "out.jsonl")
    assert ds.num_rows == info["rows"] == 2
    assert ds.features["id"] == S and ds["id"] == ['"7"', "7"]
    assert ds.features["tag"] == S and ds["tag"] == ["x", None]
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [list(r) for r in rows] == [["instruction", "input", "output", "id", "tag"]] * 2
