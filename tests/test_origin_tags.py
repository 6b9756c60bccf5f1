"""Humpback's tagging by origin on export: seed rows and self-augmented rows get their own system-prompt tags."""
from __future__ import annotations

import json

from llm_server import LLMServer
from taskkit import add_dataset, config_for, run, samples_of
from workbench.origin_tags import DEFAULT_TAGS, origin_kind, resolve_tags


def test_seed_and_augmented_rows_tagged_on_export(cli, conn, db_path, tmp_path):
    add_dataset(conn, "mix", [{"instruction": "Name a prime.", "response": "7", "system": "Be brief."},
                              {"instruction": "Say hi.", "response": "Hi!"}])
    add_dataset(conn, "web", [{"instruction": "", "response": "Rust enums can carry data in each variant. " * 5}])
    with LLMServer(reply=lambda m, b: "Explain how Rust enums carry data.") as srv:
        run(conn, db_path, "backtranslate", config=config_for(srv), dataset="web", into="mix")
    rows = samples_of(conn, "mix")
    assert [origin_kind(s) for s in rows] == ["seed", "seed", "augmented"]
    out = tmp_path / "tagged.jsonl"
    code, _, err = cli("export", str(out), "--format", "messages", "--dataset", "mix", "--tag-origin")
    assert code == 0, err
    lines = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    systems = [ln["messages"][0] for ln in lines]
    assert systems[0] == {"role": "system", "content": DEFAULT_TAGS["seed"] + "\n\nBe brief."}
    assert systems[1] == {"role": "system", "content": DEFAULT_TAGS["seed"]}
    assert systems[2] == {"role": "system", "content": DEFAULT_TAGS["augmented"]}
    manifest = json.loads((tmp_path / ".tagged.jsonl.manifest.json").read_text(encoding="utf-8"))
    assert manifest["origin_tags"]["rows"] == {"seed": 2, "augmented": 1}
    # the store is untouched: tags exist only in the export
    assert samples_of(conn, "mix")[1]["system"] in ("", None)

    # configurable: the config's table, then the flags
    (tmp_path / "config.toml").write_text('[export.origin_tags]\nseed = "S_seed"\naugmented = "S_web"\n',
                                          encoding="utf-8")
    code, _, err = cli("export", str(tmp_path / "b.jsonl"), "--format", "alpaca", "--dataset", "mix",
                       "--tag-origin", "--augmented-tag", "From the web.")
    assert code == 0, err
    alpaca = [json.loads(x) for x in (tmp_path / "b.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [a["system"] for a in alpaca] == ["S_seed\n\nBe brief.", "S_seed", "From the web."]
    # without --tag-origin nothing changes
    code, _, _ = cli("export", str(tmp_path / "c.jsonl"), "--format", "alpaca", "--dataset", "mix")
    plain = [json.loads(x) for x in (tmp_path / "c.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [a.get("system") for a in plain] == ["Be brief.", "", ""]


def test_bad_tags_are_refused(cli, tmp_path):
    code, _, err = cli("export", str(tmp_path / "x.jsonl"), "--format", "alpaca", "--seed-tag", "S")
    assert code != 0 and "go with --tag-origin" in err and not (tmp_path / "x.jsonl").exists()
    code, _, err = cli("export", str(tmp_path / "x.jsonl"), "--format", "alpaca", "--tag-origin", "--seed-tag", " ")
    assert code != 0 and "empty" in err and not (tmp_path / "x.jsonl").exists()
    for bad, msg in (({"export": {"origin_tags": {"web": "x"}}}, "unknown key"),
                     ({"export": {"origin_tags": {"seed": 3}}}, "non-empty text"),
                     ({"export": {"origin_tags": "x"}}, "must be a table")):
        try:
            resolve_tags(bad)
        except ValueError as e:
            assert msg in str(e)
        else:
            raise AssertionError(bad)
