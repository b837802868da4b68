"""The window encoder: a small autoencoder that maps a normalized window to a unit vector of ``dim``.

An MLP (window -> hidden -> ``dim``) is trained with its mirror decoder to reconstruct the window
(mean squared error, AdamW), seeded and deterministic on the CPU. Its embedding is the code,
L2-normalized, so cosine similarity compares shapes. Training is walk-forward: the caller passes only
windows whose outcome was known before the first out-of-sample bar (``training_cutoff``); the last
``validation_share`` of them (in time) is held out for the validation loss.

``pca_basis`` gives the same-dimension linear reference (principal components of the same training
windows), against which the encoder is measured (``patterns.skill``).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from cyber_pipelines.models.forecaster import deterministic

DEFAULT_DIM = 32
MIN_TRAINING_WINDOWS = 100  # a batch is at most the training windows; fewer than this are refused


def encoder_name(source: str) -> str:
    """The model-store name of the encoder of ``source``'s windows (sources never share a model)."""
    return f"pattern_encoder-{source}"


@dataclass(frozen=True)
class EncoderSettings:
    dim: int = DEFAULT_DIM
    hidden: int = 128
    epochs: int = 30
    batch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 1e-5
    validation_share: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.dim < 2 or self.hidden < self.dim or self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"need dim >= 2, hidden >= dim, epochs >= 1 and batch_size >= 1, got {self}")
        if not 0 < self.validation_share < 0.5 or self.learning_rate <= 0:
            raise ValueError(f"need 0 < validation_share < 0.5 and learning_rate > 0, got {self}")


class WindowEncoder(nn.Module):
    def __init__(self, input_dim: int, dim: int = DEFAULT_DIM, hidden: int = 128) -> None:
        super().__init__()
        self.input_dim, self.dim, self.hidden = input_dim, dim, hidden
        self.encoder = nn.Sequential(nn.Linear(input_dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.decoder = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, input_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))

    def architecture(self) -> dict[str, int]:
        return {"input_dim": self.input_dim, "dim": self.dim, "hidden": self.hidden}


@dataclass(frozen=True)
class TrainingReport:
    train_loss: list[float]  # mean reconstruction MSE per epoch
    validation_loss: list[float]
    n_train: int
    n_validation: int
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)


def train_encoder(windows: np.ndarray, settings: EncoderSettings | None = None) -> tuple[WindowEncoder, TrainingReport]:
    """Fit a ``WindowEncoder`` on ``windows`` (rows in time order, float32) and report its losses."""
    settings = settings or EncoderSettings()
    x = np.array(windows, dtype=np.float32)  # a writable copy: torch.from_numpy warns on read-only arrays
    if x.ndim != 2 or not np.all(np.isfinite(x)):
        raise ValueError(f"training windows must be a finite 2-d array, got shape {x.shape}")
    n_val = max(1, int(len(x) * settings.validation_share))
    if len(x) - n_val < MIN_TRAINING_WINDOWS:
        raise ValueError(
            f"{len(x)} training windows are too few: need {MIN_TRAINING_WINDOWS} + the "
            f"{settings.validation_share:.0%} held out"
        )
    batch_size = min(settings.batch_size, len(x) - n_val)
    generator = deterministic(settings.seed)
    began = time.perf_counter()
    model = WindowEncoder(x.shape[1], settings.dim, settings.hidden)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    train, val = torch.from_numpy(x[:-n_val]), torch.from_numpy(x[-n_val:])
    train_loss: list[float] = []
    validation_loss: list[float] = []
    for _ in range(settings.epochs):
        model.train()
        order = torch.randperm(len(train), generator=generator)
        total = 0.0
        for start in range(0, len(train), batch_size):
            batch = train[order[start : start + batch_size]]
            optimizer.zero_grad()
            loss = nn.functional.mse_loss(model(batch), batch)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        train_loss.append(total / len(train))
        model.eval()
        with torch.no_grad():
            validation_loss.append(float(nn.functional.mse_loss(model(val), val)))
    report = TrainingReport(
        train_loss=train_loss,
        validation_loss=validation_loss,
        n_train=len(train),
        n_validation=n_val,
        seconds=time.perf_counter() - began,
        settings=asdict(settings),
    )
    return model.eval(), report


def embed(model: WindowEncoder, windows: np.ndarray, batch: int = 8192) -> np.ndarray:
    """Unit-length embeddings (float32, rows x dim) of ``windows``."""
    x = np.asarray(windows, dtype=np.float32)
    out = np.empty((len(x), model.dim), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, len(x), batch):
            code = model.encoder(torch.tensor(x[start : start + batch]))  # a copy: x may be read-only
            out[start : start + batch] = nn.functional.normalize(code, dim=1).numpy()
    return out


def encoder_tensors(model: WindowEncoder) -> dict[str, torch.Tensor]:
    return dict(model.state_dict())


def load_encoder(tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> WindowEncoder:
    """Rebuild an encoder from its safetensors weights and JSON config (strict: every weight must fit)."""
    arch = config.get("architecture") or {}
    try:
        model = WindowEncoder(int(arch["input_dim"]), int(arch["dim"]), int(arch["hidden"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"encoder config lacks a valid architecture (input_dim, dim, hidden): {arch!r}") from exc
    model.load_state_dict(tensors, strict=True)
    return model.eval()


def pca_basis(windows: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, components dim x input) of the training windows: the linear reference of the same dimension."""
    x = np.asarray(windows, dtype=np.float64)
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    return mean, vt[:dim]


def pca_embed(windows: np.ndarray, basis: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    mean, components = basis
    code = (np.asarray(windows, dtype=np.float64) - mean) @ components.T
    norm = np.linalg.norm(code, axis=1, keepdims=True)
    return (code / np.maximum(norm, 1e-12)).astype(np.float32)


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (the plain window under cosine similarity)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def final_loss(losses: list[float]) -> float:
    return losses[-1] if losses else math.nan
