"""Feature assets through Dagster: the features job (table, GX checks, lead-lag report) on synthetic data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from cyber_pipelines.config import load_settings
from cyber_pipelines.features.cross_source import repos_for_asset
from cyber_pipelines.orchestrate import build_features, ingest_github, ingest_market, ingest_moat

DAYS = 75  # enough hourly bars for the planted 6 h lead to clear p < 0.01
START = load_settings().start_date


@pytest.fixture(scope="module")
def features_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dg.DagsterInstance, Path]:
    root = tmp_path_factory.mktemp("feature_assets")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CYBER_DATA_DIR", str(root / "data"))
        instance = dg.DagsterInstance.ephemeral()
        days = [START + timedelta(days=i) for i in range(DAYS)]
        outcomes = [
            *ingest_market(["ETH/USD", "BTC/USD"], days, "synthetic", instance),
            *ingest_github(repos_for_asset("ETH"), days, "synthetic", instance),
            *ingest_moat(days, "synthetic", instance),
            *build_features(["ETH/USD", "BTC/USD"], "synthetic", instance),
        ]
        assert all(o.success for o in outcomes), [o.message for o in outcomes if not o.success]
        yield instance, root / "data"


def latest(instance: dg.DagsterInstance, asset: str, partition: str) -> dict:
    (record,) = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]), limit=1
    ).records
    assert record.asset_materialization is not None
    return {k: v.value for k, v in record.asset_materialization.metadata.items()}


def test_feature_table_is_stored_with_one_row_per_candle(features_run: tuple[dg.DagsterInstance, Path]) -> None:
    instance, data = features_run
    meta = latest(instance, "pair_features", "ETH-USD")
    table = pl.read_parquet(data / "synthetic" / "features" / "ETH-USD.parquet")
    assert meta["rows"] == meta["candle_rows"] == table.height == 24 * DAYS
    assert meta["source"] == meta["activity_source"] == meta["moat_source"] == "synthetic"
    assert {"rsi_14", "macd_hist", "bb_lower_20_2", "activity_score", "gh_commits"} <= set(table.columns)
    assert table["gh_commits"].sum() > 0


def test_feature_checks_are_blocking_and_pass(features_run: tuple[dg.DagsterInstance, Path]) -> None:
    instance, _ = features_run
    for name in ("features_row_count", "features_no_nan_after_warmup", "features_bounds"):
        key = dg.AssetCheckKey(dg.AssetKey("pair_features"), name)
        (record,) = instance.event_log_storage.get_asset_check_execution_history(key, limit=1)
        assert record.status.value == "SUCCEEDED", name


def test_lead_lag_report_finds_the_planted_lead(features_run: tuple[dg.DagsterInstance, Path]) -> None:
    instance, _ = features_run
    eth = latest(instance, "lead_lag_report", "ETH-USD")
    assert eth["best_lag_hours"] == load_settings().synthetic.lag_hours
    assert eth["best_p_adjusted"] < 0.01 and eth["significant"] is True
    assert "data:image/png;base64," in eth["plot"]
    btc = latest(instance, "lead_lag_report", "BTC-USD")  # no repo informs BTC
    assert btc["status"].startswith("not applicable")


def test_a_pair_whose_latest_ingest_failed_a_blocking_check_gets_no_features(isolated_dirs: Path) -> None:
    from assets.features import OHLCV_CHECK_NAMES
    from assets.quality import ohlcv_quality_checks
    from cyber_pipelines.landing.ohlcv import parse_landing_file
    from cyber_pipelines.landing.staging import stage_batch

    assert {k.name for k in ohlcv_quality_checks.check_keys} == set(OHLCV_CHECK_NAMES)
    instance = dg.DagsterInstance.ephemeral()
    day = START + timedelta(days=10)
    # BTC from a landing file with 3 of 24 hours missing: stored, but ohlcv_gap_ratio fails the run
    t0 = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())
    rows = [f"{t0 + 3600 * h},100,101,99,100.5,3,7" for h in range(24) if h not in (5, 6, 7)]
    landing = isolated_dirs / "landing"
    landing.mkdir()
    (landing / "XBTUSD_60.csv").write_text("\n".join(rows) + "\n")
    stage_batch(parse_landing_file(landing / "XBTUSD_60.csv"), landing / "staged")
    (gappy,) = ingest_market(["BTC/USD"], [day], "landing", instance)
    assert not gappy.success and "ohlcv_gap_ratio" in gappy.message
    # a later, clean ingest of another pair passes every check: BTC must still be held back
    (clean,) = ingest_market(["ETH/USD"], [day], "synthetic", instance)
    assert clean.success

    btc, eth = build_features(["BTC/USD", "ETH/USD"], "", instance)
    assert not btc.success and "ohlcv_gap_ratio" in btc.message and "BTC/USD" in btc.message
    assert eth.success, eth.message
    assert not (isolated_dirs / "data" / "landing" / "features" / "BTC-USD.parquet").exists()
