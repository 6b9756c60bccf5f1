"""Every command and flag as a careless or hostile user types them, and files as they come from the wild: one
`error:` line naming what is wrong (file, line and field where they apply), exit 2 for usage and 1 for a bad file,
no traceback and no "unexpected" error, no control sequence from the input on stdout or stderr, and the store and
the config byte-for-byte as they were. Table-driven: each rule has many cases, including the ones that *almost*
work; `test_almost_right_inputs_work` holds the near misses that must still be accepted.

One store per module (real SQLite file, the real `main()` in-process): the cases only read it or are refused.
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path

import pytest

from conftest import run_cli
from hostile import OSC52, forbidden

ESC_NAME = f"x{OSC52}\x1b[31m"
BIG = "99999999999999999999999"


def digest(path: Path) -> str:
    if path.suffix == ".db":
        c = sqlite3.connect(path)
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        c.close()
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A store with datasets d (ids 1-6) and e (7-12), a snapshot 's1', a queued job 1 and a cancelled job 2; a
    config with endpoints local, other and m2; and a directory of hostile files."""
    root = tmp_path_factory.mktemp("hostile_args")
    db, cfg = root / "store.db", root / "config.toml"
    env = {"WORKBENCH_DB": str(db), "WORKBENCH_CONFIG": str(cfg)}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    from workbench import importer
    from workbench.store import open_store
    good = root / "good.jsonl"
    good.write_text("".join(json.dumps({"instruction": f"question {i} about things", "output": f"answer {i}"}) + "\n"
                            for i in range(6)))
    conn = open_store(db)
    importer.import_file(conn, good, dataset="d")
    importer.import_file(conn, good, dataset="e", append=True)
    conn.close()

    def ok(*argv):
        code, out, err = run_cli(*argv, "--db", str(db), "--config", str(cfg))
        assert code == 0, (argv, err)
    ok("index")
    ok("endpoints", "add", "local", "--base-url", "http://127.0.0.1:9/v1", "--model", "m")
    ok("endpoints", "add", "other", "--base-url", "http://127.0.0.1:9/v1/", "--model", "m")
    ok("endpoints", "add", "m2", "--base-url", "http://127.0.0.1:9/v1", "--model", "m2")
    ok("export", str(root / "snap1.jsonl"), "--format", "alpaca", "--name", "s1")
    ok("run", "judge", "--dataset", "d", "--endpoint", "local")
    ok("run", "judge", "--dataset", "e", "--endpoint", "local")
    ok("jobs", "cancel", "2")
    f = root / "f"
    f.mkdir()
    files = {
        "ids_unknown.txt": "1\n2\n99999\n", "ids_other.txt": "1\n\n7\n99999\n", "ids_neg.txt": "1\n-1\n",
        "ids_huge.txt": f"1\n{BIG}\n", "ids_float.txt": "1.0\n", "ids_exp.txt": "1e3\n", "ids_hex.txt": "0x10\n",
        "ids_comma.txt": "1,2\n", "ids_ctrl.txt": f"1\n{OSC52}\n", "ids_arabic.txt": "١\n", "ids_zero.txt": "0\n",
        "ids_empty.txt": "", "ids_blank.txt": "\n  \n\n", "ids_bom_only.txt": "\ufeff",
        "ids_latin1.txt": b"1\n\xe9\n", "ids_bom_mid.txt": "1\n\ufeff2\n",
        "bad.toml": "[endpoints\n", "latin.toml": b"x = 1\ny = '\xe9'\n", "shape_int.toml": "endpoints = 3\n",
        "shape_pools_list.toml": "pools = [1]\n",
        "shape_members_str.toml": "[endpoints.a]\nbase_url='http://h/v1'\nmodel='m'\n[pools.p]\nendpoints = 'a'\n",
        "shape_pool_int.toml": "[endpoints.a]\nbase_url='http://h/v1'\nmodel='m'\n[pools]\np = 3\n",
        "dup_pool.toml": "[endpoints.a]\nbase_url='http://h/v1'\nmodel='m'\n[endpoints.b]\nbase_url='HTTP://H:80/v1/'"
                         "\nmodel='m'\n[pools.p]\nendpoints = ['a', 'b']\n",
        "twice_pool.toml": "[endpoints.a]\nbase_url='http://h/v1'\nmodel='m'\n[pools.p]\nendpoints = ['a', 'a']\n",
        "url_int.toml": "[endpoints.a]\nbase_url=3\nmodel='m'\n",
        "timeout_nan.toml": "[endpoints.a]\nbase_url='http://h/v1'\nmodel='m'\ntimeout=nan\n",
        "timeout_inf.toml": "[endpoints.a]\nbase_url='http://h/v1'\nmodel='m'\ntimeout=inf\n",
        "rpm_neg.toml": "[endpoints.a]\nbase_url='http://h/v1'\nmodel='m'\nrpm=-1\n",
        "cost_nan.toml": "[endpoints.a]\nbase_url='http://h/v1'\nmodel='m'\ncost_per_1k_input=nan\n",
        "port.toml": "[endpoints.a]\nbase_url='http://h:99999/v1'\nmodel='m'\n",
        "url_space.toml": "[endpoints.a]\nbase_url='http://h/v1 x'\nmodel='m'\n",
        "model_ctrl.toml": f"[endpoints.a]\nbase_url='http://h/v1'\nmodel=\"m\\u001b[31m\"\n",
        "param_nan.toml": "[endpoints.a]\nbase_url='http://h/v1'\nmodel='m'\n[endpoints.a.params]\ntemperature=nan\n",
        "clean_int.toml": "clean = 3\n", "clean_filters.toml": "[clean]\nfilters = 3\n",
        "t_latin.toml": b"size = 5\n[targets.task_type]\n\xe9 = 1\n", "t_bad.toml": "[targets\n",
        "t_int.toml": "targets = 3\n", "t_str.toml": "[targets.task_type]\ngeneral = 'x'\n",
        "t_nan.toml": "size = 5\n[targets.task_type]\ngeneral = nan\n",
        "t_inf.toml": "size = 5\n[targets.task_type]\ngeneral = inf\n",
        "t_neg.toml": "size = 5\n[targets.task_type]\ngeneral = -1\n",
        "t_size_neg.toml": "size = -5\n[targets.task_type]\ngeneral = 1\n",
        "t_size_float.toml": "size = 1e3\n[targets.task_type]\ngeneral = 1\n",
        "t_datasets_str.toml": "size = 5\ndatasets = 'd'\n[targets.task_type]\ngeneral = 1\n",
        "t_status_int.toml": "size = 5\nstatus = 3\n[targets.task_type]\ngeneral = 1\n",
        "t_empty.toml": "", "t_ok.toml": "size = 5\n[targets.task_type]\ngeneral = 1\n",
        "r_latin.toml": b"name = '\xe9'\n", "r_empty.toml": "", "r_bad.toml": "[[step\n",
        "r_shape.toml": "steps = 3\n",
        "empty.jsonl": "", "latin.csv": b"instruction,output\n\xe9t\xe9,a\n",
        "ok.jsonl": json.dumps({"instruction": "q", "output": "a"}) + "\n",
        "k_unknown.jsonl": '{"sample_id": 99999}\n', "k_str.jsonl": '{"sample_id": "1"}\n',
        "k_nan.jsonl": '{"sample_id": NaN}\n', "k_float.jsonl": '{"sample_id": 1.0}\n',
        "k_bool.jsonl": '{"sample_id": true}\n', "k_list.jsonl": "[1, 2]\n", "k_neg.jsonl": '{"sample_id": -1}\n',
        "k_huge.jsonl": '{"sample_id": %s}\n' % BIG, "k_latin.jsonl": b'{"sample_id": 1}\n\xff\n',
        "reply_latin.txt": b"Score: \xe9\n",
    }
    for name, data in files.items():
        (f / name).write_bytes(data if isinstance(data, bytes) else data.encode())
    (f / "a_dir.jsonl").mkdir()
    (root / "templates").mkdir()
    (root / "templates" / "judge").write_text("the user's own edit\n")      # `templates copy` must not replace it
    yield {"db": db, "cfg": cfg, "f": f, "root": root}
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


# (argv, exit code, fragments the error line must hold). F/ is the hostile files' directory, R/ the world's root.
CASES = [
    # --- decide: ids from a file name the file and line; ids on the command line name --ids ---------------------
    (["decide", "--dataset", "d", "--ids-from", "F/ids_unknown.txt", "--accept"], 1,
     ["ids_unknown.txt line 3", "no sample with id 99999", "nothing was decided"]),
    (["decide", "--dataset", "d", "--ids-from", "F/ids_other.txt", "--accept"], 1,
     ["ids_other.txt line 3", "sample 7 is not in dataset 'd'", "2 bad ids"]),
    (["decide", "--dataset", "d", "--ids-from", "F/ids_neg.txt", "--accept"], 1, ["ids_neg.txt line 2", "'-1'"]),
    (["decide", "--dataset", "d", "--ids-from", "F/ids_huge.txt", "--accept"], 1, ["ids_huge.txt line 2", BIG]),
    (["decide", "--dataset", "d", "--ids-from", "F/ids_float.txt", "--accept"], 1, ["line 1", "'1.0'"]),
    (["decide", "--dataset", "d", "--ids-from", "F/ids_exp.txt", "--accept"], 1, ["line 1", "'1e3'"]),
    (["decide", "--dataset", "d", "--ids-from", "F/ids_hex.txt", "--accept"], 1, ["line 1", "'0x10'"]),
    (["decide", "--dataset", "d", "--ids-from", "F/ids_comma.txt", "--accept"], 1, ["line 1", "'1,2'"]),
    (["decide", "--dataset", "d", "--ids-from", "F/ids_ctrl.txt", "--accept"], 1, ["ids_ctrl.txt line 2"]),
    (["decide", "--dataset", "d", "--ids-from", "F/ids_arabic.txt", "--accept"], 1, ["line 1", "not a sample id"]),
    (["decide", "--dataset", "d", "--ids-from", "F/ids_zero.txt", "--accept"], 1, ["line 1", "'0'"]),
    (["decide", "--dataset", "d", "--ids-from", "F/ids_empty.txt", "--accept"], 1, ["ids_empty.txt", "no sample ids"]),
    (["decide", "--dataset", "d", "--ids-from", "F/ids_blank.txt", "--accept"], 1, ["ids_blank.txt", "no sample ids"]),
    (["decide", "--dataset", "d", "--ids-from", "F/ids_bom_only.txt", "--accept"], 1, ["no sample ids"]),
    (["decide", "--dataset", "d", "--ids-from", "F/ids_bom_mid.txt", "--accept"], 1, ["line 2", "not a sample id"]),
    (["decide", "--dataset", "d", "--ids-from", "F/ids_latin1.txt", "--accept"], 1,
     ["ids_latin1.txt line 2", "not UTF-8"]),
    (["decide", "--dataset", "d", "--ids-from", "F", "--accept"], 1, ["cannot read", "Is a directory"]),
    (["decide", "--dataset", "d", "--ids-from", "F/missing.txt", "--accept"], 1, ["missing.txt", "No such file"]),
    (["decide", "--dataset", "d", "--ids", "99999", "--accept"], 2, ["--ids: no sample with id 99999"]),
    (["decide", "--dataset", "d", "--ids", "1,7", "--accept"], 2, ["--ids: sample 7 is not in dataset 'd'"]),
    (["decide", "--dataset", "d", "--ids", BIG, "--accept"], 2, ["--ids", BIG, "not a sample id"]),
    (["decide", "--dataset", "d", "--ids", "1e3", "--accept"], 2, ["'1e3' is not a sample id"]),
    (["decide", "--dataset", "d", "--ids", "0x10", "--accept"], 2, ["'0x10'"]),
    (["decide", "--dataset", "d", "--ids", "0", "--accept"], 2, ["'0'"]),
    (["decide", "--dataset", "d", "--ids", "1,,2", "--accept"], 2, ["'' is not a sample id"]),
    (["decide", "--dataset", "d", "--ids", "1", "--ids", "2", "--accept"], 2, ["--ids is given twice"]),
    (["decide", "--dataset", "d", "--ids", "1", "--accept", "--reject"], 2, ["not allowed with"]),
    (["decide", "--dataset", "d", "--ids", "1", "--accept", "--reason", "a", "--reason", "b"], 2,
     ["--reason is given twice"]),
    (["decide", "--dataset", ESC_NAME, "--ids", "1", "--accept"], 2, ["no dataset named"]),
    (["decide", "--dataset", "d", "--ids", "", "--accept"], 2, ["--ids is empty"]),
    (["decide", "--dataset", "d", "--ids", "1", "--accept", "--reason", " "], 2, ["--reason is empty"]),
    # --- pools: a server listed twice, names that cannot be shown -------------------------------------------------
    (["pools", "add", "p", "--endpoint", "local", "--endpoint", "local"], 2, ["'local' is listed twice"]),
    (["pools", "add", "p", "--endpoint", "local", "--endpoint", "other"], 2,
     ["'local' and 'other' are the same server and model", "http://127.0.0.1:9/v1"]),
    (["pools", "add", "p", "--endpoint", "m2", "--endpoint", "local", "--endpoint", "m2"], 2, ["'m2' is listed twice"]),
    (["pools", "add", "p", "--endpoint", "nope"], 2, ["--endpoint nope: no endpoint named 'nope'"]),
    (["pools", "add", "p", "--endpoint", "local", "--mode", "each", "--mode", "spread"], 2, ["--mode is given twice"]),
    (["pools", "add", "p", "--endpoint", "local", "--mode", "both"], 2, ["invalid choice"]),
    (["pools", "add", "p\nq", "--endpoint", "local"], 2, ["pool name", "control character"]),
    (["pools", "add", ESC_NAME, "--endpoint", "local"], 2, ["pool name", "control character"]),
    (["pools", "add", "", "--endpoint", "local"], 2, ["pool name is empty"]),
    (["pools", "add", " p", "--endpoint", "local"], 2, ["spaces at either end"]),
    # --- endpoints add: every number finite and in range, names, URLs, models ------------------------------------
    *[(["endpoints", "add", "x", "--base-url", "http://h/v1", "--model", "m", flag, value], 2,
       [flag if why != "number from 0 to 1" else "batch_cost_factor", why])
      for flag, value, why in [
          ("--max-concurrency", "0", "from 1"), ("--max-concurrency", "-3", "from 1"),
          ("--max-concurrency", "1e3", "not a whole number"), ("--max-concurrency", BIG, "too large"),
          ("--max-concurrency", "0x10", "not a whole number"), ("--max-concurrency", "1_000", "not a whole number"),
          ("--max-concurrency", "2.5", "not a whole number"), ("--timeout", "nan", "not a finite number"),
          ("--timeout", "inf", "not a finite number"), ("--timeout", "0", "above 0"), ("--timeout", "-1", "above 0"),
          ("--timeout", "0x10", "not a number"), ("--rpm", "-1", "from 0"), ("--tpm", "-1", "from 0"),
          ("--max-retries", "-1", "from 0"), ("--max-reply-bytes", "0", "from 1"), ("--cost-in", "nan", "finite"),
          ("--cost-in", "-1", "from 0"), ("--cost-out", "inf", "finite"), ("--cost-out", "-0.5", "from 0"),
          ("--batch-cost-factor", "nan", "finite"), ("--batch-cost-factor", "1.5", "number from 0 to 1"),
          ("--json-mode", "xml", "invalid choice")]],
    (["endpoints", "add", "x", "--base-url", "http://h/v1", "--model", "m", "--timeout", "5", "--timeout", "6"], 2,
     ["--timeout is given twice"]),
    (["endpoints", "add", "x", "--base-url", "http://h/v1", "--base-url", "http://h/v2", "--model", "m"], 2,
     ["--base-url is given twice"]),
    (["endpoints", "add", "x", "--base-url", "http://h/v1", "--model", "m", "--param", "temperature"], 2,
     ["expected key=value"]),
    (["endpoints", "add", "x", "--base-url", "http://h/v1", "--model", "m", "--param", "temperature=nan"], 2,
     ["params.temperature", "not a finite number"]),
    (["endpoints", "add", "x", "--base-url", "ftp://h", "--model", "m"], 2, ["http(s) URL"]),
    (["endpoints", "add", "x", "--base-url", "localhost:8000", "--model", "m"], 2, ["http(s) URL"]),
    (["endpoints", "add", "x", "--base-url", "http://h:99999/v1", "--model", "m"], 2, ["Port out of range"]),
    (["endpoints", "add", "x", "--base-url", "http://h:abc/v1", "--model", "m"], 2, ["base_url"]),
    (["endpoints", "add", "x", "--base-url", "http://h/v1\n", "--model", "m"], 2, ["base_url", "newline"]),
    (["endpoints", "add", "x", "--base-url", "http://h/v 1", "--model", "m"], 2, ["base_url", "space"]),
    (["endpoints", "add", "x", "--base-url", "http://h/v1", "--model", ""], 2, ["--model is empty"]),
    (["endpoints", "add", "x", "--base-url", "http://h/v1", "--model", "m", "--api-key-env", ""], 2,
     ["--api-key-env is empty"]),
    (["endpoints", "add", "x", "--base-url", "http://h/v1", "--model", "m\x1b[31m"], 2, ["model", "control"]),
    (["endpoints", "add", ESC_NAME, "--base-url", "http://h/v1", "--model", "m"], 2, ["endpoint name", "control"]),
    (["endpoints", "add", "x\ny", "--base-url", "http://h/v1", "--model", "m"], 2, ["endpoint name", "control"]),
    (["endpoints", "add", "", "--base-url", "http://h/v1", "--model", "m"], 2, ["endpoint name is empty"]),
    (["endpoints", "add", "x", "--base-url", "http://h/v1", "--model", "m", "--api-key-file", "F"], 2,
     ["key file", "accessible by group or others"]),
    (["endpoints", "add", "x", "--base-url", "http://h/v1", "--model", "m", "--api-key-file", "F/nokey"], 2,
     ["cannot read key file", "No such file"]),
    (["endpoints", "remove", "nope"], 2, ["no endpoint named 'nope'"]),
    (["pools", "add", "p", "--endpoint", "local", "--config", "R/typo/c.toml"], 2, ["no endpoint named 'local'"]),
    (["endpoints", "test", "nope"], 2, ["no endpoint named 'nope'"]),
    # --- the config file itself ------------------------------------------------------------------------------------
    *[(["endpoints", "list", "--config", f"F/{name}"], code, [name, *why]) for name, code, why in [
        ("bad.toml", 1, ["line 1"]), ("latin.toml", 1, ["line 2", "not UTF-8"]),
        ("shape_int.toml", 1, ["endpoints must be a table"]), ("shape_pools_list.toml", 1, ["pools must be a table"]),
        ("shape_members_str.toml", 1, ["[pools.p]", "a list of endpoint names"]),
        ("shape_pool_int.toml", 1, ["[pools.p] must be a table"]),
        ("dup_pool.toml", 1, ["[pools.p]", "'a' and 'b' are the same server and model"]),
        ("twice_pool.toml", 1, ["'a' is listed twice"]), ("url_int.toml", 1, ["base_url must be a non-empty string"]),
        ("timeout_nan.toml", 1, ["timeout", "above 0"]), ("timeout_inf.toml", 1, ["timeout", "above 0"]),
        ("rpm_neg.toml", 1, ["rpm must be >= 0"]), ("cost_nan.toml", 1, ["cost_per_1k_input"]),
        ("port.toml", 1, ["Port out of range"]), ("url_space.toml", 1, ["base_url", "space"]),
        ("model_ctrl.toml", 1, ["model", "control character"]), ("param_nan.toml", 1, ["params.temperature"])]],
    (["endpoints", "list", "--config", "F"], 1, ["Is a directory"]),
    (["endpoints", "list", "--config", ""], 2, ["--config is empty"]),
    # --- the store path --------------------------------------------------------------------------------------------
    (["datasets", "--db", "F"], 1, ["unable to open database file"]),
    (["datasets", "--db", "F/bad.toml"], 1, ["bad.toml", "not a database"]),
    (["datasets", "--db", "F/nodir/x.db"], 2, ["does not exist"]),
    (["datasets", "--db", ""], 2, ["--db is empty"]),
    (["--db", "", "datasets"], 2, ["--db is empty"]),
    (["--db=", "datasets"], 2, ["--db is empty"]),
    # --- datasets, stats, provenance, review: names and ids that do not exist ------------------------------------
    (["datasets", "rename", "d", "e"], 2, ["already exists"]),
    (["datasets", "rename", "nope", "z"], 2, ["no dataset named 'nope'"]),
    (["datasets", "rename", "d", ""], 2, ["not a usable dataset name"]),
    (["datasets", "rename", "d", " z "], 2, ["not a usable dataset name"]),
    (["datasets", "delete", "nope", "--yes"], 2, ["no dataset named 'nope'"]),
    (["datasets", "delete", "d"], 2, ["pass --yes"]),
    (["datasets", "merge", "d", "--into", "d"], 2, ["two or more different datasets"]),
    (["datasets", "merge", "d", "d", "--into", "z"], 2, ["two or more different datasets"]),
    (["datasets", "merge", "nope", "d", "--into", "z"], 2, ["no dataset named 'nope'"]),
    (["datasets", "merge", "d", "e", "--into", "z", "--into", "y"], 2, ["--into is given twice"]),
    (["stats", "--dataset", "nope"], 2, ["no dataset named 'nope'"]),
    (["stats", "--dataset", "d", "--dataset", "e"], 2, ["--dataset is given twice"]),
    (["provenance", "--dataset", "d", "--id", "99999"], 2, ["no sample with id 99999"]),
    (["provenance", "--dataset", "d", "--id", "-1"], 2, ["--id", "from 1"]),
    (["provenance", "--dataset", "d", "--id", "0"], 2, ["--id", "from 1"]),
    (["provenance", "--dataset", "d", "--id", BIG], 2, ["--id", "too large"]),
    (["provenance", "--dataset", "d", "--id", "1e3"], 2, ["--id", "not a whole number"]),
    (["provenance", "--dataset", "d", "--id", "7"], 2, ["sample 7 is in dataset 'e'"]),
    (["review", "--dataset", "d", "--sample", "99999"], 2, ["has no sample with id 99999"]),
    (["review", "--dataset", "d", "--sample", BIG], 2, ["--sample", "too large"]),
    (["review", "--dataset", "d", "--sample", "-1"], 2, ["--sample", "from 1"]),
    (["review", "--dataset", "d", "--selection", "nope"], 2, ["no selection named 'nope'"]),
    (["review", "--dataset", "nope"], 2, ["no dataset named 'nope'"]),
    (["review", "--dataset", ESC_NAME], 2, ["no dataset named"]),
    # --- samples: filters and limits -------------------------------------------------------------------------------
    (["samples", "--dataset", "d", "--limit", "-1"], 2, ["--limit", "from 0"]),
    (["samples", "--dataset", "d", "--limit", "1e3"], 2, ["--limit", "not a whole number"]),
    (["samples", "--dataset", "d", "--limit", "nan"], 2, ["--limit", "not a whole number"]),
    (["samples", "--dataset", "d", "--filter", "nope=1"], 2, ["unknown filter key 'nope'"]),
    (["samples", "--dataset", "d", "--filter", "status=nope"], 2, ["status='nope'", "pending"]),
    (["samples", "--dataset", "d", "--filter", "status=Pending"], 2, ["status='Pending'"]),
    (["samples", "--dataset", "d", "--filter", "status=pending", "--filter", "status=accepted"], 2,
     ["status is given twice"]),
    (["samples", "--dataset", "d", "--filter", "limit=-3"], 2, ["limit='-3'"]),
    (["samples", "--dataset", "d", "--filter", "limit=nan"], 2, ["limit='nan'"]),
    (["samples", "--dataset", "d", "--filter", "limit=1e3"], 2, ["limit='1e3'"]),
    (["samples", "--dataset", "d", "--filter", "unique=maybe"], 2, ["unique='maybe'", "true or false"]),
    (["samples", "--dataset", "d", "--filter", "round=-1"], 2, ["round"]),
    (["run", "judge", "--dataset", "d", "--endpoint", "local", "--filter", "status=done"], 2, ["status='done'"]),
    (["samples", "--dataset", "d", "--filter", "status"], 2, ["status"]),
    (["samples", "--dataset", "d", "--min-score", "judge=nan"], 2, ["'nan' is not a number"]),
    (["samples", "--dataset", "d", "--min-score", "judge=inf"], 2, ["inf"]),
    (["samples", "--dataset", "d", "--min-score", "judge"], 2, ["name the rubric"]),
    (["samples", "--dataset", "d", "--min-score", "judge=0x10"], 2, ["0x10"]),
    (["samples", "--dataset", "d", "--filter", f"task_type={OSC52}"], 0, []),      # no match: an empty list
    # --- export -----------------------------------------------------------------------------------------------------
    (["export", "R/snap1.jsonl", "--format", "alpaca"], 2, ["exists; pass --force"]),
    (["export", "F", "--format", "alpaca"], 2, ["not empty; pass --force"]),
    (["export", "R/x.jsonl", "--format", "alpaca", "--status", "nope"], 2, ["'nope' is not a status"]),
    (["export", "R/x.jsonl", "--format", "alpaca", "--status", ""], 2, ["--status is empty"]),
    (["export", "R/x.jsonl", "--format", "alpaca", "--status", ","], 2, ["'' is not a status"]),
    (["export", "R/x.jsonl", "--format", "alpaca", "--selection", ""], 2, ["--selection is empty"]),
    (["export", "R/x.jsonl", "--format", "alpaca", "--task-type", ""], 2, ["--task-type is empty"]),
    (["export", "R/x.jsonl", "--format", "alpaca", "--dataset", ""], 2, ["--dataset is empty"]),
    (["export", "R/x.jsonl", "--format", "alpaca", "--dataset", "nope"], 2, ["no dataset named 'nope'"]),
    (["export", "R/x.jsonl", "--format", "alpaca", "--min-score", "judge=nan"], 2, ["'nan' is not a number"]),
    (["export", "R/x.jsonl", "--format", "alpaca", "--min-score", "judge=abc"], 2, ["'abc' is not a number"]),
    (["export", "R/x.jsonl", "--format", "alpaca", "--selection", "nope"], 2, ["no selection named 'nope'"]),
    (["export", "R/x.jsonl", "--format", "alpaca", "--task-type", "nope"], 2, ["no rows to export"]),
    (["export", "R/x.jsonl", "--format", "yaml"], 2, ["invalid choice"]),
    (["export", "R/x.jsonl", "--format", "alpaca", "--format", "sharegpt"], 2, ["--format is given twice"]),
    (["export", "R/xdir", "--format", "parquet", "--shard-rows", "0"], 2, ["--shard-rows"]),
    (["export", "R/xdir", "--format", "parquet", "--shard-rows", "-5"], 2, ["--shard-rows"]),
    (["export", "R/xdir", "--format", "parquet", "--shard-rows", "1e3"], 2, ["--shard-rows", "not a whole number"]),
    (["export", "R/xdir", "--format", "alpaca", "--shard-rows", "5"], 2, ["use --format parquet"]),
    (["export", "F", "--format", "parquet", "--shard-rows", "5"], 2, ["not empty"]),
    (["export", "R/x\x1b[31m.jsonl", "--format", "alpaca", "--dataset", "nope"], 2, ["no dataset named"]),
    (["export", "R/x.jsonl", "--format", "alpaca", "--name", "a\nb"], 2, ["--name", "control character"]),
    (["export", "R/x.jsonl", "--format", "alpaca", "--name", ESC_NAME], 2, ["--name", "control character"]),
    (["export", "R/x.jsonl", "--format", "alpaca", "--name", "7"], 2, ["read as a snapshot id"]),
    (["export", "R/x.jsonl", "--format", "alpaca", "--name", "#7"], 2, ["read as a snapshot id"]),
    (["export", "R/x.jsonl", "--format", "alpaca", "--name", ""], 2, ["--name is empty"]),
    (["export", "R/x.jsonl", "--format", "alpaca", "--seed-tag", "x"], 2, ["go with --tag-origin"]),
    # --- import ----------------------------------------------------------------------------------------------------
    (["import", "F/empty.jsonl"], 1, ["empty.jsonl, line 1", "empty"]),
    (["import", "F/latin.csv"], 1, ["latin.csv, line", "UTF-8"]),
    (["import", "F/a_dir.jsonl"], 1, ["a_dir.jsonl"]),
    (["import", "F/missing.jsonl"], 1, ["missing.jsonl"]),
    (["import", "F/ok.jsonl", "--dataset", ""], 2, ["--dataset is empty"]),
    (["import", "F/ok.jsonl", "--dataset", " d"], 2, ["not a usable dataset name"]),
    (["import", "F/ok.jsonl", "--dataset", "d", "--dataset", "e"], 2, ["--dataset is given twice"]),
    (["import", "F/ok.jsonl", "--map", "instruction"], 1, ["--map", "target=column"]),
    (["import", "F/ok.jsonl", "--map", "nope=q"], 1, ["--map", "unknown target field 'nope'"]),
    (["import", "F/ok.jsonl", "--map", "instruction=a,instruction=b"], 1, ["--map", "'instruction' is mapped twice"]),
    (["import", "F/ok.jsonl", "--map", "instruction=a", "--map", "output=b"], 2, ["--map is given twice"]),
    (["import", "F/ok.jsonl", "--map", "instruction="], 1, ["--map", "no source column"]),
    (["import", "F/ok.jsonl", "--prefer", "nope"], 2, ["nope"]),
    (["import", "F/ok.jsonl", "--score-rubric", "Bad Name!"], 2, ["Bad Name!"]),
    (["import", "F/ok.jsonl", "F/ok.jsonl", "--dataset", "z"], 2, ["ok.jsonl"]),
    (["import", "F/ok.jsonl", "--as-candidates"], 2, ["--dataset"]),
    (["import", "F/ok.jsonl", "--as-candidates", "--dataset", "z"], 2, ["at least two files"]),
    (["import", "F/ok.jsonl", "--score-scale", "10-1"], 2, ["not a range"]),
    (["import", "F/ok.jsonl", "--score-scale", "nan-inf"], 2, ["finite"]),
    (["import", "F/ok.jsonl", "--score-scale", "1-inf"], 2, ["finite"]),
    (["import", "F/ok.jsonl", "--score-scale", "0x1-0x10"], 2, ["LO-HI"]),
    (["import", "F/ok.jsonl", "--score-scale", "1-5", "--score-scale", "1-10"], 2, ["more than once"]),
    (["import", "F/ok.jsonl", "--license", "not a licence"], 2, ["not an SPDX licence id"]),
    (["import", "F/ok.jsonl", "--segment-min", "-1"], 2, ["--segment-min", "from 0"]),
    (["import", "F/ok.jsonl", "--segment-max", "0"], 2, ["--segment-max", "from 1"]),
    (["import", "F/ok.jsonl", "--segment-min", "500", "--segment-max", "100"], 2, ["above --segment-max"]),
    (["import", "F/ok.jsonl", "--format", "nope"], 2, ["invalid choice"]),
    (["import", "-"], 2, ["--dataset"]),
    # --- clean, dedup ------------------------------------------------------------------------------------------------
    (["clean", "--dataset", "nope"], 2, ["no dataset named 'nope'"]),
    (["clean", "--filter", "nope"], 2, ["unknown filter 'nope'"]),
    (["clean", "--undo", "nope"], 2, ["no curation run named 'nope'"]),
    (["clean", "--undo", "filter-99999"], 2, ["no curation run named 'filter-99999'"]),
    (["clean", "--exempt", "99999"], 2, ["no sample with id 99999"]),
    (["clean", "--exempt", "-1"], 2, ["--exempt", "from 1"]),
    (["clean", "--exempt", BIG], 2, ["--exempt", "too large"]),
    (["clean", "--unexempt", "1"], 2, ["has no exemption"]),
    (["clean", "--exempt", "1", "--unexempt", "1"], 2, ["#1 is given to both --exempt and --unexempt"]),
    (["clean", "--examples", "-1"], 2, ["--examples", "from 0"]),
    (["clean", "--status", "nope"], 2, ["unknown status 'nope'"]),
    (["clean", "--undo", "a", "--undo", "b"], 2, ["--undo is given twice"]),
    (["clean", "--undo", ""], 2, ["--undo is empty"]),
    (["clean", "--config", "F/clean_int.toml"], 2, ["[clean] must be a table"]),
    (["clean", "--config", "F/clean_filters.toml"], 2, ["filters = 3"]),
    (["dedup", "--threshold", "nan"], 2, ["--threshold", "not a finite number"]),
    (["dedup", "--threshold", "0"], 2, ["--threshold", "(0, 1]"]),
    (["dedup", "--threshold", "2"], 2, ["--threshold", "(0, 1]"]),
    (["dedup", "--threshold", "inf"], 2, ["--threshold", "not a finite number"]),
    (["dedup", "--threshold", "90%"], 2, ["--threshold", "not a number"]),
    (["dedup", "--fields", "nope"], 2, ["fields must be among"]),
    (["dedup", "--fields", ""], 2, ["--fields is empty"]),
    (["dedup", "--fields", ","], 2, ["fields must be among"]),
    (["dedup", "--status", "nope"], 2, ["unknown status 'nope'"]),
    (["dedup", "--dataset", "nope"], 2, ["no dataset named 'nope'"]),
    (["dedup", "--rubric", "nope"], 2, ["nothing is scored on it"]),
    (["dedup", "--apply", "keep-worst"], 2, ["invalid choice"]),
    # --- sample ------------------------------------------------------------------------------------------------------
    *[(["sample", "--target", f"F/{name}", "--into", "s"], code, why) for name, code, why in [
        ("missing.toml", 1, ["missing.toml", "no such file"]), ("t_latin.toml", 1, ["t_latin.toml, line 3", "UTF-8"]),
        ("t_bad.toml", 1, ["t_bad.toml", "line 1"]), ("t_int.toml", 1, ["t_int.toml", "targets = 3"]),
        ("t_str.toml", 1, ["general = 'x'", "a share must be a number"]),
        ("t_nan.toml", 1, ["general = nan", "a share must be a number"]),
        ("t_inf.toml", 1, ["general = inf", "a share must be a number"]),
        ("t_neg.toml", 1, ["general = -1"]), ("t_size_neg.toml", 1, ["size = -5"]),
        ("t_size_float.toml", 1, ["size = 1000.0"]), ("t_datasets_str.toml", 1, ["datasets = 'd'"]),
        ("t_status_int.toml", 1, ["status = 3"]), ("t_empty.toml", 1, ["no [targets.<dimension>] table"])]],
    (["sample", "--target", "F", "--into", "s"], 1, ["Is a directory"]),
    (["sample", "--target", "F/t_ok.toml", "--into", "s", "--size", "0"], 2, ["--size", "from 1"]),
    (["sample", "--target", "F/t_ok.toml", "--into", "s", "--size", "1e3"], 2, ["--size", "not a whole number"]),
    (["sample", "--target", "F/t_ok.toml", "--into", "s", "--diversity", "nan"], 2, ["--diversity"]),
    (["sample", "--target", "F/t_ok.toml", "--into", "s", "--diversity", "0"], 2, ["--diversity", "(0, 1]"]),
    (["sample", "--target", "F/t_ok.toml", "--into", "s", "--by", "nope"], 2, ["by = 'nope'"]),
    (["sample", "--target", "F/t_ok.toml", "--into", "s", "--seed", "1.5"], 2, ["--seed", "not a whole number"]),
    (["sample", "--target", "F/t_ok.toml"], 2, ["--into NAME is needed"]),
    (["sample", "--target", "F/t_ok.toml", "--into", "a\nb"], 2, ["--into: selection name", "control character"]),
    (["sample", "--by", "deita", "--size", "5", "--into", ESC_NAME], 2, ["--into: selection name"]),
    (["spotcheck", "--dataset", "d", "--rubric", "judge", "--name", " s"], 2, ["--name: selection name"]),
    (["sample", "--by", "deita", "--size", "-1", "--into", "s"], 2, ["--size", "from 1"]),
    (["sample", "--by", "deita", "--size", "5", "--into", "s", "--max-rouge", "nan"], 2, ["--max-rouge"]),
    (["sample", "--by", "deita", "--size", "5", "--into", "s", "--max-rouge", "1.5"], 2, ["--max-rouge", "(0, 1]"]),
    (["sample", "--by", "deita", "--size", "5", "--into", "s", "--fields", "nope"], 2, ["fields: nope"]),
    (["sample", "--by", "deita", "--size", "5", "--into", "s", "--fields", ""], 2, ["--fields is empty"]),
    (["sample", "--by", "deita", "--size", "5", "--into", "s", "--fields", ","], 2, ["fields: none given"]),
    (["sample", "--by", "deita", "--size", "5", "--into", ""], 2, ["--into is empty"]),
    (["sample", "--by", "deita", "--into", "s"], 2, ["needs --size"]),
    (["diff", "nope", "s1"], 2, ["no snapshot 'nope'"]),
    (["diff", "99", "s1"], 2, ["no snapshot '99'"]),
    # --- jobs, worker, run, recipe ---------------------------------------------------------------------------------
    (["jobs", "show", "99999"], 2, ["no job 99999"]),
    (["jobs", "show", BIG], 2, ["too large"]),
    (["jobs", "cancel", "0"], 2, ["from 1"]),
    (["jobs", "retry", "99999"], 2, ["no job 99999"]),
    (["jobs", "pause", "1.5"], 2, ["not a whole number"]),
    (["jobs", "show", "1", "--failures", "-1"], 2, ["--failures", "from 0"]),
    (["worker", "--job", "99999", "--until-idle"], 2, ["no job 99999"]),
    (["worker", "--job", "2", "--until-idle"], 2, ["job 2 is cancelled: nothing to run"]),
    (["worker", "--lease-seconds", "nan", "--until-idle"], 2, ["--lease-seconds"]),
    (["worker", "--lease-seconds", "0", "--until-idle"], 2, ["--lease-seconds", "above 0"]),
    (["worker", "--max-inflight", "0", "--until-idle"], 2, ["--max-inflight", "from 1"]),
    (["run", "judge", "--dataset", "nope", "--endpoint", "local"], 2, ["no dataset named 'nope'"]),
    (["run", "judge", "--dataset", "d", "--endpoint", "nope"], 2, ["no endpoint named 'nope'"]),
    (["run", "judge", "--dataset", "d", "--pool", "nope"], 2, ["no pool named 'nope'"]),
    (["run", "judge", "--dataset", "d", "--endpoint", "local", "--pool", "p"], 2, ["not allowed with"]),
    (["run", "judge", "--dataset", "d", "--endpoint", "local", "--param", "nope=1"], 2, ["unknown param nope"]),
    (["run", "judge", "--dataset", "d", "--endpoint", "local", "--param", "x"], 2, ["expected key=value"]),
    (["run", "generate", "--dataset", "d", "--endpoint", "local", "--param", "temperature=0.1", "--param",
      "temperature=0.9"], 2, ["--param temperature is given twice"]),
    (["run", "judge", "--dataset", "d", "--endpoint", "local", "--judge", "nope"], 2, ["nope"]),
    (["run", "generate", "--dataset", "d", "--endpoint", "local", "--into", ""], 2, ["--into is empty"]),
    (["run", "judge", "--dataset", "d", "--endpoint", "local", "--judge", ""], 2, ["--judge is empty"]),
    (["run", "judge", "--dataset", "d", "--endpoint", ""], 2, ["--endpoint is empty"]),
    (["run", "judge", "--dataset", "", "--endpoint", "local"], 2, ["--dataset is empty"]),
    (["run", "generate", "--dataset", "d", "--endpoint", "local", "--into", " x"], 2, ["--into"]),
    (["run", "judge", "--dataset", "d", "--endpoint", "local", "--filter", "nope=1"], 2, ["unknown filter key"]),
    (["run", "judge", "--dataset", "d", "--endpoint", "local", "--batch", "--batch-poll", "nan"], 2,
     ["--batch-poll"]),
    (["run", "judge", "--dataset", "d", "--endpoint", "local", "--batch", "--batch-poll", "-1"], 2,
     ["--batch-poll: give seconds between 0 and 3600"]),
    (["run", "judge", "--dataset", "d", "--endpoint", "local", "--batch-poll", "5"], 2, ["goes with --batch"]),
    (["run", "judge", "--dataset", "d", "--endpoint", "local", "--endpoint", "other"], 2,
     ["--endpoint is given twice"]),
    *[(["run", "generate", "--dataset", "d", "--endpoint", "local", "--param", p], 2, [why]) for p, why in [
        ("temperature=nan", "expected a finite float"), ("temperature=inf", "expected a finite float"),
        ("temperature=-1", "out of range"), ("top_p=1.5", "out of range"), ("max_tokens=0", "out of range"),
        ("max_tokens=-1", "out of range"), ("max_tokens=1.5", "expected int"),
        ("max_tokens=nan", "expected a finite int"), ("max_tokens=abc", "expected int"),
        ("max_tokens=1e3", "expected int"), ("max_tokens=0x10", "expected int"), ("max_tokens=1_000", "expected int"),
        ("max_tokens=2.0", "expected int"), ("max_tokens=" + BIG, "too large"), ("temperature=0x1", "expected float")]],
    (["recipe", "run", "evol", "--endpoint", "local", "--var", "input=d", "--var", "rounds=1e3"], 2,
     ["param rounds", "expected int"]),
    (["recipe", "run", "evol", "--endpoint", "local", "--var", "input=d", "--var", "rounds=" + BIG], 2,
     ["param rounds", "too large"]),
    (["recipe", "run", "evol", "--endpoint", "local", "--var", "input=d", "--var", "rounds=nan"], 2,
     ["param rounds", "expected int"]),
    (["run", "preference", "--dataset", "d", "--endpoint", "local", "--candidates-from", "nope"], 2,
     ["no dataset named 'nope'"]),
    (["run", "preference", "--dataset", "d", "--endpoint", "local", "--candidates-from", ","], 2,
     ["--candidates-from"]),
    (["run", "nope", "--dataset", "d", "--endpoint", "local"], 2, ["invalid choice"]),
    (["recipe", "run", "nope"], 2, ["no recipe 'nope'"]),
    (["recipe", "run", "F"], 2, ["no such recipe file"]),
    (["recipe", "run", "F/r_empty.toml"], 2, ["no [[step]] tables"]),
    (["recipe", "run", "F/r_bad.toml"], 2, ["r_bad.toml", "line 1"]),
    (["recipe", "run", "F/r_latin.toml"], 2, ["r_latin.toml, line 1", "not UTF-8"]),
    (["recipe", "run", "F/r_shape.toml"], 2, ["unknown key 'steps'"]),
    (["recipe", "run", "evol", "--var", "x"], 2, ["expected NAME=VALUE"]),
    (["recipe", "run", "evol", "--var", "rounds=1", "--var", "rounds=2"], 2, ["--var rounds is given twice"]),
    (["recipe", "run", "evol", "--var", "nope=1", "--endpoint", "local"], 2, ["not a variable of this recipe"]),
    (["recipe", "run", "evol", "--endpoint", "local", "--batch-poll", "nan"], 2, ["--batch-poll"]),
    (["recipe", "show", "99999"], 2, ["no recipe 99999"]),
    (["recipe", "cancel", "-1"], 2, ["from 1"]),
    (["recipe", "show", BIG], 2, ["too large"]),
    # --- templates, spotcheck, agreement, keep ----------------------------------------------------------------------
    (["templates", "show", "nope"], 2, ["no template named 'nope'"]),
    (["templates", "show", "../../etc/passwd"], 2, ["bad template name"]),
    (["templates", "copy", "nope"], 2, ["no packaged template named 'nope'"]),
    (["templates", "copy", "judge"], 2, ["already exists", "--force"]),
    (["templates", "show", ESC_NAME], 2, ["template name"]),
    (["recipe", "run", ESC_NAME], 2, ["no recipe"]),
    (["templates", "parse", "nope"], 2, ["no task uses a template named 'nope'"]),
    (["templates", "parse", "judge", "F/missing"], 2, ["missing", "No such file"]),
    (["templates", "parse", "judge", "F"], 2, ["Is a directory"]),
    (["templates", "parse", "judge", "F/reply_latin.txt"], 2, ["reply_latin.txt", "not UTF-8"]),
    *[(["spotcheck", "--dataset", "d", "--rubric", "judge", "--fraction", v], 2, ["--fraction"])
      for v in ("nan", "0", "-1", "inf", "1.5", "10%")],
    (["spotcheck", "--dataset", "d", "--rubric", "judge", "--seed", "1e3"], 2, ["--seed", "not a whole number"]),
    (["spotcheck", "--dataset", "nope", "--rubric", "judge"], 2, ["no dataset named 'nope'"]),
    (["agreement", "--dataset", "d", "--rubric", "judge", "--threshold", "nan"], 2, ["--threshold", "finite"]),
    (["agreement", "--dataset", "d", "--rubric", "judge", "--round", "-1"], 2, ["round '-1'"]),
    (["agreement", "--dataset", "d", "--rubric", "judge", "--round", "x"], 2, ["round 'x'"]),
    (["agreement", "--dataset", "nope", "--rubric", "judge"], 2, ["no dataset named 'nope'"]),
    *[(["keep", "--dataset", "d", "--ids-from", f"F/{name}", "--reason", "r"], 1, [name, *why]) for name, why in [
        ("k_unknown.jsonl", ["line 1, field 'sample_id'", "no sample with id 99999"]),
        ("k_str.jsonl", ["line 1, field 'sample_id'", "'1' is not a sample id"]),
        ("k_nan.jsonl", ["line 1", "not valid JSON"]), ("k_float.jsonl", ["1.0 is not a sample id"]),
        ("k_bool.jsonl", ["True is not a sample id"]), ("k_list.jsonl", ["a JSON object per line"]),
        ("k_neg.jsonl", ["line 1, field 'sample_id'"]), ("k_huge.jsonl", ["line 1, field 'sample_id'"]),
        ("k_latin.jsonl", ["k_latin.jsonl"]), ("missing", ["no such file"])]],
    (["keep", "--dataset", "d", "--ids-from", "F/k_unknown.jsonl", "--reason", ""], 2, ["--reason is empty"]),
    (["review", "--dataset", "d", "--selection", ""], 2, ["--selection is empty"]),
    (["stats", "--dataset", ""], 2, ["--dataset is empty"]),
    (["keep", "--dataset", "d", "--ids-from", "F/k_unknown.jsonl", "--reason", "r", "--reason", "s"], 2,
     ["--reason is given twice"]),
    # --- the command line itself ---------------------------------------------------------------------------------
    (["nope"], 2, ["invalid choice"]),
    (["datasets", "--bogus"], 2, ["unrecognized arguments: --bogus"]),
    (["decide", "--dataset", "d", "--ids", "1"], 2, ["one of the arguments --accept --reject --reset is required"]),
]


def _argv(argv: list[str], world) -> list[str]:
    def one(a: str) -> str:
        if a == "F" or a.startswith("F/"):
            return str(world["f"]) + a[1:]
        if a.startswith("R/"):
            return str(world["root"]) + a[1:]
        return a
    return [one(a) for a in argv]


def _check(argv, code, why, world) -> str | None:
    """What is wrong with how the CLI took this input (None: right)."""
    db, cfg = world["db"], world["cfg"]
    full = _argv(argv, world)
    if "--db" not in full:
        full += ["--db", str(db)]
    if "--config" not in full:
        full += ["--config", str(cfg)]
    got, out, err = run_cli(*full)
    lines = [x for x in err.splitlines() if x.strip()]
    errors = [x for x in lines if x.startswith("error: ")]
    problems = []
    if got != code:
        problems.append(f"exit {got}, not {code}")
    if "Traceback" in err or "unexpected " in err.lower().replace("unexpected character", ""):
        problems.append("a traceback or an unexpected error")
    if forbidden((out + err).encode()) or "\x1b" in out + err or "\x07" in out + err:
        problems.append("a control sequence reached the output")
    if code:
        # one error line; argparse's usage lines may precede it
        others = [x for x in lines if not x.startswith("error: ") and not x.startswith("usage: ")
                  and not x.startswith(" ")]
        if len(errors) != 1 or others:
            problems.append(f"{len(errors)} error lines and {len(others)} other lines")
        missing = [w for w in why if w not in (errors[0] if errors else "")]
        if missing:
            problems.append(f"the error does not say {missing}")
    return f"{argv}: {'; '.join(problems)}\n    stderr: {err[-400:]!r}" if problems else None


def test_hostile_arguments_and_files(world):
    before = (digest(world["db"]), digest(world["cfg"]))
    failures = []
    for argv, code, why in CASES:
        problem = _check(argv, code, why, world)
        after = (digest(world["db"]), digest(world["cfg"]))
        if after != before:
            problem = (problem or f"{argv}") + "\n    the store or the config changed"
            before = after
        if problem:
            failures.append(problem)
    assert not failures, f"{len(failures)} of {len(CASES)} cases:\n" + "\n".join(failures)
    assert not (world["root"] / "x.jsonl").exists() and not (world["root"] / "xdir").exists()


def test_the_table_covers_every_command():
    from workbench.cli import build_parser
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    covered = {argv[0] for argv, _, _ in CASES}
    assert set(sub.choices) - covered - {"index", "snapshots"} == set()    # those two take no input to refuse


def test_almost_right_inputs_work(tmp_path):
    """The near misses of the table that are right: a BOM and CRLF ids file, spaces around --ids, a whole-number
    float for a float option, the same URL serving another model in a pool, another path on one host."""
    db, cfg = tmp_path / "s.db", tmp_path / "c.toml"
    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps({"instruction": f"q {i}", "output": f"a {i}"}) + "\n" for i in range(4)))

    def run(*argv):
        return run_cli(*argv, "--db", str(db), "--config", str(cfg))
    from workbench import importer
    from workbench.store import open_store
    conn = open_store(db)
    importer.import_file(conn, good, dataset="d")
    conn.close()
    ids = tmp_path / "ids.txt"
    ids.write_bytes(b"\xef\xbb\xbf1\r\n\r\n 2 \r\n1\r\n")                 # BOM, CRLF, spaces, an id twice
    code, out, err = run("decide", "--dataset", "d", "--ids-from", str(ids), "--accept")
    assert code == 0 and "accepted 2 samples" in out, err
    code, out, err = run("decide", "--dataset", "d", "--ids", " 3 , 4", "--reject", "--ids-from", str(ids))
    assert code == 0 and "rejected 4 samples" in out, err
    for argv in (["endpoints", "add", "a", "--base-url", "http://h:8000/v1", "--model", "m", "--timeout", "1e3",
                  "--cost-in", "0", "--max-concurrency", "+8"],
                 ["endpoints", "add", "b", "--base-url", "http://H:8000/v1/", "--model", "other-model"],
                 ["endpoints", "add", "c", "--base-url", "http://h:8000/v2", "--model", "m"],
                 ["endpoints", "add", "d", "--base-url", "https://h/v1", "--model", "m"],
                 ["pools", "add", "p", "--endpoint", "a", "--endpoint", "b", "--endpoint", "c", "--endpoint", "d"],
                 ["run", "generate", "--dataset", "d", "--endpoint", "a", "--param", "temperature=0",
                  "--param", "max_tokens=1", "--param", "top_p=1"]):
        code, out, err = run(*argv)
        assert code == 0, (argv, err)
    eps = json.loads(run("endpoints", "list", "--json")[1])
    assert [p["endpoints"] for p in eps["pools"]] == [["a", "b", "c", "d"]]
    assert eps["endpoints"][0]["max_concurrency"] == 8


@pytest.fixture
def read_only_store(tmp_path):
    """A store on a tmpfs remounted read-only (root in this sandbox); skipped where mounting is not allowed."""
    import shutil
    import subprocess
    from workbench import importer
    from workbench.store import open_store
    src = tmp_path / "s.db"
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"instruction": "q", "output": "a"}) + "\n")
    conn = open_store(src)
    importer.import_file(conn, good, dataset="d")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    mnt = tmp_path / "ro"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        shutil.copy(src, mnt / "s.db")
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        yield mnt / "s.db"
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_read_only_store_is_said_to_be_read_only(read_only_store, tmp_path):
    before = read_only_store.read_bytes()
    good = tmp_path / "more.jsonl"
    good.write_text(json.dumps({"instruction": "q2", "output": "a2"}) + "\n")
    for argv in (["datasets"], ["decide", "--dataset", "d", "--ids", "1", "--accept"], ["import", str(good)],
                 ["stats"], ["datasets", "--db", str(read_only_store.parent / "new.db")]):
        if "--db" not in argv:
            argv = [*argv, "--db", str(read_only_store)]
        code, out, err = run_cli(*argv)
        assert code == 1 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, (argv, err)
        assert "read-only" in err.lower() and "Traceback" not in err, (argv, err)
    assert read_only_store.read_bytes() == before


def test_an_export_to_a_terminal_carries_no_control_sequence(tmp_path):
    """`workbench export - --format F` with stdout on a terminal: the rows' hostile text (ESC, 8-bit CSI, bidi)
    is written as JSON escapes, and a binary export (Parquet, gzip) is refused, the store unchanged. Through a pipe
    the bytes stay exact (tests/test_export_safety.py)."""
    from hostile import NAME, TEXT, run_in_pty
    from workbench import importer
    from workbench.store import open_store
    db = Path(os.environ["WORKBENCH_DB"])
    data = tmp_path / "hostile.jsonl"      # imported here, not by the CLI: its background indexer would race the digest
    data.write_text("".join(json.dumps({"instruction": f"{TEXT} {i}", "response": f"answer {TEXT}"}) + "\n"
                            for i in range(3)))
    conn = open_store(db)
    importer.import_file(conn, data, dataset=NAME)
    conn.close()
    raw = run_in_pty(["export", "-", "--format", "alpaca"])
    assert forbidden(raw) == [] and b"\x1b" not in raw and b"\\u001b]52;c;SE9TVElMRQ==" in raw, raw[:400]
    rows = [json.loads(x) for x in raw.decode().splitlines() if x.startswith("{")]
    assert len(rows) == 3 and OSC52 in rows[0]["instruction"]          # the same JSON values
    before = digest(db)
    for argv in (["export", "-", "--format", "parquet"], ["export", "/dev/stdout", "--format", "parquet"]):
        raw = run_in_pty(argv)
        assert b"a terminal; this export is binary (Parquet)" in raw and forbidden(raw) == [], raw[:400]
        assert digest(db) == before


@pytest.mark.parametrize("argv, code", [
    (["decide", "--dataset", "d", "--ids-from", "F/ids_unknown.txt", "--accept"], 1),
    (["decide", "--dataset", "d", "--ids", "1", "--ids", "2", "--accept"], 2),
    (["samples", "--dataset", "d", "--limit", "1e3"], 2),
    (["samples", "--dataset", "d", "--filter", "status=nope"], 2),
    (["endpoints", "list", "--config", "F/dup_pool.toml"], 1),
    (["export", "R/x.jsonl", "--format", "alpaca", "--selection", ""], 2),
    (["keep", "--dataset", "d", "--ids-from", "F/k_huge.jsonl", "--reason", "r"], 1),
])
def test_json_errors_carry_the_same_line(world, argv, code):
    """With --json the refusal is also {"error", "exit"} on stdout: the same text as the stderr line."""
    full = _argv(argv, world) + ["--json", "--db", str(world["db"])]
    if "--config" not in full:
        full += ["--config", str(world["cfg"])]
    got, out, err = run_cli(*full)
    line = next(x for x in err.splitlines() if x.startswith("error: "))
    assert got == code and json.loads(out) == {"error": line[len("error: "):], "exit": code}, (out, err)
