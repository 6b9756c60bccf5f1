"""`?`: every key of every screen, with the binding ids to remap them in the config's [keys] table."""
from __future__ import annotations

import inspect

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


def help_renderable(overrides: dict[str, str]):
    parts = [Text("Keys (remap any id in the [keys] table of the config; see the README)", style="bold")]
    sections = [("Everywhere", [*key_specs_bindings("app"),
                                ("ctrl+p", "command_palette", "Command palette: every screen and command"),
                                ("ctrl+q", "quit", "Quit")])]
    for name in SCREEN_REGISTRY:
        cls = screen_class(name)
        sections.append((screen_title(name), class_bindings(cls)))
        # dialogs a screen opens are listed with it
        for _, member in inspect.getmembers(inspect.getmodule(cls), inspect.isclass):
            if member is not cls and member.__module__ == cls.__module__ and class_bindings(member):
                sections.append((f"{screen_title(name)} › {member.__name__}", class_bindings(member)))
    from .edit_dialog import EditDialog
    sections.append(("Edit dialog", class_bindings(EditDialog)))
    for title, bindings in sections:
        rows = binding_rows(bindings, overrides)
        if not rows:
            continue
        table = Table(title=Text(title, style="bold"), title_justify="left", box=None, padding=(0, 1),
                      show_header=False, expand=False)
        table.add_column(style="bold", no_wrap=True)
        table.add_column()
        table.add_column(style="dim")
        for keys, desc, bid in rows:
            table.add_row(Text(keys), Text(desc), Text(bid))
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
