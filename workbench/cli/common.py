"""What every command module shares: the user-facing error, the options every subcommand takes, JSON output."""
from __future__ import annotations

import argparse
import json
import sys

from ..safe_text import json_safe


class CliError(Exception):
    """A failure the user can fix: printed without a traceback, exit status 2."""


def common_parser() -> argparse.ArgumentParser:
    """Options every subcommand accepts after its name (SUPPRESS keeps a top-level value from being overwritten)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--db", default=argparse.SUPPRESS, help="store file (default: $WORKBENCH_DB or the user data dir)")
    p.add_argument("--config", default=argparse.SUPPRESS,
                   help="config TOML (default: $WORKBENCH_CONFIG or the user config dir)")
    return p


def oserror_text(e: OSError) -> str:
    """One line: the file(s) and what the OS said (no errno tuple, no traceback)."""
    what = e.strerror or str(e) or type(e).__name__
    names = [str(n) for n in (e.filename, e.filename2) if n is not None]
    return f"{' -> '.join(names)}: {what}" if names else what


def print_json(obj) -> None:
    sys.stdout.write(json_safe(json.dumps(obj, ensure_ascii=False, indent=2)) + "\n")
