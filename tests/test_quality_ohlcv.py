"""The Great Expectations OHLCV suite and the generic GX runner."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import great_expectations as gx
import polars as pl
import pytest

from cyber_pipelines.market.schema import OHLCV_SCHEMA
from cyber_pipelines.quality.gx import run_suite
from cyber_pipelines.quality.ohlcv import min_filled_hours, ohlcv_expectations, validate_ohlcv_gx

DAY = date(2024, 3, 1)
MIDNIGHT = datetime(2024, 3, 1, tzinfo=UTC)


def valid_day(hours: int = 24) -> pl.DataFrame:
    rows = [(MIDNIGHT + timedelta(hours=h), 100.0 + h, 102.0 + h, 99.0 + h, 101.0 + h, 5.0 + h) for h in range(hours)]
    return pl.DataFrame(rows, schema=OHLCV_SCHEMA, orient="row")


def set_value(df: pl.DataFrame, row: int, column: str, value: object) -> pl.DataFrame:
    return df.with_columns(
        pl.when(pl.int_range(df.height) == row).then(pl.lit(value)).otherwise(pl.col(column)).alias(column)
    )


def failed(df: pl.DataFrame, day: date | None = DAY, max_gap_ratio: float = 0.05) -> set[tuple[str, str | None]]:
    report = validate_ohlcv_gx(df, day, max_gap_ratio)
    assert report.success == (not report.failures)
    return {(r.expectation, r.column) for r in report.failures}


def test_valid_day_passes_every_expectation() -> None:
    report = validate_ohlcv_gx(valid_day(), DAY, 0.05)
    assert report.success and report.rows == 24
    assert len(report.results) == 26 and all(r.success for r in report.results)
    assert report.results[0].expectation == "expect_table_columns_to_match_set"
    assert report.results[-1].name == "volume >= 0"
    json.dumps(report.to_dict())  # plain JSON-able values
    assert "| close <= high | high,close | yes |" in report.to_markdown()


UNIQUE = ("expect_column_values_to_be_unique", "timestamp")
INCREASING = ("expect_column_values_to_be_increasing", "timestamp")
GRID = ("expect_column_values_to_be_in_set", "timestamp")
GAP = ("expect_column_unique_value_count_to_be_between", "timestamp")
PAIR = "expect_column_pair_values_a_to_be_greater_than_b"
BETWEEN = "expect_column_values_to_be_between"
TYPE = "expect_column_values_to_be_of_type"

VARIANTS: dict[str, tuple[Callable[[pl.DataFrame], pl.DataFrame], set[tuple[str, str | None]]]] = {
    "extra_column": (
        lambda d: d.with_columns(trades=pl.lit(1)),
        {("expect_table_columns_to_match_set", None)},
    ),
    "volume_int": (lambda d: d.with_columns(pl.col("volume").cast(pl.Int64)), {(TYPE, "volume")}),
    "naive_timestamps": (
        lambda d: d.with_columns(pl.col("timestamp").dt.replace_time_zone(None)),
        {(TYPE, "timestamp"), GRID},
    ),
    "null_volume": (
        lambda d: set_value(d, 7, "volume", None),
        {("expect_column_values_to_not_be_null", "volume")},
    ),
    "duplicate_timestamp": (lambda d: set_value(d, 5, "timestamp", MIDNIGHT + timedelta(hours=4)), {UNIQUE}),
    "out_of_order": (lambda d: pl.concat([d[1:2], d[0:1], d[2:]]), {INCREASING}),
    "outside_the_day": (lambda d: set_value(d, 23, "timestamp", MIDNIGHT + timedelta(days=1)), {GRID}),
    "off_the_hour": (
        lambda d: set_value(d, 3, "timestamp", MIDNIGHT + timedelta(hours=3, minutes=30)),
        {GRID},
    ),
    "close_above_high": (lambda d: set_value(d, 2, "close", 1e6), {(PAIR, "high,close")}),
    "open_below_low": (lambda d: set_value(d, 9, "open", 1.0), {(PAIR, "open,low")}),
    "zero_low": (lambda d: set_value(d, 4, "low", 0.0), {(BETWEEN, "low")}),
    "negative_volume": (lambda d: set_value(d, 11, "volume", -1.0), {(BETWEEN, "volume")}),
    "two_hours_missing": (lambda d: d.filter(~pl.int_range(24).is_in([5, 17])), {GAP}),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_broken_variant_fails_exactly_its_expectation(variant: str) -> None:
    breaker, expected = VARIANTS[variant]
    assert failed(breaker(valid_day())) == expected


def test_failure_outcome_names_what_is_wrong() -> None:
    report = validate_ohlcv_gx(set_value(valid_day(), 2, "close", 1e6), DAY, 0.05)
    [outcome] = report.failures
    assert outcome.name == "close <= high"
    assert outcome.summary["unexpected_count"] == 1 and outcome.summary["partial"] == [[104.0, 1e6]]


def test_missing_column_is_reported_not_raised() -> None:
    report = validate_ohlcv_gx(valid_day().drop("volume"), DAY, 0.05)
    assert not report.success
    names = {r.name for r in report.failures}
    assert {"columns are exactly the OHLCV set", "volume has no nulls", "volume >= 0"} <= names
    assert all(r.error for r in report.failures if r.column == "volume")


@pytest.mark.parametrize(
    ("max_gap_ratio", "hours", "passes"),
    [
        (0.0, 24, True),
        (0.0, 23, False),
        (2 / 24, 22, True),
        (2 / 24, 21, False),
        (0.05, 23, True),
        (0.05, 22, False),
    ],
)
def test_gap_ratio_threshold_boundary(max_gap_ratio: float, hours: int, passes: bool) -> None:
    assert failed(valid_day(hours), max_gap_ratio=max_gap_ratio) == (set() if passes else {GAP})


def test_min_filled_hours() -> None:
    assert min_filled_hours(24, 0.0) == 24
    assert min_filled_hours(24, 2 / 24) == 22
    assert min_filled_hours(24, 0.05) == 23
    with pytest.raises(ValueError, match="max_gap_ratio"):
        min_filled_hours(24, 1.0)


def test_without_a_day_the_grid_spans_the_data() -> None:
    three_days = pl.concat([valid_day().with_columns(pl.col("timestamp") + timedelta(days=d)) for d in range(3)])
    assert failed(three_days, day=None) == set()
    assert failed(set_value(three_days, 30, "timestamp", MIDNIGHT + timedelta(hours=30, minutes=1)), None) == {GRID}
    assert failed(three_days.filter(~pl.int_range(72).is_in([10, 20, 30, 40])), None) == {GAP}


def test_run_suite_is_generic_and_keeps_order() -> None:
    df = pl.DataFrame({"rsi": [10.0, 55.0, 101.0], "name": ["a", "b", None]})
    exps = [
        gx.expectations.ExpectColumnValuesToNotBeNull(column="name"),
        gx.expectations.ExpectColumnValuesToBeBetween(column="rsi", min_value=0, max_value=100),
        gx.expectations.ExpectTableRowCountToEqual(value=3),
    ]
    report = run_suite(df, "features", exps)
    assert [(r.expectation, r.success) for r in report.results] == [
        ("expect_column_values_to_not_be_null", False),
        ("expect_column_values_to_be_between", False),
        ("expect_table_row_count_to_equal", True),
    ]
    assert report.results[1].summary["partial"] == [101.0]
    assert report.results[2].summary["observed_value"] == 3
    assert all(e.meta is None for e in exps)  # the caller's expectations are untouched
    assert run_suite(df, "again", exps).results == report.results
    with pytest.raises(ValueError, match="no expectations"):
        run_suite(df, "empty", [])


def test_expectations_for_a_day_without_grid() -> None:
    exps = ohlcv_expectations(24, 0.05)
    assert not any(isinstance(e, gx.expectations.ExpectColumnValuesToBeInSet) for e in exps)
    assert len(ohlcv_expectations(24, 0.05, grid=[MIDNIGHT])) == len(exps) + 1


def test_run_suite_accepts_expectations_of_a_saved_suite() -> None:
    suite = gx.ExpectationSuite(name="saved", expectations=[gx.expectations.ExpectTableRowCountToEqual(value=24)])
    saved = suite.expectations[0]
    saved.id = "5f0c6a57-8a4e-4c36-9a3a-6c1f9b0f1e01"
    assert run_suite(valid_day(), "reuse", [saved]).success
