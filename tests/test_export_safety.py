"""Export never destroys a file: the store (also through links), existing files without --force, /dev/stdout and
pipes (written in place), and on any write error (full disk, read-only directory, name too long, a file where a
directory should be) nothing is left behind, no snapshot is recorded and the store is exactly as it was."""
import contextlib
import errno
import json
import os
import subprocess
import threading

import pytest

from workbench import safe_output
from workbench.store import open_store

from conftest import PYTHON, ROOT

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


DERIVED = ('INSERT INTO "samples_fts', 'INSERT INTO "sample_stats"', 'INSERT INTO "meta"')


def store_dump(db_path) -> str:
    """Every row of the store, except the search index and Balance counts that `import`'s background indexer
    builds on its own schedule (derived from the samples, which are compared)."""
    conn = open_store(db_path)
    try:
        return "\n".join(line for line in conn.iterdump() if not line.startswith(DERIVED))
    finally:
        conn.close()


@pytest.fixture
def seeded(cli, shared_data, db_path):
    assert cli("import", str(shared_data / "hh-rlhf-harmless-test" / "harmless-base-test.jsonl"), "--dataset", "hh")[0] == 0
    return db_path


def snapshots(db_path) -> int:
    return open_store(db_path).execute("SELECT count(*) FROM snapshots").fetchone()[0]


@contextlib.contextmanager
def tmpfs(path, size="64k", ro=False):
    """A small real file system (root only): a full disk is a full disk, not a mock."""
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if ro else "")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)


# --- the store ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", ["", "-wal", "-shm", "-journal"])
def test_the_store_and_its_companions_are_refused_even_with_force(cli, seeded, suffix):
    before = store_dump(seeded)
    target = str(seeded) + suffix
    for extra in ([], ["--force"]):
        code, out, err = cli("export", target, "--format", "messages", *extra)
        assert code == 2 and "is the workbench store" in err, err
    assert store_dump(seeded) == before and snapshots(seeded) == 0


def test_links_to_the_store_are_refused(cli, seeded, tmp_path):
    before = store_dump(seeded)
    (tmp_path / "sym.jsonl").symlink_to(seeded)
    os.link(seeded, tmp_path / "hard.jsonl")
    for name in ("sym.jsonl", "hard.jsonl"):
        code, out, err = cli("export", str(tmp_path / name), "--format", "messages", "--force")
        assert code == 2 and "is the workbench store" in err, err
    assert store_dump(seeded) == before
    assert (tmp_path / "sym.jsonl").is_symlink()


# --- existing files -------------------------------------------------------------------------------------------

def test_an_existing_file_needs_force_and_is_then_replaced_whole(cli, seeded, tmp_path):
    out = tmp_path / "train.jsonl"
    out.write_text("precious\n")
    code, text, err = cli("export", str(out), "--format", "messages")
    assert code == 2 and "exists; pass --force" in err
    assert out.read_text() == "precious\n" and snapshots(seeded) == 0
    code, text, err = cli("export", str(out), "--format", "messages", "--force")
    assert code == 0, err
    assert len(out.read_text().splitlines()) == 2308
    assert not list(tmp_path.glob(".wb-tmp-*"))


def test_an_existing_manifest_is_not_overwritten_without_force(cli, seeded, tmp_path):
    (tmp_path / ".train.jsonl.manifest.json").write_text("mine")
    code, text, err = cli("export", str(tmp_path / "train.jsonl"), "--format", "messages")
    assert code == 2 and ".train.jsonl.manifest.json: exists" in err
    assert not (tmp_path / "train.jsonl").exists() and (tmp_path / ".train.jsonl.manifest.json").read_text() == "mine"


def test_a_symlink_stays_a_symlink_and_its_target_is_replaced(cli, seeded, tmp_path):
    real = tmp_path / "real" / "data.jsonl"
    real.parent.mkdir()
    real.write_text("old\n")
    os.chmod(real, 0o640)
    link = tmp_path / "link.jsonl"
    link.symlink_to(real)
    code, text, err = cli("export", str(link), "--format", "messages", "--force")
    assert code == 0, err
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert len(real.read_text().splitlines()) == 2308
    assert (real.stat().st_mode & 0o777) == 0o640   # a replaced file keeps its permissions


def test_a_non_empty_directory_needs_force_and_others_files_stay(cli, seeded, tmp_path):
    d = tmp_path / "ds"
    d.mkdir()
    (d / "notes.txt").write_text("mine")
    code, text, err = cli("export", str(d), "--format", "messages")
    assert code == 2 and "not empty" in err
    code, text, err = cli("export", str(d), "--format", "messages", "--force")
    assert code == 0, err
    assert (d / "notes.txt").read_text() == "mine" and (d / "data" / "train.jsonl").exists()


# --- streams: written in place, never replaced ----------------------------------------------------------------

def test_dash_writes_to_stdout(cli, seeded, tmp_path):
    code, out, err = cli("export", "-", "--format", "messages", "--dataset", "hh")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 2308 and json.loads(lines[0])["messages"][0]["role"] == "user"
    assert "exported 2,308 rows" in err      # the summary goes to stderr, the data alone to stdout
    assert snapshots(seeded) == 1 and not list(tmp_path.glob(".*manifest*"))


def _run(args, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([PYTHON, "-m", "workbench", *args], env=env, **kw)


def test_dev_stdout_to_a_pipe_is_written_in_place(seeded):
    r = _run(["--db", str(seeded), "export", "/dev/stdout", "--format", "messages"], capture_output=True)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 2308
    assert os.path.islink("/dev/stdout")


def test_dev_stdout_redirected_to_a_file_writes_into_that_file(seeded, tmp_path):
    out = tmp_path / "redirected.jsonl"
    with open(out, "wb") as f:
        inode = os.fstat(f.fileno()).st_ino
        r = _run(["--db", str(seeded), "export", "/dev/stdout", "--format", "messages", "--json"], stdout=f,
                 stderr=subprocess.PIPE)
    assert r.returncode == 0, r.stderr
    assert os.stat(out).st_ino == inode          # the same file, written through, not replaced
    assert len(out.read_text().splitlines()) == 2308
    assert os.path.islink("/dev/stdout")


def test_a_named_pipe_is_written_in_place(cli, seeded, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(open(fifo, "rb").read()))
    reader.start()
    code, out, err = cli("export", str(fifo), "--format", "trl-sft")
    reader.join(30)
    assert code == 0, err
    assert fifo.is_fifo()
    assert len(got[0].splitlines()) == json.loads(open_store(seeded).execute(
        "SELECT counts FROM snapshots").fetchone()[0])["rows"] > 0


def test_config_files_cannot_go_to_a_stream(cli, seeded):
    for fmt in ("llama-factory", "axolotl"):
        code, out, err = cli("export", "-", "--format", fmt)
        assert code == 2 and "not a stream" in err and out == ""


# --- write errors ---------------------------------------------------------------------------------------------

@pytest.mark.skipif(not IS_ROOT, reason="mounting a small tmpfs needs root")
def test_full_disk_leaves_nothing_and_records_nothing(cli, seeded, tmp_path):
    before = store_dump(seeded)
    with tmpfs(tmp_path / "small") as disk:
        (disk / "keep.jsonl").write_text("old\n")
        for target, extra in ((disk / "new.jsonl", []), (disk / "keep.jsonl", ["--force"]),
                              (disk / "new.jsonl.gz", []), (disk / "dir", [])):
            code, out, err = cli("export", str(target), "--format", "messages", *extra)
            assert code == 2 and "no space left on the device" in err, err
            assert "Traceback" not in err
            assert sorted(p.name for p in disk.iterdir()) == ["keep.jsonl"], list(disk.iterdir())
            assert (disk / "keep.jsonl").read_text() == "old\n"
    assert store_dump(seeded) == before and snapshots(seeded) == 0


@pytest.mark.skipif(not IS_ROOT, reason="mounting a small tmpfs needs root")
def test_disk_full_at_the_manifest_leaves_no_data_file(cli, shared_data, db_path, tmp_path):
    cli("import", str(shared_data / "self-instruct-seed" / "seed_tasks_alpaca.json"), "--dataset", "seed")
    before = store_dump(db_path)
    with tmpfs(tmp_path / "small", size="120k") as disk:   # the data (~75 kB) fits; data + manifest do not
        filler = disk / "filler"
        filler.write_bytes(b"x" * 40_000)
        code, out, err = cli("export", str(disk / "seed.jsonl"), "--format", "alpaca")
        assert code == 2 and "no space left" in err, (code, err)
        assert sorted(p.name for p in disk.iterdir()) == ["filler"]
    assert store_dump(db_path) == before and snapshots(db_path) == 0


def test_write_error_through_the_seam_leaves_nothing(cli, seeded, tmp_path, monkeypatch):
    """Any OSError while writing (here ENOSPC after 100 kB) is handled like a full disk, for every file an export
    writes: the data, then the manifest, then the dataset card."""
    before = store_dump(seeded)
    real_init = safe_output.HashingSink.__init__
    for fail_at_sink in (1, 2, 3):
        made = []

        def init(self, raw, _n=fail_at_sink):
            real_init(self, raw)
            made.append(self)
            if len(made) == _n:
                def write(b, _self=self):
                    if _self.bytes + len(b) > (100_000 if _n == 1 else 10):
                        raise OSError(errno.ENOSPC, "No space left on device")
                    return safe_output.HashingSink.write(_self, b)
                self.write = write
        monkeypatch.setattr(safe_output.HashingSink, "__init__", init)
        code, out, err = cli("export", str(tmp_path / "ds"), "--format", "messages")
        assert code == 2 and "no space left on the device" in err, (fail_at_sink, err)
        assert not (tmp_path / "ds").exists(), fail_at_sink
    assert store_dump(seeded) == before and snapshots(seeded) == 0


def test_read_only_directory(cli, seeded, tmp_path):
    before = store_dump(seeded)
    if IS_ROOT:   # root writes through mode bits: a read-only file system is the real thing
        ctx = tmpfs(tmp_path / "ro", ro=True)
    else:
        (tmp_path / "ro").mkdir()
        os.chmod(tmp_path / "ro", 0o555)
        ctx = contextlib.nullcontext(tmp_path / "ro")
    with ctx as ro:
        code, out, err = cli("export", str(ro / "x.jsonl"), "--format", "messages")
        assert code == 2 and ("read-only file system" in err or "permission denied" in err), err
        assert list(ro.iterdir()) == []
    assert store_dump(seeded) == before


def test_a_name_too_long(cli, seeded, tmp_path):
    out = tmp_path / ("n" * 300 + ".jsonl")
    code, text, err = cli("export", str(out), "--format", "messages")
    assert code == 2 and "file name too long" in err
    assert list(tmp_path.iterdir()) == [tmp_path / "store.db"] or all(
        p.name.startswith("store.db") or p.name == "home" for p in tmp_path.iterdir())
    # a name that fits exactly while the temp name would not
    out = tmp_path / ("m" * 249 + ".jsonl")
    code, text, err = cli("export", str(out), "--format", "messages")
    assert code == 2 and "file name too long" in err    # its manifest name (.NAME.manifest.json) is too long
    assert not out.exists()


def test_a_path_under_a_regular_file(cli, seeded, tmp_path):
    (tmp_path / "file.txt").write_text("x")
    code, text, err = cli("export", str(tmp_path / "file.txt" / "sub" / "out.jsonl"), "--format", "messages")
    assert code == 2 and "is a file, not a directory" in err
    assert (tmp_path / "file.txt").read_text() == "x"


def test_directories_made_for_a_failed_export_are_removed(cli, seeded, tmp_path):
    out = tmp_path / "a" / "b" / "c" / "out.jsonl"
    code, text, err = cli("export", str(out), "--format", "messages", "--status", "accepted")
    assert code == 2 and "no rows to export" in err
    assert not (tmp_path / "a").exists()


def test_no_temp_files_after_success_or_failure(cli, seeded, tmp_path):
    cli("export", str(tmp_path / "ok.jsonl"), "--format", "messages")
    cli("export", str(tmp_path / "bad.jsonl"), "--format", "messages", "--status", "accepted")
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".wb-tmp-")]


def test_a_file_that_appears_during_the_export_is_not_clobbered(cli, seeded, tmp_path, monkeypatch):
    """Another program creates the target between the existence check and the rename: the rename is a no-clobber
    hard link, so their file stays and the export fails cleanly."""
    from workbench import exporter
    out = tmp_path / "race.jsonl"
    real = exporter._write_json

    def write_then_race(w, rows, as_array):
        real(w, rows, as_array)
        out.write_text("theirs\n")
    monkeypatch.setattr(exporter, "_write_json", write_then_race)
    before = store_dump(seeded)
    code, text, err = cli("export", str(out), "--format", "messages")
    assert code == 2 and "appeared while exporting" in err
    assert out.read_text() == "theirs\n" and store_dump(seeded) == before
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("store.db")) == ["home", "race.jsonl"]


def test_a_failure_after_the_data_is_in_place_takes_it_back(cli, seeded, tmp_path, monkeypatch):
    """The manifest's name is taken at the last moment: the data file just put in place is removed again."""
    from workbench import safe_output as so
    out = tmp_path / "late.jsonl"
    real = so.Output.commit

    def commit(self):
        if self.final.name.endswith(".manifest.json"):
            self.final.write_text("theirs")
        return real(self)
    monkeypatch.setattr(so.Output, "commit", commit)
    code, text, err = cli("export", str(out), "--format", "messages")
    assert code == 2 and "appeared while exporting" in err
    assert not out.exists() and (tmp_path / ".late.jsonl.manifest.json").read_text() == "theirs"
    assert snapshots(seeded) == 0
