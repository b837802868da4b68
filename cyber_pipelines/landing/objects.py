"""The landing folder on object storage (``s3://bucket/inbox``): listing, reading, moving, sequences.

S3 has no rename, no symlinks and no locks, but one object is always whole: a PUT becomes visible at once
and complete (a multipart upload only when it completes), so a listed object is never half-written. The
rules of the local folder hold, with these differences:

- identity: name, size, ``LastModified`` (whole seconds) and the ``ETag`` (it changes with the content).
  An object is stable when a later look finds the same identity, or at once with a ``<name>.done`` marker
  object beside it; prefixes ("folders") are listed as non-regular entries and quarantined whole;
- reading: one whole-object GET (one version, never a mix), after which the intake checks the ETag
  again: an object replaced meanwhile is left for the next look;
- quarantine and archive are copy + delete: the destination name is reserved with an exclusive create
  (``If-None-Match``), the reason object is written first, the server-side copy is conditional on the ETag
  that was read (``CopySourceIfMatch``) and checked again after it, and the original is deleted only while
  it still has that ETag (``If-Match`` on the delete). An object replaced during the move stays in the
  inbox (its copy is withdrawn, or it is the staged version that was archived) and is taken again later;
- the staging sequence is a counter object updated by compare-and-swap (``If-None-Match`` to create it,
  ``If-Match`` on its ETag to bump it), so it only grows, across processes.

The conditional requests need an S3 server that supports them (AWS S3, MinIO, moto); where one is
ignored, the matching check before and after still narrows the window to the request itself.
"""

from __future__ import annotations

import contextlib
import stat
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cyber_pipelines.landing.files import MAX_FILE_BYTES, LandingError, check_content, not_regular_reason
from cyber_pipelines.landing.layout import DONE_SUFFIX, RESERVED, SEQUENCE_FILE, is_in_progress
from cyber_pipelines.landing.listing import Entry
from cyber_pipelines.landing.moves import safe_name
from cyber_pipelines.storage import get_object, put_object

if TYPE_CHECKING:
    from upath import UPath

CAS_ATTEMPTS = 50


@dataclass(frozen=True)
class ObjectInfo:
    """What a HEAD (or a listing) says about one key."""

    name: str
    size: int
    mtime_ns: int
    etag: str
    regular: bool  # False: a prefix (a "folder")

    @property
    def identity(self) -> tuple[int, int, str]:
        return self.size, self.mtime_ns, self.etag


def _mtime_ns(value: Any) -> int:
    """``LastModified`` in whole seconds (as ns): a HEAD says seconds, a LIST may add milliseconds."""
    if isinstance(value, datetime):
        return int(value.timestamp()) * 1_000_000_000
    return 0


def _info(raw: dict[str, Any]) -> ObjectInfo:
    name = str(raw["name"]).rstrip("/").rsplit("/", 1)[-1]
    regular = raw.get("type") == "file"
    etag = str(raw.get("ETag") or raw.get("etag") or "") if regular else ""
    size = int(raw.get("size") or 0) if regular else 0
    return ObjectInfo(name, size, _mtime_ns(raw.get("LastModified") or raw.get("mtime")), etag, regular)


def head(path: UPath) -> ObjectInfo | None:
    """The key's current identity, or None when there is nothing under that name."""
    try:
        return _info(path.fs.info(path.path))
    except FileNotFoundError:
        return None


def list_objects(root: UPath) -> list[Entry]:
    """The landing prefix's entries that may be drops, sorted by name (no object is read)."""
    try:
        listing = root.fs.ls(root.path, detail=True)
    except FileNotFoundError:
        return []
    own = root.path.rstrip("/")
    infos = [_info(raw) for raw in listing if str(raw["name"]).rstrip("/") != own]
    names = {i.name for i in infos}
    entries = [
        Entry(i.name, i.size, i.mtime_ns, i.regular, done=i.name + DONE_SUFFIX in names, etag=i.etag)
        for i in infos
        if i.name and not is_in_progress(i.name) and i.name not in RESERVED
    ]
    return sorted(entries, key=lambda e: e.name)


def folder_reason(name: str) -> str:
    return not_regular_reason(Path(name), stat.S_IFDIR)


def read_object(path: UPath, found: ObjectInfo) -> bytes:
    """The object's bytes in one GET; ``LandingError`` for an empty or too large object."""
    if found.size > MAX_FILE_BYTES:
        raise LandingError(f"file too large: {found.size} bytes > {MAX_FILE_BYTES}")
    data = get_object(path)
    check_content(data)
    return data


def _reserve(dest_dir: UPath, base: str) -> tuple[UPath, UPath]:
    """An unused destination key, taken with an exclusive create (no other mover gets it), and its reason key."""
    stem, suffix = Path(base).stem, Path(base).suffix
    for n in range(10_000):
        name = base if n == 0 else f"{stem}.{n}{suffix}"
        dest = dest_dir / name
        reason = dest_dir / f"{name}.reason.txt"
        if reason.exists():
            continue
        try:
            dest.fs.pipe_file(dest.path, b"", mode="create")
        except FileExistsError:
            continue
        return dest, reason
    raise RuntimeError(f"no free name for {base!r} in {dest_dir}")


def _delete_if(path: UPath, etag: str) -> None:
    """Delete ``path`` only while it has ``etag`` (a conditional delete where the server supports it)."""
    fs = path.fs
    if etag and hasattr(fs, "call_s3"):
        bucket, key, _ = fs.split_path(path.path)
        fs.call_s3("delete_object", Bucket=bucket, Key=key, IfMatch=etag)
        fs.invalidate_cache(path.path)
    else:
        fs.rm_file(path.path)


def move_object(path: UPath, dest_dir: UPath, note: str | None, etag: str | None) -> UPath | None:
    """Move ``path`` into ``dest_dir`` under a safe, unused name by copy + delete, writing ``note`` first
    (``<name>.reason.txt``). ``etag``: move only that version; returns None (and leaves nothing behind in
    ``dest_dir``) when the object was replaced meanwhile, or gone. A prefix (``etag`` None) moves whole."""
    fs = path.fs
    dest, reason = _reserve(dest_dir, safe_name(path.name))
    moved = False
    try:
        if note is not None:
            put_object(reason, note.encode())
        if etag is None:  # a prefix: every object under it, then the originals
            keys = fs.find(path.path)
            for key in keys:
                fs.cp_file(key, f"{dest.path}/{key[len(path.path) :].lstrip('/')}")
            fs.rm_file(dest.path)  # the reservation: the copies now live under dest/
            fs.rm(keys)
            moved = True
            return dest
        try:
            fs.cp_file(path.path, dest.path, **({"CopySourceIfMatch": etag} if etag else {}))
        except OSError:
            now = head(path)
            if now is None or now.etag != etag:
                return None  # replaced or removed before the copy (the conditional copy refused)
            raise
        now = head(path)
        if now is None or now.etag != etag:  # replaced (or removed) around the copy: which one was copied?
            return None
        try:
            _delete_if(path, etag)
        except OSError:
            now = head(path)
            if now is not None and now.etag == etag:
                raise  # not a replacement: a real failure (the copy is withdrawn below)
        moved = True  # the copy holds the staged version; a replacement, if any, waits in the inbox
        return dest
    finally:
        if not moved:
            for key in (dest, reason):
                with contextlib.suppress(FileNotFoundError):
                    key.fs.rm_file(key.path)


def next_sequence(staging_root: UPath) -> int:
    """Take the next sequence number of ``staging_root``: a counter object bumped by compare-and-swap."""
    counter = staging_root / SEQUENCE_FILE
    fs = counter.fs
    for attempt in range(CAS_ATTEMPTS):
        found = head(counter)
        try:
            if found is None:
                fs.pipe_file(counter.path, b"1\n", mode="create")
                return 1
            current = int(get_object(counter).decode().strip() or 0)
            fs.pipe_file(counter.path, f"{current + 1}\n".encode(), IfMatch=found.etag)
            return current + 1
        except OSError:  # another intake took a number first (exists, 412, 409): read the counter again
            if attempt == CAS_ATTEMPTS - 1:
                raise
            time.sleep(0.01 * (attempt + 1))
    raise AssertionError("unreachable")
