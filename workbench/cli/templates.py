"""`workbench templates list|show|copy`: the prompt templates the tasks use, and the user's overrides of them."""
from __future__ import annotations

import shutil
import sys

from .. import templating
from .common import CliError, print_json


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


def _load(name, args):
    try:
        return templating.load(name, getattr(args, "config", None))
    except templating.TemplateError as e:
        raise CliError(str(e)) from None


def cmd_list(args) -> int:
    try:
        items = templating.list_templates(getattr(args, "config", None))
    except templating.TemplateError as e:
        raise CliError(str(e)) from None
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
