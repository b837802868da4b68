"""The code location: every asset, check, job, sensor, schedule and resource of the pipeline."""

import os

import dagster as dg

from assets.github import github_activity
from assets.jobs import github_ingest_job, market_ingest_job, moat_ingest_job
from assets.market import ohlcv_candles
from assets.moat import moat_records
from assets.quality import github_quality_checks, moat_quality_checks, ohlcv_quality_checks
from cyber_pipelines.resources import GitHubResource, MarketDataResource, StorageResource
from sensors.github import github_activity_sensor
from sensors.landing import landing_sensor
from sensors.partitions import config_partitions_sensor

defs = dg.Definitions(
    assets=[ohlcv_candles, github_activity, moat_records],
    asset_checks=[ohlcv_quality_checks, github_quality_checks, moat_quality_checks],
    jobs=[market_ingest_job, github_ingest_job, moat_ingest_job],
    sensors=[config_partitions_sensor, landing_sensor, github_activity_sensor],
    resources={
        "market": MarketDataResource(),
        "storage": StorageResource(),
        # The token is read from the environment at run time and never shown in the UI or logs.
        "github": GitHubResource(token=dg.EnvVar("GITHUB_TOKEN") if os.environ.get("GITHUB_TOKEN") else None),
    },
)
