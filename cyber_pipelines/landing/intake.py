"""Intake of landing files: parse, quarantine a bad file, stage a good one, archive the original.

The intake run (``assets/landing.py``) and the CLI (``process_landing``) call this; the sensor only
lists. For each file:

1. It must still have the identity it was listed with (size, mtime); otherwise it changed since and
   waits for the next look. Symlinks, folders and other non-regular entries are quarantined.
2. Its bytes are read once and hashed; everything below works on those bytes.
3. A file that cannot be parsed is quarantined (``quarantine/<name>`` and ``<name>.reason.txt``) if it
   still holds the bytes that were read; a file that changed meanwhile is left for a later look.
4. A good file is staged whole (one Parquet file under a new sequence) and a manifest is written to
   ``pending/`` for the sensor, which requests the ingest runs of the months it covers.
5. The original moves to ``processed/`` only if its content still hashes to what was staged; a file
   that grew while it was read stays where it is and is staged again, whole, when it is stable: its
   new sequence makes it win over the partial copy. Nothing is half-ingested.

On object storage (``s3://bucket/inbox``) the same steps run on objects (``landing.objects``): the
identity includes the ETag, the bytes come from one GET and the ETag is checked again instead of hashing
the file twice, and quarantine and archive are copy + delete of exactly the version that was read.
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import polars as pl

from cyber_pipelines.keys import pair_to_key
from cyber_pipelines.landing import objects
from cyber_pipelines.landing.files import (
    EXTENSIONS,
    LandingError,
    check_name,
    not_regular_reason,
    read_bytes,
)
from cyber_pipelines.landing.layout import DONE_SUFFIX, LandingLayout
from cyber_pipelines.landing.listing import list_landing, stable_by_age
from cyber_pipelines.landing.moves import archive, quarantine, quarantine_note, restore
from cyber_pipelines.landing.ohlcv import LandingBatch, file_hash, parse_landing_bytes
from cyber_pipelines.landing.staging import stage_batch
from cyber_pipelines.moat.files import HEADER_BYTES, header_is_moat, parse_moat_bytes
from cyber_pipelines.moat.staging import stage_moat
from cyber_pipelines.storage import StoragePath, as_path, is_remote, local_path, write_text_atomic
from cyber_pipelines.tables import first_line

if TYPE_CHECKING:
    from upath import UPath

DEFAULT_MIN_AGE_S = 5.0

Kind = Literal["market", "moat"]


@dataclass(frozen=True)
class StagedFile:
    """A landing file that was staged: what it holds and under which sequence."""

    kind: Kind
    file: str
    pair: str | None  # None for moat files
    days: list[date]
    content_hash: str
    sequence: int
    new: bool = True  # False: this content was already the newest staged file (dropped again)

    @property
    def manifest_id(self) -> str:
        return f"{self.kind}-{self.sequence:012d}-{self.content_hash}"


@dataclass
class IntakeReport:
    """What an intake did with each file it was given."""

    accepted: list[StagedFile] = field(default_factory=list)
    quarantined: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    left: list[tuple[str, str]] = field(default_factory=list)  # (file, why): taken again once stable
    failed: list[tuple[str, str]] = field(default_factory=list)  # (file, error): nothing lost, retry the run

    def merge(self, other: IntakeReport) -> None:
        self.accepted += other.accepted
        self.quarantined += other.quarantined
        self.left += other.left
        self.failed += other.failed


@dataclass(frozen=True)
class Listed:
    """A file to take in, with the identity it was listed with (None: take it as it is now)."""

    name: str
    size: int | None = None
    mtime_ns: int | None = None
    etag: str | None = None  # on object storage: the ETag it was listed with


def pending_manifest(staged: StagedFile) -> dict:
    """The hand-off record the sensor reads to request ingest runs."""
    return {
        "id": staged.manifest_id,
        "kind": staged.kind,
        "file": staged.file,
        "pair": staged.pair,
        "pair_key": pair_to_key(staged.pair) if staged.pair else None,
        "days": [d.isoformat() for d in staged.days],
        "content_hash": staged.content_hash,
        "sequence": staged.sequence,
    }


def read_pending(layout: LandingLayout) -> list[dict]:
    """The pending manifests, lowest sequence first (an unreadable one is skipped: it is being written)."""
    manifests = []
    pending = layout.pending
    if is_remote(pending):
        entries: list[tuple[str, StoragePath]] = [(p.name, p) for p in pending.iterdir()] if pending.is_dir() else []
    else:
        try:
            entries = [(e.name, Path(e.path)) for e in os.scandir(local_path(pending))]
        except FileNotFoundError:
            return []
    for name, path in entries:
        if not name.endswith(".json") or name.startswith("."):
            continue
        try:
            manifests.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
    return sorted(manifests, key=lambda m: (m.get("sequence", 0), m.get("id", "")))


def discard_pending(landing_dir: str | StoragePath, staged: Iterable[StagedFile]) -> None:
    """Drop the pending manifests of ``staged`` files whose ingest the caller ran itself (the CLI), so
    the sensor does not request the same ingest again."""
    pending = LandingLayout(as_path(landing_dir)).pending
    for item in staged:
        (pending / f"{item.manifest_id}.json").unlink(missing_ok=True)


def _unchanged(path: Path, digest: str) -> bool:
    try:
        return file_hash(path.read_bytes()) == digest
    except OSError:
        return False


def _parse(name: str, data: bytes) -> pl.DataFrame | LandingBatch:
    """Moat records or market candles from the bytes; ``LandingError`` saying why they cannot be read.

    A parser crash on a file is about that file, so it is a reason too (the rest of the batch goes on)."""
    suffix = Path(name).suffix.lower()
    try:
        if header_is_moat(data if suffix == ".parquet" else data[:HEADER_BYTES], suffix):
            return parse_moat_bytes(name, data)
        return parse_landing_bytes(name, data)
    except LandingError:
        raise
    except Exception as exc:  # a parser crash on this file: quarantined with the error as its reason
        raise LandingError(f"unexpected {type(exc).__name__} while parsing: {first_line(exc)}") from exc


def _stage(layout: LandingLayout, name: str, digest: str, content: pl.DataFrame | LandingBatch) -> StagedFile:
    """Stage parsed market candles (``LandingBatch``) or moat records (a frame)."""
    if isinstance(content, LandingBatch):
        part, new = stage_batch(content, layout.staged)
        return StagedFile("market", name, content.pair, content.days, digest, part.sequence, new)
    days = sorted(set(content["timestamp"].dt.date().to_list()))
    part, new = stage_moat(content, layout.staged_moat, content_hash=digest, source_file=name)
    return StagedFile("moat", name, None, days, digest, part.sequence, new)


def _remove_marker(path: StoragePath) -> None:
    path.with_name(path.name + DONE_SUFFIX).unlink(missing_ok=True)


def _reject(layout: LandingLayout, path: Path, reason: str, report: IntakeReport) -> None:
    quarantine(path, local_path(layout.quarantine), reason)
    report.quarantined.append((path.name, reason))
    _remove_marker(path)


def _identity(info: os.stat_result) -> tuple[int, int]:
    return info.st_size, info.st_mtime_ns


def intake_one(layout: LandingLayout, listed: Listed, report: IntakeReport) -> None:
    """Take one file in (see the module docstring); the outcome goes into ``report``."""
    name = listed.name
    if is_remote(layout.root):
        _intake_object(layout, layout.root / name, listed, report)
        return
    path = local_path(layout.root) / name
    try:
        info = path.lstat()
    except FileNotFoundError:
        report.left.append((name, "gone: taken by another run, or removed"))
        return
    if listed.size is not None and _identity(info) != (listed.size, listed.mtime_ns):
        report.left.append((name, "changed since it was listed: taken again once it is stable"))
        return
    if not stat.S_ISREG(info.st_mode):
        _reject(layout, path, not_regular_reason(path, info.st_mode), report)
        return
    try:
        check_name(path)
        if path.suffix.lower() not in EXTENSIONS:
            raise LandingError(f"unknown extension {path.suffix!r}; expected one of {sorted(EXTENSIONS)}")
        data = read_bytes(path)
    except LandingError as exc:
        if _identity(path.lstat()) != _identity(info):
            report.left.append((name, f"changed while it was read ({exc}): taken again once it is stable"))
            return
        _reject(layout, path, str(exc), report)
        return
    digest = file_hash(data)
    try:
        parsed = _parse(name, data)
    except LandingError as exc:
        if not _unchanged(path, digest):
            report.left.append((name, f"changed while it was read ({exc}): taken again once it is stable"))
            return
        _reject(layout, path, str(exc), report)
        return
    staged = _stage(layout, name, digest, parsed)
    write_text_atomic(json.dumps(pending_manifest(staged), indent=1), layout.pending / f"{staged.manifest_id}.json")
    report.accepted.append(staged)
    _archive_if_unchanged(layout, path, digest, report)


def _intake_object(layout: LandingLayout, path: UPath, listed: Listed, report: IntakeReport) -> None:
    """``intake_one`` on object storage: the same steps, with the ETag as the content's identity."""
    name = listed.name
    found = objects.head(path)
    if found is None:
        report.left.append((name, "gone: taken by another run, or removed"))
        return
    listed_as = (listed.size, listed.mtime_ns, listed.etag or found.etag)
    if listed.size is not None and found.identity != listed_as:
        report.left.append((name, "changed since it was listed: taken again once it is stable"))
        return
    changed = (name, "replaced while it was read: taken again once it is stable")
    if not found.regular:
        _reject_object(layout, path, objects.folder_reason(name), None, report)
        return
    try:
        check_name(Path(name))
        if Path(name).suffix.lower() not in EXTENSIONS:
            raise LandingError(f"unknown extension {Path(name).suffix!r}; expected one of {sorted(EXTENSIONS)}")
        data = objects.read_object(path, found)
        parsed = _parse(name, data)
    except LandingError as exc:
        if objects.head(path) != found:
            report.left.append(changed)
            return
        _reject_object(layout, path, str(exc), found.etag, report)
        return
    if objects.head(path) != found:  # the GET may have returned a newer version: read it again later
        report.left.append(changed)
        return
    digest = file_hash(data)
    staged = _stage(layout, name, digest, parsed)
    write_text_atomic(json.dumps(pending_manifest(staged), indent=1), layout.pending / f"{staged.manifest_id}.json")
    report.accepted.append(staged)
    if objects.move_object(path, _as_upath(layout.processed), None, found.etag) is None:
        report.left.append(
            (name, "replaced while it was archived: what was read is staged, the new version is taken once stable")
        )
        return
    _remove_marker(path)


def _as_upath(path: StoragePath) -> UPath:
    assert is_remote(path), path
    return path


def _reject_object(layout: LandingLayout, path: UPath, reason: str, etag: str | None, report: IntakeReport) -> None:
    note = quarantine_note(path.name, str(path), reason)
    if objects.move_object(path, _as_upath(layout.quarantine), note, etag) is None:
        report.left.append((path.name, "replaced while it was quarantined: taken again once it is stable"))
        return
    report.quarantined.append((path.name, reason))
    _remove_marker(path)


def _archive_if_unchanged(layout: LandingLayout, path: Path, digest: str, report: IntakeReport) -> None:
    """Archive the original only if it still holds what was staged; otherwise leave it for a later look."""
    try:
        before = path.stat()
    except FileNotFoundError:
        return
    if not _unchanged(path, digest):
        report.left.append(
            (
                path.name,
                "changed while it was read: what was read is staged, the whole file is staged again once it is stable",
            )
        )
        return
    moved = archive(path, local_path(layout.processed))
    after = moved.stat()
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):  # written to while moving
        restore(moved, path)
        report.left.append((path.name, "changed while it was archived: staged again once it is stable"))
        return
    _remove_marker(path)


def intake_files(landing_dir: str | StoragePath, files: Iterable[Listed]) -> IntakeReport:
    """Take in ``files`` of ``landing_dir`` one by one; one file's failure does not stop the others.

    A file that cannot be read as data is quarantined; any other error (disk full while staging)
    leaves the file where it is and is reported in ``failed``."""
    layout = LandingLayout(as_path(landing_dir))
    report = IntakeReport()
    for listed in files:
        try:
            intake_one(layout, listed, report)
        except Exception as exc:  # the file stays where it is; the run reports the failure
            report.failed.append((listed.name, f"{type(exc).__name__}: {first_line(exc)}"))
    return report


def process_landing(
    landing_dir: str | StoragePath, *, min_age_s: float = DEFAULT_MIN_AGE_S, now: float | None = None
) -> IntakeReport:
    """Take in every stable file of ``landing_dir`` the way the intake run does (quarantine included).

    Stable: a ``<name>.done`` marker beside it, or not modified for ``min_age_s`` seconds. Files still
    being written are left for later. The staged files' manifests wait in ``pending/`` for the landing
    sensor; a caller that ingests directly reads ``report.accepted``."""
    root = as_path(landing_dir)
    if not is_remote(root) and not root.is_dir():  # on object storage an empty prefix is an empty folder
        raise FileNotFoundError(f"landing folder {root} does not exist")
    entries = stable_by_age(list_landing(root), min_age_s, time.time() if now is None else now)
    return intake_files(root, [Listed(e.name, e.size, e.mtime_ns, e.etag or None) for e in entries])
