"""Key bindings: every binding has an id, a default key list, and can be remapped in the config's `[keys]` table.

Plain data (no Textual here): screens turn the specs into `textual.binding.Binding`s with `Binding(..., id=spec.id)`,
and the app hands `load_keymap(config)` to `App.set_keymap`, which swaps the keys of bindings by id.

Config, either form (values are a comma-separated string or a list of keys):

    [keys]
    "review.accept" = "y"
    [keys.review]
    reject = ["n", "x"]
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass


class KeymapError(ValueError):
    pass


@dataclass(frozen=True)
class KeySpec:
    id: str            # "<screen>.<name>", the name used in the config
    keys: str          # default keys, comma separated, Textual key names
    action: str        # the Textual action it runs
    description: str   # shown in the footer and the help screen
    show: bool = True  # shown in the footer


_K = KeySpec

# Screen -> its bindings. "app" bindings work on every screen. Other screens' bindings (browse, balance, jobs, ...)
# may also carry ids and be remapped; ids with a prefix not listed here are passed through unchecked.
SPECS: dict[str, tuple[KeySpec, ...]] = {
    "app": (
        _K("app.help", "question_mark", "help", "Help"),
        _K("app.toggle_theme", "ctrl+t", "toggle_theme", "Theme", show=False),
        _K("app.home", "ctrl+g", "home", "Home", show=False),
        _K("app.start_worker", "ctrl+w", "start_worker", "Start a worker", show=False),
    ),
    # footers fit 80 columns: the keys that matter are shown, the rest are listed under `?`
    "datasets": (
        _K("datasets.review", "enter,r", "review", "Review"),
        _K("datasets.import", "i", "open('import')", "Import"),
        _K("datasets.export", "e", "open('export')", "Export"),
        _K("datasets.browse", "b", "open('browse')", "Browse"),
        _K("datasets.balance", "l", "open('balance')", "Balance"),
        _K("datasets.jobs", "t", "open('jobs')", "Jobs"),
        _K("datasets.duplicates", "d", "open('duplicates')", "Dups"),
        _K("datasets.clean", "c", "open('clean')", "Clean"),
        _K("datasets.rename", "n", "rename", "Rename", show=False),
        _K("datasets.delete", "delete", "delete", "Delete", show=False),
        _K("datasets.merge", "m", "merge", "Merge", show=False),
    ),
    "review": (
        _K("review.accept", "a", "accept", "Accept"),
        _K("review.reject", "x", "reject", "Reject"),
        _K("review.skip", "s,space", "skip", "Skip"),
        _K("review.undo", "u,backspace", "undo", "Undo"),
        _K("review.edit", "e", "edit", "Edit"),
        _K("review.swap", "w", "swap", "Swap"),
        _K("review.override", "o", "override", "Override", show=False),
        _K("review.next", "j,down,right", "next", "Next"),
        _K("review.prev", "k,up,left", "prev", "Prev"),
        _K("review.search", "slash", "search", "Search", show=False),
        _K("review.filter", "f", "filter", "Filter"),
        _K("review.first_pending", "g", "first_pending", "First pending", show=False),
        _K("review.more", "m", "more", "More text", show=False),
        _K("review.pager", "p", "pager", "Open in $PAGER", show=False),
        _K("review.invisible", "i", "toggle_invisible", "Show invisible characters", show=False),
        _K("review.page_down", "pagedown,ctrl+d", "page_down", "Scroll down", show=False),
        _K("review.page_up", "pageup,ctrl+u", "page_up", "Scroll up", show=False),
        _K("review.back", "escape,q", "back", "Back", show=False),
    ),
    "edit": (
        _K("edit.save", "ctrl+s", "save", "Save"),
        _K("edit.cancel", "escape", "cancel", "Cancel"),
    ),
    "help": (
        _K("help.close", "escape,q,question_mark", "close", "Close"),
    ),
}

BY_ID: dict[str, KeySpec] = {s.id: s for specs in SPECS.values() for s in specs}

# Characters users write in the config -> Textual key names (what Textual itself derives from Unicode names).
_NAME_FIXES = {"solidus": "slash", "reverse_solidus": "backslash", "commercial_at": "at",
               "hyphen_minus": "minus", "plus_sign": "plus", "low_line": "underscore"}
_ALIASES = {"esc": "escape", "return": "enter", "del": "delete", "bs": "backspace", " ": "space",
            "pgup": "pageup", "pgdn": "pagedown"}


def normalize_key(key: str) -> str:
    """A key as written by a user ("/", "?", "Space", "ctrl+S") -> the Textual key name ("slash", ...)."""
    k = key.strip() if key.strip() else key
    if not k:
        raise KeymapError("empty key name")
    if len(k) == 1:
        if k.isalnum():
            return k  # letters keep their case: "A" is shift+a
        name = unicodedata.name(k, "").lower().replace("-", "_").replace(" ", "_")
        if not name:
            raise KeymapError(f"unknown key {key!r}")
        return _NAME_FIXES.get(name, name)
    parts = k.split("+")
    mods, last = [p.lower() for p in parts[:-1]], parts[-1]
    if last == "":  # "ctrl++"
        last = "+"
    for m in mods:
        if m not in ("ctrl", "shift", "alt", "meta", "super", "hyper"):
            raise KeymapError(f"unknown modifier {m!r} in key {key!r}")
    base = normalize_key(last).lower() if len(last) == 1 else _ALIASES.get(last.lower(), last.lower())
    return "+".join([*mods, base])


def _key_list(value, where: str) -> str:
    if isinstance(value, str):
        items = value.split(",") if value.strip() != "," else [","]
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        items = value
    else:
        raise KeymapError(f"{where}: expected a key string or a list of keys, got {value!r}")
    keys = [normalize_key(v) for v in items if v.strip() or v == " "]
    if not keys:
        raise KeymapError(f"{where}: no key given")
    return ",".join(dict.fromkeys(keys))


def _flatten(table: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in table.items():
        name = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(_flatten(v, name))
        else:
            out[name] = v
    return out


def load_keymap(config: dict | None) -> dict[str, str]:
    """The `[keys]` overrides as {binding id: "key,key"}; raises KeymapError naming the bad entry."""
    table = (config or {}).get("keys") or {}
    if not isinstance(table, dict):
        raise KeymapError("config [keys]: expected a table of binding id = key(s)")
    overrides = {}
    for bid, value in _flatten(table).items():
        screen = bid.split(".", 1)[0]
        if "." not in bid or (screen in SPECS and bid not in BY_ID):
            known = ", ".join(sorted(BY_ID))
            raise KeymapError(f"config [keys]: unknown binding id {bid!r} (known ids: {known})")
        overrides[bid] = _key_list(value, f"config [keys] {bid!r}")
    _check_clashes(overrides)
    return overrides


def effective_keys(overrides: dict[str, str] | None = None) -> dict[str, list[str]]:
    """Binding id -> the keys that trigger it once the overrides are applied (for the help screen and tests)."""
    overrides = overrides or {}
    return {bid: (overrides.get(bid) or spec.keys).split(",") for bid, spec in BY_ID.items()}


def _check_clashes(overrides: dict[str, str]) -> None:
    """Two actions on one key in the same screen would make one unreachable. A screen key shadows an app key on
    purpose (help's `?` closes help), so screen-vs-app is a clash only when the user remapped one of the two."""
    keys = effective_keys(overrides)
    app_ids = [s.id for s in SPECS["app"]]
    for screen, specs in SPECS.items():
        seen: dict[str, str] = {}
        ids = [s.id for s in specs] + ([] if screen == "app" else app_ids)
        for bid in ids:
            for k in keys[bid]:
                other = seen.get(k)
                if other and other != bid:
                    cross = (other in app_ids) != (bid in app_ids)
                    if not cross or other in overrides or bid in overrides:
                        raise KeymapError(f"config [keys]: key {k!r} is bound to both {other!r} and {bid!r}")
                seen.setdefault(k, bid)


def display_key(key: str) -> str:
    """A Textual key name as a user would type it ("slash" -> "/")."""
    special = {"slash": "/", "question_mark": "?", "space": "space", "backspace": "bksp", "escape": "esc",
               "pagedown": "pgdn", "pageup": "pgup", "down": "↓", "up": "↑", "left": "←", "right": "→",
               "tab": "tab", "delete": "del", "minus": "-", "plus": "+", "enter": "enter"}
    if key in special:
        return special[key]
    if "+" in key:
        *mods, last = key.split("+")
        return "+".join([*mods, display_key(last)])
    if len(key) > 1 and key.isidentifier():
        try:
            char = unicodedata.lookup(key.replace("_", " ").upper())
        except KeyError:
            return key
        return char if char.isprintable() and not char.isspace() else key   # never a tab or control character
    return key
