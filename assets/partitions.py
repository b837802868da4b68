"""Partition definitions shared by the asset layers."""

from datetime import date

import dagster as dg

from cyber_pipelines.config import load_settings
from cyber_pipelines.github.activity import key_to_repo
from cyber_pipelines.keys import key_to_pair

PAIRS = "pairs"

pair_partitions = dg.DynamicPartitionsDefinition(name=PAIRS)
daily_partitions = dg.DailyPartitionsDefinition(start_date=load_settings().start_date.isoformat())
pair_day_partitions = dg.MultiPartitionsDefinition({"date": daily_partitions, "pair": pair_partitions})


def _day_and_key(partition_key: str | dg.MultiPartitionKey) -> tuple[date, str]:
    """Split ``2024-01-05|BTC-USD``: Dagster orders dimensions by name, so ``date`` comes first."""
    day_part, key_part = str(partition_key).split("|")
    return date.fromisoformat(day_part), key_part


def pair_day(partition_key: str | dg.MultiPartitionKey) -> tuple[str, date]:
    """(``BTC/USD``, day) from a ``date|pair`` partition key."""
    day, key = _day_and_key(partition_key)
    return key_to_pair(key), day


def pair_day_key(pair_key: str, day: date) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"date": day.isoformat(), "pair": pair_key})


REPOS = "repos"

repo_partitions = dg.DynamicPartitionsDefinition(name=REPOS)
repo_day_partitions = dg.MultiPartitionsDefinition({"date": daily_partitions, "repo": repo_partitions})


def repo_day(partition_key: str | dg.MultiPartitionKey) -> tuple[str, date]:
    """(``owner/name``, day) from a ``date|owner__name`` partition key."""
    day, key = _day_and_key(partition_key)
    return key_to_repo(key), day


def repo_day_key(repo_key: str, day: date) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"date": day.isoformat(), "repo": repo_key})
