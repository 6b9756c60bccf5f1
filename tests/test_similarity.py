"""ROUGE-L F1 as Self-Instruct computes it (rouge_score tokenization), on pairs worked out by hand."""
from __future__ import annotations

import pytest

from workbench.similarity import RougePool, rouge_l, tokenize


def test_tokenization_matches_rouge_score():
    assert tokenize("Hello, World! It's 3D-printing_time.") == ["hello", "world", "it", "s", "3d", "printing", "time"]
    assert tokenize("   ") == []


@pytest.mark.parametrize("a, b, expected", [
    # identical up to case and punctuation
    ("Give three tips for staying healthy.", "give three tips for staying healthy", 1.0),
    # LCS "the cat on the mat" = 5 of 6 and 6 tokens -> 2*5/12
    ("The cat sat on the mat.", "the cat was on the mat", 10 / 12),
    # LCS "write a poem about" = 4; lengths 6 and 5 -> 8/11
    ("Write a short poem about spring.", "Write a poem about autumn", 8 / 11),
    # no shared token
    ("Translate to French.", "Sort these numbers", 0.0),
    # order matters: LCS of (a b c d) and (d c b a) is 1 -> 2/8
    ("a b c d", "d c b a", 2 / 8),
    ("", "anything", 0.0),
])
def test_known_pairs(a, b, expected):
    assert rouge_l(a, b) == pytest.approx(expected)
    assert rouge_l(b, a) == pytest.approx(expected)


def test_non_latin_text_is_compared_by_character():
    # rouge_score would give 0 here (no [a-z0-9] tokens); ours: LCS 5 chars of 6 and 5 -> 10/11
    assert rouge_l("翻译这个句子", "翻译这句子") == pytest.approx(10 / 11)
    assert rouge_l("翻译这个句子", "今天天气很好") == 0.0


def test_pool_nearest_and_early_stop():
    pool = RougePool(["Give three tips for staying healthy.", "What is the capital of France?",
                      "Write a short poem about spring."])
    score, i = pool.nearest("Write a poem about autumn")
    assert i == 2 and score == pytest.approx(8 / 11)
    score, i = pool.nearest("give three tips for staying healthy", stop_at=0.7)
    assert i == 0 and score == 1.0
    assert pool.nearest("???") == (0.0, -1)
    pool.add("Write a poem about autumn")
    assert pool.nearest("write a poem about autumn")[1] == 3
    assert len(pool) == 4


def test_pool_scores_agree_with_pairwise():
    texts = ["List five fruits that are red.", "Name five red fruits.", "Explain how a rainbow forms.",
             "Describe the process that forms rainbows."]
    pool = RougePool(texts)
    for q in ["Name five fruits that are red", "How does a rainbow form?"]:
        best = max(rouge_l(q, t) for t in texts)
        assert pool.nearest(q)[0] == pytest.approx(best)
