"""ROUGE-L F1 between instructions, as Self-Instruct uses it to reject near-copies.

Tokens follow rouge_score (use_stemmer=False): lowercase, every character outside [a-z0-9] separates tokens.
That tokenizer gives non-Latin text no tokens at all (so a Chinese near-copy would score 0); for text with non-ASCII
characters we keep ASCII alphanumeric runs as tokens and make every other letter or digit a token of its own, so
such text is compared character by character. Pure ASCII text scores exactly as rouge_score does.

The LCS comes from rapidfuzz's LCSseq (C++) over token sequences encoded one token per character, so comparing a
candidate against every instruction of a pool costs a few microseconds per pair.
"""
from __future__ import annotations

import re

from rapidfuzz.distance import LCSseq

_ASCII_TOKEN = re.compile(r"[a-z0-9]+")
_MIXED_TOKEN = re.compile(r"[a-z0-9]+|[^\W_a-z0-9]")


def tokenize(text: str) -> list[str]:
    low = text.lower()
    if low.isascii():
        return _ASCII_TOKEN.findall(low)
    return _MIXED_TOKEN.findall(low)


def f1_from_lcs(lcs: int, len_a: int, len_b: int) -> float:
    # precision = lcs/len_b, recall = lcs/len_a; their harmonic mean is 2*lcs/(len_a+len_b)
    if lcs == 0 or len_a == 0 or len_b == 0:
        return 0.0
    return 2.0 * lcs / (len_a + len_b)


def rouge_l(a: str, b: str) -> float:
    """ROUGE-L F1 of two texts (symmetric)."""
    ta, tb = tokenize(a), tokenize(b)
    return f1_from_lcs(LCSseq.similarity(ta, tb), len(ta), len(tb)) if ta and tb else 0.0


class RougePool:
    """A growing set of texts that a candidate is compared against (Self-Instruct's instruction pool)."""

    def __init__(self, texts=()):
        self._vocab: dict[str, str] = {}
        self._encoded: list[str] = []
        self.texts: list[str] = []
        for t in texts:
            self.add(t)

    def __len__(self) -> int:
        return len(self.texts)

    def _encode(self, text: str) -> str:
        out = []
        for tok in tokenize(text):
            ch = self._vocab.get(tok)
            if ch is None:
                code = 0x100 + len(self._vocab)
                if code >= 0xD800:             # step over the surrogate block
                    code += 0x800
                ch = self._vocab[tok] = chr(code)
            out.append(ch)
        return "".join(out)

    def add(self, text: str) -> None:
        self.texts.append(text)
        self._encoded.append(self._encode(text))

    def discard(self, index: int) -> None:
        """Stop comparing against the text at `index` (it was claimed but never written)."""
        self._encoded[index] = ""

    def nearest(self, text: str, stop_at: float | None = None) -> tuple[float, int]:
        """(best ROUGE-L F1, index of that text) over the pool; (0.0, -1) for an empty pool or tokenless text.

        With `stop_at`, returns as soon as some text scores >= stop_at (enough to reject a candidate).
        """
        cand = self._encode(text)
        n = len(cand)
        best, best_i = 0.0, -1
        if n == 0:
            return best, best_i
        for i, other in enumerate(self._encoded):
            m = len(other)
            if m == 0 or 2.0 * min(n, m) / (n + m) <= best:   # even a full overlap could not beat `best`
                continue
            score = f1_from_lcs(LCSseq.similarity(cand, other), n, m)
            if score > best:
                best, best_i = score, i
                if stop_at is not None and best >= stop_at:
                    break
        return best, best_i
