"""`github_activity` and `moat_records` with their blocking GX checks, materialized through Dagster.

A GitHub partition is a repo-month, a moat partition a month; each covers its days through yesterday."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import github
import polars as pl
import pytest
from dagster._serdes import serialize_value
from fakes.github import FakeCommit, FakeGitHub, FakeRepo
from landing_ticks import Landing
from polars.testing import assert_frame_equal
from run_results import check_outcomes, failure_text, tag

import cyber_pipelines.github.client as client_module
from assets.github import github_activity
from assets.moat import moat_assets, moat_records
from assets.partitions import month_days, month_start, repo_month_key
from cyber_pipelines.definitions import defs
from cyber_pipelines.github.schema import ACTIVITY_SCHEMA
from cyber_pipelines.moat.schema import MOAT_SCHEMA
from cyber_pipelines.resources import GitHubResource, MarketDataResource, StorageResource
from cyber_pipelines.storage import content_hash

CANARY = "ghp_CANARYCANARY0123456789"
GITHUB_CHECKS = {"github_schema", "github_counts", "github_unique_repo_hours"}
MOAT_CHECKS = {"moat_schema", "moat_unique_observations", "moat_values_in_range"}
DAY = (datetime.now(UTC) - timedelta(days=3)).date()  # a complete day inside the stats' 52 weeks
START = datetime.combine(DAY, datetime.min.time(), tzinfo=UTC)
MONTH = month_start(DAY)
MONTH_DAYS = month_days(MONTH)  # the month's days through yesterday
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
        [github_activity],
        instance=instance,
        partition_key=str(repo_month_key(repo_key, DAY)),
        run_config={"ops": {"github_activity": {"config": {"source": source}}}},
        resources={"github": gh, "storage": StorageResource()},
        raise_on_error=False,
    )


def the_materialization(result: dg.ExecuteInProcessResult, node: str) -> dg.AssetMaterialization:
    (mat,) = result.asset_materializations_for_node(node)
    return mat


def activity_path(data: Path, source: str, repo_key: str = GETH) -> Path:
    return data / source / "github_activity" / repo_key / f"{MONTH:%Y-%m}.parquet"


def day_rows(stored: pl.DataFrame, day: date) -> pl.DataFrame:
    return stored.filter(pl.col("timestamp").dt.date() == day)


# --- GitHub activity ----------------------------------------------------------------------------
def test_github_source_stores_the_month_and_one_missing_repo_fails_only_its_run(
    instance: dg.DagsterInstance,
    api: FakeGitHub,
    isolated_dirs: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    good = activity_run(instance, GETH, GitHubResource(token=CANARY, base_url=api.base_url))
    assert good.success, failure_text(good)
    path = activity_path(isolated_dirs / "data", "github")
    stored = pl.read_parquet(path)
    assert stored.schema == pl.Schema(ACTIVITY_SCHEMA) and stored.height == 24 * len(MONTH_DAYS)
    day = day_rows(stored, DAY)
    assert day.height == 24 and int(day["commits"].sum()) == 130 and set(day["contributors"]) == {4}
    early = MONTH_DAYS.index(DAY) > 0  # the commit a second before DAY counts on the day before, if in the month
    assert int(stored["commits"].sum()) == 130 + early
    assert set(stored["repo"]) == {"ethereum/go-ethereum"} and set(stored["stars"]) == {47_000}
    assert check_outcomes(good) == dict.fromkeys(GITHUB_CHECKS, True)
    mat = the_materialization(good, "github_activity")
    assert str(mat.partition) == f"{MONTH}|{GETH}"
    assert (mat.metadata["source"].value, mat.metadata["commits"].value, mat.metadata["rows"].value) == (
        "github",
        130 + early,
        stored.height,
    )
    assert tag(mat, "dagster/data_version") == mat.metadata["content_hash"].value == content_hash(stored)
    assert api.count("/commits") >= len(MONTH_DAYS) + 1  # every day asked for, DAY's two pages read
    assert set(api.authorizations) == {f"token {CANARY}"}  # the canary really was the credential

    monkeypatch.setenv("CYBER_GITHUB_URL", api.base_url)  # the other way to point at the fake
    missing = activity_run(instance, "ghost__missing", GitHubResource(token=CANARY))
    assert not missing.success
    failure = failure_text(missing)
    assert "'ghost/missing' not found (404)" in failure
    assert check_outcomes(missing) == {}
    assert not activity_path(isolated_dirs / "data", "github", "ghost__missing").parent.exists()
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
    stored = pl.read_parquet(activity_path(isolated_dirs / "data", "synthetic"))
    assert stored.height == 24 * len(MONTH_DAYS)
    assert stored["timestamp"].min() == datetime.combine(MONTH_DAYS[0], datetime.min.time(), tzinfo=UTC)
    assert stored["timestamp"].dt.date().unique().sort().to_list() == MONTH_DAYS
    assert check_outcomes(result) == dict.fromkeys(GITHUB_CHECKS, True)
    (evaluation, *_) = result.get_asset_check_evaluations()
    assert evaluation.metadata["rows_validated"].value == stored.height
    version = tag(the_materialization(result, "github_activity"), "dagster/data_version")
    assert version == content_hash(stored)
    again = activity_run(instance, GETH, GitHubResource(), source="synthetic")
    assert tag(the_materialization(again, "github_activity"), "dagster/data_version") == version
    assert not (isolated_dirs / "data" / "github").exists()


# --- moat -----------------------------------------------------------------------------------------
def test_synthetic_moat_records_are_stored_and_checked(isolated_dirs: Path) -> None:
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [moat_records],
        instance=instance,
        partition_key="2024-01-01",
        resources={"market": MarketDataResource(), "storage": StorageResource()},
        raise_on_error=False,
    )
    assert result.success, failure_text(result)
    path = isolated_dirs / "data" / "synthetic" / "moat" / "2024-01.parquet"
    stored = pl.read_parquet(path)
    assets = moat_assets()
    january = [date(2024, 1, 1) + timedelta(days=i) for i in range(31)]
    assert stored.schema == pl.Schema(MOAT_SCHEMA)
    # 24 hourly announcements + filings + shipments per asset and day
    assert stored.height == 26 * len(assets) * len(january)
    assert sorted(stored["entity"].unique()) == assets
    assert stored["timestamp"].dt.date().unique().sort().to_list() == january
    assert check_outcomes(result) == dict.fromkeys(MOAT_CHECKS, True)
    mat = the_materialization(result, "moat_records")
    m = {k: v.value for k, v in mat.metadata.items()}
    assert str(mat.partition) == "2024-01-01"
    assert (m["source"], m["entities"], m["rows"], m["path"]) == ("synthetic", len(assets), stored.height, str(path))
    assert tag(mat, "dagster/data_version") == content_hash(stored)


def test_landing_moat_file_through_the_sensor_is_stored_and_checked(isolated_dirs: Path) -> None:
    instance = dg.DagsterInstance.ephemeral()
    feed = (
        "Timestamp,Source,Entity,Metric,Value,comment\n"
        "2024-03-10T06:00:00Z,government,ETH,filings,3,x\n"
        "2024-03-10T14:00:00+02:00,logistics,ETH,shipments,1200.5,\n"
        "2024-03-11T01:00:00Z,corporate,SOL,announcements,2,\n"
    )
    (request,) = Landing(instance, isolated_dirs / "landing").drop({"feeds.csv": feed})  # both days: one month
    assert request.job_name == "moat_ingest"
    assert str(request.partition_key) == "2024-03-01"
    result = defs.resolve_job_def(request.job_name).execute_in_process(
        instance=instance,
        partition_key=request.partition_key,
        tags=request.tags,
        run_config=request.run_config,
        raise_on_error=False,
    )
    assert result.success, failure_text(result)
    stored = pl.read_parquet(isolated_dirs / "data" / "landing" / "moat" / "2024-03.parquet")
    expected = pl.DataFrame(
        [
            (datetime(2024, 3, 10, 6, tzinfo=UTC), "government", "ETH", "filings", 3.0),
            (datetime(2024, 3, 10, 12, tzinfo=UTC), "logistics", "ETH", "shipments", 1200.5),
            (datetime(2024, 3, 11, 1, tzinfo=UTC), "corporate", "SOL", "announcements", 2.0),
        ],
        schema=MOAT_SCHEMA,
        orient="row",
    )
    assert_frame_equal(stored, expected)
    assert check_outcomes(result) == dict.fromkeys(MOAT_CHECKS, True)
    mat = the_materialization(result, "moat_records")
    assert str(mat.partition) == "2024-03-01"
    assert (mat.metadata["source"].value, mat.metadata["days_published"].value) == (
        "landing",
        "2024-03-10..2024-03-11 (2 days)",
    )
