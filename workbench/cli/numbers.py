"""The values of numeric options, read strictly: a careless or hostile command line gets a usage error naming the
option, never a silent NaN, an infinite timeout, an id SQLite cannot hold, or a `1e3` read as something else.

CliParser registers `whole` for `type=int` and `finite` for `type=float`, so every numeric option is at least
that; options with a range use the factories below (the message says the range).
"""
from __future__ import annotations

import argparse
import math
import re

INT64_MAX = (1 << 63) - 1        # the largest integer SQLite stores (an id, a count)
_WHOLE = re.compile(r"[+-]?[0-9]+")


def whole(text: str) -> int:
    """A whole number in ASCII digits ('1e3', '0x10', '1_000', '١٢' and '1.0' are refused), within SQLite's range."""
    t = text.strip()
    if not _WHOLE.fullmatch(t):
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    n = int(t)
    if abs(n) > INT64_MAX:
        raise argparse.ArgumentTypeError(f"{text!r} is too large (at most {INT64_MAX})")
    return n


def finite(text: str) -> float:
    """A finite number ('1e3' and '0.5' are fine; nan, inf and '0x10' are refused)."""
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(x):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return x


def at_least(lo: int, what: str = "a whole number"):
    def parse(text: str) -> int:
        n = whole(text)
        if n < lo:
            raise argparse.ArgumentTypeError(f"{text!r}: {what} from {lo}")
        return n
    parse.__name__ = f"whole>={lo}"
    return parse


def number_at_least(lo: float, *, above: bool = False):
    """A finite number >= lo (> lo with `above`)."""
    def parse(text: str) -> float:
        x = finite(text)
        if x < lo or (above and x == lo):
            raise argparse.ArgumentTypeError(f"{text!r}: a number {'above' if above else 'from'} {lo:g}")
        return x
    parse.__name__ = "number"
    return parse


def share(text: str) -> float:
    """A share in (0, 1]."""
    x = finite(text)
    if not 0 < x <= 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a share in (0, 1]")
    return x


sample_id = at_least(1, "an id is a whole number")
