"""The seeded synthetic sources: bursts, market simulator, GitHub and moat activity."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from cyber_pipelines.config import SyntheticSettings, load_settings
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
from cyber_pipelines.synthetic.market import (
    MOTIF_AMPLITUDE,
    MOTIF_HORIZON_HOURS,
    motif_hours,
    motif_shape,
    pair_params,
    simulate_ohlcv,
)
from cyber_pipelines.tables import split_days

ORIGIN = date(2024, 1, 1)
T0 = datetime(2024, 1, 1, tzinfo=UTC)
SEED = 7


def _ohlcv(
    pair: str, days: int, *, effect: float = 1.0, lag: int = 6, seed: int = SEED, **shape: float
) -> pl.DataFrame:
    end = ORIGIN + timedelta(days=days - 1)
    return simulate_ohlcv(pair, ORIGIN, end, seed=seed, effect_size=effect, lag_hours=lag, origin=ORIGIN, **shape)


def _log_returns(df: pl.DataFrame) -> np.ndarray:
    return np.log(df["close"].to_numpy() / df["open"].to_numpy())


def _returns(pair: str, days: int = 730, **shape: float) -> np.ndarray:
    """Hourly log returns of ``pair`` from ORIGIN (a Monday), no planted effect."""
    return _log_returns(_ohlcv(pair, days, effect=0.0, **shape))


def _is_weekend(n_hours: int) -> np.ndarray:
    return (np.arange(n_hours) // 24 + ORIGIN.weekday()) % 7 >= 5


def _abs_acf(r: np.ndarray, lag: int) -> float:
    a = np.abs(r) - np.abs(r).mean()
    return float(np.dot(a[:-lag], a[lag:]) / np.dot(a, a))


def _hourly_commits(
    repo: str, assets: list[str], days: int, seed: int = SEED, weekend_activity: float = 0.4
) -> np.ndarray:
    counts = np.zeros(days * 24)
    for d in range(days):
        day = ORIGIN + timedelta(days=d)
        events = simulate_commits(
            repo, assets, day, seed=seed, origin=ORIGIN, lag_hours=6, weekend_activity=weekend_activity
        )
        for ts, _ in events:
            counts[(ts - T0) // timedelta(hours=1)] += 1
    return counts


def _without_hour_of_week_means(x: np.ndarray) -> np.ndarray:
    """``x`` minus the mean of its hour of the week (the calendar that activity and markets share)."""
    slot = np.arange(x.size) % 168
    means = np.bincount(slot, x, 168) / np.bincount(slot, minlength=168)
    return x - means[slot]


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


@pytest.mark.parametrize(
    "shape",
    [
        {},
        {"effect_sign": -1, "factor_correlation": 0.3, "weekend_vol": 0.5, "intraday_vol": 0.6, "long_memory": 1.0},
    ],
)
def test_window_equals_slice_of_longer_simulation(shape: dict) -> None:
    feb = simulate_ohlcv(
        "SOL/USD", date(2024, 2, 1), date(2024, 2, 29), seed=SEED, effect_size=1.0, lag_hours=6, origin=ORIGIN, **shape
    )
    market._simulate_path.cache_clear()
    market.market_path.cache_clear()  # the factor and common volatility are drawn again, for a year
    year = _ohlcv("SOL/USD", 366, **shape)
    window = year.filter(pl.col("timestamp").dt.month() == 2)
    assert feb.height == 29 * 24
    assert_frame_equal(feb, window)
    assert_frame_equal(feb, _ohlcv("SOL/USD", 61, **shape).filter(pl.col("timestamp").dt.month() == 2))


def test_the_market_factor_does_not_depend_on_the_pairs_asked_for() -> None:
    market._simulate_path.cache_clear()
    market.market_path.cache_clear()
    alone = _ohlcv("ETH/USD", 40)
    market._simulate_path.cache_clear()
    market.market_path.cache_clear()
    for pair in ("SOL/USD", "BTC/EUR", "PEPE/USD"):
        _ohlcv(pair, 100)  # a longer factor, drawn for other pairs first
    assert_frame_equal(alone, _ohlcv("ETH/USD", 40))
    a = market.market_path(SEED, ORIGIN, 24 * 64, 0.7, 0.3, 0.5)
    b = market.market_path(SEED, ORIGIN, 24 * 32, 0.7, 0.3, 0.5)
    np.testing.assert_array_equal(a.factor[: b.factor.size], b.factor)
    assert not np.array_equal(b.factor, market.market_path(SEED + 1, ORIGIN, 24 * 32, 0.7, 0.3, 0.5).factor)


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


def test_zero_effect_ignores_lag_sign_and_bursts(monkeypatch: pytest.MonkeyPatch) -> None:
    base = _ohlcv("ETH/USD", 60, effect=0.0, lag=6)
    assert_frame_equal(base, _ohlcv("ETH/USD", 60, effect=0.0, lag=0))
    assert_frame_equal(base, _ohlcv("ETH/USD", 60, effect=0.0, lag=24))
    assert_frame_equal(base, _ohlcv("ETH/USD", 60, effect=0.0, effect_sign=-1))
    assert not base.equals(_ohlcv("ETH/USD", 60, effect=1.0))

    def no_bursts(*args: object, **kwargs: object) -> np.ndarray:
        raise AssertionError("effect_size=0 must not draw bursts")

    market._simulate_path.cache_clear()
    monkeypatch.setattr(market, "burst_hours", no_bursts)
    assert_frame_equal(base, _ohlcv("ETH/USD", 60, effect=0.0, lag=3))


def _burst_window_stats(pair: str, effect: float, lag: int, days: int, sign: int = 1) -> tuple[float, float]:
    """(mean |r| in the 6 h after onset / elsewhere, mean summed return over those windows in sigmas)."""
    r = _log_returns(_ohlcv(pair, days, effect=effect, lag=lag, effect_sign=sign))
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


@pytest.mark.parametrize("pair", ["ETH/USD", "SOL/USD"])
def test_a_negative_effect_sign_plants_a_falling_drift(pair: str) -> None:
    ratio, drift = _burst_window_stats(pair, 1.0, 6, 365, sign=-1)
    assert ratio > 1.7, f"volatility after bursts only {ratio:.2f}x elsewhere"
    assert drift < -1.0, f"mean return after bursts {drift:+.2f} sigma, expected a fall"
    up = _ohlcv(pair, 365, effect_sign=1)
    down = _ohlcv(pair, 365, effect_sign=-1)
    gap = _log_returns(up) - _log_returns(down)  # twice the planted drift: the shocks are the same
    k = effect_kernel(gap.size, burst_hours(pair.split("/")[0], SEED, T0, T0 + timedelta(days=365)), 6, 2.0)
    assert np.all(gap[k > 0.5] > 0) and np.all(gap[: int(np.argmax(k > 0))] == 0)


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
    assert pair_params("BTC/USD", SEED).loading == pair_params("ETH/USD", SEED).loading == 1.0
    assert 0.75 <= pair_params("SOL/USD", SEED).loading < 1.0 and pair_params("ETH/BTC", SEED).loading < 0.5


# --- the planted motif -----------------------------------------------------------------------------

MOTIF = {"motif_rate": 5.0, "motif_length": 12, "motif_move": 3.0}


def _occurrences(pair: str, n_hours: int, rate: float = 5.0, length: int = 12) -> np.ndarray:
    """Start hours of the motif occurrences whose shape and move lie wholly in ``n_hours``."""
    hours = motif_hours(pair, SEED, ORIGIN, n_hours, rate, length)
    return hours[hours + length + MOTIF_HORIZON_HOURS <= n_hours]


@pytest.mark.parametrize("effect", [0.0, 1.0])
def test_zero_motif_rate_is_exactly_the_path_without_a_motif(effect: float, monkeypatch: pytest.MonkeyPatch) -> None:
    base = _ohlcv("ETH/USD", 60, effect=effect)
    assert_frame_equal(base, _ohlcv("ETH/USD", 60, effect=effect, motif_rate=0.0))
    assert_frame_equal(base, _ohlcv("ETH/USD", 60, effect=effect, motif_rate=0, motif_length=30, motif_move=-5.0))
    assert not base.equals(_ohlcv("ETH/USD", 60, effect=effect, **MOTIF))

    def no_motif(*args: object, **kwargs: object) -> np.ndarray:
        raise AssertionError("motif_rate=0 must not draw motifs")

    market._simulate_path.cache_clear()
    monkeypatch.setattr(market, "motif_hours", no_motif)
    monkeypatch.setattr(market, "motif_shape", no_motif)
    assert_frame_equal(base, _ohlcv("ETH/USD", 60, effect=effect, motif_rate=0.0, motif_move=1.0))


@pytest.mark.parametrize("effect", [0.0, 1.0])
def test_motif_bars_carry_the_shape_and_nothing_else_changes(effect: float) -> None:
    pair, days = "SOL/USD", 365
    r = _log_returns(_ohlcv(pair, days, effect=effect, **MOTIF))
    without = _log_returns(_ohlcv(pair, days, effect=effect))
    sigma = pair_params(pair, SEED).sigma
    bars = motif_shape(SEED, 12) * MOTIF_AMPLITUDE * sigma
    hours = _occurrences(pair, r.size)
    assert hours.size > 20
    touched = np.zeros(r.size, dtype=bool)
    for h in hours:
        np.testing.assert_allclose(r[h : h + 12], bars, rtol=0, atol=1e-12)  # drift and noise replaced
        np.testing.assert_allclose(r[h + 12 : h + 18] - without[h + 12 : h + 18], 3.0 * sigma / 6, rtol=1e-9)
        touched[h : h + 18] = True
    np.testing.assert_allclose(r[~touched], without[~touched], rtol=0, atol=1e-12)


def test_motif_shape_is_standardized_and_fixed_per_seed() -> None:
    shape = motif_shape(SEED, 12)
    assert shape.shape == (12,) and abs(shape.mean()) < 1e-12
    assert np.sqrt(np.mean(shape**2)) == pytest.approx(1.0, rel=1e-12)
    np.testing.assert_array_equal(shape, motif_shape(SEED, 12))
    assert not np.allclose(shape, motif_shape(SEED + 1, 12))
    assert np.array_equal(np.abs(motif_shape(SEED, 2)), [1.0, 1.0])
    with pytest.raises(ValueError, match="motif_length"):
        motif_shape(SEED, 1)


@pytest.mark.parametrize("pair", ["BTC/USD", "ETH/USD", "SOL/USD"])
def test_the_move_after_a_motif_follows_its_sign(pair: str) -> None:
    """Over two years of occurrences, the 6 bars after the shape move ``motif_move`` sigmas on average."""
    sigma = pair_params(pair, SEED).sigma
    hours = _occurrences(pair, 730 * 24)
    assert hours.size > 60
    for move in (3.0, -3.0):
        r = _log_returns(_ohlcv(pair, 730, **(MOTIF | {"motif_move": move})))
        after = np.array([r[h + 12 : h + 12 + MOTIF_HORIZON_HOURS].sum() for h in hours]) / sigma
        assert np.sign(after.mean()) == np.sign(move) and abs(after.mean() - move) < 1.5, after.mean()


def test_motif_hours_do_not_overlap_and_are_reproducible() -> None:
    n = 730 * 24
    hours = motif_hours("ETH/USD", SEED, ORIGIN, n, 5.0, 12)
    assert hours.dtype == np.int64 and hours.min() >= 0 and hours.max() < n
    assert np.all(np.diff(hours) >= 12 + MOTIF_HORIZON_HOURS)  # each occupies its shape and its move
    assert 0.6 * n / 1000 * 5 < hours.size < 1.2 * n / 1000 * 5
    np.testing.assert_array_equal(hours, motif_hours("eth/usd", SEED, ORIGIN, n, 5.0, 12))
    short = motif_hours("ETH/USD", SEED, ORIGIN, 1000, 5.0, 12)
    np.testing.assert_array_equal(short, hours[hours < 1000])  # a longer simulation only appends
    assert not np.array_equal(hours, motif_hours("SOL/USD", SEED, ORIGIN, n, 5.0, 12))
    assert not np.array_equal(hours, motif_hours("ETH/USD", SEED + 1, ORIGIN, n, 5.0, 12))
    dense = motif_hours("ETH/USD", SEED, ORIGIN, n, 20.0, 48)
    assert np.all(np.diff(dense) >= 48 + MOTIF_HORIZON_HOURS)
    assert motif_hours("ETH/USD", SEED, ORIGIN, n, 0.0, 12).size == 0
    with pytest.raises(ValueError, match="motif_rate"):
        motif_hours("ETH/USD", SEED, ORIGIN, n, 25.0, 12)
    with pytest.raises(ValueError, match="motif_length"):
        motif_hours("ETH/USD", SEED, ORIGIN, n, 5.0, 60)
    with pytest.raises(ValueError, match="n_hours"):
        motif_hours("ETH/USD", SEED, ORIGIN, -1, 5.0, 12)


def test_a_window_with_motifs_is_a_slice_of_a_longer_simulation() -> None:
    shape = {"motif_rate": 20.0, "motif_length": 48, "motif_move": -5.0}
    block = 64 * 24  # February is simulated in the first two 32-day blocks
    assert any(h < block < h + 48 + MOTIF_HORIZON_HOURS for h in motif_hours("SOL/USD", SEED, ORIGIN, block, 20.0, 48))
    feb = simulate_ohlcv(
        "SOL/USD", date(2024, 2, 1), date(2024, 2, 29), seed=SEED, effect_size=1.0, lag_hours=6, origin=ORIGIN, **shape
    )
    market._simulate_path.cache_clear()
    year = _ohlcv("SOL/USD", 366, **shape)
    assert_frame_equal(feb, year.filter(pl.col("timestamp").dt.month() == 2))
    assert not feb.equals(_ohlcv("SOL/USD", 60, effect=1.0).filter(pl.col("timestamp").dt.month() == 2))


# --- stylized facts, each measured on two years of hourly bars -------------------------------------


@pytest.mark.parametrize("rho", [0.75, 0.4, 0.0])
def test_btc_eth_correlation_follows_the_factor_setting(rho: float) -> None:
    btc, eth, sol = (_returns(pair, factor_correlation=rho) for pair in ("BTC/USD", "ETH/USD", "SOL/USD"))
    corr = np.corrcoef(btc, eth)[0, 1]
    assert corr == pytest.approx(rho, abs=0.05), f"BTC-ETH correlation {corr:.3f} for the setting {rho}"
    loading = pair_params("SOL/USD", SEED).loading  # SOL loads on the factor with its own, smaller beta
    assert np.corrcoef(btc, sol)[0, 1] == pytest.approx(rho * loading, abs=0.05)


def test_the_default_factor_correlation_is_about_075() -> None:
    assert np.corrcoef(_returns("BTC/USD"), _returns("ETH/USD"))[0, 1] == pytest.approx(0.75, abs=0.05)


@pytest.mark.parametrize("weekend_vol", [0.7, 1.0])
def test_weekend_volatility_follows_the_setting(weekend_vol: float) -> None:
    for pair in ("BTC/USD", "ETH/USD"):
        r = np.abs(_returns(pair, weekend_vol=weekend_vol))
        weekend = _is_weekend(r.size)
        ratio = np.median(r[weekend]) / np.median(r[~weekend])  # the median: robust to the odd jump
        assert ratio == pytest.approx(weekend_vol, abs=0.07), f"{pair} weekend/weekday |r| {ratio:.3f}"


@pytest.mark.parametrize("amplitude", [0.3, 0.0])
def test_intraday_volatility_profile(amplitude: float) -> None:
    r = np.abs(_returns("BTC/USD", intraday_vol=amplitude))
    by_hour = np.array([r[h::24].mean() for h in range(24)])
    peak, trough = by_hour[13:18].mean(), by_hour[1:6].mean()  # 15:00 and 03:00 UTC, two hours either side
    bump = amplitude * np.cos(2 * np.pi * np.arange(-2, 3) / 24).mean()
    assert peak / trough == pytest.approx((1 + bump) / (1 - bump), rel=0.12)
    if amplitude:
        assert 13 <= int(np.argmax(by_hour)) <= 17 and 1 <= int(np.argmin(by_hour)) <= 5


def test_volatility_has_long_memory() -> None:
    """|r| stays autocorrelated for weeks: far beyond what the GARCH(1,1) of the shocks alone gives."""
    r = _returns("BTC/USD")
    memory = [_abs_acf(r, lag) for lag in (1, 24, 168, 500)]
    assert memory[2] > 0.05 and memory[3] > 0.03, f"|r| autocorrelation at 1, 24, 168, 500 h: {memory}"
    p = pair_params("BTC/USD", SEED)
    z = np.random.default_rng(0).standard_t(p.tail_df, r.size) * np.sqrt((p.tail_df - 2) / p.tail_df)
    garch = market.garch_sd(z, p.garch_alpha, p.garch_beta) * z  # the same GARCH(1,1), nothing else
    short = [_abs_acf(garch, lag) for lag in (1, 24, 168, 500)]
    assert short[0] > 0.05 and abs(short[2]) < 0.02 and abs(short[3]) < 0.02, short
    assert memory[2] / memory[0] > 0.2  # the decay from 1 h to a week: slow
    without = _returns("BTC/USD", long_memory=0.0)
    assert _abs_acf(without, 500) < memory[3]  # the slow components carry it (regimes add a little)


def test_stylized_facts() -> None:
    df = _ohlcv("ETH/USD", 365, effect=0.0)
    r = _log_returns(df)
    acf = [_abs_acf(r, h) for h in range(1, 25)]
    assert np.mean(acf) > 0.05, "no volatility clustering"
    kurtosis = np.mean((r - r.mean()) ** 4) / r.var() ** 2
    assert kurtosis > 5, "returns not fat-tailed (jumps, t shocks, regimes)"
    volume_rank = df["volume"].rank().to_numpy()
    abs_rank = pl.Series(np.abs(r)).rank().to_numpy()
    assert np.corrcoef(volume_rank, abs_rank)[0, 1] > 0.3, "volume not tied to |return|"
    weekend = _is_weekend(r.size)
    assert df["volume"].filter(weekend).median() < df["volume"].filter(~weekend).median()  # quieter weekends


def test_garch_core_clusters_volatility() -> None:
    z = np.random.default_rng(0).standard_normal(20_000)
    sd = market.garch_sd(z, 0.09, 0.86)
    assert sd[0] == 1.0 and abs(np.mean(sd**2) - 1.0) < 0.1  # unit unconditional variance
    assert sd.std() / sd.mean() > 0.1  # the conditional volatility moves
    a = np.abs(sd * z)
    assert np.corrcoef(a[:-1], a[1:])[0, 1] > 0.05  # ... and large moves follow large moves


def test_common_volatility_has_mean_square_one() -> None:
    n = 24 * 7 * 100
    calendar = market.calendar_vol(0, n, 0.7, 0.3)
    assert np.mean(calendar**2) == pytest.approx(1.0, rel=1e-9)
    rng = np.random.default_rng(1)  # 400 independent paths: one path's mean wanders for months
    last = [market.long_memory_vol(rng.standard_normal((50, len(market.MEMORY_HOURS))), 0.5)[-1] for _ in range(400)]
    assert np.mean(np.square(last)) == pytest.approx(1.0, abs=0.15)
    assert np.std(np.log(last)) == pytest.approx(0.5, abs=0.05)  # stationary from the first hour
    assert np.array_equal(market.long_memory_vol(np.zeros((5, 4)), 0.0), np.ones(5))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"start": date(2024, 3, 2), "end": date(2024, 3, 1)}, "after end"),
        ({"start": date(2023, 12, 31)}, "before the simulation origin"),
        ({"effect_size": -0.5}, "effect_size"),
        ({"effect_size": float("nan")}, "effect_size"),
        ({"lag_hours": -1}, "lag_hours"),
        ({"effect_sign": 0}, "effect_sign must be \\+1 or -1"),
        ({"effect_sign": 2.0}, "effect_sign"),
        ({"factor_correlation": 1.2}, "factor_correlation must be a number in \\[0, 1\\]"),
        ({"factor_correlation": -0.1}, "factor_correlation"),
        ({"weekend_vol": 0.0}, "weekend_vol"),
        ({"intraday_vol": 1.0}, "intraday_vol"),
        ({"long_memory": float("inf")}, "long_memory"),
        ({"long_memory": "0.5"}, "long_memory"),
        ({"motif_rate": -1.0}, "motif_rate must be a number in \\[0, 20\\]"),
        ({"motif_rate": 21}, "motif_rate"),
        ({"motif_rate": float("nan")}, "motif_rate"),
        ({"motif_length": 1}, "motif_length must be an integer in \\[2, 48\\]"),
        ({"motif_length": 49}, "motif_length"),
        ({"motif_length": 12.0}, "motif_length"),
        ({"motif_move": 25.0}, "motif_move must be a finite number in \\[-20, 20\\]"),
        ({"motif_move": float("inf")}, "motif_move"),
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


def test_commits_follow_core_authors() -> None:
    profile = repo_profile("solana-labs/solana", SEED)
    core_share = Counter[bool]()
    for d in range(28):
        day = ORIGIN + timedelta(days=d)
        events = simulate_commits("solana-labs/solana", ["SOL"], day, seed=SEED, origin=ORIGIN, lag_hours=6)
        core_share.update(profile.authors.index(login) < profile.core for _, login in events)
    assert core_share[True] > core_share[False]  # a few core developers write most commits
    assert len(profile.authors) > 4 * profile.core  # ... and a long tail the rest


@pytest.mark.parametrize("weekend_activity", [0.4, 1.0])
def test_weekend_commits_follow_the_setting(weekend_activity: float) -> None:
    """Outside burst hours, weekend commits per day are ``weekend_activity`` times the weekday ones."""
    days, weekend, weekday = 112, 0.0, 0.0
    for repo, asset in (("ethereum/go-ethereum", "ETH"), ("solana-labs/solana", "SOL"), ("near/nearcore", "NEAR")):
        counts = _hourly_commits(repo, [asset], days, weekend_activity=weekend_activity)
        quiet = np.ones(counts.size, dtype=bool)
        quiet[burst_hours(asset, SEED, T0, T0 + timedelta(days=days))] = False
        is_weekend = _is_weekend(counts.size)
        weekend += counts[quiet & is_weekend].mean()
        weekday += counts[quiet & ~is_weekend].mean()
    assert weekend / weekday == pytest.approx(weekend_activity, abs=0.06)


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


def test_moat_announcements_and_filings_rest_at_weekends() -> None:
    days = 42
    asset = "ETH"
    df = pl.concat(
        simulate_moat_records([asset], ORIGIN + timedelta(days=d), seed=SEED, origin=ORIGIN, weekend_activity=0.0)
        for d in range(days)
    )
    bursts = burst_hours(asset, SEED, T0, T0 + timedelta(days=days))
    announcements = df.filter(pl.col("metric") == "announcements")
    hours = ((announcements["timestamp"] - T0).dt.total_hours() - 1).to_numpy()  # the hour counted
    quiet = ~np.isin(hours, bursts)
    on_weekend = (hours // 24 + ORIGIN.weekday()) % 7 >= 5
    values = announcements["value"].to_numpy()
    assert values[quiet & on_weekend].sum() == 0 and values[quiet & ~on_weekend].sum() > 0
    filings = df.filter(pl.col("metric") == "filings")
    about = (filings["timestamp"] - timedelta(days=1)).dt.date().to_list()  # each counts the previous day
    burst_days = {ORIGIN + timedelta(days=int(h) // 24) for h in bursts}
    weekend_quiet = [
        v for d, v in zip(about, filings["value"], strict=True) if d.weekday() >= 5 and d not in burst_days
    ]
    assert weekend_quiet and sum(weekend_quiet) == 0


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
        (
            lambda: simulate_moat_records(["ETH"], ORIGIN, seed=7, origin=ORIGIN, weekend_activity=-1.0),
            "weekend_activity must be a number in \\[0, 3\\]",
        ),
        (
            lambda: simulate_commits("a/b", ["ETH"], ORIGIN, seed=7, origin=ORIGIN, lag_hours=6, weekend_activity=9),
            "weekend_activity",
        ),
    ],
)
def test_activity_rejects_bad_arguments(call: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_commits_lead_market_volatility_end_to_end() -> None:
    """ETH repos' hourly commits correlate with ETH/USD |return| most strongly 6 hours later.

    Both series have a weekly and daily calendar; their hour-of-week means are removed first, as a
    test of a lead must do (otherwise the shared calendar alone correlates them)."""
    days = 91
    commits = _hourly_commits("ethereum/go-ethereum", ["ETH"], days) + _hourly_commits("ethereum/py-evm", ["ETH"], days)
    commits = _without_hour_of_week_means(commits)
    for effect in (1.0, 0.0):
        r = _without_hour_of_week_means(np.abs(_log_returns(_ohlcv("ETH/USD", days, effect=effect))))
        cors = np.array([np.corrcoef(commits[: r.size - h], r[h:])[0, 1] for h in range(13)])
        if effect:
            assert int(np.argmax(cors)) == 6 and cors[6] > 0.2
        else:
            assert np.abs(cors).max() < 0.1


def test_the_shared_calendar_alone_correlates_activity_and_volatility() -> None:
    """The realistic null: no lead planted, yet commits and |r| share a weekly cycle (quiet weekends),
    which a test that shuffles whole days would mistake for a lead."""
    days = 364
    commits = _hourly_commits("ethereum/go-ethereum", ["ETH"], days).reshape(-1, 7, 24).sum(axis=(0, 2))
    r = np.abs(_log_returns(_ohlcv("ETH/USD", days, effect=0.0))).reshape(-1, 7, 24).sum(axis=(0, 2))
    for by_day in (commits, r):  # by day of the week, Monday to Sunday
        assert by_day[5:].max() < by_day[:5].min() and by_day[5:].mean() < 0.9 * by_day[:5].mean()


# --- settings in the pipeline config ---------------------------------------------------------------


def _config(tmp_path: Path, synthetic: str) -> str:
    path = tmp_path / "pipeline.yaml"
    path.write_text(f"start_date: '2024-01-01'\npairs: [BTC/USD]\nsynthetic: {synthetic}\n")
    return str(path)


def test_config_reads_the_synthetic_settings(tmp_path: Path) -> None:
    assert load_settings(_config(tmp_path, "{}")).synthetic == SyntheticSettings()
    text = "{effect_sign: -1, factor_correlation: 0, weekend_vol: 1, long_memory: 0.2, weekend_activity: 0.5}"
    synth = load_settings(_config(tmp_path, text)).synthetic
    assert synth.effect_sign == -1 and isinstance(synth.effect_sign, int)
    assert (synth.factor_correlation, synth.weekend_vol, synth.long_memory, synth.weekend_activity) == (0, 1, 0.2, 0.5)
    assert synth.intraday_vol == SyntheticSettings().intraday_vol == 0.3
    assert SyntheticSettings().motif_rate == 0.0  # no motif unless asked for
    motif = load_settings(_config(tmp_path, "{motif_rate: 5, motif_length: 24, motif_move: -2}")).synthetic
    assert (motif.motif_rate, motif.motif_length, motif.motif_move) == (5, 24, -2)
    assert isinstance(motif.motif_length, int)
    packaged = load_settings(str(Path(market.__file__).parents[1] / "pipeline.yaml")).synthetic
    assert packaged == SyntheticSettings()  # the packaged file states the defaults


@pytest.mark.parametrize(
    ("synthetic", "message"),
    [
        ("{effect_sign: 0}", "synthetic.effect_sign must be +1 or -1, got 0"),
        ("{effect_sign: '+1'}", "synthetic.effect_sign must be +1 or -1, got '+1'"),
        ("{factor_correlation: 1.5}", "synthetic.factor_correlation must be a number in [0, 1], got 1.5"),
        ("{weekend_vol: -0.7}", "synthetic.weekend_vol must be a number in (0, 3], got -0.7"),
        ("{intraday_vol: 1}", "synthetic.intraday_vol must be a number in [0, 1), got 1"),
        ("{long_memory: .nan}", "synthetic.long_memory must be a number in [0, 2], got nan"),
        ("{weekend_activity: high}", "synthetic.weekend_activity must be a number in [0, 3], got 'high'"),
        ("{effect_size: -1}", "synthetic.effect_size must be a finite number >= 0, got -1"),
        ("{lag_hours: 1.5}", "synthetic.lag_hours must be an integer >= 0, got 1.5"),
        ("{seed: -3}", "synthetic.seed must be an integer >= 0, got -3"),
        ("{motif_rate: 30}", "synthetic.motif_rate must be a number in [0, 20], got 30"),
        ("{motif_length: 1.5}", "synthetic.motif_length must be an integer in [2, 48], got 1.5"),
        ("{motif_move: .inf}", "synthetic.motif_move must be a finite number in [-20, 20], got inf"),
        ("{weekend_volatility: 0.7}", "unknown setting synthetic.weekend_volatility (expected one of seed,"),
        ("[0.7]", "synthetic must be a mapping of settings"),
    ],
)
def test_config_rejects_bad_synthetic_settings(tmp_path: Path, synthetic: str, message: str) -> None:
    path = _config(tmp_path, synthetic)
    with pytest.raises(ValueError) as error:
        load_settings(path)
    line = str(error.value)
    assert line.startswith(f"invalid pipeline config {Path(path).resolve()}: ") and message in line
    assert "\n" not in line
