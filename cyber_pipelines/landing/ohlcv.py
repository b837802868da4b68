"""Parsing a dropped market file into hourly candles (one pair per file, all or nothing).

Accepted files:

- Kraken's downloadable OHLCVT CSV: no header; unix seconds, open, high, low, close, volume, trades;
  named ``PAIR_INTERVALMINUTES.csv`` (``XBTUSD_60.csv``).
- ccxt-style JSON: a list of ``[ms, open, high, low, close, volume]``; the pair comes from the name.
- Generic CSV/Parquet with named columns (any letter case): one of timestamp/datetime/date/time
  (read by ``cyber_pipelines.tables.parse_timestamps``), open/high/low/close/volume, and optionally
  pair/symbol; otherwise the pair comes from the name (``BTC-USD.csv``, ``BTCUSD_60.csv``).

Candles finer than one hour are aggregated to hourly candles (partial hours are kept: exchanges omit
minutes without trades). A file is rejected (``LandingError``) only when it cannot be read as candles:
unreadable, garbled or binary, wrong extension, unsafe name, missing columns or fields, values that are
not numbers, timestamps that cannot be read or lie outside 2009 .. now (a wrong epoch unit), no
recognisable pair, an interval coarser than an hour or not dividing one, candles off their interval's
grid, or repeated sub-hourly times (they cannot be aggregated). Content rules (prices > 0, low <= high,
volume >= 0, unique hours, gaps) are not checked here: those rows are staged as they are and the OHLCV
quality suite in the ingest blocks the days they fall on.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl

from cyber_pipelines.landing.files import EXTENSIONS, LandingError, check_content, check_name, decode, read_bytes
from cyber_pipelines.landing.pairs import HOUR_S, resolve_pair
from cyber_pipelines.market.schema import OHLCV_COLUMNS, OhlcvError, conform_ohlcv
from cyber_pipelines.tables import Columns, TableError, first_line, parse_numbers, parse_timestamps

TIMESTAMP_NAMES = ("timestamp", "datetime", "date", "time")
PAIR_NAMES = ("pair", "symbol")
KRAKEN_COLUMNS = ["timestamp", "open", "high", "low", "close", "volume", "trades"]
JSON_COLUMNS = ["timestamp", "open", "high", "low", "close", "volume"]
EARLIEST = datetime(2009, 1, 3, tzinfo=UTC)
LANDING_DATE_HINT = "write ISO 8601 dates (2021-02-01) or unix epochs in landing files"


@dataclass(frozen=True, eq=False)
class LandingBatch:
    """The hourly candles of one accepted landing file."""

    pair: str
    candles: pl.DataFrame
    days: list[date]
    content_hash: str  # of the file's bytes: 16 hex digits of SHA-256
    source_file: str
    source_format: str
    source_interval_s: int


def file_hash(data: bytes) -> str:
    """The content identity of a dropped file: 16 hex digits of the SHA-256 of its bytes."""
    return hashlib.sha256(data).hexdigest()[:16]


def parse_landing_file(path: Path) -> LandingBatch:
    """Parse one landing file into hourly candles, or raise ``LandingError`` saying why not."""
    path = Path(path)
    check_name(path)
    if path.suffix.lower() not in EXTENSIONS:
        raise LandingError(f"unknown extension {path.suffix!r}; expected one of {sorted(EXTENSIONS)}")
    return parse_landing_bytes(path.name, read_bytes(path))


def parse_landing_bytes(name: str, data: bytes) -> LandingBatch:
    """Parse the bytes of a landing file called ``name`` (the name gives the format and maybe the pair)."""
    check_name(Path(name))
    fmt = EXTENSIONS.get(Path(name).suffix.lower())
    if fmt is None:
        raise LandingError(f"unknown extension {Path(name).suffix!r}; expected one of {sorted(EXTENSIONS)}")
    check_content(data)
    try:
        if fmt == "parquet":
            raw, pair_text, source = _parse_parquet(name, data)
        else:
            text = decode(data)
            if fmt == "json":
                raw, pair_text, source = _parse_json(name, text), None, "ccxt_json"
            elif _looks_headerless(text):
                raw, pair_text, source = _parse_kraken_csv(name, text.encode()), None, "kraken_csv"
            else:
                raw, pair_text, source = _parse_named_csv(name, text.encode())
        pair, name_interval = resolve_pair(name, pair_text, kraken=source == "kraken_csv")
        candles, interval = _to_hourly(raw, name_interval)
    except (OhlcvError, TableError) as exc:
        raise LandingError(str(exc)) from exc
    days = sorted(set(candles["timestamp"].dt.date().to_list()))
    return LandingBatch(pair, candles, days, file_hash(data), name, source, interval)


def _looks_headerless(text: str) -> bool:
    first = next((line for line in text.splitlines() if line.strip()), "")
    try:
        float(first.split(",")[0])
    except ValueError:
        return False
    return True


def _read_csv(data: bytes, has_header: bool) -> pl.DataFrame:
    try:
        return pl.read_csv(io.BytesIO(data), has_header=has_header, infer_schema=False, row_index_name="_row")
    except pl.exceptions.PolarsError as exc:
        raise LandingError(f"malformed CSV (ragged or badly quoted rows): {first_line(exc)}") from exc


def _require_complete(df: pl.DataFrame, columns: list[str], first_row: int, row_word: str) -> None:
    """Reject rows with missing fields (a truncated file or ragged rows)."""
    bad = df.filter(pl.any_horizontal(pl.col(columns).is_null()))
    if bad.height:
        at = bad["_row"][0] + first_row
        raise LandingError(f"{bad.height} rows with missing fields (truncated or ragged), first at {row_word} {at}")


def _numbers(df: pl.DataFrame, name: str, columns: list[str], first_row: int, row_word: str) -> pl.DataFrame:
    return df.with_columns(
        parse_numbers(df[c], file=name, column=c, first_row=first_row, row_word=row_word) for c in columns
    )


def _times(
    df: pl.DataFrame, name: str, column: str, first_row: int, row_word: str, epoch_unit: str | None = None
) -> pl.DataFrame:
    stamps = parse_timestamps(
        df["timestamp"],
        file=name,
        column=column,
        epoch_unit=epoch_unit,  # type: ignore[arg-type]
        first_row=first_row,
        row_word=row_word,
        format_hint=LANDING_DATE_HINT,
    )
    return df.with_columns(stamps.alias("timestamp"))


def _parse_kraken_csv(name: str, data: bytes) -> pl.DataFrame:
    df = _read_csv(data, has_header=False)
    n_cols = df.width - 1
    if n_cols != len(KRAKEN_COLUMNS):
        raise LandingError(
            f"headerless CSV has {n_cols} columns; Kraken OHLCVT has 7 (time, open, high, low, close, volume, trades)"
        )
    df = df.rename(dict(zip(df.columns[1:], KRAKEN_COLUMNS, strict=True)))
    _require_complete(df, KRAKEN_COLUMNS, first_row=1, row_word="line")
    df = _numbers(df, name, KRAKEN_COLUMNS[1:], first_row=1, row_word="line")
    return _times(df, name, "time", first_row=1, row_word="line", epoch_unit="s")


def _parse_named_csv(name: str, data: bytes) -> tuple[pl.DataFrame, str | None, str]:
    df = _read_csv(data, has_header=True)
    return (*_named_columns(name, df, first_row=2, row_word="line"), "csv")


def _parse_parquet(name: str, data: bytes) -> tuple[pl.DataFrame, str | None, str]:
    if len(data) < 12 or data[:4] != b"PAR1" or data[-4:] != b"PAR1":
        raise LandingError("not a Parquet file (missing PAR1 magic bytes; binary garbage or truncated)")
    try:
        df = pl.read_parquet(io.BytesIO(data))
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        raise LandingError(f"unreadable Parquet file: {first_line(exc)}") from exc
    return (*_named_columns(name, df.with_row_index("_row"), first_row=0, row_word="row"), "parquet")


def _named_columns(name: str, df: pl.DataFrame, first_row: int, row_word: str) -> tuple[pl.DataFrame, str | None]:
    """Pick timestamp/OHLCV/pair columns by name (any letter case) and read them as candles."""
    columns = Columns(df.columns, name, ignore={"_row"})
    ts_cols = columns.present(TIMESTAMP_NAMES)
    if not ts_cols:
        raise LandingError(f"no timestamp column (one of {list(TIMESTAMP_NAMES)}); columns are {columns.names}")
    if len(ts_cols) > 1:
        raise LandingError(f"several timestamp columns {ts_cols}; keep exactly one")
    missing = columns.missing(OHLCV_COLUMNS[1:])
    if missing:
        raise LandingError(f"missing columns {missing}; columns are {columns.names}")
    pair_cols = columns.present(PAIR_NAMES)
    if len(pair_cols) > 1:
        raise LandingError(f"both {pair_cols} given; keep one pair/symbol column")
    pair_text = None
    if pair_cols:
        pairs = df[pair_cols[0]].cast(pl.String).drop_nulls().unique().to_list()
        if len(pairs) != 1:
            raise LandingError(
                f"column {pair_cols[0]!r} holds {len(pairs)} pairs {sorted(pairs)[:5]}; one pair per file"
            )
        pair_text = str(pairs[0])
    rename = {ts_cols[0]: "timestamp", **{columns[c]: c for c in OHLCV_COLUMNS[1:]}}
    df = df.select(["_row", *rename]).rename(rename)
    _require_complete(df, OHLCV_COLUMNS, first_row, row_word)
    df = _numbers(df, name, OHLCV_COLUMNS[1:], first_row, row_word)
    return _times(df, name, ts_cols[0], first_row, row_word), pair_text


def _parse_json(name: str, text: str) -> pl.DataFrame:
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LandingError(f"invalid JSON (truncated?): {exc.msg} at line {exc.lineno}") from exc
    if not isinstance(rows, list) or not rows:
        raise LandingError("JSON must be a non-empty list of [ms, open, high, low, close, volume] rows")
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != len(JSON_COLUMNS):
            raise LandingError(f"JSON item {i} is not a list [ms, open, high, low, close, volume]")
        for value in row:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise LandingError(f"JSON item {i}: {value!r} is not a number")
    df = pl.DataFrame(rows, schema=dict.fromkeys(JSON_COLUMNS, pl.Float64), orient="row")
    df = _numbers(df, name, JSON_COLUMNS[1:], first_row=0, row_word="item")
    return _times(df, name, "ms", first_row=0, row_word="item", epoch_unit="ms")


def _to_hourly(raw: pl.DataFrame, name_interval: int | None) -> tuple[pl.DataFrame, int]:
    """Hourly candles from the raw ones (aggregating finer intervals); returns (candles, interval s)."""
    df = raw.select(OHLCV_COLUMNS).sort("timestamp")
    if df.height == 0:
        raise LandingError("no candles (header only)")
    latest = datetime.now(UTC) + timedelta(days=1)
    outside = df.filter((pl.col("timestamp") < EARLIEST) | (pl.col("timestamp") > latest))
    if outside.height:
        first_s = outside["timestamp"].dt.epoch("s")[0]
        raise LandingError(
            f"{outside.height} timestamps fall outside {EARLIEST.date()} .. now, first at unix {first_s} s "
            "(wrong epoch unit?)"
        )
    epoch_us = df["timestamp"].dt.epoch("us")
    steps = epoch_us.unique().sort().diff().drop_nulls()
    if name_interval is not None:
        interval = name_interval
    elif steps.len():
        interval = int(steps.min()) // 1_000_000  # type: ignore[arg-type]
    else:
        raise LandingError("cannot tell the candle interval from one time; name the file like BTCUSD_60.csv")
    if interval > HOUR_S:
        raise LandingError(f"candles of {interval / 60:g} minutes are coarser than 1 hour; only 1h or finer")
    if interval < 1 or HOUR_S % interval:
        raise LandingError(f"candle interval of {interval} s does not divide an hour")
    off_grid = (epoch_us % (interval * 1_000_000) != 0).sum()
    if off_grid:
        raise LandingError(f"{off_grid} timestamps are not on the {interval / 60:g}-minute grid")
    if interval < HOUR_S:
        repeated = df.filter(pl.col("timestamp").is_duplicated())
        if repeated.height:
            raise LandingError(
                f"{repeated.height} rows share a timestamp, first at {repeated['timestamp'][0]!s}: "
                f"{interval / 60:g}-minute candles with repeated times cannot be aggregated to hours"
            )
        df = df.group_by_dynamic("timestamp", every="1h", closed="left", label="left").agg(
            pl.col("open").first(),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").last(),
            pl.col("volume").sum(),
        )
    return conform_ohlcv(df), interval
