"""Reading tables that people write: columns by name in any letter case, timestamps, numbers.

One implementation for every reader of user files (landing files, moat files, OHLCV CSVs for the
features and backtest commands), so that they accept the same inputs and fail with the same messages.
Every error names the file and the row (``line`` for CSV text, where the header is line 1).

Timestamps (``parse_timestamps``):

- datetimes and dates (Parquet): naive ones are UTC, zoned ones are converted to UTC;
- ISO 8601 text (``2024-01-31``, ``2024-01-31 13:00``, ``2024-01-31T13:00:00Z``, ``...+02:00``):
  naive = UTC, offsets converted; compact ``YYYYMMDD`` dates;
- unix epochs (numbers or numeric text) in seconds, milliseconds, microseconds or nanoseconds, told
  apart by the column's largest magnitude (or given as ``epoch_unit``);
- a day-month order that cannot be told (``01/02/2021``, ``01.02.2021``, ``01-02-2021``) is refused
  unless a ``date_format`` (strftime, e.g. ``%m/%d/%Y``) is given: the CLI's ``--date-format``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Literal

import polars as pl

EpochUnit = Literal["s", "ms", "us", "ns"]
UTC_US = pl.Datetime("us", "UTC")

# Largest magnitude of each unit; microseconds must fit an Int64 (about 292,000 years either side).
_EPOCH_BOUNDS: tuple[tuple[float, EpochUnit], ...] = ((1e11, "s"), (1e14, "ms"), (1e17, "us"), (float("inf"), "ns"))
_EPOCH_LIMIT: dict[str, float] = {"s": 9.2e12, "ms": 9.2e15, "us": 9.2e18, "ns": 9.2e18}
_US_PER_UNIT: dict[str, float] = {"s": 1e6, "ms": 1e3, "us": 1.0, "ns": 1e-3}
_AMBIGUOUS = r"^\d{1,2}[/.\-]\d{1,2}[/.\-]\d{2,4}(?:$|[ T])"
_NUMBER = r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$"
_COMPACT_DATE = r"^\d{8}$"
DATE_FORMAT_HINT = "use --date-format (a strftime format such as %m/%d/%Y or %d/%m/%Y)"


class TableError(ValueError):
    """A table cannot be read as asked; the message names the file and, where there is one, the row."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (polars errors carry long hints below it)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class Columns:
    """A table's columns looked up by name in any letter case (surrounding spaces ignored).

    Two columns whose names differ only in letter case (``Close`` and ``close``) are an error naming
    the file: which one was meant cannot be told. ``ignore`` names internal columns (a row index).
    """

    def __init__(self, names: Iterable[str], file: str | Path, *, ignore: Collection[str] = ()) -> None:
        self.file = str(file)
        self.names = [n for n in names if n not in ignore]
        self._by_key: dict[str, str] = {}
        for name in self.names:
            key = name.strip().lower()
            if not key:  # unnamed columns (a pandas index) are found by position, not by name
                continue
            if key in self._by_key:
                raise TableError(f"{self.file}: columns {self._by_key[key]!r} and {name!r} differ only in letter case")
            self._by_key[key] = name

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.strip().lower() in self._by_key

    def get(self, name: str) -> str | None:
        """The column's name as written in the file, or None."""
        return self._by_key.get(name.strip().lower())

    def __getitem__(self, name: str) -> str:
        found = self.get(name)
        if found is None:
            raise TableError(f"{self.file}: no column {name!r}; columns are {self.names}")
        return found

    def present(self, names: Sequence[str]) -> list[str]:
        """The columns (as written) of those ``names`` that exist, in the order of ``names``."""
        return [found for n in names if (found := self.get(n)) is not None]

    def missing(self, names: Sequence[str]) -> list[str]:
        return [n for n in names if n not in self]


def _where(file: str | Path, column: str, index: int, first_row: int, row_word: str) -> str:
    return f"{file} {row_word} {index + first_row}, column {column!r}"


def _first_index(mask: pl.Series) -> int:
    return int(mask.arg_max() or 0)


def as_utc(ts: pl.Series) -> pl.Series:
    """Datetimes in microseconds, UTC: naive values are taken as UTC, zoned ones converted."""
    dtype = ts.dtype
    assert isinstance(dtype, pl.Datetime)
    us = ts.dt.cast_time_unit("us")
    return us.dt.replace_time_zone("UTC") if dtype.time_zone is None else us.dt.convert_time_zone("UTC")


def parse_timestamps(
    values: pl.Series,
    *,
    file: str | Path,
    column: str | None = None,
    date_format: str | None = None,
    epoch_unit: EpochUnit | None = None,
    first_row: int = 1,
    row_word: str = "row",
    format_hint: str = DATE_FORMAT_HINT,
) -> pl.Series:
    """``values`` as UTC datetimes (``Datetime("us", "UTC")``), or ``TableError`` naming file and row.

    ``first_row`` and ``row_word`` say how to number the rows in messages (``2`` and ``"line"`` for
    CSV text with a header). Missing values are an error. ``epoch_unit`` fixes the unit of numbers;
    ``date_format`` (strftime) reads text in that format instead of guessing. ``format_hint`` ends the
    message about text that is ambiguous or not a timestamp (by default: use ``--date-format``).
    """
    column = column or values.name or "timestamp"
    dtype = values.dtype
    missing = values.is_null()
    if dtype == pl.String:
        missing = missing | (values.str.strip_chars() == "")
    if missing.any():
        i = _first_index(missing)
        raise TableError(f"{_where(file, column, i, first_row, row_word)}: missing timestamp")
    if dtype == pl.String:
        out = _parse_text(
            values.str.strip_chars(), file, column, date_format, epoch_unit, (first_row, row_word), format_hint
        )
    elif isinstance(dtype, pl.Datetime):
        out = as_utc(values)
    elif dtype == pl.Date:
        out = as_utc(values.cast(pl.Datetime("us")))
    elif dtype.is_numeric():
        out = _from_epoch(values, file, column, epoch_unit, first_row, row_word)
    else:
        raise TableError(
            f"{file}: timestamp column {column!r} has type {dtype}; expected datetimes, ISO 8601 text or unix epochs"
        )
    return out.alias(values.name)


def _parse_text(
    text: pl.Series,
    file: str | Path,
    column: str,
    date_format: str | None,
    epoch_unit: EpochUnit | None,
    rows: tuple[int, str],
    format_hint: str,
) -> pl.Series:
    first_row, row_word = rows

    def at(i: int) -> str:
        return _where(file, column, i, first_row, row_word)

    if date_format is not None:
        try:
            parsed = text.str.to_datetime(date_format, time_unit="us", strict=False)
        except pl.exceptions.PolarsError as exc:
            raise TableError(f"{file}: --date-format {date_format!r} cannot be used: {first_line(exc)}") from exc
        bad = parsed.is_null()
        if bad.any():
            i = _first_index(bad)
            raise TableError(f"{at(i)}: {text[i]!r} does not match --date-format {date_format!r}")
        return as_utc(parsed)
    if epoch_unit is None and text.str.contains(_COMPACT_DATE).all():  # 20240131: a date, not 1970's epoch
        return _parse_text(text, file, column, "%Y%m%d", None, rows, format_hint)
    numeric = text.str.contains(_NUMBER)
    if numeric.all():
        ints = text.cast(pl.Int64, strict=False)
        return _from_epoch(
            ints if ints.null_count() == 0 else text.cast(pl.Float64), file, column, epoch_unit, first_row, row_word
        )
    ambiguous = text.str.contains(_AMBIGUOUS)
    if ambiguous.any():
        i = _first_index(ambiguous)
        raise TableError(f"{at(i)}: {text[i]!r} is an ambiguous date (day/month order cannot be told); {format_hint}")
    if epoch_unit is not None:
        i = _first_index(~numeric)
        raise TableError(f"{at(i)}: {text[i]!r} is not a unix epoch in {epoch_unit}")
    if numeric.any():  # point at the odd one out
        if numeric.sum() * 2 > text.len():
            i = _first_index(~numeric)
            raise TableError(f"{at(i)}: {text[i]!r} is not a unix epoch (the column's other values are)")
        i = _first_index(numeric)
        raise TableError(f"{at(i)}: {text[i]!r} is a unix epoch among dates; use one kind of time per column")
    parsed = _parse_iso(text)
    bad = parsed.is_null()
    if bad.any():
        i = _first_index(bad)
        raise TableError(
            f"{at(i)}: {text[i]!r} is not a timestamp "
            f"(ISO 8601 such as 2024-01-31T13:00:00Z, or unix epoch seconds/ms/us/ns); {format_hint}"
        )
    return parsed


def _iso_utc(text: str) -> datetime | None:
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        return None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _parse_iso(text: pl.Series) -> pl.Series:
    """ISO 8601 text -> UTC; null where unreadable. Polars guesses one format from the first value (fast);
    the values it could not read (mixed forms, such as dates and datetimes) go through Python's parser."""
    try:
        parsed = text.str.to_datetime(time_unit="us", time_zone="UTC", strict=False)
    except pl.exceptions.PolarsError:  # no format could be guessed at all
        parsed = pl.Series(text.name, [None] * text.len(), dtype=UTC_US)
    if parsed.null_count():
        leftovers = text.filter(parsed.is_null()).unique().to_list()
        mapping = {s: _iso_utc(s) for s in leftovers}
        rest = text.replace_strict(mapping, default=None, return_dtype=UTC_US)
        parsed = pl.select(pl.coalesce(parsed, rest)).to_series()
    return parsed


def epoch_unit_of(peak: float) -> EpochUnit:
    """The unit of unix epochs whose largest magnitude is ``peak`` (up to 1e11 s, 1e14 ms, 1e17 us)."""
    return next(unit for limit, unit in _EPOCH_BOUNDS if peak < limit)


def _from_epoch(
    values: pl.Series, file: str | Path, column: str, unit: EpochUnit | None, first_row: int, row_word: str
) -> pl.Series:
    floats = values.cast(pl.Float64)
    not_finite = ~floats.is_finite()
    if not_finite.any():
        i = _first_index(not_finite)
        raise TableError(f"{_where(file, column, i, first_row, row_word)}: {values[i]!r} is not a unix epoch")
    magnitude = floats.abs()
    unit = unit or epoch_unit_of(float(magnitude.max() or 0.0))  # type: ignore[arg-type]
    too_large = magnitude >= _EPOCH_LIMIT[unit]
    if too_large.any():
        i = _first_index(too_large)
        raise TableError(
            f"{_where(file, column, i, first_row, row_word)}: {values[i]!r} is out of range for unix epochs "
            f"in {unit} (wrong unit?)"
        )
    if values.dtype.is_integer():
        ints = values.cast(pl.Int64)
        micros = ints // 1000 if unit == "ns" else ints * int(_US_PER_UNIT[unit])
    else:
        micros = (floats * _US_PER_UNIT[unit]).round().cast(pl.Int64)
    return micros.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")


def parse_numbers(
    values: pl.Series,
    *,
    file: str | Path,
    column: str | None = None,
    first_row: int = 1,
    row_word: str = "row",
    finite: bool = True,
) -> pl.Series:
    """``values`` (text or numbers) as Float64; missing values stay null (the caller decides on them).

    Text that is not a number is an error naming file, row and value; so are NaN and infinities when
    ``finite`` (``nan`` in a price column is a broken export, not a price)."""
    column = column or values.name
    if values.dtype == pl.String:
        text = values.str.strip_chars()
        text = pl.select(pl.when(text != "").then(text)).to_series()
        out = text.cast(pl.Float64, strict=False)
        bad = out.is_null() & text.is_not_null()
        if bad.any():
            i = _first_index(bad)
            raise TableError(f"{_where(file, column, i, first_row, row_word)}: {values[i]!r} is not a number")
    elif values.dtype.is_numeric() and values.dtype != pl.Boolean:
        out = values.cast(pl.Float64)
    else:
        raise TableError(f"{file}: column {column!r} has type {values.dtype}; expected numbers")
    if finite:
        bad = out.is_not_null() & ~out.is_finite()
        if bad.any():
            i = _first_index(bad)
            raise TableError(f"{_where(file, column, i, first_row, row_word)}: {values[i]!r} is not a finite number")
    return out.alias(values.name)


def split_days(frame: pl.DataFrame, days: Iterable[date], *, keep_empty: bool = True) -> dict[date, pl.DataFrame]:
    """The rows of each of ``days`` by the UTC date of ``timestamp``, in their order; a day without rows
    gets an empty frame, or is left out when ``keep_empty`` is false."""
    wanted = sorted(set(days))
    by_day = frame.with_columns(_day=pl.col("timestamp").dt.date()).filter(pl.col("_day").is_in(wanted))
    groups = {key[0]: part.drop("_day") for key, part in by_day.partition_by("_day", as_dict=True).items()}
    if not keep_empty:
        return {day: groups[day] for day in wanted if day in groups}
    return {day: groups.get(day, frame.clear()) for day in wanted}
