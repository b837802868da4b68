"""The best of a grid after data snooping: per-bar returns of the sweep, Hansen's SPA over the grid."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from backtesting.test import GOOG

from cyber_pipelines.backtest.engine import BacktestConfig, run_backtest
from cyber_pipelines.backtest.snooping import (
    bars_per_day,
    benchmark_returns,
    best_of_grid,
    spa_pvalues,
    stationary_block_length,
)
from cyber_pipelines.backtest.strategies import SmaAbove, SmaCross
from cyber_pipelines.backtest.sweep import sweep_sma_cross, sweep_sma_returns

FAST = range(2, 22, 2)  # 10 x 10 windows -> 91 pairs with fast < slow
SLOW = range(10, 70, 6)
NO_COSTS = BacktestConfig(fee=0.0, slippage=0.0)


def hourly(seed: int, n: int = 3000, trend: float = 0.0, vol: float = 0.01) -> pl.DataFrame:
    """Hourly candles of a driftless random walk; ``trend`` > 0 adds a persistent drift (an AR(1) with
    coefficient 0.99 and innovations of that size): momentum that trend-following can harvest."""
    rng = np.random.default_rng(seed)
    drift = np.zeros(n)
    shocks = rng.normal(0.0, trend, n) if trend else np.zeros(n)
    for t in range(1, n):
        drift[t] = 0.99 * drift[t - 1] + shocks[t]
    close = 100.0 * np.exp(np.cumsum(drift + rng.normal(0.0, vol, n)))
    open_ = np.concatenate([[100.0], close[:-1]])
    start = datetime(2024, 1, 1, tzinfo=UTC)
    return pl.DataFrame(
        {
            "timestamp": [start + timedelta(hours=i) for i in range(n)],
            "open": open_,
            "high": np.maximum(open_, close) * 1.001,
            "low": np.minimum(open_, close) * 0.999,
            "close": close,
        }
    )


@pytest.fixture(scope="module")
def goog() -> pl.DataFrame:
    return pl.from_pandas(GOOG.reset_index()).rename(lambda c: "timestamp" if c == "index" else c.lower())


@pytest.mark.parametrize(
    "cfg", [BacktestConfig(), BacktestConfig(fee=0.001, slippage=0.0005, allow_short=True, fill="close")]
)
def test_sweep_returns_are_the_engine_returns(goog: pl.DataFrame, cfg: BacktestConfig) -> None:
    # 29 x 20 = 580 pairs: more than one chunk of 256 columns
    fast, slow = range(2, 31), range(31, 51)
    for rule, strategy in (("cross", SmaCross), ("above", SmaAbove)):
        sweep = sweep_sma_returns(goog, fast, slow, cfg, rule=rule)
        assert sweep.returns.shape == (goog.height - 1, 580) == (goog.height - 1, sweep.table.height)
        assert sweep.table.equals(sweep_sma_cross(goog, fast, slow, cfg, rule=rule))  # same metrics path
        for j in (0, 300, 579):
            f, s = sweep.table.row(j)[:2]
            engine = run_backtest(goog, strategy(f, s).positions(goog), cfg)
            np.testing.assert_allclose(
                sweep.returns[:, j], engine.returns, rtol=0, atol=1e-10, err_msg=f"{rule} {f},{s}"
            )


def test_benchmarks_are_cash_and_buy_and_hold_with_its_entry_cost(goog: pl.DataFrame) -> None:
    cfg = BacktestConfig(fee=0.002, slippage=0.0)
    assert np.array_equal(benchmark_returns(goog, "cash", cfg), np.zeros(goog.height - 1))
    bh = benchmark_returns(goog, "buy_and_hold", cfg)
    close, open_ = goog["close"].to_numpy(), goog["open"].to_numpy()
    # long from the first next-open fill, one entry cost, marked to each close
    assert bh[0] == pytest.approx(close[1] / open_[1] / (1 + 0.002) - 1, rel=1e-12)
    np.testing.assert_allclose(bh[1:], close[2:] / close[1:-1] - 1, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="benchmark"):
        benchmark_returns(goog, "rule_of_three", cfg)


def test_spa_is_studentized_and_seeded() -> None:
    rng = np.random.default_rng(1)
    d = rng.normal(0.0, 1.0, (600, 8)) + np.array([0.0] * 7 + [0.12])
    p = spa_pvalues(d, block_size=5, reps=400, seed=3)
    assert p == spa_pvalues(d, block_size=5, reps=400, seed=3)  # deterministic
    assert p[0] <= p[1] <= p[2]
    # a more volatile copy of a member does not change the test: each member is studentized
    scaled = d * np.array([1.0, 50.0, 1, 1, 1, 1, 1, 1])
    assert spa_pvalues(scaled, block_size=5, reps=400, seed=3) == pytest.approx(p)
    assert stationary_block_length(np.zeros(100), minimum=24) == 24
    assert bars_per_day(hourly(0, n=50)) == 24


def test_on_a_random_walk_the_naive_best_looks_significant_and_spa_does_not() -> None:
    naive, spa = [], []
    for seed in range(10):
        result = best_of_grid(hourly(seed), FAST, SLOW, NO_COSTS, reps=500, seed=seed)
        assert result.n_members == 91 and result.bars == 2999 and result.block_size >= 24  # a day of hours
        naive.append(result.naive_p)
        spa.append(result.spa_consistent)
        assert result.spa_lower <= result.spa_consistent <= result.spa_upper
    naive_rejects = sum(p < 0.05 for p in naive)
    spa_rejects = sum(p < 0.05 for p in spa)
    assert spa_rejects <= 2, spa
    assert naive_rejects >= spa_rejects + 2, (naive, spa)  # measured: 3 vs 1 here, 17 vs 3 over 40 seeds
    assert np.median(spa) > 2 * np.median(naive)  # the search's price


@pytest.mark.parametrize("benchmark", ["cash", "buy_and_hold"])
def test_a_planted_trend_beats_the_benchmark_after_snooping(benchmark: str) -> None:
    cfg = BacktestConfig(fee=0.001, slippage=0.0)
    for seed in (0, 1, 2):
        result = best_of_grid(hourly(seed, trend=0.0005), FAST, SLOW, cfg, benchmark=benchmark, reps=500, seed=seed)
        assert result.significant, result.to_dict()
        assert result.verdict.startswith(f"the best of 91 pairs beats {benchmark} after data snooping")
        assert result.best_sharpe > 3


def test_best_of_grid_is_deterministic_and_rejects_bad_requests(goog: pl.DataFrame) -> None:
    small = goog.head(400)
    a = best_of_grid(small, [5, 10], [20, 40], reps=200, seed=7).to_dict()
    b = best_of_grid(small, [5, 10], [20, 40], reps=200, seed=7).to_dict()
    assert json.dumps(a) == json.dumps(b)  # NaN (cash has no Sharpe) compares equal as text
    assert a["n_members"] == 4 and a["min_block"] == 1  # daily bars
    assert "does not beat" in a["verdict"] or "beats" in a["verdict"]
    with pytest.raises(ValueError, match="benchmark"):
        best_of_grid(small, [5], [20], benchmark="random")
    with pytest.raises(ValueError, match="fast < slow"):
        best_of_grid(small, [30], [20])
    with pytest.raises(ValueError, match="at least"):
        best_of_grid(small.head(20), [2], [5])
