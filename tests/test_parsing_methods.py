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
