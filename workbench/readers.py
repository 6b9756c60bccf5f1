"""Streaming readers for each file type (JSONL, JSON arrays, CSV/TSV, Parquet, text), `.gz` included.

Readers yield (line, row, record): `line` is the 1-based line where the record starts, `row` its 1-based index;
a record that cannot be read is yielded as a FormatError naming its line, so callers can skip or refuse it.
"""
from __future__ import annotations

import codecs
import csv
import io
import json
from pathlib import Path
from typing import Iterator

import orjson

FILE_TYPES = ("jsonl", "json", "csv", "tsv", "parquet", "txt")
SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".parquet", ".txt", ".md", ".text")


class FormatError(ValueError):
    """A problem with the file as a whole or with one record; `line`/`field` say where."""

    def __init__(self, message: str, *, line: int | None = None, row: int | None = None, field: str | None = None):
        super().__init__(message)
        self.message, self.line, self.row, self.field = message, line, row, field


class RowError(FormatError):
    pass


# --- file types and readers --------------------------------------------------------------------------

def _suffix(path: Path) -> str:
    """The extension that says the file type: `x.jsonl.gz` -> ".jsonl"."""
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return Path(name).suffix


def open_bytes(path: Path):
    """A file's bytes, decompressed when it ends in .gz."""
    if path.name.lower().endswith(".gz"):
        import gzip
        return gzip.open(path, "rb")
    return open(path, "rb")


def file_type(path: Path, fmt: str | None = None) -> str:
    suffix = _suffix(path)
    if path.name.lower().endswith(".gz") and suffix == ".parquet":
        raise FormatError("a gzipped Parquet file cannot be streamed; Parquet compresses itself, unpack it first")
    if fmt == "text" and suffix not in (".jsonl", ".json", ".csv", ".tsv", ".parquet"):
        return "txt"
    ext = suffix.lstrip(".")
    if ext in ("jsonl", "ndjson"):
        return "jsonl"
    if ext in FILE_TYPES and ext != "json":
        return ext
    if ext in ("md", "text"):
        return "txt"
    # .json or an unknown extension: sniff the first non-blank byte (many ".json" files are JSON Lines)
    try:
        with open_bytes(path) as f:
            head = f.read(4096).lstrip(codecs.BOM_UTF8).lstrip()
    except (OSError, EOFError) as e:   # gzip.BadGzipFile, a truncated .gz
        raise FormatError(f"cannot read the file: {e}") from None
    if head.startswith(b"["):
        return "json"
    if head.startswith(b"{"):
        return "jsonl"
    if ext == "json":
        return "json"  # the array reader names what is wrong
    raise FormatError(f"cannot tell the file type from the name {path.name!r}; use .jsonl, .json, .csv, .tsv, "
                      ".parquet or .txt (optionally .gz)")


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
    with open_bytes(path) as f:
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
    return key_twice(raw, rec, line, row) or rec


class _KeyTwice(Exception):
    pass


def _pairs_once(pairs: list) -> dict:
    """A JSON object whose keys each come once (the same value twice is harmless). Parsers keep the last of a
    repeated key without a word: {"instruction": "a", "instruction": "b"} would import "b"."""
    obj: dict = {}
    for k, v in pairs:
        if k in obj and obj[k] != v:
            raise _KeyTwice(k)
        obj[k] = v
    return obj


def _twice_error(key: str, line: int, row: int) -> FormatError:
    return FormatError(f"the key {key!r} is given twice with different values (a reader would keep one of them "
                       f"without a word)", line=line, row=row, field=key)


def _quotes(values) -> int:
    """How many unescaped quotes the JSON text of these values holds when each key of the objects occurs once."""
    n = 0
    for x in values:
        t = type(x)
        if t is str:
            n += 2
        elif t is dict:
            n += 2 * len(x) + _quotes(x.values())
        elif t is list:
            n += _quotes(x)
    return n


def key_twice(raw: bytes, rec: dict, line: int, row: int) -> FormatError | None:
    """A key given twice in a JSONL line's objects with different values, as a FormatError. orjson cannot say, so
    a line with more quotes than its parsed object accounts for (cheap to count; rare otherwise: a key twice, an
    escaped backslash before a quote) is checked by a parse that sees every pair."""
    want, quotes = 2 * len(rec) + _quotes(rec.values()), raw.count(b'"')
    if quotes == want or quotes - raw.count(b'\\"') == want:
        return None
    try:
        json.loads(raw, object_pairs_hook=_pairs_once)
    except _KeyTwice as e:
        return _twice_error(e.args[0], line, row)
    except (ValueError, RecursionError):    # orjson read it: a difference between the parsers, not the data's
        return None
    return None


def _read_jsonl(path: Path):
    for line, row, raw in jsonl_lines(path):
        yield line, row, parse_jsonl_line(raw, line, row)


def _read_json_array(path: Path, chunk: int = 1 << 20):
    """Stream the elements of a top-level JSON array without loading the file."""
    decoder = json.JSONDecoder(object_pairs_hook=_pairs_once)
    with open_bytes(path) as fb:
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
            twice = None
            while True:
                try:
                    rec, end = decoder.raw_decode(buf, pos)
                    break
                except _KeyTwice as e:      # the record is skipped whole (--skip-invalid) or refuses the file
                    twice = e.args[0]
                    rec, end = json.JSONDecoder().raw_decode(buf, pos)
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
            if twice is not None:
                rec = _twice_error(twice, start_line, row)
            yield start_line, row, rec


def _read_delimited(path: Path, delimiter: str):
    with open_bytes(path) as fb:
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
    with open_bytes(path) as f:
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
