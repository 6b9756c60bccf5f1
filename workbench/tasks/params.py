"""Task parameters: declaration (Param), parsing of `--param k=v` values, and checking against a task's declaration."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from ..filters import parse_value  # noqa: F401  (re-exported)


class TaskError(ValueError):
    """A user-fixable problem with a task's parameters or inputs (the CLI prints it, exit 2)."""


@dataclass(frozen=True)
class Param:
    """One declared task parameter. The type comes from `type`, else from the default's type."""
    default: Any
    help: str = ""
    type: type | None = None
    choices: tuple | None = None

    @property
    def kind(self) -> type:
        return self.type or (type(self.default) if self.default is not None else str)


# the sampling parameters every OpenAI-compatible server reads: a value outside these is an error there, hours later
SAMPLING_BOUNDS = {"temperature": (0, None), "top_p": (0, 1), "max_tokens": (1, None)}


def coerce(name: str, spec: Param, value: Any) -> Any:
    kind = spec.kind
    if value is None:
        out = None
    elif kind is bool:
        if isinstance(value, str):
            value = parse_value(value)
        if not isinstance(value, bool):
            raise TaskError(f"param {name}: expected true/false, got {value!r}")
        out = value
    elif kind in (int, float):
        if isinstance(value, str):
            if kind is int and not re.fullmatch(r"\s*[+-]?[0-9]+\s*", value):     # '1e3', '0x10', '1_000', '2.0'
                raise TaskError(f"param {name}: expected int (whole number digits), got {value!r}")
            value = parse_value(value)
        if isinstance(value, float) and not math.isfinite(value):
            raise TaskError(f"param {name}: expected a finite {kind.__name__}, got {value!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and isinstance(value, float)):
            raise TaskError(f"param {name}: expected {kind.__name__}, got {value!r}")
        out = kind(value)
        if kind is int and abs(out) > (1 << 63) - 1:
            raise TaskError(f"param {name}: {value!r} is too large")
        lo, hi = SAMPLING_BOUNDS.get(name, (None, None))
        if (lo is not None and out < lo) or (hi is not None and out > hi):
            raise TaskError(f"param {name}: {out!r} is out of range ({lo} to {hi if hi is not None else 'any'})")
    elif kind is str:
        out = str(value)
    else:
        out = value
    if spec.choices and out not in spec.choices:
        raise TaskError(f"param {name}: {out!r} is not one of {', '.join(map(str, spec.choices))}")
    return out


def resolve_params(task_cls: type["Task"], given: dict[str, Any]) -> dict[str, Any]:
    """Declared defaults overlaid with the given values, each coerced to its declared type."""
    unknown = sorted(set(given) - set(task_cls.params))
    if unknown:
        valid = ", ".join(f"{k} (default {v.default!r})" for k, v in task_cls.params.items()) or "none"
        raise TaskError(f"unknown param {', '.join(unknown)} for task {task_cls.name}; valid params: {valid}")
    out = {}
    for k, spec in task_cls.params.items():
        out[k] = coerce(k, spec, given[k]) if k in given else spec.default
    return out


def params_help(task_cls: type["Task"]) -> str:
    lines = [f"  {k} = {v.default!r}" + (f"  ({v.help})" if v.help else "") for k, v in task_cls.params.items()]
    return "\n".join(lines) or "  (none)"
