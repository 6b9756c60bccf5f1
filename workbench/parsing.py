"""Defensive parsers for LLM replies. Each returns what it found or raises ParseError carrying the raw reply.

There is no default score anywhere: a reply we cannot read with confidence is an item error for the caller to
record (with `err.raw`), never a silent 3.0 or 0.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field


class ParseError(ValueError):
    """A reply without the shape that was asked for; `raw` keeps the reply (the worker stores it on the item).

    workbench.llm re-exports this class, so parsers, `validate=` callbacks and the worker share one type.
    """

    def __init__(self, message: str, raw: str | None = None):
        super().__init__(message)
        self.raw = raw


def _text(raw) -> str:
    if raw is None or not str(raw).strip():
        raise ParseError("empty reply", raw)
    return str(raw)


def _number(value, what: str, raw: str, lo: float, hi: float, integer: bool) -> float:
    """A score as a number in [lo, hi]; numeric strings are accepted, booleans and NaN are not."""
    if isinstance(value, bool):
        raise ParseError(f"{what}: {value!r} is not a number", raw)
    if isinstance(value, str):
        s = value.strip()
        if not re.fullmatch(r"-?\d+(\.\d+)?", s):
            raise ParseError(f"{what}: {value!r} is not a number", raw)
        value = float(s)
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ParseError(f"{what}: {value!r} is not a number", raw)
    if integer and float(value) != int(value):
        raise ParseError(f"{what}: {value} is not a whole number", raw)
    if not lo <= value <= hi:
        raise ParseError(f"{what}: {value:g} is outside {lo:g}-{hi:g}", raw)
    return int(value) if float(value) == int(value) else float(value)


# --- JSON objects inside a reply --------------------------------------------------------------------

_FENCE = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\n(.*?)\n?```", re.S)


def extract_json_object(raw) -> dict:
    """The one JSON object in a reply: the whole reply, or the only fenced block, or the only balanced {...}.

    Leading or trailing prose is tolerated only when exactly one parsable object is present; two different
    objects are ambiguous and raise. A reply cut off mid-object has no balanced object and raises.
    """
    text = _text(raw).strip()
    try:
        obj = json.loads(text)
    except ValueError:
        pass
    else:
        if isinstance(obj, dict):
            return obj
        raise ParseError(f"reply is JSON but not an object ({type(obj).__name__})", raw)
    found = []
    for block in _FENCE.findall(text):
        try:
            obj = json.loads(block.strip())
        except ValueError:
            continue
        if isinstance(obj, dict):
            found.append(obj)
    if not found:
        found = [o for o in _balanced_objects(text)]
    distinct = []
    for o in found:
        if o not in distinct:
            distinct.append(o)
    if not distinct:
        truncated = text.count("{") > text.count("}")
        raise ParseError("no complete JSON object in the reply" + (" (it looks truncated)" if truncated else ""), raw)
    if len(distinct) > 1:
        raise ParseError(f"{len(distinct)} different JSON objects in the reply; cannot tell which one is meant", raw)
    return distinct[0]


def _balanced_objects(text: str):
    """Top-level {...} spans that parse as JSON objects (a string-aware brace scan)."""
    depth, start, in_str, esc = 0, None, False, False
    for i, ch in enumerate(text):
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
            continue
        if ch == '"' and depth:
            in_str = True
        elif ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth:
            depth -= 1
            if depth == 0:
                try:
                    obj = json.loads(text[start:i + 1])
                except ValueError:
                    continue
                if isinstance(obj, dict):
                    yield obj


# --- the judge's JSON -----------------------------------------------------------------------------

JUDGE_DIMENSIONS = ("instruction_clarity", "response_quality", "alignment")


@dataclass
class JudgeResult:
    scores: dict
    overall: float
    rationale: str
    extra: dict = field(default_factory=dict)   # per-dimension rationales if the judge gave them


def _norm_key(k: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", str(k).lower()).strip("_")


def parse_judge_json(raw, dimensions=JUDGE_DIMENSIONS, lo: float = 1, hi: float = 10,
                     integer: bool = False) -> JudgeResult:
    """{"<dim>": n, ..., "overall": n, "rationale": "..."}; dims may also sit under "scores" or be {"score": n}."""
    obj = extract_json_object(raw)
    flat = {_norm_key(k): v for k, v in obj.items()}
    if isinstance(flat.get("scores"), dict):
        flat = {**{_norm_key(k): v for k, v in flat["scores"].items()}, **flat}
    scores, extra = {}, {}
    for dim in dimensions:
        key = _norm_key(dim)
        if key not in flat:
            raise ParseError(f"score for {dim!r} is missing", raw)
        value = flat[key]
        if isinstance(value, dict):
            if "rationale" in value:
                extra[dim] = str(value["rationale"])
            value = value.get("score", value.get("rating"))
        scores[dim] = _number(value, dim, raw, lo, hi, integer)
    overall_key = next((k for k in ("overall", "overall_score") if k in flat), None)
    if overall_key is None:
        raise ParseError("overall score is missing", raw)
    overall = _number(flat[overall_key], "overall", raw, lo, hi, integer)
    rationale = flat.get("rationale", flat.get("reasoning", flat.get("explanation")))
    if not isinstance(rationale, str) or not rationale.strip():
        raise ParseError("rationale is missing or empty", raw)
    return JudgeResult(scores=scores, overall=overall, rationale=rationale.strip(), extra=extra)


# --- "Score: N" ------------------------------------------------------------------------------------

_SCORE = re.compile(
    r"score\**\s*[:=]\s*\**\s*(?P<n>-?\d+(?:\.\d+)?)(?![\d.]\d)(?:\s*(?:/|out\s+of)\s*(?P<d>\d+))?", re.I)
_BARE_FIRST_LINE = re.compile(r"^\s*\**\s*(?P<n>-?\d+(?:\.\d+)?)\s*\**\s*(?:/\s*(?P<d>\d+))?\s*$")


@dataclass
class ScoreResult:
    score: float
    reason: str


def parse_score(raw, lo: float = 1, hi: float = 5, integer: bool = True) -> ScoreResult:
    """The last `Score: N` in the reply (tolerates `**Score:** 5`, `Score: 5/5`); reason = the text before it.

    Without any `Score:` a reply whose first line is a bare number (AlpaGasus: score first, explanation after)
    is read that way. Missing, out of range, a different denominator, or a fraction when `integer` -> ParseError.
    """
    text = _text(raw)
    matches = list(_SCORE.finditer(text))
    if matches:
        m = matches[-1]
        reason = text[:m.start()].rstrip(" \t*#-\n").strip()
    else:
        first, _, rest = text.strip().partition("\n")
        m = _BARE_FIRST_LINE.match(first)
        if m is None:
            raise ParseError("no 'Score: N' line in the reply", raw)
        reason = rest.strip()
    if m.group("d") and float(m.group("d")) != hi:
        raise ParseError(f"score given as {m.group('n')}/{m.group('d')}, expected a score out of {hi:g}", raw)
    score = _number(m.group("n"), "score", raw, lo, hi, integer)
    return ScoreResult(score=score, reason=reason)


# --- "[i] Score: N" lists (Deita-style ranking) -----------------------------------------------------

_INDEXED = re.compile(r"\[(\d+)\]\s*score\s*:\s*(-?\d+(?:\.\d+)?)", re.I)


def parse_indexed_scores(raw, n: int, lo: float = 1, hi: float | None = None, integer: bool = True) -> list:
    """Exactly n lines `[i] Score: N`, i = 1..n each once; hi defaults to n + 1 (the scorer's 'too complex')."""
    text = _text(raw)
    hi = n + 1 if hi is None else hi
    found = _INDEXED.findall(text)
    if len(found) != n:
        raise ParseError(f"expected {n} '[i] Score: N' lines, found {len(found)}", raw)
    by_index = {}
    for idx, value in found:
        i = int(idx)
        if not 1 <= i <= n or i in by_index:
            raise ParseError(f"index [{i}] is out of 1..{n} or repeated", raw)
        by_index[i] = _number(value, f"score [{i}]", raw, lo, hi, integer)
    return [by_index[i] for i in range(1, n + 1)]


# --- "Equal" / "Not Equal" ------------------------------------------------------------------------

_NOT_EQUAL = re.compile(r"\bnot\s+equal\b|\bunequal\b", re.I)
_EQUAL = re.compile(r"\bequal\b", re.I)


def parse_equal(raw) -> bool:
    """True for "Equal", False for "Not Equal"; "Not Equal" is tested first because it contains "Equal"."""
    text = _text(raw)
    if _NOT_EQUAL.search(text):
        return False
    if _EQUAL.search(text):
        return True
    raise ParseError("reply says neither 'Equal' nor 'Not Equal'", raw)


# --- UltraFeedback-style per-aspect ratings ---------------------------------------------------------

PREFERENCE_ASPECTS = ("instruction following", "honesty", "truthfulness", "helpfulness")
_RATING = re.compile(r"rating\**\s*:\s*\**\s*(N/?A|-?\d+(?:\.\d+)?)", re.I)
_RATIONALE = re.compile(r"rationale\**\s*:\s*\**\s*(.*)", re.I | re.S)


@dataclass
class AspectRatings:
    ratings: dict          # aspect -> int, or None for N/A
    rationales: dict       # aspect -> str

    @property
    def mean(self) -> float:
        values = [v for v in self.ratings.values() if v is not None]
        return sum(values) / len(values)


def _aspect_header(aspect: str) -> re.Pattern:
    words = r"[\s_-]+".join(map(re.escape, aspect.split()))
    return re.compile(rf"^[ \t]*[#*>\[\s-]*{words}[\]*\s]*:?[\]*]*[ \t]*(?=\n|rating|$)", re.I | re.M)


def parse_aspect_ratings(raw, aspects=PREFERENCE_ASPECTS, lo: int = 1, hi: int = 5,
                         na_allowed=("honesty",)) -> AspectRatings:
    """One section per aspect, each headed by the aspect's name and holding exactly one `Rating: N` (or N/A)."""
    text = _text(raw)
    starts = []
    for aspect in aspects:
        hits = list(_aspect_header(aspect).finditer(text))
        if len(hits) != 1:
            raise ParseError(f"aspect {aspect!r} appears as a heading {len(hits)} times, expected once", raw)
        starts.append((hits[0].start(), hits[0].end(), aspect))
    starts.sort()
    ratings, rationales = {}, {}
    for i, (_, body_start, aspect) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else len(text)
        body = text[body_start:end]
        found = _RATING.findall(body)
        if len(found) != 1:
            raise ParseError(f"aspect {aspect!r}: expected one 'Rating: N', found {len(found)}", raw)
        value = found[0]
        if value.upper().replace("/", "") == "NA":
            if aspect not in na_allowed:
                raise ParseError(f"aspect {aspect!r}: N/A is not allowed", raw)
            ratings[aspect] = None
        else:
            ratings[aspect] = _number(value, aspect, raw, lo, hi, True)
        r = _RATIONALE.search(body)
        rationales[aspect] = r.group(1).strip() if r else ""
    if all(v is None for v in ratings.values()):
        raise ParseError("every aspect is N/A: nothing to score", raw)
    return AspectRatings(ratings=ratings, rationales=rationales)


# --- numbered lists (Self-Instruct output) ---------------------------------------------------------

_NUMBERED = re.compile(r"^[ \t]*(?:\*\*)?(\d{1,3})\s?[.)](?:\*\*)?[ \t]+", re.M)


def parse_instance(raw) -> tuple[str, str]:
    """A Self-Instruct instance, {"input": ..., "output": ...} -> (input, output); the input may be empty or absent."""
    obj = {str(k).strip().lower(): v for k, v in extract_json_object(raw).items()}
    given_input, output = obj.get("input") or "", obj.get("output")
    if not isinstance(output, str) or not isinstance(given_input, str):
        raise ParseError("an instance needs a text 'output' (and a text 'input', possibly empty)", raw)
    return given_input.strip(), output.strip()


def parse_numbered_list(raw) -> list[str]:
    """Items of a `1. ...` / `2) ...` list, each with its inner whitespace collapsed; text before item 1 ignored."""
    text = _text(raw)
    marks = list(_NUMBERED.finditer(text))
    if not marks:
        raise ParseError("no numbered list in the reply", raw)
    items = []
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        item = " ".join(text[m.end():end].split())
        if item:
            items.append(item)
    return items


# --- plain text replies ----------------------------------------------------------------------------

_LABEL_PREFIX = re.compile(r"^\s*(?:\*\*)?#*\s*(?:new|rewritten|created|evolved|improved|reworded)?\s*"
                           r"(?:prompt|instruction|request|answer|response|translation)\s*#*\s*(?:\*\*)?\s*:\s*"
                           r"(?:\*\*)?", re.I)


def parse_text(raw, *, strip_label: bool = True) -> str:
    """A free-text reply (a rewritten prompt, an instruction): surrounding fences/quotes and a leading label removed."""
    text = _text(raw).strip()
    fenced = re.fullmatch(r"```[A-Za-z0-9_-]*\n(.*?)\n?```", text, re.S)
    if fenced:
        text = fenced.group(1).strip()
    if strip_label:
        text = _LABEL_PREFIX.sub("", text, count=1).strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'" and text.count(text[0]) == 2:
        text = text[1:-1].strip()
    if not text:
        raise ParseError("reply has no text once labels and quotes are removed", raw)
    return text


# --- one-word answers (Self-Instruct's "is this a classification task?") ---------------------------

_YES_NO_LINE = re.compile(r"^[\s*_\"'`>#-]*(yes|no)[\s*_\"'`.!]*$", re.I)


def parse_yes_no(raw) -> bool:
    """True for "Yes", False for "No": the reply's first line must be that one word (markdown, quotes and a final
    period tolerated). "Yes and no", "Not really", "Yes, it is not..." or a verdict later in the text are refused:
    a reply that needs interpreting is not an answer to a one-word question."""
    text = _text(raw).strip()
    first, _, rest = text.partition("\n")
    m = _YES_NO_LINE.match(first)
    if m is None:
        raise ParseError("expected a one-word reply 'Yes' or 'No' on the first line", raw)
    answer = m.group(1).lower() == "yes"
    other = "no" if answer else "yes"
    if re.search(rf"^[\s*_\"'`>#-]*{other}\b", rest, re.I | re.M):
        raise ParseError("the reply answers both 'Yes' and 'No'", raw)
    return answer


# --- pairwise verdicts ([[A]] / [[B]] / [[C]]) --------------------------------------------------------

_VERDICT = re.compile(r"\[\[\s*([A-Za-z]+)\s*\]\]")


def parse_pair_verdict(raw) -> str:
    """"A", "B" or "C" (a tie) from a reply ending with a verdict in double brackets.

    The last non-empty line must hold the verdict, and no other verdict may appear anywhere in the reply (a judge
    that wrote "[[A]]" and later "[[B]]" has given two answers). Lower case, other letters or a verdict only in
    the middle of the reasoning are refused.
    """
    text = _text(raw).strip()
    found = _VERDICT.findall(text)
    if not found:
        raise ParseError("no verdict [[A]], [[B]] or [[C]] in the reply", raw)
    bad = [v for v in found if v not in ("A", "B", "C")]
    if bad:
        raise ParseError(f"verdict [[{bad[0]}]] is not one of [[A]], [[B]], [[C]]", raw)
    if len(set(found)) > 1:
        raise ParseError(f"the reply gives {len(set(found))} different verdicts ({', '.join(sorted(set(found)))})",
                         raw)
    last = text.splitlines()[-1]
    if not _VERDICT.search(last):
        raise ParseError("the verdict is not on the reply's last line", raw)
    return found[0]
