"""The sensors evaluated with `build_sensor_context`: landing folder, config partitions, GitHub days."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, date, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Self

import dagster as dg
import pytest

import sensors.github as github_sensor_module
from assets.github import github_activity
from assets.partitions import daily_partitions, repo_day_partitions
from cyber_pipelines.config import load_settings
from cyber_pipelines.github.activity import repo_to_key
from cyber_pipelines.keys import pair_to_key
from cyber_pipelines.resources import MarketDataResource
from sensors.github import github_activity_sensor
from sensors.landing import landing_sensor
from sensors.partitions import config_partitions_sensor

DAY = date(2024, 3, 10)
T0 = int(datetime(2024, 3, 10, tzinfo=UTC).timestamp())
MARKET_CONFIG = {"ops": {"ohlcv_candles": {"config": {"source": "landing"}}}}
MOAT_CONFIG = {"ops": {"moat_records": {"config": {"source": "landing"}}}}


# --- landing files --------------------------------------------------------------------------------
def kraken_rows(hours: int, start: int = T0) -> list[str]:
    """Kraken OHLCVT rows (no header): time, open, high, low, close, volume, trades."""
    rows = []
    for h in range(hours):
        price = 100.0 + h
        rows.append(f"{start + 3600 * h},{price},{price + 2},{price - 1},{price + 1},{1.5 + h},{7}")
    return rows


def generic_rows(hours: int) -> list[str]:
    header = "timestamp,open,high,low,close,volume"
    stamps = [datetime.fromtimestamp(T0 + 3600 * h, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") for h in range(hours)]
    return [header] + [f"{ts},{20 + h},{22 + h},{19 + h},{21 + h},{3}" for h, ts in enumerate(stamps)]


GOOD = {
    "XBTUSD_60.csv": "\n".join(kraken_rows(24)) + "\n",  # Kraken download: BTC/USD, one day
    "ETH-USD.csv": "\n".join(generic_rows(48)) + "\n",  # generic named columns: ETH/USD, two days
    "feeds-2024-03-10.csv": (
        "timestamp,source,entity,metric,value\n"
        "2024-03-10T06:00:00Z,government,ETH,filings,3\n"
        "2024-03-10T12:00:00Z,logistics,ETH,shipments,1200.5\n"
        "2024-03-10T13:00:00Z,corporate,SOL,announcements,1\n"
    ),
}
BAD: dict[str, tuple[bytes, str]] = {  # name -> (content, the reason's telling words)
    "SOLUSD_60.csv": (("\n".join(kraken_rows(24)))[:-25].encode(), "truncated"),
    "ADA-USD.csv": (b"ts,o,h,l,c,v\n1710028800,1,2,0.5,1.5,10\n1710032400,1,2,0.5,1.5,10\n", "no timestamp column"),
    "DOT-USD.csv": (
        ("\n".join([*generic_rows(3)[:2], "2024-03-10T02:00:00Z,20,18,21,19,3"]) + "\n").encode(),
        "high < low",
    ),
    "LTC-USD.csv": (("\n".join(generic_rows(3) + generic_rows(2)[1:]) + "\n").encode(), "share a timestamp"),
    "XRP-USD.csv": (bytes(range(256)) * 8, "binary content"),
    "AVAX-USD.csv": (b"", "empty file"),
    "x..y.csv": (("\n".join(kraken_rows(24)) + "\n").encode(), "unsafe file name"),
    "feeds-bad.csv": (
        b"timestamp,source,entity,metric,value\n2024-03-10T06:00:00Z,government,ETH,filings,3\n"
        b"2024-03-10T06:00:00Z,government,ETH,filings,4\n",
        "repeat a (timestamp",
    ),
}


def write_old(path: Path, data: bytes) -> None:
    """Write a file older than the sensor's 5 s minimum age (younger files may still be uploading)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    old = time.time() - 60
    os.utime(path, (old, old))


def tick(instance: dg.DagsterInstance, cursor: str | None = None) -> dg.SensorResult | dg.SkipReason:
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"market": MarketDataResource()})
    result = landing_sensor(context)
    assert isinstance(result, dg.SensorResult | dg.SkipReason)
    return result


@pytest.fixture
def landing(isolated_dirs: Path) -> Path:
    return isolated_dirs / "landing"


@pytest.fixture
def instance() -> dg.DagsterInstance:
    return dg.DagsterInstance.ephemeral()


def span(request: dg.RunRequest) -> str:
    """A request's partition, or ``first..last`` of its single-run range."""
    tags = request.tags or {}
    if "dagster/asset_partition_range_start" in tags:
        return f"{tags['dagster/asset_partition_range_start']}..{tags['dagster/asset_partition_range_end']}"
    return str(request.partition_key)


def test_landing_batch_sorts_good_and_bad_files_and_requests_the_right_runs(
    landing: Path, instance: dg.DagsterInstance
) -> None:
    for name, text in GOOD.items():
        write_old(landing / name, text.encode())
    for name, (data, _) in BAD.items():
        write_old(landing / name, data)
    instance.add_dynamic_partitions("pairs", ["BTC-USD"])  # known already; ETH-USD is new

    result = tick(instance)
    assert isinstance(result, dg.SensorResult)

    # Bad files: quarantined, each with its reason; nothing of them staged.
    quarantine = landing / "quarantine"
    for name, (_, reason) in BAD.items():
        kept = "x.y.csv" if name == "x..y.csv" else name  # quarantine renames unsafe names
        assert (quarantine / kept).exists(), name
        note = (quarantine / f"{kept}.reason.txt").read_text()
        assert note.startswith("reason: ") and reason in note.splitlines()[0], (name, note)
        assert repr(name) in note  # the original name is on record
    # Good files: archived; the landing folder itself is empty of files.
    assert sorted(p.name for p in (landing / "processed").iterdir()) == sorted(GOOD)
    assert [p for p in landing.iterdir() if p.is_file()] == []
    assert sorted(p.name for p in (landing / "staged").iterdir()) == ["BTC-USD", "ETH-USD"]
    assert len(list((landing / "staged_moat").glob("*.parquet"))) == 1
    assert (landing / "processed" / "XBTUSD_60.csv").read_text() == GOOD["XBTUSD_60.csv"]  # moved unchanged

    requests = list(result.run_requests or [])
    by_partition = {(r.job_name, span(r)): r for r in requests}
    assert set(by_partition) == {
        ("market_ingest", "2024-03-10|BTC-USD"),
        ("market_ingest", "2024-03-10|ETH-USD..2024-03-11|ETH-USD"),  # contiguous days: one range run
        ("moat_ingest", "2024-03-10"),
    }
    assert len({r.run_key for r in requests}) == len(requests) == 3
    for (job, _), request in by_partition.items():
        assert request.run_key
        assert request.run_config == (MARKET_CONFIG if job == "market_ingest" else MOAT_CONFIG)
    assert by_partition[("market_ingest", "2024-03-10|BTC-USD")].tags["cyber/landing_file"] == "XBTUSD_60.csv"
    assert isinstance(by_partition[("market_ingest", "2024-03-10|BTC-USD")].partition_key, dg.MultiPartitionKey)

    (add,) = result.dynamic_partitions_requests or []
    assert isinstance(add, dg.AddDynamicPartitionsRequest)
    assert (add.partitions_def_name, list(add.partition_keys)) == ("pairs", ["ETH-USD"])

    assert result.cursor is not None
    cursor = json.loads(result.cursor)
    assert (cursor["accepted_total"], cursor["quarantined_total"]) == (len(GOOD), len(BAD))
    assert datetime.fromisoformat(cursor["last_tick"]).tzinfo is not None

    # Two-phase hand-off: until a cursor listing them is committed, the manifests stay pending, and a
    # tick that starts from the old cursor (the previous tick failed) asks for the same runs again.
    assert len(list((landing / "pending").glob("*.json"))) == 3
    retried = tick(instance, cursor="")
    assert isinstance(retried, dg.SensorResult)
    assert sorted(r.run_key or "" for r in retried.run_requests or []) == sorted(r.run_key or "" for r in requests)

    # Next tick after the committed cursor: the manifests are done, nothing new.
    skip = tick(instance, cursor=result.cursor)
    assert isinstance(skip, dg.SkipReason)
    assert "no new files" in (skip.skip_message or "")
    assert list((landing / "pending").glob("*.json")) == []

    # The same file dropped again: the same run key (Dagster de-duplicates it), the totals carry on.
    write_old(landing / "XBTUSD_60.csv", GOOD["XBTUSD_60.csv"].encode())
    again = tick(instance, cursor=result.cursor)
    assert isinstance(again, dg.SensorResult)
    (repeat,) = again.run_requests or []
    assert repeat.run_key == by_partition[("market_ingest", "2024-03-10|BTC-USD")].run_key
    assert again.dynamic_partitions_requests in (None, [])
    assert again.cursor is not None
    assert json.loads(again.cursor)["accepted_total"] == len(GOOD) + 1


def test_landing_sensor_with_empty_cursor_missing_folder_and_fresh_files(
    landing: Path, instance: dg.DagsterInstance
) -> None:
    missing = tick(instance, cursor="")
    assert isinstance(missing, dg.SkipReason) and "no new files" in (missing.skip_message or "")

    fresh = landing / "XBTUSD_60.csv"
    landing.mkdir()
    fresh.write_text(GOOD["XBTUSD_60.csv"])  # just written: maybe still uploading
    assert isinstance(tick(instance, cursor=""), dg.SkipReason)
    assert fresh.exists()

    old = time.time() - 60
    os.utime(fresh, (old, old))
    result = tick(instance, cursor="")
    assert isinstance(result, dg.SensorResult)
    assert [str(r.partition_key) for r in result.run_requests or []] == ["2024-03-10|BTC-USD"]
    assert result.cursor is not None
    assert {k: v for k, v in json.loads(result.cursor).items() if k not in ("last_tick", "emitted")} == {
        "accepted_total": 1,
        "quarantined_total": 0,
    }


def test_landing_file_of_days_without_a_partition_is_archived_without_runs(
    landing: Path, instance: dg.DagsterInstance
) -> None:
    before_start = int(datetime(2023, 12, 30, tzinfo=UTC).timestamp())  # the pipeline starts 2024-01-01
    write_old(landing / "XBTUSD_60.csv", ("\n".join(kraken_rows(24, start=before_start)) + "\n").encode())
    result = tick(instance)
    assert isinstance(result, dg.SensorResult)
    assert list(result.run_requests or []) == []
    assert result.skip_reason is not None
    assert "1 file(s) accepted" in (result.skip_reason.skip_message or "")
    assert (landing / "processed" / "XBTUSD_60.csv").exists()


# --- config partitions ----------------------------------------------------------------------------
def apply(instance: dg.DagsterInstance, result: dg.SensorResult) -> dict[str, list[str]]:
    added: dict[str, list[str]] = {}
    for request in result.dynamic_partitions_requests or []:
        assert isinstance(request, dg.AddDynamicPartitionsRequest)
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        added[request.partitions_def_name] = list(request.partition_keys)
    return added


def test_config_partitions_sensor_adds_missing_pairs_and_repos_then_skips(
    instance: dg.DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings()
    instance.add_dynamic_partitions("pairs", ["BTC-USD"])
    result = config_partitions_sensor(dg.build_sensor_context(instance=instance))
    assert isinstance(result, dg.SensorResult)
    added = apply(instance, result)
    assert added["pairs"] == [pair_to_key(p) for p in settings.pairs if p != "BTC/USD"]
    assert added["repos"] == [repo_to_key(r) for r in settings.repos]
    assert "ethereum__go-ethereum" in added["repos"] and len(added["repos"]) == 10

    skip = config_partitions_sensor(dg.build_sensor_context(instance=instance))
    assert isinstance(skip, dg.SkipReason)

    # Adding a repo and a pair to the config adds exactly their partitions.
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        "start_date: '2024-01-01'\npairs: [BTC/USD, DOT/USD]\n"
        "repos:\n  ethereum/go-ethereum: [ETH]\n  ethereum/solidity: [ETH]\n"
    )
    monkeypatch.setenv("CYBER_CONFIG", str(config))
    more = config_partitions_sensor(dg.build_sensor_context(instance=instance))
    assert isinstance(more, dg.SensorResult)
    assert apply(instance, more) == {"pairs": ["DOT-USD"], "repos": ["ethereum__solidity"]}


# --- GitHub days ----------------------------------------------------------------------------------
def freeze_clock(monkeypatch: pytest.MonkeyPatch, now: datetime) -> None:
    class Frozen(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> Self:
            return cls.fromtimestamp(now.timestamp(), tz)

    monkeypatch.setattr(github_sensor_module, "datetime", Frozen)


def github_tick(instance: dg.DagsterInstance) -> dg.SensorResult | dg.SkipReason:
    result = github_activity_sensor(dg.build_sensor_context(instance=instance))
    assert isinstance(result, dg.SensorResult | dg.SkipReason)
    return result


def test_github_sensor_requests_yesterday_for_repos_that_lack_it(
    instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    freeze_clock(monkeypatch, datetime(2024, 3, 11, 9, 30, tzinfo=UTC))
    skip = github_tick(instance)
    assert isinstance(skip, dg.SkipReason) and "no repo partitions" in (skip.skip_message or "")

    repos = ["ethereum__go-ethereum", "solana-labs__solana", "near__nearcore"]
    instance.add_dynamic_partitions("repos", repos)
    instance.report_runless_asset_event(
        dg.AssetMaterialization(github_activity.key, partition="2024-03-10|solana-labs__solana")
    )
    instance.report_runless_asset_event(  # another day does not count
        dg.AssetMaterialization(github_activity.key, partition="2024-03-09|near__nearcore")
    )
    result = github_tick(instance)
    assert isinstance(result, dg.SensorResult)
    requests = list(result.run_requests or [])
    assert sorted(str(r.partition_key) for r in requests) == [
        "2024-03-10|ethereum__go-ethereum",
        "2024-03-10|near__nearcore",
    ]
    assert sorted(r.run_key or "" for r in requests) == [
        "github:2024-03-10|ethereum__go-ethereum:2024-03-11T09",
        "github:2024-03-10|near__nearcore:2024-03-11T09",
    ]
    with dg.partition_loading_context(dynamic_partitions_store=instance):
        assert all(repo_day_partitions.has_partition_key(str(r.partition_key)) for r in requests)
        assert not repo_day_partitions.has_partition_key("2024-03-10|vyperlang__vyper")  # not a partition yet
    assert result.cursor is not None
    assert json.loads(result.cursor) == {"day": "2024-03-10", "requested": 2}

    # an hour later the days are still missing (their runs failed): asked for again under a new run_key
    freeze_clock(monkeypatch, datetime(2024, 3, 11, 10, 30, tzinfo=UTC))
    retry = github_tick(instance)
    assert isinstance(retry, dg.SensorResult)
    assert sorted(r.run_key or "" for r in retry.run_requests or []) == [
        "github:2024-03-10|ethereum__go-ethereum:2024-03-11T10",
        "github:2024-03-10|near__nearcore:2024-03-11T10",
    ]

    for request in requests:
        materialized = dg.AssetMaterialization(github_activity.key, partition=str(request.partition_key))
        instance.report_runless_asset_event(materialized)
    done = github_tick(instance)
    assert isinstance(done, dg.SkipReason) and "all 3 repos have 2024-03-10" in (done.skip_message or "")


def test_github_sensor_skips_before_the_first_day_and_uses_the_real_clock(
    instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance.add_dynamic_partitions("repos", ["ethereum__go-ethereum"])
    with monkeypatch.context() as patch:
        freeze_clock(patch, datetime(2024, 1, 1, 5, tzinfo=UTC))
        early = github_tick(instance)
        assert isinstance(early, dg.SkipReason) and "before the first partition day" in (early.skip_message or "")

    result = github_tick(instance)  # today's clock: yesterday is the newest daily partition
    assert isinstance(result, dg.SensorResult)
    (request,) = result.run_requests or []
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    assert str(request.partition_key) == f"{yesterday}|ethereum__go-ethereum"
    assert daily_partitions.get_last_partition_key() == yesterday


def test_config_partitions_sensor_sees_an_edited_config_file(
    instance: dg.DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "pipeline.yaml"
    config.write_text('start_date: "2024-01-01"\npairs: [BTC/USD]\nrepos: {}\n')
    monkeypatch.setenv("CYBER_CONFIG", str(config))
    context = dg.build_sensor_context(instance=instance)
    first = config_partitions_sensor(context)
    assert isinstance(first, dg.SensorResult)
    instance.add_dynamic_partitions("pairs", ["BTC-USD"])
    config.write_text('start_date: "2024-01-01"\npairs: [BTC/USD, ETH/USD]\nrepos: {}\n')
    os.utime(config, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))  # a later mtime, whatever the clock
    edited = config_partitions_sensor(dg.build_sensor_context(instance=instance))
    assert isinstance(edited, dg.SensorResult)
    (add,) = edited.dynamic_partitions_requests or []
    assert list(add.partition_keys) == ["ETH-USD"]
