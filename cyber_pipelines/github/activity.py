"""Hourly repository activity for one UTC day, safe repo partition keys and the repo -> asset map.

Day-level metrics (repeated on every hourly row):

* ``contributors``: unique commit authors of the day;
* ``dependency_entropy = contributors * ln(1 + commits_day) / sqrt(max(open_issues, 1))``: ``ln(1 + x)``
  instead of ``ln(x)`` and the floor of one open issue keep it finite and >= 0 for zero commits or zero
  open issues (a day without commits scores 0; a repo without open issues is divided by 1);
* ``novelty = commits_day / contributors``, 0 on a day without contributors.

Point in time: a stored row holds its day's totals, which are only known once the day is over, so
``contributors`` at 00:00 would count authors who commit later that day. The stored table is the
day's record; every reader that lines activity up with time goes through ``point_in_time_activity``,
which keeps the hourly counts (``commits``, ``authors``) at their commit hour and shows on each row
the day metrics (``DAY_METRICS``) of the last day published by then: a day is published
``DAY_METRICS_LAG`` (1 hour) after it ends at midnight UTC, the time its partition is fetched and
audited. So day D's metrics appear at 01:00 of D+1; the rows of D show D-1's from 01:00 (D-2's at
00:00), never D's.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime, time, timedelta

import polars as pl

from cyber_pipelines.github.schema import ACTIVITY_SCHEMA

# GitHub's rules: an owner is 1-39 alphanumerics or single inner hyphens (no "_"); a repository name
# is 1-100 of [A-Za-z0-9._-], not "." or "..". "..." is refused too, since partition keys never hold it.
_OWNER = re.compile(r"^[A-Za-z0-9](?:-?[A-Za-z0-9]){0,38}$")
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,100}$")
_SYMBOL = re.compile(r"^[A-Z0-9]{2,12}$")
_KEY_SEP = "__"

# day-level columns (one value per repo and day, repeated on its hourly rows) and when they publish
DAY_METRICS = ("contributors", "open_issues", "stars", "dependency_entropy", "novelty")
DAY_METRICS_LAG = timedelta(hours=1)  # after the day's end (midnight UTC): fetch + audit of the partition


def _check_repo(repo: str) -> tuple[str, str]:
    owner, sep, name = repo.partition("/")
    if not sep or not _OWNER.match(owner) or not _NAME.match(name) or name in {".", ".."} or "..." in name:
        raise ValueError(
            f"not a GitHub repository: {repo!r} (expected owner/name; the owner is letters, digits and "
            "single inner hyphens, the name letters, digits, '.', '_' and '-', without '...')"
        )
    return owner, name


def repo_to_key(repo: str) -> str:
    """``ethereum/go-ethereum`` -> ``ethereum__go-ethereum`` (a partition key without ``/ | , [ ]``)."""
    owner, name = _check_repo(repo)
    return f"{owner}{_KEY_SEP}{name}"


def key_to_repo(key: str) -> str:
    """``owner__name`` -> ``owner/name`` (owners hold no ``_``; split at the first ``__``)."""
    owner, sep, name = key.partition(_KEY_SEP)
    if not sep:
        raise ValueError(f"not a repository partition key: {key!r} (expected owner__name)")
    repo = f"{owner}/{name}"
    try:
        _check_repo(repo)
    except ValueError:
        raise ValueError(f"not a repository partition key: {key!r} (expected owner__name)") from None
    return repo


def validate_repo_map(raw: object) -> dict[str, list[str]]:
    """Check a ``repos`` mapping: valid repo names, unique ignoring case, non-empty upper-case symbols."""
    if not isinstance(raw, dict):
        raise ValueError(f"'repos' must be a mapping of owner/name to asset symbols, got {type(raw).__name__}")
    out: dict[str, list[str]] = {}
    seen: dict[str, str] = {}
    for repo, symbols in raw.items():
        _check_repo(str(repo))
        if str(repo).lower() in seen:
            raise ValueError(f"repos: {repo!r} repeats {seen[str(repo).lower()]!r} (GitHub ignores case)")
        seen[str(repo).lower()] = str(repo)
        if isinstance(symbols, str) or not isinstance(symbols, list | tuple) or not symbols:
            raise ValueError(f"repos: {repo!r} must map to a non-empty list of asset symbols, got {symbols!r}")
        norm = [str(s).strip().upper() for s in symbols]
        bad = [s for s in norm if not _SYMBOL.match(s)]
        if bad:
            raise ValueError(f"repos: {repo!r} has invalid asset symbols {bad} (expected e.g. ETH)")
        out[str(repo)] = list(dict.fromkeys(norm))
    return out


def build_activity(
    repo: str, day: date, commits: list[tuple[datetime, str]], open_issues: int, stars: int
) -> pl.DataFrame:
    """24 hourly rows in ``ACTIVITY_SCHEMA`` for the UTC ``day`` from ``(timestamp, author)`` commits.

    Timestamps must be timezone-aware; every commit must fall within the day (else ``ValueError``).
    """
    _check_repo(repo)
    if open_issues < 0 or stars < 0:
        raise ValueError(f"{repo}: open_issues and stars must be >= 0, got {open_issues} and {stars}")
    naive = [ts for ts, _ in commits if ts.tzinfo is None or ts.utcoffset() is None]
    if naive:
        raise ValueError(f"{repo}: commit timestamps must be timezone-aware (UTC); first naive: {naive[0]}")
    if any(not author for _, author in commits):
        raise ValueError(f"{repo}: every commit needs a non-empty author")
    start = datetime.combine(day, time(), tzinfo=UTC)
    end = start + timedelta(days=1)
    log = pl.DataFrame(
        {"timestamp": [ts for ts, _ in commits], "author": [a for _, a in commits]},
        schema={"timestamp": ACTIVITY_SCHEMA["timestamp"], "author": pl.String()},
    )
    outside = log.filter((pl.col("timestamp") < start) | (pl.col("timestamp") >= end))
    if outside.height:
        raise ValueError(f"{repo}: {outside.height} commits fall outside {day} UTC, first at {outside['timestamp'][0]}")
    hourly = log.group_by(pl.col("timestamp").dt.truncate("1h")).agg(
        commits=pl.len().cast(pl.Int64), authors=pl.col("author").n_unique().cast(pl.Int64)
    )
    contributors = log["author"].n_unique()
    hours = pl.DataFrame({"timestamp": pl.datetime_range(start, end, "1h", closed="left", time_unit="us", eager=True)})
    return (
        hours.join(hourly, on="timestamp", how="left")
        .with_columns(
            pl.col("commits", "authors").fill_null(0),
            repo=pl.lit(repo),
            contributors=pl.lit(contributors, dtype=pl.Int64),
            open_issues=pl.lit(open_issues, dtype=pl.Int64),
            stars=pl.lit(stars, dtype=pl.Int64),
        )
        .with_columns(
            dependency_entropy=pl.col("contributors")
            * pl.col("commits").sum().log1p()
            / math.sqrt(max(open_issues, 1)),
            novelty=pl.when(pl.col("contributors") > 0)
            .then(pl.col("commits").sum() / pl.col("contributors"))
            .otherwise(0.0),
        )
        .select([pl.col(name).cast(dtype) for name, dtype in ACTIVITY_SCHEMA.items()])
        .sort("timestamp")
    )


def point_in_time_activity(activity: pl.DataFrame, lag: timedelta = DAY_METRICS_LAG) -> pl.DataFrame:
    """Hourly activity with each row's day metrics replaced by what was published by its start.

    ``commits`` and ``authors`` stay at their commit hour. ``DAY_METRICS`` on a row starting at ``t``
    are those of the repo's latest day ``d`` with ``end(d) + lag <= t`` (null before the first such
    day; a missing day keeps the previous day's values, stale but never early); ``day_metrics_date``
    says which day they describe. See the module docstring.
    """
    if lag < timedelta(0):
        raise ValueError(f"the publication lag must be >= 0, got {lag}")
    missing = [c for c in ("timestamp", "repo", *DAY_METRICS) if c not in activity.columns]
    if missing:
        raise ValueError(f"activity is missing columns {missing}; have {activity.columns}")
    ts_type = activity.schema["timestamp"]
    days = (
        activity.group_by("repo", pl.col("timestamp").dt.date().alias("day_metrics_date"))
        .agg(pl.col(list(DAY_METRICS)).first())
        .with_columns(published_at=(pl.col("day_metrics_date").cast(ts_type) + pl.duration(days=1) + lag).cast(ts_type))
        .sort("published_at")
    )
    order = [*activity.columns, "day_metrics_date"]
    return (
        activity.drop(list(DAY_METRICS))
        .with_row_index("_row")
        .sort("timestamp")
        .join_asof(
            days, left_on="timestamp", right_on="published_at", by="repo", strategy="backward", check_sortedness=False
        )  # both sides are sorted by time above; polars cannot check that within the "by" groups
        .sort("_row")
        .select(order)
    )
