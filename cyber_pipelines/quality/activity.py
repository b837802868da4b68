"""GX suites for the GitHub activity and moat tables."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import great_expectations.expectations as E
import polars as pl

from cyber_pipelines.github.schema import ACTIVITY_SCHEMA
from cyber_pipelines.moat.schema import MOAT_KEY, MOAT_SCHEMA
from cyber_pipelines.quality.gx import SuiteReport, run_suite

COUNT_COLUMNS = ("commits", "authors", "contributors", "open_issues", "stars")


def _bounds(days: list[date]) -> tuple[datetime, datetime]:
    first, last = min(days), max(days)
    start = datetime(first.year, first.month, first.day, tzinfo=UTC)
    end = datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(days=1)
    return start, end - timedelta(microseconds=1)


def validate_activity_gx(df: pl.DataFrame, partitions: list[tuple[str, date]]) -> SuiteReport:
    """Schema, non-negative counts, one row per repo-hour of the (repo, day) partitions, timestamps in range."""
    repos = sorted({repo for repo, _ in partitions})
    first, last = _bounds([day for _, day in partitions])
    expectations = [
        E.ExpectTableColumnsToMatchSet(
            column_set=list(ACTIVITY_SCHEMA),
            exact_match=True,
            description="columns are exactly the activity set",
        ),
        *(E.ExpectColumnValuesToBeOfType(column=c, type_="int64", description=f"{c} is int64") for c in COUNT_COLUMNS),
        *(E.ExpectColumnValuesToNotBeNull(column=c, description=f"{c} has no nulls") for c in ACTIVITY_SCHEMA),
        *(
            E.ExpectColumnValuesToBeBetween(column=c, min_value=0, description=f"{c} >= 0")
            for c in (*COUNT_COLUMNS, "dependency_entropy", "novelty")
        ),
        E.ExpectCompoundColumnsToBeUnique(column_list=["repo", "timestamp"], description="no duplicate repo-hour"),
        E.ExpectColumnValuesToBeInSet(column="repo", value_set=repos, description="rows belong to the run's repos"),
        E.ExpectTableRowCountToEqual(value=24 * len(partitions), description="24 hourly rows per repo-day"),
        E.ExpectColumnValuesToBeBetween(
            column="timestamp", min_value=first, max_value=last, description="timestamps within the run's days"
        ),
    ]
    return run_suite(df, "github_activity", expectations)


def validate_moat_gx(df: pl.DataFrame, days: list[date]) -> SuiteReport:
    """Schema, no duplicate (timestamp, source, entity, metric), finite values, timestamps inside the days."""
    first, last = _bounds(days)
    expectations = [
        E.ExpectTableColumnsToMatchSet(
            column_set=list(MOAT_SCHEMA), exact_match=True, description="columns are exactly the moat set"
        ),
        E.ExpectColumnValuesToBeOfType(column="value", type_="float64", description="value is float64"),
        *(E.ExpectColumnValuesToNotBeNull(column=c, description=f"{c} has no nulls") for c in MOAT_SCHEMA),
        E.ExpectCompoundColumnsToBeUnique(column_list=MOAT_KEY, description="no duplicate observation"),
        E.ExpectColumnValuesToBeBetween(
            column="value", min_value=-1e300, max_value=1e300, description="values are finite"
        ),
        E.ExpectColumnValuesToBeBetween(
            column="timestamp", min_value=first, max_value=last, description="timestamps within the run's days"
        ),
    ]
    expectations.append(E.ExpectTableRowCountToBeBetween(min_value=1, description="at least one record"))
    return run_suite(df, "moat_records", expectations)
