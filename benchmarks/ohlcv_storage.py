"""Store and read back 5 years of 1-minute candles for one pair through the project's storage.

Writes with ``storage.write_parquet_atomic``, reads with ``pl.read_parquet`` (best of 3), and compares
with pandas reading the same candles from a CSV written once. Prints one JSON line.

Run: ``.venv/bin/python benchmarks/ohlcv_storage.py [--years 5] [--seed 7]``
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl

from cyber_pipelines.market.schema import OHLCV_SCHEMA
from cyber_pipelines.storage import write_parquet_atomic

TARGET_READ_S = 1.0
REPEATS = 3


def synthetic_minutes(years: float, seed: int) -> pl.DataFrame:
    """Valid 1-minute OHLCV candles: a geometric random walk with wicks and log-normal volume."""
    rng = np.random.default_rng(seed)
    n = int(years * 365.25 * 24 * 60)
    start = np.datetime64(datetime(2019, 1, 1), "us")
    timestamps = start + np.arange(n, dtype=np.int64) * np.timedelta64(60_000_000, "us")
    close = 30_000.0 * np.exp(np.cumsum(rng.normal(0.0, 8e-4, n)))
    open_ = np.concatenate(([30_000.0], close[:-1]))
    high = np.maximum(open_, close) * (1.0 + np.abs(rng.normal(0.0, 3e-4, n)))
    low = np.minimum(open_, close) * (1.0 - np.abs(rng.normal(0.0, 3e-4, n)))
    volume = rng.lognormal(0.0, 1.0, n)
    df = pl.DataFrame(
        {"timestamp": timestamps, "open": open_, "high": high, "low": low, "close": close, "volume": volume}
    ).with_columns(pl.col("timestamp").dt.replace_time_zone("UTC"))
    return df.cast(OHLCV_SCHEMA)  # type: ignore[arg-type]


def best_of(fn: Callable[[], Any], repeats: int = REPEATS) -> tuple[float, Any]:
    """The fastest of ``repeats`` timed calls and the last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    return best, result


def run(years: float, seed: int) -> dict[str, Any]:
    candles = synthetic_minutes(years, seed)
    with tempfile.TemporaryDirectory(prefix="ohlcv_bench_") as tmp:
        parquet = Path(tmp) / "BTC-USD" / "minutes.parquet"
        started = time.perf_counter()
        write_parquet_atomic(candles, parquet)
        write_s = time.perf_counter() - started
        read_s, back = best_of(lambda: pl.read_parquet(parquet))
        if not back.equals(candles):
            raise RuntimeError("Parquet round trip changed the candles")
        csv = Path(tmp) / "minutes.csv"
        candles.write_csv(csv)
        csv_s, frame = best_of(lambda: pd.read_csv(csv, parse_dates=["timestamp"]))
        if len(frame) != candles.height or str(frame["timestamp"].dtype).find("UTC") < 0:
            raise RuntimeError(f"pandas read {len(frame)} rows, timestamp dtype {frame['timestamp'].dtype}")
        parquet_mb = parquet.stat().st_size / 1e6
    return {
        "rows": candles.height,
        "write_s": round(write_s, 3),
        "read_s": round(read_s, 3),
        "parquet_mb": round(parquet_mb, 1),
        "pandas_csv_read_s": round(csv_s, 3),
        "read_speedup_vs_pandas_csv": round(csv_s / read_s, 1),
        "target_read_s": TARGET_READ_S,
        "meets_target": read_s < TARGET_READ_S,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--years", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    print(json.dumps(run(args.years, args.seed)))


if __name__ == "__main__":
    main()
