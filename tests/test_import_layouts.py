"""The layouts curators arrive with (tests/data/layouts, written from each project's documentation): every pair comes
in with the right chosen/rejected (inversions counted: zero), every conversation whole, every refusal naming
file, line and field."""
import json

import orjson
import pytest

from workbench import exporter, formats, importer
from workbench.formats import ParseOptions, RowError, TieRow, read_preference
from workbench.samples import iter_samples

LAYOUTS = __import__("pathlib").Path(__file__).parent / "data" / "layouts"


def rows(conn, name):
    did = conn.execute("SELECT id FROM datasets WHERE name = ?", (name,)).fetchone()[0]
    return list(iter_samples(conn, "dataset_id = ?", (did,)))


def inversions(samples) -> int:
    """The test files mark the better answer BETTER and the worse WORSE: count pairs the other way round."""
    bad = 0
    for s in samples:
        assert "BETTER" in s["response"] or "WORSE" in s["response"], s
        bad += "BETTER" not in s["response"] or "WORSE" not in s["rejected"]
    return bad


# --- pairwise ---------------------------------------------------------------------------------------------

def test_alpacaeval_annotations_zero_inversions_ties_skipped_models_kept(conn):
    res = importer.import_file(conn, LAYOUTS / "alpacaeval_annotations.json", dataset="ae")
    assert res.format == "pairwise" and res.rows == 7 and res.ties == 1 and res.candidates == 14
    got = rows(conn, "ae")
    assert inversions(got) == 0
    # preference 2.0 rows chose output_2, the model under evaluation; 1.0 rows the reference model
    for s in got:
        side = s["origin"]["chosen"]
        assert side["column"] == ("output_1" if s["origin"]["prefer"]["value"] == 1.0 else "output_2")
        assert side["model"] == ("gpt4_1106_preview" if side["column"] == "output_1" else "my_model")
        cands = conn.execute("SELECT model, response FROM candidates WHERE sample_id = ? ORDER BY id",
                             (s["id"],)).fetchall()
        assert [m for m, _ in cands] == ["gpt4_1106_preview", "my_model"]
        assert {r for _, r in cands} == {s["response"], s["rejected"]}
        assert s["metadata"] == {"annotator": "alpaca_eval_gpt4"}
        assert s["instruction"].startswith("Explain how to ")


def test_keep_ties_keeps_both_answers_as_candidates_without_a_pair(conn):
    res = importer.import_file(conn, LAYOUTS / "alpacaeval_annotations.json", dataset="ae",
                               opts=ParseOptions(keep_ties=True))
    assert res.rows == 8 and res.ties == 0
    tie = [s for s in rows(conn, "ae") if s["rejected"] is None]
    assert len(tie) == 1 and tie[0]["origin"]["tie"] == {"column": "preference", "value": 1.5}
    assert tie[0]["response"] == ""
    models = [m for (m,) in conn.execute("SELECT model FROM candidates WHERE sample_id = ?", (tie[0]["id"],))]
    assert models == ["gpt4_1106_preview", "my_model"]


def test_arena_winner_conversations_and_models(conn):
    res = importer.import_file(conn, LAYOUTS / "arena_conversations.jsonl", dataset="arena")
    assert (res.format, res.rows, res.ties) == ("pairwise", 4, 2)   # "tie" and "tie (bothbad)"
    got = rows(conn, "arena")
    assert inversions(got) == 0
    for s in got:
        assert s["messages"] == [{"role": "user", "content": s["instruction"]}]
        winner = s["origin"]["prefer"]["value"]
        assert s["origin"]["chosen"]["model"] == ("vicuna-13b" if winner == "model_a" else "koala-13b")
        assert s["language"] == "English"           # a column the workbench knows keeps its meaning
        assert s["metadata"]["judge"].startswith("arena_user_")


@pytest.mark.parametrize("value, want", [
    (1, 0), (2, 1), (1.0, 0), (2.0, 1), ("1", 0), ("2.0", 1), ("a", 0), ("B", 1), (" model_a ", 0),
    ("model_b", 1), (1.5, None), ("1.5", None), ("tie", None), ("tie (bothbad)", None), ("TIE", None)])
def test_preference_values_read(value, want):
    assert read_preference(value, "preference") == want


@pytest.mark.parametrize("value", [0, 3, 1.3, 1.0000001, 1.99, "0", "c", "model_c", "first", "both", "", None, True,
                                   False, "1/2", "tie bothbad", [1], {"a": 1}, "2 (strong)"])
def test_preference_values_refused(value):
    with pytest.raises(RowError) as e:
        read_preference(value, "preference")
    assert e.value.field == "preference"


def test_prefer_names_another_column_and_refusals_name_file_line_field(conn, tmp_path):
    f = tmp_path / "judged.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in [
        {"question": "q1", "response_a": "BETTER a", "response_b": "WORSE b", "label": "a"},
        {"question": "q2", "response_a": "WORSE a", "response_b": "BETTER b", "label": "b"},
        {"question": "q3", "response_a": "x", "response_b": "y", "label": "1.25"}]) + "\n")
    with pytest.raises(importer.ImportFailed) as e:
        importer.import_file(conn, f, dataset="j")       # no preference/winner column: --prefer names it
    assert "line 1" in str(e.value) and "--prefer" in str(e.value)
    with pytest.raises(importer.ImportFailed) as e:
        importer.import_file(conn, f, dataset="j", opts=ParseOptions(prefer="label"))
    assert str(e.value).startswith(f"{f}, line 3, field 'label': expected 1 or 2")
    assert conn.execute("SELECT count(*) FROM samples").fetchone()[0] == 0      # store as it was
    res = importer.import_file(conn, f, dataset="j", skip_invalid=True, opts=ParseOptions(prefer="label"))
    assert res.rows == 2 and len(res.skipped) == 1 and inversions(rows(conn, "j")) == 0
    with pytest.raises(importer.ImportFailed) as e:
        importer.import_file(conn, f, dataset="k", opts=ParseOptions(prefer="nope"))
    assert "--prefer 'nope' is not a column" in str(e.value)


def test_multi_turn_arena_battle_is_refused_not_half_read(conn, tmp_path):
    u1, u2 = {"role": "user", "content": "hi"}, {"role": "user", "content": "more"}
    conv = lambda a1, a2: [u1, {"role": "assistant", "content": a1}, u2, {"role": "assistant", "content": a2}]  # noqa
    f = tmp_path / "arena.jsonl"
    f.write_text(json.dumps({"model_a": "x", "model_b": "y", "winner": "model_a",
                             "conversation_a": conv("A1", "A2"), "conversation_b": conv("B1", "B2")}) + "\n")
    with pytest.raises(importer.ImportFailed) as e:
        importer.import_file(conn, f, dataset="a")
    assert "line 1, field 'conversation_b'" in str(e.value) and "multi-turn" in str(e.value)


# --- ranked preference: UltraFeedback-binarized, TRL, LLaMA-Factory ---------------------------------------

def test_ultrafeedback_binarized_keeps_conversation_and_scores_as_a_rubric(conn):
    res = importer.import_file(conn, LAYOUTS / "ultrafeedback_binarized.jsonl", dataset="uf",
                               opts=ParseOptions(score_scale=(1, 10)))
    assert res.rows == 5 and res.candidates == 10
    got = rows(conn, "uf")
    assert inversions(got) == 0
    for s in got:
        assert s["messages"] == [{"role": "user", "content": s["instruction"]}]
        assert s["origin"]["scale"] == [1, 10] and s["origin"]["margin"] > 0
        js = conn.execute("SELECT j.rubric, j.scores, j.overall, c.response FROM judgments j JOIN candidates c "
                          "ON c.id = j.candidate_id WHERE j.sample_id = ? ORDER BY j.id", (s["id"],)).fetchall()
        assert [j[0] for j in js] == ["import-score", "import-score"]
        assert list(orjson.loads(js[0][1])) == ["score_chosen"] and js[0][3] == s["response"]
        assert js[0][2] - js[1][2] == s["origin"]["margin"]
        assert set(s["metadata"]) == {"prompt_id"}          # `messages` repeated chosen: nothing lost


@pytest.mark.parametrize("change, field, words", [
    ({"score_chosen": 2.0}, "score_chosen", "contradicts"),
    ({"score_chosen": "high"}, "score_chosen", "expected a number"),
    ({"score_chosen": 11.0}, "score_chosen", "outside the stated scale"),
    ({"score_rejected": None}, "score_rejected", "expected a number"),
    ({"rejected": [{"role": "user", "content": "other"}, {"role": "assistant", "content": "x"}]}, "rejected",
     "differs"),
    ({"chosen": [{"role": "user", "content": "x"}]}, "chosen[0].role", "assistant"),
    ({"prompt": "a different prompt"}, "prompt", "not one of the user turns"),
])
def test_ultrafeedback_rows_that_almost_match_are_refused(conn, tmp_path, change, field, words):
    rec = json.loads((LAYOUTS / "ultrafeedback_binarized.jsonl").read_text().splitlines()[0])
    rec.update(change)
    f = tmp_path / "uf.jsonl"
    f.write_text(json.dumps(rec) + "\n")
    with pytest.raises(importer.ImportFailed) as e:
        importer.import_file(conn, f, dataset="uf", opts=ParseOptions(score_scale=(1, 10)))
    assert f"line 1, field '{field}'" in str(e.value) and words in str(e.value)


def test_equal_scores_are_a_tie(tmp_path):
    rec = json.loads((LAYOUTS / "ultrafeedback_binarized.jsonl").read_text().splitlines()[0])
    rec["score_rejected"] = rec["score_chosen"]
    with pytest.raises(TieRow):
        formats.parse_record(rec, "preference")


@pytest.mark.parametrize("name, fmt, n", [
    ("trl_preference_conversational.jsonl", "preference", 4), ("trl_preference_implicit.jsonl", "preference", 3),
    ("trl_preference_standard.jsonl", "preference", 2), ("llamafactory_alpaca_ranking.json", "preference", 4),
    ("llamafactory_sharegpt_ranking.json", "preference", 3)])
def test_ranked_layouts_zero_inversions(conn, name, fmt, n):
    res = importer.import_file(conn, LAYOUTS / name, dataset="p")
    assert (res.format, res.rows) == (fmt, n)
    assert inversions(rows(conn, "p")) == 0


def test_trl_conversational_prompt_kept_whole_with_system(conn):
    importer.import_file(conn, LAYOUTS / "trl_preference_conversational.jsonl", dataset="p")
    s = rows(conn, "p")[0]
    assert [m["role"] for m in s["messages"]] == ["system", "user", "assistant", "user"]
    assert s["system"] == "You are terse." and s["instruction"] == "Now boil an egg."


def test_llamafactory_sharegpt_ranking_keeps_the_conversation(conn):
    importer.import_file(conn, LAYOUTS / "llamafactory_sharegpt_ranking.json", dataset="p")
    s = rows(conn, "p")[0]
    assert s["messages"] == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                             {"role": "user", "content": "Please boil an egg."}]
    assert s["response"] == "BETTER boil an egg" and s["rejected"] == "WORSE boil an egg"


def test_llamafactory_alpaca_ranking_keeps_input(conn):
    importer.import_file(conn, LAYOUTS / "llamafactory_alpaca_ranking.json", dataset="p")
    got = rows(conn, "p")
    assert [s["input"] for s in got] == ["briefly", "", "briefly", ""]
    assert all(s["messages"] is None for s in got)


# --- SFT layouts ------------------------------------------------------------------------------------------

def test_alpaca_history_and_system_become_the_conversation(conn):
    importer.import_file(conn, LAYOUTS / "llamafactory_alpaca_history.json", dataset="h")
    a, b, c = rows(conn, "h")
    assert a["system"] == "You are a nurse." and a["instruction"] == "And in Celsius?"
    assert [m["content"] for m in a["messages"]] == ["What is normal body temperature?", "About 98.6 F.",
                                                     "Is that the same for children?", "Roughly, yes.",
                                                     "And in Celsius?", "About 37 degrees Celsius."]
    assert b["messages"] is None and b["system"] == "" and "history" not in (b["metadata"] or {})
    assert c["messages"][-2] == {"role": "user", "content": "Summarize.\n\nA long text."}


@pytest.mark.parametrize("history, field", [("nope", "history"), ([["only one"]], "history[0]"),
                                            ([["q", 5.5, "x"]], "history[0]"), ([["q", {"a": 1}]], "history[0][1]")])
def test_bad_history_refused(conn, tmp_path, history, field):
    f = tmp_path / "h.json"
    f.write_text(json.dumps([{"instruction": "i", "output": "o", "history": history}]))
    with pytest.raises(importer.ImportFailed) as e:
        importer.import_file(conn, f, dataset="h")
    assert f"field '{field}'" in str(e.value)


def test_sharegpt_tools_function_calls_and_role_content(conn):
    importer.import_file(conn, LAYOUTS / "llamafactory_sharegpt_tools.json", dataset="t")
    s = rows(conn, "t")[0]
    assert [m["role"] for m in s["messages"]] == ["user", "function_call", "observation", "assistant"]
    assert s["system"] == "You can call tools." and s["response"] == "It is 18 degrees in Paris."
    assert json.loads(s["metadata"]["tools"])[0]["name"] == "weather"
    importer.import_file(conn, LAYOUTS / "sharegpt_role_content.json", dataset="rc")
    s = rows(conn, "rc")[0]
    assert [m["role"] for m in s["messages"]] == ["user", "assistant", "user", "assistant"]
    assert (s["instruction"], s["response"]) == ("Count to three.", "1, 2, 3.")


def test_mixed_message_keys_in_one_conversation_refused(conn, tmp_path):
    f = tmp_path / "mixed.json"
    f.write_text(json.dumps([{"conversations": [{"from": "human", "value": "a"}, {"role": "assistant",
                                                                                  "content": "b"}]}]))
    with pytest.raises(importer.ImportFailed) as e:
        importer.import_file(conn, f, dataset="m")
    assert "field 'conversations[1]'" in str(e.value)


def test_openai_content_parts_joined_and_non_text_refused_or_skipped(conn):
    f = LAYOUTS / "openai_content_parts.jsonl"
    with pytest.raises(importer.ImportFailed) as e:
        importer.import_file(conn, f, dataset="o")
    assert str(e.value).startswith(f"{f}, line 2, field 'messages[0].content[1].type': a non-text content part "
                                   "(type 'image_url')")
    assert conn.execute("SELECT count(*) FROM samples").fetchone()[0] == 0
    res = importer.import_file(conn, f, dataset="o", skip_invalid=True)
    assert res.rows == 2 and res.skipped[0].line == 2
    s = rows(conn, "o")[0]
    assert s["system"] == "Be brief." and s["instruction"] == "Describe a cat.\nIn one line."


@pytest.mark.parametrize("content, field", [([{"type": "text"}], "content[0].text"),
                                            ([{"type": "text", "text": 5.5}], None),
                                            ([{"type": "input_audio", "input_audio": {}}], "content[0].type"),
                                            ([{"text": "no type"}], "content[0].type"), ([3], "content[0]")])
def test_content_parts_that_almost_match(content, field):
    rec = {"messages": [{"role": "user", "content": content}, {"role": "assistant", "content": "ok"}]}
    if field is None:       # a number is text as written ("5.5"), as in any other field
        assert formats.parse_record(rec, "messages")["instruction"] == "5.5"
        return
    if field == "content[0].text":   # a text part with no text is empty text, not a refusal
        assert formats.parse_record(rec, "messages")["instruction"] == ""
        return
    with pytest.raises(RowError) as e:
        formats.parse_record(rec, "messages")
    assert e.value.field == f"messages[0].{field}"


def test_trl_prompt_completion_and_kto(conn):
    importer.import_file(conn, LAYOUTS / "trl_prompt_completion_conversational.jsonl", dataset="pc")
    s = rows(conn, "pc")[0]
    assert (s["instruction"], s["response"]) == ("What color is the sky?", "It is blue.")
    assert len(s["messages"]) == 2
    res = importer.import_file(conn, LAYOUTS / "trl_kto.jsonl", dataset="kto")
    assert res.format == "kto"
    assert [s["metadata"]["label"] for s in rows(conn, "kto")] == [True, False]
    res = importer.import_file(conn, LAYOUTS / "llamafactory_kto.json", dataset="kto2")
    assert res.format == "kto"
    assert [s["metadata"]["kto_tag"] for s in rows(conn, "kto2")] == [True, False]


@pytest.mark.parametrize("label", [1, 0, "yes", "no", "good", "1", None, "True!"])
def test_kto_labels_that_are_not_booleans_refused(label):
    with pytest.raises(RowError) as e:
        formats.parse_record({"prompt": "p", "completion": "c", "label": label}, "kto")
    assert e.value.field == "label"


# --- same-named columns, same meanings ----------------------------------------------------------------------

def test_system_empty_null_and_absent_are_one_thing(conn, tmp_path):
    f = tmp_path / "sys.jsonl"
    base = {"instruction": "i", "output": "o"}
    f.write_text("\n".join(json.dumps(r) for r in [base, {**base, "system": ""}, {**base, "system": None},
                                                   {**base, "extra": None}]) + "\n")
    importer.import_file(conn, f, dataset="s")
    got = rows(conn, "s")
    assert {s["system"] for s in got} == {""} and {s["metadata"] is None for s in got} == {True}
    assert len({s["content_hash"] for s in got}) == 1
    assert [s["source_line"] for s in got] == [1, 2, 3, 4]


# --- round trips: what our Alpaca and ShareGPT exports write, import reads back identically -----------------

KEEP = ("instruction", "input", "response", "rejected", "system", "messages", "metadata", "task_type")


@pytest.mark.parametrize("src, fmt", [
    ("llamafactory_alpaca_history.json", "alpaca"), ("llamafactory_sharegpt_tools.json", "sharegpt"),
    ("sharegpt_role_content.json", "sharegpt"), ("openai_content_parts.jsonl", "messages")])
def test_export_then_import_reads_back_identically(conn, tmp_path, src, fmt):
    importer.import_file(conn, LAYOUTS / src, dataset="a", skip_invalid=True)
    out = tmp_path / f"out.{fmt}.jsonl"
    exporter.export(conn, out, fmt, dataset="a")
    importer.import_file(conn, out, dataset="b")
    first, second = rows(conn, "a"), rows(conn, "b")
    assert len(first) == len(second) > 0
    for x, y in zip(first, second):
        assert {k: x[k] for k in KEEP} == {k: y[k] for k in KEEP}


def test_shared_sharegpt_round_trips(conn, tmp_path, shared_data):
    importer.import_file(conn, shared_data / "fastchat-sharegpt" / "dummy_conversation.json", dataset="a")
    for fmt in ("sharegpt", "alpaca"):
        out = tmp_path / f"out.{fmt}.json"
        exporter.export(conn, out, fmt, dataset="a")
        importer.import_file(conn, out, dataset=fmt)
        a, b = rows(conn, "a"), rows(conn, fmt)
        assert len(a) == len(b) == 500
        keys = KEEP if fmt == "sharegpt" else ("instruction", "input", "response", "system")
        assert all({k: x[k] for k in keys} == {k: y[k] for k in keys} for x, y in zip(a, b))
        if fmt == "alpaca":   # the earlier turns come back through `history`
            assert all([m["content"] for m in x["messages"] if m["role"] != "system"] ==
                       [m["content"] for m in y["messages"]] for x, y in zip(a, b) if y["messages"])
