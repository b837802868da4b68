"""Partition definitions shared by the asset layers.

The ingest grain is a calendar month per pair (or repo), not a day: Dagster writes several event-log
rows per partition (about 30 ms each on SQLite, measured), against 24 rows of hourly data in a day.
A month holds about 720 rows, so bookkeeping no longer dominates. The unit of audit and publication
inside a month stays the UTC day: a day that fails its checks is not published (its previous version
stays) while the month's other days are. The current month is a partition too (``end_offset=1``);
it is refreshed while it is open and covers the days completed so far.
"""

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta

import dagster as dg

from cyber_pipelines.config import load_settings
from cyber_pipelines.github.activity import key_to_repo
from cyber_pipelines.keys import key_to_pair

PAIRS = "pairs"
REPOS = "repos"


def month_start(day: date) -> date:
    return day.replace(day=1)


def next_month(month: date) -> date:
    return (month.replace(day=28) + timedelta(days=4)).replace(day=1)


monthly_partitions = dg.MonthlyPartitionsDefinition(
    start_date=month_start(load_settings().start_date).isoformat(), end_offset=1
)
pair_partitions = dg.DynamicPartitionsDefinition(name=PAIRS)
repo_partitions = dg.DynamicPartitionsDefinition(name=REPOS)
pair_month_partitions = dg.MultiPartitionsDefinition({"month": monthly_partitions, "pair": pair_partitions})
repo_month_partitions = dg.MultiPartitionsDefinition({"month": monthly_partitions, "repo": repo_partitions})


def last_complete_day(now: datetime | None = None) -> date:
    """The UTC day that ended most recently."""
    return (now or datetime.now(UTC)).astimezone(UTC).date() - timedelta(days=1)


def month_days(month: date, through: date | None = None) -> list[date]:
    """The days of ``month`` from the config's start date through ``through`` (default: yesterday, UTC)."""
    first = max(month_start(month), load_settings().start_date)
    last = min(next_month(month_start(month)) - timedelta(days=1), through or last_complete_day())
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def months_of(days: Iterable[date]) -> list[date]:
    """The distinct months (their first day) that ``days`` fall in, sorted."""
    return sorted({month_start(d) for d in days})


def _month_and_key(partition_key: str | dg.MultiPartitionKey) -> tuple[date, str]:
    """Split ``2024-01-01|BTC-USD``: Dagster orders dimensions by name, so ``month`` comes first."""
    month_part, key_part = str(partition_key).split("|")
    return date.fromisoformat(month_part), key_part


def pair_month(partition_key: str | dg.MultiPartitionKey) -> tuple[str, date]:
    """(``BTC/USD``, first day of the month) from a ``month|pair`` partition key."""
    month, key = _month_and_key(partition_key)
    return key_to_pair(key), month


def pair_month_key(pair_key: str, day: date) -> dg.MultiPartitionKey:
    """The partition of ``pair_key`` (``BTC-USD``) for the month that ``day`` falls in."""
    return dg.MultiPartitionKey({"month": month_start(day).isoformat(), "pair": pair_key})


def repo_month(partition_key: str | dg.MultiPartitionKey) -> tuple[str, date]:
    """(``owner/name``, first day of the month) from a ``month|owner__name`` partition key."""
    month, key = _month_and_key(partition_key)
    return key_to_repo(key), month


def repo_month_key(repo_key: str, day: date) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"month": month_start(day).isoformat(), "repo": repo_key})


def moat_month_key(day: date) -> str:
    return month_start(day).isoformat()
