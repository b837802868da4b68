"""`ohlcv_candles` and its blocking GX checks, materialized through Dagster from each source."""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest
from fakes.kraken import FakeKraken
from polars.testing import assert_frame_equal
from run_results import check_outcomes, failure_text, tag

import cyber_pipelines.market.exchange as exchange_module
import cyber_pipelines.resources as resources_module
from assets.market import ohlcv_candles
from assets.partitions import pair_day_partitions
from assets.quality import ohlcv_quality_checks
from cyber_pipelines.definitions import defs
from cyber_pipelines.market.schema import OHLCV_SCHEMA
from cyber_pipelines.resources import MarketDataResource, StorageResource
from cyber_pipelines.storage import content_hash
from sensors.landing import landing_sensor

OHLCV_CHECKS = {"ohlcv_schema", "ohlcv_timestamps", "ohlcv_price_integrity", "ohlcv_volume", "ohlcv_gap_ratio"}
DAY = date(2024, 1, 5)
CCXT_DAY = date(2024, 5, 30)  # complete on the fake's frozen clock (2024-06-01 12:30 UTC)
LANDING_DAY = date(2024, 3, 10)
HOUR = timedelta(hours=1)


# --- helpers ------------------------------------------------------------------------------------
@pytest.fixture
def instance() -> dg.DagsterInstance:
    inst = dg.DagsterInstance.ephemeral()
    inst.add_dynamic_partitions("pairs", ["BTC-USD"])
    return inst


def run(
    instance: dg.DagsterInstance,
    *,
    partition_key: str | dg.MultiPartitionKey | None = None,
    tags: dict[str, str] | None = None,
    source: str | None = None,
    market: MarketDataResource | None = None,
    extra: tuple[dg.AssetsDefinition, ...] = (),
) -> dg.ExecuteInProcessResult:
    run_config = {"ops": {"ohlcv_candles": {"config": {"source": source}}}} if source else None
    return dg.materialize(
        [ohlcv_candles, ohlcv_quality_checks, *extra],
        instance=instance,
        partition_key=str(partition_key) if partition_key is not None else None,
        tags=tags,
        run_config=run_config,
        resources={"market": market or MarketDataResource(), "storage": StorageResource()},
        raise_on_error=False,
    )


def materializations(
    result: dg.ExecuteInProcessResult, node: str = "ohlcv_candles"
) -> dict[str, dg.AssetMaterialization]:
    return {str(m.partition): m for m in result.asset_materializations_for_node(node)}


def stored_path(data: Path, source: str, pair_key: str, day: date) -> Path:
    return data / source / "ohlcv" / pair_key / f"{day.isoformat()}.parquet"


def assert_one_hourly_day(df: pl.DataFrame, day: date) -> None:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    assert df.schema == pl.Schema(OHLCV_SCHEMA)
    assert df.height == 24
    assert df["timestamp"].to_list() == [start + h * HOUR for h in range(24)]  # no gap, no duplicate


def kraken_csv(day: date, seed: int, skip_hours: tuple[int, ...] = ()) -> tuple[str, pl.DataFrame]:
    """Kraken's downloadable OHLCVT CSV (no header) for one day, and the candles it holds."""
    rng = np.random.default_rng(seed)
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    price, lines, rows = 100.0 + seed, [], []
    for h in range(24):
        close = round(price * float(np.exp(rng.normal(0, 0.01))), 4)
        high, low = round(max(price, close) * 1.002, 4), round(min(price, close) * 0.998, 4)
        volume = round(float(rng.uniform(1, 50)), 6)
        if h not in skip_hours:
            ts = start + h * HOUR
            lines.append(f"{int(ts.timestamp())},{price},{high},{low},{close},{volume},{h + 3}")
            rows.append((ts, price, high, low, close, volume))
        price = close
    return "\n".join(lines) + "\n", pl.DataFrame(rows, schema=OHLCV_SCHEMA, orient="row")


def drop(landing: Path, name: str, text: str) -> None:
    """Write a landing file old enough for the sensor (it skips files younger than 5 s)."""
    landing.mkdir(parents=True, exist_ok=True)
    path = landing / name
    path.write_text(text)
    old = time.time() - 60
    os.utime(path, (old, old))


def landing_requests(instance: dg.DagsterInstance) -> list[dg.RunRequest]:
    """One landing-sensor tick; its new pair partitions are added to the instance as the daemon would."""
    context = dg.build_sensor_context(instance=instance, resources={"market": MarketDataResource()})
    result = landing_sensor(context)
    assert isinstance(result, dg.SensorResult), result
    for request in result.dynamic_partitions_requests or []:
        assert isinstance(request, dg.AddDynamicPartitionsRequest)
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return list(result.run_requests or [])


# --- synthetic ----------------------------------------------------------------------------------
def test_one_synthetic_partition_is_stored_described_checked_and_versioned(
    instance: dg.DagsterInstance, isolated_dirs: Path
) -> None:
    key = f"{DAY.isoformat()}|BTC-USD"
    result = run(instance, partition_key=key)
    assert result.success, failure_text(result)

    path = stored_path(isolated_dirs / "data", "synthetic", "BTC-USD", DAY)
    stored = pl.read_parquet(path)
    assert_one_hourly_day(stored, DAY)

    (mat,) = materializations(result).values()
    meta = {k: v.value for k, v in mat.metadata.items()}
    assert str(mat.partition) == key
    assert meta["rows"] == 24 and meta["source"] == "synthetic" and meta["missing_hours"] == 0
    assert meta["first_timestamp"] == str(stored["timestamp"].min()) == "2024-01-05 00:00:00+00:00"
    assert meta["last_timestamp"] == str(stored["timestamp"].max()) == "2024-01-05 23:00:00+00:00"
    assert meta["path"] == str(path)
    version = tag(mat, "dagster/data_version")
    assert version == content_hash(stored)
    assert tag(mat, "dagster/code_version") == "ohlcv-1"
    assert check_outcomes(result) == dict.fromkeys(OHLCV_CHECKS, True)

    again = run(instance, partition_key=key)
    assert again.success
    (mat2,) = materializations(again).values()
    assert tag(mat2, "dagster/data_version") == version
    assert_frame_equal(pl.read_parquet(path), stored)

    other = run(instance, partition_key=f"{(DAY + timedelta(days=1)).isoformat()}|BTC-USD")
    (mat3,) = materializations(other).values()
    assert tag(mat3, "dagster/data_version") != version  # the version follows the content


def test_partition_range_is_one_run_with_every_day_stored_and_checked(
    instance: dg.DagsterInstance, isolated_dirs: Path
) -> None:
    days = [DAY + timedelta(days=i) for i in range(4)]
    tags = {
        "dagster/asset_partition_range_start": f"{days[0].isoformat()}|BTC-USD",
        "dagster/asset_partition_range_end": f"{days[-1].isoformat()}|BTC-USD",
    }
    result = run(instance, tags=tags)
    assert result.success, failure_text(result)

    mats = materializations(result)
    assert sorted(mats) == [f"{d.isoformat()}|BTC-USD" for d in days]
    first = next(iter(mats.values()))
    meta = {k: v.value for k, v in first.metadata.items()}
    assert (meta["partitions"], meta["rows"], meta["missing_hours"]) == (4, 96, 0)
    assert meta["first_timestamp"] == "2024-01-05 00:00:00+00:00"
    assert meta["last_timestamp"] == "2024-01-08 23:00:00+00:00"
    for day in days:
        assert_one_hourly_day(pl.read_parquet(stored_path(isolated_dirs / "data", "synthetic", "BTC-USD", day)), day)
    evaluations = result.get_asset_check_evaluations()
    assert {e.check_name: e.passed for e in evaluations} == dict.fromkeys(OHLCV_CHECKS, True)
    assert all(e.metadata["partitions"].value == 4 for e in evaluations)

    version = tag(first, "dagster/data_version")
    assert {tag(m, "dagster/data_version") for m in mats.values()} == {version}
    again = run(instance, tags=tags)
    assert {tag(m, "dagster/data_version") for m in materializations(again).values()} == {version}

    # A day materialized alone is the same table as in the range run.
    day_file = stored_path(isolated_dirs / "data", "synthetic", "BTC-USD", days[2])
    in_range = pl.read_parquet(day_file)
    alone = run(instance, partition_key=f"{days[2].isoformat()}|BTC-USD")
    assert alone.success
    assert_frame_equal(pl.read_parquet(day_file), in_range)


def test_check_metadata_rows_count_the_stored_candles(instance: dg.DagsterInstance) -> None:
    result = run(instance, partition_key=f"{DAY.isoformat()}|BTC-USD")
    assert result.success
    assert {e.metadata["rows"].value for e in result.get_asset_check_evaluations()} == {24}


# --- ccxt against the fake Kraken -----------------------------------------------------------------
@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """MarketDataResource cannot set ccxt's request spacing or the retry sleep; patch the defaults."""
    waits: list[float] = []
    fast = functools.partial(exchange_module.ExchangeSettings, rate_limit_ms=0, sleep=waits.append)
    monkeypatch.setattr(exchange_module, "ExchangeSettings", fast)
    clear = getattr(getattr(resources_module, "_exchange", None), "cache_clear", None)
    if clear is not None:  # clients cached per process would keep another test's sleep and markets
        clear()
    yield waits
    if clear is not None:
        clear()


@pytest.fixture
def kraken(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKraken]:
    with FakeKraken(delay_s=0.5) as fake:
        monkeypatch.setenv("CYBER_EXCHANGE_URL", fake.url)
        yield fake


def expected_from_fake(fake: FakeKraken, symbol: str, day: date) -> pl.DataFrame:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    rows = [
        (datetime.fromtimestamp(t, UTC), *map(float, (o, h, lo, c, v)))
        for t, o, h, lo, c, _vwap, v, _n in fake.committed_rows(symbol, 60, start, start + timedelta(days=1))
    ]
    return pl.DataFrame(rows, schema=OHLCV_SCHEMA, orient="row")


def test_ccxt_source_with_thirty_percent_transient_faults_stores_every_candle_once(
    instance: dg.DagsterInstance, isolated_dirs: Path, kraken: FakeKraken, sleeps: list[float]
) -> None:
    kraken.set_faults(0.3, seed=8)  # this seed injects 8 faults of 5 kinds into the run's calls
    result = run(
        instance,
        partition_key=f"{CCXT_DAY.isoformat()}|BTC-USD",
        source="ccxt",
        market=MarketDataResource(timeout_ms=200),
    )
    assert result.success, failure_text(result)

    stored = pl.read_parquet(stored_path(isolated_dirs / "data", "ccxt", "BTC-USD", CCXT_DAY))
    assert_one_hourly_day(stored, CCXT_DAY)
    assert_frame_equal(stored, expected_from_fake(kraken, "BTC/USD", CCXT_DAY))
    injected = sum(kraken.faults.values())
    assert injected >= 5 and len(kraken.faults) >= 3, kraken.faults
    assert len(sleeps) == injected  # each fault cost exactly one retry
    (mat,) = materializations(result).values()
    assert (mat.metadata["source"].value, mat.metadata["missing_hours"].value) == ("ccxt", 0)
    assert check_outcomes(result) == dict.fromkeys(OHLCV_CHECKS, True)
    assert not (isolated_dirs / "data" / "synthetic").exists()  # sources never mix


def test_ccxt_unknown_pair_fails_the_run_naming_it_and_keeps_the_stored_file(
    instance: dg.DagsterInstance, isolated_dirs: Path, kraken: FakeKraken, sleeps: list[float]
) -> None:
    key = f"{CCXT_DAY.isoformat()}|BTC-USD"
    assert run(instance, partition_key=key, source="ccxt").success
    path = stored_path(isolated_dirs / "data", "ccxt", "BTC-USD", CCXT_DAY)
    before = (path.read_bytes(), path.stat().st_mtime_ns)

    kraken.delist("BTC/USD")
    failed = run(instance, partition_key=key, source="ccxt")
    assert not failed.success
    assert "unknown pair BTC/USD" in failure_text(failed)
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before
    assert materializations(failed) == {}
    assert check_outcomes(failed) == {}

    instance.add_dynamic_partitions("pairs", ["DOGE-EUR"])
    doge = run(instance, partition_key=f"{CCXT_DAY.isoformat()}|DOGE-EUR", source="ccxt")
    assert not doge.success
    assert "unknown pair DOGE/EUR" in failure_text(doge)
    assert not (isolated_dirs / "data" / "ccxt" / "ohlcv" / "DOGE-EUR").exists()
    assert sleeps == []  # permanent errors are not retried
    assert not any("DOGE" in query.get("pair", "") for query in kraken.ohlc_requests)  # refused before asking


# --- landing folder -------------------------------------------------------------------------------
def test_landing_kraken_csv_through_the_sensor_materializes_its_candles(
    instance: dg.DagsterInstance, isolated_dirs: Path
) -> None:
    text, expected = kraken_csv(LANDING_DAY, seed=1)
    drop(isolated_dirs / "landing", "XBTUSD_60.csv", text)

    (request,) = landing_requests(instance)
    assert request.job_name == "market_ingest"
    assert str(request.partition_key) == f"{LANDING_DAY.isoformat()}|BTC-USD"
    job = defs.resolve_job_def(request.job_name)
    result = job.execute_in_process(
        instance=instance,
        partition_key=request.partition_key,
        run_config=request.run_config,
        tags=request.tags,
        raise_on_error=False,
    )
    assert result.success, failure_text(result)

    stored = pl.read_parquet(stored_path(isolated_dirs / "data", "landing", "BTC-USD", LANDING_DAY))
    assert_frame_equal(stored, expected)
    (mat,) = materializations(result).values()
    assert mat.metadata["source"].value == "landing"
    assert check_outcomes(result) == dict.fromkeys(OHLCV_CHECKS, True)


@dg.asset(partitions_def=pair_day_partitions, deps=[ohlcv_candles], group_name="test")
def candle_consumer() -> dg.MaterializeResult:
    """Stands for any asset downstream of the candles in the same run."""
    return dg.MaterializeResult(metadata={"consumed": True})


def test_failing_blocking_check_fails_the_run_and_stops_downstream(
    instance: dg.DagsterInstance, isolated_dirs: Path
) -> None:
    gap_day = LANDING_DAY + timedelta(days=1)
    complete, _ = kraken_csv(LANDING_DAY, seed=2)
    gappy, gappy_expected = kraken_csv(gap_day, seed=3, skip_hours=(5, 6, 7))  # 3/24 missing > 5 %
    drop(isolated_dirs / "landing", "XBTUSD_60.csv", complete)
    drop(isolated_dirs / "landing", "BTCUSD_60.csv", gappy)
    requests = {str(r.partition_key): r for r in landing_requests(instance)}
    assert set(requests) == {f"{LANDING_DAY.isoformat()}|BTC-USD", f"{gap_day.isoformat()}|BTC-USD"}

    def run_request(day: date) -> dg.ExecuteInProcessResult:
        request = requests[f"{day.isoformat()}|BTC-USD"]
        return dg.materialize(
            [ohlcv_candles, ohlcv_quality_checks, candle_consumer],
            instance=instance,
            partition_key=str(request.partition_key),
            run_config=request.run_config,
            resources={"market": MarketDataResource(), "storage": StorageResource()},
            raise_on_error=False,
        )

    control = run_request(LANDING_DAY)  # a complete day flows through to the consumer
    assert control.success, failure_text(control)
    assert len(materializations(control, "candle_consumer")) == 1

    result = run_request(gap_day)
    assert not result.success
    assert check_outcomes(result) == {**dict.fromkeys(OHLCV_CHECKS, True), "ohlcv_gap_ratio": False}
    assert "ohlcv_gap_ratio" in failure_text(result)
    assert materializations(result, "candle_consumer") == {}
    latest = instance.get_latest_materialization_event(candle_consumer.key)
    assert latest is not None and latest.run_id == control.run_id
    (mat,) = materializations(result).values()  # audited after the write: the gap is on record
    assert mat.metadata["missing_hours"].value == 3
    stored = pl.read_parquet(stored_path(isolated_dirs / "data", "landing", "BTC-USD", gap_day))
    assert_frame_equal(stored, gappy_expected)
