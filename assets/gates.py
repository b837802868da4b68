"""Per-partition gates on top of run-level blocking checks.

Our GX checks run once per (range) run and are unpartitioned, so Dagster knows only the latest result per
check, for the whole asset. Before a downstream asset reads a pair's upstream partitions, it asks here
whether the run that last wrote any of them had a failing blocking check: bad data stays out of features
even when another pair's later run passed.
"""

from collections.abc import Callable, Iterable

import dagster as dg


def latest_runs(instance: dg.DagsterInstance, asset_key: dg.AssetKey, partitions: list[str]) -> set[str]:
    """The run ids of the latest materialization of each partition."""
    wanted, runs, cursor = set(partitions), set(), None
    while wanted:
        page = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=partitions), limit=1000, cursor=cursor
        )
        for record in page.records:  # newest first
            if record.partition_key in wanted:
                wanted.discard(record.partition_key)
                runs.add(record.run_id)
        if not page.has_more:
            break
        cursor = page.cursor
    return runs


def failed_blocking_checks(
    instance: dg.DagsterInstance,
    asset_key: dg.AssetKey,
    check_names: Iterable[str],
    partition_filter: Callable[[str], bool],
) -> list[str]:
    """``check (run id)`` for each blocking check that failed in a run that last wrote a selected partition."""
    partitions = [k for k in instance.get_materialized_partitions(asset_key) if partition_filter(k)]
    if not partitions:
        return []
    runs = latest_runs(instance, asset_key, partitions)
    failed = []
    for name in check_names:
        history = instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(asset_key, name), limit=1000
        )
        failed += [f"{name} (run {r.run_id[:8]})" for r in history if r.run_id in runs and r.status.value == "FAILED"]
    return failed
