"""Staged tables: each accepted landing file becomes one Parquet file with a sequence number.

Layout: ``<staging>/<PAIR-KEY>/<sequence>-<hash>.parquet`` for candles (moat files use a flat folder),
each with a ``.json`` manifest beside it (source file, days, rows, sequence). The sequence comes from a
counter in ``<staging>/.sequence``, taken under a file lock (on object storage: bumped by compare-and-swap,
``landing.objects``), so it only grows, across processes. When
staged files overlap, the rows of the highest sequence win, key by key (an hour of candles, or a moat
observation); rows repeated inside that one file are all kept, so the quality suite sees and blocks
them. File modification times play no part.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from cyber_pipelines.keys import normalize_pair, pair_to_key
from cyber_pipelines.landing.layout import SEQUENCE_FILE
from cyber_pipelines.landing.ohlcv import LandingBatch
from cyber_pipelines.market.schema import conform_ohlcv
from cyber_pipelines.storage import (
    StoragePath,
    as_path,
    is_remote,
    local_path,
    scan_parquet,
    write_parquet_atomic,
    write_text_atomic,
)
from cyber_pipelines.tables import split_days

_STAGED_NAME = re.compile(r"^(\d{12})-([0-9a-f]{16})\.parquet$")


@dataclass(frozen=True)
class StagedPart:
    """One staged file: where it is, its sequence and the content hash of the landing file it came from."""

    path: StoragePath
    sequence: int
    content_hash: str

    @property
    def manifest_path(self) -> StoragePath:
        return self.path.with_suffix(".json")


def staged_parts(folder: StoragePath) -> list[StagedPart]:
    """The staged files in ``folder``, lowest sequence first (half-written temp files are not listed)."""
    if not folder.is_dir():
        return []
    if is_remote(folder):
        children: list[tuple[str, StoragePath]] = [(child.name, child) for child in folder.iterdir()]
    else:
        children = [(entry.name, Path(entry.path)) for entry in os.scandir(local_path(folder))]
    parts = []
    for name, path in children:
        match = _STAGED_NAME.match(name)
        if match:
            parts.append(StagedPart(path, int(match[1]), match[2]))
    return sorted(parts, key=lambda p: p.sequence)


def _next_sequence(staging_root: StoragePath) -> int:
    """Take the next sequence number of ``staging_root`` (a counter file under an exclusive lock)."""
    if is_remote(staging_root):
        from cyber_pipelines.landing.objects import next_sequence

        return next_sequence(staging_root)
    staging_root = local_path(staging_root)
    staging_root.mkdir(parents=True, exist_ok=True)
    fd = os.open(staging_root / SEQUENCE_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        text = os.read(fd, 64).decode().strip()
        sequence = (int(text) if text else 0) + 1
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        os.write(fd, f"{sequence}\n".encode())
        os.fsync(fd)
        return sequence
    finally:
        os.close(fd)  # closing releases the lock


def stage_table(
    table: pl.DataFrame, folder: StoragePath, *, staging_root: StoragePath, content_hash: str, manifest: dict[str, Any]
) -> tuple[StagedPart, bool]:
    """Stage ``table`` in ``folder`` under a new sequence, unless the newest staged file there already
    holds this content (then that one is returned). Returns (the staged part, whether it is new).

    The Parquet file is written atomically, then its manifest; older copies of the same content are
    removed (the new sequence supersedes them)."""
    if not re.fullmatch(r"[0-9a-f]{16}", content_hash):
        raise ValueError(f"content_hash must be 16 hex digits, got {content_hash!r}")
    existing = staged_parts(folder)
    if existing and existing[-1].content_hash == content_hash and existing[-1].manifest_path.exists():
        return existing[-1], False
    sequence = _next_sequence(staging_root)
    part = StagedPart(folder / f"{sequence:012d}-{content_hash}.parquet", sequence, content_hash)
    write_parquet_atomic(table, part.path)
    record = {**manifest, "sequence": sequence, "content_hash": content_hash, "rows": table.height}
    record["staged_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    write_text_atomic(json.dumps(record, indent=1), part.manifest_path)
    for old in existing:
        if old.content_hash == content_hash:
            old.path.unlink(missing_ok=True)
            old.manifest_path.unlink(missing_ok=True)
    return part, True


def newest_rows(parts: Iterable[StagedPart], key: list[str], where: pl.Expr) -> pl.DataFrame:
    """The rows matching ``where`` of all ``parts``; for each ``key`` only the rows of the highest
    sequence that has it (repeats inside that file are kept). Returns an empty frame for no parts."""
    frames = [scan_parquet([p.path]).filter(where).with_columns(pl.lit(p.sequence).alias("_seq")) for p in parts]
    if not frames:
        return pl.DataFrame()
    rows = pl.concat(frames).filter(pl.col("_seq") == pl.col("_seq").max().over(key))
    return rows.drop("_seq").collect()


def stage_batch(batch: LandingBatch, staging_dir: StoragePath) -> tuple[StagedPart, bool]:
    """Stage a parsed market file as ``<staging_dir>/<PAIR-KEY>/<sequence>-<hash>.parquet``.

    Returns (the staged part, whether it is new). Idempotent for the newest file: the same content
    staged again while it is the newest of its pair returns that file; content that was overtaken
    since gets a new sequence (a file dropped again is the latest word)."""
    manifest = {
        "kind": "market",
        "file": batch.source_file,
        "pair": batch.pair,
        "pair_key": pair_to_key(batch.pair),
        "days": [d.isoformat() for d in batch.days],
        "source_format": batch.source_format,
        "source_interval_s": batch.source_interval_s,
    }
    return stage_table(
        conform_ohlcv(batch.candles),
        as_path(staging_dir) / pair_to_key(batch.pair),
        staging_root=as_path(staging_dir),
        content_hash=batch.content_hash,
        manifest=manifest,
    )


def _day_bounds(first: date, last: date) -> pl.Expr:
    start = datetime(first.year, first.month, first.day, tzinfo=UTC)
    end = datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(days=1)
    return (pl.col("timestamp") >= start) & (pl.col("timestamp") < end)


def _pair_parts(staging_dir: StoragePath, pair: str) -> tuple[str, list[StagedPart]]:
    pair = normalize_pair(pair)
    pair_dir = as_path(staging_dir) / pair_to_key(pair)
    parts = staged_parts(pair_dir)
    if not parts:
        raise FileNotFoundError(f"nothing staged for {pair} under {pair_dir}")
    return pair, parts


def load_staged_days(staging_dir: StoragePath, pair: str, days: Iterable[date]) -> dict[date, pl.DataFrame]:
    """The staged candles of ``pair`` on each of ``days`` (UTC) in one pass over the staged files.

    For each hour the rows of the highest-sequence staged file that has it win; repeated rows inside
    that file are kept. Days without candles are left out of the result. Raises ``FileNotFoundError``
    (saying where it looked) when nothing at all is staged for the pair."""
    wanted = sorted(set(days))
    _, parts = _pair_parts(staging_dir, pair)
    if not wanted:
        return {}
    rows = newest_rows(parts, ["timestamp"], _day_bounds(wanted[0], wanted[-1]))
    if rows.is_empty():
        return {}
    return split_days(conform_ohlcv(rows), wanted, keep_empty=False)


def load_staged(staging_dir: StoragePath, pair: str, day: date) -> pl.DataFrame:
    """The staged candles of ``pair`` on one UTC ``day`` (see ``load_staged_days``).

    Raises ``FileNotFoundError`` saying where it looked when nothing is staged for that pair or day."""
    pair, _ = _pair_parts(staging_dir, pair)
    found = load_staged_days(staging_dir, pair, [day]).get(day)
    if found is None:
        raise FileNotFoundError(
            f"no staged candles for {pair} on {day} under {as_path(staging_dir) / pair_to_key(pair)}"
        )
    return found
