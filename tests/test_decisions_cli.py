"""`workbench samples`, `decide`, `spotcheck` and `agreement`: real subprocesses on a real store, as a script uses
them; the agreement figures are checked against arithmetic done by hand in the comments."""
from __future__ import annotations

import json
import subprocess
import sys

import orjson
import pytest

from workbench import review, scores
from workbench.samples import insert_samples
from workbench.store import ensure_dataset, open_store, transaction


def wb(db, *argv, stdin: str | None = None):
    return subprocess.run([sys.executable, "-m", "workbench", "--db", str(db), *argv], capture_output=True, text=True,
                          input=stdin)


def make(db, name: str, n: int) -> list[int]:
    conn = open_store(db)
    with transaction(conn):
        did = ensure_dataset(conn, name)
        first, last = insert_samples(conn, did, [{"instruction": f"{name} q{i}", "response": f"a{i}"}
                                                 for i in range(n)])
    conn.close()
    return list(range(first, last + 1))


def snapshot(db) -> tuple:
    c = open_store(db)
    try:
        return (c.execute("SELECT id, status FROM samples ORDER BY id").fetchall(),
                c.execute("SELECT * FROM decisions ORDER BY id").fetchall())
    finally:
        c.close()


# --- samples ----------------------------------------------------------------------------------------------

def test_samples_json_lists_scores_with_scales_stale_flags_and_candidates(db_path):
    ids = make(db_path, "d", 3)
    conn = open_store(db_path)
    with transaction(conn):
        scores.record(conn, ids[0], "curate", 4, (1, 5), judge="m-cur", template_version="2")
        scores.record(conn, ids[0], "judge", 7, (1, 10), judge="m-j")
        scores.record(conn, ids[1], "judge", 3, (1, 10))
        cid = conn.execute("INSERT INTO candidates (sample_id, model, endpoint, response, created_at) "
                           "VALUES (?, 'model-a', 'ep', 'cand \x1b[2J text', 'now')", (ids[0],)).lastrowid
        conn.execute("INSERT INTO judgments (sample_id, candidate_id, judge, rubric, rubric_version, scores, overall, "
                     "created_at) VALUES (?, ?, 'j', 'preference-rate', '1', '{\"honesty\": 4}', 4.5, 'now')",
                     (ids[0], cid))
    review.edit(conn, ids[1], {"response": "edited"}, "review:t")
    conn.close()
    p = wb(db_path, "samples", "--dataset", "d", "--json")
    assert p.returncode == 0, p.stderr
    rows = json.loads(p.stdout)
    assert [r["id"] for r in rows] == ids
    first = rows[0]
    assert first["status"] == "pending" and first["instruction"] == "d q0" and first["response"] == "a0"
    assert {(s["rubric"], s["score"], tuple(s["scale"]), s["stale"]) for s in first["scores"]} == {
        ("curate", 4, (1, 5), False), ("judge", 7, (1, 10), False)}
    assert first["stale"] is False
    assert [(c["model"], c["text"]) for c in first["candidates"]] == [("model-a", "cand \x1b[2J text")]
    assert first["candidates"][0]["scores"] == [{"rubric": "preference-rate", "score": 4.5, "scale": [1, 5],
                                                 "judge": "j", "dimensions": {"honesty": 4}}]
    assert rows[1]["stale"] is True and rows[1]["scores"][0]["stale"] is True
    assert rows[2]["scores"] == [] and rows[2]["candidates"] == []
    # filters name the rubric; stale scores are left out unless asked for
    p = wb(db_path, "samples", "--dataset", "d", "--filter", "max_score=judge=5", "--json")
    assert json.loads(p.stdout) == []
    p = wb(db_path, "samples", "--dataset", "d", "--max-score", "judge=5", "--include-stale", "--json")
    assert [r["id"] for r in json.loads(p.stdout)] == [ids[1]]
    p = wb(db_path, "samples", "--dataset", "d", "--min-score", "curate=4", "--min-score", "judge=7", "--json")
    assert [r["id"] for r in json.loads(p.stdout)] == [ids[0]]
    p = wb(db_path, "samples", "--dataset", "d", "--limit", "2", "--json")
    assert len(json.loads(p.stdout)) == 2
    # the text listing never lets a candidate's control sequence reach the terminal
    p = wb(db_path, "samples", "--dataset", "d")
    assert p.returncode == 0 and "\x1b" not in p.stdout and "curate 4/5 · judge 7/10" in p.stdout


@pytest.mark.parametrize("argv, message", [
    (["--filter", "min_score=4"], "name the rubric"),
    (["--min-score", "4.5"], "rubrics present: judge"),
    (["--filter", "max_score=curate=3"], "no sample in scope has a 'curate' score"),
    (["--filter", "min_score=judge=11"], "outside judge's scale 1-10"),
    (["--filter", "score=4"], "unknown filter key 'score'"),
])
def test_samples_refuses_unreadable_filters(db_path, cli, argv, message):
    ids = make(db_path, "d", 2)
    conn = open_store(db_path)
    with transaction(conn):
        scores.record(conn, ids[0], "judge", 7, (1, 10))
    conn.close()
    code, out, err = cli("samples", "--dataset", "d", *argv, "--json", "--db", str(db_path))
    # with --json the error is JSON on stdout too (issue 16), and never a partial result
    assert code == 2 and message in err and json.loads(out) == {"error": err[len("error: "):].strip(), "exit": 2}, err


# --- decide -----------------------------------------------------------------------------------------------

def test_decide_records_decisions_as_the_review_keys_do(db_path, tmp_path):
    ids = make(db_path, "d", 5)
    p = wb(db_path, "decide", "--dataset", "d", "--ids", f"{ids[0]},{ids[1]}", "--accept", "--reason", "spot ok")
    assert p.returncode == 0, p.stderr
    f = tmp_path / "ids.txt"
    f.write_text(f"{ids[2]}\n\n{ids[3]}\n")
    p = wb(db_path, "decide", "--dataset", "d", "--ids-from", str(f), "--reject", "--json")
    assert p.returncode == 0, p.stderr
    assert [(d["sample_id"], d["after"]) for d in json.loads(p.stdout)] == [(ids[2], {"status": "rejected"}),
                                                                             (ids[3], {"status": "rejected"})]
    p = wb(db_path, "decide", "--dataset", "d", "--ids", str(ids[0]), "--reset")
    assert p.returncode == 0, p.stderr
    conn = open_store(db_path)
    status = dict(conn.execute("SELECT id, status FROM samples"))
    assert [status[i] for i in ids] == ["pending", "accepted", "rejected", "rejected", "pending"]
    log = conn.execute("SELECT sample_id, action, reason, session FROM decisions ORDER BY id").fetchall()
    assert log[:2] == [(ids[0], "accept", "spot ok", review.curator_session()),
                       (ids[1], "accept", "spot ok", review.curator_session())]
    assert [a for _, a, _, _ in log] == ["accept", "accept", "reject", "reject", "reset"]
    # the curator's undo (Review's u) walks back through them, newest first, appending rows
    assert review.undo(conn, review.curator_session())["undid"] == "reset"
    assert conn.execute("SELECT status FROM samples WHERE id = ?", (ids[0],)).fetchone()[0] == "accepted"
    assert conn.execute("SELECT count(*) FROM decisions").fetchone()[0] == 6


@pytest.mark.parametrize("argv, message", [
    (["--ids", "1,99"], "no sample with id 99 (nothing was decided)"),
    (["--ids", "1,6"], "--ids: sample 6 is not in dataset 'd' (nothing was decided)"),   # the other dataset's
    (["--ids", "1,x"], "--ids: 'x' is not a sample id"),
    (["--ids", "1,,2"], "--ids: '' is not a sample id"),
    (["--ids", "-1"], "'-1' is not a sample id"),
    (["--ids", "1.0"], "'1.0' is not a sample id"),
    (["--ids-from", "IDS"], "ids.txt line 3: 'two' is not a sample id"),          # a bad file: exit 1
    (["--ids-from", "MISSING"], "none.txt: cannot read: No such file or directory"),
    (["--ids-from", "UNKNOWN"], "unknown.txt line 2: no sample with id 99 (nothing was decided)"),
    (["--ids-from", "OTHER"], "other.txt line 3: sample 6 is not in dataset 'd'; 2 bad ids in all"),
    ([], "give --ids 1,2,3 or --ids-from FILE"),
])
def test_decide_bad_ids_change_nothing(db_path, tmp_path, cli, argv, message):
    make(db_path, "d", 5)
    make(db_path, "other", 1)
    assert cli("decide", "--dataset", "d", "--ids", "2", "--reject", "--db", str(db_path))[0] == 0
    (tmp_path / "ids.txt").write_text("1\n3\ntwo\n")
    (tmp_path / "unknown.txt").write_text("1\n99\n")
    (tmp_path / "other.txt").write_text("1\n\n6\n99\n")
    files = {"IDS": "ids.txt", "MISSING": "none.txt", "UNKNOWN": "unknown.txt", "OTHER": "other.txt"}
    from_file = "--ids-from" in argv
    argv = [str(tmp_path / files[a]) if a in files else a for a in argv]
    before = snapshot(db_path)
    code, out, err = cli("decide", "--dataset", "d", "--accept", *argv, "--db", str(db_path))   # the real main()
    assert code == (1 if from_file else 2) and message in err, err
    assert "Traceback" not in err and err.count("\n") == 1    # one clear line
    assert snapshot(db_path) == before


def test_decide_needs_exactly_one_action(db_path):
    make(db_path, "d", 1)
    p = wb(db_path, "decide", "--dataset", "d", "--ids", "1", "--accept", "--reject")
    assert p.returncode == 2 and "not allowed with argument" in p.stderr
    p = wb(db_path, "decide", "--dataset", "nope", "--ids", "1", "--accept")
    assert p.returncode == 2 and "no dataset named 'nope'" in p.stderr


# --- spot-check ---------------------------------------------------------------------------------------------

def scored_store(db, buckets: dict[float, int]) -> list[int]:
    """A dataset 'd' with, per judge score, that many pending samples."""
    total = sum(buckets.values())
    ids = make(db, "d", total)
    conn = open_store(db)
    with transaction(conn):
        it = iter(ids)
        for score, n in buckets.items():
            for _ in range(n):
                scores.record(conn, next(it), "judge", score, (1, 10))
    conn.close()
    return ids


def test_spotcheck_is_stratified_seeded_and_never_overwrites(db_path):
    # bucket 1: 3 samples -> round(0.3) = 0 -> at least 1; bucket 5 (5 and 5.5): 20 -> 2; bucket 9: 17 -> round(1.7) = 2
    ids = scored_store(db_path, {1: 3, 5: 10, 5.5: 10, 9: 17})
    p = wb(db_path, "spotcheck", "--dataset", "d", "--rubric", "judge", "--seed", "7", "--json")
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert res["name"] == "spotcheck-d-judge" and res["eligible"] == 40 and res["selected"] == 5
    assert [(b["bucket"], b["eligible"], b["selected"]) for b in res["buckets"]] == [(1, 3, 1), (5, 20, 2), (9, 17, 2)]
    conn = open_store(db_path)
    chosen = [r[0] for r in conn.execute("SELECT sample_id FROM selections WHERE name = 'spotcheck-d-judge'")]
    assert chosen == res["ids"] and len(set(chosen)) == 5
    by_score = {i: s for i, s in zip(ids, [1] * 3 + [5] * 10 + [5.5] * 10 + [9] * 17)}
    assert sorted(int(by_score[i]) for i in chosen) == [1, 5, 5, 9, 9]
    # the same seed gives the same selection; an existing name is kept unless --replace
    p = wb(db_path, "spotcheck", "--dataset", "d", "--rubric", "judge", "--seed", "7")
    assert p.returncode == 2 and "exists; give --name or --replace" in p.stderr
    p = wb(db_path, "spotcheck", "--dataset", "d", "--rubric", "judge", "--seed", "7", "--name", "again", "--json")
    assert json.loads(p.stdout)["ids"] == chosen
    p = wb(db_path, "spotcheck", "--dataset", "d", "--rubric", "judge", "--seed", "8", "--replace", "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["selected"] == 5


@pytest.mark.parametrize("argv, message", [
    (["--rubric", "curate"], "no sample in dataset 'd' has a 'curate' score; rubrics present: judge"),
    (["--rubric", "judge", "--fraction", "0"], "a share in (0, 1]"),
    (["--rubric", "judge", "--fraction", "1.5"], "a share in (0, 1]"),
])
def test_spotcheck_refusals(db_path, cli, argv, message):
    scored_store(db_path, {3: 2})
    code, out, err = cli("spotcheck", "--dataset", "d", *argv, "--db", str(db_path))
    assert code == 2 and message in err, err
    assert open_store(db_path).execute("SELECT count(*) FROM selections").fetchone()[0] == 0


def test_spotcheck_takes_only_pending_fresh_scores(db_path):
    ids = scored_store(db_path, {4: 3})
    conn = open_store(db_path)
    review.decide(conn, ids[0], "accept", "review:t")
    review.edit(conn, ids[1], {"response": "changed"}, "review:t")
    conn.close()
    res = json.loads(wb(db_path, "spotcheck", "--dataset", "d", "--rubric", "judge", "--fraction", "1",
                        "--json").stdout)
    assert res["ids"] == [ids[2]]


# --- agreement ------------------------------------------------------------------------------------------------

def agreement_store(db, curate_job_threshold: float | None = None) -> list[int]:
    """Curate scores and decisions, by hand:

        id   score  decision
        1    1      reject
        2    2      reject
        3    2      accept
        4    3      reject
        5    4      accept
        6    4      reject
        7    5      accept
        8    5      accept
    and samples that must NOT count: 9 (score 5) rejected by a clean filter (automatic); 10 (score 3) accepted then
    undone; 11 (score 4) accepted but edited after scoring (stale score); 12 (score 2) never decided; 13 has only
    a judge score and is accepted.
    """
    ids = make(db, "d", 13)
    conn = open_store(db)
    job = None
    with transaction(conn):
        if curate_job_threshold is not None:
            job = conn.execute("INSERT INTO jobs (kind, params, status, created_at) VALUES ('curate', ?, 'done', "
                               "'now')", (orjson.dumps({"task": {"threshold": curate_job_threshold}}).decode(),)
                               ).lastrowid
        for sid, score in zip(ids, (1, 2, 2, 3, 4, 4, 5, 5, 5, 3, 4, 2)):
            scores.record(conn, sid, "curate", score, (1, 5), job_id=job)
        scores.record(conn, ids[12], "judge", 9, (1, 10))
    conn.close()
    decide = {"accept": [3, 5, 7, 8, 11, 13], "reject": [1, 2, 4, 6]}
    for action, which in decide.items():
        assert wb(db, "decide", "--dataset", "d", "--ids", ",".join(str(ids[i - 1]) for i in which),
                  f"--{action}").returncode == 0
    assert wb(db, "decide", "--dataset", "d", "--ids", str(ids[9]), "--accept").returncode == 0
    conn = open_store(db)
    assert review.undo(conn, review.curator_session())["sample_id"] == ids[9]     # 10: accepted, then undone
    review.edit(conn, ids[10], {"response": "rewritten"}, "review:t")              # 11: its score is stale now
    with transaction(conn):   # 9: what a clean filter writes, an automatic rejection
        conn.execute("UPDATE samples SET status = 'rejected' WHERE id = ?", (ids[8],))
        conn.execute("INSERT INTO decisions (sample_id, action, before, after, session, created_at) VALUES "
                     "(?, 'filter', '{\"status\": \"pending\"}', '{\"status\": \"rejected\"}', 'filter-1', 'now')",
                     (ids[8],))
    conn.close()
    return ids


def test_agreement_matches_figures_computed_by_hand(db_path):
    agreement_store(db_path)
    p = wb(db_path, "agreement", "--dataset", "d", "--rubric", "curate", "--json")
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    # n = 8 (ids 1-8), 4 accepted
    assert (res["n"], res["accepted"]) == (8, 4)
    # per score: 1 -> 1 (0 acc), 2 -> 2 (1), 3 -> 1 (0), 4 -> 2 (1), 5 -> 2 (2)
    assert [(b["score"], b["n"], b["accepted"]) for b in res["buckets"]] == [(1, 1, 0), (2, 2, 1), (3, 1, 0),
                                                                             (4, 2, 1), (5, 2, 2)]
    assert [b["accept_rate"] for b in res["buckets"]] == [0, 0.5, 0, 0.5, 1]
    # AUC: sorted scores 1,2,2,3,4,4,5,5 get midranks 1, 2.5, 2.5, 4, 5.5, 5.5, 7.5, 7.5; accepted (2,4,5,5) rank
    # sum = 2.5 + 5.5 + 7.5 + 7.5 = 23; AUC = (23 - 4*5/2) / (4*4) = 13/16 = 0.8125
    # (pairwise: accepted 2 beats 1, ties 2 -> 1.5; 4 beats 1,2,3, ties 4 -> 3.5; each 5 beats all 4 -> 8; 13/16)
    assert res["auc"] == pytest.approx(0.8125)
    # accuracy of "accept when score >= t": t=1 4/8, t=2 5/8, t=3 5/8, t=4 6/8, t=5 6/8 -> best 4 (the lowest), 0.75
    assert (res["best_threshold"], res["accuracy"]) == (4, 0.75)
    # kappa at curate's default 4.5: predicted accept = {7, 8}; p_o = 6/8 = 0.75; p_pred = 2/8, p_true = 4/8;
    # p_e = 0.25*0.5 + 0.75*0.5 = 0.5; kappa = (0.75 - 0.5) / (1 - 0.5) = 0.5
    assert res["threshold"] == 4.5 and res["threshold_source"] == "curate's default threshold"
    assert res["kappa"] == pytest.approx(0.5)
    # at --threshold 2: predicted accept = all but id 1; p_o = 5/8; p_pred = 7/8; p_e = 7/8*1/2 + 1/8*1/2 = 0.5;
    # kappa = (0.625 - 0.5) / 0.5 = 0.25
    res2 = json.loads(wb(db_path, "agreement", "--dataset", "d", "--rubric", "curate", "--threshold", "2",
                         "--json").stdout)
    assert res2["kappa"] == pytest.approx(0.25) and res2["threshold_source"] == "--threshold"
    # 8 < 30 decided samples: still reported, flagged
    assert res["unreliable"] is True and "fewer than 30" in res["note"]
    p = wb(db_path, "agreement", "--dataset", "d", "--rubric", "curate")
    assert "UNRELIABLE" in p.stdout and "AUC 0.812" in p.stdout and "kappa 0.500 at 4.5" in p.stdout


def test_agreement_kappa_uses_the_curate_jobs_threshold(db_path):
    agreement_store(db_path, curate_job_threshold=3)
    res = json.loads(wb(db_path, "agreement", "--dataset", "d", "--rubric", "curate", "--json").stdout)
    assert res["n"] == 8
    # threshold 3 from the job: predicted accept = scores >= 3 = ids 4-8 (5 of 8); right: 1, 2, 5, 7, 8 -> p_o = 5/8;
    # p_pred = 5/8, p_true = 1/2 -> p_e = 5/16 + 3/16 = 0.5; kappa = (0.625 - 0.5) / 0.5 = 0.25
    assert res["threshold"] == 3 and res["threshold_source"].startswith("curate job ")
    assert res["kappa"] == pytest.approx(0.25)


def test_agreement_without_both_classes_and_refusals(db_path):
    ids = scored_store(db_path, {3: 2, 8: 2})
    assert wb(db_path, "decide", "--dataset", "d", "--ids", ",".join(map(str, ids)), "--accept").returncode == 0
    res = json.loads(wb(db_path, "agreement", "--dataset", "d", "--rubric", "judge", "--json").stdout)
    # all accepted: no AUC; threshold 3 reproduces all 4; kappa at 5.5 (the middle of 1-10): p_e = 0.5*1 + 0.5*0 =
    # 0.5, p_o = 0.5 -> 0
    assert res["auc"] is None and (res["best_threshold"], res["accuracy"]) == (3, 1.0)
    assert res["threshold"] == 5.5 and res["kappa"] == pytest.approx(0.0)
    p = wb(db_path, "agreement", "--dataset", "d", "--rubric", "curate")
    assert p.returncode == 2 and "rubrics present: judge" in p.stderr
    p = wb(db_path, "agreement", "--dataset", "zz", "--rubric", "judge")
    assert p.returncode == 2 and "no dataset named 'zz'" in p.stderr
