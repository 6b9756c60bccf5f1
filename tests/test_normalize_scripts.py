"""`clean --normalize` respects scripts: ZWJ/ZWNJ stay inside words and emoji sequences, terminal escape
sequences go whole (no "[31m" left behind), and text without either is normalized exactly as before."""
from __future__ import annotations

import random
import re

import pytest

from workbench import clean
from workbench.samples import get_sample, insert_samples
from workbench.store import ensure_dataset, transaction
from workbench.textnorm import drop_invisible, strip_controls

ZWNJ, ZWJ = "\u200c", "\u200d"

KEPT = [
    "می" + ZWNJ + "خواهم",                                  # Persian: "I want", ZWNJ between the prefix and verb
    "نامه" + ZWNJ + "ها را می" + ZWNJ + "نویسم",            # Persian plural and present prefix
    "क्" + ZWJ + "ष",                                          # Devanagari: half form after a virama (ZWJ)
    "क्" + ZWNJ + "ष",                                         # Devanagari: explicit virama, no conjunct (ZWNJ)
    "र्" + ZWJ + "य",                                          # eyelash ra
    "السلام عليكم ورحمة الله",                                # Arabic, no joiners: unchanged
    "كِتَابٌ " + "لـ" + ZWJ + "ا",                              # Arabic with harakat; ZWJ between letters
    "👨" + ZWJ + "👩" + ZWJ + "👧",                            # family
    "🏳️" + ZWJ + "🌈",                                        # rainbow flag (VS16 before the joiner)
    "🧑🏽" + ZWJ + "💻",                                       # technologist with a skin tone
    "❤️" + ZWJ + "🔥",                                         # heart on fire
]


@pytest.mark.parametrize("text", KEPT)
def test_joiners_inside_words_and_emoji_are_kept(text):
    assert drop_invisible(text) == text
    assert clean.normalize_text(text) == text


@pytest.mark.parametrize("text, expected", [
    ("word" + ZWJ + " next", "word next"),                  # at a word's edge
    (ZWNJ + "start", "start"),                               # at the start
    ("end" + ZWJ, "end"),                                    # at the end
    ("a" + ZWJ + ZWJ + "b", "ab"),                           # two in a row join nothing
    ("1" + ZWJ + "2", "12"),                                 # between digits
    ("a" + ZWJ + ".", "a."),                                 # before punctuation
    ("zero\u200bwidth\ufeff soft\u00adhyphen\u2060joined", "zerowidth softhyphenjoined"),
    ("no\u00a0break", "no break"),
])
def test_joiners_that_join_nothing_and_other_invisibles_go(text, expected):
    assert drop_invisible(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("\x1b[31mred\x1b[0m plain", "red plain"),                         # SGR colour
    ("\x1b[1;38;5;208mX\x1b[m", "X"),                                 # 256 colours, empty reset
    ("\x1b[38;2;255;0;0mtrue\x1b[39m", "true"),                       # truecolour
    ("a\x1b[2Jb\x1b[Hc\x1b[?25ld", "abcd"),                           # clear, home, private mode
    ("\x9b31mC1\x9b0m", "C1"),                                        # 8-bit CSI
    ("\x1b]0;title\x07after", "after"),                               # OSC ended by BEL
    ("\x1b]52;c;SE9TVElMRQ==\x1b\\after", "after"),                   # OSC 52 ended by ESC \
    ("\x1b]8;;http://x.invalid\x1b\\link\x1b]8;;\x1b\\", "link"),     # hyperlink
    ("\x9d2;t\x9cafter", "after"),                                    # 8-bit OSC and ST
    ("\x1bP1$r0m\x1b\\dcs", "dcs"),                                   # DCS
    ("\x1bX sos \x1b\\a\x1b^pm\x1b\\b\x1b_apc\x1b\\c", "abc"),        # SOS, PM, APC
    ("\x90dcs\x9c!", "!"),                                             # 8-bit DCS
    ("\x1b(Bx\x1b)0y", "xy"),                                         # nF: character sets
    ("\x1b7save\x1b8\x1bMup\x1bcreset", "saveupreset"),               # Fp, Fe, Fs
    ("\x1b]0;never ended\nnext line", "\nnext line"),                 # unterminated: ends at the line
    ("lone\x1b", "lone"),
    ("bell\x07 nul\x00 del\x7f c1\x85 tab\tkept\nline", "bell nul del c1 tab\tkept\nline"),
    ("می" + ZWNJ + "خواهم \x1b[32mسبز\x1b[0m", "می" + ZWNJ + "خواهم سبز"),
])
def test_escape_sequences_are_removed_whole(text, expected):
    assert strip_controls(text) == expected
    assert clean.normalize_text(text) == clean.normalize_text(expected)     # nothing like "[31m" left


# the normalization before this change, for text with none of ESC, C1, ZWJ, ZWNJ
_OLD_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"), None)
_OLD_INVISIBLE.update({0xA0: " ", 0x202F: " ", 0x2007: " "})
_OLD_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def test_text_without_sequences_or_joiners_normalizes_as_before():
    rng = random.Random(3)
    alphabet = list("abc XYZ 012 .,;<>&`\n\t\r\x07\x00\u200b\ufeff\u00a0\u00adéüñ中文ای") + ["<br>", "&amp;", "```"]
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        old = _OLD_CONTROL.sub("", text.translate(_OLD_INVISIBLE))
        new = drop_invisible(strip_controls(text))
        assert new == old, repr(text)


def test_normalize_apply_through_the_cli(cli, conn):
    clean_row = {"instruction": "Plain English question?", "response": "A plain answer."}
    with transaction(conn):
        did = ensure_dataset(conn, "d")
        first, last = insert_samples(conn, did, [
            {"instruction": "می" + ZWNJ + "خواهم \x1b[31mقرمز\x1b[0m", "response": "👨" + ZWJ + "👩" + ZWJ + "👧"},
            {"instruction": "क्" + ZWJ + "ष " + "\x1b]0;title\x07हिन्दी", "response": "ok\x1b[0m"},
            clean_row,
        ])
    before = get_sample(conn, last)
    code, out, err = cli("clean", "--normalize", "--dataset", "d", "--apply")
    assert code == 0, err
    s0, s1, s2 = (get_sample(conn, i) for i in range(first, last + 1))
    assert s0["instruction"] == "می" + ZWNJ + "خواهم قرمز"
    assert s0["response"] == "👨" + ZWJ + "👩" + ZWJ + "👧"
    assert s1["instruction"] == "क्" + ZWJ + "ष हिन्दी" and s1["response"] == "ok"
    assert s2 == before                                   # nothing to normalize: not touched
