"""Is a strategy better than the baseline? Paired tests on per-bar returns that respect autocorrelation.

Per-bar return differences ``d_t = r_strategy_t - r_baseline_t`` are tested for H0: E[d] <= 0 against
H1: E[d] > 0 (one-sided: the strategy earns more), two ways:

- circular block bootstrap (Politis & Romano 1992): resample blocks of ``block_len`` consecutive bars
  (wrapping around), the same blocks for both series so their dependence is kept. The p-value is
  ``(1 + #{mean*(d) - mean(d) >= mean(d)}) / (1 + n_boot)`` (the bootstrap distribution centred on
  the null). The same resamples give a percentile confidence interval for the difference of
  annualized Sharpe ratios. ``block_len`` defaults to the Politis & White (2004) automatic choice
  (with the Patton, Politis & White 2009 correction) estimated on ``d``.
- Diebold-Mariano: ``mean(d) / sqrt(LRV / n)`` with the Newey-West (Bartlett) long-run variance at
  lag ``floor(4 (n / 100) ^ (2 / 9))``, one-sided p-value from Student's t with n - 1 degrees of freedom.

Vectorized: each block's sum is precomputed once (circular rolling sums), so a resample costs one
gather and one sum per block, for all ``n_boot`` resamples at once.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from cyber_pipelines.backtest.metrics import SHARPE_FORMULA


@dataclass(frozen=True)
class SignificanceResult:
    """Strategy vs baseline on paired per-bar returns (one-sided: strategy better)."""

    p_value: float  # block bootstrap, H0: E[r_strategy - r_baseline] <= 0
    dm_stat: float  # Diebold-Mariano statistic (Newey-West HAC variance)
    dm_p_value: float
    mean_diff: float  # mean per-bar return difference
    sharpe_strategy: float
    sharpe_baseline: float
    sharpe_diff: float
    sharpe_diff_ci: tuple[float, float]
    confidence: float
    block_len: int
    n_boot: int
    n: int
    sharpe_formula: str = SHARPE_FORMULA

    def to_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["sharpe_diff_ci"] = list(self.sharpe_diff_ci)
        return out


def _autocorr(x: np.ndarray, max_lag: int) -> np.ndarray:
    x = x - x.mean()
    denom = float(x @ x)
    if denom == 0:
        return np.zeros(max_lag + 1)
    return np.array([float(x[: x.size - k] @ x[k:]) / denom for k in range(max_lag + 1)])


def optimal_block_length(x: np.ndarray) -> int:
    """Politis-White (2004) block length for the circular block bootstrap of the mean of ``x``."""
    x = np.asarray(x, dtype=float)
    n = x.size
    if n < 8:
        return 1
    k_n = max(5, math.ceil(math.sqrt(math.log10(n))))
    m_max = math.ceil(math.sqrt(n)) + k_n
    rho = _autocorr(x, min(m_max + k_n, n - 1))
    bound = 2.0 * math.sqrt(math.log10(n) / n)
    small = np.abs(rho[1:]) < bound  # small[k - 1]: lag k is insignificant
    m_hat = m_max
    for m in range(1, m_max + 1):  # first lag followed by k_n insignificant ones
        if small[m - 1 : m - 1 + k_n].all():
            m_hat = m - 1
            break
    big_m = min(2 * max(m_hat, 1), n - 1)
    lags = np.arange(-big_m, big_m + 1)
    t = np.abs(lags) / big_m
    flat_top = np.where(t <= 0.5, 1.0, np.where(t <= 1.0, 2.0 * (1.0 - t), 0.0))
    xc = x - x.mean()
    acov = np.array([float(xc[: n - abs(k)] @ xc[abs(k) :]) / n for k in lags])
    g = float(np.sum(flat_top * np.abs(lags) * acov))
    spectrum0 = float(np.sum(flat_top * acov))
    if spectrum0 <= 0 or g == 0:
        return 1
    d_cb = 4.0 / 3.0 * spectrum0**2
    b = (2.0 * g**2 / d_cb) ** (1.0 / 3.0) * n ** (1.0 / 3.0)
    return int(min(max(round(b), 1), math.ceil(min(3.0 * math.sqrt(n), n / 3.0))))


def newey_west_lrv(d: np.ndarray, lag: int | None = None) -> float:
    """Long-run variance of ``d`` with Bartlett weights (default lag floor(4 (n/100)^(2/9)))."""
    n = d.size
    lag = int(4 * (n / 100.0) ** (2.0 / 9.0)) if lag is None else lag
    dc = d - d.mean()
    lrv = float(dc @ dc) / n
    for k in range(1, min(lag, n - 1) + 1):
        lrv += 2.0 * (1.0 - k / (lag + 1)) * float(dc[:-k] @ dc[k:]) / n
    return lrv


def _circular_block_sums(x: np.ndarray, block_len: int) -> np.ndarray:
    """Sum of ``x[s], ..., x[s + block_len - 1]`` (wrapping) for every start s."""
    ext = np.concatenate([x, x[: block_len - 1]])
    csum = np.concatenate([[0.0], np.cumsum(ext)])
    return csum[block_len : block_len + x.size] - csum[: x.size]


def _check(name: str, r: np.ndarray) -> np.ndarray:
    r = np.asarray(r, dtype=float)
    if r.ndim != 1:
        raise ValueError(f"{name} must be 1-D per-bar returns, got shape {r.shape}")
    if not np.all(np.isfinite(r)):
        raise ValueError(f"{name} contains NaN/inf")
    return r


def _sharpe(mean: np.ndarray, sumsq: np.ndarray, length: int, bars_per_year: float) -> np.ndarray:
    var = (sumsq - length * mean**2) / (length - 1)
    sd = np.sqrt(np.maximum(var, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sd > 0, mean / sd * math.sqrt(bars_per_year), 0.0)


def compare_to_baseline(
    strategy_returns: np.ndarray,
    baseline_returns: np.ndarray,
    bars_per_year: float,
    *,
    n_boot: int = 2000,
    block_len: int | None = None,
    seed: int = 0,
    confidence: float = 0.95,
) -> SignificanceResult:
    """Test whether the strategy's per-bar returns beat the baseline's (see the module docstring)."""
    rs, rb = _check("strategy_returns", strategy_returns), _check("baseline_returns", baseline_returns)
    if rs.size != rb.size:
        raise ValueError(f"returns must be paired bar by bar: {rs.size} vs {rb.size} bars")
    n = rs.size
    if n < 10:
        raise ValueError(f"need at least 10 paired returns, got {n}")
    if n_boot < 100 or not 0 < confidence < 1 or not bars_per_year > 0:
        raise ValueError("need n_boot >= 100, 0 < confidence < 1 and bars_per_year > 0")
    d = rs - rb
    b = optimal_block_length(d) if block_len is None else int(block_len)
    if not 1 <= b <= n:
        raise ValueError(f"block_len must be in [1, {n}], got {b}")
    n_blocks = math.ceil(n / b)
    length = n_blocks * b
    starts = np.random.default_rng(seed).integers(0, n, size=(n_boot, n_blocks))

    def boot_sum(x: np.ndarray) -> np.ndarray:
        return _circular_block_sums(x, b)[starts].sum(axis=1)

    mean_d = float(d.mean())
    boot_d = boot_sum(d) / length
    exceed = int(np.count_nonzero(boot_d - mean_d >= mean_d))
    # identical returns give no evidence either way: p = 1
    p_value = (1.0 + exceed) / (1.0 + n_boot) if np.any(d) else 1.0

    def full_sharpe(r: np.ndarray) -> float:
        return float(_sharpe(np.array(r.mean()), np.array(float(r @ r)), n, bars_per_year))

    sr_s, sr_b = full_sharpe(rs), full_sharpe(rb)
    boot_diff = _sharpe(boot_sum(rs) / length, boot_sum(rs * rs), length, bars_per_year) - _sharpe(
        boot_sum(rb) / length, boot_sum(rb * rb), length, bars_per_year
    )
    tail = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(boot_diff, [tail, 1.0 - tail])

    lrv = newey_west_lrv(d)
    dm_stat = mean_d / math.sqrt(lrv / n) if lrv > 0 else 0.0
    dm_p = float(stats.t.sf(dm_stat, df=n - 1)) if lrv > 0 else 1.0
    return SignificanceResult(
        p_value=float(p_value),
        dm_stat=float(dm_stat),
        dm_p_value=dm_p,
        mean_diff=mean_d,
        sharpe_strategy=sr_s,
        sharpe_baseline=sr_b,
        sharpe_diff=sr_s - sr_b,
        sharpe_diff_ci=(float(lo), float(hi)),
        confidence=confidence,
        block_len=b,
        n_boot=n_boot,
        n=n,
    )
