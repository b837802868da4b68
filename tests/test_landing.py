"""Landing-folder ingestion: formats, rejection reasons, quarantine, staging by sequence, listing, intake."""

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

from cyber_pipelines.landing.files import LandingError
from cyber_pipelines.landing.intake import Listed, discard_pending, intake_files, process_landing
from cyber_pipelines.landing.listing import Entry, batch_key, batches, decide, list_landing, stable_by_age
from cyber_pipelines.landing.moves import quarantine
from cyber_pipelines.landing.ohlcv import LandingBatch, parse_landing_file
from cyber_pipelines.landing.staging import load_staged, load_staged_days, stage_batch, staged_parts
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
    "nan_price": ("BTC-USD.csv", _named(GOOD).replace(str(GOOD[2][4]), "nan", 1).encode(), "not a finite number"),
    "unreadable_time": ("BTC-USD.csv", _named(GOOD).replace(str(GOOD[1][0]), "yesterday", 1).encode(), "line 3"),
    "ambiguous_date": (
        "BTC-USD.csv",
        (HEADER + "01/02/2024,1,2,0.5,1.5,3\n01/03/2024,1,2,0.5,1.5,3\n").encode(),
        "ambiguous date",
    ),
    "repeated_minutes": (
        "BTC-USD.csv",
        _named([*minute_candles(6, step_s=900), minute_candles(6, step_s=900)[2]]).encode(),
        "cannot be aggregated to hours",
    ),
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
        "wrong epoch unit?",
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


def test_content_problems_are_staged_as_they_are_for_the_quality_suite(tmp_path: Path) -> None:
    """Bad prices, low > high, negative volume and repeated hours are not the parser's business."""
    rows = list(minute_candles(6, step_s=3600))
    rows = _swap_high_low(rows, 1)  # low > high
    t, o, h, lo, c, v = rows[2]
    rows[2] = (t, -o, h, lo, c, v)  # a negative price
    t, o, h, lo, c, v = rows[3]
    rows[3] = (t, o, h, lo, c, -v)  # negative volume
    rows.append(rows[4])  # the same hour twice
    path = tmp_path / "BTC-USD.csv"
    path.write_text(_named(rows))
    batch = parse_landing_file(path)
    assert batch.candles.height == 7
    assert batch.candles.filter(pl.col("open") < 0).height == 1
    assert batch.candles["timestamp"].is_duplicated().sum() == 2


def test_a_966_day_file_with_one_bad_day_is_staged_whole(tmp_path: Path) -> None:
    hours = 966 * 24
    rows = minute_candles(hours, seed=9, step_s=3600)
    bad = 500 * 24 + 7  # one negative price on day 500
    t, o, h, _, c, v = rows[bad]
    rows[bad] = (t, o, h, -1.0, c, v)
    path = tmp_path / "XBTUSD_60.csv"
    path.write_text(kraken_csv(rows))
    report = process_landing(tmp_path, min_age_s=0)
    assert report.quarantined == []
    (staged,) = report.accepted
    assert len(staged.days) == 966 and staged.pair == "BTC/USD"
    bad_day = datetime.fromtimestamp(rows[bad][0], UTC).date()
    days = load_staged_days(tmp_path / "staged", "BTC/USD", staged.days)
    assert len(days) == 966 and all(frame.height == 24 for frame in days.values())
    assert days[bad_day]["low"].min() == -1.0  # the bad row is there for the suite to block that day only
    assert (tmp_path / "processed" / "XBTUSD_60.csv").exists()


# --------------------------------------------------------------------------------------------- staging


def _batch(tmp_path: Path, name: str, rows: list[tuple]) -> LandingBatch:
    path = tmp_path / name
    path.write_text(kraken_csv(rows))
    return parse_landing_file(path)


def test_stage_is_atomic_path_sequenced_and_idempotent(tmp_path: Path) -> None:
    batch = _batch(tmp_path, "XBTUSD_60.csv", minute_candles(30, step_s=3600))
    staging = tmp_path / "staging"
    part, new = stage_batch(batch, staging)
    assert new and part.sequence == 1
    assert part.path == staging / "BTC-USD" / f"000000000001-{batch.content_hash}.parquet"
    assert stage_batch(batch, staging) == (part, False)  # already the newest: nothing new
    assert sorted(p.name for p in (staging / "BTC-USD").iterdir()) == sorted([part.path.name, part.manifest_path.name])
    assert pl.read_parquet(part.path).equals(batch.candles)
    manifest = json.loads(part.manifest_path.read_text())
    assert manifest["sequence"] == 1 and manifest["file"] == "XBTUSD_60.csv"
    assert manifest["days"] == ["2024-03-01", "2024-03-02"] and manifest["rows"] == 30


def test_load_staged_highest_sequence_wins_hour_by_hour_not_mtime(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    first_rows = minute_candles(30, seed=5, step_s=3600)  # 2024-03-01 00:00 .. 03-02 05:00
    later_rows = [(t, o * 2, h * 2, lo * 2, c * 2, v) for t, o, h, lo, c, v in first_rows[20:26]]
    first = _batch(tmp_path, "XBTUSD_60.csv", first_rows)
    (tmp_path / "second").mkdir()
    later = _batch(tmp_path / "second", "XBTUSD_60.csv", later_rows)
    first_part, _ = stage_batch(first, staging)
    later_part, _ = stage_batch(later, staging)
    assert later_part.sequence > first_part.sequence
    future = 4_000_000_000_000_000_000  # the first file's mtime made newest: it must not matter
    os.utime(first_part.path, ns=(future, future))

    day1 = load_staged(staging, "BTC/USD", date(2024, 3, 1))
    assert day1.schema == pl.Schema(OHLCV_SCHEMA) and day1.height == 24
    assert_candles(day1, expected_hourly(first_rows[:20] + later_rows[:4]))
    day2 = load_staged(staging, "BTC-USD", date(2024, 3, 2))
    assert_candles(day2, expected_hourly(later_rows[4:] + first_rows[26:]))
    both = load_staged_days(staging, "BTC/USD", [date(2024, 3, 2), date(2024, 3, 1), date(2024, 3, 9)])
    assert list(both) == [date(2024, 3, 1), date(2024, 3, 2)]  # a day without candles is left out
    assert both[date(2024, 3, 1)].equals(day1) and both[date(2024, 3, 2)].equals(day2)

    again, new = stage_batch(first, staging)  # the first file dropped again: the latest word now
    assert new and again.sequence == later_part.sequence + 1
    assert not first_part.path.exists()  # the older copy of the same content is gone
    assert_candles(load_staged(staging, "BTC/USD", date(2024, 3, 1)), expected_hourly(first_rows[:24]))
    assert [p.sequence for p in staged_parts(staging / "BTC-USD")] == [later_part.sequence, again.sequence]


def test_duplicate_rows_inside_one_staged_file_survive_load_staged(tmp_path: Path) -> None:
    rows = minute_candles(24, step_s=3600)
    path = tmp_path / "BTC-USD.csv"
    path.write_text(_named([*rows, rows[5], rows[5]]))
    stage_batch(parse_landing_file(path), tmp_path / "staging")
    day = load_staged(tmp_path / "staging", "BTC/USD", date(2024, 3, 1))
    assert day.height == 26
    assert day.filter(pl.col("timestamp").is_duplicated()).height == 3


def test_load_staged_missing_day_or_pair_says_where_it_looked(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    stage_batch(_batch(tmp_path, "XBTUSD_60.csv", minute_candles(5, step_s=3600)), staging)
    with pytest.raises(FileNotFoundError, match=f"BTC/USD on 2024-03-05 under {staging / 'BTC-USD'}"):
        load_staged(staging, "BTC/USD", date(2024, 3, 5))
    with pytest.raises(FileNotFoundError, match=f"nothing staged for ETH/USD under {staging / 'ETH-USD'}"):
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
    monkeypatch.undo()
    with pytest.raises(FileNotFoundError):
        load_staged(tmp_path / "staging", "BTC/USD", date(2024, 3, 1))


# --------------------------------------------------------------------------------------------- listing


def test_list_landing_sees_drops_and_skips_in_progress_and_own_folders(tmp_path: Path) -> None:
    root = tmp_path / "landing"
    for sub in ("quarantine", "staged", "staged_moat", "pending", "processed"):
        (root / sub).mkdir(parents=True)
        (root / sub / "ETH-USD.csv").write_text("x")
    for name in ["b.csv", "a.json", "BTC|USD.csv", ".hidden.csv", "upload.csv.part", "x.tmp", "b.csv.done"]:
        (root / name).write_text("x")
    (root / "link.csv").symlink_to(root / "a.json")
    (root / "folder").mkdir()
    entries = {e.name: e for e in list_landing(root)}
    assert sorted(entries) == ["BTC|USD.csv", "a.json", "b.csv", "folder", "link.csv"]
    assert entries["b.csv"].done and not entries["a.json"].done
    assert not entries["link.csv"].regular and not entries["folder"].regular and entries["a.json"].regular
    assert list_landing(tmp_path / "nowhere") == []


def test_decide_takes_a_file_only_when_unchanged_across_two_looks() -> None:
    def look(size: int, mtime: int, done: bool = False) -> Entry:
        return Entry("BTC-USD.csv", size, mtime, True, done)

    first = decide([look(10, 1)], [], [])
    assert first.ready == [] and first.observed == [look(10, 1).token]
    grown = decide([look(20, 2)], first.observed, first.requested)  # still being written
    assert grown.ready == [] and grown.observed == [look(20, 2).token]
    stable = decide([look(20, 2)], grown.observed, grown.requested)
    assert stable.ready == [look(20, 2)] and stable.observed == [] and stable.requested == [look(20, 2).token]
    again = decide([look(20, 2)], stable.observed, stable.requested)  # intake not done yet: not asked twice
    assert again.ready == [] and again.requested == stable.requested
    rewritten = decide([look(30, 3)], again.observed, again.requested)  # new content: a new identity
    assert rewritten.ready == [] and rewritten.requested == []
    assert decide([look(5, 9, done=True)], [], []).ready == [look(5, 9, done=True)]  # a .done marker: at once
    assert decide([], stable.observed, stable.requested).requested == []  # gone: forgotten


def test_batches_and_their_run_keys() -> None:
    entries = [Entry(f"f{i}.csv", 10, i, True) for i in range(250)]
    groups = batches(entries)
    assert [len(g) for g in groups] == [100, 100, 50]
    assert [len(g) for g in batches(entries[:3], max_bytes=25)] == [2, 1]
    assert batch_key(groups[0]) == batch_key(list(reversed(groups[0])))
    changed = [Entry("f0.csv", 11, 0, True), *groups[0][1:]]
    assert batch_key(changed) != batch_key(groups[0])
    assert stable_by_age(entries[:2], min_age_s=5, now=10) == entries[:2]
    assert stable_by_age([Entry("x", 1, int(100e9), True)], min_age_s=5, now=101) == []


# --------------------------------------------------------------------------------------------- intake


def test_process_landing_stages_good_quarantines_bad_and_archives(tmp_path: Path) -> None:
    root = tmp_path / "landing"
    root.mkdir()
    good_rows = minute_candles(24, step_s=3600)
    (root / "XBTUSD_60.csv").write_text(kraken_csv(good_rows))
    (root / "ETH-USD.csv").write_text(_named(_swap_high_low(good_rows, 10)))  # content problem: staged
    (root / "SOL-USD.csv").write_bytes(b"")
    (root / "moat.csv").write_text("timestamp,source,entity,metric,value\n2024-03-01T06:00:00Z,gov,ETH,filings,3\n")
    (root / "fresh.csv").write_text("x")
    old = 1_700_000_000
    for path in root.iterdir():
        if path.name != "fresh.csv":
            os.utime(path, (old, old))
    report = process_landing(root, min_age_s=60)
    assert sorted((s.file, s.kind, s.pair) for s in report.accepted) == [
        ("ETH-USD.csv", "market", "ETH/USD"),
        ("XBTUSD_60.csv", "market", "BTC/USD"),
        ("moat.csv", "moat", None),
    ]
    assert [name for name, _ in report.quarantined] == ["SOL-USD.csv"]
    assert "empty file" in report.quarantined[0][1]
    assert_candles(load_staged(root / "staged", "BTC/USD", date(2024, 3, 1)), expected_hourly(good_rows))
    assert sorted(p.name for p in root.iterdir() if p.is_file()) == ["fresh.csv"]  # still being written
    assert sorted(p.name for p in (root / "processed").iterdir()) == ["ETH-USD.csv", "XBTUSD_60.csv", "moat.csv"]
    assert (root / "quarantine" / "SOL-USD.csv.reason.txt").read_text().startswith("reason: empty file")
    pending = sorted(p.name for p in (root / "pending").iterdir())
    assert pending == sorted(f"{s.manifest_id}.json" for s in report.accepted)
    discard_pending(root, report.accepted[:1])  # the CLI ingested it itself: the sensor need not
    assert len(list((root / "pending").iterdir())) == 2
    with pytest.raises(FileNotFoundError, match="does not exist"):
        process_landing(tmp_path / "nowhere")


def test_a_row_appended_between_read_and_archive_leaves_the_file_to_be_staged_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cyber_pipelines.landing.intake as intake

    rows = minute_candles(24, step_s=3600)
    path = tmp_path / "XBTUSD_60.csv"
    path.write_text(kraken_csv(rows[:23]))
    real_stage = intake.stage_batch

    def stage_then_append(*args: object, **kwargs: object) -> object:
        staged = real_stage(*args, **kwargs)  # type: ignore[arg-type]
        with path.open("a") as fh:  # the writer adds the last hour while the intake works
            fh.write(kraken_csv(rows[23:]))
        return staged

    monkeypatch.setattr(intake, "stage_batch", stage_then_append)
    first = intake_files(tmp_path, [Listed(path.name)])
    assert [s.file for s in first.accepted] == ["XBTUSD_60.csv"] and first.left[0][0] == "XBTUSD_60.csv"
    assert "changed while it was read" in first.left[0][1]
    assert path.exists() and not (tmp_path / "processed").exists()  # not archived: nothing lost
    assert load_staged(tmp_path / "staged", "BTC/USD", date(2024, 3, 1)).height == 23

    monkeypatch.setattr(intake, "stage_batch", real_stage)
    second = intake_files(tmp_path, [Listed(path.name)])  # the next look, once the file is stable
    (staged,) = second.accepted
    assert staged.sequence > first.accepted[0].sequence and second.left == []
    assert_candles(load_staged(tmp_path / "staged", "BTC/USD", date(2024, 3, 1)), expected_hourly(rows))
    assert (tmp_path / "processed" / "XBTUSD_60.csv").read_text() == kraken_csv(rows)


def test_intake_leaves_a_file_that_changed_since_it_was_listed(tmp_path: Path) -> None:
    path = tmp_path / "XBTUSD_60.csv"
    path.write_text(kraken_csv(minute_candles(3, step_s=3600)))
    info = path.stat()
    path.write_text(kraken_csv(minute_candles(4, step_s=3600)))
    report = intake_files(tmp_path, [Listed(path.name, info.st_size, info.st_mtime_ns), Listed("gone.csv")])
    assert report.accepted == [] and [n for n, _ in report.left] == ["XBTUSD_60.csv", "gone.csv"]
    assert path.exists() and not (tmp_path / "staged").exists()


def test_intake_quarantines_symlinks_folders_and_unparseable_files_with_reasons(tmp_path: Path) -> None:
    (tmp_path / "target.csv").write_text(_named(GOOD))
    (tmp_path / "link.csv").symlink_to(tmp_path / "target.csv")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "inside.csv").write_text("x")
    os.mkfifo(tmp_path / "pipe.csv")
    (tmp_path / "BTC-USD.csv").write_text(HEADER + "1709251200,1,2,0.5,abc,3\n")
    report = intake_files(tmp_path, [Listed(n) for n in ("link.csv", "folder", "pipe.csv", "BTC-USD.csv")])
    reasons = dict(report.quarantined)
    assert "is a symlink" in reasons["link.csv"] and "target.csv" in reasons["link.csv"]
    assert "is a folder" in reasons["folder"] and "named pipe" in reasons["pipe.csv"]
    assert "BTC-USD.csv line 2, column 'close': 'abc' is not a number" in reasons["BTC-USD.csv"]
    quarantined = tmp_path / "quarantine"
    assert (quarantined / "link.csv").is_symlink() and (quarantined / "folder" / "inside.csv").exists()
    assert "symlink" in (quarantined / "link.csv.reason.txt").read_text()
    assert (tmp_path / "target.csv").exists()  # the link's target is not touched


def test_intake_failure_of_the_machine_keeps_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "XBTUSD_60.csv"
    path.write_text(kraken_csv(minute_candles(3, step_s=3600)))

    def full_disk(self: pl.DataFrame, file: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", full_disk)
    report = intake_files(tmp_path, [Listed(path.name)])
    assert report.accepted == [] and report.quarantined == []
    assert report.failed[0][0] == "XBTUSD_60.csv" and "No space left" in report.failed[0][1]
    assert path.exists() and not (tmp_path / "quarantine").exists()


def test_the_same_content_dropped_again_is_not_staged_twice_new_content_wins(tmp_path: Path) -> None:
    rows = minute_candles(24, step_s=3600)
    path = tmp_path / "XBTUSD_60.csv"
    path.write_text(kraken_csv(rows))
    (first,) = intake_files(tmp_path, [Listed(path.name)]).accepted
    path.write_text(kraken_csv(rows))  # the same bytes again
    (same,) = intake_files(tmp_path, [Listed(path.name)]).accepted
    assert (same.sequence, same.new, same.manifest_id) == (first.sequence, False, first.manifest_id)
    doubled = [(t, o * 2, h * 2, lo * 2, c * 2, v) for t, o, h, lo, c, v in rows]
    path.write_text(kraken_csv(doubled))  # new content under the same name
    (newer,) = intake_files(tmp_path, [Listed(path.name)]).accepted
    assert newer.new and newer.sequence > first.sequence and newer.content_hash != first.content_hash
    assert_candles(load_staged(tmp_path / "staged", "BTC/USD", date(2024, 3, 1)), expected_hourly(doubled))
    assert sorted(p.name for p in (tmp_path / "processed").iterdir()) == [
        "XBTUSD_60.1.csv",
        "XBTUSD_60.2.csv",
        "XBTUSD_60.csv",
    ]


def test_quarantine_of_a_changed_unparseable_file_waits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cyber_pipelines.landing.intake as intake

    path = tmp_path / "XBTUSD_60.csv"
    path.write_text(kraken_csv(minute_candles(3, step_s=3600))[:-10])  # the writer is mid-row
    real_parse = intake.parse_landing_bytes

    def parse_then_finish(name: str, data: bytes) -> LandingBatch:
        path.write_text(kraken_csv(minute_candles(3, step_s=3600)))
        return real_parse(name, data)

    monkeypatch.setattr(intake, "parse_landing_bytes", parse_then_finish)
    report = intake_files(tmp_path, [Listed(path.name)])
    assert report.quarantined == [] and "changed while it was read" in report.left[0][1]
    assert path.exists()


def test_a_parser_crash_quarantines_that_file_and_the_batch_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cyber_pipelines.landing.intake as intake

    real_parse = intake.parse_landing_bytes

    def crash_on_eth(name: str, data: bytes) -> LandingBatch:
        if name.startswith("ETH"):
            raise RuntimeError("polars panicked\nlong trace")
        return real_parse(name, data)

    monkeypatch.setattr(intake, "parse_landing_bytes", crash_on_eth)
    for name in ("ETHUSD_60.csv", "XBTUSD_60.csv"):
        (tmp_path / name).write_text(kraken_csv(minute_candles(3, step_s=3600)))
    report = intake_files(tmp_path, [Listed("ETHUSD_60.csv"), Listed("XBTUSD_60.csv")])
    assert report.quarantined == [("ETHUSD_60.csv", "unexpected RuntimeError while parsing: polars panicked")]
    assert [s.file for s in report.accepted] == ["XBTUSD_60.csv"]
