"""One statistic per claim: size under realistic nulls, power, p-value/interval duality, Holm."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cyber_pipelines.backtest.significance import (
    BOTH_NEGATIVE,
    adjust,
    block_length,
    mean_return_test,
    sharpe_difference_test,
)
from cyber_pipelines.multiple_testing import holm

HOURS_PER_YEAR = 8766.0


def ar1(rng: np.random.Generator, n: int, phi: float, scale: float) -> np.ndarray:
    from scipy.signal import lfilter

    return np.asarray(lfilter([1.0], [1.0, -phi], rng.standard_t(5, n) * scale))


def null_returns(seed: int, n: int = 1500) -> tuple[np.ndarray, np.ndarray]:
    """Two return series with the same Sharpe ratio (0) that real data would give: a shared factor,
    autocorrelated noise, stochastic volatility with a weekly cycle, one of them out of the market
    part of the time."""
    rng = np.random.default_rng(seed)
    week = 1.0 - 0.3 * ((np.arange(n) // 24) % 7 >= 5)
    vol = np.exp(ar1(rng, n, 0.97, 0.1)) * week
    factor = ar1(rng, n, 0.1, 0.01) * vol
    in_market = ar1(rng, n, 0.95, 1.0) > 0
    a = (factor + ar1(rng, n, 0.3, 0.004) * vol) * in_market
    b = factor + ar1(rng, n, 0.3, 0.004) * vol
    return a - a.mean(), b - b.mean()


@pytest.mark.slow
def test_size_at_most_alpha_across_seeds_for_both_statistics() -> None:
    """60 seeds of realistic nulls: each test rejects at alpha 0.05 in at most 10% (5% plus noise
    of 60 Bernoulli draws: P(more than 6 of 60) < 0.09 when the true size is 5%)."""
    mean_rej = sharpe_rej = 0
    for seed in range(60):
        a, b = null_returns(seed)
        mean_rej += mean_return_test(a, HOURS_PER_YEAR, n_boot=499, seed=seed, min_block=24).p_value < 0.05
        res = sharpe_difference_test(a, b, HOURS_PER_YEAR, reference="b", n_boot=499, seed=seed, min_block=24)
        sharpe_rej += res.p_value < 0.05
    assert mean_rej <= 6, mean_rej
    assert sharpe_rej <= 6, sharpe_rej


def test_power_and_the_interval_agrees_with_the_p_value() -> None:
    rng = np.random.default_rng(3)
    n = 4000
    factor = rng.normal(size=n) * 0.01
    better = factor + 0.0008 + rng.normal(size=n) * 0.004
    base = factor + rng.normal(size=n) * 0.004
    res = sharpe_difference_test(better, base, HOURS_PER_YEAR, reference="base", seed=1)
    assert res.p_value < 0.01 and res.ci_low > 0 and res.estimate > 0
    assert res.strategy_value > res.reference_value
    worse = sharpe_difference_test(base, better, HOURS_PER_YEAR, reference="better", seed=1)
    assert worse.p_value > 0.9 and worse.ci_high < 0
    # duality across many draws: p < alpha exactly when the 1 - 2 alpha interval is above 0
    agree = 0
    for seed in range(40):
        a, b = null_returns(seed, 800)
        shifted = a + 0.0004 * (seed % 3)
        for t in (
            mean_return_test(shifted, HOURS_PER_YEAR, seed=seed, n_boot=499),
            sharpe_difference_test(shifted, b, HOURS_PER_YEAR, reference="b", seed=seed, n_boot=499),
        ):
            assert t.ci_level == pytest.approx(0.9)
            agree += (t.p_value < 0.05) == (t.ci_low > 0)
    assert agree >= 78  # of 80: only a resampling-grain tie may differ


def test_mean_test_is_annualized_and_the_interval_contains_the_estimate() -> None:
    r = np.random.default_rng(0).normal(0.0002, 0.01, 3000)
    res = mean_return_test(r, HOURS_PER_YEAR, seed=0)
    assert res.reference == "cash" and res.statistic == "mean_return"
    assert res.estimate == pytest.approx(r.mean() * HOURS_PER_YEAR)
    assert res.ci_low < res.estimate < res.ci_high


def test_both_negative_sharpes_are_flagged_not_ranked_as_a_gain() -> None:
    """The audit's case: both lose the same amount, one at higher volatility: its Sharpe is 'higher'."""
    rng = np.random.default_rng(5)
    noise = rng.normal(size=3000)
    calm = -0.0005 + 0.005 * noise
    wild = -0.0005 + 0.02 * rng.normal(size=3000)
    res = sharpe_difference_test(wild, calm, HOURS_PER_YEAR, reference="calm", seed=0)
    assert res.estimate > 0 and res.strategy_value < 0 and res.reference_value < 0
    assert res.note == BOTH_NEGATIVE


def test_a_series_without_variation_is_tested_on_its_mean_difference() -> None:
    flat = np.zeros(500)
    market = np.random.default_rng(1).normal(-0.001, 0.01, 500)
    res = sharpe_difference_test(flat, market, HOURS_PER_YEAR, reference="buy_and_hold", seed=0)
    assert res.statistic == "mean_return_diff" and "never moves" in res.note
    assert res.estimate > 0  # cash beats a losing market
    same = mean_return_test(np.zeros(100), HOURS_PER_YEAR)
    assert same.p_value == 1.0 and math.isnan(same.ci_low)


def test_block_length_follows_the_dependence_and_the_minimum() -> None:
    rng = np.random.default_rng(0)
    iid = block_length(rng.normal(size=4000))
    persistent = block_length(ar1(rng, 4000, 0.9, 1.0))
    assert iid <= 3 < persistent
    assert block_length(rng.normal(size=4000), minimum=24) == 24


def test_holm_matches_statsmodels_and_adjust_keeps_the_raw_p() -> None:
    from statsmodels.stats.multitest import multipletests

    p = [0.01, 0.04, 0.03, 0.2, 0.001]
    assert holm(p) == pytest.approx(list(multipletests(p, method="holm")[1]))
    assert holm([0.01, 0.02]) == pytest.approx([0.02, 0.02])
    assert list(holm([0.01, float("nan"), 0.02])[[0, 2]]) == pytest.approx([0.02, 0.02])  # NaN: no test
    r = np.random.default_rng(2).normal(0.001, 0.01, 400)
    tests = [mean_return_test(r, HOURS_PER_YEAR, seed=s, n_boot=199) for s in range(3)]
    adjusted = adjust(tests)
    assert [t.p_value for t in adjusted] == [t.p_value for t in tests]
    assert all(a.p_adjusted >= a.p_value for a in adjusted)


def test_a_test_with_too_few_resamples_for_its_family_says_it_cannot_pass() -> None:
    """Holm over 60 tests needs p < 0.05 / 60; 999 resamples cannot give less than 0.001."""
    r = np.random.default_rng(4).normal(0.002, 0.01, 2000)  # a strong effect: raw p at its floor
    few = [mean_return_test(r, HOURS_PER_YEAR, seed=s, n_boot=999) for s in range(60)]
    assert all(t.p_value == pytest.approx(1 / 1000) for t in few)
    flagged = adjust(few)
    assert all("cannot reach adjusted p < 0.05" in t.note for t in flagged)
    assert not any(t.significant() for t in flagged)
    enough = adjust([mean_return_test(r, HOURS_PER_YEAR, seed=s, n_boot=4999) for s in range(60)])
    assert all(t.note == "" and t.significant() for t in enough)


def test_bad_input_is_a_clear_error() -> None:
    r = np.random.default_rng(0).normal(size=50)
    with pytest.raises(ValueError, match="paired bar by bar"):
        sharpe_difference_test(r, np.zeros(49), HOURS_PER_YEAR, reference="x")
    with pytest.raises(ValueError, match="NaN"):
        mean_return_test(np.full(50, np.nan), HOURS_PER_YEAR)
    with pytest.raises(ValueError, match="block_len"):
        mean_return_test(r, HOURS_PER_YEAR, block_len=0)
    with pytest.raises(ValueError, match="at least 30 bars"):
        mean_return_test(r[:5], HOURS_PER_YEAR)
