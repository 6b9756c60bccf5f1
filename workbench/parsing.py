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


# --- replies that loop -----------------------------------------------------------------------------------

def repetition_loop(text: str) -> str | None:
    """The unit a reply keeps repeating at its end (a generation loop, typical of small models), or None.

    Either the last 60+ characters are one unit repeated at least 3 times ("the the the ...", '"a": 1, "a": 1,'),
    or the last 4+ non-empty lines are the same apart from their digits ("7. Foo", "8. Foo", ...).
    """
    t = (text or "").rstrip()
    n = len(t)
    for p in range(1, min(400, n // 3) + 1):
        span = max(3 * p, 60)
        if span > n:
            break
        tail = t[n - span:]
        if tail[p:] == tail[:-p]:
            return t[n - p:]
    lines = [ln.strip() for ln in t.split("\n") if ln.strip()]
    if len(lines) >= 4:
        last = [re.sub(r"\d+", "#", ln) for ln in lines[-4:]]
        if len(set(last)) == 1 and len(last[0]) > 3:
            return lines[-1]
    return None


# --- JSON objects inside a reply --------------------------------------------------------------------

_FENCE = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\n(.*?)\n?```", re.S)


def extract_json_object(raw) -> dict:
    """The one JSON object in a reply: the whole reply, or the only fenced block, or the only balanced {...}.

    Leading or trailing prose is tolerated only when exactly one parsable object is present; two different
    objects are ambiguous and raise. A reply cut off mid-object has no balanced object and raises.
    """
    text = _text(raw).strip()
    try:
        obj = _loads(text)
    except _DuplicateKey as e:
        raise ParseError(str(e), raw) from None
    except ValueError:
        pass
    else:
        if isinstance(obj, dict):
            return obj
        raise ParseError(f"reply is JSON but not an object ({type(obj).__name__})", raw)
    found = []
    for block in _FENCE.findall(text):
        try:
            obj = _loads(block.strip())
        except _DuplicateKey as e:
            raise ParseError(str(e), raw) from None
        except ValueError:
            continue
        if isinstance(obj, dict):
            found.append(obj)
    if not found:
        try:
            found = list(_balanced_objects(text))
        except _DuplicateKey as e:
            raise ParseError(str(e), raw) from None
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


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs):
    """JSON objects whose keys repeat with different values are a change of mind: refuse, never keep the last."""
    out = {}
    for k, v in pairs:
        if k in out and out[k] != v:
            raise _DuplicateKey(f"key {k!r} appears twice with different values ({out[k]!r}, {v!r})")
        out[k] = v
    return out


def _loads(text: str):
    return json.loads(text, object_pairs_hook=_no_duplicates)


def normalized_keys(obj: dict, raw, norm) -> dict:
    """{norm(key): value}; two keys that normalize alike ("Overall", "overall") must carry the same value."""
    out, seen = {}, {}
    for k, v in obj.items():
        nk = norm(k)
        if nk in out and out[nk] != v:
            raise ParseError(f"keys {seen[nk]!r} and {k!r} give different values ({out[nk]!r}, {v!r})", raw)
        out[nk], seen[nk] = v, k
    return out


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
                    obj = _loads(text[start:i + 1])
                except _DuplicateKey:
                    raise
                except ValueError:
                    continue
                if isinstance(obj, dict):
                    yield obj


# --- the judge's JSON -----------------------------------------------------------------------------

JUDGE_DIMENSIONS = ("instruction_clarity", "response_quality", "alignment")


RATIONALE_MAX_CHARS = 500    # in the schema only: bounds the rationale so constrained decoding cannot loop in it


def judge_schema(dimensions=JUDGE_DIMENSIONS, lo: int = 1, hi: int = 10) -> dict:
    """The JSON schema for `response_format` stating what parse_judge_json checks: every dimension and overall an
    integer in [lo, hi], a non-empty rationale, nothing else."""
    score = {"type": "integer", "minimum": lo, "maximum": hi}
    props = {**{d: dict(score) for d in dimensions}, "overall": dict(score),
             "rationale": {"type": "string", "minLength": 1, "maxLength": RATIONALE_MAX_CHARS}}
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def instance_schema(output_first: bool = False) -> dict:
    """The JSON schema of a Self-Instruct instance (what parse_instance checks): text input, non-empty output."""
    props = {"input": {"type": "string"}, "output": {"type": "string", "minLength": 1}}
    if output_first:     # classification: the label first, then an input that has it
        props = {"output": props["output"], "input": props["input"]}
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


@dataclass
class JudgeResult:
    scores: dict
    overall: float
    rationale: str
    extra: dict = field(default_factory=dict)   # per-dimension rationales if the judge gave them


def _norm_key(k: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", str(k).lower()).strip("_")


def parse_judge_json(raw, dimensions=JUDGE_DIMENSIONS, lo: float = 1, hi: float = 10,
                     integer: bool = True) -> JudgeResult:
    """{"<dim>": n, ..., "overall": n, "rationale": "..."}; dims may also sit under "scores" or be {"score": n}.

    Every dimension and the overall must be present, each a whole number on the scale (a JSON number, or a string
    of digits only); a key given twice (or under two spellings, or both inside and outside "scores") with
    different values fails the item.
    """
    obj = extract_json_object(raw)
    flat = normalized_keys(obj, raw, _norm_key)
    if isinstance(flat.get("scores"), dict):
        inner = normalized_keys(flat["scores"], raw, _norm_key)
        for k, v in inner.items():
            if k in flat and flat[k] != v:
                raise ParseError(f"{k!r} is {flat[k]!r} at the top level but {v!r} under 'scores'", raw)
        flat = {**inner, **flat}
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
    overall_keys = [k for k in ("overall", "overall_score") if k in flat]
    if not overall_keys:
        raise ParseError("overall score is missing", raw)
    if len(overall_keys) == 2 and flat["overall"] != flat["overall_score"]:
        raise ParseError(f"'overall' ({flat['overall']!r}) and 'overall_score' ({flat['overall_score']!r}) differ",
                         raw)
    overall = _number(flat[overall_keys[0]], "overall", raw, lo, hi, integer)
    rationale = flat.get("rationale", flat.get("reasoning", flat.get("explanation")))
    if not isinstance(rationale, str) or not rationale.strip():
        raise ParseError("rationale is missing or empty", raw)
    if not any(ch.isalpha() for ch in rationale):     # "...": the template's placeholder echoed; "###", "1"
        raise ParseError(f"rationale {rationale.strip()[:40]!r} has no words (the template's '...' echoed, or only "
                         f"digits and punctuation)", raw)
    return JudgeResult(scores=scores, overall=overall, rationale=rationale.strip(), extra=extra)


# --- numbers written in text: one rule set for `Score: N`, `Rating: N` and `[i] Score: N` -------------------
#
# A score is read from a line that starts with the keyword (markdown emphasis, `#`, `>`, a bullet and whitespace
# may come before it; `Final`/`Overall` may qualify it) followed by `:` or `=`. Every other mention of the keyword
# with a number ("a Score: 5 means ...", "a score of 4", "the score is 3"), at a line start or mid-sentence, must
# give the same value, so a restated rubric or a change of mind never picks a winner. `Sub-score`, `subscore`,
# `sub score` are other things and are ignored. A range (3-4, 3–4, 3 to 4, 3 or 4), a denominator other than the
# scale's top (4/10 on 1-5), a scale named on the line that is not ours, a percentage, a number in words, a
# fraction on an integer scale or a value outside the scale fails the item; the raw reply is kept.

_WORD_NUMBERS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve".split())}
_NUM = r"[+-]?\d+(?:[.,]\d+)?"
_SEP = re.compile(r"[*_]*[ \t]*(?P<sep>[:=]|\bof\b|\bis\b|\bwould\s+be\b|\bshould\s+be\b)[ \t]*[*_]*", re.I)
_LEAD = re.compile(r"[ \t]*(?:[>#*_+\-][ \t]*)*(?:(?:final|overall)[ \t]+)?", re.I)
_NA = re.compile(r"[\s*_\[(]*N/?A\b", re.I)
_VALUE = re.compile(rf"[\s*_\[(]*(?P<n>{_NUM})(?P<pct>[ \t]*%)?[*_\])]*")
_WORDS = re.compile(r"[\s*_\[(]*(?P<w>" + "|".join(_WORD_NUMBERS) + r")\b", re.I)
_RANGE = re.compile(r"[ \t]*[*_]*[ \t]*(?:[-–—~]|\bto\b|\bor\b|\band\b)[ \t]*(?:(?:maybe|possibly|perhaps|even)[ \t]+)?"
                    r"[*_]*[ \t]*[+-]?\d", re.I)
_DENOM = re.compile(rf"[ \t]*[*_]*[ \t]*\(?[ \t]*(?:/|⁄|\bout\s+of\b(?:\s+a\s+(?:possible|maximum\s+of|max\s+of))?|"
                    rf"\bof\b)[ \t]*[*_]*[ \t]*(?P<d>{_NUM})", re.I)
_OTHER_DENOM = re.compile(rf"(?:/|⁄|\bout\s+of\b)[ \t]*(?P<d>{_NUM})", re.I)
_SCALE = re.compile(rf"\bscale\s+(?:of|from)\s+(?P<a>{_NUM})\s*(?:-|–|—|to)\s*(?P<b>{_NUM})", re.I)


@dataclass
class _Mention:
    start: int            # where the keyword starts
    line_no: int          # 1-based line of the keyword
    is_line: bool         # a score line (keyword at a line start, followed by ':' or '=')
    value: float | None   # the number read (for words: their value, used only to compare mentions)
    problem: str | None   # why the value cannot be a score (None: it can)
    shown: str            # the mention as written, for messages
    value_line: int = 0   # the line the value is on (the next one for "**Score:**" alone on its line)
    sep: str = ":"        # what joined keyword and value: ':', '=', 'of', 'is', ...


def _g(x: float) -> str:
    return f"{x:g}"


def _read_value(after: str, lo: float, hi: float, integer: bool, na_ok: bool) -> tuple:
    """(value, problem) of the text after `Score:`; (None, None) when no number follows at all.

    value is "N/A" when na_ok and the text says N/A. The value is not range-checked here (callers do, once)."""
    if _NA.match(after):
        return ("N/A", None) if na_ok else (None, "N/A is not allowed (only a number on the scale)")
    m = _VALUE.match(after)
    if m is None:
        w = _WORDS.match(after)
        if w:
            return float(_WORD_NUMBERS[w.group("w").lower()]), f"the score is written in words ({w.group('w')!r})"
        return None, None
    n, rest = m.group("n"), after[m.end():]
    if "," in n:
        return None, f"{n!r} has a decimal comma: cannot tell one score from two"
    value = float(n)
    if m.group("pct"):
        return value, f"{n}% is a percentage, not a score on {_g(lo)}-{_g(hi)}"
    if _RANGE.match(rest):
        return value, f"a range ({(n + rest).strip()[:20]!r}...) is not one score"
    d = _DENOM.match(rest)
    if d:
        if float(d.group("d").replace(",", ".")) != hi:
            return value, f"score given as {n}/{d.group('d')}, expected a score out of {_g(hi)}"
        rest = rest[d.end():]
        if _RANGE.match(rest):
            return value, f"a range ({(n + after[m.end():]).strip()[:20]!r}...) is not one score"
    for other in _OTHER_DENOM.finditer(rest):
        if float(other.group("d").replace(",", ".")) != hi:
            return value, f"the score line also says 'out of {other.group('d')}', expected a score out of {_g(hi)}"
    scale = _SCALE.search(rest)
    if scale and (float(scale.group("a").replace(",", ".")), float(scale.group("b").replace(",", "."))) != (lo, hi):
        return value, f"the score line names a {scale.group('a')}-{scale.group('b')} scale, expected {_g(lo)}-{_g(hi)}"
    if integer and value != int(value):
        return value, f"{n} is not a whole number"
    return value, None


def _mentions(text: str, word: str, lo: float, hi: float, integer: bool, na_ok: bool = False) -> list[_Mention]:
    """Every mention of `word` that is followed by a separator and a value (or is a score line without one)."""
    out = []
    for m in re.finditer(rf"(?<![^\W_])(?<!-){word}(?![^\W_])", text, re.I):
        s = m.start()
        if re.search(r"sub[\s_]*$", text[max(0, s - 6):s], re.I):
            continue                                    # a sub-score is not the score
        sep = _SEP.match(text, m.end())
        if sep is None:
            continue
        line_start = text.rfind("\n", 0, s) + 1
        line_end = text.find("\n", sep.end())
        line_end = len(text) if line_end < 0 else line_end
        after = text[sep.end():line_end]
        is_line = sep.group("sep") in ":=" and _LEAD.fullmatch(text[line_start:s]) is not None
        line_no = text.count("\n", 0, s) + 1
        value_line = line_no
        if is_line and not after.strip(" \t*_"):        # "**Score:**" with the number on the next line
            nxt = text[line_end:]
            value_line += len(nxt) - len(nxt.lstrip("\n"))
            after = nxt.lstrip("\n").split("\n", 1)[0]
        value, problem = _read_value(after, lo, hi, integer, na_ok)
        if value is None and problem is None:
            if not is_line:
                continue                                # "the score is based on ...": no number, no mention
            problem = f"no number after {text[s:sep.end()].strip()!r}"
        shown = (text[s:sep.end()] + after).strip()[:40]
        out.append(_Mention(s, line_no, is_line, value, problem, shown, value_line,
                            sep.group("sep").lower()))
    return out


def _agreed(mentions: list[_Mention], what: str, raw, lo: float, hi: float, integer: bool):
    """The one value the score lines give, checked against every other mention; ParseError otherwise."""
    lines = [m for m in mentions if m.is_line]
    for m in lines:
        if m.problem:
            raise ParseError(f"{what}: {m.problem} (line {m.line_no}: {m.shown!r})", raw)
    values = {m.value for m in lines}
    if len(values) > 1:
        listed = ", ".join(f"{m.shown!r} (line {m.line_no})" for m in lines)
        raise ParseError(f"{what}: the reply gives different scores: {listed}", raw)
    value = lines[0].value
    for m in mentions:
        if not m.is_line and (m.problem or m.value != value):
            raise ParseError(f"{what}: {m.shown!r} (line {m.line_no}) does not agree with the score line "
                             f"{lines[0].shown!r}" + (f": {m.problem}" if m.problem else ""), raw)
    if value == "N/A":
        return None
    return _number(value, what, raw, lo, hi, integer)


@dataclass
class ScoreResult:
    score: float
    reason: str


def parse_score(raw, lo: float = 1, hi: float = 5, integer: bool = True) -> ScoreResult:
    """The score of a line starting with `Score:` (see the rules above); reason = the reply without score lines.

    Without any score mention, a reply whose first line is only a number (AlpaGasus: score first, explanation
    after) is read that way, by the same value rules.
    """
    text = _text(raw)
    mentions = _mentions(text, "score", lo, hi, integer)
    if mentions:
        if not any(m.is_line for m in mentions):
            raise ParseError(f"no line starts with 'Score:' (found {mentions[0].shown!r} mid-sentence)", raw)
        score = _agreed(mentions, "score", raw, lo, hi, integer)
        score_lines = {n for m in mentions if m.is_line for n in range(m.line_no, m.value_line + 1)}
        kept = [ln for i, ln in enumerate(text.split("\n"), start=1) if i not in score_lines]
        return ScoreResult(score=score, reason="\n".join(kept).strip().strip("*#-").strip())
    first, _, rest = text.strip().partition("\n")
    value, problem = _read_value(first, lo, hi, integer, False)
    bare = re.fullmatch(rf"[\s*_\[(]*{_NUM}[*_\])]*(?:\s*(?:/|out\s+of)\s*{_NUM})?[\s*_.]*", first, re.I)
    if value is None or bare is None:
        raise ParseError("no 'Score: N' line in the reply", raw)
    if problem:
        raise ParseError(f"score: {problem} (first line {first.strip()!r})", raw)
    return ScoreResult(score=_number(value, "score", raw, lo, hi, integer), reason=rest.strip())


# --- "[i] Score: N" lists (Deita-style ranking) -----------------------------------------------------

_INDEX_BEFORE = re.compile(r"\[(?P<i>\d+)\][ \t]*[*_]*[ \t]*$")


def parse_indexed_scores(raw, n: int, lo: float = 1, hi: float | None = None, integer: bool = True) -> list:
    """Lines `[i] Score: N`, i = 1..n each present, by the score rules above; hi defaults to n + 1 (the scorer's
    'too complex'). A mention of the same index must agree; a score mention without an index fails the item."""
    text = _text(raw)
    hi = n + 1 if hi is None else hi
    by_index: dict[int, list[_Mention]] = {}
    for m in _mentions(text, "score", lo, hi, integer):
        line_start = text.rfind("\n", 0, m.start) + 1
        idx = _INDEX_BEFORE.search(text, line_start, m.start)
        if idx is None:
            raise ParseError(f"{m.shown!r} (line {m.line_no}) has no [i] index", raw)
        i = int(idx.group("i"))
        m.is_line = m.sep in ":=" and _LEAD.fullmatch(text[line_start:idx.start()]) is not None
        by_index.setdefault(i, []).append(m)
    if sorted(by_index) != list(range(1, n + 1)):
        raise ParseError(f"expected one '[i] Score: N' line for each of [1]..[{n}], found "
                         f"{', '.join(f'[{i}]' for i in sorted(by_index)) or 'none'}", raw)
    out = []
    for i in range(1, n + 1):
        ms = by_index[i]
        if not any(m.is_line for m in ms):
            raise ParseError(f"[{i}] has no line starting with '[{i}] Score:'", raw)
        out.append(_agreed(ms, f"score [{i}]", raw, lo, hi, integer))
    return out


def parse_version_scores(raw, n: int | None = None) -> list:
    """Deita's scorers: one `[i] Score: N` line for each of n versions scored together, whole numbers 1..n+1 (the
    top value for "could not be better" / "too complex"). The task passes n (how many versions it sent); without
    it (`workbench templates parse`) n is the highest index in the reply, and every index below it must be there."""
    if n is None:
        found = [int(i) for i in re.findall(r"\[(\d+)\]", _text(raw))]
        if not found:
            raise ParseError("no '[i] Score: N' line in the reply", raw)
        n = max(found)
    return parse_indexed_scores(raw, n, lo=1, hi=n + 1, integer=True)


# --- "Equal" / "Not Equal" ------------------------------------------------------------------------
#
# "Equal" is read only when the reply says equal and contains no negation at all; "Not Equal" when it says equal
# under a negation (not, n't, never, no longer, un-/in-/non-, Not-Equal), "different", "differ" or "not the same",
# and never says equal plainly. Both, neither, or a negated "different" (double negation) fail the item.

_NEGATORS = {"not", "never", "no", "nor", "neither", "without", "cannot"}   # and any word ending in n't
_PREFIXES = {"un", "non", "in"}                                             # "un-equal", "non equal"
_NEGATED_EQUAL = {"unequal", "inequal", "nonequal", "notequal"}
_DIFFERENT = {"different", "differ", "differs", "differed", "differing", "differently"}
_SAME = {"same", "identical", "equivalent"}


def _negator(tok: str) -> bool:
    return tok in _NEGATORS or tok.endswith("n't")


def parse_equal(raw) -> bool:
    """True for "Equal", False for "Not Equal"; anything that says both, neither, or is unsure fails the item.

    A negation reaches at most four words ahead and never across punctuation: "No, they are equal" is not a
    negated "equal" (so, saying Equal next to a negation, it fails)."""
    text = _text(raw)
    norm = re.sub(r"(?<=[a-z])[-_](?=[a-z])", " ", text.lower().replace("’", "'").replace("‘", "'"))
    toks = re.findall(r"[a-z]+(?:'[a-z]+)?|[^\sa-z0-9']", norm)
    plain_equal, not_equal, double, negations = [], [], [], []
    for i, t in enumerate(toks):
        before = []
        for b in reversed(toks[max(0, i - 4):i]):
            if not b[0].isalpha():
                break                                   # punctuation ends a negation's reach
            before.append(b)
        negated = any(_negator(b) for b in before)
        if t in ("equal", "equals"):
            negated = negated or bool(before and before[0] in _PREFIXES)
            (not_equal if negated else plain_equal).append(t)
        elif t in _NEGATED_EQUAL:
            not_equal.append(t)
        elif t in _DIFFERENT:
            (double if negated else not_equal).append(t)
        elif t in _SAME and negated:
            not_equal.append(f"not {t}")
        if _negator(t):
            negations.append(t)
    if double:
        raise ParseError(f"'{double[0]}' under a negation: cannot tell Equal from Not Equal", raw)
    if plain_equal and not_equal:
        raise ParseError("the reply says both Equal and Not Equal", raw)
    if plain_equal:
        if negations:
            raise ParseError(f"the reply says Equal but also contains a negation ({negations[0]!r})", raw)
        return True
    if not_equal:
        return False
    raise ParseError("reply says neither 'Equal' nor 'Not Equal'", raw)


# --- UltraFeedback-style per-aspect ratings ---------------------------------------------------------

PREFERENCE_ASPECTS = ("instruction following", "honesty", "truthfulness", "helpfulness")
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
    """One section per aspect, each headed by the aspect's name, with a `Rating: N` line (or N/A where allowed)
    read by the score rules above: every rating mention in the section must agree."""
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
        mentions = _mentions(body, "rating", lo, hi, True, na_ok=aspect in na_allowed)
        if not any(m.is_line for m in mentions):
            raise ParseError(f"aspect {aspect!r}: expected a 'Rating: N' line, found none", raw)
        ratings[aspect] = _agreed(mentions, f"aspect {aspect!r}", raw, lo, hi, True)
        r = _RATIONALE.search(body)
        rationales[aspect] = r.group(1).strip() if r else ""
    if all(v is None for v in ratings.values()):
        raise ParseError("every aspect is N/A: nothing to score", raw)
    return AspectRatings(ratings=ratings, rationales=rationales)


# --- numbered lists (Self-Instruct output) ---------------------------------------------------------

_NUMBERED = re.compile(r"^[ \t]*(?:\*\*)?(\d{1,3})\s?[.)](?:\*\*)?[ \t]+", re.M)


# the shape the instance template shows, "<the input, or empty>" ...: a value that only echoes it is no instance
_INSTANCE_PLACEHOLDERS = {"the label", "an input with that label", "the input", "the input, or empty", "the output",
                          "the correct output"}


def parse_instance(raw) -> tuple[str, str]:
    """A Self-Instruct instance, {"input": ..., "output": ...} -> (input, output); the input may be empty or absent.
    A phrase wholly in angle brackets ("<the input text>", not markup like "<div>") or one of the template's placeholders without them ("the
    correct output") echoes the requested shape, not an instance: refused."""
    obj = {str(k).strip().lower(): v for k, v in extract_json_object(raw).items()}
    given_input, output = obj.get("input") or "", obj.get("output")
    if not isinstance(output, str) or not isinstance(given_input, str):
        raise ParseError("an instance needs a text 'output' (and a text 'input', possibly empty)", raw)
    for key, value in (("input", given_input.strip()), ("output", output.strip())):
        bare = value.strip(" .\"'").lower()
        if re.fullmatch(r"<[^<>]*\s[^<>]*>", value) or bare in _INSTANCE_PLACEHOLDERS:   # "<div>" is markup
            raise ParseError(f"the {key} {value[:60]!r} echoes the template's placeholder, not an instance", raw)
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

def parse_answer(raw) -> str:
    """An answer kept as written: any reply with text in it (an empty one fails)."""
    return _text(raw)


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
