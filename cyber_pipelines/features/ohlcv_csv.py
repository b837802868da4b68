"""Read any OHLCV CSV (Date/timestamp, Open, High, Low, Close, Volume) and write its indicator table.

Column names match in any letter case; extra columns are ignored. The time column is the first of
``timestamp``, ``datetime``, ``date`` (combined with a separate ``time`` column if there is one),
``time``, or an unnamed first column (a pandas index, as in backtesting.py's GOOG.csv). Its values are
read by ``cyber_pipelines.tables.parse_timestamps``: ISO dates or datetimes (naive = UTC, offsets
converted to UTC), compact ``YYYYMMDD`` dates, unix epochs in s/ms/us/ns (told apart by magnitude); an
ambiguous day/month order (``01/02/2021``) needs ``date_format`` (the CLI's ``--date-format``).
"""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl

from cyber_pipelines.features.indicators import add_indicators
from cyber_pipelines.market.schema import OHLCV_COLUMNS, OhlcvError, conform_ohlcv
from cyber_pipelines.storage import write_atomic, write_parquet_atomic
from cyber_pipelines.tables import Columns, TableError, first_line, parse_numbers, parse_timestamps

_VALUE_COLUMNS = OHLCV_COLUMNS[1:]  # open, high, low, close, volume


def _find_columns(columns: Columns, header: list[str], path: Path) -> tuple[list[str], dict[str, str]]:
    """The source column(s) of the time and the source name of each of open..volume."""
    missing = columns.missing(_VALUE_COLUMNS)
    time_cols = columns.present(("timestamp",)) or columns.present(("datetime",))
    if not time_cols and "date" in columns:
        time_cols = columns.present(("date", "time"))
    elif not time_cols:
        time_cols = columns.present(("time",))
    if not time_cols and header and header[0].strip() == "":
        time_cols = [header[0]]
    if not time_cols:
        missing.insert(0, "timestamp (or date)")
    if missing:
        raise OhlcvError(
            f"{path}: missing columns {missing}; need Date/timestamp, Open, High, Low, Close, Volume "
            f"(any letter case), have {header}"
        )
    return time_cols, {c: columns[c] for c in _VALUE_COLUMNS}


def read_ohlcv_csv(path: str | Path, date_format: str | None = None) -> pl.DataFrame:
    """Candles from an OHLCV CSV in ``OHLCV_SCHEMA`` (UTC timestamps), sorted by time.

    ``date_format`` (strftime, the CLI's ``--date-format``) reads the time column in that format; without
    it, ISO 8601 and unix epochs are read and an ambiguous date such as ``01/02/2021`` is refused.
    Raises ``OhlcvError`` (a ``ValueError``) naming the file, the column, the line and the value.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such CSV file: {path}")
    try:
        raw = pl.read_csv(path, infer_schema=False)
    except pl.exceptions.PolarsError as exc:
        raise OhlcvError(f"{path}: not a readable CSV: {first_line(exc)}") from exc
    try:
        time_cols, sources = _find_columns(Columns(raw.columns, path), raw.columns, path)
        if raw.height == 0:
            raise OhlcvError(f"{path}: no data rows")
        time_text = raw[time_cols[0]] if len(time_cols) == 1 else raw[time_cols[0]] + " " + raw[time_cols[1]]
        time_name = " + ".join(time_cols)
        stamps = parse_timestamps(
            time_text, file=path, column=time_name, date_format=date_format, first_row=2, row_word="line"
        )
        columns = [stamps.alias("timestamp")]
        for name, source in sources.items():
            values = parse_numbers(raw[source], file=path, column=source, first_row=2, row_word="line")
            if values.null_count():
                line = int(values.is_null().arg_max() or 0) + 2
                raise OhlcvError(f"{path} line {line}, column {source!r}: missing value")
            columns.append(values.alias(name))
    except TableError as exc:
        raise OhlcvError(str(exc)) from exc
    return conform_ohlcv(pl.DataFrame(columns))


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # the output does not exist yet
        return False


def compute_features_file(input: Path, output: Path, date_format: str | None = None) -> pl.DataFrame:
    """Read an OHLCV CSV, add the indicators and write them to ``output`` (.parquet or .csv).

    Refuses to write over the input (the same path, or the same file through a link). The output is
    written atomically (temp file + rename). Returns the feature table.
    """
    input, output = Path(input), Path(output)
    suffix = output.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise ValueError(f"output must end in .parquet or .csv, got {output.name!r}")
    if _same_file(input, output):
        raise ValueError(f"refusing to write the features over the input: output {output} is the input {input}")
    features = add_indicators(read_ohlcv_csv(input, date_format=date_format))
    if suffix == ".parquet":
        write_parquet_atomic(features, output)
    else:
        write_atomic(output, features.write_csv)
    return features
