"""The bundled sample dataset, imported the first time the workbench opens an empty store."""
from __future__ import annotations

import sqlite3
from pathlib import Path

SAMPLE_FILE = Path(__file__).parent / "sample_data" / "self_instruct_seed.json"
SAMPLE_DATASET = "sample-self-instruct-seed"


def ensure_sample(conn: sqlite3.Connection) -> bool:
    """Import the sample if the store has no dataset yet; True if it did."""
    if conn.execute("SELECT 1 FROM datasets LIMIT 1").fetchone():
        return False
    from .importer import import_file
    import_file(conn, SAMPLE_FILE, dataset=SAMPLE_DATASET)
    return True
