"""Key bindings: ids, defaults, remapping from the config's [keys] table, clear errors for bad entries."""
from __future__ import annotations

import pytest

from workbench import keymap
from workbench.keymap import KeymapError, load_keymap, normalize_key


def test_defaults_cover_the_review_keys_including_prodigy_aliases():
    keys = keymap.effective_keys()
    assert keys["review.accept"] == ["a"]
    assert keys["review.reject"] == ["x"]
    assert keys["review.skip"] == ["s", "space"]
    assert keys["review.undo"] == ["u", "backspace"]
    assert keys["review.next"][:2] == ["j", "down"] and keys["review.prev"][:2] == ["k", "up"]
    assert keys["review.search"] == ["slash"] and keys["review.filter"] == ["f"]
    assert keys["review.first_pending"] == ["g"] and keys["review.edit"] == ["e"]
    assert keys["app.help"] == ["question_mark"]
    # Escape is never on the main review path (Textual waits ~100 ms on it)
    main_path = ("accept", "reject", "skip", "undo", "edit", "next", "prev", "search", "filter", "first_pending")
    assert not any("escape" in keys[f"review.{a}"] for a in main_path)


def test_ids_are_unique_and_prefixed_by_their_screen():
    ids = [s.id for specs in keymap.SPECS.values() for s in specs]
    assert len(ids) == len(set(ids))
    for screen, specs in keymap.SPECS.items():
        assert all(s.id.startswith(screen + ".") for s in specs)


@pytest.mark.parametrize("written, name", [
    ("/", "slash"), ("?", "question_mark"), ("Space", "space"), (" ", "space"), ("ctrl+S", "ctrl+s"),
    ("Esc", "escape"), ("A", "A"), ("a", "a"), ("ctrl+/", "ctrl+slash"), ("-", "minus"), ("PgDn", "pagedown"),
])
def test_normalize_key(written, name):
    assert normalize_key(written) == name


def test_remap_both_table_forms_and_lists():
    cfg = {"keys": {"review.accept": "y", "review": {"reject": ["n", "X"], "skip": "z"}}}
    km = load_keymap(cfg)
    assert km == {"review.accept": "y", "review.reject": "n,X", "review.skip": "z"}
    eff = keymap.effective_keys(km)
    assert eff["review.accept"] == ["y"] and eff["review.undo"] == ["u", "backspace"]


def test_other_screens_ids_pass_through():
    assert load_keymap({"keys": {"browse.sort": "o"}}) == {"browse.sort": "o"}


@pytest.mark.parametrize("cfg, message", [
    ({"keys": {"review.approve": "y"}}, "unknown binding id 'review.approve'"),
    ({"keys": {"accept": "y"}}, "unknown binding id 'accept'"),
    ({"keys": {"review.accept": 3}}, "expected a key string or a list"),
    ({"keys": {"review.accept": ""}}, "no key given"),
    ({"keys": {"review.accept": "hyper+meta+x+"}}, "unknown modifier"),
    ({"keys": {"review.accept": "x"}}, "'x' is bound to both 'review.accept' and 'review.reject'"),
    ({"keys": {"review.accept": "question_mark"}}, "bound to both"),     # would hide help in Review
    ({"keys": "a"}, "expected a table"),
])
def test_bad_entries_name_the_problem(cfg, message):
    with pytest.raises(KeymapError, match=message.replace("(", r"\(").replace("+", r"\+")):
        load_keymap(cfg)


def test_swapping_two_keys_is_allowed():
    km = load_keymap({"keys": {"review.accept": "x", "review.reject": "a"}})
    eff = keymap.effective_keys(km)
    assert eff["review.accept"] == ["x"] and eff["review.reject"] == ["a"]


def test_display_names():
    assert keymap.display_key("slash") == "/"
    assert keymap.display_key("question_mark") == "?"
    assert keymap.display_key("ctrl+slash") == "ctrl+/"
    assert keymap.display_key("a") == "a"
    assert keymap.display_key("exclamation_mark") == "!"
