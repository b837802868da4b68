"""The Dagster instance the CLI and the demo use: the same one `make ui` serves."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import dagster as dg

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def dagster_home() -> Path:
    """``DAGSTER_HOME``, defaulting to ``./.dagster_home``; seeded with the project's dagster.yaml."""
    home = Path(os.environ.get("DAGSTER_HOME") or Path.cwd() / ".dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    template = PROJECT_ROOT / "dagster.yaml"
    target = home / "dagster.yaml"
    if template.exists() and not target.exists():
        shutil.copyfile(template, target)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def get_instance() -> dg.DagsterInstance:
    dagster_home()
    return dg.DagsterInstance.get()
