"""The models layer on an ephemeral instance: the base forecaster, one LoRA adapter per pair with its promotion
gate, the model checks, the forecasts of the serving model, and the LoRA strategy in the backtests.

The synthetic market gives SOL/USD hourly returns with an AR(1) of +0.4 (momentum; the pool has none): its
adapter must be promoted and the others not."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import polars as pl
import pytest
import torch
from safetensors.torch import load_file, save_file

from assets.features import pair_features
from assets.models import (
    base_forecaster,
    base_forecaster_valid,
    lora_forecasts,
    pair_adapter,
    pair_adapter_promotion,
    pair_adapter_valid,
)
from assets.partitions import month_days, pair_partitions
from cyber_pipelines.models import lifecycle
from cyber_pipelines.models.store import ModelStore
from cyber_pipelines.orchestrate import ingest_market
from cyber_pipelines.resources import MarketDataResource, ModelStoreResource, StorageResource, VsmResource

MONTHS = [date(2024, m, 1) for m in range(1, 8)]
PAIRS = ["BTC-USD", "ETH-USD", "SOL-USD"]
BASE = {"ops": {"base_forecaster": {"config": {"train_days": 180, "validation_days": 90, "width": 128,
                                               "epochs": 12}}}}  # fmt: skip
ADAPTER = {"ops": {"pair_adapter": {"config": {"epochs": 12}}}}


@dataclass
class Models:
    instance: dg.DagsterInstance
    data: Path
    resources: dict[str, Any]
    base: dg.ExecuteInProcessResult
    adapters: dict[str, dg.ExecuteInProcessResult]
    forecasts: dict[str, dg.ExecuteInProcessResult]

    def run(self, assets: list[Any], **kwargs: Any) -> dg.ExecuteInProcessResult:
        return dg.materialize(assets, instance=self.instance, resources=self.resources, raise_on_error=False, **kwargs)


def metadata(result: dg.ExecuteInProcessResult, node: str) -> dict[str, Any]:
    (materialization,) = result.asset_materializations_for_node(node)
    return {k: v.value for k, v in materialization.metadata.items()}


def checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Models]:
    root = tmp_path_factory.mktemp("model_assets")
    config = root / "pipeline.yaml"
    config.write_text(
        "start_date: '2024-01-01'\npairs: [BTC/USD, ETH/USD, SOL/USD]\n"
        "synthetic: {seed: 11, effect_size: 0.0, distinct_pairs: [SOL/USD], distinct_ar: 0.4}\nrepos: {}\n"
    )
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CYBER_DATA_DIR", str(root / "data"))
        env.setenv("CYBER_CONFIG", str(config))
        instance = dg.DagsterInstance.ephemeral()
        days = [d for m in MONTHS for d in month_days(m)]
        outcomes = ingest_market([p.replace("-", "/") for p in PAIRS], days, "synthetic", instance)
        assert all(o.success for o in outcomes), [o.message for o in outcomes if not o.success]
        resources = {
            "storage": StorageResource(root=str(root / "data")),
            "vsm": VsmResource(),
            "market": MarketDataResource(),
            "models": ModelStoreResource(root=str(root / "data" / "models")),
        }

        def run(assets: list[Any], **kwargs: Any) -> dg.ExecuteInProcessResult:
            return dg.materialize(assets, instance=instance, resources=resources, raise_on_error=False, **kwargs)

        for key in PAIRS:
            assert run([pair_features], partition_key=key).success
        base = run([base_forecaster, base_forecaster_valid], run_config=BASE)
        adapters = {
            key: run([pair_adapter, pair_adapter_valid, pair_adapter_promotion], partition_key=key, run_config=ADAPTER)
            for key in PAIRS
        }
        forecasts = {key: run([lora_forecasts], partition_key=key) for key in PAIRS}
        yield Models(instance, root / "data", resources, base, adapters, forecasts)


def test_base_is_saved_as_safetensors_trained_before_the_promotion_period(models: Models) -> None:
    assert models.base.success
    meta = metadata(models.base, "base_forecaster")
    folder = Path(meta["model_path"])
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    assert meta["version"] == models.base.run_id and meta["retrained"] is True
    assert meta["trained_through"] == "2024-03-31T00:00:00" and meta["promotion_period"] == "2024-03-31 .. 2024-06-29"
    assert "GARCH(1,1)" in meta["held_out_vs_references"] and "HAR-RV" in meta["held_out_vs_references"]
    assert checks(models.base)["model_valid"].passed


def test_retraining_on_the_same_samples_keeps_the_version(models: Models) -> None:
    again = models.run([base_forecaster], run_config=BASE)
    meta = metadata(again, "base_forecaster")
    assert meta["retrained"] is False and meta["version"] == models.base.run_id


def test_only_the_pair_with_distinct_dynamics_is_promoted(models: Models) -> None:
    promoted = {key: metadata(r, "pair_adapter")["promoted"] for key, r in models.adapters.items()}
    assert promoted == {"BTC-USD": False, "ETH-USD": False, "SOL-USD": True}, {
        key: metadata(r, "pair_adapter")["decision"] for key, r in models.adapters.items()
    }
    sol = metadata(models.adapters["SOL-USD"], "pair_adapter")
    assert sol["improvement/return"] > 0.005 and sol["p_adjusted/return"] <= 0.05
    assert 0 < sol["share_of_base"] < 0.2 and sol["rank"] == 8
    for key, result in models.adapters.items():
        found = checks(result)
        assert found["adapter_valid"].passed
        gate = found["adapter_promotion"]
        assert gate.passed is promoted[key]
        assert gate.severity == (dg.AssetCheckSeverity.ERROR if promoted[key] else dg.AssetCheckSeverity.WARN)


def test_forecasts_come_from_the_serving_model(models: Models) -> None:
    for key, result in models.forecasts.items():
        meta = metadata(result, "lora_forecasts")
        table = pl.read_parquet(meta["path"])
        assert meta["serving"] == ("adapter" if key == "SOL-USD" else "base")
        assert table["model"].unique().to_list() == [meta["serving"]]
        assert table["lora_forecast"].is_finite().all() and (table["lora_variance"] > 0).all()
    sol = pl.read_parquet(metadata(models.forecasts["SOL-USD"], "lora_forecasts")["path"])
    oos = sol.filter(pl.col("timestamp") >= pl.datetime(2024, 6, 29, time_zone="UTC")).drop_nulls("realized")
    ic = np.corrcoef(oos["lora_forecast"].to_numpy(), oos["realized"].to_numpy())[0, 1]
    assert ic > 0.2  # the momentum it was promoted for pays out of sample


def test_the_serving_rule_keeps_the_base_for_an_adapter_of_an_older_base(models: Models) -> None:
    store = ModelStore(models.resources["models"].root)
    chosen = lifecycle.serving(store, "synthetic", "SOL-USD")
    assert chosen.model == "adapter" and chosen.base_version == models.base.run_id
    assert lifecycle.serving(store, "synthetic", "BTC-USD").model == "base"


def test_model_check_fails_through_the_asset_on_a_corrupted_file(models: Models, tmp_path: Path) -> None:
    store = ModelStore(models.resources["models"].root)
    folder = store.folder(lifecycle.base_name("synthetic"), models.base.run_id)
    original = (folder / "model.safetensors").read_bytes()
    try:
        tensors = load_file(str(folder / "model.safetensors"))
        tensors["inp.weight"][0, 0] = float("nan")
        save_file(tensors, str(folder / "model.safetensors"))
        result = models.run([base_forecaster_valid], selection=dg.AssetSelection.checks(base_forecaster_valid))
        (evaluation,) = result.get_asset_check_evaluations()
        assert not evaluation.passed
        assert "non-finite" in evaluation.metadata["problems"].value
        tensors["inp.weight"][0, 0] = 0.5  # finite, but not what was recorded: the probe tells
        save_file(tensors, str(folder / "model.safetensors"))
        result = models.run([base_forecaster_valid], selection=dg.AssetSelection.checks(base_forecaster_valid))
        (evaluation,) = result.get_asset_check_evaluations()
        assert not evaluation.passed and "probe" in evaluation.metadata["problems"].value
    finally:
        (folder / "model.safetensors").write_bytes(original)


def test_adapter_check_fails_through_the_asset_on_a_corrupted_adapter(models: Models) -> None:
    store = ModelStore(models.resources["models"].root)
    name = lifecycle.adapter_store_name("synthetic", "SOL-USD")
    folder = store.folder(name, store.latest(name) or "")
    original = (folder / "model.safetensors").read_bytes()
    try:
        tensors = load_file(str(folder / "model.safetensors"))
        key = next(k for k in tensors if "lora_B" in k)
        tensors[key] = torch.full_like(tensors[key], float("inf"))
        save_file(tensors, str(folder / "model.safetensors"))
        job = dg.define_asset_job(
            "check_adapter", selection=dg.AssetSelection.checks(pair_adapter_valid), partitions_def=pair_partitions
        )
        defs = dg.Definitions(
            assets=[pair_adapter], asset_checks=[pair_adapter_valid], jobs=[job], resources=models.resources
        )
        result = defs.resolve_job_def("check_adapter").execute_in_process(
            instance=models.instance, tags={"dagster/partition": "SOL-USD"}, raise_on_error=False
        )
        (evaluation,) = result.get_asset_check_evaluations()
        assert not evaluation.passed and "non-finite" in evaluation.metadata["problems"].value
    finally:
        (folder / "model.safetensors").write_bytes(original)


def test_no_pickle_in_the_model_store(models: Models) -> None:
    files = [p for p in models.data.joinpath("models").rglob("*") if p.is_file()]
    assert files and {p.suffix for p in files} <= {".safetensors", ".json", ""}


def test_lora_strategy_is_backtested_out_of_sample_against_the_references(models: Models) -> None:
    from assets.backtests import backtest_results

    fast = {"train_days": 180, "test_days": 14, "random_draws": 100, "n_boot": 199}
    result = models.run([backtest_results], partition_key="SOL-USD", run_config={
        "ops": {"backtest_results": {"config": fast}}})  # fmt: skip
    assert result.success
    meta = metadata(result, "backtest_results")
    assert meta["lora"] == "included (lora_forecasts)"
    report = json.loads(Path(meta["json_path"]).read_text())["strategies"]["lora"]
    assert {t["reference"] for t in report["tests"]} == {"cash", "buy_and_hold", "random_entry", "rule_of_three"}
    assert report["windows"][0]["params"]["n_train"] > 0  # calibrated on each training window


def test_cli_models_status_names_the_serving_model_and_why(
    models: Models, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from cyber_pipelines.cli import main

    monkeypatch.setenv("CYBER_DATA_DIR", str(models.data))
    assert main(["models", "status"]) == 0
    text = capsys.readouterr().out
    assert f"synthetic base forecaster {models.base.run_id}" in text
    sol = next(line for line in text.splitlines() if line.strip().startswith("SOL/USD"))
    assert "adapter" in sol and "the adapter serves return" in sol
    btc = next(line for line in text.splitlines() if line.strip().startswith("BTC/USD"))
    assert " base " in btc and "keeps the base" in btc
    assert main(["models", "status", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["ok"] and {r["pair"]: r["model"] for r in found["pairs"]} == {
        "BTC/USD": "base", "ETH/USD": "base", "SOL/USD": "adapter"}  # fmt: skip
    monkeypatch.setenv("CYBER_DATA_DIR", str(tmp_path))  # nothing trained there
    assert main(["models", "status"]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: no base forecaster under {tmp_path / 'models'} (run `make demo`, or materialize base_forecaster)"
    ]
