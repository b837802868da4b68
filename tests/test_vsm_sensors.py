"""The viable system end to end on a real instance: real runs, the real sensors, the real automation gate.

- Repeated failures of one pair drive its pain above the trip threshold: its breaker opens, its automation
  stops while the other pair's goes on; after the cooldown it half-opens and one successful run closes it.
- A pair below the hibernation line long enough hibernates through the pnl_ledger asset: its automation
  stops, its pattern points and adapter files stay, and the backtests size positions from the ledger.
- A run whose process was killed (-9) is found as a zombie, marked failed with the reason, and counted.
- A bad policy edit is refused and the last good policy stays in force.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import polars as pl
import pytest
import yaml

from assets.backtests import backtest_results
from assets.market import ohlcv_candles
from assets.partitions import pair_month_key
from assets.vsm import pnl_ledger
from cyber_pipelines.backtest.store import EQUITY_TABLE
from cyber_pipelines.definitions import defs
from cyber_pipelines.patterns.store import EdgeVectorStore, point_id
from cyber_pipelines.resources import MarketDataResource, StorageResource, VectorStoreResource, VsmResource
from cyber_pipelines.storage import TableStore
from cyber_pipelines.vsm.events import EventLog
from cyber_pipelines.vsm.policy import DEFAULT_POLICY
from cyber_pipelines.vsm.system import current_state, ledger_size
from sensors.vsm import (
    finished_run_events,
    reap_zombies,
    vsm_algedonic_sensor,
    vsm_check_sensor,
    vsm_policy_sensor,
    vsm_run_failure_sensor,
    vsm_run_success_sensor,
)

APRIL, MAY = date(2024, 4, 1), date(2024, 5, 1)


class DownMarket(MarketDataResource):
    """An exchange that is down: every fetch fails."""

    def fetch_days(self, pair: str, days: list[date], source: str) -> dict[date, pl.DataFrame]:
        raise RuntimeError(f"exchange unreachable while fetching {pair}")


def write_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **changes: dict) -> Path:
    raw = yaml.safe_load(DEFAULT_POLICY.read_text())
    for section, values in changes.items():
        raw[section] = {**raw[section], **values}
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("CYBER_POLICY", str(path))
    return path


def resources(tmp_path: Path) -> dict[str, object]:
    return {"vsm": VsmResource(), "vectors": VectorStoreResource(), "storage": StorageResource()}


def ingest(instance: dg.DagsterInstance, pair_key: str, month: date, *, down: bool = False) -> dg.DagsterRun:
    result = dg.materialize(
        [ohlcv_candles],
        instance=instance,
        partition_key=str(pair_month_key(pair_key, month)),
        resources={"market": DownMarket() if down else MarketDataResource(), "storage": StorageResource()},
        raise_on_error=False,
    )
    assert result.success is not down
    return result.dagster_run


def run_sensors(instance: dg.DagsterInstance, run: dg.DagsterRun, tmp_path: Path) -> None:
    """What the daemon does when a run ends: the matching run status sensor records it."""
    kind = (
        dg.DagsterEventType.RUN_FAILURE
        if run.status == dg.DagsterRunStatus.FAILURE
        else dg.DagsterEventType.RUN_SUCCESS
    )
    (event,) = [e.dagster_event for e in instance.all_logs(run.run_id, of_type=kind) if e.dagster_event]
    context = dg.build_run_status_sensor_context(
        sensor_name="vsm",
        dagster_event=event,
        dagster_instance=instance,
        dagster_run=run,
        resources=resources(tmp_path),
    )
    if kind == dg.DagsterEventType.RUN_FAILURE:
        vsm_run_failure_sensor(context.for_run_failure())
    else:
        vsm_run_success_sensor(context)


def tick(instance: dg.DagsterInstance, tmp_path: Path) -> dg.SensorResult | dg.SkipReason:
    context = dg.build_sensor_context(instance=instance, resources=resources(tmp_path))
    vsm_check_sensor(context)
    return vsm_algedonic_sensor(context)


def requested(instance: dg.DagsterInstance, cursor: str | None) -> tuple[set[str], str]:
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    return {str(k) for k in result.get_requested_partitions(dg.AssetKey("pair_features"))}, result.cursor


def test_repeated_failures_trip_one_pairs_breaker_stop_its_automation_and_it_recovers_after_the_cooldown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_policy(tmp_path, monkeypatch, breaker={"cooldown_minutes": 0.05})  # 3 s
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("pairs", ["BTC-USD", "ETH-USD"])
    instance.add_dynamic_partitions("repos", ["ethereum__go-ethereum"])
    _, cursor = requested(instance, None)
    log = VsmResource().log()

    for pair in ("BTC-USD", "ETH-USD"):  # both pairs have new, checked candles
        run_sensors(instance, ingest(instance, pair, APRIL), tmp_path)
    for _ in range(3):  # then the exchange fails three times in a row for BTC
        run_sensors(instance, ingest(instance, "BTC-USD", MAY, down=True), tmp_path)
    result = tick(instance, tmp_path)

    assert isinstance(result, dg.SensorResult)
    assert {e.asset_key.to_user_string() for e in result.asset_events} == {"vsm_status", "vsm_events"}
    state = current_state(log, ["BTC-USD", "ETH-USD"])
    assert state.pairs["BTC-USD"].breaker.state == "open"
    assert state.pairs["ETH-USD"].breaker.state == "closed"
    assert state.system.state == "closed"  # one pair in pain does not stop the others
    trip = log.latest("breaker")["BTC-USD"]
    assert "exchange unreachable" in trip.reason or "3 failed run" in trip.reason, trip.reason
    patterns = {e.decision for e in log.query(kinds=["temporal"], pair="BTC-USD")}
    assert "failure_burst" in patterns
    pains = log.latest("pain")
    assert pains["BTC-USD"].data["score"] > 0.8 and "ETH-USD" not in pains  # ETH felt no pain

    features, cursor = requested(instance, cursor)
    assert features == {"ETH-USD"}  # BTC's automation is stopped, ETH's goes on

    time.sleep(3.2)  # the cooldown passes: half-open, automation may try once
    tick(instance, tmp_path)
    assert current_state(log, ["BTC-USD"]).pairs["BTC-USD"].breaker.state == "half_open"
    features, cursor = requested(instance, cursor)
    assert features == {"BTC-USD"}  # the update it missed while open

    run_sensors(instance, ingest(instance, "BTC-USD", MAY), tmp_path)  # the trial run succeeds
    tick(instance, tmp_path)
    breaker = current_state(log, ["BTC-USD"]).pairs["BTC-USD"].breaker
    assert breaker.state == "closed", breaker.reason
    decisions = [e.decision for e in log.query(kinds=["breaker"], pair="BTC-USD")]
    assert decisions == ["open", "half_open", "closed"]
    assert tick(instance, tmp_path) is not None
    assert [e.decision for e in log.query(kinds=["breaker"], pair="BTC-USD")] == decisions  # no new trip


def test_a_failed_trial_opens_the_breaker_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_policy(tmp_path, monkeypatch, breaker={"cooldown_minutes": 0.05})
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("pairs", ["BTC-USD"])
    log = VsmResource().log()
    for _ in range(3):
        run_sensors(instance, ingest(instance, "BTC-USD", MAY, down=True), tmp_path)
    tick(instance, tmp_path)
    time.sleep(3.2)
    tick(instance, tmp_path)
    run_sensors(instance, ingest(instance, "BTC-USD", MAY, down=True), tmp_path)  # the trial fails
    tick(instance, tmp_path)
    assert [e.decision for e in log.query(kinds=["breaker"], pair="BTC-USD")] == ["open", "half_open", "open"]


def test_a_failed_blocking_check_is_recorded_against_its_pair(tmp_path: Path) -> None:
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("pairs", ["ETH-USD"])

    class GappyMarket(MarketDataResource):
        def fetch_days(self, pair: str, days: list[date], source: str) -> dict[date, pl.DataFrame]:
            candidates = super().fetch_days(pair, days, source)
            gap = date(2024, 4, 18)
            candidates[gap] = candidates[gap].filter(pl.col("timestamp").dt.hour() >= 6)
            return candidates

    result = dg.materialize(
        [ohlcv_candles],
        instance=instance,
        partition_key=str(pair_month_key("ETH-USD", APRIL)),
        resources={"market": GappyMarket(), "storage": StorageResource()},
        raise_on_error=False,
    )
    assert not result.success
    context = dg.build_sensor_context(instance=instance, resources=resources(tmp_path))
    vsm_check_sensor(context)
    log = VsmResource().log()
    failures = log.query(kinds=["check_failure"])
    assert failures and {e.pair for e in failures} == {"ETH-USD"}
    assert any("gap" in e.data["check"] for e in failures)
    vsm_check_sensor(dg.build_sensor_context(instance=instance, resources=resources(tmp_path)))
    assert len(log.query(kinds=["check_failure"])) == len(failures)  # each evaluation is recorded once


def write_backtest(data: Path, pair_key: str, pnl_path: np.ndarray, start: datetime) -> None:
    """A stored out-of-sample backtest of ``pair_key`` whose rule_of_three equity follows ``pnl_path`` (hourly)."""
    store = TableStore(data)
    times = [start + timedelta(hours=i) for i in range(len(pnl_path))]
    curves = pl.DataFrame({"timestamp": times, "rule_of_three": 1 + pnl_path}).with_columns(
        pl.col("timestamp").dt.replace_time_zone("UTC")
    )
    store.write(curves, "synthetic", EQUITY_TABLE, pair_key)
    path = store.path("synthetic", "backtests", pair_key).with_suffix(".json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"config": {"size_multiplier": 1.0}}')


def test_a_pair_below_the_line_for_90_days_hibernates_keeps_its_patterns_and_adapters_and_can_be_woken(
    tmp_path: Path,
) -> None:
    from cyber_pipelines.vsm.ledger import LedgerEntry, wake
    from cyber_pipelines.vsm.policy import load_policy

    data = Path(os.environ["CYBER_DATA_DIR"])
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("pairs", ["BTC-USD", "ETH-USD", "SOL-USD"])
    hours = 24 * 120
    start = datetime(2024, 1, 1, tzinfo=UTC)
    down = np.concatenate([np.linspace(0, -0.20, 24 * 20), np.full(hours - 24 * 20, -0.20)])  # -20% for 100 days
    write_backtest(data, "BTC-USD", down, start)
    write_backtest(data, "ETH-USD", np.linspace(0, -0.07, hours), start)  # probation level 1
    write_backtest(data, "SOL-USD", np.linspace(0, 0.05, hours), start)
    for pair in ("BTC-USD", "ETH-USD", "SOL-USD"):
        instance.report_runless_asset_event(
            dg.AssetMaterialization(backtest_results.key, partition=pair, metadata={"source": "synthetic"})
        )
    patterns = VectorStoreResource.edge_path(data, "synthetic")
    with EdgeVectorStore(patterns, 4) as store:  # BTC's pattern memory and an adapter file
        ids = [point_id("BTC/USD", 1_700_000_000 + 3600 * i) for i in range(5)]
        store.upsert(ids, np.eye(5, 4) + 0.1, [{"pair": "BTC/USD"}] * 5)
    adapter = data / "models" / "adapters" / "BTC-USD" / "adapter.safetensors"
    adapter.parent.mkdir(parents=True)
    adapter.write_bytes(b"weights")

    result = dg.materialize(
        [pnl_ledger], instance=instance, resources={"storage": StorageResource(), "vsm": VsmResource()}
    )
    meta = {k: v.value for k, v in result.asset_materializations_for_node("pnl_ledger")[0].metadata.items()}
    assert (meta["hibernated"], meta["on_probation"], meta["active"]) == (1, 1, 1)
    log = VsmResource().log()
    states = {pair: e.data for pair, e in log.latest("pair_state").items()}
    assert states["BTC-USD"]["state"] == "hibernated" and "hibernated" in log.latest("pair_state")["BTC-USD"].reason
    assert ledger_size(log, "ETH-USD")[0] == 0.5 and ledger_size(log, "SOL-USD")[0] == 1.0

    assert "BTC-USD" in current_state(log, ["BTC-USD"]).blocked()  # its automation stops
    tick(instance, tmp_path)
    with EdgeVectorStore(patterns, 4) as store:
        assert store.count("BTC/USD") == 5  # the patterns are kept
    assert adapter.read_bytes() == b"weights"  # and the adapter

    again = dg.materialize(
        [pnl_ledger], instance=instance, resources={"storage": StorageResource(), "vsm": VsmResource()}
    )
    assert again.success and len(log.query(kinds=["pair_state"])) == 3  # no change, no new event

    entry = LedgerEntry.from_json(log.latest("pair_state")["BTC-USD"].data)
    woken = wake(entry, load_policy().ledger, "woken by a test", datetime.now(UTC))
    log.append("pair_state", woken.state, woken.reason, pair="BTC-USD", data=woken.to_json())
    assert "BTC-USD" not in current_state(log, ["BTC-USD"]).blocked()


ZOMBIE_SCRIPT = textwrap.dedent(
    """
    import time, dagster as dg

    @dg.asset
    def slow_asset():
        time.sleep(120)

    dg.materialize([slow_asset], instance=dg.DagsterInstance.get())
    """
)


def test_a_run_whose_process_was_killed_is_marked_failed_with_the_reason_and_counted(tmp_path: Path) -> None:
    script = tmp_path / "slow.py"
    script.write_text(ZOMBIE_SCRIPT)
    from cyber_pipelines.instance import dagster_home

    dagster_home()  # the test's DAGSTER_HOME, made and seeded with the project's dagster.yaml
    process = subprocess.Popen([sys.executable, str(script)], env=os.environ.copy())
    instance = dg.DagsterInstance.get()
    try:
        deadline = time.time() + 90
        started: list = []
        while time.time() < deadline and not started:
            started = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
            pids = [e for r in started for e in instance.all_logs(r.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)]
            started = started if pids else []
            time.sleep(0.5)
        assert started, "the run never started"
        log = VsmResource().log()
        policy = VsmResource().policy().policy
        assert reap_zombies(instance, log, policy) == []  # alive: not a zombie
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    (run,) = started
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED  # the zombie
    (zombie,) = reap_zombies(instance, log, policy)
    assert zombie.kind == "zombie" and "is gone" in zombie.reason
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
    assert reap_zombies(instance, log, policy) == []  # reaped once
    (failure,) = [
        e for e in finished_run_events(instance, datetime.now(UTC) - timedelta(hours=1)) if e.kind == "run_failure"
    ]
    assert failure.data["zombie"] is True and "is gone" in failure.reason  # its zombie event counts it, not this


def test_a_bad_policy_edit_is_refused_and_the_last_good_policy_stays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_policy(tmp_path, monkeypatch, breaker={"trip": 0.7})
    instance = dg.DagsterInstance.ephemeral()
    context = dg.build_sensor_context(instance=instance, resources=resources(tmp_path))
    first = vsm_policy_sensor(context)
    assert isinstance(first, dg.SensorResult)
    (event,) = first.asset_events
    assert event.metadata["status"].value == "in force"
    assert isinstance(vsm_policy_sensor(context), dg.SkipReason)  # unchanged

    path.write_text(path.read_text().replace("trip: 0.7", "trip: 7"))  # a bad edit
    refused = vsm_policy_sensor(context)
    assert isinstance(refused, dg.SensorResult)
    status = refused.asset_events[0].metadata["status"].value
    assert status.startswith("refused edit: invalid policy") and "breaker.trip" in status
    assert VsmResource().policy().policy.breaker.trip == 0.7  # the last good one stays in force
    log: EventLog = VsmResource().log()
    assert [e.decision for e in log.query(kinds=["policy"])] == ["in force", "refused"]


def test_a_warn_check_result_informs_but_never_hurts(tmp_path: Path) -> None:
    """A WARN result (an adapter kept off, say) on three pairs is a warning, not a failure cascade."""
    from sensors.vsm import algedonic_tick, check_events

    pairs = dg.DynamicPartitionsDefinition(name="pairs")
    spec = dg.AssetCheckSpec("promoted", asset="model")

    @dg.asset(partitions_def=pairs, check_specs=[spec])
    def model() -> Any:
        yield dg.Output(1)
        yield dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN, description="kept the base")

    instance = dg.DagsterInstance.ephemeral()
    keys = ["BTC-USD", "ETH-USD", "SOL-USD"]
    instance.add_dynamic_partitions("pairs", keys)
    for key in keys:
        dg.materialize([model], instance=instance, partition_key=key)
    log = VsmResource().log()
    events = log.extend(check_events(instance, [spec.key], 0))
    assert {e.kind for e in events} == {"check_warning"} and {e.pair for e in events} == set(keys)
    report = algedonic_tick(instance, log, VsmResource().policy().policy, with_staleness=False)
    assert report.evaluation.matches == [] and all(p.score == 0 for p in report.evaluation.pains.values())
    assert current_state(log, keys).system.state == "closed"
