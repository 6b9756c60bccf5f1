"""How Review tells where a sample came from (lineage) and why a pair's chosen side was chosen: Rich text only.
"""
from __future__ import annotations

from rich.text import Text

from widgets.safe_text import plain


def lineage_text(lin: dict) -> Text:
    out = Text("Lineage", style="bold", end="")
    rows = []
    if "import" in lin:
        imp = lin["import"]
        rows.append(("imported from", plain(f"{imp['file']}" + (f" line {imp['line']}" if imp.get("line") else "")
                                            + f" ({imp['format']})", 300)))
    if "parent" in lin:
        p = lin["parent"]
        label = f"#{p['id']}" + (" (deleted)" if p.get("missing") else f" in {p.get('dataset')}: ")
        t = plain(label, 100)
        if p.get("instruction"):
            t.append_text(plain(p["instruction"], 120))
        rows.append(("parent sample", t))
    if "job" in lin:
        j = lin["job"]
        rows.append(("job", plain(f"#{j['id']} " + ("(deleted)" if j.get("missing") else f"{j['kind']} ({j['status']})"))))
    origin = lin.get("origin") or {}
    for key in ("task", "model", "endpoint", "template", "template_version", "operation", "mutation", "judge"):
        if origin.get(key) is not None:
            rows.append((key, plain(origin[key])))
    if origin.get("self_judged"):
        rows.append(("self-judged", Text("the judge's model also wrote a candidate (queued with --allow-self-judge)",
                                         style="bold yellow")))
    if "dup_of" in lin:
        rows.append(("duplicate of", Text(f"#{lin['dup_of']}", style="bold magenta")))
    if not rows:
        out.append("\nno lineage recorded", style="dim")
    for k, v in rows:
        out.append(f"\n{k}: ", style="dim")
        out.append_text(v)
    return out


def _score(side: dict) -> str:
    if side.get("score") is None:
        return "no score"
    scale = side.get("scale")
    return f"score {side['score']:g}" + (f" on {scale[0]:g}-{scale[1]:g}" if scale else " (scale not stated)")


def why_text(why: dict) -> Text:
    """Why the pair is what it is: the candidates, their models, each score with its scale, the margin."""
    out = Text("Why this pair", style="bold", end="")
    if why.get("tie"):
        out.append("\ntie: ", style="dim")
        out.append_text(plain(f"{why['tie']['column']} = {why['tie']['value']!r}; no pair until judged"))
        for c in why["candidates"]:
            out.append("\ncandidate: ", style="dim")
            out.append_text(plain(f"{c['model'] or 'model not stated'} · {_score(c)}", 200))
    else:
        for name in ("chosen", "rejected"):
            side = why[name]
            out.append(f"\n{name}: ", style="dim")
            col = f" (column {side['column']})" if side.get("column") else ""
            out.append_text(plain(f"{side['model'] or 'model not stated'} · {_score(side)}{col}", 200))
            if side.get("edited"):
                out.append(" (text edited since)", style="yellow")
        out.append("\nmargin: ", style="dim")
        out.append("not scored" if why["margin"] is None else f"{why['margin']:g}")
        if why.get("swapped"):
            out.append("\nswapped by the curator (the source chose the other answer)", style="bold yellow")
    out.append("\ndecided by: ", style="dim")
    out.append_text(plain(why["by"], 300))
    return out
