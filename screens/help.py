"""`?`: every key of every screen, with the binding ids to remap them in the config's [keys] table."""
from __future__ import annotations

import inspect
import re

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Static

from workbench import keymap
from workbench.app import SCREEN_REGISTRY, key_specs_bindings, screen_class, screen_title


def class_bindings(cls) -> list:
    """BINDINGS declared along the class hierarchy (most derived first), without Textual's built-ins."""
    out = []
    for klass in cls.__mro__:
        if klass.__module__.startswith("textual."):
            break
        out.extend(klass.__dict__.get("BINDINGS", []))
    return out


def binding_rows(bindings, overrides: dict[str, str]) -> list[tuple[str, str, str]]:
    """(keys, description, id) per action, with the user's remapping applied."""
    rows: dict[tuple, list[str]] = {}
    for b in bindings:
        if isinstance(b, tuple):
            key, action, desc = (*b, "")[:3]
            bid = None
        else:
            key, action, desc, bid = b.key, b.action, b.description, b.id
        if action.startswith("open('") and action[6:-2] not in SCREEN_REGISTRY:
            desc = f"{desc} (not installed yet)"
        keys = (overrides.get(bid) if bid else None) or key
        rows.setdefault((action, desc or action, bid or ""), [])
        for k in keys.split(","):
            if k not in rows[(action, desc or action, bid or "")]:
                rows[(action, desc or action, bid or "")].append(k)
    return [(", ".join(keymap.display_key(k) for k in keys), desc, bid) for (_, desc, bid), keys in rows.items()]


def _title(cls) -> str:
    """What a curator calls a dialog: HELP_TITLE, else the class name in words ("SearchDialog" -> "Search")."""
    if getattr(cls, "HELP_TITLE", None):
        return cls.HELP_TITLE
    words = re.findall(r"[A-Z][a-z0-9]*", cls.__name__)
    words = [w for w in words if w not in ("Dialog", "Screen")] or words
    return " ".join([words[0], *(w.lower() for w in words[1:])])


def _shared_list_key(b) -> bool:
    return not isinstance(b, tuple) and bool(b.id) and b.id.startswith("table.") and b.id != "table.select"


def help_sections() -> list[tuple[str, list]]:
    """(title, bindings) per screen, its dialogs after it ("Review: search"), every list's keys once."""
    from textual.screen import ModalScreen
    from widgets.list_table import ListTable
    sections = [("Everywhere", [*key_specs_bindings("app"),
                                ("ctrl+p", "command_palette", "Command palette: every screen and command"),
                                ("ctrl+q", "quit", "Quit")]),
                ("Every list", class_bindings(ListTable))]
    for name in SCREEN_REGISTRY:
        cls = screen_class(name)
        own, dialogs = list(class_bindings(cls)), []
        for _, member in inspect.getmembers(inspect.getmodule(cls), inspect.isclass):
            if member is cls or not class_bindings(member) or not member.__module__.split(".")[0] in ("screens",
                                                                                                     "widgets"):
                continue
            if issubclass(member, ModalScreen):
                if member.__name__ not in {c.__name__ for c in (screen_class(n) for n in SCREEN_REGISTRY)}:
                    dialogs.append(member)
            elif member.__module__ == cls.__module__:    # a widget of this screen: its keys are the screen's
                own += [b for b in class_bindings(member) if not _shared_list_key(b)]
        if name == "review":
            from .edit_dialog import EditDialog
            dialogs.append(EditDialog)
        sections.append((screen_title(name), own))
        for d in dialogs:
            sections.append((f"{screen_title(name)}: {_title(d).lower()}", class_bindings(d)))
    return sections


def help_renderable(overrides: dict[str, str]):
    parts = [Text("Keys by screen: what each does, its keys, and the id to remap it in the config's [keys] table",
                  style="bold")]
    for title, bindings in help_sections():
        rows = binding_rows(bindings, overrides)
        if not rows:
            continue
        table = Table(title=Text(title, style="bold"), title_justify="left", box=None, padding=(0, 1),
                      show_header=False, expand=False)
        table.add_column(no_wrap=True)
        table.add_column(style="bold", no_wrap=True)
        table.add_column(style="dim")
        for keys, desc, bid in rows:
            table.add_row(Text(desc), Text(keys), Text(bid))
        parts.append(table)
    return Group(*parts)


class HelpScreen(ModalScreen[None]):
    """Every key of every screen."""

    PALETTE_TITLE = "Help: keys"
    BINDINGS = key_specs_bindings("help")
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Vertical { width: 100%; height: 100%; border: round $accent; background: $panel; }
    """

    def compose(self) -> ComposeResult:
        with Vertical():
            with VerticalScroll(id="help-body"):
                yield Static(help_renderable(getattr(self.app, "keymap_overrides", {})), id="help-keys")
            yield Footer(compact=True, show_command_palette=False)

    def action_close(self) -> None:
        self.dismiss(None)
