"""The sensors evaluated with `build_sensor_context`: config partitions, GitHub days (landing: test_landing_sensor)."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Self

import dagster as dg
import pytest

import sensors.github as github_sensor_module
from assets.github import github_activity
from assets.partitions import month_start, monthly_partitions, repo_month_partitions
from cyber_pipelines.config import load_settings
from cyber_pipelines.github.activity import repo_to_key
from cyber_pipelines.keys import pair_to_key
from sensors.github import github_activity_sensor
from sensors.partitions import config_partitions_sensor


@pytest.fixture
def instance() -> dg.DagsterInstance:
    return dg.DagsterInstance.ephemeral()


# --- config partitions ----------------------------------------------------------------------------
def apply(instance: dg.DagsterInstance, result: dg.SensorResult) -> dict[str, list[str]]:
    added: dict[str, list[str]] = {}
    for request in result.dynamic_partitions_requests or []:
        assert isinstance(request, dg.AddDynamicPartitionsRequest)
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        added[request.partitions_def_name] = list(request.partition_keys)
    return added


def test_config_partitions_sensor_adds_missing_pairs_and_repos_then_skips(
    instance: dg.DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings()
    instance.add_dynamic_partitions("pairs", ["BTC-USD"])
    result = config_partitions_sensor(dg.build_sensor_context(instance=instance))
    assert isinstance(result, dg.SensorResult)
    added = apply(instance, result)
    assert added["pairs"] == [pair_to_key(p) for p in settings.pairs if p != "BTC/USD"]
    assert added["repos"] == [repo_to_key(r) for r in settings.repos]
    assert "ethereum__go-ethereum" in added["repos"] and len(added["repos"]) == 10

    skip = config_partitions_sensor(dg.build_sensor_context(instance=instance))
    assert isinstance(skip, dg.SkipReason)

    # Adding a repo and a pair to the config adds exactly their partitions.
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        "start_date: '2024-01-01'\npairs: [BTC/USD, DOT/USD]\n"
        "repos:\n  ethereum/go-ethereum: [ETH]\n  ethereum/solidity: [ETH]\n"
    )
    monkeypatch.setenv("CYBER_CONFIG", str(config))
    more = config_partitions_sensor(dg.build_sensor_context(instance=instance))
    assert isinstance(more, dg.SensorResult)
    assert apply(instance, more) == {"pairs": ["DOT-USD"], "repos": ["ethereum__solidity"]}


# --- GitHub days ----------------------------------------------------------------------------------
def freeze_clock(monkeypatch: pytest.MonkeyPatch, now: datetime) -> None:
    class Frozen(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> Self:
            return cls.fromtimestamp(now.timestamp(), tz)

    monkeypatch.setattr(github_sensor_module, "datetime", Frozen)


def github_tick(instance: dg.DagsterInstance) -> dg.SensorResult | dg.SkipReason:
    result = github_activity_sensor(dg.build_sensor_context(instance=instance))
    assert isinstance(result, dg.SensorResult | dg.SkipReason)
    return result


def stored_through(instance: dg.DagsterInstance, partition: str, last: str) -> None:
    """A materialization of a repo-month whose stored rows end at ``last`` (what the sensor reads)."""
    instance.report_runless_asset_event(
        dg.AssetMaterialization(github_activity.key, partition=partition, metadata={"last_timestamp": last})
    )


def test_github_sensor_requests_yesterdays_month_for_repos_that_lack_yesterday(
    instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    freeze_clock(monkeypatch, datetime(2024, 3, 11, 9, 30, tzinfo=UTC))
    skip = github_tick(instance)
    assert isinstance(skip, dg.SkipReason) and "no repo partitions" in (skip.skip_message or "")

    repos = ["ethereum__go-ethereum", "solana-labs__solana", "near__nearcore"]
    instance.add_dynamic_partitions("repos", repos)
    stored_through(instance, "2024-03-01|solana-labs__solana", "2024-03-10 23:00:00+00:00")
    stored_through(instance, "2024-03-01|near__nearcore", "2024-03-09 23:00:00+00:00")  # the month lacks 03-10
    stored_through(instance, "2024-02-01|ethereum__go-ethereum", "2024-02-29 23:00:00+00:00")  # another month
    result = github_tick(instance)
    assert isinstance(result, dg.SensorResult)
    requests = list(result.run_requests or [])
    assert sorted(str(r.partition_key) for r in requests) == [
        "2024-03-01|ethereum__go-ethereum",
        "2024-03-01|near__nearcore",
    ]
    assert sorted(r.run_key or "" for r in requests) == [
        "github:2024-03-01|ethereum__go-ethereum:2024-03-10:2024-03-11T09",
        "github:2024-03-01|near__nearcore:2024-03-10:2024-03-11T09",
    ]
    with dg.partition_loading_context(dynamic_partitions_store=instance):
        assert all(repo_month_partitions.has_partition_key(str(r.partition_key)) for r in requests)
        assert not repo_month_partitions.has_partition_key("2024-03-01|vyperlang__vyper")  # not a partition yet
    assert result.cursor is not None
    assert json.loads(result.cursor) == {"day": "2024-03-10", "requested": 2}

    # an hour later the day is still missing (the runs failed): asked for again under a new run_key
    freeze_clock(monkeypatch, datetime(2024, 3, 11, 10, 30, tzinfo=UTC))
    retry = github_tick(instance)
    assert isinstance(retry, dg.SensorResult)
    assert sorted(r.run_key or "" for r in retry.run_requests or []) == [
        "github:2024-03-01|ethereum__go-ethereum:2024-03-10:2024-03-11T10",
        "github:2024-03-01|near__nearcore:2024-03-10:2024-03-11T10",
    ]

    # a run under way for a repo-month is not asked for twice
    instance.add_run(
        dg.DagsterRun(
            job_name="github_ingest",
            run_id="busy-run",
            status=dg.DagsterRunStatus.STARTED,
            tags={"dagster/partition": "2024-03-01|near__nearcore"},
        )
    )
    busy = github_tick(instance)
    assert isinstance(busy, dg.SensorResult)
    assert [str(r.partition_key) for r in busy.run_requests or []] == ["2024-03-01|ethereum__go-ethereum"]

    for request in requests:
        stored_through(instance, str(request.partition_key), "2024-03-10 23:00:00+00:00")
    done = github_tick(instance)
    assert isinstance(done, dg.SkipReason) and "all 3 repos have 2024-03-10" in (done.skip_message or "")

    # the next month's first day: its own month is asked for, though March is complete
    freeze_clock(monkeypatch, datetime(2024, 4, 2, 0, 30, tzinfo=UTC))
    april = github_tick(instance)
    assert isinstance(april, dg.SensorResult)
    assert {str(r.partition_key).split("|")[0] for r in april.run_requests or []} == {"2024-04-01"}
    assert len(april.run_requests or []) == 3


def test_github_sensor_skips_before_the_first_day_and_uses_the_real_clock(
    instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance.add_dynamic_partitions("repos", ["ethereum__go-ethereum"])
    with monkeypatch.context() as patch:
        freeze_clock(patch, datetime(2024, 1, 1, 5, tzinfo=UTC))
        early = github_tick(instance)
        assert isinstance(early, dg.SkipReason) and "before the first partition day" in (early.skip_message or "")

    result = github_tick(instance)  # today's clock: the month of yesterday, an existing partition
    assert isinstance(result, dg.SensorResult)
    (request,) = result.run_requests or []
    month = month_start((datetime.now(UTC) - timedelta(days=1)).date()).isoformat()
    assert str(request.partition_key) == f"{month}|ethereum__go-ethereum"
    assert monthly_partitions.has_partition_key(month)


def test_config_partitions_sensor_sees_an_edited_config_file(
    instance: dg.DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "pipeline.yaml"
    config.write_text('start_date: "2024-01-01"\npairs: [BTC/USD]\nrepos: {}\n')
    monkeypatch.setenv("CYBER_CONFIG", str(config))
    context = dg.build_sensor_context(instance=instance)
    first = config_partitions_sensor(context)
    assert isinstance(first, dg.SensorResult)
    instance.add_dynamic_partitions("pairs", ["BTC-USD"])
    config.write_text('start_date: "2024-01-01"\npairs: [BTC/USD, ETH/USD]\nrepos: {}\n')
    os.utime(config, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))  # a later mtime, whatever the clock
    edited = config_partitions_sensor(dg.build_sensor_context(instance=instance))
    assert isinstance(edited, dg.SensorResult)
    (add,) = edited.dynamic_partitions_requests or []
    assert list(add.partition_keys) == ["ETH-USD"]
