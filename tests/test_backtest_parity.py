"""Parity: the engine against backtesting.py on GOOG, and the single-run engine against the sweep.

backtesting.py conventions matched (see its ``Backtest`` docstring and ``_Broker``): market orders fill
at the next bar's open (``trade_on_close=True``: at the decision bar's close), ``commission`` is charged
on the traded notional at entry and at exit, an order of "all equity" buys ``equity / (price * (1 +
commission))`` units, ``FractionalBacktest`` trades (near-)fractional units, and the final equity marks
a still-open trade to the last close (``finalize_trades=False``; we count that trade, it does not).
Its first ``next()`` call is at bar ``1 + warm-up`` (= ``slow`` for SMA(slow)), so our targets are
zeroed before that bar.
"""

from __future__ import annotations

import warnings

import numpy as np
import polars as pl
import pytest

from cyber_pipelines.backtest.engine import BacktestConfig, run_backtest
from cyber_pipelines.backtest.strategies import SmaCross
from cyber_pipelines.backtest.sweep import sweep_sma_cross

backtesting = pytest.importorskip("backtesting")
from backtesting import Strategy  # noqa: E402
from backtesting.lib import FractionalBacktest  # noqa: E402
from backtesting.test import GOOG, SMA  # noqa: E402

COMMISSION = 0.002


class TargetSmaCross(Strategy):
    """Hold the target position of ``SmaCross``: long above, short (if ``short``) or flat below."""

    n1 = 10
    n2 = 20
    short = False

    def init(self) -> None:
        self.fast = self.I(SMA, self.data.Close, self.n1)
        self.slow = self.I(SMA, self.data.Close, self.n2)

    def next(self) -> None:
        if self.fast[-1] > self.slow[-1]:
            if not self.position.is_long:
                self.position.close()
                self.buy()
        elif self.fast[-1] < self.slow[-1]:
            if self.position.is_long:
                self.position.close()
            if self.short and not self.position.is_short:
                self.sell()


@pytest.fixture(scope="module")
def goog() -> pl.DataFrame:
    return pl.from_pandas(GOOG.reset_index()).rename(lambda c: "timestamp" if c == "index" else c.lower())


def reference_run(short: bool, trade_on_close: bool) -> tuple[float, int]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bt = FractionalBacktest(
            GOOG, TargetSmaCross, commission=COMMISSION, trade_on_close=trade_on_close, fractional_unit=1e-8
        )
        stats = bt.run(n1=10, n2=20, short=short)
    still_open = int(bool(stats["_strategy"].position))
    return float(stats["Equity Final [$]"]), int(stats["# Trades"]) + still_open


@pytest.mark.parametrize(("short", "fill"), [(False, "next_open"), (False, "close"), (True, "next_open")])
def test_sma_cross_10_20_agrees_with_backtesting_py(goog: pl.DataFrame, short: bool, fill: str) -> None:
    equity, trades = reference_run(short, trade_on_close=fill == "close")
    target = SmaCross(10, 20).positions(goog)
    target[:20] = 0.0  # backtesting.py decides first at bar 1 + warm-up (19) = 20
    cfg = BacktestConfig(fee=COMMISSION, slippage=0.0, fill=fill, allow_short=short)  # type: ignore[arg-type]
    ours = run_backtest(goog, target, cfg).metrics
    assert trades > 40
    assert abs(ours["n_trades"] - trades) <= 0.005 * trades
    assert ours["final_equity"] == pytest.approx(equity, rel=0.005)


@pytest.mark.parametrize(
    "cfg",
    [
        BacktestConfig(),
        BacktestConfig(fill="close", allow_short=True),
        BacktestConfig(fee=0.001, slippage=0.0005, size_multiplier=0.5, allow_short=True),
    ],
)
def test_engine_equals_sweep(goog: pl.DataFrame, cfg: BacktestConfig) -> None:
    grid = sweep_sma_cross(goog, [5, 10, 30], [20, 50], cfg)
    assert grid.height == 5  # (30, 20) is not a pair: fast must be below slow
    for row in grid.iter_rows(named=True):
        single = run_backtest(goog, SmaCross(row["fast"], row["slow"]).positions(goog), cfg).metrics
        for name, value in single.items():
            assert row[name] == pytest.approx(value, rel=1e-9, nan_ok=True), (row["fast"], row["slow"], name)


def test_sweep_rejects_stops_and_bad_grids(goog: pl.DataFrame) -> None:
    with pytest.raises(ValueError, match="stop_loss"):
        sweep_sma_cross(goog, [5], [20], BacktestConfig(stop_loss=0.05))
    with pytest.raises(ValueError, match="fast < slow"):
        sweep_sma_cross(goog, [30], [20])
    arrays = {"open": goog["open"].to_numpy(), "close": goog["close"].to_numpy()}
    with pytest.raises(ValueError, match="bars_per_year"):
        sweep_sma_cross(arrays, [5], [20])
    from_arrays = sweep_sma_cross(arrays, [5], [20], BacktestConfig(bars_per_year=252))
    from_frame = sweep_sma_cross(goog, [5], [20], BacktestConfig(bars_per_year=252))
    assert from_arrays.equals(from_frame)
    assert np.isfinite(from_frame["sharpe"][0])
