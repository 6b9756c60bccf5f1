"""What import does to text (Unicode NFC and line endings, nothing else) and the content hash."""
from __future__ import annotations

import hashlib
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
