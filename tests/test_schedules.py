"""The nightly market schedule keeps each pair on its source and respects the exchange's retention."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import dagster as dg

from assets.partitions import month_start
from sensors.schedules import BACKFILL_DAYS, EXCHANGE_RETENTION_DAYS, nightly_market_schedule


def test_nightly_market_requests_follow_each_pairs_source() -> None:
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("pairs", ["BTC-USD", "ADA-USD", "SOL-USD"])
        # SOL-USD was last stored from ccxt in March: older than the exchange keeps
        for partition, source in (("2024-05-01|ADA-USD", "landing"), ("2024-03-01|SOL-USD", "ccxt")):
            instance.report_runless_asset_event(
                dg.AssetMaterialization("ohlcv_candles", partition=partition, metadata={"source": source})
            )
        tick = datetime(2024, 6, 1, 2, 0, tzinfo=UTC)
        # closed after the tick: the context's own instance (from the ref) would stay current otherwise
        with dg.build_schedule_context(instance=instance, scheduled_execution_time=tick) as context:
            requests = nightly_market_schedule.evaluate_tick(context).run_requests or []

    by_pair = {r.run_key.rsplit(":", 1)[-1]: r for r in requests if r.run_key}
    assert set(by_pair) == {"BTC-USD", "SOL-USD"}  # ADA-USD comes from landing files: the landing sensor's job
    yesterday = date(2024, 5, 31)

    def window(request: dg.RunRequest) -> tuple[date, date]:
        start, end = (request.tags[f"dagster/asset_partition_range_{e}"].split("|")[0] for e in ("start", "end"))
        return date.fromisoformat(start), date.fromisoformat(end)

    def source(request: dg.RunRequest) -> str:
        return request.run_config["ops"]["ohlcv_candles"]["config"]["source"]

    assert source(by_pair["BTC-USD"]) == "synthetic"  # nothing stored: the configured default
    # the months of the last 90 days: 2024-03-03..2024-05-31 -> March..May
    assert window(by_pair["BTC-USD"]) == (month_start(yesterday - timedelta(days=BACKFILL_DAYS - 1)), date(2024, 5, 1))
    assert window(by_pair["BTC-USD"]) == (date(2024, 3, 1), date(2024, 5, 1))
    assert source(by_pair["SOL-USD"]) == "ccxt"  # stays on its source
    # not from its stored March: the exchange serves only the last 29 days (2024-05-03..), so May alone
    retained = month_start(yesterday - timedelta(days=EXCHANGE_RETENTION_DAYS - 1))
    assert window(by_pair["SOL-USD"]) == (retained, date(2024, 5, 1)) == (date(2024, 5, 1), date(2024, 5, 1))
    assert by_pair["SOL-USD"].tags["dagster/asset_partition_range_start"] == "2024-05-01|SOL-USD"
