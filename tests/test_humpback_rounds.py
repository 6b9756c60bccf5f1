"""Humpback rounds: round k's curation (and backward) prompts show the pairs round k-1 kept; every row and verdict
records its round; a round whose previous round kept nothing is refused."""
from __future__ import annotations

import re

import pytest

from llm_server import LLMServer
from taskkit import add_dataset, between, config_for, last_user, run, samples_of
from workbench import jobs
from workbench.tasks import TaskError

TEXTS = {f"t{i}": f"Segment t{i}: " + f"facts about topic {i} explained at length. " * 8 for i in range(4)}
# the curator's score for each candidate, per round
SCORES = {"t0": [5, 5], "t1": [5, 4], "t2": [3, 3], "t3": [2, 5]}


def examples_in(prompt: str, label: str) -> list[str]:
    return re.findall(rf"{label}:\n<<<\n(.*?)\n>>>", prompt, re.S)


def test_rounds_use_the_previous_rounds_kept_pairs(conn, db_path):
    seed_ids = add_dataset(conn, "seeds", [{"instruction": "Seed question A?", "response": "Seed answer A."},
                                           {"instruction": "Seed question B?", "response": "Seed answer B."}])
    add_dataset(conn, "web", [{"instruction": "", "response": t} for t in TEXTS.values()])
    asked: dict[str, int] = {}
    prompts: list[tuple[str, str]] = []

    def reply(messages, body):
        prompt = last_user(messages)
        if "Score: N" in prompt:                                         # the curator
            inst = between(prompt, "User's request:")
            key = inst.split()[-1].rstrip("?")
            n = asked[key] = asked.get(key, 0) + 1
            prompts.append((key, prompt))
            return f"Reasons.\nScore: {SCORES[key][n - 1]}"
        text = prompt.rsplit("<<<\n", 1)[1].split("\n>>>")[0]            # the backward model
        prompts.append(("bt", prompt))
        return f"What do you know about {text.split(':')[0].split()[-1]}?"

    with LLMServer(reply=reply) as srv:
        cfg = config_for(srv)
        bt = run(conn, db_path, "backtranslate", config=cfg, dataset="web", into="cands",
                 params={"seed_dataset": "seeds", "num_examples": 2})
        r1 = run(conn, db_path, "curate", config=cfg, dataset="cands",
                 params={"seed_dataset": "seeds", "num_examples": 2})
        r1_prompts = [p for k, p in prompts if k != "bt"]
        prompts.clear()
        r2 = run(conn, db_path, "curate", config=cfg, dataset="cands", params={"round": 2, "num_examples": 2})
        r2_prompts = [(k, p) for k, p in prompts if k != "bt"]
        prompts.clear()
        bt2 = run(conn, db_path, "backtranslate", config=cfg, dataset="web", into="cands2",
                  params={"seed_dataset": "cands", "round": 2, "num_examples": 5})
        bt2_prompts = [p for k, p in prompts if k == "bt"]
    assert bt["kept"] == 4 and all(s["origin"]["round"] == 1 for s in samples_of(conn, "cands"))
    # round 1: the seed pairs are the examples
    assert all(sorted(examples_in(p, "Example request")) == ["Seed question A?", "Seed question B?"]
               for p in r1_prompts)
    assert (r1["kept"], r1["dropped"]) == (2, 2)
    cands = {s["instruction"].split()[-1].rstrip("?"): s for s in samples_of(conn, "cands")}
    kept1 = {cands["t0"]["instruction"], cands["t1"]["instruction"]}
    # round 2: only pairs kept in round 1, never the pair being rated
    for key, p in r2_prompts:
        shown = set(examples_in(p, "Example request"))
        assert shown <= kept1 and cands[key]["instruction"] not in shown and shown
    assert (r2["kept"], r2["dropped"]) == (2, 2)
    assert r2["params"]["task"]["round"] == 2
    cands = {s["instruction"].split()[-1].rstrip("?"): s for s in samples_of(conn, "cands")}
    rounds = {k: {r: v["kept"] for r, v in s["metadata"]["curation_rounds"].items()} for k, s in cands.items()}
    assert rounds == {"t0": {"1": True, "2": True}, "t1": {"1": True, "2": False},
                      "t2": {"1": False, "2": False}, "t3": {"1": False, "2": True}}
    assert all(s["metadata"]["curation"]["round"] == 2 for s in cands.values())
    # backtranslation round 2: its examples are the pairs curate round 1 kept, and its rows say round 2
    assert all(set(examples_in(p, "Answer")[:-1]) == {cands["t0"]["response"], cands["t1"]["response"]}
               for p in bt2_prompts)
    assert bt2["kept"] == 4 and all(s["origin"]["round"] == 2 for s in samples_of(conn, "cands2"))
    assert seed_ids


def test_round_without_kept_pairs_is_refused(conn, db_path):
    add_dataset(conn, "cands", [{"instruction": "Q?", "response": "A."}])
    cfg = {"endpoints": {"e": {"base_url": "http://127.0.0.1:9/v1", "model": "m"}}}
    with pytest.raises(TaskError, match="no pair of 'cands' was kept in round 1"):
        jobs.queue_job(conn, "curate", config=cfg, dataset="cands", endpoint="e", params={"round": 2})
    with pytest.raises(TaskError, match="seed_dataset"):
        jobs.queue_job(conn, "backtranslate", config=cfg, dataset="cands", endpoint="e", params={"round": 2})
    with pytest.raises(TaskError, match="kept by curate round 1"):
        jobs.queue_job(conn, "backtranslate", config=cfg, dataset="cands", endpoint="e",
                       params={"round": 2, "seed_dataset": "cands"})
    assert conn.execute("SELECT count(*) FROM jobs").fetchone()[0] == 0
