"""Import through the real CLI entry point, on the real shared datasets and on crafted bad files."""
import codecs
import json

import pytest

from workbench import readers

from workbench.samples import iter_samples
from workbench.store import open_store
from workbench.textnorm import keep_as_written as nfc

# (folder, file, detected format, rows stated in PROVENANCE.md)
SHARED_FILES = [
    ("self-instruct-seed", "seed_tasks_alpaca.json", "alpaca", 175),
    ("self-instruct-user-oriented", "user_oriented_dolly.jsonl", "dolly", 252),
    ("fastchat-sharegpt", "dummy_conversation.json", "sharegpt", 500),
    ("oasst-en100", "oasst_en100_messages.jsonl", "messages", 100),
    ("oasst-en100", "oasst_en100_preference.jsonl", "preference", 212),
    ("hh-rlhf-harmless-test", "harmless-base-test.jsonl", "hh", 2312),
    ("fastchat-bench-questions", "mt_bench_questions.csv", "prompts", 80),
    ("fastchat-bench-questions", "vicuna_bench_questions.tsv", "prompts", 80),
    ("rust-book-paragraphs", "rust_book_paragraphs.jsonl", "text", 846),
]


def samples(db_path, dataset=None):
    conn = open_store(db_path)
    if dataset:
        did = conn.execute("SELECT id FROM datasets WHERE name = ?", (dataset,)).fetchone()[0]
        return list(iter_samples(conn, "dataset_id = ?", (did,)))
    return list(iter_samples(conn))


def test_every_top_level_shared_file_is_covered(shared_data):
    on_disk = {(p.parent.name, p.name) for p in shared_data.glob("*/*") if p.is_file() and p.name != "PROVENANCE.md"}
    assert on_disk == {(d, f) for d, f, _, _ in SHARED_FILES}


@pytest.mark.parametrize("folder,name,fmt,rows", SHARED_FILES)
def test_shared_file_imports_with_detection(cli, shared_data, db_path, folder, name, fmt, rows):
    code, out, err = cli("import", str(shared_data / folder / name), "--json")
    assert code == 0, err
    info = json.loads(out)
    assert (info["format"], info["rows"], info["skipped"]) == (fmt, rows, 0)
    got = samples(db_path)
    assert len(got) == rows
    assert all(s["source_line"] for s in got)
    assert all(s["metadata"] is None or "id" not in s["metadata"] or s["metadata"]["id"] for s in got)


def test_alpaca_fields_and_metadata(cli, shared_data, db_path):
    cli("import", str(shared_data / "self-instruct-seed" / "seed_tasks_alpaca.json"))
    src = json.loads((shared_data / "self-instruct-seed" / "seed_tasks_alpaca.json").read_text())
    got = samples(db_path)
    for s, r in zip(got, src):
        assert (s["instruction"], s["input"], s["response"]) == tuple(nfc(r[k]) for k in ("instruction", "input", "output"))
        assert s["metadata"] == {"id": r["id"], "name": r["name"], "is_classification": r["is_classification"]}
    assert "watter" in got[0]["instruction"] + got[0]["response"]  # real typos are kept
    assert [s["source_line"] for s in got[:3]] == [1, 2, 3]  # JSON arrays: the row number


def test_dolly_maps_context_and_category(cli, shared_data, db_path):
    cli("import", str(shared_data / "self-instruct-user-oriented" / "user_oriented_dolly.jsonl"))
    got = samples(db_path)
    assert sum(1 for s in got if s["input"] == "") == 44
    assert got[0]["task_type"] == "Grammarly"
    # one real duplicate instruction with different contexts: not an exact duplicate of the whole sample
    assert all(s["dup_of"] is None for s in got)


def test_sharegpt_keeps_every_turn(cli, shared_data, db_path):
    cli("import", str(shared_data / "fastchat-sharegpt" / "dummy_conversation.json"))
    got = samples(db_path)
    turns = [len(s["messages"]) for s in got]
    assert (turns.count(2), turns.count(4), turns.count(6)) == (167, 166, 167)
    assert {m["role"] for s in got for m in s["messages"]} == {"user", "assistant"}
    first = got[0]
    assert first["instruction"] == first["messages"][-2]["content"]
    assert first["metadata"] == {"id": "identity_0"}


def test_messages_and_conversational_preference(cli, shared_data, db_path):
    cli("import", str(shared_data / "oasst-en100" / "oasst_en100_preference.jsonl"), "--dataset", "pref")
    src = [json.loads(line) for line in open(shared_data / "oasst-en100" / "oasst_en100_preference.jsonl")]
    got = samples(db_path, "pref")
    for s, r in zip(got, src):
        assert s["messages"] == [dict(m, content=nfc(m["content"])) for m in r["prompt"]]
        assert s["response"] == nfc(r["chosen"][-1]["content"])
        assert s["rejected"] == nfc(r["rejected"][-1]["content"])
        assert s["instruction"] == nfc(r["prompt"][-1]["content"])


def test_hh_transcripts_split_at_last_assistant_turn(cli, shared_data, db_path):
    path = shared_data / "hh-rlhf-harmless-test" / "harmless-base-test.jsonl"
    code, out, err = cli("import", str(path))
    assert code == 0, err
    src = [json.loads(line) for line in open(path)]
    got = samples(db_path)
    mismatched = [s["source_line"] for s in got if (s["metadata"] or {}).get("prompt_mismatch")]
    assert mismatched == [1255, 1689, 1951, 1953, 2037]
    from workbench.formats import hh_transcript
    for s, r in zip(got, src):
        # nothing lost: both transcripts rebuild exactly from what was stored
        assert hh_transcript(s["messages"], s["response"]) == nfc(r["chosen"])
        rej_turns = (s["metadata"] or {}).get("rejected_prompt", s["messages"])
        assert hh_transcript(rej_turns, s["rejected"]) == nfc(r["rejected"])
    assert got[86]["response"].strip() == "" or got[86]["rejected"].strip() == ""  # line 87: empty final turn


def test_csv_multiline_fields_and_prompts(cli, shared_data, db_path):
    cli("import", str(shared_data / "fastchat-bench-questions" / "mt_bench_questions.csv"))
    got = samples(db_path)
    assert sum(1 for s in got if "\n" in s["instruction"]) == 19
    assert all(s["response"] == "" for s in got)
    assert {s["task_type"] for s in got} == {"writing", "roleplay", "reasoning", "math", "coding", "extraction",
                                             "stem", "humanities"}
    assert set(got[0]["metadata"]) == {"question_id", "turn_2", "reference_1", "reference_2"}


def test_plain_text_file_splits_on_blank_lines(cli, shared_data, db_path):
    md = shared_data / "rust-book-paragraphs" / "original" / "ch04-01-what-is-ownership.md"
    code, out, err = cli("import", str(md), "--format", "text", "--json")
    assert code == 0, err
    got = samples(db_path)
    blocks = [b for b in md.read_text(encoding="utf-8").split("\n\n") if b.strip()]
    assert json.loads(out)["rows"] == len(got) >= len(blocks) - 5
    assert all(s["instruction"] == "" and s["response"].strip() for s in got)
    assert got[0]["response"] == md.read_text(encoding="utf-8").split("\n\n")[0].strip("\n")


def test_dry_run_shows_format_mapping_preview_and_writes_nothing(cli, shared_data, db_path):
    code, out, err = cli("import", str(shared_data / "self-instruct-user-oriented" / "user_oriented_dolly.jsonl"),
                         "--dry-run")
    assert code == 0, err
    assert "format:  dolly" in out and "input <- context" in out and out.count("--- row") == 3
    assert samples(db_path) == []


def test_dry_run_counts_the_texts_characters_not_the_escaped_preview(cli, tmp_path, db_path):
    text = "line one\n" * 30          # 270 characters; shown with each newline as the two characters \\n
    f = tmp_path / "nl.jsonl"
    f.write_text(json.dumps({"instruction": "q", "output": text}) + "\n")
    code, out, err = cli("import", str(f), "--dry-run")
    assert code == 0, err
    assert "line one\\nline one" in out and f"({len(text)} chars)" in out


def test_map_other_columns(cli, tmp_path, db_path):
    f = tmp_path / "qa.jsonl"
    f.write_text('{"question": "What is 2+2?", "answer": "4", "src": "x"}\n')
    code, out, err = cli("import", str(f), "--map", "instruction=question,response=answer")
    assert code == 0, err
    s = samples(db_path)[0]
    assert (s["instruction"], s["response"], s["metadata"]) == ("What is 2+2?", "4", {"src": "x"})


def test_unknown_columns_need_a_mapping(cli, tmp_path, db_path):
    f = tmp_path / "odd.jsonl"
    f.write_text('{"foo": "bar"}\n')
    code, out, err = cli("import", str(f))
    assert code == 1 and "cannot tell the dataset format" in err and "--map" in err   # bad data (the exit-code table in the README)


# --- malformed input: a clear message naming file, line and field; nothing stored -------------------------

def _refused(cli, db_path, path, *words, extra=()):
    conn = open_store(db_path)
    before = conn.execute("SELECT count(*) FROM samples").fetchone()[0]
    code, out, err = cli("import", str(path), *extra)
    assert code == 1, (out, err)   # bad data (the exit-code table in the README)
    assert "Traceback" not in err
    assert str(path) in err
    for w in words:
        assert w in err, err
    assert conn.execute("SELECT count(*) FROM samples").fetchone()[0] == before
    return err


def test_empty_file(cli, tmp_path, db_path):
    f = tmp_path / "empty.jsonl"
    f.write_bytes(b"")
    _refused(cli, db_path, f, "empty")


def test_truncated_jsonl(cli, tmp_path, db_path):
    f = tmp_path / "t.jsonl"
    f.write_bytes(b'{"instruction": "a", "output": "b"}\n{"instruction": "c", "outp')
    _refused(cli, db_path, f, "line 2", "truncated")


def test_truncated_json_array(cli, tmp_path, db_path):
    f = tmp_path / "t.json"
    f.write_bytes(b'[{"instruction": "a", "output": "b"},\n {"instruction": "c", "output": "d"')
    _refused(cli, db_path, f, "line 2", "truncated")


def test_not_utf8(cli, tmp_path, db_path):
    f = tmp_path / "latin.jsonl"
    f.write_bytes(b'{"instruction": "ok", "output": "fine"}\n{"instruction": "caf\xe9", "output": "x"}\n')
    _refused(cli, db_path, f, "line 2", "UTF-8")


def test_not_utf8_csv(cli, tmp_path, db_path):
    f = tmp_path / "latin.csv"
    f.write_bytes(b'instruction,output\nok,fine\ncaf\xe9,x\n')
    _refused(cli, db_path, f, "UTF-8")


def test_broken_line(cli, tmp_path, db_path):
    f = tmp_path / "b.jsonl"
    f.write_text('{"instruction": "a", "output": "b"}\n{instruction: nope}\n{"instruction": "c", "output": "d"}\n')
    _refused(cli, db_path, f, "line 2", "broken JSON")


def test_row_with_no_text(cli, tmp_path, db_path):
    f = tmp_path / "n.jsonl"
    f.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "", "input": "", "output": "  "}\n')
    _refused(cli, db_path, f, "line 2", "no text", "instruction")


def test_wrong_type_names_the_field(cli, tmp_path, db_path):
    f = tmp_path / "c.jsonl"
    f.write_text('{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt"}]}\n')
    _refused(cli, db_path, f, "line 1", "conversations[1].value")


def test_csv_wrong_field_count(cli, tmp_path, db_path):
    f = tmp_path / "c.csv"
    f.write_text('instruction,output\n"a","b"\n"c","d","e"\n')
    _refused(cli, db_path, f, "line 3", "fields")


def test_failed_import_leaves_earlier_data_intact(cli, tmp_path, db_path, shared_data):
    cli("import", str(shared_data / "self-instruct-seed" / "seed_tasks_alpaca.json"), "--dataset", "seed")
    good = tmp_path / "more.jsonl"
    good.write_text("".join(json.dumps({"instruction": f"q{i}", "output": f"a{i}"}) + "\n" for i in range(500))
                    + "{broken\n")
    _refused(cli, db_path, good, "line 501", extra=("--dataset", "seed"))
    conn = open_store(db_path)
    assert conn.execute("SELECT count(*) FROM samples").fetchone()[0] == 175
    assert conn.execute("SELECT count(*) FROM imports").fetchone()[0] == 1


def test_skip_invalid_imports_the_rest_and_reports_each(cli, tmp_path, db_path):
    f = tmp_path / "mixed.jsonl"
    f.write_text('{"instruction": "a", "output": "b"}\n{oops\n{"instruction": "", "output": ""}\n'
                 '{"instruction": "c", "output": "d"}\n')
    code, out, err = cli("import", str(f), "--skip-invalid")
    assert code == 0, err
    assert "imported 2 rows" in out
    assert f"{f}, line 2: broken JSON" in err and f"{f}, line 3" in err and "no text" in err
    assert [s["source_line"] for s in samples(db_path)] == [1, 4]


def test_bom_is_accepted(cli, tmp_path, db_path):
    for name, data in [("bom.jsonl", '\ufeff{"instruction": "a", "output": "b"}\n'),
                       ("bom.json", '\ufeff[{"instruction": "c", "output": "d"}]'),
                       ("bom.csv", '\ufeffinstruction,output\ne,f\n')]:
        f = tmp_path / name
        f.write_text(data, encoding="utf-8")
        code, out, err = cli("import", str(f))
        assert code == 0, (name, err)
    assert [s["instruction"] for s in samples(db_path)] == ["a", "c", "e"]


def test_ten_megabyte_field(cli, tmp_path, db_path):
    big = "x" * (10 * 1024 * 1024)
    for name in ("big.jsonl", "big.json"):
        f = tmp_path / name
        row = json.dumps({"instruction": "Summarise this.", "input": big, "output": "Many x."})
        f.write_text(row + "\n" if name.endswith("l") else "[" + row + "]")
        code, out, err = cli("import", str(f), "--dataset", name)
        assert code == 0, err
    assert [len(s["input"]) for s in samples(db_path)] == [len(big), len(big)]


def test_markup_and_escapes_are_stored_as_written(cli, tmp_path, db_path):
    hostile = "[bold]x[/] [link=http://e.x]y[/link] [@click=app.quit]z \x1b[31mred\x1b[0m\tcafe\u0301 \u05e9\u05dc\u05d5\u05dd"
    f = tmp_path / "h.jsonl"
    f.write_text(json.dumps({"instruction": hostile, "output": "ok\r\nline"}) + "\n")
    code, out, err = cli("import", str(f))
    assert code == 0, err
    s = samples(db_path)[0]
    assert s["instruction"] == hostile.replace("cafe\u0301", "caf\u00e9")  # NFC only
    assert s["response"] == "ok\nline"  # line endings only


def test_exact_duplicates_flagged_within_and_across_datasets(cli, tmp_path, db_path):
    a = tmp_path / "a.jsonl"
    a.write_text('{"instruction": "Say hi", "output": "Hi"}\n{"instruction": "say  HI", "output": "hi"}\n')
    b = tmp_path / "b.jsonl"
    b.write_text('{"instruction": "Say hi", "output": "Hi"}\n{"instruction": "Other", "output": "x"}\n')
    cli("import", str(a))
    code, out, err = cli("import", str(b), "--json")
    assert json.loads(out)["duplicates"] == 1
    dup = [s["dup_of"] for s in samples(db_path)]
    assert dup == [None, 1, 1, None]


def test_parquet_import(cli, tmp_path, db_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    f = tmp_path / "p.parquet"
    pq.write_table(pa.Table.from_pylist([{"instruction": "a", "input": None, "output": "b", "n": 1},
                                         {"instruction": "c", "input": "ctx", "output": "d", "n": 2}]), f)
    code, out, err = cli("import", str(f))
    assert code == 0, err
    got = samples(db_path)
    assert [(s["instruction"], s["input"], s["metadata"]) for s in got] == [("a", "", {"n": 1}), ("c", "ctx", {"n": 2})]


def test_broken_parquet(cli, tmp_path, db_path):
    f = tmp_path / "bad.parquet"
    f.write_bytes(b"PAR1 not really")
    _refused(cli, db_path, f, "Parquet")


def test_parallel_path_matches_serial(cli, tmp_path, db_path, monkeypatch, shared_data):
    """Big JSONL files are parsed in a worker process: same rows, same order, same errors, same line and row
    numbers across the blocks the file is shipped in."""
    from workbench import importer, readers
    src = shared_data / "self-instruct-user-oriented" / "user_oriented_dolly.jsonl"
    lines = src.read_text(encoding="utf-8").splitlines()
    f = tmp_path / "big.jsonl"
    f.write_text("\n".join(lines[:50] + [""] + lines[50:100] + ["{broken"] + lines[100:]) + "\n", encoding="utf-8")
    code, out, serial_err = cli("import", str(f), "--dataset", "serial", "--skip-invalid")
    assert code == 0 and "line 102 (row 101): broken JSON" in serial_err
    monkeypatch.setattr(importer, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(readers, "JSONL_BLOCK_BYTES", 3000)      # a few lines a block
    code, out, err = cli("import", str(f), "--dataset", "parallel", "--skip-invalid")
    assert code == 0 and err == serial_err.replace("serial", "parallel")
    conn = open_store(db_path)
    q = "SELECT instruction, input, response, task_type, metadata, source_line FROM samples WHERE dataset_id = ?"
    assert conn.execute(q, (1,)).fetchall() == conn.execute(q, (2,)).fetchall()
    assert len(conn.execute(q, (2,)).fetchall()) == 252
    import hashlib             # the parser process took the file's sha256 (it reads the file, not the importer)
    sha = hashlib.sha256(f.read_bytes()).hexdigest()
    assert conn.execute("SELECT DISTINCT sha256 FROM imports").fetchall() == [(sha,)]
    code, out, err = cli("import", str(f), "--dataset", "strict")
    assert code == 1 and "line 102 (row 101)" in err   # bad data (the exit-code table in the README)
    assert conn.execute("SELECT count(*) FROM samples").fetchone()[0] == 504


def test_json_lines_named_dot_json(cli, tmp_path, db_path):
    f = tmp_path / "lines.json"
    f.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c", "output": "d"}\n')
    code, out, err = cli("import", str(f))
    assert code == 0 and "imported 2 rows" in out, err
    assert [s["source_line"] for s in samples(db_path)] == [1, 2]


def test_json_that_is_not_an_array_is_refused(cli, tmp_path, db_path):
    f = tmp_path / "scalar.json"
    f.write_text('"just a string"')
    _refused(cli, db_path, f, "JSON array")


@pytest.mark.parametrize("block_bytes", [1, 7, 64, 1 << 20])
def test_jsonl_lines_are_the_same_whatever_the_block_size(tmp_path, monkeypatch, block_bytes):
    f = tmp_path / "x.jsonl"
    f.write_bytes(codecs.BOM_UTF8 + b'{"a": 1}\r\n\n  \n{"b": "\xc3\xa9"}\n\n{"c": 3}\n{"truncated": ')
    monkeypatch.setattr(readers, "JSONL_BLOCK_BYTES", block_bytes)
    assert list(readers.jsonl_lines(f)) == [(1, 1, b'{"a": 1}\r\n'), (4, 2, b'{"b": "\xc3\xa9"}\n'),
                                            (6, 3, b'{"c": 3}\n'), (7, 4, b'{"truncated": ')]
