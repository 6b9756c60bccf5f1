"""The standalone Deita scorer (`deita-score`): quality and complexity of existing samples on 1-6, read with the
`[i] Score: N` list reader; near misses fail the item with the raw reply kept and no score written; then
`sample --by deita` ranks an imported dataset."""
from __future__ import annotations

import json

from llm_server import LLMServer
from taskkit import add_dataset, between, config_for, items_of, last_user, run, scores_of
from workbench import deita

# instruction marker -> (quality reply, complexity reply)
REPLIES = {
    "alpha": ("[1] Score: 5", "[1] Score: 4"),
    "beta": ("**[1] Score:** 3", "[1] Score: 6"),
    "gamma": ("[1] Score: 2\n", "Here it is.\n[1] Score: 2"),
    # near misses, each on the quality reply (the complexity reply is fine)
    "off-scale": ("[1] Score: 7", "[1] Score: 2"),
    "zero": ("[1] Score: 0", "[1] Score: 2"),
    "other-index": ("[2] Score: 4", "[1] Score: 2"),
    "no-index": ("Score: 4", "[1] Score: 2"),
    "range": ("[1] Score: 3-4", "[1] Score: 2"),
    "two-scores": ("[1] Score: 4\n[1] Score: 5", "[1] Score: 2"),
    "other-scale": ("[1] Score: 4/10", "[1] Score: 2"),
    "fraction": ("[1] Score: 4.5", "[1] Score: 2"),
    "extra-index": ("[1] Score: 4\n[2] Score: 3", "[1] Score: 2"),
    "words": ("[1] Score: four", "[1] Score: 2"),
    "empty": ("", "[1] Score: 2"),
}
NEAR_MISSES = set(REPLIES) - {"alpha", "beta", "gamma"}


def reply(messages, body):
    prompt = last_user(messages)
    if "Answer [1]:" in prompt:
        marker = between(prompt, "User's prompt:").split()[-1]
        return REPLIES[marker][0]
    marker = between(prompt, "Instruction [1]:").split()[-1]
    return REPLIES[marker][1]


def test_deita_score_reads_exact_lists_and_fails_near_misses(conn, db_path, cli):
    ids = add_dataset(conn, "imported", [{"instruction": f"Question {m}", "response": f"Answer about {m}."}
                                         for m in REPLIES] + [{"instruction": "Prompt only gamma", "response": ""}])
    by_marker = dict(zip([*REPLIES, "prompt-only"], ids))
    with LLMServer(reply=reply) as srv:
        job = run(conn, db_path, "deita-score", config=config_for(srv), dataset="imported")
    items = {i["sample_id"]: i for i in items_of(conn, job["id"])}
    assert {m for m, sid in by_marker.items() if items[sid]["status"] == "failed"} == NEAR_MISSES
    for m in NEAR_MISSES:
        it = items[by_marker[m]]
        assert it["raw"] == REPLIES[m][0] or (m == "empty" and it["error"]), (m, it)
        assert "deita-quality" not in scores_of(conn, by_marker[m])
    assert scores_of(conn, by_marker["alpha"]) == {"deita-quality": 5, "deita-complexity": 4}
    assert scores_of(conn, by_marker["beta"]) == {"deita-quality": 3, "deita-complexity": 6}
    assert scores_of(conn, by_marker["gamma"]) == {"deita-quality": 2, "deita-complexity": 2}
    assert scores_of(conn, by_marker["alpha"], with_scale=True)["deita-quality"] == (5, 1, 6, False)
    # no answer: only the complexity, the quality counted as dropped
    assert scores_of(conn, by_marker["prompt-only"]) == {"deita-complexity": 2}
    assert job["drop_reasons"] == {"no response": 1}
    # judgments keep the raw reply and the template version
    j = conn.execute("SELECT rubric, raw, rubric_version FROM judgments WHERE sample_id = ? ORDER BY rubric",
                     (by_marker["beta"],)).fetchall()
    assert j == [("deita-complexity", "[1] Score: 6", "1"), ("deita-quality", "**[1] Score:** 3", "1")]
    # Deita selection now works on the imported dataset: 5x4=20, 3x6=18, 2x2=4
    p = deita.plan(conn, 3, datasets=["imported"])
    assert p.ids == [by_marker["alpha"], by_marker["beta"], by_marker["gamma"]]
    code, out, err = cli("sample", "--db", str(db_path), "--by", "deita", "--size", "2", "--dataset", "imported",
                         "--into", "best", "--json")
    assert code == 0, err
    assert [r["id"] for r in json.loads(out)["rows"]] == [by_marker["alpha"], by_marker["beta"]]


def test_deita_score_one_rubric_and_templates_parse(conn, db_path, cli, tmp_path):
    ids = add_dataset(conn, "d", [{"instruction": "Question alpha", "response": "Answer."}])
    with LLMServer(reply=reply) as srv:
        run(conn, db_path, "deita-score", config=config_for(srv), dataset="d", params={"scores": "complexity"})
    assert scores_of(conn, ids[0]) == {"deita-complexity": 4}
    f = tmp_path / "reply.txt"
    for text, ok in (("[1] Score: 6", True), ("[1] Score: 7", False), ("[1] Score: 2 or 3", False),
                     ("Score: 3", False), ("[1] Score: 3\nSub-score: 1", True)):
        f.write_text(text, encoding="utf-8")
        code, out, err = cli("templates", "parse", "deita-score-quality", str(f))
        assert (code == 0) == ok, (text, out, err)
    import pytest
    from workbench import jobs
    cfg = {"endpoints": {"e": {"base_url": "http://127.0.0.1:9/v1", "model": "m"}}}
    with pytest.raises(jobs.TaskError, match="scores"):
        jobs.queue_job(conn, "deita-score", config=cfg, dataset="d", endpoint="e", params={"scores": "all"})
