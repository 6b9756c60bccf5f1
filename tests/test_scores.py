"""Score filters name their rubric: the readers refuse what almost matches (bare numbers, other scales, ranges
where a bound is expected, unknown rubrics), and a score keeps its scale and stale flag."""
from __future__ import annotations

import pytest

from workbench import review, scores
from workbench.samples import insert_samples
from workbench.store import ensure_dataset, transaction

PRESENT = {"curate": (1, 5), "judge": (1, 10), "judge.alignment": (1, 10)}


@pytest.mark.parametrize("text, which, expected", [
    ("curate=4.5", "min_score", ("curate", 4.5)),
    (" curate = 4 ", "min_score", ("curate", 4.0)),
    ("judge.alignment=7", "max_score", ("judge.alignment", 7.0)),
    ("preference.chosen=3.75", "min_score", ("preference.chosen", 3.75)),
])
def test_bounds_that_read(text, which, expected):
    assert scores.parse_bound(text, which) == expected


@pytest.mark.parametrize("text, message", [
    ("4.5", "name the rubric"),                       # which scale is 4.5 on?
    ("4", "name the rubric"),
    ("curate>=4", "not a rubric name"),               # another operator than =
    ("curate:4", "name the rubric"),
    ("=4", "not a rubric name"),
    ("Curate=4", "not a rubric name"),                # rubric names are lowercase
    ("cur ate=4", "not a rubric name"),
    ("judge.=4", "not a rubric name"),
    ("curate=", "not a number"),
    ("curate=four", "not a number"),
    ("curate=4/5", "not a number"),                   # a denominator is not a bound
    ("curate=4..5", "not a number"),                  # a range where one bound is expected
    ("curate=nan", "not a number"),
    ("curate=inf", "not a number"),
    ("curate=4=5", "not a number"),
])
def test_bounds_that_almost_read_are_refused(text, message):
    with pytest.raises(scores.ScoreFilterError, match=message):
        scores.parse_bound(text, "min_score", PRESENT)


def test_build_checks_rubrics_and_scales_and_lists_what_is_present():
    f = scores.build(["curate=4", "judge=6"], "judge=9", present=PRESENT)
    assert f.bounds == (("curate", 4.0, None), ("judge", 6.0, 9.0))
    assert f.to_dict() == {"min_score": ["curate=4", "judge=6"], "max_score": ["judge=9"]}
    assert scores.build("curate=4,judge=6", present=PRESENT).bounds == (("curate", 4.0, None), ("judge", 6.0, None))
    for mins, maxs, message in (("4.5", None, "rubrics present: curate, judge, judge.alignment"),
                                ("curat=4", None, "no sample in scope has a 'curat' score"),
                                ("curate=7", None, "outside curate's scale 1-5"),
                                ("curate=0", None, "outside curate's scale 1-5"),
                                (None, "judge=11", "outside judge's scale 1-10"),
                                (["curate=4", "curate=5"], None, "two different bounds for curate"),
                                ("judge=8", "judge=6", "min 8 is above max 6"),
                                (4.5, None, "name the rubric")):
        with pytest.raises(scores.ScoreFilterError, match=message):
            scores.build(mins, maxs, present=PRESENT)
    with pytest.raises(scores.ScoreFilterError, match="no sample has a score yet"):
        scores.build("4", present={})


@pytest.mark.parametrize("text, expected", [
    ("curate=4..5", ("curate", 4.0, 5.0)), ("judge=7..", ("judge", 7.0, None)), ("judge=..3", ("judge", None, 3.0)),
    ("judge=7", ("judge", 7.0, 7.0)), ("judge.alignment=2.5..9", ("judge.alignment", 2.5, 9.0)),
])
def test_browse_ranges(text, expected):
    assert scores.parse_range(text) == expected


@pytest.mark.parametrize("text, message", [
    ("7..10", "name the rubric"), ("7", "name the rubric"), ("judge=..", "a number or a range"),
    ("judge=7...9", "a number or a range"), ("judge=a..b", "not a number"), ("JUDGE=7", "not a rubric name"),
])
def test_browse_ranges_that_almost_read(text, message):
    with pytest.raises(scores.ScoreFilterError, match=message):
        scores.parse_range(text, PRESENT)


def test_record_keeps_the_latest_with_its_scale_and_refuses_off_scale(conn):
    with transaction(conn):
        did = ensure_dataset(conn, "d")
        insert_samples(conn, did, [{"instruction": "q", "response": "a"}])
        scores.record(conn, 1, "judge", 4, (1, 10), judge="m1", template_version="1")
        scores.record(conn, 1, "judge", 8, (1, 10), judge="m2", template_version="2")   # the latest replaces it
        scores.record(conn, 1, "curate", 5, (1, 5))
        for bad in (0, 6, True, "5", float("nan")):
            with pytest.raises(scores.ScoreFilterError):
                scores.record(conn, 1, "curate", bad, (1, 5))
        with pytest.raises(scores.ScoreFilterError, match="rubric"):
            scores.record(conn, 1, "Curate", 3, (1, 5))
    got = {s["rubric"]: s for s in scores.of_sample(conn, 1)}
    assert (got["judge"]["score"], got["judge"]["judge"], got["judge"]["template_version"]) == (8, "m2", "2")
    assert scores.describe(scores.of_sample(conn, 1)) == "curate 5/5 · judge 8/10"
    assert scores.rubrics(conn, did) == {"curate": (1, 5), "judge": (1, 10)}
    review.edit(conn, 1, {"response": "changed"}, "review:t")
    assert scores.describe(scores.of_sample(conn, 1)) == "curate 5/5 (stale) · judge 8/10 (stale)"
    assert scores.label({"rubric": "x", "score": 0.5, "scale": [0, 1], "stale": False}) == "x 0.5 (0-1)"
    # Balance's maintained counts leave stale scores out, and a fresh score brings the sample back
    assert scores.histogram_cells(conn, "judge", did) == []
    with transaction(conn):
        scores.record(conn, 1, "judge", 9.5, (1, 10))
    assert scores.histogram_cells(conn, "judge", did) == [(9, "pending", 1)]
