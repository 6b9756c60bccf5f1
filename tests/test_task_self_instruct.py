"""Self-Instruct end to end on the real 175 seed tasks: in-context mix, every filter counted, the ROUGE-L novelty
check against seeds and against instructions kept in the same run, responses, and prompts a restarted worker
would rebuild identically."""
from __future__ import annotations

import itertools
import json
import re

import pytest

from llm_server import LLMServer, Rule
from taskkit import config_for, items_of, last_user, run, samples_of
from workbench import importer, jobs
from workbench.similarity import rouge_l
from workbench.tasks.self_instruct import SelfInstruct, drop_rule, instance_drop_rule

_counter = itertools.count()
CLASSIFY = "Is this a classification task?"


def novel() -> str:
    """Instructions that share only their frame words (5 of 9 tokens): pairwise ROUGE-L 10/18, below 0.7."""
    n = next(_counter)
    return f"Compare w{n}x with v{n}y and u{n}z for this case."


def examples_in(prompt: str) -> list[str]:
    return re.findall(r"^\d+\. (.*)$", prompt.split("\n\n", 1)[1], re.M)[:8]


def task_of(prompt: str) -> str:
    return prompt.split("<<<\n", 1)[1].split("\n>>>", 1)[0]


def instance(messages) -> str:
    """A well-formed instance for the task the prompt asks about ("No" to the classification question)."""
    if CLASSIFY in last_user(messages):
        return "No"
    task = task_of(last_user(messages))
    return json.dumps({"input": f"Input for: {task[:40]}", "output": f"Output for: {task[:40]}"})


def si_reply(messages, body):
    prompt = last_user(messages)
    if "Continue the list" not in prompt:
        return instance(messages)
    copy = next(e.rstrip(".?!") + " please" for e in examples_in(prompt) if drop_rule(e + " please", 4, 150) is None)
    return "\n".join([
        "9. " + copy,                                          # near-copy of a shown example: too similar
        "10. Draw a picture of a cat.",                        # needs more than text
        "11. Say hi.",                                         # too short
        "12. " + "word " * 151,                                # too long
        "13. Write a program that sorts numbers.",             # write a program
        "14. ...and then what happens next in the story?",    # punctuation first
        "15. Écris un poème sur la mer et le vent du nord.",  # non-ASCII first
        "16. " + novel(),
        "17. " + novel(),
    ])


@pytest.fixture
def seeds(conn, shared_data):
    importer.import_file(conn, shared_data / "self-instruct-seed" / "seed_tasks_alpaca.json", dataset="seeds")
    return [s["instruction"] for s in samples_of(conn, "seeds")]


def test_self_instruct_end_to_end(conn, db_path, seeds):
    with LLMServer(reply=si_reply) as srv:
        job = run(conn, db_path, "self-instruct", config=config_for(srv), dataset="seeds",
                  params={"num_instructions": 6, "rounds_in_flight": 2, "seed": 3})
        gen_prompts = [b["messages"][-1]["content"] for b in srv.stats.bodies
                       if "Continue the list" in b["messages"][-1]["content"]]
        gen_bodies = [b for b in srv.stats.bodies if "Continue the list" in b["messages"][-1]["content"]]
        instance_prompts = [b["messages"][-1]["content"] for b in srv.stats.bodies
                            if "Task instruction:" in b["messages"][-1]["content"]
                            and CLASSIFY not in b["messages"][-1]["content"]]
    # the paper's decoding for new instructions
    assert all((b["temperature"], b["top_p"], b["max_tokens"]) == (0.7, 0.5, 1024) for b in gen_bodies)
    # two waves of two rounds: 4 kept in wave 0, 2 more in wave 1, then the quota stops the job
    assert len(gen_prompts) == 4 and job["total"] == 4
    assert job["kept"] == 6 and job["failed"] == 0
    assert job["drop_reasons"] == {"too similar": 4, "needs more than text": 4, "too short": 4, "too long": 4,
                                   "write a program": 4, "starts with punctuation": 4, "starts with non-ASCII": 4,
                                   "enough already": 2}
    out = samples_of(conn, "seeds-self-instruct")
    assert len(out) == 6
    # each kept instruction got an instance: input first (an open task), asked for as JSON
    assert all((s["input"], s["response"]) == (f"Input for: {s['instruction'][:40]}",
                                              f"Output for: {s['instruction'][:40]}") for s in out)
    assert all(s["origin"]["templates"]["self-instruct-instance"] == "1" for s in out)
    assert all("Write the input first" in p for p in instance_prompts) and len(instance_prompts) == 6
    assert all(s["origin"]["similarity"] < 0.7 and s["origin"]["template"] == "self-instruct" for s in out)
    # novelty holds against every seed and every other kept instruction
    for s in out:
        assert max(rouge_l(s["instruction"], t) for t in seeds) < 0.7
        assert all(rouge_l(s["instruction"], o["instruction"]) < 0.7 for o in out if o is not s)
    # in-context mix: 8 examples; wave 0 all human, wave 1 = 6 human + 2 generated in wave 0
    wave0 = [s["instruction"] for s in out if s["origin"]["round"] < 2]
    human = {" ".join(t.split()).rstrip(":") for t in seeds}
    mixes = sorted((sum(e in human for e in examples_in(p)), sum(e in wave0 for e in examples_in(p)))
                   for p in gen_prompts)
    assert mixes == [(6, 2), (6, 2), (8, 0), (8, 0)]

    # a fresh task object (a restarted worker) rebuilds exactly the prompts that were sent
    job_row = jobs.get_job(conn, job["id"])
    ctx = jobs.job_context(conn, job_row, config={})
    again = SelfInstruct(ctx)
    again.load(conn)
    rebuilt = []
    for r in range(4):
        shown, _ = again.examples(r)
        rebuilt.append("\n".join(f"{i}. {e}" for i, e in enumerate(shown, start=1)))
    assert sorted(rebuilt) == sorted("\n".join(f"{i}. {e}" for i, e in enumerate(examples_in(p), start=1))
                                     for p in gen_prompts)


def test_reply_without_a_list_is_an_item_error(conn, db_path, seeds):
    replies = iter(["I cannot think of any new tasks right now.", "I cannot think of any new tasks right now.",
                    "9. " + novel() + "\n10. " + novel() + "\n11. " + novel()])

    def reply(messages, body):
        if "Continue the list" in last_user(messages):
            return next(replies)
        return instance(messages)
    with LLMServer(reply=reply) as srv:
        cfg = config_for(srv)
        job = run(conn, db_path, "self-instruct", config=cfg, dataset="seeds",
                  params={"num_instructions": 5, "rounds_in_flight": 1, "max_rounds": 2})
    assert job["failed"] == 1                                 # prose, asked twice, never a guessed list
    failed = [i for i in items_of(conn, job["id"]) if i["status"] == "failed"][0]
    assert "no numbered list" in failed["error"] and "cannot think" in failed["raw"]
    assert job["kept"] == 3                                   # the next round kept all three


def test_length_cut_reply(conn, db_path, seeds):
    def reply(messages, body):
        if "Continue the list" in last_user(messages):
            return "9. " + novel() + "\n10. " + novel() + "\n11. " + novel()
        return instance(messages)
    with LLMServer(reply=reply, rules=[Rule("length", match="Continue the list")]) as srv:
        job = run(conn, db_path, "self-instruct", config=config_for(srv), dataset="seeds",
                  params={"num_instructions": 1, "rounds_in_flight": 1})
    assert job["drop_reasons"].get("cut off") == 1 and job["kept"] == 1


def test_instances_label_first_for_classification_and_filtered(conn, db_path, seeds):
    tasks = [novel() for _ in range(5)]
    made = {tasks[0]: {"output": "positive", "input": "I loved it."},           # kept
            tasks[1]: {"output": "", "input": "Some text."},                    # no output
            tasks[2]: {"output": "same", "input": "same"},                      # input equals output
            tasks[3]: {"output": "negative", "input": "Label this:"},           # ends with ':'
            tasks[4]: "The label is probably negative."}                        # not JSON: the instance fails

    def reply(messages, body):
        prompt = last_user(messages)
        if "Continue the list" in prompt:
            return "\n".join(f"{9 + i}. {t}" for i, t in enumerate(tasks))
        if CLASSIFY in prompt:
            return "Yes"
        answer = made[task_of(prompt)]
        return answer if isinstance(answer, str) else json.dumps(answer)
    with LLMServer(reply=reply) as srv:
        job = run(conn, db_path, "self-instruct", config=config_for(srv), dataset="seeds",
                  params={"num_instructions": 5, "rounds_in_flight": 1, "max_rounds": 1, "classification": True})
        prompts = [b["messages"][-1]["content"] for b in srv.stats.bodies
                   if "Task instruction:" in b["messages"][-1]["content"]
                            and CLASSIFY not in b["messages"][-1]["content"]]
    assert len(prompts) == 6 and all("Pick one of its possible labels first" in p for p in prompts)  # prose: asked twice
    assert job["kept"] == 1 and job["drop_reasons"] == {
        "instance without output": 1, "input equals output": 1, "instance ends with ':'": 1, "instance failed": 1}
    [kept] = samples_of(conn, "seeds-self-instruct")
    assert (kept["instruction"], kept["input"], kept["response"]) == (tasks[0], "I loved it.", "positive")
    assert instance_drop_rule("", "A full answer.") is None            # a task with no input is fine


def test_filters_on_known_cases():
    assert drop_rule("Give three tips for staying healthy.", 4, 150) is None
    assert drop_rule("Plot the sales figures by month.", 4, 150) == "needs more than text"
    assert drop_rule("Tell me how to go to the station.", 4, 150) == "needs more than text"
    assert drop_rule("Mapping rules for the filesystem are listed below.", 4, 150) is None   # whole words only
    assert drop_rule("“Quoted” start is not ASCII punctuation", 4, 150) == "starts with non-ASCII"


def test_rouge_threshold_on_known_pairs():
    # exactly the paper's rule: reject at >= 0.7, keep below
    pool_text = "Give three tips for staying healthy."
    assert rouge_l("Give three tips for staying healthy and happy.", pool_text) == pytest.approx(12 / 14)
    assert rouge_l("Give three tips for staying calm at work.", pool_text) == pytest.approx(10 / 14)   # 0.714
    assert rouge_l("List three tips for a healthy diet.", pool_text) == pytest.approx(8 / 13)


def test_bad_params_are_refused(conn, seeds):
    from workbench.tasks import TaskError
    cfg = {"endpoints": {"e": {"base_url": "http://127.0.0.1:9/v1", "model": "m"}}}
    with pytest.raises(TaskError, match="machine_per_prompt"):
        jobs.queue_job(conn, "self-instruct", config=cfg, dataset="seeds", endpoint="e",
                       params={"machine_per_prompt": 9})


def test_kill9_mid_run_then_resume(conn, db_path, tmp_path, seeds):
    """A worker process killed mid-job: the next one finishes with exactly the wanted count, no near-copies."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from workbench.config import resolve_config_path, save_config

    def reply(messages, body):
        if "Continue the list" in last_user(messages):
            return "9. " + novel() + "\n10. " + novel() + "\n11. Say hi."
        return instance(messages)

    def spawn(log):
        return subprocess.Popen([sys.executable, "-m", "workbench", "worker", "--until-idle", "--db", str(db_path)],
                                stdout=log, stderr=log, cwd=Path(__file__).resolve().parents[1])

    with LLMServer(reply=reply, latency=0.05) as srv, open(tmp_path / "worker.log", "ab") as log:
        cfg = config_for(srv)
        save_config(cfg, resolve_config_path())
        jid = jobs.queue_job(conn, "self-instruct", config=cfg, dataset="seeds", endpoint="test-model",
                             params={"num_instructions": 12, "rounds_in_flight": 2})
        p = spawn(log)
        deadline = time.monotonic() + 30
        while jobs.get_job(conn, jid)["kept"] < 3:
            assert time.monotonic() < deadline and p.poll() is None
            time.sleep(0.02)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        assert jobs.get_job(conn, jid)["kept"] < 12
        assert spawn(log).wait(60) == 0
    job = jobs.get_job(conn, jid)
    assert (job["status"], job["kept"], job["failed"]) == ("done", 12, 0)
    out = samples_of(conn, "seeds-self-instruct")
    assert len(out) == 12 and len({s["instruction"] for s in out}) == 12
    for i, a in enumerate(out):
        assert all(rouge_l(a["instruction"], b["instruction"]) < 0.7 for b in out[i + 1:])
    keys = [i["key"] for i in items_of(conn, jid)]
    assert len(keys) == len(set(keys)) and keys[0] == "round-0"


def test_classification_step_sets_instance_order_per_instruction(conn, db_path, seeds):
    """Each kept instruction is asked whether it is a classification task; Yes -> label first, No -> input first;
    several instances per instruction, sampled at the task's temperature, filtered for repeats and clashes."""
    tasks = [novel() for _ in range(5)]
    verdict = {tasks[0]: "Yes", tasks[1]: "No", tasks[2]: "**No.**", tasks[3]: "Yes and no, it depends.",
               tasks[4]: "No"}
    made = {tasks[0]: [("great film", "positive"), ("dull plot", "negative"), ("fine, I guess", "neutral")],
            tasks[1]: [("a", "A!"), ("b", "B!"), ("", "C!")],
            tasks[2]: [("same", "one"), ("same", "one"), ("other", "two")],               # a repeat
            tasks[4]: [("x", "y1"), ("x", "y2"), ("z", "w")]}                             # x has two outputs
    served: dict[str, int] = {}

    def reply(messages, body):
        prompt = last_user(messages)
        if "Continue the list" in prompt:
            return "\n".join(f"{9 + i}. {t}" for i, t in enumerate(tasks))
        task = task_of(prompt)
        if CLASSIFY in prompt:
            return verdict[task]
        k = served[task] = served.get(task, 0) + 1
        given, out = made[task][k - 1]
        return json.dumps({"output": out, "input": given})

    with LLMServer(reply=reply) as srv:
        job = run(conn, db_path, "self-instruct", config=config_for(srv), dataset="seeds",
                  params={"num_instructions": 5, "rounds_in_flight": 1, "max_rounds": 1,
                          "instances_per_instruction": 3})
        bodies = [b for b in srv.stats.bodies if "Task instruction:" in b["messages"][-1]["content"]]
    classify = [b for b in bodies if CLASSIFY in b["messages"][-1]["content"]]
    instance_bodies = [b for b in bodies if CLASSIFY not in b["messages"][-1]["content"]]
    # the one-word question is deterministic (T=0); instances sample at the task's temperature, 3 real calls each
    assert all(b["temperature"] == 0 for b in classify)
    assert len(classify) == 6                                   # the unreadable reply was asked twice
    assert all(b["temperature"] == 0.7 for b in instance_bodies) and len(instance_bodies) == 12
    assert served == {tasks[0]: 3, tasks[1]: 3, tasks[2]: 3, tasks[4]: 3}
    order = {task_of(b["messages"][-1]["content"]): ("output-first" if "Pick one of its possible labels first"
                                                     in b["messages"][-1]["content"] else "input-first")
             for b in instance_bodies}
    assert order == {tasks[0]: "output-first", tasks[1]: "input-first", tasks[2]: "input-first",
                     tasks[4]: "input-first"}
    assert job["drop_reasons"] == {"classification unreadable": 1, "duplicate instance": 1,
                                   "same input, different outputs": 2}
    out = samples_of(conn, "seeds-self-instruct")
    got = {}
    for s in out:
        got.setdefault(s["instruction"], set()).add((s["input"], s["response"]))
        assert s["origin"]["instance_order"] == ("output-first" if s["instruction"] == tasks[0] else "input-first")
        assert s["origin"]["is_classification"] is (s["instruction"] == tasks[0])
    assert got == {tasks[0]: set(made[tasks[0]]), tasks[1]: set(made[tasks[1]]),
                   tasks[2]: {("same", "one"), ("other", "two")}, tasks[4]: {("z", "w")}}
    assert job["kept"] == len(out) == 9
    item = items_of(conn, job["id"])[0]
    assert item["result"]["kept"] == 4 and "Yes and no" in item["result"]["errors"][0]


def test_several_instances_need_a_temperature(conn, seeds):
    from workbench.tasks import TaskError
    cfg = {"endpoints": {"e": {"base_url": "http://127.0.0.1:9/v1", "model": "m"}}}
    with pytest.raises(TaskError, match="temperature above 0"):
        jobs.queue_job(conn, "self-instruct", config=cfg, dataset="seeds", endpoint="e",
                       params={"instances_per_instruction": 2, "temperature": 0})
