"""The Dagster instance the CLI uses, and self-contained homes (the demo's) with their own instance and data.

Without a home, the CLI works on ``DAGSTER_HOME`` (default ``./.dagster_home``) and ``CYBER_DATA_DIR``
(default ``./data``). A home folder holds all of one setup: ``dagster_home/`` (the instance),
``data/`` (the storage root, landing folder under ``data/inbox``) and, when present, ``pipeline.yaml``
(the pipeline config). ``use_home`` points the environment at it, so the code server and the runs it
launches (subprocesses that inherit the environment) and ``dagster dev`` all see the same instance,
data and config.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import dagster as dg

PROJECT_ROOT = Path(__file__).resolve().parents[1]
HOME_MARKER = ".cyber-pipelines-home"  # written into every home this module made


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


# Pools that need a limit of their own (dagster.yaml's default_limit covers the rest): the embedded vector
# store takes one process at a time. Set on an instance where the pool has no limit yet.
POOL_LIMITS = {"vector_store": 1}


def ensure_pool_limits(instance: dg.DagsterInstance) -> None:
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return
    limited = {pool.name for pool in storage.get_pool_limits() if not pool.from_default}
    for pool, limit in POOL_LIMITS.items():
        if pool not in limited:
            storage.set_concurrency_slots(pool, limit)


def get_instance() -> dg.DagsterInstance:
    dagster_home()
    instance = dg.DagsterInstance.get()
    ensure_pool_limits(instance)
    return instance


def home_environment(home: Path) -> dict[str, str]:
    """The variables that make everything use ``home``: instance, storage root, landing folder, config."""
    home = Path(home).resolve()
    env = {
        "DAGSTER_HOME": str(home / "dagster_home"),
        "CYBER_DATA_DIR": str(home / "data"),
        "CYBER_LANDING_DIR": str(home / "data" / "inbox"),
    }
    if (home / "pipeline.yaml").exists():
        env["CYBER_CONFIG"] = str(home / "pipeline.yaml")
    return env


def use_home(home: Path) -> dict[str, str]:
    """Point this process (and the processes it starts) at ``home``; return the variables set."""
    env = home_environment(home)
    os.environ.update(env)
    dagster_home()
    return env


def is_home(folder: Path) -> bool:
    return (Path(folder) / HOME_MARKER).is_file()


def fresh_home(folder: Path) -> Path:
    """Empty ``folder`` for a new home: only a folder this module made (or an empty one) is wiped."""
    folder = Path(folder).resolve()
    if folder.exists():
        if not folder.is_dir():
            raise ValueError(f"{folder} is not a folder")
        if any(folder.iterdir()) and not is_home(folder):
            raise ValueError(
                f"{folder} is not empty and is not a cyber-pipelines home (no {HOME_MARKER}); "
                "choose another folder or remove it yourself"
            )
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / HOME_MARKER).write_text("made by cyber-pipelines; `cyber-pipelines demo` may wipe this folder\n")
    return folder
