"""FTS5's own segment merging held off while a chunked dataset delete removes many indexed rows. Each of its commits
flushes the chunk's delete entries as a new segment, and FTS5's automatic merges (automerge; crisismerge at 16
segments a level) then took 1.6-2.5 s inside one statement at 1M rows: a write transaction far past its limit. The
delete merges a little per chunk instead (`merge_a_little`, as store.fts_sync does).

Only for a writer whose entries go in ascending rowid order between commits: FTS5 flushes a segment whenever a rowid
is not above the last one written, so a writer replacing rows one by one (write_text: delete, then insert, of each
row) makes a segment a row, and held off they reach FTS5's limit of 2000 ("database or disk is full"). crisismerge
1000 keeps a delete of 10M+ rows under that limit (its level-0 segments merged at 1000, one spike: not measured);
at 200 the crisis merges read 37 GB for a 1M delete and a writer waited 0.55 s (at 2000: 7-29 GB, 0.2-0.3 s).

The store's settings are saved once in meta 'fts_saved'; a writer holding them off says so in its bulk_runs marker
(info "fts"), and the last one to finish puts them back. `restore_abandoned` (run by every open) puts them back
when no marker holds them any more (a writer killed between the two). This module may not import store.py.
"""
from __future__ import annotations

import sqlite3

import orjson

QUIET = {"automerge": 0, "crisismerge": 1000}      # below FTS5's 2000 segments in all levels (then "disk is full")
DEFAULTS = {"automerge": 4, "crisismerge": 16}     # FTS5's own, when the store never set them
MERGE_PAGES = 16       # store.FTS_MERGE_PAGES


def hold(conn: sqlite3.Connection, bulk: int) -> None:
    """Inside a transaction: hold FTS5's merging off for the writer of marker `bulk`."""
    if conn.execute("SELECT 1 FROM meta WHERE key = 'fts_saved'").fetchone() is None:
        saved = {}
        for k in QUIET:
            row = conn.execute("SELECT v FROM samples_fts_config WHERE k = ?", (k,)).fetchone()
            saved[k] = int(row[0]) if row else DEFAULTS[k]
        conn.execute("INSERT INTO meta (key, value) VALUES ('fts_saved', ?)", (orjson.dumps(saved).decode(),))
    info = orjson.loads(conn.execute("SELECT info FROM bulk_runs WHERE id = ?", (bulk,)).fetchone()[0] or "{}")
    conn.execute("UPDATE bulk_runs SET info = ? WHERE id = ?", (orjson.dumps({**info, "fts": 1}).decode(), bulk))
    _set(conn, QUIET)


def merge_a_little(conn: sqlite3.Connection) -> None:
    conn.execute("INSERT INTO samples_fts (samples_fts, rank) VALUES ('merge', ?)", (MERGE_PAGES,))


def release(conn: sqlite3.Connection, bulk: int | None) -> None:
    """Inside a transaction, before marker `bulk` goes: put the settings back unless another writer holds them."""
    if conn.execute("SELECT 1 FROM bulk_runs WHERE id IS NOT ? AND json_extract(info, '$.fts') IS NOT NULL LIMIT 1",
                    (bulk,)).fetchone():
        return
    row = conn.execute("SELECT value FROM meta WHERE key = 'fts_saved'").fetchone()
    if row:
        _set(conn, orjson.loads(row[0]))
        conn.execute("DELETE FROM meta WHERE key = 'fts_saved'")


def restore_abandoned(conn: sqlite3.Connection) -> None:
    """Inside a transaction: the settings back if saved and no marker holds them."""
    if conn.execute("SELECT 1 FROM meta WHERE key = 'fts_saved'").fetchone():
        release(conn, None)


def _set(conn, settings: dict) -> None:
    for k, v in settings.items():
        conn.execute("INSERT INTO samples_fts (samples_fts, rank) VALUES (?, ?)", (k, v))
