"""Dataset formats: streaming readers for each file type, format detection and row parsing into sample dicts.

Readers yield (line, row, record): `line` is the 1-based line where the record starts, `row` its 1-based index.
Parsers turn one record into a sample dict (the fields of samples.FIELDS) or raise RowError naming the field.
"""
from __future__ import annotations

import codecs
import csv
import io
import json
import re
from pathlib import Path
from typing import Iterator

import orjson

from .textnorm import keep_as_written

FORMATS = ("alpaca", "dolly", "sharegpt", "messages", "preference", "hh", "prompt-completion", "prompts", "text")
FILE_TYPES = ("jsonl", "json", "csv", "tsv", "parquet", "txt")

# Columns the workbench itself understands in any format (they round-trip through every export).
LABEL_FIELDS = ("task_type", "domain", "difficulty", "language")

# Per format: target field -> source columns, first present wins.
FORMAT_FIELDS: dict[str, dict[str, tuple[str, ...]]] = {
    # alpaca rows may also carry a conversation and a rejected reply (our Parquet export writes them)
    "alpaca": {"instruction": ("instruction",), "input": ("input",), "response": ("output", "response"),
               "system": ("system",), "messages": ("messages",), "rejected": ("rejected",)},
    "dolly": {"instruction": ("instruction",), "input": ("context", "input"), "response": ("response", "output"),
              "task_type": ("category",), "system": ("system",)},
    "sharegpt": {"messages": ("conversations",), "system": ("system",)},
    "messages": {"messages": ("messages",)},
    "preference": {"prompt": ("prompt",), "response": ("chosen",), "rejected": ("rejected",), "system": ("system",)},
    "hh": {"response": ("chosen",), "rejected": ("rejected",)},
    "prompt-completion": {"instruction": ("prompt",), "response": ("completion",), "system": ("system",)},
    "prompts": {"instruction": ("instruction", "prompt", "question", "query"), "input": ("input", "context"),
                "task_type": ("category",), "system": ("system",)},
    "text": {"response": ("text",)},
}
KIND = {"alpaca": "sft", "dolly": "sft", "sharegpt": "sft", "messages": "sft", "prompt-completion": "sft",
        "preference": "preference", "hh": "preference", "prompts": "prompts", "text": "text"}

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system"}
SHAREGPT_FROM = {"user": "human", "assistant": "gpt", "system": "system"}


class FormatError(ValueError):
    """A problem with the file as a whole or with one record; `line`/`field` say where."""

    def __init__(self, message: str, *, line: int | None = None, row: int | None = None, field: str | None = None):
        super().__init__(message)
        self.message, self.line, self.row, self.field = message, line, row, field


class RowError(FormatError):
    pass


# --- file types and readers --------------------------------------------------------------------------

def file_type(path: Path, fmt: str | None = None) -> str:
    if fmt == "text" and path.suffix.lower() not in (".jsonl", ".json", ".csv", ".tsv", ".parquet"):
        return "txt"
    ext = path.suffix.lower().lstrip(".")
    if ext in ("jsonl", "ndjson"):
        return "jsonl"
    if ext in FILE_TYPES and ext != "json":
        return ext
    if ext in ("md", "text"):
        return "txt"
    # .json or an unknown extension: sniff the first non-blank byte (many ".json" files are JSON Lines)
    with open(path, "rb") as f:
        head = f.read(4096).lstrip(codecs.BOM_UTF8).lstrip()
    if head.startswith(b"["):
        return "json"
    if head.startswith(b"{"):
        return "jsonl"
    if ext == "json":
        return "json"  # the array reader names what is wrong
    raise FormatError(f"cannot tell the file type from the name {path.name!r}; use .jsonl, .json, .csv, .tsv, "
                      ".parquet or .txt")


def read_records(path: Path, ftype: str) -> Iterator[tuple[int, int, dict | FormatError]]:
    """Yields (line, row, record); a record-level problem comes as a FormatError in place of the record,
    a file-level one (broken array structure, unreadable file) is raised."""
    reader = {"jsonl": _read_jsonl, "json": _read_json_array, "csv": _read_csv, "tsv": _read_tsv,
              "parquet": _read_parquet, "txt": _read_text}[ftype]
    return reader(path)


def _decode_line(raw: bytes, line: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FormatError(f"not valid UTF-8 (byte {e.start + 1} of the line)", line=line) from None


JSONL_BLOCK_BYTES = 1 << 20


def jsonl_blocks(path: Path) -> Iterator[tuple[int, bytes]]:
    """A JSONL file in blocks of whole lines: (the number of the block's first line, its bytes). The parallel
    importer ships whole blocks to its worker: one bytes object pickles far cheaper than thousands of lines."""
    line = 1
    with open(path, "rb") as f:
        while block := f.read(JSONL_BLOCK_BYTES):
            block += f.readline()
            if line == 1 and block.startswith(codecs.BOM_UTF8):
                block = block[3:]
            yield line, block
            line += block.count(b"\n")


def block_lines(first_line: int, block: bytes, first_row: int = 1) -> Iterator[tuple[int, int, bytes]]:
    """The non-blank lines of a block as (line, row, raw); the row counts non-blank lines from `first_row`."""
    raws = block.split(b"\n")
    last = raws.pop()   # b"" when the block ends with a newline; else a last line with no newline (truncated?)
    row = first_row
    for line, raw in enumerate(raws, first_line):
        if raw.strip():
            yield line, row, raw + b"\n"
            row += 1
    if last.strip():
        yield first_line + len(raws), row, last


def jsonl_lines(path: Path) -> Iterator[tuple[int, int, bytes]]:
    """The non-blank lines of a JSONL file, undecoded, as (line, row, raw)."""
    next_row = 1
    for first_line, block in jsonl_blocks(path):
        for item in block_lines(first_line, block, next_row):
            next_row = item[1] + 1
            yield item


def parse_jsonl_line(raw: bytes, line: int, row: int) -> dict | FormatError:
    """One JSONL line -> its object, or a FormatError (returned, so --skip-invalid can go on past it)."""
    try:
        rec = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        try:
            _decode_line(raw, line)  # orjson checks UTF-8 too: name that problem precisely
        except FormatError as bad:
            bad.row = row
            return bad
        truncated = not raw.endswith(b"\n")
        return FormatError(("truncated JSON (the file ends mid-record)" if truncated else "broken JSON") + f": {e}",
                           line=line, row=row)
    if not isinstance(rec, dict):
        return FormatError(f"expected a JSON object, got {type(rec).__name__}", line=line, row=row)
    return rec


def _read_jsonl(path: Path):
    for line, row, raw in jsonl_lines(path):
        yield line, row, parse_jsonl_line(raw, line, row)


def _read_json_array(path: Path, chunk: int = 1 << 20):
    """Stream the elements of a top-level JSON array without loading the file."""
    decoder = json.JSONDecoder()
    with open(path, "rb") as fb:
        f = codecs.getincrementaldecoder("utf-8")()
        buf, pos, eof, line, row = "", 0, False, 1, 0

        def more(size: int = chunk) -> bool:
            nonlocal buf, pos, eof, line
            if eof:
                return False
            data = fb.read(size)
            try:
                text = f.decode(data, final=not data)
            except UnicodeDecodeError as e:
                bad_line = line + buf[:pos].count("\n") + data[:e.start].count(b"\n")
                raise FormatError("not valid UTF-8", line=bad_line) from None
            line += buf[:pos].count("\n")
            buf = buf[pos:] + text
            pos = 0
            if not data:
                eof = True
            return True

        def skip_ws():
            nonlocal pos
            while True:
                while pos < len(buf) and buf[pos] in " \t\r\n\ufeff":
                    pos += 1
                if pos < len(buf) or not more():
                    return

        skip_ws()
        if pos >= len(buf):
            raise FormatError("the file is empty", line=1)
        if buf[pos] != "[":
            raise FormatError("expected a JSON array of objects (the file does not start with '[')", line=line)
        pos += 1
        first = True
        while True:
            skip_ws()
            if pos >= len(buf):
                raise FormatError("truncated JSON array (the file ends before ']')",
                                  line=line + buf[:pos].count("\n"), row=row + 1)
            if buf[pos] == "]":
                pos += 1
                skip_ws()
                if pos < len(buf):
                    raise FormatError("unexpected data after the closing ']'", line=line + buf[:pos].count("\n"))
                return
            if not first:
                if buf[pos] != ",":
                    raise FormatError("broken JSON array: expected ',' or ']' between records",
                                      line=line + buf[:pos].count("\n"), row=row + 1)
                pos += 1
                skip_ws()
            first = False
            start_line = line + buf[:pos].count("\n")
            size = chunk
            while True:
                try:
                    rec, end = decoder.raw_decode(buf, pos)
                    break
                except RecursionError:   # [[[[...]]]] thousands deep: the stdlib decoder recurses per level
                    raise FormatError("JSON nested too deeply (more levels than the parser can follow)",
                                      line=start_line, row=row + 1) from None
                except json.JSONDecodeError as e:
                    # incomplete because the buffer ends mid-record? read more (doubling, so a huge field
                    # costs O(n) re-parsing, not O(n^2)) and try again
                    if not eof and (e.pos >= len(buf) - 64 or e.msg.startswith("Unterminated string")):
                        more(size)
                        size *= 2
                        start_line = line + buf[:pos].count("\n")
                        continue
                    err_line = line + buf[:e.pos].count("\n")
                    if eof and e.pos >= len(buf) - 1:
                        raise FormatError("truncated JSON (the file ends mid-record)", line=err_line,
                                          row=row + 1) from None
                    raise FormatError(f"broken JSON: {e.msg}", line=err_line, row=row + 1) from None
            row += 1
            if not isinstance(rec, dict):
                raise FormatError(f"expected a JSON object, got {type(rec).__name__}", line=start_line, row=row)
            pos = end
            # keep the buffer small: drop what has been parsed
            if pos > chunk:
                line += buf[:pos].count("\n")
                buf, pos = buf[pos:], 0
            yield start_line, row, rec


def _read_delimited(path: Path, delimiter: str):
    with open(path, "rb") as fb:
        text = io.TextIOWrapper(fb, encoding="utf-8-sig", newline="", errors="strict")
        reader = csv.reader(text, delimiter=delimiter, strict=True)
        try:
            header = next(reader)
        except StopIteration:
            raise FormatError("the file is empty", line=1) from None
        except UnicodeDecodeError:
            raise FormatError("not valid UTF-8", line=1) from None
        except csv.Error as e:
            raise FormatError(f"broken header: {e}", line=1) from None
        if not any(h.strip() for h in header):
            raise FormatError("the header line is empty", line=1)
        header = [h.strip() for h in header]
        dup = {h for h in header if header.count(h) > 1}
        if dup:
            raise FormatError(f"duplicate column names in the header: {sorted(dup)}", line=1)
        row = 0
        while True:
            start = reader.line_num + 1
            try:
                values = next(reader)
            except StopIteration:
                return
            except UnicodeDecodeError:
                raise FormatError("not valid UTF-8", line=start) from None
            except csv.Error as e:
                raise FormatError(f"broken {'TSV' if delimiter == chr(9) else 'CSV'} record: {e}", line=start,
                                  row=row + 1) from None
            if not values or values == [""]:
                continue
            row += 1
            if len(values) != len(header):
                yield start, row, FormatError(f"has {len(values)} fields, the header has {len(header)}",
                                              line=start, row=row)
                continue
            yield start, row, dict(zip(header, values))


def _read_csv(path: Path):
    return _read_delimited(path, ",")


def _read_tsv(path: Path):
    return _read_delimited(path, "\t")


def _read_parquet(path: Path):
    import pyarrow.parquet as pq
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises ArrowInvalid/OSError for a broken file
        raise FormatError(f"not a readable Parquet file: {e}") from None
    convert = parquet_conversions(pf.schema_arrow)
    row = 0
    for batch in pf.iter_batches(batch_size=2048):
        if convert:
            batch = _convert_batch(batch, convert)
        for rec in batch.to_pylist():
            row += 1
            # Parquet has a column for every key: a null means "absent" for that row
            yield row, row, {k: v for k, v in rec.items() if v is not None}


def parquet_conversions(schema) -> dict[str, str]:
    """Columns whose Arrow type has no JSON value: decimals become their exact text ("12.50"), durations their
    count and unit ("1500ms"); binary data, intervals and these types inside nested columns are refused, naming the
    column (a guess at their text would be silent damage)."""
    import pyarrow as pa
    out = {}
    for f in schema:
        t = f.type
        if pa.types.is_decimal(t):
            out[f.name] = "decimal"
        elif pa.types.is_duration(t):
            out[f.name] = "duration"
        elif (bad := _no_text_type(t)) is not None:
            raise FormatError(f"column {f.name!r} holds {bad} data, which has no text form; leave the column out of "
                              f"the file (or convert it) and import again", field=f.name)
    return out


def _no_text_type(t) -> str | None:
    import pyarrow as pa
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return f"binary ({t})"
    if pa.types.is_interval(t) or pa.types.is_decimal(t) or pa.types.is_duration(t):
        return str(t) + (" (inside a nested column)" if not pa.types.is_interval(t) else "")
    if pa.types.is_dictionary(t):
        return _no_text_type(t.value_type)
    for i in range(getattr(t, "num_fields", 0)):   # list, struct, map: their child types
        if (bad := _no_text_type(t.field(i).type)) is not None:
            return bad
    return None


def _convert_batch(batch, convert: dict[str, str]):
    import pyarrow as pa
    arrays = []
    for name, col in zip(batch.schema.names, batch.columns):
        kind = convert.get(name)
        if kind == "decimal":
            col = col.cast(pa.string())
        elif kind == "duration":
            unit = col.type.unit
            col = pa.array([None if n is None else f"{n}{unit}" for n in col.cast(pa.int64()).to_pylist()],
                           pa.string())
        arrays.append(col)
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


def _read_text(path: Path):
    """Plain text split on blank lines: each segment is one record {"text": ...}."""
    lines: list[str] = []
    start = 0
    row = 0
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            if n == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[3:]
            s = _decode_line(raw, n)
            if s.strip():
                if not lines:
                    start = n
                lines.append(s.rstrip("\r\n"))
            elif lines:
                row += 1
                yield start, row, {"text": "\n".join(lines)}
                lines = []
        if lines:
            row += 1
            yield start, row, {"text": "\n".join(lines)}


# --- detection -----------------------------------------------------------------------------------------

def detect_format(keys: set[str]) -> str | None:
    """The format a record's column names say it is, or None."""
    if "conversations" in keys:
        return "sharegpt"
    if "chosen" in keys and "rejected" in keys:
        return "preference" if "prompt" in keys else "hh"
    if "instruction" in keys and keys & {"output", "response"}:
        return "dolly" if keys & {"context", "category"} else "alpaca"
    if "messages" in keys:
        return "messages"
    if "prompt" in keys and "completion" in keys:
        return "prompt-completion"
    has_instruction = bool(keys & {"instruction", "prompt", "question", "query"})
    if has_instruction:
        return "prompts"
    if "text" in keys:
        return "text"
    return None


def apply_mapping(rec: dict, mapping: dict[str, str]) -> dict:
    """--map target=source: rename source columns to the names the formats understand."""
    if not mapping:
        return rec
    out = {k: v for k, v in rec.items() if k not in mapping.values()}
    for target, source in mapping.items():
        if source in rec:
            out[target] = rec[source]
    return out


def field_mapping(fmt: str, keys: set[str], mapping: dict[str, str] | None = None) -> dict[str, str]:
    """Target field -> source column, as it applies to records with these keys (for --dry-run)."""
    mapping = mapping or {}
    out = {}
    for target, sources in FORMAT_FIELDS[fmt].items():
        for s in sources:
            if s in keys:
                out[target] = mapping.get(s, s)
                break
    for f in LABEL_FIELDS:
        if f in keys and f not in out:
            out[f] = mapping.get(f, f)
    return out


# --- parsing one record --------------------------------------------------------------------------------

def _text(value, field: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return keep_as_written(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise RowError(f"expected text, got {type(value).__name__}", field=field)


def _first(rec: dict, sources: tuple[str, ...]) -> str | None:
    for s in sources:
        if s in rec and rec[s] is not None:
            return s
    return None


def _messages(value, field: str, role_map: dict | None = None, role_key="role", content_key="content") -> list[dict]:
    if isinstance(value, str) and value.startswith("["):  # a conversation stored as a JSON string (Parquet, CSV)
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise RowError("not a JSON list of messages", field=field) from None
    if not isinstance(value, list):
        raise RowError(f"expected a list of messages, got {type(value).__name__}", field=field)
    out = []
    for i, m in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(m, dict):
            raise RowError(f"expected a message object, got {type(m).__name__}", field=where)
        if role_key not in m:
            raise RowError(f"message has no '{role_key}'", field=f"{where}.{role_key}")
        if content_key not in m:
            raise RowError(f"message has no '{content_key}'", field=f"{where}.{content_key}")
        role = m[role_key]
        if not isinstance(role, str):
            raise RowError("role must be a string", field=f"{where}.{role_key}")
        msg = {"role": role_map.get(role, role) if role_map else role,
               "content": _text(m[content_key], f"{where}.{content_key}")}
        extra = {k: v for k, v in m.items() if k not in (role_key, content_key)}
        if extra:
            msg.update(extra)
        out.append(msg)
    return out


def _from_conversation(sample: dict, msgs: list[dict]) -> None:
    """Fill instruction/response/system from a conversation, for display, search and Alpaca export."""
    sysmsgs = [m["content"] for m in msgs if m["role"] == "system"]
    if sysmsgs and not sample.get("system"):
        sample["system"] = sysmsgs[0]
    users = [i for i, m in enumerate(msgs) if m["role"] == "user"]
    if users:
        last_user = users[-1]
        sample["instruction"] = msgs[last_user]["content"]
        after = [m for m in msgs[last_user + 1:] if m["role"] == "assistant"]
        sample["response"] = after[0]["content"] if after else ""


def split_hh(transcript: str) -> tuple[list[dict], str]:
    """An HH-RLHF transcript ("\\n\\nHuman: ...\\n\\nAssistant: ...") -> (prompt turns, final assistant reply).

    Splits at the last "\\n\\nAssistant:" (a longest-common-prefix split can swallow the replies' shared first words).
    """
    cut = transcript.rfind("\n\nAssistant:")
    if cut < 0:
        raise RowError("no '\\n\\nAssistant:' turn in the transcript", field="chosen")
    prompt, reply = transcript[:cut], transcript[cut + len("\n\nAssistant:"):]
    if reply.startswith(" "):
        reply = reply[1:]
    turns = []
    for part in re.split(r"\n\n(?=(?:Human|Assistant):)", prompt):
        if not part.strip():
            continue
        if part.startswith("Human:"):
            turns.append({"role": "user", "content": part[len("Human:"):].removeprefix(" ")})
        elif part.startswith("Assistant:"):
            turns.append({"role": "assistant", "content": part[len("Assistant:"):].removeprefix(" ")})
        elif turns:
            turns[-1]["content"] += "\n\n" + part
        else:
            turns.append({"role": "user", "content": part})
    return turns, reply


def hh_transcript(turns: list[dict], reply: str) -> str:
    """Inverse of split_hh (used by tests and by the preference export's implicit-prompt mode)."""
    out = "".join(f"\n\n{'Human' if t['role'] == 'user' else 'Assistant'}: {t['content']}" for t in turns)
    return out + f"\n\nAssistant: {reply}"


def parse_record(rec: dict, fmt: str) -> dict:
    """One source record -> sample dict. Columns the format does not use go into metadata."""
    fields = FORMAT_FIELDS[fmt]
    used: set[str] = set()
    s: dict = {}
    for target, sources in fields.items():
        src = _first(rec, sources)
        if src is None:
            continue
        used.add(src)
        val = rec[src]
        if target == "messages":
            if fmt == "sharegpt":
                s["messages"] = _messages(val, src, SHAREGPT_ROLES, role_key="from", content_key="value")
            else:
                s["messages"] = _messages(val, src)
        elif fmt == "preference" and target in ("prompt", "response", "rejected"):
            _preference_field(s, target, val, src)
        else:
            s[target] = _text(val, src)
    if fmt == "hh":
        _parse_hh(s, rec)
    if s.get("messages") is not None and fmt in ("sharegpt", "messages"):
        if not s["messages"]:
            raise RowError("the conversation is empty", field=_first(rec, fields["messages"]))
        _from_conversation(s, s["messages"])
    for f in LABEL_FIELDS:
        if f not in s and rec.get(f) is not None and f not in used:
            s[f] = _text(rec[f], f)
            used.add(f)
    meta = {k: v for k, v in rec.items() if k not in used}
    packed = meta.pop("metadata", None)
    if isinstance(packed, str) and packed.startswith("{"):  # our Parquet export packs metadata as one JSON column
        try:
            packed = orjson.loads(packed)
        except orjson.JSONDecodeError:
            pass
    if isinstance(packed, dict):
        meta = {**packed, **meta}
    elif packed is not None:
        meta["metadata"] = packed
    if meta:
        s.setdefault("metadata", {}).update(meta)
    if not _has_text(s):
        names = sorted(used) or sorted(rec)
        raise RowError("no text in any field", field=", ".join(names) if names else "(no columns)")
    return s


def _preference_field(s: dict, target: str, val, src: str) -> None:
    if isinstance(val, list):
        msgs = _messages(val, src)
        if target == "prompt":
            s["messages"] = msgs
            _from_conversation(s, msgs)
            s.pop("response", None)
        else:
            if not msgs:
                raise RowError("empty message list", field=src)
            if msgs[-1]["role"] != "assistant":
                raise RowError("the last message must be the assistant's reply", field=f"{src}[{len(msgs) - 1}].role")
            s[target] = msgs[-1]["content"]
            if len(msgs) > 1:  # e.g. H4 binarized rows repeat the prompt inside chosen/rejected: keep it verbatim
                s.setdefault("metadata", {})[f"{target}_turns"] = msgs[:-1]
    else:
        s["instruction" if target == "prompt" else target] = _text(val, src)


def _parse_hh(s: dict, rec: dict) -> None:
    chosen, rejected = s.get("response", ""), s.get("rejected", "")
    turns_c, reply_c = split_hh(chosen)
    try:
        turns_r, reply_r = split_hh(rejected)
    except RowError:
        raise RowError("no '\\n\\nAssistant:' turn in the transcript", field="rejected") from None
    s["messages"] = turns_c
    s["response"], s["rejected"] = reply_c, reply_r
    users = [t for t in turns_c if t["role"] == "user"]
    s["instruction"] = users[-1]["content"] if users else ""
    if turns_r != turns_c:
        # the two transcripts diverge before the final reply: keep the row, and the rejected side's own prompt
        meta = s.setdefault("metadata", {})
        meta["prompt_mismatch"] = True
        meta["rejected_prompt"] = turns_r


def _has_text(s: dict) -> bool:
    if any((s.get(f) or "").strip() for f in ("instruction", "input", "response", "rejected", "system")):
        return True
    return any((m.get("content") or "").strip() for m in s.get("messages") or [])


def parse_mapping(spec: str | None) -> dict[str, str]:
    """"instruction=question,response=answer" -> {"instruction": "question", "response": "answer"}."""
    if not spec:
        return {}
    out = {}
    allowed = {"instruction", "input", "response", "rejected", "system", "prompt", "chosen", "text", "messages",
               "conversations", "context", "output", "category", *LABEL_FIELDS}
    for part in spec.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise FormatError(f"--map: expected target=column, got {part.strip()!r}")
        target, source = (x.strip() for x in part.split("=", 1))
        if target not in allowed:
            raise FormatError(f"--map: unknown target field {target!r}; one of {', '.join(sorted(allowed))}")
        if not source:
            raise FormatError(f"--map: no source column for {target!r}")
        out[target] = source
    return out
