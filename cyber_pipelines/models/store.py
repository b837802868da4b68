"""A folder of versioned models: ``<root>/<name>/<version>/{model.safetensors, config.json}``.

Weights are safetensors and the config JSON: loading never unpickles anything. A version is written
into a hidden temp folder and renamed into place, then ``<name>/LATEST`` names it (also written
atomically), so a reader never sees a half-written model and a failed save leaves the previous one.
The version is the id of the run that made the model (and its partition, where it has one).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from cyber_pipelines.storage import write_text_atomic

WEIGHTS, CONFIG, LATEST = "model.safetensors", "config.json", "LATEST"
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=-]{0,127}$")


def _check(kind: str, value: str) -> str:
    if not _SAFE.match(value):
        raise ValueError(f"unsafe model {kind} {value!r}: letters, digits and _ . = - only")
    return value


class ModelStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def folder(self, name: str, version: str) -> Path:
        return self.root / _check("name", name) / _check("version", version)

    def save(self, name: str, version: str, tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> Path:
        """Write one version and make it the latest; returns its folder."""
        target = self.folder(name, version)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=target.parent))
        try:
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(staging / WEIGHTS))
            (staging / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True, default=str))
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        write_text_atomic(version + "\n", target.parent / LATEST)
        return target

    def latest(self, name: str) -> str | None:
        pointer = self.root / _check("name", name) / LATEST
        return pointer.read_text().strip() if pointer.exists() else None

    def versions(self, name: str) -> list[str]:
        folder = self.root / _check("name", name)
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))

    def load(self, name: str, version: str | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any], str]:
        """(tensors, config, version) of ``version`` or of the latest; FileNotFoundError naming the path."""
        version = version or self.latest(name)
        if version is None:
            raise FileNotFoundError(f"no model {name!r} in {self.root}: train it first")
        folder = self.folder(name, version)
        if not (folder / WEIGHTS).exists() or not (folder / CONFIG).exists():
            raise FileNotFoundError(f"model {name!r} version {version!r} is incomplete or missing at {folder}")
        return load_file(str(folder / WEIGHTS)), json.loads((folder / CONFIG).read_text()), version
