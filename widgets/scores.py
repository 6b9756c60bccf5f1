"""Judge scores side by side: one column per judge, one row per dimension, the overall score, then rationales."""
from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

from .safe_text import plain, safe_text

RATIONALE_LIMIT = 1200


def _fmt(v) -> Text:
    if v is None:
        return Text("–", style="dim")
    if isinstance(v, float):
        return Text(f"{v:g}", justify="right")
    return plain(v, 20)


def scores_renderable(judgments: list[dict], rationale_limit: int | None = RATIONALE_LIMIT):
    if not judgments:
        return Text("Scores\n", style="bold") + Text("not judged yet", style="dim")
    table = Table(box=None, padding=(0, 1), show_edge=False, expand=False, header_style="bold")
    table.add_column("dimension")
    for j in judgments:
        header = plain(j.get("judge"), 24)
        if j.get("candidate_model"):            # one candidate of a preference prompt, judged alone
            header = plain(j["candidate_model"], 24) + Text("\nby ", style="dim") + header
        table.add_column(header, justify="right")
    dims = list(dict.fromkeys(d for j in judgments for d in (j.get("scores") or {})))
    for dim in dims:
        table.add_row(plain(dim, 30), *[_fmt((j.get("scores") or {}).get(dim)) for j in judgments])
    table.add_row(Text("overall", style="bold"), *[_fmt(j.get("overall")) for j in judgments])
    notes = Text(end="")
    for j in judgments:
        if j.get("rationale"):
            notes.append("\n")
            notes.append_text(plain(j.get("judge"), 40))
            if j.get("candidate_model"):
                notes.append(" on ")
                notes.append_text(plain(j["candidate_model"], 40))
            notes.append(": ", style="bold")
            body, hidden = safe_text(j["rationale"], rationale_limit)
            notes.append_text(body)
            if hidden:
                notes.append(f" … (+{hidden:,} chars)", style="dim")
    return Group(Text("Scores", style="bold"), table, notes)


def as_text(renderable, console, width: int) -> Text:
    """A Rich renderable (the scores Table) laid out once, at `width`, as styled lines of Text: Textual then draws
    and measures it as plain text, where a Table was laid out again for every frame that moved it (~3 ms a key).
    The lines are cropped, not re-laid out, if the terminal is later narrowed (the next sample lays out again)."""
    out = Text(end="", no_wrap=True, overflow="crop")
    lines = console.render_lines(renderable, console.options.update(width=width), pad=False)
    for i, line in enumerate(lines):
        if i:
            out.append("\n")
        for seg in line:
            if not seg.control:
                out.append(seg.text, seg.style)
    out.rstrip()
    return out
