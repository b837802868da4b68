"""The promotion rule: an adapter serves its pair only when it beats the base on held-out data.

Diebold-Mariano (1995) on the per-sample loss differences ``d = loss_base - loss_adapter`` of samples the
adapter never trained on: the mean of ``d`` over its long-run (Newey-West, Bartlett kernel) standard error,
with Harvey, Leybourne and Newbold's (1997) small-sample correction and Student-t reference, one-sided
(the adapter is better). Overlapping horizons make ``d`` autocorrelated: the lag is at least ``horizon - 1``
and the usual ``n ** (1/3)`` bandwidth. The interval is of the mean improvement, from the same standard
error, so the p-value and the interval agree.

The forecaster has two targets (return: squared error; variance: QLIKE), so there are two tests, one
family (Holm). The adapter serves a target when its improvement there is at least ``margin`` (in that
loss's standardized units) with a Holm-adjusted one-sided p at most ``alpha``; the base keeps the other
target (the server mixes the two outputs). One combined loss would let the variance's noise (squared
returns are fat-tailed) hide a real gain in the returns, and an adapter trained on one pair's short
history can learn its return dynamics while over-fitting its variance level.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

from cyber_pipelines.multiple_testing import holm

DEFAULT_MARGIN = 0.01  # 1% of a standardized return's variance (an R^2 of 1%), of the variance's QLIKE likewise
DEFAULT_ALPHA = 0.05


@dataclass(frozen=True)
class DieboldMariano:
    n: int
    improvement: float  # mean of loss_base - loss_adapter (positive: the adapter is better)
    statistic: float  # HLN-corrected DM statistic
    p_value: float  # one-sided: H1 the adapter's expected loss is lower
    ci_low: float  # two-sided (1 - 2 alpha) interval of the improvement, the same standard error
    ci_high: float
    lag: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def long_run_variance(d: np.ndarray, lag: int) -> float:
    """Newey-West (Bartlett) long-run variance of ``d``."""
    e = d - d.mean()
    n = len(e)
    total = float(e @ e) / n
    for k in range(1, min(lag, n - 1) + 1):
        total += 2 * (1 - k / (lag + 1)) * float(e[k:] @ e[:-k]) / n
    return total


def diebold_mariano(
    loss_base: np.ndarray, loss_adapter: np.ndarray, horizon: int = 1, alpha: float = DEFAULT_ALPHA
) -> DieboldMariano:
    d = np.asarray(loss_base, float) - np.asarray(loss_adapter, float)
    if d.shape != np.shape(loss_adapter) or d.ndim != 1:
        raise ValueError(
            f"loss series must be 1-d and of one length, got {np.shape(loss_base)}, {np.shape(loss_adapter)}"
        )
    d = d[np.isfinite(d)]
    n = len(d)
    if n < 30:
        raise ValueError(f"the Diebold-Mariano test needs at least 30 held-out samples, got {n}")
    lag = max(horizon - 1, math.floor(n ** (1 / 3)))
    variance = long_run_variance(d, lag)
    mean = float(d.mean())
    if variance <= 0:
        se = 0.0
        statistic = math.inf if mean > 0 else (-math.inf if mean < 0 else 0.0)
    else:
        se = math.sqrt(variance / n)
        h = horizon
        hln = math.sqrt((n + 1 - 2 * h + h * (h - 1) / n) / n)
        statistic = mean / se * hln
        se = se / hln  # the interval uses the corrected scale, so it matches the p-value
    p = float(stats.t.sf(statistic, df=n - 1))
    q = float(stats.t.ppf(1 - alpha, df=n - 1))
    return DieboldMariano(n, mean, float(statistic), p, mean - q * se, mean + q * se, lag)


@dataclass(frozen=True)
class Decision:
    serves: tuple[str, ...]  # the targets the adapter serves (empty: the pair keeps the base for everything)
    reason: str
    tests: dict[str, DieboldMariano]
    p_adjusted: dict[str, float]
    margin: float
    alpha: float

    @property
    def promoted(self) -> bool:
        return bool(self.serves)

    def as_dict(self) -> dict[str, Any]:
        return {
            "promoted": self.promoted, "serves": list(self.serves), "reason": self.reason, "margin": self.margin,
            "alpha": self.alpha,
            "tests": {name: {**t.as_dict(), "p_adjusted": self.p_adjusted[name]} for name, t in self.tests.items()},
        }  # fmt: skip


def decide(tests: dict[str, DieboldMariano], margin: float = DEFAULT_MARGIN, alpha: float = DEFAULT_ALPHA) -> Decision:
    """The adapter serves each target on which it improves by at least ``margin`` with a Holm-adjusted one-sided
    p at most ``alpha``; the base keeps every other target."""
    if not tests:
        raise ValueError("no test to decide on")
    names = list(tests)
    adjusted = dict(zip(names, (float(p) for p in holm([tests[n].p_value for n in names])), strict=True))
    serves = tuple(n for n in names if tests[n].improvement >= margin and adjusted[n] <= alpha)
    figures = "; ".join(f"{n} {tests[n].improvement:+.4f} (Holm p {adjusted[n]:.3f})" for n in names)
    if not serves:
        reason = f"no target improves by >= {margin} at Holm p <= {alpha} ({figures}): the pair keeps the base"
    else:
        kept = [n for n in names if n not in serves]
        reason = f"the adapter serves {', '.join(serves)}" + (f", the base {', '.join(kept)}" if kept else "")
        reason += f" ({figures})"
    return Decision(serves, reason, tests, adjusted, margin, alpha)
