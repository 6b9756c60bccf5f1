"""Strict readers for the replies the full methods ask for: one-word Yes/No, pairwise verdicts."""
from __future__ import annotations

import pytest

from workbench.parsing import ParseError, parse_yes_no


@pytest.mark.parametrize("reply, answer", [
    ("Yes", True), ("No", False), ("yes.", True), ("**No**", False), ("NO!", False), ('"Yes"', True),
    ("Yes\n\nIt picks one of three fixed labels.", True), ("  no  \n", False), ("> Yes", True),
])
def test_yes_no(reply, answer):
    assert parse_yes_no(reply) is answer


@pytest.mark.parametrize("reply", [
    "", "Maybe", "Yes and no, it depends.", "Not really.", "Yes, though it is not a fixed set", "Nope", "Yeah",
    "It is a classification task: Yes", "Yes\nNo", "No.\n**Yes**", "Answer: No", "Yes/No", "Y", "Noo",
])
def test_yes_no_refused_with_raw(reply):
    with pytest.raises(ParseError) as e:
        parse_yes_no(reply)
    assert e.value.raw == reply


@pytest.mark.parametrize("reply, verdict", [
    ("A is clearer.\n[[A]]", "A"), ("[[B]]", "B"), ("Both equal.\n\n[[C]]\n", "C"),
    ("Verdict [[B]] since B explains; final: [[B]]", "B"), ("Reasons...\nFinal verdict: [[ A ]]", "A"),
])
def test_pair_verdict(reply, verdict):
    from workbench.parsing import parse_pair_verdict
    assert parse_pair_verdict(reply) == verdict


@pytest.mark.parametrize("reply", [
    "A is better.", "[A]", "[[A]] at first, but on reflection [[B]]", "[[D]]", "[[a]]", "[[AB]]",
    "[[A]]\nThat is my verdict, though B has merits.", "Answer A", "", "[[A or B]]",
])
def test_pair_verdict_refused(reply):
    from workbench.parsing import parse_pair_verdict
    with pytest.raises(ParseError):
        parse_pair_verdict(reply)


@pytest.mark.parametrize("reply", [
    '{"input": "the input", "output": "the correct output"}',                       # SmolLM2-135M, verbatim
    '{"input": "<the input text for the input, or empty>", "output": "Paris"}',       # SmolLM2-135M, verbatim
    '{"output": "<the label>", "input": "a fine film"}', '{"output": "positive", "input": "<an input>"}',
    '{"output": "The label.", "input": "x"}', '{"input": "The input, or empty", "output": "y"}',
])
def test_instance_placeholder_echoes_refused(reply):
    from workbench.parsing import parse_instance
    with pytest.raises(ParseError, match="placeholder") as e:
        parse_instance(reply)
    assert e.value.raw == reply


@pytest.mark.parametrize("reply, got", [
    ('{"input": "the input is 3, 1, 2", "output": "1, 2, 3"}', ("the input is 3, 1, 2", "1, 2, 3")),
    ('{"input": "", "output": "the correct output is 4"}', ("", "the correct output is 4")),
    ('{"input": "a < b > c", "output": "label"}', ("a < b > c", "label")),
    ('{"input": "<div>hi</div>", "output": "<p>hi</p>"}', ("<div>hi</div>", "<p>hi</p>")),
    ('{"input": "<br>", "output": "a line break"}', ("<br>", "a line break")),
])
def test_instance_near_placeholders_kept(reply, got):
    from workbench.parsing import parse_instance
    assert parse_instance(reply) == got
