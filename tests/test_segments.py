"""Humpback's segments: heading + body, paragraphs merged to the bound, long ones split at paragraph ends,
boilerplate and duplicates dropped with counts, on crafted text and on the Rust book's Markdown."""
from __future__ import annotations

import json

import pytest

from workbench.segments import boilerplate, bad_heading, segment_text

BODY = "Tomatoes need at least six hours of direct sun and deep watering twice a week. " * 9   # ~720 chars


def test_heading_sections_and_every_drop_rule():
    doc = "\n".join([
        "Garden Notes", "============", "",
        "[Home](/) | [About](/about) | [Contact](/contact)", "",
        "# Growing tomatoes", "", BODY, "", "Stake them early.", "",
        "Share this article with your friends", "",
        "# ADVERTISEMENT", "", "Buy the best seeds now, only today, while stocks last. " * 15, "",
        "## Pruning", "",
        "```", "def prune(): pass", "```", "",
        "| a | b |", "|---|---|", "| 1 | 2 |", "",
        "- [Seeds](/seeds)", "- [Tools](/tools)", "- [Soil](https://example.com/soil)", "",
        "Share this article with your friends", "",
        "# Tomatoes, again", "", BODY, "", "Stake them early.", "",
        "# Short one", "", "Too short to be an answer.", "",
        "Share this article with your friends",
    ])
    r = segment_text(doc, "heading", 600, 3000)
    assert [t.split("\n", 1)[0] for _, t in r.records] == ["# Growing tomatoes"]
    assert r.records[0][1] == f"# Growing tomatoes\n\n{BODY}\n\nStake them early."     # heading + body, as written
    assert r.records[0][0] == 6                                                      # its first line in the file
    assert r.report()["dropped"] == {
        "navigation heading": 1, "code only": 1, "table only": 1, "link list": 2, "repeated lines": 3,
        "heading without text": 2, "duplicate segment": 1, "too short": 1}    # Garden Notes and Pruning: no text left


def test_long_sections_split_at_paragraph_ends_and_paragraph_mode_merges():
    paras = [f"Paragraph {i}. " + "Words that carry some meaning about soil and water. " * 12 for i in range(8)]
    doc = "# Soil\n\n" + "\n\n".join(paras)                       # ~5,000 chars under one heading
    r = segment_text(doc, "heading", 600, 3000)
    assert r.split == 1 and len(r.records) == 2
    assert all(len(t) <= 3000 for _, t in r.records)
    assert r.records[0][1].startswith("# Soil\n\nParagraph 0.") and r.records[1][1].startswith("Paragraph ")
    assert "\n\n".join(t for _, t in r.records) == doc                  # nothing lost, cut only between paragraphs
    p = segment_text("\n\n".join(paras), "paragraph", 600, 3000)
    assert [len(t) <= 3000 for _, t in p.records] == [True, True]
    assert p.merged == 6 and "\n\n".join(t for _, t in p.records) == "\n\n".join(paras)
    big = segment_text("# Huge\n\n" + "x" * 3500, "heading", 600, 3000)
    assert big.records == [] and big.dropped["too long (one paragraph)"] == 1


@pytest.mark.parametrize("para, rule", [
    ("```python\nprint(1)\n\nprint(2)\n```", "code only"),
    ("    let x = 5;\n    let y = 6;", "code only"),
    ("| name | age |\n|---|---|\n| Ann | 3 |", "table only"),
    ("<table><tr><td>1</td></tr></table>", "table only"),
    ("* [One](/1)\n* [Two](/2)\n* <https://x.org>", "link list"),
    ("[Prev](/p) · [Next](/n)", "link list"),
    ("Skip to main content", "navigation"),
    ("© 2024 Example Ltd. All rights reserved.", "navigation"),
    ("- Home\n- Blog\n- Shop\n- Contact", "navigation"),
    ("<!-- generated, do not edit -->\n<Listing number=\"4-1\">", "markup only"),
])
def test_boilerplate_rules(para, rule):
    assert boilerplate(para) == rule


@pytest.mark.parametrize("para", [
    "See [the docs](/docs) for the full list of options that the parser accepts today.",
    "Rust's `let` binds a value:\n\n```rust\nlet x = 5;\n```",
    "Subscribing to a channel means the receiver gets every message sent after it joined, in the order in which "
    "the senders put them in, and a receiver that falls behind sees the backlog first; " * 2,
    "1. Boil water.\n2. Add the pasta and stir it well.\n3. Drain after nine minutes.",
])
def test_content_is_not_boilerplate(para):
    assert boilerplate(para) is None


def test_headings():
    assert bad_heading("Quick Links") == "navigation heading"
    assert bad_heading("FREE NEWSLETTER") == "navigation heading"
    assert bad_heading("TABLE OF CONTENTS") == "all-caps heading"
    assert bad_heading("  ") == "empty heading"
    assert bad_heading("What Is Ownership?") is None and bad_heading("The `String` Type") is None
    assert bad_heading("Using HTTP APIs") is None                    # some capitals are fine


def test_bad_bounds_and_modes():
    with pytest.raises(ValueError, match="bounds"):
        segment_text("x", "heading", 3000, 600)
    with pytest.raises(ValueError, match="mode"):
        segment_text("x", "sentence")


def test_import_rust_book_chapter(cli, conn, shared_data, tmp_path):
    src = shared_data / "rust-book-paragraphs" / "original" / "ch04-01-what-is-ownership.md"
    code, out, err = cli("import", str(src), "--format", "text", "--segment", "heading", "--dataset", "book",
                         "--json")
    assert code == 0, err
    res = json.loads(out)
    rows = [r[0] for r in conn.execute("SELECT response FROM samples ORDER BY id")]
    assert res["rows"] == len(rows) == res["segments"]["segments"] >= 5
    assert all(600 <= len(t) <= 3000 for t in rows)
    assert rows[0].startswith("## What Is Ownership?\n\n_Ownership_ is a set of rules")
    assert all(t in src.read_text(encoding="utf-8") or "\n\n" in t for t in rows)
    assert res["segments"]["dropped"]["code only"] > 0
    code, out, err = cli("import", str(src), "--format", "text", "--segment", "paragraph", "--dataset", "book2",
                         "--segment-min", "100", "--segment-max", "1500")
    assert code == 0 and "segments:" in out and "(100-1500 characters)" in out and "merged" in out


def test_import_refusals_leave_the_store_as_it_was(cli, conn, tmp_path):
    good = tmp_path / "a.jsonl"
    good.write_text('{"instruction": "Hi", "response": "Hello"}\n', encoding="utf-8")
    code, _, err = cli("import", str(good), "--segment", "heading")
    assert code != 0 and "works on plain text files" in err
    bad = tmp_path / "b.txt"
    bad.write_bytes(b"# Title\n\nok text \xff\xfe more\n")
    code, _, err = cli("import", str(bad), "--format", "text", "--segment", "heading")
    assert code != 0 and "b.txt" in err and "Traceback" not in err
    short = tmp_path / "c.md"
    short.write_text("# A\n\nshort\n", encoding="utf-8")
    code, _, err = cli("import", str(short), "--format", "text", "--segment", "heading")
    assert code != 0 and "no segment of 600-3000 characters" in err
    assert conn.execute("SELECT count(*) FROM samples").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM datasets").fetchone()[0] == 0
