"""Review says why every imported pair is what it is, `w` swaps chosen and rejected (a decision, undoable), and the
Datasets screen renames, deletes and merges with keys shown in its footer. The real app, driven by Pilot."""
from __future__ import annotations

from textual.widgets import Input

from workbench import importer, review
from workbench.app import WorkbenchApp
from workbench.formats import ParseOptions
from workbench.samples import iter_samples
from workbench.store import open_store

from pilotkit import wait_for
from test_app_review import block_text, press, review_ready

LAYOUTS = __import__("pathlib").Path(__file__).parent / "data" / "layouts"


def test_why_and_swap_in_the_core(conn):
    importer.import_file(conn, LAYOUTS / "ultrafeedback_binarized.jsonl", dataset="uf",
                         opts=ParseOptions(score_scale=(1, 10)))
    sid = next(iter_samples(conn))["id"]
    why = review.why_chosen(review.load_sample(conn, sid))
    assert why["chosen"]["score"] == 8.0 and why["rejected"]["score"] == 3.0 and why["margin"] == 5.0
    assert why["chosen"]["scale"] == [1, 10] and not why["swapped"]
    d = review.swap(conn, sid, "s")
    assert d["action"] == "swap"
    s = review.load_sample(conn, sid)
    assert s["response"].startswith("WORSE") and s["rejected"].startswith("BETTER")
    why = review.why_chosen(s)
    assert why["swapped"] and why["margin"] == -5.0
    u = review.undo(conn, "s")
    assert u["undid"] == "swap"
    assert review.load_sample(conn, sid)["response"].startswith("BETTER")
    actions = [a for (a,) in conn.execute("SELECT action FROM decisions WHERE sample_id = ? ORDER BY id", (sid,))]
    assert actions == ["swap", "undo"]


async def test_review_shows_why_and_w_swaps(db_path):
    conn = open_store(db_path)
    importer.import_file(conn, LAYOUTS / "alpacaeval_annotations.json", dataset="ae")
    first = next(iter_samples(conn))
    conn.close()
    app = WorkbenchApp(db=db_path, dataset="ae", screen="review", sample_id=first["id"])
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await review_ready(pilot)
        why = block_text(screen, "why")
        assert "chosen: gpt4_1106_preview" in why and "column output_1" in why
        assert "rejected: my_model" in why and "preference column = 1.0" in why
        await press(pilot, "w")
        await wait_for(pilot, lambda: "swapped by the curator" in block_text(screen, "why"))
        check = open_store(db_path)
        assert check.execute("SELECT response FROM samples WHERE id = ?", (first["id"],)).fetchone()[0] == \
            first["rejected"]
        await press(pilot, "u")
        await wait_for(pilot, lambda: "swapped" not in block_text(screen, "why"))
        assert check.execute("SELECT response FROM samples WHERE id = ?", (first["id"],)).fetchone()[0] == \
            first["response"]
        check.close()


async def answer(pilot, app, text: str) -> None:
    await wait_for(pilot, lambda: type(app.screen).__name__ == "AskDialog")
    app.screen.query_one(Input).value = text
    await pilot.press("enter")


async def test_datasets_screen_rename_merge_delete(db_path):
    conn = open_store(db_path)
    importer.import_file(conn, LAYOUTS / "trl_kto.jsonl", dataset="a")
    importer.import_file(conn, LAYOUTS / "llamafactory_kto.json", dataset="b")
    app = WorkbenchApp(db=db_path)
    async with app.run_test(size=(120, 30)) as pilot:
        await wait_for(pilot, lambda: type(app.screen).__name__ == "DatasetsScreen" and app.screen.loaded)
        screen = app.screen
        names = lambda: [d["name"] for d in screen.datasets]  # noqa: E731
        await wait_for(pilot, lambda: names() == ["a", "b"])
        screen.query_one("DataTable").move_cursor(row=0)
        await pilot.press("n")
        await answer(pilot, app, "renamed")
        await wait_for(pilot, lambda: names() == ["renamed", "b"])
        screen.query_one("DataTable").move_cursor(row=0)
        await pilot.press("m")
        await answer(pilot, app, "b")
        await answer(pilot, app, "both")
        await wait_for(pilot, lambda: names() == ["both"])
        assert conn.execute("SELECT count(*) FROM samples").fetchone()[0] == 4
        await pilot.press("delete")
        await answer(pilot, app, "wrong name")
        await pilot.pause(0.2)
        assert names() == ["both"]
        await pilot.press("delete")
        await answer(pilot, app, "both")
        await wait_for(pilot, lambda: names() == [])
    assert conn.execute("SELECT count(*) FROM samples").fetchone()[0] == 0
    assert [a for (a,) in conn.execute("SELECT action FROM decisions WHERE sample_id = 0 ORDER BY id")] == \
        ["dataset-rename", "dataset-merge", "dataset-delete"]
    conn.close()


def test_datasets_keys_are_bound_and_listed_under_help():
    # at 80 columns the footer keeps the everyday keys; rename/delete/merge are listed under `?` (issue 16)
    from workbench import keymap
    bound = {s.id: s.description for s in keymap.SPECS["datasets"]}
    assert bound["datasets.rename"] == "Rename" and bound["datasets.delete"] == "Delete"
    assert bound["datasets.merge"] == "Merge"
    assert keymap.BY_ID["review.swap"].keys == "w" and keymap.BY_ID["review.swap"].show
    from screens.help import help_sections
    listed = {b.id for title, bindings in help_sections() if title == "Datasets" for b in bindings
              if not isinstance(b, tuple)}
    assert {"datasets.rename", "datasets.delete", "datasets.merge"} <= listed


def test_candidates_from_files_then_preference_existing_pairs_them(conn, db_path, shared_data):
    """Three models' output files -> one prompt with three candidates -> `run preference --param
    candidates=existing` with a judge -> chosen = the best model; Review says why, with the 1-5 scale."""
    from llm_server import LLMServer
    from taskkit import config_for, run, samples_of
    from test_task_preference import QUALITY, aspect_reply
    from workbench.candidates import import_candidates

    pred = shared_data / "self-instruct-user-oriented" / "predictions"
    models = ("text-davinci-003", "davinci-t0-ft", "davinci")
    res = import_candidates(conn, [pred / f"{m}_predictions.jsonl" for m in models], "uo", skip_invalid=True)
    assert res.prompts >= 240
    model_of = {r: m.removesuffix("_predictions")
                for m, r in conn.execute("SELECT model, response FROM candidates")}
    with LLMServer(reply=aspect_reply(lambda answer: QUALITY[model_of[answer]]), models=("judge",)) as srv:
        cfg = config_for(srv, ("judge",))
        job = run(conn, db_path, "preference", config=cfg, dataset="uo", endpoint="judge", filter={"limit": 3},
                  params={"candidates": "existing", "rejected": "lowest"})
    assert job["kept"] == 3 and job["failed"] == 0
    for pair in samples_of(conn, "uo-preference"):
        o = pair["origin"]
        assert o["chosen"]["model"] == "text-davinci-003_predictions"
        assert o["rejected"]["model"] == "davinci_predictions"
        why = review.why_chosen(review.load_sample(conn, pair["id"]))
        assert why["chosen"]["model"] == "text-davinci-003_predictions" and why["chosen"]["scale"] == [1, 5]
        assert (why["chosen"]["score"], why["rejected"]["score"]) == (o["chosen"]["score"], o["rejected"]["score"])
        assert why["margin"] == o["chosen"]["score"] - o["rejected"]["score"] > 0 and "judge judge" in why["by"]
        review.swap(conn, pair["id"], "s")
        why = review.why_chosen(review.load_sample(conn, pair["id"]))
        assert why["swapped"] and why["chosen"]["model"] == "davinci_predictions"
        assert why["margin"] == o["rejected"]["score"] - o["chosen"]["score"] < 0
