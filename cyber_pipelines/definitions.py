"""The code location: every asset, check, job, sensor, schedule and resource of the pipeline."""

import os

import dagster as dg

from assets.backtests import backtest_results, strategy_comparison
from assets.features import lead_lag_report, lead_lag_summary, pair_features
from assets.github import github_activity
from assets.jobs import (
    adapters_job,
    analog_job,
    backtests_job,
    base_forecaster_job,
    comparison_job,
    encoder_job,
    features_job,
    github_ingest_job,
    leadlag_summary_job,
    ledger_job,
    lora_forecasts_job,
    market_ingest_job,
    moat_ingest_job,
    pattern_memory_job,
)
from assets.market import ohlcv_candles
from assets.moat import moat_records
from assets.models import (
    base_forecaster,
    base_forecaster_valid,
    lora_forecasts,
    pair_adapter,
    pair_adapter_promotion,
    pair_adapter_valid,
)
from assets.patterns import analog_forecasts, pattern_embeddings, pattern_encoder, pattern_windows
from assets.vsm import pnl_ledger
from cyber_pipelines.resources import (
    GitHubResource,
    MarketDataResource,
    ModelStoreResource,
    StorageResource,
    VectorStoreResource,
    VsmResource,
)
from sensors.github import github_activity_sensor
from sensors.landing import landing_sensor
from sensors.market import market_candles_sensor
from sensors.partitions import config_partitions_sensor
from sensors.prospecting import prospecting_sensor
from sensors.schedules import nightly_schedules
from sensors.vsm import vsm_assets, vsm_sensors

# Two explicit automation sensors (on by default), evaluated on the code server: the VSM gate (VsmAllows)
# is Python that reads the VSM event log. Data: features and the pattern and model layers follow new,
# checked upstream data. Research: backtests (also nightly), the comparison and the VSM ledger.
RESEARCH_GROUPS = ("backtests", "vsm")
automation_data_sensor = dg.AutomationConditionSensorDefinition(
    "automation_data",
    target=dg.AssetSelection.all() - dg.AssetSelection.groups(*RESEARCH_GROUPS),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    use_user_code_server=True,
    description="Declarative automation of the data layers: features, lead-lag, patterns and models follow new, "
    "checked upstream data, except for pairs the VSM has stopped (hibernated, breaker open).",
)
automation_research_sensor = dg.AutomationConditionSensorDefinition(
    "automation_research",
    target=dg.AssetSelection.groups(*RESEARCH_GROUPS),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    use_user_code_server=True,
    description="Declarative automation of backtests (after new features, and nightly), the strategy comparison and "
    "the P&L ledger, except for pairs the VSM has stopped.",
)

defs = dg.Definitions(
    assets=[
        ohlcv_candles,
        github_activity,
        moat_records,
        pair_features,
        lead_lag_report,
        lead_lag_summary,
        pattern_windows,
        pattern_encoder,
        pattern_embeddings,
        analog_forecasts,
        base_forecaster,
        pair_adapter,
        lora_forecasts,
        backtest_results,
        strategy_comparison,
        pnl_ledger,
        *vsm_assets,
    ],
    asset_checks=[base_forecaster_valid, pair_adapter_valid, pair_adapter_promotion],
    jobs=[
        market_ingest_job,
        github_ingest_job,
        moat_ingest_job,
        features_job,
        leadlag_summary_job,
        encoder_job,
        pattern_memory_job,
        analog_job,
        base_forecaster_job,
        adapters_job,
        lora_forecasts_job,
        backtests_job,
        comparison_job,
        ledger_job,
    ],
    schedules=nightly_schedules,
    sensors=[
        config_partitions_sensor,
        landing_sensor,
        github_activity_sensor,
        market_candles_sensor,
        prospecting_sensor,
        automation_data_sensor,
        automation_research_sensor,
        *vsm_sensors,
    ],
    resources={
        "market": MarketDataResource(),
        "storage": StorageResource(),
        "models": ModelStoreResource(),
        "vsm": VsmResource(),
        "vectors": VectorStoreResource(
            api_key=dg.EnvVar("QDRANT_API_KEY") if os.environ.get("QDRANT_API_KEY") else None
        ),
        # The token is read from the environment at run time and never shown in the UI or logs.
        "github": GitHubResource(token=dg.EnvVar("GITHUB_TOKEN") if os.environ.get("GITHUB_TOKEN") else None),
    },
)
