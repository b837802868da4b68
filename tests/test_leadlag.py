"""Lead-lag: exact lagged correlations, a planted lead is found, no effect is (almost) never significant."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from cyber_pipelines.config import load_repo_map
from cyber_pipelines.features.leadlag import (
    _block_permutations,
    _lagged_corr,
    hourly_activity_volatility,
    lead_lag,
    lead_lag_for_pair,
    leadlag_markdown,
    leadlag_plot_png,
)
from cyber_pipelines.github.activity import build_activity

HOURS = 90 * 24


def planted_series(
    seed: int, effect: float, lag: int = 6, n: int = HOURS, daily_amp: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Bursty commits with a daily cycle; volatility with clustering, the same daily cycle, and
    (``effect`` > 0) a jump of ``effect`` x normal volatility starting ``lag`` hours after each burst."""
    rng = np.random.default_rng(seed)
    hour = np.arange(n) % 24
    daily = 1.0 + daily_amp * np.cos(2 * np.pi * (hour - 14) / 24)
    bursts = np.flatnonzero(rng.random(n) < 3 / 168)
    activity = rng.poisson(2.0 * daily).astype(float)
    activity[bursts] += 3 + rng.poisson(10.0, bursts.size)
    kernel = np.zeros(n)
    for b in bursts:
        after = np.arange(b + lag, n)
        kernel[after] += np.exp(-(after - b - lag) / 6.0)
    log_vol = np.zeros(n)
    shocks = rng.normal(0, 0.1, n)
    for t in range(1, n):  # volatility clustering: AR(1) in log volatility
        log_vol[t] = 0.95 * log_vol[t - 1] + shocks[t]
    vol = np.exp(log_vol) * daily * (1 + effect * kernel)
    return activity, vol * np.exp(rng.normal(0, 0.3, n))  # a noisy per-hour volatility estimate


def test_lagged_corr_is_pearson_per_lag():
    rng = np.random.default_rng(0)
    a, v = rng.normal(size=(2, 300))
    r = _lagged_corr(np.stack([a, a[::-1]]), v, 20)
    for lag in (0, 1, 7, 20):
        assert r[0, lag] == pytest.approx(np.corrcoef(a[: 300 - lag], v[lag:])[0, 1], abs=1e-12)
        assert r[1, lag] == pytest.approx(np.corrcoef(a[::-1][: 300 - lag], v[lag:])[0, 1], abs=1e-12)


def test_block_permutations_keep_blocks_and_tail():
    idx = _block_permutations(100, 24, 50, np.random.default_rng(1))
    assert idx.shape == (50, 100)
    assert all(sorted(row) == list(range(100)) for row in idx.tolist())
    blocks = idx[:, :96].reshape(50, 4, 24)
    assert (np.diff(blocks, axis=2) == 1).all() and (blocks[:, :, 0] % 24 == 0).all()
    assert (idx[:, 96:] == np.arange(96, 100)).all()
    assert len({tuple(row) for row in idx.tolist()}) > 10  # really shuffled


def test_planted_six_hour_lead_is_found():
    activity, vol = planted_series(seed=0, effect=1.0, daily_amp=0.2)
    result = lead_lag(activity, vol, max_lag=48, n_boot=1000, seed=0)
    assert result.best_lag == 6
    assert result.best_corr > 0
    assert result.best_p < 0.01 and result.significant
    table = result.table()
    assert table.columns == ["lag", "corr", "p_adj"] and table.height == 49
    assert table["p_adj"].min() == result.best_p
    # a larger |corr| never gets a larger adjusted p-value
    order = np.argsort(-np.abs(result.corr))
    assert (np.diff(result.p_adj[order]) >= 0).all()
    # polars input works the same
    again = lead_lag(pl.Series(activity), pl.Series(vol), max_lag=48, n_boot=1000, seed=0)
    assert np.array_equal(again.p_adj, result.p_adj)


def test_planted_lead_power_over_seeds():
    found = 0
    for seed in range(10):
        activity, vol = planted_series(seed=seed, effect=1.0, daily_amp=0.2)
        result = lead_lag(activity, vol, n_boot=1000, seed=seed)
        found += result.best_lag == 6 and result.best_p < 0.01
    assert found >= 8


def test_no_effect_is_not_significant_in_19_of_20_seeds():
    """Family-wise alpha 0.01 (the result's own ``significant`` flag). Both series share a daily cycle
    and the volatility clusters: day-aligned block permutations must not mistake that for a lead."""
    hits = []
    for seed in range(20):
        activity, vol = planted_series(seed=100 + seed, effect=0.0)
        hits.append(lead_lag(activity, vol, n_boot=500, seed=seed).significant)
    assert sum(hits) <= 1, hits


def test_naive_shuffle_would_fail_where_blocks_do_not():
    """The shared daily cycle makes lag-0 correlations real but not a lead; with 1-hour blocks (plain
    permutation, no autocorrelation kept) the test calls it significant, with day blocks it does not."""
    activity, vol = planted_series(seed=7, effect=0.0)
    assert lead_lag(activity, vol, n_boot=500, block_len=1, seed=7).significant
    assert not lead_lag(activity, vol, n_boot=500, block_len=24, seed=7).significant


def test_markdown_and_plot():
    activity, vol = planted_series(seed=0, effect=1.0, daily_amp=0.2)
    result = lead_lag(activity, vol, n_boot=200, seed=0)
    assert result.significant
    md = leadlag_markdown(result)
    assert f"Best lag **{result.best_lag} h**" in md
    assert md.count("\n| ") == 49 + 1  # header + one row per lag
    assert f"| **{result.best_lag}** |" in md  # significant lags in bold
    png = leadlag_plot_png(result)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000


def test_bad_input():
    a, v = planted_series(seed=5, effect=0.0, n=400)
    with pytest.raises(ValueError, match="differ in length"):
        lead_lag(a, v[:-1])
    with pytest.raises(ValueError, match="1 null/NaN"):
        lead_lag(np.where(np.arange(400) == 3, np.nan, a), v)
    with pytest.raises(ValueError, match="too short"):
        lead_lag(a[:100], v[:100])
    with pytest.raises(ValueError, match="constant"):
        lead_lag(np.ones(400), v)
    with pytest.raises(ValueError, match="alpha"):
        lead_lag(a, v, alpha=1.5)


def test_hourly_series_fill_gaps_and_missing_activity():
    start = datetime(2024, 1, 1, tzinfo=UTC)
    ts = [start + timedelta(hours=h) for h in (0, 1, 3)]  # hour 2 has no candle
    candles = pl.DataFrame({"timestamp": ts, "high": [2.0, 4.0, 2.0], "low": [1.0, 1.0, 1.0]})
    activity = pl.DataFrame(
        {
            "timestamp": [start, start + timedelta(hours=1), start + timedelta(hours=1)],
            "repo": ["a/x", "A/X", "other/y"],
            "commits": [2, 3, 100],
        }
    )
    out = hourly_activity_volatility(candles, activity, ["a/x"])
    assert out["timestamp"].to_list() == [start + timedelta(hours=h) for h in range(4)]
    assert out["activity"].to_list() == [2.0, 3.0, 0.0, 0.0]  # case-insensitive repo, other repo ignored
    vol = out["volatility"].to_list()
    assert vol[0] == pytest.approx(np.log(2) / np.sqrt(4 * np.log(2)))
    assert vol[2] == pytest.approx((vol[0] + vol[1] + vol[3]) / 3)  # the gap gets the mean
    with pytest.raises(ValueError, match="missing columns"):
        hourly_activity_volatility(candles.drop("high"), activity, ["a/x"])
    daily = candles.with_columns(timestamp=pl.Series([start + timedelta(days=d) for d in range(3)]))
    with pytest.raises(ValueError, match="hourly candles"):
        hourly_activity_volatility(daily, activity, ["a/x"])


# --- end to end on the synthetic market and synthetic commits -------------------------------------
synthetic_market = pytest.importorskip("cyber_pipelines.synthetic.market")
synthetic_activity = pytest.importorskip("cyber_pipelines.synthetic.activity")

ORIGIN = date(2024, 1, 1)
DAYS = 90
ETH_REPOS = {repo: assets for repo, assets in load_repo_map().items() if "ETH" in assets}  # from the config


def synthetic_hourly_commits(seed: int) -> pl.DataFrame:
    """Commits of the ETH repos per repo and hour (timestamp, repo, commits), 90 days."""
    rows = []
    for repo, assets in ETH_REPOS.items():
        for d in range(DAYS):
            day = ORIGIN + timedelta(days=d)
            events = synthetic_activity.simulate_commits(repo, assets, day, seed=seed, origin=ORIGIN, lag_hours=6)
            rows += [(ts, repo) for ts, _ in events]
    events = pl.DataFrame(rows, schema={"timestamp": pl.Datetime("us", "UTC"), "repo": pl.String}, orient="row")
    return events.group_by(pl.col("timestamp").dt.truncate("1h"), "repo").agg(commits=pl.len().cast(pl.Int64))


def synthetic_candles(seed: int, effect: float) -> pl.DataFrame:
    end = ORIGIN + timedelta(days=DAYS - 1)
    return synthetic_market.simulate_ohlcv(
        "ETH/USD", ORIGIN, end, seed=seed, effect_size=effect, lag_hours=6, origin=ORIGIN
    )


def test_end_to_end_synthetic_effect_found_at_six_hours():
    seed = 11
    # the real activity table (ACTIVITY_SCHEMA, 24 rows per repo-day) for one repo, hourly counts for the rest
    activity = pl.concat(
        [
            build_activity(
                "ethereum/go-ethereum",
                ORIGIN + timedelta(days=d),
                synthetic_activity.simulate_commits(
                    "ethereum/go-ethereum",
                    ["ETH"],
                    ORIGIN + timedelta(days=d),
                    seed=seed,
                    origin=ORIGIN,
                    lag_hours=6,
                ),
                10,
                100,
            ).select("timestamp", "repo", "commits")
            for d in range(DAYS)
        ]
        + [synthetic_hourly_commits(seed).filter(pl.col("repo") != "ethereum/go-ethereum")]
    )
    result = lead_lag_for_pair(synthetic_candles(seed, 1.0), activity, repos=list(ETH_REPOS), seed=seed)
    assert result.best_lag == 6
    assert result.best_p < 0.01 and result.significant


def test_end_to_end_synthetic_no_effect_in_19_of_20_seeds():
    hits = []
    for seed in range(20):
        result = lead_lag_for_pair(
            synthetic_candles(seed, 0.0), synthetic_hourly_commits(seed), repos=list(ETH_REPOS), seed=seed
        )
        hits.append(result.significant)
    assert sum(hits) <= 1, hits
