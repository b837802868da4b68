"""Moat feed files from the landing folder: long-format CSV/Parquet, validated all-or-nothing.

Required columns (any letter case; other columns are ignored): ``timestamp, source, entity, metric,
value``. Timestamps are ISO-8601 text (naive = UTC, offsets converted) or unix seconds; Parquet may also
hold datetimes or dates. A file is rejected whole (``MoatFileError``, the quarantine reason) when a
column is missing, a timestamp is unreadable or outside [2000-01-01, now + 1 day], a value is missing
or not finite, a source/entity/metric is empty, or a (timestamp, source, entity, metric) repeats.
File-name and file-type rules are those of the OHLCV landing files (``cyber_pipelines.market.landing``).
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from cyber_pipelines.market.landing import LandingError, _check_name, _decode, _first_line, _read_bytes
from cyber_pipelines.moat.schema import MOAT_KEY, MOAT_SCHEMA

MOAT_COLUMNS = list(MOAT_SCHEMA)
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
_HEADER_BYTES = 64 * 1024


class MoatFileError(LandingError):
    """A moat file is rejected; the message says why (and is written beside the quarantined file)."""


def is_moat_file(path: Path) -> bool:
    """True when a regular ``.csv``/``.parquet`` file's header holds all moat columns (any case).

    Never raises: the landing sensor routes on it, and the parser gives the reasons.
    """
    path = Path(path)
    try:
        if not path.is_file() or path.is_symlink():
            return False
        suffix = path.suffix.lower()
        if suffix == ".parquet":
            names = list(pl.read_parquet_schema(path))
        elif suffix == ".csv":
            with path.open("rb") as fh:
                head = fh.read(_HEADER_BYTES).decode("utf-8-sig", errors="replace")
            first = next((line for line in head.splitlines() if line.strip()), "")
            names = next(csv.reader([first]), [])
        else:
            return False
    except (OSError, pl.exceptions.PolarsError, ValueError):
        return False
    return set(MOAT_COLUMNS) <= {name.strip().lower() for name in names}


def parse_moat_file(path: Path) -> pl.DataFrame:
    """Read and validate one moat file into ``MOAT_SCHEMA``, sorted by timestamp, source, entity, metric."""
    path = Path(path)
    try:
        _check_name(path)
        suffix = path.suffix.lower()
        if suffix not in (".csv", ".parquet"):
            raise MoatFileError(f"unknown extension {path.suffix!r} for a moat file; expected .csv or .parquet")
        data = _read_bytes(path)
    except MoatFileError:
        raise
    except LandingError as exc:
        raise MoatFileError(str(exc)) from exc
    if suffix == ".parquet":
        if data[:4] != b"PAR1" or data[-4:] != b"PAR1":
            raise MoatFileError("not a Parquet file (missing PAR1 magic bytes; truncated or another format)")
        try:
            raw = pl.read_parquet(io.BytesIO(data))
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise MoatFileError(f"unreadable Parquet file: {_first_line(exc)}") from exc
        first, where = 0, "row"
    else:
        try:
            text = _decode(data)
        except LandingError as exc:
            raise MoatFileError(str(exc)) from exc
        try:
            raw = pl.read_csv(io.StringIO(text), infer_schema=False)
        except pl.exceptions.PolarsError as exc:
            raise MoatFileError(f"malformed CSV (ragged or badly quoted rows): {_first_line(exc)}") from exc
        first, where = 2, "line"
    return _validate(_select(raw), first, where)


def _select(raw: pl.DataFrame) -> pl.DataFrame:
    by_lower: dict[str, str] = {}
    for col in raw.columns:
        low = col.strip().lower()
        if low in by_lower:
            raise MoatFileError(f"columns {by_lower[low]!r} and {col!r} differ only in letter case")
        by_lower[low] = col
    missing = [c for c in MOAT_COLUMNS if c not in by_lower]
    if missing:
        raise MoatFileError(f"missing columns {missing}; columns are {raw.columns}")
    out = raw.select([pl.col(by_lower[c]).alias(c) for c in MOAT_COLUMNS]).with_row_index("_row")
    if out.height == 0:
        raise MoatFileError("no records (header only)")
    return out


def _fail_at(df: pl.DataFrame, bad: pl.Expr, first: int, where: str, reason: str, column: str) -> None:
    rows = df.filter(bad)
    if rows.height:
        at = rows["_row"][0] + first
        raise MoatFileError(f"{rows.height} rows with {reason}, first at {where} {at}: {rows[column][0]!r}")


def _iso_utc(text: str) -> datetime | None:
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        return None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _parse_iso(text: pl.Series) -> pl.Series:
    """ISO-8601 text -> UTC datetimes (naive = UTC); null where unreadable."""
    parsed = text.str.to_datetime(time_unit="us", time_zone="UTC", strict=False)
    if parsed.null_count():  # polars infers one format per column; Python's ISO parser reads mixed ones
        mapping = {s: _iso_utc(s) for s in text.filter(parsed.is_null()).unique().to_list()}
        rest = text.replace_strict(mapping, default=None, return_dtype=pl.Datetime("us", "UTC"))
        parsed = pl.select(pl.coalesce(parsed, rest)).to_series()
    return parsed


def _timestamps(df: pl.DataFrame, first: int, where: str) -> pl.DataFrame:
    """The ``timestamp`` column as UTC datetimes (ISO-8601 text, unix seconds, datetimes or dates);
    ``_given`` keeps the text as written, for error messages."""
    dtype = df["timestamp"].dtype
    if not (dtype == pl.String or dtype == pl.Date or dtype.is_numeric() or isinstance(dtype, pl.Datetime)):
        raise MoatFileError(f"timestamp column has type {dtype}; expected ISO-8601 text, unix seconds or datetimes")
    _fail_at(df, pl.col("timestamp").is_null(), first, where, "a missing timestamp", "timestamp")
    df = df.with_columns(_given=pl.col("timestamp").cast(pl.String))
    ts = df["timestamp"]
    if dtype == pl.String:
        text = ts.str.strip_chars()
        numbers = text.cast(pl.Float64, strict=False)
        if numbers.null_count():
            parsed = _parse_iso(text)
            bad = df.with_columns(_bad=parsed.is_null())
            _fail_at(bad, pl.col("_bad"), first, where, "timestamps neither ISO-8601 nor unix seconds", "_given")
            return df.with_columns(timestamp=parsed)
        ts = numbers
    if ts.dtype.is_numeric():
        micros = (ts.cast(pl.Float64) * 1e6).round()
        micros = pl.select(pl.when(micros.is_finite()).then(micros)).to_series().cast(pl.Int64, strict=False)
        bad = df.with_columns(_bad=micros.is_null())
        _fail_at(bad, pl.col("_bad"), first, where, "unix seconds that are not finite or out of range", "_given")
        return df.with_columns(timestamp=pl.from_epoch(micros, time_unit="us").dt.replace_time_zone("UTC"))
    if ts.dtype == pl.Date:
        ts = ts.cast(pl.Datetime("us"))
    assert isinstance(ts.dtype, pl.Datetime)
    us = ts.dt.cast_time_unit("us")
    utc = us.dt.replace_time_zone("UTC") if ts.dtype.time_zone is None else us.dt.convert_time_zone("UTC")
    return df.with_columns(timestamp=utc)


def _validate(df: pl.DataFrame, first: int, where: str) -> pl.DataFrame:
    df = _timestamps(df, first, where)
    latest = datetime.now(UTC) + timedelta(days=1)
    _fail_at(
        df,
        (pl.col("timestamp") < EARLIEST) | (pl.col("timestamp") > latest),
        first,
        where,
        f"timestamps outside {EARLIEST.date()} .. now + 1 day (milliseconds instead of seconds?)",
        "_given",
    )
    for col in ("source", "entity", "metric"):
        if df[col].dtype not in (pl.String, pl.Categorical, pl.Enum):
            raise MoatFileError(f"column {col!r} has type {df[col].dtype}; expected text")
        df = df.with_columns(pl.col(col).cast(pl.String).str.strip_chars())
        _fail_at(df, pl.col(col).fill_null("") == "", first, where, f"an empty {col}", col)
    value = df["value"]
    _fail_at(df, pl.col("value").is_null(), first, where, "a missing value", "value")
    if value.dtype == pl.String:
        numbers = value.str.strip_chars().cast(pl.Float64, strict=False)
        bad = df.with_columns(_bad=numbers.is_null())
        _fail_at(bad, pl.col("_bad"), first, where, "values that are not numbers", "value")
    elif value.dtype.is_numeric():
        numbers = value.cast(pl.Float64)
    else:
        raise MoatFileError(f"column 'value' has type {value.dtype}; expected numbers")
    df = df.with_columns(value=numbers)
    _fail_at(df, ~pl.col("value").is_finite(), first, where, "non-finite values (NaN or inf)", "value")
    dupes = df.filter(pl.struct(MOAT_KEY).is_duplicated())
    if dupes.height:
        row = dupes.row(0, named=True)
        key = ", ".join(f"{k}={row[k]!s}" for k in MOAT_KEY)
        raise MoatFileError(
            f"{dupes.height} rows repeat a (timestamp, source, entity, metric), "
            f"first at {where} {row['_row'] + first}: {key}"
        )
    return df.select([pl.col(c).cast(t) for c, t in MOAT_SCHEMA.items()]).sort(MOAT_KEY)
