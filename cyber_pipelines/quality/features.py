"""GX suite for a pair's feature table (the one contract of the table), tagged by Dagster check."""

from __future__ import annotations

import great_expectations as gx
import polars as pl

from cyber_pipelines.features.cross_source import CROSS_SOURCE_COLUMNS
from cyber_pipelines.features.indicators import INDICATOR_COLUMNS, WARMUP_BARS
from cyber_pipelines.quality.checks import FEATURES_CHECKS
from cyber_pipelines.quality.gx import SuiteReport, run_suite, tag

E = gx.expectations


def audit_features(features: pl.DataFrame, candle_rows: int) -> list[SuiteReport]:
    """Row count equals the candles', no NaN/null after warm-up, RSI in [0, 100], Bollinger bands ordered.

    Two reports: the whole table, and the rows after the warm-up (when there are any)."""
    whole = run_suite(
        features,
        "features",
        tag(
            "features_row_count",
            E.ExpectTableRowCountToEqual(value=candle_rows, description=f"one row per candle ({candle_rows})"),
            E.ExpectColumnValuesToBeUnique(column="timestamp", description="timestamps are unique"),
            E.ExpectColumnValuesToBeIncreasing(column="timestamp", description="timestamps are increasing"),
        ),
        FEATURES_CHECKS,
    )
    warm = features.slice(WARMUP_BARS)
    if warm.is_empty():
        return [whole]
    after_warmup = run_suite(
        warm,
        "features_after_warmup",
        [
            *tag(
                "features_no_nan_after_warmup",
                *(
                    E.ExpectColumnValuesToNotBeNull(column=c, description=f"{c}: no NaN/null after warm-up")
                    for c in (*INDICATOR_COLUMNS, *CROSS_SOURCE_COLUMNS)
                ),
            ),
            *tag(
                "features_bounds",
                E.ExpectColumnValuesToBeBetween(
                    column="rsi_14", min_value=0, max_value=100, description="RSI in [0, 100]"
                ),
                E.ExpectColumnPairValuesAToBeGreaterThanB(
                    column_A="bb_upper_20_2",
                    column_B="bb_middle_20_2",
                    or_equal=True,
                    description="upper >= middle band",
                ),
                E.ExpectColumnPairValuesAToBeGreaterThanB(
                    column_A="bb_middle_20_2",
                    column_B="bb_lower_20_2",
                    or_equal=True,
                    description="middle >= lower band",
                ),
            ),
        ],
        FEATURES_CHECKS,
    )
    return [whole, after_warmup]
