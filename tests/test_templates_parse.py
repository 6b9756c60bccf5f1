"""`workbench templates parse NAME [FILE|-]`: a reply read by the very reader the task uses for that template."""
from __future__ import annotations

import functools
import io
import json
import sys

import pytest

from workbench import templating
from workbench.cli.templates import reader_for
from workbench.tasks import TaskContext, load_tasks, resolve_params


def _same(a, b) -> bool:
    if isinstance(a, functools.partial) and isinstance(b, functools.partial):
        return a.func is b.func and a.args == b.args and a.keywords == b.keywords
    return a is b


def test_every_packaged_template_has_one_reader_shared_by_every_task_that_uses_it():
    users: dict[str, list] = {}
    for name, cls in load_tasks().items():
        for t in getattr(cls, "templates", ()):
            users.setdefault(t, []).append(cls)
    assert set(templating.package_names()) <= set(users)
    for t, classes in users.items():
        readers = [c(TaskContext(task=c.name, params=resolve_params(c, {}))).reader(t) for c in classes]
        if t == "label":
            continue                               # bound to the config's label sets, one task only
        assert all(_same(readers[0], r) for r in readers), t


def _reply(tmp_path, text: str | bytes) -> str:
    p = tmp_path / "reply.txt"
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(p)


@pytest.mark.parametrize("template, reply, expected", [
    ("curate", "Clear and complete.\n**Score:** 5", {"score": 5, "reason": "Clear and complete."}),
    ("evol-equal", "Not Equal", {"equal": False}),
    ("augment-equivalence", "**Equal**", {"equal": True}),
    ("judge", '```json\n{"instruction_clarity": 8, "response_quality": 7, "alignment": 9, "overall": 8, '
              '"rationale": "ok"}\n```', {"scores": {"instruction_clarity": 8, "response_quality": 7, "alignment": 9},
                                          "overall": 8, "rationale": "ok", "extra": {}}),
    ("self-instruct", "9. Name a bird.\n10. Sort these numbers.", {"items": ["Name a bird.", "Sort these numbers."]}),
    ("self-instruct-instance", '{"input": "", "output": "Paris"}', {"input": "", "output": "Paris"}),
    ("evol-depth", "Rewritten Prompt: Explain X in detail.", {"text": "Explain X in detail."}),
    ("respond", "Any answer at all.", {"text": "Any answer at all."}),
    ("label", '{"task_type": "Open QA", "domain": "science", "difficulty": "easy"}',
     {"task_type": "open_qa", "domain": "science", "difficulty": "easy"}),
])
def test_parse_prints_what_the_task_reads(cli, tmp_path, template, reply, expected):
    code, out, err = cli("templates", "parse", template, _reply(tmp_path, reply), "--json")
    assert code == 0, err
    got = json.loads(out)
    assert got["read"] is True and got["template"] == template and got["value"] == expected


def test_parse_aspects_plain_output(cli, tmp_path):
    reply = ("[instruction following]\nRating: 4\n[honesty]\nRating: N/A\n[truthfulness]\nRating: 5\n"
             "[helpfulness]\nRating: 3\nRationale: Terse.")
    code, out, err = cli("templates", "parse", "preference-rate", _reply(tmp_path, reply))
    assert code == 0, err
    assert "ratings.instruction following: 4" in out and "ratings.honesty: null" in out and "mean: 4" in out


@pytest.mark.parametrize("template, reply, reason", [
    ("curate", "Good.\nScore: 3-4", "range"),
    ("curate", "A Score: 5 means perfect.\nScore: 4", "does not agree"),
    ("curate", "Score: 4/10", "out of 5"),
    ("evol-equal", "They aren't equal... or are they? Equal.", "both"),
    ("judge", '{"instruction_clarity": 0, "response_quality": 7, "alignment": 9, "overall": 8, "rationale": "x"}',
     "outside 1-10"),
    ("label", '{"task_type": "Baking", "domain": "food", "difficulty": "easy"}', "not one of"),
    ("self-instruct", "I cannot think of any.", "no numbered list"),
    ("respond", "   \n", "empty"),
])
def test_parse_refuses_with_the_reason_and_exit_1(cli, tmp_path, template, reply, reason):
    code, out, err = cli("templates", "parse", template, _reply(tmp_path, reply))
    assert code == 1 and reason in err and out == ""
    code, out, _ = cli("templates", "parse", template, _reply(tmp_path, reply), "--json")
    got = json.loads(out)
    assert code == 1 and got["read"] is False and reason in got["error"]


def test_parse_reads_stdin(cli, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"Fine.\nScore: 2")))
    code, out, _ = cli("templates", "parse", "curate", "-")
    assert code == 0 and "score: 2" in out
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"Equal")))
    code, out, _ = cli("templates", "parse", "evol-equal")
    assert code == 0 and "equal: true" in out


def test_parse_uses_the_configs_label_sets(cli, tmp_path, monkeypatch):
    cfg = tmp_path / "config.toml"
    cfg.write_text('[labels]\ntask_type = ["baking", "other"]\ndomain = ["food"]\ndifficulty = ["easy"]\n')
    reply = _reply(tmp_path, '{"task_type": "Baking", "domain": "food", "difficulty": "easy"}')
    code, out, err = cli("templates", "parse", "label", reply, "--config", str(cfg))
    assert code == 0, err
    assert "task_type: baking" in out


def test_parse_never_sends_control_sequences_to_the_terminal(cli, tmp_path):
    code, out, _ = cli("templates", "parse", "respond", _reply(tmp_path, "hi \x1b[2J\x1b]0;owned\x07 there \u202e"))
    assert code == 0 and "\x1b" not in out and "\x07" not in out and "\u202e" not in out and "<U+001B>" in out
    code, out, _ = cli("templates", "parse", "respond", _reply(tmp_path, "x\x1b[31m"), "--json")
    assert code == 0 and "\x1b" not in out and json.loads(out)["value"]["text"] == "x\x1b[31m"


@pytest.mark.parametrize("args, message", [
    (("nope",), "no task uses a template named 'nope'"),
    (("curate", "/nonexistent/reply.txt"), "/nonexistent/reply.txt"),
])
def test_parse_usage_errors(cli, args, message):
    code, _, err = cli("templates", "parse", *args)
    assert code == 2 and message in err and "Traceback" not in err


def test_parse_refuses_non_utf8(cli, tmp_path):
    code, _, err = cli("templates", "parse", "curate", _reply(tmp_path, b"Score: 4\xff"))
    assert code == 2 and "not UTF-8" in err


def test_reader_for_a_template_no_task_uses():
    from workbench.cli.common import CliError
    with pytest.raises(CliError, match="no task uses"):
        reader_for("my-own-template", {})


def test_every_packaged_template_states_how_its_replies_are_read():
    for name in templating.package_names():
        head = load_header(name)
        assert "# reads:" in head and f"templates parse {name}" in head, name


def load_header(name: str) -> str:
    text = templating.load(name).text
    return text[:text.index("\n===")]
