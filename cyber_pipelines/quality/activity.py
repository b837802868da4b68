"""GX suites for the GitHub activity and moat tables (the one contract of each), audited per UTC day."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

import great_expectations as gx
import polars as pl

from cyber_pipelines.github.schema import ACTIVITY_SCHEMA
from cyber_pipelines.moat.schema import MOAT_KEY, MOAT_SCHEMA
from cyber_pipelines.quality.audit import DayAudit, audit_days, concat_days
from cyber_pipelines.quality.checks import GITHUB_CHECKS, MOAT_CHECKS
from cyber_pipelines.quality.gx import tag

E = gx.expectations
COUNT_COLUMNS = ("commits", "authors", "contributors", "open_issues", "stars")


def _per_day(rows: pl.DataFrame, row_days: list[date], days: list[date]) -> pl.DataFrame:
    """Per day: rows and rows whose timestamp falls outside that day."""
    base = pl.DataFrame({"day": days}, schema={"day": pl.Date})
    if not rows.height or not isinstance(rows.schema.get("timestamp"), pl.Datetime):
        return base.with_columns(rows=pl.lit(0, pl.Int64), outside_day=pl.lit(0, pl.Int64))
    per_day = (
        rows.select("timestamp")
        .with_columns(day=pl.Series(row_days, dtype=pl.Date))
        .group_by("day")
        .agg(rows=pl.len().cast(pl.Int64), outside_day=(pl.col("timestamp").dt.date() != pl.col("day")).sum())
    )
    return base.join(per_day, on="day", how="left").fill_null(0).cast({"outside_day": pl.Int64})


def audit_activity(repo: str, candidates: Mapping[date, pl.DataFrame]) -> DayAudit:
    """Audit one repo's candidate hourly activity per UTC day."""
    rows, row_days = concat_days(candidates)
    summary = _per_day(rows, row_days, sorted(candidates))
    row_rules = [
        *tag(
            "github_schema",
            E.ExpectTableColumnsToMatchSet(
                column_set=list(ACTIVITY_SCHEMA), exact_match=True, description="columns are exactly the activity set"
            ),
            *(
                E.ExpectColumnValuesToBeOfType(column=c, type_="int64", description=f"{c} is int64")
                for c in COUNT_COLUMNS
            ),
            *(E.ExpectColumnValuesToNotBeNull(column=c, description=f"{c} has no nulls") for c in ACTIVITY_SCHEMA),
        ),
        *tag(
            "github_counts",
            *(
                E.ExpectColumnValuesToBeBetween(column=c, min_value=0, description=f"{c} >= 0")
                for c in (*COUNT_COLUMNS, "dependency_entropy", "novelty")
            ),
        ),
        *tag(
            "github_unique_repo_hours",
            E.ExpectCompoundColumnsToBeUnique(
                column_list=["repo", "timestamp"],
                ignore_row_if="any_value_is_missing",
                description="no duplicate repo-hour",
            ),
            E.ExpectColumnValuesToBeInSet(column="repo", value_set=[repo], description=f"rows belong to {repo}"),
        ),
    ]
    summary_rules = tag(
        "github_unique_repo_hours",
        E.ExpectColumnValuesToBeBetween(column="rows", min_value=24, max_value=24, description="24 hourly rows a day"),
        E.ExpectColumnValuesToBeBetween(
            column="outside_day", min_value=0, max_value=0, description="timestamps inside their partition day"
        ),
    )
    return audit_days("github_activity", GITHUB_CHECKS, candidates, row_rules, summary, summary_rules)


def audit_moat(candidates: Mapping[date, pl.DataFrame]) -> DayAudit:
    """Audit candidate moat records per UTC publication day."""
    rows, row_days = concat_days(candidates)
    summary = _per_day(rows, row_days, sorted(candidates))
    row_rules = [
        *tag(
            "moat_schema",
            E.ExpectTableColumnsToMatchSet(
                column_set=list(MOAT_SCHEMA), exact_match=True, description="columns are exactly the moat set"
            ),
            E.ExpectColumnValuesToBeOfType(column="value", type_="float64", description="value is float64"),
            *(E.ExpectColumnValuesToNotBeNull(column=c, description=f"{c} has no nulls") for c in MOAT_SCHEMA),
        ),
        *tag(
            "moat_unique_observations",
            E.ExpectCompoundColumnsToBeUnique(
                column_list=MOAT_KEY, ignore_row_if="any_value_is_missing", description="no duplicate observation"
            ),
        ),
        *tag(
            "moat_values_in_range",
            E.ExpectColumnValuesToBeBetween(
                column="value", min_value=-1e300, max_value=1e300, description="values are finite"
            ),
        ),
    ]
    summary_rules = tag(
        "moat_values_in_range",
        E.ExpectColumnValuesToBeBetween(
            column="outside_day", min_value=0, max_value=0, description="timestamps inside their publication day"
        ),
    )
    return audit_days("moat_records", MOAT_CHECKS, candidates, row_rules, summary, summary_rules)
