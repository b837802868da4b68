"""Where things live under a landing folder, and which names are not drops."""

from __future__ import annotations

from dataclasses import dataclass

from cyber_pipelines.storage import StoragePath

QUARANTINE = "quarantine"  # rejected files, each with <name>.reason.txt
PROCESSED = "processed"  # originals whose content was staged
STAGED = "staged"  # <PAIR-KEY>/<sequence>-<hash>.parquet (+ .json manifest)
STAGED_MOAT = "staged_moat"  # <sequence>-<hash>.parquet (+ .json manifest)
PENDING = "pending"  # manifests of staged files whose ingest runs the sensor has not yet handed off
SEQUENCE_FILE = ".sequence"  # the last staging sequence number handed out
RESERVED = frozenset({QUARANTINE, PROCESSED, STAGED, STAGED_MOAT, PENDING, "staging"})

# A file being written under one of these names is not a drop yet (write, then rename).
IN_PROGRESS_SUFFIXES = (".part", ".partial", ".tmp", ".temp", ".crdownload", ".download", ".filepart", ".swp")
DONE_SUFFIX = ".done"  # "<name>.done" beside "<name>": the writer says the file is complete


@dataclass(frozen=True)
class LandingLayout:
    """The sub-folders of one landing folder (a local folder, or a prefix on object storage)."""

    root: StoragePath

    @property
    def quarantine(self) -> StoragePath:
        return self.root / QUARANTINE

    @property
    def processed(self) -> StoragePath:
        return self.root / PROCESSED

    @property
    def staged(self) -> StoragePath:
        return self.root / STAGED

    @property
    def staged_moat(self) -> StoragePath:
        return self.root / STAGED_MOAT

    @property
    def pending(self) -> StoragePath:
        return self.root / PENDING

    @property
    def sequence_file(self) -> StoragePath:
        return self.root / SEQUENCE_FILE


def is_in_progress(name: str) -> bool:
    """Names that are never taken: hidden files, in-progress suffixes and ``.done`` markers."""
    lower = name.lower()
    return name.startswith(".") or lower.endswith(IN_PROGRESS_SUFFIXES) or lower.endswith(DONE_SUFFIX)
