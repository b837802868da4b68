"""Market windows: one pair's recent bars as a normalized vector, with what followed it.

A window ends at bar t (the row's ``timestamp`` is that bar's open, as in the candle tables; it is
known at t's close, ``timestamp + bar``) and holds the last ``length`` bars, three channels each:

- returns: log returns divided by the window's own standard deviation (the shape, not the scale);
- volatility: the bar's high-low log range over the window's mean range, minus 1;
- volume: the window's z-score of log volume;

plus one scalar, the log of the window's return volatility over the trailing ``CONTEXT_BARS`` bars'
(is this a loud or a quiet stretch of the market). A window whose bars are not consecutive (a gap in
the candles) is not made.

What followed: ``fwd_<h>h`` = ln(close at t + h / close at t) for h in ``HORIZONS`` (null where the
candles end or have a gap), and ``horizon_end``, the time the longest of them is known (the close of
bar t + 24: ``timestamp + 25 bars``). A query at time T may see a window only if ``horizon_end <= T``:
that is the no-look-ahead rule of retrieval. ``regime`` labels the window's volatility against the
trailing context (calm / normal / turbulent, causal).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import polars as pl
from numpy.lib.stride_tricks import sliding_window_view

DEFAULT_LENGTH = 48  # hours of bars in a window
HORIZONS = (1, 6, 24)  # hours ahead of each forward return
CONTEXT_BARS = 720  # trailing bars the volatility level and the regime are measured against
CHANNELS = 3
CALM, TURBULENT = 0.8, 1.25  # window vol / trailing median vol below, above which the regime is calm, turbulent
BAR = timedelta(hours=1)
_EPS = 1e-12


def window_dim(length: int) -> int:
    """The length of a window vector: three channels per bar plus the volatility level."""
    return CHANNELS * length + 1


def known_at(timestamp: datetime) -> datetime:
    """When a bar opened at ``timestamp`` has closed (its window is known, a query may be made)."""
    return timestamp + BAR


def _zscore(x: np.ndarray) -> np.ndarray:
    sd = x.std(axis=1, keepdims=True)
    return (x - x.mean(axis=1, keepdims=True)) / np.maximum(sd, _EPS)


def build_windows(candles: pl.DataFrame, pair: str, length: int = DEFAULT_LENGTH) -> pl.DataFrame:
    """Every window of ``candles`` (hourly OHLCV sorted by time): pair, timestamp, horizon_end, regime,
    the forward returns and ``vector`` (float32, ``window_dim(length)``)."""
    if length < 2:
        raise ValueError(f"window length must be >= 2 bars, got {length}")
    missing = [c for c in ("timestamp", "high", "low", "close", "volume") if c not in candles.columns]
    if missing:
        raise ValueError(f"{pair}: candles lack columns {missing}")
    ts = candles["timestamp"]
    n = candles.height
    empty = _frame(pair, ts.head(0), np.zeros((0, window_dim(length)), np.float32), np.zeros((0, len(HORIZONS))), [])
    if n < length + 1:
        return empty
    close = candles["close"].cast(pl.Float64).to_numpy()
    high = candles["high"].cast(pl.Float64).to_numpy()
    low = candles["low"].cast(pl.Float64).to_numpy()
    volume = candles["volume"].cast(pl.Float64).to_numpy()
    if np.any(~np.isfinite(close)) or np.any(close <= 0) or np.any(low <= 0):
        bad = int(np.flatnonzero(~np.isfinite(close) | (close <= 0) | (low <= 0))[0])
        raise ValueError(f"{pair}: non-positive or missing price at row {bad} ({ts[bad]})")
    hours = (ts.dt.epoch("s").to_numpy() // 3600).astype(np.int64)
    log_close = np.log(close)
    ret = np.diff(log_close, prepend=np.nan)
    ret[1:][np.diff(hours) != 1] = np.nan  # a return across a gap is no hourly return
    rng = np.log(high / low)
    lvol = np.log1p(np.maximum(volume, 0.0))

    ends = np.arange(length, n)  # the first bar has no return, so a window starts at row >= 1
    consecutive = hours[ends] - hours[ends - length + 1] == length - 1
    ends = ends[consecutive]
    if ends.size == 0:
        return empty
    r = sliding_window_view(ret, length)[ends - length + 1]
    ends = ends[np.all(np.isfinite(r), axis=1)]
    r = sliding_window_view(ret, length)[ends - length + 1]
    g = sliding_window_view(rng, length)[ends - length + 1]
    v = sliding_window_view(lvol, length)[ends - length + 1]
    sd = r.std(axis=1)
    returns = r / np.maximum(sd, _EPS)[:, None]
    ranges = g / np.maximum(g.mean(axis=1), _EPS)[:, None] - 1.0
    volumes = _zscore(v)

    rolling_sd = pl.Series(ret).rolling_std(length, min_samples=length).to_numpy()
    context = pl.Series(rolling_sd).rolling_median(CONTEXT_BARS, min_samples=length).to_numpy()  # trailing, causal
    ratio = sd / np.where(np.isfinite(context[ends]) & (context[ends] > 0), context[ends], np.nan)
    level = np.log(np.where(np.isfinite(ratio), ratio, 1.0))
    vector = np.concatenate([returns, ranges, volumes, level[:, None]], axis=1).astype(np.float32)
    regime = np.where(
        ~np.isfinite(ratio),
        "unknown",
        np.where(ratio < CALM, "calm", np.where(ratio > TURBULENT, "turbulent", "normal")),
    )

    index = {int(h): i for i, h in enumerate(hours)}
    forward = np.full((ends.size, len(HORIZONS)), np.nan)
    for j, h in enumerate(HORIZONS):
        later = np.array([index.get(int(hours[e]) + h, -1) for e in ends])
        ok = later >= 0
        forward[ok, j] = log_close[later[ok]] - log_close[ends[ok]]
    return _frame(pair, ts.gather(ends), vector, forward, list(regime))


def _frame(pair: str, ts: pl.Series, vector: np.ndarray, forward: np.ndarray, regime: list[str]) -> pl.DataFrame:
    dim = vector.shape[1]
    frame = pl.DataFrame(
        {
            "pair": pl.Series([pair] * ts.len(), dtype=pl.String),
            "timestamp": ts,
            "regime": pl.Series(regime, dtype=pl.String),
            **{f"fwd_{h}h": pl.Series(forward[:, j], dtype=pl.Float64) for j, h in enumerate(HORIZONS)},
            "vector": pl.Series(vector, dtype=pl.Array(pl.Float32, dim)),
        }
    )
    return frame.with_columns(
        horizon_end=pl.col("timestamp") + BAR * (max(HORIZONS) + 1),
        **{f"fwd_{h}h": pl.col(f"fwd_{h}h").fill_nan(None) for h in HORIZONS},
    ).select("pair", "timestamp", "horizon_end", "regime", *[f"fwd_{h}h" for h in HORIZONS], "vector")


def window_matrix(windows: pl.DataFrame) -> np.ndarray:
    """The ``vector`` column as a float32 matrix (rows x dim)."""
    if windows.height == 0:
        dtype = windows.schema["vector"]
        return np.zeros((0, dtype.size if isinstance(dtype, pl.Array) else 0), np.float32)
    return windows["vector"].to_numpy().astype(np.float32, copy=False)


def epoch_seconds(values: pl.Series) -> np.ndarray:
    """Datetimes as int64 epoch seconds (the payload's time unit)."""
    return values.dt.epoch("s").to_numpy().astype(np.int64)
