"""Landing-folder ingestion: formats, rejection reasons, quarantine, staging and scanning."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from cyber_pipelines.market import landing
from cyber_pipelines.market.landing import (
    LandingError,
    load_staged,
    parse_landing_file,
    quarantine,
    scan_landing,
    stage_batch,
)
from cyber_pipelines.market.schema import OHLCV_SCHEMA

T0 = int(datetime(2024, 3, 1, tzinfo=UTC).timestamp())  # a midnight, unix seconds


Row = tuple[int, float, float, float, float, float]


def minute_candles(n: int, seed: int = 1, step_s: int = 60) -> list[Row]:
    """Valid candles (unix s, o, h, l, c, v) with distinct values, one every ``step_s`` seconds."""
    rng = np.random.default_rng(seed)
    close = 100.0 + np.cumsum(rng.normal(0, 0.5, n))
    open_ = np.concatenate(([100.0], close[:-1]))
    high = np.maximum(open_, close) + rng.uniform(0.01, 1.0, n)
    low = np.minimum(open_, close) - rng.uniform(0.01, 1.0, n)
    volume = rng.uniform(0.1, 5.0, n).round(6)
    o, h, lo, c = (np.round(x, 6).tolist() for x in (open_, high, low, close))
    return [(T0 + i * step_s, o[i], h[i], lo[i], c[i], float(volume[i])) for i in range(n)]


def kraken_csv(rows: list[tuple], trades: int = 3) -> str:
    return "".join(f"{t},{o},{h},{lo},{c},{v},{trades}\n" for t, o, h, lo, c, v in rows)


def expected_hourly(rows: list[tuple]) -> pl.DataFrame:
    """Hourly aggregation computed in plain Python, independent of the polars code under test."""
    hours: dict[int, list[tuple]] = {}
    for row in rows:
        hours.setdefault(row[0] // 3600 * 3600, []).append(row)
    out = [
        (
            datetime.fromtimestamp(h, UTC),
            rs[0][1],
            max(r[2] for r in rs),
            min(r[3] for r in rs),
            rs[-1][4],
            sum(r[5] for r in rs),
        )
        for h, rs in sorted(hours.items())
    ]
    return pl.DataFrame(out, schema=OHLCV_SCHEMA, orient="row")


def assert_candles(actual: pl.DataFrame, expected: pl.DataFrame) -> None:
    assert actual.schema == pl.Schema(OHLCV_SCHEMA)
    assert actual["timestamp"].to_list() == expected["timestamp"].to_list()
    for col in ("open", "high", "low", "close", "volume"):
        np.testing.assert_allclose(actual[col].to_numpy(), expected[col].to_numpy(), rtol=1e-12)


# --------------------------------------------------------------------------------------------- formats


def test_kraken_hourly_csv_values_and_metadata(tmp_path: Path) -> None:
    rows = minute_candles(30, step_s=3600)
    path = tmp_path / "XBTUSD_60.csv"
    path.write_text(kraken_csv(rows))
    batch = parse_landing_file(path)
    assert batch.pair == "BTC/USD"
    assert batch.source_format == "kraken_csv" and batch.source_interval_s == 3600
    assert_candles(batch.candles, expected_hourly(rows))
    assert batch.days == [date(2024, 3, 1), date(2024, 3, 2)]
    assert batch.content_hash == hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    assert batch.source_file == "XBTUSD_60.csv"


def test_kraken_minute_csv_is_aggregated_to_hours_keeping_partial_hours(tmp_path: Path) -> None:
    rows = minute_candles(150)  # 2.5 hours
    del rows[70:75]  # minutes without trades are absent in Kraken files
    path = tmp_path / "ETHUSD_1.csv"
    path.write_text(kraken_csv(rows))
    batch = parse_landing_file(path)
    assert batch.pair == "ETH/USD" and batch.source_interval_s == 60
    assert batch.candles.height == 3
    assert_candles(batch.candles, expected_hourly(rows))


def test_kraken_asset_codes_are_mapped(tmp_path: Path) -> None:
    rows = minute_candles(24, step_s=300)
    for name, pair in (
        ("XDGUSD_5.csv", "DOGE/USD"),
        ("XXBTZEUR_5.csv", "BTC/EUR"),
        ("ETHXBT_5.csv", "ETH/BTC"),
    ):
        (tmp_path / name).write_text(kraken_csv(rows))
        assert parse_landing_file(tmp_path / name).pair == pair


def test_ccxt_json_milliseconds(tmp_path: Path) -> None:
    rows = minute_candles(90, seed=2)
    path = tmp_path / "BTC_USDT_1m.json"
    path.write_text(json.dumps([[t * 1000, o, h, lo, c, v] for t, o, h, lo, c, v in rows]))
    batch = parse_landing_file(path)
    assert batch.pair == "BTC/USDT" and batch.source_format == "ccxt_json"
    assert_candles(batch.candles, expected_hourly(rows))


def test_generic_csv_any_case_iso_dates(tmp_path: Path) -> None:
    rows = minute_candles(48, seed=3, step_s=3600)
    lines = ["Date,OPEN,High,low,Close,VOLUME,extra"] + [
        f"{datetime.fromtimestamp(t, UTC):%Y-%m-%d %H:%M:%S},{o},{h},{lo},{c},{v},x" for t, o, h, lo, c, v in rows
    ]
    path = tmp_path / "BTC-USD.csv"
    path.write_text("\n".join(lines) + "\n")
    batch = parse_landing_file(path)
    assert batch.pair == "BTC/USD" and batch.source_format == "csv"
    assert_candles(batch.candles, expected_hourly(rows))


def test_generic_parquet_with_symbol_column_and_epoch_ms(tmp_path: Path) -> None:
    rows = minute_candles(120, seed=4, step_s=900)  # 15-minute candles
    frame = pl.DataFrame(rows, schema=["TimeStamp", "open", "HIGH", "low", "close", "Volume"], orient="row")
    frame = frame.with_columns(pl.col("TimeStamp") * 1000, Symbol=pl.lit("eth/eur"))
    path = tmp_path / "export_march.parquet"
    frame.write_parquet(path)
    batch = parse_landing_file(path)
    assert batch.pair == "ETH/EUR" and batch.source_interval_s == 900
    assert_candles(batch.candles, expected_hourly(rows))


@pytest.mark.parametrize(
    ("name", "pair"),
    [
        ("BTC-USD.csv", "BTC/USD"),
        ("BTC_USD_anything.csv", "BTC/USD"),
        ("BTCUSD_60.csv", "BTC/USD"),
        ("sol-eur.csv", "SOL/EUR"),
        ("XBTUSDT_export.csv", "BTC/USDT"),
    ],
)
def test_pair_from_generic_file_name(tmp_path: Path, name: str, pair: str) -> None:
    rows = minute_candles(3, step_s=3600)
    body = "timestamp,open,high,low,close,volume\n" + "".join(
        f"{t},{o},{h},{lo},{c},{v}\n" for t, o, h, lo, c, v in rows
    )
    (tmp_path / name).write_text(body)
    assert parse_landing_file(tmp_path / name).pair == pair


# --------------------------------------------------------------------------------------------- rejections

GOOD = minute_candles(6, step_s=3600)
HEADER = "timestamp,open,high,low,close,volume\n"


def _named(rows: list[tuple]) -> str:
    return HEADER + "".join(f"{t},{o},{h},{lo},{c},{v}\n" for t, o, h, lo, c, v in rows)


def _swap_high_low(rows: list[tuple], i: int) -> list[tuple]:
    t, o, h, lo, c, v = rows[i]
    return [*rows[:i], (t, o, lo, h, c, v), *rows[i + 1 :]]


def _parquet_bytes(rows: list[tuple]) -> bytes:
    buffer = io.BytesIO()
    pl.DataFrame(rows, schema=["timestamp", "open", "high", "low", "close", "volume"], orient="row").write_parquet(
        buffer
    )
    return buffer.getvalue()


BAD_FILES: dict[str, tuple[str, bytes, str]] = {
    "truncated": ("XBTUSD_60.csv", kraken_csv(GOOD).encode()[:-25], "missing fields"),
    "truncated_json": (
        "BTC-USD.json",
        json.dumps([[t * 1000, *r] for t, *r in GOOD]).encode()[:-7],
        "invalid JSON",
    ),
    "ragged": ("BTC-USD.csv", (_named(GOOD) + f"{T0 + 99 * 3600},1,2,0.5,1,1,9\n").encode(), "malformed CSV"),
    "wrong_columns": ("BTC-USD.csv", _named(GOOD).replace("timestamp", "ts").encode(), "no timestamp column"),
    "missing_volume": (
        "BTC-USD.csv",
        _named(GOOD).replace("volume", "vol").encode(),
        "missing columns ['volume']",
    ),
    "comma_in_number": (
        "BTC-USD.csv",
        _named(GOOD).replace(str(GOOD[2][4]), "12,5x", 1).encode(),
        "malformed CSV",
    ),
    "not_a_number": (
        "BTC-USD.csv",
        _named(GOOD).replace(str(GOOD[2][4]), "abc", 1).encode(),
        "is not a number",
    ),
    "high_below_low": ("BTC-USD.csv", _named(_swap_high_low(GOOD, 4)).encode(), "high < low"),
    "duplicate_timestamps": ("BTC-USD.csv", _named([*GOOD, GOOD[3]]).encode(), "share a timestamp"),
    "binary_garbage": ("BTC-USD.csv", bytes(range(256)) * 4, "binary"),
    "invalid_utf8": ("BTC-USD.csv", b"timestamp,open\n\xff\xfe\xfa,1\n", "not UTF-8"),
    "garbage_parquet": ("BTC-USD.parquet", b"PAR2 this is not parquet", "not a Parquet file"),
    "truncated_parquet": ("BTC-USD.parquet", _parquet_bytes(GOOD)[:-100], "not a Parquet file"),
    "empty": ("BTC-USD.csv", b"", "empty file"),
    "header_only": ("BTC-USD.csv", HEADER.encode(), "no candles"),
    "unknown_extension": ("BTC-USD.txt", _named(GOOD).encode(), "unknown extension"),
    "no_pair": ("prices.csv", _named(GOOD).encode(), "no recognisable pair"),
    "coarser_than_hour": ("XBTUSD_1440.csv", kraken_csv(minute_candles(3, step_s=86400)).encode(), "coarser"),
    "off_grid": (
        "BTC-USD.csv",
        _named([(t + 7, *r) for t, *r in GOOD]).encode(),
        "not on the 60-minute grid",
    ),
    "pipe_in_name": ("BTC|USD.csv", _named(GOOD).encode(), "unsafe file name"),
    "comma_in_name": ("BTC,USD.csv", _named(GOOD).encode(), "unsafe file name"),
    "hidden": (".BTC-USD.csv", _named(GOOD).encode(), "hidden file"),
    "milliseconds_as_seconds": (
        "XBTUSD_60.csv",
        kraken_csv([(t * 1000, *r) for t, *r in GOOD]).encode(),
        "out of range for unix epochs in s",
    ),
    "before_bitcoin": (
        "XBTUSD_60.csv",
        kraken_csv([(t - T0 + 631152000, *r) for t, *r in GOOD]).encode(),
        "fall outside",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_file_is_rejected_and_quarantined_with_reason(tmp_path: Path, case: str) -> None:
    name, content, reason = BAD_FILES[case]
    landing_dir = tmp_path / "landing"
    landing_dir.mkdir()
    path = landing_dir / name
    path.write_bytes(content)
    with pytest.raises(LandingError) as info:
        parse_landing_file(path)
    assert reason in str(info.value)
    moved = quarantine(path, landing_dir / "quarantine", str(info.value))
    assert not path.exists()
    assert moved.parent == landing_dir / "quarantine"
    assert moved.read_bytes() == content
    note = (moved.parent / f"{moved.name}.reason.txt").read_text()
    assert str(info.value) in note and repr(name) in note and "quarantined_at:" in note
    assert not moved.name.startswith(".") and "|" not in moved.name and "," not in moved.name


def test_path_traversal_is_rejected_and_quarantined_inside_the_folder(tmp_path: Path) -> None:
    landing_dir = tmp_path / "a" / "b" / "landing"
    landing_dir.mkdir(parents=True)
    outside = tmp_path / "a" / "x.csv"
    outside.write_text(_named(GOOD))
    path = landing_dir / ".." / ".." / "x.csv"
    with pytest.raises(LandingError, match="path traversal"):
        parse_landing_file(path)
    moved = quarantine(path, landing_dir / "quarantine", "path traversal")
    assert moved == landing_dir / "quarantine" / "x.csv"
    assert not outside.exists() and moved.read_text() == _named(GOOD)


def test_quarantine_keeps_both_files_with_the_same_name(tmp_path: Path) -> None:
    qdir = tmp_path / "quarantine"
    moved = []
    for i in range(3):
        src = tmp_path / f"drop{i}" / "BTC-USD.csv"
        src.parent.mkdir()
        src.write_text(f"version {i}")
        moved.append(quarantine(src, qdir, f"reason {i}"))
    assert len(set(moved)) == 3
    for i, path in enumerate(moved):
        assert path.read_text() == f"version {i}"
        assert f"reason: reason {i}" in (qdir / f"{path.name}.reason.txt").read_text()


def test_quarantine_never_loses_the_file_when_the_move_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "BTC-USD.csv"
    src.write_text("payload")

    def failing_move(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(shutil, "move", failing_move)
    with pytest.raises(OSError, match="disk full"):
        quarantine(src, tmp_path / "quarantine", "bad")
    assert src.read_text() == "payload"
    assert list((tmp_path / "quarantine").iterdir()) == []


def test_one_bad_row_rejects_the_whole_file(tmp_path: Path) -> None:
    rows = minute_candles(600)
    path = tmp_path / "XBTUSD_1.csv"
    path.write_text(kraken_csv(_swap_high_low(rows, 599)))
    with pytest.raises(LandingError, match="high < low: 1 rows"):
        parse_landing_file(path)


# --------------------------------------------------------------------------------------------- staging


def _batch(tmp_path: Path, name: str, rows: list[tuple]) -> landing.LandingBatch:
    path = tmp_path / name
    path.write_text(kraken_csv(rows))
    return parse_landing_file(path)


def test_stage_is_atomic_path_and_idempotent(tmp_path: Path) -> None:
    batch = _batch(tmp_path, "XBTUSD_60.csv", minute_candles(30, step_s=3600))
    staging = tmp_path / "staging"
    path = stage_batch(batch, staging)
    assert path == staging / "BTC-USD" / f"{batch.content_hash}.parquet"
    assert stage_batch(batch, staging) == path
    assert [p.name for p in (staging / "BTC-USD").iterdir()] == [path.name]
    assert pl.read_parquet(path).equals(batch.candles)


def test_load_staged_later_files_win(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    first_rows = minute_candles(30, seed=5, step_s=3600)  # 2024-03-01 00:00 .. 03-02 05:00
    later_rows = [(t, o * 2, h * 2, lo * 2, c * 2, v) for t, o, h, lo, c, v in first_rows[20:26]]
    first = _batch(tmp_path, "XBTUSD_60.csv", first_rows)
    (tmp_path / "second").mkdir()
    later = _batch(tmp_path / "second", "XBTUSD_60.csv", later_rows)
    stage_batch(first, staging)
    stage_batch(later, staging)

    day1 = load_staged(staging, "BTC/USD", date(2024, 3, 1))
    assert day1.schema == pl.Schema(OHLCV_SCHEMA) and day1.height == 24
    expected = expected_hourly(first_rows[:20] + later_rows[:4])
    assert_candles(day1, expected)
    day2 = load_staged(staging, "BTC-USD", date(2024, 3, 2))
    assert_candles(day2, expected_hourly(later_rows[4:] + first_rows[26:]))

    stage_batch(first, staging)  # re-staging makes a file the latest again
    assert_candles(load_staged(staging, "BTC/USD", date(2024, 3, 1)), expected_hourly(first_rows[:24]))


def test_load_staged_missing_day_or_pair(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    stage_batch(_batch(tmp_path, "XBTUSD_60.csv", minute_candles(5, step_s=3600)), staging)
    with pytest.raises(FileNotFoundError, match="BTC/USD on 2024-03-05"):
        load_staged(staging, "BTC/USD", date(2024, 3, 5))
    with pytest.raises(FileNotFoundError, match="nothing staged for ETH/USD"):
        load_staged(staging, "ETH/USD", date(2024, 3, 1))


def test_failed_stage_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    batch = _batch(tmp_path, "XBTUSD_60.csv", minute_candles(5, step_s=3600))

    def failing_write(self: pl.DataFrame, file: object, **kwargs: object) -> None:
        Path(str(file)).write_bytes(b"PAR1 half")
        raise OSError("disk full")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", failing_write)
    with pytest.raises(OSError, match="disk full"):
        stage_batch(batch, tmp_path / "staging")
    assert list((tmp_path / "staging" / "BTC-USD").iterdir()) == []


# --------------------------------------------------------------------------------------------- scanning


def test_scan_landing_selects_settled_regular_files(tmp_path: Path) -> None:
    root = tmp_path / "landing"
    for sub in ("quarantine", "staging", "staged", "processed", "inbox"):
        (root / sub).mkdir(parents=True)
        (root / sub / "ETH-USD.csv").write_text("x")
    names = ["b.csv", "a.json", "BTC|USD.csv", ".hidden.csv", "upload.csv.part", "fresh.csv"]
    for name in names:
        (root / name).write_text("x")
    (root / "link.csv").symlink_to(root / "a.json")
    old = 1_700_000_000.0
    for path in [*root.rglob("*"), root / "link.csv"]:
        os.utime(path, (old, old), follow_symlinks=False)
    now = old + 60
    os.utime(root / "fresh.csv", (now - 1, now - 1))

    assert scan_landing(root, min_age_s=5, now=now) == [root / "BTC|USD.csv", root / "a.json", root / "b.csv"]
    assert root / "fresh.csv" in scan_landing(root, min_age_s=0, now=now + 1)
    deep = scan_landing(root, min_age_s=5, now=now, recursive=True)
    assert root / "inbox" / "ETH-USD.csv" in deep
    assert not any(p.parent.name in ("quarantine", "staging", "staged", "processed") for p in deep)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        scan_landing(tmp_path / "nowhere")


def test_mixed_drop_stages_good_and_quarantines_bad(tmp_path: Path) -> None:
    root = tmp_path / "landing"
    root.mkdir()
    good_rows = minute_candles(24, step_s=3600)
    (root / "XBTUSD_60.csv").write_text(kraken_csv(good_rows))
    (root / "ETH-USD.csv").write_text(_named(_swap_high_low(good_rows, 10)))
    (root / "SOL-USD.csv").write_bytes(b"")
    staged, rejected = [], []
    for path in scan_landing(root, min_age_s=0):
        try:
            staged.append(stage_batch(parse_landing_file(path), root / "staging"))
        except LandingError as exc:
            rejected.append(quarantine(path, root / "quarantine", str(exc)).name)
    assert [p.parent.name for p in staged] == ["BTC-USD"]
    assert sorted(rejected) == ["ETH-USD.csv", "SOL-USD.csv"]
    assert sorted(p.name for p in (root / "staging").iterdir()) == ["BTC-USD"]
    assert_candles(load_staged(root / "staging", "BTC/USD", date(2024, 3, 1)), expected_hourly(good_rows))
    assert sorted(p.name for p in root.iterdir() if p.is_file()) == ["XBTUSD_60.csv"]
    assert (root / "quarantine" / "ETH-USD.csv.reason.txt").read_text().startswith("reason: high < low")
