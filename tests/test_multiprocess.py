"""A run under the default multiprocess executor, as `dagster dev` launches it: each step in its own process."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import polars as pl
from dagster._core.definitions.reconstruct import ReconstructableJob, ReconstructableRepository


def market_ingest() -> ReconstructableJob:
    """The job as a code server knows it: rebuilt in each step's process from the code location's module."""
    repository = ReconstructableRepository.for_module("cyber_pipelines.definitions", "defs", str(Path.cwd()))
    return repository.get_reconstructable_job("market_ingest")


def test_market_ingest_range_runs_in_subprocesses(isolated_dirs: Path) -> None:
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("pairs", ["ETH-USD"])
        result = dg.execute_job(
            market_ingest(),
            instance=instance,
            tags={
                "dagster/asset_partition_range_start": "2024-01-01|ETH-USD",
                "dagster/asset_partition_range_end": "2024-02-01|ETH-USD",
            },
        )
        errors = [str(entry.message)[:2000] for entry in instance.all_logs(result.run_id) if entry.level >= 40]
        assert result.success, errors
        months = {"2024-01-01|ETH-USD", "2024-02-01|ETH-USD"}
        assert instance.get_materialized_partitions(dg.AssetKey("ohlcv_candles")) == months
        checks = [
            e.asset_check_evaluation_data
            for e in result.all_events
            if e.event_type_value == "ASSET_CHECK_EVALUATION" and e.asset_check_evaluation_data is not None
        ]
        by_partition = {(c.partition, c.check_name): c.passed for c in checks}
        assert len(by_partition) == len(checks) == 10  # five checks for each month, each its own result
        assert {p for p, _ in by_partition} == months and all(by_partition.values())
    stored = pl.read_parquet(isolated_dirs / "data" / "synthetic" / "ohlcv" / "ETH-USD" / "2024-02.parquet")
    assert stored.height == 29 * 24
