"""`workbench` command line. Each area registers its subcommands from its own module (COMMAND_MODULES).

A handler takes the parsed args and returns an exit code; it raises CliError for a user-facing failure
(printed as `error: ...`, exit 2). With no subcommand the TUI starts.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sqlite3
import sys

from ..safe_text import SafeStream
from ..store import SchemaTooNew, StoreLocationError, resolve_db_path
from .common import CliError, common_parser, oserror_text, print_json  # noqa: F401  (re-exported)

# Modules that define `register(subparsers, common)`; add yours here.
COMMAND_MODULES = [
    "workbench.cli.data",
    "workbench.cli.templates",
    "workbench.cli.tui",
    "workbench.cli.llm",
    "workbench.cli.curate",
    "workbench.cli.decisions",
]


def top_parser(**kw) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="workbench", description="Curation Workbench: build instruction and "
                                     "preference datasets from the terminal. With no command, opens the TUI.", **kw)
    parser.add_argument("--db", default=None, help="store file (default: $WORKBENCH_DB or the user data dir)")
    parser.add_argument("--config", default=None, help="config TOML (default: $WORKBENCH_CONFIG or the user config dir)")
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = top_parser()
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    common = common_parser()
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub, common)
    return parser


def _run_sanitized(args) -> int:
    """Run a command with stdout and stderr sanitized: whatever it prints (names, data, model replies, error
    text), no control character reaches the terminal or the pipe (`--json` output is escaped JSON already)."""
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = SafeStream(out), SafeStream(err)
    try:
        return args.handler(args) or 0
    finally:
        sys.stdout, sys.stderr = out, err


def main(argv: list[str] | None = None) -> int:
    top, rest = top_parser(add_help=False).parse_known_args(argv)
    try:
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
        return _run_sanitized(args)
    except CliError as e:
        print(f"error: {e}", file=SafeStream(sys.stderr))    # messages quote names and data
        return 2
    except StoreLocationError as e:
        print(f"error: {e}", file=SafeStream(sys.stderr))
        return 2
    except BrokenPipeError:  # `workbench ... | head`: the reader left; don't fail again flushing at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except SchemaTooNew as e:
        print(f"error: {e}", file=SafeStream(sys.stderr))
        return 2
    except sqlite3.DatabaseError as e:  # a full disk, a file that is not a store: the transaction was rolled back
        print(f"error: {resolve_db_path(top.db)}: {e}", file=SafeStream(sys.stderr))
        return 2
    except OSError as e:  # an unreadable file, a full disk, a name too long: said as it is, no traceback
        print(f"error: {oserror_text(e)}", file=SafeStream(sys.stderr))
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

