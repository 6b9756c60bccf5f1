"""augment: back-translation through a pivot language and paraphrase, kept only when the meaning survives."""
from __future__ import annotations

import re

from llm_server import LLMServer
from taskkit import add_dataset, between, config_for, items_of, last_user, run, samples_of


def reply(messages, body):
    prompt = last_user(messages)
    m = re.match(r"Translate the following text into (\w+)\.", prompt)
    if m:
        text = prompt.split("<<<\n", 1)[1].rsplit("\n>>>", 1)[0]
        if m.group(1) == "French":
            return f"[fr] {text}"
        text = text.removeprefix("[fr] ")
        if text.startswith("Drift"):
            return "MEANING drifted far away from the original request"
        if text.startswith("Odd"):
            return text + " (odd)"
        return text.replace("Give", "Provide") if text.startswith("Give") else text
    if prompt.startswith("Reword this request"):
        text = between(prompt, "Reword this request:")
        return "Please " + text[0].lower() + text[1:]
    if "Do these two requests ask for the same thing" in prompt:
        second = between(prompt, "Second request:")
        if "(odd)" in second:
            return "Hard to say."
        return "Not Equal" if "MEANING" in second else "Equal"
    raise AssertionError(prompt)


def test_backtranslation_kept_when_meaning_holds(conn, db_path):
    ids = add_dataset(conn, "base", [
        {"instruction": "Give three tips for staying healthy.", "input": "", "response": "Sleep, move, eat well."},
        {"instruction": "Name the capital of Peru.", "response": "Lima."},
        {"instruction": "Drift this instruction somewhere else.", "response": "x"},
        {"instruction": "Odd request to check.", "response": "y"},
    ])
    with LLMServer(reply=reply) as srv:
        job = run(conn, db_path, "augment", config=config_for(srv), dataset="base")
    assert (job["kept"], job["failed"]) == (1, 1)
    assert job["drop_reasons"] == {"unchanged": 1, "meaning changed": 1}
    (row,) = samples_of(conn, "base-augment")
    assert row["instruction"] == "Provide three tips for staying healthy."
    assert row["response"] == "Sleep, move, eat well." and row["parent_id"] == ids[0]
    o = row["origin"]
    assert o["augmentation"] == "backtranslation" and o["pivot_language"] == "French"
    assert o["template"] == "augment-translate" and o["templates"]["augment-equivalence"] == "1"
    failed = [i for i in items_of(conn, job["id"]) if i["status"] == "failed"][0]
    assert failed["sample_id"] == ids[3] and "neither 'Equal' nor 'Not Equal'" in failed["error"]
    assert failed["raw"] == "Hard to say."


def test_paraphrase_with_similarity_bound(conn, db_path):
    add_dataset(conn, "base", [{"instruction": "Summarize the article in two sentences.", "response": "..."},
                               {"instruction": "Translate this to German.", "response": "..."}])
    with LLMServer(reply=reply) as srv:
        job = run(conn, db_path, "augment", config=config_for(srv), dataset="base",
                  params={"method": "both", "check": "similarity", "min_similarity": 0.7})
        judged = [b for b in srv.stats.bodies if "same thing" in b["messages"][-1]["content"]]
    assert judged == []                                   # the similarity bound replaces the judge
    out = sorted(samples_of(conn, "base-augment"), key=lambda r: r["parent_id"])    # items finish in any order
    assert [r["origin"]["augmentation"] for r in out] == ["paraphrase", "paraphrase"]
    assert out[0]["instruction"] == "Please summarize the article in two sentences."
    assert all(0.7 <= r["origin"]["similarity"] < 0.95 for r in out)
    assert job["drop_reasons"] == {"unchanged": 2}          # back-translation changed nothing here


def style_reply(messages, body):
    prompt = last_user(messages)
    if prompt.startswith("Target style:"):
        style = prompt.split(":", 1)[1].split("(", 1)[0].strip()
        text = between(prompt, "Rewrite this request in the target style:")
        if text.startswith("Drift"):
            return "Write a poem about MEANING instead."
        return {"formal": "Would you kindly " + text[0].lower() + text[1:],
                "casual": "hey, " + text[0].lower() + text[1:] + " thx",
                "concise": text.split(",")[0].rstrip(".") + "."}[style]
    if prompt.startswith("The person asking:"):
        who = prompt.split(":", 1)[1].split("\n", 1)[0].strip()
        text = between(prompt, "Rewrite this request the way that person would ask it:")
        if text.startswith("Drift"):
            return "As a chef I want a MEANING-free menu."
        return f"As {who}, I need this: {text[0].lower() + text[1:]}"
    return reply(messages, body)


def test_style_transfer_and_persona_meaning_checked(conn, db_path):
    add_dataset(conn, "base", [{"instruction": "List three uses of vinegar, briefly, for a kitchen.", "response": "r"},
                               {"instruction": "Drift away from this topic please.", "response": "r"}])
    with LLMServer(reply=style_reply) as srv:
        cfg = config_for(srv)
        for style in ("formal", "casual", "concise"):
            job = run(conn, db_path, "augment", config=cfg, dataset="base", into=f"s-{style}",
                      params={"method": "style", "style": style})
            assert job["drop_reasons"] == {"meaning changed": 1}
        persona = run(conn, db_path, "augment", config=cfg, dataset="base", into="p",
                      params={"method": "persona", "persona": "a chef in a busy restaurant"})
        prompts = [b["messages"][-1]["content"] for b in srv.stats.bodies]
    assert any("(formal and courteous" in p for p in prompts) and any("(as short as it can be" in p for p in prompts)
    got = {style: samples_of(conn, f"s-{style}") for style in ("formal", "casual", "concise")}
    assert [r["instruction"] for r in got["formal"]] == ["Would you kindly list three uses of vinegar, briefly, "
                                                         "for a kitchen."]
    assert [r["instruction"] for r in got["casual"]] == ["hey, list three uses of vinegar, briefly, for a kitchen. thx"]
    assert [r["instruction"] for r in got["concise"]] == ["List three uses of vinegar."]
    for style, rows_ in got.items():
        o = rows_[0]["origin"]
        assert (o["augmentation"], o["style"], o["template"]) == ("style", style, "augment-style")
        assert rows_[0]["response"] == "r"
    (p,) = samples_of(conn, "p")
    assert p["instruction"].startswith("As a chef in a busy restaurant, I need this: list three uses")
    assert p["origin"]["persona"] == "a chef in a busy restaurant" and p["origin"]["augmentation"] == "persona"
    # meaning checked as for every method: the drifted rewrite is dropped by the judge's "Not Equal"
    assert persona["drop_reasons"] == {"meaning changed": 1} and persona["kept"] == 1


def test_persona_needs_a_persona(conn):
    import pytest
    from workbench import jobs
    from workbench.tasks import TaskError
    add_dataset(conn, "base", [{"instruction": "Q?", "response": "A."}])
    cfg = {"endpoints": {"e": {"base_url": "http://127.0.0.1:9/v1", "model": "m"}}}
    with pytest.raises(TaskError, match="persona"):
        jobs.queue_job(conn, "augment", config=cfg, dataset="base", endpoint="e", params={"method": "persona"})
    with pytest.raises(TaskError, match="style"):
        jobs.queue_job(conn, "augment", config=cfg, dataset="base", endpoint="e",
                       params={"method": "style", "style": "pirate"})
