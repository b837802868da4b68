"""The Great Expectations suite for hourly OHLCV candles.

Gap ratio: with hourly candles a day has ``expected_rows = 24`` slots. The timestamps must lie on the
hourly grid of the day (``expect_column_values_to_be_in_set``), so the number of *distinct* timestamps
is the number of filled slots, and ``expect_column_unique_value_count_to_be_between`` with
``min_value = expected_rows - floor(max_gap_ratio * expected_rows)`` passes exactly when
``missing / expected_rows <= max_gap_ratio``. Without a day, the grid runs from the first timestamp's
hour to the last timestamp; for spans over 31 days only the range is checked (not the alignment to
whole hours), because GX re-serialises a long value set for every metric and would take seconds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

import great_expectations as gx
import polars as pl

from cyber_pipelines.market.schema import OHLCV_COLUMNS
from cyber_pipelines.quality.gx import SuiteReport, run_suite

E = gx.expectations
HOURS_PER_DAY = 24
SUITE_NAME = "ohlcv_hourly"
MAX_GRID_HOURS = 31 * HOURS_PER_DAY


def min_filled_hours(expected_rows: int, max_gap_ratio: float) -> int:
    """The fewest distinct hourly candles that keep the gap ratio at or under ``max_gap_ratio``."""
    if not 0 <= max_gap_ratio < 1:
        raise ValueError(f"max_gap_ratio must be in [0, 1), got {max_gap_ratio}")
    if expected_rows < 1:
        raise ValueError(f"expected_rows must be >= 1, got {expected_rows}")
    return expected_rows - math.floor(max_gap_ratio * expected_rows + 1e-9)


def ohlcv_expectations(
    expected_rows: int, max_gap_ratio: float, *, grid: Sequence[datetime] | None = None
) -> list[gx.expectations.Expectation]:
    """Schema, ordering, price sanity, nulls and gap ratio; ``grid`` = the allowed hourly timestamps."""
    numeric = OHLCV_COLUMNS[1:]
    on_grid: list[gx.expectations.Expectation] = []
    if grid and len(grid) <= MAX_GRID_HOURS:
        on_grid.append(
            E.ExpectColumnValuesToBeInSet(
                column="timestamp",
                value_set=list(grid),
                description=f"timestamps on the hourly grid {grid[0].isoformat()} .. {grid[-1].isoformat()}",
            )
        )
    elif grid:  # GX re-serialises a value set per metric: a long grid would cost seconds
        on_grid.append(
            E.ExpectColumnValuesToBeBetween(
                column="timestamp",
                min_value=grid[0],
                max_value=grid[-1],
                description=f"timestamps within {grid[0].isoformat()} .. {grid[-1].isoformat()}",
            )
        )
    return [
        E.ExpectTableColumnsToMatchSet(
            column_set=OHLCV_COLUMNS, exact_match=True, description="columns are exactly the OHLCV set"
        ),
        E.ExpectColumnValuesToBeOfType(
            column="timestamp", type_="Timestamp", description="timestamp is a timezone-aware datetime"
        ),
        *(E.ExpectColumnValuesToBeOfType(column=c, type_="float64", description=f"{c} is float64") for c in numeric),
        *(E.ExpectColumnValuesToNotBeNull(column=c, description=f"{c} has no nulls") for c in OHLCV_COLUMNS),
        E.ExpectColumnValuesToBeUnique(column="timestamp", description="timestamps are unique"),
        # Non-strict so that a duplicate fails only the uniqueness expectation; together they mean
        # strictly increasing.
        E.ExpectColumnValuesToBeIncreasing(column="timestamp", description="timestamps are increasing"),
        *on_grid,
        E.ExpectColumnUniqueValueCountToBeBetween(
            column="timestamp",
            min_value=min_filled_hours(expected_rows, max_gap_ratio),
            max_value=expected_rows,
            description=f"gap ratio <= {max_gap_ratio} of {expected_rows} hourly candles",
        ),
        *(
            E.ExpectColumnPairValuesAToBeGreaterThanB(column_A=a, column_B=b, or_equal=True, description=f"{b} <= {a}")
            for a, b in (("high", "open"), ("high", "close"), ("open", "low"), ("close", "low"))
        ),
        *(
            E.ExpectColumnValuesToBeBetween(column=c, min_value=0, strict_min=True, description=f"{c} > 0")
            for c in ("open", "high", "low", "close")
        ),
        E.ExpectColumnValuesToBeBetween(column="volume", min_value=0, description="volume >= 0"),
    ]


def hourly_grid(start: datetime, end: datetime) -> list[datetime]:
    """Hourly UTC timestamps from ``start`` (floored to the hour) up to and including ``end``."""
    start, end = (t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC) for t in (start, end))
    first = start.replace(minute=0, second=0, microsecond=0)
    hours = int((end - first) / timedelta(hours=1)) + 1
    return [first + timedelta(hours=h) for h in range(max(hours, 0))]


def validate_ohlcv_gx(df: pl.DataFrame, day: date | None, max_gap_ratio: float = 0.05) -> SuiteReport:
    """Run the OHLCV suite on hourly candles; with ``day`` the candles must lie on that UTC day's grid."""
    grid: list[datetime] | None = None
    if day is not None:
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        grid = hourly_grid(start, start + timedelta(hours=HOURS_PER_DAY - 1))
    elif (
        "timestamp" in df.columns
        and isinstance(df.schema["timestamp"], pl.Datetime)
        and df["timestamp"].drop_nulls().len()
    ):
        stamps = df["timestamp"].drop_nulls()
        grid = hourly_grid(stamps.min(), stamps.max())  # type: ignore[arg-type]
    expected = len(grid) if grid else max(df.height, 1)
    return run_suite(df, SUITE_NAME, ohlcv_expectations(expected, max_gap_ratio, grid=grid))
