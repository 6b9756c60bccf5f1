"""The content hash: its fast ASCII path must give exactly the hash of its definition, or stores made before it
would stop matching their own duplicates."""
from __future__ import annotations

import hashlib
import random

from workbench.textnorm import content_hash, hash_key


def reference_hash(*parts: str) -> int:
    key = "\x1f".join(" ".join(p.split()).casefold() for p in parts)
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big",
                          signed=True)


def test_fast_path_equals_the_definition_on_every_kind_of_whitespace_and_case():
    rng = random.Random(7)
    alphabet = "aZ09 .\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f  ~AbQ"
    for _ in range(5000):
        parts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 25))) for _ in range(rng.randint(1, 4))]
        assert content_hash(*parts) == reference_hash(*parts), parts


def test_non_ascii_text_keeps_the_unicode_rules():
    for parts in (("Straße  GROSS", "é\u00a0x"), ("\u2003lead\u3000trail\u2003", ""), ("İstanbul", "ΣΑΣ")):
        assert content_hash(*parts) == reference_hash(*parts)
    assert hash_key("Straße") == "strasse"
    assert content_hash("A\u00a0b") == content_hash("a b")      # a no-break space is whitespace too


def test_whitespace_and_case_do_not_matter_but_fields_do():
    assert content_hash("Hello   World\n", "x") == content_hash(" hello world", "X")
    assert content_hash("a", "b") != content_hash("a b", "")
