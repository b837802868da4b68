"""Is the best of a grid better than a benchmark, or only the luckiest of many tries?

``best_of_grid`` sweeps every SMA pair (``sweep.sweep_sma_returns``), names the best by Sharpe, and
tests the whole grid with Hansen's (2005) test for superior predictive ability (``arch.bootstrap.SPA``):
H0 is that *no* member of the grid beats the benchmark in mean per-bar net return, so the p-value pays
for the search. Beside it stands the naive p of the best member alone (the same mean-difference claim,
``significance.mean_return_test`` on its return minus the benchmark's), which ignores the search and
is too small on a grid of noise.

- Benchmarks: ``cash`` (zero returns) and ``buy_and_hold`` (long from the first fill to the end, its
  one entry cost paid: ``engine.run_backtest`` with targets of ones, under the sweep's config).
- Losses are negative returns: the loss differential of member k is ``d_k = r_k - r_benchmark``.
- Studentized as in Hansen (2005): each ``d_k`` is divided by its standard deviation before the test
  (arch 8's ``SPA`` takes ``studentize`` only into its consistent re-centring threshold, not into the
  statistic, so the scaling is done here), so the statistic is the largest t-ratio of the grid and a
  volatile member cannot dominate it. A member identical to the benchmark (``d_k = 0``) stays 0.
- Stationary bootstrap (Politis-Romano 1994) with the Politis-White (2004, corrected 2009) expected
  block length of the best member's differential (``arch.bootstrap.optimal_block_length``), at least
  a day of bars (24 for hourly data), seeded: the same input and seed give the same p-values.
- SPA reports three p-values (lower, consistent, upper: re-centring none, the plausibly relevant, or
  every inferior member); the consistent one is Hansen's and the one the verdict uses.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import polars as pl

from cyber_pipelines.backtest.engine import BacktestConfig, bar_seconds, ohlc_arrays, run_backtest
from cyber_pipelines.backtest.metrics import sharpe_ratio
from cyber_pipelines.backtest.significance import ALPHA, mean_return_test
from cyber_pipelines.backtest.sweep import sweep_sma_returns

BENCHMARKS = ("cash", "buy_and_hold")
REPS = 1000
MIN_BARS = 30
SPA_METHOD = (
    "Hansen (2005) SPA test of the whole grid (arch.bootstrap.SPA), loss differentials studentized, "
    "stationary bootstrap (Politis-Romano 1994) with a Politis-White (2004) block length"
)


@dataclass(frozen=True)
class GridSnooping:
    """The best (fast, slow) of a grid and whether it beats the benchmark after the search."""

    benchmark: str
    rule: str
    n_members: int  # grid members tested together (every pair with fast < slow)
    bars: int  # per-bar returns each member is tested on (candles - 1)
    best_fast: int
    best_slow: int
    best_sharpe: float
    benchmark_sharpe: float
    best_metrics: dict[str, float]
    spa_lower: float
    spa_consistent: float  # Hansen's p-value: the verdict's
    spa_upper: float  # White's reality check (every member re-centred)
    naive_p: float  # the best member alone vs the benchmark, no account of the search
    naive_method: str
    block_size: int
    min_block: int
    reps: int
    seed: int
    bars_per_year: float
    alpha: float = ALPHA
    method: str = SPA_METHOD

    @property
    def significant(self) -> bool:
        """The grid's best beats the benchmark after data snooping (SPA consistent p < alpha)."""
        return bool(self.spa_consistent < self.alpha)

    @property
    def verdict(self) -> str:
        best = f"sma({self.best_fast},{self.best_slow})"
        if self.significant:
            return (
                f"the best of {self.n_members} pairs beats {self.benchmark} after data snooping "
                f"(SPA consistent p = {self.spa_consistent:.3f}; best {best}, naive p = {self.naive_p:.3f})"
            )
        return (
            f"the best of {self.n_members} pairs does not beat {self.benchmark} after data snooping "
            f"(SPA consistent p = {self.spa_consistent:.3f} >= {self.alpha:g}; best {best}, "
            f"naive p = {self.naive_p:.3f})"
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["significant"] = self.significant
        out["verdict"] = self.verdict
        return out


def benchmark_returns(candles: pl.DataFrame, benchmark: str, config: BacktestConfig) -> np.ndarray:
    """Per-bar net returns of the benchmark (bars - 1): zeros for cash, the engine's buy-and-hold."""
    if benchmark not in BENCHMARKS:
        raise ValueError(f"benchmark must be one of {BENCHMARKS}, got {benchmark!r}")
    if benchmark == "cash":
        return np.zeros(candles.height - 1)
    return run_backtest(candles, np.ones(candles.height), config, name="buy_and_hold").returns


def bars_per_day(candles: pl.DataFrame) -> int:
    """Bars in a day of the sample's typical bar length (24 for hourly bars, 1 for daily or longer)."""
    return max(1, round(86400 / bar_seconds(candles["timestamp"])))


def stationary_block_length(x: np.ndarray, minimum: int = 1) -> int:
    """Politis-White expected block length for the stationary bootstrap of the mean of ``x``, at least
    ``minimum`` and at most a third of the sample."""
    from arch.bootstrap import optimal_block_length

    x = np.asarray(x, dtype=float)
    cap = max(1, x.size // 3)
    if x.size < 8 or not np.any(x != x[0]):
        return min(max(minimum, 1), cap)
    value = float(optimal_block_length(x)["stationary"].iloc[0])
    if not math.isfinite(value):
        value = 1.0
    return int(min(max(round(value), minimum, 1), cap))


def spa_pvalues(
    differentials: np.ndarray, block_size: int, reps: int = REPS, seed: int = 0
) -> tuple[float, float, float]:
    """(lower, consistent, upper) SPA p-values of H0 "no column has a mean > 0" for ``differentials``
    (bars x members, return of a member minus the benchmark's), each column studentized first."""
    from arch.bootstrap import SPA

    d = np.asarray(differentials, dtype=float)
    if d.ndim != 2 or d.shape[1] == 0:
        raise ValueError(f"differentials must be bars x members, got shape {d.shape}")
    if not np.all(np.isfinite(d)):
        raise ValueError("differentials contain NaN/inf")
    sd = d.std(axis=0, ddof=1)
    scaled = d / np.where(sd > 0, sd, 1.0)
    # arch takes losses: benchmark losses 0, member losses -d, so its loss differential is d
    spa = SPA(np.zeros(d.shape[0]), -scaled, block_size=block_size, reps=reps, bootstrap="stationary", seed=seed)
    spa.compute()
    p = spa.pvalues
    return float(p["lower"]), float(p["consistent"]), float(p["upper"])


def best_of_grid(
    candles: pl.DataFrame,
    fast_values: Iterable[int],
    slow_values: Iterable[int],
    config: BacktestConfig | None = None,
    *,
    rule: str = "cross",
    benchmark: str = "cash",
    reps: int = REPS,
    seed: int = 0,
    block_size: int | None = None,
    min_block: int | None = None,
    alpha: float = ALPHA,
) -> GridSnooping:
    """Sweep the grid, name the best pair by Sharpe, and test it with SPA against ``benchmark``.

    ``block_size`` default: Politis-White on the best member's differential, at least ``min_block``
    (default: a day of bars, ``bars_per_day``). See the module docstring."""
    config = config or BacktestConfig()
    if benchmark not in BENCHMARKS:
        raise ValueError(f"benchmark must be one of {BENCHMARKS}, got {benchmark!r}")
    if reps < 1:
        raise ValueError(f"reps must be >= 1, got {reps}")
    ohlc_arrays(candles)  # validated once, before any work
    if candles.height - 1 < MIN_BARS:
        raise ValueError(f"need at least {MIN_BARS + 1} candles to test a grid, got {candles.height}")
    sweep = sweep_sma_returns(candles, fast_values, slow_values, config, rule=rule)
    table = sweep.table
    sharpe = table["sharpe"].to_numpy()
    if not np.any(np.isfinite(sharpe)):
        raise ValueError("no member of the grid ever holds a position: there is no best to test")
    best = int(np.nanargmax(sharpe))
    ref = benchmark_returns(candles, benchmark, config)
    d = sweep.returns - ref[:, None]
    minimum = bars_per_day(candles) if min_block is None else int(min_block)
    b = stationary_block_length(d[:, best], minimum) if block_size is None else int(block_size)
    if not 1 <= b <= d.shape[0]:
        raise ValueError(f"block_size must be in [1, {d.shape[0]}], got {b}")
    lower, consistent, upper = spa_pvalues(d, b, reps, seed)
    naive = mean_return_test(d[:, best], sweep.bars_per_year, reference=benchmark, block_len=b, seed=seed, alpha=alpha)
    ref_sharpe = float(sharpe_ratio(ref, sweep.bars_per_year, sweep.periods))  # NaN for cash
    row = table.row(best, named=True)
    return GridSnooping(
        benchmark=benchmark,
        rule=rule,
        n_members=table.height,
        bars=d.shape[0],
        best_fast=int(row["fast"]),
        best_slow=int(row["slow"]),
        best_sharpe=float(row["sharpe"]),
        benchmark_sharpe=ref_sharpe,
        best_metrics={k: float(v) for k, v in row.items() if k not in ("fast", "slow")},
        spa_lower=lower,
        spa_consistent=consistent,
        spa_upper=upper,
        naive_p=float(naive.p_value),
        naive_method=naive.method + " of the best member's return minus the benchmark's",
        block_size=b,
        min_block=minimum,
        reps=reps,
        seed=seed,
        bars_per_year=sweep.bars_per_year,
        alpha=alpha,
    )
