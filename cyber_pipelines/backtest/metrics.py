"""Performance metrics from an equity curve and a trade list, for one run or a whole grid.

Every function takes equity as ``(bars,)`` or ``(bars, runs)`` (runs in columns) so the single-run
engine and the vectorized sweep share the same arithmetic.

Conventions (risk-free rate 0, per-bar simple returns ``r_t = E_t / E_{t-1} - 1``, ``t = 1..n-1``):

- Sharpe  = mean(r) / std(r, ddof=1) * sqrt(bars_per_year)
- Sortino = mean(r) / sqrt(mean(min(r, 0)^2)) * sqrt(bars_per_year)
- CAGR    = (E_end / E_0) ** (1 / years) - 1, years = the sample's calendar span (last - first
  timestamp, 365.25-day years) when the caller knows it, else (n - 1) / bars_per_year
- max drawdown = min_t(E_t / max_{s<=t} E_s - 1)  (a negative fraction, 0 when equity never falls)
- Calmar  = CAGR / |max drawdown|
- CAGR and Calmar are NaN for a sample shorter than ``MIN_YEARS_ANNUALIZED`` (one year): annualizing
  88 days compounds noise; ``annualized_unavailable_reason`` says why.
- ``bars_per_year`` comes from the calendar (24/7: 8766 hours a year; daily equities: 252) or from
  config, never from counting rows. ``periods`` (optional) is the number of calendar bar intervals the
  sample spans: when rows are missing (a 24/7 market with holes), the missing intervals count as bars
  with no return (the move lands on the next row), so mean and deviation are per calendar bar and the
  sqrt(bars_per_year) scaling stays right. Without holes it changes nothing.
- win rate = share of trades with pnl > 0; profit factor = sum of gains / |sum of losses|;
  average trade = mean trade return (pnl / entry notional, costs included)
- exposure = share of bars that end with a non-zero position
"""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np

SHARPE_FORMULA = (
    "Sharpe = mean(r) / std(r, ddof=1) * sqrt(bars_per_year), r_t = E_t / E_{t-1} - 1 "
    "(per-bar simple returns of the equity curve, risk-free rate 0)"
)

MIN_YEARS_ANNUALIZED = 1.0
ANNUALIZED_METRICS = ("cagr", "calmar")
_DAYS_PER_YEAR = 365.25

METRIC_NAMES = (
    "total_return",
    "cagr",
    "sharpe",
    "sortino",
    "calmar",
    "max_drawdown",
    "win_rate",
    "profit_factor",
    "exposure",
    "n_trades",
    "avg_trade",
    "final_equity",
)


def bar_returns(equity: np.ndarray) -> np.ndarray:
    """Per-bar simple returns along axis 0 (0 where the previous equity is 0, i.e. after ruin)."""
    prev = equity[:-1]
    ratio = np.divide(equity[1:], prev, out=np.ones_like(prev), where=prev > 0)
    return ratio - 1.0


def annualized_unavailable_reason(span: float | timedelta) -> str | None:
    """Why CAGR and Calmar are not reported for a sample of this span (years, or a timedelta); None
    when the sample is long enough. E.g. ``"sample of 88 days < 1 year"``."""
    years = span.total_seconds() / (_DAYS_PER_YEAR * 86400) if isinstance(span, timedelta) else float(span)
    if math.isfinite(years) and years >= MIN_YEARS_ANNUALIZED:
        return None
    if not math.isfinite(years):
        return "sample span unknown: CAGR and Calmar need at least 1 year"
    return f"sample of {years * _DAYS_PER_YEAR:.0f} days < 1 year"


def _calendar_periods(returns: np.ndarray, periods: int | None) -> int:
    n = returns.shape[0]
    return n if periods is None else max(int(periods), n)


def sharpe_ratio(returns: np.ndarray, bars_per_year: float, periods: int | None = None) -> np.ndarray:
    """Annualized Sharpe along axis 0 (see ``SHARPE_FORMULA``); NaN when returns are constant.

    ``periods`` >= len(returns): the calendar intervals spanned; the missing ones count as zero returns."""
    m = _calendar_periods(returns, periods)
    if m == returns.shape[0]:
        std = returns.std(axis=0, ddof=1)
        mean = returns.mean(axis=0)
    else:
        mean = returns.sum(axis=0) / m
        var = (np.sum(returns**2, axis=0) - m * mean**2) / (m - 1)
        std = np.sqrt(np.maximum(var, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = mean / std * np.sqrt(bars_per_year)
    return np.where(std > 0, out, np.nan)


def sortino_ratio(returns: np.ndarray, bars_per_year: float, periods: int | None = None) -> np.ndarray:
    """Annualized Sortino along axis 0 (downside deviation around 0); NaN without losses."""
    m = _calendar_periods(returns, periods)
    downside = np.sqrt(np.sum(np.minimum(returns, 0.0) ** 2, axis=0) / m)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = returns.sum(axis=0) / m / downside * np.sqrt(bars_per_year)
    return np.where(downside > 0, out, np.nan)


def max_drawdown(equity: np.ndarray) -> np.ndarray:
    """Deepest fall from a running peak along axis 0, as a fraction <= 0."""
    peak = np.maximum.accumulate(equity, axis=0)
    return (equity / np.where(peak > 0, peak, 1.0) - 1.0).min(axis=0)


def equity_metrics(
    equity: np.ndarray,
    position: np.ndarray,
    initial_cash: float,
    bars_per_year: float,
    *,
    years: float | None = None,
    periods: int | None = None,
) -> dict[str, np.ndarray]:
    """Return-based metrics for each column of ``equity`` (bars x runs, or one run).

    ``years``: the calendar span of the sample (default ``(n - 1) / bars_per_year``); CAGR and Calmar
    are NaN below ``MIN_YEARS_ANNUALIZED``. ``periods``: see the module docstring."""
    n = equity.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 bars to compute metrics, got {n}")
    returns = bar_returns(equity)
    final = equity[-1]
    total = final / initial_cash - 1.0
    years = (n - 1) / bars_per_year if years is None else years
    if years >= MIN_YEARS_ANNUALIZED:
        growth = np.maximum(final / initial_cash, 1e-300) ** (1.0 / years) - 1.0
        cagr = np.where(final > 0, growth, -1.0)
    else:
        cagr = np.full(np.shape(final), np.nan)
    mdd = max_drawdown(equity)
    with np.errstate(divide="ignore", invalid="ignore"):
        calmar = np.where(mdd < 0, cagr / np.abs(mdd), np.nan)
    return {
        "total_return": total,
        "cagr": cagr,
        "sharpe": sharpe_ratio(returns, bars_per_year, periods),
        "sortino": sortino_ratio(returns, bars_per_year, periods),
        "calmar": calmar,
        "max_drawdown": mdd,
        "exposure": (position != 0).mean(axis=0),
        "final_equity": final,
    }


def trade_metrics(pnl: np.ndarray, returns: np.ndarray, run: np.ndarray, n_runs: int) -> dict[str, np.ndarray]:
    """Trade-based metrics per run from flat trade arrays (``run`` is each trade's column index)."""
    count = np.bincount(run, minlength=n_runs).astype(float)
    wins = np.bincount(run, weights=(pnl > 0).astype(float), minlength=n_runs)
    gains = np.bincount(run, weights=np.maximum(pnl, 0.0), minlength=n_runs)
    losses = -np.bincount(run, weights=np.minimum(pnl, 0.0), minlength=n_runs)
    ret_sum = np.bincount(run, weights=returns, minlength=n_runs)
    with np.errstate(divide="ignore", invalid="ignore"):
        win_rate = np.where(count > 0, wins / count, np.nan)
        profit_factor = np.where(losses > 0, gains / losses, np.where(gains > 0, np.inf, np.nan))
        avg_trade = np.where(count > 0, ret_sum / count, np.nan)
    return {
        "win_rate": win_rate,
        "profit_factor": profit_factor,
        "n_trades": count,
        "avg_trade": avg_trade,
    }


def all_metrics(
    equity: np.ndarray,
    position: np.ndarray,
    trade_pnl: np.ndarray,
    trade_returns: np.ndarray,
    trade_run: np.ndarray,
    initial_cash: float,
    bars_per_year: float,
    *,
    years: float | None = None,
    periods: int | None = None,
) -> dict[str, np.ndarray]:
    """Every metric in ``METRIC_NAMES`` as an array with one value per run (column)."""
    eq2 = equity.reshape(equity.shape[0], -1)
    pos2 = position.reshape(position.shape[0], -1)
    out = equity_metrics(eq2, pos2, initial_cash, bars_per_year, years=years, periods=periods)
    out.update(trade_metrics(trade_pnl, trade_returns, trade_run, eq2.shape[1]))
    return {name: np.asarray(out[name], dtype=float) for name in METRIC_NAMES}
