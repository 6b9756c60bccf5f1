"""SampleView, Review's body as one Line API widget: wrapping at the widget's width, scrolling a long sample,
re-wrapping on resize, untrusted text drawn escaped, a new sample replacing the lines (repainting only those that
changed, with no layout of the screen)."""
from __future__ import annotations

from rich.text import Text
from textual.app import App
from textual.geometry import Region
from textual.screen import Screen
from textual.scroll_view import ScrollView

from widgets.safe_text import safe_text, titled_text
from widgets.sample_view import Block, SampleView

WORDS = [f"word{i:03d}" for i in range(400)]


class Holder(App):
    def compose(self):
        yield SampleView([Block("meta", margin_bottom=0), Block("body"), Block("tail")], id="view")


def screen_lines(view: SampleView) -> list[str]:
    """The rows the widget draws now (its text area, scrollbar excluded), as plain text."""
    width = view.scrollable_content_region.width
    return [view.render_line(y).text[:width] for y in range(view.scrollable_content_region.height)]


def show(view: SampleView, home: bool = True, **texts: str | Text) -> None:
    for id, t in texts.items():
        b = view.block(id)
        b.set(t if isinstance(t, Text) else Text(t))
        b.display = True
    view.redraw(home=home)


async def test_text_is_wrapped_at_the_width_with_padding_and_nothing_lost():
    async with Holder().run_test(size=(40, 12)) as pilot:
        view = pilot.app.query_one(SampleView)
        show(view, body=" ".join(WORDS[:30]))
        await pilot.pause()
        width = view.scrollable_content_region.width
        assert width == 40 - view.styles.scrollbar_size_vertical      # the scrollbar is always there
        lines = view.text_of("body").split("\n")
        assert len(lines) > 5                                         # 30 words of 8 do not fit in one line
        assert all(len(line) <= width - 1 and (not line or line.startswith(" ")) for line in lines)
        assert " ".join(lines).split() == WORDS[:30]                  # every word, in order, none cut
        assert all(view.render_line(y).cell_length == view.size.width for y in range(view.size.height))


async def test_a_long_sample_scrolls_and_its_height_is_known_once_drawn():
    async with Holder().run_test(size=(40, 12)) as pilot:
        view = pilot.app.query_one(SampleView)
        show(view, meta="meta line", body="\n".join(WORDS[:100]), tail="the end")
        await pilot.pause()
        await pilot.pause()
        assert view.virtual_size.height == 1 + 100 + 1 + 1 + 1       # meta, body + margin, tail + margin
        assert view.max_scroll_y == view.virtual_size.height - view.scrollable_content_region.height
        assert screen_lines(view)[:2] == [" meta line".ljust(38), " word000".ljust(38)]
        view.scroll_to(y=50, animate=False)
        await pilot.pause()
        assert screen_lines(view)[0].strip() == "word049"
        view.scroll_end(animate=False)
        await pilot.pause()
        assert [line.strip() for line in screen_lines(view)][-2:] == ["the end", ""]


async def test_blocks_below_the_window_are_wrapped_after_the_sample_is_drawn():
    async with Holder().run_test(size=(40, 12)) as pilot:
        view = pilot.app.query_one(SampleView)
        built = []
        view.block("tail").fill(("t",), lambda: (built.append(1) or Text("tail text"), 0))
        view.block("tail").display = True
        show(view, body="\n".join(WORDS[:50]))
        assert built == [] and view._rest is not None                 # not needed for the first screen
        await pilot.pause()
        await pilot.pause()
        assert built == [1] and view._rest is None                    # then wrapped, and the height is whole
        assert view.virtual_size.height == 50 + 1 + 1 + 1
        assert view.text_of("tail").strip() == "tail text"


async def test_resize_wraps_again_at_the_new_width():
    async with Holder().run_test(size=(40, 12)) as pilot:
        view = pilot.app.query_one(SampleView)
        show(view, body=" ".join(WORDS[:40]))
        await pilot.pause()
        narrow = view.text_of("body").split("\n")
        await pilot.resize_terminal(100, 12)
        await pilot.pause()
        await pilot.pause()
        wide = view.text_of("body").split("\n")
        assert len(wide) < len(narrow)
        assert max(len(line) for line in wide) > 40
        assert " ".join(wide).split() == WORDS[:40]
        assert view.virtual_size.height == len(wide)            # its lines and its margin below
        assert all(view.render_line(y).cell_length == view.size.width for y in range(5))


async def test_control_characters_are_drawn_escaped_never_sent_to_the_terminal():
    hostile = "a\x1b[31mred\x1b[0m \x1b]0;PWNED\x07 [bold]x[/bold] \u202eevil \x9b2J\x00end"
    async with Holder().run_test(size=(60, 12)) as pilot:
        view = pilot.app.query_one(SampleView)
        text, hidden = titled_text("Response", hostile)
        show(view, body=text)
        await pilot.pause()
        drawn = view.text_of("body")
        for shown in ("␛[31mred␛[0m", "␛]0;PWNED␇", "[bold]x[/bold]", "<U+202E>evil", "<U+009B>2J", "␀end"):
            assert shown in drawn, shown
        update = pilot.app.screen._compositor.render_full_update()
        raw = update.render_segments(pilot.app.console)                      # the bytes a terminal would get
        assert "PWNED" in raw and "␛" in raw and "␇" in raw                 # drawn, as stand-ins
        for bad in ("\x1b[31m", "\x1b]0;", "\x07", "\u202e", "\x9b", "\x00"):
            assert bad not in raw, repr(bad)
        segments = [seg for line in update.strips for strip in line for seg in strip]
        assert not any(seg.style and (seg.style.link or (seg.style.meta or {}).get("@click")) for seg in segments)


async def test_a_new_sample_replaces_the_lines_repaints_only_changed_rows_and_lays_nothing_out(monkeypatch):
    async with Holder().run_test(size=(40, 12)) as pilot:
        view = pilot.app.query_one(SampleView)
        show(view, meta="same meta", body="first sample text\nsecond line", tail="lineage")
        await pilot.pause()
        layouts = []
        real = Screen._refresh_layout
        monkeypatch.setattr(Screen, "_refresh_layout", lambda self, *a, **k: (layouts.append(1), real(self, *a, **k)))
        show(view, body="another one\nsecond line")
        await pilot.pause()
        rows = screen_lines(view)
        assert [r.strip() for r in rows[:5]] == ["same meta", "another one", "second line", "", "lineage"]
        assert "first sample" not in view.text_of("body") and not any("first sample" in r for r in rows)
        assert view.repainted == [1]                   # only the row that differs is sent to the terminal again
        assert layouts == []                           # no layout of the screen for a new sample
        show(view, body="a\nb\nc")                     # a taller body moves the rows below it
        assert view.repainted == [1, 2, 3, 4, 5, 6]
        view.block("tail").display = False             # a hidden block is gone from the lines
        show(view, body="a\nb\nc")
        await pilot.pause()
        assert "lineage" not in "".join(screen_lines(view))
        assert layouts == []


async def test_text_of_a_block_is_its_text_as_wrapped_and_rendered_lines_match():
    async with Holder().run_test(size=(30, 8)) as pilot:
        view = pilot.app.query_one(SampleView)
        body, hidden = safe_text("x" * 100, 40)
        assert hidden == 60
        show(view, body=body)
        await pilot.pause()
        lines = [s.text for s in view.render_lines(Region(0, 0, view.size.width, 3))]
        assert lines[0].strip() == "x" * (view.scrollable_content_region.width - 2)
        assert view.text_of("body").replace("\n", "").replace(" ", "") == "x" * 40


async def test_lines_drawn_directly_are_the_lines_textuals_styling_pass_would_draw():
    """SampleView.render_lines skips Textual's per-line styling pass (nothing in it applies to this widget): the
    result must be the same segments, styles included, for styled and escaped text."""
    async with Holder().run_test(size=(50, 12)) as pilot:
        view = pilot.app.query_one(SampleView)
        body, _ = titled_text("Response", "plain \x1b[2J text " * 20)
        meta = Text("task_type: ", style="dim") + Text("qa") + Text(" DUPLICATE", style="bold magenta")
        show(view, meta=meta, body=body)
        await pilot.pause()
        for y in (0, 3):
            view.scroll_to(y=y, animate=False)
            await pilot.pause()
            crop = view.size.region
            view._styles_cache.clear()
            styled = ScrollView.render_lines(view, crop)
            assert [list(s) for s in view.render_lines(crop)] == [list(s) for s in styled]
            part = Region(3, 2, 20, 4)
            view._styles_cache.clear()
            assert [list(s) for s in view.render_lines(part)] == [list(s) for s in ScrollView.render_lines(view, part)]


async def test_a_new_theme_redraws_the_lines_in_its_colours():
    async with Holder().run_test(size=(40, 8)) as pilot:
        view = pilot.app.query_one(SampleView)
        show(view, body="some text")
        await pilot.pause()
        before = view.render_line(0)
        pilot.app.theme = "textual-light" if pilot.app.theme != "textual-light" else "textual-dark"
        await pilot.pause()
        await pilot.pause()
        after = view.render_line(0)
        assert after.text == before.text
        assert after != before and view._base == view.rich_style
        assert list(after)[0].style.bgcolor == view.rich_style.bgcolor
