"""References a strategy must beat, out of sample: cash, buy-and-hold and a random-entry null.

- cash: earns 0 every bar (tested by the mean return, ``significance.mean_return_test``);
- buy-and-hold: long from the first bar of the sample to the last, paying one entry;
- random entry (``random_entry_null`` draws, ``rank_test`` judges): the strategy's own trades
  (their lengths and sides) placed at random start bars, so each draw has the same number of
  trades, the same turnover and the same exposure, and only the timing differs. The p-value is the
  rank of the strategy's Sharpe ratio among the draws' (``(1 + #{null >= observed}) / (1 + draws)``);
  the interval is the observed Sharpe minus the null's ``1 - alpha`` and ``alpha`` quantiles, so its
  lower bound is above 0 exactly when p < alpha. The draws run through the vectorized grid engine
  (``sweep.backtest_grid``) with the strategy's costs and fills (stop losses are path-dependent and
  left out of the null, and said so).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from cyber_pipelines.backtest.engine import BacktestConfig
from cyber_pipelines.backtest.significance import ALPHA, ClaimTest
from cyber_pipelines.backtest.sweep import backtest_grid

N_DRAWS = 2000  # the smallest p is 1 / 2001: Holm over ~40 tests can still go below 0.05
NO_STOPS = "the random draws trade without the stop loss (path-dependent)"
_DRAWS_PER_PASS = 128


def buy_and_hold_targets(n: int) -> np.ndarray:
    """Long every bar (one entry at the first fill, held to the end)."""
    return np.ones(n)


def segments(targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The runs of equal non-zero target: their lengths (bars) and values (side and size)."""
    t = np.asarray(targets, dtype=float)
    change = np.flatnonzero(np.diff(t, prepend=np.nan, append=np.nan) != 0)
    starts, ends = change[:-1], change[1:]
    values = t[starts]
    held = values != 0
    return (ends - starts)[held], values[held]


def random_targets(lengths: np.ndarray, values: np.ndarray, n: int, draws: int, seed: int) -> np.ndarray:
    """``draws`` target columns (n x draws): the segments in random order at random places, no overlap.

    The flat bars are split into ``len(lengths) + 1`` gaps uniformly at random (stars and bars)."""
    k = lengths.size
    flat = n - int(lengths.sum())
    if flat < 0:
        raise ValueError(f"segments of {int(lengths.sum())} bars do not fit in {n} bars")
    out = np.zeros((n, draws))
    if k == 0:
        return out
    rng = np.random.default_rng(seed)
    for j in range(draws):
        order = rng.permutation(k)
        cuts = np.sort(rng.choice(flat + k, size=k, replace=False))
        gaps = np.diff(np.concatenate([[-1], cuts])) - 1  # k gaps before each segment (>= 0)
        start = np.cumsum(gaps) + np.concatenate([[0], np.cumsum(lengths[order])[:-1]])
        idx = np.repeat(start, lengths[order]) + _ramp(lengths[order])
        out[idx, j] = np.repeat(values[order], lengths[order])
    return out


def _ramp(lengths: np.ndarray) -> np.ndarray:
    """0, 1, ..., len - 1 for each length, concatenated."""
    total = int(lengths.sum())
    offsets = np.repeat(np.cumsum(lengths) - lengths, lengths)
    out: np.ndarray = np.arange(total) - offsets
    return out


def random_entry_null(
    open_: np.ndarray,
    close: np.ndarray,
    targets: np.ndarray,
    config: BacktestConfig,
    bars_per_year: float,
    *,
    draws: int = N_DRAWS,
    seed: int = 0,
) -> np.ndarray:
    """The Sharpe ratios of ``draws`` random placements of the strategy's trades (empty: no trades)."""
    n = close.size
    lengths, values = segments(targets)
    if lengths.size == 0:
        return np.zeros(0)
    null_config = replace(config, stop_loss=None)  # path-dependent: the grid engine has no stops
    sharpes = np.concatenate(
        [
            backtest_grid(
                open_, close, random_targets(lengths, values, n, min(_DRAWS_PER_PASS, draws - i), seed + i),
                null_config, bars_per_year,
            )["sharpe"]
            for i in range(0, draws, _DRAWS_PER_PASS)
        ]
    )  # fmt: skip
    out: np.ndarray = np.where(np.isfinite(sharpes), sharpes, 0.0)  # a draw that never moves: Sharpe 0
    return out


def rank_test(observed: float, null: np.ndarray, n: int, *, alpha: float = ALPHA, note: str = "") -> ClaimTest:
    """The observed Sharpe against the random-entry draws (see the module docstring)."""
    method = f"Monte Carlo rank against {null.size} random entries with the same trades (lengths, sides)"
    if null.size == 0:
        return ClaimTest(
            "random_entry", "sharpe_vs_null", math.nan, math.nan, math.nan, 1.0, ci_level=1 - 2 * alpha, n=n,
            method=method, note="no trades: nothing to time",
        )  # fmt: skip
    observed = observed if math.isfinite(observed) else 0.0
    p = (1.0 + np.count_nonzero(null >= observed)) / (1.0 + null.size)
    q_low, q_high = np.quantile(null, [alpha, 1.0 - alpha])
    median = float(np.median(null))
    return ClaimTest(
        "random_entry",
        "sharpe_vs_null",
        observed - median,
        float(observed - q_high),
        float(observed - q_low),
        float(p),
        ci_level=1 - 2 * alpha,
        strategy_value=observed,
        reference_value=median,
        n_boot=int(null.size),
        n=n,
        method=method,
        note=note,
    )
