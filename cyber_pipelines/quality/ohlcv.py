"""The Great Expectations suite for hourly OHLCV candles: the one contract of the candle table.

Each expectation is tagged with its Dagster check (``OHLCV_CHECKS``). The row suite runs on the
candidate candles of many days at once; a per-day summary (distinct hours, gap ratio, timestamps off
the hourly grid or outside their day) carries the day-level rules. The gap ratio of a day is
``missing hours / 24``; a day passes when it is at most ``max_gap_ratio``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

import great_expectations as gx
import polars as pl

from cyber_pipelines.market.schema import OHLCV_COLUMNS, PRICE_COLUMNS
from cyber_pipelines.quality.audit import DayAudit, audit_days, concat_days
from cyber_pipelines.quality.checks import HOURS_PER_DAY, OHLCV_CHECKS
from cyber_pipelines.quality.gx import tag

E = gx.expectations
SUITE_NAME = "ohlcv_hourly"
FINITE = 1e300  # GX has no finiteness rule: an upper bound no real price or volume reaches rejects +inf


def row_expectations() -> list[gx.expectations.Expectation]:
    numeric = OHLCV_COLUMNS[1:]
    return [
        *tag(
            "ohlcv_schema",
            E.ExpectTableColumnsToMatchSet(
                column_set=OHLCV_COLUMNS, exact_match=True, description="columns are exactly the OHLCV set"
            ),
            E.ExpectColumnValuesToBeOfType(
                column="timestamp", type_="Timestamp", description="timestamp is a timezone-aware datetime"
            ),
            *(
                E.ExpectColumnValuesToBeOfType(column=c, type_="float64", description=f"{c} is float64")
                for c in numeric
            ),
            *(E.ExpectColumnValuesToNotBeNull(column=c, description=f"{c} has no nulls") for c in OHLCV_COLUMNS),
        ),
        *tag(
            "ohlcv_timestamps",
            E.ExpectColumnValuesToBeUnique(column="timestamp", description="timestamps are unique"),
            # Non-strict, so a duplicate fails only uniqueness; together they mean strictly increasing.
            E.ExpectColumnValuesToBeIncreasing(column="timestamp", description="timestamps are increasing"),
        ),
        *tag(
            "ohlcv_price_integrity",
            *(
                # A missing value is the schema check's failure, not this one's.
                E.ExpectColumnPairValuesAToBeGreaterThanB(
                    column_A=a,
                    column_B=b,
                    or_equal=True,
                    ignore_row_if="either_value_is_missing",
                    description=f"{b} <= {a}",
                )
                for a, b in (("high", "open"), ("high", "close"), ("open", "low"), ("close", "low"))
            ),
            *(
                E.ExpectColumnValuesToBeBetween(
                    column=c, min_value=0, max_value=FINITE, strict_min=True, description=f"{c} > 0 and finite"
                )
                for c in PRICE_COLUMNS
            ),
        ),
        *tag(
            "ohlcv_volume",
            E.ExpectColumnValuesToBeBetween(
                column="volume", min_value=0, max_value=FINITE, description="volume >= 0 and finite"
            ),
        ),
    ]


def summary_expectations(max_gap_ratio: float) -> list[gx.expectations.Expectation]:
    if not 0 <= max_gap_ratio < 1:
        raise ValueError(f"max_gap_ratio must be in [0, 1), got {max_gap_ratio}")
    return [
        *tag(
            "ohlcv_timestamps",
            E.ExpectColumnValuesToBeBetween(
                column="off_grid", min_value=0, max_value=0, description="timestamps on the hour"
            ),
            E.ExpectColumnValuesToBeBetween(
                column="outside_day", min_value=0, max_value=0, description="timestamps inside their partition day"
            ),
        ),
        *tag(
            "ohlcv_gap_ratio",
            E.ExpectColumnValuesToBeBetween(
                column="gap_ratio",
                min_value=0,
                max_value=max_gap_ratio + 1e-9,
                description=f"gap ratio <= {max_gap_ratio} of {HOURS_PER_DAY} hourly candles",
            ),
        ),
    ]


def day_summary(rows: pl.DataFrame, row_days: list[date], days: list[date]) -> pl.DataFrame:
    """Per day: distinct hourly candles, gap ratio, timestamps off the hour, rows outside the day."""
    base = pl.DataFrame({"day": days}, schema={"day": pl.Date})
    ts = rows.schema.get("timestamp")
    if not rows.height or not isinstance(ts, pl.Datetime):
        counts = base.with_columns(candles=pl.lit(0), off_grid=pl.lit(0), outside_day=pl.lit(0))
    else:
        stamps = rows.select("timestamp").with_columns(day=pl.Series(row_days, dtype=pl.Date))
        utc = pl.col("timestamp").dt.convert_time_zone("UTC") if ts.time_zone else pl.col("timestamp")
        inside = utc.dt.date() == pl.col("day")
        per_day = stamps.group_by("day").agg(
            candles=pl.col("timestamp").filter(inside).n_unique(),
            off_grid=(utc.dt.epoch("us") % 3_600_000_000 != 0).sum(),
            outside_day=(~inside).sum(),
        )
        counts = base.join(per_day, on="day", how="left").fill_null(0)
    hours = pl.col("candles").clip(upper_bound=HOURS_PER_DAY)
    return counts.with_columns(gap_ratio=(HOURS_PER_DAY - hours) / HOURS_PER_DAY).cast(
        {"candles": pl.Int64, "off_grid": pl.Int64, "outside_day": pl.Int64}
    )


def audit_ohlcv(candidates: Mapping[date, pl.DataFrame], max_gap_ratio: float) -> DayAudit:
    """Audit one pair's candidate candles per UTC day (``candidates[day]`` = that day's rows)."""
    if not candidates:
        raise ValueError("audit_ohlcv needs the candidates of at least one day")
    rows, row_days = concat_days(candidates)
    summary = day_summary(rows, row_days, sorted(candidates))
    return audit_days(
        SUITE_NAME,
        OHLCV_CHECKS,
        candidates,
        row_expectations(),
        summary,
        summary_expectations(max_gap_ratio),
    )
