"""Fields of any size, shown without loading them whole: a preview read with SQL substr(), the rest streamed.

A store can hold a 50 MB field (an import, an old uncapped reply). Screens load at most PREVIEW_BYTES of any field
(with its full size) and draw less than that; the whole text only ever goes, in chunks, to a file for $PAGER.
"""
from __future__ import annotations

import codecs
import os
import re
import sqlite3
import tempfile
from typing import Iterable, Iterator

PREVIEW_BYTES = 65536          # the most of one field a screen loads (64 KB of UTF-8)
STREAM_BYTES = 1 << 20         # chunk size when copying a whole field out

# Sizes and slices go through CAST(... AS BLOB): SQLite's length() and substr() on TEXT stop at the first NUL
# character, which would make a field with an embedded NUL look complete when it is not.


def preview_sql(column: str) -> str:
    """Two result columns: the field (str) if it fits in PREVIEW_BYTES, else its first PREVIEW_BYTES bytes (bytes,
    see `preview_value`); and its full size in bytes. NULL stays NULL."""
    size = f"length(CAST({column} AS BLOB))"
    return (f"CASE WHEN {size} <= {PREVIEW_BYTES} THEN {column} "
            f"ELSE substr(CAST({column} AS BLOB), 1, {PREVIEW_BYTES}) END, {size}")


def preview_value(value) -> tuple[str | None, bool]:
    """(text, clipped) from the first column of preview_sql: a clipped head is decoded without its cut last char."""
    if isinstance(value, bytes):
        return codecs.getincrementaldecoder("utf-8")("replace").decode(value, final=False), True
    return value, False


def stream_field(conn: sqlite3.Connection, table: str, column: str, rowid: int,
                 chunk: int = STREAM_BYTES) -> Iterator[str]:
    """A stored field as text, read `chunk` bytes at a time (table and column are ours, never user input)."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    start = 1
    while True:
        row = conn.execute(f"SELECT substr(CAST({column} AS BLOB), ?, ?) FROM {table} WHERE rowid = ?",
                           (start, chunk, rowid)).fetchone()
        data = row[0] if row else None
        if not data:
            break
        yield decoder.decode(data)
        if len(data) < chunk:
            break
        start += chunk
    tail = decoder.decode(b"", final=True)
    if tail:
        yield tail


_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _visible(m: re.Match) -> str:
    o = ord(m.group())
    return chr(0x2400 + o) if o < 0x20 else "\u2421" if o == 0x7F else f"<U+{o:04X}>"


def write_pager_file(parts: Iterable[str]) -> str:
    """The text to page through, in a private temp file (0600: it is the curator's data); returns its path.
    Control characters (ESC, BEL, C1 ...) are written as visible stand-ins: a pager run with -R must not let a
    field drive the terminal."""
    fd, path = tempfile.mkstemp(prefix="workbench-", suffix=".txt")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogatepass") as f:
            for p in parts:
                f.write(_CONTROL.sub(_visible, p))
    except BaseException:
        os.unlink(path)
        raise
    return path


def sample_text_parts(conn: sqlite3.Connection, sample_id: int) -> Iterator[str]:
    """Every text field of one sample, whole, each under a heading (for $PAGER)."""
    for column in ("system", "instruction", "input", "response", "rejected", "messages"):
        n = conn.execute(f"SELECT length(CAST({column} AS BLOB)) FROM samples WHERE id = ?", (sample_id,)).fetchone()
        if n is None or not n[0]:
            continue
        yield f"===== {column} ({n[0]:,} bytes) =====\n"
        yield from stream_field(conn, "samples", column, sample_id)
        yield "\n\n"
    for cid, model, n in conn.execute("SELECT id, model, length(CAST(response AS BLOB)) FROM candidates "
                                      "WHERE sample_id = ? ORDER BY id", (sample_id,)).fetchall():
        yield f"===== candidate {cid} from {model} ({n or 0:,} bytes) =====\n"
        yield from stream_field(conn, "candidates", "response", cid)
        yield "\n\n"
