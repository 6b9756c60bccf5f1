"""Near-duplicate clusters: planted copies found, hard negatives kept apart, keep-best applied and undone."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from workbench import dedup, importer, scores
from workbench.samples import insert_samples
from workbench.store import ensure_dataset, transaction

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import bench_dedup  # noqa: E402  (the generator the benchmark measures with)

ALL = ("instruction", "input", "response")


def add(conn, rows, name="d", kind="sft"):
    with transaction(conn):
        did = ensure_dataset(conn, name, kind)
        first, last = insert_samples(conn, did, rows)
    return list(range(first, last + 1))


def row(instruction, response="", input="", **kw):
    return {"instruction": instruction, "input": input, "response": response, **kw}


def test_planted_copies_precision_and_recall(db_path, conn):
    truth, kinds = bench_dedup.build_store(db_path, 6000, seed=3, copy_rate=0.08, negative_rate=0.1)
    assert all(kinds.get(k, 0) > 20 for k in ("copy-exact", "copy-surface", "copy-typos", "copy-words",
                                             "neg-template", "neg-prompt"))
    clusters = dedup.find_clusters(conn, fields=ALL, threshold=0.9)
    precision, recall, found, planted = bench_dedup.pair_scores(clusters, truth)
    assert planted > 400
    assert precision >= 0.99, (precision, found, planted)
    assert recall >= 0.99, (recall, found, planted)


def test_same_prompt_different_response_is_a_duplicate_only_by_prompt(conn):
    prompt = "Write a short story about a lighthouse keeper who finds a message in a bottle."
    ids = add(conn, [row(prompt, "The keeper, Ana, found the bottle on a grey morning and read it twice."),
                     row(prompt, "Storms had battered the coast for a week when Tomas saw something glint."),
                     row("Write a short story about a lighthouse keeper who finds a mesage in a bottle!",
                         "The keeper, Ana, found the bottle on a grey morning and read it twice.")])
    assert dedup.find_clusters(conn, fields=("instruction", "input")) == [ids]
    assert dedup.find_clusters(conn, fields=ALL) == [[ids[0], ids[2]]]


def test_same_template_different_content_stays_apart(conn):
    add(conn, [row("Translate 'The weather is lovely today' into French."),
               row("Translate 'Where is the train station?' into French."),
               row("Translate 'I would like a cup of coffee' into French."),
               row("Classify the sentiment of this review: the battery died in a day."),
               row("Classify the sentiment of this review: best headphones I have owned.")])
    assert dedup.find_clusters(conn, threshold=0.9) == []


def test_edits_at_both_ends_and_in_the_middle_are_found(conn):
    base = ("Explain how photosynthesis converts sunlight, water and carbon dioxide into glucose and oxygen, "
            "and why chlorophyll looks green to the human eye")
    copies = ["Explian how photosynthesis converts sunlight, water and carbon dioxide into glucose and oxygen, "
              "and why chlorophyll looks green to the human eyes",                          # both ends
              "explain how photosynthesis converts sunlight water and carbon dioxide into glucose and oxygen "
              "and why chlorophyll looks green to the human eye?!",                         # case + punctuation
              "Explain how photosynthesis turns sunlight, water and carbon dioxide into glucose and oxygen, "
              "and why chlorophyll looks green to the human eye"]                            # a word in the middle
    ids = add(conn, [row(base)] + [row(c) for c in copies] + [row("Explain how a refrigerator moves heat out.")])
    assert dedup.find_clusters(conn) == [ids[:4]]


def test_short_and_non_latin_texts(conn):
    ids = add(conn, [row("What is up?"), row("what is up"), row("Whats up"),
                     row("请写一首关于秋天的诗"), row("请写一首关于秋天的短诗"), row("请写一首关于春天的歌"),
                     row("Wie heißt die Hauptstadt von Österreich?"), row("Wie heisst die Hauptstadt von Österreich"),
                     row("")])
    clusters = dedup.find_clusters(conn, threshold=0.85)
    assert [ids[0], ids[1], ids[2]] in clusters
    assert [ids[3], ids[4]] in clusters
    assert [ids[6], ids[7]] in clusters
    assert all(ids[5] not in c and ids[8] not in c for c in clusters)


def test_exact_duplicates_from_import_join_the_view(conn):
    ids = add(conn, [row("Name three primary colours.", "Red, blue and yellow."),
                     row("Name three primary colours.", "Red, blue and yellow."),
                     row("Name three primary colors", "Red, blue and yellow."),
                     row("Name the planets of the solar system.", "Mercury, Venus, Earth, ...")])
    assert conn.execute("SELECT dup_of FROM samples WHERE id = ?", (ids[1],)).fetchone()[0] == ids[0]
    [cluster] = dedup.describe(conn, dedup.find_clusters(conn, fields=ALL), ALL)
    assert [m.id for m in cluster.members] == ids[:3]
    assert [m.exact for m in cluster.members] == [True, True, False]
    assert cluster.kind == "near"
    assert 0.9 <= cluster.members[2].similarity < 1.0


def test_text_datasets_compare_their_text(conn):
    para = "Ownership is a set of rules that govern how a Rust program manages memory."
    ids = add(conn, [{"response": para}, {"response": para.replace("govern", "governs")},
                     {"response": "Variables are immutable by default."}], name="book", kind="text")
    assert dedup.default_fields("text") == ("response",)
    assert dedup.find_clusters(conn, ["book"], fields=("response",)) == [ids[:2]]


def test_rejected_rows_and_other_datasets_are_out_of_scope(conn):
    a = add(conn, [row("Summarize the plot of Hamlet in two sentences.")] * 2, name="a")
    b = add(conn, [row("Summarize the plot of Hamlet in two sentences.")], name="b")
    conn.execute("UPDATE samples SET status = 'rejected' WHERE id = ?", (a[1],))
    assert dedup.find_clusters(conn, ["a"]) == []
    assert dedup.find_clusters(conn) == [[a[0], b[0]]]
    with pytest.raises(KeyError):
        dedup.find_clusters(conn, ["nope"])


def test_fastchat_sharegpt_forms_near_duplicate_clusters_without_exact_ones(conn, shared_data):
    res = importer.import_file(conn, shared_data / "fastchat-sharegpt" / "dummy_conversation.json")
    assert res.rows == 500 and res.duplicates == 0
    stats = dedup.Stats()
    clusters = dedup.describe(conn, dedup.find_clusters(conn, fields=ALL, stats=stats), ALL)
    assert stats.exact_rows == 0
    assert len(clusters) >= 30
    assert all(c.kind == "near" and not any(m.exact for m in c.members) for c in clusters)
    # connected components: every member is >= threshold similar to some other member (not always the keeper)
    texts = dedup.fetch_texts(conn, [m.id for c in clusters for m in c.members], ALL)
    for c in clusters:
        for m in c.members:
            assert max(dedup._similarity(texts[m.id], texts[o.id]) for o in c.members if o is not m) >= 0.9
    # prompts alone: the templated user turns collapse into far fewer, larger clusters
    by_prompt = dedup.find_clusters(conn)
    assert sum(map(len, by_prompt)) > sum(len(c.members) for c in clusters)


def test_cli_json_lists_ids_and_source_lines(cli, conn):
    ids = add(conn, [row("Give me a recipe for pancakes.", source_line=10),
                     row("Give me a recipe for pancakes!", source_line=11),
                     row("Give me a recipe for waffles with fresh berries.", source_line=12),
                     row("Give me a recipe for waffles with fresh berries", source_line=13)])
    code, out, err = cli("dedup", "--dataset", "d", "--json")
    assert code == 0, err
    clusters = json.loads(out)
    assert [[m["id"] for m in c] for c in clusters] == [ids[:2], ids[2:]]
    assert [[m["line"] for m in c] for c in clusters] == [[10, 11], [12, 13]]
    assert all({"dataset", "status", "score", "keep", "similarity"} <= set(m) for c in clusters for m in c)


def test_keep_best_apply_then_undo(cli, conn):
    ids = add(conn, [row("List five fruits that are high in vitamin C."),
                     row("List five fruits that are high in vitamin C"),
                     row("List 5 fruits that are high in vitamin C."),
                     row("Write a limerick about a cat who learns to code."),
                     row("Write a limerick about a cat who learns to code!!"),
                     row("Write a limerick about a dog.")])
    with transaction(conn):
        scores.record(conn, ids[1], "judge", 8.5, (1, 10))
        scores.record(conn, ids[0], "judge", 6, (1, 10))
        scores.record(conn, ids[0], "curate", 5, (1, 5))     # curate would keep ids[0]: the rubric is named
    conn.execute("UPDATE samples SET status = 'accepted' WHERE id = ?", (ids[4],))
    code, out, err = cli("dedup", "--dataset", "d", "--threshold", "0.85", "--rubric", "judgee")
    assert code == 2 and "--rubric judgee: nothing is scored on it; rubrics present: curate, judge" in err
    code, out, err = cli("dedup", "--dataset", "d", "--threshold", "0.85", "--json")
    assert json.loads(out)[0][0] == {**json.loads(out)[0][0], "rubric": "curate", "score": 5, "keep": True}
    code, out, err = cli("dedup", "--dataset", "d", "--threshold", "0.85", "--apply", "keep-best", "--rubric", "judge")
    assert code == 0, err
    assert "keep #2 judge 8.5" in out
    status = dict(conn.execute("SELECT id, status FROM samples"))
    # best score kept; no scores: the earliest kept; a curator's accept is never overturned
    assert [status[i] for i in ids] == ["rejected", "pending", "rejected", "pending", "accepted", "pending"]
    assert "left 1 accepted rows" in out
    run = out.split("as run ")[1].split()[0]
    logged = conn.execute("SELECT sample_id, action, before, after, reason, session FROM decisions ORDER BY id").fetchall()
    assert [(r[0], r[1], json.loads(r[2]), json.loads(r[3]), r[5]) for r in logged] == [
        (ids[0], "dedup", {"status": "pending"}, {"status": "rejected"}, run),
        (ids[2], "dedup", {"status": "pending"}, {"status": "rejected"}, run)]
    assert logged[0][4] == f"duplicate of #{ids[1]}"

    code, out, err = cli("clean", "--undo", run)
    assert code == 0, err
    assert "undid 2 rows" in out
    assert all(s != "rejected" for s in dict(conn.execute("SELECT id, status FROM samples")).values())
    assert conn.execute("SELECT count(*) FROM decisions").fetchone()[0] == 4     # appended, nothing deleted
    assert conn.execute("SELECT count(*) FROM decisions WHERE action = 'undo' AND undoes IS NOT NULL").fetchone()[0] == 2


def test_cli_rejects_bad_threshold_and_fields(cli, conn):
    add(conn, [row("x y z")])
    code, _, err = cli("dedup", "--threshold", "1.5")
    assert code == 2 and "threshold" in err
    code, _, err = cli("dedup", "--fields", "instruction,output")
    assert code == 2 and "output" in err
    code, _, err = cli("dedup", "--dataset", "missing")
    assert code == 2 and "missing" in err
