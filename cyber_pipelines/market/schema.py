"""The OHLCV table: one row per candle, UTC timestamps at the candle's open."""

from __future__ import annotations

import polars as pl

OHLCV_SCHEMA: dict[str, pl.DataType] = {
    "timestamp": pl.Datetime("us", "UTC"),
    "open": pl.Float64(),
    "high": pl.Float64(),
    "low": pl.Float64(),
    "close": pl.Float64(),
    "volume": pl.Float64(),
}
OHLCV_COLUMNS = list(OHLCV_SCHEMA)
PRICE_COLUMNS = ("open", "high", "low", "close")


class OhlcvError(ValueError):
    """Candles that break the OHLCV contract; the message says which rule and where."""


def empty_ohlcv() -> pl.DataFrame:
    return pl.DataFrame(schema=OHLCV_SCHEMA)


def conform_ohlcv(df: pl.DataFrame) -> pl.DataFrame:
    """Cast to the canonical schema and column order, sorted by timestamp.

    Raises ``OhlcvError`` for missing columns or values that cannot be cast; does not drop or
    repair rows: duplicates, bad prices and gaps are the GX suite's to find (``quality.ohlcv``).
    """
    missing = [c for c in OHLCV_COLUMNS if c not in df.columns]
    if missing:
        raise OhlcvError(f"missing columns {missing}; have {df.columns}")
    try:
        out = df.select(
            pl.col("timestamp").cast(OHLCV_SCHEMA["timestamp"], strict=True),
            *[pl.col(c).cast(pl.Float64, strict=True) for c in OHLCV_COLUMNS[1:]],
        )
    except (pl.exceptions.InvalidOperationError, pl.exceptions.ComputeError) as exc:
        raise OhlcvError(f"columns cannot be read as OHLCV: {exc}") from exc
    return out.sort("timestamp")
