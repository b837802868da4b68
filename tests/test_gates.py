"""Every blocking check fails through the real asset path, blocks only its days, and keeps the previous version.

Bad rows are planted in what the source returns (the synthetic simulators, wrapped), so the whole ingest
runs as in production: fetch -> GX audit in memory -> publish what passed -> per-partition results.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

import assets.features as features_module
import assets.moat as moat_module
import cyber_pipelines.github.activity as activity_module
import cyber_pipelines.synthetic.market as market_module
from assets.features import DEPS_UPDATED_AND_CHECKED, pair_features
from assets.github import github_activity
from assets.market import ohlcv_candles
from assets.moat import moat_records
from assets.partitions import pair_month_key, repo_month_key
from cyber_pipelines.resources import GitHubResource, MarketDataResource, StorageResource
from cyber_pipelines.storage import TableStore

RESOURCES = {"market": MarketDataResource(), "storage": StorageResource(), "github": GitHubResource()}
BAD_DAY = date(2024, 1, 18)
BAD_HOUR = datetime(2024, 1, 18, 5, tzinfo=UTC)
Corruption = Callable[[pl.DataFrame], pl.DataFrame]


@pytest.fixture
def instance() -> dg.DagsterInstance:
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("pairs", ["BTC-USD", "ETH-USD"])
    instance.add_dynamic_partitions("repos", ["ethereum__go-ethereum"])
    return instance


def _at_bad_hour(column: str, value: object) -> Corruption:
    at = pl.col("timestamp") == BAD_HOUR
    return lambda df: df.with_columns(pl.when(at).then(pl.lit(value)).otherwise(pl.col(column)).alias(column))


def _plant(monkeypatch: pytest.MonkeyPatch, module: object, name: str, corrupt: Corruption) -> None:
    original = getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a, **k: corrupt(original(*a, **k)))


def _run(
    assets: list, instance: dg.DagsterInstance, first: str | dg.MultiPartitionKey, last: str | dg.MultiPartitionKey
) -> dg.ExecuteInProcessResult:
    tags = {"dagster/asset_partition_range_start": str(first), "dagster/asset_partition_range_end": str(last)}
    return dg.materialize(assets, instance=instance, resources=RESOURCES, tags=tags, raise_on_error=False)


def _evaluations(instance: dg.DagsterInstance, asset: str, check: str) -> dict[str, tuple[bool, dict]]:
    """Latest evaluation per partition: (passed, metadata values)."""
    out: dict[str, tuple[bool, dict]] = {}
    for record in instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(dg.AssetKey(asset), check), limit=100
    ):
        evaluation = record.event.asset_check_evaluation if record.event else None
        if evaluation is not None and record.partition not in out:
            out[str(record.partition)] = (evaluation.passed, {k: v.value for k, v in evaluation.metadata.items()})
    return out


def _failure(result: dg.ExecuteInProcessResult) -> str:
    return "\n".join(
        e.step_failure_data.error.message for e in result.all_events if e.is_step_failure and e.step_failure_data.error
    )


def _stored_days(store_root: Path, source: str, table: str, *dirs: str) -> set[date]:
    frame = TableStore(store_root).scan(source, table, *dirs).collect()
    return set(frame["timestamp"].dt.date().to_list())


OHLCV_CASES: dict[str, Corruption] = {
    "ohlcv_schema": _at_bad_hour("close", None),
    "ohlcv_timestamps": lambda df: pl.concat([df, df.filter(pl.col("timestamp") == BAD_HOUR)]).sort("timestamp"),
    "ohlcv_price_integrity": _at_bad_hour("low", 1e9),
    "ohlcv_volume": _at_bad_hour("volume", -1.0),
    "ohlcv_gap_ratio": lambda df: df.filter(
        ~((pl.col("timestamp").dt.date() == BAD_DAY) & (pl.col("timestamp").dt.hour() < 6))
    ),
}


@pytest.mark.parametrize("check", sorted(OHLCV_CASES))
def test_each_ohlcv_check_blocks_only_its_day_through_the_asset(
    check: str, instance: dg.DagsterInstance, isolated_dirs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _plant(monkeypatch, market_module, "simulate_ohlcv", OHLCV_CASES[check])
    result = _run(
        [ohlcv_candles], instance, pair_month_key("BTC-USD", BAD_DAY), pair_month_key("BTC-USD", date(2024, 2, 1))
    )

    assert not result.success
    assert f"BTC/USD {BAD_DAY}" in _failure(result) and check in _failure(result)
    january, february = "2024-01-01|BTC-USD", "2024-02-01|BTC-USD"
    passed, metadata = _evaluations(instance, "ohlcv_candles", check)[january]
    assert not passed and metadata["failed_days"] == BAD_DAY.isoformat()
    assert metadata["subject"] == "BTC/USD" and metadata["days_validated"] == "2024-01-01..2024-01-31 (31 days)"
    assert _evaluations(instance, "ohlcv_candles", check)[february][0]
    others = {name: _evaluations(instance, "ohlcv_candles", name)[january][0] for name in OHLCV_CASES}
    assert [name for name, ok in others.items() if not ok] == [check]  # exactly this check failed
    # Published: every day but the blocked one; both months materialized with their own metadata.
    stored = _stored_days(isolated_dirs / "data", "synthetic", "ohlcv", "BTC-USD")
    assert BAD_DAY not in stored and len(stored) == 31 + 29 - 1
    mats = {
        e.step_materialization_data.materialization.partition: e.step_materialization_data.materialization
        for e in result.get_asset_materialization_events()
    }
    assert mats[january].metadata["days_blocked"].value == BAD_DAY.isoformat()
    assert mats[february].metadata["days_blocked"].value == "none"
    assert mats[january].tags["dagster/data_version"] != mats[february].tags["dagster/data_version"]


def test_gap_check_reports_the_observed_ratio(
    instance: dg.DagsterInstance, isolated_dirs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _plant(monkeypatch, market_module, "simulate_ohlcv", OHLCV_CASES["ohlcv_gap_ratio"])
    _run([ohlcv_candles], instance, pair_month_key("BTC-USD", BAD_DAY), pair_month_key("BTC-USD", BAD_DAY))
    passed, metadata = _evaluations(instance, "ohlcv_candles", "ohlcv_gap_ratio")["2024-01-01|BTC-USD"]
    assert not passed and metadata["observed_gap_ratio_max"] == 0.25 and metadata["missing_hours"] == 6
    assert "gap_ratio = 0.25" in metadata["failures"]


def test_a_blocked_day_keeps_its_previous_good_version(
    instance: dg.DagsterInstance, isolated_dirs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = pair_month_key("BTC-USD", BAD_DAY)
    assert _run([ohlcv_candles], instance, key, key).success
    store = TableStore(isolated_dirs / "data")
    before = store.read("synthetic", "ohlcv", "BTC-USD", "2024-01")

    _plant(monkeypatch, market_module, "simulate_ohlcv", OHLCV_CASES["ohlcv_volume"])
    assert not _run([ohlcv_candles], instance, key, key).success
    after = store.read("synthetic", "ohlcv", "BTC-USD", "2024-01")
    assert after.equals(before)  # the bad day's previous version stays; nothing else changed either
    assert (after["volume"] >= 0).all()


def test_one_bad_day_in_966_days_blocks_that_day_only(
    instance: dg.DagsterInstance, isolated_dirs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = datetime(2025, 6, 15, 7, tzinfo=UTC)
    at = pl.col("timestamp") == bad
    _plant(
        monkeypatch,
        market_module,
        "simulate_ohlcv",
        lambda df: df.with_columns(pl.when(at).then(-5.0).otherwise(pl.col("open")).alias("open")),
    )
    first, last = date(2024, 1, 1), date(2026, 8, 1)  # 32 months: 2024-01-01 .. 2026-08-31 is 974 days
    result = _run([ohlcv_candles], instance, pair_month_key("ETH-USD", first), pair_month_key("ETH-USD", last))
    assert not result.success
    message = _failure(result)
    assert "ETH/USD 2025-06-15" in message and "open > 0" in message
    stored = _stored_days(isolated_dirs / "data", "synthetic", "ohlcv", "ETH-USD")
    assert len(stored) == 974 - 1 and date(2025, 6, 15) not in stored
    assert len(instance.get_materialized_partitions(ohlcv_candles.key)) == 32


GITHUB_CASES: dict[str, Corruption] = {
    "github_schema": _at_bad_hour("stars", None),
    "github_counts": _at_bad_hour("commits", -3),
    "github_unique_repo_hours": lambda df: pl.concat([df, df.head(1)]),
}


@pytest.mark.parametrize("check", sorted(GITHUB_CASES))
def test_each_github_check_blocks_only_its_day_through_the_asset(
    check: str, instance: dg.DagsterInstance, isolated_dirs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corrupt = GITHUB_CASES[check]
    original = activity_module.build_activity

    def build(repo: str, day: date, *args: object, **kwargs: object) -> pl.DataFrame:
        frame = original(repo, day, *args, **kwargs)  # type: ignore[arg-type]
        return corrupt(frame) if day == BAD_DAY else frame

    monkeypatch.setattr(activity_module, "build_activity", build)
    key = repo_month_key("ethereum__go-ethereum", BAD_DAY)
    result = _run([github_activity], instance, key, key)
    assert not result.success and f"ethereum/go-ethereum {BAD_DAY}" in _failure(result)
    failed = {
        name
        for name in GITHUB_CASES
        if not _evaluations(instance, "github_activity", name)["2024-01-01|ethereum__go-ethereum"][0]
    }
    assert failed == {check}
    stored = _stored_days(isolated_dirs / "data", "synthetic", "github_activity", "ethereum__go-ethereum")
    assert BAD_DAY not in stored and len(stored) == 30


MOAT_CASES: dict[str, Corruption] = {
    "moat_schema": lambda df: df.with_columns(pl.lit(None, pl.String).alias("entity")),
    "moat_unique_observations": lambda df: pl.concat([df, df.head(1)]),
    "moat_values_in_range": lambda df: df.with_columns(pl.lit(float("inf")).alias("value")),
}


@pytest.mark.parametrize("check", sorted(MOAT_CASES))
def test_each_moat_check_blocks_only_its_day_through_the_asset(
    check: str, instance: dg.DagsterInstance, isolated_dirs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corrupt = MOAT_CASES[check]
    original = moat_module.simulate_moat_records

    def simulate(symbols: list[str], day: date, **kwargs: object) -> pl.DataFrame:
        frame = original(symbols, day, **kwargs)  # type: ignore[arg-type]
        return corrupt(frame) if day == BAD_DAY else frame

    monkeypatch.setattr(moat_module, "simulate_moat_records", simulate)
    result = _run([moat_records], instance, "2024-01-01", "2024-01-01")
    assert not result.success and f"moat {BAD_DAY}" in _failure(result)
    failed = {name for name in MOAT_CASES if not _evaluations(instance, "moat_records", name)["2024-01-01"][0]}
    assert failed == {check}
    assert BAD_DAY not in _stored_days(isolated_dirs / "data", "synthetic", "moat")


FEATURE_CASES: dict[str, Corruption] = {
    "features_row_count": lambda df: df.head(df.height - 1),
    "features_no_nan_after_warmup": lambda df: df.with_columns(
        pl.when(pl.int_range(df.height) == df.height - 2).then(None).otherwise(pl.col("macd_hist")).alias("macd_hist")
    ),
    "features_bounds": lambda df: df.with_columns(
        pl.when(pl.int_range(df.height) == df.height - 2).then(150.0).otherwise(pl.col("rsi_14")).alias("rsi_14")
    ),
}


@pytest.mark.parametrize("check", sorted(FEATURE_CASES))
def test_each_features_check_fails_through_the_asset_and_writes_nothing(
    check: str, instance: dg.DagsterInstance, isolated_dirs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = pair_month_key("BTC-USD", BAD_DAY)
    assert _run([ohlcv_candles], instance, key, key).success
    good = dg.materialize([pair_features], instance=instance, resources=RESOURCES, partition_key="BTC-USD")
    assert good.success
    path = isolated_dirs / "data" / "synthetic" / "features" / "BTC-USD.parquet"
    before = pl.read_parquet(path)

    _plant(monkeypatch, features_module, "build_feature_table", FEATURE_CASES[check])
    bad = dg.materialize(
        [pair_features], instance=instance, resources=RESOURCES, partition_key="BTC-USD", raise_on_error=False
    )
    assert not bad.success
    outcomes = {e.check_name: e.passed for e in bad.get_asset_check_evaluations()}
    assert [name for name, ok in outcomes.items() if not ok] == [check]
    assert pl.read_parquet(path).equals(before)  # the failing table never replaced the good one


def test_automation_holds_back_only_the_pair_with_a_failed_check(
    instance: dg.DagsterInstance, isolated_dirs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    defs = dg.Definitions(assets=[ohlcv_candles, github_activity, moat_records, pair_features], resources=RESOURCES)
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert _run([ohlcv_candles], instance, "2024-01-01|ETH-USD", "2024-01-01|ETH-USD").success
    _plant(monkeypatch, market_module, "simulate_ohlcv", OHLCV_CASES["ohlcv_volume"])
    assert not _run([ohlcv_candles], instance, "2024-01-01|BTC-USD", "2024-01-01|BTC-USD").success
    after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
    assert {str(k) for k in after.get_requested_partitions(pair_features.key)} == {"ETH-USD"}
    assert pair_features.automation_conditions_by_key[pair_features.key] is DEPS_UPDATED_AND_CHECKED


def test_one_bad_day_in_a_966_day_landing_file_blocks_that_day_only(
    instance: dg.DagsterInstance, isolated_dirs: Path
) -> None:
    from cyber_pipelines.landing.intake import process_landing

    start = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp())
    bad = datetime(2025, 3, 10, 3, tzinfo=UTC)
    lines = []
    for h in range(966 * 24):
        t = start + 3600 * h
        close = -1.0 if t == int(bad.timestamp()) else 101.0
        lines.append(f"{t},100,102,99,{close},5,7")
    landing = isolated_dirs / "landing"
    landing.mkdir()
    (landing / "XBTUSD_60.csv").write_text("\n".join(lines) + "\n")
    report = process_landing(landing, min_age_s=0)
    assert report.quarantined == [] and len(report.accepted[0].days) == 966

    config = {"ops": {"ohlcv_candles": {"config": {"source": "landing"}}}}
    tags = {
        "dagster/asset_partition_range_start": str(pair_month_key("BTC-USD", date(2024, 1, 1))),
        "dagster/asset_partition_range_end": str(pair_month_key("BTC-USD", date(2026, 8, 1))),
    }
    result = dg.materialize(
        [ohlcv_candles], instance=instance, resources=RESOURCES, tags=tags, run_config=config, raise_on_error=False
    )
    assert not result.success
    message = _failure(result)
    assert "BTC/USD 2025-03-10: ohlcv_price_integrity" in message and "2025-03-10T03:00:00" in message
    assert message.count("BTC/USD 20") == 1  # that day only
    stored = _stored_days(isolated_dirs / "data", "landing", "ohlcv", "BTC-USD")
    assert len(stored) == 965 and bad.date() not in stored
    assert _evaluations(instance, "ohlcv_candles", "ohlcv_price_integrity")["2025-03-01|BTC-USD"][0] is False
    assert _evaluations(instance, "ohlcv_candles", "ohlcv_price_integrity")["2025-04-01|BTC-USD"][0] is True
