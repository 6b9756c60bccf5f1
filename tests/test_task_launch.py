"""The TUI launch dialog (generic over the task registry) with this project's tasks: every declared param shows
its default, edited values reach `jobs.queue_job` typed as declared, and a bad value is refused in the dialog."""
from __future__ import annotations

import pytest
from textual.app import App
from textual.widgets import Input, Select, Static

from taskkit import add_dataset
from widgets.jobs_launch import LaunchDialog, _input_id
from workbench import jobs
from workbench.tasks import load_tasks

OUR_TASKS = ("self-instruct", "evol-instruct", "evol-quality", "backtranslate", "curate", "judge", "preference",
             "augment", "label", "deita-score")
CONFIG = {"endpoints": {"a": {"base_url": "http://127.0.0.1:9/v1", "model": "m1"},
                        "b": {"base_url": "http://127.0.0.1:9/v1", "model": "m2"}},
          "pools": {"both": {"endpoints": ["a", "b"], "mode": "each"}}}


class Host(App):
    def __init__(self, task, submit):
        super().__init__()
        self.task_name, self.submit_fn = task, submit

    def on_mount(self):
        self.push_screen(LaunchDialog(["prompts"], CONFIG, self.submit_fn, "prompts", task=self.task_name))


def test_every_task_is_in_the_registry_with_documented_params():
    tasks = load_tasks()
    for name in OUR_TASKS:
        cls = tasks[name]
        assert cls.summary and cls.params
        assert all(spec.help for spec in cls.params.values()), name


@pytest.mark.parametrize("task, edits, expected", [
    ("preference", {"rubric": "judge", "margin": "3", "candidates": "existing"},
     {"rubric": "judge", "margin": 3.0, "candidates": "existing", "rejected": "random", "seed": 42}),
    ("curate", {"threshold": "4"}, {"threshold": 4.0}),
    ("self-instruct", {"num_instructions": "20", "classification": "true"},
     {"num_instructions": 20, "classification": True, "similarity_threshold": 0.7, "seeds_per_prompt": 8}),
])
async def test_dialog_params_reach_the_job(conn, task, edits, expected):
    add_dataset(conn, "prompts", [{"instruction": "Is 7 prime?", "response": "Yes."}])
    queued = []

    async def submit(req):
        req = dict(req)
        name = req.pop("task")
        filt = jobs.parse_filter(req.pop("filter"))
        job_id = jobs.queue_job(conn, name, config=CONFIG, filter=filt, **req)
        queued.append(job_id)
        return job_id

    app = Host(task, submit)
    async with app.run_test() as pilot:
        await pilot.pause()
        dialog = app.screen
        assert isinstance(dialog, LaunchDialog)
        cls = load_tasks()[task]
        for name, spec in cls.params.items():         # defaults shown
            shown = dialog.query_one(f"#{_input_id(name)}", Input).value
            assert shown == ("" if spec.default is None else str(spec.default))
        for name, value in edits.items():
            dialog.query_one(f"#{_input_id(name)}", Input).value = value
        dialog.query_one("#launch-generator", Select).value = "pool:both"
        await pilot.press("ctrl+s")
        await pilot.pause()
    assert len(queued) == 1
    params = jobs.get_job(conn, queued[0])["params"]["task"]
    for k, v in expected.items():
        assert params[k] == v and type(params[k]) is type(v), k


async def test_bad_choice_is_refused_in_the_dialog(conn):
    add_dataset(conn, "prompts", [{"instruction": "Is 7 prime?"}])

    async def submit(req):
        req = dict(req)
        name = req.pop("task")
        return jobs.queue_job(conn, name, config=CONFIG, filter=jobs.parse_filter(req.pop("filter")), **req)

    app = Host("preference", submit)
    async with app.run_test() as pilot:
        await pilot.pause()
        dialog = app.screen
        dialog.query_one(f"#{_input_id('rubric')}", Input).value = "vibes"
        dialog.query_one("#launch-generator", Select).value = "pool:both"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, LaunchDialog)       # stays open with the message
        assert "not one of aspects, judge" in str(dialog.query_one("#launch-error", Static).render())
    assert conn.execute("SELECT count(*) FROM jobs").fetchone()[0] == 0
