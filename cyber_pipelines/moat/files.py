"""Moat feed files from the landing folder: long-format CSV/Parquet, parsed all-or-nothing.

Required columns (any letter case; other columns are ignored): ``timestamp, source, entity, metric,
value``. Timestamps are read by ``cyber_pipelines.tables.parse_timestamps`` (ISO 8601 with offsets,
naive = UTC; unix epochs in s/ms/us/ns; Parquet datetimes or dates). A file is rejected whole
(``MoatFileError``, the quarantine reason) only when it cannot be read as records: a column is missing,
a timestamp is missing, unreadable or outside [2000-01-01, now + 1 day] (a wrong unit), a value is not
a number, or a source/entity/metric is empty. Content rules are the moat quality suite's, run in the
ingest: repeated (timestamp, source, entity, metric) keys, missing or non-finite values are staged as
they are and block the day they fall on. File-name and file-type rules are those of every landing file
(``cyber_pipelines.landing.files``).
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from cyber_pipelines.landing.files import LandingError, check_content, check_name, decode, read_bytes
from cyber_pipelines.moat.schema import MOAT_KEY, MOAT_SCHEMA
from cyber_pipelines.tables import Columns, TableError, first_line, parse_numbers, parse_timestamps

MOAT_COLUMNS = list(MOAT_SCHEMA)
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
HEADER_BYTES = 64 * 1024
MOAT_DATE_HINT = "write ISO 8601 dates (2021-02-01) or unix epochs in landing files"


class MoatFileError(LandingError):
    """A moat file is rejected; the message says why (and is written beside the quarantined file)."""


def header_is_moat(head: bytes, suffix: str) -> bool:
    """True when the first bytes of a ``.csv`` file (or a whole ``.parquet`` file) hold every moat column."""
    try:
        if suffix == ".parquet":
            names = list(pl.read_parquet_schema(io.BytesIO(head)))
        elif suffix == ".csv":
            text = head[:HEADER_BYTES].decode("utf-8-sig", errors="replace")
            first = next((line for line in text.splitlines() if line.strip()), "")
            names = next(csv.reader([first]), [])
        else:
            return False
    except (OSError, pl.exceptions.PolarsError, ValueError):
        return False
    return set(MOAT_COLUMNS) <= {name.strip().lower() for name in names}


def is_moat_file(path: Path) -> bool:
    """True when a regular ``.csv``/``.parquet`` file's header holds all moat columns (any case).

    Never raises: intake routes on it, and the parser gives the reasons."""
    path = Path(path)
    try:
        if not path.is_file() or path.is_symlink():
            return False
        suffix = path.suffix.lower()
        if suffix == ".parquet":
            return header_is_moat(path.read_bytes(), suffix)
        with path.open("rb") as fh:
            return header_is_moat(fh.read(HEADER_BYTES), suffix)
    except OSError:
        return False


def parse_moat_file(path: Path) -> pl.DataFrame:
    """Read one moat file into ``MOAT_SCHEMA``, sorted by timestamp, source, entity, metric."""
    path = Path(path)
    try:
        check_name(path)
        _check_suffix(path.name)
        data = read_bytes(path)
    except MoatFileError:
        raise
    except LandingError as exc:
        raise MoatFileError(str(exc)) from exc
    return parse_moat_bytes(path.name, data)


def _check_suffix(name: str) -> str:
    suffix = Path(name).suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise MoatFileError(f"unknown extension {Path(name).suffix!r} for a moat file; expected .csv or .parquet")
    return suffix


def parse_moat_bytes(name: str, data: bytes) -> pl.DataFrame:
    """Parse the bytes of a moat file called ``name``; ``MoatFileError`` says why it cannot be read."""
    try:
        check_name(Path(name))
        suffix = _check_suffix(name)
        check_content(data)
        if suffix == ".parquet":
            if data[:4] != b"PAR1" or data[-4:] != b"PAR1":
                raise MoatFileError("not a Parquet file (missing PAR1 magic bytes; truncated or another format)")
            try:
                raw = pl.read_parquet(io.BytesIO(data))
            except (pl.exceptions.PolarsError, OSError) as exc:
                raise MoatFileError(f"unreadable Parquet file: {first_line(exc)}") from exc
            first, where = 0, "row"
        else:
            text = decode(data)
            try:
                raw = pl.read_csv(io.StringIO(text), infer_schema=False)
            except pl.exceptions.PolarsError as exc:
                raise MoatFileError(f"malformed CSV (ragged or badly quoted rows): {first_line(exc)}") from exc
            first, where = 2, "line"
        return _records(name, _select(name, raw), first, where)
    except MoatFileError:
        raise
    except (LandingError, TableError) as exc:
        raise MoatFileError(str(exc)) from exc


def _select(name: str, raw: pl.DataFrame) -> pl.DataFrame:
    columns = Columns(raw.columns, name)
    missing = columns.missing(MOAT_COLUMNS)
    if missing:
        raise MoatFileError(f"missing columns {missing}; columns are {raw.columns}")
    out = raw.select([pl.col(columns[c]).alias(c) for c in MOAT_COLUMNS]).with_row_index("_row")
    if out.height == 0:
        raise MoatFileError("no records (header only)")
    return out


def _fail_at(df: pl.DataFrame, bad: pl.Expr, first: int, where: str, reason: str, column: str) -> None:
    rows = df.filter(bad)
    if rows.height:
        at = rows["_row"][0] + first
        raise MoatFileError(f"{rows.height} rows with {reason}, first at {where} {at}: {rows[column][0]!r}")


def _records(name: str, df: pl.DataFrame, first: int, where: str) -> pl.DataFrame:
    stamps = parse_timestamps(df["timestamp"], file=name, first_row=first, row_word=where, format_hint=MOAT_DATE_HINT)
    df = df.with_columns(timestamp=stamps, _given=df["timestamp"].cast(pl.String))  # as written, for messages
    latest = datetime.now(UTC) + timedelta(days=1)
    _fail_at(
        df,
        (pl.col("timestamp") < EARLIEST) | (pl.col("timestamp") > latest),
        first,
        where,
        f"timestamps outside {EARLIEST.date()} .. now + 1 day (a wrong epoch unit?)",
        "_given",
    )
    for col in ("source", "entity", "metric"):
        if df[col].dtype not in (pl.String, pl.Categorical, pl.Enum):
            raise MoatFileError(f"column {col!r} has type {df[col].dtype}; expected text")
        df = df.with_columns(pl.col(col).cast(pl.String).str.strip_chars())
        _fail_at(df, pl.col(col).fill_null("") == "", first, where, f"an empty {col}", col)
    values = parse_numbers(df["value"], file=name, column="value", first_row=first, row_word=where, finite=False)
    df = df.with_columns(value=values)
    return df.select([pl.col(c).cast(t) for c, t in MOAT_SCHEMA.items()]).sort(MOAT_KEY)
