"""The base forecaster: an MLP from a window of bars (``models.samples``) to the next horizon's return and variance.

Outputs, in the samples' standardized units: the expected return ``mu`` and the log variance. The loss
of a sample is the return's squared error plus the variance's QLIKE (``log h + y / h``, Patton 2011:
robust to the noise of a realized-variance proxy), each a mean over samples. Trained with AdamW,
seeded and deterministic on the CPU, with early stopping on a validation tail (the last share of the
training samples in time), keeping the best epoch's weights. The hidden layers are named ``hidden.<i>``:
the LoRA adapters (``models.adapters``) attach to them.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from cyber_pipelines.models.samples import Samples


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 30
    batch_size: int = 256
    learning_rate: float = 1e-4
    weight_decay: float = 1e-2
    validation_share: float = 0.2
    patience: int = 5  # epochs without a better validation loss before stopping
    huber: float | None = 2.0  # the training loss's return error is Huber's beyond this (None: squared)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1 or self.learning_rate <= 0:
            raise ValueError(f"need epochs, batch_size, patience >= 1 and learning_rate > 0, got {self}")
        if not 0 < self.validation_share < 0.5:
            raise ValueError(f"validation_share must be in (0, 0.5), got {self.validation_share}")


class Forecaster(nn.Module):
    """input -> hidden (GELU) -> ... -> (mu, log variance), plus a linear path from the input (``skip``);
    ``depth`` hidden-to-hidden layers named hidden.<i>."""

    def __init__(self, input_dim: int, width: int = 1024, depth: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.input_dim, self.width, self.depth, self.dropout = input_dim, width, depth, dropout
        self.drop = nn.Dropout(dropout)
        self.inp = nn.Linear(input_dim, width)
        self.hidden = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        self.head = nn.Linear(width, 2)
        self.skip = nn.Linear(input_dim, 2)  # a linear path: linear dynamics (an AR term) are learned at once
        for layer in (self.head, self.skip):  # start at the prior: no expected return, unit standardized variance
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop(self.act(self.inp(x)))
        for layer in self.hidden:
            h = self.drop(self.act(layer(h)))
        return self.head(h) + self.skip(x)

    def architecture(self) -> dict[str, float]:
        return {"input_dim": self.input_dim, "width": self.width, "depth": self.depth, "dropout": self.dropout}


def parameter_count(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def sample_losses(
    output: torch.Tensor, ret: torch.Tensor, var: torch.Tensor, huber: float | None = None
) -> torch.Tensor:
    """Per-sample loss: squared return error + QLIKE of the variance (n,). With ``huber`` (training), the
    return's error is Huber's beyond that many standardized units (fat tails: a jump does not dominate)."""
    mu, log_var = output[:, 0], output[:, 1].clamp(-12.0, 12.0)
    if huber is None:
        return_loss = (ret - mu) ** 2
    else:  # twice Huber's loss: equal to the squared error inside delta
        return_loss = 2 * nn.functional.huber_loss(mu, ret, reduction="none", delta=huber)
    return return_loss + log_var + var / torch.exp(log_var)


@dataclass(frozen=True)
class TrainingReport:
    train_loss: list[float]
    validation_loss: list[float]
    best_epoch: int
    n_train: int
    n_validation: int
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)


def deterministic(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    return torch.Generator().manual_seed(seed)


def _tensors(samples: Samples) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return (
        torch.from_numpy(np.ascontiguousarray(samples.x, dtype=np.float32)),
        torch.from_numpy(samples.ret.astype(np.float32)),
        torch.from_numpy(samples.var.astype(np.float32)),
    )


def fit(
    model: nn.Module, samples: Samples, settings: TrainSettings, on_epoch: Callable[[int, float], None] | None = None
) -> TrainingReport:
    """Train ``model``'s trainable parameters on ``samples`` (time order; finite targets), keep the best epoch."""
    if len(samples) == 0 or not (np.isfinite(samples.ret).all() and np.isfinite(samples.var).all()):
        raise ValueError(f"{samples.pair}: training needs samples with known, finite outcomes ({len(samples)} given)")
    n_val = max(1, int(len(samples) * settings.validation_share))
    if len(samples) - n_val < settings.batch_size // 4 or len(samples) - n_val < 50:
        raise ValueError(f"{samples.pair}: {len(samples)} samples are too few to train (need about 100)")
    generator = deterministic(settings.seed)
    x, ret, var = _tensors(samples)
    split = len(samples) - n_val
    train, val = (x[:split], ret[:split], var[:split]), (x[split:], ret[split:], var[split:])
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    began = time.perf_counter()
    train_loss: list[float] = []
    validation_loss: list[float] = []
    best, best_state, best_epoch, stale = float("inf"), copy.deepcopy(model.state_dict()), 0, 0
    for epoch in range(settings.epochs):
        model.train()
        order = torch.randperm(split, generator=generator)
        total = 0.0
        for start in range(0, split, settings.batch_size):
            idx = order[start : start + settings.batch_size]
            optimizer.zero_grad()
            loss = sample_losses(model(train[0][idx]), train[1][idx], train[2][idx], settings.huber).mean()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        train_loss.append(total / split)
        model.eval()
        with torch.no_grad():
            validation_loss.append(float(sample_losses(model(val[0]), val[1], val[2]).mean()))
        if on_epoch is not None:
            on_epoch(epoch, validation_loss[-1])
        if validation_loss[-1] < best - 1e-6:
            best, best_state, best_epoch, stale = validation_loss[-1], copy.deepcopy(model.state_dict()), epoch, 0
        else:
            stale += 1
            if stale >= settings.patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    return TrainingReport(
        train_loss=train_loss,
        validation_loss=validation_loss,
        best_epoch=best_epoch + 1,
        n_train=split,
        n_validation=n_val,
        seconds=time.perf_counter() - began,
        settings=asdict(settings),
    )


def predict(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """(n, 2): expected standardized return and log variance per row."""
    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy().astype(np.float64)


TARGETS = ("return", "variance")  # the output columns, in order


def target_losses(model: nn.Module, samples: Samples) -> dict[str, np.ndarray]:
    """Per-sample held-out losses of each target: the return's squared error and the variance's QLIKE."""
    out = predict(model, samples.x)
    log_var = np.clip(out[:, 1], -12.0, 12.0)
    return {"return": (samples.ret - out[:, 0]) ** 2, "variance": log_var + samples.var / np.exp(log_var)}


def train_base(
    samples: Samples, width: int = 1024, depth: int = 1, settings: TrainSettings | None = None, dropout: float = 0.0
) -> tuple[Forecaster, TrainingReport]:
    """A new ``Forecaster`` trained on ``samples`` (every pair's, before the cutoff)."""
    settings = settings or TrainSettings()
    deterministic(settings.seed)
    model = Forecaster(samples.x.shape[1], width, depth, dropout)
    return model, fit(model, samples, settings)


def load_forecaster(tensors: dict[str, torch.Tensor], architecture: dict[str, float]) -> Forecaster:
    model = Forecaster(
        int(architecture["input_dim"]),
        int(architecture["width"]),
        int(architecture["depth"]),
        float(architecture.get("dropout", 0.0)),
    )
    model.load_state_dict(tensors)
    model.eval()
    return model
