"""The models' walk-forward lifecycle, without Dagster: periods, base, adapters, promotion, storage, checks.

Periods (``periods``): the cutoff is the backtests' first out-of-sample bar (the earliest pair's first bar
plus ``train_days``); the ``validation_days`` before it are the promotion period. The base and every
adapter train only on samples whose outcome was known when the promotion period began; the promotion test
uses the promotion period, which neither saw; forecasts after the cutoff are out of sample for both.

Storage: ``base_name(source)`` and ``adapter_name(source, pair_key)`` in the ``ModelStore`` (safetensors +
JSON config). Each config records a probe (an input row and the model's output on it), which
``verify`` reproduces: the models' integrity check.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import polars as pl
import torch

from cyber_pipelines.models import adapters as lora
from cyber_pipelines.models.forecaster import (
    TARGETS,
    Forecaster,
    TrainingReport,
    TrainSettings,
    load_forecaster,
    parameter_count,
    predict,
    target_losses,
    train_base,
)
from cyber_pipelines.models.periods import Periods
from cyber_pipelines.models.promotion import DEFAULT_ALPHA, DEFAULT_MARGIN, Decision, decide, diebold_mariano
from cyber_pipelines.models.references import compare
from cyber_pipelines.models.samples import Samples, build_samples, concat
from cyber_pipelines.models.store import ModelStore

PROBE_TOLERANCE = 1e-5


@dataclass(frozen=True)
class ModelSettings:
    length: int = 24  # bars in a sample's window
    horizon: int = 1  # hours ahead
    width: int = 1024
    depth: int = 1
    dropout: float = 0.0
    base: TrainSettings = field(default_factory=lambda: TrainSettings(learning_rate=3e-4))
    adapter: lora.AdapterSettings = field(default_factory=lora.AdapterSettings)
    adapter_training: TrainSettings = field(default_factory=lambda: TrainSettings(learning_rate=1e-3, weight_decay=0.0))
    validation_days: int = 30
    margin: float = DEFAULT_MARGIN
    alpha: float = DEFAULT_ALPHA

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def base_name(source: str) -> str:
    return f"base_forecaster-{source}"


def adapter_store_name(source: str, pair_key: str) -> str:
    return f"adapter-{source}-{pair_key}"


def pair_samples(candles: pl.DataFrame, pair: str, settings: ModelSettings) -> Samples:
    return build_samples(candles, pair, settings.length, settings.horizon)


def first_bar(candles: pl.DataFrame) -> datetime:
    first = candles["timestamp"].min()
    if not isinstance(first, datetime):
        raise ValueError("candles without timestamps")
    return first.replace(tzinfo=None)


# ------------------------------------------------------------------------------------------------------ base


def fit_base(samples: list[Samples], when: Periods, settings: ModelSettings) -> tuple[Forecaster, TrainingReport]:
    train = concat([s.known_by(when.validation_start) for s in samples])
    return train_base(train, settings.width, settings.depth, settings.base, settings.dropout)


def probe(model: torch.nn.Module, samples: Samples) -> dict[str, list[float]]:
    row = samples.x[:1]
    return {"input": row[0].tolist(), "output": predict(model, row)[0].tolist()}


Predictor = Callable[[np.ndarray], np.ndarray]  # inputs -> (n, 2): standardized return and log variance


def forecasts(model: torch.nn.Module | Predictor, samples: Samples) -> tuple[np.ndarray, np.ndarray]:
    """Standardized (return, variance) forecasts of a model (or a predictor function) on ``samples``."""
    out = predict(model, samples.x) if isinstance(model, torch.nn.Module) else model(samples.x)
    return out[:, 0], np.exp(np.clip(out[:, 1], -12.0, 12.0))


def held_out_table(
    models: dict[str, torch.nn.Module | Predictor],
    candles: pl.DataFrame,
    samples: Samples,
    start: datetime,
    end: datetime,
    train_end: datetime,
) -> pl.DataFrame:
    """Losses of ``models`` and the references on ``samples`` made in [start, end) (references fitted by
    ``train_end``)."""
    evaluate = samples.between(start, end)
    if len(evaluate) < 30:
        raise ValueError(f"{samples.pair}: {len(evaluate)} held-out samples between {start} and {end} (need 30)")
    train = samples.known_by(train_end)
    return compare({name: forecasts(m, evaluate) for name, m in models.items()}, candles, train, train_end, evaluate)


# --------------------------------------------------------------------------------------------------- adapters


@dataclass
class AdapterOutcome:
    model: Any  # peft.PeftModel
    report: TrainingReport
    decision: Decision
    trainable: int
    base_parameters: int
    validation: pl.DataFrame  # losses on the promotion period: base, adapter, references
    n_train: int


def fit_adapter(
    base: Forecaster, candles: pl.DataFrame, samples: Samples, when: Periods, settings: ModelSettings
) -> AdapterOutcome:
    """Train the pair's adapter on what was known by the promotion period, then test it there against the base."""
    train = samples.known_by(when.validation_start)
    model, report = lora.train_adapter(base, train, settings.adapter, settings.adapter_training)
    held_out = samples.between(when.validation_start, when.cutoff)
    if len(held_out) < 30:
        raise ValueError(f"{samples.pair}: {len(held_out)} samples in the promotion period (need 30)")
    if held_out.timestamp.min() + np.timedelta64(3600, "s") < train.outcome_end.max():  # its first target bar
        raise ValueError(f"{samples.pair}: the promotion period overlaps the adapter's training samples")
    base_loss, adapter_loss = target_losses(base, held_out), target_losses(model, held_out)
    tests = {t: diebold_mariano(base_loss[t], adapter_loss[t], settings.horizon, settings.alpha) for t in TARGETS}
    decision = decide(tests, settings.margin, settings.alpha)
    validation = held_out_table(
        {"base": base, "adapter": model}, candles, samples, when.validation_start, when.cutoff, when.validation_start
    )
    return AdapterOutcome(
        model=model, report=report, decision=decision, trainable=lora.trainable_parameters(model),
        base_parameters=parameter_count(base), validation=validation, n_train=len(train),
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------- storage


def save_base(
    store: ModelStore, source: str, version: str, model: Forecaster, config: dict[str, Any], probe_samples: Samples
) -> None:
    full = {"architecture": model.architecture(), "probe": probe(model, probe_samples), **config}
    store.save(base_name(source), version, dict(model.state_dict()), full)


def load_base(store: ModelStore, source: str, version: str | None = None) -> tuple[Forecaster, dict[str, Any], str]:
    tensors, config, found = store.load(base_name(source), version)
    return load_forecaster(tensors, config["architecture"]), config, found


def load_adapter(store: ModelStore, source: str, pair_key: str) -> tuple[dict[str, torch.Tensor], dict[str, Any], str]:
    return store.load(adapter_store_name(source, pair_key))


def verify(tensors: dict[str, torch.Tensor], config: dict[str, Any], base: Forecaster | None = None) -> list[str]:
    """What is wrong with a stored model (empty: nothing): finite weights, a config that loads, the probe reproduced.

    ``base`` given: the tensors are an adapter of it (its LoRA config from ``config['lora']``)."""
    problems = [f"tensor {name} has non-finite values" for name, t in tensors.items() if not torch.isfinite(t).all()]
    try:
        if base is None:
            model: torch.nn.Module = load_forecaster(tensors, config["architecture"])
        else:
            server = lora.AdapterServer(load_forecaster_copy(base))  # adding an adapter changes the module it wraps
            server.add("probe", tensors, config["lora"])
            model = server.model  # type: ignore[assignment]
        row = np.asarray([config["probe"]["input"]], dtype=np.float32)
        got = predict(model, row)[0]
        want = np.asarray(config["probe"]["output"], dtype=np.float64)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        return [*problems, f"the model does not load from its config: {exc}"]
    if got.shape != want.shape or not np.all(np.isfinite(got)):
        return [*problems, f"the probe's output is {got.tolist()}, recorded {want.tolist()}"]
    worst = float(np.max(np.abs(got - want)))
    if not math.isfinite(worst) or worst > PROBE_TOLERANCE:
        problems.append(f"the probe's output differs from the recorded one by {worst:.3g} (> {PROBE_TOLERANCE})")
    return problems


# ---------------------------------------------------------------------------------------------------- serving


@dataclass(frozen=True)
class Serving:
    """Which model serves a pair, and why."""

    pair_key: str
    model: str  # "adapter" or "base"
    base_version: str | None
    adapter_version: str | None
    reason: str
    decision: dict[str, Any] | None = None  # the promotion decision of the pair's latest adapter
    stale: bool = False  # the pair's latest adapter was trained on another base than the latest

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def serving(store: ModelStore, source: str, pair_key: str) -> Serving:
    """The adapter serves when the pair's latest adapter was promoted against the latest base; else the base."""
    base_version = store.latest(base_name(source))
    if base_version is None:
        return Serving(pair_key, "none", None, None, "no base forecaster trained yet")
    adapter_version = store.latest(adapter_store_name(source, pair_key))
    if adapter_version is None:
        return Serving(pair_key, "base", base_version, None, "no adapter trained for this pair")
    _, config, _ = store.load(adapter_store_name(source, pair_key), adapter_version)
    decision = config.get("promotion") or {}
    if config.get("base_version") != base_version:
        reason = f"its adapter {adapter_version} was trained on base {config.get('base_version')}, not the latest"
        return Serving(pair_key, "base", base_version, adapter_version, reason, decision, stale=True)
    if not decision.get("serves"):
        return Serving(pair_key, "base", base_version, adapter_version, str(decision.get("reason")), decision)
    return Serving(pair_key, "adapter", base_version, adapter_version, str(decision.get("reason")), decision)


def served_columns(chosen: Serving) -> list[int]:
    """The output columns (0 return, 1 log variance) the pair's adapter serves."""
    serves = (chosen.decision or {}).get("serves") or []
    return [TARGETS.index(t) for t in serves] if chosen.model == "adapter" else []


def status(store: ModelStore, source: str) -> dict[str, Any]:
    """The base of ``source`` and, per pair it was trained on (or with an adapter), which model serves and why."""
    version = store.latest(base_name(source))
    if version is None:
        raise FileNotFoundError(f"no base forecaster for {source} in {store.root}: materialize base_forecaster")
    _, config, _ = store.load(base_name(source), version)
    prefix = f"adapter-{source}-"
    adapted = [name[len(prefix) :] for name in store.names(prefix)]
    keys = sorted({*(pair.replace("/", "-") for pair in config.get("pairs", [])), *adapted})
    rows = []
    for key in keys:
        chosen = serving(store, source, key)
        tests = (chosen.decision or {}).get("tests") or {}
        rows.append({
            **chosen.as_dict(),
            "pair": key.replace("-", "/", 1),
            **{f"{t}_improvement": tests.get(t, {}).get("improvement") for t in TARGETS},
            **{f"{t}_p_adjusted": tests.get(t, {}).get("p_adjusted") for t in TARGETS},
        })  # fmt: skip
    return {"source": source, "base_version": version, "periods": config.get("periods"), "pairs": rows}


def load_forecaster_copy(base: Forecaster) -> Forecaster:
    """A fresh copy of ``base`` (a server wraps and changes the module it is given)."""
    return copy.deepcopy(base)
