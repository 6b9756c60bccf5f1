"""The TOML config: endpoints, pools, key bindings, label sets, filter lists.

Location: --config PATH, else $WORKBENCH_CONFIG, else the platformdirs user config dir.
A missing file is an empty config: the workbench runs with no configuration at all.
"""
from __future__ import annotations

import os
import tomllib
from pathlib import Path

import platformdirs
import tomli_w

from .fileperms import open_private, private_dir
from .store import APP_NAME


class ConfigError(ValueError):
    pass


def default_config_path() -> Path:
    return Path(platformdirs.user_config_dir(APP_NAME)) / "config.toml"


def resolve_config_path(path: str | os.PathLike | None = None) -> Path:
    if path:
        return Path(path)
    env = os.environ.get("WORKBENCH_CONFIG")
    return Path(env) if env else default_config_path()


def config_dir(path: str | os.PathLike | None = None) -> Path:
    """Directory that holds the config file; template overrides live in its `templates/` folder."""
    return resolve_config_path(path).parent


def read_toml(path: str | os.PathLike) -> dict:
    """A TOML file (config, sampling target, recipe) -> dict; ConfigError naming the file and line if it is not
    UTF-8 or not TOML. A UTF-8 byte order mark at the start (Windows editors) is skipped. OSError passes."""
    with open(path, "rb") as f:
        data = f.read()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ConfigError(f"{path}, line {line}: not UTF-8 text") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from None


def load_config(path: str | os.PathLike | None = None) -> dict:
    p = resolve_config_path(path)
    if not p.exists():
        return {}
    return read_toml(p)


def save_config(config: dict, path: str | os.PathLike | None = None) -> Path:
    """Write atomically: a crash mid-write never leaves a truncated config."""
    p = resolve_config_path(path)
    private_dir(p.parent)
    tmp = p.with_suffix(".toml.tmp")
    with open_private(tmp, "wb") as f:     # 0600: the config names where the key is
        tomli_w.dump(config, f)
    os.replace(tmp, p)
    return p


def ui_state_path() -> Path:
    return Path(platformdirs.user_state_dir(APP_NAME)) / "ui.toml"


def load_ui_state() -> dict:
    """What the TUI remembers between runs (the theme toggled last). Unreadable state is forgotten, not fatal."""
    try:
        with open(ui_state_path(), "rb") as f:
            return tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError):
        return {}


def save_ui_state(state: dict) -> None:
    save_config(state, ui_state_path())
