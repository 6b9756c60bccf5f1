"""Hostile files, paths and disks fed to the real CLI (a subprocess each): one line naming file, line and field, a
non-zero exit, no traceback, and the store byte-identical afterwards (WAL checkpointed, sha256 of the file)."""
from __future__ import annotations

import datetime
import decimal
import hashlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from workbench import importer
from workbench.store import open_store

ROOT = Path(__file__).resolve().parent.parent


def cli(*argv, env_db) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workbench", *argv, "--db", str(env_db)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def store_digest(db: Path) -> str:
    c = sqlite3.connect(db)
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.close()
    return hashlib.sha256(db.read_bytes()).hexdigest()


def table(path: Path, **columns) -> Path:
    pq.write_table(pa.table({"instruction": ["q1", "q2"], "output": ["a", "b"], **columns}), path)
    return path


def corpus(d: Path) -> list[tuple[list[str], list[str]]]:
    """(argv, what stderr must say) for each hostile input."""
    deep = "[" * 100_000 + "]" * 100_000
    (d / "deep_array.jsonl").write_text('{"instruction": "q", "output": ' + deep + "}\n")
    (d / "deep_array.json").write_text('[{"instruction": "q", "output": "a"},\n{"instruction": "q", "output": '
                                       + deep + "}]\n")
    (d / "deep_object.jsonl").write_text('{"instruction": "q", "output": "a"}\n{"instruction": "q", "m": '
                                         + '{"a":' * 50_000 + "1" + "}" * 50_000 + "}\n")
    (d / "bad_utf8.jsonl").write_bytes(b'{"instruction": "q", "output": "a"}\n{"instruction": "\xff\xfe"}\n')
    (d / "not.parquet").write_bytes(b"PAR1 this is not parquet PAR1")
    table(d / "binary.parquet", blob=pa.array([b"\x00", b"\x01"], pa.binary()))
    table(d / "nested_decimal.parquet",
          extra=pa.array([{"p": decimal.Decimal("1.5")}, {"p": decimal.Decimal("2")}],
                         pa.struct([("p", pa.decimal128(5, 2))])))
    table(d / "list_of_binary.parquet", tags=pa.array([[b"\x00"], []], pa.list_(pa.large_binary())))
    pq.write_table(pa.table({"instruction": pa.array([b"q1", b"q2"], pa.binary()), "output": ["a", "b"]}),
                   d / "binary_instruction.parquet")
    (d / "regular").write_text("a file, not a directory")
    (d / "a_directory.jsonl").mkdir()
    long = "n" * 300
    return [
        (["import", str(d / "deep_array.jsonl")], ["deep_array.jsonl, line 1", "depth"]),
        (["import", str(d / "deep_array.json")], ["deep_array.json, line 2", "nested too deeply"]),
        (["import", str(d / "deep_object.jsonl")], ["deep_object.jsonl, line 2", "depth"]),
        (["import", str(d / "bad_utf8.jsonl")], ["bad_utf8.jsonl, line 2", "UTF-8"]),
        (["import", str(d / "not.parquet")], ["not.parquet", "Parquet"]),
        (["import", str(d / "binary.parquet")], ["binary.parquet", "column 'blob'", "binary"]),
        (["import", str(d / "nested_decimal.parquet")], ["column 'extra'", "decimal"]),
        (["import", str(d / "list_of_binary.parquet")], ["column 'tags'", "binary"]),
        (["import", str(d / "binary_instruction.parquet")], ["binary_instruction.parquet", "field 'instruction'"]),
        (["import", str(d / "missing.jsonl")], ["missing.jsonl"]),
        (["import", str(d / "a_directory.jsonl")], ["a_directory.jsonl"]),
        (["import", str(d / (long + ".jsonl"))], [long, "too long"]),
        (["export", str(d / "regular" / "out.jsonl"), "--format", "alpaca"], [str(d / "regular")]),
        (["export", str(d / (long + ".jsonl")), "--format", "alpaca"], ["nnnnnnnnnn", "name too long"]),
        (["import", "--dry-run", str(d / "deep_array.json")], ["deep_array.json, line 2", "nested too deeply"]),
    ]


@pytest.fixture
def seeded(tmp_path):
    db = tmp_path / "store.db"
    good = tmp_path / "good.jsonl"
    good.write_bytes(b"".join(orjson.dumps({"instruction": f"q{i}", "output": f"a{i}"}) + b"\n" for i in range(5)))
    conn = open_store(db)
    importer.import_file(conn, good, dataset="good")
    conn.close()
    return db


def test_hostile_corpus_gives_one_line_messages_and_leaves_the_store_as_it_was(seeded, tmp_path):
    d = tmp_path / "corpus"
    d.mkdir()
    before = store_digest(seeded)
    failures = []
    for argv, expected in corpus(d):
        r = cli(*argv, env_db=seeded)
        err = r.stderr.strip()
        ok = (r.returncode != 0 and "Traceback" not in r.stderr and len(err.splitlines()) == 1
              and err.startswith("error: ") and all(e.lower() in err.lower() for e in expected))
        if not ok:
            failures.append((argv[:2], r.returncode, r.stderr[-600:]))
        assert store_digest(seeded) == before, argv
    assert not failures, failures
    assert not list(d.glob("nnnn*")) and not list(d.glob("*.tmp*"))


def test_parquet_decimal_and_duration_become_exact_text(tmp_path, conn):
    path = table(tmp_path / "typed.parquet",
                 price=pa.array([decimal.Decimal("1.50"), None], pa.decimal128(10, 2)),
                 took=pa.array([datetime.timedelta(milliseconds=1500), datetime.timedelta(minutes=2)],
                               pa.duration("ms")))
    importer.import_file(conn, path, dataset="typed")
    metas = [orjson.loads(m) for (m,) in conn.execute("SELECT metadata FROM samples ORDER BY id")]
    assert metas == [{"price": "1.50", "took": "1500ms"}, {"took": "120000ms"}]


@pytest.fixture
def tiny_disk(tmp_path):
    """A 4 MB tmpfs (root in this sandbox); skipped where mounting is not allowed."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_disk_during_import_and_export(tiny_disk, seeded, tmp_path):
    # import into a store on the full disk: rolled back, store as it was
    db = tiny_disk / "s.db"
    conn = open_store(db)
    conn.close()
    before = store_digest(db)
    big = tmp_path / "big.jsonl"
    big.write_bytes(b"".join(orjson.dumps({"instruction": f"question {i} " * 10, "output": "a" * 300}) + b"\n"
                             for i in range(20_000)))
    r = cli("import", str(big), env_db=db)
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr[-800:]
    assert r.stderr.startswith("error: ") and "full" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert store_digest(db) == before
    # export from a store elsewhere onto the full disk: a message, no partial file, the store unchanged
    with open(tiny_disk / "filler", "wb") as f:
        try:
            while True:
                f.write(b"x" * 65536)
                f.flush()
        except OSError:
            pass
    before = store_digest(seeded)
    r = cli("export", str(tiny_disk / "out.jsonl"), "--format", "alpaca", env_db=seeded)
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr[-800:]
    assert "no space left on" in r.stderr.lower() and len(r.stderr.strip().splitlines()) == 1
    assert not (tiny_disk / "out.jsonl").exists() and not list(tiny_disk.glob("*.tmp*"))
    assert store_digest(seeded) == before


# A key given twice: JSON parsers keep one value without a word. Refused when the values differ; harmless forms
# (the same value twice, the key's name inside a text, a nested object of another record shape) import.
@pytest.mark.parametrize("suffix, body, field", [
    (".jsonl", b'{"instruction": "a", "output": "x", "instruction": "b"}\n', "instruction"),
    (".jsonl", b'{"instruction":"a","output":"x","output":"y"}\n', "output"),
    (".jsonl", b'{"instruction": "a", "output": "x", "input": "", "input": "context"}\n', "input"),
    (".jsonl", b'{"instruction": "a", "output": "x", "meta": 1, "meta": 2}\n', "meta"),
    (".json", b'[{"instruction": "a", "output": "x", "output": "y"}]', "output"),
    (".json", b'[{"instruction": "a", "output": "x", "meta": {"k": 1, "k": 2}}]', "k"),
])
def test_a_key_given_twice_with_different_values_is_refused(tmp_path, conn, suffix, body, field):
    f = tmp_path / f"twice{suffix}"
    f.write_bytes(body)
    with pytest.raises(importer.ImportFailed, match=f"field '{field}': the key '{field}' is given twice"):
        importer.import_file(conn, f, dataset="d")
    assert conn.execute("SELECT count(*) FROM samples").fetchone()[0] == 0


@pytest.mark.parametrize("suffix, body, text", [
    (".jsonl", b'{"instruction": "a", "output": "x", "instruction": "a"}\n', "a"),          # the same value
    (".jsonl", b'{"instruction": "say \\"instruction\\" twice: \\"instruction\\"", "output": "x"}\n',
     'say "instruction" twice: "instruction"'),
    (".jsonl", b'{"instruction": "q", "output": "the \\"output\\" and \\"output\\""}\n', "q"),
    (".json", b'[{"instruction": "a", "output": "x"}, {"instruction": "b", "output": "y"}]', "a"),
])
def test_almost_a_key_twice_imports(tmp_path, conn, suffix, body, text):
    f = tmp_path / f"fine{suffix}"
    f.write_bytes(body)
    res = importer.import_file(conn, f, dataset="d")
    assert res.rows >= 1 and conn.execute("SELECT instruction FROM samples ORDER BY id").fetchone()[0] == text
