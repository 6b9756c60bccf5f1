"""judge, curate and label end to end: real worker, real openai client, scripted replies from the test server.

Each test scripts a happy reply and the failure shapes a judge really produces (missing score, out of range, prose
instead of JSON, truncated JSON) and checks what lands in the store: judgments, score cache, item errors with the
raw reply, and the job's kept/dropped/failed counts.
"""
from __future__ import annotations

import json

import pytest

from llm_server import LLMServer
from taskkit import add_dataset, between, config_for, items_of, last_user, rows, run, samples_of, scores_of
from workbench import jobs

PAIRS = [
    {"instruction": "Name the capital of Peru.", "response": "Lima."},
    {"instruction": "MISSING score please", "response": "x"},
    {"instruction": "RANGE score please", "response": "x"},
    {"instruction": "PROSE please", "response": "x"},
    {"instruction": "TRUNCATED please", "response": "x"},
    {"instruction": "Explain recursion briefly.", "response": "A function calling itself on smaller input.",
     "input": "For a beginner."},
]

GOOD_JSON = {"instruction_clarity": 8, "response_quality": 6, "alignment": 9, "overall": 7,
             "rationale": "Clear ask; terse answer."}


def judge_reply(messages, body):
    prompt = last_user(messages)
    inst = between(prompt, "Instruction:")
    if inst.startswith("MISSING"):
        return json.dumps({k: v for k, v in GOOD_JSON.items() if k != "alignment"})
    if inst.startswith("RANGE"):
        return json.dumps({**GOOD_JSON, "response_quality": 11})
    if inst.startswith("PROSE"):
        return "I would rate this pair fairly high overall, maybe a seven."
    if inst.startswith("TRUNCATED"):
        return json.dumps(GOOD_JSON)[:40]
    if inst.startswith("Explain"):
        return "Here you go:\n```json\n" + json.dumps({**GOOD_JSON, "overall": 9}) + "\n```"
    return json.dumps(GOOD_JSON)


def test_judge_stores_judgments_and_item_errors(conn, db_path):
    add_dataset(conn, "pairs", PAIRS)
    with LLMServer(reply=judge_reply, models=("judge-a", "judge-b")) as srv:
        cfg = config_for(srv, ("judge-a", "judge-b"))
        job = run(conn, db_path, "judge", config=cfg, dataset="pairs", endpoint="judge-a")
        # JSON output was requested from the server
        assert all(b.get("response_format") == {"type": "json_object"} for b in srv.stats.bodies)
        # the input reached the judge when present
        assert any("For a beginner." in b["messages"][-1]["content"] for b in srv.stats.bodies)
        # a second judge scores the same samples: both judgments are kept side by side
        run(conn, db_path, "judge", config=cfg, dataset="pairs", endpoint="judge-b",
            filter={"limit": 1})
    assert (job["done"], job["failed"], job["kept"]) == (2, 4, 2)
    judged = rows(conn, "SELECT * FROM judgments ORDER BY id")
    assert [j["judge"] for j in judged] == ["judge-a", "judge-a", "judge-b"]
    capital_id = samples_of(conn, "pairs")[0]["id"]
    first = next(j for j in judged if j["sample_id"] == capital_id)      # items finish in any order
    assert first["rubric"] == "judge" and first["rubric_version"] == "2"
    assert first["scores"] == {"instruction_clarity": 8, "response_quality": 6, "alignment": 9}
    assert first["overall"] == 7 and first["rationale"] == "Clear ask; terse answer." and first["raw"]
    by_inst = {s["instruction"]: s for s in samples_of(conn, "pairs")}
    # one score per rubric: the overall and each dimension, each with its scale
    recursion = scores_of(conn, by_inst["Explain recursion briefly."]["id"], with_scale=True)
    assert recursion["judge"] == (9, 1, 10, False)
    assert set(recursion) == {"judge", "judge.instruction_clarity", "judge.response_quality", "judge.alignment"}
    assert all(v[1:3] == (1, 10) for v in recursion.values())
    assert scores_of(conn, by_inst["MISSING score please"]["id"]) == {}          # never a default score
    failed = {i["sample_id"]: i for i in items_of(conn, job["id"]) if i["status"] == "failed"}
    errors = {by_inst_id: i["error"] for by_inst_id, i in failed.items()}
    assert len(failed) == 4 and all(i["raw"] for i in failed.values())
    messages = " | ".join(errors.values())
    for part in ("'alignment' is missing", "11 is outside 1-10", "no complete JSON", "truncated"):
        assert part in messages
    # the Jobs screen's failure list carries the raw replies
    assert all(f["raw"] for f in jobs.failures(conn, job["id"]))


def curate_reply(messages, body):
    inst = between(last_user(messages), "User's request:")
    return {"five": "Focused, expert and well written.\nScore: 5",
            "four": "Good but could be tighter.\n**Score:** 4",
            "none": "A decent answer, I would keep it.",
            "zero": "Bad.\nScore: 0",
            "big": "Excellent!\nScore: 10502"}[inst.split()[0]]


def test_curate_keeps_at_threshold_and_fails_unreadable_scores(conn, db_path):
    add_dataset(conn, "cands", [{"instruction": f"{w} pair", "response": "text"}
                                for w in ("five", "four", "none", "zero", "big")])
    with LLMServer(reply=curate_reply) as srv:
        cfg = config_for(srv)
        job = run(conn, db_path, "curate", config=cfg, dataset="cands")
        assert "Score: N" in srv.stats.bodies[0]["messages"][-1]["content"]
        # the larger A4 set: a second curator pass with threshold 4 on the same candidates
        job4 = run(conn, db_path, "curate", config=cfg, dataset="cands", params={"threshold": 4})
    assert (job["done"], job["kept"], job["dropped"], job["failed"]) == (2, 1, 1, 3)
    assert job["drop_reasons"] == {"below threshold": 1}
    assert (job4["kept"], job4["dropped"]) == (2, 0)
    s = {x["instruction"].split()[0]: x for x in samples_of(conn, "cands")}
    assert s["five"]["metadata"]["curation"]["kept"] is True
    assert scores_of(conn, s["five"]["id"], with_scale=True) == {"curate": (5, 1, 5, False)}
    assert s["four"]["metadata"]["curation"] == {"score": 4, "kept": True, "threshold": 4.0, "judge": "test-model",
                                                 "rubric_version": "2", "job": job4["id"], "round": 1,
                                                 "examples": []}
    assert scores_of(conn, s["none"]["id"]) == {} and "curation" not in (s["none"]["metadata"] or {})
    j = rows(conn, "SELECT * FROM judgments WHERE sample_id = ? ORDER BY id", (s["five"]["id"],))
    assert j[0]["scores"] == {"curation": 5} and j[0]["rationale"] == "Focused, expert and well written."
    errs = sorted(i["error"] for i in items_of(conn, job["id"]) if i["status"] == "failed")
    assert any("no 'Score: N'" in e for e in errs) and sum("outside 1-5" in e for e in errs) == 2


def label_reply(messages, body):
    inst = between(last_user(messages), "Instruction:")
    if inst.startswith("Odd"):
        return json.dumps({"task_type": "poetry", "domain": "arts", "difficulty": "easy"})
    return json.dumps({"task_type": "Closed QA", "domain": "history", "difficulty": "Medium"})


def test_label_uses_config_sets_and_rejects_out_of_set_labels(conn, db_path):
    add_dataset(conn, "raw", [{"instruction": "Who crowned Charlemagne?", "response": "Pope Leo III."},
                              {"instruction": "Odd one: write a haiku", "response": "..."}])
    with LLMServer(reply=label_reply) as srv:
        cfg = {**config_for(srv), "labels": {"task_type": ["closed_qa", "creative_writing"],
                                             "domain": ["history", "arts"], "difficulty": ["easy", "medium", "hard"]}}
        job = run(conn, db_path, "label", config=cfg, dataset="raw")
        prompt = srv.stats.bodies[0]["messages"][-1]["content"]
    assert "closed_qa, creative_writing" in prompt
    assert (job["kept"], job["failed"]) == (1, 1)
    a, b = samples_of(conn, "raw")
    assert (a["task_type"], a["domain"], a["difficulty"]) == ("closed_qa", "history", "medium")
    assert b["task_type"] is None
    failed = [i for i in items_of(conn, job["id"]) if i["status"] == "failed"][0]
    assert "'poetry' is not one of" in failed["error"] and "poetry" in failed["raw"]


def test_bad_label_config_is_refused_at_queue_time(conn):
    from workbench.tasks import TaskError
    add_dataset(conn, "raw", [{"instruction": "x", "response": "y"}])
    cfg = {"endpoints": {"e": {"base_url": "http://127.0.0.1:9/v1", "model": "m"}}, "labels": {"domain": []}}
    with pytest.raises(TaskError, match=r"\[labels\] domain"):
        jobs.queue_job(conn, "label", config=cfg, dataset="raw", endpoint="e")


def test_edited_rubric_is_used_and_recorded(conn, db_path):
    from workbench import templating
    add_dataset(conn, "pairs", PAIRS[:1])
    odir = templating.override_dir()
    odir.mkdir(parents=True)
    text = templating.load("judge").text.replace("You are a careful reviewer", "You are a STRICT reviewer")
    (odir / "judge").write_text(text, encoding="utf-8")
    with LLMServer(reply=judge_reply) as srv:
        run(conn, db_path, "judge", config=config_for(srv), dataset="pairs")
        assert "STRICT reviewer" in srv.stats.bodies[0]["messages"][0]["content"]
    (j,) = rows(conn, "SELECT * FROM judgments")
    assert j["rubric"] == "judge" and j["rubric_version"].startswith("2+local.")
