"""Lead-lag: exact lagged correlations; under a shared weekly cycle and no lead the test keeps its size,
a planted lead (another lag, either sign) is found; Holm across pairs. All series are built here."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
import numpy as np
import polars as pl
import pytest
from scipy.signal import lfilter
from scipy.stats import binomtest

from assets.features import lead_lag_summary
from cyber_pipelines.features.leadlag import (
    WEEK_HOURS,
    SeriesTooShort,
    _block_permutations,
    _lagged_corr,
    holm,
    holm_across_pairs,
    hourly_activity_volatility,
    lead_lag,
    lead_lag_for_pair,
    leadlag_markdown,
    leadlag_plot_png,
    pairs_markdown,
    remove_seasonal_means,
)
from cyber_pipelines.resources import StorageResource
from cyber_pipelines.storage import TableStore

HOURS = 90 * 24  # 12 whole weeks and a 144-hour tail


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
    log_vol = lfilter([1.0], [1.0, -0.95], rng.normal(0, 0.1, n))  # volatility clustering: AR(1) in log vol
    vol = np.exp(log_vol) * daily * (1 + effect * kernel)
    return activity, vol * np.exp(rng.normal(0, 0.3, n))  # a noisy per-hour volatility estimate


def weekly_series(
    seed: int, effect: float = 0.0, lag: int = 9, sign: int = 1, n: int = HOURS
) -> tuple[np.ndarray, np.ndarray]:
    """Hourly commits and volatility that share a calendar, starting at a random hour of the week.

    Weekend commits x0.4 and weekend volatility x0.7, an intraday profile in both; bursty commits,
    AR(1) log volatility, a noisy volatility estimate. With ``effect`` > 0 each burst moves log
    volatility by ``sign * effect`` from ``lag`` hours after it, decaying with a 6-hour time constant."""
    rng = np.random.default_rng(seed)
    how = (rng.integers(WEEK_HOURS) + np.arange(n)) % WEEK_HOURS  # hour of week, Monday 00:00 = 0
    hour, weekend = how % 24, how >= 5 * 24
    commit_cycle = np.where(weekend, 0.4, 1.0) * (1 + 0.6 * np.cos(2 * np.pi * (hour - 14) / 24))
    vol_cycle = np.where(weekend, 0.7, 1.0) * (1 + 0.3 * np.cos(2 * np.pi * (hour - 15) / 24))
    bursts = rng.random(n) < 3 / WEEK_HOURS * commit_cycle
    activity = rng.poisson(2.0 * commit_cycle) + bursts * (3 + rng.poisson(10.0, n))
    response = np.concatenate([np.zeros(lag), np.convolve(bursts, np.exp(-np.arange(48) / 6.0))[: n - lag]])
    log_vol = lfilter([1.0], [1.0, -0.95], rng.normal(0, 0.1, n))
    vol = vol_cycle * np.exp(log_vol + sign * effect * response + rng.normal(0, 0.3, n))
    return activity.astype(float), vol


def rates(seeds: range, effect: float = 0.0, sign: int = 1, **test: int) -> tuple[float, float]:
    """Share of seeds significant at alpha 0.05, and share that also found the lead (lag 9..12, its sign)."""
    significant = found = 0
    for seed in seeds:
        activity, vol = weekly_series(seed, effect=effect, sign=sign)
        result = lead_lag(activity, vol, n_boot=199, alpha=0.05, seed=seed, **test)
        significant += result.significant
        found += result.significant and 9 <= result.best_lag <= 12 and np.sign(result.best_corr) == sign
    return significant / len(seeds), found / len(seeds)


def test_lagged_corr_is_pearson_per_lag():
    rng = np.random.default_rng(0)
    a, v = rng.normal(size=(2, 300))
    r = _lagged_corr(np.stack([a, a[::-1]]), v, 20)
    for lag in (0, 1, 7, 20):
        assert r[0, lag] == pytest.approx(np.corrcoef(a[: 300 - lag], v[lag:])[0, 1], abs=1e-12)
        assert r[1, lag] == pytest.approx(np.corrcoef(a[::-1][: 300 - lag], v[lag:])[0, 1], abs=1e-12)


@pytest.mark.parametrize(("n", "block"), [(100, 24), (HOURS, WEEK_HOURS)])
def test_block_permutations_keep_blocks_hour_of_block_and_tail(n: int, block: int):
    idx = _block_permutations(n, block, 50, np.random.default_rng(1))
    k = n // block
    assert idx.shape == (50, n)
    assert all(sorted(row) == list(range(n)) for row in idx.tolist())
    blocks = idx[:, : k * block].reshape(50, k, block)
    assert (np.diff(blocks, axis=2) == 1).all() and (blocks[:, :, 0] % block == 0).all()
    assert (idx % block == np.arange(n) % block).all()  # every value keeps its hour of the week
    assert (idx[:, k * block :] == np.arange(k * block, n)).all()
    assert len({tuple(row) for row in idx.tolist()}) > 10  # really shuffled


def test_remove_seasonal_means_is_a_group_mean_by_hour_of_week():
    x = np.random.default_rng(2).normal(size=HOURS) + np.arange(HOURS) % WEEK_HOURS
    slot = pl.Series(np.arange(HOURS) % WEEK_HOURS)
    expected = pl.DataFrame({"x": x, "slot": slot}).select(pl.col("x") - pl.col("x").mean().over("slot"))["x"]
    assert np.allclose(remove_seasonal_means(x, WEEK_HOURS), expected.to_numpy(), atol=1e-12)


def test_weekly_cycle_without_a_lead_keeps_the_size():
    """The audit's finding: a shared weekly cycle and no lead. The old scheme (24-hour blocks on the raw
    series) calls most seeds significant; week blocks on hour-of-week-demeaned series keep alpha 0.05.

    The test is exact (whole weeks are exchangeable under this null), so its false-positive rate is 5%
    and a count over N seeds scatters around 5% N: 200 seeds give 11 (5.5%), 1500 seeds 5.3%. Asserted:
    the count is not above 5% beyond sampling error (one-sided binomial p > 0.01)."""
    n = 200
    size, _ = rates(range(n))
    assert binomtest(round(size * n), n, 0.05, alternative="greater").pvalue > 0.01, size
    assert size <= 0.06, size  # 11 of these 200 seeds; the bound only guards against drift
    old, _ = rates(range(20), block_len=24, season=0)
    assert old >= 0.5, old


@pytest.mark.parametrize(("sign", "effect"), [(1, 0.8), (-1, 1.0)])
def test_planted_nine_hour_lead_is_found_through_the_weekly_cycle(sign: int, effect: float):
    significant, found = rates(range(20), effect=effect, sign=sign)
    assert found >= 0.8, (significant, found)


def test_planted_six_hour_lead_is_found():
    activity, vol = planted_series(seed=0, effect=1.0, daily_amp=0.2)
    result = lead_lag(activity, vol, max_lag=48, n_boot=1000, seed=0)
    assert result.best_lag == 6
    assert result.best_corr > 0
    assert result.best_p < 0.01 and result.significant
    assert (result.block_len, result.season) == (WEEK_HOURS, WEEK_HOURS)  # the defaults
    table = result.table()
    assert table.columns == ["lag", "corr", "p_adj"] and table.height == 49
    assert table["p_adj"].min() == result.best_p
    # a larger |corr| never gets a larger adjusted p-value
    order = np.argsort(-np.abs(result.corr))
    assert (np.diff(result.p_adj[order]) >= 0).all()
    # polars input works the same
    again = lead_lag(pl.Series(activity), pl.Series(vol), max_lag=48, n_boot=1000, seed=0)
    assert np.array_equal(again.p_adj, result.p_adj)


def test_lead_lag_for_pair_from_frames():
    """The frames the asset reads: candles whose Parkinson range carries the planted volatility."""
    activity, vol = weekly_series(seed=3, effect=0.8)
    start = datetime(2024, 1, 3, 5, tzinfo=UTC)  # a Wednesday, 05:00
    ts = [start + timedelta(hours=h) for h in range(HOURS)]
    candles = pl.DataFrame({"timestamp": ts, "high": 100 * np.exp(vol * np.sqrt(4 * np.log(2))), "low": 100.0})
    commits = pl.DataFrame({"timestamp": ts, "repo": "a/x", "commits": activity.astype(np.int64)})
    result = lead_lag_for_pair(candles, commits.filter(pl.col("commits") > 0), repos=["a/x"], n_boot=199)
    direct = lead_lag(activity, vol, n_boot=199)
    assert np.allclose(result.corr, direct.corr, atol=1e-9) and result.best_lag == direct.best_lag
    assert result.significant and 9 <= result.best_lag <= 12


def test_markdown_and_plot():
    activity, vol = planted_series(seed=0, effect=1.0, daily_amp=0.2)
    result = lead_lag(activity, vol, n_boot=200, seed=0)
    assert result.significant
    md = leadlag_markdown(result)
    assert f"Best lag **{result.best_lag} h**" in md and "168-hour blocks" in md and "hour-of-week" in md
    assert md.count("\n| ") == 49 + 1  # header + one row per lag
    assert f"| **{result.best_lag}** |" in md  # significant lags in bold
    png = leadlag_plot_png(result)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000


def test_bad_input():
    a, v = planted_series(seed=5, effect=0.0, n=8 * WEEK_HOURS)
    with pytest.raises(ValueError, match="differ in length"):
        lead_lag(a, v[:-1])
    with pytest.raises(ValueError, match="1 null/NaN"):
        lead_lag(np.where(np.arange(a.size) == 3, np.nan, a), v)
    with pytest.raises(SeriesTooShort, match="7 blocks of 168"):
        lead_lag(a[:-1], v[:-1])
    assert lead_lag(a[:400], v[:400], block_len=24, season=0, n_boot=10).n_obs == 400  # days, if asked for
    with pytest.raises(ValueError, match="constant"):
        lead_lag(np.ones(a.size), v)
    with pytest.raises(ValueError, match="constant"):  # nothing but the weekly cycle
        lead_lag(np.tile(np.arange(WEEK_HOURS, dtype=float), 8), v)
    with pytest.raises(ValueError, match="alpha"):
        lead_lag(a, v, alpha=1.5)


def test_holm_equals_statsmodels_and_a_hand_checked_case():
    # m = 4: sorted 0.01, 0.02, 0.03, 0.5 -> 4 x 0.01, max(3 x 0.02, 0.04), max(2 x 0.03, 0.06), 0.5
    assert np.allclose(holm([0.03, 0.01, 0.5, 0.02]), [0.06, 0.04, 0.5, 0.06])
    assert holm([]).size == 0 and holm([0.3]).tolist() == [0.3]
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        holm([0.1, 1.2])
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    rng = np.random.default_rng(4)
    for m in (2, 5, 17):
        p = np.concatenate([rng.uniform(size=m), rng.uniform(0, 0.01, size=2)])
        p[0] = p[1]  # a tie
        assert np.allclose(holm(p), multitest.multipletests(p, method="holm")[1], atol=1e-15)


def test_holm_across_pairs_from_the_per_lag_tables():
    def table(best_lag: int, corr: float, p: float) -> pl.DataFrame:
        lags = np.arange(49)
        return pl.DataFrame(
            {
                "lag": lags,
                "corr": np.where(lags == best_lag, corr, 0.01),
                "p_adj": np.where(lags == best_lag, p, 0.9),
            }
        )

    tables = {"ETH-USD": table(9, 0.21, 0.001), "SOL-USD": table(3, -0.12, 0.02), "ADA-USD": table(30, 0.05, 0.4)}
    summary = holm_across_pairs(tables, alpha=0.05)
    assert summary.columns == ["pair", "best_lag", "best_corr", "p_raw", "p_holm", "verdict"]
    assert summary.rows() == [
        ("ETH-USD", 9, 0.21, 0.001, 0.003, "significant"),
        ("SOL-USD", 3, -0.12, 0.02, 0.04, "significant"),
        ("ADA-USD", 30, 0.05, 0.4, 0.4, "not significant"),
    ]
    strict = holm_across_pairs(tables, alpha=0.03)["verdict"].to_list()
    assert strict == ["significant", "raw only", "not significant"]  # 0.02 <= 0.03 < 0.04
    md = pairs_markdown(summary, 0.05, untested={"BTC-USD": "not applicable: no repo informs BTC"})
    assert "| pair | best lag (h) | corr | raw p | Holm p | verdict |" in md
    assert "| SOL-USD | 3 | -0.1200 | 0.0200 | 0.0400 | significant |" in md
    assert md.rstrip().endswith("| BTC-USD | | | | | not applicable: no repo informs BTC |")
    # a LeadLagResult's own table works the same
    activity, vol = weekly_series(seed=1, effect=0.8)
    result = lead_lag(activity, vol, n_boot=99)
    (row,) = holm_across_pairs({"X-USD": result.table()}).rows(named=True)
    assert (row["best_lag"], row["best_corr"], row["p_raw"]) == (result.best_lag, result.best_corr, result.best_p)
    assert row["p_holm"] == row["p_raw"]  # a family of one
    with pytest.raises(ValueError, match="not a lead-lag table"):
        holm_across_pairs({"X-USD": pl.DataFrame({"lag": [0]})})


def test_lead_lag_summary_asset_adjusts_the_stored_reports(tmp_path):
    """The unpartitioned asset reads each pair's latest report and stored table; only one source counts."""
    store = TableStore(tmp_path / "data")
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("pairs", ["ADA-USD", "BTC-USD", "ETH-USD", "SOL-USD", "XRP-USD"])
    reports = {
        "ETH-USD": ("synthetic", weekly_series(seed=1, effect=0.8)),
        "SOL-USD": ("synthetic", weekly_series(seed=2)),
        "XRP-USD": ("kraken", weekly_series(seed=3, effect=0.8)),  # other source: not in the family
    }
    for key, (source, (activity, vol)) in reports.items():
        result = lead_lag(activity, vol, n_boot=199, seed=0)
        store.write(result.table(), source, "leadlag", key)
        meta = {"source": source, "best_lag_hours": result.best_lag, "status": "tested"}
        instance.report_runless_asset_event(dg.AssetMaterialization("lead_lag_report", partition=key, metadata=meta))
    store.write(result.table(), "synthetic", "leadlag", "ADA-USD")  # stale: its latest report says why not
    meta = {"source": "synthetic", "status": "not applicable: series too short"}
    instance.report_runless_asset_event(dg.AssetMaterialization("lead_lag_report", partition="ADA-USD", metadata=meta))

    run = dg.materialize(
        [lead_lag_summary],
        instance=instance,
        resources={"storage": StorageResource(root=str(tmp_path / "data"))},
        run_config={"ops": {"lead_lag_summary": {"config": {"source": "synthetic", "alpha": 0.05}}}},
    )
    assert run.success
    (mat,) = run.asset_materializations_for_node("lead_lag_summary")
    meta = {k: v.value for k, v in mat.metadata.items()}
    assert meta["n_pairs_tested"] == 2 and meta["significant_pairs"] == "ETH-USD"
    assert meta["pairs_untested"] == "ADA-USD, BTC-USD, XRP-USD"
    summary = str(meta["summary"])
    assert "| pair | best lag (h) | corr | raw p | Holm p | verdict |" in summary
    assert "| ADA-USD | | | | | not applicable: series too short |" in summary
    assert "| BTC-USD | | | | | no lead-lag report yet |" in summary
    assert "latest report is from source 'kraken'" in summary


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
