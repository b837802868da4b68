"""Validated moat files staged as Parquet; a day's records are read back from all staged files."""

from __future__ import annotations

import os
import time
from datetime import date
from pathlib import Path

import polars as pl

from cyber_pipelines.moat.schema import MOAT_KEY, MOAT_SCHEMA
from cyber_pipelines.storage import content_hash, write_parquet_atomic


def stage_moat(records: pl.DataFrame, staging_dir: Path) -> Path:
    """Write validated records to ``staging_dir/<content hash>.parquet`` (idempotent).

    Staging marks the file as the newest (mtime), so a file dropped again wins over files staged since."""
    path = staging_dir / f"{content_hash(records)}.parquet"
    if not path.exists():
        write_parquet_atomic(records, path)
    newest = max((p.stat().st_mtime_ns for p in staging_dir.glob("*.parquet") if p != path), default=0)
    stamp = max(time.time_ns(), newest + 1_000)
    os.utime(path, ns=(stamp, stamp))
    return path


def load_staged_moat(staging_dir: Path, day: date) -> pl.DataFrame:
    """Records published on ``day`` (UTC) from every staged file; a later-staged file wins on the same key."""
    files = sorted(staging_dir.glob("*.parquet"), key=lambda p: (p.stat().st_mtime_ns, p.name))
    if not files:
        raise FileNotFoundError(f"no staged moat files in {staging_dir}")
    frames = [pl.read_parquet(f).with_columns(pl.lit(i).alias("_order")) for i, f in enumerate(files)]
    records = (
        pl.concat(frames)
        .filter(pl.col("timestamp").dt.date() == day)
        .sort("_order")
        .unique(subset=MOAT_KEY, keep="last")
        .drop("_order")
        .sort(MOAT_KEY)
    )
    return records.cast(MOAT_SCHEMA)  # type: ignore[arg-type]
