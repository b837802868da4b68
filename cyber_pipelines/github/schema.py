"""GitHub repository activity: one row per repo and hour, day-level metrics repeated on each row."""

from __future__ import annotations

import polars as pl

ACTIVITY_SCHEMA: dict[str, pl.DataType] = {
    "timestamp": pl.Datetime("us", "UTC"),  # start of the hour
    "repo": pl.String(),  # owner/name
    "commits": pl.Int64(),  # commits authored in the hour
    "authors": pl.Int64(),  # unique commit authors in the hour
    "contributors": pl.Int64(),  # unique commit authors in the day
    "open_issues": pl.Int64(),
    "stars": pl.Int64(),
    "dependency_entropy": pl.Float64(),  # contributors * ln(1 + commits_day) / sqrt(max(open_issues, 1))
    "novelty": pl.Float64(),  # commits_day / contributors (0 without contributors)
}
