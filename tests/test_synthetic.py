"""The seeded synthetic sources: bursts, market simulator, GitHub and moat activity."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from cyber_pipelines.market.schema import OHLCV_SCHEMA
from cyber_pipelines.moat.schema import MOAT_SCHEMA
from cyber_pipelines.quality.ohlcv import audit_ohlcv
from cyber_pipelines.synthetic import market
from cyber_pipelines.synthetic.activity import (
    repo_profile,
    simulate_commits,
    simulate_moat_records,
    simulate_repo_snapshot,
)
from cyber_pipelines.synthetic.bursts import BURSTS_PER_WEEK, burst_hours, effect_kernel, rng_for
from cyber_pipelines.synthetic.market import pair_params, simulate_ohlcv
from cyber_pipelines.tables import split_days

ORIGIN = date(2024, 1, 1)
T0 = datetime(2024, 1, 1, tzinfo=UTC)
SEED = 7


def _ohlcv(pair: str, days: int, *, effect: float = 1.0, lag: int = 6, seed: int = SEED) -> pl.DataFrame:
    end = ORIGIN + timedelta(days=days - 1)
    return simulate_ohlcv(pair, ORIGIN, end, seed=seed, effect_size=effect, lag_hours=lag, origin=ORIGIN)


def _log_returns(df: pl.DataFrame) -> np.ndarray:
    return np.log(df["close"].to_numpy() / df["open"].to_numpy())


def _hourly_commits(repo: str, assets: list[str], days: int, seed: int = SEED) -> np.ndarray:
    counts = np.zeros(days * 24)
    for d in range(days):
        day = ORIGIN + timedelta(days=d)
        for ts, _ in simulate_commits(repo, assets, day, seed=seed, origin=ORIGIN, lag_hours=6):
            counts[(ts - T0) // timedelta(hours=1)] += 1
    return counts


# --- bursts ---------------------------------------------------------------------------------------


def test_rng_streams_are_stable_per_entity() -> None:
    a = rng_for(SEED, "bursts", "ETH").random(5)
    assert np.array_equal(a, rng_for(SEED, "bursts", "ETH").random(5))
    assert not np.array_equal(a, rng_for(SEED, "bursts", "SOL").random(5))
    assert not np.array_equal(a, rng_for(SEED + 1, "bursts", "ETH").random(5))
    with pytest.raises(ValueError, match="seed"):
        rng_for(-1, "x")


def test_burst_hours_are_prefix_stable_and_poisson_like() -> None:
    short = burst_hours("ETH", SEED, T0, T0 + timedelta(days=30))
    long = burst_hours("ETH", SEED, T0, T0 + timedelta(days=730))
    assert long.dtype == np.int64
    assert np.array_equal(long[: short.size], short)
    assert short.size and short.max() < 30 * 24 and long.min() >= 0
    assert np.all(np.diff(long) > 0)
    per_week = long.size / (730 / 7)
    assert 0.8 * BURSTS_PER_WEEK < per_week < 1.2 * BURSTS_PER_WEEK
    assert not np.array_equal(long, burst_hours("SOL", SEED, T0, T0 + timedelta(days=730)))
    assert not np.array_equal(long, burst_hours("ETH", SEED + 1, T0, T0 + timedelta(days=730)))


def test_burst_hours_are_anchored_in_absolute_time() -> None:
    later = T0 + timedelta(days=10)
    from_t0 = burst_hours("ETH", SEED, T0, T0 + timedelta(days=40))
    from_later = burst_hours("ETH", SEED, later, T0 + timedelta(days=40))
    assert np.array_equal(from_t0[from_t0 >= 240] - 240, from_later)
    with pytest.raises(ValueError, match="hour boundary"):
        burst_hours("ETH", SEED, T0 + timedelta(minutes=30), later)
    with pytest.raises(ValueError, match="asset symbol"):
        burst_hours("eth", SEED, T0, later)


def test_effect_kernel_matches_its_definition() -> None:
    bursts = np.array([3, 10, 11, 40])
    lag, decay, n = 6, 2.5, 50
    expected = np.zeros(n)
    for b in bursts:
        for h in range(b + lag, n):
            expected[h] += np.exp(-(h - b - lag) / decay)
    k = effect_kernel(n, bursts, lag, decay)
    np.testing.assert_allclose(k, expected, rtol=1e-12, atol=1e-12)
    assert k[: 3 + lag].max() == 0.0 and k[3 + lag] == pytest.approx(1.0)
    assert effect_kernel(0, bursts, lag, decay).size == 0
    with pytest.raises(ValueError, match="decay_hours"):
        effect_kernel(n, bursts, lag, 0.0)
    with pytest.raises(ValueError, match="lag_hours"):
        effect_kernel(n, bursts, -1, decay)


# --- market ---------------------------------------------------------------------------------------


def test_market_is_deterministic_per_seed() -> None:
    a = _ohlcv("ETH/USD", 20)
    assert_frame_equal(a, _ohlcv("ETH/USD", 20))
    assert not a.equals(_ohlcv("ETH/USD", 20, seed=SEED + 1))


def test_window_equals_slice_of_longer_simulation() -> None:
    feb = simulate_ohlcv(
        "SOL/USD", date(2024, 2, 1), date(2024, 2, 29), seed=SEED, effect_size=1.0, lag_hours=6, origin=ORIGIN
    )
    market._simulate_path.cache_clear()
    year = _ohlcv("SOL/USD", 366)
    window = year.filter(pl.col("timestamp").dt.month() == 2)
    assert feb.height == 29 * 24
    assert_frame_equal(feb, window)
    assert_frame_equal(feb, _ohlcv("SOL/USD", 61).filter(pl.col("timestamp").dt.month() == 2))


@pytest.mark.parametrize("pair", ["BTC/USD", "ETH/USD", "SOL/USD", "ETH/BTC", "PEPE/EUR"])
@pytest.mark.parametrize("effect", [0.0, 1.0])
def test_candles_are_valid(pair: str, effect: float) -> None:
    df = _ohlcv(pair, 365, effect=effect)
    assert df.schema == pl.Schema(OHLCV_SCHEMA)
    days = [ORIGIN + timedelta(days=i) for i in range(365)]
    assert audit_ohlcv(split_days(df, days), max_gap_ratio=0.0).failures == ()  # the GX suite, no gap at all
    assert df.height == 365 * 24
    assert (df["timestamp"].diff().drop_nulls() == timedelta(hours=1)).all()
    assert df["timestamp"][0] == T0
    assert (df["low"] > 0).all() and (df["volume"] > 0).all()
    assert np.mean(df["high"].to_numpy() / df["low"].to_numpy() - 1) > 0.001  # real intrahour ranges
    # Each candle opens at the previous close: one continuous path.
    np.testing.assert_array_equal(df["open"].to_numpy()[1:], df["close"].to_numpy()[:-1])


def test_zero_effect_ignores_lag_and_bursts(monkeypatch: pytest.MonkeyPatch) -> None:
    base = _ohlcv("ETH/USD", 60, effect=0.0, lag=6)
    assert_frame_equal(base, _ohlcv("ETH/USD", 60, effect=0.0, lag=0))
    assert_frame_equal(base, _ohlcv("ETH/USD", 60, effect=0.0, lag=24))
    assert not base.equals(_ohlcv("ETH/USD", 60, effect=1.0))

    def no_bursts(*args: object, **kwargs: object) -> np.ndarray:
        raise AssertionError("effect_size=0 must not draw bursts")

    market._simulate_path.cache_clear()
    monkeypatch.setattr(market, "burst_hours", no_bursts)
    assert_frame_equal(base, _ohlcv("ETH/USD", 60, effect=0.0, lag=3))


def _burst_window_stats(pair: str, effect: float, lag: int, days: int) -> tuple[float, float]:
    """(mean |r| in the 6 h after onset / elsewhere, mean summed return over those windows in sigmas)."""
    r = _log_returns(_ohlcv(pair, days, effect=effect, lag=lag))
    bursts = burst_hours(pair.split("/")[0], SEED, T0, T0 + timedelta(days=days))
    in_window = np.zeros(r.size, dtype=bool)
    window_returns = []
    for b in bursts:
        in_window[b + lag : b + lag + 6] = True
        if b + lag + 6 <= r.size:
            window_returns.append(r[b + lag : b + lag + 6].sum())
    ratio = np.abs(r[in_window]).mean() / np.abs(r[~in_window]).mean()
    return float(ratio), float(np.mean(window_returns) / pair_params(pair, SEED).sigma)


@pytest.mark.parametrize("pair", ["BTC/USD", "ETH/USD", "SOL/USD"])
def test_planted_effect_raises_volatility_and_drift_after_bursts(pair: str) -> None:
    ratio, drift = _burst_window_stats(pair, 1.0, 6, 365)
    assert ratio > 1.7, f"volatility after bursts only {ratio:.2f}x elsewhere"
    assert drift > 1.0, f"mean return after bursts only {drift:.2f} sigma"
    ratio0, drift0 = _burst_window_stats(pair, 0.0, 6, 365)
    assert 0.8 < ratio0 < 1.25, f"no effect planted, yet {ratio0:.2f}x volatility after bursts"
    assert abs(drift0) < 0.8


@pytest.mark.parametrize("lag", [3, 6, 10])
def test_burst_lead_peaks_at_the_configured_lag(lag: int) -> None:
    days = 120
    r = np.abs(_log_returns(_ohlcv("ETH/USD", days, lag=lag)))
    indicator = np.zeros(r.size)
    indicator[burst_hours("ETH", SEED, T0, T0 + timedelta(days=days))] = 1.0
    cors = [np.corrcoef(indicator[: r.size - h], r[h:])[0, 1] for h in range(16)]
    assert int(np.argmax(cors)) == lag
    assert max(abs(c) for c in cors[:lag]) < 0.08  # nothing before the onset


def test_pairs_have_distinct_dynamics() -> None:
    vols = {}
    for pair in ("BTC/USD", "ETH/USD", "SOL/USD"):
        r = _log_returns(_ohlcv(pair, 365, effect=0.0))
        vols[pair] = r.std()
    assert vols["BTC/USD"] < vols["ETH/USD"] < vols["SOL/USD"]
    btc, sol = _ohlcv("BTC/USD", 30), _ohlcv("SOL/USD", 30)
    assert btc["close"].to_numpy().mean() > 50 * sol["close"].to_numpy().mean()
    assert pair_params("BTC/USD", SEED) != pair_params("BTC/USD", SEED + 1)
    corr = np.corrcoef(_log_returns(btc), _log_returns(sol))[0, 1]
    assert abs(corr) < 0.2  # independent shock streams per pair


def test_stylized_facts() -> None:
    df = _ohlcv("ETH/USD", 365, effect=0.0)
    r = _log_returns(df)
    a = np.abs(r) - np.abs(r).mean()
    acf = [np.dot(a[:-h], a[h:]) / np.dot(a, a) for h in range(1, 25)]
    assert np.mean(acf) > 0.05, "no volatility clustering"
    kurtosis = np.mean((r - r.mean()) ** 4) / r.var() ** 2
    assert kurtosis > 5, "returns not fat-tailed (jumps, t shocks, regimes)"
    volume_rank = df["volume"].rank().to_numpy()
    abs_rank = pl.Series(np.abs(r)).rank().to_numpy()
    assert np.corrcoef(volume_rank, abs_rank)[0, 1] > 0.3, "volume not tied to |return|"


def test_garch_core_clusters_volatility() -> None:
    n = 20_000
    z = np.random.default_rng(0).standard_normal(n)
    calm = np.zeros(n)  # uniforms of 0 keep the regime chain in its calm state
    regime, _, cond_sd = market._regimes_and_garch(calm, np.ones(n), z, pair_params("ETH/USD", SEED))
    assert (regime == 0).all()
    assert cond_sd.std() / cond_sd.mean() > 0.1  # the conditional volatility moves
    a = np.abs(cond_sd * z)
    assert np.corrcoef(a[:-1], a[1:])[0, 1] > 0.05  # ... and large moves follow large moves


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"start": date(2024, 3, 2), "end": date(2024, 3, 1)}, "after end"),
        ({"start": date(2023, 12, 31)}, "before the simulation origin"),
        ({"effect_size": -0.5}, "effect_size"),
        ({"effect_size": float("nan")}, "effect_size"),
        ({"lag_hours": -1}, "lag_hours"),
        ({"pair": "BTCUSD"}, "not a trading pair"),
        ({"seed": -3}, "seed"),
    ],
)
def test_market_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    args = {
        "pair": "BTC/USD",
        "start": date(2024, 3, 1),
        "end": date(2024, 3, 1),
        "seed": SEED,
        "effect_size": 1.0,
        "lag_hours": 6,
        "origin": ORIGIN,
    } | kwargs
    pair, start, end = args.pop("pair"), args.pop("start"), args.pop("end")
    with pytest.raises(ValueError, match=message):
        simulate_ohlcv(pair, start, end, **args)


# --- GitHub and moat activity ---------------------------------------------------------------------


def test_commits_are_deterministic_and_well_formed() -> None:
    day = date(2024, 1, 17)
    events = simulate_commits("ethereum/go-ethereum", ["ETH"], day, seed=SEED, origin=ORIGIN, lag_hours=6)
    assert events == simulate_commits("ethereum/go-ethereum", ["ETH"], day, seed=SEED, origin=ORIGIN, lag_hours=6)
    other_seed = simulate_commits("ethereum/go-ethereum", ["ETH"], day, seed=8, origin=ORIGIN, lag_hours=6)
    assert events != other_seed
    assert events == sorted(events) and events
    authors = set(repo_profile("ethereum/go-ethereum", SEED).authors)
    for ts, login in events:
        assert ts.tzinfo is not None and ts.utcoffset() == timedelta(0)
        assert ts.date() == day and login in authors


def test_commits_spike_in_primary_asset_burst_hours() -> None:
    days = 60
    commits = _hourly_commits("Uniswap/v3-core", ["ETH", "UNI"], days)
    eth = burst_hours("ETH", SEED, T0, T0 + timedelta(days=days))
    uni = np.setdiff1d(burst_hours("UNI", SEED, T0, T0 + timedelta(days=days)), eth)
    elsewhere = np.ones(commits.size, dtype=bool)
    elsewhere[eth] = False
    assert commits[eth].min() >= 3
    assert commits[eth].mean() > 10 * commits[elsewhere].mean()
    assert commits[uni].mean() < 3 * commits[elsewhere].mean() + 1  # a secondary asset does not drive it


def test_commits_follow_weekly_seasonality_and_core_authors() -> None:
    profile = repo_profile("solana-labs/solana", SEED)
    weekday: list[int] = []
    weekend: list[int] = []
    core_share = Counter[bool]()
    for d in range(56):
        day = ORIGIN + timedelta(days=d)
        events = simulate_commits("solana-labs/solana", ["SOL"], day, seed=SEED, origin=ORIGIN, lag_hours=6)
        (weekend if day.weekday() >= 5 else weekday).append(len(events))
        core_share.update(profile.authors.index(login) < profile.core for _, login in events)
    assert np.mean(weekend) < np.mean(weekday)
    assert core_share[True] > core_share[False]  # a few core developers write most commits
    assert len(profile.authors) > 4 * profile.core  # ... and a long tail the rest


def test_repo_snapshot_varies_slowly() -> None:
    snaps = [
        simulate_repo_snapshot("near/nearcore", ORIGIN + timedelta(days=d), seed=SEED, origin=ORIGIN) for d in range(90)
    ]
    issues = np.array([s[0] for s in snaps])
    stars = np.array([s[1] for s in snaps])
    assert snaps[30] == simulate_repo_snapshot("near/nearcore", date(2024, 1, 31), seed=SEED, origin=ORIGIN)
    assert np.all(np.diff(stars) >= 0) and stars[-1] > stars[0]
    assert issues.min() >= 0 and np.abs(np.diff(np.log(issues + 1))).max() < 0.3
    assert np.unique(issues).size > 3  # it does vary


def test_moat_records_follow_bursts() -> None:
    days = 60
    assets = ["ETH", "SOL"]
    frames = [simulate_moat_records(assets, ORIGIN + timedelta(days=d), seed=SEED, origin=ORIGIN) for d in range(days)]
    df = pl.concat(frames)
    assert df.schema == pl.Schema(MOAT_SCHEMA)
    assert set(df["source"]) == {"corporate", "government", "logistics"}
    assert set(df["entity"]) == set(assets)
    assert df.select("timestamp", "source", "entity", "metric").is_duplicated().sum() == 0
    assert_frame_equal(frames[5], simulate_moat_records(assets, ORIGIN + timedelta(days=5), seed=SEED, origin=ORIGIN))
    announcements = df.filter(pl.col("entity") == "ETH", pl.col("metric") == "announcements")
    hours = ((announcements["timestamp"] - T0).dt.total_hours() - 1).to_numpy()  # hour ending at ts
    values = announcements["value"].to_numpy()
    is_burst = np.isin(hours, burst_hours("ETH", SEED, T0, T0 + timedelta(days=days)))
    assert values[is_burst].min() >= 2 and values[~is_burst].mean() < 0.2
    assert simulate_moat_records(["ETH"], ORIGIN, seed=SEED, origin=ORIGIN).height == 26


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: simulate_commits("go-ethereum", ["ETH"], ORIGIN, seed=7, origin=ORIGIN, lag_hours=6),
            "owner/name",
        ),
        (lambda: simulate_commits("a/b", [], ORIGIN, seed=7, origin=ORIGIN, lag_hours=6), "no assets"),
        (
            lambda: simulate_commits("a/b", ["eth"], ORIGIN, seed=7, origin=ORIGIN, lag_hours=6),
            "asset symbol",
        ),
        (
            lambda: simulate_commits("a/b", ["ETH"], date(2023, 1, 1), seed=7, origin=ORIGIN, lag_hours=6),
            "origin",
        ),
        (lambda: simulate_repo_snapshot("a/b", ORIGIN, seed=-1, origin=ORIGIN), "seed"),
        (lambda: simulate_moat_records(["ETH/USD"], ORIGIN, seed=7, origin=ORIGIN), "asset symbol"),
    ],
)
def test_activity_rejects_bad_arguments(call: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_commits_lead_market_volatility_end_to_end() -> None:
    """ETH repos' hourly commits correlate with ETH/USD |return| most strongly 6 hours later."""
    days = 90
    commits = _hourly_commits("ethereum/go-ethereum", ["ETH"], days) + _hourly_commits("ethereum/py-evm", ["ETH"], days)
    for effect in (1.0, 0.0):
        r = np.abs(_log_returns(_ohlcv("ETH/USD", days, effect=effect)))
        cors = np.array([np.corrcoef(commits[: r.size - h], r[h:])[0, 1] for h in range(13)])
        if effect:
            assert int(np.argmax(cors)) == 6 and cors[6] > 0.2
        else:
            assert np.abs(cors).max() < 0.1
