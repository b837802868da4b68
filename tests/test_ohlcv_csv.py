"""Reading generic OHLCV CSVs and writing their feature tables."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from cyber_pipelines.features.indicators import INDICATOR_COLUMNS, WARMUP_BARS, add_indicators
from cyber_pipelines.features.ohlcv_csv import compute_features_file, read_ohlcv_csv
from cyber_pipelines.market.schema import OHLCV_SCHEMA, OhlcvError, validate_ohlcv

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
    assert validate_ohlcv(candles) == []


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
        ("Date,Open,High,Low,Close,Volume\n2024-01-01,1,2,0.5,n/a,3\n", r"'Close' data row 1: 'n/a' is not a num"),
        ("Date,Open,High,Low,Close,Volume\n2024-01-01,1,2,0.5,1.5,3\n2024-01-02,1,2,,1.5,3\n", "'Low' data row 2"),
        ("Date,Open,High,Low,Close,Volume\nyesterday,1,2,0.5,1.5,3\n", "neither ISO dates"),
        ("Date,Open,High,Low,Close,Volume\n,1,2,0.5,1.5,3\n", "empty time"),
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
