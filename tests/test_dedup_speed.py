"""The fast dedup paths give the results of the plain ones: match_text's ASCII path, the character-count bound
that rules pairs out before scoring, the block-wise row texts, and the worker processes."""
from __future__ import annotations

import random
import re
import string
import sys
from itertools import combinations
from pathlib import Path

import numpy as np
import orjson
import pytest
from rapidfuzz.distance import Indel

from workbench import dedup, dedup_scan, importer, near_dup
from workbench.samples import insert_samples
from workbench.store import ensure_dataset, transaction

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import bench_dedup  # noqa: E402

ALL = ("instruction", "input", "response")
_PUNCT = bytes.maketrans(string.punctuation.encode(), b" " * len(string.punctuation))
_NONWORD = re.compile(r"[\W_]+")


def reference_match_text(text: str) -> str:
    """match_text as first written (split/join): the definition the fast path must keep."""
    if text.isascii():
        return " ".join(text.encode().translate(_PUNCT).decode().lower().split())
    return _NONWORD.sub(" ", text.casefold()).strip()


def test_match_text_equals_its_definition_on_every_ascii_character():
    rng = random.Random(11)
    every = "".join(map(chr, range(128)))
    cases = ["", " ", "\x1f", "a\x1cb", "  A,,B  ", "x\t\n\x0b\x0c\ry", "\x00\x7f", "...", "It's-a_TEST!"]
    cases += ["".join(rng.choice(every if rng.random() < 0.5 else " .a,B\t") for _ in range(rng.randint(0, 40)))
              for _ in range(20_000)]
    cases += ["Größe straße", "Ünïcödé — dash…", "请写一首关于秋天的诗", "emoji 🙂 here", "ＦＵＬＬ width"]
    assert [near_dup.match_text(c) for c in cases] == [reference_match_text(c) for c in cases]


def _edited(rng: random.Random, s: str, edits: int) -> str:
    alphabet = "abcdeéü中 "
    for _ in range(edits):
        i = rng.randrange(len(s) + 1)
        op = rng.randrange(3)
        if op == 0:
            s = s[:i] + rng.choice(alphabet) + s[i:]
        elif op == 1 and s:
            s = s[:i] + s[i + 1:]
        elif s:
            s = s[:i] + rng.choice(alphabet) + s[i + 1:]
    return s


@pytest.mark.parametrize("threshold", [0.5, 0.8, 0.85, 0.9, 0.95, 1.0])
def test_character_count_bound_never_rules_out_a_pair_that_reaches_the_threshold(threshold):
    rng = random.Random(int(threshold * 100))
    a_txt, b_txt = [], []
    for _ in range(4000):
        base = "".join(rng.choice("abcdefgh ijk中é") for _ in range(rng.randint(1, 120)))
        a_txt.append(base)
        b_txt.append(_edited(rng, base, rng.randint(0, 12)))
    for _ in range(2000):      # unrelated texts of about the same length: the bound's business
        a_txt.append("".join(rng.choice("abcdefgh ijk中é") for _ in range(60)))
        b_txt.append("".join(rng.choice("lmnopqrstuvw xyz") for _ in range(rng.randint(55, 65))))
    texts = a_txt + b_txt
    lens = np.array([len(t) for t in texts], dtype=np.int64)
    hist = near_dup._histograms(texts, lens, False)
    a = np.arange(len(a_txt))
    b = a + len(a_txt)
    may = near_dup._may_reach(hist, a, b, lens[a], lens[b], threshold)
    sims = np.array([Indel.normalized_similarity(x, y) for x, y in zip(a_txt, b_txt)])
    assert not np.any((sims >= threshold) & ~may)            # never a pair that passes
    assert np.sum(sims >= threshold) > 100
    if threshold >= 0.8:
        assert np.sum(~may[-2000:]) == 2000                   # and it does rule pairs out


def test_histograms_saturate_and_bucket_like_the_definition():
    texts = ["a" * 300 + "b", "", "中文 abc", "\U0001f642x"]
    lens = np.array([len(t) for t in texts], dtype=np.int64)
    hist = near_dup._histograms(texts, lens, False)
    for t, h in zip(texts, hist):
        want = np.zeros(near_dup.BUCKETS, dtype=np.int64)
        for ch in t:
            want[ord(ch) % near_dup.BUCKETS] += 1
        assert h.tolist() == np.minimum(want, 255).tolist()


def _oracle(rows: list[tuple[int, str, str | None]], threshold: float) -> list[list[int]]:
    """Every pair compared: connected components of pairs whose compared texts are all >= threshold similar."""
    norm = [(i, near_dup.match_text(m), None if e is None else near_dup.match_text(e)) for i, m, e in rows]
    norm = [r for r in norm if r[1] or r[2]]
    parent = {r[0]: r[0] for r in norm}

    def find(x):
        while parent[x] != x:
            x = parent[x]
        return x
    for (i, m1, e1), (j, m2, e2) in combinations(norm, 2):
        sims = [Indel.normalized_similarity(m1, m2)]
        if e1 is not None:
            sims.append(Indel.normalized_similarity(e1, e2))
        if min(sims) >= threshold:
            a, b = sorted((find(i), find(j)))
            parent[b] = a
    groups: dict[int, list[int]] = {}
    for i in parent:
        groups.setdefault(find(i), []).append(i)
    return sorted(sorted(g) for g in groups.values() if len(g) > 1)


def _crafted(threshold: float) -> list[tuple[int, str, str]]:
    """Near pairs at and around the threshold, very short rows, unicode, empty parts."""
    base = "Describe the water cycle and how evaporation forms clouds over the ocean"
    rows = [base, base.replace("ocean", "oceans"), base.upper() + "!!", "X" + base[1:] + "Y",
            base[:40], "", " ", "?!", "a", "A", "ab", "ba",
            "请写一首关于秋天的诗", "请写一首关于秋天的短诗", "Wie heißt die Hauptstadt von Österreich?",
            "wie heisst die hauptstadt von osterreich", "🙂🙂🙂 smile", "🙂🙂 smile",
            "Translate 'good morning' into French.", "Translate 'good night' into French."]
    # pairs whose similarity sits exactly at, just above and just below the threshold
    word = "abcdefghijklmnopqrstuvwxyz0123456789"
    for n in (11, 20, 21, 22, 33, 38, 40, 41, 42):
        a = (word * 3)[:n]
        for cut in range(0, 8):
            b = a[:n - cut]
            rows += [a, b]
    return [(i + 1, r, "") for i, r in enumerate(rows)]


@pytest.mark.parametrize("threshold", [0.8, 0.9, 0.95])
def test_clusters_equal_the_all_pairs_oracle_on_crafted_rows(threshold):
    rows = [(i, m, None) for i, m, _ in _crafted(threshold)]
    assert near_dup.near_duplicate_groups(rows, threshold) == _oracle(rows, threshold)


def test_character_count_bound_changes_no_cluster(monkeypatch):
    """Old candidate generation (every gated neighbour scored) vs new (bound first): the same clusters."""
    rng = random.Random(3)
    rows = []
    for i, (_, m, _) in enumerate(_crafted(0.9) * 3):
        rows.append((i + 1, _edited(rng, m, rng.randint(0, 3)) if m.strip() else m, None))
    rows += [(len(rows) + k + 1, bench_dedup.base_row(bench_dedup.Vocab(size=500), 5, k)["instruction"], None)
             for k in range(300)]
    for threshold in (0.8, 0.9):
        new_stats, old_stats = near_dup.Stats(), near_dup.Stats()
        new = near_dup.near_duplicate_groups(rows, threshold, stats=new_stats)
        with monkeypatch.context() as m:
            m.setattr(near_dup, "_may_reach", lambda hist, a, *rest: np.ones(len(a), dtype=bool))
            old = near_dup.near_duplicate_groups(rows, threshold, stats=old_stats)
        assert new == old
        assert new_stats.filtered > 0 and old_stats.filtered == 0
        assert new_stats.compared + new_stats.filtered == old_stats.compared


def _row_texts_one_by_one(rows, fields):
    return [dedup.row_texts(a, b, c, m, bool(p), fields) for _, a, b, c, m, p in rows]


@pytest.mark.parametrize("fields", [("instruction", "input"), ("instruction",), ("input",), ("response",),
                                    ALL, ("input", "response"), ("instruction", "response")])
def test_block_texts_equal_row_texts_row_by_row(fields):
    conv = orjson.dumps([{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"},
                         {"role": "user", "content": "And now?"}, {"role": "assistant", "content": None}]).decode()
    plain = [(1, "Sort a list", "", "Use sorted()", None, 0), (2, "", "only input", "r", None, 0),
             (3, "", "", "", None, 0), (4, "instr", "inp", "", None, 1)]
    mixed = plain + [(5, "ignored", "ctx", "chosen", conv, 1), (6, "x", "", "y", conv, 0), (7, "z", "", "w", "", 0)]
    for rows in (plain, mixed):
        lean = [tuple(v if col in fields or k in (0, 4, 5) else "" for k, (col, v) in
                      enumerate(zip(("id", "instruction", "input", "response", "m", "p"), r))) for r in rows]
        ids, mains, extras = dedup_scan._block_texts(lean, fields)
        want = _row_texts_one_by_one(rows, fields)
        assert ids == [r[0] for r in rows]
        assert [near_dup.match_text(m) for m in mains] == [near_dup.match_text(w[0]) for w in want]
        if extras is None:
            assert all(w[1] is None for w in want)
        else:
            assert [near_dup.match_text(e) for e in extras] == [near_dup.match_text(w[1] or "") for w in want]


def _add(conn, rows, name="d", kind="sft"):
    with transaction(conn):
        did = ensure_dataset(conn, name, kind)
        insert_samples(conn, did, rows)


@pytest.mark.slow
def test_worker_processes_give_the_clusters_of_one_process(db_path, conn, monkeypatch):
    monkeypatch.setattr(dedup_scan, "SLICE_IDS", 700)      # several slices per worker, both workers busy
    truth, _ = bench_dedup.build_store(db_path, 3000, seed=5, copy_rate=0.1, negative_rate=0.1)
    _add(conn, [{"instruction": "", "input": "", "response": ""}, {"instruction": "请写一首关于秋天的诗"},
                {"instruction": "请写一首关于秋天的短诗"}], name="e")
    for fields in (ALL, dedup.DEFAULT_FIELDS, ("response",)):
        one_stats, two_stats = dedup.Stats(), dedup.Stats()
        one = dedup.find_clusters(conn, fields=fields, stats=one_stats, workers=1)
        two = dedup.find_clusters(conn, fields=fields, stats=two_stats, workers=2)
        assert one == two and one
        assert (one_stats.rows, one_stats.exact_rows, one_stats.compared) == \
            (two_stats.rows, two_stats.exact_rows, two_stats.compared)
    precision, recall, _, _ = bench_dedup.pair_scores(dedup.find_clusters(conn, ["synthetic"], fields=ALL,
                                                                          workers=2), truth)
    assert precision >= 0.99 and recall >= 0.99


def test_a_failing_worker_stops_the_scan_with_its_error(db_path, conn):
    _add(conn, [{"instruction": "a b c"}])
    with pytest.raises(RuntimeError, match="dedup worker failed: .*no such column: nope"):
        list(dedup_scan._pooled(str(db_path), "nope = 1", [], dedup.DEFAULT_FIELDS, 1, 1, 2))


def test_conversations_compare_their_turns_through_the_block_path(conn, shared_data):
    res = importer.import_file(conn, shared_data / "fastchat-sharegpt" / "dummy_conversation.json")
    assert res.rows == 500
    got = dedup.find_clusters(conn, fields=ALL)
    rows = [(sid, *dedup.row_texts(ins, inp, resp, msgs, bool(pref), ALL)) for sid, ins, inp, resp, msgs, pref
            in conn.execute("SELECT id, instruction, input, response, messages, rejected IS NOT NULL FROM samples "
                            "ORDER BY id")]
    texts = {sid: (near_dup.match_text(m), near_dup.match_text(e)) for sid, m, e in rows}
    assert got
    for c in got:    # every member is >= threshold similar on both parts to another member
        for i in c:
            assert any(min(Indel.normalized_similarity(texts[i][0], texts[j][0]),
                           Indel.normalized_similarity(texts[i][1], texts[j][1])) >= 0.9 for j in c if j != i)


def test_backward_keys_equal_their_definition():
    rng = random.Random(8)
    texts, mlen = [], []
    for _ in range(3000):
        m = rng.choice([0, 1, 30, 63, 64, 65, 200])
        main = "".join(rng.choice("ab é中🙂") for _ in range(m))
        extra = "".join(rng.choice("xyz ü") for _ in range(rng.randint(0, 80)))
        texts.append(main + "\x1f" + extra)
        mlen.append(m)
    kb = near_dup.KEY_BYTES
    want = [(t[max(m - kb, 0):m][::-1] + "\x1f" + t[:m:-1][:near_dup.SNIPPET]).encode()[:kb]
            for t, m in zip(texts, mlen)]
    assert near_dup._backward_keys(texts, mlen, True) == want
    assert near_dup._backward_keys([t[:m] for t, m in zip(texts, mlen)], mlen, False) == \
        [t[max(m - kb, 0):m][::-1].encode()[:kb] for t, m in zip(texts, mlen)]
