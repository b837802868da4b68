"""LoRA adapters of the base forecaster (peft), one per pair, trained with the base frozen, and their serving.

``train_adapter`` wraps a copy of the base in a peft LoRA model (rank, alpha and target modules from
``AdapterSettings``; by default every ``hidden.<i>`` layer) and trains only the low-rank matrices on one
pair's samples. ``adapter_tensors`` / ``adapter_config`` are what the model store keeps (safetensors and
JSON; never pickle). ``AdapterServer`` loads the base once, adds each pair's adapter under its own name and
switches between them with ``set_adapter``; a pair without a promoted adapter is served by the base.
``train_full`` fine-tunes every weight of a copy of the base on the same samples: the reference an
adapter's held-out gain is measured against.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

from cyber_pipelines.models.forecaster import Forecaster, TrainingReport, TrainSettings, deterministic, fit, predict
from cyber_pipelines.models.samples import Samples


@dataclass(frozen=True)
class AdapterSettings:
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ()  # empty: every hidden.<i> layer of the base
    train_head: bool = True  # the adapter also trains its own copies of the output layers (head and skip, small)

    def __post_init__(self) -> None:
        if self.rank < 1 or self.alpha < 1 or not 0 <= self.dropout < 1:
            raise ValueError(f"need rank >= 1, alpha >= 1 and dropout in [0, 1), got {self}")

    def targets(self, base: Forecaster) -> list[str]:
        names = [f"hidden.{i}" for i in range(base.depth)]
        chosen = list(self.target_modules) or names
        known = {name for name, module in base.named_modules() if isinstance(module, torch.nn.Linear)}
        unknown = [t for t in chosen if t not in known]
        if unknown:
            raise ValueError(f"LoRA target modules {unknown} are not linear layers of the base ({sorted(known)})")
        return chosen

    def lora_config(self, base: Forecaster) -> LoraConfig:
        return self.peft_config(self.targets(base))

    def peft_config(self, targets: list[str]) -> LoraConfig:
        return LoraConfig(
            r=self.rank, lora_alpha=self.alpha, lora_dropout=self.dropout, target_modules=targets, bias="none",
            modules_to_save=["head", "skip"] if self.train_head else None,
        )  # fmt: skip


def adapter_name(pair_key: str) -> str:
    """peft's name of a pair's adapter (a module name: no dots)."""
    return pair_key.replace(".", "_")


def attach(base: Forecaster, settings: AdapterSettings, name: str = "default") -> PeftModel:
    """A LoRA-wrapped copy of ``base`` whose only trainable parameters are the adapter's."""
    model = get_peft_model(copy.deepcopy(base), settings.lora_config(base), adapter_name=name)
    return model


def train_adapter(
    base: Forecaster, samples: Samples, settings: AdapterSettings, train: TrainSettings
) -> tuple[PeftModel, TrainingReport]:
    deterministic(train.seed)
    model = attach(base, settings)
    return model, fit(model, samples, train)


def train_full(base: Forecaster, samples: Samples, train: TrainSettings) -> tuple[Forecaster, TrainingReport]:
    """Full fine-tuning of a copy of ``base`` on ``samples`` (the reference for an adapter's gain)."""
    deterministic(train.seed)
    model = copy.deepcopy(base)
    for p in model.parameters():
        p.requires_grad_(True)
    return model, fit(model, samples, train)


def trainable_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def adapter_tensors(model: PeftModel, name: str = "default") -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(model, adapter_name=name).items()}


def adapter_config(settings: AdapterSettings, base: Forecaster) -> dict[str, Any]:
    return {**asdict(settings), "target_modules": settings.targets(base)}


def settings_from_config(config: dict[str, Any]) -> AdapterSettings:
    return AdapterSettings(
        rank=int(config["rank"]), alpha=int(config["alpha"]), dropout=float(config["dropout"]),
        target_modules=tuple(config["target_modules"]), train_head=bool(config["train_head"]),
    )  # fmt: skip


class AdapterServer:
    """The base loaded once; each pair's adapter added under its own name; ``predict(pair, x)`` switches to it
    (``set_adapter``) for the outputs it serves and takes the others from the base (``disable_adapter``)."""

    def __init__(self, base: Forecaster) -> None:
        self.base = base
        self.model: PeftModel | None = None
        self.names: set[str] = set()
        self.serves: dict[str, list[int]] = {}

    def add(
        self, pair_key: str, tensors: dict[str, torch.Tensor], config: dict[str, Any], serves: Iterable[int] = (0, 1)
    ) -> None:
        """Add ``pair_key``'s adapter; it serves the output columns ``serves`` (0 return, 1 log variance), the
        base the others."""
        name = adapter_name(pair_key)
        # the stored targets (checked when the adapter was trained): the wrapped base no longer has plain layers
        lora = settings_from_config(config).peft_config(list(config["target_modules"]))
        if self.model is None:
            self.model = get_peft_model(self.base, lora, adapter_name=name)
        else:
            self.model.add_adapter(name, lora)
        result = set_peft_model_state_dict(self.model, tensors, adapter_name=name)
        missing = [k for k in getattr(result, "missing_keys", []) if "lora_" in k and f".{name}." in k]
        unexpected = list(getattr(result, "unexpected_keys", []))
        if missing or unexpected:
            raise ValueError(
                f"adapter of {pair_key}: tensors do not fit the base "
                f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
        self.names.add(name)
        self.serves[name] = sorted(set(serves))
        self.model.eval()

    def predict(self, pair_key: str, x: np.ndarray) -> np.ndarray:
        """(n, 2) forecasts of ``pair_key``: its adapter's if it has one here, else the base's."""
        name = adapter_name(pair_key)
        if self.model is None:
            return predict(self.base, x)
        served = self.serves.get(name, [])
        if served:
            self.model.set_adapter(name)
            out = predict(self.model, x)
            if len(served) == out.shape[1]:
                return out
        with self.model.disable_adapter():
            base = predict(self.model, x)
        if served:
            base[:, served] = out[:, served]
        return base

    def pairs(self) -> Iterable[str]:
        return sorted(self.names)
