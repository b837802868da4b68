"""Reading generic OHLCV CSVs and writing their feature tables."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from cyber_pipelines.features.indicators import INDICATOR_COLUMNS, WARMUP_BARS, add_indicators
from cyber_pipelines.features.ohlcv_csv import compute_features_file, read_ohlcv_csv
from cyber_pipelines.market.schema import OHLCV_SCHEMA, OhlcvError

backtesting = pytest.importorskip("backtesting")
GOOG = Path(backtesting.__file__).parent / "test" / "GOOG.csv"

ROWS = "100,101,99,100.5,10\n100.5,102,100,101,12\n101,101.5,98,99,8\n"


def write(tmp_path: Path, text: str, name: str = "in.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def with_times(header: str, times: list[str]) -> str:
    rows = ROWS.splitlines()
    return header + "\n" + "".join(f"{t},{r}\n" for t, r in zip(times, rows, strict=True))


def test_goog_csv_from_backtesting():
    candles = read_ohlcv_csv(GOOG)
    assert candles.schema == OHLCV_SCHEMA
    assert candles.height == 2148
    assert candles["timestamp"][0] == datetime(2004, 8, 19, tzinfo=UTC)
    assert candles.row(0)[1:] == (100.0, 104.06, 95.96, 100.34, 22351900.0)
    assert candles["timestamp"].is_unique().all() and candles["timestamp"].is_sorted()


@pytest.mark.parametrize(
    ("header", "times", "first"),
    [
        ("Date,Open,High,Low,Close,Volume", ["2024-01-01", "2024-01-02", "2024-01-03"], datetime(2024, 1, 1)),
        (
            "timestamp,open,high,low,close,volume",
            ["2024-01-01 00:00:00", "2024-01-01 01:00:00", "2024-01-01 02:00:00"],
            datetime(2024, 1, 1),
        ),
        (  # offsets are converted to UTC
            "DATETIME,OPEN,HIGH,LOW,CLOSE,VOLUME",
            ["2024-01-01T02:00:00+02:00", "2024-01-01T03:00:00+02:00", "2024-01-01T04:00:00+02:00"],
            datetime(2024, 1, 1),
        ),
        ("Timestamp,Open,High,Low,Close,Volume", ["1704067200", "1704070800", "1704074400"], datetime(2024, 1, 1)),
        (
            "timestamp,Open,High,Low,Close,Volume",
            ["1704067200000", "1704070800000", "1704074400000"],
            datetime(2024, 1, 1),
        ),
        ("date,open,high,low,close,volume", ["20240105", "20240106", "20240107"], datetime(2024, 1, 5)),
        (
            ",Open,High,Low,Close,Volume",
            ["2017-04-19 09:00:00", "2017-04-19 10:00:00", "2017-04-19 11:00:00"],
            datetime(2017, 4, 19, 9),
        ),
    ],
)
def test_time_formats_and_letter_case(tmp_path, header, times, first):
    candles = read_ohlcv_csv(write(tmp_path, with_times(header, times)))
    assert candles.schema == OHLCV_SCHEMA
    assert candles["timestamp"][0] == first.replace(tzinfo=UTC)
    assert candles["close"].to_list() == [100.5, 101.0, 99.0]


def test_split_date_and_time_columns_and_extra_columns(tmp_path):
    text = (
        "Date,Time,Open,High,Low,Close,Adj Close,Volume\n"
        "2024-01-01,10:00,1,2,0.5,1.5,9,3\n"
        "2024-01-01,09:00,1,2,0.5,1.2,9,3\n"
    )
    candles = read_ohlcv_csv(write(tmp_path, text))
    assert candles["timestamp"].to_list() == [
        datetime(2024, 1, 1, 9, tzinfo=UTC),
        datetime(2024, 1, 1, 10, tzinfo=UTC),
    ]  # sorted by time
    assert candles.columns == list(OHLCV_SCHEMA)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Date,Open,High,Low,Close\n2024-01-01,1,2,0.5,1.5\n", r"missing columns \['volume'\]"),
        ("Open,High,Low,Close,Volume\n1,2,0.5,1.5,3\n", r"missing columns \['timestamp \(or date\)'\]"),
        ("Date,Open,High,Low,Close,Volume,close\n2024-01-01,1,2,0.5,1.5,3,1\n", "differ only in letter case"),
        (
            "Date,Open,High,Low,Close,Volume\n2024-01-01,1,2,0.5,n/a,3\n",
            r"in.csv line 2, column 'Close': 'n/a' is not a num",
        ),
        (
            "Date,Open,High,Low,Close,Volume\n2024-01-01,1,2,0.5,1.5,3\n2024-01-02,1,2,,1.5,3\n",
            "in.csv line 3, column 'Low': missing value",
        ),
        (
            "Date,Open,High,Low,Close,Volume\nyesterday,1,2,0.5,1.5,3\n",
            "in.csv line 2, column 'Date': 'yesterday' is not a",
        ),
        ("Date,Open,High,Low,Close,Volume\n,1,2,0.5,1.5,3\n", "line 2, column 'Date': missing timestamp"),
        ("Date,Open,High,Low,Close,Volume\n", "no data rows"),
    ],
)
def test_clear_errors(tmp_path, text, message):
    with pytest.raises(OhlcvError, match=message):
        read_ohlcv_csv(write(tmp_path, text))


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such CSV"):
        read_ohlcv_csv(tmp_path / "nope.csv")


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_compute_features_file(tmp_path, suffix):
    out_path = tmp_path / "out" / f"goog_features{suffix}"
    features = compute_features_file(GOOG, out_path)
    assert out_path.exists() and not list(out_path.parent.glob(".*.tmp"))
    written = pl.read_parquet(out_path) if suffix == ".parquet" else pl.read_csv(out_path, try_parse_dates=True)
    assert written.height == 2148
    assert written.columns == [*OHLCV_SCHEMA, *INDICATOR_COLUMNS]
    assert features.equals(add_indicators(read_ohlcv_csv(GOOG)))
    assert written.slice(WARMUP_BARS).select(INDICATOR_COLUMNS).null_count().sum_horizontal().item() == 0
    assert written["rsi_14"].drop_nulls().is_between(0, 100).all()
    assert written["rsi_14"].to_list()[WARMUP_BARS:] == pytest.approx(features["rsi_14"].to_list()[WARMUP_BARS:])


def test_compute_features_file_rejects_other_extensions(tmp_path):
    with pytest.raises(ValueError, match=r"\.parquet or \.csv"):
        compute_features_file(GOOG, tmp_path / "out.json")


# --- timestamps: ISO 8601, epochs, ambiguous dates ------------------------------------------------
@pytest.mark.parametrize(
    ("times", "first"),
    [
        (["2024-01-01T00:00:00Z", "2024-01-01T01:00:00Z", "2024-01-01T02:00:00Z"], datetime(2024, 1, 1)),
        (["2024-01-01", "2024-01-01 01:00", "2024-01-01T02:00:00+00:00"], datetime(2024, 1, 1)),  # mixed ISO forms
        (["1704067200", "1704070800", "1704074400"], datetime(2024, 1, 1)),  # seconds
        (["1704067200000", "1704070800000", "1704074400000"], datetime(2024, 1, 1)),  # milliseconds
        (["1704067200000000", "1704070800000000", "1704074400000000"], datetime(2024, 1, 1)),  # microseconds
        (["1704067200000000000", "1704070800000000000", "1704074400000000000"], datetime(2024, 1, 1)),  # ns
        (["2021/01/02", "2021/01/03", "2021/01/04"], datetime(2021, 1, 2)),  # year first: not ambiguous
    ],
)
def test_iso_and_epoch_timestamps(tmp_path, times, first):
    candles = read_ohlcv_csv(write(tmp_path, with_times("Date,Open,High,Low,Close,Volume", times)))
    assert candles["timestamp"][0] == first.replace(tzinfo=UTC)
    assert candles["timestamp"].diff().drop_nulls().dt.total_seconds().to_list() in ([3600, 3600], [86400, 86400])


@pytest.mark.parametrize(
    "times", [["01/02/2021", "01/03/2021", "01/04/2021"], ["01.02.2021", "02.02.2021", "03.02.2021"]]
)
def test_ambiguous_dates_are_refused_naming_date_format_file_and_line(tmp_path, times):
    path = write(tmp_path, with_times("Date,Open,High,Low,Close,Volume", times), name="us.csv")
    with pytest.raises(OhlcvError) as info:
        read_ohlcv_csv(path)
    message = str(info.value)
    assert "--date-format" in message and "ambiguous" in message
    assert f"{path} line 2, column 'Date'" in message and repr(times[0]) in message


def test_explicit_date_format_reads_us_and_european_dates(tmp_path):
    times = ["01/02/2021", "01/03/2021", "01/04/2021"]
    path = write(tmp_path, with_times("Date,Open,High,Low,Close,Volume", times))
    us = read_ohlcv_csv(path, date_format="%m/%d/%Y")
    assert us["timestamp"].to_list() == [datetime(2021, 1, d, tzinfo=UTC) for d in (2, 3, 4)]  # daily stays daily
    eu = read_ohlcv_csv(path, date_format="%d/%m/%Y")
    assert eu["timestamp"].to_list() == [datetime(2021, m, 1, tzinfo=UTC) for m in (2, 3, 4)]
    bad = write(
        tmp_path, with_times("Date,Open,High,Low,Close,Volume", ["01/02/2021", "13/02/2021", "01/04/2021"]), "bad.csv"
    )
    with pytest.raises(
        OhlcvError, match=r"line 3, column 'Date': '13/02/2021' does not match --date-format '%m/%d/%Y'"
    ):
        read_ohlcv_csv(bad, date_format="%m/%d/%Y")
    features = compute_features_file(path, tmp_path / "f.parquet", date_format="%m/%d/%Y")
    assert features["timestamp"][0] == datetime(2021, 1, 2, tzinfo=UTC)


def test_compute_features_file_refuses_to_write_over_its_input(tmp_path):
    source = tmp_path / "goog.csv"
    source.write_bytes(GOOG.read_bytes())
    before = source.read_bytes()
    (tmp_path / "sub").mkdir()
    link = tmp_path / "hard.csv"
    os.link(source, link)
    for output in (source, tmp_path / "sub" / ".." / "goog.csv", link):
        with pytest.raises(ValueError, match="refusing to write the features over the input") as info:
            compute_features_file(source, output)
        assert str(source) in str(info.value) and str(output) in str(info.value)
        assert "\n" not in str(info.value)
    assert source.read_bytes() == before
