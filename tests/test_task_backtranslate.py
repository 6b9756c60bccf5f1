"""Instruction backtranslation from a plain text file to curated pairs in the store, through the CLI as a user runs it:
`workbench import FILE --format text`, `workbench run backtranslate ... --wait`, `workbench run curate ... --wait`,
then a second round seeded with the curated pairs."""
from __future__ import annotations

import re

from llm_server import LLMServer
from taskkit import between, config_for, items_of, last_user, rows, samples_of, scores_of
from workbench.config import save_config

BOOK_FILE = "rust-book-paragraphs/original/ch03-04-comments.md"


def backtranslate_reply(messages, body):
    prompt = last_user(messages)
    if "Rate the answer" in prompt:                        # the curator
        answer = between(prompt, "Answer:")
        if len(answer) < 120:
            return "Too fragmentary to be a useful answer.\nScore: 2"
        if "slashes" in answer:
            return "Reads like a textbook page rather than an assistant, but complete.\nScore: 4"
        return "Clear, focused, expert.\nScore: 5"
    # the backward model: the request the last <<<answer>>> block answers
    answer = prompt.rsplit("<<<\n", 1)[1].split("\n>>>")[0]
    if "idiomatic comment style" in answer:
        return ""                                           # an empty reply: an item error, not an empty row
    words = re.findall(r"[A-Za-z]+", answer)[:6]
    return "Request: Explain " + " ".join(words).lower() + "."


def test_text_file_to_curated_pairs(cli, conn, shared_data):
    path = shared_data / BOOK_FILE
    segments_expected = [p for p in re.split(r"\n\s*\n", path.read_text(encoding="utf-8")) if p.strip()]
    code, out, err = cli("import", str(path), "--format", "text", "--dataset", "book")
    assert code == 0, err
    book = samples_of(conn, "book")
    assert len(book) == len(segments_expected)
    assert all(s["instruction"] == "" and s["response"] for s in book)

    with LLMServer(reply=backtranslate_reply) as srv:
        save_config(config_for(srv))
        code, out, err = cli("run", "backtranslate", "--dataset", "book", "--endpoint", "test-model",
                             "--into", "book-pairs", "--param", "min_chars=40", "--wait")
        assert code == 1 and "1 failed" in err, err          # --wait exits 1 when an item failed
        bt_bodies = list(srv.stats.bodies)
        code, out, err = cli("run", "curate", "--dataset", "book-pairs", "--endpoint", "test-model", "--wait")
        assert code == 0, err

        # round 2: the curated pairs seed the backward model's prompt
        code, out, err = cli("run", "backtranslate", "--dataset", "book", "--endpoint", "test-model",
                             "--into", "book-pairs-2", "--param", "seed_dataset=book-pairs",
                             "--param", "seed_min_score=curate=4.5", "--param", "num_examples=2",
                             "--param", "min_chars=40", "--filter", "limit=3", "--wait")
        assert code == 0, err
        round2 = srv.stats.bodies[len(bt_bodies) + len(samples_of(conn, "book-pairs")):]

    # the paper's decoding: T=0.7, top_p=0.9
    assert all(b["temperature"] == 0.7 and b["top_p"] == 0.9 for b in bt_bodies)

    pairs = samples_of(conn, "book-pairs")
    by_parent = {s["id"]: s for s in book}
    bt_job = rows(conn, "SELECT * FROM jobs WHERE kind = 'backtranslate' ORDER BY id")[0]
    short = sum(1 for s in book if len(s["response"]) < 40)
    assert short and bt_job["drop_reasons"] == {"segment too short": short}
    assert bt_job["failed"] == 1                              # the empty reply
    failed = [i for i in items_of(conn, bt_job["id"]) if i["status"] == "failed"]
    assert "empty reply" in failed[0]["error"]
    assert len(pairs) == len(book) - short - 1
    for p in pairs:
        parent = by_parent[p["parent_id"]]
        assert p["response"].encode() == parent["response"].encode()     # the text is the response, byte-equal
        assert p["instruction"].startswith("Explain ") and not p["instruction"].startswith("Request")
        assert p["origin"]["task"] == "backtranslate" and p["origin"]["template"] == "backtranslate"
        assert p["origin"]["template_version"] == "1" and p["origin"]["method"] == "self-augmentation"
        assert p["job_id"] == bt_job["id"]

    # curation: scores in the store, the kept flag, and a judgment per pair
    kept = [p for p in pairs if p["metadata"] and p["metadata"]["curation"]["kept"]]
    assert kept and all(scores_of(conn, p["id"]) == {"curate": 5} for p in kept)
    assert all(scores_of(conn, p["id"])["curate"] in (2, 4, 5) for p in pairs)
    cur_job = rows(conn, "SELECT * FROM jobs WHERE kind = 'curate'")[0]
    assert cur_job["kept"] == len(kept) and cur_job["dropped"] == len(pairs) - len(kept)
    assert rows(conn, "SELECT count(*) AS n FROM judgments WHERE rubric = 'curate'")[0]["n"] == len(pairs)

    # round 2 showed curated pairs (score >= 4.5) as examples, reversed: answer first, then its request
    prompts = [b["messages"][-1]["content"] for b in round2]
    assert prompts and all("Examples of answers" in p for p in prompts)
    kept_insts = {p["instruction"] for p in kept}
    shown = {line[len("Request: "):] for p in prompts for line in p.splitlines() if line.startswith("Request: ")}
    assert shown and shown <= kept_insts
    second = samples_of(conn, "book-pairs-2")
    assert second and all(s["origin"]["seed_examples"] for s in second)
