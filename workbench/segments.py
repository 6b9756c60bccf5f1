"""Unlabeled text -> candidate responses for instruction backtranslation, the way Humpback selects them.

Modes (`workbench import FILE --format text --segment MODE`):

  heading    a heading and the body under it is one segment (Markdown `#` / underlined headings, HTML <h1>-<h6>);
             text before the first heading is a segment of its own. A section whose heading is navigation
             ("advertisement", "forum", "quick links", "newsletter", ...), all capitals or empty is dropped whole.
  paragraph  paragraphs (blank-line separated) merged in order up to the upper bound.
  none       every blank-line block is one row, nothing dropped (the plain text import).

In both segmenting modes a segment longer than the upper bound is split at paragraph ends (a single paragraph
longer than the bound cannot be split there and is dropped); segments shorter than the lower bound are dropped
(default 600-3,000 characters, the paper's). Before that, boilerplate paragraphs are removed, each rule counted:
navigation lines, link lists, code only, tables only, and lines repeated across the file (footers, "share this");
then duplicate segments (the same text, headings, case, spacing and punctuation ignored) are dropped. Every count goes to the import
report, so a curator sees what the bounds and rules took out.
"""
from __future__ import annotations

import codecs
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

MODES = ("heading", "paragraph", "none")
DEFAULT_MIN, DEFAULT_MAX = 600, 3000
REPEATED_LINE_MIN = 3          # a line (of some length) seen this often in a file is boilerplate
REPEATED_LINE_CHARS = (12, 200)   # lines shorter ("Yes.", "1.") repeat legitimately; longer ones are content

_ATX = re.compile(r"^ {0,3}#{1,6}(?:[ \t]+(.*?))?[ \t#]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_HTML_H = re.compile(r"^\s*<h[1-6][^>]*>(.*?)</h[1-6]>\s*$", re.I)
_NAV_WORDS = re.compile(r"\b(advertisement|advertising|sponsored|forum|forums|quick links?|newsletter|subscribe|"
                        r"sign up|log ?in|sign in|cookie|cookies|skip to|main menu|navigation|breadcrumb|"
                        r"all rights reserved|copyright|privacy policy|terms of (use|service)|share this|"
                        r"related posts|read more|back to top|follow us)\b", re.I)
_MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_HTML_LINK = re.compile(r"<a\b[^>]*>(.*?)</a>", re.I | re.S)
_URL = re.compile(r"\bhttps?://\S+|\bwww\.\S+", re.I)
_LIST_MARK = re.compile(r"^\s*(?:[-*+•|>]|\d+[.)])\s*")
_WORD = re.compile(r"[^\W_]+")


@dataclass
class Segmented:
    records: list[tuple[int, str]] = field(default_factory=list)     # (first line, text)
    dropped: Counter = field(default_factory=Counter)                 # rule -> segments (or lines) dropped
    merged: int = 0               # paragraphs joined into a larger segment
    split: int = 0                # segments cut at paragraph ends

    def report(self) -> dict:
        return {"segments": len(self.records), "dropped": dict(sorted(self.dropped.items())),
                "merged_paragraphs": self.merged, "split_segments": self.split}


# --- boilerplate rules ------------------------------------------------------------------------------------

def _link_line(line: str) -> bool:
    """A line that is (nearly) only a link: fewer than 3 words once links, URLs and list marks are removed."""
    if not (_MD_LINK.search(line) or _HTML_LINK.search(line) or _URL.search(line)):
        return False
    rest = _URL.sub(" ", _HTML_LINK.sub(" ", _MD_LINK.sub(" ", _LIST_MARK.sub("", line))))
    return len(_WORD.findall(rest)) < 3


def boilerplate(paragraph: str) -> str | None:
    """The rule a paragraph breaks, or None."""
    lines = [ln for ln in paragraph.splitlines() if ln.strip()]
    if not lines:
        return None
    stripped = paragraph.strip()
    if stripped.startswith("```") and stripped.endswith("```") and stripped.count("```") == 2:
        return "code only"
    if all(ln.startswith(("    ", "\t")) for ln in lines):
        return "code only"
    if all(ln.lstrip().startswith("|") for ln in lines) or re.fullmatch(r"(?is)<table\b.*</table>", stripped):
        return "table only"
    if not _WORD.search(re.sub(r"(?s)<!--.*?-->|<[^>]*>", " ", stripped)):
        return "markup only"
    links = sum(_link_line(ln) for ln in lines)
    if links and links >= 0.7 * len(lines) and (len(lines) >= 2 or len(_MD_LINK.findall(stripped)) >= 2):
        return "link list"
    if len(stripped) < 200 and _NAV_WORDS.search(stripped) and len(_WORD.findall(stripped)) <= 25:
        return "navigation"
    if len(lines) >= 2 and all(len(_WORD.findall(ln)) <= 3 for ln in lines) and \
            sum(bool(_LIST_MARK.match(ln)) or "|" in ln for ln in lines) >= 0.7 * len(lines):
        return "navigation"              # a menu: short items, one per line
    return None


def bad_heading(title: str) -> str | None:
    t = title.strip().strip("#*_ ").strip()
    if not t:
        return "empty heading"
    if _NAV_WORDS.search(t):
        return "navigation heading"
    letters = [c for c in t if c.isalpha()]
    if len(letters) >= 4 and all(c.isupper() for c in letters):
        return "all-caps heading"
    return None


# --- splitting -----------------------------------------------------------------------------------------

def _paragraphs(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """(first line number, text) per blank-line block; a fenced code block stays one paragraph."""
    out, cur, start, fenced = [], [], 0, False
    for n, ln in lines:
        if ln.lstrip().startswith("```"):
            fenced = not fenced
        if not ln.strip() and not fenced:
            if cur:
                out.append((start, "\n".join(cur)))
                cur = []
            continue
        if not cur:
            start = n
        cur.append(ln)
    if cur:
        out.append((start, "\n".join(cur)))
    return out


def _sections(lines: list[tuple[int, str]]) -> list[tuple[str | None, int, list[tuple[int, str]]]]:
    """(heading text or None, how many lines the heading takes, lines including the heading) per section."""
    out: list[tuple[str | None, int, list]] = [(None, 0, [])]
    fenced = False
    for i, (n, ln) in enumerate(lines):
        if ln.lstrip().startswith("```"):
            fenced = not fenced
        title, size = None, 1
        if not fenced:
            m = _ATX.match(ln) or _HTML_H.match(ln)
            if m:
                title = m.group(1) or ""
            elif i + 1 < len(lines) and ln.strip() and _SETEXT.match(lines[i + 1][1]) and \
                    (i == 0 or not lines[i - 1][1].strip()):
                title, size = ln, 2
        if title is not None:
            out.append((re.sub(r"<[^>]+>", "", title), size, [(n, ln)]))
        else:
            out[-1][2].append((n, ln))
    return [(h, k, body) for h, k, body in out if h is not None or any(ln.strip() for _, ln in body)]


def _pack(paras: list[tuple[int, str]], hi: int, res: Segmented) -> list[tuple[int, str]]:
    """Paragraphs joined (blank line between) in order into pieces of at most `hi` characters."""
    pieces: list[tuple[int, list[str]]] = []
    for start, text in paras:
        if len(text) > hi:
            res.dropped["too long (one paragraph)"] += 1
            continue
        if pieces and sum(len(t) + 2 for t in pieces[-1][1]) + len(text) <= hi:
            pieces[-1][1].append(text)
        else:
            pieces.append((start, [text]))
    return [(start, "\n\n".join(parts)) for start, parts in pieces]


def _in_code(lines: list[tuple[int, str]]) -> list[bool]:
    """Per line: inside a fenced code block (the fences included)."""
    out, fenced = [], False
    for _, ln in lines:
        fence = ln.lstrip().startswith("```")
        out.append(fenced or fence)
        if fence:
            fenced = not fenced
    return out


def _norm(text: str) -> str:
    return " ".join(_WORD.findall(text.casefold()))


def segment_text(text: str, mode: str = "heading", lo: int = DEFAULT_MIN, hi: int = DEFAULT_MAX) -> Segmented:
    if mode not in MODES:
        raise ValueError(f"segment mode {mode!r}: one of {', '.join(MODES)}")
    if lo < 0 or hi < 1 or lo > hi:
        raise ValueError(f"segment bounds {lo}-{hi}: need 0 <= min <= max")
    lines = [(n, ln.rstrip("\r")) for n, ln in enumerate(text.split("\n"), 1)]
    res = Segmented()
    if mode == "none":
        res.records = _paragraphs(lines)
        return res
    short, long_ = REPEATED_LINE_CHARS
    in_code = _in_code(lines)
    counts = Counter(ln.strip() for (_, ln), code in zip(lines, in_code) if not code and short <= len(ln.strip()) <= long_)
    repeated = {ln for ln, k in counts.items() if k >= REPEATED_LINE_MIN}
    code_lines = {n for (n, _), code in zip(lines, in_code) if code}

    def clean(block: list[tuple[int, str]]) -> list[tuple[int, str]]:
        kept_lines = []
        for n, ln in block:
            if n not in code_lines and ln.strip() in repeated:      # code is never thinned line by line
                res.dropped["repeated lines"] += 1
            else:
                kept_lines.append((n, ln))
        paras = []
        for start, p in _paragraphs(kept_lines):
            rule = boilerplate(p)
            if rule:
                res.dropped[rule] += 1
            else:
                paras.append((start, p))
        return paras

    candidates: list[tuple[int, str, str]] = []     # (first line, segment, its text without the heading)
    if mode == "paragraph":
        paras = clean(lines)
        candidates = [(n, t, t) for n, t in _pack(paras, hi, res)]
        res.merged = len([p for p in paras if len(p[1]) <= hi]) - len(candidates)
    else:
        for heading, size, block in _sections(lines):
            if heading is not None:
                rule = bad_heading(heading)
                if rule:
                    res.dropped[rule] += 1
                    continue
            body = clean(block[size:])
            if heading is not None and not body:
                res.dropped["heading without text"] += 1
                continue
            if not body:
                continue
            # the heading line(s) stay with the text under them (blank line between, as it was written)
            head = [(block[0][0], "\n".join(ln for _, ln in block[:size]))] if size else []
            paras = head + body
            whole = "\n\n".join(p for _, p in paras)
            if len(whole) <= hi:
                candidates.append((paras[0][0], whole, "\n\n".join(p for _, p in body)))
                continue
            pieces = _pack(paras, hi, res)
            res.split += len(pieces) > 1
            candidates += [(n, t, t[len(head[0][1]):] if head and i == 0 else t) for i, (n, t) in enumerate(pieces)]
    seen: set[str] = set()
    for start, seg, text in candidates:
        if len(seg) < lo:
            res.dropped["too short"] += 1
            continue
        key = _norm(text)           # the same text under another heading is still a duplicate
        if key in seen:
            res.dropped["duplicate segment"] += 1
            continue
        seen.add(key)
        res.records.append((start, seg))
    return res


def read_segments(path: Path, mode: str, lo: int = DEFAULT_MIN, hi: int = DEFAULT_MAX) -> Segmented:
    """A UTF-8 text file segmented (a BOM is skipped; invalid UTF-8 raises UnicodeDecodeError)."""
    data = Path(path).read_bytes()
    if data.startswith(codecs.BOM_UTF8):
        data = data[3:]
    return segment_text(data.decode("utf-8"), mode, lo, hi)
