"""`workbench` command line. Each area registers its subcommands from its own module (COMMAND_MODULES).

A handler takes the parsed args and returns an exit code; it raises CliError for a user-facing failure: printed
as `error: ...` (with --json: {"error": ..., "exit": N} on stdout), exit 2 for usage (CliError) and 1 for bad
data (DataError); see EXIT_* in common.py and the table in the README. With no subcommand the TUI starts.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sqlite3
import sys
import traceback

from ..safe_text import SafeStream, label
from ..store import SchemaTooNew, StoreLocationError, resolve_db_path
from .common import (EXIT_DATA, CliError, CliParser, DataError, add_global_options,  # noqa: F401 (re-exported)
                     common_parser, oserror_text, print_json)

# Modules that define `register(subparsers, common)`; add yours here.
COMMAND_MODULES = [
    "workbench.cli.data",
    "workbench.cli.templates",
    "workbench.cli.tui",
    "workbench.cli.endpoints",
    "workbench.cli.jobs",
    "workbench.cli.curate",
    "workbench.cli.recipe",
    "workbench.cli.decisions",
    "workbench.cli.shards",
]


def top_parser(**kw) -> argparse.ArgumentParser:
    parser = CliParser(prog="workbench", description="Curation Workbench: build instruction and "
                       "preference datasets from the terminal. With no command, opens the TUI.", **kw)
    add_global_options(parser)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = top_parser()
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    common = common_parser()
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub, common)
    return parser


def _report(e: CliError, want_json: bool) -> int:
    """`error: ...` on stderr; with --json also {"error", "exit"} on stdout, where a script reads the result."""
    if want_json:
        print_json({"error": str(e), "exit": e.code})   # escaped JSON
    err = SafeStream(sys.stderr)                        # messages quote names and data
    if getattr(e, "usage", None) and not want_json:
        err.write(e.usage)
    # one line, whatever a quoted name or file holds (a dataset named "a\nb" must not start a second line)
    print(f"error: {label(str(e))}", file=err)
    return e.code


def _run_sanitized(args) -> int:
    """Run a command with stdout and stderr sanitized: whatever it prints (names, data, model replies, error
    text), no control character reaches the terminal or the pipe (`--json` output is escaped JSON already)."""
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = SafeStream(out), SafeStream(err)
    try:
        return args.handler(args) or 0
    finally:
        sys.stdout, sys.stderr = out, err


def _store_error(path, e: Exception) -> str:
    """SQLite's message about the store, with what it usually means ("unable to open database file" says neither
    that the path is a directory nor that the disk is mounted read-only)."""
    text = f"{path}: {e}"
    if os.path.isdir(path):
        return f"{text} (it is a directory: give the store's file)"
    if "unable to open" in str(e) or "readonly" in str(e):
        parent = os.path.dirname(os.path.abspath(path))
        if not os.access(parent, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
            return f"{text} (the store or its directory is read-only: it needs to write both)"
    return text


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    want_json = "--json" in argv
    verbose = False
    top = None
    try:
        top, rest = top_parser(add_help=False).parse_known_args(argv)
        verbose = top.verbose or "-v" in rest or "--verbose" in rest
        if not rest:
            # no command: straight to the TUI, without importing every command's modules (openai etc.) first
            if top.config:
                os.environ["WORKBENCH_CONFIG"] = str(top.config)
            from ..app import run_app  # the only place the CLI pulls in Textual
            return run_app(db=top.db, config=top.config) or 0
        args = build_parser().parse_args(argv)  # `rest` holds a command (or something argparse will refuse)
        if getattr(args, "config", None):
            # one config for everything this process does (template overrides, workers it starts), not only
            # for the code that is handed args.config
            os.environ["WORKBENCH_CONFIG"] = str(args.config)
        if args.verbose:   # (libraries that could log request headers stay at INFO: no key in the log)
            logging.basicConfig(level=logging.DEBUG, stream=sys.stderr,
                                format="%(asctime)s %(name)s %(levelname)s %(message)s")
            for noisy in ("httpx", "httpcore", "openai", "asyncio", "aiohttp"):
                logging.getLogger(noisy).setLevel(logging.INFO)
        if args.quiet and not getattr(args, "json", False):
            with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
                return _run_sanitized(args)
        return _run_sanitized(args)
    except CliError as e:
        return _report(e, want_json)
    except StoreLocationError as e:   # --db / WORKBENCH_DB names a place a store cannot be: usage
        return _report(CliError(str(e)), want_json)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `workbench ... | head`: the reader left; don't fail again flushing at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except SchemaTooNew as e:
        return _report(DataError(str(e)), want_json)
    except sqlite3.DatabaseError as e:  # a full disk, a file that is not a store: the transaction was rolled back
        return _report(DataError(_store_error(resolve_db_path(getattr(top, 'db', None)), e)), want_json)
    except OSError as e:  # an unreadable file, a full disk, a name too long: said as it is, no traceback
        return _report(DataError(oserror_text(e)), want_json)
    except Exception as e:   # a bug, not the user's input: say so in one line; --verbose shows where
        if verbose:
            traceback.print_exc(file=SafeStream(sys.stderr))
        return _report(DataError(f"unexpected {type(e).__name__}: {e}" + ("" if verbose else
                                 " (run again with --verbose for the traceback)")), want_json)

