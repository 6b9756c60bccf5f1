"""Prompt templates: versioned text files shipped in `workbench/templates/`, overridable per user.

File format (one template per file, named after the template):

    # version: 3
    # about: one line saying what the template asks for
    # vars: instruction, input, response
    === system ===
    ...text...
    === user ===
    ...text with {{instruction}} and {{#if input}}Input: {{input}}{{/if}}...

Header lines start with `#` and come before the first `=== role ===` marker. `{{name}}` is replaced by a value
once (a value that itself contains `{{...}}` is inserted literally, never expanded again); `{{#if name}}...{{/if}}`
keeps its text only when the value is non-empty (no nesting). A variable the template uses but the caller did not
give is an error, so a typo in an edited template fails loudly instead of sending a prompt with a hole in it.

A file `<config dir>/templates/NAME` replaces the packaged template of that name; its version in lineage becomes
`<header version>+local.<first 8 hex of its sha256>` so rows made with an edited template can be told apart.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from .config import config_dir

ROLES = ("system", "user", "assistant")
_SECTION = re.compile(r"^===\s*(\w+)\s*===\s*$", re.M)
_IF = re.compile(r"\{\{#if\s+(\w+)\s*\}\}(.*?)\{\{/if\}\}", re.S)
_VAR = re.compile(r"\{\{\s*(\w+)\s*\}\}")


class TemplateError(ValueError):
    pass


@dataclass(frozen=True)
class Template:
    name: str
    version: str
    about: str
    source: str                 # 'package' or the override file's path
    sections: tuple             # ((role, text), ...)
    declared_vars: tuple = field(default=())
    text: str = ""

    @property
    def ref(self) -> tuple[str, str]:
        """(name, version) as recorded in lineage."""
        return self.name, self.version

    @property
    def variables(self) -> set[str]:
        names = set()
        for _, body in self.sections:
            names.update(m.group(1) for m in _IF.finditer(body))
            names.update(m.group(1) for m in _VAR.finditer(_IF.sub(lambda m: m.group(2), body)))
        return names

    def render(self, **values) -> list[dict]:
        """Chat messages with the values substituted; empty sections are left out."""
        missing = self.variables - values.keys()
        if missing:
            raise TemplateError(f"template {self.name!r} needs {', '.join(sorted(missing))}")
        vals = {k: "" if v is None else str(v) for k, v in values.items()}
        messages = []
        for role, body in self.sections:
            # Tidy the frame before substituting, so the values themselves reach the model byte for byte.
            body = _IF.sub(lambda m: m.group(2) if vals[m.group(1)].strip() else "", body)
            body = re.sub(r"\n{3,}", "\n\n", body).strip()
            body = _VAR.sub(lambda m: vals[m.group(1)], body)   # one pass: inserted text is never re-expanded
            if body.strip():
                messages.append({"role": role, "content": body})
        return messages


def parse_template(name: str, text: str, source: str) -> Template:
    text = text.replace("\r\n", "\n")
    first = _SECTION.search(text)
    if first is None:
        raise TemplateError(f"{source}: template {name!r} has no '=== user ===' section")
    header = {}
    for line in text[:first.start()].splitlines():
        line = line.strip()
        if not line:
            continue
        if not line.startswith("#"):
            raise TemplateError(f"{source}: header line {line!r} does not start with '#'")
        key, sep, value = line.lstrip("#").partition(":")
        if sep:
            header[key.strip().lower()] = value.strip()
    if not header.get("version"):
        raise TemplateError(f"{source}: template {name!r} has no '# version:' header line")
    marks = list(_SECTION.finditer(text))
    sections = []
    for i, m in enumerate(marks):
        role = m.group(1).lower()
        if role not in ROLES:
            raise TemplateError(f"{source}: unknown section '=== {m.group(1)} ===' (use {', '.join(ROLES)})")
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        sections.append((role, text[m.end():end].strip("\n")))
    declared = tuple(v.strip() for v in header.get("vars", "").split(",") if v.strip())
    return Template(name=name, version=header["version"], about=header.get("about", ""), source=source,
                    sections=tuple(sections), declared_vars=declared, text=text)


def _package_dir():
    return resources.files("workbench") / "templates"


def package_names() -> list[str]:
    return sorted(p.name for p in _package_dir().iterdir() if p.is_file() and not p.name.startswith((".", "_")))


def override_dir(config_path: str | os.PathLike | None = None) -> Path:
    return config_dir(config_path) / "templates"


def load(name: str, config_path: str | os.PathLike | None = None) -> Template:
    """The template NAME: the user's override if there is one, else the packaged file."""
    if not re.fullmatch(r"[\w.-]+", name) or name.startswith("."):
        raise TemplateError(f"bad template name {name!r}")
    local = override_dir(config_path) / name
    if local.is_file():
        text = local.read_text(encoding="utf-8")
        t = parse_template(name, text, str(local))
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]
        return Template(name=t.name, version=f"{t.version}+local.{digest}", about=t.about, source=str(local),
                        sections=t.sections, declared_vars=t.declared_vars, text=t.text)
    packaged = _package_dir() / name
    if not packaged.is_file():
        raise TemplateError(f"no template named {name!r} (known: {', '.join(package_names())})")
    return parse_template(name, packaged.read_text(encoding="utf-8"), "package")


def list_templates(config_path: str | os.PathLike | None = None) -> list[Template]:
    """Every packaged template plus user-only ones, each as it would be loaded."""
    names = set(package_names())
    odir = override_dir(config_path)
    if odir.is_dir():
        names.update(p.name for p in odir.iterdir() if p.is_file() and not p.name.startswith("."))
    return [load(n, config_path) for n in sorted(names)]
