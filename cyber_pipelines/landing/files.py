"""Reading a dropped file's bytes safely: names, types, sizes, encodings."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

MAX_FILE_BYTES = 1 << 30
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
EXTENSIONS = {".csv": "csv", ".json": "json", ".parquet": "parquet"}


class LandingError(ValueError):
    """A landing file is rejected; the message is the reason written beside the quarantined file."""


def check_name(path: Path) -> None:
    """Reject path traversal, hidden names and names that are unsafe in paths and partition keys."""
    if ".." in Path(path).parts:
        raise LandingError(f"unsafe path {str(path)!r}: path traversal ('..') is not allowed")
    name = Path(path).name
    if name.startswith("."):
        raise LandingError(f"hidden file {name!r} is not ingested")
    if not SAFE_NAME.match(name) or ".." in name:
        raise LandingError(
            f"unsafe file name {name!r}: use letters, digits, '.', '_' and '-' only (at most 128 characters)"
        )


def kind_of(mode: int) -> str:
    """A readable name for a non-regular file type."""
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISFIFO(mode):
        return "named pipe"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "special file"


def not_regular_reason(path: Path, mode: int) -> str:
    """Why a non-regular entry is not ingested (the quarantine reason)."""
    kind = kind_of(mode)
    if kind == "symlink":
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        return f"{Path(path).name!r} is a symlink (to {target!r}), not a regular file: drop the file itself"
    if kind == "folder":
        return f"{Path(path).name!r} is a folder, not a file: drop the files themselves into the landing folder"
    return f"{Path(path).name!r} is a {kind}, not a regular file"


def read_bytes(path: Path) -> bytes:
    """The file's bytes; ``LandingError`` for a missing, non-regular, empty or too large file.

    Opened without following symlinks, and the type is checked on the open file, so a file swapped for
    a symlink after it was listed is not followed."""
    path = Path(path)
    try:
        info = path.lstat()
    except FileNotFoundError as exc:
        raise LandingError(f"file {path.name!r} does not exist") from exc
    if not stat.S_ISREG(info.st_mode):
        raise LandingError(not_regular_reason(path, info.st_mode))
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise LandingError(f"cannot open {path.name!r}: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise LandingError(not_regular_reason(path, info.st_mode))
        if info.st_size > MAX_FILE_BYTES:
            raise LandingError(f"file too large: {info.st_size} bytes > {MAX_FILE_BYTES}")
        data = fh.read(MAX_FILE_BYTES + 1)
    check_content(data)
    return data


def check_content(data: bytes) -> None:
    """Reject empty content (the checks of ``read_bytes`` for bytes read elsewhere)."""
    if len(data) > MAX_FILE_BYTES:
        raise LandingError(f"file too large: {len(data)} bytes > {MAX_FILE_BYTES}")
    if not data:
        raise LandingError("empty file (0 bytes)")
    if not data.strip():
        raise LandingError("empty file (only whitespace)")


def decode(data: bytes) -> str:
    """UTF-8 text (a BOM is dropped); binary content and other encodings are rejected."""
    if b"\x00" in data:
        raise LandingError("binary content (NUL bytes) in a text file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LandingError(f"not UTF-8 text (binary or wrong encoding) at byte {exc.start}") from exc
