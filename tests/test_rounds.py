"""Humpback rounds read back: the `round` filter (CLI, jobs), Browse's `round:K` query and round column, Balance's
per-round counts, and `agreement` per round (curate read with each round's own verdict; rows in no round reported
as such, never as round 1). The rows are made by the real tasks against the test server."""
from __future__ import annotations

import json

import pytest

from llm_server import LLMServer
from taskkit import add_dataset, between, config_for, last_user, run, samples_of
from workbench import agreement, browse, rounds, scores
from workbench.filters import FilterError, iter_filtered, parse_filter
from workbench.store import dataset_id

TEXTS = [f"Segment about topic t{i}: " + f"facts about topic t{i} explained at length. " * 8 for i in range(4)]
# the curator's score of each candidate in round 1 and round 2
SCORES = {"t0": [5, 5], "t1": [5, 4], "t2": [3, 3], "t3": [2, 5]}


@pytest.fixture
def humpback(conn, db_path):
    """cands: 4 pairs made by backtranslate round 1, curated in rounds 1 and 2, plus a row in no round (an imported
    pair with a legacy curate score) and an evol-instruct row whose lineage says round 2 (an evolution depth, not a
    Humpback round); cands2: 4 pairs made by backtranslate round 2."""
    add_dataset(conn, "seeds", [{"instruction": "Seed question A?", "response": "Seed answer A."}])
    add_dataset(conn, "web", [{"instruction": "", "response": t} for t in TEXTS])
    asked: dict[str, int] = {}

    def reply(messages, body):
        prompt = last_user(messages)
        if "Score: N" in prompt:
            key = between(prompt, "User's request:").split()[-1].rstrip("?")
            n = asked[key] = asked.get(key, 0) + 1
            return f"Reasons.\nScore: {SCORES[key][n - 1]}"
        text = prompt.rsplit("<<<\n", 1)[1].split("\n>>>")[0]
        return f"What do you know about {text.split(':')[0].split()[-1]}?"

    with LLMServer(reply=reply) as srv:
        cfg = config_for(srv)
        run(conn, db_path, "backtranslate", config=cfg, dataset="web", into="cands",
            params={"seed_dataset": "seeds", "num_examples": 1})
        run(conn, db_path, "curate", config=cfg, dataset="cands", params={"seed_dataset": "seeds", "num_examples": 1})
        run(conn, db_path, "curate", config=cfg, dataset="cands", params={"round": 2, "num_examples": 1})
        run(conn, db_path, "backtranslate", config=cfg, dataset="web", into="cands2",
            params={"seed_dataset": "cands", "round": 2, "num_examples": 1})
    legacy, evol = add_dataset(conn, "cands", [
        {"instruction": "An imported question?", "response": "An imported answer.",
         "metadata": {"curation": {"score": 4, "kept": False, "threshold": 4.5}}},
        {"instruction": "An evolved question?", "response": "An evolved answer.",
         "origin": {"task": "evol-instruct", "round": 2}}])
    scores.record(conn, legacy, "curate", 4, (1, 5), judge="old-judge")
    conn.commit()
    ids = {s["instruction"].split()[-1].rstrip("?"): s["id"] for s in samples_of(conn, "cands")}
    return {**ids, "legacy": legacy, "evol": evol}


def _decide(cli, db_path, ids, how):
    code, out, err = cli("decide", "--db", str(db_path), "--dataset", "cands", "--ids", ",".join(map(str, ids)), how)
    assert code == 0, err


def test_rounds_of_rows_and_filters(conn, humpback):
    h = humpback
    got = rounds.of_samples(conn, [h["t0"], h["t3"], h["legacy"], h["evol"]])
    assert got == {h["t0"]: (1, 2), h["t3"]: (1, 2), h["legacy"]: (), h["evol"]: ()}
    cands = dataset_id(conn, "cands")
    in_1 = [s["id"] for s in iter_filtered(conn, cands, parse_filter(["round=1"]))]
    in_2 = [s["id"] for s in iter_filtered(conn, cands, parse_filter(["round=2"]))]
    none = [s["id"] for s in iter_filtered(conn, cands, parse_filter(["round=none"]))]
    four = sorted(h[k] for k in ("t0", "t1", "t2", "t3"))
    assert in_1 == four and in_2 == four        # curated in both rounds
    assert none == [h["legacy"], h["evol"]]      # never merged into round 1
    assert [s["id"] for s in iter_filtered(conn, cands, parse_filter(["round=3"]))] == []
    c2 = dataset_id(conn, "cands2")
    assert len(list(iter_filtered(conn, c2, parse_filter(["round=2"])))) == 4
    assert list(iter_filtered(conn, c2, parse_filter(["round=1"]))) == []
    for bad in ("0", "-1", "1.5", "2..3", "one", "", "1,2", "r2", " "):
        with pytest.raises(FilterError, match="round"):
            parse_filter([f"round={bad}"])


def test_round_counts_per_dataset_and_status(conn, humpback, cli, db_path):
    _decide(cli, db_path, [humpback["t0"]], "--accept")
    c = rounds.counts(conn, [dataset_id(conn, "cands")])
    assert c == {"1": {"accepted": 1, "pending": 3}, "2": {"accepted": 1, "pending": 3}, "none": {"pending": 2}}
    both = rounds.counts(conn, [dataset_id(conn, "cands"), dataset_id(conn, "cands2")])
    assert both["2"] == {"accepted": 1, "pending": 7} and both["1"] == {"accepted": 1, "pending": 3}
    every = rounds.counts(conn)
    assert every["none"] == {"pending": 2 + 1 + 4}   # + the seed and the 4 unlabeled segments


def test_browse_query_round(conn, humpback):
    ds = {n: i for i, n in conn.execute("SELECT id, name FROM datasets")}
    present = scores.rubrics(conn)
    flt = browse.parse_query("round:none", ds, ds["cands"], present)
    assert [r.id for r in browse.page(conn, flt)] == [humpback["legacy"], humpback["evol"]]
    flt = browse.parse_query("round:2 dataset:*", ds, ds["cands"], present)
    rows = browse.page(conn, flt)
    assert len(rows) == 8 and browse.count(conn, flt) == 8
    assert {r.rounds for r in rows} == {(1, 2), (2,)}
    flt = browse.parse_query("round:2 score:curate=5", ds, ds["cands"], present)
    assert sorted(r.id for r in browse.page(conn, flt)) == sorted([humpback["t0"], humpback["t3"]])
    for bad in ("round:0", "round:x", "round:", "round:1..2", "round:2.0"):
        with pytest.raises(ValueError, match="round"):
            browse.parse_query(bad, ds, ds["cands"], present)


def test_agreement_per_round(conn, humpback, cli, db_path):
    h = humpback
    _decide(cli, db_path, [h["t0"], h["t1"]], "--accept")
    _decide(cli, db_path, [h["t2"], h["t3"], h["legacy"]], "--reject")
    # the stored curate score is round 2's: t0 5, t1 4 accepted; t2 3, t3 5, legacy 4 rejected
    res = agreement.agreement(conn, "cands", "curate", by_round=True)
    assert res["n"] == 5
    by = {r["round"]: r for r in res["rounds"]}
    assert set(by) == {1, 2, None}
    # round 1's own verdicts (5, 5 accepted; 3, 2 rejected) separate perfectly; round 2's do not
    assert by[1]["n"] == 4 and by[1]["auc"] == 1.0
    assert by[2]["n"] == 4 and by[2]["auc"] == pytest.approx(2.5 / 4)
    assert by[None]["n"] == 1 and by[None]["accepted"] == 0 and by[None]["unreliable"]
    one = agreement.agreement(conn, "cands", "curate", round_=1)
    assert one["round"] == 1 and [b["score"] for b in one["buckets"]] == [2, 3, 5]
    assert "of round 1" in one["note"]
    none = agreement.agreement(conn, "cands", "curate", round_="none")
    assert none["round"] is None and none["n"] == 1
    # the CLI: --round, --json keys, and the text table naming "none"
    code, out, _ = cli("agreement", "--db", str(db_path), "--dataset", "cands", "--rubric", "curate", "--json")
    data = json.loads(out)
    assert code == 0 and [r["round"] for r in data["rounds"]] == [1, 2, None]
    code, out, _ = cli("agreement", "--db", str(db_path), "--dataset", "cands", "--rubric", "curate")
    assert code == 0 and "per Humpback round" in out
    assert any(line.split()[:2] == ["none", "1"] for line in out.splitlines())
    code, out, _ = cli("agreement", "--db", str(db_path), "--dataset", "cands", "--rubric", "curate",
                       "--round", "2", "--json")
    assert code == 0 and json.loads(out)["round"] == 2 and json.loads(out)["auc"] == pytest.approx(0.625)
    for bad in ("0", "two", "1-2"):
        code, out, err = cli("agreement", "--db", str(db_path), "--dataset", "cands", "--rubric", "curate",
                             "--round", bad)
        assert code == 2 and "round" in err and "Traceback" not in err


def test_agreement_without_rounds_prints_no_round_table(conn, cli, db_path):
    ids = add_dataset(conn, "plain", [{"instruction": f"q{i}", "response": f"a{i}"} for i in range(3)])
    for i, sid in enumerate(ids):
        scores.record(conn, sid, "judge", 3 + 3 * i, (1, 10), judge="j")
    conn.commit()
    code, out, err = cli("decide", "--db", str(db_path), "--dataset", "plain", "--ids", f"{ids[0]}", "--reject")
    assert code == 0, err
    code, out, _ = cli("agreement", "--db", str(db_path), "--dataset", "plain", "--rubric", "judge")
    assert code == 0 and "per Humpback round" not in out
    code, out, _ = cli("agreement", "--db", str(db_path), "--dataset", "plain", "--rubric", "judge", "--json")
    assert [r["round"] for r in json.loads(out)["rounds"]] == [None]


async def test_balance_splits_by_round(conn, humpback, cli, db_path):
    """The real app: r turns the split on (rows per round), then shows one round at a time, then rows in none."""
    from pilotkit import wait_for
    from workbench.app import WorkbenchApp

    _decide(cli, db_path, [humpback["t0"], humpback["t1"]], "--accept")
    _decide(cli, db_path, [humpback["t2"], humpback["t3"]], "--reject")
    app = WorkbenchApp(db=db_path, screen="balance")
    async with app.run_test(size=(100, 60)) as pilot:
        await wait_for(pilot, lambda: type(app.screen).__name__ == "BalanceScreen" and app.screen.refreshes >= 1)
        screen = app.screen

        def bars(dim):
            return {b.label: b.count for b in screen.query_one(f"#hist-{dim}").bars}

        assert screen.query_one("#hist-round").has_class("hidden")
        total = sum(bars("status").values())
        await pilot.press("r")
        await wait_for(pilot, lambda: screen.round == "all" and screen.round_counts is not None
                       and not screen.query_one("#hist-round").has_class("hidden"))
        assert bars("round") == {"round 1": 4, "round 2": 8, "(no round)": total - 8}
        assert sum(bars("status").values()) == total
        await pilot.press("r")
        await wait_for(pilot, lambda: screen.round == 1 and sum(bars("status").values()) == 4)
        assert bars("status") == {"pending": 0, "accepted": 2, "rejected": 2}
        # the score histogram within round 1 is round 1's own curate verdicts: 5, 5, 3, 2
        assert bars("score") == {"2": 1, "3": 1, "4": 0, "5": 2}
        assert screen.agreement["round"] == 1 and screen.agreement["auc"] == 1.0
        assert "round 1" in str(screen.query_one("#status").render())
        await pilot.press("a")                                   # accepted only, within the round
        assert bars("status") == {"accepted": 2} and bars("round")["round 1"] == 2
        await pilot.press("a")
        await pilot.press("r")
        await wait_for(pilot, lambda: screen.round == 2 and sum(bars("status").values()) == 8)
        assert bars("score") == {"3": 1, "4": 1, "5": 2, "unscored": 4}   # cands2's rows: made in round 2, not curated
        await pilot.press("r")
        await wait_for(pilot, lambda: screen.round == "none" and sum(bars("status").values()) == total - 8)
        assert "no round" in str(screen.query_one("#status").render())
        await pilot.press("r")
        await wait_for(pilot, lambda: screen.round is None and screen.query_one("#hist-round").has_class("hidden")
                       and sum(bars("status").values()) == total)


async def test_browse_filters_and_shows_rounds(conn, humpback, db_path):
    """The real app: `round:2` in Browse's query bar keeps round 2's rows, the round column names each row's rounds,
    `round:none` the rows in no round, and a bad round is refused in the form."""
    from pilotkit import wait_for
    from workbench.app import WorkbenchApp

    app = WorkbenchApp(db=db_path, dataset="cands", screen="browse")
    async with app.run_test(size=(120, 30)) as pilot:
        await wait_for(pilot, lambda: type(app.screen).__name__ == "BrowseScreen" and hasattr(app.screen, "table"))
        screen, table = app.screen, app.screen.table
        await wait_for(pilot, lambda: table.rows and screen.total == 6)
        assert "round" in [c.title for c in table.columns]
        col = [c.title for c in table.columns].index("round")
        assert {r.data.id: r.cells[col] for r in table.rows}[humpback["t0"]] == "1,2"
        await pilot.press("slash", *"round:2 dataset:*", "enter")
        await wait_for(pilot, lambda: screen.total == 8 and not table.fetching and len(table.rows) == 8)
        assert sorted(r.cells[col] for r in table.rows) == ["1,2"] * 4 + ["2"] * 4
        await pilot.press("slash", *["backspace"] * 30, *"round:none", "enter")
        await wait_for(pilot, lambda: screen.total == 2 and not table.fetching)
        assert {r.data.id for r in table.rows} == {humpback["legacy"], humpback["evol"]}
        assert all(r.cells[col] == "" for r in table.rows)
        await pilot.press("slash", *["backspace"] * 30, *"round:0", "enter")
        error = screen.query_one("#error")
        assert error.display and "round" in str(error.render())
