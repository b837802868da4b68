"""Benchmark: the ingest layers and the whole pipeline on the synthetic source, at growing sizes.

For each size (pairs x days, always the 10 configured repos) a fresh Dagster instance and a fresh
storage root are used, and every layer runs as the CLI and the demo run it: the runs of each layer's
plan created from the code location that ``workspace.yaml`` loads (``cyber_pipelines.orchestrate``'s
``Launcher``) and handed to the instance's run launcher, as many at once as the instance allows
(``max_concurrent_runs``, at most one per core). Market and GitHub are range runs over blocks of pairs
(repos) and every month, moat one run, features and backtests one run per pair, then the strategy
comparison. Prints one JSON line per size and configuration with seconds per layer (launch overhead
included; loading the code location once is reported apart), then a summary line per configuration
with how the time grows to the largest size (the pipeline's and the ingest layers'). The backtests use
the asset's walk-forward windows, the training window shortened where the history is too short for it
(see ``walk_forward_days``); a size with any failed run meets no target.

Configurations (``--config``):

- ``sqlite`` (default): the project's dagster.yaml in a temporary DAGSTER_HOME: SQLite storage, every
  run a subprocess of the code server (``DefaultRunLauncher``).
- ``local-prod``: the production configuration without containers (``cyber_pipelines.localprod``:
  PostgreSQL run/event/schedule storage, the ``CeleryRunLauncher`` with two Celery workers on Redis,
  gRPC code server, daemon, webserver), started for each size on free ports with a throwaway PostgreSQL
  database (``cyber_bench_<hex>``), an empty Redis database (1-15) and a temporary data folder, and
  stopped, dropped and emptied afterwards. This process points DAGSTER_HOME at that instance and uses
  the same ``Launcher``: each run becomes a Celery task and executes in a worker (checked: every run
  carries its Celery task id and its run process is a worker's). The sensors that the code location
  declares running (automation, VSM, config partitions, landing) are stopped first through the
  webserver's GraphQL API, so that both configurations execute exactly the same runs. A Celery worker
  runs each run in a thread of a process that lives on: only its first run pays for importing the code
  location (about 5 s, as every run does on SQLite, in a fresh process); local-prod's startup is
  reported apart (``local_prod.startup_s``), outside the layers' seconds.
- ``both``: each size on SQLite, then on local-prod; after the two lines a ``pipeline_scale_compare``
  line holds, per layer, both times and their ratio (local-prod / SQLite).

Each size's line also holds, per layer, the events its runs wrote, the mean time per run inside its steps
(where a run writes its materializations and check results) and the mean launch overhead per run (the
rest of the time from launch to the end of the run).

Targets on a 2-core machine: the market ingest of 15 pairs x 730 days under 60 s; the whole pipeline
(all layers, 10 repos included) under 600 s (SQLite).
Run: ``.venv/bin/python benchmarks/pipeline_scale.py [--sizes 3x90,15x90,3x730,15x730] [--layers ...]
[--config sqlite|local-prod|both]``; local-prod needs PostgreSQL (``CYBER_BENCH_POSTGRES``, default
postgresql://postgres@127.0.0.1:5432) and Redis (``CYBER_BENCH_REDIS``, default redis://127.0.0.1:6379).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import signal
import socket
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from cyber_pipelines.backtest.evaluation import TEST_DAYS, TRAIN_DAYS

INGEST_TARGET_S = 60.0
PIPELINE_TARGET_S = 600.0
LAYERS = ("market", "github", "moat", "features", "backtests", "comparison")
CONFIGS = ("sqlite", "local-prod")
ROOT = Path(__file__).resolve().parents[1]
PG_SERVER = os.environ.get("CYBER_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
REDIS_SERVER = os.environ.get("CYBER_BENCH_REDIS", "redis://127.0.0.1:6379")
REDIS_CLAIM = "cyber-bench-claim"  # set at once in the Redis database taken, so no one else takes it too
# 15 pairs whose bases the config's repos and moat feeds mostly cover (synthetic markets for any pair).
PAIRS = [
    "BTC/USD", "ETH/USD", "SOL/USD", "DOT/USD", "NEAR/USD", "ATOM/USD", "UNI/USD", "AAVE/USD",
    "COMP/USD", "ADA/USD", "XRP/USD", "LTC/USD", "LINK/USD", "AVAX/USD", "DOGE/USD",
]  # fmt: skip


def walk_forward_days(n_days: int) -> dict[str, int]:
    """The backtest asset's walk-forward (train 90, test 30 days), the training window shortened to fit a
    shorter history (90 days: train 60)."""
    return {"train_days": max(7, min(TRAIN_DAYS, n_days - TEST_DAYS)), "test_days": TEST_DAYS}


def _say(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """This process's environment with ``values`` set (the code servers it starts inherit it), restored after."""
    saved = dict(os.environ)
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


# -- the layers, launched like the CLI --------------------------------------------------------------
def _measure(n_pairs: int, n_days: int, only: set[str]) -> dict[str, Any]:
    """Run the layers on the instance that DAGSTER_HOME names; seconds, runs, events and failures per layer."""
    import dagster as dg

    from assets.partitions import months_of
    from cyber_pipelines import orchestrate as orc
    from cyber_pipelines.config import load_settings
    from cyber_pipelines.github.activity import repo_to_key
    from cyber_pipelines.keys import pair_to_key

    settings = load_settings()
    first = settings.start_date
    last = first + timedelta(days=n_days - 1)
    months = months_of([first + timedelta(days=i) for i in range(n_days)])
    pairs = [pair_to_key(p) for p in PAIRS[:n_pairs]]
    repos = [repo_to_key(r) for r in settings.repos]
    failures: list[str] = []
    seconds: dict[str, float] = {}
    run_counts: dict[str, int] = {}
    events: dict[str, int] = {}
    overhead: dict[str, float] = {}
    steps: dict[str, float] = {}
    run_ids: list[str] = []
    with dg.DagsterInstance.get() as instance, orc.Launcher(instance, orc.Progress(enabled=False)) as launcher:
        pair_order = orc.ensure_partitions(instance, "pairs", pairs)
        repo_order = orc.ensure_partitions(instance, "repos", repos)
        runs = launcher.parallel
        layers = {
            "market": orc.plan_market(pairs, months, "synthetic", pair_order, last, None, runs).specs,
            "github": orc.plan_github(repos, months, "synthetic", repo_order, last, runs).specs,
            "moat": orc.plan_moat(months, "synthetic", last).specs,
            "features": orc.feature_specs(pairs, "synthetic"),
            "backtests": orc.backtest_specs(pairs, walk_forward_days(n_days)),
            "comparison": [orc.comparison_spec()],
        }
        for name, specs in layers.items():
            if name not in only:
                continue
            began = time.perf_counter()
            outcomes = launcher.run_all(specs, name)
            seconds[name] = round(time.perf_counter() - began, 2)
            run_counts[name] = len(specs)
            failures += [f"{name} {o.label}: {o.message}" for o in outcomes if not o.success]
            # Counted after the layer's clock stopped: what its runs wrote to the event log.
            events[name] = sum(len(instance.get_records_for_run(o.run_id, limit=1_000_000).records) for o in outcomes)
            overhead[name] = round(sum(o.overhead_s for o in outcomes) / max(len(outcomes), 1), 2)
            steps[name] = round(sum(o.steps_s for o in outcomes) / max(len(outcomes), 1), 2)
            run_ids += [o.run_id for o in outcomes]
        load_s = round(launcher.load_s, 2)
        launcher_class = type(instance.run_launcher).__name__
        storage_class = type(instance.event_log_storage).__name__
    ingest = round(sum(seconds.get(layer, 0.0) for layer in ("market", "github", "moat")), 2)
    total = round(sum(seconds.values()), 2)
    return {
        "benchmark": "pipeline_scale",
        "pairs": n_pairs,
        "days": n_days,
        "repos": len(repos),
        "months": len(months),
        "parallel_runs": runs,
        "run_launcher": launcher_class,
        "event_storage": storage_class,
        "runs": run_counts,
        "code_location_load_s": load_s,
        "seconds": seconds,
        "ingest_s": ingest,
        "pipeline_s": total,
        "market_ms_per_pair_month": round(1000 * seconds.get("market", math.nan) / (n_pairs * len(months)), 1),
        "events": events,
        "mean_run_overhead_s": overhead,
        "mean_run_steps_s": steps,
        "walk_forward_days": walk_forward_days(n_days),
        "failures": failures,
        "_run_ids": run_ids,
    }


def _remove_home(home: Path, timeout: float = 30.0) -> None:
    """Remove the benchmark's folder once no process names it any more: the Launcher's code server, which
    exits after its workspace closed, would otherwise create its SQLite files there again on its way out."""
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        users = []
        for process in psutil.process_iter(["cmdline"]):
            try:
                if str(home) in " ".join(process.info["cmdline"] or ()) and process.status() != psutil.STATUS_ZOMBIE:
                    users.append(process.pid)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        if not users:
            break
        time.sleep(0.2)
    shutil.rmtree(home, ignore_errors=True)


def _run_sqlite(n_pairs: int, n_days: int, only: set[str]) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="cyber-bench-"))
    (home / "dagster_home").mkdir()
    shutil.copyfile(ROOT / "dagster.yaml", home / "dagster_home" / "dagster.yaml")
    try:
        with _environment({"DAGSTER_HOME": str(home / "dagster_home"), "CYBER_DATA_DIR": str(home / "data")}):
            result = _measure(n_pairs, n_days, only)
    finally:
        _remove_home(home)
    result.pop("_run_ids")
    return {"config": "sqlite", **result}


# -- local-prod: PostgreSQL, Celery workers, daemon, webserver -------------------------------------
def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _claim_redis_db() -> str:
    """An empty Redis database (1-15, at random), marked at once as taken; its URL."""
    import redis

    candidates = list(range(1, 16))
    random.shuffle(candidates)
    for db in candidates:
        client = redis.Redis.from_url(f"{REDIS_SERVER}/{db}", socket_timeout=5)
        if client.dbsize() == 0 and client.set(REDIS_CLAIM, str(os.getpid()), nx=True) and client.dbsize() == 1:
            return f"{REDIS_SERVER}/{db}"
    raise SystemExit(f"error: no empty Redis database (1-15) at {REDIS_SERVER} for the Celery broker")


def _clear_redis(url: str) -> None:
    """Delete what Celery left in the database that was taken empty (queues, results, bindings, the claim)."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5)
    keys = list(client.scan_iter(count=1000))
    if keys:
        client.delete(*keys)


SENSORS = """
query($repo: RepositorySelector!) { sensorsOrError(repositorySelector: $repo) {
  __typename ... on Sensors { results { id name sensorState { status } } } ... on PythonError { message } } }
"""
STOP_SENSOR = """
mutation($id: String!) { stopSensor(id: $id) {
  __typename ... on StopSensorMutationResult { instigationState { status } } ... on PythonError { message } } }
"""
REPO = {"repositoryLocationName": "cyber_pipelines", "repositoryName": "__repository__"}


def _stop_sensors(url: str) -> list[str]:
    """Stop every running sensor (the daemon would otherwise launch runs of its own); the names stopped."""
    from cyber_pipelines.localprod import graphql

    found = graphql(url, SENSORS, {"repo": REPO})["sensorsOrError"]
    if found["__typename"] != "Sensors":
        raise RuntimeError(f"the sensors could not be listed: {found}")
    stopped = []
    for sensor in found["results"]:
        if sensor["sensorState"]["status"] != "RUNNING":
            continue
        result = graphql(url, STOP_SENSOR, {"id": sensor["id"]})["stopSensor"]
        if result.get("instigationState", {}).get("status") != "STOPPED":
            raise RuntimeError(f"sensor {sensor['name']} did not stop: {result}")
        stopped.append(sensor["name"])
    return sorted(stopped)


def _where_runs_ran(postgres_url: str, run_ids: list[str], worker_pids: set[int]) -> dict[str, Any]:
    """From PostgreSQL: how many runs were Celery tasks, ran inside a worker, and what else ran."""
    import psycopg2

    from cyber_pipelines.localprod import libpq_url

    connection = psycopg2.connect(libpq_url(postgres_url), connect_timeout=5)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(DISTINCT run_id) FROM run_tags WHERE run_id = ANY(%s) AND key = 'dagster-celery/task_id'",
                (run_ids,),
            )
            (celery_tasks,) = cursor.fetchone()
            cursor.execute(
                "SELECT run_id, event FROM event_logs WHERE run_id = ANY(%s) AND dagster_event_type = 'PIPELINE_START'",
                (run_ids,),
            )
            pids = {run: json.loads(event)["dagster_event"]["pid"] for run, event in cursor.fetchall()}
            cursor.execute("SELECT count(*) FROM runs WHERE NOT (run_id = ANY(%s))", (run_ids,))
            (others,) = cursor.fetchone()
            cursor.execute("SELECT count(*) FROM event_logs")
            (all_events,) = cursor.fetchone()
    finally:
        connection.close()
    return {
        "celery_task_runs": celery_tasks,
        "runs_in_celery_workers": sum(1 for pid in pids.values() if pid in worker_pids),
        "benchmark_runs": len(run_ids),
        "other_runs": others,  # runs that the benchmark did not launch (none expected: the sensors are stopped)
        "event_rows_in_postgres": all_events,
    }


@contextmanager
def _local_prod(home: Path) -> Iterator[tuple[Any, dict[str, Any]]]:
    """The production configuration on a throwaway database, Redis database and data folder; always
    stopped, dropped and emptied afterwards."""
    from cyber_pipelines import localprod

    database = f"{PG_SERVER}/cyber_bench_{uuid.uuid4().hex[:10]}"
    broker = _claim_redis_db()
    settings = localprod.Settings(
        root=home / "local-prod",
        port=_free_port(),
        grpc_port=_free_port(),
        postgres_url=database,
        broker=broker,
        backend=broker,
        workers=2,
    )
    facts: dict[str, Any] = {}
    try:
        began = time.perf_counter()
        localprod.start(settings, progress=_say)
        facts["startup_s"] = round(time.perf_counter() - began, 2)
        facts["sensors_stopped"] = _stop_sensors(settings.url)
        facts["worker_pids"] = {r.pid for r in localprod.read_records(settings) if r.name.startswith("worker")}
        yield settings, facts
    finally:
        try:
            localprod.stop(settings, progress=_say)
        finally:
            localprod.drop_database(database)
            _clear_redis(broker)
            _say(f"dropped {database.rsplit('/', 1)[1]}, emptied {broker}")


def _run_local_prod(n_pairs: int, n_days: int, only: set[str]) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="cyber-bench-lp-"))
    try:
        with _local_prod(home) as (settings, facts):
            # This process reaches the same instance as the servers and workers (``localprod env``).
            with _environment(settings.environment()):
                result = _measure(n_pairs, n_days, only)
            ran = _where_runs_ran(settings.postgres_url, result.pop("_run_ids"), facts.pop("worker_pids"))
    finally:
        _remove_home(home)
    if ran["runs_in_celery_workers"] != ran["benchmark_runs"] or ran["celery_task_runs"] != ran["benchmark_runs"]:
        result["failures"].append(f"not every run executed as a Celery task in a worker: {ran}")
    return {"config": "local-prod", **result, "local_prod": {**facts, **ran}}


RUNNERS = {"sqlite": _run_sqlite, "local-prod": _run_local_prod}


# -- reports -------------------------------------------------------------------------------------------
def compare(sqlite: dict[str, Any], prod: dict[str, Any]) -> dict[str, Any]:
    """Both configurations' seconds per layer at one size, and local-prod / SQLite."""
    rows = {}
    for layer in [*sqlite["seconds"], "ingest", "pipeline"]:
        a = sqlite["seconds"].get(layer, sqlite.get(f"{layer}_s"))
        b = prod["seconds"].get(layer, prod.get(f"{layer}_s"))
        rows[layer] = {"sqlite": a, "local-prod": b, "ratio": round(b / a, 2) if a and b is not None else None}
    return {
        "benchmark": "pipeline_scale_compare",
        "pairs": sqlite["pairs"],
        "days": sqlite["days"],
        "seconds": rows,
        **{
            key: {layer: {"sqlite": v, "local-prod": prod[key].get(layer)} for layer, v in sqlite[key].items()}
            for key in ("mean_run_overhead_s", "mean_run_steps_s")
        },
        "events": {
            layer: {"sqlite": v, "local-prod": prod["events"].get(layer)} for layer, v in sqlite["events"].items()
        },
        "failures": sqlite["failures"] + prod["failures"],
    }


def summary(results: list[dict[str, Any]], only: set[str], config: str) -> dict[str, Any]:
    big = max(results, key=lambda r: (r["pairs"], r["days"]))
    by_size = {(r["pairs"], r["days"]): r for r in results}
    growth, ingest_growth = {}, {}
    for (p, d), r in by_size.items():
        if (p, d) != (big["pairs"], big["days"]):
            step = f"{p}x{d}->{big['pairs']}x{big['days']}"
            growth[step] = round(big["pipeline_s"] / max(r["pipeline_s"], 1e-9), 2)
            ingest_growth[step] = round(big["ingest_s"] / max(r["ingest_s"], 1e-9), 2)
    complete = only == set(LAYERS) and not any(r["failures"] for r in results)
    return {
        "benchmark": "pipeline_scale_summary",
        "config": config,
        "largest": f"{big['pairs']}x{big['days']}",
        "market_ingest_s": big["seconds"].get("market"),
        "market_ingest_target_s": INGEST_TARGET_S,
        "market_ingest_meets_target": big["seconds"].get("market", math.inf) < INGEST_TARGET_S,
        "all_ingest_layers_s": big["ingest_s"],
        "pipeline_s": big["pipeline_s"],
        "pipeline_target_s": PIPELINE_TARGET_S,
        "pipeline_meets_target": big["pipeline_s"] < PIPELINE_TARGET_S if complete else None,
        "pipeline_growth_x": growth,
        "ingest_growth_x": ingest_growth,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="3x90,15x90,3x730,15x730", help="PAIRSxDAYS,... (at most 15 pairs)")
    parser.add_argument(
        "--layers", default=",".join(LAYERS), help=f"the layers to run, in order (default all: {','.join(LAYERS)})"
    )
    parser.add_argument(
        "--config",
        choices=[*CONFIGS, "both"],
        default="sqlite",
        help="sqlite: SQLite in process (default); local-prod: PostgreSQL and two Celery workers "
        "(cyber_pipelines.localprod, throwaway database); both: each size on both, compared",
    )
    args = parser.parse_args()
    only = set(args.layers.split(","))
    if not only <= set(LAYERS):
        raise SystemExit(f"error: unknown layers {sorted(only - set(LAYERS))}; choose from {','.join(LAYERS)}")
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    if any(p > len(PAIRS) or p < 1 or d < 1 for p, d in sizes):
        raise SystemExit(f"error: sizes must be 1..{len(PAIRS)} pairs x >= 1 days, got {args.sizes}")
    if date.today() - timedelta(days=1) < date(2024, 1, 1) + timedelta(days=max(d for _, d in sizes)):
        raise SystemExit("error: the largest size runs past yesterday; pass fewer days")
    configs = list(CONFIGS) if args.config == "both" else [args.config]
    # The CeleryRunLauncher makes its Celery task anew for every launch; Celery keeps the first (the same code).
    warnings.filterwarnings("ignore", message="Task name 'execute_job' is already registered")
    # SIGTERM as Ctrl-C: the launched runs are terminated, local-prod stopped, its database dropped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    results: dict[str, list[dict[str, Any]]] = {config: [] for config in configs}
    try:
        for p, d in sizes:
            for config in configs:
                _say(f"{p}x{d} on {config}")
                results[config].append(RUNNERS[config](p, d, only))
                print(json.dumps(results[config][-1]), flush=True)
            if args.config == "both":
                print(json.dumps(compare(results["sqlite"][-1], results["local-prod"][-1])), flush=True)
    except KeyboardInterrupt:
        raise SystemExit("interrupted: the runs launched were terminated, what the benchmark started stopped") from None
    for config in configs:
        print(json.dumps(summary(results[config], only, config)), flush=True)


if __name__ == "__main__":
    main()
