"""Deita selection: quality x complexity from Deita's scorers (own or inherited from an ancestor with the same
prompt), greedy best-first under a ROUGE-L bound; and the chain evol-instruct -> evol-quality -> sample --by deita."""
from __future__ import annotations

import json

import pytest

from llm_server import LLMServer
from taskkit import add_dataset, between, config_for, last_user, run, samples_of
from workbench import deita, scores, store


def judge(conn, sid, rubric, value):
    with store.transaction(conn):
        scores.record(conn, sid, rubric, value, (1, 6), judge="j", template_version="1")


@pytest.fixture
def scored(conn):
    ids = add_dataset(conn, "pool", [
        {"instruction": "Explain how tides form on Earth.", "response": "The moon pulls the oceans."},      # 12
        {"instruction": "Write a haiku about winter rain.", "response": "Cold drops on tin roofs."},       # 10
        {"instruction": "Explain how tides form on Earth.", "response": "The moon pulls the oceans up."},  # 12, copy
        {"instruction": "List three prime numbers.", "response": "2, 3, 5"},                                # 1
        {"instruction": "Summarize the plot of Hamlet.", "response": "A prince avenges his father."},      # no c
        {"instruction": "Name the largest planet.", "response": "Jupiter."},                                # 10 (tie)
    ])
    for sid, q, c in zip(ids, (4, 5, 4, 1, 3, 2), (3, 2, 3, 1, None, 5)):
        judge(conn, sid, deita.QUALITY, q)
        if c is not None:
            judge(conn, sid, deita.COMPLEXITY, c)
    judge(conn, ids[3], deita.QUALITY, 2)            # the latest score wins: 2 x 1
    return ids


def test_greedy_by_quality_times_complexity_under_rouge(conn, scored):
    ids = scored
    p = deita.plan(conn, 4)
    # 12 (first), its near-copy passed over, then the two 10s by id, then 2
    assert p.ids == [ids[0], ids[1], ids[5], ids[3]]
    assert p.skipped_similar == 1 and p.missing == {"complexity": 1} and p.eligible == 5
    assert p.scores[ids[3]] == (2.0, 1.0)
    assert deita.plan(conn, 2).ids == [ids[0], ids[1]]
    # a looser bound admits the near-copy
    assert deita.plan(conn, 3, max_rouge=0.99).ids == [ids[0], ids[2], ids[1]]      # its ROUGE-L is 22/23
    # a score made stale by an edit does not count, and the plan says so
    with store.transaction(conn):
        conn.execute("UPDATE sample_scores SET stale = 1 WHERE sample_id = ? AND rubric = ?", (ids[0], deita.QUALITY))
    p = deita.plan(conn, 4)
    assert ids[0] not in p.ids and p.missing == {"complexity": 1, "quality (stale)": 1}
    assert p.ids[0] == ids[2]                        # the near-copy is no longer passed over


def test_bad_arguments(conn, scored):
    with pytest.raises(ValueError, match="max_rouge"):
        deita.plan(conn, 3, max_rouge=0)
    with pytest.raises(ValueError, match="fields"):
        deita.plan(conn, 3, fields=("system",))
    with pytest.raises(ValueError, match="size"):
        deita.plan(conn, 0)


def test_cli(conn, scored, cli):
    ids = scored
    code, out, err = cli("sample", "--by", "deita", "--size", "3", "--dry-run", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert [r["id"] for r in res["rows"]] == ids[:2] + [ids[5]] and res["rows"][0]["score"] == 12
    assert res["selection"] is None
    code, out, err = cli("sample", "--by", "deita", "--size", "3", "--into", "best")
    assert code == 0 and "selected 3 of 3" in out and "1 passed over" in out
    assert [r[0] for r in conn.execute("SELECT sample_id FROM selections WHERE name = 'best' ORDER BY sample_id")] \
        == sorted(ids[:2] + [ids[5]])
    code, _, err = cli("sample", "--by", "deita", "--size", "3", "--into", "best")
    assert code != 0 and "exists" in err                             # never overwritten without --replace
    code, _, err = cli("sample", "--by", "deita", "--size", "3", "--target", "t.toml", "--dry-run")
    assert code != 0 and "no --target" in err
    code, _, err = cli("sample", "--by", "deita", "--dry-run")
    assert code != 0 and "--size" in err
    code, _, err = cli("sample", "--dry-run", "--size", "3")
    assert code != 0 and "--target FILE" in err


def test_evol_instruct_then_evol_quality_then_deita(conn, db_path):
    """Complexity from evol-instruct rows reaches the evol-quality rows made from them (same prompt)."""
    add_dataset(conn, "seeds", [{"instruction": "Describe a cat"}, {"instruction": "Plan a trip"}])

    def reply(messages, body):
        prompt = last_user(messages)
        if "Score each of the" in prompt and "Instruction [1]:" in prompt:           # complexity
            first = between(prompt, "Instruction [1]:")
            return "[1] Score: 1\n[2] Score: " + ("3" if "cat" in first else "2")
        if "Score each of the" in prompt:                                             # quality: the rewrite wins
            return "[1] Score: 1\n[2] Score: " + ("2" if "cat" in between(prompt, "User's prompt:") else "3")
        if "Answer with exactly one of these two phrases" in prompt:
            return "Not Equal"
        if "Original prompt:" in prompt or "Prompt for inspiration:" in prompt:
            return (between(prompt, "Original prompt:") or between(prompt, "Prompt for inspiration:")) + " in detail"
        if "Answer to improve:" in prompt:
            return between(prompt, "Answer to improve:") + " Better."
        return "Cats purr, nap and hunt at dusk." if "cat" in prompt else "Book early, pack light, keep a day free."

    with LLMServer(reply=reply) as srv:
        cfg = config_for(srv)
        run(conn, db_path, "evol-instruct", config=cfg, dataset="seeds", into="evolved", params={"rounds": 1})
        run(conn, db_path, "evol-quality", config=cfg, dataset="evolved", into="polished")
    polished = samples_of(conn, "polished")
    assert len(polished) == 2 and all(s["response"].endswith(" Better.") for s in polished)
    p = deita.plan(conn, 5, datasets=["polished"])
    by_inst = {s["id"]: s["instruction"] for s in polished}
    assert {by_inst[i]: p.scores[i] for i in p.ids} == {"Describe a cat in detail": (2.0, 3.0),
                                                        "Plan a trip in detail": (3.0, 2.0)}
    assert p.missing == {}
