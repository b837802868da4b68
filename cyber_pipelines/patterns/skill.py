"""Forecast skill out of sample: information coefficient, hit rate, and whether one forecast beats another.

- ``ic``: Spearman rank correlation of forecast and realized forward return.
- ``hit_rate``: share of bars with a non-zero forecast whose sign the realized return matched.
- ``ic_gain_test``: H0 "forecast a has no higher IC than forecast b". With ranks standardized over
  the sample, ``IC = mean(z_forecast * z_realized)`` exactly, so the IC difference is the mean of
  ``d_t = (z_a - z_b) * z_realized``; its p-value and interval come from the one studentized circular
  block bootstrap of that mean (``significance.mean_return_test``), blocks of at least a day because
  overlapping forward returns are autocorrelated.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
from scipy.stats import rankdata

from cyber_pipelines.backtest.significance import N_BOOT, ClaimTest, mean_return_test
from cyber_pipelines.patterns.analog import exact_neighbours_before, weighted_outcome

MIN_BARS = 30


def _ranks(x: np.ndarray) -> np.ndarray:
    r = rankdata(x)
    sd = r.std()
    return (r - r.mean()) / sd if sd > 0 else np.zeros_like(r)


def _paired(forecast: np.ndarray, realized: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ok = np.isfinite(forecast) & np.isfinite(realized)
    return np.asarray(forecast)[ok], np.asarray(realized)[ok]


def skill(forecast: np.ndarray, realized: np.ndarray) -> dict[str, float]:
    """IC, hit rate and bars (finite pairs only); NaN figures with fewer than ``MIN_BARS`` bars."""
    f, y = _paired(forecast, realized)
    if f.size < MIN_BARS:
        return {"ic": math.nan, "hit_rate": math.nan, "n": int(f.size)}
    called = f != 0
    hits = np.sign(f[called]) == np.sign(y[called])
    return {
        "ic": float(np.mean(_ranks(f) * _ranks(y))),
        "hit_rate": float(hits.mean()) if called.any() else math.nan,
        "n": int(f.size),
    }


def ic_gain_test(
    forecast: np.ndarray,
    reference: np.ndarray,
    realized: np.ndarray,
    *,
    reference_name: str = "no_retrieval",
    min_block: int = 24,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> ClaimTest:
    """One-sided test that ``forecast`` has a higher IC than ``reference`` on the same bars."""
    ok = np.isfinite(forecast) & np.isfinite(reference) & np.isfinite(realized)
    if ok.sum() < max(MIN_BARS, 2 * min_block):
        raise ValueError(f"ic_gain_test needs at least {max(MIN_BARS, 2 * min_block)} bars, got {int(ok.sum())}")
    zy = _ranks(realized[ok])
    d = (_ranks(forecast[ok]) - _ranks(reference[ok])) * zy
    test = mean_return_test(d, 1.0, reference=reference_name, n_boot=n_boot, min_block=min_block, seed=seed)
    return replace(
        test,
        statistic="ic_difference",
        method="studentized circular block bootstrap of the mean of (z_a - z_b) * z_realized (rank IC)",
    )


def compare_representations(
    representations: dict[str, np.ndarray],
    memory_horizon_end: np.ndarray,
    known_at: np.ndarray,
    outcome: np.ndarray,
    queries: np.ndarray,
    *,
    k: int,
    reference: str = "window",
) -> dict[str, dict[str, float]]:
    """Per representation (unit-length rows, the same windows in each), on the ``queries`` rows, by exact
    search among the windows ended by each query's ``known_at``: the analog forecast's IC and hit rate
    against ``outcome``, and ``overlap_with_window``, the share of the ``reference`` representation's
    k nearest windows that it finds too (how faithfully it keeps the windows' geometry)."""
    found: dict[str, np.ndarray] = {}
    out: dict[str, dict[str, float]] = {}
    for name, rows in representations.items():
        index, score = exact_neighbours_before(rows, memory_horizon_end, rows[queries], known_at[queries], k)
        outcomes = np.where(index >= 0, outcome[np.maximum(index, 0)], np.nan)
        forecast, _ = weighted_outcome(score, outcomes)
        found[name] = index
        out[name] = skill(forecast, outcome[queries])
    truth = found[reference]
    for name, index in found.items():
        shared = [
            len(set(a[a >= 0]) & set(b[b >= 0])) / max(1, int((b >= 0).sum()))
            for a, b in zip(index, truth, strict=True)
        ]
        out[name]["overlap_with_window"] = float(np.mean(shared)) if shared else math.nan
    return out
