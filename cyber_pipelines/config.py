"""Pipeline settings: a validated YAML file plus environment variables for paths and sources."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from cyber_pipelines.github.activity import validate_repo_map
from cyber_pipelines.keys import normalize_pair
from cyber_pipelines.storage import MARKET_SOURCES, StoragePath, as_path, is_remote, is_url
from cyber_pipelines.synthetic import settings as synthetic_defaults

_DEFAULT_CONFIG = Path(__file__).with_name("pipeline.yaml")


@dataclass(frozen=True)
class SyntheticSettings:
    """The ``synthetic:`` block: the simulators' settings (rules and meanings in ``synthetic.settings``)."""

    seed: int = synthetic_defaults.SEED
    effect_size: float = synthetic_defaults.EFFECT_SIZE
    lag_hours: int = synthetic_defaults.LAG_HOURS
    effect_sign: int = synthetic_defaults.EFFECT_SIGN
    factor_correlation: float = synthetic_defaults.FACTOR_CORRELATION
    weekend_vol: float = synthetic_defaults.WEEKEND_VOL
    intraday_vol: float = synthetic_defaults.INTRADAY_VOL
    long_memory: float = synthetic_defaults.LONG_MEMORY
    weekend_activity: float = synthetic_defaults.WEEKEND_ACTIVITY
    motif_rate: float = synthetic_defaults.MOTIF_RATE
    motif_length: int = synthetic_defaults.MOTIF_LENGTH
    motif_move: float = synthetic_defaults.MOTIF_MOVE
    distinct_ar: float = synthetic_defaults.DISTINCT_AR
    distinct_pairs: tuple[str, ...] = ()  # pairs whose returns follow AR(1) distinct_ar (the pool: 0)

    def return_ar(self, pair: str) -> float:
        """The hourly return autocorrelation the simulator gives ``pair``."""
        return self.distinct_ar if normalize_pair(pair) in self.distinct_pairs else 0.0

    def ohlcv(self, pair: str, first: date, last: date, origin: date) -> pl.DataFrame:
        """``pair``'s simulated hourly candles of the days ``first..last`` (the market starts at ``origin``)."""
        from cyber_pipelines.synthetic.market import simulate_ohlcv

        return simulate_ohlcv(
            pair,
            first,
            last,
            seed=self.seed,
            effect_size=self.effect_size,
            lag_hours=self.lag_hours,
            origin=origin,
            effect_sign=self.effect_sign,
            factor_correlation=self.factor_correlation,
            weekend_vol=self.weekend_vol,
            intraday_vol=self.intraday_vol,
            long_memory=self.long_memory,
            motif_rate=self.motif_rate,
            motif_length=self.motif_length,
            motif_move=self.motif_move,
            return_ar=self.return_ar(pair),
        )


@dataclass(frozen=True)
class Settings:
    start_date: date
    pairs: tuple[str, ...]
    synthetic: SyntheticSettings = field(default_factory=SyntheticSettings)
    max_gap_ratio: float = 0.05
    repos: dict[str, list[str]] = field(default_factory=dict)  # owner/name -> asset symbols


def _synthetic(raw: object, origin: str) -> SyntheticSettings:
    """The ``synthetic:`` block, each key checked by the simulators' own rule."""
    if not isinstance(raw, dict):
        raise ValueError(f"invalid pipeline config {origin}: synthetic must be a mapping of settings")
    names = (*synthetic_defaults.NAMES, "distinct_pairs")
    unknown = sorted(set(raw) - set(names), key=str)
    if unknown:
        raise ValueError(
            f"invalid pipeline config {origin}: unknown setting synthetic.{unknown[0]} "
            f"(expected one of {', '.join(names)})"
        )
    values: dict[str, Any] = {}
    for name, value in raw.items():
        if name == "distinct_pairs":
            if not isinstance(value, list):
                raise ValueError(f"invalid pipeline config {origin}: synthetic.distinct_pairs must be a list of pairs")
            try:
                values[name] = tuple(normalize_pair(str(p)) for p in value)
            except ValueError as exc:
                raise ValueError(f"invalid pipeline config {origin}: synthetic.distinct_pairs: {exc}") from None
            continue
        try:
            number = synthetic_defaults.check_setting(name, value)
        except ValueError as exc:
            raise ValueError(f"invalid pipeline config {origin}: synthetic.{exc}") from None
        values[name] = int(number) if name in ("seed", "lag_hours", "effect_sign", "motif_length") else number
    return SyntheticSettings(**values)


def _parse(raw: dict, origin: str) -> Settings:
    synth = _synthetic(raw.get("synthetic") or {}, origin)
    try:
        start = date.fromisoformat(str(raw["start_date"]))
        pairs = tuple(normalize_pair(p) for p in raw["pairs"])
        gap = float((raw.get("quality") or {}).get("max_gap_ratio", 0.05))
        repos = validate_repo_map(raw.get("repos") or {})
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"invalid pipeline config {origin}: {exc}") from exc
    if not pairs:
        raise ValueError(f"invalid pipeline config {origin}: 'pairs' is empty")
    if not 0 <= gap < 1:
        raise ValueError(f"invalid pipeline config {origin}: max_gap_ratio must be in [0, 1)")
    return Settings(start_date=start, pairs=pairs, synthetic=synth, max_gap_ratio=gap, repos=repos)


def load_settings(path: str | None = None) -> Settings:
    """Read the pipeline config (``path``, else ``CYBER_CONFIG``, else the packaged default)."""
    config_path = Path(path or os.environ.get("CYBER_CONFIG") or _DEFAULT_CONFIG).resolve()
    try:
        mtime_ns = config_path.stat().st_mtime_ns
    except FileNotFoundError:
        named_by = "" if path or not os.environ.get("CYBER_CONFIG") else " (named by CYBER_CONFIG)"
        raise FileNotFoundError(f"pipeline config not found: {config_path}{named_by}") from None
    return _load(str(config_path), mtime_ns)  # an edited file is read again


@lru_cache(maxsize=8)
def _load(config_path: str, mtime_ns: int) -> Settings:
    with open(config_path) as fh:
        try:
            raw = yaml.safe_load(fh) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ValueError(f"invalid pipeline config {config_path}: not valid YAML{where}: {problem}") from None
    if not isinstance(raw, dict):
        kind = type(raw).__name__
        raise ValueError(f"invalid pipeline config {config_path}: expected a mapping of settings, got {kind}")
    return _parse(raw, config_path)


def load_repo_map(settings_path: str | None = None) -> dict[str, list[str]]:
    """The ``repos`` mapping of the pipeline config: ``owner/name`` -> asset symbols (first = primary)."""
    return {repo: list(symbols) for repo, symbols in load_settings(settings_path).repos.items()}


def resolve_location(value: str | StoragePath) -> StoragePath:
    """A local folder, made absolute, or an object-storage URL (``s3://bucket/prefix``) as a ``UPath``."""
    if is_url(value) or is_remote(value):
        return as_path(value)
    return Path(str(value).removeprefix("file://")).resolve()


def data_dir() -> StoragePath:
    """Storage root (``CYBER_DATA_DIR``, default ``./data``): a local folder or an object-storage URL such
    as ``s3://bucket/data`` (S3 credentials and endpoint from the AWS variables; see the README)."""
    return resolve_location(os.environ.get("CYBER_DATA_DIR") or "data")


def landing_dir() -> StoragePath:
    """Folder that users drop files into (``CYBER_LANDING_DIR``, default ``<data>/inbox``); a local folder
    or an object-storage URL (``s3://bucket/inbox``).

    Not ``<data>/landing``: that is where the tables ingested from landing files are stored."""
    return resolve_location(os.environ.get("CYBER_LANDING_DIR") or data_dir() / "inbox")


def resolve_source(kind: str, allowed: tuple[str, ...], *choices: str | None) -> str:
    """The first non-empty of ``choices`` (run config, resource), else ``CYBER_<KIND>_SOURCE``, else synthetic."""
    variable = f"CYBER_{kind.upper()}_SOURCE"
    source = next((c for c in choices if c), None) or os.environ.get(variable) or "synthetic"
    if source not in allowed:
        raise ValueError(f"unknown {kind} source {source!r} (run config or {variable}); expected one of {allowed}")
    return source


def market_source() -> str:
    """Default market source (``CYBER_MARKET_SOURCE``): synthetic, ccxt or landing."""
    return resolve_source("market", MARKET_SOURCES)
