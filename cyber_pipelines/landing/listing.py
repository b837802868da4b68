"""What a look at the landing folder sees: its entries, their identity, and which ones are stable.

Listing reads directory entries and their ``lstat`` only: no file is opened, so a tick stays cheap
however large the files are. An entry's identity is (name, size, mtime in ns); it is *stable* when a
later look finds the same identity (the writer has stopped), or at once when the writer left a
``<name>.done`` marker beside it. Hidden names, in-progress suffixes (``.part``, ``.tmp``, ...) and the
landing folder's own sub-folders are never listed; symlinks, folders and other non-regular entries are
listed (the intake quarantines them with a reason). On object storage (``s3://bucket/inbox``) one LIST
request is made and the identity also holds the object's ETag (``landing.objects``).
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cyber_pipelines.landing.layout import DONE_SUFFIX, RESERVED, is_in_progress
from cyber_pipelines.storage import StoragePath, is_remote, local_path

MAX_FILES_PER_RUN = 100
MAX_BYTES_PER_RUN = 2 << 30


@dataclass(frozen=True)
class Entry:
    """One entry of the landing folder as it was seen."""

    name: str
    size: int
    mtime_ns: int
    regular: bool
    done: bool = False  # a "<name>.done" marker was beside it
    etag: str = ""  # on object storage: the object's ETag (part of its identity)

    @property
    def token(self) -> str:
        """A short digest of the identity (name, size, mtime, ETag): what the sensor's cursor keeps."""
        key = f"{self.name}\x00{self.size}\x00{self.mtime_ns}" + (f"\x00{self.etag}" if self.etag else "")
        return hashlib.blake2b(key.encode(), digest_size=8).hexdigest()


def list_landing(root: StoragePath) -> list[Entry]:
    """The entries of ``root`` that may be drops, sorted by name; empty when the folder does not exist."""
    if is_remote(root):
        from cyber_pipelines.landing.objects import list_objects

        return list_objects(root)
    try:
        scan = list(os.scandir(local_path(root)))
    except FileNotFoundError:
        return []
    names = {e.name for e in scan}
    entries = []
    for item in scan:
        name = item.name
        if is_in_progress(name) or name in RESERVED:
            continue
        try:
            info = item.stat(follow_symlinks=False)
        except FileNotFoundError:  # removed while listing
            continue
        regular = stat.S_ISREG(info.st_mode)
        entries.append(Entry(name, info.st_size, info.st_mtime_ns, regular, done=name + DONE_SUFFIX in names))
    return sorted(entries, key=lambda e: e.name)


@dataclass(frozen=True)
class Decision:
    """What to do with the listed entries: take the stable ones, keep watching the others."""

    ready: list[Entry]  # stable and not yet taken: request their intake now
    waiting: list[Entry]  # seen for the first time, or changed since the last look
    observed: list[str]  # tokens of ``waiting``: the next look compares with them
    requested: list[str]  # tokens of entries taken (now or before) that are still in the folder


def decide(entries: Iterable[Entry], observed: Iterable[str], requested: Iterable[str]) -> Decision:
    """Compare a listing with the previous look's tokens (both from the sensor's cursor).

    An entry whose identity was already requested is not requested again while it stays unchanged;
    one that changed (rewritten, appended to) is a new identity and waits to be stable again."""
    seen, taken = set(observed), set(requested)
    ready: list[Entry] = []
    waiting: list[Entry] = []
    still_taken: list[str] = []
    for entry in entries:
        token = entry.token
        if token in taken:
            still_taken.append(token)
        elif entry.done or token in seen:
            ready.append(entry)
            still_taken.append(token)
        else:
            waiting.append(entry)
    return Decision(ready, waiting, [e.token for e in waiting], still_taken)


def stable_by_age(entries: Iterable[Entry], min_age_s: float, now: float | None = None) -> list[Entry]:
    """Entries with a ``.done`` marker or not modified for ``min_age_s`` (for one-off runs without a
    sensor cursor; the intake compares the identity again before it reads)."""
    cutoff_ns = int(((time.time() if now is None else now) - min_age_s) * 1e9)
    return [e for e in entries if e.done or e.mtime_ns <= cutoff_ns]


def batches(
    entries: Sequence[Entry], max_files: int = MAX_FILES_PER_RUN, max_bytes: int = MAX_BYTES_PER_RUN
) -> list[list[Entry]]:
    """Entries grouped into intake runs of at most ``max_files`` files and about ``max_bytes``."""
    groups: list[list[Entry]] = []
    size = 0
    for entry in entries:
        if not groups or len(groups[-1]) >= max_files or (size + entry.size > max_bytes and groups[-1]):
            groups.append([])
            size = 0
        groups[-1].append(entry)
        size += entry.size
    return groups


def batch_key(entries: Iterable[Entry]) -> str:
    """A run key for an intake of exactly these entries (their identities): the same files unchanged
    give the same key (Dagster runs it once); a file rewritten with new content gives a new one."""
    digest = hashlib.sha256("\n".join(sorted(e.token for e in entries)).encode()).hexdigest()[:20]
    return f"landing-intake:{digest}"
