"""Files the workbench creates are the curator's alone: 0600 files, 0700 directories.

The store holds the data and every model reply, the config names the key's variable or file, exports and logs
carry the data too. None of it is for other users of a shared machine, whatever the umask says. Directories
that already exist are left as they are (an export into the current directory must not chmod it).
"""
from __future__ import annotations

import os
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: str | os.PathLike) -> Path:
    """Create `path` and its missing parents, each 0700; an existing directory is not touched."""
    p = Path(path)
    missing = []
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=DIR_MODE)
        except FileExistsError:     # another process made it meanwhile
            continue
        os.chmod(d, DIR_MODE)       # mkdir's mode is masked by the umask; 0700 is what we mean
    return Path(path)


def create_private(path: str | os.PathLike) -> bool:
    """Make sure `path` exists; if it is created here, it is created 0600. Returns True if it was created."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return True


def open_private(path: str | os.PathLike, mode: str = "wb"):
    """open() for writing ("wb", "ab", "w", "a"): a file created here is 0600 from its first byte."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if "a" in mode else os.O_TRUNC)
    fd = os.open(path, flags, FILE_MODE)
    try:
        return os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"}))
    except BaseException:
        os.close(fd)
        raise
