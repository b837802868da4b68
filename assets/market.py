"""Market layer: hourly OHLCV candles per pair and month, audited per UTC day before they are published."""

from collections.abc import Iterator
from datetime import UTC, datetime

import dagster as dg
import polars as pl
from pydantic import Field

from assets.batch import MonthPartition, blocking_check_specs, ingest_audited, latest_metadata, run_partition_keys
from assets.partitions import month_days, pair_month, pair_month_partitions
from cyber_pipelines.config import load_settings
from cyber_pipelines.keys import pair_to_key
from cyber_pipelines.quality.checks import HOURS_PER_DAY, OHLCV_CHECKS
from cyber_pipelines.resources import MarketDataResource, StorageResource

OHLCV_CODE_VERSION = "ohlcv-2"


class OhlcvConfig(dg.Config):
    source: str = Field(
        default="", description="synthetic | ccxt | landing; empty: CYBER_MARKET_SOURCE (default synthetic)"
    )


def ohlcv_parts(partition_key: str) -> tuple[str, str]:
    """Storage path parts of a pair-month partition: ``(BTC-USD, 2024-01)``."""
    pair, month = pair_month(partition_key)
    return pair_to_key(pair), month.strftime("%Y-%m")


def _observed(check: str, summary: pl.DataFrame) -> dict[str, float]:
    if check != "ohlcv_gap_ratio" or summary.is_empty():
        return {}
    return {
        "observed_gap_ratio_max": round(float(summary["gap_ratio"].max()), 4),  # type: ignore[arg-type]
        "observed_gap_ratio_mean": round(float(summary["gap_ratio"].mean()), 4),  # type: ignore[arg-type]
        "missing_hours": int((HOURS_PER_DAY - summary["candles"].clip(upper_bound=HOURS_PER_DAY)).sum()),
    }


@dg.asset(
    partitions_def=pair_month_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    check_specs=blocking_check_specs("ohlcv_candles", OHLCV_CHECKS, pair_month_partitions),
    output_required=False,
    group_name="market",
    kinds={"polars", "parquet", "ccxt"},
    code_version=OHLCV_CODE_VERSION,
    pool="exchange",  # the exchange API (ccxt); synthetic and landing runs share the pool
    description=(
        "Hourly OHLCV candles of one trading pair for one calendar month (the open month up to yesterday), "
        "from the configured source (synthetic simulator, ccxt exchange, or files dropped in the landing "
        "folder). Write-audit-publish: the candidates of each UTC day are audited by the GX suite first; "
        "only days that pass replace their stored version in `<data>/<source>/ohlcv/<PAIR>/<YYYY-MM>.parquet`."
    ),
)
def ohlcv_candles(
    context: dg.AssetExecutionContext,
    config: OhlcvConfig,
    market: MarketDataResource,
    storage: StorageResource,
) -> Iterator[dg.AssetMaterialization | dg.AssetCheckEvaluation | dg.Output]:
    from cyber_pipelines.quality.ohlcv import audit_ohlcv

    source = market.resolve_source(config.source or None)
    max_gap = load_settings().max_gap_ratio
    partitions = []
    for key in run_partition_keys(context):
        pair, month = pair_month(key)
        partitions.append(MonthPartition(key, ohlcv_parts(key), pair, month_days(month)))
    where = f" (looked in {market.landing_path() / 'staged'})" if source == "landing" else ""
    yield from ingest_audited(
        context,
        store=storage.store(),
        source=source,
        table="ohlcv",
        partitions=partitions,
        fetch=lambda pair, days: market.fetch_days(pair, days, source),
        audit=lambda pair, candidates: audit_ohlcv(candidates, max_gap),
        what=f"candles{where}",
        observed=_observed,
    )


def newest_candles(instance: dg.DagsterInstance) -> dict[str, tuple[datetime, str]]:
    """Per pair key: the newest stored candle (``last_timestamp`` of its newest stored month) and that
    month's source; one read of the materialized partitions, then one metadata read per pair."""
    newest: dict[str, str] = {}
    for key in instance.get_materialized_partitions(ohlcv_candles.key):
        month, _, pair = str(key).partition("|")
        if pair and month > newest.get(pair, ""):
            newest[pair] = month
    out: dict[str, tuple[datetime, str]] = {}
    for pair, month in newest.items():
        meta = latest_metadata(instance, ohlcv_candles.key, [f"{month}|{pair}"]) or {}
        if meta.get("last_timestamp") is not None:
            stamp = datetime.fromisoformat(str(meta["last_timestamp"]))
            stamp = stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)
            out[pair] = (stamp, str(meta.get("source") or "unknown"))
    return out


def latest_pair_source(instance: dg.DagsterInstance, pair_key: str) -> str | None:
    """The source of the pair's most recent ``ohlcv_candles`` materialization, if any."""
    partitions = [k for k in instance.get_materialized_partitions(ohlcv_candles.key) if k.endswith(f"|{pair_key}")]
    source = (latest_metadata(instance, ohlcv_candles.key, partitions) or {}).get("source")
    return str(source) if source is not None else None
