"""Asset jobs that sensors, schedules and the CLI launch."""

import dagster as dg

from assets.backtests import backtest_results, strategy_comparison
from assets.features import lead_lag_report, lead_lag_summary, pair_features
from assets.github import github_activity
from assets.market import ohlcv_candles
from assets.moat import moat_records
from assets.models import base_forecaster, lora_forecasts, pair_adapter
from assets.partitions import monthly_partitions, pair_month_partitions, pair_partitions, repo_month_partitions
from assets.patterns import analog_forecasts, pattern_embeddings, pattern_encoder, pattern_windows
from assets.vsm import pnl_ledger

market_ingest_job = dg.define_asset_job(
    "market_ingest",
    selection=dg.AssetSelection.assets(ohlcv_candles),
    partitions_def=pair_month_partitions,
    description="Ingest pair-months of OHLCV candles: audit each day with the GX checks, publish what passed.",
)

github_ingest_job = dg.define_asset_job(
    "github_ingest",
    selection=dg.AssetSelection.assets(github_activity),
    partitions_def=repo_month_partitions,
    description="Ingest repo-months of GitHub activity: audit each day with the GX checks, publish what passed.",
)

moat_ingest_job = dg.define_asset_job(
    "moat_ingest",
    selection=dg.AssetSelection.assets(moat_records),
    partitions_def=monthly_partitions,
    description="Ingest months of moat records: audit each day with the blocking GX checks, publish what passed.",
)

features_job = dg.define_asset_job(
    "features",
    selection=dg.AssetSelection.assets(pair_features, lead_lag_report, pattern_windows),
    partitions_def=pair_partitions,
    description="Rebuild one pair's feature table (with its blocking checks), its lead-lag report and its windows.",
)

encoder_job = dg.define_asset_job(
    "train_pattern_encoder",
    selection=dg.AssetSelection.assets(pattern_encoder),
    description="Train the window encoder on every pair's windows before the first out-of-sample bar.",
)

pattern_memory_job = dg.define_asset_job(
    "pattern_memory",
    selection=dg.AssetSelection.assets(pattern_embeddings),
    partitions_def=pair_partitions,
    description="Encode one pair's windows and upsert them into the vector store (blocking check: count, recall).",
)

analog_job = dg.define_asset_job(
    "forecast_analogs",
    selection=dg.AssetSelection.assets(analog_forecasts),
    partitions_def=pair_partitions,
    description="Forecast one pair's bars from the nearest admissible windows of every pair, with their skill.",
)

base_forecaster_job = dg.define_asset_job(
    "train_base_forecaster",
    selection=dg.AssetSelection.assets(base_forecaster),
    description="Train the base forecaster on every pair's samples known before the promotion period.",
)

adapters_job = dg.define_asset_job(
    "pair_models",
    selection=dg.AssetSelection.assets(pair_adapter, lora_forecasts),
    partitions_def=pair_partitions,
    description="Train one pair's LoRA adapter of the base, decide on the held-out period whether it serves (its "
    "blocking checks), then forecast the pair with the model that serves it.",
)

lora_forecasts_job = dg.define_asset_job(
    "forecast_models",
    selection=dg.AssetSelection.assets(lora_forecasts),
    partitions_def=pair_partitions,
    description="Forecast one pair's bars with the model that serves it (its promoted adapter, else the base).",
)

leadlag_summary_job = dg.define_asset_job(
    "summarize_lead_lag",
    selection=dg.AssetSelection.assets(lead_lag_summary),
    description="Adjust the pairs' latest lead-lag tests for multiple testing (Holm across the pairs).",
)

backtests_job = dg.define_asset_job(
    "backtests",
    selection=dg.AssetSelection.assets(backtest_results),
    partitions_def=pair_partitions,
    description="Backtest every strategy on one pair's feature table, with significance against the baseline.",
)

comparison_job = dg.define_asset_job(
    "compare_strategies",
    selection=dg.AssetSelection.assets(strategy_comparison),
    description="Compare the strategies' equal-weight portfolios across all pairs against the baseline.",
)

ledger_job = dg.define_asset_job(
    "update_ledger",
    selection=dg.AssetSelection.assets(pnl_ledger),
    description="S3: each pair's P&L ledger from its latest out-of-sample backtest (probation, hibernation).",
)
