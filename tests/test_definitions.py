"""The code location loads: every job, sensor and the asset graph resolve; the CLI validator agrees."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from cyber_pipelines.definitions import defs

ROOT = Path(__file__).resolve().parents[1]
OHLCV_CHECKS = {"ohlcv_schema", "ohlcv_timestamps", "ohlcv_price_integrity", "ohlcv_volume", "ohlcv_gap_ratio"}


def test_every_job_sensor_and_the_asset_graph_resolve() -> None:
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert {"ohlcv_candles", "github_activity", "moat_records"} <= keys

    jobs = {job.name: job for job in defs.resolve_all_job_defs()}
    assert {"market_ingest", "github_ingest", "moat_ingest"} <= set(jobs)
    for name in ("market_ingest", "github_ingest", "moat_ingest"):
        assert jobs[name].partitions_def is not None, name
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


def test_the_five_ohlcv_checks_exist_and_every_check_is_blocking() -> None:
    graph = defs.resolve_asset_graph()
    ohlcv = {k.name for k in graph.asset_check_keys if k.asset_key == dg.AssetKey("ohlcv_candles")}
    assert ohlcv == OHLCV_CHECKS
    not_blocking = [k.to_user_string() for k in graph.asset_check_keys if not graph.get_check_spec(k).blocking]
    assert not_blocking == []


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
