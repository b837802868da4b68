"""The kernel: many runs in one pass against the bar-by-bar reference, its metric sums against the
metrics module, SMA pairs made inside it, ruin, and its compiled code cached between processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from backtest_reference import make_candles, random_targets, reference

from cyber_pipelines.backtest.engine import BacktestConfig, ohlc_arrays, run_backtest, run_spec
from cyber_pipelines.backtest.kernel import (
    SMA_ABOVE,
    SMA_CROSS,
    metrics_from_sums,
    simulate,
    simulate_sma_pairs,
)
from cyber_pipelines.backtest.metrics import METRIC_NAMES, all_metrics
from cyber_pipelines.backtest.sweep import sma_above_targets, sma_cross_targets, sma_matrix

CONFIGS = [  # one run each, all in one pass: shorts, stops, size multipliers and costs differ per run
    {"allow_short": False},
    {"allow_short": True, "stop_loss": 0.03},
    {"allow_short": True, "size_multiplier": 0.25, "fee": 0.001, "slippage": 0.0},
    {"allow_short": False, "stop_loss": 0.02, "size_multiplier": 0.5},
    {"allow_short": True, "stop_loss": 0.05, "fee": 0.0, "slippage": 0.0},
]


@pytest.mark.parametrize("fill", ["next_open", "close"])
def test_one_pass_of_many_runs_equals_the_reference_run_by_run(fill: str) -> None:
    candles = make_candles(500, seed=11)
    ohlc = ohlc_arrays(candles)
    configs = [BacktestConfig(fill=fill, **kw) for kw in CONFIGS for _ in range(3)]  # type: ignore[arg-type]
    targets = np.stack([random_targets(500, seed=100 + j) for j in range(len(configs))])
    run = simulate(ohlc.prices, targets, run_spec(configs), record_equity=True)
    assert run.equity is not None
    metrics = metrics_from_sums(run.sums, 10_000.0, 500, 8766.0)
    stopped = 0
    for j, cfg in enumerate(configs):
        expected = reference(candles, targets[j], cfg)
        np.testing.assert_allclose(run.equity[j], expected.equity, rtol=1e-9, err_msg=f"run {j}")
        assert metrics["n_trades"][j] == len(expected.trades)
        pnl = np.array([t["pnl"] for t in expected.trades])
        assert metrics["win_rate"][j] == pytest.approx(np.mean(pnl > 0), nan_ok=True)
        stopped += sum(t["exit_price"] not in (*ohlc.open, *ohlc.close) for t in expected.trades)
    assert stopped >= 10  # the stops were exercised


def test_ruin_is_final_like_the_reference() -> None:
    candles = make_candles(300, seed=5, vol=0.01)
    trend = np.exp(np.minimum(np.arange(300), 150) * 0.008)  # up 3.3x over 150 bars, then flat
    candles = candles.with_columns(pl.col(c) * trend for c in ("open", "high", "low", "close"))
    target = np.concatenate([-np.ones(150), random_targets(150, seed=3)])  # a short through it, then trading
    cfg = BacktestConfig(allow_short=True, fee=0.01, slippage=0.0)
    result = run_backtest(candles, target, cfg)
    expected = reference(candles, target, cfg)
    equity = result.equity["equity"].to_numpy()
    assert equity[-1] == 0.0 and np.all(equity[np.argmax(equity == 0) :] == 0)  # the premise: ruined
    np.testing.assert_allclose(equity, expected.equity, rtol=1e-9)
    assert result.metrics["total_return"] == -1.0 and result.metrics["max_drawdown"] == -1.0


@pytest.mark.parametrize("periods_extra", [0, 40])
def test_metrics_from_sums_equal_the_metrics_module(periods_extra: int) -> None:
    """The kernel's sums give what ``metrics.all_metrics`` gives on the recorded curves and trades
    (with calendar holes too: ``periods`` > bars - 1), for runs over more than a year (CAGR, Calmar)."""
    candles = make_candles(900, seed=3, step=timedelta(days=1), vol=0.01)
    ohlc = ohlc_arrays(candles)
    configs = [BacktestConfig(allow_short=True, stop_loss=s) for s in (None, 0.03, None, 0.05)]
    targets = np.stack([random_targets(900, seed=j, change=0.05) for j in range(4)])
    years, periods = 899 / 365.25, 899 + periods_extra
    run = simulate(ohlc.prices, targets, run_spec(configs), record_equity=True)
    ours = metrics_from_sums(run.sums, 10_000.0, 900, 365.25, years=years, periods=periods)
    for j, cfg in enumerate(configs):
        single = run_backtest(candles, targets[j], cfg)
        trades = single.trades
        assert run.equity is not None
        np.testing.assert_array_equal(run.equity[j], single.equity["equity"].to_numpy())
        theirs = all_metrics(
            run.equity[j], single.equity["position"].to_numpy(), trades["pnl"].to_numpy(),
            trades["return"].to_numpy(), np.zeros(trades.height, dtype=np.int64), 10_000.0, 365.25,
            years=years, periods=periods,
        )  # fmt: skip
        for name in METRIC_NAMES:
            assert ours[name][j] == pytest.approx(theirs[name][0], rel=1e-10, abs=1e-13, nan_ok=True), (j, name)
    assert np.isfinite(ours["cagr"]).all() and np.isfinite(ours["calmar"]).all()


@pytest.mark.parametrize(("rule", "targets_of"), [(SMA_CROSS, sma_cross_targets), (SMA_ABOVE, sma_above_targets)])
def test_sma_pairs_made_in_the_kernel_equal_their_target_columns(
    rule: int, targets_of: Callable[[np.ndarray, np.ndarray], np.ndarray]
) -> None:
    candles = make_candles(600, seed=8)
    ohlc = ohlc_arrays(candles)
    windows = [3, 5, 8, 13, 21, 34]
    smas = sma_matrix(ohlc.close, windows)
    fast, slow = np.array([0, 0, 1, 2, 3]), np.array([2, 5, 4, 5, 4])
    spec = run_spec([BacktestConfig(allow_short=True, stop_loss=0.04)] * fast.size)
    pairs = simulate_sma_pairs(ohlc.prices, smas.T, fast, slow, rule, spec, record_equity=True)
    targets = targets_of(smas[:, fast], smas[:, slow]).T
    columns = simulate(ohlc.prices, targets, spec, record_equity=True)
    np.testing.assert_array_equal(pairs.sums, columns.sums)
    np.testing.assert_array_equal(pairs.equity, columns.equity)
    assert (pairs.sums[:, 6] > 3).all()  # every pair trades


def test_compiled_code_is_cached_between_processes(tmp_path: Path) -> None:
    """A second process loads the kernel from the cache that the first one wrote (NUMBA_CACHE_DIR)."""
    script = textwrap.dedent(
        """
        import json, numpy as np
        from cyber_pipelines.backtest import kernel
        prices = tuple(np.full(5, 100.0) for _ in range(4))
        spec = kernel.RunSpec(False, 1e4, np.zeros(1), np.ones(1), np.zeros(1), np.full(1, np.nan))
        kernel.simulate(prices, np.ones((1, 5)), spec)
        print(json.dumps(kernel.compiled_from_cache()))
        """
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    first, second = (
        json.loads(
            subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True).stdout
        )
        for _ in range(2)
    )
    assert (first, second) == (False, True)
    assert list((tmp_path / "numba").rglob("kernel.run_targets*.nbi"))  # the index lives under NUMBA_CACHE_DIR
