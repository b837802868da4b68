"""Does a strategy beat a reference? One studentized statistic per claim, and family-wise control.

Each claim is one-sided (H0: the strategy is no better than the reference) and gets a p-value and an
interval from the *same* studentized statistic, so that they never disagree:

- against cash: the mean per-bar net return (H0: mean <= 0), reported annualized;
- against buy-and-hold and the TA-only baseline: the difference of annualized Sharpe ratios
  (Ledoit & Wolf 2008), from the per-bar returns of both on the same bars;
- against the random-entry null: see ``references.rank_test`` (a Monte Carlo rank).

The bootstrap is the studentized circular block bootstrap (Politis & Romano 1994; Ledoit & Wolf
2008, section 3.2). The statistic ``theta = f(mean of y_t)`` is a smooth function of per-bar moments
(``y = r`` for the mean; ``y = (r1, r2, r1^2, r2^2)`` for the Sharpe difference). Its standard error
comes from the delta method and the overlapping-block estimate of the long-run covariance of ``y``
(blocks of ``block_len`` bars, all starts on the original series, the resampled blocks in each
bootstrap sample). With ``t* = (theta* - theta) / se*`` over ``n_boot`` resamples:

- p-value: ``(1 + #{t* >= theta / se}) / (1 + n_boot)``;
- interval: ``[theta - q(1 - alpha) se, theta - q(alpha) se]``, the two-sided ``1 - 2 alpha``
  interval whose lower bound is the one-sided test at ``alpha``: p < alpha exactly when the lower
  bound is above 0 (up to the resampling grain).

``block_len`` defaults to the Politis & White (2004) automatic choice for the circular bootstrap,
with the Patton, Politis & White (2009) correction, from the ``arch`` package, estimated on the
series whose mean is tested (the return difference for a Sharpe difference).

A higher Sharpe than the reference is not always good news: when both Sharpes are negative the
result says so (``note``), so that losing less per unit of risk is never read as a gain.

Family-wise control: ``holm`` (Holm 1979) over the p-values reported together (every strategy x
reference x pair of a comparison), raw and adjusted side by side.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from cyber_pipelines.multiple_testing import holm

ALPHA = 0.05
N_BOOT = 4999  # the smallest p is 1 / 5000: Holm over ~100 tests can still go below 0.05
BOTH_NEGATIVE = "both Sharpe ratios are negative: the difference measures losing less, not gaining"
MIN_BARS = 30
_CHUNK = 2_000_000  # array elements per bootstrap pass


@dataclass(frozen=True)
class ClaimTest:
    """One claim "strategy beats reference", tested one-sided with a studentized statistic."""

    reference: str  # cash | buy_and_hold | random_entry | rule_of_three | ...
    statistic: str  # mean_return | sharpe_diff | sharpe_vs_null
    estimate: float  # annualized mean return, or Sharpe difference (strategy minus reference)
    ci_low: float  # the 1 - 2 alpha two-sided interval of the estimate (its lower bound: the test)
    ci_high: float
    p_value: float  # one-sided, H0: estimate <= 0
    p_adjusted: float = math.nan  # after the family-wise adjustment (``holm``) of the report
    ci_level: float = 1 - 2 * ALPHA
    strategy_value: float = math.nan  # e.g. the strategy's Sharpe
    reference_value: float = math.nan  # e.g. the reference's Sharpe
    block_len: int = 0
    n_boot: int = 0
    n: int = 0
    method: str = ""
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClaimTest:
        known = {f for f in cls.__dataclass_fields__}
        values: dict[str, Any] = {k: (math.nan if v is None else v) for k, v in data.items() if k in known}
        return cls(**values)

    def significant(self, alpha: float = ALPHA) -> bool:
        """Adjusted p below ``alpha`` (raw p when no adjustment was made)."""
        p = self.p_adjusted if math.isfinite(self.p_adjusted) else self.p_value
        return bool(p < alpha)


def _returns(name: str, r: np.ndarray) -> np.ndarray:
    r = np.asarray(r, dtype=float)
    if r.ndim != 1:
        raise ValueError(f"{name} must be 1-D per-bar returns, got shape {r.shape}")
    if not np.all(np.isfinite(r)):
        raise ValueError(f"{name} contains NaN/inf")
    if r.size < MIN_BARS:
        raise ValueError(f"{name}: need at least {MIN_BARS} bars to test, got {r.size}")
    return r


def block_length(x: np.ndarray, minimum: int = 1) -> int:
    """Politis-White (2004, corrected 2009) block length for the circular block bootstrap of the mean,
    at least ``minimum`` (e.g. a day of hourly bars, so that resamples keep the intraday profile)."""
    from arch.bootstrap import optimal_block_length

    x = np.asarray(x, dtype=float)
    cap = max(1, x.size // 3)
    if x.size < 8 or not np.any(x != x[0]):
        return min(max(minimum, 1), cap)
    value = float(optimal_block_length(x)["circular"].iloc[0])
    return int(min(max(round(value), minimum, 1), cap))


def _block_sums(y: np.ndarray, b: int) -> np.ndarray:
    """Sum of ``y[s : s + b]`` (wrapping) for every start s: shape (n, k)."""
    ext = np.concatenate([y, y[: b - 1]])
    csum = np.concatenate([np.zeros((1, y.shape[1])), np.cumsum(ext, axis=0)])
    out: np.ndarray = csum[b : b + y.shape[0]] - csum[: y.shape[0]]
    return out


def studentized_bootstrap(
    y: np.ndarray,
    f: Callable[[np.ndarray], np.ndarray],
    grad: Callable[[np.ndarray], np.ndarray],
    block_len: int,
    n_boot: int,
    seed: int,
) -> tuple[float, float, np.ndarray]:
    """``theta = f(mean y)``, its standard error and the bootstrap ``t*`` (see the module docstring).

    ``f`` and ``grad`` take moment vectors in the last axis (shape (..., k)); NaN t* (a resample with
    no variance) are dropped."""
    n, _ = y.shape
    b = block_len
    sums = _block_sums(y, b)  # (n, k)
    ybar = y.mean(axis=0)
    theta = float(f(ybar))
    g = grad(ybar)
    # overlapping-block long-run covariance, in the direction of the gradient
    z = (sums - b * ybar) @ g / math.sqrt(b)
    se = math.sqrt(float(np.mean(z**2)) / n)
    rng = np.random.default_rng(seed)
    n_blocks = math.ceil(n / b)
    starts = rng.integers(0, n, size=(n_boot, n_blocks))
    t_star = np.empty(n_boot)
    step = max(1, _CHUNK // (n_blocks * y.shape[1]))  # resamples per pass: bounded temporaries
    for i in range(0, n_boot, step):
        chosen = sums[starts[i : i + step]]  # (resamples, n_blocks, k)
        ybar_star = chosen.sum(axis=1) / (n_blocks * b)
        g_star = grad(ybar_star)
        z_star = (
            np.einsum("bjk,bk->bj", chosen, g_star) - b * np.sum(ybar_star * g_star, axis=1)[:, None]
        ) / math.sqrt(b)
        se_star = np.sqrt(np.mean(z_star**2, axis=1) / (n_blocks * b))
        with np.errstate(divide="ignore", invalid="ignore"):
            t_star[i : i + step] = (f(ybar_star) - theta) / se_star
    return theta, se, t_star[np.isfinite(t_star)]


def _claim(
    reference: str,
    statistic: str,
    theta: float,
    se: float,
    t_star: np.ndarray,
    *,
    scale: float,
    alpha: float,
    **extra: Any,
) -> ClaimTest:
    """p-value and interval of ``theta`` from the same ``t*`` distribution; ``scale`` annualizes."""
    if se <= 0 or not math.isfinite(se) or t_star.size < 10:
        # no variation at all: no evidence either way
        return ClaimTest(
            reference, statistic, float(theta * scale), math.nan, math.nan, 1.0, ci_level=1 - 2 * alpha, **extra
        )
    t_hat = theta / se
    p = (1.0 + np.count_nonzero(t_star >= t_hat)) / (1.0 + t_star.size)
    q_low, q_high = np.quantile(t_star, [alpha, 1.0 - alpha])
    low, high = theta - q_high * se, theta - q_low * se
    return ClaimTest(
        reference,
        statistic,
        float(theta * scale),
        float(low * scale),
        float(high * scale),
        float(p),
        ci_level=1 - 2 * alpha,
        n_boot=int(t_star.size),
        **extra,
    )


def _block(x: np.ndarray, block_len: int | None, min_block: int) -> int:
    """The given block length, checked, or Politis-White's for ``x`` (at least ``min_block``)."""
    b = block_length(x, min_block) if block_len is None else int(block_len)
    if not 1 <= b <= x.size:
        raise ValueError(f"block_len must be in [1, {x.size}], got {b}")
    return b


def mean_return_test(
    returns: np.ndarray,
    bars_per_year: float,
    *,
    reference: str = "cash",
    n_boot: int = N_BOOT,
    block_len: int | None = None,
    min_block: int = 1,
    seed: int = 0,
    alpha: float = ALPHA,
) -> ClaimTest:
    """H0: the mean per-bar return is <= 0 (cash earns 0); the estimate is annualized (x bars/year)."""
    r = _returns("returns", returns)
    b = _block(r, block_len, min_block)
    theta, se, t_star = studentized_bootstrap(
        r[:, None], lambda m: m[..., 0], lambda m: np.ones_like(m), b, n_boot, seed
    )
    return _claim(
        reference,
        "mean_return",
        theta,
        se,
        t_star,
        scale=bars_per_year,
        alpha=alpha,
        strategy_value=theta * bars_per_year,
        reference_value=0.0,
        block_len=b,
        n=r.size,
        method="studentized circular block bootstrap of the mean return (Politis-Romano 1994)",
    )


def _sharpe_diff(m: np.ndarray) -> np.ndarray:
    mu1, mu2, s1, s2 = m[..., 0], m[..., 1], m[..., 2], m[..., 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        out: np.ndarray = mu1 / np.sqrt(s1 - mu1**2) - mu2 / np.sqrt(s2 - mu2**2)
    return out


def _sharpe_diff_grad(m: np.ndarray) -> np.ndarray:
    mu1, mu2, s1, s2 = m[..., 0], m[..., 1], m[..., 2], m[..., 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        v1, v2 = (s1 - mu1**2) ** 1.5, (s2 - mu2**2) ** 1.5
        return np.stack([s1 / v1, -s2 / v2, -mu1 / (2 * v1), mu2 / (2 * v2)], axis=-1)


def sharpe_difference_test(
    strategy_returns: np.ndarray,
    reference_returns: np.ndarray,
    bars_per_year: float,
    *,
    reference: str,
    n_boot: int = N_BOOT,
    block_len: int | None = None,
    min_block: int = 1,
    seed: int = 0,
    alpha: float = ALPHA,
) -> ClaimTest:
    """H0: Sharpe(strategy) <= Sharpe(reference), on paired per-bar returns (Ledoit-Wolf 2008).

    A series without variation (no position at all) has no Sharpe ratio: the mean-return difference
    is tested instead, and ``note`` says so."""
    rs, rr = _returns("strategy_returns", strategy_returns), _returns(f"{reference} returns", reference_returns)
    if rs.size != rr.size:
        raise ValueError(f"returns must be paired bar by bar: {rs.size} vs {reference} {rr.size} bars")
    d = rs - rr
    b = _block(d, block_len, min_block)
    root = math.sqrt(bars_per_year)
    if rs.std() == 0 or rr.std() == 0:
        theta, se, t_star = studentized_bootstrap(
            d[:, None], lambda m: m[..., 0], lambda m: np.ones_like(m), b, n_boot, seed
        )
        flat = "the strategy" if rs.std() == 0 else f"the {reference}"
        return _claim(
            reference,
            "mean_return_diff",
            theta,
            se,
            t_star,
            scale=bars_per_year,
            alpha=alpha,
            block_len=b,
            n=rs.size,
            method="studentized circular block bootstrap of the mean return difference",
            note=f"{flat} never moves (no Sharpe ratio): the annualized mean return difference is tested",
        )
    y = np.column_stack([rs, rr, rs**2, rr**2])
    theta, se, t_star = studentized_bootstrap(y, _sharpe_diff, _sharpe_diff_grad, b, n_boot, seed)
    sr_s = float(rs.mean() / rs.std(ddof=0) * root)
    sr_r = float(rr.mean() / rr.std(ddof=0) * root)
    note = BOTH_NEGATIVE if sr_s < 0 and sr_r < 0 else ""
    return _claim(
        reference,
        "sharpe_diff",
        theta,
        se,
        t_star,
        scale=root,
        alpha=alpha,
        strategy_value=sr_s,
        reference_value=sr_r,
        block_len=b,
        n=rs.size,
        method="studentized circular block bootstrap of the Sharpe difference (Ledoit-Wolf 2008)",
        note=note,
    )


def adjust(tests: Sequence[ClaimTest], alpha: float = ALPHA) -> list[ClaimTest]:
    """The tests with ``p_adjusted`` set by Holm over all of them (one family).

    A resampled p-value is at least ``1 / (resamples + 1)`` and Holm multiplies the smallest by the
    family's size, so a test with too few resamples for its family could never pass: its note says so
    (raise ``n_boot`` or the random draws) instead of letting a gate that cannot open look like an answer."""
    adjusted: list[float] = [float(a) for a in holm([t.p_value for t in tests])]
    m = sum(1 for t in tests if math.isfinite(t.p_value))
    out = []
    for t, a in zip(tests, adjusted, strict=True):
        note = t.note
        if t.n_boot and m * (1.0 / (t.n_boot + 1)) >= alpha:
            short = (
                f"cannot reach adjusted p < {alpha:g}: {t.n_boot} resamples give p >= {1 / (t.n_boot + 1):.4f}, "
                f"Holm over {m} tests needs p < {alpha / m:.5f}"
            )
            note = f"{note}; {short}" if note else short
        out.append(replace(t, p_adjusted=a, note=note))
    return out
