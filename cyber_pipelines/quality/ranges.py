"""Quality suites over a run's partitions: many days (and pairs) validated in a few GX runs."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta

import great_expectations.expectations as E
import polars as pl

from cyber_pipelines.quality.gx import SuiteReport, run_suite
from cyber_pipelines.quality.ohlcv import HOURS_PER_DAY, hourly_grid, min_filled_hours, ohlcv_expectations


def merge_reports(name: str, reports: Iterable[SuiteReport], rows: int | None = None) -> SuiteReport:
    """One report holding every outcome of ``reports`` (success only when all succeeded).

    ``rows`` defaults to the sum over the reports: right for reports on disjoint frames (pairs); pass
    the validated table's rows when some reports ran on derived frames (per-day counts)."""
    reports = list(reports)
    results = tuple(r for report in reports for r in report.results)
    return SuiteReport(
        suite_name=name,
        success=all(r.success for r in results),
        results=results,
        rows=sum(r.rows for r in reports) if rows is None else rows,
        elapsed_s=round(sum(r.elapsed_s for r in reports), 4),
    )


def validate_ohlcv_days_gx(candles: pl.DataFrame, days: list[date], max_gap_ratio: float) -> SuiteReport:
    """One pair's candles over ``days``: the OHLCV suite on the whole hourly grid of those days, plus
    the gap ratio of every single day (a GX suite on the per-day candle counts)."""
    if not days:
        raise ValueError("validate_ohlcv_days_gx needs at least one day")
    days = sorted(set(days))
    first = datetime(days[0].year, days[0].month, days[0].day, tzinfo=UTC)
    last = datetime(days[-1].year, days[-1].month, days[-1].day, tzinfo=UTC) + timedelta(hours=HOURS_PER_DAY - 1)
    grid = [t for t in hourly_grid(first, last) if t.date() in set(days)]
    whole = run_suite(candles, "ohlcv_hourly", ohlcv_expectations(len(grid), max_gap_ratio, grid=grid))
    counts = (
        pl.DataFrame({"day": days})
        .join(
            candles.group_by(day=pl.col("timestamp").dt.date()).agg(candles=pl.col("timestamp").n_unique()),
            on="day",
            how="left",
        )
        .with_columns(pl.col("candles").fill_null(0))
    )
    per_day = run_suite(
        counts,
        "ohlcv_daily_gaps",
        [
            E.ExpectColumnValuesToBeBetween(
                column="candles",
                min_value=min_filled_hours(HOURS_PER_DAY, max_gap_ratio),
                max_value=HOURS_PER_DAY,
                description=f"every day: gap ratio <= {max_gap_ratio} of {HOURS_PER_DAY} hourly candles",
            )
        ],
    )
    return merge_reports("ohlcv", [whole, per_day], rows=candles.height)
