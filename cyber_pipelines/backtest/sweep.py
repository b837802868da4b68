"""Parameter sweeps vectorized across the grid: one 2-D numpy pass (bars x combinations).

``backtest_grid`` is the engine's model (see ``engine``) written per bar instead of per fill, so a
whole grid of target-position columns runs as array operations: the weight held after each bar's
fills, the price of the fill that opened the current segment (forward-filled with
``np.maximum.accumulate``), one equity factor per fill (cost and growth since the previous fill),
a cumulative product down the bars, and the mark to each close. Stop losses are path-dependent and
are only supported by ``engine.run_backtest``.

``backtest_grid_returns`` and ``sweep_sma_returns`` also give every column's per-bar net returns
(``metrics.bar_returns`` of the same equity the metrics come from), for tests over the whole grid such
as Hansen's SPA (``snooping.best_of_grid``); the metrics-only functions never build that matrix.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import polars as pl

from cyber_pipelines.backtest.engine import (
    BacktestConfig,
    annualization,
    executed_weights,
    fill_cost_factor,
    ohlc_arrays,
)
from cyber_pipelines.backtest.metrics import METRIC_NAMES, all_metrics, bar_returns

_CHUNK = 256  # columns per pass: keeps the (bars x chunk) temporaries small and cache-friendly


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


def sma_above_targets(fast_sma: np.ndarray, slow_sma: np.ndarray) -> np.ndarray:
    """+1 while the fast SMA is above the slow one, -1 below, 0 during warm-up or on a tie."""
    with np.errstate(invalid="ignore"):
        return np.nan_to_num(np.sign(fast_sma - slow_sma), nan=0.0)


def sma_cross_targets(fast_sma: np.ndarray, slow_sma: np.ndarray) -> np.ndarray:
    """+1 from a crossing above to the next crossing below, -1 from a crossing below; 0 before the first.

    A crossing above at bar t is ``fast[t-1] < slow[t-1]`` and ``fast[t] > slow[t]`` (backtesting.py's
    ``crossover``; vectorbt's ``crossed_above``), strict on both bars, so neither a tie nor the end of
    the warm-up with the fast average already above is a crossing. Works on 1-D or 2-D (bars x runs).

    Fast path: after the first crossing, and as long as the two averages are never exactly equal, the
    side of the last crossing is the sign of ``fast - slow`` (every change of sign is a crossing). A
    column with an exact tie goes through the general forward fill of its crossing events.
    """
    diff = np.asarray(fast_sma, dtype=float) - np.asarray(slow_sma, dtype=float)
    one_d = diff.ndim == 1
    diff = diff.reshape(diff.shape[0], -1)
    prev = np.empty_like(diff)
    prev[:1] = np.nan
    prev[1:] = diff[:-1]
    with np.errstate(invalid="ignore"):
        up = (prev < 0) & (diff > 0)
        down = (prev > 0) & (diff < 0)
    crossed = up | down
    rows = np.arange(diff.shape[0])[:, None]
    first = np.where(crossed.any(axis=0), crossed.argmax(axis=0), diff.shape[0])
    state = np.where(rows >= first, np.sign(diff), 0.0)
    ties = np.flatnonzero((diff == 0).any(axis=0))
    if ties.size:
        event = up[:, ties].astype(float) - down[:, ties]
        last = np.maximum.accumulate(np.where(event != 0, rows, 0), axis=0)  # bar 0 never has an event
        state[:, ties] = np.take_along_axis(event, last, axis=0)
    return state[:, 0] if one_d else state


SMA_RULES = {"cross": sma_cross_targets, "above": sma_above_targets}


def _grid_chunk(
    fill_price: np.ndarray,
    close: np.ndarray,
    weights: np.ndarray,
    c: float,
    e0: float,
    bpy: float,
    years: float | None = None,
    periods: int | None = None,
    with_returns: bool = False,
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Metrics of each weight column and, with ``with_returns``, the per-bar returns of its equity."""
    n, m = weights.shape
    prev_w = np.empty_like(weights)
    prev_w[0] = 0.0
    prev_w[1:] = weights[:-1]
    fills = weights != prev_w
    last = np.maximum.accumulate(np.where(fills, np.arange(n)[:, None], 0), axis=0)
    seg_price = fill_price[last]  # price of the fill that opened each bar's segment
    # the per-fill quantities are computed at the (sparse) fills only, ordered by run then bar
    run, bar = np.nonzero(fills.T)
    w, pw = weights[bar, run], prev_w[bar, run]
    ratio = fill_price[bar] / np.where(bar > 0, seg_price[np.maximum(bar - 1, 0), run], fill_price[0])
    growth = np.maximum(1.0 + pw * (ratio - 1.0), 0.0)
    drift = np.where(growth > 0, pw * ratio / np.where(growth > 0, growth, 1.0), 0.0)
    factor = np.ones_like(weights)
    factor[bar, run] = fill_cost_factor(drift, w, c) * growth
    after = e0 * np.cumprod(factor, axis=0)
    equity = after * (1.0 + weights * (close[:, None] / seg_price - 1.0))
    ruined = equity <= 0
    if ruined.any():
        equity = np.where(np.maximum.accumulate(ruined, axis=0), 0.0, equity)

    # trades: runs of one position sign; pnl = closed equity at exit - closed equity at entry
    sign, prev_sign = np.sign(w), np.sign(pw)
    start = (sign != 0) & (sign != prev_sign)
    end = (prev_sign != 0) & (sign != prev_sign)
    before = np.where(bar > 0, after[np.maximum(bar - 1, 0), run], e0) * growth
    closed = before * (1.0 - c * np.abs(drift))
    n_start = np.bincount(run[start], minlength=m)
    open_runs = np.flatnonzero(n_start > np.bincount(run[end], minlength=m))
    exit_run = np.concatenate([run[end], open_runs])
    exit_eq = np.concatenate([closed[end], equity[-1, open_runs]])
    pnl = exit_eq[np.argsort(exit_run, kind="stable")] - closed[start]
    notional = np.abs(w[start]) * after[bar[start], run[start]]
    ret = pnl / np.where(notional > 0, notional, np.inf)
    metrics = all_metrics(equity, weights, pnl, ret, run[start], e0, bpy, years=years, periods=periods)
    return metrics, (bar_returns(equity) if with_returns else None)


def _backtest_grid(
    open_: np.ndarray,
    close: np.ndarray,
    targets: np.ndarray,
    config: BacktestConfig,
    bars_per_year: float,
    years: float | None,
    periods: int | None,
    with_returns: bool,
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    if config.stop_loss is not None:
        raise ValueError("stop_loss is path-dependent: run those backtests with engine.run_backtest")
    targets = np.asarray(targets, dtype=float)
    if targets.ndim != 2:
        raise ValueError(f"targets must be 2-D (bars x runs), got shape {targets.shape}")
    n = close.size
    weights = executed_weights(targets, n, config)
    fill_price = open_ if config.fill == "next_open" else close
    c, e0 = config.cost_rate, config.initial_cash
    parts = [
        _grid_chunk(fill_price, close, weights[:, i : i + _CHUNK], c, e0, bars_per_year, years, periods, with_returns)
        for i in range(0, weights.shape[1], _CHUNK)
    ]
    metrics = {name: np.concatenate([p[name] for p, _ in parts]) for name in METRIC_NAMES}
    if not with_returns:
        return metrics, None
    chunks = [r for _, r in parts if r is not None]
    returns = chunks[0] if len(chunks) == 1 else np.concatenate(chunks, axis=1)
    return metrics, returns


def backtest_grid(
    open_: np.ndarray,
    close: np.ndarray,
    targets: np.ndarray,
    config: BacktestConfig,
    bars_per_year: float,
    *,
    years: float | None = None,
    periods: int | None = None,
) -> dict[str, np.ndarray]:
    """Metrics (name -> one value per column) of every target-position column (bars x runs).

    ``years`` and ``periods`` as in ``metrics.equity_metrics`` (``engine.annualization`` gives them)."""
    metrics, _ = _backtest_grid(open_, close, targets, config, bars_per_year, years, periods, False)
    return metrics


def backtest_grid_returns(
    open_: np.ndarray,
    close: np.ndarray,
    targets: np.ndarray,
    config: BacktestConfig,
    bars_per_year: float,
    *,
    years: float | None = None,
    periods: int | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``backtest_grid``'s metrics and every column's per-bar net returns (bars - 1 x runs): the
    returns of the very equity curves the metrics come from (``engine.BacktestResult.returns``)."""
    metrics, returns = _backtest_grid(open_, close, targets, config, bars_per_year, years, periods, True)
    assert returns is not None
    return metrics, returns


@dataclass(frozen=True)
class SmaSweep:
    """A sweep's table (one row per (fast, slow) pair, as ``sweep_sma_cross``) and the per-bar net
    returns of every pair (bars - 1 x pairs, column j = row j of the table), with the annualization."""

    table: pl.DataFrame
    returns: np.ndarray
    bars_per_year: float
    years: float | None
    periods: int | None


def sweep_sma_cross(
    data: pl.DataFrame | Mapping[str, np.ndarray],
    fast_values: Iterable[int],
    slow_values: Iterable[int],
    config: BacktestConfig | None = None,
    rule: str = "cross",
) -> pl.DataFrame:
    """Backtest every ``SmaCross(fast, slow)`` with fast < slow in one vectorized pass.

    ``rule="cross"`` trades the crossings (``SmaCross``), ``rule="above"`` holds while the fast SMA is
    above the slow one (``SmaAbove``).

    ``data`` is a candle frame (timestamp, open, high, low, close) or a mapping with ``open`` and
    ``close`` arrays (then ``config.bars_per_year`` is required, and CAGR takes ``(n - 1) /
    bars_per_year`` years). A frame is annualized like ``engine.run_backtest``. Returns one row per pair:
    fast, slow and every metric of ``metrics.METRIC_NAMES``.
    """
    return _sweep(data, fast_values, slow_values, config, rule, with_returns=False).table


def sweep_sma_returns(
    data: pl.DataFrame | Mapping[str, np.ndarray],
    fast_values: Iterable[int],
    slow_values: Iterable[int],
    config: BacktestConfig | None = None,
    rule: str = "cross",
) -> SmaSweep:
    """``sweep_sma_cross`` plus every pair's per-bar net returns (``SmaSweep.returns``), by the same
    arithmetic as the metrics; memory grows as bars x pairs (8 bytes each)."""
    return _sweep(data, fast_values, slow_values, config, rule, with_returns=True)


def _sweep(
    data: pl.DataFrame | Mapping[str, np.ndarray],
    fast_values: Iterable[int],
    slow_values: Iterable[int],
    config: BacktestConfig | None,
    rule: str,
    with_returns: bool,
) -> SmaSweep:
    config = config or BacktestConfig()
    if rule not in SMA_RULES:
        raise ValueError(f"rule must be one of {sorted(SMA_RULES)}, got {rule!r}")
    make_targets = SMA_RULES[rule]
    if isinstance(data, pl.DataFrame):
        ohlc = ohlc_arrays(data)
        open_, close = ohlc.open, ohlc.close
        ann = annualization(ohlc.timestamp, config)
        bpy, years, periods = ann.bars_per_year, ann.years, ann.periods
    else:
        open_ = np.asarray(data["open"], dtype=float)
        close = np.asarray(data["close"], dtype=float)
        if open_.shape != close.shape or open_.ndim != 1 or open_.size < 2:
            raise ValueError("open and close must be 1-D arrays of the same length (>= 2)")
        prices = np.concatenate([open_, close])
        if not np.all(np.isfinite(prices)) or prices.min() <= 0:
            raise ValueError("open and close must be finite and > 0")
        if config.bars_per_year is None:
            raise ValueError("with bare arrays, set config.bars_per_year (no timestamps to infer it)")
        bpy, years, periods = config.bars_per_year, None, None
    pairs = [(f, s) for f in sorted(set(fast_values)) for s in sorted(set(slow_values)) if f < s]
    if not pairs:
        raise ValueError("no (fast, slow) pair with fast < slow in the grid")
    windows = sorted({w for p in pairs for w in p})
    col = {w: i for i, w in enumerate(windows)}
    smas = sma_matrix(close, windows)
    fast_idx = np.array([col[f] for f, _ in pairs])
    slow_idx = np.array([col[s] for _, s in pairs])
    metrics: dict[str, list[np.ndarray]] = {name: [] for name in METRIC_NAMES}
    returns = np.empty((close.size - 1, len(pairs))) if with_returns else np.empty((close.size - 1, 0))
    for i in range(0, len(pairs), _CHUNK):  # build targets per chunk to bound memory
        targets = make_targets(smas[:, fast_idx[i : i + _CHUNK]], smas[:, slow_idx[i : i + _CHUNK]])
        part, part_returns = _backtest_grid(open_, close, targets, config, bpy, years, periods, with_returns)
        for name in METRIC_NAMES:
            metrics[name].append(part[name])
        if part_returns is not None:
            returns[:, i : i + part_returns.shape[1]] = part_returns
    table = pl.DataFrame(
        {
            "fast": np.array([f for f, _ in pairs], dtype=np.int64),
            "slow": np.array([s for _, s in pairs], dtype=np.int64),
            **{name: np.concatenate(vals) for name, vals in metrics.items()},
        }
    )
    return SmaSweep(table, returns, bpy, years, periods)
