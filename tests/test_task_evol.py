"""evol-quality and evol-instruct end to end against the test server."""
from __future__ import annotations

from llm_server import LLMServer
from taskkit import add_dataset, between, config_for, items_of, last_user, rows, run, samples_of
from workbench.tasks.evol_instruct import DEPTH_METHODS, OPERATIONS, choose_operation, is_empty_response, is_sorry
from workbench.tasks.evol_quality import MUTATIONS, choose_mutations

LONG_RESPONSE = ("Photosynthesis turns light into chemical energy. " * 30) + "THE-VERY-END"


def mutation_of(prompt: str) -> str:
    sentence = prompt.split("Make the answer ", 1)[1].split("\n", 1)[0]
    return next(name for name, text in MUTATIONS.items() if text == sentence)


def scores_by_tags(prompt: str) -> str:
    """The quality scorer's reply: each answer scored by how many rewrites it went through (+1)."""
    n = int(prompt.split("Score each of the ", 1)[1].split(" ", 1)[0])
    answers = [between(prompt, f"Answer [{i}]:") for i in range(1, n + 1)]
    return "\n".join(f"[{i}] Score: {min(n, 1 + a.count(' ['))}" for i, a in enumerate(answers, start=1))


def quality_reply(messages, body):
    prompt = last_user(messages)
    if "Score each of the" in prompt:
        return scores_by_tags(prompt)
    old = between(prompt, "Answer to improve:")
    return f"{old} [{mutation_of(prompt)}]"


def test_evol_quality_sends_the_whole_response_and_chains_rounds(conn, db_path):
    ids = add_dataset(conn, "qa", [{"instruction": "Explain photosynthesis.", "response": LONG_RESPONSE},
                                   {"instruction": "Say hi.", "response": "Hi."}])
    with LLMServer(reply=quality_reply) as srv:
        job = run(conn, db_path, "evol-quality", config=config_for(srv), dataset="qa",
                  params={"num_evolutions": 3, "store_evolutions": True, "include_original_response": True,
                          "seed": 7})
        first_prompts = [b["messages"][-1]["content"] for b in srv.stats.bodies
                         if "Answer to improve:" in b["messages"][-1]["content"]]
    # regression: the full response (not its last character) reaches the server
    assert any(LONG_RESPONSE in p for p in first_prompts)
    assert all(between(p, "Answer to improve:") not in ("D", ".") for p in first_prompts)
    assert job["kept"] == 8 and job["failed"] == 0                 # (original + 3 rounds) x 2
    out = samples_of(conn, "qa-evol-quality")
    expected = {sid: choose_mutations(7, sid, 3) for sid in ids}
    for sid in ids:
        chain = [s for s in out if _root(out, s) == sid]
        assert [s["origin"]["round"] for s in chain] == [0, 1, 2, 3]
        assert chain[0]["parent_id"] == sid and chain[0]["origin"]["mutation"] is None
        for prev, cur in zip(chain, chain[1:]):
            assert cur["parent_id"] == prev["id"]                  # each round's parent is the previous round
            assert cur["response"] == f"{prev['response']} [{cur['origin']['mutation']}]"
        assert [s["origin"]["mutation"] for s in chain[1:]] == expected[sid]
        assert all(s["instruction"] == chain[0]["instruction"] for s in chain)


def _root(rows, s):
    by_id = {r["id"]: r for r in rows}
    while s["parent_id"] in by_id:
        s = by_id[s["parent_id"]]
    return s["parent_id"]


def test_evol_quality_seed_determinism(conn, db_path):
    # the same seed gives the same choices whatever the batching; another seed differs somewhere
    a = [choose_mutations(42, sid, 5) for sid in range(1, 40)]
    assert a == [choose_mutations(42, sid, 5) for sid in range(1, 40)]
    assert a != [choose_mutations(43, sid, 5) for sid in range(1, 40)]
    assert {m for ms in a for m in ms} == set(MUTATIONS)           # all five mutations get used
    add_dataset(conn, "qa", [{"instruction": f"Question {i}?", "response": f"Answer {i}."} for i in range(6)])
    with LLMServer(reply=quality_reply) as srv:
        cfg = config_for(srv)
        run(conn, db_path, "evol-quality", config=cfg, dataset="qa", into="run1", params={"seed": 5})
        run(conn, db_path, "evol-quality", config=cfg, dataset="qa", into="run2",
            params={"seed": 5, "num_evolutions": 1}, filter={"limit": 3})
    one = {s["parent_id"]: s["origin"]["mutation"] for s in samples_of(conn, "run1")}
    two = {s["parent_id"]: s["origin"]["mutation"] for s in samples_of(conn, "run2")}
    assert len(one) == 6 and len(two) == 3
    assert all(one[k] == v for k, v in two.items())
    # store_evolutions off: only the last round is stored
    assert all(s["origin"]["round"] == 1 for s in samples_of(conn, "run1"))


def test_evol_quality_unreadable_reply_is_an_item_error(conn, db_path):
    add_dataset(conn, "qa", [{"instruction": "Q?", "response": "A."}])
    with LLMServer(reply=lambda m, b: "Improved answer:   ") as srv:
        job = run(conn, db_path, "evol-quality", config=config_for(srv), dataset="qa")
    assert job["failed"] == 1 and job["kept"] == 0
    item = items_of(conn, job["id"])[0]
    assert "no text" in item["error"] and item["raw"] == "Improved answer:   "


# --- evol-instruct ------------------------------------------------------------------------------------------

def evol_reply(messages, body):
    prompt = last_user(messages)
    if "Score each of the" in prompt:                                   # complexity: later versions are harder
        n = int(prompt.split("Score each of the ", 1)[1].split(" ", 1)[0])
        return "\n".join(f"[{i}] Score: {i}" for i in range(1, n + 1))
    if "Answer with exactly one of these two phrases" in prompt:         # the equality check
        second = between(prompt, "Second prompt:")
        return "Equal" if "SAME" in second else "Not Equal"
    if "Original prompt:" in prompt or "Prompt for inspiration:" in prompt:
        parent = between(prompt, "Original prompt:") or between(prompt, "Prompt for inspiration:")
        if parent.startswith("Leaky"):
            return "#Rewritten Prompt#: Leaky task, made harder than the given prompt"
        if parent.startswith("Static"):
            return "SAME " + parent
        if parent.startswith("Touchy"):
            return "Touchy request, harder"
        if parent.startswith("Hollow"):
            return "Hollow request, harder"
        op = next((k for k, v in DEPTH_METHODS.items() if v in prompt), "breadth")
        return f"{parent} +{op}"
    # answering an evolved instruction
    if messages[-1]["content"].startswith("Touchy"):
        return "Sorry, I cannot help with that."
    if messages[-1]["content"].startswith("Hollow"):
        return "The... and, of the!"
    return "A thorough answer with several concrete steps."


def test_evol_instruct_rounds_lineage_and_elimination_rules(conn, db_path):
    ids = add_dataset(conn, "seeds", [
        {"instruction": "Sort the list", "input": "3, 1, 2", "response": "1, 2, 3"},
        {"instruction": "Leaky task", "response": "x"},
        {"instruction": "Static task", "response": "x"},
        {"instruction": "Touchy subject", "response": "x"},
        {"instruction": "Hollow subject", "response": "x"},
    ])
    with LLMServer(reply=evol_reply) as srv:
        job = run(conn, db_path, "evol-instruct", config=config_for(srv), dataset="seeds",
                  params={"rounds": 3, "seed": 1})
        bodies = list(srv.stats.bodies)
    # Alpaca seeds are evolved as instruction + newline + input
    assert any("Sort the list\n3, 1, 2" in b["messages"][-1]["content"] for b in bodies)
    assert job["failed"] == 0
    assert job["drop_reasons"] == {"template leak": 3, "no information gain": 3, "sorry": 3, "empty response": 3}
    out = samples_of(conn, "seeds-evol-instruct")
    assert job["kept"] == len(out) == 3
    chain = sorted(out, key=lambda s: s["origin"]["round"])
    assert chain[0]["parent_id"] == ids[0]
    for r, s in enumerate(chain, start=1):
        op = choose_operation(1, ids[0], r)
        assert s["origin"]["round"] == r and s["origin"]["operation"] == op
        assert s["instruction"].endswith(f" +{op}")
        assert s["response"] == "A thorough answer with several concrete steps."
        assert s["origin"]["templates"]["evol-equal"] == "1"
        if r > 1:
            assert s["parent_id"] == chain[r - 2]["id"]
            assert s["instruction"].startswith(chain[r - 2]["instruction"])
    # a failed evolution leaves the instruction for the next round: 3 rounds, 3 attempts at each failing seed
    failing = [i for i in items_of(conn, job["id"]) if i["sample_id"] != ids[0]]
    assert all(i["status"] == "dropped" for i in failing)


def test_operation_choice_is_uniform_and_stable():
    picks = [choose_operation(0, sid, r) for sid in range(600) for r in range(1, 4)]
    counts = {op: picks.count(op) for op in OPERATIONS}
    assert set(counts) == set(OPERATIONS) and min(counts.values()) > 230     # 1800 draws, ~300 each
    assert picks == [choose_operation(0, sid, r) for sid in range(600) for r in range(1, 4)]


def test_response_elimination_rules():
    assert is_sorry("Sorry, I can't do that.")
    assert not is_sorry("Sorry for the wait! " + "word " * 80)
    assert is_empty_response("...!?") and is_empty_response("the and of, a.")
    assert not is_empty_response("Lima is the capital.")


def test_evol_quality_deita_scores_all_versions_together_and_keeps_the_best(conn, db_path):
    ids = add_dataset(conn, "qa", [{"instruction": "Alpha?", "response": "A0."},
                                   {"instruction": "Beta?", "response": "B0."},
                                   {"instruction": "Gamma?", "response": "C0."},
                                   {"instruction": "Delta?", "response": "D0."}])
    scored = {"Alpha?": "[1] Score: 2\n[2] Score: 4\n[3] Score: 4\n[4] Score: 3",     # tie 2/3: the earlier
              "Beta?": "[1] Score: 5\n[2] Score: 2\n[3] Score: 3\n[4] Score: 1",      # the original is best (n+1)
              "Gamma?": "[1] Score: 3\n[2] Score: 3\n[3] Score: 9\n[4] Score: 1",     # 9 is off the 1..5 scale
              "Delta?": "[1] Score: 3\n[2] Score: 4\n[4] Score: 1"}                   # [3] missing
    scorer_prompts = []

    def reply(messages, body):
        prompt = last_user(messages)
        if "Score each of the" in prompt:
            scorer_prompts.append((prompt, body))
            return scored[between(prompt, "User's prompt:")]
        return quality_reply(messages, body)

    with LLMServer(reply=reply) as srv:
        cfg = config_for(srv)
        job = run(conn, db_path, "evol-quality", config=cfg, dataset="qa", params={"num_evolutions": 3, "seed": 3})
        run(conn, db_path, "evol-quality", config=cfg, dataset="qa", into="every", filter={"limit": 1},
                    params={"num_evolutions": 3, "seed": 3, "store_evolutions": True})
    # one scorer call per sample sees the original and the three rewrites at once, at temperature 0
    alpha = next(p for p, _ in scorer_prompts if "Alpha?" in p)
    assert [between(alpha, f"Answer [{i}]:").count(" [") for i in range(1, 5)] == [0, 1, 2, 3]
    assert all(b["temperature"] == 0 for _, b in scorer_prompts)
    assert (job["kept"], job["failed"]) == (2, 2)
    out = {s["instruction"]: s for s in samples_of(conn, "qa-evol-quality")}
    a, b = out["Alpha?"], out["Beta?"]
    muts = choose_mutations(3, ids[0], 3)
    assert a["response"] == f"A0. [{muts[0]}]" and a["origin"]["round"] == 1 and a["parent_id"] == ids[0]
    assert [e["score"] for e in a["origin"]["evolutions"]] == [2, 4, 4, 3]
    assert [e["mutation"] for e in a["origin"]["evolutions"]] == [None, *muts]
    assert a["origin"]["scale"] == [1, 5] and a["origin"]["quality_score"] == 4 and a["origin"]["selected"]
    assert b["response"] == "B0." and b["origin"]["round"] == 0 and b["origin"]["mutation"] is None
    j = rows(conn, "SELECT * FROM judgments WHERE sample_id = ?", (a["id"],))
    assert len(j) == 1 and j[0]["rubric"] == "deita-quality" and j[0]["scores"] == {"quality": 4}
    assert j[0]["raw"] == scored["Alpha?"]
    assert conn.execute("SELECT score, scale_min, scale_max FROM sample_scores WHERE sample_id = ? AND "
                        "rubric = 'deita-quality'", (a["id"],)).fetchone() == (4, 1, 5)
    fails = {i["sample_id"]: i for i in items_of(conn, job["id"]) if i["status"] == "failed"}
    assert set(fails) == {ids[2], ids[3]}
    assert "9" in fails[ids[2]]["error"] and fails[ids[2]]["raw"] == scored["Gamma?"]
    assert fails[ids[3]]["raw"] == scored["Delta?"]
    # store_evolutions: every round a row with its score; only the best is marked selected
    chain = samples_of(conn, "every")
    assert [s["origin"]["round"] for s in chain] == [1, 2, 3]
    assert [s["origin"]["quality_score"] for s in chain] == [4, 4, 3]
    assert [s["origin"]["selected"] for s in chain] == [True, False, False]
    assert chain[1]["parent_id"] == chain[0]["id"]
    assert len(rows(conn, "SELECT * FROM judgments WHERE rubric = 'deita-quality' AND sample_id IN (?,?,?)",
                    tuple(s["id"] for s in chain))) == 3


def test_evol_instruct_deita_complexity_scores(conn, db_path):
    ids = add_dataset(conn, "seeds", [{"instruction": "Sort the list", "input": "3, 1, 2"},
                                      {"instruction": "Name a color"}])
    replies = {"Sort the list": "[1] Score: 1\n[2] Score: 3\n[3] Score: 2\n[4] Score: 5",
               "Name a color": "[1] Score: 1\n[2] Score: 2\n[3] Score: 2\n[4] Score: 2\n[5] Score: 4"}   # 5 lines for 4

    def reply(messages, body):
        prompt = last_user(messages)
        if "Score each of the" in prompt:
            return replies[between(prompt, "Instruction [1]:").split("\n")[0]]
        return evol_reply(messages, body)

    with LLMServer(reply=reply) as srv:
        job = run(conn, db_path, "evol-instruct", config=config_for(srv), dataset="seeds",
                  params={"rounds": 3, "seed": 1})
        scorer = [b for b in srv.stats.bodies if "Score each of the" in b["messages"][-1]["content"]]
    assert (job["kept"], job["failed"]) == (3, 1)
    # the original (with its input) and the three evolutions in one prompt
    sort_prompt = next(b["messages"][-1]["content"] for b in scorer if "Sort the list" in b["messages"][-1]["content"])
    assert between(sort_prompt, "Instruction [1]:") == "Sort the list\n3, 1, 2"
    assert between(sort_prompt, "Instruction [4]:").count(" +") == 3
    chain = sorted(samples_of(conn, "seeds-evol-instruct"), key=lambda s: s["origin"]["round"])
    assert [s["origin"]["complexity_score"] for s in chain] == [3, 2, 5]
    assert all(s["origin"]["complexity_scores"] == [1, 3, 2, 5] and s["origin"]["complexity_scale"] == [1, 5]
               for s in chain)
    j = rows(conn, "SELECT sample_id, rubric, scores FROM judgments ORDER BY sample_id")
    assert [(x["sample_id"], x["rubric"], x["scores"]) for x in j] == [
        (s["id"], "deita-complexity", {"complexity": c}) for s, c in zip(chain, [3, 2, 5])]
    failed = next(i for i in items_of(conn, job["id"]) if i["status"] == "failed")
    assert failed["sample_id"] == ids[1] and failed["raw"] == replies["Name a color"]
    assert [r[0] for r in conn.execute("SELECT score FROM sample_scores WHERE rubric = 'deita-complexity' "
                                       "ORDER BY sample_id")] == [3, 2, 5]
