"""Declarative automation: features follow new upstream data unless a blocking check upstream failed.

The ingest checks are partitioned like the candles (month x pair) and evaluated inside the ingest run:
a failed check holds back the features of that pair until the same pair-month passes again; other
pairs go on. The conditions are those of the real code location, the check results those of real runs.
"""

from __future__ import annotations

from datetime import date

import dagster as dg
import polars as pl

from assets.market import ohlcv_candles
from assets.partitions import pair_month_key
from cyber_pipelines.definitions import defs
from cyber_pipelines.resources import MarketDataResource, StorageResource, VsmResource

APRIL, MAY = date(2024, 4, 1), date(2024, 5, 1)
GAP_DAY = date(2024, 4, 18)


class GappyMarket(MarketDataResource):
    """The synthetic source with the first six hours of ``GAP_DAY`` missing: ohlcv_gap_ratio fails that day."""

    def fetch_days(self, pair: str, days: list[date], source: str) -> dict[date, pl.DataFrame]:
        candidates = super().fetch_days(pair, days, source)
        if GAP_DAY in candidates:
            candidates[GAP_DAY] = candidates[GAP_DAY].filter(pl.col("timestamp").dt.hour() >= 6)
        return candidates


def ingest(instance: dg.DagsterInstance, pair_key: str, month: date, *, gap: bool = False) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [ohlcv_candles],
        instance=instance,
        partition_key=str(pair_month_key(pair_key, month)),
        resources={
            "market": GappyMarket() if gap else MarketDataResource(),
            "storage": StorageResource(),
            "vsm": VsmResource(),
        },
        raise_on_error=False,
    )


def _requested(result: dg.EvaluateAutomationConditionsResult, asset: str) -> set[str]:
    return {str(k) for k in result.get_requested_partitions(dg.AssetKey(asset))}


def _instance(*pairs: str) -> dg.DagsterInstance:
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("pairs", list(pairs))
    instance.add_dynamic_partitions("repos", ["ethereum__go-ethereum"])
    return instance


def test_new_checked_candles_request_that_pairs_features_only() -> None:
    instance = _instance("ETH-USD", "ADA-USD")
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert first.total_requested == 0

    assert ingest(instance, "ADA-USD", APRIL).success
    after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
    assert _requested(after, "pair_features") == {"ADA-USD"}
    assert _requested(after, "lead_lag_report") == {"ADA-USD"}

    again = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=after.cursor)
    assert again.total_requested == 0  # handled: no second request for the same update


def test_a_failed_blocking_check_upstream_holds_that_pairs_features_back_until_its_month_passes() -> None:
    instance = _instance("ADA-USD", "ETH-USD")
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance)

    gappy = ingest(instance, "ADA-USD", APRIL, gap=True)  # April published but for GAP_DAY; its gap check failed
    assert not gappy.success
    assert len(gappy.get_asset_materialization_events()) == 1
    assert ingest(instance, "ETH-USD", APRIL).success
    held = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
    assert _requested(held, "pair_features") == {"ETH-USD"}  # the other pair goes on

    assert ingest(instance, "ADA-USD", MAY).success  # a later month passes; April's check is still failed
    still = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=held.cursor)
    assert _requested(still, "pair_features") == set()

    assert ingest(instance, "ADA-USD", APRIL).success  # April fixed at the source: its checks pass again
    released = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=still.cursor)
    assert _requested(released, "pair_features") == {"ADA-USD"}
