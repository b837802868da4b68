"""Seeded hourly market simulator with the stylized facts of crypto markets and a planted effect.

Each pair's hourly log return is ``drift + sigma * S_t * (beta * F_t + sqrt(1 - beta**2) * E_t)``:

- ``F_t`` is a common market factor and ``E_t`` the pair's own innovation, both of unit variance:
  Student-t shocks with GARCH(1,1) clustering plus jumps. BTC and ETH load on the factor with
  ``beta = sqrt(factor_correlation)``, so their return correlation is the setting; other pairs load
  with their own seeded fraction of that.
- ``S_t``, common to all pairs, multiplies a market regime (calm, trending, turbulent), a long-memory
  volatility (a cascade of log-volatility components with time scales from a day to months, after
  LeBaron 2001: the autocorrelation of ``|r|`` decays slowly, out to hundreds of hours) and a calendar
  profile (intraday peak at 15:00 UTC, lower volatility at weekends), with mean square 1.
- The planted effect (``simulate_ohlcv``) raises volatility and moves the drift, up or down by its
  sign, ``lag_hours`` after each activity burst of the base asset.
- The planted motif (``motif_rate > 0``): at the hours ``motif_hours`` gives, the returns of
  ``motif_length`` bars are replaced by one fixed shape (``motif_shape`` times ``MOTIF_AMPLITUDE`` base
  sigmas, the same for every pair and occurrence), and the ``MOTIF_HORIZON_HOURS`` bars after it move by
  ``motif_move`` base sigmas in all, evenly (added to their returns).

Every random input is a stream drawn hour by hour from ``origin``; the market's streams depend on the
seed alone (never on which pairs are asked for), so any window is an exact slice of a longer
simulation and every pair sees the same factor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache

import numpy as np
import polars as pl
from scipy.signal import lfilter

from cyber_pipelines.keys import normalize_pair
from cyber_pipelines.market.schema import OHLCV_SCHEMA
from cyber_pipelines.synthetic import settings as defaults
from cyber_pipelines.synthetic.bursts import (
    EFFECT_DECAY_HOURS,
    as_utc,
    burst_hours,
    check_seed,
    effect_kernel,
    epoch_hour,
    rng_for,
)
from cyber_pipelines.synthetic.settings import check_setting

HOURS_PER_YEAR = 24 * 365
VOL_SCALE = 3.0  # at the effect's peak (k = 1) volatility is (1 + effect_size * VOL_SCALE) times normal
DRIFT_SCALE = 1.0  # ... and the hourly drift moves by effect_sign * effect_size * DRIFT_SCALE base sigmas
FADE_DELAY_HOURS = 12  # after the pump, the same total drift fades out again (no unbounded trend)
FADE_DECAY_HOURS = 48.0
MOTIF_AMPLITUDE = 2.5  # the motif's returns, in base sigmas per bar (RMS): it stands out from the noise
MOTIF_HORIZON_HOURS = 6  # the motif's move is spread over this many bars after its shape

# Market regimes: calm, trending, turbulent. Hourly transition matrix (rows sum to 1), volatility
# multipliers, trend drift (in base sigmas per hour, sign drawn on entry) and jump-rate multipliers.
_TRANSITIONS = np.array([[0.995, 0.004, 0.001], [0.005, 0.993, 0.002], [0.008, 0.004, 0.988]])
_REGIME_VOL = np.array([0.75, 1.0, 1.9])
_REGIME_TREND = np.array([0.0, 0.04, 0.0])
_REGIME_JUMPS = np.array([0.5, 1.0, 3.0])

MEMORY_HOURS = (24.0, 168.0, 720.0, 2880.0)  # time scales of the slow log-volatility components
PEAK_HOUR_UTC = 15  # intraday volatility peaks when Europe and the US overlap
# The market factor's own shocks: GARCH(1,1) alpha and beta, Student-t degrees of freedom, jumps per
# hour (in the trending regime; scaled like the pairs' by the regime) and jump size (in factor sigmas).
_FACTOR_GARCH = (0.08, 0.88)
_FACTOR_TAIL_DF = 5.0
_FACTOR_JUMP_RATE = 1 / 400
_FACTOR_JUMP_SCALE = 5.0
_EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday

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
    garch_alpha: float  # GARCH(1,1) of the pair's own innovation
    garch_beta: float
    tail_df: float  # Student-t degrees of freedom of the shocks
    jump_rate: float  # jumps per hour in the trending regime (the regime scales it)
    jump_scale: float  # jump size standard deviation, in base sigmas
    volume_usd: float  # typical hourly turnover in quote currency
    loading: float  # factor loading relative to BTC and ETH: beta = sqrt(factor_correlation) * loading


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
    # A cross pair (ETH/BTC) is the ratio of two correlated assets: less market factor in it.
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
        loading=(
            1.0
            if base in ("BTC", "ETH") and quote in _FIAT
            else float(rng.uniform(0.75, 1.0) if quote in _FIAT else rng.uniform(0.2, 0.5))
        ),
    )


def garch_sd(z: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """Conditional standard deviation of a unit-variance GARCH(1,1) driven by the shocks ``z``."""
    omega = 1.0 - alpha - beta
    sd = np.empty(z.size)
    var, eps2 = 1.0, 1.0  # start at the unconditional variance, as if after an average shock
    for t, zt in enumerate(z.tolist()):
        var = omega + alpha * eps2 + beta * var
        sd[t] = math.sqrt(var)
        eps2 = var * zt * zt
    return sd


def regime_chain(u: np.ndarray, sign_draws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The market's Markov regime per hour (from uniforms ``u``) and the trend sign drawn on each entry."""
    cum = np.cumsum(_TRANSITIONS, axis=1).tolist()
    regime = np.empty(u.size, dtype=np.int64)
    state = 0
    for t, ut in enumerate(u.tolist()):
        row = cum[state]
        state = 0 if ut < row[0] else (1 if ut < row[1] else 2)
        regime[t] = state
    entries = np.flatnonzero(np.diff(regime, prepend=0) != 0)
    marks = np.zeros(u.size, dtype=np.int64)
    marks[entries] = entries
    sign = sign_draws[np.maximum.accumulate(marks)]  # the draw of the hour the regime was entered
    return regime, sign


def long_memory_vol(shocks: np.ndarray, sd: float) -> np.ndarray:
    """A volatility multiplier with mean square 1: exp of a sum of stationary AR(1) components.

    ``shocks`` has one column per time scale in ``MEMORY_HOURS``; each component carries an equal share
    of the log-variance ``sd**2`` and starts from its stationary law, so the process has no burn-in.
    """
    log_vol = np.zeros(shocks.shape[0])
    share = sd / math.sqrt(len(MEMORY_HOURS))
    for column, tau in zip(shocks.T, MEMORY_HOURS, strict=True):
        phi = math.exp(-1.0 / tau)
        innovations = column * share * math.sqrt(1.0 - phi * phi)
        innovations[:1] = column[:1] * share  # the first value is a stationary draw
        log_vol += lfilter([1.0], [1.0, -phi], innovations)
    return np.asarray(np.exp(log_vol - sd * sd), dtype=np.float64)


def calendar_vol(first_hour: int, n_hours: int, weekend_vol: float, intraday_vol: float) -> np.ndarray:
    """Volatility multiplier by UTC hour of day and day of week (``first_hour``: hours since the epoch).

    A cosine intraday profile of amplitude ``intraday_vol`` peaking at ``PEAK_HOUR_UTC`` and weekends at
    ``weekend_vol`` times weekdays, scaled so that its mean square over a week is 1.
    """
    hours = first_hour + np.arange(n_hours)
    intraday = 1.0 + intraday_vol * np.cos(2 * np.pi * (hours % 24 - PEAK_HOUR_UTC) / 24)
    weekend = (hours // 24 + _EPOCH_WEEKDAY) % 7 >= 5
    weekly = np.where(weekend, weekend_vol, 1.0)
    return np.asarray(intraday * weekly / math.sqrt((1 + intraday_vol**2 / 2) * (5 + 2 * weekend_vol**2) / 7))


def _innovation(
    stream: dict[str, np.random.Generator],
    n: int,
    garch: tuple[float, float],
    tail_df: float,
    jump_rate: float,
    jump_scale: float,
    regime: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Unit-variance innovations (t shocks with GARCH(1,1), plus jumps) and their diffusive sd.

    The jump rate rises with the regime; dividing by the regime's total variance keeps each hour's
    variance at 1, so regimes shape the tails here while their volatility enters through ``S_t``.
    """
    z = stream["shock"].standard_t(tail_df, n) * math.sqrt((tail_df - 2) / tail_df)
    jump_u, jump_z = stream["jump"].random(n), stream["jump-size"].standard_normal(n)
    sd = garch_sd(z, *garch)
    rate = jump_rate * _REGIME_JUMPS[regime]
    jumps = np.where(jump_u < rate, jump_z * jump_scale, 0.0)
    norm = np.sqrt(1.0 + rate * jump_scale**2)
    return (sd * z + jumps) / norm, sd / norm


@dataclass(frozen=True)
class MarketPath:
    """What all pairs share, hour by hour from the origin."""

    regime: np.ndarray  # 0 calm, 1 trending, 2 turbulent
    trend_sign: np.ndarray  # the trend's direction, drawn on entering a regime
    scale: np.ndarray  # S_t: regime volatility x long memory x calendar
    factor: np.ndarray  # F_t, unit variance
    factor_sd: np.ndarray  # the diffusive (non-jump) part's conditional sd


@lru_cache(maxsize=4)
def market_path(
    seed: int, origin: date, n_hours: int, weekend_vol: float, intraday_vol: float, long_memory: float
) -> MarketPath:
    """The market's regime, common volatility and factor for ``n_hours`` from ``origin`` (cached)."""
    streams = {
        name: rng_for(seed, "market-factor", name)
        for name in ("regime", "trend", "memory", "shock", "jump", "jump-size")
    }
    regime, sign = regime_chain(
        streams["regime"].random(n_hours), np.where(streams["trend"].random(n_hours) < 0.5, -1.0, 1.0)
    )
    memory = long_memory_vol(streams["memory"].standard_normal((n_hours, len(MEMORY_HOURS))), long_memory)
    calendar = calendar_vol(epoch_hour(origin), n_hours, weekend_vol, intraday_vol)
    factor, factor_sd = _innovation(
        streams, n_hours, _FACTOR_GARCH, _FACTOR_TAIL_DF, _FACTOR_JUMP_RATE, _FACTOR_JUMP_SCALE, regime
    )
    return MarketPath(regime, sign, _REGIME_VOL[regime] * memory * calendar, factor, factor_sd)


def motif_shape(seed: int, length: int) -> np.ndarray:
    """The planted motif's standardized returns (mean 0, RMS 1): one fixed shape per seed and length."""
    n = int(check_setting("motif_length", length))
    z = rng_for(check_seed(seed), "motif", "shape").standard_normal(n)
    z -= z.mean()
    return np.asarray(z / math.sqrt(np.mean(z * z)), dtype=np.float64)


def motif_hours(pair: str, seed: int, origin: date, n_hours: int, rate: float, length: int) -> np.ndarray:
    """Start hours (from ``origin``, sorted, int64) of the motif's occurrences in ``pair``'s first ``n_hours``.

    Hour by hour from the origin, each hour not inside an earlier occurrence (``length +
    MOTIF_HORIZON_HOURS`` bars) starts one with probability ``rate / 1000``, from a stream of the pair
    and seed drawn from the origin like the market's: a longer ``n_hours`` only appends (the last
    occurrence may run past the end).
    """
    if not isinstance(origin, date) or isinstance(origin, datetime):
        raise TypeError(f"origin must be a datetime.date, got {origin!r}")
    if isinstance(n_hours, bool) or not isinstance(n_hours, int | np.integer) or n_hours < 0:
        raise ValueError(f"n_hours must be an integer >= 0, got {n_hours!r}")
    hazard = check_setting("motif_rate", rate) / 1000
    span = int(check_setting("motif_length", length)) + MOTIF_HORIZON_HOURS
    u = rng_for(check_seed(seed), "motif", normalize_pair(pair), "times").random(int(n_hours))
    starts: list[int] = []
    free = 0
    for hour in np.flatnonzero(u < hazard).tolist():
        if hour >= free:
            starts.append(hour)
            free = hour + span
    return np.asarray(starts, dtype=np.int64)


@dataclass(frozen=True)
class _Shape:
    """The market settings of one path (hashable, for the cache)."""

    effect_size: float
    effect_sign: float
    lag_hours: int
    factor_correlation: float
    weekend_vol: float
    intraday_vol: float
    long_memory: float
    motif_rate: float
    motif_length: int
    motif_move: float
    return_ar: float


@lru_cache(maxsize=16)
def _simulate_path(pair: str, seed: int, shape: _Shape, origin: date, n_hours: int) -> pl.DataFrame:
    p = pair_params(pair, seed)
    market = market_path(seed, origin, n_hours, shape.weekend_vol, shape.intraday_vol, shape.long_memory)
    streams = {name: rng_for(seed, "market", pair, name) for name in ("shock", "jump", "jump-size", "bar", "volume")}
    own, own_sd = _innovation(
        streams, n_hours, (p.garch_alpha, p.garch_beta), p.tail_df, p.jump_rate, p.jump_scale, market.regime
    )
    bar_u = 1.0 - streams["bar"].random((n_hours, 2))  # in (0, 1] for the logs below
    volume_noise = streams["volume"].standard_normal(n_hours)

    beta = math.sqrt(shape.factor_correlation) * p.loading
    idio = math.sqrt(1.0 - beta * beta)
    scale = p.sigma * market.scale
    drift = _REGIME_TREND[market.regime] * market.trend_sign * p.sigma
    if shape.effect_size > 0:  # with no effect, no burst draw touches the path
        t0 = as_utc(origin)
        bursts = burst_hours(pair.split("/")[0], seed, t0, t0 + timedelta(hours=n_hours))
        k = effect_kernel(n_hours, bursts, shape.lag_hours, EFFECT_DECAY_HOURS)
        fade = effect_kernel(n_hours, bursts, shape.lag_hours + FADE_DELAY_HOURS, FADE_DECAY_HOURS)
        fade *= (1 - math.exp(-1 / FADE_DECAY_HOURS)) / (1 - math.exp(-1 / EFFECT_DECAY_HOURS))
        scale = scale * (1.0 + shape.effect_size * VOL_SCALE * k)
        drift = drift + shape.effect_sign * shape.effect_size * DRIFT_SCALE * p.sigma * (k - fade)

    returns = drift + scale * (beta * market.factor + idio * own)
    if shape.return_ar:  # a pair whose dynamics differ from the pool: its hourly returns are AR(1)
        returns = lfilter([1.0], [1.0, -shape.return_ar], returns) * math.sqrt(1.0 - shape.return_ar**2)
    if shape.motif_rate > 0:  # with no motif, no motif draw touches the path
        length = shape.motif_length
        bars = motif_shape(seed, length) * MOTIF_AMPLITUDE * p.sigma
        for start in motif_hours(pair, seed, origin, n_hours, shape.motif_rate, length).tolist():
            returns[start : start + length] = bars[: n_hours - start]  # the shape replaces drift and noise
            returns[start + length : start + length + MOTIF_HORIZON_HOURS] += (
                shape.motif_move * p.sigma / MOTIF_HORIZON_HOURS
            )
    diffusion_sd = scale * np.sqrt((beta * market.factor_sd) ** 2 + (idio * own_sd) ** 2)
    log_close = math.log(p.price) + np.cumsum(returns)
    log_open = np.concatenate(([math.log(p.price)], log_close[:-1]))
    # Extremes of a Brownian bridge from 0 to the hour's return (exact inverse-CDF draws).
    spread = np.sqrt(returns[:, None] ** 2 - 2.0 * diffusion_sd[:, None] ** 2 * np.log(bar_u))
    log_high = log_open + (returns + spread[:, 0]) / 2.0
    log_low = log_open + (returns - spread[:, 1]) / 2.0
    open_, close = np.exp(log_open), np.exp(log_close)
    high = np.maximum(np.exp(log_high), np.maximum(open_, close))
    low = np.minimum(np.exp(log_low), np.minimum(open_, close))
    activity = 0.3 * market.scale + np.abs(returns) / p.sigma  # busier when and where prices move
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
    effect_sign: int = defaults.EFFECT_SIGN,
    factor_correlation: float = defaults.FACTOR_CORRELATION,
    weekend_vol: float = defaults.WEEKEND_VOL,
    intraday_vol: float = defaults.INTRADAY_VOL,
    long_memory: float = defaults.LONG_MEMORY,
    motif_rate: float = defaults.MOTIF_RATE,
    motif_length: int = defaults.MOTIF_LENGTH,
    motif_move: float = defaults.MOTIF_MOVE,
    return_ar: float = 0.0,
) -> pl.DataFrame:
    """Hourly candles of ``pair`` for the days ``start..end`` (inclusive) in ``OHLCV_SCHEMA``.

    The path always starts at ``origin``, so a window equals the same slice of a longer simulation.
    Planted effect: ``lag_hours`` after each burst of the base asset, volatility is multiplied by
    ``1 + effect_size * VOL_SCALE * k`` and the drift moved by ``effect_sign * effect_size * DRIFT_SCALE
    * sigma * k`` (``k`` = ``effect_kernel`` with ``EFFECT_DECAY_HOURS``); the same total drift then
    fades out slowly over the following days, so long paths do not trend without bound.
    ``effect_size=0`` ignores bursts entirely (exactly the no-effect path, whatever lag and sign).
    Planted motif: see the module docstring; ``motif_rate=0`` draws nothing for it (exactly the path
    without a motif, whatever its length and move).
    ``return_ar``: the pair's hourly log returns follow an AR(1) with this coefficient (variance kept), a
    pair whose dynamics differ from the pool's; 0 draws the same path as before.
    The other settings shape the market itself (see the module docstring and ``synthetic.settings``).
    """
    pair = normalize_pair(pair)
    for name, value in (("start", start), ("end", end), ("origin", origin)):
        if not isinstance(value, date) or isinstance(value, datetime):
            raise TypeError(f"{name} must be a datetime.date, got {value!r}")
    if start > end:
        raise ValueError(f"start {start} is after end {end}")
    if start < origin:
        raise ValueError(f"start {start} is before the simulation origin {origin}")
    size, sign = check_setting("effect_size", effect_size), check_setting("effect_sign", effect_sign)
    lag = int(check_setting("lag_hours", lag_hours))
    rate = check_setting("motif_rate", motif_rate)
    length = int(check_setting("motif_length", motif_length))
    move = check_setting("motif_move", motif_move)
    shape = _Shape(
        effect_size=size,
        effect_sign=sign if size else 1.0,  # no effect: one path whatever the lag and sign
        lag_hours=lag if size else 0,
        factor_correlation=check_setting("factor_correlation", factor_correlation),
        weekend_vol=check_setting("weekend_vol", weekend_vol),
        intraday_vol=check_setting("intraday_vol", intraday_vol),
        long_memory=check_setting("long_memory", long_memory),
        motif_rate=rate,
        motif_length=length if rate else defaults.MOTIF_LENGTH,  # no motif: one path whatever its shape
        motif_move=move if rate else defaults.MOTIF_MOVE,
        return_ar=check_setting("distinct_ar", return_ar),
    )
    first = (start - origin).days * 24
    stop = ((end - origin).days + 1) * 24
    horizon = -(-stop // (24 * _BLOCK_DAYS)) * 24 * _BLOCK_DAYS
    path = _simulate_path(pair, check_seed(seed), shape, origin, horizon)
    return path.slice(first, stop - first)
