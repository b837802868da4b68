"""Backtests: vectorized engine, grid sweeps, strategies, significance against the baseline."""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl

from cyber_pipelines.backtest.engine import BacktestConfig, BacktestResult, run_backtest
from cyber_pipelines.backtest.metrics import METRIC_NAMES, SHARPE_FORMULA
from cyber_pipelines.backtest.significance import ClaimTest, mean_return_test, sharpe_difference_test
from cyber_pipelines.backtest.strategies import (
    CrossMoat,
    MoatOnly,
    RuleOfThree,
    SmaAbove,
    SmaCross,
    SmaGrid,
    Strategy,
    run_strategy,
    walk_forward,
)
from cyber_pipelines.backtest.sweep import backtest_grid, sweep_sma_cross
from cyber_pipelines.jsonable import jsonable

__all__ = [
    "METRIC_NAMES",
    "SHARPE_FORMULA",
    "STRATEGIES",
    "BacktestConfig",
    "BacktestResult",
    "ClaimTest",
    "CrossMoat",
    "RuleOfThree",
    "SmaAbove",
    "SmaCross",
    "Strategy",
    "backtest_csv",
    "backtest_grid",
    "make_strategy",
    "mean_return_test",
    "run_backtest",
    "run_strategy",
    "sharpe_difference_test",
    "sweep_sma_cross",
    "walk_forward",
]

_ACTIVITY_PARAMS = {
    "enter_confidence": False,
    "exit_confidence": False,
    "quorum": False,
    "min_hold_bars": True,
    "activity_weight": False,
    "activity_window": True,
    "activity_delay": True,
    "activity_sign": True,
}
# strategy name -> (class, {parameter: must be an integer})
STRATEGIES: dict[str, tuple[type, dict[str, bool]]] = {
    "sma_cross": (SmaCross, {"fast": True, "slow": True}),
    "sma_above": (SmaAbove, {"fast": True, "slow": True}),
    "rule_of_three": (
        RuleOfThree,
        {"enter_confidence": False, "exit_confidence": False, "quorum": False, "min_hold_bars": True},
    ),
    "cross_moat": (CrossMoat, _ACTIVITY_PARAMS),
    "moat_only": (MoatOnly, _ACTIVITY_PARAMS),
    "sma_grid": (SmaGrid, {}),
}


def make_strategy(name: str, params: dict[str, float] | None = None) -> Strategy:
    """A strategy from its CLI name and numeric parameters, e.g. ``sma_cross`` with fast/slow."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {sorted(STRATEGIES)}")
    cls, allowed = STRATEGIES[name]
    kwargs: dict[str, float | int] = {}
    for key, value in (params or {}).items():
        if key not in allowed:
            raise ValueError(f"strategy {name!r} has no parameter {key!r}; it takes {sorted(allowed)}")
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"parameter {key}={value!r} must be a finite number")
        if allowed[key]:
            if not number.is_integer():
                raise ValueError(f"parameter {key}={value!r} must be a whole number")
            kwargs[key] = int(number)
        else:
            kwargs[key] = number
    strategy: Strategy = cls(**kwargs)
    return strategy


def backtest_csv(
    path: str | Path,
    strategy_name: str,
    params: dict[str, float] | None = None,
    fee: float = 0.0026,
    slippage: float = 0.0010,
    fill: str = "next_open",
    stop_loss: float | None = None,
    size_multiplier: float = 1.0,
    date_format: str | None = None,
    calendar: str | None = None,
    bars_per_year: float | None = None,
    train_bars: int | None = None,
    test_bars: int | None = None,
) -> dict[str, object]:
    """Backtest an OHLCV CSV with a named strategy; JSON-able metrics, trade count and final equity.

    The CSV is read with ``features.ohlcv_csv.read_ohlcv_csv``; indicator columns are added for the
    TA strategies. ``cross_moat`` needs an ``activity_score`` column, which a plain OHLCV CSV lacks.
    Non-finite metrics (e.g. a Sharpe ratio without trades) become ``None`` (CAGR and Calmar of a
    sample under a year: ``annualized_note`` says why). ``calendar`` ("24/7" or "equities") or
    ``bars_per_year`` set the annualization; by default the calendar is inferred from the timestamps
    (``engine.infer_calendar``). ``fill_note`` flags the optimistic ``fill="close"``.

    With ``train_bars`` and ``test_bars`` the strategy is fitted walk-forward and the figures are out
    of sample (with each window's fitted parameters and the in-sample figures beside them); without,
    it runs once over the whole file as constructed: a fixed rule (sma_cross) is then exact, a fitted
    one runs unfitted (the TA teams calibrate on their trailing bars, the activity team abstains,
    sma_grid holds nothing) and ``fitted`` says so.
    """
    from cyber_pipelines.features.indicators import add_indicators
    from cyber_pipelines.features.ohlcv_csv import read_ohlcv_csv

    strategy = make_strategy(strategy_name, params)
    config = BacktestConfig(
        fee=fee,
        slippage=slippage,
        fill=fill,  # type: ignore[arg-type]  # BacktestConfig validates it
        stop_loss=stop_loss,
        size_multiplier=size_multiplier,
        calendar=calendar,  # type: ignore[arg-type]  # BacktestConfig validates it
        bars_per_year=bars_per_year,
    )
    candles = read_ohlcv_csv(path, date_format=date_format)
    if candles.height < 2:
        raise ValueError(f"{path}: need at least 2 candles to backtest, got {candles.height}")
    features = candles if isinstance(strategy, SmaCross) else add_indicators(candles)
    if (train_bars is None) != (test_bars is None):
        raise ValueError("give both train_bars and test_bars (walk-forward) or neither")
    windows: list[dict[str, object]] = []
    in_sample: dict[str, float | int | None] | None = None
    if train_bars is not None and test_bars is not None:
        run = walk_forward(strategy, features, train_bars, test_bars, config)
        result, windows = run.oos, run.windows
        in_sample = jsonable(run.in_sample.metrics)
        in_sample["n_trades"] = int(run.in_sample.metrics["n_trades"])
    else:
        result = run_strategy(strategy, features, config)
    metrics: dict[str, float | int | None] = jsonable(result.metrics)
    metrics["n_trades"] = int(result.metrics["n_trades"])
    ts: pl.Series = result.equity["timestamp"]
    return {
        "data": str(path),
        "strategy": strategy.name,
        "params": dict(params or {}),
        "fee": fee,
        "slippage": slippage,
        "fill": fill,
        "optimistic_fill": config.optimistic_fill,
        "fill_note": config.fill_note,
        "bars": result.equity.height,
        "start": str(ts[0]),
        "end": str(ts[-1]),
        "bars_per_year": result.bars_per_year,
        "calendar": result.calendar,
        "years": result.years,
        "annualized_note": result.annualized_note,
        "fitted": "walk-forward, out of sample" if windows else "no (run as constructed over the whole file)",
        "metrics": metrics,
        "in_sample_metrics": in_sample,
        "windows": windows,
        "n_trades": metrics["n_trades"],
        "final_equity": metrics["final_equity"],
        "sharpe_formula": SHARPE_FORMULA,
    }
