"""Moat landing files: good CSV/Parquet parse into MOAT_SCHEMA; each bad variant is rejected with a reason."""

from __future__ import annotations

import math
import os
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from cyber_pipelines.landing.files import LandingError
from cyber_pipelines.moat.files import MoatFileError, is_moat_file, parse_moat_file
from cyber_pipelines.moat.schema import MOAT_KEY, MOAT_SCHEMA

HEADER = "timestamp,source,entity,metric,value\n"
FUTURE = (datetime.now(UTC) + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def test_good_csv_any_case_iso_and_offsets(tmp_path: Path) -> None:
    text = (
        "Timestamp,SOURCE,Entity,metric,Value,notes\n"
        "2024-03-05T06:00:00Z,government,ETH,filings,3,ignored\n"
        "2024-03-05T14:00:00+02:00, logistics ,ETH,shipments,1250.5,\n"
        "2024-03-05 13:00:00,corporate,*,announcements,0,\n"
    )
    df = parse_moat_file(write(tmp_path, "feeds.csv", text))
    assert df.schema == pl.Schema(MOAT_SCHEMA)
    assert df.rows() == [
        (datetime(2024, 3, 5, 6, tzinfo=UTC), "government", "ETH", "filings", 3.0),
        (datetime(2024, 3, 5, 12, tzinfo=UTC), "logistics", "ETH", "shipments", 1250.5),  # +02:00 -> UTC
        (datetime(2024, 3, 5, 13, tzinfo=UTC), "corporate", "*", "announcements", 0.0),  # naive = UTC
    ]


def test_good_csv_unix_seconds(tmp_path: Path) -> None:
    stamp = int(datetime(2024, 3, 5, 6, tzinfo=UTC).timestamp())
    df = parse_moat_file(write(tmp_path, "unix.csv", HEADER + f"{stamp},government,SOL,filings,-1.5e2\n"))
    assert df.rows() == [(datetime(2024, 3, 5, 6, tzinfo=UTC), "government", "SOL", "filings", -150.0)]


def test_good_parquet_typed_and_text_timestamps(tmp_path: Path) -> None:
    typed = pl.DataFrame(
        {
            "TIMESTAMP": [datetime(2024, 3, 6, 12), datetime(2024, 3, 5, 6)],  # naive datetimes = UTC
            "Source": pl.Series(["logistics", "government"], dtype=pl.Categorical),
            "entity": ["ETH", "ETH"],
            "metric": ["shipments", "filings"],
            "value": [900, 2],  # integers
        }
    )
    typed.write_parquet(tmp_path / "typed.parquet")
    df = parse_moat_file(tmp_path / "typed.parquet")
    assert df.schema == pl.Schema(MOAT_SCHEMA)
    assert df["timestamp"].to_list() == [
        datetime(2024, 3, 5, 6, tzinfo=UTC),
        datetime(2024, 3, 6, 12, tzinfo=UTC),
    ]
    assert df["value"].to_list() == [2.0, 900.0] and df["source"].to_list() == ["government", "logistics"]
    pl.DataFrame(
        {
            "timestamp": ["2024-03-05T06:00:00Z"],
            "source": ["corporate"],
            "entity": ["SOL"],
            "metric": ["announcements"],
            "value": [1.0],
        }
    ).write_parquet(tmp_path / "text.parquet")
    assert parse_moat_file(tmp_path / "text.parquet")["timestamp"].to_list() == [datetime(2024, 3, 5, 6, tzinfo=UTC)]
    unix = pl.DataFrame(
        {"timestamp": [1709625600.5], "source": ["c"], "entity": ["E"], "metric": ["m"], "value": [1.0]}
    )
    unix.write_parquet(tmp_path / "unix.parquet")
    got = parse_moat_file(tmp_path / "unix.parquet")["timestamp"][0]
    assert got == datetime(2024, 3, 5, 8, 0, 0, 500000, tzinfo=UTC)


ROW = "2024-03-05T06:00:00Z,government,ETH,filings,3\n"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("timestamp,source,entity,value\n2024-03-05,g,ETH,1\n", r"missing columns \['metric'\]"),
        (
            "timestamp,source,Source,entity,metric,value\n",
            "moat.csv: columns 'source' and 'Source' differ only in letter case",
        ),
        (HEADER, r"no records \(header only\)"),
        (
            HEADER + ROW + "yesterday,government,ETH,filings,3\n",
            "moat.csv line 3, column 'timestamp': 'yesterday' is not a",
        ),
        (HEADER + ROW + "05/03/2024,g,ETH,f,1\n", "line 3, column 'timestamp': '05/03/2024' is an ambiguous date"),
        (
            HEADER + ROW + "1709625600,g,ETH,f,1\n",
            "line 3, column 'timestamp': '1709625600' is a unix epoch among dates",
        ),
        (HEADER + ",government,ETH,filings,3\n", "moat.csv line 2, column 'timestamp': missing timestamp"),
        (HEADER + "1999-12-31T23:59:59Z,government,ETH,filings,3\n", "outside 2000-01-01"),
        (HEADER + "946684799,government,ETH,filings,3\n", "outside 2000-01-01 .* line 2: '946684799'"),  # 1999
        (HEADER + f"{FUTURE},government,ETH,filings,3\n", "outside 2000-01-01 .. now"),
        (
            HEADER + "2024-03-05T06:00:00Z,government,ETH,filings,abc\n",
            "moat.csv line 2, column 'value': 'abc' is not a number",
        ),
        (HEADER + "2024-03-05T06:00:00Z,,ETH,filings,3\n", "empty source, first at line 2"),
        (HEADER + "2024-03-05T06:00:00Z,government,  ,filings,3\n", "empty entity"),
        (HEADER + "2024-03-05T06:00:00Z,government,ETH,,3\n", "empty metric"),
        (HEADER + ROW + "2024-03-05,g,ETH,f,1,extra\n", "malformed CSV"),
    ],
)
def test_bad_csv_rejected_with_reason(tmp_path: Path, text: str, reason: str) -> None:
    path = write(tmp_path, "moat.csv", text)
    with pytest.raises(MoatFileError, match=reason):
        parse_moat_file(path)


def test_content_problems_are_staged_for_the_quality_suite(tmp_path: Path) -> None:
    """Repeated keys, missing and non-finite values are the moat suite's to block, not the parser's."""
    text = (
        HEADER
        + ROW
        + ROW  # the same observation twice
        + "2024-03-05T08:00:00+02:00, government,ETH,filings,4\n"  # the same key after UTC and strip
        + "2024-03-05T07:00:00Z,government,ETH,shipments,NaN\n"
        + "2024-03-05T08:00:00Z,government,ETH,shipments,-inf\n"
        + "2024-03-05T09:00:00Z,government,ETH,shipments,\n"
    )
    df = parse_moat_file(write(tmp_path, "moat.csv", text))
    assert df.height == 6 and df.schema == pl.Schema(MOAT_SCHEMA)
    assert df.filter(pl.struct(MOAT_KEY).is_duplicated()).height == 3
    values = df.filter(pl.col("metric") == "shipments")["value"].to_list()
    assert math.isnan(values[0]) and values[1] == -math.inf and values[2] is None


def test_epoch_units_are_told_apart_by_magnitude(tmp_path: Path) -> None:
    stamp = datetime(2024, 3, 5, 6, tzinfo=UTC)
    for scale in (1, 1000, 1_000_000, 1_000_000_000):
        epoch = int(stamp.timestamp()) * scale
        df = parse_moat_file(write(tmp_path, "unix.csv", HEADER + f"{epoch},government,SOL,filings,1\n"))
        assert df["timestamp"].to_list() == [stamp], scale


def test_bad_files_rejected_with_reason(tmp_path: Path) -> None:
    cases: dict[str, tuple[bytes, str]] = {
        "bad name;x.csv": (HEADER.encode() + ROW.encode(), "unsafe file name"),
        "moat.json": (b"[]", "unknown extension '.json'"),
        "empty.csv": (b"", "empty file"),
        "latin1.csv": (
            HEADER.encode() + "2024-03-05,gouvernement é,ETH,f,1\n".encode("latin-1"),
            "not UTF-8",
        ),
        "garbage.parquet": (b"PAR1 not really parquet", "not a Parquet file|unreadable Parquet"),
    }
    for name, (data, reason) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(MoatFileError, match=reason):
            parse_moat_file(tmp_path / name)
    (tmp_path / "target.csv").write_text(HEADER + ROW)
    (tmp_path / "link.csv").symlink_to(tmp_path / "target.csv")
    with pytest.raises(MoatFileError, match="not a regular file"):
        parse_moat_file(tmp_path / "link.csv")


@pytest.mark.parametrize(
    ("column", "values", "reason"),
    [
        ("value", [True], "'value' has type Boolean; expected numbers"),
        ("source", [7], "'source' has type Int64; expected text"),
        ("timestamp", [[1, 2]], "bad.parquet: timestamp column 'timestamp' has type List"),
        ("timestamp", [date(1999, 1, 1)], "outside 2000-01-01"),
    ],
)
def test_bad_parquet_rejected_with_reason(tmp_path: Path, column: str, values: list[object], reason: str) -> None:
    data: dict[str, list[object]] = {
        "timestamp": [datetime(2024, 3, 5)],
        "source": ["government"],
        "entity": ["ETH"],
        "metric": ["filings"],
        "value": [1.0],
        column: values,
    }
    pl.DataFrame(data).write_parquet(tmp_path / "bad.parquet")
    with pytest.raises(MoatFileError, match=reason) as info:
        parse_moat_file(tmp_path / "bad.parquet")
    assert isinstance(info.value, LandingError) and isinstance(info.value, ValueError)


def test_is_moat_file_routes_by_header(tmp_path: Path) -> None:
    moat_csv = write(tmp_path, "a.csv", '"Timestamp","Source","Entity","Metric","Value"\n' + ROW)
    ohlcv_csv = write(tmp_path, "BTC-USD.csv", "timestamp,open,high,low,close,volume\n1709625600,1,2,0.5,1.5,10\n")
    kraken_csv = write(tmp_path, "XBTUSD_60.csv", "1709625600,1,2,0.5,1.5,10,3\n")
    pl.DataFrame(
        {
            "timestamp": [datetime(2024, 3, 5)],
            "source": ["g"],
            "entity": ["E"],
            "metric": ["m"],
            "VALUE": [1.0],
        }
    ).write_parquet(tmp_path / "m.parquet")
    pl.DataFrame({"timestamp": [datetime(2024, 3, 5)], "open": [1.0], "close": [1.0]}).write_parquet(
        tmp_path / "o.parquet"
    )
    (tmp_path / "g.parquet").write_bytes(b"junk")
    (tmp_path / "x.json").write_text("[]")
    (tmp_path / "ln.csv").symlink_to(moat_csv)
    assert is_moat_file(moat_csv) and is_moat_file(tmp_path / "m.parquet")
    for path in (ohlcv_csv, kraken_csv, tmp_path / "o.parquet", tmp_path / "g.parquet", tmp_path / "x.json"):
        assert not is_moat_file(path), path
    assert not is_moat_file(tmp_path / "ln.csv") and not is_moat_file(tmp_path / "missing.csv")
    assert not is_moat_file(tmp_path)
    assert parse_moat_file(moat_csv).height == 1


def test_a_moat_file_staged_again_wins_over_files_staged_since(tmp_path: Path) -> None:
    from cyber_pipelines.moat.staging import load_staged_moat, load_staged_moat_days, stage_moat

    def records(*values: float, hour: int = 6) -> pl.DataFrame:
        rows = [(datetime(2024, 3, 10, hour, tzinfo=UTC), "government", "ETH", "filings", v) for v in values]
        return pl.DataFrame(rows, schema=MOAT_SCHEMA, orient="row")

    staging = tmp_path / "staged_moat"
    with pytest.raises(FileNotFoundError, match=f"no staged moat files in {staging}"):
        load_staged_moat(staging, date(2024, 3, 10))
    first, _ = stage_moat(records(1.0), staging)
    second, _ = stage_moat(records(2.0), staging)
    assert second.sequence > first.sequence
    future = 4_000_000_000_000_000_000  # mtimes play no part
    os.utime(first.path, ns=(future, future))
    assert load_staged_moat(staging, date(2024, 3, 10))["value"].to_list() == [2.0]
    again, new = stage_moat(records(1.0), staging)  # the first file dropped again: it is the latest word
    assert new and again.sequence > second.sequence
    assert load_staged_moat(staging, date(2024, 3, 10))["value"].to_list() == [1.0]
    assert stage_moat(records(1.0), staging) == (again, False)  # already the newest: not staged twice

    stage_moat(records(3.0, 4.0), staging)  # a repeated key inside the newest file: both rows kept
    assert sorted(load_staged_moat(staging, date(2024, 3, 10))["value"].to_list()) == [3.0, 4.0]
    days = load_staged_moat_days(staging, [date(2024, 3, 10), date(2024, 3, 11)])
    assert days[date(2024, 3, 11)].is_empty() and days[date(2024, 3, 11)].schema == pl.Schema(MOAT_SCHEMA)
    assert days[date(2024, 3, 10)].height == 2
