"""Grids of any strategy parameter (and of the per-run config fields) in one kernel pass: each row
equals the single run of that member, column by column."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np
import polars as pl
import pytest
from backtest_reference import make_candles

from cyber_pipelines.backtest.engine import BacktestConfig, run_backtest
from cyber_pipelines.backtest.metrics import METRIC_NAMES
from cyber_pipelines.backtest.strategies import RuleOfThree, SmaAbove, run_strategy
from cyber_pipelines.backtest.sweep import sweep_grid
from cyber_pipelines.features.indicators import add_indicators


@pytest.fixture(scope="module")
def features() -> pl.DataFrame:
    return add_indicators(make_candles(1500, seed=21, vol=0.01))


def assert_row_equals(row: dict, metrics: dict[str, float], where: object) -> None:
    for name in METRIC_NAMES:
        assert row[name] == pytest.approx(metrics[name], rel=1e-9, abs=1e-12, nan_ok=True), (where, name)


def test_grid_of_rule_of_three_parameters_equals_single_runs(features: pl.DataFrame) -> None:
    grid: dict[str, list[Any]] = {"enter_confidence": [0.6, 0.75, 0.9], "min_hold_bars": [1, 8]}
    cfg = BacktestConfig(allow_short=True, fee=0.001, slippage=0.0)
    table = sweep_grid(RuleOfThree(), grid, features, cfg).table
    assert table.height == 6 and table.columns[:2] == ["enter_confidence", "min_hold_bars"]
    assert table["n_trades"].n_unique() > 3  # the members differ
    for row in table.iter_rows(named=True):
        member = RuleOfThree(enter_confidence=row["enter_confidence"], min_hold_bars=row["min_hold_bars"])
        assert_row_equals(row, run_strategy(member, features, cfg).metrics, row)


def test_fitted_members_and_per_run_config_fields(features: pl.DataFrame) -> None:
    """With ``train`` every member is fitted first; stops, size and shorts vary per run in the pass."""
    train, test = features.head(700), features.slice(700)
    grid: dict[str, list[Any]] = {
        "exit_confidence": [0.2, 0.5],
        "stop_loss": [None, 0.02],
        "size_multiplier": [1.0, 0.5],
    }
    cfg = BacktestConfig(allow_short=True)
    sweep = sweep_grid(RuleOfThree(), grid, test, cfg, train=train, with_returns=True)
    assert sweep.table.height == 8 and sweep.returns.shape == (test.height - 1, 8)
    for j, row in enumerate(sweep.table.iter_rows(named=True)):
        member = RuleOfThree(exit_confidence=row["exit_confidence"])
        member.fit(train)
        single = run_backtest(
            test,
            member.positions(test),
            BacktestConfig(allow_short=True, stop_loss=row["stop_loss"], size_multiplier=row["size_multiplier"]),
        )
        assert_row_equals(row, single.metrics, row)
        np.testing.assert_allclose(sweep.returns[:, j], single.returns, rtol=0, atol=1e-12)
    stops = sweep.table.filter(pl.col("stop_loss").is_not_null())
    assert not stops.select(METRIC_NAMES).equals(sweep.table.filter(pl.col("stop_loss").is_null()).select(METRIC_NAMES))


def test_grid_of_daily_sma_above_with_shorts_and_fills() -> None:
    candles = make_candles(800, seed=4, step=timedelta(days=1), vol=0.015)
    grid: dict[str, list[Any]] = {"fast": [3, 5, 10], "slow": [20, 40], "allow_short": [False, True]}
    for fill in ("next_open", "close"):
        cfg = BacktestConfig(fill=fill, stop_loss=0.04)
        table = sweep_grid(SmaAbove(), grid, candles, cfg).table
        for row in table.iter_rows(named=True):
            single_cfg = BacktestConfig(fill=fill, stop_loss=0.04, allow_short=row["allow_short"])
            single = run_backtest(candles, SmaAbove(row["fast"], row["slow"]).positions(candles), single_cfg)
            assert_row_equals(row, single.metrics, (fill, row))


def test_bad_grids_are_refused(features: pl.DataFrame) -> None:
    with pytest.raises(ValueError, match="fields of RuleOfThree"):
        sweep_grid(RuleOfThree(), {"window": [1, 2]}, features)
    with pytest.raises(ValueError, match="fields of RuleOfThree"):
        sweep_grid(RuleOfThree(), {"fill": ["close"]}, features)  # one fill per pass: not a per-run field
    with pytest.raises(ValueError, match="empty"):
        sweep_grid(RuleOfThree(), {"quorum": []}, features)
    with pytest.raises(ValueError, match="dataclass strategy instance"):
        sweep_grid(object(), {"fast": [1]}, features)
    with pytest.raises(ValueError, match="fast < slow"):
        sweep_grid(SmaAbove(), {"fast": [30]}, features)  # each member is validated as constructed
