"""Distributed execution on Celery (dagster-celery): two worker processes share the steps of one run.

The job below uses ``dagster_celery.celery_executor``: the run's orchestration (here, in the test process)
puts each step on the broker as a task, and whichever worker takes it loads the job from the run's origin
(this module, importable on the workers' PYTHONPATH) and the instance from the reference in the task, runs
the step, and writes its events to the shared instance (PostgreSQL, a throwaway database). The project's
own jobs keep their executor; in local-prod whole runs are Celery tasks (docker/local-prod/dagster.yaml).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster_celery import celery_executor
from test_local_prod import PG_SERVER, clear_redis, empty_redis_db, postgres_or_skip

from cyber_pipelines import localprod

STEPS = ("north", "south", "east", "west")
SLEEP_S = 2.0  # long enough that a busy worker leaves the next steps to the other one


@dg.op
def where() -> dict[str, object]:
    """Say which process on which machine ran this step."""
    time.sleep(SLEEP_S)
    return {"host": socket.gethostname(), "pid": os.getpid()}


@dg.job(executor_def=celery_executor, description="Four independent steps, each on whichever Celery worker is free.")
def spread() -> None:
    for name in STEPS:
        where.alias(name)()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[tuple[str, list[subprocess.Popen[bytes]]]]:
    """Two Celery workers (``celery -A dagster_celery.app worker``, as local-prod starts them) on an empty Redis DB.

    The instance (this test's DAGSTER_HOME, shared with the workers) stores in a throwaway PostgreSQL database.
    """
    postgres_or_skip()
    broker = empty_redis_db()
    database = f"{PG_SERVER}/cyber_test_{uuid.uuid4().hex[:10]}"
    localprod.ensure_database(database)
    home = Path(os.environ["DAGSTER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    storage = f"storage:\n  postgres:\n    postgres_url: {localprod.sqlalchemy_url(database)}\n"
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n" + storage)
    config = tmp_path / "celery"
    config.mkdir()
    (config / "dagster_celery_config.py").write_text(localprod.CELERY_CONFIG)
    tests = Path(__file__).resolve().parent  # the job's module, for the workers to import
    env = {
        **os.environ,
        "CYBER_CELERY_BROKER": broker,
        "CYBER_CELERY_BACKEND": broker,
        "PYTHONPATH": os.pathsep.join([str(config), str(tests), os.environ.get("PYTHONPATH", "")]),
    }
    celery = str(Path(sys.executable).with_name("celery"))
    names = [f"celerytest{i}@{socket.gethostname()}" for i in (1, 2)]
    started = [
        subprocess.Popen(
            [celery, "-A", "dagster_celery.app", "worker", "-Q", "dagster", "-n", name, *localprod.WORKER_ARGS],
            env=env,
            stdout=(tmp_path / f"worker{i}.log").open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        for i, name in enumerate(names, start=1)
    ]
    try:
        settings = localprod.Settings(tmp_path, 0, 0, database, broker, broker, len(names))
        deadline = time.monotonic() + 180
        while not localprod.workers_answer(settings, names):
            assert all(p.poll() is None for p in started), (tmp_path / "worker1.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the Celery workers did not answer a ping within 180 s"
            time.sleep(1)
        yield broker, started
    finally:
        for process in started:
            os.killpg(process.pid, signal.SIGTERM)
        for process in started:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        clear_redis(broker)
        localprod.drop_database(database)
        assert not any(localprod.group_members(p.pid) for p in started)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Task name 'execute_plan' is already registered")  # dagster-celery, per step
def test_two_celery_workers_share_the_steps_of_one_run(
    workers: tuple[str, list[subprocess.Popen[bytes]]],
) -> None:
    broker, started = workers
    run_config = {"execution": {"config": {"broker": broker, "backend": broker}}}
    began = time.monotonic()
    job = dg.reconstructable(spread)  # the workers load it from this module, by name
    with (
        dg.DagsterInstance.get() as instance,
        dg.execute_job(job, instance=instance, run_config=run_config) as result,
    ):
        assert result.success, [e.message for e in result.all_events if e.is_failure]
        ran = {name: result.output_for_node(name) for name in STEPS}
        engine = [e.message or "" for e in result.all_events if e.event_type_value == "ENGINE_EVENT"]
    elapsed = time.monotonic() - began
    worker_pids = {p.pid for p in started}
    pids = {step["pid"] for step in ran.values()}
    assert pids == worker_pids, f"steps ran in {ran}, workers are {worker_pids}"  # both workers, nothing else
    assert {step["host"] for step in ran.values()} == {socket.gethostname()}
    assert sum("in celery worker" in message for message in engine) == len(STEPS)
    per_worker = {pid: sorted(n for n, s in ran.items() if s["pid"] == pid) for pid in worker_pids}
    print(f"\ncelery: {len(STEPS)} steps of {SLEEP_S:.0f} s in {elapsed:.1f} s, per worker pid {per_worker}")
