"""The viable system's sensors: they feed the event log and step the algedonic channel.

- ``vsm_run_failure_sensor`` / ``vsm_run_success_sensor``: every run that ends becomes an event (pair,
  job, error, seconds), the raw material of pain and of the temporal patterns.
- ``vsm_check_sensor`` (S3* audit): every asset check evaluation becomes an event of its pair: check_success,
  check_failure (ERROR: it counts as pain) or check_warning (WARN: informs, e.g. an adapter kept off).
- ``vsm_zombie_sensor``: runs recorded as started whose process is gone are marked failed with the reason.
- ``vsm_algedonic_sensor``: pain per pair and overall, temporal patterns, circuit breakers (and incident
  memory on a trip); reports the ``vsm_status`` and ``vsm_events`` assets.
- ``vsm_policy_sensor`` (S5): reports the policy in force as ``vsm_policy``; a bad edit is refused.
All run by default: they only read the instance and write the VSM's own log (no runs are launched).
The decisions are plain Python in ``cyber_pipelines.vsm``; this module reads the instance and records.
"""

import re
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import dagster as dg
import polars as pl

from assets.partitions import PAIRS
from cyber_pipelines.config import data_dir
from cyber_pipelines.orchestrate import one_line
from cyber_pipelines.report import markdown_table
from cyber_pipelines.resources import StorageResource, VectorStoreResource, VsmResource
from cyber_pipelines.vsm.events import Event, EventLog, utc
from cyber_pipelines.vsm.policy import Policy
from cyber_pipelines.vsm.system import Evaluation, Observations, State, current_state, evaluate, window
from cyber_pipelines.vsm.zombies import RunProcess, zombie_reason

VSM_GROUP = "vsm"
PAIR_KEY = re.compile(r"^[A-Z0-9]{2,12}-[A-Z0-9]{2,12}$")
PID = re.compile(r"\(pid: (\d+)\)")
REASON_CHARS = 300  # an event's reason: one line
RECENT_EVENTS = 30  # rows of the vsm_events table in the UI
INCIDENT_DIM = 32

vsm_policy_asset = dg.AssetSpec(
    "vsm_policy",
    group_name=VSM_GROUP,
    kinds={"yaml"},
    description="S5: the policy in force (limits, thresholds, temporal rules); reported by vsm_policy_sensor.",
)
vsm_status_asset = dg.AssetSpec(
    "vsm_status",
    group_name=VSM_GROUP,
    kinds={"python"},
    description="Each pair's state (active, probation level, hibernated), pain and circuit breaker; "
    "reported by vsm_algedonic_sensor when something changes.",
)
vsm_events_asset = dg.AssetSpec(
    "vsm_events",
    group_name=VSM_GROUP,
    kinds={"sql"},
    description="The VSM event log: every decision with its reason, totally ordered (the newest here).",
)


# ------------------------------------------------------------------------------------------ reading runs
def pair_of_tags(tags: dict[str, str]) -> str | None:
    """The pair a run worked on, from its partition tags (one pair, or a range within one pair)."""
    candidates = [tags.get("dagster/partition/pair"), tags.get("dagster/partition")]
    start, end = tags.get("dagster/asset_partition_range_start"), tags.get("dagster/asset_partition_range_end")
    if start and end:
        first, last = start.split("|")[-1], end.split("|")[-1]
        candidates.append(first if first == last else None)
    for value in candidates:
        if value:
            key = value.split("|")[-1]
            if PAIR_KEY.match(key):
                return key
    return None


ZOMBIE_TAG = "cyber/zombie"  # set on a run the VSM marked failed as a zombie


def run_event(run: dg.DagsterRun, kind: str, reason: str, data: dict[str, Any], at: datetime) -> Event:
    """The event of a run's end (recorded once per run and kind, whoever sees it first). The failure of a
    reaped zombie is marked: its ``zombie`` event already counts it."""
    tags = dict(run.tags)
    if kind == "run_failure" and tags.get(ZOMBIE_TAG):
        data = {**data, "zombie": True}
    data = {"run_id": run.run_id, "job": run.job_name, "attempt": int(tags.get("dagster/retry_number", 0)) + 1, **data}
    decision = {"run_failure": "failed", "run_success": "succeeded"}.get(kind, kind)
    return Event(kind, decision, reason, at, pair_of_tags(tags), data, key=f"{kind}:{run.run_id}")


def failure_message(instance: dg.DagsterInstance, run_id: str) -> str:
    """The root error of a failed run: its first step failure, else the run failure's message."""
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
        error = entry.dagster_event.step_failure_data.error if entry.dagster_event else None
        while error is not None and error.cause is not None:  # past Dagster's "Error occurred while executing"
            error = error.cause
        if error is not None:
            return error.message
    failures = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    return (failures[-1].message if failures else "") or "run failed"


def failure_event(instance: dg.DagsterInstance, run: dg.DagsterRun, at: datetime) -> Event:
    """The run_failure event of a failed run, with its root error."""
    error = one_line(failure_message(instance, run.run_id), REASON_CHARS)
    return run_event(run, "run_failure", error, {"error": one_line(error, 160)}, at)


def finished_run_events(instance: dg.DagsterInstance, since: datetime, limit: int = 1000) -> list[Event]:
    """run_failure / run_success events of the runs that ended since ``since`` (what the run status sensors
    record one by one; ``vsm tick`` and tests read them this way)."""
    records = instance.get_run_records(
        dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.SUCCESS], updated_after=since),
        limit=limit,
        ascending=True,
    )
    events = []
    for record in records:
        run = record.dagster_run
        at = datetime.fromtimestamp(record.end_time, UTC) if record.end_time else utc()
        if run.status == dg.DagsterRunStatus.FAILURE:
            events.append(failure_event(instance, run, at))
        else:
            seconds = round(record.end_time - record.start_time, 2) if record.start_time and record.end_time else None
            events.append(
                run_event(run, "run_success", f"{run.job_name} succeeded in {seconds} s", {"seconds": seconds}, at)
            )
    return events


@dg.run_failure_sensor(
    name="vsm_run_failure_sensor",
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Algedonic input: every failed run becomes a run_failure event of its pair (or the system).",
)
def vsm_run_failure_sensor(context: dg.RunFailureSensorContext, vsm: VsmResource) -> None:
    run = context.dagster_run
    vsm.log().extend([failure_event(context.instance, run, utc())])


@dg.run_status_sensor(
    name="vsm_run_success_sensor",
    run_status=dg.DagsterRunStatus.SUCCESS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Every successful run becomes a run_success event with its duration (slow runs, silence, trials).",
)
def vsm_run_success_sensor(context: dg.RunStatusSensorContext, vsm: VsmResource) -> None:
    run = context.dagster_run
    record = context.instance.get_run_record_by_id(run.run_id)
    seconds = None
    if record is not None and record.start_time and record.end_time:
        seconds = round(record.end_time - record.start_time, 2)
    vsm.log().extend(
        [run_event(run, "run_success", f"{run.job_name} succeeded in {seconds} s", {"seconds": seconds}, utc())]
    )


def check_keys(repository: Any = None) -> list[dg.AssetCheckKey]:
    """The asset checks of the code location (of ``repository`` when a sensor has it)."""
    if repository is not None:
        return sorted(repository.asset_graph.asset_check_keys, key=str)
    from cyber_pipelines.definitions import defs

    return sorted(defs.resolve_asset_graph().asset_check_keys, key=str)


@lru_cache(maxsize=1024)
def _run_tags(instance: dg.DagsterInstance, run_id: str) -> tuple[tuple[str, str], ...]:
    run = instance.get_run_by_id(run_id)
    return tuple(run.tags.items()) if run is not None else ()


def run_pair(instance: dg.DagsterInstance, run_id: str) -> str | None:
    """The pair of a run, from its partition tags (an evaluation that does not name its partition)."""
    return pair_of_tags(dict(_run_tags(instance, run_id)))


def check_events(
    instance: dg.DagsterInstance, keys: Sequence[dg.AssetCheckKey], after: int, per_check: int = 200
) -> list[Event]:
    """check_failure / check_warning / check_success events of the evaluations with execution id above
    ``after``, oldest first (each check's execution history: the same on every event log storage, run-sharded
    SQLite included)."""
    found = []
    for check_key in keys:
        history = instance.event_log_storage.get_asset_check_execution_history(check_key, limit=per_check)
        for record in history:
            if record.id <= after:
                break
            evaluation = record.event.asset_check_evaluation if record.event else None
            if evaluation is not None:
                found.append((record, evaluation))
    events: list[Event] = []
    for record, evaluation in sorted(found, key=lambda item: item[0].id):
        check = f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}"
        partition = evaluation.partition or record.partition or ""
        pair = pair_of_tags({"dagster/partition": partition}) if partition else run_pair(instance, record.run_id)
        at = datetime.fromtimestamp(record.event.timestamp, UTC) if record.event else utc()
        data: dict[str, Any] = {"check": check, "execution_id": record.id, "partition": partition}
        key = f"check:{record.id}"
        if evaluation.passed:
            events.append(Event("check_success", "passed", f"{check} passed", at, pair, data, key=key))
        else:  # a WARN result informs (e.g. an adapter not promoted); only an ERROR is a failure that hurts
            severity = evaluation.severity.value
            text = evaluation.description or f"{check} failed ({severity})"
            kind, decision = ("check_warning", "warned") if severity == "WARN" else ("check_failure", "failed")
            data["severity"] = severity
            events.append(Event(kind, decision, one_line(f"{check}: {text}", REASON_CHARS), at, pair, data, key=key))
    return events


def check_cursor(log: EventLog) -> int:
    """The execution id of the newest check evaluation in the log (sensor and ``vsm tick`` share it)."""
    kinds = ("check_failure", "check_warning", "check_success")
    latest = [e.data.get("execution_id") for kind in kinds for e in log.latest(kind).values()]
    return max((int(v) for v in latest if v is not None), default=0)


def record_checks(instance: dg.DagsterInstance, log: EventLog, repository: Any = None) -> list[Event]:
    events = check_events(instance, check_keys(repository), check_cursor(log))
    return log.extend(events) if events else []


@dg.sensor(
    name="vsm_check_sensor",
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="S3* audit into the algedonic channel: each asset check evaluation becomes an event of its pair.",
)
def vsm_check_sensor(context: dg.SensorEvaluationContext, vsm: VsmResource) -> dg.SkipReason:
    events = record_checks(context.instance, vsm.log(), context.repository_def)
    failed = sum(e.kind == "check_failure" for e in events)
    return dg.SkipReason(f"recorded {len(events)} check evaluations ({failed} failed)")


# ---------------------------------------------------------------------------------------------- zombies
def _run_process(instance: dg.DagsterInstance, record: Any) -> RunProcess:
    run_id = record.dagster_run.run_id
    pid = None
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        data: Any = entry.dagster_event.event_specific_data if entry.dagster_event else None
        metadata = getattr(data, "metadata", None) or {}
        value = metadata.get("pid")
        text = getattr(value, "value", None) or next(iter(PID.findall(entry.user_message or "")), None)
        if text:
            pid = int(text)
            break
    started = record.start_time or record.create_timestamp.timestamp()
    logs = instance.all_logs(run_id)
    last = logs[-1].timestamp if logs else started
    return RunProcess(run_id, pid, started, last)


def find_zombies(instance: dg.DagsterInstance, policy: Policy, now: float | None = None) -> list[tuple[Any, str]]:
    """Started runs of this machine's launcher whose process is gone, with the reason."""
    moment = now or time.time()
    out = []
    records = instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]), limit=200)
    for record in records:
        host = record.dagster_run.tags.get("cyber/host")
        if host and host != socket.gethostname():
            continue  # another machine's run: Dagster's run monitoring (or that machine's VSM) judges it
        reason = zombie_reason(_run_process(instance, record), moment, 60 * policy.zombies.heartbeat_minutes)
        if reason:
            out.append((record.dagster_run, reason))
    return out


def reap_zombies(instance: dg.DagsterInstance, log: EventLog, policy: Policy) -> list[Event]:
    """Mark each zombie run failed (the run failure sensor then counts it) and log a zombie event."""
    events = []
    for run, reason in find_zombies(instance, policy):
        instance.add_run_tags(run.run_id, {ZOMBIE_TAG: "true"})
        instance.report_run_failed(run, f"zombie run: {reason}")
        events.append(run_event(run, "zombie", reason, {"marked": "failed"}, utc()))
    return log.extend(events) if events else []


@dg.sensor(
    name="vsm_zombie_sensor",
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    description="Runs recorded as STARTED whose process died (a CLI killed with -9) are marked failed with the "
    "reason, and counted by the algedonic channel.",
)
def vsm_zombie_sensor(context: dg.SensorEvaluationContext, vsm: VsmResource) -> dg.SkipReason:
    events = reap_zombies(context.instance, vsm.log(), vsm.policy().policy)
    if not events:
        return dg.SkipReason("no zombie runs")
    return dg.SkipReason("marked failed: " + "; ".join(e.reason for e in events))


# ------------------------------------------------------------------------------------------- algedonic
@dataclass(frozen=True)
class TickReport:
    state: State
    evaluation: Evaluation
    stored: list[Event]


def active_pairs(instance: dg.DagsterInstance) -> list[str]:
    return sorted(instance.get_dynamic_partitions(PAIRS))


def stale_hours(instance: dg.DagsterInstance, pairs: Sequence[str], now: datetime) -> dict[str, float | None]:
    """Hours each live (ccxt) pair's candles are overdue: its newest stored candle against the newest a run can
    publish (the last hour of the last complete UTC day). None for pairs fed by the simulator or landing files
    (history, no freshness expected) and pairs with nothing stored."""
    from assets.market import newest_candles
    from sensors.market import newest_ingestible

    stored, newest = newest_candles(instance), newest_ingestible(now)
    out: dict[str, float | None] = {}
    for pair in pairs:
        if pair in stored and stored[pair][1] == "ccxt":
            out[pair] = max((newest - stored[pair][0]).total_seconds() / 3600, 0.0)
        else:
            out[pair] = None
    return out


def observation_events(instance: dg.DagsterInstance, log: EventLog, seen: Observations, now: datetime) -> list[Event]:
    """``staleness`` events when a pair's data becomes overdue (or fresh again) and a ``queue`` event when
    the number of queued runs changes: the inputs of the staleness and overload patterns."""
    events = []
    last_stale = log.latest("staleness")
    for pair, hours in seen.stale_hours.items():
        periods = 0 if hours is None else int(hours)  # hourly candles: one period per hour
        before = last_stale.get(pair)
        was = int(before.data.get("periods_overdue", 0)) if before is not None else 0
        if (periods > 0) != (was > 0):
            reason = f"{pair}: candles {periods} hour(s) overdue" if periods else f"{pair}: candles fresh again"
            data = {"periods_overdue": periods, "period_seconds": 3600}
            events.append(Event("staleness", "stale" if periods else "fresh", reason, now, pair, data))
    queued = instance.get_runs_count(dg.RunsFilter(statuses=[dg.DagsterRunStatus.QUEUED]))
    last_queue = log.latest("queue").get(None)
    if (last_queue.data.get("queued") if last_queue is not None else 0) != queued:
        events.append(Event("queue", str(queued), f"{queued} run(s) queued", now, None, {"queued": queued}))
    return events


def algedonic_tick(
    instance: dg.DagsterInstance,
    log: EventLog,
    policy: Policy,
    *,
    vectors: VectorStoreResource | None = None,
    root: str | None = None,
    now: datetime | None = None,
    with_staleness: bool = True,
) -> TickReport:
    """One evaluation of the algedonic channel: records pains, temporal matches, breaker transitions,
    and remembers each trip as an incident."""
    moment = utc(now)
    state = current_state(log, active_pairs(instance))
    pairs = [k for k, v in state.pairs.items() if v.ledger is None or v.ledger.state != "hibernated"]
    events = log.query(since=moment - window(policy))
    seen = Observations(
        now=moment,
        active_pairs=pairs,
        events=events,
        stale_hours=stale_hours(instance, pairs, moment) if with_staleness else {},
    )
    observed = observation_events(instance, log, seen, moment)
    result = evaluate(state, seen, policy)
    stored = log.extend([*observed, *result.events]) if observed or result.events else []
    trips = [e for e in stored if e.kind == "breaker" and e.decision == "open"]
    if trips and vectors is not None:
        remember_incidents(trips, events, vectors, root)
    return TickReport(state, result, stored)


def remember_incidents(
    trips: Sequence[Event], events: Sequence[Event], vectors: VectorStoreResource, root: str | None
) -> None:
    """Each trip into the incident memory with the embedding of its pair's (or, for the system, all) events."""
    from cyber_pipelines.vsm.incidents import IncidentMemory, incident_of

    with vectors.session(_root(root), "vsm", INCIDENT_DIM, kind="incidents") as store:
        memory = IncidentMemory(store)
        for trip in trips:
            related = [e for e in events if trip.pair is None or e.pair in (trip.pair, None)]
            memory.remember(*incident_of(trip, related, dim=INCIDENT_DIM))


def _root(root: str | None) -> Any:
    from pathlib import Path

    return Path(root) if root else data_dir()


def status_rows(state: State, pains: dict[str | None, Any] | None = None) -> list[dict[str, Any]]:
    rows = []
    for key, view in sorted(state.pairs.items()):
        ledger = view.ledger
        pain = pains[key].score if pains and key in pains else view.pain
        rows.append(
            {
                "pair": key,
                "state": ledger.state if ledger else "active",
                "level": ledger.level if ledger else 0,
                "size": ledger.size_multiplier if ledger else 1.0,
                "pnl": None if ledger is None else round(ledger.pnl, 4),
                "pain": None if pain is None else round(pain, 3),
                "breaker": view.breaker.state,
                "breaker_reason": view.breaker.reason,
            }
        )
    return rows


def rows_markdown(rows: Sequence[dict[str, Any]]) -> str:
    return markdown_table(pl.DataFrame(list(rows), infer_schema_length=None)) if rows else "(none)"


def status_materialization(state: State, report: TickReport | None = None) -> dg.AssetMaterialization:
    pains = report.evaluation.pains if report else None
    rows = status_rows(state, pains)
    overall = pains[None].score if pains else state.system_pain
    return dg.AssetMaterialization(
        vsm_status_asset.key,
        metadata={
            "pairs": len(rows),
            "hibernated": sum(r["state"] == "hibernated" for r in rows),
            "on_probation": sum(r["state"] == "probation" for r in rows),
            "breakers_open": sum(r["breaker"] == "open" for r in rows),
            "system_breaker": state.system.state,
            "overall_pain": float(overall or 0.0),
            "status": dg.MetadataValue.md(rows_markdown(rows)),
        },
    )


def events_materialization(log: EventLog) -> dg.AssetMaterialization:
    recent = log.recent(RECENT_EVENTS)
    rows = [
        {"seq": e.seq, "at": e.at.strftime("%Y-%m-%d %H:%M:%S"), "kind": e.kind, "pair": e.pair, "decision": e.decision,
         "reason": e.reason}
        for e in reversed(recent)
    ]  # fmt: skip
    return dg.AssetMaterialization(
        vsm_events_asset.key,
        metadata={
            "events": log.count(),
            "last_seq": log.last_seq(),
            "log": repr(log),
            "recent": dg.MetadataValue.md(rows_markdown(rows)),
        },
    )


@dg.sensor(
    name="vsm_algedonic_sensor",
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    description="The algedonic channel: pain per pair and overall from drawdown, failed checks, stale data and "
    "failed runs; the temporal patterns; above the trip threshold a pair's (or the system's) circuit breaker opens "
    "and its automation stops, half-opens after the cooldown and closes on a successful trial run.",
)
def vsm_algedonic_sensor(
    context: dg.SensorEvaluationContext, vsm: VsmResource, vectors: VectorStoreResource, storage: StorageResource
) -> dg.SensorResult | dg.SkipReason:
    log = vsm.log()
    report = algedonic_tick(context.instance, log, vsm.policy().policy, vectors=vectors, root=storage.root or None)
    if not report.stored:
        worst = max(report.evaluation.pains.items(), key=lambda kv: kv[1].score, default=(None, None))
        return dg.SkipReason(
            f"no change; highest pain {worst[1].score:.2f} ({worst[0] or 'system'})" if worst[1] else "no pairs"
        )
    state = current_state(log, active_pairs(context.instance))
    return dg.SensorResult(asset_events=[status_materialization(state, report), events_materialization(log)])


# ----------------------------------------------------------------------------------------------- policy
def policy_events(log: EventLog, vsm: VsmResource) -> tuple[Event | None, Any]:
    """A ``policy`` event when the policy in force (or the refusal of an edit) changed since the last one."""
    current = vsm.policy()
    digest = current.policy.digest()
    last = log.latest("policy").get(None)
    decision = "refused" if current.error else "in force"
    if last is not None and last.data.get("digest") == digest and last.data.get("error") == current.error:
        return None, current
    reason = current.error or f"policy {digest} from {current.source}"
    if current.error:
        reason = f"{current.error}; policy {digest} stays in force"
    data = {"digest": digest, "source": current.source, "error": current.error}
    return log.append("policy", decision, reason, data=data), current


@dg.sensor(
    name="vsm_policy_sensor",
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    description="S5: reads the policy file (CYBER_POLICY or the packaged one); a valid edit comes into force, a bad "
    "one is refused with its one-line error and the last good policy stays. Reports vsm_policy.",
)
def vsm_policy_sensor(context: dg.SensorEvaluationContext, vsm: VsmResource) -> dg.SensorResult | dg.SkipReason:
    log = vsm.log()
    event, current = policy_events(log, vsm)
    if event is None:
        return dg.SkipReason(f"policy {current.policy.digest()} unchanged")
    import yaml

    text = yaml.safe_dump(current.policy.model_dump(mode="json"), sort_keys=False)
    metadata = {
        "digest": current.policy.digest(),
        "source": current.source,
        "status": "refused edit: " + current.error if current.error else "in force",
        "policy": dg.MetadataValue.md(f"```yaml\n{text}```"),
    }
    return dg.SensorResult(asset_events=[dg.AssetMaterialization(vsm_policy_asset.key, metadata=metadata)])


# --------------------------------------------------------------------------------------------- one tick
RUN_KINDS = ("run_failure", "run_success")
RUN_OVERLAP = timedelta(minutes=10)  # runs re-read before the newest run event (the log records each run once)
FIRST_RUNS = timedelta(days=1)  # how far back a log without run events reads


@dataclass(frozen=True)
class TickOutcome:
    steps: dict[str, list[Event]]  # the events each step recorded, in the order the steps ran
    current: Any  # the PolicyInForce

    @property
    def recorded(self) -> list[Event]:
        return [e for events in self.steps.values() for e in events]


def vsm_tick(instance: dg.DagsterInstance, vsm: VsmResource, log: EventLog) -> TickOutcome:
    """The VSM sensors once, in the daemon's order: policy, ended runs, check evaluations, zombies, the
    algedonic channel (pain, patterns, breakers, incidents), then the P&L ledger (``cyber-pipelines vsm tick``)."""
    from assets.vsm import update_ledger

    policy_event, current = policy_events(log, vsm)
    policy = current.policy
    newest = max((e.at for kind in RUN_KINDS for e in log.latest(kind).values()), default=None)
    since = newest - RUN_OVERLAP if newest is not None else utc() - FIRST_RUNS
    steps = {
        "policy": [policy_event] if policy_event is not None else [],
        "runs": log.extend(finished_run_events(instance, since)),
        "checks": record_checks(instance, log),
        "zombies": reap_zombies(instance, log, policy),
    }
    steps["algedonic"] = algedonic_tick(instance, log, policy, vectors=VectorStoreResource(), root=None).stored
    steps["ledger"] = update_ledger(instance, StorageResource(), log, policy.ledger, utc())[1]
    return TickOutcome(steps, current)


vsm_sensors = [
    vsm_run_failure_sensor,
    vsm_run_success_sensor,
    vsm_check_sensor,
    vsm_zombie_sensor,
    vsm_algedonic_sensor,
    vsm_policy_sensor,
]
vsm_assets = [vsm_policy_asset, vsm_status_asset, vsm_events_asset]
