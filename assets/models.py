"""Models layer: a base forecaster for all pairs, a LoRA adapter per pair promoted only when it beats the base
out of sample, and the forecasts of whichever model serves each pair."""

import hashlib
import json
from collections.abc import Callable
from dataclasses import replace

import dagster as dg
import numpy as np
import polars as pl
from pydantic import Field

from assets.batch import required_source
from assets.features import DEPS_UPDATED_AND_CHECKED, pair_features
from assets.partitions import PAIRS, pair_partitions
from cyber_pipelines.backtest.evaluation import TRAIN_DAYS
from cyber_pipelines.keys import key_to_pair
from cyber_pipelines.models.periods import MIN_TRAIN_DAYS, Periods, periods
from cyber_pipelines.models.promotion import DEFAULT_ALPHA, DEFAULT_MARGIN
from cyber_pipelines.report import markdown_table
from cyber_pipelines.resources import ModelStoreResource, StorageResource
from cyber_pipelines.storage import TableStore, content_hash

BASE_CODE_VERSION = "base-forecaster-1"
ADAPTER_CODE_VERSION = "adapter-1"
LORA_FORECASTS_CODE_VERSION = "lora-forecasts-1"
FORECAST_COLUMN = "lora_forecast"


def _source(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext, partition: str | None = None) -> str:
    return required_source(context, pair_features.key, partition)


def _candles(store: TableStore, source: str, pair_key: str) -> pl.DataFrame:
    try:
        return store.read(source, "features", pair_key).select("timestamp", "open", "high", "low", "close", "volume")
    except FileNotFoundError as exc:
        raise dg.Failure(f"no features for {key_to_pair(pair_key)} ({source}): materialize pair_features") from exc


def _settings(config: dict):
    from cyber_pipelines.models.lifecycle import ModelSettings

    return ModelSettings(length=int(config["samples"]["length"]), horizon=int(config["samples"]["horizon"]),
                         validation_days=int(config["periods"]["validation_days"]))  # fmt: skip


class ForecasterConfig(dg.Config):
    length: int = Field(default=24, ge=1, le=336, description="bars (hours) in a sample's window")
    horizon: int = Field(default=1, ge=1, le=48, description="hours ahead the return and variance are forecast")
    width: int = Field(default=1024, ge=8, description="hidden units (the adapters' share of parameters falls with it)")
    depth: int = Field(default=1, ge=1, le=8, description="hidden-to-hidden layers (the LoRA targets)")
    epochs: int = Field(default=30, ge=1, le=1000)
    learning_rate: float = Field(default=3e-4, gt=0)
    seed: int = Field(default=0, ge=0, description="seeds weights and batch order (deterministic on CPU)")
    train_days: int = Field(
        default=TRAIN_DAYS,
        ge=MIN_TRAIN_DAYS,
        description="the cutoff: this many days after the earliest pair's first bar, the backtests' first "
        "out-of-sample bar; nothing after it is ever trained on",
    )
    validation_days: int = Field(
        default=30, ge=3, description="the promotion period: the last days before the cutoff, which neither the base "
        "nor any adapter trains on",
    )  # fmt: skip


@dg.asset(
    deps=[dg.AssetDep(pair_features, partition_mapping=dg.AllPartitionMapping())],
    group_name="models",
    kinds={"torch"},
    code_version=BASE_CODE_VERSION,
    automation_condition=DEPS_UPDATED_AND_CHECKED,
    description=(
        "The base forecaster: an MLP from the last 24 hourly bars (returns, ranges, volumes over a week's volatility; "
        "the hour and weekday) to the next hour's return and variance, trained on every pair together on the samples "
        "known before the promotion period (walk-forward: the backtests' first out-of-sample bar is the cutoff). "
        "Seeded and deterministic on CPU; saved as safetensors + JSON config in the model store, versioned by this "
        "run. Held-out losses against zero / historical-mean returns and GARCH(1,1) / HAR-RV variance per pair."
    ),
)
def base_forecaster(
    context: dg.AssetExecutionContext, config: ForecasterConfig, storage: StorageResource, models: ModelStoreResource
) -> dg.MaterializeResult:
    import torch

    from cyber_pipelines.models import lifecycle
    from cyber_pipelines.models.forecaster import TrainSettings, parameter_count

    source = _source(context)
    store = storage.store()
    keys = [k for k in sorted(context.instance.get_dynamic_partitions(PAIRS)) if store.exists(source, "features", k)]
    if not keys:
        raise dg.Failure(f"no stored {source} features for any pair: materialize pair_features first")
    settings = lifecycle.ModelSettings(
        length=config.length, horizon=config.horizon, width=config.width, depth=config.depth,
        base=TrainSettings(epochs=config.epochs, learning_rate=config.learning_rate, seed=config.seed),
        validation_days=config.validation_days,
    )  # fmt: skip
    candles = {k: _candles(store, source, k) for k in keys}
    try:
        samples = {k: lifecycle.pair_samples(c, key_to_pair(k), settings) for k, c in candles.items()}
        when = periods(
            [lifecycle.first_bar(c) for c in candles.values() if c.height], config.train_days, config.validation_days
        )
        used = [s for s in samples.values() if len(s.known_by(when.validation_start))]
        fingerprint = _fingerprint(used, when, settings)
        name = lifecycle.base_name(source)
        kept = _same_base(models, source, fingerprint)
        if kept is not None:
            model, saved_config, version = kept
            training = saved_config["training"]
            context.log.info(f"training samples and settings unchanged: keeping base {version}")
        else:
            model, report = lifecycle.fit_base(used, when, settings)
            version = context.run_id
            training = {
                "samples": report.n_train, "validation_samples": report.n_validation, "best_epoch": report.best_epoch,
                "train_loss": report.train_loss, "validation_loss": report.validation_loss,
                "seconds": round(report.seconds, 2), "settings": report.settings, "fingerprint": fingerprint,
            }  # fmt: skip
        tables = [
            lifecycle.held_out_table({"base": model}, candles[k], s, when.validation_start, when.cutoff,
                                     when.validation_start).with_columns(pair=pl.lit(key_to_pair(k)))
            for k, s in samples.items() if len(s.between(when.validation_start, when.cutoff)) >= 30
        ]  # fmt: skip
    except ValueError as exc:
        raise dg.Failure(f"cannot train the base forecaster ({source}): {exc}") from exc
    held_out = pl.concat(tables).select("pair", pl.exclude("pair")) if tables else pl.DataFrame()
    if kept is None:
        lifecycle.save_base(
            models.store(), source, version, model,
            {
                "source": source, "pairs": [key_to_pair(k) for k in keys], "periods": {**when.as_dict(),
                "train_days": config.train_days, "validation_days": config.validation_days},
                "samples": {"length": config.length, "horizon": config.horizon}, "training": training,
                "held_out": held_out.to_dicts(), "run_id": version, "torch": torch.__version__,
            },
            used[0],
        )  # fmt: skip
    folder = models.store().folder(name, version)
    losses = pl.DataFrame({"epoch": list(range(1, len(training["train_loss"]) + 1)),
                           "train": training["train_loss"], "validation": training["validation_loss"]})  # fmt: skip
    return dg.MaterializeResult(
        data_version=dg.DataVersion(hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()[:24]),
        metadata={
            "source": source,
            "version": version,
            "retrained": kept is None,
            "pairs": ", ".join(key_to_pair(k) for k in keys),
            "trained_through": when.validation_start.isoformat(),
            "promotion_period": f"{when.validation_start:%Y-%m-%d} .. {when.cutoff:%Y-%m-%d}",
            "parameters": parameter_count(model),
            "train_samples": training["samples"],
            "best_epoch": training["best_epoch"],
            "train_loss": training["train_loss"][training["best_epoch"] - 1],
            "validation_loss": training["validation_loss"][training["best_epoch"] - 1],
            "training_seconds": training["seconds"],
            "loss_by_epoch": dg.MetadataValue.md(markdown_table(losses)),
            "held_out_vs_references": dg.MetadataValue.md(
                f"The promotion period ({when.validation_start:%Y-%m-%d} .. {when.cutoff:%Y-%m-%d}, never trained on), "
                "standardized units (returns over the trailing week's hourly volatility):\n\n"
                + (markdown_table(held_out) if held_out.height else "no pair has 30 samples there")
            ),
            "model_path": dg.MetadataValue.path(str(folder)),
        },
    )


def _fingerprint(samples: list, when, settings) -> str:
    digest = hashlib.sha256(json.dumps([settings.as_dict(), when.as_dict(), BASE_CODE_VERSION], default=str).encode())
    for s in samples:
        train = s.known_by(when.validation_start)
        digest.update(train.x.tobytes() + train.ret.tobytes() + train.var.tobytes())
    return digest.hexdigest()[:24]


def _same_base(models: ModelStoreResource, source: str, fingerprint: str):
    from cyber_pipelines.models import lifecycle

    if models.store().latest(lifecycle.base_name(source)) is None:
        return None
    model, config, version = lifecycle.load_base(models.store(), source)
    return (model, config, version) if (config.get("training") or {}).get("fingerprint") == fingerprint else None


@dg.asset_check(
    asset=base_forecaster,
    name="model_valid",
    blocking=True,
    description="The latest saved base forecaster has finite weights, its config loads, and a forward pass on its "
    "recorded probe window reproduces the recorded output.",
)
def base_forecaster_valid(context: dg.AssetCheckExecutionContext, models: ModelStoreResource) -> dg.AssetCheckResult:
    from cyber_pipelines.models import lifecycle

    store = models.store()
    return _integrity(lambda: (*store.load(lifecycle.base_name(_source(context))), None))


class AdapterConfig(dg.Config):
    rank: int = Field(default=8, ge=1, le=256, description="LoRA rank r")
    alpha: int = Field(default=16, ge=1, description="LoRA alpha (the update is scaled by alpha / r)")
    target_modules: list[str] = Field(default=[], description="layers to adapt; empty: every hidden.<i> layer")
    train_head: bool = Field(default=True, description="the adapter also trains its own copy of the output layer")
    epochs: int = Field(default=30, ge=1, le=1000)
    learning_rate: float = Field(default=1e-3, gt=0)
    seed: int = Field(default=0, ge=0)
    margin: float = Field(default=DEFAULT_MARGIN, ge=0, description="least held-out loss improvement to promote")
    significance: float = Field(default=DEFAULT_ALPHA, gt=0, lt=0.5, description="one-sided DM level (Holm, 2 targets)")


@dg.asset(
    partitions_def=pair_partitions,
    deps=[pair_features, base_forecaster],
    group_name="models",
    kinds={"torch"},
    code_version=ADAPTER_CODE_VERSION,
    automation_condition=DEPS_UPDATED_AND_CHECKED,
    description=(
        "One pair's LoRA adapter (peft, rank 8 by default) of the latest base forecaster, trained on that pair's "
        "samples with the base frozen, on what was known before the promotion period. Tested on the promotion period "
        "against the base (Diebold-Mariano per target, Holm over the two): promoted only when it improves a target by "
        "the margin at the significance level and is worse on none; otherwise the pair keeps the base. Saved as "
        "safetensors + JSON config (with the decision) in the model store, versioned by this run."
    ),
)
def pair_adapter(
    context: dg.AssetExecutionContext, config: AdapterConfig, storage: StorageResource, models: ModelStoreResource
) -> dg.MaterializeResult:
    from cyber_pipelines.models import adapters as lora
    from cyber_pipelines.models import lifecycle
    from cyber_pipelines.models.forecaster import TrainSettings

    pair_key = context.partition_key
    pair = key_to_pair(pair_key)
    source = _source(context, pair_key)
    store = models.store()
    try:
        base, base_config, base_version = lifecycle.load_base(store, source)
    except FileNotFoundError as exc:
        raise dg.Failure(f"{exc} (materialize base_forecaster)") from exc
    settings = replace(
        _settings(base_config),
        adapter=lora.AdapterSettings(rank=config.rank, alpha=config.alpha, target_modules=tuple(config.target_modules),
                                     train_head=config.train_head),
        adapter_training=TrainSettings(epochs=config.epochs, learning_rate=config.learning_rate, weight_decay=0.0,
                                       seed=config.seed),
        margin=config.margin, alpha=config.significance,
    )  # fmt: skip
    from datetime import datetime

    stored = base_config["periods"]
    when = Periods(datetime.fromisoformat(stored["validation_start"]), datetime.fromisoformat(stored["cutoff"]))
    candles = _candles(storage.store(), source, pair_key)
    try:
        samples = lifecycle.pair_samples(candles, pair, settings)
        outcome = lifecycle.fit_adapter(base, candles, samples, when, settings)
    except ValueError as exc:
        raise dg.Failure(f"cannot train the adapter of {pair} ({source}): {exc}") from exc
    version = context.run_id
    tensors = lora.adapter_tensors(outcome.model)
    lora_config = lora.adapter_config(settings.adapter, base)
    probe = lifecycle.probe(outcome.model, samples.known_by(when.validation_start))
    store.save(
        lifecycle.adapter_store_name(source, pair_key), version, tensors,
        {
            "pair": pair, "source": source, "base_version": base_version, "lora": lora_config, "probe": probe,
            "promotion": outcome.decision.as_dict(), "validation": outcome.validation.to_dicts(),
            "training": {"samples": outcome.n_train, "best_epoch": outcome.report.best_epoch,
                         "seconds": round(outcome.report.seconds, 2), "train_loss": outcome.report.train_loss,
                         "validation_loss": outcome.report.validation_loss},
            "parameters": outcome.trainable, "base_parameters": outcome.base_parameters, "run_id": version,
        },
    )  # fmt: skip
    decision = outcome.decision
    context.log.info(f"{pair}: {'promoted' if decision.promoted else 'not promoted'}: {decision.reason}")
    return dg.MaterializeResult(
        data_version=dg.DataVersion(hashlib.sha256(json.dumps(probe).encode()).hexdigest()[:24]),
        metadata={
            "source": source,
            "pair": pair,
            "version": version,
            "base_version": base_version,
            "promoted": decision.promoted,
            "decision": decision.reason,
            "adapter_parameters": outcome.trainable,
            "share_of_base": outcome.trainable / outcome.base_parameters,
            "rank": config.rank,
            "target_modules": ", ".join(lora_config["target_modules"]) + (" + own heads" if config.train_head else ""),
            "train_samples": outcome.n_train,
            "training_seconds": round(outcome.report.seconds, 2),
            **{f"improvement/{t}": v.improvement for t, v in decision.tests.items()},
            **{f"p_adjusted/{t}": p for t, p in decision.p_adjusted.items()},
            "promotion_period": dg.MetadataValue.md(
                f"Held out ({when.validation_start:%Y-%m-%d} .. {when.cutoff:%Y-%m-%d}, never trained on), "
                f"standardized units:\n\n{markdown_table(outcome.validation)}\n\n{decision.reason}"
            ),
            "model_path": dg.MetadataValue.path(
                str(store.folder(lifecycle.adapter_store_name(source, pair_key), version))
            ),
        },
    )


@dg.asset_check(
    asset=pair_adapter,
    name="adapter_valid",
    blocking=True,
    partitions_def=pair_partitions,
    description="The pair's latest saved adapter has finite weights, loads onto the base it was trained on, and "
    "reproduces its recorded probe output.",
)
def pair_adapter_valid(context: dg.AssetCheckExecutionContext, models: ModelStoreResource) -> dg.AssetCheckResult:
    from cyber_pipelines.models import lifecycle

    pair_key = context.partition_key
    source = _source(context, pair_key)
    store = models.store()

    def adapter_and_base() -> tuple:
        tensors, config, version = lifecycle.load_adapter(store, source, pair_key)
        return tensors, config, version, lifecycle.load_base(store, source, config["base_version"])[0]

    return _integrity(adapter_and_base)


def _integrity(load: Callable[[], tuple]) -> dg.AssetCheckResult:
    """The integrity check of a stored model: ``load()`` gives (tensors, config, version, base or None)."""
    from cyber_pipelines.models import lifecycle

    try:
        tensors, config, version, base = load()
    except (FileNotFoundError, OSError, ValueError, KeyError) as exc:
        return dg.AssetCheckResult(passed=False, metadata={"problems": f"cannot load the model: {exc}"})
    problems = lifecycle.verify(tensors, config, base)
    return dg.AssetCheckResult(
        passed=not problems, metadata={"version": version, "problems": "; ".join(problems) or "none"}
    )


@dg.asset_check(
    asset=pair_adapter,
    name="adapter_promotion",
    blocking=True,
    partitions_def=pair_partitions,
    description="Passes when the pair's adapter beat the base on the held-out promotion period and serves; fails with "
    "WARN when it did not (the pair keeps the base) and with ERROR when the adapter belongs to another base.",
)
def pair_adapter_promotion(context: dg.AssetCheckExecutionContext, models: ModelStoreResource) -> dg.AssetCheckResult:
    from cyber_pipelines.models import lifecycle

    pair_key = context.partition_key
    chosen = lifecycle.serving(models.store(), _source(context, pair_key), pair_key)
    metadata = {"serving": chosen.model, "reason": chosen.reason, "adapter_version": chosen.adapter_version or "none"}
    if chosen.adapter_version is None or chosen.stale:
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.ERROR, metadata=metadata)
    if chosen.model != "adapter":
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN, metadata=metadata)
    return dg.AssetCheckResult(passed=True, metadata=metadata)


@dg.asset(
    partitions_def=pair_partitions,
    deps=[pair_features, base_forecaster, pair_adapter],
    group_name="models",
    kinds={"torch", "polars"},
    code_version=LORA_FORECASTS_CODE_VERSION,
    automation_condition=DEPS_UPDATED_AND_CHECKED,
    description=(
        "Per bar of one pair, the next hour's return and variance forecast by the model that serves the pair: its "
        "promoted adapter (set_adapter on the base loaded once) or else the base. Out-of-sample losses after the "
        "cutoff beside the base and the references. Written to `<data>/<source>/lora_forecasts/<PAIR>.parquet`; the "
        "backtests trade it as lora_forecast."
    ),
)
def lora_forecasts(
    context: dg.AssetExecutionContext, storage: StorageResource, models: ModelStoreResource
) -> dg.MaterializeResult:
    from datetime import datetime

    from cyber_pipelines.models import adapters as lora
    from cyber_pipelines.models import lifecycle

    pair_key = context.partition_key
    pair = key_to_pair(pair_key)
    source = _source(context, pair_key)
    store = models.store()
    chosen = lifecycle.serving(store, source, pair_key)
    if chosen.model == "none":
        raise dg.Failure(f"{pair}: {chosen.reason} (materialize base_forecaster)")
    base, base_config, _ = lifecycle.load_base(store, source, chosen.base_version)
    server = lora.AdapterServer(base)
    if chosen.model == "adapter":
        tensors, adapter_config, _ = lifecycle.load_adapter(store, source, pair_key)
        server.add(pair_key, tensors, adapter_config["lora"], lifecycle.served_columns(chosen))
    settings = _settings(base_config)
    candles = _candles(storage.store(), source, pair_key)
    try:
        samples = lifecycle.pair_samples(candles, pair, settings)
    except ValueError as exc:
        raise dg.Failure(f"cannot forecast {pair} ({source}): {exc}") from exc
    served = server.predict(pair_key, samples.x)
    table = pl.DataFrame(
        {
            "timestamp": samples.timestamp,
            FORECAST_COLUMN: samples.raw_return(served[:, 0]),
            "lora_variance": samples.raw_variance(np.exp(np.clip(served[:, 1], -12, 12))),
            "realized": samples.raw_return(samples.ret),
        }
    ).with_columns(
        pl.col("timestamp").dt.replace_time_zone("UTC"), pl.col("realized").fill_nan(None), model=pl.lit(chosen.model)
    )
    path = storage.store().write(table, source, "lora_forecasts", pair_key)
    cutoff = datetime.fromisoformat(base_config["periods"]["cutoff"])
    validation_start = datetime.fromisoformat(base_config["periods"]["validation_start"])
    predictors = {f"served ({chosen.model})": lambda x: server.predict(pair_key, x)}
    if chosen.model == "adapter":  # the base alone, for comparison (a fresh copy: the served one carries the adapter)
        predictors["base"] = lifecycle.load_base(store, source, chosen.base_version)[0]
    try:
        oos = lifecycle.held_out_table(predictors, candles, samples, cutoff, datetime.max, validation_start)
        oos_text = markdown_table(oos)
    except ValueError as exc:
        oos, oos_text = pl.DataFrame(), f"no out-of-sample figures: {exc}"
    first = oos.row(0, named=True) if oos.height else {}
    return dg.MaterializeResult(
        data_version=dg.DataVersion(content_hash(table)),
        metadata={
            "source": source,
            "pair": pair,
            "serving": chosen.model,
            "base_version": chosen.base_version,
            "adapter_version": chosen.adapter_version or "none",
            "why": chosen.reason,
            "bars": table.height,
            **({"oos/return_ic": first["return_ic"], "oos/variance_qlike": first["variance_qlike"]} if first else {}),
            "out_of_sample": dg.MetadataValue.md(
                f"After the cutoff {cutoff:%Y-%m-%d} (never trained on), standardized units:\n\n{oos_text}"
            ),
            "path": dg.MetadataValue.path(str(path)),
        },
    )
