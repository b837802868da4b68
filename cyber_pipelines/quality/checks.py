"""The named Dagster checks of each table's GX suite (no Great Expectations import: it takes seconds).

The asset definitions need only these names and descriptions; the suites, which import GX, are
loaded when an audit runs.
"""

HOURS_PER_DAY = 24

OHLCV_CHECKS = {
    "ohlcv_schema": "Columns are exactly the OHLCV set, typed (UTC datetime, float64), no nulls",
    "ohlcv_timestamps": "Timestamps unique, increasing, on the hourly grid of their own UTC day",
    "ohlcv_price_integrity": "Prices > 0, finite, and low <= open/close <= high",
    "ohlcv_volume": "Volume >= 0 and finite",
    "ohlcv_gap_ratio": "Each day's share of missing hourly candles is at most the configured maximum",
}
GITHUB_CHECKS = {
    "github_schema": "Columns, types and no nulls",
    "github_counts": "Counts and derived metrics are non-negative",
    "github_unique_repo_hours": "One row per repo and hour of its own day: 24 rows, no duplicates",
}
MOAT_CHECKS = {
    "moat_schema": "Columns, types and no nulls",
    "moat_unique_observations": "No duplicate (timestamp, source, entity, metric)",
    "moat_values_in_range": "Finite values, timestamps inside their publication day",
}
FEATURES_CHECKS = {
    "features_row_count": "One row per stored candle, unique increasing timestamps",
    "features_no_nan_after_warmup": "No NaN or null in any indicator after the warm-up bars",
    "features_bounds": "RSI in [0, 100] and Bollinger bands ordered",
}
