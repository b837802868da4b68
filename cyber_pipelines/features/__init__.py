"""Feature layer: technical indicators, point-in-time cross-source joins and the lead-lag analysis."""

from cyber_pipelines.features.cross_source import (
    CROSS_SOURCE_COLUMNS,
    build_feature_table,
    join_activity,
    pivot_moat,
    repos_for_asset,
)
from cyber_pipelines.features.indicators import INDICATOR_COLUMNS, WARMUP_BARS, add_indicators
from cyber_pipelines.features.leadlag import (
    LeadLagResult,
    lead_lag,
    lead_lag_for_pair,
    leadlag_markdown,
    leadlag_plot_png,
)
from cyber_pipelines.features.ohlcv_csv import compute_features_file, read_ohlcv_csv

__all__ = [
    "CROSS_SOURCE_COLUMNS",
    "INDICATOR_COLUMNS",
    "WARMUP_BARS",
    "LeadLagResult",
    "add_indicators",
    "build_feature_table",
    "compute_features_file",
    "join_activity",
    "lead_lag",
    "lead_lag_for_pair",
    "leadlag_markdown",
    "leadlag_plot_png",
    "pivot_moat",
    "read_ohlcv_csv",
    "repos_for_asset",
]
