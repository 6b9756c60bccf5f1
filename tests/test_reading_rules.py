"""The reading rules on hostile replies, written the way real models answer: markdown, restated rubrics, changes of
mind, ranges, other scales, numbers in words, negations. Every failure keeps the raw reply."""
from __future__ import annotations

import pytest

from workbench.parsing import (ParseError, parse_aspect_ratings, parse_equal, parse_indexed_scores,
                               parse_instance, parse_judge_json, parse_score)


def fails(fn, reply, match=None, **kw):
    with pytest.raises(ParseError, match=match) as e:
        fn(reply, **kw)
    assert e.value.raw == reply          # the raw reply is kept for the item row
    return str(e.value)


# --- the score line: what counts as one ----------------------------------------------------------------

@pytest.mark.parametrize("reply, score", [
    ("The answer is focused and complete.\nScore: 5", 5),
    ("Good.\n**Score:** 4", 4),
    ("Good.\n**Score: 4**", 4),
    ("Good.\nScore: **4**", 4),
    ("Good.\n__Score__: 4", 4),
    ("Good.\n*Score*: 4", 4),
    ("Good.\n### Score: 4", 4),
    ("Good.\n## Final Score: 4", 4),
    ("Good.\nFinal score: 4", 4),
    ("Good.\n**Final Score:** 4/5", 4),
    ("Good.\nOverall score: 3", 3),
    ("Good.\n> Score: 4", 4),
    ("Good.\n>  **Score:** 2", 2),
    ("Good.\n   Score: 4", 4),
    ("Good.\n\tScore: 4", 4),
    ("Good.\n- Score: 4", 4),
    ("Good.\n* Score: 4", 4),
    ("Good.\nscore: 4", 4),
    ("Good.\nSCORE: 4", 4),
    ("Good.\nScore = 4", 4),
    ("Good.\nScore: 4.", 4),
    ("Good.\nScore: 4/5", 4),
    ("Good.\nScore: 4 / 5", 4),
    ("Good.\nScore: 4 out of 5", 4),
    ("Good.\nScore: 4 (out of 5)", 4),
    ("Good.\nScore: 4 out of a possible 5", 4),
    ("Good.\nScore: 4 of 5", 4),
    ("Good.\nScore: [4]", 4),
    ("Good.\nScore: (4)", 4),
    ("Good.\nScore: 4.0", 4),
    ("Good.\nScore: 04", 4),
    ("Good.\nScore: 4 - a clear, well organized answer.", 4),
    ("Good.\nScore: 4 (on a scale of 1-5)", 4),
    ("Good.\nScore: 4 stars", 4),
    ("Score: 4\nThe answer is clear but could be shorter.", 4),     # score first, explanation after
    ("**Score:**\n4", 4),                                             # number on the next line
    ("**Score:**\n\n**4**", 4),
    ("Score: 4\n\nScore: 4", 4),                                      # said twice, the same
    ("I would give it a score of 4.\nScore: 4", 4),                    # a mention that agrees
    ("The score is 4 because it is complete.\n\nScore: 4/5", 4),
    ("The score is based on clarity and depth.\nScore: 3", 3),         # 'score' without a number: no mention
    ("Sub-score: 1\nScore: 4", 4),                                    # sub-scores are not the score
    ("Subscore: 2\nScore: 4", 4),
    ("sub score: 2\nScore: 4", 4),
    ("Clarity sub-score: 5; depth sub-score: 2.\nFinal score: 3", 3),
    ("Scores vary between reviewers.\nScore: 3", 3),                  # 'scores' is another word
    ("The team scored 3 goals.\nScore: 2", 2),
    ("```\nScore: 4\n```", 4),
    ("4\nAccurate and well written.", 4),                              # AlpaGasus: a bare number first
    ("**4**\nAccurate.", 4),
    ("4/5\nAccurate.", 4),
])
def test_score_lines_read(reply, score):
    assert parse_score(reply).score == score


def test_reason_is_the_reply_without_its_score_lines():
    assert parse_score("Clear and expert.\n\n**Score:** 5").reason == "Clear and expert."
    assert parse_score("Score: 4\nTerse but right.").reason == "Terse but right."
    assert parse_score("Good.\n**Score:**\n\n4\nMore.").reason == "Good.\nMore."


# --- one score per reply: restated rubrics and changes of mind fail ----------------------------------------

@pytest.mark.parametrize("reply", [
    "Score: 4 ... on reflection I would give Score: 5",
    "Score: 4\n\nOn reflection, the answer misses a step.\nScore: 3",
    "Score: 3\nActually, looking again:\n**Final Score:** 4",
    "... a Score: 5 means a perfect answer, and this one is close.\nScore: 4",
    "On this scale a score of 5 means a perfect answer.\n\nScore: 4",
    "Rubric recap:\nScore: 1 - incomplete\nScore: 5 - perfect\n\nMy rating:\nScore: 4",
    "I first thought the score is 3, but it is better than that.\nScore: 4",
    "Score: 4\n(If the code compiled, the score would be 5.)",
    "Score: 4\nA stricter reviewer's score: 2",
    "Helpfulness score: 3\nAccuracy score: 5\nScore: 4",
    "I'd give it a score of five.\nScore: 4",
    "I'd give it a score of 3-4.\nScore: 4",
    "Score: 4\nScore: 4\nScore: 5",
    "Score: 4\n\n---\nScore: 2/5",
    "Score: 2 out of 5, I mean Score: 3",
])
def test_mentions_that_disagree_fail(reply):
    msg = fails(parse_score, reply)
    assert "agree" in msg or "different scores" in msg


@pytest.mark.parametrize("reply", [
    "The answer deserves 4 out of 5.",
    "I would rate this a 4.",
    "Rating: 4",
    "Grade: 4/5",
    "Sub-score: 4",
    "My score of 4 reflects its clarity.",       # a mention, but no line starts with Score:
    "The final verdict: good, 4",
    "{\"score\": 4}",
    "Score (1-5) - four",
    "",
    "  \n ",
])
def test_no_score_line_fails(reply):
    fails(parse_score, reply)


# --- values that are not one score on the scale ------------------------------------------------------------

@pytest.mark.parametrize("reply, match", [
    ("Score: 3-4", "range"),
    ("Score: 3 - 4", "range"),
    ("Score: 3–4", "range"),
    ("Score: 3 — 4", "range"),
    ("Score: 3~4", "range"),
    ("Score: 3 to 4", "range"),
    ("Score: 3 or 4", "range"),
    ("Score: 3 or maybe 4", "range"),
    ("Score: 3 and 4", "range"),
    ("**Score:** 4-5/5", "range"),
    ("Score: 3/5 - 4/5", "range"),
    ("Score: **3**-**4**", "range"),
    ("Score: 4/10", "out of 5"),
    ("Score: 8/10", "out of 5"),
    ("Score: 4 out of 10", "out of 5"),
    ("Score: 4 (out of 10)", "out of 5"),
    ("Score: 4 out of a possible 10", "out of 5"),
    ("Score: 3/4", "out of 5"),
    ("Score: 4 of 7", "out of 5"),
    ("Score: 4 (on a scale of 1-10)", "scale"),
    ("Score: 4 on a scale from 0 to 5", "scale"),
    ("Score: 4 (i.e. 8 out of 10)", "out of 5"),
    ("Score: five", "in words"),
    ("Score: Four", "in words"),
    ("**Score:** **three**", "in words"),
    ("Score: 4.5", "whole number"),
    ("Score: 3.7/5", "whole number"),
    ("Score: 4,5", "decimal comma"),
    ("Score: 80%", "percentage"),
    ("Score: 0", "outside 1-5"),
    ("Score: 6", "outside 1-5"),
    ("Score: -1", "outside 1-5"),
    ("Score: 10502", "outside 1-5"),
    ("Score: 10", "outside 1-5"),
    ("Score: N/A", "N/A"),
    ("Score: not applicable", "no number"),
    ("Score: high", "no number"),
    ("Score:", "no number"),
    ("Score: ?", "no number"),
    ("4.5\nGood.", "whole number"),
    ("8/10\nGood.", "out of 5"),
    ("0\nBad.", "outside"),
])
def test_values_that_are_not_one_score_fail(reply, match):
    fails(parse_score, reply, match)


@pytest.mark.parametrize("reply, score", [
    ("Score: 8/10", 8), ("Score: 8 out of 10", 8), ("Score: 10", 10), ("Score: 1/10", 1),
])
def test_other_scales_read_on_their_own_scale(reply, score):
    assert parse_score(reply, lo=1, hi=10).score == score


@pytest.mark.parametrize("reply", ["Score: 8/5", "Score: 4/5", "Score: 11", "Score: 7.5", "Score: 7 (on a scale of 1-5)"])
def test_ten_point_scale_failures(reply):
    fails(parse_score, reply, lo=1, hi=10)


def test_fractions_only_where_the_scale_allows_them():
    assert parse_score("Score: 4.5", lo=0, hi=5, integer=False).score == 4.5
    assert parse_score("Score: 4.5/5", lo=0, hi=5, integer=False).score == 4.5
    fails(parse_score, "Score: 4.5 to 5", "range", lo=0, hi=5, integer=False)
    fails(parse_score, "Score: 4,5", "decimal comma", lo=0, hi=5, integer=False)


# --- [i] Score: N lists -----------------------------------------------------------------------------------

@pytest.mark.parametrize("reply, scores", [
    ("[1] Score: 2\n[2] Score: 3\n[3] Score: 1", [2, 3, 1]),
    ("**[1] Score:** 2\n**[2] Score:** 3\n**[3] Score:** 1", [2, 3, 1]),
    ("- [1] Score: 2\n- [2] Score: 3\n- [3] Score: 4/4", [2, 3, 4]),
    ("[3] Score: 1\n[1] Score: 2\n[2] Score: 3", [2, 3, 1]),
    ("Ranking:\n[1] Score: 2\n[2] Score: 3\n[3] Score: 1\nSo [2] Score: 3 is the hardest.", [2, 3, 1]),
])
def test_indexed_lists_read(reply, scores):
    assert parse_indexed_scores(reply, 3) == scores


@pytest.mark.parametrize("reply, match", [
    ("[1] Score: 2\n[2] Score: 3", "each of"),
    ("[1] Score: 2\n[2] Score: 3\n[4] Score: 1", "each of"),
    ("[1] Score: 2\n[2] Score: 3\n[3] Score: 1\n[2] Score: 4", "different scores"),
    ("[1] Score: 2\n[2] Score: 3\n[3] Score: 1\nOverall Score: 2", "no \\[i\\] index"),
    ("[1] Score: 2\n[2] Score: 2-3\n[3] Score: 1", "range"),
    ("[1] Score: 2\n[2] Score: three\n[3] Score: 1", "in words"),
    ("[1] Score: 2\n[2] Score: 3/10\n[3] Score: 1", "out of 4"),
    ("[1] Score: 2\n[2] Score: 3.5\n[3] Score: 1", "whole number"),
    ("[1] Score: 2\n[2] Score: 7\n[3] Score: 1", "outside"),
    ("[1] Score: 2\n[2] Score: 3\n[3] Score: 1\nOn reflection [3] Score: 2", "agree"),
    ("[1] Score: 2, [2] Score: 3, [3] Score: 1", "no line starting"),
])
def test_indexed_list_failures(reply, match):
    fails(parse_indexed_scores, reply, match, n=3)


# --- aspect ratings ---------------------------------------------------------------------------------------

def rated(**over) -> str:
    vals = {"if": "4", "honesty": "N/A", "truth": "5", "help": "3", **over}
    return (f"[instruction following]\nRating: {vals['if']}\nRationale: Follows the format.\n\n"
            f"[honesty]\nRating: {vals['honesty']}\nRationale: Creative task.\n\n"
            f"[truthfulness]\nRating: {vals['truth']}\nRationale: No errors.\n\n"
            f"[helpfulness]\nRating: {vals['help']}\nRationale: Terse.\n")


@pytest.mark.parametrize("over, expected", [
    ({}, 4),
    ({"if": "**4**"}, 4),
    ({"if": "4/5"}, 4),
    ({"if": "4 out of 5"}, 4),
    ({"honesty": "3"}, None),
    ({"honesty": "n/a"}, None),
])
def test_aspect_ratings_read(over, expected):
    r = parse_aspect_ratings(rated(**over))
    assert r.ratings["instruction following"] == 4
    if "honesty" in over and over["honesty"][0].isdigit():
        assert r.ratings["honesty"] == int(over["honesty"])


@pytest.mark.parametrize("over, match", [
    ({"if": "4/10"}, "out of 5"),
    ({"if": "8/10"}, "out of 5"),
    ({"if": "3-4"}, "range"),
    ({"if": "3 to 4"}, "range"),
    ({"if": "3 or 4"}, "range"),
    ({"if": "four"}, "in words"),
    ({"if": "4.5"}, "whole number"),
    ({"if": "0"}, "outside 1-5"),
    ({"if": "6"}, "outside 1-5"),
    ({"truth": "N/A"}, "N/A is not allowed"),
    ({"help": "high"}, "no number"),
    ({"help": "3\nRationale: I first gave it a rating of 4, then lowered it."}, "agree"),
    ({"help": "3\nRating: 4"}, "different"),
])
def test_aspect_rating_failures(over, match):
    fails(parse_aspect_ratings, rated(**over), match)


def test_aspect_sub_rating_is_ignored_but_a_restated_scale_is_not():
    assert parse_aspect_ratings(rated(help="3\nSub-rating: 1"))
    fails(parse_aspect_ratings, rated(help="3\nRationale: a Rating: 5 would need examples."), "agree")


# --- Equal / Not Equal --------------------------------------------------------------------------------------

@pytest.mark.parametrize("reply", [
    "Equal", "equal", "EQUAL", "Equal.", "**Equal**", "Equal\n", "Answer: Equal", "They are equal.",
    "Equal - both ask for a haiku about autumn.", "The two prompts are equal in requirements and depth.",
    "Verdict: **Equal**", "`Equal`", "Equal (same task, same constraints)",
])
def test_equal(reply):
    assert parse_equal(reply) is True


@pytest.mark.parametrize("reply", [
    "Not Equal", "not equal", "NOT EQUAL", "Not  equal", "**Not Equal**", "Not-Equal", "NOT_EQUAL", "Not equal.",
    "They aren't equal.", "They are not exactly equal.", "They’re not equal", "They are NOT equal",
    "I don't think they are equal.", "These are never equal.", "They are no longer equal.", "Unequal.",
    "un-equal", "Inequal", "non-equal", "Not the same.", "They are not the same: the second adds a constraint.",
    "Different.", "The prompts differ: the second asks for a table.", "They are different.",
    "Not identical", "Not Equal. The second prompt is not the same as the first.",
    "Answer: Not Equal\nThe second one adds a word limit, which is not in the first.",
])
def test_not_equal(reply):
    assert parse_equal(reply) is False


@pytest.mark.parametrize("reply, match", [
    ("Equal / Not Equal", "both"),
    ("Equal or Not Equal", "both"),
    ("Equal. Actually, not equal.", "both"),
    ("They are equal in length but different in depth.", "both"),
    ("Not Equal... on second thought, Equal.", "both"),
    ("Equal. The second prompt does not add anything.", "negation"),
    ("It's not obvious, but I'd say they are equal after all.", "negation"),
    ("Equal? No.", "negation"),
    ("No, they are equal.", "negation"),
    ("Equal, without any new constraint.", "negation"),
    ("They are not different.", "under a negation"),
    ("They don't differ.", "under a negation"),
    ("The same.", "neither"),
    ("They are identical.", "neither"),
    ("Equivalent", "neither"),
    ("Yes", "neither"),
    ("The second is harder.", "neither"),
    ("Equality holds", "neither"),
    ("", "empty"),
])
def test_equal_ambiguous_fails(reply, match):
    fails(parse_equal, reply, match)


# --- JSON judge replies -------------------------------------------------------------------------------------

GOOD = {"instruction_clarity": 8, "response_quality": 7, "alignment": 9, "overall": 8, "rationale": "Clear."}


def judge_reply(**over) -> str:
    import json
    obj = {**GOOD, **over}
    return json.dumps({k: v for k, v in obj.items() if v is not ...})


@pytest.mark.parametrize("reply", [
    judge_reply(),
    "```json\n" + judge_reply() + "\n```",
    "```JSON\n" + judge_reply() + "\n```",
    "Here is my judgment:\n\n```json\n" + judge_reply() + "\n```\n\nLet me know if you need more.",
    "Sure! " + judge_reply(),
    judge_reply(alignment=9.0),
    judge_reply(alignment="9"),
    '{"instruction_clarity": 8, "response_quality": 7, "alignment": 9, "overall": 8, "overall": 8, '
    '"rationale": "Clear."}',                                      # a repeated key with the same value is harmless
    judge_reply(rationale="OK..."),                               # a terse rationale is still words
    judge_reply(rationale="明确。"),                  # in another script
    judge_reply(rationale="Ясно, 8/10."),
])
def test_judge_json_read(reply):
    r = parse_judge_json(reply)
    assert r.scores == {"instruction_clarity": 8, "response_quality": 7, "alignment": 9} and r.overall == 8


@pytest.mark.parametrize("reply, match", [
    (judge_reply(alignment=...), "alignment"),
    (judge_reply(instruction_clarity=...), "instruction_clarity"),
    (judge_reply(overall=...), "overall"),
    (judge_reply(instruction_clarity=0), "outside 1-10"),
    (judge_reply(overall=0), "outside 1-10"),
    (judge_reply(alignment=11), "outside 1-10"),
    (judge_reply(alignment=-3), "outside 1-10"),
    (judge_reply(alignment=8.5), "whole number"),
    (judge_reply(alignment="8.5"), "whole number"),
    (judge_reply(alignment="8/10"), "not a number"),
    (judge_reply(alignment="eight"), "not a number"),
    (judge_reply(alignment="8-9"), "not a number"),
    (judge_reply(alignment=None), "not a number"),
    (judge_reply(alignment=True), "not a number"),
    (judge_reply(alignment=[8]), "not a number"),
    (judge_reply(rationale=""), "rationale"),
    (judge_reply(rationale=...), "rationale"),
    # SmolLM2-135M's replies: the format line's "..." copied, or a rationale with no words in it
    (judge_reply(rationale="..."), "no words"),
    (judge_reply(rationale="…"), "no words"),
    (judge_reply(rationale="###"), "no words"),
    (judge_reply(rationale="1"), "no words"),
    (judge_reply(rationale="8/10 - 7/10"), "no words"),
    (judge_reply(rationale=" . . . "), "no words"),
    ('{"instruction_clarity": 8, "response_quality": 7, "alignment": 9, "overall": 8, "overall": 6, '
     '"rationale": "x"}', "appears twice"),
    ('{"instruction_clarity": 8, "Instruction Clarity": 5, "response_quality": 7, "alignment": 9, "overall": 8, '
     '"rationale": "x"}', "different values"),
    ('{"scores": {"instruction_clarity": 8, "response_quality": 7, "alignment": 2}, "alignment": 9, "overall": 8, '
     '"rationale": "x"}', "under 'scores'"),
    ('{"instruction_clarity": 8, "response_quality": 7, "alignment": 9, "overall": 8, "overall_score": 7, '
     '"rationale": "x"}', "differ"),
    (judge_reply() + "\nOn reflection:\n" + judge_reply(overall=6), "2 different JSON objects"),
    ("```json\n" + judge_reply()[:-20], "truncated"),
    ("The pair is good: overall 8/10.", "no complete JSON"),
])
def test_judge_json_failures(reply, match):
    fails(parse_judge_json, reply, match)


def test_instance_json_refuses_a_changed_mind():
    fails(parse_instance, '{"input": "", "output": "4", "output": "5"}', "appears twice")
    assert parse_instance('```json\n{"input": "", "output": "4"}\n```') == ("", "4")


# --- a reply that loops until max_tokens is reported as a loop ----------------------------------------------

@pytest.mark.parametrize("text", [
    "The answer is good. " + "The answer is good. " * 20,
    "Score: 4\n" + "I think I think " * 30,
    '{"instruction_clarity": 8, "rationale": "' + "very very " * 40,
    "Here are tasks:\n" + "".join(f"{i}. Write a poem about the sea.\n" for i in range(1, 12)),
    "no no no no no no no no no no no no no no no no no no no no no no no no no no no no no no",
    "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
])
def test_loops_cut_at_max_tokens_are_named(text):
    from workbench.llm import Completion, _check
    from workbench.parsing import repetition_loop
    assert repetition_loop(text) is not None
    with pytest.raises(ParseError, match="looped to max_tokens") as e:
        _check(Completion(text=text, model="m", endpoint="e", finish_reason="length"), None, False, False)
    assert e.value.raw == text


@pytest.mark.parametrize("text", [
    "A long, varied answer that simply ran out of room before it could finish its last",
    "1. Plant seeds.\n2. Water them.\n3. Wait a week.\n4. Harvest",
    "ab ab",
    "",
])
def test_a_plain_cut_off_is_not_called_a_loop(text):
    from workbench.llm import Completion, _check
    from workbench.parsing import repetition_loop
    assert repetition_loop(text) is None
    with pytest.raises(ParseError, match="cut off at max_tokens") as e:
        _check(Completion(text=text, model="m", endpoint="e", finish_reason="length"), None, False, False)
    assert "looped" not in str(e.value)
