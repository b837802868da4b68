"""Zombie runs: runs recorded as started whose process is gone.

A run launched on this machine (Dagster's default run launcher, or the CLI) records the pid of the
process that executes its steps in its first engine event. When that process no longer exists, or the
pid now belongs to a process that started after the run did (the pid was reused), the run can never
finish: it is a zombie, and the caller marks it failed with the reason. A run whose process is alive is
never called a zombie, however quiet it is (long steps are legitimate).
"""

from __future__ import annotations

from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class RunProcess:
    run_id: str
    pid: int | None  # None: no engine event with a pid yet
    started_at: float  # epoch seconds the run started
    last_event_at: float  # epoch seconds of its latest event


def process_started(pid: int) -> float | None:
    """Epoch seconds at which process ``pid`` started, None when there is no such process."""
    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:
        return 0.0  # it exists (someone else's): treat as alive and old


def zombie_reason(run: RunProcess, now: float, heartbeat_s: float) -> str | None:
    """Why ``run`` is a zombie, or None when it may still finish.

    No pid yet: a zombie only after ``heartbeat_s`` without any event (a launch that never got going).
    """
    silent = now - run.last_event_at
    if run.pid is None:
        if silent > heartbeat_s:
            return f"run {run.run_id} started but recorded no process and no event for {silent / 60:.0f} min"
        return None
    started = process_started(run.pid)
    if started is None:
        return f"run {run.run_id}: its process (pid {run.pid}) is gone; last event {silent / 60:.0f} min ago"
    if started > run.started_at + 1.0:
        return f"run {run.run_id}: pid {run.pid} now belongs to a newer process; last event {silent / 60:.0f} min ago"
    return None
