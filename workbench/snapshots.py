"""Versioned exports: every export is a snapshot (exporter.export writes snapshots + snapshot_items); list them
and diff two of them: which samples were added, removed, or changed (same sample id, different content hash —
its text was edited or normalized between the two exports)."""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

import orjson


@dataclass
class Snapshot:
    id: int
    name: str | None
    file: str
    format: str
    rows: int
    sha256: str
    created_at: str
    filters: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)

    def label(self) -> str:
        return f"#{self.id}" + (f" ({self.name})" if self.name else "")

    def to_json(self) -> dict:
        return {"id": self.id, "name": self.name, "file": self.file, "format": self.format, "rows": self.rows,
                "sha256": self.sha256, "created_at": self.created_at, "filters": self.filters,
                "counts": self.counts}


_SELECT = ("SELECT s.id, s.name, s.file, s.format, (SELECT count(*) FROM snapshot_items i WHERE i.snapshot_id = s.id), "
           "s.sha256, s.created_at, s.filters, s.counts FROM snapshots s")


def _snapshot(row) -> Snapshot:
    return Snapshot(*row[:7], filters=orjson.loads(row[7]) if row[7] else {},
                    counts=orjson.loads(row[8]) if row[8] else {})


def list_snapshots(conn: sqlite3.Connection) -> list[Snapshot]:
    """Every snapshot, oldest first."""
    return [_snapshot(r) for r in conn.execute(_SELECT + " ORDER BY s.id")]


def resolve(conn: sqlite3.Connection, ref: str | int) -> Snapshot:
    """A snapshot by id ('3' or '#3') or by name (the latest of that name). KeyError if there is none."""
    text = str(ref).strip()
    num = text[1:] if text.startswith("#") else text
    if num.isdigit():
        row = conn.execute(_SELECT + " WHERE s.id = ?", (int(num),)).fetchone()
        if row:
            return _snapshot(row)
    row = conn.execute(_SELECT + " WHERE s.name = ? ORDER BY s.id DESC LIMIT 1", (text,)).fetchone()
    if row:
        return _snapshot(row)
    raise KeyError(f"no snapshot {text!r} (see `workbench snapshots`)")


@dataclass
class Diff:
    a: Snapshot
    b: Snapshot
    added: list[int]             # sample ids in b, not in a
    removed: list[int]           # in a, not in b
    changed: list[int]           # in both, with a different content hash
    unchanged: int

    def to_json(self, ids: bool = True) -> dict:
        out = {"a": self.a.to_json(), "b": self.b.to_json(),
               "counts": {"added": len(self.added), "removed": len(self.removed), "changed": len(self.changed),
                          "unchanged": self.unchanged}}
        if ids:
            out.update(added=self.added, removed=self.removed, changed=self.changed)
        return out


def diff(conn: sqlite3.Connection, a: str | int, b: str | int) -> Diff:
    """What changed from snapshot a to snapshot b (a join over snapshot_items; no sample text is read)."""
    sa, sb = resolve(conn, a), resolve(conn, b)
    added = [r[0] for r in conn.execute(
        "SELECT sample_id FROM snapshot_items WHERE snapshot_id = ? AND sample_id NOT IN "
        "(SELECT sample_id FROM snapshot_items WHERE snapshot_id = ?) ORDER BY sample_id", (sb.id, sa.id))]
    removed = [r[0] for r in conn.execute(
        "SELECT sample_id FROM snapshot_items WHERE snapshot_id = ? AND sample_id NOT IN "
        "(SELECT sample_id FROM snapshot_items WHERE snapshot_id = ?) ORDER BY sample_id", (sa.id, sb.id))]
    changed, same = [], 0
    for sid, ha, hb in conn.execute(
            "SELECT x.sample_id, x.content_hash, y.content_hash FROM snapshot_items x "
            "JOIN snapshot_items y ON y.snapshot_id = ? AND y.sample_id = x.sample_id "
            "WHERE x.snapshot_id = ? ORDER BY x.sample_id", (sb.id, sa.id)):
        if ha != hb:
            changed.append(sid)
        else:
            same += 1
    return Diff(sa, sb, added, removed, changed, same)
