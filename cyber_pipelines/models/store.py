"""A folder of versioned models: ``<root>/<name>/<version>/{model.safetensors, config.json}``.

Weights are safetensors and the config JSON: loading never unpickles anything. The version is the id of the
run that made the model (and its partition, where it has one). ``<name>/LATEST`` names the newest version
and is written last, so a reader that follows it never sees a half-written model and a failed save leaves
the previous one in force.

The root is a local folder (default) or an fsspec URL (``s3://bucket/models``, ``memory://`` in tests;
universal-pathlib). Locally a version is written into a hidden temp folder and renamed into place, and
``LATEST`` is replaced atomically; on object storage, where there is no rename, each file is one
whole-object write (``storage.put_object``: readers see the old object or the new one, never part) and
``LATEST`` is written after both files of its version, so a failed save leaves the previous pointer in
force. Objects are read whole (``storage.get_object``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load, save

from cyber_pipelines.storage import StoragePath, as_path, get_object, is_remote, put_object, write_text_atomic

if TYPE_CHECKING:
    from upath import UPath

WEIGHTS, CONFIG, LATEST = "model.safetensors", "config.json", "LATEST"
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=-]{0,127}$")


def _check(kind: str, value: str) -> str:
    if not _SAFE.match(value):
        raise ValueError(f"unsafe model {kind} {value!r}: letters, digits and _ . = - only")
    return value


class ModelStore:
    def __init__(self, root: str | os.PathLike[str] | UPath) -> None:
        self.root: StoragePath = as_path(root)
        self.local = not is_remote(self.root)

    def folder(self, name: str, version: str) -> StoragePath:
        return self.root / _check("name", name) / _check("version", version)

    def save(self, name: str, version: str, tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> StoragePath:
        """Write one version and make it the latest; returns its folder."""
        weights = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
        text = json.dumps(config, indent=2, sort_keys=True, default=str)
        target = self.folder(name, version)
        if is_remote(target):
            put_object(target / WEIGHTS, weights)  # the data objects first ...
            put_object(target / CONFIG, text.encode())
            put_object(target.parent / LATEST, f"{version}\n".encode())  # ... the pointer last
            return target
        target = Path(str(target))
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=target.parent))
        try:
            (staging / WEIGHTS).write_bytes(weights)
            (staging / CONFIG).write_text(text)
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

    def names(self, prefix: str = "") -> list[str]:
        """The model names in the store that start with ``prefix``."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and p.name.startswith(prefix))

    def load(self, name: str, version: str | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any], str]:
        """(tensors, config, version) of ``version`` or of the latest; FileNotFoundError naming the path."""
        version = version or self.latest(name)
        if version is None:
            raise FileNotFoundError(f"no model {name!r} in {self.root}: train it first")
        folder = self.folder(name, version)
        if not (folder / WEIGHTS).exists() or not (folder / CONFIG).exists():
            raise FileNotFoundError(f"model {name!r} version {version!r} is incomplete or missing at {folder}")
        weights, config = folder / WEIGHTS, folder / CONFIG
        if is_remote(weights) and is_remote(config):
            return load(get_object(weights)), json.loads(get_object(config)), version
        return load(weights.read_bytes()), json.loads(config.read_text()), version
