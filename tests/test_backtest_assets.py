"""Backtest assets on an ephemeral instance, their automation conditions, and the nightly schedules."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from assets.backtests import backtest_results, strategy_comparison
from assets.features import pair_features
from assets.partitions import month_days
from cyber_pipelines.config import load_settings
from cyber_pipelines.features.cross_source import repos_for_asset
from cyber_pipelines.orchestrate import ingest_github, ingest_market, ingest_moat
from cyber_pipelines.resources import MarketDataResource, StorageResource, VsmResource
from sensors.schedules import nightly_github_schedule, nightly_market_schedule, nightly_moat_schedule

MONTHS = [date(2024, 1, 1), date(2024, 2, 1)]  # the ingest grain: whole months
DAYS = len([d for m in MONTHS for d in month_days(m)])
PAIRS = ["ETH-USD", "BTC-USD"]
STRATEGIES = ["rule_of_three", "cross_moat", "moat_only", "sma_grid"]
# two months of data: three walk-forward windows of 14 days after 21 days of training; fewer draws
FAST = {"train_days": 21, "test_days": 14, "random_draws": 100, "n_boot": 199}
RUN_CONFIG = {"ops": {"backtest_results": {"config": FAST}}}
ETH_REPOS = repos_for_asset("ETH")[:2]  # two of ETH's repos keep the ingest short
START = load_settings().start_date


@dataclass
class Pipeline:
    instance: dg.DagsterInstance
    data: Path
    results: dict[str, dg.ExecuteInProcessResult]  # pair key -> run of pair_features + backtest_results
    comparison: dg.ExecuteInProcessResult

    def resources(self) -> dict[str, object]:
        return {"storage": StorageResource(root=str(self.data)), "market": MarketDataResource(), "vsm": VsmResource()}


def metadata(result: dg.ExecuteInProcessResult, node: str) -> dict[str, Any]:
    (materialization,) = result.asset_materializations_for_node(node)
    return {k: v.value for k, v in materialization.metadata.items()}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """Two synthetic months of candles (2 pairs), GitHub activity and moat records, then features and backtests."""
    root = tmp_path_factory.mktemp("backtest_assets")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CYBER_DATA_DIR", str(root / "data"))  # the ingest jobs' StorageResource reads it
        instance = dg.DagsterInstance.ephemeral()
        days = [d for m in MONTHS for d in month_days(m)]
        outcomes = [
            *ingest_market([p.replace("-", "/") for p in PAIRS], days, "synthetic", instance),
            *ingest_github(ETH_REPOS, days, "synthetic", instance),
            *ingest_moat(days, "synthetic", instance),
        ]
        assert all(o.success for o in outcomes), [o.message for o in outcomes if not o.success]
        instance.add_dynamic_partitions("pairs", ["SOL-USD"])  # a pair without data or features
        resources = {
            "storage": StorageResource(root=str(root / "data")),
            "market": MarketDataResource(),
            "vsm": VsmResource(),
        }
        results = {
            key: dg.materialize(
                [pair_features, backtest_results],
                partition_key=key,
                instance=instance,
                resources=resources,
                run_config=RUN_CONFIG,
            )
            for key in PAIRS
        }
        comparison = dg.materialize([strategy_comparison], instance=instance, resources=resources)
        yield Pipeline(instance, root / "data", results, comparison)


def test_backtest_results_write_json_and_curves(pipeline: Pipeline) -> None:
    for key in PAIRS:
        assert pipeline.results[key].success
        meta = metadata(pipeline.results[key], "backtest_results")
        assert meta["source"] == "synthetic" and meta["baseline"] == "rule_of_three"
        assert meta["walk_forward"] == "train 21 days, test 14 days, rolled"
        path = Path(meta["json_path"])
        assert path == pipeline.data / "synthetic" / "backtests" / f"{key}.json"
        data = json.loads(path.read_text())
        assert data["pair"] == key and list(data["strategies"]) == STRATEGIES
        assert data["oos_bars"] == meta["oos_bars"] == DAYS * 24 - 21 * 24  # every hour after the first fit
        assert data["config"] == {
            "fee": 0.0026,
            "slippage": 0.001,
            "fill": "next_open",
            "allow_short": False,
            "stop_loss": None,
            "size_multiplier": 1.0,
            "initial_cash": 10000.0,
            "bars_per_year": None,
            "calendar": "24/7",  # hourly bars a year from the calendar (8766), not from the row count
        }
        assert data["bars_per_year"] == 24 * 365.25
        for name in STRATEGIES:
            windows = data["strategies"][name]["windows"]
            assert len(windows) == 3 and all("params" in w for w in windows)  # 39 OOS days in 14-day windows
        assert Path(meta["equity_path"]) == pipeline.data / "synthetic" / "backtest_equity" / f"{key}.parquet"
        assert Path(meta["equity_path"]).exists()


def test_backtest_metadata_is_numeric_and_readable(pipeline: Pipeline) -> None:
    meta = metadata(pipeline.results["ETH-USD"], "backtest_results")
    data = json.loads(Path(meta["json_path"]).read_text())
    for name in STRATEGIES:
        oos = data["strategies"][name]["oos"]
        # a metric without a value (the Sharpe of a strategy that never trades) is left out, not faked
        assert meta.get(f"sharpe/{name}") == oos["sharpe"] and meta[f"gross_return/{name}"] == oos["gross_return"]
        assert isinstance(meta[f"total_return/{name}"], float) and isinstance(meta[f"n_trades/{name}"], int)
        tests = {t["reference"]: t for t in data["strategies"][name]["tests"]}
        for ref in ("cash", "buy_and_hold", "random_entry"):
            assert meta[f"p_adjusted/{ref}/{name}"] == tests[ref]["p_adjusted"] >= tests[ref]["p_value"]
    assert "p_adjusted/rule_of_three/rule_of_three" not in meta
    table = meta["results"]
    assert table.startswith("| strategy | OOS net | gross | cost drag | Sharpe |") and "Sharpe = mean(r)" in table
    assert "buy_and_hold (reference)" in table and "OPTIMISTIC" not in table
    assert len(meta["verdicts"].splitlines()) == len(STRATEGIES)
    assert set(meta["fitted_parameters"]) == set(STRATEGIES)
    assert meta["equity_curve"].startswith("![equity](data:image/png;base64,iVBORw0KGgo")  # PNG magic


def test_comparison_covers_the_pairs_with_results(pipeline: Pipeline) -> None:
    assert pipeline.comparison.success
    meta = metadata(pipeline.comparison, "strategy_comparison")
    assert meta["pairs"] == "BTC-USD, ETH-USD" and meta["pairs_missing"] == "SOL-USD" and meta["n_pairs"] == 2
    assert meta["portfolio"].startswith("independent sub-accounts")
    path = Path(meta["json_path"])
    assert path == pipeline.data / "synthetic" / "backtests" / "comparison.json"
    data = json.loads(path.read_text())
    assert list(data["strategies"]) == STRATEGIES and data["pairs"] == ["BTC-USD", "ETH-USD"]
    assert set(data["by_pair"]) == set(PAIRS)
    for name in STRATEGIES:
        assert f"| {name}" in meta["comparison"]
        tests = {t["reference"]: t for t in data["strategies"][name]["tests"]}
        assert 0 < meta[f"p_adjusted/cash/{name}"] == tests["cash"]["p_adjusted"] <= 1
    assert len(data["verdicts"]) == len(STRATEGIES)
    assert meta["equity_curve"].startswith("![portfolio equity](data:image/png;base64,iVBORw0KGgo")


def test_backtest_without_features_fails_with_a_reason(pipeline: Pipeline) -> None:
    result = dg.materialize(
        [backtest_results],
        partition_key="SOL-USD",
        instance=pipeline.instance,
        resources=pipeline.resources(),
        raise_on_error=False,
    )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert "no pair_features materialization" in str(failure.step_failure_data.error)


def test_run_config_sets_the_costs(pipeline: Pipeline) -> None:
    free = dg.materialize(
        [backtest_results],
        partition_key="ETH-USD",
        instance=pipeline.instance,
        resources=pipeline.resources(),
        run_config={"ops": {"backtest_results": {"config": {**FAST, "fee": 0.0, "slippage": 0.0}}}},
    )
    costly, free_meta = metadata(pipeline.results["ETH-USD"], "backtest_results"), metadata(free, "backtest_results")
    assert json.loads(Path(free_meta["json_path"]).read_text())["config"]["fee"] == 0.0
    for name in STRATEGIES:  # no costs: no cost drag, and the net return is the gross one
        assert free_meta[f"cost_drag/{name}"] == pytest.approx(0.0, abs=1e-12)
        assert free_meta[f"total_return/{name}"] == pytest.approx(free_meta[f"gross_return/{name}"])
        assert costly[f"cost_drag/{name}"] > 0 or costly[f"n_trades/{name}"] == 0
    close = dg.materialize(
        [backtest_results],
        partition_key="BTC-USD",
        instance=pipeline.instance,
        resources=pipeline.resources(),
        run_config={"ops": {"backtest_results": {"config": {**FAST, "fill": "close"}}}},
    )
    close_meta = metadata(close, "backtest_results")
    assert "OPTIMISTIC" in close_meta["fill"] and "OPTIMISTIC" in close_meta["results"]
    with pytest.raises(dg.DagsterInvalidConfigError, match="fill"):
        dg.materialize(
            [backtest_results],
            partition_key="ETH-USD",
            instance=pipeline.instance,
            resources=pipeline.resources(),
            run_config={"ops": {"backtest_results": {"config": {"fill": "midpoint"}}}},
        )
    # ETH-USD now stands with other costs than BTC-USD: the comparison leaves it out and says so
    mixed = dg.materialize([strategy_comparison], instance=pipeline.instance, resources=pipeline.resources())
    assert mixed.success
    mixed_meta = metadata(mixed, "strategy_comparison")
    assert mixed_meta["n_pairs"] == 1 and "SOL-USD" in mixed_meta["pairs_missing"]  # the settings differ


def test_automation_backtests_new_features_then_compares() -> None:
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("pairs", PAIRS)
    from cyber_pipelines.definitions import defs  # the real code location: conditions, checks and all

    def requested(result: Any) -> tuple[set[str], int]:
        return set(result.get_requested_partitions(backtest_results.key)), result.get_num_requested(
            strategy_comparison.key
        )

    result = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert requested(result) == (set(), 0)
    instance.report_runless_asset_event(dg.AssetMaterialization("pair_features", partition="ETH-USD"))
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert requested(result) == ({"ETH-USD"}, 0)
    # one pair's results are enough for a comparison (BTC-USD has none yet)
    instance.report_runless_asset_event(dg.AssetMaterialization("backtest_results", partition="ETH-USD"))
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert requested(result) == (set(), 1)
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert requested(result) == (set(), 0)  # handled: nothing new, nothing requested again


def tick(
    schedule: dg.ScheduleDefinition, instance: dg.DagsterInstance, day: date
) -> list[dg.RunRequest] | dg.SkipReason:
    at = datetime(day.year, day.month, day.day, 2, tzinfo=UTC)
    # closed after the tick: the context's own instance (from the ref) would stay current otherwise
    with dg.build_schedule_context(instance=instance, scheduled_execution_time=at) as context:
        out = schedule(context)
    assert isinstance(out, list | dg.SkipReason)
    return out


def ranges(requests: list[dg.RunRequest] | dg.SkipReason) -> dict[str, tuple[str, str]]:
    assert isinstance(requests, list)
    return {
        str(r.run_key): (r.tags["dagster/asset_partition_range_start"], r.tags["dagster/asset_partition_range_end"])
        for r in requests
    }


def stored(instance: dg.DagsterInstance, asset: str, keys: list[str]) -> None:
    for key in keys:
        instance.report_runless_asset_event(dg.AssetMaterialization(asset, partition=key))


def test_nightly_schedules_request_the_months_from_the_latest_stored_one_to_yesterdays() -> None:
    for schedule in (nightly_market_schedule, nightly_github_schedule, nightly_moat_schedule):
        assert schedule.cron_schedule == "0 2 * * *" and schedule.execution_timezone == "UTC"
        assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED and schedule.description
    with dg.instance_for_test() as instance:  # a schedule context needs an instance it can reload
        instance.add_dynamic_partitions("pairs", ["BTC-USD", "ETH-USD", "SOL-USD"])
        instance.add_dynamic_partitions("repos", ["ethereum__go-ethereum", "solana-labs__solana"])
        # stored: BTC January, ETH January and February (a month is stored once any of its days is),
        # SOL nothing; go-ethereum January and February; moat January and February
        stored(instance, "ohlcv_candles", ["2024-01-01|BTC-USD", "2024-01-01|ETH-USD", "2024-02-01|ETH-USD"])
        stored(instance, "github_activity", ["2024-01-01|ethereum__go-ethereum", "2024-02-01|ethereum__go-ethereum"])
        stored(instance, "moat_records", ["2024-01-01", "2024-02-01"])

        # the 2024-06-01 tick covers up to 2024-05-31: from each key's latest stored month (it may have been
        # open when stored) to May; a key with nothing stored gets the months of the last 90 days (March on)
        assert ranges(tick(nightly_market_schedule, instance, date(2024, 6, 1))) == {
            "nightly:2024-05-31:market:BTC-USD": ("2024-01-01|BTC-USD", "2024-05-01|BTC-USD"),
            "nightly:2024-05-31:market:ETH-USD": ("2024-02-01|ETH-USD", "2024-05-01|ETH-USD"),
            "nightly:2024-05-31:market:SOL-USD": ("2024-03-01|SOL-USD", "2024-05-01|SOL-USD"),
        }
        assert ranges(tick(nightly_github_schedule, instance, date(2024, 6, 1))) == {
            "nightly:2024-05-31:github:ethereum__go-ethereum": (
                "2024-02-01|ethereum__go-ethereum",
                "2024-05-01|ethereum__go-ethereum",
            ),
            "nightly:2024-05-31:github:solana-labs__solana": (
                "2024-03-01|solana-labs__solana",
                "2024-05-01|solana-labs__solana",
            ),
        }
        assert ranges(tick(nightly_moat_schedule, instance, date(2024, 6, 1))) == {
            "nightly:2024-05-31:moat": ("2024-02-01", "2024-05-01")
        }
        # early on, the 90 days' months are cut at the first partition day; a key stored in the open month
        # gets that month again (refreshed nightly while it is open)
        assert ranges(tick(nightly_market_schedule, instance, date(2024, 2, 15))) == {
            "nightly:2024-02-14:market:BTC-USD": ("2024-01-01|BTC-USD", "2024-02-01|BTC-USD"),
            "nightly:2024-02-14:market:ETH-USD": ("2024-02-01|ETH-USD", "2024-02-01|ETH-USD"),
            "nightly:2024-02-14:market:SOL-USD": (f"{START}|SOL-USD", "2024-02-01|SOL-USD"),
        }
        before = tick(nightly_moat_schedule, instance, START)  # yesterday is before the first day
        assert isinstance(before, dg.SkipReason) and "before the first partition day" in str(before.skip_message)

        # a request runs as requested: one single-run backfill of the job over its months
        requests = tick(nightly_moat_schedule, instance, date(2024, 3, 2))
        assert ranges(requests) == {"nightly:2024-03-01:moat": ("2024-02-01", "2024-03-01")}
        assert isinstance(requests, list)
        (request,) = requests
        from cyber_pipelines.definitions import defs

        assert request.job_name == "moat_ingest"
        run = defs.resolve_job_def(request.job_name).execute_in_process(instance=instance, tags=request.tags)
        assert run.success
        assert {m.partition for m in run.asset_materializations_for_node("moat_records")} == {
            "2024-02-01",
            "2024-03-01",
        }
        # stored through the open March now: the next tick asks for March alone
        assert ranges(tick(nightly_moat_schedule, instance, date(2024, 3, 3))) == {
            "nightly:2024-03-02:moat": ("2024-03-01", "2024-03-01")
        }
