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
    repair rows (duplicates and bad prices are reported by ``validate_ohlcv``).
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


def validate_ohlcv(df: pl.DataFrame) -> list[str]:
    """Return the OHLCV rules a (conformed) frame breaks, as readable reasons; empty when valid."""
    problems: list[str] = []
    nulls = df.null_count().row(0, named=True)
    bad_nulls = {c: n for c, n in nulls.items() if n}
    if bad_nulls:
        problems.append(f"null values: {bad_nulls}")
    dupes = df.height - df["timestamp"].n_unique()
    if dupes:
        problems.append(f"{dupes} duplicate timestamps")
    checks = {
        "prices must be > 0": pl.min_horizontal(*PRICE_COLUMNS) <= 0,
        "high < low": pl.col("high") < pl.col("low"),
        "open/close outside [low, high]": (pl.min_horizontal("open", "close") < pl.col("low"))
        | (pl.max_horizontal("open", "close") > pl.col("high")),
        "volume must be >= 0": pl.col("volume") < 0,
        "non-finite values": ~pl.all_horizontal(pl.col(*PRICE_COLUMNS, "volume").is_finite()),
    }
    for reason, bad in checks.items():
        rows = df.filter(bad.fill_null(False))
        if rows.height:
            problems.append(f"{reason}: {rows.height} rows, first at {rows['timestamp'][0]}")
    return problems
