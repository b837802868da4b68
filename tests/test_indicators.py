"""Indicators against values worked out from the textbook definitions with plain Python loops."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from cyber_pipelines.features.indicators import (
    INDICATOR_COLUMNS,
    WARMUP_BARS,
    add_indicators,
    indicator_columns,
    warmup_bars,
)
from cyber_pipelines.market.schema import conform_ohlcv

# A 20-bar close series with ups and downs (the classic RSI worksheet's closes).
CLOSES_20 = [
    44.34, 44.09, 44.15, 43.61, 44.33, 44.83, 45.10, 45.42, 45.84, 46.08,
    45.89, 46.03, 45.61, 46.28, 46.28, 46.00, 46.03, 46.41, 46.22, 45.64,
]  # fmt: skip


def candles(close: list[float] | np.ndarray, *, high=None, low=None, volume=None) -> pl.DataFrame:
    close = np.asarray(close, dtype=float)
    n = close.size
    start = datetime(2024, 1, 1, tzinfo=UTC)
    return conform_ohlcv(
        pl.DataFrame(
            {
                "timestamp": [start + timedelta(hours=i) for i in range(n)],
                "open": close,
                "high": close + 0.5 if high is None else np.asarray(high, dtype=float),
                "low": close - 0.5 if low is None else np.asarray(low, dtype=float),
                "close": close,
                "volume": np.arange(1.0, n + 1.0) if volume is None else np.asarray(volume, dtype=float),
            }
        )
    )


def random_walk(n: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    high = close * (1 + np.abs(rng.normal(0, 0.01, n)))
    low = close * (1 - np.abs(rng.normal(0, 0.01, n)))
    return candles(close, high=high, low=low, volume=rng.lognormal(2, 1, n))


# --- textbook recursions, one step at a time -------------------------------------------------------
def seeded_average(values: list[float | None], n: int, alpha: float) -> list[float | None]:
    """First value = SMA of the first n non-null inputs, then y += alpha * (x - y)."""
    out: list[float | None] = []
    seen: list[float] = []
    y: float | None = None
    for x in values:
        if x is None:
            out.append(None)
            continue
        if y is None:
            seen.append(x)
            if len(seen) == n:
                y = sum(seen) / n
            out.append(y)
        else:
            y = y + alpha * (x - y)
            out.append(y)
    return out


def textbook_ema(values, span):
    return seeded_average(values, span, 2 / (span + 1))


def textbook_rsi(closes: list[float], period: int = 14) -> list[float | None]:
    out: list[float | None] = [None] * len(closes)
    gains = [max(closes[i] - closes[i - 1], 0.0) for i in range(1, len(closes))]
    losses = [max(closes[i - 1] - closes[i], 0.0) for i in range(1, len(closes))]
    avg_gain = sum(gains[:period]) / period
    avg_loss = sum(losses[:period]) / period
    for i in range(period, len(closes)):
        if i > period:
            avg_gain = (avg_gain * (period - 1) + gains[i - 1]) / period
            avg_loss = (avg_loss * (period - 1) + losses[i - 1]) / period
        out[i] = 100.0 if avg_loss == 0 else 100.0 - 100.0 / (1.0 + avg_gain / avg_loss)
    return out


def assert_close(actual: list, expected: list, tol: float = 1e-9) -> None:
    assert len(actual) == len(expected)
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        if e is None:
            assert a is None, f"row {i}: expected null, got {a}"
        else:
            assert a is not None and math.isclose(a, e, rel_tol=tol, abs_tol=tol), f"row {i}: {a} != {e}"


# --- tests ---------------------------------------------------------------------------------------
def test_rsi_matches_wilder_recursion_on_20_bars():
    out = add_indicators(candles(CLOSES_20))
    expected = textbook_rsi(CLOSES_20)
    assert_close(out["rsi_14"].to_list(), expected)
    # by hand, bar 15: gains of the first 14 changes sum to 3.34, losses to 1.40, so
    # RSI = 100 * (3.34 / 14) / ((3.34 + 1.40) / 14) = 70.464 (worksheets that round RS to 2.39 say 70.53)
    assert out["rsi_14"][14] == pytest.approx(100 * 3.34 / 4.74, rel=1e-9)
    assert out["rsi_14"].null_count() == 14


def test_rsi_bounds_and_extremes():
    out = add_indicators(random_walk(500, seed=1))
    rsi = out["rsi_14"].drop_nulls()
    assert rsi.len() == 500 - 14 and rsi.is_between(0, 100).all()
    up = add_indicators(candles(np.linspace(10, 40, 60)))["rsi_14"].drop_nulls()
    assert (up == 100.0).all()
    down = add_indicators(candles(np.linspace(40, 10, 60)))["rsi_14"].drop_nulls()
    assert (down == 0.0).all()
    flat = add_indicators(candles([5.0] * 40))["rsi_14"].drop_nulls()
    assert (flat == 50.0).all()


def test_macd_and_emas_match_plain_python_ema():
    df = random_walk(120, seed=2)
    out = add_indicators(df, ema_spans=(5, 12, 30))
    closes = df["close"].to_list()
    fast, slow = textbook_ema(closes, 12), textbook_ema(closes, 26)
    macd = [None if s is None or f is None else f - s for f, s in zip(fast, slow, strict=True)]
    signal = textbook_ema(macd, 9)
    hist = [None if s is None or m is None else m - s for m, s in zip(macd, signal, strict=True)]
    assert_close(out["macd"].to_list(), macd)
    assert_close(out["macd_signal"].to_list(), signal)
    assert_close(out["macd_hist"].to_list(), hist)
    assert out["macd"].null_count() == 25 and out["macd_signal"].null_count() == 33
    for span in (5, 12, 30):
        assert_close(out[f"ema_{span}"].to_list(), textbook_ema(closes, span))
    # EMA(3) of 1..5 by hand: seed (1+2+3)/3 = 2, then 2 + 0.5*(4-2) = 3, then 3 + 0.5*(5-3) = 4
    small = add_indicators(candles([1.0, 2, 3, 4, 5]), ema_spans=(3,))
    assert small["ema_3"].to_list() == [None, None, 2.0, 3.0, 4.0]


def test_bollinger_uses_population_std():
    df = random_walk(60, seed=3)
    out = add_indicators(df)
    closes = df["close"].to_list()
    for i in (19, 33, 59):
        window = closes[i - 19 : i + 1]
        mid = sum(window) / 20
        std = math.sqrt(sum((c - mid) ** 2 for c in window) / 20)  # ddof = 0
        assert out["bb_middle_20_2"][i] == pytest.approx(mid, rel=1e-12)
        assert out["bb_upper_20_2"][i] == pytest.approx(mid + 2 * std, rel=1e-12)
        assert out["bb_lower_20_2"][i] == pytest.approx(mid - 2 * std, rel=1e-12)
    assert out["bb_middle_20_2"].null_count() == 19
    valid = out.drop_nulls("bb_middle_20_2")
    assert (valid["bb_lower_20_2"] <= valid["bb_middle_20_2"]).all()
    assert (valid["bb_middle_20_2"] <= valid["bb_upper_20_2"]).all()


def test_atr_is_wilder_smoothed_true_range():
    df = random_walk(80, seed=4)
    out = add_indicators(df)
    h, lo, c = df["high"].to_list(), df["low"].to_list(), df["close"].to_list()
    tr: list[float | None] = [None] + [
        max(h[i] - lo[i], abs(h[i] - c[i - 1]), abs(lo[i] - c[i - 1])) for i in range(1, len(c))
    ]
    assert_close(out["atr_14"].to_list(), seeded_average(tr, 14, 1 / 14))
    # a gap up: the true range covers the gap from the previous close, not only high - low
    gap = add_indicators(candles([10.0] * 15 + [20.0], high=[10.5] * 15 + [20.5], low=[9.5] * 15 + [19.5]))
    assert gap["atr_14"][14] == pytest.approx(1.0)  # 14 bars of TR 1
    assert gap["atr_14"][15] == pytest.approx(1.0 + (10.5 - 1.0) / 14)  # TR = 20.5 - 10 = 10.5


def test_returns_realized_vol_and_volume_z():
    df = random_walk(70, seed=5)
    out = add_indicators(df, vol_window=10, zscore_window=8)
    c, v = df["close"].to_list(), df["volume"].to_list()
    r = [math.log(c[i] / c[i - 1]) for i in range(1, len(c))]
    assert out["log_return"][0] is None
    assert out["log_return"][1:].to_list() == pytest.approx(r, rel=1e-12)
    i = 40
    window = r[i - 10 : i]  # returns of bars i-9..i
    mean = sum(window) / 10
    assert out["realized_vol_10"][i] == pytest.approx(math.sqrt(sum((x - mean) ** 2 for x in window) / 9))
    assert out["realized_vol_10"].null_count() == 10
    vw = v[i - 7 : i + 1]
    vm = sum(vw) / 8
    vs = math.sqrt(sum((x - vm) ** 2 for x in vw) / 7)
    assert out["volume_z_8"][i] == pytest.approx((v[i] - vm) / vs)
    const = add_indicators(candles(np.linspace(1, 2, 40), volume=[3.0] * 40))
    assert (const["volume_z_24"].drop_nulls() == 0.0).all()


def test_no_nulls_or_nans_after_warmup_and_column_contract():
    df = random_walk(300, seed=6)
    out = add_indicators(df)
    assert out.columns == [*df.columns, *INDICATOR_COLUMNS]
    assert out.height == df.height
    after = out.slice(WARMUP_BARS).select(INDICATOR_COLUMNS)
    assert after.null_count().sum_horizontal().item() == 0
    assert all(after[c].is_finite().all() for c in INDICATOR_COLUMNS)
    # the warm-up is tight: the row before it still has a null somewhere
    assert out.slice(WARMUP_BARS - 1, 1).select(INDICATOR_COLUMNS).null_count().sum_horizontal().item() > 0
    custom = add_indicators(df, ema_spans=(100,), vol_window=120, zscore_window=5)
    n = warmup_bars((100,), 120, 5)
    assert n == 120
    cols = indicator_columns((100,), 120, 5)
    assert custom.slice(n).select(cols).null_count().sum_horizontal().item() == 0
    assert custom.slice(n - 1, 1).select(cols).null_count().sum_horizontal().item() > 0


def test_indicators_are_causal():
    df = random_walk(200, seed=7)
    full = add_indicators(df)
    head = add_indicators(df.head(120))
    assert full.head(120).equals(head)


def test_bad_input_is_rejected_clearly():
    df = random_walk(30, seed=8)
    with pytest.raises(ValueError, match=r"missing OHLCV columns \['volume'\]"):
        add_indicators(df.drop("volume"))
    with pytest.raises(ValueError, match="strictly increasing"):
        add_indicators(df.reverse())
    with pytest.raises(ValueError, match="null values"):
        add_indicators(df.with_columns(close=pl.when(pl.int_range(pl.len()) == 3).then(None).otherwise("close")))
    with pytest.raises(ValueError, match=">= 2"):
        add_indicators(df, ema_spans=(1,))
    with pytest.raises(ValueError, match="repeated EMA spans"):
        add_indicators(df, ema_spans=(12, 12))


def test_short_input_gives_nulls_not_errors():
    out = add_indicators(random_walk(5, seed=9))
    assert out.height == 5 and out["rsi_14"].null_count() == 5 and out["ema_50"].null_count() == 5
    assert add_indicators(random_walk(0, seed=9)).height == 0
