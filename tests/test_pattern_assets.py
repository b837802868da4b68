"""The pattern layer on an ephemeral instance: windows, encoder, the memory in the embedded Qdrant Edge store
(with its blocking gate), analog forecasts, and the analog strategy in the backtests."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import polars as pl
import pytest

from assets.backtests import backtest_results, strategy_comparison
from assets.features import pair_features
from assets.partitions import month_days
from assets.patterns import EMBEDDINGS_CHECK, analog_forecasts, pattern_embeddings, pattern_encoder, pattern_windows
from cyber_pipelines.features.cross_source import repos_for_asset
from cyber_pipelines.models.store import ModelStore
from cyber_pipelines.orchestrate import ingest_github, ingest_market, ingest_moat
from cyber_pipelines.patterns.encoder import embed, encoder_name, load_encoder
from cyber_pipelines.patterns.store import EdgeVectorStore
from cyber_pipelines.patterns.windows import window_matrix
from cyber_pipelines.resources import (
    MarketDataResource,
    ModelStoreResource,
    StorageResource,
    VectorStoreResource,
    VsmResource,
)

MONTHS = [date(2024, 1, 1), date(2024, 2, 1)]
PAIRS = ["BTC-USD", "ETH-USD"]
TRAIN_DAYS = 21
ENCODER = {"ops": {"pattern_encoder": {"config": {"train_days": TRAIN_DAYS, "epochs": 4, "comparison_queries": 100}}}}
ANALOG = {"ops": {"analog_forecasts": {"config": {"train_days": TRAIN_DAYS, "k": 10}}}}
FAST = {"train_days": TRAIN_DAYS, "test_days": 14, "random_draws": 100, "n_boot": 199}


@dataclass
class Pipeline:
    instance: dg.DagsterInstance
    data: Path
    resources: dict[str, Any]
    windows: dict[str, dg.ExecuteInProcessResult]
    encoder: dg.ExecuteInProcessResult
    memory: dict[str, dg.ExecuteInProcessResult]
    analogs: dict[str, dg.ExecuteInProcessResult]

    def materialize(self, assets: list[Any], **kwargs: Any) -> dg.ExecuteInProcessResult:
        return dg.materialize(assets, instance=self.instance, resources=self.resources, raise_on_error=False, **kwargs)


def metadata(result: dg.ExecuteInProcessResult, node: str) -> dict[str, Any]:
    (materialization,) = result.asset_materializations_for_node(node)
    return {k: v.value for k, v in materialization.metadata.items()}


def check_result(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    (evaluation,) = result.get_asset_check_evaluations()
    return evaluation


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    root = tmp_path_factory.mktemp("pattern_assets")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CYBER_DATA_DIR", str(root / "data"))
        env.delenv("QDRANT_URL", raising=False)
        instance = dg.DagsterInstance.ephemeral()
        days = [d for m in MONTHS for d in month_days(m)]
        outcomes = [
            *ingest_market([p.replace("-", "/") for p in PAIRS], days, "synthetic", instance),
            *ingest_github(repos_for_asset("ETH")[:2], days, "synthetic", instance),
            *ingest_moat(days, "synthetic", instance),
        ]
        assert all(o.success for o in outcomes), [o.message for o in outcomes if not o.success]
        resources = {
            "storage": StorageResource(root=str(root / "data")),
            "vsm": VsmResource(),
            "market": MarketDataResource(),
            "models": ModelStoreResource(root=str(root / "data" / "models")),  # where the CLI looks
            "vectors": VectorStoreResource(),
        }

        def run(assets: list[Any], **kwargs: Any) -> dg.ExecuteInProcessResult:
            return dg.materialize(assets, instance=instance, resources=resources, **kwargs)

        windows = {key: run([pair_features, pattern_windows], partition_key=key) for key in PAIRS}
        encoder = run([pattern_encoder], run_config=ENCODER)
        memory = {key: run([pattern_embeddings], partition_key=key) for key in PAIRS}
        analogs = {key: run([analog_forecasts], partition_key=key, run_config=ANALOG) for key in PAIRS}
        yield Pipeline(instance, root / "data", resources, windows, encoder, memory, analogs)


def test_windows_are_stored_with_their_outcome_horizon(pipeline: Pipeline) -> None:
    meta = metadata(pipeline.windows["BTC-USD"], "pattern_windows")
    table = pl.read_parquet(meta["path"])
    assert meta["windows"] == table.height > 1000 and meta["window_hours"] == 48 and meta["dim"] == 145
    assert (table["horizon_end"] - table["timestamp"]).unique().to_list() == [timedelta(hours=25)]
    assert table["fwd_24h"].null_count() == 24  # the last day's windows have no 24 h outcome yet
    assert set(table["regime"].unique()) <= {"calm", "normal", "turbulent", "unknown"}


def test_encoder_is_saved_as_safetensors_and_reproduces_its_probe(pipeline: Pipeline) -> None:
    meta = metadata(pipeline.encoder, "pattern_encoder")
    folder = Path(meta["model_path"])
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    store = ModelStore(pipeline.resources["models"].root)
    tensors, config, version = store.load(encoder_name("synthetic"))
    assert version == meta["version"] == pipeline.encoder.run_id
    model = load_encoder(tensors, config)
    probe = config["probe"]
    assert embed(model, np.array([probe["input"]], dtype=np.float32))[0].tolist() == pytest.approx(
        probe["output"], abs=1e-6
    )
    # trained only on windows whose outcome was known before the first out-of-sample bar
    paths = [metadata(pipeline.windows[k], "pattern_windows")["path"] for k in PAIRS]
    first = min(pl.read_parquet(path)["timestamp"][0] for path in paths)
    assert meta["trained_through"] == (first + timedelta(days=TRAIN_DAYS)).isoformat() == config["trained_through"]
    cutoff = first + timedelta(days=TRAIN_DAYS)
    known = sum(pl.read_parquet(path).filter(pl.col("horizon_end") <= cutoff).height for path in paths)
    assert meta["train_windows"] == config["training"]["windows"]
    assert config["training"]["windows"] + config["training"]["validation_windows"] == known
    assert meta["train_loss"] > 0 and meta["validation_loss"] > 0
    assert {"ic/encoder", "ic/pca", "ic/window", "overlap_with_window/encoder"} <= set(meta)
    assert meta["overlap_with_window/window"] == 1.0


def test_memory_holds_every_window_once_and_passes_its_gate(pipeline: Pipeline) -> None:
    for key in PAIRS:
        result = pipeline.memory[key]
        meta = metadata(result, "pattern_embeddings")
        windows = metadata(pipeline.windows[key], "pattern_windows")["windows"]
        assert meta["points"] == meta["windows"] == windows
        assert meta["encoder_version"] == pipeline.encoder.run_id and "Qdrant Edge shard" in meta["store"]
        evaluation = check_result(result)
        assert evaluation.check_name == EMBEDDINGS_CHECK and evaluation.passed
        assert evaluation.metadata["duplicate_ids"].value == 0
        assert evaluation.metadata["recall_at_10"].value >= 0.95


def test_rematerializing_the_memory_never_duplicates_points(pipeline: Pipeline) -> None:
    for _ in range(2):
        again = pipeline.materialize([pattern_embeddings], partition_key="ETH-USD")
        assert again.success and check_result(again).passed
    path = VectorStoreResource.edge_path(pipeline.data, "synthetic")
    windows = sum(metadata(pipeline.windows[k], "pattern_windows")["windows"] for k in PAIRS)
    with EdgeVectorStore(path, 32) as store:
        assert store.count() == windows and len(set(store.ids())) == windows


def test_analog_forecasts_report_skill_next_to_the_base_rate(pipeline: Pipeline) -> None:
    meta = metadata(pipeline.analogs["BTC-USD"], "analog_forecasts")
    table = pl.read_parquet(meta["path"])
    assert table.columns == ["timestamp", "analog_forecast", "base_forecast", "neighbours", "realized"]
    assert meta["bars"] == table.height and 0 < meta["oos_bars"] < table.height
    # the first windows have no admissible neighbour: a window is seen only after its outcome is known
    first = table.filter(pl.col("neighbours") > 0)["timestamp"][0]
    assert first == table["timestamp"][0] + timedelta(hours=24)  # known at its close, 25 h after the first window
    assert table.filter(pl.col("neighbours") == 0)["analog_forecast"].abs().max() == 0
    for name in ("ic/analog", "ic/base_rate", "hit_rate/analog", "hit_rate/base_rate", "ic_gain", "ic_gain_p"):
        assert isinstance(meta[name], float)
    assert "base rate (no retrieval)" in meta["skill"] and "IC gain" in meta["skill"]


def test_backtests_trade_the_analog_forecast_against_the_references(pipeline: Pipeline) -> None:
    run_config = {"ops": {"backtest_results": {"config": FAST}}}
    for key in PAIRS:
        result = pipeline.materialize([backtest_results], partition_key=key, run_config=run_config)
        assert result.success
        meta = metadata(result, "backtest_results")
        assert meta["analog_knn"] == "included (analog_forecasts)"
        data = json.loads(Path(meta["json_path"]).read_text())
        report = data["strategies"]["analog_knn"]
        assert {t["reference"] for t in report["tests"]} == {"cash", "buy_and_hold", "random_entry", "rule_of_three"}
        assert report["windows"][0]["params"]["n_train"] > 0  # calibrated on each training window
    comparison = pipeline.materialize([strategy_comparison])
    assert comparison.success
    assert "analog_knn" in metadata(comparison, "strategy_comparison")["verdicts"]


def test_the_gate_blocks_a_memory_whose_windows_repeat_a_timestamp(pipeline: Pipeline, tmp_path: Path) -> None:
    """A windows table with a repeated row (a hand-edited or corrupt file): its ids collide, so nothing of it is
    written (the pair's previous points stay) and the blocking check fails through the asset."""
    path = Path(metadata(pipeline.windows["ETH-USD"], "pattern_windows")["path"])
    original = pl.read_parquet(path)
    try:
        pl.concat([original, original.head(3)]).sort("timestamp").write_parquet(path)
        result = pipeline.materialize([pattern_embeddings], partition_key="ETH-USD")
        evaluation = check_result(result)
        assert not evaluation.passed
        assert evaluation.metadata["duplicate_ids"].value == 3
        assert evaluation.metadata["points"].value == original.height  # the previous memory, untouched
        assert "share an id" in evaluation.metadata["failures"].value
        assert metadata(result, "pattern_embeddings")["written"] is False
    finally:
        original.write_parquet(path)
        assert pipeline.materialize([pattern_embeddings], partition_key="ETH-USD").success


def test_the_gate_blocks_an_index_whose_recall_is_too_low(pipeline: Pipeline, tmp_path: Path) -> None:
    """A coarse index (a tiny HNSW graph built from the first KB, product quantization, no oversampling) misses
    neighbours: the recall part of the gate fails through the asset (on a copy of the data with a new shard)."""
    data = tmp_path / "data"
    shutil.copytree(pipeline.data, data, ignore=shutil.ignore_patterns("qdrant_edge"))
    coarse = VectorStoreResource(
        m=2, ef_construct=4, hnsw_ef=1, quantization="pq", oversampling=1.0, indexing_threshold_kb=1
    )
    result = dg.materialize(
        [pattern_embeddings],
        partition_key="BTC-USD",
        instance=pipeline.instance,
        resources={**pipeline.resources, "storage": StorageResource(root=str(data)), "vectors": coarse},
        raise_on_error=False,
    )
    evaluation = check_result(result)
    assert not evaluation.passed and evaluation.metadata["recall_at_10"].value < 0.95
    assert "recall@10" in evaluation.metadata["failures"].value
    assert evaluation.metadata["points"].value == evaluation.metadata["windows"].value  # only recall failed


def test_the_same_training_windows_and_settings_keep_the_encoder_version(pipeline: Pipeline) -> None:
    again = pipeline.materialize([pattern_encoder], run_config=ENCODER)
    meta = metadata(again, "pattern_encoder")
    assert again.success and meta["retrained"] is False
    assert meta["version"] == ModelStore(pipeline.resources["models"].root).latest(encoder_name("synthetic"))
    assert meta["version"] != again.run_id


def test_analog_forecasts_refuse_a_memory_from_another_encoder(pipeline: Pipeline) -> None:
    other_seed = {"ops": {"pattern_encoder": {"config": {**ENCODER["ops"]["pattern_encoder"]["config"], "seed": 1}}}}
    retrained = pipeline.materialize([pattern_encoder], run_config=other_seed)
    assert retrained.success and metadata(retrained, "pattern_encoder")["retrained"] is True
    refused = pipeline.materialize([analog_forecasts], partition_key="BTC-USD", run_config=ANALOG)
    assert not refused.success
    failure = refused.get_step_failure_events()[0].step_failure_data.error
    assert failure is not None and "not made by the latest encoder" in failure.message
    for key in PAIRS:
        assert pipeline.materialize([pattern_embeddings], partition_key=key).success
    assert pipeline.materialize([analog_forecasts], partition_key="BTC-USD", run_config=ANALOG).success


def test_the_windows_matrix_round_trips_through_parquet(pipeline: Pipeline) -> None:
    table = pl.read_parquet(metadata(pipeline.windows["ETH-USD"], "pattern_windows")["path"])
    x = window_matrix(table)
    assert x.dtype.name == "float32" and x.shape == (table.height, 145)


def test_patterns_similar_prints_admissible_neighbours_and_fails_in_one_line(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from cyber_pipelines.cli import main

    monkeypatch.setenv("CYBER_DATA_DIR", str(pipeline.data))
    at = "2024-02-20T12:00"
    assert main(["patterns", "similar", "--pair", "ETH/USD", "--at", at, "--k", "4", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["ok"] and found["query"]["window_end"] == "2024-02-20T11:00:00+00:00"
    latest = ModelStore(pipeline.resources["models"].root).latest(encoder_name("synthetic"))
    assert len(found["neighbours"]) == 4 and found["encoder_version"] == latest
    for n in found["neighbours"]:
        assert n["horizon_end"] <= "2024-02-20T12:00:00+00:00" and n["pair"] in ("BTC/USD", "ETH/USD")
    assert main(["patterns", "similar", "--pair", "ETH/USD", "--at", at, "--k", "3"]) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0].startswith("ETH/USD window ending 2024-02-20T11:00:00+00:00") and len(text) == 5
    assert text[-1].startswith("what followed the query (not seen by the search)")
    assert main(["patterns", "similar", "--pair", "SOL/USD", "--at", at]) == 1
    assert "error: no pattern windows of SOL/USD under" in capsys.readouterr().err
    assert main(["patterns", "similar", "--pair", "ETH/USD", "--at", "2023-01-01"]) == 1
    assert "error: no window of ETH/USD is known at 2023-01-01T00:00:00+00:00" in capsys.readouterr().err
    with EdgeVectorStore(VectorStoreResource.edge_path(pipeline.data, "synthetic"), 32):  # another holder
        assert main(["patterns", "similar", "--pair", "ETH/USD", "--at", at]) == 1
        assert "is held by another process" in capsys.readouterr().err


def test_a_pair_no_longer_processed_keeps_its_patterns(pipeline: Pipeline) -> None:
    """A pair taken out of the partitions (as hibernation will) keeps its points; other pairs' runs and the
    memory's own re-materialization touch only their own pair."""
    path = VectorStoreResource.edge_path(pipeline.data, "synthetic")
    with EdgeVectorStore(path, 32) as store:
        before = store.count("ETH/USD")
    pipeline.instance.delete_dynamic_partition("pairs", "ETH-USD")
    try:
        assert pipeline.materialize([pattern_embeddings], partition_key="BTC-USD").success
        with EdgeVectorStore(path, 32) as store:
            assert store.count("ETH/USD") == before > 0
    finally:
        pipeline.instance.add_dynamic_partitions("pairs", ["ETH-USD"])
