"""Writing output files without ever destroying one.

Every file is written to a temp file in its target's directory and renamed into place only when it is complete and
synced, so a failed write (a full disk, a read-only directory, a name too long) leaves the old file, or nothing, under
the requested name. The store and its -wal/-shm/-journal files are refused even when a replace is allowed (`--force`),
also through a symlink or a hard link. `-`, pipes, character devices and paths under /dev or /proc are written in
place: replacing /dev/stdout with a regular file is exactly what must never happen.
"""
from __future__ import annotations

import errno
import gzip
import hashlib
import os
import stat
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .fileperms import DIR_MODE, FILE_MODE

TEMP_PREFIX = ".wb-tmp-"   # short: a temp name must fit wherever the final name fits
STORE_SUFFIXES = ("", "-wal", "-shm", "-journal")


class OutputError(Exception):
    """A file cannot be written (or must not be): the message names the path and the reason."""


def store_files(conn) -> list[Path]:
    """The store's main file and its companions, resolved (the connection's own view of where it lives)."""
    out = []
    for _, name, path in conn.execute("PRAGMA database_list"):
        if name == "main" and path:
            base = os.path.realpath(path)
            out += [Path(base + s) for s in STORE_SUFFIXES]
    return out


def is_stream(path: str | os.PathLike) -> bool:
    """Written in place, never replaced: `-`, anything under /dev or /proc, and existing non-regular files."""
    text = os.fspath(path)
    if text == "-":
        return True
    absolute = os.path.abspath(text)
    if absolute.startswith(("/dev/", "/proc/")):
        return True
    try:
        st = os.stat(text)
    except OSError:
        return False
    return not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode)


def refuse_store(path: Path, store: list[Path]) -> None:
    real = Path(os.path.realpath(path))
    for s in store:
        same = real == s
        if not same and s.exists() and real.exists():
            try:
                same = os.path.samefile(real, s)
            except OSError:
                same = False
        if same:
            raise OutputError(f"{path}: is the workbench store ({s.name}); an export never writes over it")


def _why(e: OSError) -> str:
    if e.errno == errno.ENOSPC:
        return "no space left on the device"
    if e.errno == errno.EDQUOT:
        return "disk quota exceeded"
    if e.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if e.errno == errno.EROFS:
        return "read-only file system"
    if e.errno == errno.ENAMETOOLONG:
        return "file name too long"
    if e.errno == errno.ENOTDIR:
        return "a part of the path is a file, not a directory"
    return e.strerror or str(e)


def describe_error(path, e: OSError) -> str:
    return f"{path}: cannot write: {_why(e)}"


def check_name(path: Path) -> None:
    """Refuse before any work a name the file system cannot hold, and a parent that is a file."""
    for parent in [path.parent, *path.parent.parents]:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise OutputError(f"{path}: {parent} is a file, not a directory")
            try:
                limit = os.pathconf(parent, "PC_NAME_MAX")
            except OSError:
                limit = 255
            break
    else:
        limit = 255
    for part in path.parts:
        if len(part.encode("utf-8", "surrogateescape")) > limit:
            raise OutputError(f"{path}: file name too long ({len(part.encode())} bytes; this file system holds "
                              f"{limit})")


class HashingSink:
    """A binary writer that hashes and counts what goes through it (the file's sha256 without reading it again)."""

    def __init__(self, raw):
        self.raw = raw
        self.sha = hashlib.sha256()
        self.bytes = 0

    def write(self, b) -> int:
        self.raw.write(b)
        self.sha.update(b)
        self.bytes += len(b)
        return len(b)

    def flush(self) -> None:
        self.raw.flush()

    @property
    def closed(self) -> bool:
        return False

    def tell(self) -> int:
        return self.bytes


@dataclass
class Output:
    """One file being written: to a temp file beside its target (then `commit` renames it), or in place."""
    path: Path                      # the requested name (a symlink is kept: its target is replaced)
    final: Path                     # where the bytes end up
    stream: bool
    gz: bool = False
    replace: bool = False           # --force: an existing file at `final` may be replaced
    tmp: Path | None = None
    placed_new: bool = False        # committed where no file was: a later failure of the export removes it
    _raw: object = None
    _owned: bool = True
    sink: HashingSink | None = None
    writer: object = None           # what rows are written to: the sink, or a gzip stream over it
    created_dirs: list[Path] = field(default_factory=list)
    binary: bool = False            # Parquet: never written to a terminal

    def open(self) -> "Output":
        try:
            if self.stream:
                if os.fspath(self.path) == "-":
                    self._raw = getattr(sys.stdout, "buffer", None) or _TextBridge(sys.stdout)
                    self._owned = False
                else:
                    self._raw = open(self.path, "wb", buffering=1 << 20)
                if _is_terminal(self._raw):
                    if self.gz or self.binary:
                        raise OutputError(f"{self.path}: a terminal; this export is binary "
                                          f"({'gzip' if self.gz else 'Parquet'}): write it to a file or a pipe")
                    self._raw = TerminalText(self._raw)
            else:
                self._make_parents()
                fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".tmp", dir=self.final.parent)
                self.tmp = Path(name)
                os.fchmod(fd, _mode_for(self.final))
                self._raw = os.fdopen(fd, "wb", buffering=1 << 20)
        except OSError as e:
            self.discard()
            raise OutputError(describe_error(self.path, e)) from None
        self.sink = HashingSink(self._raw)
        self.writer = gzip.GzipFile(fileobj=self.sink, mode="wb", mtime=0, filename="", compresslevel=6) \
            if self.gz else self.sink
        return self

    def _make_parents(self) -> None:
        missing = []
        p = self.final.parent
        while not p.exists():
            missing.append(p)
            p = p.parent
        for d in reversed(missing):
            d.mkdir(mode=DIR_MODE)
            os.chmod(d, DIR_MODE)       # mkdir's mode is masked by the umask
            self.created_dirs.append(d)

    def finish(self) -> str:
        """Close the data (gzip trailer, flush, fsync); the sha256 of the bytes written. Raises OSError."""
        if self.gz:
            self.writer.close()
        self.sink.flush()
        if self._owned:
            if not self.stream:
                os.fsync(self._raw.fileno())
            self._raw.close()
        self._raw = None
        return self.sink.sha.hexdigest()

    def commit(self) -> None:
        """Put the complete file in place. Without `replace`, a file that appeared under the name since `plan`
        checked is not clobbered: the hard link fails with EEXIST (atomic), and only then is the temp removed."""
        if self.tmp is None:
            return
        if not self.replace:
            try:
                os.link(self.tmp, self.final)
            except FileExistsError:
                raise OutputError(f"{self.path}: appeared while exporting; it was left as it is") from None
            except OSError as e:
                if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                    raise
                if os.path.lexists(self.final):   # no hard links on this file system: check, then rename
                    raise OutputError(f"{self.path}: appeared while exporting; it was left as it is") from None
                os.replace(self.tmp, self.final)
            else:
                os.unlink(self.tmp)
            self.placed_new = True
        else:
            self.placed_new = not os.path.lexists(self.final)
            os.replace(self.tmp, self.final)
        self.tmp = None

    def discard(self) -> None:
        """Remove what a failed export left: the temp file, a file it had already put where none was (another
        file of the same export failed after it), and the directories this output created."""
        if self.placed_new:
            try:
                self.final.unlink()
            except FileNotFoundError:
                pass
            self.placed_new = False
        if self._raw is not None and self._owned:
            try:
                self._raw.close()
            except OSError:
                pass
        self._raw = None
        if self.tmp is not None:
            try:
                self.tmp.unlink()
            except FileNotFoundError:
                pass
            self.tmp = None
        for d in reversed(self.created_dirs):
            try:
                d.rmdir()
            except OSError:
                pass
        self.created_dirs = []


def _mode_for(final: Path) -> int:
    """A replaced file keeps its permissions; a new one is the curator's alone (fileperms: 0600, whatever the umask)."""
    try:
        return stat.S_IMODE(os.stat(final).st_mode)
    except OSError:
        return FILE_MODE


def plan(path, *, force: bool, store: list[Path], gz: bool | None = None) -> Output:
    """An Output for `path`, after every refusal that can be made before writing anything."""
    text = os.fspath(path)
    p = Path(text)
    use_gz = p.name.lower().endswith(".gz") if gz is None else gz
    if text == "-":
        return Output(p, p, stream=True, gz=use_gz)
    refuse_store(p, store)
    if is_stream(p):
        return Output(p, p, stream=True, gz=use_gz)
    final = Path(os.path.realpath(p))
    if os.path.lexists(final):
        if final.is_dir():
            raise OutputError(f"{p}: is a directory")
        if not force:
            raise OutputError(f"{p}: exists; pass --force to replace it")
    check_name(final)
    return Output(p, final, stream=False, gz=use_gz, replace=force)


def write_small(out: Output, data: bytes) -> Output:
    """Open `out`, write `data` (a manifest, a README), finish; the caller commits or discards."""
    out.open()
    try:
        out.writer.write(data)
        out.finish()
    except OSError as e:
        out.discard()
        raise OutputError(describe_error(out.path, e)) from None
    return out


def _is_terminal(raw) -> bool:
    try:
        return os.isatty(raw.fileno())
    except (AttributeError, OSError, ValueError):
        return False


class TerminalText:
    """An export written to a terminal (`export - ...` with no redirect): the data's own text may hold ESC, C1
    and bidi controls (a hostile dataset), which a terminal would act on. Each is written as a \\uXXXX escape,
    the same JSON value for the JSON formats; the sha256 reported is still that of the export's true bytes."""

    def __init__(self, raw):
        import codecs
        self.raw = raw
        self.decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")

    def write(self, b: bytes) -> int:
        from .safe_text import UNSAFE
        text = self.decoder.decode(bytes(b))
        self.raw.write(UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text).encode("utf-8", "replace"))
        return len(b)

    def flush(self) -> None:
        self.raw.flush()

    def close(self) -> None:
        self.raw.close()


class _TextBridge:
    """stdout replaced by a text stream (tests, some embedders): bytes are decoded on the way."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, b: bytes) -> int:
        self.stream.write(b.decode("utf-8"))
        return len(b)

    def flush(self) -> None:
        self.stream.flush()
