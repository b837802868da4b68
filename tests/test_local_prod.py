"""`make local-prod` for real: PostgreSQL storage, Celery workers on Redis, gRPC code server, daemon, webserver.

The slow test starts the whole configuration on free ports, with a throwaway PostgreSQL database and an
empty Redis database (never a user's), launches a partitioned backfill of the market ingest through the
webserver's GraphQL API, waits for it, reads the runs and their events back from PostgreSQL, stops, and
checks that nothing it started is left. The other tests need no services.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from cyber_pipelines import localprod
from cyber_pipelines.localprod import Started, graphql

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PG_SERVER = os.environ.get("CYBER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
REDIS_SERVER = os.environ.get("CYBER_TEST_REDIS", "redis://127.0.0.1:6379")
REPO = {"repositoryLocationName": "cyber_pipelines", "repositoryName": "__repository__"}
PARTITIONS = ["2024-01-01|BTC-USD", "2024-01-01|ETH-USD"]  # two pair-months, synthetic source
BACKFILL_TIMEOUT_S = 300.0


# -- helpers shared with test_celery ---------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def postgres_or_skip() -> None:
    import psycopg2

    try:
        psycopg2.connect(f"{PG_SERVER}/postgres", connect_timeout=3).close()
    except psycopg2.OperationalError as exc:
        pytest.skip(f"no PostgreSQL at {PG_SERVER}: {' '.join(str(exc).split())}")


def empty_redis_db() -> str:
    """The URL of an empty Redis database (1-15, picked at random), or skip without a Redis server."""
    import redis

    try:
        redis.Redis.from_url(f"{REDIS_SERVER}/0", socket_timeout=3).ping()
    except redis.RedisError as exc:
        pytest.skip(f"no Redis at {REDIS_SERVER}: {exc}")
    candidates = list(range(1, 16))
    random.shuffle(candidates)
    for db in candidates:
        if redis.Redis.from_url(f"{REDIS_SERVER}/{db}").dbsize() == 0:
            return f"{REDIS_SERVER}/{db}"
    pytest.skip("no empty Redis database to use")


def clear_redis(url: str) -> None:
    """Delete what Celery left in the database that empty_redis_db found empty (queues, results, bindings)."""
    import redis

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture
def throwaway_database() -> Iterator[str]:
    postgres_or_skip()
    url = f"{PG_SERVER}/cyber_test_{uuid.uuid4().hex[:10]}"
    yield url
    localprod.drop_database(url)


# -- no services needed ------------------------------------------------------------------------------
def _run_localprod(*args: str, env: dict[str, str], timeout: float = 420) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "cyber_pipelines.localprod", *args]
    return subprocess.run(command, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=timeout)


def test_a_taken_port_is_one_line_and_starts_nothing(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "CYBER_LOCAL_PROD_DIR": str(tmp_path / "lp"), "CYBER_GRPC_PORT": str(free_port())}
        result = _run_localprod("start", "--port", str(port), env=env, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert f"port {port} on 127.0.0.1 (webserver) is taken; nothing was started" in result.stderr
    assert not (tmp_path / "lp" / "pids.json").exists()


def test_stop_never_signals_a_pid_that_runs_another_command(tmp_path: Path) -> None:
    """A recorded pid now running something else (pid reuse) is left alone; the pid file goes."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        info = psutil.Process(other.pid)
        settings = dataclasses.replace(localprod.Settings.from_env(port=free_port()), root=tmp_path)
        record = Started("daemon", other.pid, ["dagster-daemon", "run"], info.create_time(), str(tmp_path / "x.log"))
        settings.pid_file.write_text(json.dumps({"processes": [record.as_dict()]}))
        lines: list[str] = []
        assert localprod.stop(settings, timeout=2, progress=lines.append) == 0
        assert other.poll() is None, "a process that was not ours was signalled"
        assert any("now runs another command; left alone" in line for line in lines)
        assert not settings.pid_file.exists()
        assert localprod.stop(settings, progress=lines.append) == 0  # twice is fine
    finally:
        other.kill()
        other.wait()


# -- the whole configuration -------------------------------------------------------------------------
LAUNCH = """
mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
  __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message }
  ... on PartitionSetNotFoundError { message } ... on InvalidSubsetError { message } } }
"""
ADD_PARTITION = """
mutation($repo: RepositorySelector!, $key: String!) {
  addDynamicPartition(repositorySelector: $repo, partitionsDefName: "pairs", partitionKey: $key) {
    __typename ... on PythonError { message } } }
"""
BACKFILL = """
query($id: String!) { partitionBackfillOrError(backfillId: $id) {
  ... on PartitionBackfill { status runs(limit: 20) { runId status } } } }
"""
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}


def _ended(process: psutil.Process) -> bool:
    """Gone, or a zombie that only waits for its (new) parent to reap it."""
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _group_processes(records: list[Started]) -> list[psutil.Process]:
    """Every live process of the recorded process groups (servers, pool threads' children, step processes)."""
    return [psutil.Process(pid) for record in records for pid in localprod.group_members(record.pid)]


def _backfill(url: str) -> tuple[str, dict[str, Any], float]:
    for pair in sorted({key.split("|")[1] for key in PARTITIONS}):  # the config sensor may have added them
        kind = graphql(url, ADD_PARTITION, {"repo": REPO, "key": pair})["addDynamicPartition"]["__typename"]
        assert kind in ("AddDynamicPartitionSuccess", "DuplicateDynamicPartitionError"), kind
    # The market ingest's asset (ohlcv_candles, the job market_ingest) over two pair-months, as the asset page's
    # "Materialize selected" launches it: an asset backfill, one run for the range (single-run backfill policy).
    # The source is the default (CYBER_MARKET_SOURCE=synthetic); an asset backfill takes no run config.
    params = {"assetSelection": [{"path": ["ohlcv_candles"]}], "partitionNames": PARTITIONS, "title": "test_local_prod"}
    began = time.monotonic()
    launched = graphql(url, LAUNCH, {"params": params})["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["backfillId"]
    while True:
        state = graphql(url, BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]
        runs = state["runs"]
        if state["status"] != "REQUESTED" and runs and all(r["status"] in FINISHED for r in runs):
            return backfill_id, state, time.monotonic() - began
        assert time.monotonic() - began < BACKFILL_TIMEOUT_S, f"backfill not done in {BACKFILL_TIMEOUT_S} s: {state}"
        time.sleep(2)


def _stored(postgres_url: str, run_ids: list[str]) -> dict[str, Any]:
    """What PostgreSQL holds of the runs: status, Celery task tag, events and the run worker's pid."""
    import psycopg2

    connection = psycopg2.connect(localprod.libpq_url(postgres_url))

    def rows(query: str) -> list[tuple[Any, ...]]:
        with connection.cursor() as cursor:
            cursor.execute(query, (run_ids,))
            return cursor.fetchall()

    events = "SELECT {} FROM event_logs WHERE run_id = ANY(%s) AND dagster_event_type = '{}'"
    counts = "SELECT dagster_event_type, count(*) FROM event_logs WHERE run_id = ANY(%s) GROUP BY 1"
    starts = rows(events.format("event", "PIPELINE_START"))
    try:
        return {
            "statuses": dict(rows("SELECT run_id, status FROM runs WHERE run_id = ANY(%s)")),
            "tags": sorted(rows("SELECT run_id, key, value FROM run_tags WHERE run_id = ANY(%s)")),
            "events": dict(rows(counts)),
            "materialized": sorted(p for (p,) in rows(events.format("partition", "ASSET_MATERIALIZATION"))),
            "run_pids": {json.loads(event)["dagster_event"]["pid"] for (event,) in starts},
        }
    finally:
        connection.close()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_local_prod_runs_a_backfill_on_postgres_and_celery(tmp_path: Path, throwaway_database: str) -> None:
    broker = empty_redis_db()
    port = free_port()
    env = {
        **os.environ,
        "CYBER_LOCAL_PROD_DIR": str(tmp_path / "local-prod"),
        "CYBER_POSTGRES_URL": throwaway_database,
        "CYBER_CELERY_BROKER": broker,
        "CYBER_CELERY_BACKEND": broker,
        "CYBER_GRPC_PORT": str(free_port()),
        "CYBER_MARKET_SOURCE": "synthetic",
    }
    settings = localprod.Settings(
        root=tmp_path / "local-prod",
        port=port,
        grpc_port=int(env["CYBER_GRPC_PORT"]),
        postgres_url=throwaway_database,
        broker=broker,
        backend=broker,
        workers=2,
    )
    url = f"http://127.0.0.1:{port}"
    records: list[Started] = []
    seen: list[psutil.Process] = []
    try:
        began = time.monotonic()
        started = _run_localprod("start", "--port", str(port), env=env)
        startup_s = time.monotonic() - began
        assert started.returncode == 0, started.stdout + started.stderr
        assert "local-prod is up in" in started.stdout and url in started.stdout
        records = localprod.read_records(settings)
        assert [r.name for r in records] == ["code-server", "worker1", "worker2", "daemon", "webserver"]
        assert all(localprod.is_ours(r) for r in records)
        assert "running" in _run_localprod("status", env=env, timeout=60).stdout

        backfill_id, state, backfill_s = _backfill(url)
        assert state["status"] == "COMPLETED_SUCCESS", state
        run_ids = [r["runId"] for r in state["runs"]]
        assert all(r["status"] == "SUCCESS" for r in state["runs"]), state

        stored = _stored(throwaway_database, run_ids)
        assert stored["statuses"] == dict.fromkeys(run_ids, "SUCCESS")
        celery_runs = {run for run, key, _value in stored["tags"] if key == "dagster-celery/task_id"}
        assert celery_runs == set(run_ids), stored  # each run was a Celery task ...
        worker_pids = {r.pid for r in records if r.name.startswith("worker")}
        assert stored["run_pids"] and stored["run_pids"] <= worker_pids  # ... executed inside a worker
        assert stored["materialized"] == sorted(PARTITIONS), stored
        assert stored["events"].get("PIPELINE_SUCCESS") == len(run_ids)
        assert sum(stored["events"].values()) > 10
        n_events, runs = sum(stored["events"].values()), len(run_ids)
        print(f"\nlocal-prod: startup {startup_s:.0f} s; backfill {backfill_id}: {runs} run(s) in {backfill_s:.0f} s")
        print(f"local-prod: {n_events} events in PostgreSQL, run worker pid(s) {stored['run_pids']}, broker {broker}")
        seen = _group_processes(records)
    finally:
        stopped = _run_localprod("stop", env=env, timeout=120)
        clear_redis(broker)
    assert stopped.returncode == 0, stopped.stderr
    assert not settings.pid_file.exists()
    for process in seen:  # every process of the groups it started, children included
        assert _ended(process), f"left running: {process.pid} {process.cmdline()}"
    assert not any(localprod.group_members(r.pid) for r in records)
    assert "not running" in _run_localprod("stop", env=env, timeout=60).stdout


def test_stop_kills_what_ignores_sigterm_and_the_orphans_of_a_dead_leader(tmp_path: Path) -> None:
    """SIGTERM to the group first; SIGKILL after the timeout, also to a child whose leader already died."""
    child = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    spawn = f"subprocess.Popen([sys.executable, '-c', {child!r}]).pid"
    script = f"import subprocess, sys, time; print({spawn}, flush=True); time.sleep(60)"
    leader = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert leader.stdout is not None
        orphan = psutil.Process(int(leader.stdout.readline()))
        info = psutil.Process(leader.pid)
        settings = localprod.Settings(tmp_path, free_port(), free_port(), "", "", "", 1)
        record = Started("stubborn", leader.pid, info.cmdline(), info.create_time(), str(tmp_path / "s.log"))
        settings.pid_file.write_text(json.dumps({"processes": [record.as_dict()]}))
        began = time.monotonic()
        assert localprod.stop(settings, timeout=1.5, progress=lambda _line: None) == 1
        assert time.monotonic() - began < 15
        assert leader.wait(timeout=5) == -signal.SIGTERM  # the leader obeyed SIGTERM ...
        assert _ended(orphan)  # ... its child, which ignored it, got SIGKILL
    finally:
        for pid in localprod.group_members(leader.pid):
            os.kill(pid, signal.SIGKILL)
        if leader.poll() is None:
            leader.kill()
            leader.wait()


def test_sqlalchemy_gets_the_psycopg2_driver() -> None:
    assert localprod.sqlalchemy_url("postgresql://u@h:5432/d") == "postgresql+psycopg2://u@h:5432/d"
    assert localprod.libpq_url("postgresql+psycopg2://u@h/d") == "postgresql://u@h/d"
    with_password = "postgresql://u:secret@h:5/d"  # pragma: allowlist secret
    assert re.fullmatch(r"postgresql://u:\*\*\*@h:5/d", localprod._redact(with_password))
