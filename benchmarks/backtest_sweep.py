"""SMA-cross grid on GOOG daily: the project's kernel vs vectorbt (whole grid) and backtesting.py (sample).

Run: ``.venv/bin/python benchmarks/backtest_sweep.py`` (needs the ``bench`` extra: ``backtesting``,
``vectorbt``; without vectorbt its fields are null). Prints one JSON line.

The grid: fast 5..54 x slow 20..215 step 5 with fast < slow, 1,860 pairs on backtesting.py's bundled
GOOG (2,148 daily bars). Every side uses the same conventions: long from SMA(fast) crossing above
SMA(slow) to its crossing below (long only), the signal of bar t filled at bar t+1's open, all equity
per entry, fractional units, commission 0.2% per side on traded notional, no slippage, an open trade
marked to the last close.

- kernel: ``sweep_sma_cross`` (signals, backtests and all 12 metrics of every pair), the median of
  ``REPEATS`` warm calls. The first call's cost is measured apart in fresh processes sharing a fresh
  numba cache folder: the first compiles (and writes the cache), the second loads it.
- vectorbt: ``MA.run`` of the windows, ``crossed_above`` / ``crossed_below`` per pair, the signals
  shifted one bar (``fshift``) and filled at the open, ``Portfolio.from_signals`` of the whole grid
  (``size=inf``: all cash, fees 0.002), then final value, total return, Sharpe, max drawdown, trade
  count and win rate (``vectorbt_seconds_split``: signals, portfolio, metrics); after a warm-up call
  (numba's compilation). vectorbt 1.2's optional Rust engine (``vectorbt-rust``) was measured here
  too and was not faster on this grid (861/s), so the extra installs plain vectorbt.
  Convention difference: vectorbt's ``crossed_above``/``crossed_below`` count a crossing through an
  exact tie (above -> equal -> below); the project's rule (and backtesting.py's ``crossover``) needs
  the averages strictly apart on adjacent bars, so it does not. On GOOG one pair meets such a tie,
  (5, 25) on 2010-08-17 (``vectorbt_pairs_differing``); backtesting.py happens to cross there too,
  because ``FractionalBacktest`` rescales prices and the rescaled averages are no longer equal.
- backtesting.py: ``FractionalBacktest`` runs of a seeded sample of ``SAMPLE`` pairs (about 30 a second).

``agree_sma_10_20`` compares the final equity of sma(10, 20) on every side (the grid row, the
single run of ``engine.run_backtest``, vectorbt, backtesting.py) to ``AGREE`` relative.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

os.environ.setdefault("TQDM_DISABLE", "1")  # backtesting.py's progress bar: off, it only costs time

import numpy as np
import polars as pl
from backtesting import Strategy
from backtesting.lib import FractionalBacktest, crossover
from backtesting.test import GOOG, SMA

from cyber_pipelines.backtest.engine import BacktestConfig, run_backtest
from cyber_pipelines.backtest.strategies import SmaCross
from cyber_pipelines.backtest.sweep import sweep_sma_cross

FAST = range(5, 55)  # 50 values
SLOW = range(20, 220, 5)  # 40 values -> 1860 pairs with fast < slow
COMMISSION = 0.002
CASH = 10_000.0
SAMPLE = 20
REPEATS = 5
TARGET = 25_000  # backtests per second, warm
TARGET_VS_VECTORBT = 20.0
AGREE = 1e-8
FIRST_CALL = """
import json, time
t = time.perf_counter()
from backtesting.test import GOOG
import polars as pl
from cyber_pipelines.backtest import kernel
from cyber_pipelines.backtest.engine import BacktestConfig
from cyber_pipelines.backtest.sweep import sweep_sma_cross
imported = time.perf_counter()
candles = pl.from_pandas(GOOG.reset_index()).rename(lambda c: "timestamp" if c == "index" else c.lower())
start = time.perf_counter()
sweep_sma_cross(candles, [10], [20], BacktestConfig(fee=0.002, slippage=0.0))
print(json.dumps([time.perf_counter() - start, imported - t, kernel.compiled_from_cache()]))
"""


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


def first_calls() -> dict[str, object]:
    """The first call in a fresh process, twice with one fresh numba cache: compiled, then cached."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        runs = [
            json.loads(subprocess.run([sys.executable, "-c", FIRST_CALL], env=env, check=True, capture_output=True,
                                      text=True).stdout)
            for _ in range(2)
        ]  # fmt: skip
    (compile_s, import_s, cold_cached), (cached_s, _, warm_cached) = runs
    return {
        "compile_seconds": round(compile_s, 3),
        "compile_from_cache": cold_cached,
        "cached_first_call_seconds": round(cached_s, 3),
        "cached_first_call_from_cache": warm_cached,
        "import_seconds": round(import_s, 3),
    }


def kernel_grid(candles: pl.DataFrame, config: BacktestConfig) -> tuple[pl.DataFrame, list[float]]:
    sweep_sma_cross(candles, [10], [20], config)  # this process's first call (compile or cache load)
    times, table = [], None
    for _ in range(REPEATS):
        start = time.perf_counter()
        table = sweep_sma_cross(candles, FAST, SLOW, config)
        times.append(time.perf_counter() - start)
    assert table is not None
    return table, times


def vectorbt_grid(pairs: list[tuple[int, int]]) -> dict[str, object] | None:
    """The grid in vectorbt (see the module docstring); None when vectorbt is not installed."""
    try:
        import vectorbt as vbt
    except ImportError:
        return None
    try:
        from vectorbt._engine import resolve_engine  # vectorbt 1.2: numba, or rust with vectorbt-rust

        engine = resolve_engine()
    except ImportError:
        engine = "numba"  # before 1.2 vectorbt had no other engine
    close, open_ = GOOG["Close"], GOOG["Open"]
    fast, slow = [f for f, _ in pairs], [s for _, s in pairs]
    windows = sorted(set(fast) | set(slow))

    def run(fast: list[int], slow: list[int]) -> tuple[np.ndarray, list[float]]:
        """Final values and the seconds of signals, portfolio and metrics."""
        start = time.perf_counter()
        ma = vbt.MA.run(close, window=windows).ma
        ma.columns = windows
        fast_ma, slow_ma = ma[fast], ma[slow]
        slow_ma.columns = fast_ma.columns = range(len(fast))
        entries = fast_ma.vbt.crossed_above(slow_ma).vbt.fshift(1, fill_value=False)
        exits = fast_ma.vbt.crossed_below(slow_ma).vbt.fshift(1, fill_value=False)
        signals = time.perf_counter()
        pf = vbt.Portfolio.from_signals(
            close, entries, exits, price=open_, size=np.inf, fees=COMMISSION, init_cash=CASH, freq="1D"
        )
        portfolio = time.perf_counter()
        trades = pf.trades
        pf.total_return(), pf.sharpe_ratio(year_freq="252 days"), pf.max_drawdown()
        trades.count(), trades.win_rate()
        final = pf.final_value().to_numpy()
        end = time.perf_counter()
        return final, [signals - start, portfolio - signals, end - portfolio]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run(fast[:2], slow[:2])  # warm-up: vectorbt's numba compilation
        runs = [run(fast, slow) for _ in range(REPEATS)]
    totals = [sum(parts) for _, parts in runs]
    median = runs[int(np.argsort(totals)[len(totals) // 2])]
    return {
        "version": vbt.__version__,
        "engine": engine,
        "seconds": statistics.median(totals),
        "seconds_all_repeats": [round(t, 4) for t in totals],
        "split": dict(zip(("signals", "portfolio", "metrics"), (round(t, 4) for t in median[1]), strict=True)),
        "final_equity": median[0],
    }


def backtesting_py(sample: list[tuple[int, int]]) -> tuple[float, float]:
    """Seconds for the sample's runs, and the final equity of sma(10, 20)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bt = FractionalBacktest(GOOG, LongOnCrossing, commission=COMMISSION, cash=CASH, fractional_unit=1e-8)
        start = time.perf_counter()
        for fast, slow in sample:
            bt.run(n1=fast, n2=slow)
        seconds = time.perf_counter() - start
        final = float(bt.run(n1=10, n2=20)["Equity Final [$]"])
    return seconds, final


def main() -> None:
    candles = pl.from_pandas(GOOG.reset_index()).rename(lambda c: "timestamp" if c == "index" else c.lower())
    config = BacktestConfig(fee=COMMISSION, slippage=0.0, initial_cash=CASH)
    first = first_calls()
    table, times = kernel_grid(candles, config)
    n = table.height
    per_s = n / statistics.median(times)
    pairs = list(zip(table["fast"].to_list(), table["slow"].to_list(), strict=True))
    at = pairs.index((10, 20))

    vbt = vectorbt_grid(pairs)
    sample = table.select("fast", "slow").sample(SAMPLE, seed=0).rows()
    bt_seconds, bt_final = backtesting_py(sample)
    bt_per_s = SAMPLE / bt_seconds

    ours = table["final_equity"].to_numpy()
    finals = {
        "kernel_grid": float(ours[at]),
        "engine_single_run": run_backtest(candles, SmaCross(10, 20).positions(candles), config).metrics["final_equity"],
        "backtesting_py": bt_final,
    }
    vbt_fields: dict[str, object] = {"vectorbt_version": None, "vectorbt_per_s": None, "ratio_vs_vectorbt": None}
    if vbt is not None:
        vbt_final = np.asarray(vbt["final_equity"])
        finals["vectorbt"] = float(vbt_final[at])
        vbt_per_s = n / float(vbt["seconds"])  # type: ignore[arg-type]
        vbt_fields = {
            "vectorbt_version": vbt["version"],
            "vectorbt_engine": vbt["engine"],
            "vectorbt_seconds": round(float(vbt["seconds"]), 4),  # type: ignore[arg-type]
            "vectorbt_seconds_all_repeats": vbt["seconds_all_repeats"],
            "vectorbt_seconds_split": vbt["split"],  # of the median repeat
            "vectorbt_per_s": round(vbt_per_s, 1),
            "ratio_vs_vectorbt": round(per_s / vbt_per_s, 1),
            "vectorbt_max_rel_diff": float(np.max(np.abs(vbt_final / ours - 1))),
            "vectorbt_pairs_differing": [pairs[i] for i in np.flatnonzero(np.abs(vbt_final / ours - 1) > AGREE)],
            "meets_target_vs_vectorbt": per_s / vbt_per_s >= TARGET_VS_VECTORBT,
        }
    values = np.array(list(finals.values()))
    spread = float(values.max() / values.min() - 1)
    print(
        json.dumps(
            {
                "benchmark": "backtest_sweep_sma_cross_goog",
                "bars": candles.height,
                "n_backtests": n,
                "kernel_seconds": round(statistics.median(times), 4),
                "kernel_seconds_all_repeats": [round(t, 4) for t in times],
                "kernel_per_s": round(per_s, 1),
                **first,
                **vbt_fields,
                "backtesting_py_sample": SAMPLE,
                "backtesting_py_seconds": round(bt_seconds, 3),
                "backtesting_py_per_s": round(bt_per_s, 2),
                "ratio_vs_backtesting_py": round(per_s / bt_per_s, 1),
                "sma_10_20_final_equity": finals,
                "sma_10_20_max_rel_diff": spread,
                "agree_sma_10_20": spread <= AGREE,
                "target": TARGET,
                "meets_target": per_s >= TARGET,
                "target_vs_vectorbt": TARGET_VS_VECTORBT,
            }
        )
    )


if __name__ == "__main__":
    main()
