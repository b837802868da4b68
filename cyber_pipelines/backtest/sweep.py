"""Grids of backtests in one pass of the kernel: SMA pairs, target columns, any strategy parameter.

Every member of a grid is one run of ``kernel`` (the same loop as ``engine.run_backtest``, stops
included), so a grid member and the single run of the same targets are the same arithmetic:

- ``sweep_sma_cross`` / ``sweep_sma_returns``: every (fast, slow) SMA pair with fast < slow; the
  kernel makes each pair's targets from the SMA matrix as it runs (``kernel.run_sma_pairs``).
- ``backtest_grid`` / ``backtest_grid_returns``: the metrics of given target columns (bars x runs).
- ``sweep_grid``: the product of values of any strategy parameter (a dataclass field) and of the
  per-run config fields ``PER_RUN_CONFIG`` (fee, slippage, shorts, stop loss, size multiplier).

The ``*_returns`` variants and ``sweep_grid(with_returns=True)`` also give every member's per-bar net
returns (``metrics.bar_returns`` of the equity its metrics come from), for tests over the whole grid
such as Hansen's SPA (``snooping.best_of_grid``); memory grows as bars x members (8 bytes each).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import polars as pl

from cyber_pipelines.backtest.engine import BacktestConfig, annualization, ohlc_arrays, run_spec, validated_targets
from cyber_pipelines.backtest.kernel import (
    SMA_ABOVE,
    SMA_CROSS,
    KernelResult,
    metrics_from_sums,
    simulate,
    simulate_sma_pairs,
    sma_signal,
)
from cyber_pipelines.backtest.metrics import bar_returns

SMA_RULES = {"cross": SMA_CROSS, "above": SMA_ABOVE}
PER_RUN_CONFIG = ("fee", "slippage", "allow_short", "stop_loss", "size_multiplier")


def sma_matrix(close: np.ndarray, windows: Iterable[int]) -> np.ndarray:
    """Simple moving averages of ``close`` for each window (bars x windows), NaN during warm-up."""
    close = np.asarray(close, dtype=float)
    wins = np.asarray(list(windows), dtype=np.int64)
    if wins.size and (wins.min() < 1 or wins.max() > close.size):
        raise ValueError(f"SMA windows must be in [1, {close.size}], got {wins.min()}..{wins.max()}")
    csum = np.concatenate([[0.0], np.cumsum(close)])
    t = np.arange(close.size)[:, None]
    lo = t + 1 - wins[None, :]
    out = (csum[t + 1] - csum[np.maximum(lo, 0)]) / wins[None, :]
    return np.where(lo >= 0, out, np.nan)


def _sma_targets(fast_sma: np.ndarray, slow_sma: np.ndarray, rule: str) -> np.ndarray:
    """``kernel.sma_signal`` of each column (1-D, or 2-D bars x runs)."""
    fast, slow = np.asarray(fast_sma, dtype=float), np.asarray(slow_sma, dtype=float)
    fast2, slow2 = fast.reshape(fast.shape[0], -1), slow.reshape(slow.shape[0], -1)
    out = np.empty(fast2.shape[::-1])
    for j in range(fast2.shape[1]):
        sma_signal(np.ascontiguousarray(fast2[:, j]), np.ascontiguousarray(slow2[:, j]), SMA_RULES[rule], out[j])
    return out[0] if fast.ndim == 1 else out.T


def sma_above_targets(fast_sma: np.ndarray, slow_sma: np.ndarray) -> np.ndarray:
    """+1 while the fast SMA is above the slow one, -1 below, 0 during warm-up or on a tie."""
    return _sma_targets(fast_sma, slow_sma, "above")


def sma_cross_targets(fast_sma: np.ndarray, slow_sma: np.ndarray) -> np.ndarray:
    """+1 from a crossing above to the next crossing below, -1 from a crossing below; 0 before the first.

    A crossing above at bar t is ``fast[t-1] < slow[t-1]`` and ``fast[t] > slow[t]`` (backtesting.py's
    ``crossover``; vectorbt's ``crossed_above``), strict on both bars, so neither a tie nor the end of
    the warm-up with the fast average already above is a crossing. Works on 1-D or 2-D (bars x runs).
    """
    return _sma_targets(fast_sma, slow_sma, "cross")


@dataclass(frozen=True)
class Sweep:
    """A grid's table (one row per member: its parameters, then every metric of
    ``metrics.METRIC_NAMES``), the per-bar net returns of every member (bars - 1 x members, column j =
    row j of the table; empty unless asked for) and the annualization."""

    table: pl.DataFrame
    returns: np.ndarray
    bars_per_year: float
    years: float | None
    periods: int | None


@dataclass(frozen=True)
class _Prices:
    ohlc: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
    bars_per_year: float
    years: float | None
    periods: int | None


def _prices(data: pl.DataFrame | Mapping[str, np.ndarray], config: BacktestConfig, need_range: bool) -> _Prices:
    """Prices and annualization of a candle frame (as ``engine.run_backtest``) or of bare arrays
    (``open`` and ``close``, plus ``high`` and ``low`` for stops; ``config.bars_per_year`` required)."""
    if isinstance(data, pl.DataFrame):
        ohlc = ohlc_arrays(data)
        ann = annualization(ohlc.timestamp, config)
        return _Prices(ohlc.prices, ann.bars_per_year, ann.years, ann.periods)
    open_ = np.asarray(data["open"], dtype=float)
    close = np.asarray(data["close"], dtype=float)
    if need_range and ("high" not in data or "low" not in data):
        raise ValueError("a stop_loss needs high and low prices besides open and close")
    high = np.asarray(data["high"], dtype=float) if "high" in data else close  # read by stops only
    low = np.asarray(data["low"], dtype=float) if "low" in data else close
    if any(a.shape != close.shape for a in (open_, high, low)) or close.ndim != 1 or close.size < 2:
        raise ValueError("open, high, low and close must be 1-D arrays of the same length (>= 2)")
    prices = np.concatenate([open_, high, low, close])
    if not np.all(np.isfinite(prices)) or prices.min() <= 0:
        raise ValueError("prices must be finite and > 0")
    if config.bars_per_year is None:
        raise ValueError("with bare arrays, set config.bars_per_year (no timestamps to infer it)")
    return _Prices((open_, high, low, close), config.bars_per_year, None, None)


def _sweep(run: KernelResult, prices: _Prices, params: dict[str, Any], config: BacktestConfig) -> Sweep:
    bars = prices.ohlc[3].size
    metrics = metrics_from_sums(
        run.sums, config.initial_cash, bars, prices.bars_per_year, years=prices.years, periods=prices.periods
    )
    returns = bar_returns(run.equity.T) if run.equity is not None else np.empty((bars - 1, 0))
    return Sweep(pl.DataFrame({**params, **metrics}), returns, prices.bars_per_year, prices.years, prices.periods)


def _backtest_grid(
    open_: np.ndarray,
    close: np.ndarray,
    targets: np.ndarray,
    config: BacktestConfig,
    bars_per_year: float,
    years: float | None,
    periods: int | None,
    high: np.ndarray | None,
    low: np.ndarray | None,
    with_returns: bool,
) -> Sweep:
    targets = validated_targets(targets, close.size)
    if targets.ndim != 2:
        raise ValueError(f"targets must be 2-D (bars x runs), got shape {targets.shape}")
    arrays = {"open": open_, "close": close}
    if high is not None and low is not None:
        arrays.update(high=high, low=low)
    prices = _prices(arrays, replace(config, bars_per_year=bars_per_year), config.stop_loss is not None)
    prices = replace(prices, years=years, periods=periods)
    run = simulate(prices.ohlc, targets.T, run_spec([config] * targets.shape[1]), record_equity=with_returns)
    return _sweep(run, prices, {}, config)


def backtest_grid(
    open_: np.ndarray,
    close: np.ndarray,
    targets: np.ndarray,
    config: BacktestConfig,
    bars_per_year: float,
    *,
    years: float | None = None,
    periods: int | None = None,
    high: np.ndarray | None = None,
    low: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Metrics (name -> one value per column) of every target-position column (bars x runs).

    ``years`` and ``periods`` as in ``metrics.equity_metrics`` (``engine.annualization`` gives them);
    ``high`` and ``low`` are needed for a ``config.stop_loss`` only."""
    table = _backtest_grid(open_, close, targets, config, bars_per_year, years, periods, high, low, False).table
    return {name: table[name].to_numpy() for name in table.columns}


def backtest_grid_returns(
    open_: np.ndarray,
    close: np.ndarray,
    targets: np.ndarray,
    config: BacktestConfig,
    bars_per_year: float,
    *,
    years: float | None = None,
    periods: int | None = None,
    high: np.ndarray | None = None,
    low: np.ndarray | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``backtest_grid``'s metrics and every column's per-bar net returns (bars - 1 x runs): the
    returns of the very equity curves the metrics come from (``engine.BacktestResult.returns``)."""
    grid = _backtest_grid(open_, close, targets, config, bars_per_year, years, periods, high, low, True)
    return {name: grid.table[name].to_numpy() for name in grid.table.columns}, grid.returns


def sweep_sma_cross(
    data: pl.DataFrame | Mapping[str, np.ndarray],
    fast_values: Iterable[int],
    slow_values: Iterable[int],
    config: BacktestConfig | None = None,
    rule: str = "cross",
) -> pl.DataFrame:
    """Backtest every ``SmaCross(fast, slow)`` with fast < slow in one pass of the kernel.

    ``rule="cross"`` trades the crossings (``SmaCross``), ``rule="above"`` holds while the fast SMA is
    above the slow one (``SmaAbove``).

    ``data`` is a candle frame (timestamp, open, high, low, close) or a mapping with ``open`` and
    ``close`` arrays (plus ``high`` and ``low`` for a stop loss; then ``config.bars_per_year`` is
    required, and CAGR takes ``(n - 1) / bars_per_year`` years). A frame is annualized like
    ``engine.run_backtest``. Returns one row per pair: fast, slow and every metric of
    ``metrics.METRIC_NAMES``.
    """
    return _sweep_sma(data, fast_values, slow_values, config, rule, with_returns=False).table


def sweep_sma_returns(
    data: pl.DataFrame | Mapping[str, np.ndarray],
    fast_values: Iterable[int],
    slow_values: Iterable[int],
    config: BacktestConfig | None = None,
    rule: str = "cross",
) -> Sweep:
    """``sweep_sma_cross`` plus every pair's per-bar net returns (``Sweep.returns``), by the same
    arithmetic as the metrics."""
    return _sweep_sma(data, fast_values, slow_values, config, rule, with_returns=True)


def _sweep_sma(
    data: pl.DataFrame | Mapping[str, np.ndarray],
    fast_values: Iterable[int],
    slow_values: Iterable[int],
    config: BacktestConfig | None,
    rule: str,
    with_returns: bool,
) -> Sweep:
    config = config or BacktestConfig()
    if rule not in SMA_RULES:
        raise ValueError(f"rule must be one of {sorted(SMA_RULES)}, got {rule!r}")
    prices = _prices(data, config, config.stop_loss is not None)
    pairs = [(f, s) for f in sorted(set(fast_values)) for s in sorted(set(slow_values)) if f < s]
    if not pairs:
        raise ValueError("no (fast, slow) pair with fast < slow in the grid")
    windows = sorted({w for p in pairs for w in p})
    col = {w: i for i, w in enumerate(windows)}
    smas = sma_matrix(prices.ohlc[3], windows).T  # windows x bars: one row per window
    fast = np.array([col[f] for f, _ in pairs])
    slow = np.array([col[s] for _, s in pairs])
    spec = run_spec([config] * len(pairs))
    run = simulate_sma_pairs(prices.ohlc, smas, fast, slow, SMA_RULES[rule], spec, record_equity=with_returns)
    params = {
        "fast": np.array([f for f, _ in pairs], dtype=np.int64),
        "slow": np.array([s for _, s in pairs], dtype=np.int64),
    }
    return _sweep(run, prices, params, config)


def sweep_grid(
    strategy: Any,
    grid: Mapping[str, Sequence[Any]],
    features: pl.DataFrame,
    config: BacktestConfig | None = None,
    *,
    train: pl.DataFrame | None = None,
    with_returns: bool = False,
) -> Sweep:
    """Backtest every combination of ``grid``'s values in one pass of the kernel.

    ``strategy`` is a dataclass strategy; a grid key is one of its fields (each member is
    ``dataclasses.replace(strategy, **values)``, so it runs as constructed; with ``train`` each member
    is fitted on it first) or a per-run config field of ``PER_RUN_CONFIG`` (applied to ``config``).
    Positions are computed once per distinct strategy member. The table has one row per combination
    (in ``itertools.product`` order of the keys as given): the grid's keys, then every metric.
    """
    config = config or BacktestConfig()
    if not dataclasses.is_dataclass(strategy) or isinstance(strategy, type):
        raise ValueError(f"sweep_grid needs a dataclass strategy instance, got {type(strategy).__name__}")
    fields = {f.name for f in dataclasses.fields(strategy) if f.init}
    unknown = [k for k in grid if k not in fields and k not in PER_RUN_CONFIG]
    if unknown or not grid:
        raise ValueError(
            f"grid keys must be fields of {type(strategy).__name__} ({sorted(fields)}) or per-run config "
            f"fields {PER_RUN_CONFIG}; got {list(grid) or 'none'}"
        )
    keys = list(grid)
    combos = [dict(zip(keys, values, strict=True)) for values in itertools.product(*grid.values())]
    if not combos:
        raise ValueError("the grid is empty: every key needs at least one value")
    positions: dict[tuple[tuple[str, Any], ...], np.ndarray] = {}
    rows, configs = [], []
    for combo in combos:
        member = tuple((k, v) for k, v in combo.items() if k in fields)
        if member not in positions:
            candidate: Any = replace(strategy, **dict(member))
            if train is not None:
                candidate.fit(train)
            positions[member] = validated_targets(candidate.positions(features), features.height)
        rows.append(positions[member])
        configs.append(replace(config, **{k: v for k, v in combo.items() if k in PER_RUN_CONFIG}))
    prices = _prices(features, config, any(c.stop_loss is not None for c in configs))
    run = simulate(prices.ohlc, np.stack(rows), run_spec(configs), record_equity=with_returns)
    return _sweep(run, prices, {k: [c[k] for c in combos] for k in keys}, config)
