"""Performance metrics from an equity curve and a trade list, for one run or a whole grid.

Every function takes equity as ``(bars,)`` or ``(bars, runs)`` (runs in columns) so the single-run
engine and the vectorized sweep share the same arithmetic.

Conventions (risk-free rate 0, per-bar simple returns ``r_t = E_t / E_{t-1} - 1``, ``t = 1..n-1``):

- Sharpe  = mean(r) / std(r, ddof=1) * sqrt(bars_per_year)
- Sortino = mean(r) / sqrt(mean(min(r, 0)^2)) * sqrt(bars_per_year)
- CAGR    = (E_end / E_0) ** (bars_per_year / (n - 1)) - 1
- max drawdown = min_t(E_t / max_{s<=t} E_s - 1)  (a negative fraction, 0 when equity never falls)
- Calmar  = CAGR / |max drawdown|
- win rate = share of trades with pnl > 0; profit factor = sum of gains / |sum of losses|;
  average trade = mean trade return (pnl / entry notional, costs included)
- exposure = share of bars that end with a non-zero position
"""

from __future__ import annotations

import numpy as np

SHARPE_FORMULA = (
    "Sharpe = mean(r) / std(r, ddof=1) * sqrt(bars_per_year), r_t = E_t / E_{t-1} - 1 "
    "(per-bar simple returns of the equity curve, risk-free rate 0)"
)

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


def sharpe_ratio(returns: np.ndarray, bars_per_year: float) -> np.ndarray:
    """Annualized Sharpe along axis 0 (see ``SHARPE_FORMULA``); NaN when returns are constant."""
    std = returns.std(axis=0, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = returns.mean(axis=0) / std * np.sqrt(bars_per_year)
    return np.where(std > 0, out, np.nan)


def sortino_ratio(returns: np.ndarray, bars_per_year: float) -> np.ndarray:
    """Annualized Sortino along axis 0 (downside deviation around 0); NaN without losses."""
    downside = np.sqrt(np.mean(np.minimum(returns, 0.0) ** 2, axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = returns.mean(axis=0) / downside * np.sqrt(bars_per_year)
    return np.where(downside > 0, out, np.nan)


def max_drawdown(equity: np.ndarray) -> np.ndarray:
    """Deepest fall from a running peak along axis 0, as a fraction <= 0."""
    peak = np.maximum.accumulate(equity, axis=0)
    return (equity / np.where(peak > 0, peak, 1.0) - 1.0).min(axis=0)


def equity_metrics(
    equity: np.ndarray, position: np.ndarray, initial_cash: float, bars_per_year: float
) -> dict[str, np.ndarray]:
    """Return-based metrics for each column of ``equity`` (bars x runs, or one run)."""
    n = equity.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 bars to compute metrics, got {n}")
    returns = bar_returns(equity)
    final = equity[-1]
    total = final / initial_cash - 1.0
    years = (n - 1) / bars_per_year
    cagr = np.where(final > 0, np.maximum(final / initial_cash, 1e-300) ** (1.0 / years) - 1.0, -1.0)
    mdd = max_drawdown(equity)
    with np.errstate(divide="ignore", invalid="ignore"):
        calmar = np.where(mdd < 0, cagr / np.abs(mdd), np.nan)
    return {
        "total_return": total,
        "cagr": cagr,
        "sharpe": sharpe_ratio(returns, bars_per_year),
        "sortino": sortino_ratio(returns, bars_per_year),
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
) -> dict[str, np.ndarray]:
    """Every metric in ``METRIC_NAMES`` as an array with one value per run (column)."""
    eq2 = equity.reshape(equity.shape[0], -1)
    pos2 = position.reshape(position.shape[0], -1)
    out = equity_metrics(eq2, pos2, initial_cash, bars_per_year)
    out.update(trade_metrics(trade_pnl, trade_returns, trade_run, eq2.shape[1]))
    return {name: np.asarray(out[name], dtype=float) for name in METRIC_NAMES}
