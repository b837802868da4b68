"""Dagster resources: thin typed handles on the domain code (storage, market sources)."""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
import polars as pl
from pydantic import PrivateAttr

from cyber_pipelines import config
from cyber_pipelines.storage import GITHUB_SOURCES, MARKET_SOURCES, StoragePath, TableStore, is_remote, local_path
from cyber_pipelines.tables import split_days

if TYPE_CHECKING:
    import ccxt

    from cyber_pipelines.market.exchange import ExchangeSettings
    from cyber_pipelines.models.store import ModelStore
    from cyber_pipelines.patterns.store import VectorStore
    from cyber_pipelines.vsm.events import EventLog
    from cyber_pipelines.vsm.policy import PolicyInForce


@lru_cache(maxsize=4)
def _exchange(settings: "ExchangeSettings") -> "ccxt.Exchange":
    """One ccxt client per settings and process: markets load once for a whole range run."""
    from cyber_pipelines.market.exchange import make_exchange

    return make_exchange(settings)


class StorageResource(dg.ConfigurableResource):
    """The storage root under which every source writes its own namespace: ``root`` (a folder or an
    object-storage URL such as ``s3://bucket/data``), else ``CYBER_DATA_DIR``, else ``./data``."""

    root: str = ""

    def store(self) -> TableStore:
        return TableStore(self.root or config.data_dir())


class ModelStoreResource(dg.ConfigurableResource):
    """Where models are saved (safetensors + JSON config): ``root`` (a folder or an fsspec URL such as
    ``s3://bucket/models``), else ``CYBER_MODEL_STORE``, else ``<data>/models``."""

    root: str = ""

    def store(self) -> "ModelStore":
        from cyber_pipelines.models.store import ModelStore

        return ModelStore(self.root or os.environ.get("CYBER_MODEL_STORE") or config.data_dir() / "models")


class VectorStoreResource(dg.ConfigurableResource):
    """The pattern memory: a Qdrant server when ``url`` (or ``QDRANT_URL``) is set, ``:memory:`` for
    qdrant-client's in-process mode (tests), else the embedded Qdrant Edge shard under
    ``<storage root>/<source>/patterns/qdrant_edge`` (one process at a time: pool ``vector_store``)."""

    url: str = ""
    api_key: str | None = None  # wired to dg.EnvVar("QDRANT_API_KEY") when set; never logged
    m: int = 16
    ef_construct: int = 64
    hnsw_ef: int = 128
    quantization: str = "int8"
    oversampling: float = 8.0
    indexing_threshold_kb: int = 1000

    _memory: dict = PrivateAttr(default_factory=dict)

    def _url(self) -> str:
        return self.url or os.environ.get("QDRANT_URL", "")

    @staticmethod
    def edge_path(root: StoragePath, source: str, kind: str = "patterns") -> Path:
        if is_remote(root):  # the embedded shard is files on a local disk
            raise ValueError(f"the embedded Qdrant shard needs a local storage root, not {root}: set QDRANT_URL")
        return local_path(root) / source / kind / "qdrant_edge"

    def location(self, root: StoragePath, source: str, kind: str = "patterns") -> str:
        """Where the points of ``source`` live, for metadata and messages (no credentials)."""
        url = self._url()
        if url == ":memory:":
            return f"qdrant-client in memory, collection {kind}_{source}"
        if url:
            return f"Qdrant server {url.split('@')[-1]}, collection {kind}_{source}"
        return f"Qdrant Edge shard {self.edge_path(root, source, kind)}"

    @contextmanager
    def session(self, root: StoragePath, source: str, dim: int, kind: str = "patterns") -> Iterator["VectorStore"]:
        """The store of ``source``, opened for the duration of the block (the embedded shard is then
        released for the next process); the in-memory store lives as long as this resource."""
        from cyber_pipelines.patterns.store import ClientVectorStore, EdgeVectorStore, IndexSettings

        settings = IndexSettings(
            m=self.m,
            ef_construct=self.ef_construct,
            hnsw_ef=self.hnsw_ef,
            quantization=self.quantization,  # type: ignore[arg-type]
            oversampling=self.oversampling,
            indexing_threshold_kb=self.indexing_threshold_kb,
        )
        url = self._url()
        collection = f"{kind}_{source}"
        if url == ":memory:":
            key = (collection, dim)
            if key not in self._memory:
                self._memory[key] = ClientVectorStore(dim, collection=collection, settings=settings)
            yield self._memory[key]
            return
        store: VectorStore
        if url:
            store = ClientVectorStore(
                dim, url=url, collection=collection, settings=settings, api_key=self.api_key or None
            )
        else:
            store = EdgeVectorStore(self.edge_path(root, source, kind), dim, settings)
        try:
            yield store
        finally:
            store.close()


class MarketDataResource(dg.ConfigurableResource):
    """Fetches one pair's hourly candles for one UTC day from the configured source."""

    source: str = ""  # empty: CYBER_MARKET_SOURCE (default synthetic)
    exchange_id: str = "kraken"
    exchange_url: str = ""  # empty: CYBER_EXCHANGE_URL or the exchange's own API
    timeout_ms: int = 10_000
    max_retries: int = 6
    landing_dir: str = ""  # empty: CYBER_LANDING_DIR

    def resolve_source(self, override: str | None = None) -> str:
        return config.resolve_source("market", MARKET_SOURCES, override, self.source)

    def landing_path(self) -> StoragePath:
        return config.resolve_location(self.landing_dir) if self.landing_dir else config.landing_dir()

    def fetch_days(self, pair: str, days: list[date], source: str) -> dict[date, pl.DataFrame]:
        """Candidate candles of ``pair`` per UTC day, as the source gives them (not yet audited).

        Synthetic and ccxt give every day (an empty frame for a day without candles, which the gap
        check then blocks), except that ccxt days the exchange no longer serves whole are left out
        (older than its retention, and the day its retention cut falls in). Landing gives only the
        days some staged file covers."""
        if not days:
            return {}
        first, last = min(days), max(days)
        settings = config.load_settings()
        if source == "synthetic":
            synth = settings.synthetic
            candles = synth.ohlcv(pair, first, last, settings.start_date)
            return split_days(candles, days)
        if source == "landing":
            from cyber_pipelines.landing.staging import load_staged_days

            return load_staged_days(self.landing_path() / "staged", pair, days)
        from cyber_pipelines.market.exchange import fetch_ohlcv_range

        start = datetime(first.year, first.month, first.day, tzinfo=UTC)
        end = datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(days=1)
        candles = fetch_ohlcv_range(self._client(), pair, start, end)
        served = candles["timestamp"].min()
        first_served = served.date() if isinstance(served, datetime) else last + timedelta(days=1)
        if isinstance(served, datetime) and served > start and served != served.replace(hour=0):
            first_served += timedelta(days=1)  # the retention cut falls inside that day: it is no longer whole
        return split_days(candles, [d for d in days if d >= first_served])

    def _client(self) -> "ccxt.Exchange":
        from cyber_pipelines.market.exchange import ExchangeSettings

        return _exchange(
            ExchangeSettings(
                exchange_id=self.exchange_id,
                timeout_ms=self.timeout_ms,
                max_retries=self.max_retries,
                api_url=self.exchange_url or os.environ.get("CYBER_EXCHANGE_URL") or None,
            )
        )


class GitHubResource(dg.ConfigurableResource):
    """Repository activity per UTC day from the GitHub API (PyGithub) or the synthetic simulator."""

    token: str | None = None  # wired to dg.EnvVar("GITHUB_TOKEN"); never logged
    base_url: str = ""  # empty: CYBER_GITHUB_URL or https://api.github.com
    source: str = ""  # empty: CYBER_GITHUB_SOURCE (default synthetic)
    cache_dir: str = ""  # empty: <data>/github_cache

    def resolve_source(self, override: str | None = None) -> str:
        return config.resolve_source("github", GITHUB_SOURCES, override, self.source)

    _client: Any = PrivateAttr(default=None)
    _cache: Any = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """One PyGithub client and one activity cache for the whole run (reused across partitions)."""
        self._client = None
        self._cache = None

    def _github(self) -> tuple[Any, Any]:
        from cyber_pipelines.github.client import ActivityCache, GitHubSettings, make_github

        if self._client is None:
            settings_kwargs: dict = {"token": self.token or None}
            if self.base_url:
                settings_kwargs["base_url"] = self.base_url
            self._client = make_github(GitHubSettings(**settings_kwargs))
            self._cache = ActivityCache(Path(self.cache_dir) if self.cache_dir else config.data_dir() / "github_cache")
        return self._client, self._cache

    def fetch_days(self, repo: str, days: list[date], source: str) -> dict[date, pl.DataFrame]:
        """Candidate hourly activity of ``repo`` per UTC day (not yet audited)."""
        return {day: self.fetch_day(repo, day, source) for day in days}

    def fetch_day(self, repo: str, day: date, source: str) -> pl.DataFrame:
        from cyber_pipelines.config import load_repo_map
        from cyber_pipelines.github.activity import build_activity

        if source == "synthetic":
            from cyber_pipelines.synthetic.activity import simulate_commits, simulate_repo_snapshot

            settings = config.load_settings()
            synth = settings.synthetic
            assets = load_repo_map().get(repo)
            if not assets:
                raise ValueError(f"{repo} is not in the pipeline config's repos; synthetic activity needs its assets")
            commits = simulate_commits(
                repo,
                assets,
                day,
                seed=synth.seed,
                origin=settings.start_date,
                lag_hours=synth.lag_hours,
                weekend_activity=synth.weekend_activity,
            )
            issues, stars = simulate_repo_snapshot(repo, day, seed=synth.seed, origin=settings.start_date)
            return build_activity(repo, day, commits, issues, stars)
        from cyber_pipelines.github.client import fetch_day_activity

        client, cache = self._github()
        return fetch_day_activity(client, repo, day, cache=cache)


class VsmResource(dg.ConfigurableResource):
    """The viable system's state: its event log (``url``, else ``CYBER_VSM_DB``, else SQLite under
    ``<DAGSTER_HOME>/vsm``) and the policy in force (``policy``, else ``CYBER_POLICY``, else the packaged one)."""

    url: str = ""
    policy_path: str = ""

    def log(self) -> "EventLog":
        from cyber_pipelines.vsm.events import EventLog, default_url

        return EventLog(self.url or default_url())

    def folder(self) -> Path:
        """Where the VSM keeps its files (the last good policy): ``<DAGSTER_HOME>/vsm``."""
        home = Path(os.environ.get("DAGSTER_HOME") or Path.cwd() / ".dagster_home").resolve()
        return home / "vsm"

    def policy(self) -> "PolicyInForce":
        from cyber_pipelines.vsm.policy import PolicyKeeper

        return PolicyKeeper(self.folder() / "policy.last_good.json", self.policy_path or None).current()
