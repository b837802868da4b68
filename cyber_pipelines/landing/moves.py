"""Moving landing files into ``quarantine/`` or ``processed/`` without ever losing one."""

from __future__ import annotations

import os
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path


def safe_name(name: str) -> str:
    """A name that is safe inside the landing folder's sub-folders (unsafe characters become ``_``)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".")
    cleaned = re.sub(r"\.{2,}", ".", cleaned)[:100]
    return cleaned or "file"


def _reserve(dest_dir: Path, base: Path) -> tuple[Path, Path]:
    """An unused ``dest`` (created empty, so no other mover takes it) and its reason-file path."""
    for n in range(10_000):
        dest = dest_dir / (base.name if n == 0 else f"{base.stem}.{n}{base.suffix}")
        reason_file = dest.with_name(dest.name + ".reason.txt")
        if reason_file.exists():
            continue
        try:
            fd = os.open(dest, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            continue
        os.close(fd)
        return dest, reason_file
    raise RuntimeError(f"no free name for {base.name!r} in {dest_dir}")


def _move_unique(path: Path, dest_dir: Path, note: str | None) -> Path:
    """Move ``path`` into ``dest_dir`` under a safe, unused name; optionally write ``<name>.reason.txt``."""
    if not (path.exists() or path.is_symlink()):
        raise FileNotFoundError(f"cannot move {str(path)!r}: it does not exist")
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest, reason_file = _reserve(dest_dir, Path(safe_name(path.name)))
    if dest.resolve().parent != dest_dir.resolve():
        dest.unlink()
        raise RuntimeError(f"refusing to move {path.name!r} outside {dest_dir}")
    try:
        if note is not None:
            reason_file.write_text(note)
        if path.is_dir() and not path.is_symlink():
            dest.unlink()  # a folder replaces the reserved name (rename does not replace a file by a folder)
        shutil.move(os.fspath(path), os.fspath(dest))
    except BaseException:
        if path.exists() or path.is_symlink():  # the original is intact: undo the reservation
            if dest.is_file() and not dest.is_symlink() and dest.stat().st_size == 0:
                dest.unlink(missing_ok=True)
            reason_file.unlink(missing_ok=True)
        raise
    return dest


def quarantine_note(name: str, where: str, reason: str) -> str:
    """The text of ``<name>.reason.txt`` beside a quarantined file."""
    return (
        f"reason: {reason}\n"
        f"quarantined_at: {datetime.now(UTC).isoformat(timespec='seconds')}\n"
        f"original_name: {name!r}\n"
        f"original_path: {where!r}\n"
    )


def quarantine(path: Path, quarantine_dir: Path, reason: str) -> Path:
    """Move a rejected file into ``quarantine_dir`` with ``<name>.reason.txt`` beside it."""
    path = Path(path)
    return _move_unique(path, quarantine_dir, quarantine_note(path.name, str(path), reason))


def archive(path: Path, processed_dir: Path) -> Path:
    """Move an ingested file into ``processed_dir`` (unique, safe name)."""
    return _move_unique(Path(path), processed_dir, None)


def restore(moved: Path, original: Path) -> Path:
    """Put a file archived too early back where it was (or beside it, if that name was taken since)."""
    target = original
    n = 0
    while target.exists() or target.is_symlink():
        n += 1
        target = original.with_name(f"{original.stem}.{n}{original.suffix}")
    os.rename(moved, target)
    return target
