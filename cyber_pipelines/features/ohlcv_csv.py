"""Read any OHLCV CSV (Date/timestamp, Open, High, Low, Close, Volume) and write its indicator table.

Column names match in any letter case; extra columns are ignored. The time column is the first of
``timestamp``, ``datetime``, ``date`` (combined with a separate ``time`` column if there is one),
``time``, or an unnamed first column (a pandas index, as in backtesting.py's GOOG.csv). Its values may
be ISO dates or datetimes (naive = UTC, offsets converted to UTC), compact ``YYYYMMDD`` dates, or unix
epochs in seconds, milliseconds, microseconds or nanoseconds (told apart by magnitude).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from cyber_pipelines.features.indicators import add_indicators
from cyber_pipelines.market.schema import OHLCV_COLUMNS, OhlcvError, conform_ohlcv
from cyber_pipelines.storage import write_atomic, write_parquet_atomic

_TIME_NAMES = ("timestamp", "datetime", "date", "time")
_VALUE_COLUMNS = OHLCV_COLUMNS[1:]  # open, high, low, close, volume
_EPOCH_UNITS = ((1e11, "s"), (1e14, "ms"), (1e17, "us"), (float("inf"), "ns"))


def _find_columns(header: list[str], path: Path) -> tuple[list[str], dict[str, str]]:
    """The source column(s) of the time and the source name of each of open..volume."""
    by_lower: dict[str, str] = {}
    for name in header:
        key = name.strip().lower()
        if key in by_lower and key:
            raise OhlcvError(f"{path}: columns {by_lower[key]!r} and {name!r} differ only in letter case")
        by_lower[key] = name
    missing = [c for c in _VALUE_COLUMNS if c not in by_lower]
    time_cols: list[str] = []
    if "timestamp" in by_lower or "datetime" in by_lower:
        time_cols = [by_lower.get("timestamp") or by_lower["datetime"]]
    elif "date" in by_lower:
        time_cols = [by_lower["date"], *([by_lower["time"]] if "time" in by_lower else [])]
    elif "time" in by_lower:
        time_cols = [by_lower["time"]]
    elif header and header[0].strip() == "":
        time_cols = [header[0]]
    else:
        missing.insert(0, "timestamp (or date)")
    if missing:
        raise OhlcvError(
            f"{path}: missing columns {missing}; need Date/timestamp, Open, High, Low, Close, Volume "
            f"(any letter case), have {header}"
        )
    return time_cols, {c: by_lower[c] for c in _VALUE_COLUMNS}


def _parse_time(raw: pl.Series, path: Path, column: str) -> pl.Series:
    text = raw.str.strip_chars()
    if text.null_count() or (text == "").any():
        row = int((text.is_null() | (text == "")).arg_max() or 0)
        raise OhlcvError(f"{path}: empty time in column {column!r} at data row {row + 1}")
    if text.str.contains(r"^\d{8}$").all():  # 20240131: a compact date, not an epoch in 1970
        return _strptime(text, "%Y%m%d", path, column)
    numeric = text.cast(pl.Float64, strict=False)
    if numeric.null_count() == 0:
        magnitude = float(numeric.abs().max() or 0.0)  # type: ignore[arg-type]
        unit = next(u for limit, u in _EPOCH_UNITS if magnitude < limit)
        scale = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": 0.001}[unit]
        micros = (numeric * scale).round().cast(pl.Int64)
        return micros.cast(pl.Datetime("us")).dt.replace_time_zone("UTC").alias("timestamp")
    return _strptime(text, None, path, column)


def _strptime(text: pl.Series, fmt: str | None, path: Path, column: str) -> pl.Series:
    try:
        return text.str.to_datetime(fmt, time_unit="us", time_zone="UTC").alias("timestamp")
    except (pl.exceptions.ComputeError, pl.exceptions.InvalidOperationError) as exc:
        raise OhlcvError(
            f"{path}: column {column!r} is neither ISO dates/datetimes nor unix epochs "
            f"(first value {text[0]!r}): {str(exc).splitlines()[0]}"
        ) from exc


def read_ohlcv_csv(path: str | Path) -> pl.DataFrame:
    """Candles from an OHLCV CSV in ``OHLCV_SCHEMA`` (UTC timestamps), sorted by time.

    Raises ``OhlcvError`` (a ``ValueError``) naming the missing column, the unreadable value and its row.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such CSV file: {path}")
    try:
        raw = pl.read_csv(path, infer_schema=False)
    except pl.exceptions.PolarsError as exc:
        raise OhlcvError(f"{path}: not a readable CSV: {str(exc).splitlines()[0]}") from exc
    time_cols, sources = _find_columns(raw.columns, path)
    if raw.height == 0:
        raise OhlcvError(f"{path}: no data rows")
    time_text = raw[time_cols[0]] if len(time_cols) == 1 else raw[time_cols[0]] + " " + raw[time_cols[1]]
    columns = [_parse_time(time_text, path, " + ".join(time_cols))]
    for name, source in sources.items():
        text = raw[source].str.strip_chars()
        values = text.cast(pl.Float64, strict=False)
        bad = values.is_null()
        if bad.any():
            row = int(bad.arg_max() or 0)
            raise OhlcvError(f"{path}: column {source!r} data row {row + 1}: {text[row]!r} is not a number")
        columns.append(values.alias(name))
    return conform_ohlcv(pl.DataFrame(columns))


def compute_features_file(input: Path, output: Path) -> pl.DataFrame:
    """Read an OHLCV CSV, add the indicators and write them to ``output`` (.parquet or .csv).

    The output is written atomically (temp file + rename). Returns the feature table.
    """
    input, output = Path(input), Path(output)
    suffix = output.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise ValueError(f"output must end in .parquet or .csv, got {output.name!r}")
    features = add_indicators(read_ohlcv_csv(input))
    if suffix == ".parquet":
        write_parquet_atomic(features, output)
    else:
        write_atomic(output, features.write_csv)
    return features
