"""Edit a sample's text in a dialog; the Review screen stores the change as an 'edit' decision (before/after).

Control characters cannot go to the terminal, so the text areas show them as visible stand-ins (C0 as ␀…␟, the
rest as private-use characters) and `from_display` turns those back when saving: an edit never loses or alters a
character the curator did not touch.
"""
from __future__ import annotations

import re

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Label, TextArea

from workbench import keymap
from workbench.review import EDITABLE, mirror_turns
from workbench.safe_text import UNSAFE as _UNSAFE   # the characters the one sanitizer replaces: here reversibly
from workbench.safe_text import sanitize

_PUA = 0x100000  # Supplementary Private Use Area-B: stand-ins for C1, bidi controls and lone surrogates
_STANDIN = re.compile("[\u2400-\u241f\u2421\U00100000-\U0010ffff]")


def _to_standin(ch: str) -> str:
    o = ord(ch)
    if o < 0x20:
        return chr(0x2400 + o)
    if o == 0x7F:
        return "\u2421"
    return chr(_PUA + o)


def _from_standin(ch: str) -> str:
    o = ord(ch)
    if o == 0x2421:
        return "\x7f"
    if 0x2400 <= o <= 0x241F:
        return chr(o - 0x2400)
    return chr(o - _PUA)


def to_display(value: str) -> tuple[str, bool]:
    """(text safe for the editor, whether stand-ins must be mapped back on save)."""
    if not _UNSAFE.search(value):
        return value, False
    if _STANDIN.search(value):
        # the text already holds stand-in characters, so mapping back would be ambiguous: show control chars as
        # stand-ins but do not map back (the dialog warns that saving would replace them)
        return _UNSAFE.sub(lambda m: _to_standin(m.group()), value), False
    return _UNSAFE.sub(lambda m: _to_standin(m.group()), value), True


def from_display(value: str, reverse: bool) -> str:
    return _STANDIN.sub(lambda m: _from_standin(m.group()), value) if reverse else value


LABELS = {"instruction": "Instruction", "input": "Input (context)", "response": "Response",
          "rejected": "Rejected response", "system": "System prompt"}


class EditDialog(ModalScreen[dict | None]):
    """Edit instruction, input, response (and system, rejected answer, a conversation's other turns); ctrl+s saves,
    Esc cancels."""

    BINDINGS = [Binding(s.keys, s.action, s.description, id=s.id, priority=True,
                        key_display=keymap.display_key(s.keys.split(",")[0])) for s in keymap.SPECS["edit"]]
    DEFAULT_CSS = """
    EditDialog { align: center middle; }
    EditDialog > Vertical { width: 100%; height: 100%; border: round $accent; background: $panel; }
    EditDialog TextArea { height: auto; min-height: 2; max-height: 12; margin: 0 1; background: $boost; }
    EditDialog Label { padding: 0 1; text-style: bold; }
    EditDialog .warn { color: $warning; }
    """

    def __init__(self, sample: dict):
        super().__init__()
        self.sample = sample
        order = ("instruction", "input", "response", "rejected", "system")
        # a field Review loaded only the start of (over PREVIEW_BYTES) is not offered: saving it would cut it
        self.clipped = {f: n for f, n in (sample.get("clipped") or {}).items() if f in order or f == "messages"}
        self.fields = [f for f in order if f in EDITABLE and f not in self.clipped
                       and (f != "rejected" or sample.get("rejected") is not None)]
        # a conversation's turns that no field mirrors get their own text areas, ahead of the fields
        msgs = sample.get("messages")
        mirrored = set(mirror_turns(sample).values())
        self.turns = [i for i, m in enumerate(msgs) if i not in mirrored and isinstance(m, dict)
                      and isinstance(m.get("content"), str)] if isinstance(msgs, list) else []
        self.reverse: dict[str, bool] = {}
        self.shown: dict[str, str] = {}

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"Edit sample #{self.sample['id']} — ctrl+s: save as an edit decision · Esc: cancel")
            with VerticalScroll():
                msgs = self.sample.get("messages")
                for i in self.turns:
                    yield from self._area(f"turn-{i}", f"Turn {i + 1} · {msgs[i].get('role')}", msgs[i]["content"])
                for f in self.fields:
                    yield from self._area(f, LABELS[f], self.sample.get(f) or "")
                for f, n in self.clipped.items():
                    yield Label(f"{LABELS.get(f, 'Conversation')}: {n:,} bytes, too long to edit here",
                                classes="warn", markup=False)
            yield Footer(compact=True, show_command_palette=False)

    def _area(self, key: str, label: str, original: str) -> ComposeResult:
        shown, self.reverse[key] = to_display(original)
        self.shown[key] = shown
        yield Label(sanitize(label, one_line=True), markup=False)
        if shown != original and not self.reverse[key]:
            yield Label("control characters here are shown as symbols and saving this field "
                        "would store the symbols", classes="warn")
        yield TextArea(shown, id=f"edit-{key}", soft_wrap=True, show_line_numbers=False, tab_behavior="focus",
                       compact=True)

    def on_mount(self) -> None:
        areas = self.query(TextArea)
        if areas:
            areas.first().focus()

    def _edited(self, key: str) -> str | None:
        text = self.query_one(f"#edit-{key}", TextArea).text
        return from_display(text, self.reverse[key]) if text != self.shown[key] else None

    def changes(self) -> dict:
        """Fields (and turns) whose text the curator changed, mapped back to the stored form."""
        out = {f: text for f in self.fields if (text := self._edited(f)) is not None}
        turns = {i: text for i in self.turns if (text := self._edited(f"turn-{i}")) is not None}
        if turns:
            out["messages"] = [{**m, "content": turns[i]} if i in turns else m
                               for i, m in enumerate(self.sample["messages"])]
        return out

    def action_save(self) -> None:
        self.dismiss(self.changes() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)
