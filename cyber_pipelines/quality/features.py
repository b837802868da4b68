"""GX suite for a pair's feature table."""

from __future__ import annotations

import great_expectations.expectations as E
import polars as pl

from cyber_pipelines.features.cross_source import CROSS_SOURCE_COLUMNS
from cyber_pipelines.features.indicators import INDICATOR_COLUMNS, WARMUP_BARS
from cyber_pipelines.quality.gx import SuiteReport, run_suite
from cyber_pipelines.quality.ranges import merge_reports


def validate_features_gx(features: pl.DataFrame, candle_rows: int) -> SuiteReport:
    """Row count equals the candles', no NaN/null after warm-up, RSI in [0, 100], Bollinger bands ordered."""
    whole = run_suite(
        features,
        "features",
        [
            E.ExpectTableRowCountToEqual(value=candle_rows, description=f"one row per candle ({candle_rows})"),
            E.ExpectColumnValuesToBeUnique(column="timestamp", description="timestamps are unique"),
            E.ExpectColumnValuesToBeIncreasing(column="timestamp", description="timestamps are increasing"),
        ],
    )
    warm = features.slice(WARMUP_BARS)
    if warm.is_empty():
        return whole
    after_warmup = run_suite(
        warm,
        "features_after_warmup",
        [
            *(
                E.ExpectColumnValuesToNotBeNull(column=c, description=f"{c}: no NaN/null after warm-up")
                for c in (*INDICATOR_COLUMNS, *CROSS_SOURCE_COLUMNS)
            ),
            E.ExpectColumnValuesToBeBetween(column="rsi_14", min_value=0, max_value=100, description="RSI in [0, 100]"),
            E.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A="bb_upper_20_2", column_B="bb_middle_20_2", or_equal=True, description="upper >= middle band"
            ),
            E.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A="bb_middle_20_2", column_B="bb_lower_20_2", or_equal=True, description="middle >= lower band"
            ),
        ],
    )
    return merge_reports("features", [whole, after_warmup], rows=features.height)
