"""Market layer: hourly OHLCV candles per pair and UTC day, from the configured source."""

import dagster as dg
import polars as pl
from pydantic import Field

from assets.batch import latest_metadata, run_partition_keys, write_partitions
from assets.partitions import pair_day, pair_day_partitions
from cyber_pipelines.keys import pair_to_key
from cyber_pipelines.market.schema import OhlcvError, conform_ohlcv, validate_ohlcv
from cyber_pipelines.resources import MarketDataResource, StorageResource

OHLCV_CODE_VERSION = "ohlcv-1"


class OhlcvConfig(dg.Config):
    source: str = Field(
        default="", description="synthetic | ccxt | landing; empty: CYBER_MARKET_SOURCE (default synthetic)"
    )


def ohlcv_parts(partition_key: str) -> tuple[str, str]:
    """Storage path parts of a pair-day partition: ``(BTC-USD, 2024-01-05)``."""
    pair, day = pair_day(partition_key)
    return pair_to_key(pair), day.isoformat()


def fetch_candles(market: MarketDataResource, source: str, partition_key: str) -> pl.DataFrame:
    """One pair-day of candles that passed the OHLCV contract, or ``dg.Failure`` saying why not."""
    pair, day = pair_day(partition_key)
    try:
        candles = conform_ohlcv(market.fetch_day(pair, day, source))
    except OhlcvError as exc:
        raise dg.Failure(f"{source} returned unusable candles for {pair} on {day}: {exc}") from exc
    candles = candles.filter(pl.col("timestamp").dt.date() == day)
    if candles.is_empty():
        raise dg.Failure(f"{source} has no candles for {pair} on {day}; stored versions are kept.")
    problems = validate_ohlcv(candles)
    if problems:
        raise dg.Failure(
            f"{source} candles for {pair} on {day} break the OHLCV contract; nothing was written.",
            metadata={"problems": "; ".join(problems)},
        )
    return candles


@dg.asset(
    partitions_def=pair_day_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="market",
    kinds={"polars", "parquet", "ccxt"},
    code_version=OHLCV_CODE_VERSION,
    pool="market_ingest",
    description=(
        "Hourly OHLCV candles of one trading pair for one UTC day, from the configured source "
        "(synthetic simulator, ccxt exchange, or files dropped in the landing folder). "
        "Stored as Parquet under `<data>/<source>/ohlcv/<PAIR>/<day>.parquet`; a backfill runs as one run."
    ),
)
def ohlcv_candles(
    context: dg.AssetExecutionContext,
    config: OhlcvConfig,
    market: MarketDataResource,
    storage: StorageResource,
) -> dg.MaterializeResult:
    source = market.resolve_source(config.source or None)
    keys = run_partition_keys(context)
    frames = {key: fetch_candles(market, source, key) for key in keys}  # all or nothing: fetch, then write
    candles = pl.concat(frames.values())
    context.log.info(f"{source}: {candles.height} candles in {len(keys)} pair-day partition(s)")
    return write_partitions(
        frames,
        storage.store(),
        source,
        "ohlcv",
        ohlcv_parts,
        {
            "pairs": ", ".join(sorted({pair_day(k)[0] for k in keys})),
            "missing_hours": 24 * len(keys) - candles.height,
            "first_timestamp": str(candles["timestamp"].min()),
            "last_timestamp": str(candles["timestamp"].max()),
        },
    )


def latest_pair_source(instance: dg.DagsterInstance, pair_key: str) -> str | None:
    """The source of the pair's most recent ``ohlcv_candles`` materialization, if any."""
    partitions = [k for k in instance.get_materialized_partitions(ohlcv_candles.key) if k.endswith(f"|{pair_key}")]
    source = (latest_metadata(instance, ohlcv_candles.key, partitions) or {}).get("source")
    return str(source) if source is not None else None
