"""Technical indicators on one pair's OHLCV candles, as polars expressions (no row loops).

Conventions (each row is a bar; its values use that bar's close, so they are known at bar close):

* Every exponential average (EMA, Wilder's RSI/ATR smoothing, the MACD signal) is seeded the
  textbook (StockCharts / TA-Lib) way: its first value is the simple mean of the first ``n`` inputs,
  later values follow ``y_t = y_{t-1} + alpha * (x_t - y_{t-1})``. EMA uses ``alpha = 2 / (n + 1)``,
  Wilder uses ``alpha = 1 / n``. Rows before the seed are null. Implemented by replacing the input at
  the seed row with the ``n``-bar mean, nulling earlier rows, and running ``ewm_mean(adjust=False)``.
* ``log_return`` = ln(close_t / close_{t-1}); null on the first bar.
* ``rsi_14``: gains/losses of close-to-close changes, Wilder-smoothed; RSI = 100 * G / (G + L)
  (= 100 - 100 / (1 + G/L)); 100 when L = 0 < G, 50 when both are 0 (a flat market). First at row 14.
* ``macd`` = EMA12 - EMA26 of close (first at row 25); ``macd_signal`` = EMA9 of macd (row 33);
  ``macd_hist`` = macd - signal.
* Bollinger 20/2: middle = SMA20 of close, bands = middle +/- 2 * population std (ddof=0, as TA-Lib).
* ``atr_14``: true range max(high - low, |high - prev close|, |low - prev close|), null on the first bar
  (no previous close, as TA-Lib), Wilder-smoothed: first at row 14.
* ``realized_vol_<w>``: sample std (ddof=1) of the last ``w`` log returns, per bar, NOT annualised
  (multiply by sqrt(bars per year) for that).
* ``volume_z_<w>``: (volume - mean) / std (ddof=1) over the last ``w`` bars including the current one;
  0 when the window's volume is constant.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import polars as pl

from cyber_pipelines.market.schema import OHLCV_COLUMNS

RSI_PERIOD = 14
ATR_PERIOD = 14
MACD_FAST, MACD_SLOW, MACD_SIGNAL = 12, 26, 9
BB_PERIOD, BB_STDS = 20, 2
DEFAULT_EMA_SPANS: tuple[int, ...] = (12, 26, 50)
DEFAULT_VOL_WINDOW = 24
DEFAULT_ZSCORE_WINDOW = 24


def indicator_columns(
    ema_spans: Sequence[int] = DEFAULT_EMA_SPANS,
    vol_window: int = DEFAULT_VOL_WINDOW,
    zscore_window: int = DEFAULT_ZSCORE_WINDOW,
) -> list[str]:
    """Names of the columns ``add_indicators`` adds, in order."""
    return [
        "log_return",
        f"rsi_{RSI_PERIOD}",
        "macd",
        "macd_signal",
        "macd_hist",
        f"bb_upper_{BB_PERIOD}_{BB_STDS}",
        f"bb_middle_{BB_PERIOD}_{BB_STDS}",
        f"bb_lower_{BB_PERIOD}_{BB_STDS}",
        *[f"ema_{span}" for span in ema_spans],
        f"atr_{ATR_PERIOD}",
        f"realized_vol_{vol_window}",
        f"volume_z_{zscore_window}",
    ]


def warmup_bars(
    ema_spans: Sequence[int] = DEFAULT_EMA_SPANS,
    vol_window: int = DEFAULT_VOL_WINDOW,
    zscore_window: int = DEFAULT_ZSCORE_WINDOW,
) -> int:
    """Number of leading rows that may hold nulls; from this row index on, no indicator is null."""
    return max(
        RSI_PERIOD,  # first change at row 1, seed after 14 changes
        ATR_PERIOD,
        MACD_SLOW - 1 + MACD_SIGNAL - 1,  # macd from row 25, its 9-bar seed ends at row 33
        BB_PERIOD - 1,
        *[span - 1 for span in ema_spans],
        vol_window,  # log returns start at row 1
        zscore_window - 1,
    )


INDICATOR_COLUMNS: list[str] = indicator_columns()
WARMUP_BARS: int = warmup_bars()


def _seeded_ewm(x: pl.Expr, n: int, alpha: float, first: int) -> pl.Expr:
    """Recursive average of ``x`` seeded with the mean of its ``n`` values from row ``first`` on.

    ``x`` must be non-null from row ``first`` (earlier rows are ignored); the result is null
    before row ``first + n - 1``.
    """
    row = pl.int_range(pl.len())
    seed_row = first + n - 1
    seeded = pl.when(row < seed_row).then(None).when(row == seed_row).then(x.slice(first, n).mean()).otherwise(x)
    return seeded.ewm_mean(alpha=alpha, adjust=False)


def ema(x: pl.Expr, span: int, first: int = 0) -> pl.Expr:
    """EMA with ``alpha = 2 / (span + 1)``, seeded with the SMA of ``span`` values from row ``first``."""
    return _seeded_ewm(x, span, 2.0 / (span + 1), first)


def wilder(x: pl.Expr, period: int, first: int = 0) -> pl.Expr:
    """Wilder smoothing (alpha = 1 / period), seeded with the SMA of ``period`` values from ``first``."""
    return _seeded_ewm(x, period, 1.0 / period, first)


def _check_input(df: pl.DataFrame, windows: Sequence[int]) -> None:
    missing = [c for c in OHLCV_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"add_indicators: missing OHLCV columns {missing}; have {df.columns}")
    bad_windows = [w for w in windows if w < 2]
    if bad_windows:
        raise ValueError(f"add_indicators: windows and spans must be >= 2, got {bad_windows}")
    nulls = {c: n for c, n in df.select(OHLCV_COLUMNS).null_count().row(0, named=True).items() if n}
    if nulls:
        raise ValueError(f"add_indicators: null values in candles {nulls}")
    if df.height > 1 and not (df["timestamp"].diff().drop_nulls() > timedelta(0)).all():
        raise ValueError("add_indicators: candle timestamps must be strictly increasing (sorted, unique)")


def add_indicators(
    df: pl.DataFrame,
    *,
    ema_spans: Sequence[int] = DEFAULT_EMA_SPANS,
    vol_window: int = DEFAULT_VOL_WINDOW,
    zscore_window: int = DEFAULT_ZSCORE_WINDOW,
) -> pl.DataFrame:
    """Candles of one pair (OHLCV schema, sorted by timestamp) plus ``indicator_columns(...)``."""
    _check_input(df, [*ema_spans, vol_window, zscore_window])
    if len(set(ema_spans)) != len(ema_spans):
        raise ValueError(f"add_indicators: repeated EMA spans {list(ema_spans)}")
    close, high, low, volume = pl.col("close"), pl.col("high"), pl.col("low"), pl.col("volume")
    prev_close = close.shift(1)
    change = close.diff()
    true_range = pl.max_horizontal(high - low, (high - prev_close).abs(), (low - prev_close).abs())
    bb = f"{BB_PERIOD}_{BB_STDS}"
    # Stage 1: shared intermediates (temporary "_" columns) so that no expression is computed twice.
    out = df.with_columns(
        (close / prev_close).log().alias("log_return"),
        wilder(change.clip(lower_bound=0.0), RSI_PERIOD, first=1).alias("_gain"),
        wilder((-change).clip(lower_bound=0.0), RSI_PERIOD, first=1).alias("_loss"),
        *[ema(close, span).alias(f"_ema_{span}") for span in {MACD_FAST, MACD_SLOW, *ema_spans}],
        close.rolling_mean(BB_PERIOD).alias(f"bb_middle_{bb}"),
        close.rolling_std(BB_PERIOD, ddof=0).alias("_bb_std"),
        wilder(pl.when(prev_close.is_not_null()).then(true_range), ATR_PERIOD, first=1).alias(f"atr_{ATR_PERIOD}"),
        volume.rolling_mean(zscore_window).alias("_vol_mean"),
        volume.rolling_std(zscore_window, ddof=1).alias("_vol_std"),
    )
    gain, loss, vol_std = pl.col("_gain"), pl.col("_loss"), pl.col("_vol_std")
    out = out.with_columns(
        pl.when(gain + loss > 0)
        .then(100.0 * gain / (gain + loss))
        .otherwise(pl.when(gain.is_not_null()).then(50.0))
        .alias(f"rsi_{RSI_PERIOD}"),
        (pl.col(f"_ema_{MACD_FAST}") - pl.col(f"_ema_{MACD_SLOW}")).alias("macd"),
        (pl.col(f"bb_middle_{bb}") + BB_STDS * pl.col("_bb_std")).alias(f"bb_upper_{bb}"),
        (pl.col(f"bb_middle_{bb}") - BB_STDS * pl.col("_bb_std")).alias(f"bb_lower_{bb}"),
        *[pl.col(f"_ema_{span}").alias(f"ema_{span}") for span in ema_spans],
        pl.col("log_return").rolling_std(vol_window, ddof=1).alias(f"realized_vol_{vol_window}"),
        pl.when(vol_std > 0)
        .then((volume - pl.col("_vol_mean")) / vol_std)
        .otherwise(pl.when(vol_std.is_not_null()).then(0.0))
        .alias(f"volume_z_{zscore_window}"),
    )
    out = out.with_columns(ema(pl.col("macd"), MACD_SIGNAL, first=MACD_SLOW - 1).alias("macd_signal"))
    out = out.with_columns((pl.col("macd") - pl.col("macd_signal")).alias("macd_hist"))
    names = indicator_columns(ema_spans, vol_window, zscore_window)
    return out.select(*[c for c in df.columns if c not in names], *names)
