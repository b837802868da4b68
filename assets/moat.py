"""Moat layer: alternative feeds (government, logistics, corporate) as long-format records per UTC day."""

from datetime import date

import dagster as dg
import polars as pl
from pydantic import Field

from assets.batch import run_partition_keys, write_partitions
from assets.partitions import daily_partitions
from cyber_pipelines.config import load_settings, resolve_source
from cyber_pipelines.github.activity import load_repo_map
from cyber_pipelines.keys import pair_base
from cyber_pipelines.moat.staging import load_staged_moat
from cyber_pipelines.report import markdown_table
from cyber_pipelines.resources import MarketDataResource, StorageResource
from cyber_pipelines.synthetic.activity import simulate_moat_records

MOAT_CODE_VERSION = "moat-1"
MOAT_SOURCES = ("synthetic", "landing")


class MoatConfig(dg.Config):
    source: str = Field(default="", description="synthetic | landing; empty uses CYBER_MOAT_SOURCE (default synthetic)")


def moat_assets() -> list[str]:
    """Every asset symbol the pipeline follows: the pairs' bases and the repos' assets."""
    settings = load_settings()
    symbols = {pair_base(p) for p in settings.pairs}
    for assets in load_repo_map().values():
        symbols.update(assets)
    return sorted(symbols)


def moat_parts(partition_key: str) -> tuple[str]:
    return (partition_key,)


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="moat",
    kinds={"polars", "parquet"},
    code_version=MOAT_CODE_VERSION,
    description=(
        "Alternative-data records published on one UTC day, long format (timestamp, source, entity, metric, "
        "value): synthetic feeds, or files dropped in the landing folder and validated by the landing sensor."
    ),
)
def moat_records(
    context: dg.AssetExecutionContext,
    config: MoatConfig,
    market: MarketDataResource,
    storage: StorageResource,
) -> dg.MaterializeResult:
    source = resolve_source("moat", MOAT_SOURCES, config.source)
    settings = load_settings()
    frames = {}
    for key in run_partition_keys(context):
        day = date.fromisoformat(key)
        if source == "synthetic":
            frames[key] = simulate_moat_records(
                moat_assets(), day, seed=settings.synthetic.seed, origin=settings.start_date
            )
        else:
            frames[key] = load_staged_moat(market.landing_path() / "staged_moat", day)
            if frames[key].is_empty():
                raise dg.Failure(f"no staged moat records published on {day}; nothing was written")
    records = pl.concat(frames.values())
    summary = records.group_by("source", "metric").agg(rows=pl.len()).sort("source", "metric")
    return write_partitions(
        frames,
        storage.store(),
        source,
        "moat",
        moat_parts,
        {"entities": records["entity"].n_unique(), "feeds": dg.MetadataValue.md(markdown_table(summary))},
    )
