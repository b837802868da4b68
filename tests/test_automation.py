"""Declarative automation: features follow new upstream data unless a blocking check upstream failed."""

from __future__ import annotations

import dagster as dg

from cyber_pipelines.definitions import defs

OHLCV_CHECKS = ["ohlcv_schema", "ohlcv_gap_ratio", "ohlcv_timestamps", "ohlcv_volume", "ohlcv_price_integrity"]


def _new_candles(instance: dg.DagsterInstance, partition: str, *, gap_check_passes: bool) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization("ohlcv_candles", partition=partition))
    for name in OHLCV_CHECKS:
        passed = gap_check_passes or name != "ohlcv_gap_ratio"
        instance.report_runless_asset_event(
            dg.AssetCheckEvaluation(asset_key=dg.AssetKey("ohlcv_candles"), check_name=name, passed=passed)
        )


def _requested(result: dg.EvaluateAutomationConditionsResult, asset: str) -> set[str]:
    return {str(k) for k in result.get_requested_partitions(dg.AssetKey(asset))}


def test_new_checked_candles_request_that_pairs_features_only() -> None:
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("pairs", ["ETH-USD", "ADA-USD"])
    instance.add_dynamic_partitions("repos", ["ethereum__go-ethereum"])
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert first.total_requested == 0

    _new_candles(instance, "2024-04-01|ADA-USD", gap_check_passes=True)
    after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
    assert _requested(after, "pair_features") == {"ADA-USD"}
    assert _requested(after, "lead_lag_report") == {"ADA-USD"}

    again = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=after.cursor)
    assert again.total_requested == 0  # handled: no second request for the same update


def test_a_failed_blocking_check_upstream_holds_the_features_back() -> None:
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("pairs", ["ADA-USD"])
    instance.add_dynamic_partitions("repos", ["ethereum__go-ethereum"])
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance)

    _new_candles(instance, "2024-04-01|ADA-USD", gap_check_passes=False)
    held = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
    assert held.total_requested == 0

    _new_candles(instance, "2024-04-02|ADA-USD", gap_check_passes=True)  # fixed data: the checks pass again
    released = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=held.cursor)
    assert _requested(released, "pair_features") == {"ADA-USD"}
