"""Load one pair's stored inputs (candles, GitHub activity, moat records) for the feature table.

Sources never mix: synthetic candles are joined with synthetic activity and moat records; real
candles (ccxt or landing files) with real GitHub activity and landing moat files.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from cyber_pipelines.features.cross_source import repos_for_asset
from cyber_pipelines.github.activity import point_in_time_activity, repo_to_key
from cyber_pipelines.github.schema import ACTIVITY_SCHEMA
from cyber_pipelines.keys import pair_base, pair_to_key
from cyber_pipelines.moat.schema import MOAT_SCHEMA
from cyber_pipelines.storage import TableStore

COMPANION_SOURCES = {
    "synthetic": ("synthetic", "synthetic"),
    "ccxt": ("github", "landing"),
    "landing": ("github", "landing"),
}


@dataclass(frozen=True)
class PairInputs:
    pair: str
    market_source: str
    github_source: str
    moat_source: str
    candles: pl.DataFrame
    activity: pl.DataFrame  # point in time: day metrics as published by each hour (point_in_time_activity)
    moat: pl.DataFrame
    repos: list[str]
    repos_missing: list[str]  # mapped repos with no stored activity


def companion_sources(market_source: str) -> tuple[str, str]:
    """The GitHub and moat namespaces that go with a market source."""
    try:
        return COMPANION_SOURCES[market_source]
    except KeyError:
        raise ValueError(
            f"unknown market source {market_source!r}; expected one of {list(COMPANION_SOURCES)}"
        ) from None


def _scan_or_empty(store: TableStore, source: str, table: str, schema: dict, *dirs: str) -> pl.DataFrame:
    try:
        return store.scan(source, table, *dirs).collect()
    except FileNotFoundError:
        return pl.DataFrame(schema=schema)


def load_pair_inputs(store: TableStore, market_source: str, pair: str) -> PairInputs:
    """Every stored day of the pair's candles, plus activity of the repos that inform its base asset
    (point in time: a day's contributors, novelty, ... show only from its end plus the publication lag)."""
    github_source, moat_source = companion_sources(market_source)
    candles = store.scan(market_source, "ohlcv", pair_to_key(pair)).collect().sort("timestamp")
    repos = repos_for_asset(pair_base(pair))
    per_repo = {
        repo: _scan_or_empty(store, github_source, "github_activity", ACTIVITY_SCHEMA, repo_to_key(repo))
        for repo in repos
    }
    missing = [repo for repo, frame in per_repo.items() if frame.is_empty()]
    activity = point_in_time_activity(pl.concat([pl.DataFrame(schema=ACTIVITY_SCHEMA), *per_repo.values()]))
    moat = _scan_or_empty(store, moat_source, "moat", MOAT_SCHEMA)
    return PairInputs(pair, market_source, github_source, moat_source, candles, activity, moat, repos, missing)
