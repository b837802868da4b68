"""The Great Expectations OHLCV suite (the one contract of the candle table) and the generic GX runner."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import great_expectations as gx
import polars as pl
import pytest

from cyber_pipelines.market.schema import OHLCV_SCHEMA
from cyber_pipelines.quality.gx import run_suite, tag
from cyber_pipelines.quality.ohlcv import OHLCV_CHECKS, audit_ohlcv, row_expectations, summary_expectations

DAY = date(2024, 3, 1)
NEXT = date(2024, 3, 2)


def valid_day(day: date = DAY, hours: int = 24) -> pl.DataFrame:
    midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
    rows = [(midnight + timedelta(hours=h), 100.0 + h, 102.0 + h, 99.0 + h, 101.0 + h, 5.0 + h) for h in range(hours)]
    return pl.DataFrame(rows, schema=OHLCV_SCHEMA, orient="row")


def set_value(df: pl.DataFrame, row: int, column: str, value: object) -> pl.DataFrame:
    return df.with_columns(
        pl.when(pl.int_range(df.height) == row).then(pl.lit(value)).otherwise(pl.col(column)).alias(column)
    )


VARIANTS: dict[str, tuple[str, Callable[[pl.DataFrame], pl.DataFrame]]] = {
    "null close": ("ohlcv_schema", lambda df: set_value(df, 5, "close", None).cast(OHLCV_SCHEMA)),  # type: ignore[arg-type]
    "extra column": ("ohlcv_schema", lambda df: df.with_columns(trades=pl.lit(1.0))),
    "integer volume": ("ohlcv_schema", lambda df: df.with_columns(pl.col("volume").cast(pl.Int64))),
    "duplicate hour": ("ohlcv_timestamps", lambda df: pl.concat([df.head(6), df.slice(5)])),
    "decreasing": ("ohlcv_timestamps", lambda df: pl.concat([df.slice(6, 1), df.head(6), df.slice(7)])),
    "off the hour": (
        "ohlcv_timestamps",
        lambda df: df.with_columns(
            pl.when(pl.int_range(df.height) == 23)
            .then(pl.col("timestamp") + pl.duration(minutes=30))
            .otherwise(pl.col("timestamp"))
            .alias("timestamp")
        ),
    ),
    "low above open": ("ohlcv_price_integrity", lambda df: set_value(df, 5, "low", 105.5)),
    "high below close": ("ohlcv_price_integrity", lambda df: set_value(df, 5, "high", 100.5)),
    "infinite high": ("ohlcv_price_integrity", lambda df: set_value(df, 5, "high", float("inf"))),
    "negative volume": ("ohlcv_volume", lambda df: set_value(df, 5, "volume", -1.0)),
    "infinite volume": ("ohlcv_volume", lambda df: set_value(df, 5, "volume", float("inf"))),
    "two hours missing": ("ohlcv_gap_ratio", lambda df: df.filter(~pl.int_range(df.height).is_in([3, 4]))),
}


def test_clean_days_pass_every_check() -> None:
    audit = audit_ohlcv({DAY: valid_day(DAY), NEXT: valid_day(NEXT)}, 0.05)
    assert audit.failures == ()
    assert audit.passed_days() == [DAY, NEXT]
    assert {o.check for o in audit.outcomes} == set(OHLCV_CHECKS)  # every check has expectations


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_a_broken_day_fails_exactly_its_check_on_that_day_only(variant: str) -> None:
    check, breaks = VARIANTS[variant]
    audit = audit_ohlcv({DAY: valid_day(DAY), NEXT: breaks(valid_day(NEXT))}, 0.05)
    assert {f.check for f in audit.failures} == {check}, audit.failures
    assert audit.failed_days() == {NEXT}
    assert audit.passed_days() == [DAY]


def test_a_failure_names_its_row_and_value() -> None:
    audit = audit_ohlcv({NEXT: set_value(valid_day(NEXT), 5, "volume", -1.0)}, 0.05)
    (failure,) = audit.failures
    assert failure.rule == "volume >= 0 and finite"
    assert "2024-03-02T05:00:00" in failure.detail and "volume = -1" in failure.detail


def test_gap_failure_gives_the_observed_ratio() -> None:
    audit = audit_ohlcv({DAY: valid_day(DAY, hours=18)}, 0.05)
    (failure,) = audit.failures
    assert failure.check == "ohlcv_gap_ratio" and failure.detail == "gap_ratio = 0.25"
    assert audit.summary["gap_ratio"].to_list() == [0.25]


@pytest.mark.parametrize(("max_gap_ratio", "hours", "passes"), [(0.05, 23, True), (0.05, 22, False), (0.0, 23, False)])
def test_gap_ratio_boundary(max_gap_ratio: float, hours: int, passes: bool) -> None:
    # 1 missing hour of 24 is 0.042 <= 0.05; 2 missing is 0.083.
    audit = audit_ohlcv({DAY: valid_day(DAY, hours=hours)}, max_gap_ratio)
    assert (audit.failures == ()) is passes


def test_a_day_without_candles_fails_the_gap_check() -> None:
    audit = audit_ohlcv({DAY: valid_day(DAY), NEXT: valid_day(NEXT).clear()}, 0.05)
    assert audit.failed_days("ohlcv_gap_ratio") == {NEXT}
    assert audit.failed_days() == {NEXT}


def test_candles_of_another_day_fail_the_timestamps_check() -> None:
    audit = audit_ohlcv({DAY: pl.concat([valid_day(DAY), valid_day(NEXT).head(1)])}, 0.05)
    assert {f.check for f in audit.failures} == {"ohlcv_timestamps"}


def test_every_expectation_is_tagged_with_a_known_check() -> None:
    for expectation in [*row_expectations(), *summary_expectations(0.05)]:
        assert (expectation.meta or {}).get("check") in OHLCV_CHECKS


def test_an_untagged_expectation_is_an_error() -> None:
    untagged = gx.expectations.ExpectColumnValuesToBeUnique(column="timestamp")
    with pytest.raises(ValueError, match="must be tagged"):
        run_suite(valid_day(), "s", [*row_expectations(), untagged], OHLCV_CHECKS)
    wrong = tag("no_such_check", untagged)
    with pytest.raises(ValueError, match="no_such_check"):
        run_suite(valid_day(), "s", wrong, OHLCV_CHECKS)


def test_run_suite_keeps_the_given_order_and_row_positions() -> None:
    df = pl.DataFrame({"x": [1, 2, -3, 4, -5]})
    report = run_suite(
        df,
        "generic",
        tag(
            "c",
            gx.expectations.ExpectColumnValuesToBeBetween(column="x", min_value=0, description="x >= 0"),
            gx.expectations.ExpectColumnValuesToBeUnique(column="x", description="unique"),
        ),
        {"c"},
    )
    assert [r.name for r in report.results] == ["x >= 0", "unique"]
    assert report.results[0].unexpected_rows == (2, 4)
    assert report.results[1].success
