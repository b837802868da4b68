"""SMA-cross grid sweep on GOOG daily: the vectorized sweep vs backtesting.py on a sample of the grid.

Run: ``.venv/bin/python benchmarks/backtest_sweep.py`` (needs the ``bench`` extra: ``backtesting``).
Prints one JSON line. Both sides use the same conventions: fill at the next open, commission 0.2% per
side on traded notional, fractional units (``FractionalBacktest``), long from SMA(fast) crossing above
SMA(slow) to its crossing below (``SmaCross``, long only).
"""

from __future__ import annotations

import json
import os
import statistics
import time
import warnings

os.environ.setdefault("TQDM_DISABLE", "1")  # backtesting.py's progress bar: off, it only costs time

import polars as pl
from backtesting import Strategy
from backtesting.lib import FractionalBacktest, crossover
from backtesting.test import GOOG, SMA

from cyber_pipelines.backtest.engine import BacktestConfig
from cyber_pipelines.backtest.sweep import sweep_sma_cross

FAST = range(5, 55)  # 50 values
SLOW = range(20, 220, 5)  # 40 values -> 1860 pairs with fast < slow
COMMISSION = 0.002
SAMPLE = 20
REPEATS = 3
TARGET = 2000


class LongOnCrossing(Strategy):
    """Buy when SMA(n1) crosses above SMA(n2), close when it crosses below (long-only ``SmaCross``)."""

    n1 = 10
    n2 = 20

    def init(self) -> None:
        self.fast = self.I(SMA, self.data.Close, self.n1)
        self.slow = self.I(SMA, self.data.Close, self.n2)

    def next(self) -> None:
        if crossover(self.fast, self.slow):
            self.buy()
        elif crossover(self.slow, self.fast):
            self.position.close()


def main() -> None:
    candles = pl.from_pandas(GOOG.reset_index()).rename(lambda c: "timestamp" if c == "index" else c.lower())
    config = BacktestConfig(fee=COMMISSION, slippage=0.0)
    sweep_sma_cross(candles, [5], [20], config)  # warm-up (imports, allocator)
    times, result = [], None
    for _ in range(REPEATS):
        start = time.perf_counter()
        result = sweep_sma_cross(candles, FAST, SLOW, config)
        times.append(time.perf_counter() - start)
    assert result is not None
    seconds = statistics.median(times)
    n = result.height

    sample = result.select("fast", "slow").sample(SAMPLE, seed=0).rows()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bt = FractionalBacktest(GOOG, LongOnCrossing, commission=COMMISSION, fractional_unit=1e-8)
        for fast, slow in sample:
            bt.run(n1=fast, n2=slow)
    bt_seconds = time.perf_counter() - start
    per_s = n / seconds
    bt_per_s = SAMPLE / bt_seconds
    print(
        json.dumps(
            {
                "benchmark": "backtest_sweep_sma_cross_goog",
                "bars": candles.height,
                "n_backtests": n,
                "seconds": round(seconds, 4),
                "seconds_all_repeats": [round(t, 4) for t in times],
                "backtests_per_s": round(per_s, 1),
                "backtesting_py_sample": SAMPLE,
                "backtesting_py_seconds": round(bt_seconds, 3),
                "backtesting_py_per_s": round(bt_per_s, 2),
                "ratio": round(per_s / bt_per_s, 1),
                "target": TARGET,
                "meets_target": per_s >= TARGET,
            }
        )
    )


if __name__ == "__main__":
    main()
