"""Training samples of the forecasters: per bar, a window of recent bars in, the next horizon's return and variance out.

Everything is scale-free, so one model serves every pair: at bar t (known at its close) the scale is the
trailing root mean square of the last ``SCALE_BARS`` hourly log returns (bars t-SCALE_BARS+1..t). The input
is, for each of the last ``length`` bars, its log return, its log high/low range (both over the scale) and
its log volume minus the trailing mean log volume; plus the hour of day (sin, cos) and a weekend flag of
bar t+1. The targets are the next ``horizon`` bars' summed log return over ``scale * sqrt(horizon)`` and
their summed squared log returns over ``scale**2 * horizon`` (realized variance). ``outcome_end`` is when
the targets are known (the close of bar t+horizon): a sample may train a model only if that is before
the model's cutoff. Bars must be hourly and consecutive; a window or horizon across a gap is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import polars as pl

BAR = timedelta(hours=1)
SCALE_BARS = 168  # a week of hours: the trailing volatility every input and target is measured in
FEATURES_PER_BAR = 3  # return, range, volume
CALENDAR_FEATURES = 3  # hour of day (sin, cos), weekend


def input_dim(length: int) -> int:
    return length * FEATURES_PER_BAR + CALENDAR_FEATURES


@dataclass(frozen=True)
class Samples:
    """Rows in time order: inputs ``x`` (n, input_dim), standardized targets, and what converts them back."""

    pair: str
    timestamp: np.ndarray  # datetime64[us]: the bar (its open time) at whose close the forecast is made
    outcome_end: np.ndarray  # datetime64[us]: when the targets are known (the close of bar t+horizon)
    x: np.ndarray  # float32
    ret: np.ndarray  # next-horizon log return / (scale * sqrt(horizon)); NaN where not yet known
    var: np.ndarray  # next-horizon realized variance / (scale**2 * horizon); NaN where not yet known
    scale: np.ndarray  # trailing hourly volatility at t
    horizon: int

    def __len__(self) -> int:
        return len(self.x)

    def take(self, mask: np.ndarray) -> Samples:
        return Samples(
            self.pair, self.timestamp[mask], self.outcome_end[mask], self.x[mask], self.ret[mask], self.var[mask],
            self.scale[mask], self.horizon,
        )  # fmt: skip

    def known_by(self, cutoff: datetime) -> Samples:
        """Samples whose outcome was known by ``cutoff`` (and is finite): what a model fitted then may see."""
        limit = np.datetime64(cutoff.replace(tzinfo=None), "us")
        return self.take((self.outcome_end <= limit) & np.isfinite(self.ret) & np.isfinite(self.var))

    def between(self, start: datetime, end: datetime) -> Samples:
        """Samples made at bars in [start, end) with a known outcome (held-out evaluation)."""
        lo, hi = np.datetime64(start.replace(tzinfo=None), "us"), np.datetime64(end.replace(tzinfo=None), "us")
        return self.take((self.timestamp >= lo) & (self.timestamp < hi) & np.isfinite(self.ret))

    def raw_return(self, z: np.ndarray) -> np.ndarray:
        return np.asarray(z) * self.scale * np.sqrt(self.horizon)

    def raw_variance(self, z: np.ndarray) -> np.ndarray:
        return np.asarray(z) * self.scale**2 * self.horizon


def _trailing_mean(x: np.ndarray, n: int) -> np.ndarray:
    """Mean of x[t-n+1..t] (NaN for t < n-1)."""
    c = np.concatenate([[0.0], np.cumsum(x)])
    out = np.full(len(x), np.nan)
    out[n - 1 :] = (c[n:] - c[:-n]) / n
    return out


def build_samples(candles: pl.DataFrame, pair: str, length: int = 24, horizon: int = 1) -> Samples:
    """Every bar's sample of one pair's hourly candles (sorted by time); ValueError names what is wrong."""
    if length < 1 or horizon < 1:
        raise ValueError(f"{pair}: length and horizon must be >= 1, got {length}, {horizon}")
    missing = [c for c in ("timestamp", "high", "low", "close", "volume") if c not in candles.columns]
    if missing:
        raise ValueError(f"{pair}: candles lack columns {missing}")
    candles = candles.sort("timestamp")
    ts = candles["timestamp"].dt.replace_time_zone(None).to_numpy().astype("datetime64[us]")
    close = candles["close"].cast(pl.Float64).to_numpy()
    high = candles["high"].cast(pl.Float64).to_numpy()
    low = candles["low"].cast(pl.Float64).to_numpy()
    volume = candles["volume"].cast(pl.Float64).to_numpy()
    if not (np.all(close > 0) and np.all(low > 0) and np.all(volume >= 0)):
        row = int(np.argmax(~((close > 0) & (low > 0) & (volume >= 0))))
        raise ValueError(f"{pair}: row {row} ({ts[row]}): non-positive price or negative volume")
    n = len(ts)
    step = np.timedelta64(3_600_000_000, "us")
    consecutive = np.concatenate([[False], np.diff(ts) == step])  # bar t follows bar t-1 by one hour
    ret = np.concatenate([[np.nan], np.diff(np.log(close))])
    ret[~consecutive] = np.nan
    rng = np.log(high / low)
    logvol = np.log1p(volume)
    scale = np.sqrt(_trailing_mean(np.nan_to_num(ret**2), SCALE_BARS))  # windows with a gap are dropped below
    vol_mean = _trailing_mean(logvol, SCALE_BARS)
    # a run of consecutive bars: the window (length bars, and the scale's SCALE_BARS) and the horizon inside it
    run_start = np.maximum.accumulate(np.where(~consecutive, np.arange(n), 0))
    need_back = max(length, SCALE_BARS + 1) - 1
    t = np.arange(n)
    valid = (t - run_start >= need_back) & (scale > 0)
    t_ok = t[valid]
    cols = []
    for lag in range(length - 1, -1, -1):
        idx = t_ok - lag
        cols += [ret[idx] / scale[t_ok], rng[idx] / scale[t_ok], logvol[idx] - vol_mean[t_ok]]
    next_ts = ts[t_ok] + step
    hour = (next_ts.astype("datetime64[h]").astype(np.int64) % 24).astype(float)
    weekday = (next_ts.astype("datetime64[D]").astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday
    cols += [np.sin(2 * np.pi * hour / 24), np.cos(2 * np.pi * hour / 24), (weekday >= 5).astype(float)]
    x = np.stack(cols, axis=1).astype(np.float32) if len(t_ok) else np.zeros((0, input_dim(length)), np.float32)
    # targets: bars t+1..t+horizon, all consecutive with t
    fwd_ret = np.full(len(t_ok), np.nan)
    fwd_var = np.full(len(t_ok), np.nan)
    end = t_ok + horizon
    inside = end < n
    inside[inside] &= run_start[end[inside]] <= t_ok[inside]
    c_ret = np.concatenate([[0.0], np.cumsum(np.nan_to_num(ret))])
    c_sq = np.concatenate([[0.0], np.cumsum(np.nan_to_num(ret) ** 2)])
    e, s = end[inside], t_ok[inside]
    fwd_ret[inside] = (c_ret[e + 1] - c_ret[s + 1]) / (scale[s] * np.sqrt(horizon))
    fwd_var[inside] = (c_sq[e + 1] - c_sq[s + 1]) / (scale[s] ** 2 * horizon)
    return Samples(
        pair=pair,
        timestamp=ts[t_ok],
        outcome_end=ts[t_ok] + step * (horizon + 1),  # timestamps open their bar: bar t+horizon closes then
        x=x,
        ret=fwd_ret,
        var=fwd_var,
        scale=scale[t_ok],
        horizon=horizon,
    )


def concat(samples: list[Samples]) -> Samples:
    """Several pairs' samples as one set, sorted by time (pair names joined)."""
    if not samples:
        raise ValueError("no samples to join")
    order = np.argsort(np.concatenate([s.timestamp for s in samples]), kind="stable")
    return Samples(
        pair=",".join(s.pair for s in samples),
        timestamp=np.concatenate([s.timestamp for s in samples])[order],
        outcome_end=np.concatenate([s.outcome_end for s in samples])[order],
        x=np.concatenate([s.x for s in samples])[order],
        ret=np.concatenate([s.ret for s in samples])[order],
        var=np.concatenate([s.var for s in samples])[order],
        scale=np.concatenate([s.scale for s in samples])[order],
        horizon=samples[0].horizon,
    )
