"""Cleaning: filters on crafted rows with known outcomes, preview before apply, undo; normalization with FTS."""
from __future__ import annotations

import json

import pytest

from workbench import clean
from workbench.samples import get_sample, hash_of, insert_samples
from workbench.store import ensure_dataset, fts_sync, transaction

NATURAL = ("The water cycle moves water between the oceans, the air and the land. Heat from the sun evaporates "
           "water, which rises, cools and condenses into clouds. When droplets grow heavy they fall as rain or "
           "snow, feeding rivers and lakes, soaking into soil, and eventually returning to the sea where the "
           "whole process begins again.")


def add(conn, rows, name="d", kind="sft"):
    with transaction(conn):
        did = ensure_dataset(conn, name, kind)
        first, last = insert_samples(conn, did, rows)
    return list(range(first, last + 1))


def r(instruction="Explain the water cycle.", response=NATURAL, **kw):
    return {"instruction": instruction, "response": response, **kw}


CRAFTED = {
    "ok": r(),
    "ok_short_answer": r("What is the Tagalog word for 'top'?", "Tope"),
    "ok_hi": r("Hi", "Hello! How can I help?"),
    "ok_code": r("Write a regex for three digits.", "```\n^[0-9]{3}$ // {}[]();===>>><<<\n```"),
    "instruction_length": r("?", "Nothing to answer."),
    "response_length": r("Say something.", ""),
    "lexical_diversity": r("Describe a cat.", "the cat " * 40),
    "repetition": r("List the steps.", "Step one.\nStep one.\nStep one.\nStep one.\nDone."),
    "non_text": r("Draw something.", "$$$ ### @@@ ~~~ ^^^ |||| >>>> <<<< **** ++++ ===="),
    "boilerplate": r("What do you think of jazz?", "As an AI language model, I don’t have tastes."),
    "boilerplate_curly": r("Can you help me?", "I’m sorry, but I cannot do that."),
}


@pytest.fixture
def crafted(conn):
    ids = add(conn, list(CRAFTED.values()))
    return dict(zip(CRAFTED, ids))


def test_filters_on_crafted_rows(conn, crafted):
    res = clean.preview(conn)
    got = {h.id: h.filter for h in res.hits}
    expected = {crafted[k]: k.replace("_curly", "") for k in CRAFTED if not k.startswith("ok")}
    assert got == expected
    assert res.counts["boilerplate"] == {"d": 2}
    assert res.scanned == {"d": len(CRAFTED)}
    detail = {h.filter: h.detail for h in res.hits}
    assert detail["instruction_length"] == "instruction has 1 chars < 2"
    assert "type-token ratio" in detail["lexical_diversity"]
    assert "lines repeat" in detail["repetition"]
    # the preview changed nothing
    assert conn.execute("SELECT count(*) FROM samples WHERE status != 'pending'").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM decisions").fetchone()[0] == 0


def test_single_filter_and_config_overrides(conn, crafted):
    res = clean.preview(conn, ["response_length"], config={"clean": {"response_length": {"min_words": 2}}})
    assert {h.id for h in res.hits} == {crafted["response_length"], crafted["ok_short_answer"]}
    phrases = {"clean": {"boilerplate": {"phrases": ["water cycle"], "fields": ["instruction"]}}}
    res = clean.preview(conn, ["boilerplate"], config=phrases)
    assert {h.id for h in res.hits} == {crafted["ok"]}
    with pytest.raises(ValueError, match="min_wrds"):
        clean.filter_params({"clean": {"response_length": {"min_wrds": 2}}})
    with pytest.raises(ValueError, match="unknown filter"):
        clean.parse_filters(["lenght"])


def test_language_filter_is_cheap_and_opt_in(conn):
    ids = add(conn, [r(), r("Erkläre den Wasserkreislauf.", "Das Wasser verdunstet über dem Meer, steigt auf, "
                                                               "kühlt ab und fällt später wieder als Regen herunter."),
                     r("Объясни круговорот воды.", "Вода испаряется с поверхности океана, поднимается вверх, "
                                                    "охлаждается и выпадает дождём.")])
    assert "language" not in clean.preview(conn).filters
    res = clean.preview(conn, ["language"])
    details = {h.id: h.detail for h in res.hits}
    assert set(details) == {ids[1], ids[2]}
    assert "English function words" in details[ids[1]] and "Latin script" in details[ids[2]]


def test_dataset_kinds_decide_which_fields_exist(conn):
    prompts = add(conn, [{"instruction": "Name a prime number."}], name="p", kind="prompts")
    text = add(conn, [{"response": NATURAL}], name="t", kind="text")
    assert clean.preview(conn).hits == []
    assert prompts and text


def test_apply_rejects_with_reason_then_undo_restores(cli, conn, crafted):
    code, out, err = cli("clean", "--dataset", "d")
    assert code == 0, err
    assert "would reject" in out and "nothing changed" in out
    code, out, err = cli("clean", "--dataset", "d", "--filter", "boilerplate,repetition", "--apply", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["by_filter"]["boilerplate"]["by_dataset"] == {"d": 2}
    run = report["applied"]["run"]
    assert report["applied"]["rejected"] == 4
    # "the cat the cat ..." also repeats its 3-grams: without the diversity filter, repetition takes it
    rejected = {crafted["boilerplate"], crafted["boilerplate_curly"], crafted["repetition"],
                crafted["lexical_diversity"]}
    rows = conn.execute("SELECT sample_id, action, before, after, reason, session FROM decisions ORDER BY id").fetchall()
    assert {x[0] for x in rows} == rejected
    assert {(x[1], x[2], x[3], x[5]) for x in rows} == {
        ("filter", '{"status":"pending"}', '{"status":"rejected"}', run)}
    assert {x[0]: x[4] for x in rows}[crafted["repetition"]] == "repetition"
    assert {i for (i,) in conn.execute("SELECT id FROM samples WHERE status = 'rejected'")} == rejected

    # a curator changes one of them afterwards: undo leaves that row alone
    conn.execute("UPDATE samples SET status = 'accepted' WHERE id = ?", (crafted["repetition"],))
    code, out, err = cli("clean", "--undo", run)
    assert code == 0, err
    assert "undid 3 rows" in out and "left 1 rows alone" in out
    status = dict(conn.execute("SELECT id, status FROM samples"))
    assert status[crafted["boilerplate"]] == status[crafted["boilerplate_curly"]] == "pending"
    assert status[crafted["repetition"]] == "accepted"
    undo_rows = conn.execute("SELECT action, undoes, session FROM decisions WHERE action = 'undo'").fetchall()
    assert len(undo_rows) == 3 and all(u[2] == run and u[1] for u in undo_rows)
    assert conn.execute("SELECT count(*) FROM decisions").fetchone()[0] == 7       # nothing deleted

    code, out, _ = cli("clean", "--undo", run)
    assert "undid 0 rows" in out and "3 rows were undone before" in out
    code, out, _ = cli("clean", "--runs", "--json")
    [info] = json.loads(out)
    assert info["run"] == run and info["rows"] == 4 and info["undone"] == 3
    assert info["reasons"] == {"boilerplate": 2, "repetition": 2}
    code, _, err = cli("clean", "--undo", "filter-99")
    assert code == 2 and "filter-99" in err


def test_apply_skips_rows_decided_since_the_preview(conn, crafted):
    res = clean.preview(conn, ["boilerplate"])
    conn.execute("UPDATE samples SET status = 'accepted' WHERE id = ?", (crafted["boilerplate"],))
    applied = clean.apply_filters(conn, res)
    assert applied.rejected == 1 and applied.changed_since == 1
    assert conn.execute("SELECT status FROM samples WHERE id = ?", (crafted["boilerplate"],)).fetchone()[0] == "accepted"


def test_normalize_text_rules():
    n = clean.normalize_text
    assert n("Hello&nbsp;world<br>next  line   \n\n\n\nend") == "Hello world\nnext line\n\nend"
    assert n("<p>One</p><p>Two</p>") == "One\n\nTwo"
    assert n("zero\u200bwidth\ufeff and \x07bell") == "zerowidth and bell"
    assert n("Tom &amp; Jerry &lt;3") == "Tom & Jerry <3"
    code = "Use it:\n```html\n<div>  <br>  &amp; </div>\n```\nor `<span>`  inline."
    assert n(code) == "Use it:\n```html\n<div>  <br>  &amp; </div>\n```\nor `<span>` inline."
    assert n("  keep indentation\n    nested  item") == "keep indentation\n    nested item"
    assert n("x² ﬁne", {**clean.NORMALIZE_DEFAULTS, "unicode": "NFKC"}) == "x2 fine"
    assert n("x² ﬁne") == "x² ﬁne"
    assert n("a  b", {**clean.NORMALIZE_DEFAULTS, "whitespace": False}) == "a  b"
    with pytest.raises(ValueError, match="unicode"):
        clean.normalize_options({"clean": {"normalize": {"unicode": "NFD"}}})


def test_normalize_apply_keeps_fts_and_hash_in_step_and_undoes(cli, conn):
    ids = add(conn, [r("Tom&amp;Jerry  episode guide", "A cat<br>and a mouse."),
                     r("Already clean.", "Nothing to do."),
                     {"messages": [{"role": "user", "content": "Hi  there<br>friend"},
                                   {"role": "assistant", "content": "Hello!"}],
                      "instruction": "Hi  there<br>friend", "response": "Hello!"}])
    fts_sync(conn)

    def search(word):
        return [x for (x,) in conn.execute("SELECT rowid FROM samples_fts WHERE samples_fts MATCH ?", (word,))]

    assert search("amp") == [ids[0]]
    code, out, err = cli("clean", "--normalize", "--dataset", "d")
    assert code == 0, err and "would change 2 of 3 rows" in out
    assert get_sample(conn, ids[0])["instruction"] == "Tom&amp;Jerry  episode guide"
    code, out, err = cli("clean", "--normalize", "--dataset", "d", "--apply")
    assert code == 0, err
    run = out.split("as run ")[1].split()[0]
    s0, s2 = get_sample(conn, ids[0]), get_sample(conn, ids[2])
    assert (s0["instruction"], s0["response"]) == ("Tom&Jerry episode guide", "A cat\nand a mouse.")
    assert s2["messages"][0]["content"] == s2["instruction"] == "Hi there\nfriend"
    for s in (s0, s2):
        assert s["content_hash"] == hash_of(s)
    assert s0["instruction_len"] == len("Tom&Jerry episode guide")
    assert search("amp") == [] and search("jerry") == [ids[0]]
    dec = conn.execute("SELECT action, before, after, session FROM decisions WHERE sample_id = ?", (ids[0],)).fetchone()
    assert dec[0] == "normalize" and dec[3] == run
    assert json.loads(dec[1]) == {"instruction": "Tom&amp;Jerry  episode guide", "response": "A cat<br>and a mouse."}
    assert json.loads(dec[2]) == {"instruction": "Tom&Jerry episode guide", "response": "A cat\nand a mouse."}

    code, out, err = cli("clean", "--undo", run)
    assert code == 0, err and "undid 2 rows" in out
    back = get_sample(conn, ids[0])
    assert back["instruction"] == "Tom&amp;Jerry  episode guide" and back["content_hash"] == hash_of(back)
    assert get_sample(conn, ids[2])["messages"][0]["content"] == "Hi  there<br>friend"
    assert search("amp") == [ids[0]]


def test_cli_errors(cli, conn):
    add(conn, [r()])
    code, _, err = cli("clean", "--dataset", "nope")
    assert code == 2 and "nope" in err
    code, _, err = cli("clean", "--filter", "bogus")
    assert code == 2 and "bogus" in err
    code, _, err = cli("clean", "--status", "done")
    assert code == 2 and "done" in err
