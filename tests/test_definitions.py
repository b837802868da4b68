"""The code location loads: every job, sensor and the asset graph resolve; the CLI validator agrees."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from assets.partitions import monthly_partitions, pair_month_partitions, repo_month_partitions
from assets.patterns import EMBEDDINGS_CHECK
from cyber_pipelines.definitions import defs
from cyber_pipelines.quality.activity import GITHUB_CHECKS, MOAT_CHECKS
from cyber_pipelines.quality.features import FEATURES_CHECKS
from cyber_pipelines.quality.ohlcv import OHLCV_CHECKS

ROOT = Path(__file__).resolve().parents[1]
CHECKS = {
    "ohlcv_candles": OHLCV_CHECKS,
    "github_activity": GITHUB_CHECKS,
    "moat_records": MOAT_CHECKS,
    "pair_features": FEATURES_CHECKS,
    "pattern_embeddings": {EMBEDDINGS_CHECK: "count, duplicates, recall"},
    "base_forecaster": {"model_valid": "finite, loads, probe"},
    "pair_adapter": {"adapter_valid": "finite, loads, probe", "adapter_promotion": "serves only when it beat the base"},
}
# Model checks verify what the model store holds (re-run on their own, they catch a file changed since), so they
# are check ops of their own rather than results of the asset's step.
STORED_ARTIFACT_CHECKS = {"base_forecaster", "pair_adapter"}


def test_every_job_sensor_and_the_asset_graph_resolve() -> None:
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert {"ohlcv_candles", "github_activity", "moat_records"} <= keys

    jobs = {job.name: job for job in defs.resolve_all_job_defs()}
    assert {"market_ingest", "github_ingest", "moat_ingest"} <= set(jobs)
    months = {"market_ingest": pair_month_partitions, "github_ingest": repo_month_partitions}
    for name, partitions in (*months.items(), ("moat_ingest", monthly_partitions)):
        assert jobs[name].partitions_def == partitions, name  # the ingest grain is a month
    assert jobs["market_ingest"].asset_layer.executable_asset_keys == {dg.AssetKey("ohlcv_candles")}

    sensors = {s.name for s in defs.sensors or []}
    assert {"landing_sensor", "config_partitions_sensor", "github_activity_sensor"} <= sensors
    for name in sensors:
        assert defs.resolve_sensor_def(name).name == name


def test_every_asset_has_a_description_a_group_and_kinds() -> None:
    specs = list(defs.resolve_all_asset_specs())
    assert len(specs) >= 3
    for spec in specs:
        name = spec.key.to_user_string()
        assert spec.description and len(spec.description) > 20, name
        assert spec.group_name and spec.group_name != "default", name
        assert spec.kinds, name
    groups = {spec.key.to_user_string(): spec.group_name for spec in specs}
    assert (groups["ohlcv_candles"], groups["github_activity"], groups["moat_records"]) == ("market", "github", "moat")


def test_each_layers_checks_are_blocking_partitioned_like_their_asset_and_run_inside_it() -> None:
    graph = defs.resolve_asset_graph()
    assert len(OHLCV_CHECKS) == 5
    by_asset: dict[str, set[str]] = {}
    for key in graph.asset_check_keys:
        by_asset.setdefault(key.asset_key.to_user_string(), set()).add(key.name)
    assert by_asset == {asset: set(checks) for asset, checks in CHECKS.items()}
    for key in graph.asset_check_keys:
        spec, asset = graph.get_check_spec(key), graph.get(key.asset_key)
        assert spec.blocking, key.to_user_string()
        assert spec.partitions_def == asset.partitions_def, key.to_user_string()  # one result per partition
        # evaluated by the asset's own step (write-audit-publish), not by a separate check op
        if key.asset_key.to_user_string() not in STORED_ARTIFACT_CHECKS:
            assert key in graph.assets_def_for_key(key.asset_key).check_keys, key.to_user_string()
    ingest = defs.resolve_job_def("market_ingest")
    assert ingest.asset_layer.asset_graph.asset_check_keys == {
        dg.AssetCheckKey(dg.AssetKey("ohlcv_candles"), name) for name in OHLCV_CHECKS
    }


def test_dagster_definitions_validate_succeeds(tmp_path: Path) -> None:
    home = tmp_path / "validate_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    dagster = Path(sys.executable).with_name("dagster")
    result = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Validation successful for code location" in output


def test_the_assets_that_open_the_vector_store_share_a_pool_of_one(tmp_path: Path) -> None:
    from cyber_pipelines.instance import POOL_LIMITS, ensure_pool_limits

    for name in ("pattern_embeddings", "analog_forecasts"):
        assert defs.resolve_assets_def(name).op.pool == "vector_store", name
    with dg.DagsterInstance.local_temp(str(tmp_path)) as instance:
        ensure_pool_limits(instance)
        limits = {p.name: p.limit for p in instance.event_log_storage.get_pool_limits() if not p.from_default}
        assert limits == POOL_LIMITS == {"vector_store": 1}
        instance.event_log_storage.set_concurrency_slots("vector_store", 3)  # an operator's own choice stays
        ensure_pool_limits(instance)
        assert {p.name: p.limit for p in instance.event_log_storage.get_pool_limits()}["vector_store"] == 3
