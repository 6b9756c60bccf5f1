"""What every command module shares: the user-facing error, the options every subcommand takes, JSON output."""
from __future__ import annotations

import argparse
import json
import sys

from .. import endpoints as E
from ..config import ConfigError, load_config, resolve_config_path
from ..filters import FilterError, parse_value
from ..recovery import open_recovered
from ..safe_text import json_safe
from ..tasks import TaskError
from . import numbers


EXIT_DATA = 1    # what the command read is bad: a file (import, target, config, template), the store, an endpoint
EXIT_USAGE = 2   # the command line is wrong: command, option, value, a combination, a name that does not exist


class CliError(Exception):
    """A failure the user can fix: printed without a traceback (as JSON with --json), exit status `code`."""
    code = EXIT_USAGE


class DataError(CliError):
    """The command line was right; what it pointed at (a file, the store, an endpoint) was not: exit 1."""
    code = EXIT_DATA


class _StoreOnce(argparse._StoreAction):
    """An option that takes one value refuses a second: `--ids 1 --ids 2` silently deciding only 2, or
    `--mode each --mode spread`, is a command line that says two things (repeatable options use action=append).
    An empty (or blank) value is refused too: it is an unset variable far more often than a meaning."""

    def __call__(self, parser, namespace, values, option_string=None):
        seen = namespace.__dict__.setdefault("_given", set())
        if option_string and self.dest in seen:
            parser.error(f"{option_string} is given twice ({getattr(namespace, self.dest)!r} and {values!r}): "
                         f"give it once")
        if option_string and isinstance(values, str) and not values.strip():
            # `--selection ""` exported everything, `--judge ""` meant no judge: an unset variable in a script
            parser.error(f"{option_string} is empty: give a value, or leave the option out")
        seen.add(self.dest)
        super().__call__(parser, namespace, values, option_string)


class CliParser(argparse.ArgumentParser):
    """argparse whose usage errors reach main() as CliError, so that --json can report them as JSON too. Numbers
    are read strictly (cli/numbers.py) and an option that takes one value may be given once."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.register("action", None, _StoreOnce)
        self.register("action", "store", _StoreOnce)
        self.register("type", int, numbers.whole)
        self.register("type", float, numbers.finite)

    def error(self, message: str):
        e = CliError(f"{self.prog}: {message}")
        e.usage = self.format_usage()
        raise e


def common_parser() -> argparse.ArgumentParser:
    """Options every subcommand accepts after its name (SUPPRESS keeps a top-level value from being overwritten)."""
    p = CliParser(add_help=False)
    add_global_options(p, argparse.SUPPRESS)
    return p


def oserror_text(e: OSError) -> str:
    """One line: the file(s) and what the OS said (no errno tuple, no traceback)."""
    what = e.strerror or str(e) or type(e).__name__
    names = [str(n) for n in (e.filename, e.filename2) if n is not None]
    return f"{' -> '.join(names)}: {what}" if names else what


def add_global_options(p: argparse.ArgumentParser, default=None) -> None:
    """--db, --config, --quiet, --verbose: before the command or after it."""
    p.add_argument("--db", default=default, help="store file (default: $WORKBENCH_DB or the user data dir)")
    p.add_argument("--config", default=default,
                   help="config TOML (default: $WORKBENCH_CONFIG or the user config dir)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("-q", "--quiet", action="store_true", default=default if default is not None else False,
                   help="print only errors and the JSON of --json (no progress, no summaries)")
    g.add_argument("-v", "--verbose", action="store_true", default=default if default is not None else False,
                   help="log what the command does to stderr, and the traceback of an unexpected error")


def print_json(obj) -> None:
    sys.stdout.write(json_safe(json.dumps(obj, ensure_ascii=False, indent=2)) + "\n")


# --- what the LLM commands share -------------------------------------------------------------------------

def load_cli_config(args) -> dict:
    try:
        return load_config(getattr(args, "config", None))
    except ConfigError as e:
        raise DataError(str(e)) from None


def open_cli_store(args):
    return open_recovered(getattr(args, "db", None))   # a killed shard import, undo or normalize: taken back


def parse_kv(pairs: list[str] | None, what: str) -> dict:
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise CliError(f"{what} {pair!r}: expected key=value")
        k, v = pair.split("=", 1)
        if k.strip() in out:      # the last one winning silently would hide a typo in a long command line
            raise CliError(f"{what} {k.strip()} is given twice: give it once")
        out[k.strip()] = parse_value(v)
    return out


def guard(fn):
    """User-fixable errors from the core -> CliError (exit 2, no traceback)."""
    def wrapped(args):
        try:
            return fn(args)
        except ConfigError as e:
            raise DataError(str(e)) from None
        except E.EndpointError as e:
            text = str(e)
            if text.startswith("config"):    # the config file is bad, not the command line: name the file, exit 1
                raise DataError(f"{resolve_config_path(getattr(args, 'config', None))}{text[len('config'):]}") \
                    from None
            raise CliError(text) from None
        except (TaskError, FilterError) as e:
            raise CliError(str(e)) from None
    return wrapped
