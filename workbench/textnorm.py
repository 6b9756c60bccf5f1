"""What import does to text (Unicode NFC and line endings, nothing else) and the content hash."""
from __future__ import annotations

import hashlib
import re
import unicodedata

# str.split()'s ASCII whitespace -> space, A-Z -> a-z: for ASCII text, casefold() is lower() and this table plus
# collapsing runs of spaces gives the same bytes as hash_key(), at a quarter of the cost (split/join made ~300
# word objects a response and was most of an import's CPU).
_ASCII_KEY = bytes.maketrans(b"\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f" + bytes(range(65, 91)), b" " * 9 + bytes(range(97, 123)))


def keep_as_written(text: str) -> str:
    """Import-time normalization: NFC and LF line endings. Cleaning is a separate, explicit step."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.isascii() and not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    return text


def hash_key(text: str) -> str:
    """The form compared for exact duplicates: casefolded, whitespace collapsed."""
    return " ".join(text.split()).casefold()


def _key_bytes(text: str) -> bytes:
    """hash_key(text) encoded as UTF-8."""
    if not text:          # most rows leave several parts empty (system, input, rejected)
        return b""
    if not text.isascii():
        return hash_key(text).encode("utf-8", "surrogatepass")
    key = text.encode("ascii").translate(_ASCII_KEY)
    while b"  " in key:
        key = key.replace(b"  ", b" ")
    return key.strip(b" ")


def content_hash(*parts: str) -> int:
    """Signed 64-bit hash of the normalized parts (fits SQLite's INTEGER, indexes small and fast)."""
    digest = hashlib.blake2b(b"\x1f".join(map(_key_bytes, parts)), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


# --- what `clean --normalize` removes (never import: import keeps text as written) ------------------------------

# Terminal control sequences, removed whole (ECMA-48), in 7-bit (ESC x) and 8-bit (C1 U+0080-U+009F) forms:
#   CSI  ESC [ or U+009B, parameter bytes 0x30-0x3F, intermediate bytes 0x20-0x2F, one final byte 0x40-0x7E
#   OSC  ESC ] or U+009D ... up to ST (ESC \ or U+009C) or BEL (xterm's terminator)
#   DCS, SOS, PM, APC (ESC P, X, ^, _ or U+0090, U+0098, U+009E, U+009F) ... up to ST
#   nF   ESC, intermediate bytes 0x20-0x2F, final byte 0x30-0x7E (ESC ( B selects a character set)
#   Fp, Fe, Fs  ESC and one byte 0x30-0x7E (ESC 7, ESC M, ESC c)
# An unterminated string (OSC, DCS, ...) ends at the end of its line: a terminal would swallow the rest of the
# text, but a truncated sequence in a dataset must not take the following lines with it.
_ESC_SEQUENCE = re.compile(
    "(?:\x1b\\[|\x9b)[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]"
    "|(?:\x1b\\]|\x9d)[^\x07\x1b\x9c\n]*(?:\x07|\x1b\\\\|\x9c)?"
    "|(?:\x1b[PX^_]|[\x90\x98\x9e\x9f])[^\x1b\x9c\n]*(?:\x1b\\\\|\x9c)?"
    "|\x1b[\x20-\x2f]+[\x30-\x7e]"
    "|\x1b[\x30-\x7e]"
)
# C0 except TAB and LF, DEL, C1: what is left once the sequences are gone
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# ZWSP, word joiner, BOM, soft hyphen: dropped. ZWJ and ZWNJ: dropped only where they join nothing (see below)
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u2060\ufeff\u00ad"), None)
_INVISIBLE.update({0xA0: " ", 0x202F: " ", 0x2007: " "})
_JOINER = re.compile("[\u200c\u200d]")


def strip_controls(text: str) -> str:
    """Terminal escape sequences removed whole, then any other control character (TAB and LF stay)."""
    if text.isascii() and "\x1b" not in text and text.isprintable():
        return text
    return _CONTROL.sub("", _ESC_SEQUENCE.sub("", text))


def _joinable(ch: str) -> bool:
    """A letter, a combining mark (virama, harakat, variation selector) or a symbol such as an emoji."""
    cat = unicodedata.category(ch)
    return cat[0] in "LM" or cat in ("So", "Sk")


def drop_invisible(text: str) -> str:
    """Zero-width characters that carry nothing dropped, no-break spaces made spaces. ZWJ and ZWNJ stay inside
    words and emoji sequences, where they decide how the text reads: Persian می‌خواهم (ZWNJ), Devanagari half forms
    (ZWJ after a virama), 👨‍👩‍👧 (ZWJ). Elsewhere (at a word's edge, beside a space or another joiner) they go."""
    if "\u200c" in text or "\u200d" in text:
        def keep_inside(m: re.Match) -> str:
            i, s = m.start(), m.string
            return m.group() if 0 < i < len(s) - 1 and _joinable(s[i - 1]) and _joinable(s[i + 1]) else ""
        text = _JOINER.sub(keep_inside, text)
    return text.translate(_INVISIBLE)
