"""A multi-turn conversation (or several models' answers): one block per turn, role label + untrusted text."""
from __future__ import annotations

from rich.text import Text

from .safe_text import DEFAULT_LIMIT, clipped_hidden, more_note, plain, safe_text

ROLE_STYLES = {"system": "bold yellow", "user": "bold cyan", "human": "bold cyan", "assistant": "bold green",
               "gpt": "bold green", "tool": "bold magenta"}


def conversation_text(turns: list[tuple[str, str]], limit: int | None = DEFAULT_LIMIT,
                      more_hint: str = "m: show more", title: str = "", show_invisible: bool = False,
                      sizes: list | None = None) -> tuple[Text, int]:
    """turns = [(role or label, content)]; each turn capped at `limit` characters. Returns (Text, hidden chars).
    `sizes[i]`: the stored size in bytes of turn i when its content is only the start (clipped)."""
    out, hidden_total = Text(end=""), 0
    if title:
        out.append(title + "\n", style="bold")
    for i, (role, content) in enumerate(turns):
        if i:
            out.append("\n")
        label = plain(role or "?", 60)
        label.stylize(ROLE_STYLES.get(str(role).lower(), "bold blue"))
        out.append_text(label)
        out.append("\n")
        body, hidden = safe_text(content, limit, show_invisible=show_invisible)
        size = sizes[i] if sizes and i < len(sizes) else None
        if size is not None:
            hidden = clipped_hidden(content or "", hidden, size)
        out.append_text(body)
        if hidden:
            out.append("\n")
            out.append_text(more_note(hidden, more_hint, size))
            hidden_total += hidden
    return out, hidden_total


def message_turns(messages) -> list[tuple[str, str]]:
    """OpenAI-style [{role, content}] (content may be a list of parts) or ShareGPT [{from, value}] -> turns."""
    turns = []
    for m in messages or []:
        if not isinstance(m, dict):
            turns.append(("?", str(m)))
            continue
        role = m.get("role", m.get("from", "?"))
        content = m.get("content", m.get("value", ""))
        if isinstance(content, list):  # content parts
            content = "\n".join(p.get("text", str(p)) if isinstance(p, dict) else str(p) for p in content)
        turns.append((str(role), "" if content is None else str(content)))
    return turns
