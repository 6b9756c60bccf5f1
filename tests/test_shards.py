"""Parquet shards out and decisions back: `export --format parquet --shard-rows N DIR --with-ids` read by pyarrow's
dataset reader and the real `datasets` library; `keep` (one undoable run, every refusal all-or-nothing); `import`
of shards carrying sample_id updating samples instead of adding them. Engines' outputs are written the way NeMo
Curator (pandas to_parquet of selected fields) and datatrove (JSONL, gzip, an adapter writing sample_id) write them.
"""
import gzip
import json
import os

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import datasets  # noqa: E402
import orjson  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.dataset as pads  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import pytest  # noqa: E402

from workbench import export_shards as shards_mod, review, scores  # noqa: E402
from workbench.samples import insert_samples  # noqa: E402
from workbench.store import ensure_dataset, open_store, transaction  # noqa: E402

from conftest import run_cli  # noqa: E402

datasets.disable_progress_bars()
N = 45


@pytest.fixture(autouse=True)
def hf_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


def _samples():
    out = []
    for i in range(N):
        s = {"instruction": f"question {i}", "response": f"answer {i}"}
        if i < 10:      # the first shard (rows 1-10) has no pair, no conversation, no metadata: all-null columns
            pass
        elif i % 3 == 0:
            s["messages"] = [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": f"answer {i}"}]
        elif i % 3 == 1:
            s["rejected"] = f"worse {i}"
        else:
            s["metadata"] = {"src": f"web-{i}"}
        out.append(s)
    return out


@pytest.fixture
def store(db_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_DB", str(db_path))
    conn = open_store(db_path)
    with transaction(conn):
        did = ensure_dataset(conn, "d")
        insert_samples(conn, did, _samples())
        other = ensure_dataset(conn, "other")
        insert_samples(conn, other, [{"instruction": "elsewhere", "response": "x"}])
    yield conn
    conn.close()


def cli(*argv):
    return run_cli(*argv)


def ok(*argv) -> dict:
    code, out, err = cli(*argv, "--json")
    assert code == 0, err
    return json.loads(out)


def state(conn) -> tuple:
    """Everything a refused command must leave exactly as it was."""
    return (conn.execute("SELECT * FROM samples ORDER BY id").fetchall(),
            conn.execute("SELECT * FROM decisions ORDER BY id").fetchall(),
            conn.execute("SELECT * FROM sample_scores ORDER BY sample_id, rubric").fetchall(),
            conn.execute("SELECT count(*) FROM snapshots").fetchone())


def export(out, *extra, rows: int = 10) -> dict:
    return ok("export", str(out), "--format", "parquet", "--dataset", "d", "--shard-rows", str(rows), "--with-ids",
              *extra)


# --- out ----------------------------------------------------------------------------------------------------

def test_shards_are_plain_parquet_with_one_schema_readable_by_pyarrow_and_datasets(store, tmp_path):
    out = tmp_path / "shards"
    info = export(out)
    names = sorted(os.listdir(out))
    assert names == [".manifest.json"] + [f"part-{i:05d}.parquet" for i in range(5)]
    assert info["rows"] == N and info["shards"] == 5
    schemas = [pq.read_schema(out / n) for n in names[1:]]
    assert all(s.equals(schemas[0]) for s in schemas)           # the all-null first shard is typed like the rest
    assert schemas[0].field("sample_id").type == pa.int64()
    assert schemas[0].field("rejected").type == pa.string() and schemas[0].field("messages").type == pa.string()
    assert pq.read_table(out / names[1]).column("rejected").null_count == 10
    table = pads.dataset(str(out), format="parquet").to_table()  # the directory, as Spark/Ray/NeMo read it
    assert table.num_rows == N and sorted(table.column("sample_id").to_pylist()) == list(range(1, N + 1))
    ds = datasets.load_dataset("parquet", data_dir=str(out), split="train")
    assert ds.num_rows == N and ds.features["sample_id"] == datasets.Value("int64")
    row = ds.filter(lambda r: r["sample_id"] == 13)[0]
    assert json.loads(row["messages"])[1]["content"] == "answer 12" and row["output"] == "answer 12"

    from workbench.export_shapes import parquet_row        # the same values as the single-file Parquet export
    from workbench.samples import get_sample
    with transaction(store):
        store.execute("UPDATE samples SET metadata = '{}' WHERE id = 2")
        store.execute("UPDATE samples SET messages = '[]' WHERE id = 3")
    export(tmp_path / "again")
    got = {r["sample_id"]: r for r in pads.dataset(str(tmp_path / "again"), format="parquet").to_table().to_pylist()}
    for sid in range(1, N + 1):
        assert got[sid] == {**parquet_row(get_sample(store, sid)), "sample_id": sid}, sid
    m = json.loads((out / ".manifest.json").read_text())
    assert [(s["file"], s["rows"]) for s in m["shards"]] == [(f"part-{i:05d}.parquet", r)
                                                             for i, r in enumerate((10, 10, 10, 10, 5))]
    import hashlib
    for s in m["shards"]:
        assert hashlib.sha256((out / s["file"]).read_bytes()).hexdigest() == s["sha256"]
    assert m["snapshot_id"] == info["snapshot"] and m["counts"]["rows"] == N and m["layout"] == "shards"
    items = store.execute("SELECT count(*) FROM snapshot_items WHERE snapshot_id = ?", (info["snapshot"],)).fetchone()
    assert items[0] == N


def test_a_directory_that_is_not_empty_is_refused_and_force_replaces_only_a_shard_set(store, tmp_path):
    out = tmp_path / "shards"
    export(out, rows=4)                                      # 12 shards
    before = {n: (out / n).read_bytes() for n in os.listdir(out)}
    code, _, err = cli("export", str(out), "--format", "parquet", "--shard-rows", "10", "--with-ids")
    assert code == 2 and "not empty" in err and "--force" in err
    assert {n: (out / n).read_bytes() for n in os.listdir(out)} == before
    info = export(out, "--force")
    assert sorted(os.listdir(out)) == [".manifest.json"] + [f"part-{i:05d}.parquet" for i in range(5)]  # no stale shard
    assert pads.dataset(str(out), format="parquet").count_rows() == N == info["rows"]
    (out / "notes.txt").write_text("mine")
    code, _, err = cli("export", str(out), "--format", "parquet", "--shard-rows", "10", "--force")
    assert code == 2 and "notes.txt" in err and (out / "notes.txt").read_text() == "mine"
    (tmp_path / "afile").write_text("x")
    code, _, err = cli("export", str(tmp_path / "afile"), "--format", "parquet", "--shard-rows", "10")
    assert code == 2 and "not a directory" in err
    for bad in ("0", "-3"):
        code, _, err = cli("export", str(tmp_path / "z"), "--format", "parquet", "--shard-rows", bad)
        assert code == 2 and "--shard-rows" in err
    code, _, err = cli("export", str(tmp_path / "z"), "--format", "messages", "--shard-rows", "10")
    assert code == 2 and "--format parquet" in err and not (tmp_path / "z").exists()


def test_a_failed_shard_write_leaves_no_shard_no_temp_dir_and_no_snapshot(store, tmp_path, monkeypatch):
    out = tmp_path / "new" / "shards"
    real_close = shards_mod._Shard.close
    calls = []

    def failing_close(self):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real_close(self)

    monkeypatch.setattr(shards_mod._Shard, "close", failing_close)
    before = state(store)
    code, _, err = cli("export", str(out), "--format", "parquet", "--dataset", "d", "--shard-rows", "10")
    assert code == 2 and "no space left" in err
    assert not (tmp_path / "new").exists()                  # the parent it made is gone too: nothing half-written
    assert state(store) == before
    # into an existing empty directory: it stays, empty
    out = tmp_path / "empty"
    out.mkdir()
    calls.clear()
    code, _, err = cli("export", str(out), "--format", "parquet", "--dataset", "d", "--shard-rows", "10")
    assert code == 2 and os.listdir(out) == []
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".wb-tmp-")]


# --- keep ---------------------------------------------------------------------------------------------------

def engine_output(out, kept_ids, tmp_path):
    """What an engine leaves: NeMo-style Parquet of selected fields, Spark-style bookkeeping files, a datatrove
    JSONL.gz shard written by an adapter that outputs sample_id."""
    d = tmp_path / "engine"
    d.mkdir()
    half = len(kept_ids) // 2
    pq.write_table(pa.table({"sample_id": pa.array(kept_ids[:half], pa.int64())}), d / "3f9a1c.parquet")
    with gzip.open(d / "00000.jsonl.gz", "wb") as f:
        for i in kept_ids[half:]:
            f.write(orjson.dumps({"sample_id": i, "text": "ignored by keep"}) + b"\n")
    (d / "_SUCCESS").write_text("")
    (d / ".3f9a1c.parquet.crc").write_text("crc")
    return d


def test_keep_round_trip_rejects_the_rest_as_one_run_and_one_undo_reverts_it(store, tmp_path):
    export(tmp_path / "shards")
    review.decide(store, 42, "accept", "review:t")           # a curator's accept outranks the engine
    review.decide(store, 41, "reject", "review:t")
    kept = [i for i in range(1, N + 1) if i % 4 == 0]        # 11 kept
    d = engine_output(tmp_path / "shards", kept, tmp_path)
    res = ok("keep", "--dataset", "d", "--ids-from", str(d), "--reason", "external dedup")
    assert res["kept"] == len(kept) and res["run"].startswith("filter-")
    assert res["rejected"] == N - len(kept) - 2 and res["accepted_left_alone"] == 1 and res["already_rejected"] == 1
    status = dict(store.execute("SELECT id, status FROM samples WHERE dataset_id = 1"))
    assert all(status[i] == "pending" for i in kept) and status[42] == "accepted"
    assert sum(1 for i, s in status.items() if s == "rejected") == N - len(kept) - 1  # 41 was rejected before
    reasons = store.execute("SELECT DISTINCT action, reason, session FROM decisions WHERE session = ?",
                            (res["run"],)).fetchall()
    assert reasons == [("filter", "external dedup", res["run"])]
    assert store.execute("SELECT status FROM samples WHERE dataset_id = 2").fetchone()[0] == "pending"
    from workbench import automatic
    s3 = review.load_sample(store, 3)
    assert automatic.reason(store, s3)["text"] == f"filter external dedup ({res['run']})"
    assert res["snapshot"] == 1 and res["not_exported_left_alone"] == 0
    code, out, err = cli("clean", "--undo", res["run"])       # one step
    assert code == 0, err
    status = dict(store.execute("SELECT id, status FROM samples WHERE dataset_id = 1"))
    assert status[42] == "accepted" and status[41] == "rejected"
    assert all(s == "pending" for i, s in status.items() if i not in (42, 41))


def test_keep_judges_against_the_export_the_ids_come_from(store, tmp_path):
    export(tmp_path / "shards", "--status", "pending")
    with transaction(store):                                  # imported after the export: the engine never saw it
        insert_samples(store, 1, [{"instruction": "late", "response": "row"}])
    late = store.execute("SELECT max(id) FROM samples").fetchone()[0]
    d = tmp_path / "engine"
    d.mkdir()
    pq.write_table(pa.table({"sample_id": pa.array([1, 2, 3], pa.int64())}), d / "a.parquet")
    res = ok("keep", "--dataset", "d", "--ids-from", str(d), "--reason", "r")
    assert res["snapshot"] == 1 and res["not_exported_left_alone"] == 1 and res["rejected"] == N - 3
    assert store.execute("SELECT status FROM samples WHERE id = ?", (late,)).fetchone()[0] == "pending"
    ok("clean", "--undo", res["run"])
    before = state(store)
    pq.write_table(pa.table({"sample_id": pa.array([1, late], pa.int64())}), d / "a.parquet")
    code, _, err = cli("keep", "--dataset", "d", "--ids-from", str(d), "--reason", "r")
    assert code == 1 and f"a.parquet, row 2, field 'sample_id': sample {late} was not in export snapshot 1" in err
    assert state(store) == before


def test_keep_refuses_bad_lists_whole_and_names_file_line_and_field(store, tmp_path):
    before = state(store)
    d = tmp_path / "k"
    d.mkdir()

    def jsonl(name, rows):
        (d / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
        return d / name

    cases = [
        (jsonl("a.jsonl", [{"sample_id": 1}, {"sample_id": 99}]), "a.jsonl, line 2, field 'sample_id': no sample with id 99"),
        (jsonl("b.jsonl", [{"sample_id": 1}, {"sample_id": 46}]), "b.jsonl, line 2, field 'sample_id': sample 46 is not in this dataset"),
        (jsonl("c.jsonl", [{"sample_id": 2}, {"sample_id": 3}, {"sample_id": 2}]), "c.jsonl, line 3, field 'sample_id': sample 2 is listed twice"),
        (jsonl("e.jsonl", [{"sample_id": "4"}]), "e.jsonl, line 1, field 'sample_id': '4' is not a sample id"),
        (jsonl("f.jsonl", [{"sample_id": 4.0}]), "f.jsonl, line 1, field 'sample_id': 4.0 is not a sample id"),
        (jsonl("g.jsonl", [{"sample_id": True}]), "g.jsonl, line 1, field 'sample_id': True is not a sample id"),
        (jsonl("h.jsonl", [{"id": 4}]), "h.jsonl, line 1, field 'sample_id': missing (keys: id); an `id` column is not taken"),
        (jsonl("i.jsonl", [{"sample_id": 0}]), "i.jsonl, line 1, field 'sample_id': no sample with id 0"),
        (jsonl("j.jsonl", [{"sample_id": -2}]), "j.jsonl, line 1, field 'sample_id': no sample with id -2"),
    ]
    pq.write_table(pa.table({"sample_id": pa.array([1, None], pa.int64())}), d / "n.parquet")
    cases.append((d / "n.parquet", "n.parquet, row 2, field 'sample_id': empty (null)"))
    pq.write_table(pa.table({"sample_id": pa.array(["1"])}), d / "s.parquet")
    cases.append((d / "s.parquet", "s.parquet, field 'sample_id': the column holds string"))
    pq.write_table(pa.table({"id": pa.array([1])}), d / "m.parquet")
    cases.append((d / "m.parquet", "m.parquet, field 'sample_id': no such column"))
    (d / "bad.parquet").write_bytes(b"PAR1 not really")
    cases.append((d / "bad.parquet", "bad.parquet: not a readable Parquet file"))
    (d / "empty.jsonl").write_text("\n")
    cases.append((d / "empty.jsonl", "lists no sample id"))
    (d / "x.jsonl").write_text('{"sample_id": 1}\n{"sample_id": \n')
    cases.append((d / "x.jsonl", "x.jsonl, line 2: not valid JSON"))
    for path, expected in cases:
        code, out, err = cli("keep", "--dataset", "d", "--ids-from", str(path), "--reason", "r")
        assert code == 1 and expected in err and "Traceback" not in err, (path, err)
        assert state(store) == before
    sub = tmp_path / "withother"
    sub.mkdir()
    jsonl("ok.jsonl", [{"sample_id": 1}])
    (sub / "ok.jsonl").write_text('{"sample_id": 1}\n')
    (sub / "stats.json").write_text("{}")
    code, _, err = cli("keep", "--dataset", "d", "--ids-from", str(sub), "--reason", "r")
    assert code == 1 and "stats.json: not a Parquet or JSONL shard" in err
    for argv, expected in ((("--dataset", "nope", "--ids-from", str(sub / "ok.jsonl"), "--reason", "r"), "no dataset"),
                           (("--dataset", "d", "--ids-from", str(sub / "ok.jsonl"), "--reason", " "), "--reason"),
                           (("--dataset", "d", "--ids-from", str(tmp_path / "missing"), "--reason", "r"), "no such")):
        code, _, err = cli("keep", *argv)
        assert code in (1, 2) and expected in err
    assert state(store) == before


# --- import back --------------------------------------------------------------------------------------------

def test_import_of_shards_updates_samples_new_numeric_columns_become_rubrics(store, tmp_path):
    out = tmp_path / "shards"
    export(out)
    scores_before = {"judge": 7}
    with transaction(store):
        scores.record(store, 5, "judge", scores_before["judge"], (1, 10))
    count = store.execute("SELECT count(*) FROM samples").fetchone()[0]
    # re-importing the untouched export changes nothing and adds nothing
    res = ok("import", str(out), "--dataset", "d")
    assert res["rows"] == N and res["changed"] == 0 and res["run"] is None and res["rubrics"] == {}
    assert store.execute("SELECT count(*) FROM samples").fetchone()[0] == count
    # an engine (NeMo-like: pandas keeps every column and adds its scores) edits a text and scores every row
    back = tmp_path / "back"
    back.mkdir()
    for i, name in enumerate(sorted(n for n in os.listdir(out) if n.endswith(".parquet"))):
        t = pq.read_table(out / name)
        ids = t.column("sample_id").to_pylist()
        t = t.append_column("quality", pa.array([(i % 10) / 10 for i in ids], pa.float64()))
        t = t.append_column("word_count", pa.array([2] * len(ids), pa.int64()))
        t = t.append_column("lang", pa.array(["en"] * len(ids)))
        outs = t.column("output").to_pylist()
        for sid, text in ((5, "a better answer 4"), (13, "rewritten 12")):
            if sid in ids:
                outs[ids.index(sid)] = text
        t = t.set_column(t.schema.get_field_index("output"), "output", pa.array(outs, pa.string()))
        pq.write_table(t, back / f"{i:03d}.parquet")
    code, _, err = cli("import", str(back), "--dataset", "d")
    assert code == 2 and "--score-scale quality=LO-HI" in err
    code, _, err = cli("import", str(back), "--dataset", "d", "--score-scale", "0-1")
    assert code == 2 and "a bare LO-HI fits one numeric column" in err
    res = ok("import", str(back), "--dataset", "d", "--score-scale", "quality=0-1", "--score-scale", "word_count=0-100000")
    assert res["rows"] == N and res["changed"] == N and res["run"].startswith("update-")  # lang into every metadata
    assert res["rubrics"]["quality"]["scores"] == N and res["rubrics"]["quality"]["scale"] == [0, 1]
    assert res["metadata_columns"] == ["lang"]
    assert store.execute("SELECT count(*) FROM samples").fetchone()[0] == count
    s5 = review.load_sample(store, 5)
    assert s5["response"] == "a better answer 4" and s5["metadata"] == {"lang": "en"}
    got = {x["rubric"]: x for x in s5["scores"]}
    assert got["judge"]["stale"] and not got["quality"]["stale"] and got["quality"]["score"] == 0.5
    assert json.loads(store.execute("SELECT metadata FROM samples WHERE id = 12").fetchone()[0]) == \
        {"src": "web-11", "lang": "en"}
    s13 = review.load_sample(store, 13)      # a conversation: its mirrored turn followed the edit of output
    assert s13["response"] == "rewritten 12" and s13["messages"][1]["content"] == "rewritten 12"
    again = tmp_path / "again.jsonl"                        # the next export's provenance names the update run
    ok("export", str(again), "--format", "alpaca", "--dataset", "d")
    steps = json.loads((tmp_path / ".again.jsonl.manifest.json").read_text())["provenance"]["steps"]
    upd = [st for st in steps if st["step"] == "update"]     # one step per file read
    assert {st["run"] for st in upd} == {res["run"]} and sum(st["rows"] for st in upd) == N and len(upd) == 5
    # one undo reverts the text and metadata changes of the whole import
    code, _, err = cli("clean", "--undo", res["run"])
    assert code == 0, err
    s5 = review.load_sample(store, 5)
    assert s5["response"] == "answer 4" and s5["metadata"] is None
    assert {x["rubric"]: x["stale"] for x in s5["scores"]} == {"judge": False, "quality": True, "word_count": True}


def test_an_edit_made_after_the_export_is_not_reverted_by_the_engines_copy(store, tmp_path):
    out = tmp_path / "shards"
    export(out)
    review.edit(store, 3, {"response": "curator's fix"}, "review:t")
    back = tmp_path / "back"
    back.mkdir()
    t = pq.read_table(out / "part-00000.parquet")
    t = t.append_column("quality", pa.array([0.5] * t.num_rows))
    pq.write_table(t, back / "x.parquet")
    res = ok("import", str(back), "--dataset", "d", "--score-scale", "quality=0-1")
    assert res["kept_store_text"] == 1 and res["changed"] == 0
    s3 = review.load_sample(store, 3)
    assert s3["response"] == "curator's fix"
    assert {x["rubric"]: x["stale"] for x in s3["scores"]} == {"quality": True}   # scored on the old text
    # both changed: refused, nothing written
    outs = t.column("output").to_pylist()
    outs[2] = "the engine's rewrite"
    pq.write_table(t.set_column(t.schema.get_field_index("output"), "output", pa.array(outs)), back / "x.parquet")
    before = state(store)
    code, _, err = cli("import", str(back), "--dataset", "d", "--score-scale", "quality=0-1")
    assert code == 1 and "x.parquet, row 3" in err and "edited in the store after it was exported" in err
    assert state(store) == before


def test_import_of_shards_refuses_bad_input_whole_naming_file_line_and_field(store, tmp_path):
    before = state(store)
    d = tmp_path / "in"

    def case(rows, *flags, name="x.jsonl"):
        if d.exists():
            for f in d.iterdir():
                f.unlink()
        else:
            d.mkdir()
        (d / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
        code, out, err = cli("import", str(d), "--dataset", "d", *flags)
        assert state(store) == before, err
        assert "Traceback" not in err
        return code, err

    q = ("--score-scale", "q=0-1")
    expectations = [
        (([{"sample_id": 1, "q": 0.5}, {"sample_id": 1, "q": 0.7}], *q), 1, "x.jsonl, line 2, field 'sample_id': sample 1 appears twice"),
        (([{"sample_id": 1, "q": 0.5}, {"sample_id": 46, "q": 0.7}], *q), 1, "line 2, field 'sample_id': sample 46 is not in dataset 'd'"),
        (([{"sample_id": 1, "q": 0.5}, {"sample_id": 999, "q": 0.7}], *q), 1, "line 2, field 'sample_id': no sample with id 999"),
        (([{"sample_id": 1, "q": 0.5}, {"sample_id": "2", "q": 0.7}], *q), 1, "line 2, field 'sample_id': '2' is not a sample id"),
        (([{"sample_id": 1, "q": 0.5}, {"sample_id": 2, "q": 1.5}], *q), 1, "line 2, field 'q': 1.5 is off the scale 0-1"),
        (([{"sample_id": 1, "q": 0.5}, {"sample_id": 2, "q": "high"}], *q), 1, "line 2, field 'q': column 'q' mixes numbers"),
        (([{"sample_id": 1, "tag": "a"}, {"sample_id": 2, "tag": 3}],), 1, "line 2, field 'tag': column 'tag' mixes numbers"),
        (([{"sample_id": 1, "q": True}, {"sample_id": 2, "q": 0.3}], *q), 1, "line 2, field 'q': column 'q' mixes numbers"),
        (([{"sample_id": 1, "Quality": 0.5}],), 1, "column 'Quality' holds numbers"),
        (([{"sample_id": 1, "q": 0.5}],), 2, "--score-scale q=LO-HI"),
        (([{"sample_id": 1, "q": 0.5}], *q, "--score-scale", "qq=0-1"), 2, "no numeric column 'qq'"),
        (([{"sample_id": 1, "q": 0.5}], "--score-scale", "q=1-0"), 2, "not a range"),
        (([{"sample_id": 1, "q": 0.5}], "--score-scale", "q=low-high"), 2, "expected COLUMN=LO-HI"),
        (([{"sample_id": 1, "text": "copy"}],), 1, "column 'text' is not a field of the samples"),
        (([{"sample_id": 1, "prompt": "p"}],), 1, "column 'prompt' is not a field"),
        (([{"sample_id": 1, "output": 3}],), 1, "line 1, field 'output': text expected"),
        (([{"sample_id": 13, "messages": json.dumps([{"role": "user", "content": "x"}])}],), 1,
         "line 1, field 'messages': an edit of messages must keep the same turns"),
        (([{"sample_id": 1, "metadata": "{not json"}],), 1, "line 1, field 'metadata': not valid JSON"),
        (([{"sample_id": 1}, {"no_id": 2}],), 1, "line 2, field 'sample_id': missing"),
        (([{"sample_id": 1, "q": 0.5}], *q, "--format", "alpaca"), 2, "--format does not apply"),
    ]
    for (rows, *flags), code, expected in expectations:
        got, err = case(rows, *flags)
        assert got == code and expected in err, (rows, flags, err)
    (d / "x.jsonl").write_text(json.dumps({"sample_id": 1, "q": 0.5}) + "\n")   # no --dataset: it names the target
    code, out, err = cli("import", str(d), *q)
    assert code == 2 and "--dataset" in err
    (d / "y.jsonl").write_text(json.dumps({"instruction": "new", "output": "row"}) + "\n")
    code, out, err = cli("import", str(d), "--dataset", "d", *q)
    assert code == 2 and "carries sample_id" in err and "does not" in err
    assert state(store) == before
    # the library path (the TUI's import dialog) never adds them as new rows either
    from workbench import importer
    with pytest.raises(importer.ImportRefused, match="carries sample_id"):
        importer.import_files(store, [d / "x.jsonl"], "d")
    assert state(store) == before


def test_datatrove_style_jsonl_scores_come_back_as_a_rubric(store, tmp_path):
    d = tmp_path / "dt"
    d.mkdir()
    with gzip.open(d / "00000.jsonl.gz", "wb") as f:
        for i in range(1, 11):
            f.write(orjson.dumps({"sample_id": i, "fineweb_edu_score": i % 6, "kept": True}) + b"\n")
    res = ok("import", str(d), "--dataset", "d", "--score-scale", "fineweb_edu_score=0-5")
    assert res["rubrics"]["fineweb_edu_score"]["scores"] == 10 and res["metadata_columns"] == ["kept"]
    got = scores.of_sample(store, 6)
    assert [(x["rubric"], x["score"], x["scale"]) for x in got] == [("fineweb_edu_score", 0.0, [0.0, 5.0])]
