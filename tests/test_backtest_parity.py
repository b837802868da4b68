"""Parity: the engine against backtesting.py on GOOG, and the single-run engine against the sweep.

backtesting.py conventions matched (see its ``Backtest`` docstring and ``_Broker``): market orders fill
at the next bar's open (``trade_on_close=True``: at the decision bar's close), ``commission`` is charged
on the traded notional at entry and at exit, an order of "all equity" buys ``equity / (price * (1 +
commission))`` units, ``FractionalBacktest`` trades (near-)fractional units, and the final equity marks
a still-open trade to the last close (``finalize_trades=False``; we count that trade, it does not).

``SmaCross`` is compared with backtesting.py's own SmaCross example (``crossover`` both ways), with no
adjustment of our targets. ``SmaAbove`` (hold while above) is compared with a strategy written here;
backtesting.py's first ``next()`` call is at bar ``1 + warm-up`` (= ``slow`` for SMA(slow)) while
``SmaAbove`` can decide at the warm-up's last bar, so its targets are zeroed before bar ``slow``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import polars as pl
import pytest

from cyber_pipelines.backtest.engine import BacktestConfig, run_backtest
from cyber_pipelines.backtest.strategies import SmaAbove, SmaCross
from cyber_pipelines.backtest.sweep import sweep_sma_cross

backtesting = pytest.importorskip("backtesting")
from backtesting import Strategy  # noqa: E402
from backtesting.lib import FractionalBacktest, crossover  # noqa: E402
from backtesting.test import GOOG, SMA  # noqa: E402

COMMISSION = 0.002
REL = 1e-6


class CrossingReference(Strategy):
    """backtesting.py's SmaCross example: buy on a crossing above, sell on a crossing below (shorts
    only when ``short``; otherwise the crossing below just closes the long)."""

    n1 = 10
    n2 = 20
    short = True

    def init(self) -> None:
        self.fast = self.I(SMA, self.data.Close, self.n1)
        self.slow = self.I(SMA, self.data.Close, self.n2)

    def next(self) -> None:
        if crossover(self.fast, self.slow):
            self.position.close()
            self.buy()
        elif crossover(self.slow, self.fast):
            self.position.close()
            if self.short:
                self.sell()


class HoldAboveReference(Strategy):
    """Hold the target of ``SmaAbove``: long above, short (if ``short``) or flat below."""

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


def _frame(data: pd.DataFrame) -> pl.DataFrame:
    return pl.from_pandas(data.reset_index()).rename(lambda c: "timestamp" if c == "index" else c.lower())


@pytest.fixture(scope="module")
def goog() -> pl.DataFrame:
    return _frame(GOOG)


def fast_starts_above() -> pd.DataFrame:
    """Daily candles that rise through the warm-up (SMA(10) > SMA(20) when both exist), then swing."""
    n = 400
    t = np.arange(n)
    close = np.where(t < 40, 100.0 + 1.5 * t, 160.0 + 25.0 * np.sin((t - 40) / 9.0) + 0.05 * (t - 40))
    wiggle = np.random.default_rng(3).normal(0, 0.4, n)
    close = close + wiggle
    open_ = np.concatenate([[close[0]], close[:-1]]) + np.random.default_rng(4).normal(0, 0.3, n)
    high, low = np.maximum(open_, close) + 0.5, np.minimum(open_, close) - 0.5
    index = pd.date_range("2020-01-01", periods=n, freq="D", name="index")
    data = {"Open": open_, "High": high, "Low": low, "Close": close, "Volume": np.full(n, 1e6)}
    return pd.DataFrame(data, index=index)


def reference_run(data: pd.DataFrame, strategy: type[Strategy], short: bool, trade_on_close: bool) -> tuple[float, int]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bt = FractionalBacktest(
            data, strategy, commission=COMMISSION, trade_on_close=trade_on_close, fractional_unit=1e-8
        )
        stats = bt.run(n1=10, n2=20, short=short)
    still_open = int(bool(stats["_strategy"].position))
    return float(stats["Equity Final [$]"]), int(stats["# Trades"]) + still_open


FILLS = [(False, "next_open"), (False, "close"), (True, "next_open"), (True, "close")]


@pytest.mark.parametrize("dataset", ["goog", "fast_starts_above"])
@pytest.mark.parametrize(("short", "fill"), FILLS)
def test_sma_cross_equals_backtesting_py_sma_cross(dataset: str, short: bool, fill: str) -> None:
    data = GOOG if dataset == "goog" else fast_starts_above()
    candles = _frame(data)
    equity, trades = reference_run(data, CrossingReference, short, trade_on_close=fill == "close")
    cfg = BacktestConfig(fee=COMMISSION, slippage=0.0, fill=fill, allow_short=short)  # type: ignore[arg-type]
    ours = run_backtest(candles, SmaCross(10, 20).positions(candles), cfg).metrics
    assert trades >= 5
    assert ours["n_trades"] == trades
    assert ours["final_equity"] == pytest.approx(equity, rel=REL)


@pytest.mark.parametrize("dataset", ["goog", "fast_starts_above"])
@pytest.mark.parametrize(("short", "fill"), FILLS)
def test_sma_above_equals_a_hold_while_above_reference(dataset: str, short: bool, fill: str) -> None:
    data = GOOG if dataset == "goog" else fast_starts_above()
    candles = _frame(data)
    equity, trades = reference_run(data, HoldAboveReference, short, trade_on_close=fill == "close")
    target = SmaAbove(10, 20).positions(candles)
    target[:20] = 0.0  # backtesting.py decides first at bar 1 + warm-up (19) = 20
    cfg = BacktestConfig(fee=COMMISSION, slippage=0.0, fill=fill, allow_short=short)  # type: ignore[arg-type]
    ours = run_backtest(candles, target, cfg).metrics
    assert ours["n_trades"] == trades
    assert ours["final_equity"] == pytest.approx(equity, rel=REL)


def test_sma_above_positions_equal_pandas_rolling_means() -> None:
    data = fast_starts_above()
    fast, slow = data["Close"].rolling(10).mean(), data["Close"].rolling(20).mean()
    expected = np.sign(fast - slow).fillna(0.0).to_numpy()
    np.testing.assert_array_equal(SmaAbove(10, 20).positions(_frame(data)), expected)


def test_the_two_rules_differ_when_the_fast_average_starts_above() -> None:
    candles = _frame(fast_starts_above())
    above, cross = SmaAbove(10, 20).positions(candles), SmaCross(10, 20).positions(candles)
    assert above[19] == 1.0 and cross[19] == 0.0  # warm-up ends with fast > slow: only SmaAbove is long
    first = int(np.flatnonzero(cross)[0])  # the first crossing is the fast average falling below
    assert cross[first] == -1.0 and first > 40 and np.all(above[19:first] == 1.0)
    np.testing.assert_array_equal(above[first:], cross[first:])  # from then on the rules agree (no ties)
    cfg = BacktestConfig(fee=COMMISSION, slippage=0.0)
    n_above = run_backtest(candles, above, cfg).metrics["n_trades"]
    n_cross = run_backtest(candles, cross, cfg).metrics["n_trades"]
    assert n_above == n_cross + 1


@pytest.mark.parametrize(
    "cfg",
    [
        BacktestConfig(),
        BacktestConfig(fill="close", allow_short=True),
        BacktestConfig(fee=0.001, slippage=0.0005, size_multiplier=0.5, allow_short=True),
        BacktestConfig(stop_loss=0.05, allow_short=True),  # grids support stops: the same kernel
        BacktestConfig(fill="close", stop_loss=0.03, size_multiplier=0.5),
    ],
)
def test_engine_equals_sweep(goog: pl.DataFrame, cfg: BacktestConfig) -> None:
    grid = sweep_sma_cross(goog, [5, 10, 30], [20, 50], cfg)
    above = sweep_sma_cross(goog, [5, 10, 30], [20, 50], cfg, rule="above")
    assert grid.height == 5  # (30, 20) is not a pair: fast must be below slow
    for row in grid.iter_rows(named=True):
        for rule, strategy in (("cross", SmaCross), ("above", SmaAbove)):
            single = run_backtest(goog, strategy(row["fast"], row["slow"]).positions(goog), cfg).metrics
            other = grid if rule == "cross" else above
            pair = (pl.col("fast") == row["fast"]) & (pl.col("slow") == row["slow"])
            match = other.filter(pair).row(0, named=True)
            for name, value in single.items():
                where = (rule, row["fast"], row["slow"], name)
                assert match[name] == pytest.approx(value, rel=1e-9, nan_ok=True), where


def test_sweep_rejects_bad_grids(goog: pl.DataFrame) -> None:
    with pytest.raises(ValueError, match="fast < slow"):
        sweep_sma_cross(goog, [30], [20])
    with pytest.raises(ValueError, match="rule"):
        sweep_sma_cross(goog, [5], [20], rule="below")
    arrays = {"open": goog["open"].to_numpy(), "close": goog["close"].to_numpy()}
    with pytest.raises(ValueError, match="bars_per_year"):
        sweep_sma_cross(arrays, [5], [20])
    with pytest.raises(ValueError, match="high and low"):  # a stop needs the bars' range
        sweep_sma_cross(arrays, [5], [20], BacktestConfig(stop_loss=0.05, bars_per_year=252))
    from_arrays = sweep_sma_cross(arrays, [5], [20], BacktestConfig(bars_per_year=252))
    from_frame = sweep_sma_cross(goog, [5], [20], BacktestConfig(bars_per_year=252))
    # CAGR needs the span in years: the frame's calendar span, the arrays' (n - 1) / bars_per_year
    assert from_arrays.drop("cagr", "calmar").equals(from_frame.drop("cagr", "calmar"))
    growth = from_arrays["final_equity"][0] / 10_000
    assert from_arrays["cagr"][0] == pytest.approx(growth ** (252 / (goog.height - 1)) - 1, rel=1e-12)
    span = (goog["timestamp"][-1] - goog["timestamp"][0]).total_seconds() / (365.25 * 86400)
    assert from_frame["cagr"][0] == pytest.approx(growth ** (1 / span) - 1, rel=1e-12)
    assert np.isfinite(from_frame["sharpe"][0])


def test_crossings_through_an_exact_tie_keep_the_last_crossing() -> None:
    from cyber_pipelines.backtest.sweep import sma_cross_targets

    fast = np.array([np.nan, 1.0, 3.0, 2.0, 2.0, 3.0, 1.0, 2.0, 2.0, 1.0])
    slow = np.full(10, 2.0)
    # below, above (cross up), tie, tie, above (no crossing: came from a tie), below (cross down),
    # tie, below (no crossing)
    expected = [0, 0, 1, 1, 1, 1, -1, -1, -1, -1]
    np.testing.assert_array_equal(sma_cross_targets(fast, slow), expected)
    grid = sma_cross_targets(np.column_stack([fast, fast + 5.0]), np.column_stack([slow, slow]))
    np.testing.assert_array_equal(grid[:, 0], expected)
    np.testing.assert_array_equal(grid[:, 1], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0])  # never below: no crossing
