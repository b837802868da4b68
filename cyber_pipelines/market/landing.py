"""Landing-folder ingestion: parse dropped OHLCV files, quarantine bad ones, stage good ones.

Accepted files (one pair per file, all-or-nothing: any bad row rejects the whole file):

- Kraken's downloadable OHLCVT CSV: no header; unix seconds, open, high, low, close, volume, trades;
  named ``PAIR_INTERVALMINUTES.csv`` (``XBTUSD_60.csv``). Kraken asset codes are mapped the way
  ccxt maps them for Kraken (``XBT`` -> ``BTC``, ``XDG`` -> ``DOGE``, ``XXBTZUSD`` -> ``BTC/USD``).
- ccxt-style JSON: a list of ``[ms, open, high, low, close, volume]``; the pair comes from the name.
- Generic CSV/Parquet with named columns (any letter case): one of timestamp/datetime/date/time
  (datetime, ISO text, or unix s/ms/us/ns told apart by magnitude; naive times are UTC),
  open/high/low/close/volume, and optionally pair/symbol; otherwise the pair comes from the name
  (``BTC-USD.csv``, ``BTC_USD_anything.parquet``, ``BTCUSD_60.csv``).

Candles finer than one hour are aggregated to hourly candles (partial hours are kept: exchanges
omit minutes without trades); coarser candles are rejected.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Literal

import polars as pl

from cyber_pipelines.keys import normalize_pair, pair_to_key
from cyber_pipelines.market.schema import OHLCV_COLUMNS, OhlcvError, conform_ohlcv, validate_ohlcv
from cyber_pipelines.storage import write_parquet_atomic

QUARANTINE_DIR = "quarantine"
STAGING_DIR = "staging"
PROCESSED_DIR = "processed"
# "staged" too: the landing sensor keeps its staging folder under that name.
RESERVED_DIRS = frozenset({QUARANTINE_DIR, STAGING_DIR, "staged", "staged_moat", "pending", PROCESSED_DIR})
DEFAULT_MIN_AGE_S = 5.0
MAX_FILE_BYTES = 1 << 30
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
EXTENSIONS = {".csv": "csv", ".json": "json", ".parquet": "parquet"}
IN_PROGRESS_SUFFIXES = (".part", ".partial", ".tmp", ".crdownload", ".download")

HOUR_S = 3600
KRAKEN_INTERVALS_MIN = frozenset({1, 5, 15, 30, 60, 240, 720, 1440, 10080, 21600})
_TIMEFRAME = re.compile(r"^(\d+)([mhd])$")
_TIMEFRAME_S = {"m": 60, "h": HOUR_S, "d": 24 * HOUR_S}
# Quote currencies that split a concatenated pair (``XBTUSD``); longest first, Kraken X/Z codes included.
QUOTES = tuple(
    sorted(
        {
            "USD",
            "EUR",
            "GBP",
            "JPY",
            "CAD",
            "CHF",
            "AUD",
            "USDT",
            "USDC",
            "DAI",
            "PYUSD",
            "BTC",
            "XBT",
            "ETH",
            "DOT",
            "ZUSD",
            "ZEUR",
            "ZGBP",
            "ZJPY",
            "ZCAD",
            "ZAUD",
            "XXBT",
            "XETH",
        },
        key=lambda q: (-len(q), q),
    )
)
_GENERIC_CODES = {"XBT": "BTC", "XDG": "DOGE"}
TIMESTAMP_NAMES = ("timestamp", "datetime", "date", "time")
PAIR_NAMES = ("pair", "symbol")
KRAKEN_COLUMNS = ["timestamp", "open", "high", "low", "close", "volume", "trades"]
JSON_COLUMNS = ["timestamp", "open", "high", "low", "close", "volume"]
EARLIEST = datetime(2009, 1, 3, tzinfo=UTC)
EpochUnit = Literal["s", "ms", "us", "ns"]
_EPOCH_LIMIT = {"s": 1e12, "ms": 1e15, "us": 1e18, "ns": 9.2e18}  # keeps microseconds inside Int64


class LandingError(ValueError):
    """A landing file is rejected; the message is the reason written beside the quarantined file."""


@dataclass(frozen=True, eq=False)
class LandingBatch:
    """The hourly candles of one accepted landing file."""

    pair: str
    candles: pl.DataFrame
    days: list[date]
    content_hash: str
    source_file: str
    source_format: str
    source_interval_s: int


# ---------------------------------------------------------------------------------------------
# Parsing


def parse_landing_file(path: Path) -> LandingBatch:
    """Parse one landing file into hourly candles, or raise ``LandingError`` saying why not."""
    path = Path(path)
    _check_name(path)
    fmt = EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        raise LandingError(f"unknown extension {path.suffix!r}; expected one of {sorted(EXTENSIONS)}")
    data = _read_bytes(path)
    digest = hashlib.sha256(data).hexdigest()[:16]
    try:
        if fmt == "parquet":
            raw, pair_text, source = _parse_parquet(data)
        else:
            text = _decode(data)
            if fmt == "json":
                raw, pair_text, source = _parse_json(text), None, "ccxt_json"
            elif _looks_headerless(text):
                raw, pair_text, source = _parse_kraken_csv(text.encode()), None, "kraken_csv"
            else:
                raw, pair_text, source = _parse_named_csv(text.encode())
        kraken = source == "kraken_csv"
        pair, name_interval = _resolve_pair(path.name, pair_text, kraken=kraken)
        candles, interval = _to_hourly(raw, name_interval)
    except OhlcvError as exc:
        raise LandingError(str(exc)) from exc
    days = sorted(set(candles["timestamp"].dt.date().to_list()))
    return LandingBatch(pair, candles, days, digest, path.name, source, interval)


def _check_name(path: Path) -> None:
    if ".." in path.parts:
        raise LandingError(f"unsafe path {str(path)!r}: path traversal ('..') is not allowed")
    name = path.name
    if name.startswith("."):
        raise LandingError(f"hidden file {name!r} is not ingested")
    if not SAFE_NAME.match(name) or ".." in name:
        raise LandingError(
            f"unsafe file name {name!r}: use letters, digits, '.', '_' and '-' only (at most 128 characters)"
        )


def _read_bytes(path: Path) -> bytes:
    try:
        info = path.lstat()
    except FileNotFoundError as exc:
        raise LandingError(f"file {path.name!r} does not exist") from exc
    if not stat.S_ISREG(info.st_mode):
        raise LandingError(f"{path.name!r} is not a regular file (symlinks and folders are not ingested)")
    if info.st_size == 0:
        raise LandingError("empty file (0 bytes)")
    if info.st_size > MAX_FILE_BYTES:
        raise LandingError(f"file too large: {info.st_size} bytes > {MAX_FILE_BYTES}")
    data = path.read_bytes()
    if not data.strip():
        raise LandingError("empty file (only whitespace)")
    return data


def _decode(data: bytes) -> str:
    if b"\x00" in data:
        raise LandingError("binary content (NUL bytes) in a text file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LandingError(f"not UTF-8 text (binary or wrong encoding) at byte {exc.start}") from exc


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


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
        raise LandingError(f"malformed CSV (ragged or badly quoted rows): {_first_line(exc)}") from exc


def _require_complete(df: pl.DataFrame, columns: list[str], first_line: int) -> None:
    """Reject rows with missing fields (a truncated file or ragged rows)."""
    bad = df.filter(pl.any_horizontal(pl.col(columns).is_null()))
    if bad.height:
        line = bad["_row"][0] + first_line
        raise LandingError(f"{bad.height} rows with missing fields (truncated or ragged), first at line {line}")


def _to_float(df: pl.DataFrame, columns: list[str], first_line: int, what: str = "line") -> pl.DataFrame:
    """Cast text columns to Float64, naming the first value that is not a number."""
    out = df.with_columns(pl.col(columns).cast(pl.Float64, strict=False))
    for col in columns:
        bad = df.filter(out[col].is_null() & df[col].is_not_null())
        if bad.height:
            row = bad["_row"][0] + first_line if "_row" in bad.columns else first_line
            raise LandingError(f"column {col!r}: {bad[col][0]!r} is not a number ({what} {row})")
    return out


def _parse_kraken_csv(data: bytes) -> pl.DataFrame:
    df = _read_csv(data, has_header=False)
    n_cols = df.width - 1
    if n_cols != len(KRAKEN_COLUMNS):
        raise LandingError(
            f"headerless CSV has {n_cols} columns; Kraken OHLCVT has 7 (time, open, high, low, close, volume, trades)"
        )
    df = df.rename(dict(zip(df.columns[1:], KRAKEN_COLUMNS, strict=True)))
    _require_complete(df, KRAKEN_COLUMNS, first_line=1)
    df = _to_float(df, KRAKEN_COLUMNS, first_line=1)
    return _with_epoch(df, "timestamp", unit="s")


def _parse_named_csv(data: bytes) -> tuple[pl.DataFrame, str | None, str]:
    df = _read_csv(data, has_header=True)
    return (*_named_columns(df, first_line=2, what="line"), "csv")


def _parse_parquet(data: bytes) -> tuple[pl.DataFrame, str | None, str]:
    if len(data) < 12 or data[:4] != b"PAR1" or data[-4:] != b"PAR1":
        raise LandingError("not a Parquet file (missing PAR1 magic bytes; binary garbage or truncated)")
    try:
        df = pl.read_parquet(io.BytesIO(data))
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        raise LandingError(f"unreadable Parquet file: {_first_line(exc)}") from exc
    df = df.with_row_index("_row")
    return (*_named_columns(df, first_line=0, what="row"), "parquet")


def _named_columns(df: pl.DataFrame, first_line: int, what: str) -> tuple[pl.DataFrame, str | None]:
    """Pick timestamp/OHLCV/pair columns by name (any letter case) and read them as candles."""
    by_lower: dict[str, str] = {}
    for col in df.columns:
        if col == "_row":
            continue
        low = col.strip().lower()
        if low in by_lower:
            raise LandingError(f"columns {by_lower[low]!r} and {col!r} differ only in letter case")
        by_lower[low] = col
    ts_cols = [by_lower[n] for n in TIMESTAMP_NAMES if n in by_lower]
    if not ts_cols:
        raise LandingError(f"no timestamp column (one of {list(TIMESTAMP_NAMES)}); columns are {df.columns[1:]}")
    if len(ts_cols) > 1:
        raise LandingError(f"several timestamp columns {ts_cols}; keep exactly one")
    missing = [c for c in OHLCV_COLUMNS[1:] if c not in by_lower]
    if missing:
        raise LandingError(f"missing columns {missing}; columns are {df.columns[1:]}")
    pair_cols = [by_lower[n] for n in PAIR_NAMES if n in by_lower]
    if len(pair_cols) > 1:
        raise LandingError(f"both {pair_cols} given; keep one pair/symbol column")
    rename = {ts_cols[0]: "timestamp", **{by_lower[c]: c for c in OHLCV_COLUMNS[1:]}}
    keep = ["_row", *rename]
    pair_text = None
    if pair_cols:
        pairs = df[pair_cols[0]].cast(pl.String).drop_nulls().unique().to_list()
        if len(pairs) != 1:
            raise LandingError(
                f"column {pair_cols[0]!r} holds {len(pairs)} pairs {sorted(pairs)[:5]}; one pair per file"
            )
        pair_text = str(pairs[0])
    df = df.select(keep).rename(rename)
    _require_complete(df, OHLCV_COLUMNS, first_line)
    prices = OHLCV_COLUMNS[1:]
    if any(df[c].dtype == pl.String for c in prices):
        df = _to_float(df.with_columns(pl.col(prices).cast(pl.String)), prices, first_line, what)
    else:
        try:
            df = df.with_columns(pl.col(prices).cast(pl.Float64, strict=True))
        except pl.exceptions.PolarsError as exc:
            raise LandingError(f"price/volume columns are not numeric: {_first_line(exc)}") from exc
    return _timestamp_column(df), pair_text


def _timestamp_column(df: pl.DataFrame) -> pl.DataFrame:
    """Read the timestamp column as UTC datetimes (datetime, date, ISO text or epoch numbers)."""
    ts = df["timestamp"]
    if ts.dtype == pl.String:
        for number_type in (pl.Int64, pl.Float64):
            numeric = ts.cast(number_type, strict=False)
            if numeric.null_count() == 0:
                return _with_epoch(df.with_columns(timestamp=numeric), "timestamp", unit=None)
        try:
            parsed = ts.str.to_datetime(time_unit="us", strict=True)
        except pl.exceptions.PolarsError as exc:
            raise LandingError(f"timestamp column: {_first_line(exc)}") from exc
        return df.with_columns(timestamp=_as_utc(parsed))
    if ts.dtype == pl.Date:
        return df.with_columns(timestamp=_as_utc(ts.cast(pl.Datetime("us"))))
    if isinstance(ts.dtype, pl.Datetime):
        return df.with_columns(timestamp=_as_utc(ts.dt.cast_time_unit("us")))
    if ts.dtype.is_numeric():
        return _with_epoch(df, "timestamp", unit=None)
    raise LandingError(f"timestamp column has type {ts.dtype}; expected datetimes, ISO text or unix epochs")


def _as_utc(ts: pl.Series) -> pl.Series:
    dtype = ts.dtype
    assert isinstance(dtype, pl.Datetime)
    if dtype.time_zone is None:
        return ts.dt.replace_time_zone("UTC")
    return ts.dt.convert_time_zone("UTC")


def _with_epoch(df: pl.DataFrame, col: str, unit: EpochUnit | None) -> pl.DataFrame:
    """Unix epoch numbers -> UTC datetimes; ``unit=None`` tells s/ms/us/ns apart by magnitude."""
    values = df[col]
    if not values.dtype.is_integer():
        floats = values.cast(pl.Float64)
        if (floats != floats.floor()).any():
            raise LandingError(f"{col} values must be whole unix epoch numbers")
        values = floats.cast(pl.Int64, strict=False)
        if values.null_count():
            raise LandingError(f"{col} values are out of range for unix epochs")
    peak = float(values.cast(pl.Float64).abs().max() or 0.0)  # type: ignore[arg-type]
    if unit is None:
        unit = "s" if peak < 1e11 else "ms" if peak < 1e14 else "us" if peak < 1e17 else "ns"
    if peak >= _EPOCH_LIMIT[unit]:
        raise LandingError(f"{col} values up to {peak:.0f} are out of range for unix epochs in {unit} (wrong unit?)")
    try:
        stamps = pl.from_epoch(values, time_unit=unit).dt.cast_time_unit("us").dt.replace_time_zone("UTC")
    except pl.exceptions.PolarsError as exc:
        raise LandingError(f"{col} values are out of range for unix epochs: {_first_line(exc)}") from exc
    return df.with_columns(stamps.alias(col))


def _parse_json(text: str) -> pl.DataFrame:
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
    return _with_epoch(df, "timestamp", unit="ms")


# ---------------------------------------------------------------------------------------------
# Pairs and intervals


@lru_cache(maxsize=1)
def _kraken_code() -> Callable[[str], str]:
    import ccxt  # slow import; only Kraken files need it

    exchange = ccxt.kraken()
    return exchange.safe_currency_code


def _map_code(code: str, kraken: bool) -> str:
    code = code.upper()
    return _kraken_code()(code) if kraken else _GENERIC_CODES.get(code, code)


def _split_concat(code: str, kraken: bool) -> str | None:
    upper = code.upper()
    for quote in QUOTES:
        if upper.endswith(quote) and len(upper) - len(quote) >= 2:
            return f"{_map_code(upper[: -len(quote)], kraken)}/{_map_code(quote, kraken)}"
    return None


def _pair_from_text(text: str, kraken: bool) -> str | None:
    """``BTC/USD``, ``btc-usd``, ``XBT/USD`` or ``XBTUSD`` -> ``BTC/USD`` (None if not a pair)."""
    parts = [p for p in re.split(r"[/\-_:]", text.strip()) if p]
    if len(parts) == 2:
        candidate = f"{_map_code(parts[0], kraken)}/{_map_code(parts[1], kraken)}"
    elif len(parts) == 1:
        candidate = _split_concat(parts[0], kraken) or ""
    else:
        return None
    try:
        return normalize_pair(candidate)
    except ValueError:
        return None


def _interval_token(token: str) -> int | None:
    if token.isdigit() and int(token) in KRAKEN_INTERVALS_MIN:
        return int(token) * 60
    match = _TIMEFRAME.match(token.lower())
    return int(match[1]) * _TIMEFRAME_S[match[2]] if match else None


def _pair_from_name(name: str, kraken: bool) -> tuple[str | None, int | None]:
    """Pair and candle interval (seconds) from a file name; either may be None."""
    tokens = [t for t in re.split(r"[-_.]", Path(name).stem) if t]
    if not tokens:
        return None, None
    rest: list[str] = []
    pair = None
    upper = [t.upper() for t in tokens]
    if len(tokens) >= 2 and upper[1] in QUOTES:
        pair = _pair_from_text(f"{tokens[0]}/{tokens[1]}", kraken)
        rest = tokens[2:]
    if pair is None:
        pair = _pair_from_text(tokens[0], kraken) if tokens[0].isalnum() else None
        rest = tokens[1:]
    interval = _interval_token(rest[0]) if pair and rest else None
    return pair, interval


def _resolve_pair(name: str, pair_text: str | None, kraken: bool) -> tuple[str, int | None]:
    """The pair from the pair/symbol column when there is one, else from the file name."""
    name_pair, interval = _pair_from_name(name, kraken)
    if pair_text is None:
        if name_pair is None:
            raise LandingError(
                f"no recognisable pair in file name {name!r} (use e.g. BTC-USD.csv or XBTUSD_60.csv, "
                "or add a pair/symbol column)"
            )
        return name_pair, interval
    column_pair = _pair_from_text(pair_text, kraken)
    if column_pair is None:
        raise LandingError(f"pair/symbol value {pair_text!r} is not a recognisable pair such as BTC/USD")
    return column_pair, interval


def _to_hourly(raw: pl.DataFrame, name_interval: int | None) -> tuple[pl.DataFrame, int]:
    """Check the raw candles and aggregate them to hourly candles; returns (candles, source interval s)."""
    df = raw.select(OHLCV_COLUMNS)
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
    dupes = df.filter(pl.col("timestamp").is_duplicated())
    if dupes.height:
        first_dupe = dupes["timestamp"].min()
        raise LandingError(f"{dupes.height} rows share a timestamp, first at {first_dupe!s}")
    df = conform_ohlcv(df)
    problems = validate_ohlcv(df)
    if problems:
        raise LandingError("; ".join(problems))
    epoch_us = df["timestamp"].dt.epoch("us")
    if name_interval is not None:
        interval = name_interval
    elif df.height >= 2:
        interval = int(epoch_us.diff().min()) // 1_000_000  # type: ignore[arg-type]
    else:
        raise LandingError("cannot tell the candle interval from one row; name the file like BTCUSD_60.csv")
    if interval > HOUR_S:
        raise LandingError(f"candles of {interval / 60:g} minutes are coarser than 1 hour; only 1h or finer")
    if interval < 1 or HOUR_S % interval:
        raise LandingError(f"candle interval of {interval} s does not divide an hour")
    off_grid = (epoch_us % (interval * 1_000_000) != 0).sum()
    if off_grid:
        raise LandingError(f"{off_grid} timestamps are not on the {interval / 60:g}-minute grid")
    if interval < HOUR_S:
        df = df.group_by_dynamic("timestamp", every="1h", closed="left", label="left").agg(
            pl.col("open").first(),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").last(),
            pl.col("volume").sum(),
        )
    hourly = conform_ohlcv(df)
    problems = validate_ohlcv(hourly)
    if problems:
        raise LandingError("hourly aggregation broke the OHLCV rules: " + "; ".join(problems))
    return hourly, interval


# ---------------------------------------------------------------------------------------------
# Moving files: quarantine and processed


def _safe_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".")
    cleaned = re.sub(r"\.{2,}", ".", cleaned)[:100]
    return cleaned or "file"


def _move_unique(path: Path, dest_dir: Path, note: str | None) -> Path:
    """Move ``path`` into ``dest_dir`` under a safe, unused name; optionally write ``<name>.reason.txt``."""
    if not (path.exists() or path.is_symlink()):
        raise FileNotFoundError(f"cannot move {str(path)!r}: it does not exist")
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    base = Path(_safe_name(path.name))
    for n in range(10_000):
        dest = dest_dir / (base.name if n == 0 else f"{base.stem}.{n}{base.suffix}")
        reason_file = dest.with_name(dest.name + ".reason.txt")
        if reason_file.exists():
            continue
        try:
            fd = os.open(dest, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)  # reserve the name
        except FileExistsError:
            continue
        os.close(fd)
        break
    else:
        raise RuntimeError(f"no free name for {base.name!r} in {dest_dir}")
    if dest.resolve().parent != dest_dir.resolve():
        dest.unlink()
        raise RuntimeError(f"refusing to move {path.name!r} outside {dest_dir}")
    try:
        if note is not None:
            reason_file.write_text(note)
        shutil.move(os.fspath(path), os.fspath(dest))
    except BaseException:
        if path.exists() or path.is_symlink():  # the original is intact: undo the reservation
            dest.unlink(missing_ok=True)
            reason_file.unlink(missing_ok=True)
        raise
    return dest


def quarantine(path: Path, quarantine_dir: Path, reason: str) -> Path:
    """Move a rejected file into ``quarantine_dir`` with ``<name>.reason.txt`` beside it."""
    path = Path(path)
    note = (
        f"reason: {reason}\n"
        f"quarantined_at: {datetime.now(UTC).isoformat(timespec='seconds')}\n"
        f"original_name: {path.name!r}\n"
        f"original_path: {str(path)!r}\n"
    )
    return _move_unique(path, quarantine_dir, note)


def archive(path: Path, processed_dir: Path) -> Path:
    """Move an ingested file into ``processed_dir`` (unique, safe name)."""
    return _move_unique(Path(path), processed_dir, None)


# ---------------------------------------------------------------------------------------------
# Staging


def stage_batch(batch: LandingBatch, staging_dir: Path) -> Path:
    """Write the batch to ``staging_dir/<PAIR-KEY>/<content_hash>.parquet`` atomically.

    Idempotent: the same file content maps to the same path and is not rewritten. Staging marks the
    file as the latest of its pair (mtime), so it wins over earlier files in ``load_staged``.
    """
    if not re.fullmatch(r"[0-9a-f]{16}", batch.content_hash):
        raise ValueError(f"content_hash must be 16 hex digits, got {batch.content_hash!r}")
    pair_dir = Path(staging_dir) / pair_to_key(batch.pair)
    path = pair_dir / f"{batch.content_hash}.parquet"
    if not path.exists():
        write_parquet_atomic(conform_ohlcv(batch.candles), path)
    others = [p.stat().st_mtime_ns for p in _staged_files(pair_dir) if p != path]
    stamp = max([time.time_ns(), *(m + 1_000 for m in others)])
    os.utime(path, ns=(stamp, stamp))
    return path


def _staged_files(pair_dir: Path) -> list[Path]:
    """Staged files of a pair, oldest staging first (mtime, then name)."""
    if not pair_dir.is_dir():
        return []
    files = [p for p in pair_dir.glob("*.parquet") if not p.name.startswith(".")]
    return sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name))


def load_staged(staging_dir: Path, pair: str, day: date) -> pl.DataFrame:
    """The candles of one UTC day from every staged file of ``pair``; later-staged files win."""
    pair_dir = Path(staging_dir) / pair_to_key(pair)
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    end = start + timedelta(days=1)
    frames = [
        pl.scan_parquet(p)
        .filter((pl.col("timestamp") >= start) & (pl.col("timestamp") < end))
        .with_columns(pl.lit(seq).alias("_seq"))
        for seq, p in enumerate(_staged_files(pair_dir))
    ]
    if not frames:
        raise FileNotFoundError(f"nothing staged for {normalize_pair(pair)} under {pair_dir}")
    df = pl.concat(frames).collect().sort("_seq").unique("timestamp", keep="last", maintain_order=True)
    if df.height == 0:
        raise FileNotFoundError(f"no staged candles for {normalize_pair(pair)} on {day} under {pair_dir}")
    return conform_ohlcv(df.drop("_seq"))


# ---------------------------------------------------------------------------------------------
# Scanning


def scan_landing(
    landing_dir: Path,
    *,
    min_age_s: float = DEFAULT_MIN_AGE_S,
    now: float | None = None,
    recursive: bool = False,
) -> list[Path]:
    """Candidate files in ``landing_dir``, sorted.

    Skips hidden files and folders, symlinks, the quarantine/staging/processed folders, files whose
    mtime is less than ``min_age_s`` old (possibly still being written) and in-progress download
    suffixes. Unsafe names are returned on purpose, so that they get quarantined with a reason.
    ``recursive`` also walks other subfolders.
    """
    root = Path(landing_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"landing folder {root} does not exist")
    cutoff = (time.time() if now is None else now) - min_age_s
    found: list[Path] = []
    pending = [root]
    while pending:
        folder = pending.pop()
        for entry in folder.iterdir():
            if entry.name.startswith("."):
                continue
            info = entry.lstat()
            if stat.S_ISDIR(info.st_mode):
                if recursive and not (folder == root and entry.name in RESERVED_DIRS):
                    pending.append(entry)
                continue
            if not stat.S_ISREG(info.st_mode) or entry.name.lower().endswith(IN_PROGRESS_SUFFIXES):
                continue
            if info.st_mtime > cutoff:
                continue
            found.append(entry)
    return sorted(found)
