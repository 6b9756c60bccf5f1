"""`workbench templates list|show|copy|parse`: the prompt templates the tasks use, the user's overrides of them,
and how a task reads a model's reply to one."""
from __future__ import annotations

import dataclasses
import json
import re
import shutil
import sys

from .. import templating
from ..config import ConfigError, load_config
from ..parsing import ParseError
from ..tasks import TaskContext, TaskError, load_tasks, resolve_params
from .common import CliError, DataError, print_json


def register(sub, common):
    p = sub.add_parser("templates", parents=[common], help="list, show or copy for editing the prompt templates")
    tsub = p.add_subparsers(dest="templates_command", metavar="ACTION", required=True)

    ls = tsub.add_parser("list", parents=[common], help="every template with its version and where it comes from")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=cmd_list)

    show = tsub.add_parser("show", parents=[common], help="print a template as the tasks will use it")
    show.add_argument("name")
    show.set_defaults(handler=cmd_show)

    cp = tsub.add_parser("copy", parents=[common],
                         help="copy a packaged template into <config dir>/templates/ so you can edit it")
    cp.add_argument("name")
    cp.add_argument("--force", action="store_true", help="overwrite an existing override")
    cp.set_defaults(handler=cmd_copy)

    rd = tsub.add_parser("parse", parents=[common],
                         help="read a model's reply the way the task using template NAME reads it (exit 1: unreadable)")
    rd.add_argument("name")
    rd.add_argument("file", nargs="?", default="-", help="the reply (a file; '-' or nothing: stdin)")
    rd.add_argument("--json", action="store_true", help="print one JSON object")
    rd.set_defaults(handler=cmd_parse)


def _load(name, args):
    config = getattr(args, "config", None)
    known = name in templating.package_names() or (templating.override_dir(config) / name).is_file()
    try:
        return templating.load(name, config)
    except templating.TemplateError as e:   # a name that does not exist is usage; a broken template file, data
        raise (DataError if known else CliError)(str(e)) from None


def cmd_list(args) -> int:
    try:
        items = templating.list_templates(getattr(args, "config", None))
    except templating.TemplateError as e:
        raise DataError(str(e)) from None
    if args.json:
        print_json([{"name": t.name, "version": t.version, "source": t.source, "about": t.about,
                     "variables": sorted(t.variables)} for t in items])
        return 0
    width = max((len(t.name) for t in items), default=4)
    for t in items:
        where = "" if t.source == "package" else f"  [override: {t.source}]"
        print(f"{t.name:<{width}}  v{t.version}  {t.about}{where}")
    return 0


def cmd_show(args) -> int:
    t = _load(args.name, args)
    sys.stdout.write(f"# {t.name} v{t.version} ({'packaged' if t.source == 'package' else t.source})\n")
    sys.stdout.write(t.text if t.text.endswith("\n") else t.text + "\n")
    return 0


def cmd_copy(args) -> int:
    if args.name not in templating.package_names():
        raise CliError(f"no packaged template named {args.name!r} (known: {', '.join(templating.package_names())})")
    dest_dir = templating.override_dir(getattr(args, "config", None))
    dest = dest_dir / args.name
    if dest.exists() and not args.force:
        raise CliError(f"{dest} already exists (use --force to overwrite it)")
    dest_dir.mkdir(parents=True, exist_ok=True)
    with (templating._package_dir() / args.name).open("rb") as src, open(dest, "wb") as out:
        shutil.copyfileobj(src, out)
    print(dest)
    return 0


# --- parse: a reply read by the task's own reader ------------------------------------------------------------

_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def _safe(text: str) -> str:
    """Model text for the terminal: control and bidi characters shown as <U+XXXX>, never interpreted."""
    return _UNSAFE.sub(lambda m: f"<U+{ord(m.group()):04X}>", text)


def reader_for(name: str, config: dict):
    """(task name, reader) of the first task (by name) that uses template NAME; CliError if none does."""
    users = [cls for _, cls in sorted(load_tasks().items()) if name in getattr(cls, "templates", ())]
    if not users:
        known = sorted({t for cls in load_tasks().values() for t in getattr(cls, "templates", ())})
        raise CliError(f"no task uses a template named {name!r} (templates with readers: {', '.join(known)})")
    cls = users[0]
    try:
        task = cls(TaskContext(task=cls.name, params=resolve_params(cls, {}), config=config))
        return cls.name, task.reader(name)
    except TaskError as e:
        raise CliError(str(e)) from None


def reading_json(value):
    """What a reader returned, as JSON: dataclasses as objects, an Equal verdict as {"equal": bool}, ..."""
    if dataclasses.is_dataclass(value):
        out = dataclasses.asdict(value)
        if hasattr(value, "mean"):
            out["mean"] = value.mean
        return out
    if isinstance(value, bool):
        return {"equal": value}
    if isinstance(value, str):
        return {"text": value}
    if isinstance(value, list):
        return {"items": value}
    if isinstance(value, tuple) and len(value) == 2:
        return {"input": value[0], "output": value[1]}
    return value


def _lines(obj, prefix: str = ""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _lines(v, f"{prefix}{k}." if isinstance(v, dict) else f"{prefix}{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj, start=1):
            yield f"{prefix}[{i}]: {_safe(str(v))}" if prefix else f"{i}. {_safe(str(v))}"
    else:
        shown = json.dumps(obj) if obj is None or isinstance(obj, bool) else str(obj)
        yield f"{prefix.rstrip('.')}: {_safe(shown)}"


def _read_reply(path: str) -> str:
    try:
        data = sys.stdin.buffer.read() if path == "-" else open(path, "rb").read()
    except OSError as e:
        raise CliError(f"{path}: {e.strerror or e}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CliError(f"{'stdin' if path == '-' else path}: not UTF-8 text (byte {e.start})") from None


def cmd_parse(args) -> int:
    try:
        config = load_config(getattr(args, "config", None))
    except ConfigError as e:
        raise CliError(str(e)) from None
    task_name, read = reader_for(args.name, config)
    text = _read_reply(args.file)
    try:
        value = reading_json(read(text))
    except ParseError as e:
        if args.json:
            sys.stdout.write(json.dumps({"template": args.name, "task": task_name, "read": False,
                                         "error": str(e)}) + "\n")
        else:
            print(f"cannot read this reply as task {task_name} reads template {args.name}: {_safe(str(e))}",
                  file=sys.stderr)
        return 1
    if args.json:   # ASCII-escaped: model text can carry no control sequence to the terminal
        sys.stdout.write(json.dumps({"template": args.name, "task": task_name, "read": True, "value": value},
                                    indent=2) + "\n")
        return 0
    for line in _lines(value):
        print(line)
    return 0
