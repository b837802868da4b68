"""`github_activity` and `moat_records` with their blocking GX checks, materialized through Dagster."""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import github
import polars as pl
import pytest
from dagster._serdes import serialize_value
from fakes.github import FakeCommit, FakeGitHub, FakeRepo
from polars.testing import assert_frame_equal
from run_results import check_outcomes, failure_text, tag

import cyber_pipelines.github.client as client_module
from assets.github import github_activity
from assets.moat import moat_assets, moat_records
from assets.quality import github_quality_checks, moat_quality_checks
from cyber_pipelines.definitions import defs
from cyber_pipelines.github.schema import ACTIVITY_SCHEMA
from cyber_pipelines.moat.schema import MOAT_SCHEMA
from cyber_pipelines.resources import GitHubResource, MarketDataResource, StorageResource
from cyber_pipelines.storage import content_hash
from sensors.landing import landing_sensor

CANARY = "ghp_CANARYCANARY0123456789"
GITHUB_CHECKS = {"github_schema", "github_counts", "github_unique_repo_hours"}
MOAT_CHECKS = {"moat_schema", "moat_unique_observations", "moat_values_in_range"}
DAY = (datetime.now(UTC) - timedelta(days=3)).date()  # a complete day inside the stats' 52 weeks
START = datetime.combine(DAY, datetime.min.time(), tzinfo=UTC)
GETH = "ethereum__go-ethereum"


@pytest.fixture(autouse=True)
def fast_github(monkeypatch: pytest.MonkeyPatch) -> None:
    """GitHubResource cannot set PyGithub's request pacing or backoff; make the defaults test-fast."""
    monkeypatch.setattr(github.Consts, "PROCESSING_202_WAIT_TIME", 0.01)
    fast = functools.partial(client_module.GitHubSettings, seconds_between_requests=0.0, backoff_factor=0.01)
    monkeypatch.setattr(client_module, "GitHubSettings", fast)
    for name in ("GITHUB_TOKEN", "CYBER_GITHUB_URL", "CYBER_GITHUB_SOURCE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def instance() -> dg.DagsterInstance:
    inst = dg.DagsterInstance.ephemeral()
    inst.add_dynamic_partitions("repos", [GETH, "ghost__missing"])
    return inst


@pytest.fixture
def api() -> Iterator[FakeGitHub]:
    """go-ethereum with 130 commits on DAY (two pages) by 4 logins, and one just outside the day."""
    commits = [FakeCommit(START + timedelta(minutes=11 * i), login=f"dev{i % 4}") for i in range(130)]
    commits.append(FakeCommit(START - timedelta(seconds=1), login="early"))
    with FakeGitHub([FakeRepo("ethereum/go-ethereum", commits, open_issues=9, stars=47_000)]) as server:
        yield server


def activity_run(
    instance: dg.DagsterInstance, repo_key: str, gh: GitHubResource, source: str = "github"
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [github_activity, github_quality_checks],
        instance=instance,
        partition_key=f"{DAY.isoformat()}|{repo_key}",
        run_config={"ops": {"github_activity": {"config": {"source": source}}}},
        resources={"github": gh, "storage": StorageResource()},
        raise_on_error=False,
    )


def the_materialization(result: dg.ExecuteInProcessResult, node: str) -> dg.AssetMaterialization:
    (mat,) = result.asset_materializations_for_node(node)
    return mat


# --- GitHub activity ----------------------------------------------------------------------------
def test_github_source_stores_the_day_and_one_missing_repo_fails_only_its_run(
    instance: dg.DagsterInstance,
    api: FakeGitHub,
    isolated_dirs: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    good = activity_run(instance, GETH, GitHubResource(token=CANARY, base_url=api.base_url))
    assert good.success, failure_text(good)
    path = isolated_dirs / "data" / "github" / "github_activity" / GETH / f"{DAY.isoformat()}.parquet"
    stored = pl.read_parquet(path)
    assert stored.schema == pl.Schema(ACTIVITY_SCHEMA) and stored.height == 24
    assert int(stored["commits"].sum()) == 130 and set(stored["contributors"]) == {4}
    assert set(stored["repo"]) == {"ethereum/go-ethereum"} and set(stored["stars"]) == {47_000}
    assert check_outcomes(good) == dict.fromkeys(GITHUB_CHECKS, True)
    mat = the_materialization(good, "github_activity")
    assert (mat.metadata["source"].value, mat.metadata["commits"].value, mat.metadata["rows"].value) == (
        "github",
        130,
        24,
    )
    assert tag(mat, "dagster/data_version") == content_hash(stored)
    assert api.count("/commits") == 2  # both pages were read
    assert set(api.authorizations) == {f"token {CANARY}"}  # the canary really was the credential

    monkeypatch.setenv("CYBER_GITHUB_URL", api.base_url)  # the other way to point at the fake
    missing = activity_run(instance, "ghost__missing", GitHubResource(token=CANARY))
    assert not missing.success
    failure = failure_text(missing)
    assert "'ghost/missing' not found (404)" in failure
    assert check_outcomes(missing) == {}
    assert not (path.parent.parent / "ghost__missing").exists()
    assert_frame_equal(pl.read_parquet(path), stored)  # the good repo's day is untouched

    # The canary token is nowhere Dagster keeps or shows things.
    assert "github.Requester" in caplog.text or "/repos/ethereum/go-ethereum" in caplog.text, "no client logs"
    texts = [caplog.text, failure]
    for result in (good, missing):
        texts.append(serialize_value(list(instance.all_logs(result.run_id))))
        run = instance.get_run_by_id(result.run_id)
        assert run is not None
        texts.append(serialize_value(run))
        for event in result.get_asset_materialization_events():
            texts.append(serialize_value(event.event_specific_data))
    leaks = [text[max(0, text.find(CANARY) - 200) : text.find(CANARY) + 50] for text in texts if CANARY in text]
    assert leaks == []


def test_token_from_env_var_stays_out_of_the_job_snapshot(
    instance: dg.DagsterInstance, api: FakeGitHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """How definitions.py wires it: dg.EnvVar("GITHUB_TOKEN"); the value is read only at run time."""
    monkeypatch.setenv("GITHUB_TOKEN", CANARY)
    result = activity_run(instance, GETH, GitHubResource(token=dg.EnvVar("GITHUB_TOKEN"), base_url=api.base_url))
    assert result.success, failure_text(result)
    assert set(api.authorizations) == {f"token {CANARY}"}
    run = instance.get_run_by_id(result.run_id)
    assert run is not None and run.job_snapshot_id is not None
    snapshot = serialize_value(instance.get_job_snapshot(run.job_snapshot_id))
    assert "GITHUB_TOKEN" in snapshot and CANARY not in snapshot
    assert CANARY not in serialize_value(list(instance.all_logs(result.run_id)))


def test_synthetic_github_activity_is_stored_checked_and_versioned(
    instance: dg.DagsterInstance, isolated_dirs: Path
) -> None:
    result = activity_run(instance, GETH, GitHubResource(), source="synthetic")
    assert result.success, failure_text(result)
    folder = isolated_dirs / "data" / "synthetic" / "github_activity" / GETH
    stored = pl.read_parquet(folder / f"{DAY.isoformat()}.parquet")
    assert stored.height == 24 and stored["timestamp"].min() == START
    assert check_outcomes(result) == dict.fromkeys(GITHUB_CHECKS, True)
    version = tag(the_materialization(result, "github_activity"), "dagster/data_version")
    assert version == content_hash(stored)
    again = activity_run(instance, GETH, GitHubResource(), source="synthetic")
    assert tag(the_materialization(again, "github_activity"), "dagster/data_version") == version
    assert not (isolated_dirs / "data" / "github").exists()


# --- moat -----------------------------------------------------------------------------------------
def test_synthetic_moat_records_are_stored_and_checked(isolated_dirs: Path) -> None:
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [moat_records, moat_quality_checks],
        instance=instance,
        partition_key="2024-01-05",
        resources={"market": MarketDataResource(), "storage": StorageResource()},
        raise_on_error=False,
    )
    assert result.success, failure_text(result)
    stored = pl.read_parquet(isolated_dirs / "data" / "synthetic" / "moat" / "2024-01-05.parquet")
    assets = moat_assets()
    assert stored.schema == pl.Schema(MOAT_SCHEMA)
    assert stored.height == 26 * len(assets)  # 24 hourly announcements + filings + shipments per asset
    assert sorted(stored["entity"].unique()) == assets
    assert stored["timestamp"].dt.date().unique().to_list() == [date(2024, 1, 5)]
    assert check_outcomes(result) == dict.fromkeys(MOAT_CHECKS, True)
    mat = the_materialization(result, "moat_records")
    assert (mat.metadata["source"].value, mat.metadata["entities"].value) == ("synthetic", len(assets))


def test_landing_moat_file_through_the_sensor_is_stored_and_checked(isolated_dirs: Path) -> None:
    landing = isolated_dirs / "landing"
    landing.mkdir()
    feed = landing / "feeds.csv"
    feed.write_text(
        "Timestamp,Source,Entity,Metric,Value,comment\n"
        "2024-03-10T06:00:00Z,government,ETH,filings,3,x\n"
        "2024-03-10T14:00:00+02:00,logistics,ETH,shipments,1200.5,\n"
        "2024-03-11T01:00:00Z,corporate,SOL,announcements,2,\n"
    )
    old = time.time() - 60
    os.utime(feed, (old, old))
    instance = dg.DagsterInstance.ephemeral()
    sensor_result = landing_sensor(
        dg.build_sensor_context(instance=instance, resources={"market": MarketDataResource()})
    )
    assert isinstance(sensor_result, dg.SensorResult)
    (request,) = sensor_result.run_requests or []  # both days in one single-run range
    assert request.tags["dagster/asset_partition_range_start"] == "2024-03-10"
    assert request.tags["dagster/asset_partition_range_end"] == "2024-03-11"
    assert request.job_name == "moat_ingest"
    result = defs.resolve_job_def(request.job_name).execute_in_process(
        instance=instance, tags=request.tags, run_config=request.run_config, raise_on_error=False
    )
    assert result.success, failure_text(result)
    stored = pl.read_parquet(isolated_dirs / "data" / "landing" / "moat" / "2024-03-10.parquet")
    expected = pl.DataFrame(
        [
            (datetime(2024, 3, 10, 6, tzinfo=UTC), "government", "ETH", "filings", 3.0),
            (datetime(2024, 3, 10, 12, tzinfo=UTC), "logistics", "ETH", "shipments", 1200.5),
        ],
        schema=MOAT_SCHEMA,
        orient="row",
    )
    assert_frame_equal(stored, expected)
    assert check_outcomes(result) == dict.fromkeys(MOAT_CHECKS, True)
    materialized = result.asset_materializations_for_node("moat_records")
    assert sorted(m.partition or "" for m in materialized) == ["2024-03-10", "2024-03-11"]
    assert {m.metadata["source"].value for m in materialized} == {"landing"}
