"""Parsed moat files staged as Parquet with a sequence each; a day's records are read back from them.

Layout and rules are those of ``cyber_pipelines.landing.staging``: ``<staging>/<sequence>-<hash>.parquet``
with a manifest beside it; for each observation key (timestamp, source, entity, metric) the records of
the highest-sequence staged file that has it win, and repeats inside that file are kept (the moat
quality suite blocks their day).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta

import polars as pl

from cyber_pipelines.landing.staging import StagedPart, newest_rows, stage_table, staged_parts
from cyber_pipelines.moat.schema import MOAT_KEY, MOAT_SCHEMA
from cyber_pipelines.storage import StoragePath, as_path
from cyber_pipelines.storage import content_hash as frame_hash
from cyber_pipelines.tables import split_days


def stage_moat(
    records: pl.DataFrame, staging_dir: StoragePath, *, content_hash: str | None = None, source_file: str = ""
) -> tuple[StagedPart, bool]:
    """Stage parsed records as ``staging_dir/<sequence>-<hash>.parquet``.

    ``content_hash`` is the landing file's (default: a hash of the records). Returns (the staged part,
    whether it is new): the content that is already the newest staged file returns that file; older
    content staged again gets a new sequence, so a file dropped again is the latest word."""
    staging_dir = as_path(staging_dir)
    days = sorted({d.isoformat() for d in records["timestamp"].dt.date().to_list()})
    return stage_table(
        records.select([pl.col(c).cast(t) for c, t in MOAT_SCHEMA.items()]),
        staging_dir,
        staging_root=staging_dir,
        content_hash=content_hash or frame_hash(records)[:16],
        manifest={"kind": "moat", "file": source_file, "days": days},
    )


def _empty() -> pl.DataFrame:
    return pl.DataFrame(schema=MOAT_SCHEMA)


def load_staged_moat_days(staging_dir: StoragePath, days: Iterable[date]) -> dict[date, pl.DataFrame]:
    """The staged records published on each of ``days`` (UTC), read in one pass; every day is in the
    result (an empty frame when nothing was published that day). Raises ``FileNotFoundError`` when no
    moat file is staged at all."""
    staging_dir = as_path(staging_dir)
    parts = staged_parts(staging_dir)
    if not parts:
        raise FileNotFoundError(f"no staged moat files in {staging_dir}")
    wanted = sorted(set(days))
    if not wanted:
        return {}
    start = datetime(wanted[0].year, wanted[0].month, wanted[0].day, tzinfo=UTC)
    end = datetime(wanted[-1].year, wanted[-1].month, wanted[-1].day, tzinfo=UTC) + timedelta(days=1)
    rows = newest_rows(parts, MOAT_KEY, (pl.col("timestamp") >= start) & (pl.col("timestamp") < end))
    if rows.is_empty():
        return {day: _empty() for day in wanted}
    return split_days(rows.cast(MOAT_SCHEMA).sort(MOAT_KEY), wanted)  # type: ignore[arg-type]


def load_staged_moat(staging_dir: StoragePath, day: date) -> pl.DataFrame:
    """Records published on ``day`` (UTC) from the staged files (see ``load_staged_moat_days``)."""
    return load_staged_moat_days(staging_dir, [day])[day]
