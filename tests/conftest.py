"""Shared fixtures. Every test runs against its own store and config in a temp dir; nothing touches ~."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# shared/ sits beside the checkout (CI clones main next to it); WORKBENCH_SHARED_DATA points elsewhere
SHARED_DATA = Path(os.environ.get("WORKBENCH_SHARED_DATA") or ROOT.parent / "shared" / "data").resolve()
if not SHARED_DATA.is_dir() and Path("/work/shared/data").is_dir():
    SHARED_DATA = Path("/work/shared/data")
TEST_DATA = ROOT / "tests" / "data"


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """Point the store, the config and platformdirs at a fresh temp dir for each test."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / "state"))
    monkeypatch.setenv("WORKBENCH_DB", str(tmp_path / "store.db"))
    monkeypatch.setenv("WORKBENCH_CONFIG", str(tmp_path / "config.toml"))
    yield


@pytest.fixture
def db_path(tmp_path) -> Path:
    return tmp_path / "store.db"


@pytest.fixture
def conn(db_path):
    from workbench.store import open_store
    c = open_store(db_path)
    yield c
    c.close()


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


def run_cli(*argv: str) -> tuple[int, str, str]:
    """Run the real CLI entry point in-process; returns (exit code, stdout, stderr)."""
    import contextlib
    import io
    from workbench.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as e:  # argparse usage errors
            code = e.code if isinstance(e.code, int) else 2
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def cli():
    return run_cli


PYTHON = sys.executable
