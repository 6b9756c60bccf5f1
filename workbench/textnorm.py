"""What import does to text (Unicode NFC and line endings, nothing else) and the content hash."""
from __future__ import annotations

import hashlib
import unicodedata

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


def content_hash(*parts: str) -> int:
    """Signed 64-bit hash of the normalized parts (fits SQLite's INTEGER, indexes small and fast)."""
    key = "\x1f".join(hash_key(p) for p in parts)
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)
