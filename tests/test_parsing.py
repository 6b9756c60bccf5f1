"""Defensive parsers: what a judge or generator may reply, and which replies must be item errors."""
from __future__ import annotations

import pytest

from workbench.parsing import (ParseError, extract_json_object, parse_aspect_ratings, parse_equal,
                               parse_indexed_scores, parse_judge_json, parse_numbered_list, parse_score, parse_text)

GOOD = '{"instruction_clarity": 8, "response_quality": 7, "alignment": 9, "overall": 8, "rationale": "Clear."}'


# --- judge JSON -------------------------------------------------------------------------------------

@pytest.mark.parametrize("reply", [
    GOOD,
    "```json\n" + GOOD + "\n```",
    "Here is my assessment:\n" + GOOD + "\nHope that helps.",
    "Sure.\n```\n" + GOOD + "\n```",
    '{"scores": {"Instruction Clarity": 8, "response-quality": 7, "alignment": 9}, "overall": 8, '
    '"rationale": "Clear."}',
    '{"instruction_clarity": {"score": 8, "rationale": "ok"}, "response_quality": "7", "alignment": 9.0, '
    '"overall_score": 8, "rationale": "Clear."}',
])
def test_judge_json_accepted_shapes(reply):
    r = parse_judge_json(reply)
    assert r.scores == {"instruction_clarity": 8, "response_quality": 7, "alignment": 9}
    assert r.overall == 8 and r.rationale == "Clear."


@pytest.mark.parametrize("reply, message", [
    ('{"instruction_clarity": 8, "response_quality": 7, "overall": 8, "rationale": "x"}', "alignment"),
    ('{"instruction_clarity": 8, "response_quality": 7, "alignment": 11, "overall": 8, "rationale": "x"}',
     "outside 1-10"),
    ('{"instruction_clarity": 0, "response_quality": 7, "alignment": 5, "overall": 8, "rationale": "x"}',
     "outside 1-10"),
    ('{"instruction_clarity": 8, "response_quality": 7, "alignment": 9, "rationale": "x"}', "overall"),
    ('{"instruction_clarity": 8, "response_quality": 7, "alignment": 9, "overall": 8}', "rationale"),
    ('{"instruction_clarity": "high", "response_quality": 7, "alignment": 9, "overall": 8, "rationale": "x"}',
     "not a number"),
    ('{"instruction_clarity": true, "response_quality": 7, "alignment": 9, "overall": 8, "rationale": "x"}',
     "not a number"),
    ("The response is good and I would give it an 8 out of 10.", "no complete JSON"),
    ('{"instruction_clarity": 8, "response_quality": 7, "alignment": 9, "overall": 8, "rationale": "Cle',
     "truncated"),
    ("[8, 7, 9]", "not an object"),
    ("", "empty"),
    ('First {"a": 1} then {"b": 2}', "2 different JSON objects"),
])
def test_judge_json_failures_keep_the_raw_reply(reply, message):
    with pytest.raises(ParseError, match=message) as e:
        parse_judge_json(reply)
    assert e.value.raw == reply


def test_same_object_twice_is_not_ambiguous():
    assert extract_json_object("```json\n{\"a\": 1}\n```\nAgain: {\"a\": 1}") == {"a": 1}


def test_braces_inside_strings_do_not_confuse_the_scan():
    reply = 'Note: {"rationale": "uses } and { in text", "overall": 3}'
    assert extract_json_object(reply)["overall"] == 3


# --- Score: N ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("reply, score, reason", [
    ("Clear and complete.\nScore: 5", 5, "Clear and complete."),
    ("Good answer.\n**Score:** 4", 4, "Good answer."),
    ("Fine.\nScore: 3/5", 3, "Fine."),
    ("reasoning\nscore: 5.", 5, "reasoning"),
    ("4\nThe response is accurate but terse.", 4, "The response is accurate but terse."),   # AlpaGasus layout
])
def test_last_score_line(reply, score, reason):
    r = parse_score(reply)
    assert r.score == score and r.reason == reason


def test_fractional_scores_when_allowed():
    assert parse_score("Score: 4.5", lo=0, hi=5, integer=False).score == 4.5
    assert parse_score("4.5\nAccurate.", lo=0, hi=5, integer=False).score == 4.5
    with pytest.raises(ParseError, match="whole number"):
        parse_score("Score: 4.5")


@pytest.mark.parametrize("reply, message", [
    ("This is a good answer, I like it.", "no 'Score: N'"),
    ("Reasoning.\nScore: 0", "outside 1-5"),
    ("Reasoning.\nScore: 6", "outside 1-5"),
    ("Reasoning.\nScore: 10502", "outside 1-5"),
    ("Reasoning.\nScore: 8/10", "out of 5"),
    ("Reasoning.\nScore: five", "in words"),
    ("The text said Score: 2 earlier.\nOn reflection it is better.\nScore: 4", "does not agree"),
    ("   ", "empty"),
])
def test_score_failures(reply, message):
    with pytest.raises(ParseError, match=message) as e:
        parse_score(reply)
    assert e.value.raw == reply


# --- [i] Score: N --------------------------------------------------------------------------------------

def test_indexed_scores():
    assert parse_indexed_scores("[1] Score: 2\n[2] score: 4\n[3] Score: 1", 3) == [2, 4, 1]
    assert parse_indexed_scores("[1] Score: 2\n[2] score: 5", 2, hi=10) == [2, 5]
    assert parse_indexed_scores("[2] Score: 1\n[1] Score: 3", 2) == [3, 1]
    with pytest.raises(ParseError, match="each of"):
        parse_indexed_scores("[1] Score: 2\n[2] Score: 5", 3)
    with pytest.raises(ParseError, match="different scores"):
        parse_indexed_scores("[1] Score: 2\n[1] Score: 5\n[2] Score: 1", 2)
    with pytest.raises(ParseError, match="outside"):
        parse_indexed_scores("[1] Score: 2\n[2] Score: 9", 2)


# --- Equal / Not Equal ---------------------------------------------------------------------------------

@pytest.mark.parametrize("reply, equal", [
    ("Equal", True), ("Not Equal", False), ("not equal.", False), ("**Not Equal**", False),
    ("They are Equal", True), ("NOT EQUAL", False), ("Not  equal", False),
])
def test_equality(reply, equal):
    assert parse_equal(reply) is equal


def test_equality_unreadable():
    with pytest.raises(ParseError):
        parse_equal("The second one is harder.")


# --- aspect ratings ---------------------------------------------------------------------------------------

RATED = """[instruction following]
Rating: 4
Rationale: Follows the format.

[honesty]
Rating: N/A
Rationale: Creative task.

[truthfulness]
Rating: 5
Rationale: No errors.

[helpfulness]
Rating: 3
Rationale: Terse.
"""


def test_aspect_ratings():
    r = parse_aspect_ratings(RATED)
    assert r.ratings == {"instruction following": 4, "honesty": None, "truthfulness": 5, "helpfulness": 3}
    assert r.mean == 4
    assert r.rationales["helpfulness"] == "Terse."


def test_aspect_ratings_markdown_headings():
    reply = ("## Instruction Following\nRating: 2\nRationale: a\n## Honesty\nRating: 3\n"
             "**Truthfulness**\nRating: 4\nHelpfulness: Rating: 5\nRationale: d")
    assert parse_aspect_ratings(reply).ratings == {"instruction following": 2, "honesty": 3, "truthfulness": 4,
                                                   "helpfulness": 5}


@pytest.mark.parametrize("mutate, message", [
    (lambda t: t.replace("[truthfulness]\nRating: 5", "[truthfulness]\nRating: 7"), "outside 1-5"),
    (lambda t: t.replace("[helpfulness]\nRating: 3", "[helpfulness]\nRating: N/A"), "N/A is not allowed"),
    (lambda t: t.replace("[helpfulness]\nRating: 3\n", "[helpfulness]\n"), "found none"),
    (lambda t: t.replace("[honesty]", "[candour]"), "'honesty'"),
])
def test_aspect_rating_failures(mutate, message):
    with pytest.raises(ParseError, match=message):
        parse_aspect_ratings(mutate(RATED))


# --- lists and plain text -----------------------------------------------------------------------------------

def test_numbered_list():
    reply = "Here are some:\n9. Write a haiku about\n   autumn rain.\n10) Sort these numbers.\n**11.** Name a bird."
    assert parse_numbered_list(reply) == ["Write a haiku about autumn rain.", "Sort these numbers.", "Name a bird."]
    with pytest.raises(ParseError):
        parse_numbered_list("No list here")


def test_plain_text():
    assert parse_text("Rewritten Prompt: Explain X in detail.") == "Explain X in detail."
    assert parse_text("#Rewritten Prompt#: Explain X.") == "Explain X."
    assert parse_text("**Improved answer:** Yes.") == "Yes."
    assert parse_text("Prompt engineering is fun.") == "Prompt engineering is fun."
    assert parse_text('"Summarize the passage."') == "Summarize the passage."
    assert parse_text("```\nList three fruits.\n```") == "List three fruits."
    assert parse_text("Describe \"quoted\" words.") == "Describe \"quoted\" words."
    with pytest.raises(ParseError):
        parse_text("Instruction: ")
