"""Cleaning: heuristic filters, previewed before they are applied, every change undoable as a run
(workbench/runs.py). Text normalization is in workbench/normalize.py; both are re-exported here.

Filters (config `[clean.<name>]` overrides the defaults below; `[clean] filters = [...]` picks the default set):

- instruction_length / response_length: characters and words, min and max. Instruction-scale defaults (a
  four-letter answer like "Tope" is valid; web-document minimums of 50 words are not).
- lexical_diversity: type-token ratio of the response's first `window` words, judged only from `min_words` on.
- repetition: share of lines repeating an earlier line; share of word n-grams occurring more than once.
- non_text: share of non-space characters that are neither letters, digits nor common punctuation.
- boilerplate: refusal and assistant boilerplate phrases (editable list), in responses and assistant turns.
- language (not in the default set): a cheap check that text is in the expected script and, for English,
  uses English function words.

Prose measures (diversity, repetition, non-text, language) skip fenced code blocks: code is not prose.
A dataset's kind decides which fields exist: prompt-only sets have no responses to judge, plain-text sets no
instructions.
"""
from __future__ import annotations

import os
import re
import sqlite3
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable

import orjson

from . import automatic
from .normalize import NORMALIZE_DEFAULTS, normalize_options, normalize_sample, normalize_text  # noqa: F401
from .runs import (RUN_ACTIONS, MarkedRun, RunInfo, UndoResult, current_fields, json_text, list_runs,  # noqa: F401
                   log_status_changes, new_run, roll_back_unfinished, undo_run)
from .samples import write_text
from .short_tx import ShortTransactions, roomy_wal
from .store import STATUSES, fts_replace_many, now

# --- filters ------------------------------------------------------------------------------------------------

DEFAULT_PHRASES = [
    "as an ai language model", "as a language model", "as an ai assistant", "as an artificial intelligence",
    "i am an ai language model", "i'm an ai language model", "i'm just an ai", "i am just an ai",
    "i cannot fulfill that request", "i can't fulfill that request", "i can't assist with that",
    "i cannot assist with that", "i'm not able to provide", "i am not able to provide",
    "i don't have personal opinions", "i do not have personal opinions", "i don't have personal feelings",
    "i do not have personal feelings", "my knowledge cutoff", "as of my last knowledge update",
    "i don't have the ability to browse", "i do not have access to the internet", "openai's use case policy",
    "against my programming", "i apologize, but i cannot", "i'm sorry, but i cannot", "i'm sorry, but i can't",
]

FILTER_DEFAULTS: dict[str, dict] = {
    "instruction_length": {"min_chars": 2, "max_chars": 20_000, "min_words": 1, "max_words": 4_000},
    "response_length": {"min_chars": 1, "max_chars": 100_000, "min_words": 1, "max_words": 20_000},
    "lexical_diversity": {"min_ttr": 0.25, "min_words": 50, "window": 200},
    "repetition": {"max_line_repeat": 0.4, "min_lines": 4, "ngram": 3, "max_ngram_repeat": 0.5,
                   "min_words": 30},
    "non_text": {"max_ratio": 0.5, "min_chars": 20},
    "boilerplate": {"phrases": DEFAULT_PHRASES, "fields": ["response"]},
    "language": {"expected": "en", "min_words": 8, "min_script_share": 0.8, "min_function_words": 0.08},
}
DEFAULT_FILTERS = ("instruction_length", "response_length", "lexical_diversity", "repetition", "non_text",
                   "boilerplate")
FILTERS = tuple(FILTER_DEFAULTS)

_WORD = re.compile(r"\w+")
_CODE_BLOCK = re.compile(r"```.*?(?:```|\Z)", re.S)
_COMMON_PUNCT = set(".,;:!?'\"()-–—’‘“”…/%")
_FUNCTION_WORDS = frozenset(
    "the a an and or but of to in on at for with from by as is are was were be been it this that these those "
    "i you he she we they my your his her our their not no do does did have has had will would can could "
    "should what which who how when where why if then than so".split())


def filter_params(config: dict | None) -> dict[str, dict]:
    """Defaults overlaid with `[clean.<filter>]` tables from the config; unknown names or keys are errors."""
    user = (config or {}).get("clean") or {}
    if not isinstance(user, dict):
        raise ValueError("[clean] must be a table")
    out = {name: dict(params) for name, params in FILTER_DEFAULTS.items()}
    for name, table in user.items():
        if name in ("normalize", "filters"):
            continue
        if name not in out:
            raise ValueError(f"[clean.{name}]: unknown filter (one of {', '.join(FILTERS)})")
        if not isinstance(table, dict):
            raise ValueError(f"[clean.{name}] must be a table")
        unknown = set(table) - set(out[name])
        if unknown:
            raise ValueError(f"[clean.{name}]: unknown setting {sorted(unknown)[0]!r} "
                             f"(one of {', '.join(out[name])})")
        out[name].update(table)
    return out


def default_filters(config: dict | None) -> tuple[str, ...]:
    clean = (config or {}).get("clean") or {}
    names = clean.get("filters") if isinstance(clean, dict) else None
    return tuple(parse_filters(names)) if names else DEFAULT_FILTERS


def parse_filters(names: Iterable[str] | str | None) -> list[str]:
    if names is None:
        return list(DEFAULT_FILTERS)
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, (list, tuple)):
        raise ValueError(f"filters = {names!r}: a list of filter names (one of {', '.join(FILTERS)})")
    out = []
    for item in names:
        for n in str(item).split(","):
            n = n.strip().replace("-", "_")
            if not n:
                continue
            if n not in FILTER_DEFAULTS:
                raise ValueError(f"unknown filter {n!r} (one of {', '.join(FILTERS)})")
            if n not in out:
                out.append(n)
    return out


def prose(text: str) -> str:
    return _CODE_BLOCK.sub(" ", text) if "```" in text else text


def _bounds(label: str, text: str, p: dict) -> str | None:
    chars, words = len(text.strip()), len(text.split())
    if chars < p["min_chars"]:
        return f"{label} has {chars} chars < {p['min_chars']}"
    if chars > p["max_chars"]:
        return f"{label} has {chars} chars > {p['max_chars']}"
    if words < p["min_words"]:
        return f"{label} has {words} words < {p['min_words']}"
    if words > p["max_words"]:
        return f"{label} has {words} words > {p['max_words']}"
    return None


def type_token_ratio(text: str, window: int) -> tuple[float, int]:
    words = _WORD.findall(text.casefold())
    head = words[:window]
    return (len(set(head)) / len(head) if head else 1.0), len(words)


def line_repeat_share(text: str) -> tuple[float, int]:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return 0.0, 0
    return 1.0 - len(set(lines)) / len(lines), len(lines)


def ngram_repeat_share(text: str, n: int) -> tuple[float, int]:
    """Share of word n-gram occurrences whose n-gram occurs more than once."""
    words = _WORD.findall(text.casefold())
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0, len(words)
    counts = Counter(grams)
    return sum(c for c in counts.values() if c > 1) / len(grams), len(words)


def non_text_share(text: str) -> tuple[float, int]:
    chars = [c for c in text if not c.isspace()]
    if not chars:
        return 0.0, 0
    odd = sum(1 for c in chars if not c.isalnum() and c not in _COMMON_PUNCT)
    return odd / len(chars), len(chars)


def _fold_phrase(text: str) -> str:
    return " ".join(text.casefold().replace("’", "'").replace("‘", "'").split())


def _latin_share(text: str) -> float:
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return 1.0
    latin = sum(1 for c in letters if c.isascii() or "LATIN" in unicodedata.name(c, ""))
    return latin / len(letters)


@dataclass
class Row:
    """One sample as the filters see it."""
    id: int
    dataset_id: int
    kind: str
    instruction: str
    input: str
    response: str
    messages: list | None
    status: str

    @property
    def has_instruction(self) -> bool:
        return self.kind != "text"

    @property
    def has_response(self) -> bool:
        return self.kind != "prompts"

    def assistant_texts(self) -> list[str]:
        turns = [m.get("content") or "" for m in self.messages or [] if m.get("role") == "assistant"]
        return turns if self.response in turns else [*turns, self.response]


def check(name: str, row: Row, p: dict) -> str | None:
    """Why `row` fails filter `name` (a short detail for the preview), or None if it passes."""
    if name == "instruction_length":
        if not row.has_instruction:
            return None
        return _bounds("instruction", (row.instruction + "\n" + row.input).strip(), p)
    if name == "response_length":
        return _bounds("response", row.response, p) if row.has_response else None
    if name == "lexical_diversity":
        if not row.has_response:
            return None
        ttr, n = type_token_ratio(prose(row.response), p["window"])
        if n >= p["min_words"] and ttr < p["min_ttr"]:
            return f"type-token ratio {ttr:.2f} < {p['min_ttr']} over {min(n, p['window'])} words"
        return None
    if name == "repetition":
        for label, text in (("instruction", row.instruction), ("response", row.response)):
            text = prose(text)
            share, lines = line_repeat_share(text)
            if lines >= p["min_lines"] and share > p["max_line_repeat"]:
                return f"{label}: {share:.0%} of {lines} lines repeat an earlier line"
            share, words = ngram_repeat_share(text, p["ngram"])
            if words >= p["min_words"] and share > p["max_ngram_repeat"]:
                return f"{label}: {share:.0%} of word {p['ngram']}-grams are repeats"
        return None
    if name == "non_text":
        for label, text in (("instruction", row.instruction), ("response", row.response)):
            share, n = non_text_share(prose(text))
            if n >= p["min_chars"] and share > p["max_ratio"]:
                return f"{label}: {share:.0%} of characters are symbols"
        return None
    if name == "boilerplate":
        phrases = [_fold_phrase(ph) for ph in p["phrases"]]
        fields = p["fields"]
        texts = []
        if "response" in fields:
            texts += [("response", t) for t in row.assistant_texts()]
        if "instruction" in fields:
            texts.append(("instruction", row.instruction))
        for label, text in texts:
            folded = _fold_phrase(text)
            for ph in phrases:
                if ph and ph in folded:
                    return f"{label} says {ph!r}"
        return None
    if name == "language":
        for label, text in (("instruction", row.instruction), ("response", row.response)):
            text = prose(text)
            words = _WORD.findall(text.casefold())
            if len(words) < p["min_words"]:
                continue
            latin = _latin_share(text)
            if p["expected"] == "en" or p["min_script_share"]:
                if latin < p["min_script_share"]:
                    return f"{label}: only {latin:.0%} of letters are Latin script"
            if p["expected"] == "en":
                fw = sum(1 for w in words if w in _FUNCTION_WORDS) / len(words)
                if fw < p["min_function_words"]:
                    return f"{label}: {fw:.0%} English function words"
        return None
    raise ValueError(f"unknown filter {name!r}")


# --- scanning the store ----------------------------------------------------------------------------------------

@dataclass
class Hit:
    id: int
    dataset: str
    filter: str
    detail: str
    status: str                  # when previewed; apply leaves the row alone if it has changed since


@dataclass
class Preview:
    """What a filter pass would do: the first failing filter per row (the reason it would be rejected with)."""
    filters: list[str]
    scanned: dict[str, int] = field(default_factory=dict)              # dataset -> rows looked at
    counts: dict[str, dict[str, int]] = field(default_factory=dict)    # filter -> dataset -> rows it would drop
    hits: list[Hit] = field(default_factory=list)
    exempted: dict[str, int] = field(default_factory=dict)    # filter -> rows it would drop, kept by the curator

    @property
    def total(self) -> int:
        return len(self.hits)

    def examples(self, name: str, limit: int | None = None) -> list[Hit]:
        out = [h for h in self.hits if h.filter == name]
        return out if limit is None else out[:limit]

    def to_json(self, examples: int = 5) -> dict:
        return {"filters": self.filters, "scanned": self.scanned, "would_reject": self.total,
                "exempted": self.exempted,
                "by_filter": {f: {"total": sum(by.values()), "by_dataset": by,
                                  "examples": [{"id": h.id, "dataset": h.dataset, "detail": h.detail}
                                               for h in self.examples(f, examples)]}
                              for f, by in self.counts.items()}}


def _scope(conn: sqlite3.Connection, datasets: Iterable[str] | None, statuses: Iterable[str]):
    statuses = list(statuses)
    for s in statuses:
        if s not in STATUSES:
            raise ValueError(f"unknown status {s!r}; one of {', '.join(STATUSES)}")
    info = {r[0]: (r[1], r[2]) for r in conn.execute("SELECT id, name, kind FROM datasets")}
    if datasets:
        ids = []
        for name in datasets:
            match = [i for i, (n, _) in info.items() if n == name]
            if not match:
                raise KeyError(f"no dataset named {name!r}")
            ids.append(match[0])
    else:
        ids = list(info)
    return ids, statuses, info


def iter_rows(conn: sqlite3.Connection, datasets: Iterable[str] | None = None,
              statuses: Iterable[str] = ("pending",), batch: int = 2000):
    """Rows in scope, in id order (keyset pages: memory stays flat at any size)."""
    ids, statuses, info = _scope(conn, datasets, statuses)
    if not ids:
        return
    where = (f"dataset_id IN ({','.join('?' * len(ids))}) AND status IN ({','.join('?' * len(statuses))})")
    last = 0
    while True:
        rows = conn.execute(f"SELECT id, dataset_id, instruction, input, response, messages, status FROM samples "
                            f"WHERE {where} AND id > ? ORDER BY id LIMIT ?", (*ids, *statuses, last, batch)).fetchall()
        if not rows:
            return
        for sid, did, ins, inp, resp, msgs, status in rows:
            yield Row(sid, did, info[did][1], ins or "", inp or "", resp or "",
                      orjson.loads(msgs) if msgs else None, status), info[did][0]
        last = rows[-1][0]


@dataclass
class Scan:
    """Every filter's verdict on every row in scope that fails at least one: enough to preview any subset of
    the scanned filters without reading the store again (the Clean screen toggles filters on this)."""
    filters: list[str]
    statuses: list[str]
    scanned: dict[str, int] = field(default_factory=dict)
    failures: list[tuple[int, str, str, dict[str, str]]] = field(default_factory=list)  # id, dataset, status, details
    exempt: list[tuple[int, str]] = field(default_factory=list)   # (id, filter) a failure the curator exempted

    def preview(self, names: Iterable[str] | None = None) -> Preview:
        """The first failing filter (in the given order) per row: the reason applying would reject it with."""
        names = [n for n in (names or self.filters) if n in self.filters]
        out = Preview(names, dict(self.scanned), {n: {} for n in names})
        for _, n in self.exempt:
            if n in names:
                out.exempted[n] = out.exempted.get(n, 0) + 1
        for sid, dataset, status, details in self.failures:
            for n in names:
                if n in details:
                    out.hits.append(Hit(sid, dataset, n, details[n], status))
                    out.counts[n][dataset] = out.counts[n].get(dataset, 0) + 1
                    break
        return out


def scan(conn: sqlite3.Connection, filters: Iterable[str] | None = None, datasets: Iterable[str] | None = None,
         config: dict | None = None, statuses: Iterable[str] = ("pending",),
         progress: Callable[[int], None] | None = None) -> Scan:
    names = parse_filters(filters) if filters is not None else list(default_filters(config))
    params = filter_params(config)
    statuses = list(statuses)
    out = Scan(names, statuses)
    kept = automatic.exemptions(conn)   # rows the curator keeps whatever a filter says (see automatic.exempt)
    for k, (row, dataset) in enumerate(iter_rows(conn, datasets, statuses), 1):
        out.scanned[dataset] = out.scanned.get(dataset, 0) + 1
        details = {}
        for n in names:
            detail = check(n, row, params[n])
            if detail and automatic.is_exempt(kept, row.id, n):
                out.exempt.append((row.id, n))
            elif detail:
                details[n] = detail
        if details:
            out.failures.append((row.id, dataset, row.status, details))
        if progress and k % 5000 == 0:
            progress(k)
    return out


def preview(conn: sqlite3.Connection, filters: Iterable[str] | None = None, datasets: Iterable[str] | None = None,
            config: dict | None = None, statuses: Iterable[str] = ("pending",),
            progress: Callable[[int], None] | None = None) -> Preview:
    """Evaluate filters over the rows in scope (default: pending rows) without changing anything."""
    return scan(conn, filters, datasets, config, statuses, progress).preview()


@dataclass
class ApplyResult:
    run: str | None
    rejected: int
    changed_since: int = 0       # rows whose status moved between preview and apply: left alone


def apply_filters(conn: sqlite3.Connection, result: Preview) -> ApplyResult:
    """Reject the previewed rows (reason = the filter's name) as one run. A row whose status changed since the
    preview (a curator decided it meanwhile) is left alone.

    In short transactions (workbench/short_tx.py), each reading the statuses it changes; `bulk_runs` marks the run
    unfinished until its last chunk. A failure midway undoes what was written before it is reported, and a process
    that died midway is undone by the next open (workbench/bulk_recovery.py), so the run stays one undoable step."""
    n = 0
    with MarkedRun(conn, "filter") as marked, ShortTransactions(conn) as tx:
        for i in range(0, len(result.hits), APPLY_CHUNK):
            hits = result.hits[i:i + APPLY_CHUNK]
            chunk = [h.id for h in hits]
            current = dict(conn.execute(f"SELECT id, status FROM samples WHERE id IN "
                                        f"({','.join('?' * len(chunk))})", chunk).fetchall())
            changes = [(h.id, h.status, h.filter) for h in hits
                       if current.get(h.id) == h.status and h.status != "rejected"]
            if changes:
                n += log_status_changes(conn, marked.id(), "filter", changes, "rejected")
            tx.next()
        marked.finish()
    run = marked.run
    if run is None:
        return ApplyResult(None, 0, len(result.hits))
    return ApplyResult(run, n, len(result.hits) - n)


APPLY_CHUNK = 500      # previewed rows read and rejected per chunk (a few ms); commits: workbench/short_tx.py


@dataclass
class NormalizePreview:
    options: dict
    scanned: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)               # dataset -> rows that would change
    changes: list[tuple[int, str, dict, dict]] = field(default_factory=list)   # (id, dataset, before, after)

    @property
    def total(self) -> int:
        return len(self.changes)


def preview_normalize(conn: sqlite3.Connection, datasets: Iterable[str] | None = None, config: dict | None = None,
                      statuses: Iterable[str] = ("pending", "accepted")) -> NormalizePreview:
    opts = normalize_options(config)
    out = NormalizePreview(opts)
    ids, statuses, info = _scope(conn, datasets, statuses)
    if not ids:
        return out
    where = (f"dataset_id IN ({','.join('?' * len(ids))}) AND status IN ({','.join('?' * len(statuses))})")
    last = 0
    cols = ("id", "dataset_id", "instruction", "input", "response", "rejected", "system", "messages")
    while True:
        rows = conn.execute(f"SELECT {', '.join(cols)} FROM samples WHERE {where} AND id > ? ORDER BY id LIMIT 2000",
                            (*ids, *statuses, last)).fetchall()
        if not rows:
            return out
        for r in rows:
            s = dict(zip(cols, r))
            if s["messages"]:
                s["messages"] = orjson.loads(s["messages"])
            dataset = info[s["dataset_id"]][0]
            out.scanned[dataset] = out.scanned.get(dataset, 0) + 1
            after = normalize_sample(s, opts)
            if after:
                out.changes.append((s["id"], dataset, {k: s[k] for k in after}, after))
                out.counts[dataset] = out.counts.get(dataset, 0) + 1
        last = rows[-1][0]


def apply_normalize(conn: sqlite3.Connection, result: NormalizePreview) -> ApplyResult:
    """Write the previewed text changes as one run; each decision keeps the text before and after. A row edited
    since the preview is left alone.

    In short transactions, as apply_filters, each reading the texts it changes (an edit a curator makes meanwhile
    stands); `bulk_runs` marks the run unfinished until its last chunk. A failure midway takes back what was
    written before it is reported (runs.roll_back_unfinished), and a process that died midway is taken back by
    the next open (workbench/recovery.py): the store never keeps part of a normalize run."""
    run, logs_n, skipped = None, 0, 0
    try:
        with roomy_wal(conn), ShortTransactions(conn) as tx:
            for i in range(0, len(result.changes), NORMALIZE_CHUNK):
                logs, fts = [], []
                for sid, _, before, after in result.changes[i:i + NORMALIZE_CHUNK]:
                    if current_fields(conn, sid, before) != before:      # edited since the preview
                        skipped += 1
                        continue
                    if run is None:   # the run and its unfinished mark start with its first change
                        run = new_run(conn, "normalize")
                        conn.execute("INSERT INTO bulk_runs (kind, run, pid, started_at) VALUES ('normalize', ?, ?, "
                                     "?)", (run, os.getpid(), now()))
                    write_text(conn, sid, after, fts)
                    logs.append((sid, json_text(before), json_text(after), run, now()))
                fts_replace_many(conn, fts)
                conn.executemany("INSERT INTO decisions (sample_id, action, before, after, reason, session, "
                                 "created_at) VALUES (?, 'normalize', ?, ?, 'normalize', ?, ?)", logs)
                logs_n += len(logs)
                tx.next()
            if run is not None:
                conn.execute("DELETE FROM bulk_runs WHERE run = ?", (run,))
    except BaseException:
        if run is not None and conn.execute("SELECT 1 FROM bulk_runs WHERE run = ?", (run,)).fetchone():
            roll_back_unfinished(conn, run)
        raise
    return ApplyResult(run, logs_n, skipped)


NORMALIZE_CHUNK = 50      # rows a chunk rewrites (text, hash, duplicate flags, search entries: ~0.3-1 ms each)
