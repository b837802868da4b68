"""Benchmark: every indicator of ``add_indicators`` on 1M hourly candles of one pair.

Prints one JSON line: rows, seconds (best of 3), rows_per_s, target_s, meets_target.
Run: ``.venv/bin/python benchmarks/indicators.py [--rows N]``.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

from cyber_pipelines.features.indicators import add_indicators
from cyber_pipelines.market.schema import conform_ohlcv

TARGET_S = 0.5


def random_candles(rows: int, seed: int = 0) -> pl.DataFrame:
    """A geometric random walk with consistent OHLC bars (not a market model: only for timing)."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, rows)))
    open_ = np.concatenate([[100.0], close[:-1]])
    spread = np.abs(rng.normal(0.0, 0.005, rows))
    start = datetime(2000, 1, 1, tzinfo=UTC)
    return conform_ohlcv(
        pl.DataFrame(
            {
                "timestamp": pl.datetime_range(
                    start, start + timedelta(hours=rows - 1), "1h", eager=True, time_unit="us"
                ),
                "open": open_,
                "high": np.maximum(open_, close) * (1 + spread),
                "low": np.minimum(open_, close) * (1 - spread),
                "close": close,
                "volume": rng.lognormal(3.0, 1.0, rows),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    candles = random_candles(args.rows)
    add_indicators(candles.head(1000))  # warm up polars' thread pool
    best = float("inf")
    for _ in range(args.repeats):
        start = time.perf_counter()
        out = add_indicators(candles)
        best = min(best, time.perf_counter() - start)
    assert out.height == args.rows
    print(
        json.dumps(
            {
                "benchmark": "indicators",
                "rows": args.rows,
                "seconds": round(best, 4),
                "rows_per_s": round(args.rows / best),
                "target_s": TARGET_S,
                "meets_target": best < TARGET_S,
            }
        )
    )


if __name__ == "__main__":
    main()
