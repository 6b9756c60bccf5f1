"""A horizontal bar histogram: one line per bar with count, share and, when a target share is set, a marker at
the target and the gap from it. Labels are untrusted dataset values: drawn as literal one-line text."""
from __future__ import annotations

from typing import Protocol, Sequence

from rich.text import Text
from textual.widget import Widget

from .virtual_table import fit, one_line

_EIGHTHS = " ▏▎▍▌▋▊▉"
LABEL_MAX = 20


class BarLike(Protocol):   # workbench.stats.Bar
    label: str
    count: int
    share: float
    target: float | None
    other: bool


def bar_cells(value: float, scale: float, width: int) -> str:
    """`value / scale` of `width` cells as full blocks plus one partial block (eighths), padded to `width`."""
    if width <= 0:
        return ""
    eighths = 0 if scale <= 0 else round(min(1.0, max(0.0, value / scale)) * width * 8)
    full, part = divmod(eighths, 8)
    out = "█" * full + (_EIGHTHS[part] if part and full < width else "")
    return out + " " * (width - len(out))


class Histogram(Widget):
    """Bars scaled to the largest share (or target) so small differences stay visible; a bar beyond the scale
    (the summed "N more" categories) is drawn full width."""

    COMPONENT_CLASSES = {"histogram--title", "histogram--bar", "histogram--target", "histogram--over",
                         "histogram--under", "histogram--muted"}
    DEFAULT_CSS = """
    Histogram { height: auto; padding: 0 1; margin-bottom: 1; }
    Histogram > .histogram--title { text-style: bold; }
    Histogram > .histogram--bar { color: $accent; }
    Histogram > .histogram--target { color: $warning; text-style: bold; }
    Histogram > .histogram--over { color: $error; }
    Histogram > .histogram--under { color: $warning; }
    Histogram > .histogram--muted { color: $text-muted; }
    """

    def __init__(self, title: str, *, name: str | None = None, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.title = title
        self.bars: list[BarLike] = []
        self.total = 0
        self._drawn_title: str | None = None

    def set_bars(self, bars: Sequence[BarLike], total: int) -> None:
        bars = list(bars)
        if bars == self.bars and total == self.total and self.title == self._drawn_title:
            return      # nothing changed: no repaint, no bytes to the terminal
        layout_changed = len(bars) != len(self.bars)
        self.bars, self.total, self._drawn_title = bars, total, self.title
        self.refresh(layout=layout_changed)

    def get_content_height(self, container, viewport, width: int) -> int:
        return 1 + max(1, len(self.bars))

    def render(self) -> Text:
        width = self.content_size.width or 60
        style = self.get_component_rich_style
        text = Text(no_wrap=True, overflow="crop")
        text.append(fit(one_line(f"{self.title} · {self.total:,}"), width), style("histogram--title"))
        if not self.bars:
            text.append("\n" + fit("no samples", width), style("histogram--muted"))
            return text
        has_target = any(b.target is not None for b in self.bars)
        label_w = min(LABEL_MAX, max(len(one_line(b.label)) for b in self.bars), max(6, width // 4))
        tail_w = 9 + 7 + (9 if has_target else 0)           # count, share, gap
        bar_w = max(4, width - label_w - 1 - tail_w)
        # the summed "N more" bar is left out of the scale (it may be full width) so the real bars stay readable
        scale = max([b.share for b in self.bars if not b.other] + [b.target or 0 for b in self.bars] + [0.0])
        for b in self.bars:
            text.append("\n")
            text.append(fit(one_line(b.label), label_w) + " ", style("histogram--muted") if b.other else None)
            self._append_bar(text, b, scale, bar_w)
            text.append(f"{b.count:>9,}{b.share:>7.1%}")
            if has_target:
                if b.gap is None:
                    text.append(" " * 9)
                else:
                    pts = b.gap * 100
                    gap_style = style("histogram--over") if pts > 0.5 else (
                        style("histogram--under") if pts < -0.5 else None)
                    text.append(f"{pts:>+7.1f}pt", gap_style)
        return text

    def _append_bar(self, text: Text, b: BarLike, scale: float, width: int) -> None:
        cells = bar_cells(b.share, scale, width)
        if b.target is None:
            text.append(cells, self.get_component_rich_style("histogram--bar"))
            return
        at = min(width - 1, int(round(b.target / scale * width)) if scale else 0)
        text.append(cells[:at], self.get_component_rich_style("histogram--bar"))
        text.append("│" if cells[at] == " " else "┃", self.get_component_rich_style("histogram--target"))
        text.append(cells[at + 1:], self.get_component_rich_style("histogram--bar"))
