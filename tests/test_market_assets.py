"""`ohlcv_candles` and its blocking GX checks, materialized through Dagster from each source.

The partition is a pair-month; inside it every UTC day is audited and published on its own, and
every partition of a run gets its own materialization, data version and check evaluations.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest
from fakes.kraken import FakeKraken
from landing_ticks import Landing
from polars.testing import assert_frame_equal
from run_results import check_outcomes, evaluations, failure_text, materializations, tag, values

import cyber_pipelines.market.exchange as exchange_module
import cyber_pipelines.resources as resources_module
from assets.market import OHLCV_CODE_VERSION, ohlcv_candles
from assets.partitions import month_days, pair_month_key, pair_month_partitions
from cyber_pipelines.definitions import defs
from cyber_pipelines.market.schema import OHLCV_SCHEMA
from cyber_pipelines.quality.ohlcv import OHLCV_CHECKS
from cyber_pipelines.resources import MarketDataResource, StorageResource
from cyber_pipelines.storage import content_hash

CHECKS = set(OHLCV_CHECKS)
JAN, FEB = date(2024, 1, 1), date(2024, 2, 1)
CCXT_MONTH = date(2024, 5, 1)  # complete on the fake's frozen clock (2024-06-01 12:30 UTC)
LANDING_DAY = date(2024, 3, 10)
HOUR = timedelta(hours=1)


# --- helpers ------------------------------------------------------------------------------------
@pytest.fixture
def instance() -> dg.DagsterInstance:
    inst = dg.DagsterInstance.ephemeral()
    inst.add_dynamic_partitions("pairs", ["BTC-USD"])
    return inst


def key(month: date, pair_key: str = "BTC-USD") -> str:
    return str(pair_month_key(pair_key, month))


def run(
    instance: dg.DagsterInstance,
    *,
    partition_key: str | None = None,
    tags: dict[str, str] | None = None,
    source: str | None = None,
    market: MarketDataResource | None = None,
) -> dg.ExecuteInProcessResult:
    run_config = {"ops": {"ohlcv_candles": {"config": {"source": source}}}} if source else None
    return dg.materialize(
        [ohlcv_candles],
        instance=instance,
        partition_key=partition_key,
        tags=tags,
        run_config=run_config,
        resources={"market": market or MarketDataResource(), "storage": StorageResource()},
        raise_on_error=False,
    )


def candle_mats(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetMaterialization]:
    return materializations(result, "ohlcv_candles")


def stored_path(data: Path, source: str, pair_key: str, month: date) -> Path:
    return data / source / "ohlcv" / pair_key / f"{month:%Y-%m}.parquet"


def hours(first: date, last: date) -> list[datetime]:
    start = datetime(first.year, first.month, first.day, tzinfo=UTC)
    return [start + h * HOUR for h in range(24 * ((last - first).days + 1))]


def assert_hourly(df: pl.DataFrame, first: date, last: date) -> None:
    """Every hour of ``first..last``, once, in order, in the OHLCV schema."""
    assert df.schema == pl.Schema(OHLCV_SCHEMA)
    assert df["timestamp"].to_list() == hours(first, last)  # no gap, no duplicate


def kraken_csv(days: list[date], seed: int, skip_hours: tuple[int, ...] = ()) -> tuple[str, pl.DataFrame]:
    """Kraken's downloadable OHLCVT CSV (no header) for whole days, and the candles it holds."""
    rng = np.random.default_rng(seed)
    price, lines, rows = 100.0 + seed, [], []
    for h, ts in enumerate(hours(days[0], days[-1])):
        close = round(price * float(np.exp(rng.normal(0, 0.01))), 4)
        high, low = round(max(price, close) * 1.002, 4), round(min(price, close) * 0.998, 4)
        volume = round(float(rng.uniform(1, 50)), 6)
        if h % 24 not in skip_hours:
            lines.append(f"{int(ts.timestamp())},{price},{high},{low},{close},{volume},{h + 3}")
            rows.append((ts, price, high, low, close, volume))
        price = close
    return "\n".join(lines) + "\n", pl.DataFrame(rows, schema=OHLCV_SCHEMA, orient="row")


def execute(
    instance: dg.DagsterInstance, request: dg.RunRequest, *assets: dg.AssetsDefinition
) -> dg.ExecuteInProcessResult:
    """A run request executed as the daemon would launch it (a partition or a single-run range)."""
    return dg.materialize(
        [ohlcv_candles, *assets],
        instance=instance,
        partition_key=str(request.partition_key) if request.partition_key is not None else None,
        run_config=request.run_config,
        tags=request.tags,
        resources={"market": MarketDataResource(), "storage": StorageResource()},
        raise_on_error=False,
    )


# --- synthetic ----------------------------------------------------------------------------------
def test_one_synthetic_month_is_stored_described_checked_and_versioned(
    instance: dg.DagsterInstance, isolated_dirs: Path
) -> None:
    result = run(instance, partition_key=key(JAN))
    assert result.success, failure_text(result)

    path = stored_path(isolated_dirs / "data", "synthetic", "BTC-USD", JAN)
    stored = pl.read_parquet(path)
    assert_hourly(stored, JAN, date(2024, 1, 31))

    (mat,) = candle_mats(result).values()
    m = values(mat)
    assert str(mat.partition) == key(JAN)
    assert (m["rows"], m["source"], m["subject"]) == (31 * 24, "synthetic", "BTC/USD")
    assert m["first_timestamp"] == str(stored["timestamp"].min()) == "2024-01-01 00:00:00+00:00"
    assert m["last_timestamp"] == str(stored["timestamp"].max()) == "2024-01-31 23:00:00+00:00"
    assert m["path"] == str(path)
    assert (m["days_published"], m["days_blocked"], m["days_kept"]) == ("2024-01-01..2024-01-31 (31 days)", "none", 0)
    version = tag(mat, "dagster/data_version")
    assert version == m["content_hash"] == content_hash(stored)
    assert tag(mat, "dagster/code_version") == OHLCV_CODE_VERSION

    assert check_outcomes(result, key(JAN)) == dict.fromkeys(CHECKS, True)
    gap = evaluations(result)[(key(JAN), "ohlcv_gap_ratio")]
    gap_meta = values(gap)
    assert (gap_meta["observed_gap_ratio_max"], gap_meta["missing_hours"]) == (0.0, 0)
    assert (gap_meta["failed_days"], gap_meta["subject"]) == ("none", "BTC/USD")

    again = run(instance, partition_key=key(JAN))
    assert again.success
    (mat2,) = candle_mats(again).values()
    assert tag(mat2, "dagster/data_version") == version  # same input, same version
    assert_frame_equal(pl.read_parquet(path), stored)

    other = run(instance, partition_key=key(FEB))
    (mat3,) = candle_mats(other).values()
    assert tag(mat3, "dagster/data_version") != version  # the version follows the content


def test_partition_range_is_one_run_in_which_each_month_records_its_own_truth(
    instance: dg.DagsterInstance, isolated_dirs: Path
) -> None:
    tags = {"dagster/asset_partition_range_start": key(JAN), "dagster/asset_partition_range_end": key(FEB)}
    result = run(instance, tags=tags)
    assert result.success, failure_text(result)

    mats = candle_mats(result)
    assert sorted(mats) == [key(JAN), key(FEB)]
    data = isolated_dirs / "data"
    for month, last, rows in ((JAN, date(2024, 1, 31), 31 * 24), (FEB, date(2024, 2, 29), 29 * 24)):
        path = stored_path(data, "synthetic", "BTC-USD", month)
        stored = pl.read_parquet(path)
        assert_hourly(stored, month, last)
        m = values(mats[key(month)])  # this month's own path, rows, span and hash, not the run's
        assert (m["path"], m["rows"]) == (str(path), rows)
        assert (m["first_timestamp"], m["last_timestamp"]) == (f"{month} 00:00:00+00:00", f"{last} 23:00:00+00:00")
        assert tag(mats[key(month)], "dagster/data_version") == m["content_hash"] == content_hash(stored)
        # Dagster keeps each partition's own version
        (record,) = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=ohlcv_candles.key, asset_partitions=[key(month)]), limit=1
        ).records
        assert record.asset_materialization is not None
        assert tag(record.asset_materialization, "dagster/data_version") == content_hash(stored)
        # and its own evaluation of every check, over its own days and rows
        assert check_outcomes(result, key(month)) == dict.fromkeys(CHECKS, True)
        for check in CHECKS:
            e = evaluations(result)[(key(month), check)]
            assert e.metadata["rows_validated"].value == rows, check
            assert e.metadata["days_validated"].value == f"{month}..{last} ({rows // 24} days)", check
    versions = {p: tag(m, "dagster/data_version") for p, m in mats.items()}
    assert versions[key(JAN)] != versions[key(FEB)]

    again = run(instance, tags=tags)
    assert {p: tag(m, "dagster/data_version") for p, m in candle_mats(again).items()} == versions

    # A month materialized alone is the same table, with the same version, as in the range run.
    feb_file = stored_path(data, "synthetic", "BTC-USD", FEB)
    in_range = pl.read_parquet(feb_file)
    alone = run(instance, partition_key=key(FEB))
    assert alone.success
    assert_frame_equal(pl.read_parquet(feb_file), in_range)
    assert tag(candle_mats(alone)[key(FEB)], "dagster/data_version") == versions[key(FEB)]


def test_the_open_month_covers_its_days_through_yesterday(instance: dg.DagsterInstance, isolated_dirs: Path) -> None:
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    month = yesterday.replace(day=1)
    result = run(instance, partition_key=key(month))
    assert result.success, failure_text(result)
    stored = pl.read_parquet(stored_path(isolated_dirs / "data", "synthetic", "BTC-USD", month))
    assert_hourly(stored, month, yesterday)  # nothing of today, which is not complete
    (mat,) = candle_mats(result).values()
    assert values(mat)["rows"] == 24 * len(month_days(month)) == stored.height
    for check in CHECKS:
        assert evaluations(result)[(key(month), check)].metadata["rows_validated"].value == stored.height


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


def expected_from_fake(fake: FakeKraken, symbol: str, first: date, last: date) -> pl.DataFrame:
    start = datetime(first.year, first.month, first.day, tzinfo=UTC)
    end = datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(days=1)
    rows = [
        (datetime.fromtimestamp(t, UTC), *map(float, (o, h, lo, c, v)))
        for t, o, h, lo, c, _vwap, v, _n in fake.committed_rows(symbol, 60, start, end)
    ]
    return pl.DataFrame(rows, schema=OHLCV_SCHEMA, orient="row")


def test_ccxt_source_with_thirty_percent_transient_faults_stores_every_candle_once(
    instance: dg.DagsterInstance, isolated_dirs: Path, kraken: FakeKraken, sleeps: list[float]
) -> None:
    kraken.set_faults(0.3, seed=8)
    result = run(instance, partition_key=key(CCXT_MONTH), source="ccxt", market=MarketDataResource(timeout_ms=200))
    assert result.success, failure_text(result)

    last = date(2024, 5, 31)
    stored = pl.read_parquet(stored_path(isolated_dirs / "data", "ccxt", "BTC-USD", CCXT_MONTH))
    assert_hourly(stored, CCXT_MONTH, last)
    assert_frame_equal(stored, expected_from_fake(kraken, "BTC/USD", CCXT_MONTH, last))
    assert len(kraken.ohlc_requests) >= 2  # 744 candles: more than one page of 720
    injected = sum(kraken.faults.values())
    assert injected >= 5 and len(kraken.faults) >= 3, kraken.faults
    assert len(sleeps) == injected  # each fault cost exactly one retry
    (mat,) = candle_mats(result).values()
    assert (values(mat)["source"], values(mat)["rows"]) == ("ccxt", 31 * 24)
    assert check_outcomes(result, key(CCXT_MONTH)) == dict.fromkeys(CHECKS, True)
    assert not (isolated_dirs / "data" / "synthetic").exists()  # sources never mix


def test_ccxt_month_older_than_the_exchange_keeps_is_published_from_its_first_complete_day(
    instance: dg.DagsterInstance, isolated_dirs: Path, monkeypatch: pytest.MonkeyPatch, sleeps: list[float]
) -> None:
    """Kraken serves only its latest 720 candles: May 1 and the first hours of May 2 are gone on June 1."""
    with FakeKraken(retention=720) as fake:
        monkeypatch.setenv("CYBER_EXCHANGE_URL", fake.url)
        result = run(instance, partition_key=key(CCXT_MONTH), source="ccxt")
        assert result.success, failure_text(result)
        # it serves 719 finished candles and the open one: from 2024-05-02 13:00, inside a day
        complete = date(2024, 5, 3)
        stored = pl.read_parquet(stored_path(isolated_dirs / "data", "ccxt", "BTC-USD", CCXT_MONTH))
        assert_hourly(stored, complete, date(2024, 5, 31))
        assert_frame_equal(stored, expected_from_fake(fake, "BTC/USD", complete, date(2024, 5, 31)))
    (mat,) = candle_mats(result).values()
    assert values(mat)["days_blocked"] == "none"
    assert check_outcomes(result, key(CCXT_MONTH)) == dict.fromkeys(CHECKS, True)


def test_ccxt_unknown_pair_fails_the_run_naming_it_and_keeps_the_stored_file(
    instance: dg.DagsterInstance, isolated_dirs: Path, kraken: FakeKraken, sleeps: list[float]
) -> None:
    assert run(instance, partition_key=key(CCXT_MONTH), source="ccxt").success
    path = stored_path(isolated_dirs / "data", "ccxt", "BTC-USD", CCXT_MONTH)
    before = (path.read_bytes(), path.stat().st_mtime_ns)

    kraken.delist("BTC/USD")
    failed = run(instance, partition_key=key(CCXT_MONTH), source="ccxt")
    assert not failed.success
    assert "unknown pair BTC/USD" in failure_text(failed)
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before
    assert candle_mats(failed) == {}
    assert evaluations(failed) == {}

    instance.add_dynamic_partitions("pairs", ["DOGE-EUR"])
    doge = run(instance, partition_key=key(CCXT_MONTH, "DOGE-EUR"), source="ccxt")
    assert not doge.success
    assert "unknown pair DOGE/EUR" in failure_text(doge)
    assert not (isolated_dirs / "data" / "ccxt" / "ohlcv" / "DOGE-EUR").exists()
    assert sleeps == []  # permanent errors are not retried
    assert not any("DOGE" in query.get("pair", "") for query in kraken.ohlc_requests)  # refused before asking


# --- landing folder -------------------------------------------------------------------------------
def test_landing_kraken_csv_through_the_sensor_materializes_its_candles(
    instance: dg.DagsterInstance, isolated_dirs: Path
) -> None:
    days = [LANDING_DAY, LANDING_DAY + timedelta(days=1)]
    text, expected = kraken_csv(days, seed=1)
    (request,) = Landing(instance, isolated_dirs / "landing").drop({"XBTUSD_60.csv": text})
    assert request.job_name == "market_ingest"
    assert str(request.partition_key) == key(date(2024, 3, 1))
    job = defs.resolve_job_def(request.job_name)
    result = job.execute_in_process(
        instance=instance,
        partition_key=request.partition_key,
        run_config=request.run_config,
        tags=request.tags,
        raise_on_error=False,
    )
    assert result.success, failure_text(result)

    stored = pl.read_parquet(stored_path(isolated_dirs / "data", "landing", "BTC-USD", date(2024, 3, 1)))
    assert_frame_equal(stored, expected)  # the month's file holds the days the file brought
    (mat,) = candle_mats(result).values()
    assert values(mat)["source"] == "landing"
    assert values(mat)["days_published"] == "2024-03-10..2024-03-11 (2 days)"
    assert check_outcomes(result, key(date(2024, 3, 1))) == dict.fromkeys(CHECKS, True)
    for check in CHECKS:  # only the days some file brought were validated
        e = evaluations(result)[(key(date(2024, 3, 1)), check)]
        assert e.metadata["days_validated"].value == "2024-03-10..2024-03-11 (2 days)"


@dg.asset(partitions_def=pair_month_partitions, deps=[ohlcv_candles], group_name="test")
def candle_consumer() -> dg.MaterializeResult:
    """Stands for any asset downstream of the candles in the same run."""
    return dg.MaterializeResult(metadata={"consumed": True})


def test_failing_blocking_check_fails_the_run_and_stops_downstream(
    instance: dg.DagsterInstance, isolated_dirs: Path
) -> None:
    march = key(date(2024, 3, 1))
    gap_day = LANDING_DAY + timedelta(days=1)
    landing = Landing(instance, isolated_dirs / "landing")
    complete, complete_rows = kraken_csv([LANDING_DAY], seed=2)
    (control_request,) = landing.drop({"XBTUSD_60.csv": complete})
    control = execute(instance, control_request, candle_consumer)
    assert control.success, failure_text(control)

    gappy, _ = kraken_csv([gap_day], seed=3, skip_hours=(5, 6, 7))  # 3/24 missing > 5 %
    (request,) = landing.drop({"BTCUSD_60.csv": gappy})
    assert str(request.partition_key) == march
    result = execute(instance, request, candle_consumer)
    assert not result.success
    assert check_outcomes(result, march) == {**dict.fromkeys(CHECKS, True), "ohlcv_gap_ratio": False}
    failure = failure_text(result)
    assert "ohlcv_gap_ratio" in failure and f"BTC/USD {gap_day}" in failure
    gap = evaluations(result)[(march, "ohlcv_gap_ratio")]
    assert gap.blocking and gap.description and str(gap_day) in gap.description
    gap_meta = values(gap)
    assert (gap_meta["failed_days"], gap_meta["missing_hours"]) == (str(gap_day), 3)
    assert gap_meta["observed_gap_ratio_max"] == 0.125  # the observed ratio, not a row count

    # nothing downstream ran in the failed run
    assert materializations(result, "candle_consumer") == {}
    assert instance.get_latest_materialization_event(candle_consumer.key) is None
    # write-audit-publish: the passing day is published, the gappy day never reaches the table
    (mat,) = candle_mats(result).values()
    assert (values(mat)["days_published"], values(mat)["days_blocked"]) == (str(LANDING_DAY), str(gap_day))
    stored = pl.read_parquet(stored_path(isolated_dirs / "data", "landing", "BTC-USD", date(2024, 3, 1)))
    assert_frame_equal(stored, complete_rows)
