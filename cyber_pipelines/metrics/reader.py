"""Reading the Dagster instance and the VSM log into a ``Snapshot``: the metrics' one Dagster module.

Asset keys are named here rather than imported from ``assets/`` (importing the backtest layer takes seconds
and pulls in the models); ``tests/test_metrics.py`` checks that they name assets of the definitions.
Every section is read on its own: a failure is recorded in ``Snapshot.errors`` and the others still count.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import sqlalchemy as sa

from assets.partitions import PAIRS
from cyber_pipelines.metrics.snapshot import (
    PORTFOLIO,
    SECTIONS,
    WINDOW_HOURS,
    Backtest,
    Candles,
    LedgerFigures,
    PairStatus,
    Snapshot,
    figures_of,
    one_line,
)
from cyber_pipelines.resources import StorageResource, VsmResource
from cyber_pipelines.vsm.events import EVENTS, EventLog, utc

OHLCV = dg.AssetKey("ohlcv_candles")
BACKTESTS = dg.AssetKey("backtest_results")
COMPARISON = dg.AssetKey("strategy_comparison")
ENDED = {
    "success": dg.DagsterRunStatus.SUCCESS,
    "failure": dg.DagsterRunStatus.FAILURE,
    "canceled": dg.DagsterRunStatus.CANCELED,
}
IN_FLIGHT = {
    "queued": dg.DagsterRunStatus.QUEUED,
    "starting": dg.DagsterRunStatus.STARTING,
    "started": dg.DagsterRunStatus.STARTED,
}
RUNS_READ = 10_000  # at most this many runs of the last day are grouped by job
CHECK_KINDS = {"check_success": "passed", "check_failure": "failed"}


def read_snapshot(
    instance: dg.DagsterInstance,
    vsm: VsmResource,
    log: EventLog,
    storage: StorageResource | None = None,
    now: datetime | None = None,
) -> Snapshot:
    """Every section of the metrics, read now. A section's fields are set only when all of it was read; its
    failure is recorded in ``errors``, never raised."""
    began = time.perf_counter()
    snap = Snapshot(now=utc(now))
    readers: dict[str, Callable[[], dict[str, Any]]] = {
        "vsm": lambda: _vsm(instance, vsm, log),
        "ledger": lambda: _ledger(instance, vsm, log, storage or StorageResource()),
        "candles": lambda: _candles(instance),
        "materializations": lambda: _materializations(instance),
        "runs": lambda: _runs(instance, snap.now),
        "events": lambda: _events(log, snap.now),
        "backtests": lambda: _backtests(instance),
    }
    assert tuple(readers) == SECTIONS
    for section, read in readers.items():
        try:
            fields = read()
        except Exception as exc:  # one broken part (a bad curve, a storage error) leaves the others readable
            snap.errors[section] = one_line(exc)
            continue
        for name, value in fields.items():
            setattr(snap, name, value)
    snap.seconds = time.perf_counter() - began
    return snap


def _vsm(instance: dg.DagsterInstance, vsm: VsmResource, log: EventLog) -> dict[str, Any]:
    from cyber_pipelines.vsm.system import current_state
    from sensors.vsm import active_pairs, status_rows

    pairs = active_pairs(instance)
    state = current_state(log, pairs)
    return {
        "pairs": [PairStatus(r["pair"], r["state"], r["size"], r["pain"], r["breaker"]) for r in status_rows(state)],
        "universe": len(pairs),
        "max_pairs": vsm.policy().policy.active.max_pairs,
        "system_breaker": state.system.state,
        "system_pain": state.system_pain,
    }


def _ledger(instance: dg.DagsterInstance, vsm: VsmResource, log: EventLog, storage: StorageResource) -> dict[str, Any]:
    """Each pair's P&L as the ``pnl_ledger`` asset computes it (its latest backtest's stored curve of the
    policy's ledger strategy), read now: the ``pair_state`` events hold it only as of the last state change."""
    from assets.batch import latest_sources
    from cyber_pipelines.vsm.ledger import LedgerEntry, ledger_entry, read_curve

    policy = vsm.policy().policy.ledger
    logged = {pair: LedgerEntry.from_json(e.data) for pair, e in log.latest("pair_state").items() if pair}
    store = storage.store()
    pairs = sorted(set(instance.get_dynamic_partitions(PAIRS)) | set(logged))
    sources = latest_sources(instance, BACKTESTS, pairs)
    ledger = {}
    for pair in pairs:
        source = sources.get(pair)
        curve = None if source is None else read_curve(store, source, pair, policy.strategy)
        entry = ledger_entry(pair, curve, logged.get(pair), policy) if curve is not None else logged.get(pair)
        if entry is not None and entry.as_of is not None:
            ledger[pair] = LedgerFigures(entry.pnl, entry.drawdown, entry.as_of)
    return {"ledger": ledger}


def _candles(instance: dg.DagsterInstance) -> dict[str, Any]:
    """The newest stored candle per pair, with its month's source (``assets.market.newest_candles``)."""
    from assets.market import newest_candles

    stored = newest_candles(instance)
    return {"candles": [Candles(pair, source, through) for pair, (through, source) in sorted(stored.items())]}


def _materializations(instance: dg.DagsterInstance) -> dict[str, Any]:
    materialized = {}
    for record in instance.get_asset_records():
        last = record.asset_entry.last_materialization
        if last is not None:
            materialized[record.asset_entry.asset_key.to_user_string()] = last.timestamp
    return {"materialized": materialized}


def _runs(instance: dg.DagsterInstance, now: datetime) -> dict[str, Any]:
    total = {name: instance.get_runs_count(dg.RunsFilter(statuses=[status])) for name, status in ENDED.items()}
    in_flight = {name: instance.get_runs_count(dg.RunsFilter(statuses=[s])) for name, s in IN_FLIGHT.items()}
    since = now - timedelta(hours=WINDOW_HOURS)
    records = instance.get_run_records(
        dg.RunsFilter(statuses=list(ENDED.values()), updated_after=since), limit=RUNS_READ
    )
    names = {status: name for name, status in ENDED.items()}
    counts: Counter[tuple[str, str]] = Counter()
    for record in records:
        ended = record.end_time or record.update_timestamp.timestamp()
        if ended >= since.timestamp():
            counts[(record.dagster_run.job_name, names[record.dagster_run.status])] += 1
    return {"runs_total": total, "runs_in_flight": in_flight, "runs_day": dict(sorted(counts.items()))}


def _events(log: EventLog, now: datetime) -> dict[str, Any]:
    """Events in the VSM log by kind (all time), and the check evaluations of the last day by check."""
    with log.engine.connect() as conn:
        rows = conn.execute(sa.select(EVENTS.c.kind, sa.func.count()).group_by(EVENTS.c.kind)).all()
    since = now - timedelta(hours=WINDOW_HOURS)
    counts: Counter[tuple[str, str]] = Counter()
    for event in log.query(since=since, kinds=list(CHECK_KINDS)):
        counts[(str(event.data.get("check") or "unknown"), CHECK_KINDS[event.kind])] += 1
    return {"events_total": {str(kind): int(n) for kind, n in sorted(rows)}, "checks_day": dict(sorted(counts.items()))}


def _backtests(instance: dg.DagsterInstance) -> dict[str, Any]:
    return {"backtests": [points[-1] for points in backtest_history(instance, 1).values() if points]}


def backtest_history(instance: dg.DagsterInstance, limit: int) -> dict[str, list[Backtest]]:
    """The last ``limit`` materializations of strategy_comparison (scope ``portfolio``) and of each pair's
    backtest_results, oldest to newest, with their numeric out-of-sample figures."""
    scopes: dict[str, list[Backtest]] = {PORTFOLIO: _history(instance, COMPARISON, None, limit)}
    for pair in sorted(instance.get_materialized_partitions(BACKTESTS)):
        scopes[pair] = _history(instance, BACKTESTS, pair, limit)
    return {scope: points for scope, points in scopes.items() if points}


def _history(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str | None, limit: int) -> list[Backtest]:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None), limit=limit
    ).records
    points = []
    for record in reversed(records):  # newest first from the instance
        materialization = record.asset_materialization
        if materialization is None:
            continue
        metadata = {k: v.value for k, v in materialization.metadata.items()}
        points.append(
            Backtest(
                scope=partition or PORTFOLIO,
                asset=key.to_user_string(),
                source=str(metadata.get("source") or "unknown"),
                at=datetime.fromtimestamp(record.timestamp, UTC),
                run_id=record.run_id,
                figures=figures_of(metadata),
            )
        )
    return points
