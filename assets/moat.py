"""Moat layer: alternative feeds (government, logistics, corporate) as long-format records per month."""

from collections.abc import Iterator
from datetime import date
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from assets.batch import MonthPartition, blocking_check_specs, ingest_audited, run_partition_keys
from assets.partitions import month_days, monthly_partitions
from cyber_pipelines.config import load_repo_map, load_settings, resolve_source
from cyber_pipelines.keys import pair_base
from cyber_pipelines.moat.staging import load_staged_moat_days
from cyber_pipelines.quality.checks import MOAT_CHECKS
from cyber_pipelines.report import markdown_table
from cyber_pipelines.resources import MarketDataResource, StorageResource
from cyber_pipelines.synthetic.activity import simulate_moat_records

MOAT_CODE_VERSION = "moat-2"
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
    """Storage path part of a month partition: ``(2024-01,)``."""
    return (date.fromisoformat(partition_key).strftime("%Y-%m"),)


def _describe(published: pl.DataFrame) -> dict[str, Any]:
    summary = published.group_by("source", "metric").agg(rows=pl.len()).sort("source", "metric")
    return {"entities": published["entity"].n_unique(), "feeds": dg.MetadataValue.md(markdown_table(summary))}


def _candidates(source: str, days: list[date], market: MarketDataResource) -> dict[date, pl.DataFrame]:
    """Synthetic records for every day, or the staged landing records of the days that have some."""
    settings = load_settings()
    if source == "synthetic":
        symbols = moat_assets()
        return {
            d: simulate_moat_records(
                symbols,
                d,
                seed=settings.synthetic.seed,
                origin=settings.start_date,
                weekend_activity=settings.synthetic.weekend_activity,
            )
            for d in days
        }
    staged = market.landing_path() / "staged_moat"
    try:
        found = load_staged_moat_days(staged, days)
    except FileNotFoundError:
        return {}
    return {d: frame for d, frame in found.items() if frame.height}


@dg.asset(
    partitions_def=monthly_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    check_specs=blocking_check_specs("moat_records", MOAT_CHECKS, monthly_partitions),
    output_required=False,
    group_name="moat",
    kinds={"polars", "parquet"},
    code_version=MOAT_CODE_VERSION,
    description=(
        "Alternative-data records published in one calendar month, long format (timestamp, source, entity, "
        "metric, value): synthetic feeds, or files dropped in the landing folder. Audited per UTC day; passing "
        "days are stored under `<data>/<source>/moat/<YYYY-MM>.parquet`."
    ),
)
def moat_records(
    context: dg.AssetExecutionContext,
    config: MoatConfig,
    market: MarketDataResource,
    storage: StorageResource,
) -> Iterator[dg.AssetMaterialization | dg.AssetCheckEvaluation | dg.Output]:
    from cyber_pipelines.quality.activity import audit_moat

    source = resolve_source("moat", MOAT_SOURCES, config.source)
    partitions = [
        MonthPartition(key, moat_parts(key), "moat", month_days(date.fromisoformat(key)))
        for key in run_partition_keys(context)
    ]
    yield from ingest_audited(
        context,
        store=storage.store(),
        source=source,
        table="moat",
        partitions=partitions,
        fetch=lambda subject, days: _candidates(source, days, market),
        audit=lambda subject, candidates: audit_moat(candidates),
        what="moat records published",
        describe=_describe,
    )
