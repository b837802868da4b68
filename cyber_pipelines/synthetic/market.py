"""Seeded hourly market simulator: regimes, GARCH volatility, jumps, per-pair dynamics, planted effect.

Every call simulates one continuous path from ``origin`` (each random input has its own stream, drawn
hour by hour), so any window is an exact slice of a longer simulation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache

import numpy as np
import polars as pl

from cyber_pipelines.keys import normalize_pair
from cyber_pipelines.market.schema import OHLCV_SCHEMA
from cyber_pipelines.synthetic.bursts import (
    EFFECT_DECAY_HOURS,
    as_utc,
    burst_hours,
    check_seed,
    effect_kernel,
    rng_for,
)

HOURS_PER_YEAR = 24 * 365
VOL_SCALE = 3.0  # at the effect's peak (k = 1) volatility is (1 + effect_size * VOL_SCALE) times normal
DRIFT_SCALE = 1.0  # ... and the hourly drift rises by effect_size * DRIFT_SCALE base sigmas
FADE_DELAY_HOURS = 12  # after the pump, the same total drift fades out again (no unbounded trend)
FADE_DECAY_HOURS = 48.0

# Regimes: calm, trending, turbulent. Hourly transition matrix (rows sum to 1), volatility
# multipliers, trend drift (in base sigmas per hour, sign drawn on entry) and jump-rate multipliers.
_TRANSITIONS = np.array([[0.995, 0.004, 0.001], [0.005, 0.993, 0.002], [0.008, 0.004, 0.988]])
_REGIME_VOL = np.array([0.75, 1.0, 1.9])
_REGIME_TREND = np.array([0.0, 0.04, 0.0])
_REGIME_JUMPS = np.array([0.5, 1.0, 3.0])

# Rough levels at the start of 2024: price in USD, annualized volatility, hourly USD turnover.
_KNOWN = {
    "BTC": (42_000.0, 0.50, 6e6),
    "ETH": (2_300.0, 0.62, 3e6),
    "SOL": (100.0, 0.85, 1e6),
    "DOT": (7.5, 0.80, 2e5),
    "NEAR": (3.5, 0.90, 1e5),
    "ATOM": (10.0, 0.80, 1.5e5),
    "UNI": (6.5, 0.90, 1e5),
    "AAVE": (100.0, 0.85, 1e5),
    "COMP": (55.0, 0.85, 5e4),
}
_FIAT = {"USD": 1.0, "USDT": 1.0, "USDC": 1.0, "EUR": 1.09, "GBP": 1.27}


@dataclass(frozen=True)
class PairParams:
    """Per-pair dynamics, derived from the pair name and the seed."""

    price: float  # price at the origin
    sigma: float  # base hourly log-return volatility
    garch_alpha: float
    garch_beta: float
    tail_df: float  # Student-t degrees of freedom of the shocks
    jump_rate: float  # jumps per hour in the calm/trending regime baseline
    jump_scale: float  # jump size standard deviation, in base sigmas
    volume_usd: float  # typical hourly turnover in quote currency


def _asset_level(asset: str) -> tuple[float, float, float]:
    if asset in _FIAT:
        return _FIAT[asset], 0.08, 0.0
    if asset in _KNOWN:
        return _KNOWN[asset]
    rng = rng_for(0, "asset-level", asset)  # a fixed identity per name, like the table above
    return 10 ** rng.uniform(-1, 3), rng.uniform(0.7, 1.1), 10 ** rng.uniform(4, 5.5)


def pair_params(pair: str, seed: int) -> PairParams:
    """Dynamics of ``pair`` (``BASE/QUOTE``) for ``seed``: asset levels jittered by a seeded stream."""
    base, quote = normalize_pair(pair).split("/")
    b_price, b_vol, b_turnover = _asset_level(base)
    q_price, q_vol, _ = _asset_level(quote)
    # A cross pair (ETH/BTC) is the ratio of two correlated assets.
    annual_vol = b_vol if quote in _FIAT else math.sqrt(b_vol**2 + q_vol**2 - 1.2 * b_vol * q_vol)
    rng = rng_for(seed, "pair", base, quote)
    return PairParams(
        price=b_price / q_price * math.exp(rng.normal(0.0, 0.1)),
        sigma=annual_vol / math.sqrt(HOURS_PER_YEAR) * math.exp(rng.normal(0.0, 0.05)),
        garch_alpha=rng.uniform(0.07, 0.11),
        garch_beta=rng.uniform(0.84, 0.87),
        tail_df=rng.uniform(4.0, 7.0),
        jump_rate=rng.uniform(1 / 500, 1 / 200),
        jump_scale=rng.uniform(4.0, 7.0),
        volume_usd=b_turnover * math.exp(rng.normal(0.0, 0.2)),
    )


def _regimes_and_garch(
    u_regime: np.ndarray, trend_sign: np.ndarray, z: np.ndarray, p: PairParams
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The sequential part: a Markov regime chain and GARCH(1,1) innovations (one Python loop)."""
    n = z.size
    cum = np.cumsum(_TRANSITIONS, axis=1).tolist()
    var = p.sigma**2
    omega = var * (1.0 - p.garch_alpha - p.garch_beta)
    regime = np.empty(n, dtype=np.int64)
    sign = np.empty(n)
    cond_sd = np.empty(n)
    state, current_sign, eps = 0, 1.0, 0.0
    alpha, beta = p.garch_alpha, p.garch_beta
    for t, (u, s, zt) in enumerate(zip(u_regime.tolist(), trend_sign.tolist(), z.tolist(), strict=True)):
        row = cum[state]
        new_state = 0 if u < row[0] else (1 if u < row[1] else 2)
        if new_state != state:
            state, current_sign = new_state, s
        var = omega + alpha * eps * eps + beta * var
        sd = math.sqrt(var)
        eps = sd * zt
        regime[t], sign[t], cond_sd[t] = state, current_sign, sd
    return regime, sign, cond_sd


@lru_cache(maxsize=16)
def _simulate_path(
    pair: str, seed: int, effect_size: float, lag_hours: int, origin: date, n_hours: int
) -> pl.DataFrame:
    p = pair_params(pair, seed)

    def stream(name: str) -> np.random.Generator:
        return rng_for(seed, "market", pair, name)

    u_regime = stream("regime").random(n_hours)
    trend_sign = np.where(stream("trend").random(n_hours) < 0.5, -1.0, 1.0)
    z = stream("shock").standard_t(p.tail_df, n_hours) * math.sqrt((p.tail_df - 2) / p.tail_df)
    jump_u, jump_z = stream("jump").random(n_hours), stream("jump-size").standard_normal(n_hours)
    bar_u = 1.0 - stream("bar").random((n_hours, 2))  # in (0, 1] for the logs below
    volume_noise = stream("volume").standard_normal(n_hours)

    regime, sign, cond_sd = _regimes_and_garch(u_regime, trend_sign, z, p)
    diffusion_sd = _REGIME_VOL[regime] * cond_sd
    drift = _REGIME_TREND[regime] * sign * p.sigma
    is_jump = jump_u < p.jump_rate * _REGIME_JUMPS[regime]
    jumps = np.where(is_jump, jump_z * p.jump_scale * p.sigma, 0.0)

    if effect_size > 0:  # with no effect, no burst draw touches the path
        t0 = as_utc(origin)
        bursts = burst_hours(pair.split("/")[0], seed, t0, t0 + timedelta(hours=n_hours))
        k = effect_kernel(n_hours, bursts, lag_hours, EFFECT_DECAY_HOURS)
        fade = effect_kernel(n_hours, bursts, lag_hours + FADE_DELAY_HOURS, FADE_DECAY_HOURS)
        fade *= (1 - math.exp(-1 / FADE_DECAY_HOURS)) / (1 - math.exp(-1 / EFFECT_DECAY_HOURS))
        diffusion_sd = diffusion_sd * (1.0 + effect_size * VOL_SCALE * k)
        drift = drift + effect_size * DRIFT_SCALE * p.sigma * (k - fade)

    returns = drift + diffusion_sd * z + jumps
    log_close = math.log(p.price) + np.cumsum(returns)
    log_open = np.concatenate(([math.log(p.price)], log_close[:-1]))
    # Extremes of a Brownian bridge from 0 to the hour's return (exact inverse-CDF draws).
    spread = np.sqrt(returns[:, None] ** 2 - 2.0 * diffusion_sd[:, None] ** 2 * np.log(bar_u))
    log_high = log_open + (returns + spread[:, 0]) / 2.0
    log_low = log_open + (returns - spread[:, 1]) / 2.0
    open_, close = np.exp(log_open), np.exp(log_close)
    high = np.maximum(np.exp(log_high), np.maximum(open_, close))
    low = np.minimum(np.exp(log_low), np.minimum(open_, close))
    hour_of_day = np.arange(n_hours) % 24
    activity = (0.3 + np.abs(returns) / p.sigma) * (1.0 + 0.25 * np.cos(2 * np.pi * (hour_of_day - 15) / 24))
    volume = p.volume_usd / close * activity * np.exp(0.35 * volume_noise)
    return pl.DataFrame(
        {
            "timestamp": pl.datetime_range(
                as_utc(origin), as_utc(origin) + timedelta(hours=n_hours - 1), "1h", eager=True
            ),
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": volume,
        }
    ).cast(OHLCV_SCHEMA)  # type: ignore[arg-type]


_BLOCK_DAYS = 32  # simulate whole blocks so that consecutive day partitions share one cached path


def simulate_ohlcv(
    pair: str,
    start: date,
    end: date,
    *,
    seed: int,
    effect_size: float,
    lag_hours: int,
    origin: date,
) -> pl.DataFrame:
    """Hourly candles of ``pair`` for the days ``start..end`` (inclusive) in ``OHLCV_SCHEMA``.

    The path always starts at ``origin``, so a window equals the same slice of a longer simulation.
    Planted effect: ``lag_hours`` after each burst of the base asset, volatility is multiplied by
    ``1 + effect_size * VOL_SCALE * k`` and the drift raised by ``effect_size * DRIFT_SCALE * sigma * k``
    (``k`` = ``effect_kernel`` with ``EFFECT_DECAY_HOURS``); the same total drift then fades out slowly
    over the following days, so long paths do not trend without bound. ``effect_size=0`` ignores
    bursts entirely (the path is exactly the no-effect path, whatever ``lag_hours``).
    """
    pair = normalize_pair(pair)
    for name, value in (("start", start), ("end", end), ("origin", origin)):
        if not isinstance(value, date) or isinstance(value, datetime):
            raise TypeError(f"{name} must be a datetime.date, got {value!r}")
    if start > end:
        raise ValueError(f"start {start} is after end {end}")
    if start < origin:
        raise ValueError(f"start {start} is before the simulation origin {origin}")
    if not (isinstance(effect_size, int | float) and math.isfinite(effect_size) and effect_size >= 0):
        raise ValueError(f"effect_size must be a finite number >= 0, got {effect_size!r}")
    if isinstance(lag_hours, bool) or not isinstance(lag_hours, int) or lag_hours < 0:
        raise ValueError(f"lag_hours must be an integer >= 0, got {lag_hours!r}")
    first = (start - origin).days * 24
    stop = ((end - origin).days + 1) * 24
    horizon = -(-stop // (24 * _BLOCK_DAYS)) * 24 * _BLOCK_DAYS
    path = _simulate_path(pair, check_seed(seed), float(effect_size), lag_hours, origin, horizon)
    return path.slice(first, stop - first)
