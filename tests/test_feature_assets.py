"""Feature assets through Dagster: the features job (table, GX checks, lead-lag report) on synthetic data."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from assets.features import pair_features
from assets.partitions import month_days
from cyber_pipelines.config import load_settings
from cyber_pipelines.features.cross_source import repos_for_asset
from cyber_pipelines.orchestrate import RunOutcome, build_features, ingest_github, ingest_market, ingest_moat
from cyber_pipelines.quality.features import FEATURES_CHECKS

START = load_settings().start_date
# Whole months (the ingest grain): January to March 2024, enough hourly bars for the planted 6 h lead
# to clear p < 0.01.
DAYS = [d for month in (date(2024, 1, 1), date(2024, 2, 1), date(2024, 3, 1)) for d in month_days(month)]


@pytest.fixture(scope="module")
def features_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[dg.DagsterInstance, Path, list[RunOutcome]]]:
    root = tmp_path_factory.mktemp("feature_assets")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CYBER_DATA_DIR", str(root / "data"))
        instance = dg.DagsterInstance.ephemeral()
        outcomes = [
            *ingest_market(["ETH/USD", "BTC/USD"], DAYS, "synthetic", instance),
            *ingest_github(repos_for_asset("ETH"), DAYS, "synthetic", instance),
            *ingest_moat(DAYS, "synthetic", instance),
        ]
        features = build_features(["ETH/USD", "BTC/USD"], "synthetic", instance)
        outcomes += features
        assert all(o.success for o in outcomes), [o.message for o in outcomes if not o.success]
        yield instance, root / "data", features


def latest(instance: dg.DagsterInstance, asset: str, partition: str) -> dict:
    (record,) = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]), limit=1
    ).records
    assert record.asset_materialization is not None
    return {k: v.value for k, v in record.asset_materialization.metadata.items()}


def test_feature_table_is_stored_with_one_row_per_candle(
    features_run: tuple[dg.DagsterInstance, Path, list[RunOutcome]],
) -> None:
    instance, data, _ = features_run
    meta = latest(instance, "pair_features", "ETH-USD")
    table = pl.read_parquet(data / "synthetic" / "features" / "ETH-USD.parquet")
    assert meta["rows"] == meta["candle_rows"] == table.height == 24 * len(DAYS)  # every month file read
    assert meta["source"] == meta["activity_source"] == meta["moat_source"] == "synthetic"
    assert {"rsi_14", "macd_hist", "bb_lower_20_2", "activity_score", "gh_commits"} <= set(table.columns)
    assert table["gh_commits"].sum() > 0


def test_feature_checks_are_blocking_and_pass_for_each_pair(
    features_run: tuple[dg.DagsterInstance, Path, list[RunOutcome]],
) -> None:
    instance, _, features = features_run
    evaluations = [
        entry.dagster_event.asset_check_evaluation_data
        for outcome in features
        for entry in instance.all_logs(outcome.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
        if entry.dagster_event is not None
    ]
    by_pair = {(e.partition, e.check_name): e for e in evaluations if e.asset_key == dg.AssetKey("pair_features")}
    assert set(by_pair) == {(pair, check) for pair in ("ETH-USD", "BTC-USD") for check in FEATURES_CHECKS}
    assert all(e.passed and e.blocking for e in by_pair.values())
    assert {spec.name for spec in pair_features.check_specs if spec.blocking} == set(FEATURES_CHECKS)


def test_lead_lag_report_finds_the_planted_lead(
    features_run: tuple[dg.DagsterInstance, Path, list[RunOutcome]],
) -> None:
    instance, _, _ = features_run
    eth = latest(instance, "lead_lag_report", "ETH-USD")
    assert eth["best_lag_hours"] == load_settings().synthetic.lag_hours
    assert eth["best_p_adjusted"] < 0.01 and eth["significant"] is True
    assert "data:image/png;base64," in eth["plot"]
    btc = latest(instance, "lead_lag_report", "BTC-USD")  # no repo informs BTC
    assert btc["status"].startswith("not applicable")


def test_a_day_blocked_at_ingest_never_reaches_the_features(isolated_dirs: Path) -> None:
    """Write-audit-publish: the features read only published candles, so a blocked day is not in them.

    (Holding a pair's features back after a failed check is the automation condition's job now; see
    test_automation.py. The run-history gate of ``assets/gates.py`` it replaces is gone.)"""
    from cyber_pipelines.landing.ohlcv import parse_landing_file
    from cyber_pipelines.landing.staging import stage_batch

    instance = dg.DagsterInstance.ephemeral()
    gap_day, good_day = START + timedelta(days=10), START + timedelta(days=11)
    # BTC from a landing file: gap_day has 3 of 24 hours missing (ohlcv_gap_ratio fails), good_day is whole
    t0 = int(datetime(gap_day.year, gap_day.month, gap_day.day, tzinfo=UTC).timestamp())
    rows = [f"{t0 + 3600 * h},100,101,99,100.5,3,7" for h in range(48) if h not in (5, 6, 7)]
    landing = isolated_dirs / "landing"
    landing.mkdir()
    (landing / "XBTUSD_60.csv").write_text("\n".join(rows) + "\n")
    stage_batch(parse_landing_file(landing / "XBTUSD_60.csv"), landing / "staged")
    (gappy,) = ingest_market(["BTC/USD"], [gap_day], "landing", instance)
    assert not gappy.success and "ohlcv_gap_ratio" in gappy.message and str(gap_day) in gappy.message

    (btc,) = build_features(["BTC/USD"], "landing", instance)
    assert btc.success, btc.message
    table = pl.read_parquet(isolated_dirs / "data" / "landing" / "features" / "BTC-USD.parquet")
    assert table["timestamp"].dt.date().unique().to_list() == [good_day]
    assert table.height == 24
