"""Launch runs the way the UI does (the CLI and the demo use this) and report what they did.

A run is created from the *remote* job of the code location that ``workspace.yaml`` loads (the same
location ``dagster dev -w workspace.yaml`` serves), so it carries the location's origin: it shows on
the job's page and the Overview timeline, and re-executes without "different version" warnings. It is
launched with the instance's run launcher (``DefaultRunLauncher``: a subprocess of the code server),
as ``dagster job launch -w workspace.yaml`` does, and its events are polled for progress until it ends.

Cost, measured on the 2-core development machine: loading the workspace (a code server) takes about
6 s once per command; each run adds about 5 s of launch overhead (a fresh process importing the code
location, most of it Great Expectations) on top of its steps. The runs use the in-process executor:
the multiprocess default imports the code location again for every step (about 20 s more per run of
two steps). So the CLI keeps the number of runs small: one range run per block of pairs (or repos),
one for the moat months, and as many at once as the instance's ``max_concurrent_runs`` allows (at
most one per core): most of an ingest run's time is Dagster writing its events (about 30 ms each
in SQLite), which is CPU work that a second core halves.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import IO, Any, TextIO

import dagster as dg

from cyber_pipelines.instance import PROJECT_ROOT, get_instance

WORKSPACE_FILE = PROJECT_ROOT / "workspace.yaml"
CODE_MODULE = "cyber_pipelines.definitions"
LAUNCHED_BY = "cyber/launched_by"
HOST = "cyber/host"
IN_PROCESS: dict[str, Any] = {"execution": {"config": {"in_process": {}}}}
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}  # the full logs stay in the UI
POLL_S = 0.25
HEARTBEAT_S = 15.0  # a quiet run still says it is alive this often
START_TIMEOUT_S = 180.0  # as dagster.yaml's run_monitoring.start_timeout_seconds (the daemon is not running)
MAX_LINE = 800  # characters of a one-line error (a blocked day names its check, rule and first row)


class LaunchError(Exception):
    """The runs could not be started (the code location does not load, a job is missing)."""

    def __init__(self, message: str, trace: str = "") -> None:
        super().__init__(message)
        self.trace = trace


# -- progress ------------------------------------------------------------------------------------
class Progress:
    """Progress lines on stderr (results go to stdout), each with the time since the command began."""

    def __init__(self, stream: TextIO | IO[str] | None = None, enabled: bool = True) -> None:
        self.stream = stream
        self.enabled = enabled
        self.began = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.began

    def __call__(self, text: str) -> None:
        if self.enabled:
            stream = self.stream or sys.stderr
            print(f"[{self.elapsed():6.1f}s] {text}", file=stream, flush=True)


# -- what to run and what came of it --------------------------------------------------------------
PartitionKey = str | dg.MultiPartitionKey


@dataclass(frozen=True)
class RunSpec:
    """One run of ``job_name`` over one partition, a range of partitions, or none."""

    job_name: str
    label: str  # what a person reads: "BTC-USD 2024-01..2024-02"
    first: PartitionKey | None = None
    last: PartitionKey | None = None
    run_config: Mapping[str, Any] = field(default_factory=dict)
    partitions: int = 0  # partitions the run covers (for the counts)

    def tags(self) -> dict[str, str]:
        tags = {LAUNCHED_BY: "cli", HOST: socket.gethostname()}  # the VSM judges this machine's runs only
        if self.first is None:
            return tags
        last = self.last if self.last is not None else self.first
        if str(self.first) == str(last):
            # What the UI sets for a one-partition launch: the partition shows in the run lists.
            tags["dagster/partition"] = str(self.first)
            if isinstance(self.first, dg.MultiPartitionKey):
                tags |= {f"dagster/partition/{dim}": key for dim, key in self.first.keys_by_dimension.items()}
        else:
            tags["dagster/asset_partition_range_start"] = str(self.first)
            tags["dagster/asset_partition_range_end"] = str(last)
        return tags


@dataclass
class RunOutcome:
    label: str
    job_name: str
    run_id: str
    success: bool
    message: str  # one line: the root cause of a failure, or what was materialized
    partitions: int = 0  # materializations recorded
    rows: int = 0
    elapsed_s: float = 0.0  # from launch to the end of the run
    steps_s: float = 0.0  # time inside the steps; the rest is launch overhead
    trace: str = ""  # full error text, shown with --verbose

    @property
    def overhead_s(self) -> float:
        return max(self.elapsed_s - self.steps_s, 0.0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "job": self.job_name,
            "run_id": self.run_id,
            "success": self.success,
            "message": self.message,
            "partitions": self.partitions,
            "rows": self.rows,
            "elapsed_s": round(self.elapsed_s, 2),
            "overhead_s": round(self.overhead_s, 2),
        }


def one_line(text: str, limit: int = MAX_LINE) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _root_error(error: Any) -> Any:
    """The innermost cause of a ``SerializableErrorInfo`` (Dagster wraps user errors in its own)."""
    while getattr(error, "cause", None) is not None:
        error = error.cause
    return error


class _RunEvents:
    """What the events of one run say: progress lines, counts and the root causes of a failure."""

    def __init__(self) -> None:
        self.partitions: set[str] = set()
        self.materializations = 0
        self.rows = 0
        self.steps_s = 0.0
        self.user_failures: list[str] = []
        self.check_failures: list[str] = []
        self.errors: list[str] = []
        self.traces: list[str] = []
        self.run_failure: str | None = None
        self._step_started: dict[str, float] = {}

    def read(self, record: Any) -> str | None:
        """Take in one event log record; return a progress line for it, if it deserves one."""
        entry = record.event_log_entry
        event = entry.dagster_event
        if event is None:  # context.log messages of the run: the assets' own progress
            if entry.level >= 20 and entry.user_message:
                return one_line(entry.user_message, 200)
            return None
        kind = event.event_type
        step = event.step_key or ""
        if kind == dg.DagsterEventType.STEP_START:
            self._step_started[step] = entry.timestamp
            return f"{step} started"
        if kind in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE):
            began = self._step_started.pop(step, None)
            if began is not None:
                self.steps_s += entry.timestamp - began
        if kind == dg.DagsterEventType.ASSET_MATERIALIZATION:
            materialization = event.step_materialization_data.materialization
            meta = materialization.metadata
            rows = meta["rows"].value if "rows" in meta else None
            self.materializations += 1
            if materialization.partition:
                self.partitions.add(materialization.partition)
            if isinstance(rows, int):
                self.rows += rows
            where = f" {materialization.partition}" if materialization.partition else ""
            return f"{materialization.asset_key.to_user_string()}{where}" + (
                f": {rows} rows" if rows is not None else ""
            )
        if kind == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation = event.event_specific_data
            if evaluation is not None and not evaluation.passed:
                where = f" on {evaluation.partition}" if getattr(evaluation, "partition", None) else ""
                detail = evaluation.description or _metadata_line(evaluation.metadata)
                line = f"check {evaluation.check_name}{where} failed" + (f": {detail}" if detail else "")
                self.check_failures.append(detail or line)
                return one_line(line, 300)
            return None
        if kind == dg.DagsterEventType.STEP_FAILURE:
            data = event.step_failure_data
            if data.user_failure_data is not None and data.user_failure_data.description:
                self.user_failures.append(data.user_failure_data.description)
            elif data.error is not None:
                self.errors.append(_root_error(data.error).message.strip())
            if data.error is not None:
                self.traces.append(f"step {step}:\n{data.error.to_string()}")
            return f"{step} failed"
        if kind == dg.DagsterEventType.ENGINE_EVENT:
            data = event.engine_event_data
            if data is not None and data.error is not None:
                self.errors.append(_root_error(data.error).message.strip())
                self.traces.append(f"engine: {event.message}\n{data.error.to_string()}")
            return None
        if kind == dg.DagsterEventType.RUN_FAILURE:
            self.run_failure = event.message
            data = event.event_specific_data
            error = getattr(data, "error", None)
            if error is not None:
                self.errors.append(_root_error(error).message.strip())
                self.traces.append(f"run:\n{error.to_string()}")
            return None
        return None

    def root_cause(self) -> str:
        """One line: the failures people wrote (Failure descriptions, check results), else the errors."""
        lines = [*self.user_failures]
        for line in [*self.check_failures, *self.errors]:
            if not any(line in kept for kept in lines):
                lines.append(line)
        if not lines and self.run_failure:
            lines.append(self.run_failure)
        return one_line("; ".join(dict.fromkeys(lines)) or "the run failed (no error recorded; see the run in the UI)")

    def summary(self) -> str:
        if not self.materializations:
            return "ok"
        counted = len(self.partitions) or self.materializations
        what = "partition" if self.partitions else "materialization"
        return f"{counted} {what}{'' if counted == 1 else 's'}" + (f", {self.rows} rows" if self.rows else "")


def _metadata_line(metadata: Mapping[str, Any]) -> str:
    parts = []
    for key, value in metadata.items():
        shown = getattr(value, "value", value)
        if isinstance(shown, str | int | float) and len(str(shown)) < 80:
            parts.append(f"{key}={shown}")
    return ", ".join(parts)


# -- launching -------------------------------------------------------------------------------------
def _load_target() -> Any:
    from dagster._core.workspace.load_target import ModuleTarget, WorkspaceFileTarget

    if WORKSPACE_FILE.exists():
        return WorkspaceFileTarget(paths=[str(WORKSPACE_FILE)])
    return ModuleTarget(module_name=CODE_MODULE, attribute=None, working_directory=str(Path.cwd()), location_name=None)


class Launcher:
    """Runs on the instance, created from the code location's remote jobs and launched by its run launcher.

    Use as a context manager: entering starts the code server (the workspace), leaving stops it.
    """

    def __init__(
        self, instance: dg.DagsterInstance | None = None, progress: Progress | None = None, verbose: bool = False
    ) -> None:
        self.instance = instance or get_instance()
        self.progress = progress or Progress()
        self.verbose = verbose
        self._stack: Any = None
        self._context: Any = None
        self._location: Any = None
        self._repository: Any = None
        self.parallel = parallel_runs(self.instance)
        self._launching = threading.Lock()
        self._stop = threading.Event()

    def __enter__(self) -> Launcher:
        from contextlib import ExitStack

        from dagster import __version__
        from dagster._core.workspace.context import WorkspaceProcessContext

        began = time.perf_counter()
        self._stack = ExitStack()
        try:
            with warnings.catch_warnings():  # a load error is reported below, in one line
                warnings.simplefilter("ignore", UserWarning)
                process = self._stack.enter_context(
                    WorkspaceProcessContext(
                        instance=self.instance,
                        version=__version__,
                        read_only=False,
                        workspace_load_target=_load_target(),
                        code_server_log_level="INFO" if self.verbose else "CRITICAL",
                    )
                )
            self._context = process.create_request_context()
            names = list(self._context.code_location_names)
            if len(names) != 1:
                raise LaunchError(f"expected one code location in {WORKSPACE_FILE}, found {names}")
            error = self._context.get_code_location_error(names[0])
            if error is not None:
                raise LaunchError(
                    f"the code location {names[0]} does not load: {one_line(_root_error(error).message, 400)}",
                    error.to_string(),
                )
            self._location = self._context.get_code_location(names[0])
            self._repository = next(iter(self._location.get_repositories().values()))
        except BaseException:
            self._stack.close()
            raise
        self.load_s = time.perf_counter() - began
        self.progress(f"code location {self._location.name} loaded in {self.load_s:.1f} s")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stack is not None:
            self._stack.close()

    def launch(self, spec: RunSpec) -> str:
        """Create the run from the remote job (with its partition tags) and hand it to the run launcher."""
        if not self._repository.has_job(spec.job_name):
            raise LaunchError(f"the code location has no job {spec.job_name!r}")
        with self._launching:
            return self._launch(spec)

    def _launch(self, spec: RunSpec) -> str:
        from dagster._core.definitions.selector import JobSubsetSelector

        run_config = {**QUIET, **IN_PROCESS, **spec.run_config}
        remote_job = self._location.get_job(
            JobSubsetSelector(
                location_name=self._location.name,
                repository_name=self._repository.name,
                job_name=spec.job_name,
                op_selection=None,
            )
        )
        plan = self._location.get_execution_plan(
            remote_job, run_config, step_keys_to_execute=None, known_state=None, instance=self.instance
        ).execution_plan_snapshot
        run = self.instance.create_run(
            job_name=spec.job_name,
            run_id=None,
            run_config=run_config,
            resolved_op_selection=remote_job.resolved_op_selection,
            step_keys_to_execute=plan.step_keys_to_execute,
            op_selection=None,
            status=None,
            root_run_id=None,
            parent_run_id=None,
            tags={**remote_job.tags, **spec.tags()},
            job_snapshot=remote_job.job_snapshot,
            execution_plan_snapshot=plan,
            parent_job_snapshot=remote_job.parent_job_snapshot,
            remote_job_origin=remote_job.get_remote_origin(),
            job_code_origin=remote_job.get_python_origin(),
            asset_selection=None,
            asset_check_selection=None,
            asset_graph=self._repository.asset_graph,
        )
        self.instance.launch_run(run.run_id, self._context)
        return run.run_id

    def wait(self, run_id: str, spec: RunSpec, prefix: str, began: float) -> RunOutcome:
        """Poll the run's events until it ends, printing progress; summarize what it did."""
        events = _RunEvents()
        cursor: str | None = None
        last_said = time.perf_counter()
        while True:
            run = self.instance.get_run_by_id(run_id)
            finished = run is None or run.is_finished
            while True:
                connection = self.instance.get_records_for_run(run_id, cursor=cursor, limit=500)
                for record in connection.records:
                    line = events.read(record)
                    if line:
                        self.progress(f"{prefix}: {line}")
                        last_said = time.perf_counter()
                cursor = connection.cursor
                if not connection.has_more:
                    break
            if finished or self._stop.is_set():
                break
            waiting = run is not None and run.status in (dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.NOT_STARTED)
            if run is not None and waiting and time.perf_counter() - began > START_TIMEOUT_S:
                # Without the daemon nothing else notices a run worker that never came up.
                self.instance.report_run_failed(run, f"the run did not start within {START_TIMEOUT_S:.0f} s")
                events.errors.append(f"the run did not start within {START_TIMEOUT_S:.0f} s (see the run in the UI)")
                continue
            if time.perf_counter() - last_said > HEARTBEAT_S:
                self.progress(f"{prefix}: still running ({time.perf_counter() - began:.0f} s)")
                last_said = time.perf_counter()
            time.sleep(POLL_S)
        success = run is not None and run.status == dg.DagsterRunStatus.SUCCESS
        return RunOutcome(
            label=spec.label,
            job_name=spec.job_name,
            run_id=run_id,
            success=success,
            message=events.summary() if success else events.root_cause(),
            partitions=len(events.partitions),
            rows=events.rows,
            elapsed_s=time.perf_counter() - began,
            steps_s=events.steps_s,
            trace="\n".join(events.traces),
        )

    def run_all(self, specs: Sequence[RunSpec], what: str = "") -> list[RunOutcome]:
        """Run the specs, ``self.parallel`` at a time; the outcomes in the order of the specs.

        Ctrl-C terminates every run already launched."""
        launched: list[str] = []

        def run_one(index: int, spec: RunSpec) -> RunOutcome:
            prefix = f"{what + ' ' if what else ''}run {index}/{len(specs)} {spec.label}"
            began = time.perf_counter()
            if self._stop.is_set():
                raise KeyboardInterrupt
            run_id = self.launch(spec)
            launched.append(run_id)
            self.progress(f"{prefix}: launched {spec.job_name} (run {run_id[:8]})")
            outcome = self.wait(run_id, spec, prefix, began)
            said = f"ok in {outcome.elapsed_s:.1f} s: {outcome.message}" if outcome.success else "FAILED"
            self.progress(f"{prefix}: {said}")
            return outcome

        with ThreadPoolExecutor(max_workers=max(1, min(self.parallel, len(specs)))) as pool:
            futures = [pool.submit(run_one, index, spec) for index, spec in enumerate(specs, 1)]
            try:
                return [future.result() for future in futures]
            except KeyboardInterrupt:
                self._stop.set()
                for future in futures:
                    future.cancel()
                for run_id in launched:
                    run = self.instance.get_run_by_id(run_id)
                    if run is not None and not run.is_finished:
                        self.progress(f"{what}: interrupted, terminating run {run_id[:8]}")
                        self.instance.run_launcher.terminate(run_id)
                raise


def parallel_runs(instance: dg.DagsterInstance) -> int:
    """How many runs to keep going at once: the instance's ``max_concurrent_runs``, at most one per core."""
    queue = instance.get_concurrency_config().run_queue_config
    cores = os.cpu_count() or 1
    if queue is None:
        return 1
    limit = queue.max_concurrent_runs
    return max(1, min(cores if limit < 0 else limit, cores))


# -- partitions and plans --------------------------------------------------------------------------
def ensure_partitions(instance: dg.DagsterInstance, name: str, keys: Sequence[str]) -> list[str]:
    """Add the dynamic partition keys that the instance does not have yet; return all keys."""
    existing = set(instance.get_dynamic_partitions(name))
    new = [k for k in keys if k not in existing]
    if new:
        instance.add_dynamic_partitions(name, new)
    return list(keys)


def month_label(month: date) -> str:
    return month.strftime("%Y-%m")


def months_label(months: Sequence[date]) -> str:
    return month_label(months[0]) if len(months) == 1 else f"{month_label(months[0])}..{month_label(months[-1])}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


@dataclass(frozen=True)
class IngestPlan:
    """The month partitions of one ingest layer and the runs that materialize them."""

    layer: str  # market | github | moat
    source: str
    keys: tuple[str, ...]  # pair keys (BTC-USD) or repo keys; empty for moat
    months: tuple[date, ...]
    first_day: date
    last_day: date
    specs: tuple[RunSpec, ...]

    @property
    def partitions(self) -> int:
        return len(self.months) * max(len(self.keys), 1)

    @property
    def days(self) -> int:
        return (self.last_day - self.first_day).days + 1

    def describe(self) -> str:
        """``2 months x 3 pairs = 6 pair-month partitions in 3 runs, days 2024-01-01..2024-02-29``."""
        runs = _plural(len(self.specs), "run")
        span = f"days {self.first_day}..{self.last_day}"
        if self.layer == "moat":
            partitions = _plural(self.partitions, "moat-month partition")
            return f"{_plural(len(self.months), 'month')} = {partitions} in {runs}, {span}"
        noun = "pair" if self.layer == "market" else "repo"
        return (
            f"{_plural(len(self.months), 'month')} x {_plural(len(self.keys), noun)} = "
            f"{_plural(self.partitions, noun + '-month partition')} in {runs}, {span}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "source": self.source,
            "keys": list(self.keys),
            "months": [month_label(m) for m in self.months],
            "partitions": self.partitions,
            "runs": len(self.specs),
            "first_day": self.first_day.isoformat(),
            "last_day": self.last_day.isoformat(),
            "days": self.days,
        }


def _span(months: Sequence[date], through: date | None, since: date | None = None) -> tuple[date, date]:
    """The first and last day the months hold (from the config's start date through the last complete day)."""
    from assets.partitions import month_days

    first = month_days(months[0], through)
    last = month_days(months[-1], through)
    if not first or not last:
        raise ValueError(f"no complete day in {months_label(months)} (through {through})")
    return max(first[0], since or first[0]), last[-1]


def neighbour_blocks(keys: Sequence[str], order: Sequence[str]) -> list[list[str]]:
    """``keys`` grouped into runs of neighbours in the instance's dynamic partition ``order``.

    A range of a two-dimensional partition is a rectangle (months x a run of keys), so keys that sit
    next to each other in the partition list share one run."""
    position = {key: i for i, key in enumerate(order)}
    missing = [k for k in keys if k not in position]
    if missing:
        raise ValueError(f"not partitions of the instance yet: {', '.join(missing)}")
    blocks: list[list[str]] = []
    for key in sorted(keys, key=lambda k: position[k]):
        if blocks and position[key] == position[blocks[-1][-1]] + 1:
            blocks[-1].append(key)
        else:
            blocks.append([key])
    return blocks


def split_blocks(blocks: Sequence[Sequence[str]], runs: int) -> list[list[str]]:
    """Halve the largest block until there are ``runs`` blocks (or each holds one key): the runs that
    go at once share the work."""
    out = [list(block) for block in blocks]
    while len(out) < runs:
        largest = max(range(len(out)), key=lambda i: len(out[i]))
        block = out[largest]
        if len(block) < 2:
            break
        half = (len(block) + 1) // 2
        out[largest : largest + 1] = [block[:half], block[half:]]
    return out


def _block_specs(
    job: str, op: str, blocks: list[list[str]], months: Sequence[date], source: str, key_of: Callable, noun: str
) -> tuple[RunSpec, ...]:
    run_config = {"ops": {op: {"config": {"source": source}}}}
    return tuple(
        RunSpec(
            job,
            f"{block[0]}{'' if len(block) == 1 else f' .. {block[-1]} ({len(block)} {noun}s)'} {months_label(months)}",
            key_of(block[0], months[0]),
            key_of(block[-1], months[-1]),
            run_config,
            len(months) * len(block),
        )
        for block in blocks
    )


def plan_market(
    pair_keys: Sequence[str],
    months: Sequence[date],
    source: str,
    order: Sequence[str],
    through: date | None = None,
    since: date | None = None,
    runs: int = 1,
) -> IngestPlan:
    """One range run per block of neighbouring pairs over the months (``ohlcv_candles``, audited and
    published per day): one run, not one per pair, for pairs added together; blocks are halved until
    there are ``runs`` of them (the runs that go at once)."""
    from assets.partitions import pair_month_key

    months = sorted(months)
    blocks = split_blocks(neighbour_blocks(pair_keys, order), runs)
    specs = _block_specs("market_ingest", "ohlcv_candles", blocks, months, source, pair_month_key, "pair")
    first, last = _span(months, through, since)
    return IngestPlan("market", source, tuple(k for b in blocks for k in b), tuple(months), first, last, specs)


def plan_github(
    repo_keys: Sequence[str],
    months: Sequence[date],
    source: str,
    order: Sequence[str],
    through: date | None = None,
    runs: int = 1,
) -> IngestPlan:
    """One range run per block of neighbouring repos over the months (``github_activity``), as
    ``plan_market``."""
    from assets.partitions import repo_month_key

    months = sorted(months)
    blocks = split_blocks(neighbour_blocks(repo_keys, order), runs)
    specs = _block_specs("github_ingest", "github_activity", blocks, months, source, repo_month_key, "repo")
    first, last = _span(months, through)
    return IngestPlan("github", source, tuple(k for b in blocks for k in b), tuple(months), first, last, specs)


def plan_moat(
    months: Sequence[date], source: str, through: date | None = None, since: date | None = None
) -> IngestPlan:
    from assets.partitions import moat_month_key

    months = sorted(months)
    run_config = {"ops": {"moat_records": {"config": {"source": source}}}}
    spec = RunSpec(
        "moat_ingest",
        f"moat {months_label(months)}",
        moat_month_key(months[0]),
        moat_month_key(months[-1]),
        run_config,
        len(months),
    )
    first, last = _span(months, through, since)
    return IngestPlan("moat", source, (), tuple(months), first, last, (spec,))


def feature_specs(pair_keys: Sequence[str], source: str) -> list[RunSpec]:
    """Each pair's feature table (with its checks) and lead-lag report, one run per pair."""
    run_config = {"ops": {name: {"config": {"source": source}} for name in ("pair_features", "lead_lag_report")}}
    return [RunSpec("features", key, key, key, run_config, 1) for key in pair_keys]


def encoder_spec(train_days: int) -> RunSpec:
    """The window encoder, trained on every pair's windows known before its first out-of-sample bar."""
    return RunSpec(
        "train_pattern_encoder",
        "all pairs",
        run_config={"ops": {"pattern_encoder": {"config": {"train_days": train_days}}}},
    )


def memory_specs(pair_keys: Sequence[str]) -> list[RunSpec]:
    """Each pair's windows encoded into the vector store, one run per pair (the pool serializes them)."""
    return [RunSpec("pattern_memory", key, key, key, {}, 1) for key in pair_keys]


def analog_specs(pair_keys: Sequence[str], train_days: int) -> list[RunSpec]:
    """Each pair's analog forecasts (after every pair's memory is in), one run per pair."""
    run_config = {"ops": {"analog_forecasts": {"config": {"train_days": train_days}}}}
    return [RunSpec("forecast_analogs", key, key, key, run_config, 1) for key in pair_keys]


def base_forecaster_spec(train_days: int, validation_days: int) -> RunSpec:
    """The base forecaster, trained on every pair's samples known before the promotion period."""
    config = {"train_days": train_days, "validation_days": validation_days}
    return RunSpec("train_base_forecaster", "all pairs", run_config={"ops": {"base_forecaster": {"config": config}}})


def pair_model_specs(pair_keys: Sequence[str]) -> list[RunSpec]:
    """Each pair's adapter, its promotion and the forecasts of the model that serves it, one run per pair."""
    return [RunSpec("pair_models", key, key, key, {}, 1) for key in pair_keys]


def backtest_specs(pair_keys: Sequence[str], config: Mapping[str, Any] | None = None) -> list[RunSpec]:
    """Each pair's backtests, one run per pair (the comparison runs after all of them); ``config`` is
    ``backtest_results``' run config (walk-forward windows, costs)."""
    run_config = {"ops": {"backtest_results": {"config": dict(config)}}} if config else {}
    return [RunSpec("backtests", key, key, key, run_config, 1) for key in pair_keys]


def comparison_spec() -> RunSpec:
    """The comparison across pairs, from the latest backtests of each."""
    return RunSpec("compare_strategies", "all pairs")


def ledger_spec() -> RunSpec:
    """The VSM's P&L ledger of every pair, from their latest backtests."""
    return RunSpec("update_ledger", "all pairs")


def leadlag_summary_spec() -> RunSpec:
    """The pairs' lead-lag tests as one family (Holm across pairs)."""
    return RunSpec("summarize_lead_lag", "lead-lag across pairs")


# -- the demo's summaries --------------------------------------------------------------------------
def _latest_metadata(instance: dg.DagsterInstance, asset: str, partition: str | None = None) -> dict:
    from assets.batch import latest_metadata

    return latest_metadata(instance, dg.AssetKey(asset), [partition] if partition else None) or {}


def leadlag_findings(instance: dg.DagsterInstance, pair_keys: Sequence[str]) -> dict[str, dict[str, Any]]:
    keep = ("best_lag_hours", "best_corr", "best_p_adjusted", "status")
    return {
        key: {k: v for k, v in _latest_metadata(instance, "lead_lag_report", key).items() if k in keep}
        for key in pair_keys
    }


def leadlag_summary(findings: Mapping[str, Mapping[str, Any]]) -> str:
    """One line per pair: what the lead-lag report found."""
    lines = ["lead-lag (GitHub activity -> volatility):"]
    for key, meta in findings.items():
        if "best_lag_hours" in meta:
            lines.append(
                f"  {key:<9} best lag {meta['best_lag_hours']:>2} h, corr {meta['best_corr']:+.3f}, "
                f"adjusted p {meta['best_p_adjusted']:.4f} ({meta['status']})"
            )
        else:
            lines.append(f"  {key:<9} {meta.get('status', 'not materialized')}")
    return "\n".join(lines)


def demo_comparison(source: str = "synthetic") -> dict[str, Any]:
    """The stored strategy comparison (``comparison.json``): per strategy its fitted parameters per
    walk-forward window (per pair), OOS figures, raw and adjusted p per reference, and verdicts."""
    from cyber_pipelines.backtest.store import load_comparison
    from cyber_pipelines.config import data_dir
    from cyber_pipelines.storage import TableStore

    try:
        return load_comparison(TableStore(data_dir()), source)
    except FileNotFoundError:
        return {}


def verdict_summary(comparison: Mapping[str, Any]) -> str:
    """The demo's answer: one verdict line per strategy of the portfolio, out of sample."""
    if not comparison:
        return "no strategy comparison was stored"
    head = (
        f"out of sample {str(comparison['oos_start'])[:10]}..{str(comparison['oos_end'])[:10]}, "
        f"equal-weight portfolio of {', '.join(comparison['pairs'])}: {comparison['portfolio']}; "
        f"{comparison['costs']}; p-values Holm-adjusted over every strategy on every pair and on the portfolio "
        "(per reference, and over the verdicts):"
    )
    return "\n".join([head, *(f"  {line}" for line in comparison["verdicts"])])


def demo_window(days: int, through: date) -> list[date]:
    """The ``days`` complete days ending ``through``."""
    return [through - timedelta(days=days - 1 - i) for i in range(days)]


# -- in-process execution (tests and benchmarks on an ephemeral instance) --------------------------
def execute_in_process(specs: Sequence[RunSpec], instance: dg.DagsterInstance) -> list[RunOutcome]:
    """The same runs executed in this process, for an instance that a subprocess cannot reach."""
    from cyber_pipelines.definitions import defs

    outcomes = []
    for spec in specs:
        began = time.perf_counter()
        job = defs.resolve_job_def(spec.job_name)
        single = spec.first is not None and str(spec.first) == str(spec.last if spec.last is not None else spec.first)
        tags = {k: v for k, v in spec.tags().items() if not k.startswith("dagster/partition")}
        result = job.execute_in_process(
            instance=instance,
            run_config={**QUIET, **spec.run_config},
            raise_on_error=False,
            partition_key=str(spec.first) if single else None,
            tags=tags,
        )
        events = _RunEvents()
        for record in instance.get_records_for_run(result.run_id, limit=100_000).records:
            events.read(record)
        outcomes.append(
            RunOutcome(
                label=spec.label,
                job_name=spec.job_name,
                run_id=result.run_id,
                success=result.success,
                message=events.summary() if result.success else events.root_cause(),
                partitions=len(events.partitions),
                rows=events.rows,
                elapsed_s=time.perf_counter() - began,
                steps_s=events.steps_s,
                trace="\n".join(events.traces),
            )
        )
    return outcomes


def ingest_market(
    pairs: Sequence[str], days: Sequence[date], source: str, instance: dg.DagsterInstance
) -> list[RunOutcome]:
    """In process: ``ohlcv_candles`` for the months that ``days`` fall in, one run per block of pairs."""
    from assets.partitions import months_of
    from cyber_pipelines.keys import pair_to_key

    keys = ensure_partitions(instance, "pairs", [pair_to_key(p) for p in pairs])
    order = instance.get_dynamic_partitions("pairs")
    return execute_in_process(plan_market(keys, months_of(days), source, order).specs, instance)


def ingest_github(
    repos: Sequence[str], days: Sequence[date], source: str, instance: dg.DagsterInstance
) -> list[RunOutcome]:
    """In process: ``github_activity`` for the months that ``days`` fall in."""
    from assets.partitions import months_of
    from cyber_pipelines.github.activity import repo_to_key

    keys = ensure_partitions(instance, "repos", [repo_to_key(r) for r in repos])
    order = instance.get_dynamic_partitions("repos")
    return execute_in_process(plan_github(keys, months_of(days), source, order).specs, instance)


def ingest_moat(days: Sequence[date], source: str, instance: dg.DagsterInstance) -> list[RunOutcome]:
    """In process: ``moat_records`` for the months that ``days`` fall in."""
    from assets.partitions import months_of

    return execute_in_process(plan_moat(months_of(days), source).specs, instance)


def build_features(pairs: Sequence[str], source: str, instance: dg.DagsterInstance) -> list[RunOutcome]:
    """In process: each pair's feature table and lead-lag report."""
    from cyber_pipelines.keys import pair_to_key

    keys = ensure_partitions(instance, "pairs", [pair_to_key(p) for p in pairs])
    return execute_in_process(feature_specs(keys, source), instance)
