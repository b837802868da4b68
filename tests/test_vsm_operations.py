"""S1 operations and S4 intelligence on a real instance: the market candles sensor, the GitHub sensor's VSM
gate and the prospecting sensor, evaluated with ``build_sensor_context`` against the VSM event log."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Self

import dagster as dg
import pytest
import yaml
from fakes.kraken import DEFAULT_NOW, FakeKraken

import sensors.github as github_module
import sensors.market as market_module
import sensors.prospecting as prospecting_module
from assets.market import ohlcv_candles
from assets.partitions import pair_month_key, pair_month_partitions
from cyber_pipelines.github.activity import repo_to_key
from cyber_pipelines.resources import MarketDataResource, StorageResource, VsmResource
from cyber_pipelines.vsm.breaker import Breaker, allows_run
from cyber_pipelines.vsm.events import EventLog
from cyber_pipelines.vsm.ledger import LedgerEntry
from cyber_pipelines.vsm.policy import DEFAULT_POLICY
from cyber_pipelines.vsm.system import current_state
from sensors.github import github_activity_sensor
from sensors.market import market_candles_sensor
from sensors.prospecting import prospecting_sensor

NOW = datetime(2024, 3, 11, 9, 30, tzinfo=UTC)  # newest publishable candle: 2024-03-10 23:00
HOUR = "2024-03-10T23:00Z"


@pytest.fixture
def instance() -> dg.DagsterInstance:
    return dg.DagsterInstance.ephemeral()


@pytest.fixture
def log() -> EventLog:
    return VsmResource().log()  # the test's DAGSTER_HOME/vsm/events.db, what the sensors open


def freeze(monkeypatch: pytest.MonkeyPatch, module: object, now: datetime) -> None:
    monkeypatch.setattr(module, "now_utc", lambda: now)


def ingest(instance: dg.DagsterInstance, pair: str, month: date) -> None:
    """A real synthetic materialization of one pair-month (a past month: all its days)."""
    result = dg.materialize(
        [ohlcv_candles],
        instance=instance,
        partition_key=str(pair_month_key(pair, month)),
        resources={"market": MarketDataResource(), "storage": StorageResource()},
    )
    assert result.success


def hibernate(log: EventLog, pair: str) -> None:
    entry = LedgerEntry(pair, "rule_of_three", -0.2, 0.2, 0.2, 90, 2, 0.0, "hibernated", "P&L -20% for 90 days", NOW)
    log.append("pair_state", "hibernated", entry.reason, pair=pair, data=entry.to_json())


def breaker(log: EventLog, pair: str | None, state: str, since: datetime = NOW) -> None:
    data = Breaker(state, since, f"test: breaker {state}").to_json()  # type: ignore[arg-type]
    log.append("breaker", state, data["reason"], pair=pair, data=data)


def market_tick(instance: dg.DagsterInstance, cursor: str | None = None) -> dg.SensorResult | dg.SkipReason:
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"vsm": VsmResource()})
    result = market_candles_sensor(context)
    assert isinstance(result, dg.SensorResult | dg.SkipReason)
    return result


# --- S1: market candles --------------------------------------------------------------------------
def test_market_sensor_requests_only_unblocked_stale_pairs_once_per_pair_and_hour(
    instance: dg.DagsterInstance, log: EventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    freeze(monkeypatch, market_module, NOW)
    pairs = ["ADA-USD", "ATOM-USD", "BTC-USD", "DOT-USD", "ETH-USD", "NEAR-USD", "SOL-USD"]
    instance.add_dynamic_partitions("pairs", pairs)
    ingest(instance, "BTC-USD", date(2024, 3, 1))  # stored through 2024-03-31: up to date
    ingest(instance, "ETH-USD", date(2024, 2, 1))  # stored through 2024-02-29: stale
    # SOL-USD: nothing stored yet
    hibernate(log, "DOT-USD")
    breaker(log, "NEAR-USD", "open")
    instance.report_runless_asset_event(
        dg.AssetMaterialization(ohlcv_candles.key, partition="2024-03-01|ADA-USD", metadata={"source": "landing"})
    )
    instance.add_run(
        dg.DagsterRun(
            job_name="market_ingest",
            run_id="atom-under-way",
            status=dg.DagsterRunStatus.STARTED,
            tags={"dagster/partition": "2024-03-01|ATOM-USD"},
        )
    )

    context = dg.build_sensor_context(instance=instance, resources={"vsm": VsmResource()})
    result = market_candles_sensor(context)
    assert isinstance(result, dg.SensorResult)
    requests = list(result.run_requests or [])
    assert [(r.run_key, str(r.partition_key)) for r in requests] == [
        (f"s1:market:ETH-USD:{HOUR}", "2024-03-01|ETH-USD"),
        (f"s1:market:SOL-USD:{HOUR}", "2024-03-01|SOL-USD"),
    ]
    for request in requests:
        pair = str(request.partition_key).split("|")[1]
        assert request.tags["cyber/vsm_pair"] == pair and "cyber/vsm_trial" not in request.tags
        assert request.run_config == {"ops": {"ohlcv_candles": {"config": {"source": "synthetic"}}}}
    with dg.partition_loading_context(dynamic_partitions_store=instance):
        assert all(pair_month_partitions.has_partition_key(str(r.partition_key)) for r in requests)

    cursor = json.loads(result.cursor or "{}")
    assert cursor["requested"] == [r.run_key for r in requests]
    skipped = cursor["skipped"]
    assert set(skipped) == {"ADA-USD", "ATOM-USD", "BTC-USD", "DOT-USD", "NEAR-USD"}
    assert skipped["DOT-USD"].startswith("hibernated: P&L -20%")
    assert skipped["NEAR-USD"].startswith("breaker open: test: breaker open")
    assert skipped["ADA-USD"].startswith("landing source")
    assert "under way" in skipped["ATOM-USD"]
    assert skipped["BTC-USD"] == "up to date through 2024-03-31 23:00"

    # later in the same day the newest publishable hour is the same: the same run_keys (Dagster runs each once)
    freeze(monkeypatch, market_module, NOW + timedelta(hours=5))
    again = market_tick(instance)
    assert isinstance(again, dg.SensorResult)
    assert [r.run_key for r in again.run_requests or []] == [r.run_key for r in requests]
    # once the next day closes, one new request per stale pair
    freeze(monkeypatch, market_module, NOW + timedelta(days=1))
    tomorrow = market_tick(instance)
    assert isinstance(tomorrow, dg.SensorResult)
    assert [r.run_key for r in tomorrow.run_requests or []] == [
        "s1:market:ETH-USD:2024-03-11T23:00Z",
        "s1:market:SOL-USD:2024-03-11T23:00Z",
    ]


def test_market_sensor_skips_every_pair_while_the_system_breaker_is_open(
    instance: dg.DagsterInstance, log: EventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    freeze(monkeypatch, market_module, NOW)
    instance.add_dynamic_partitions("pairs", ["BTC-USD", "ETH-USD"])
    breaker(log, None, "open")
    context = dg.build_sensor_context(instance=instance, resources={"vsm": VsmResource()})
    skip = market_candles_sensor(context)
    assert isinstance(skip, dg.SkipReason)
    text = skip.skip_message or ""
    assert "BTC-USD: system breaker open" in text and "ETH-USD: system breaker open" in text
    assert set(json.loads(context.cursor or "{}")["skipped"]) == {"BTC-USD", "ETH-USD"}


def test_a_half_open_breaker_gets_a_single_trial_run(
    instance: dg.DagsterInstance, log: EventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    freeze(monkeypatch, market_module, NOW)
    instance.add_dynamic_partitions("pairs", ["ETH-USD", "SOL-USD"])
    breaker(log, "SOL-USD", "half_open")

    first = market_tick(instance)
    assert isinstance(first, dg.SensorResult)
    by_pair = {r.tags["cyber/vsm_pair"]: r for r in first.run_requests or []}
    assert set(by_pair) == {"ETH-USD", "SOL-USD"}  # nothing stored: both stale
    trial = by_pair["SOL-USD"]
    assert trial.tags["cyber/vsm_trial"] == "true" and "cyber/vsm_trial" not in by_pair["ETH-USD"].tags
    event = log.latest("breaker")["SOL-USD"]
    assert (event.decision, event.reason) == ("half_open", f"trial run {trial.run_key} requested")
    recorded = current_state(log, ["SOL-USD"]).pairs["SOL-USD"].breaker
    assert recorded.state == "half_open" and recorded.trial_run == trial.run_key and not allows_run(recorded)

    # the next day's hour would be a new run_key: still no second trial while the first decides
    freeze(monkeypatch, market_module, NOW + timedelta(days=1))
    context = dg.build_sensor_context(instance=instance, resources={"vsm": VsmResource()})
    second = market_candles_sensor(context)
    assert isinstance(second, dg.SensorResult)
    assert [r.tags["cyber/vsm_pair"] for r in second.run_requests or []] == ["ETH-USD"]
    assert json.loads(second.cursor or "{}")["skipped"]["SOL-USD"] == (
        f"breaker half-open: trial run {trial.run_key} already requested"
    )
    assert sum(e.kind == "breaker" for e in log.recent(100)) == 2  # the test's half-open and the one trial


def test_a_half_open_system_breaker_lets_one_pair_run_as_its_trial(
    instance: dg.DagsterInstance, log: EventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    freeze(monkeypatch, market_module, NOW)
    instance.add_dynamic_partitions("pairs", ["BTC-USD", "ETH-USD"])
    breaker(log, None, "half_open")
    result = market_tick(instance)
    assert isinstance(result, dg.SensorResult)
    (request,) = result.run_requests or []
    assert request.run_key == f"s1:market:BTC-USD:{HOUR}" and request.tags["cyber/vsm_trial"] == "true"
    assert current_state(log, []).system.trial_run == request.run_key
    assert "system breaker half-open" in json.loads(result.cursor or "{}")["skipped"]["ETH-USD"]
    skip = market_tick(instance)
    assert isinstance(skip, dg.SkipReason) and "system breaker half-open" in (skip.skip_message or "")


# --- S1: GitHub repos ----------------------------------------------------------------------------
def freeze_github(monkeypatch: pytest.MonkeyPatch, now: datetime) -> None:
    class Frozen(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> Self:
            return cls.fromtimestamp(now.timestamp(), tz)

    monkeypatch.setattr(github_module, "datetime", Frozen)


def test_github_sensor_skips_repos_whose_pairs_are_all_blocked(
    instance: dg.DagsterInstance, log: EventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    freeze_github(monkeypatch, NOW)
    solana, geth, uniswap, near = (
        repo_to_key(r) for r in ("solana-labs/solana", "ethereum/go-ethereum", "Uniswap/v3-core", "near/nearcore")
    )
    instance.add_dynamic_partitions("repos", [solana, geth, uniswap, near])
    instance.add_dynamic_partitions("pairs", ["ETH-USD", "SOL-USD", "UNI-USD"])
    breaker(log, "SOL-USD", "open")  # solana informs SOL only: skipped
    hibernate(log, "UNI-USD")  # v3-core informs ETH and UNI: ETH still runs, so it goes on
    # nearcore informs NEAR, which is not an active pair: nothing blocks it

    def tick() -> tuple[dg.SensorResult | dg.SkipReason, str | None]:
        context = dg.build_sensor_context(instance=instance)
        result = github_activity_sensor(context)
        assert isinstance(result, dg.SensorResult | dg.SkipReason)
        return result, context.cursor

    result, _ = tick()
    assert isinstance(result, dg.SensorResult)
    assert {str(r.partition_key) for r in result.run_requests or []} == {
        f"2024-03-01|{geth}",
        f"2024-03-01|{uniswap}",
        f"2024-03-01|{near}",
    }
    skipped = json.loads(result.cursor or "{}")["skipped"]
    assert list(skipped) == [solana]
    assert skipped[solana] == "every pair it informs is stopped: SOL-USD: breaker open: test: breaker open"

    breaker(log, "ETH-USD", "open")  # now every pair v3-core and go-ethereum inform is stopped too
    result, _ = tick()
    assert isinstance(result, dg.SensorResult)
    assert [str(r.partition_key) for r in result.run_requests or []] == [f"2024-03-01|{near}"]
    assert set(json.loads(result.cursor or "{}")["skipped"]) == {solana, geth, uniswap}

    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            "github_activity", partition=f"2024-03-01|{near}", metadata={"last_timestamp": "2024-03-10 23:00:00+00:00"}
        )
    )
    skip, cursor = tick()
    assert isinstance(skip, dg.SkipReason)
    text = skip.skip_message or ""
    assert text.startswith("all 1 repos not stopped by the VSM have 2024-03-10")
    assert f"skipped {solana}: every pair it informs is stopped: SOL-USD: breaker open" in text
    assert set(json.loads(cursor or "{}")["skipped"]) == {solana, geth, uniswap}


# --- S4: prospecting -----------------------------------------------------------------------------
ACTIVE = ["BTC-USD", "ETH-USD", "SOL-USD"]


def write_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **changes: dict) -> None:
    """A policy file (CYBER_POLICY) with the given sections changed."""
    raw = yaml.safe_load(DEFAULT_POLICY.read_text())
    for section, values in changes.items():
        raw[section] = {**raw[section], **values}
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("CYBER_POLICY", str(path))


LENIENT = {"min_points": 3.0, "min_confidence": 0.4}  # without moat data nothing reaches the defaults


def prospect(instance: dg.DagsterInstance, market: MarketDataResource | None = None) -> dg.SensorResult | dg.SkipReason:
    resources = {"vsm": VsmResource(), "market": market or MarketDataResource(), "storage": StorageResource()}
    result = prospecting_sensor(dg.build_sensor_context(instance=instance, resources=resources))
    assert isinstance(result, dg.SensorResult | dg.SkipReason)
    return result


def added_keys(instance: dg.DagsterInstance, result: dg.SensorResult) -> list[str]:
    """Apply the result's partition requests as the daemon would; the keys added."""
    keys = []
    for request in result.dynamic_partitions_requests or []:
        assert isinstance(request, dg.AddDynamicPartitionsRequest) and request.partitions_def_name == "pairs"
        instance.add_dynamic_partitions("pairs", list(request.partition_keys))
        keys += list(request.partition_keys)
    return keys


def test_prospecting_adds_the_best_synthetic_pair_then_waits_out_the_cooldown(
    instance: dg.DagsterInstance, log: EventLog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_policy(tmp_path, monkeypatch, prospecting=LENIENT)
    freeze(monkeypatch, prospecting_module, NOW)
    instance.add_dynamic_partitions("pairs", ACTIVE)

    result = prospect(instance)
    assert isinstance(result, dg.SensorResult) and not result.run_requests
    (key,) = added_keys(instance, result)  # max_additions_per_tick: 1
    added = log.latest("prospect")[key]
    assert added.decision == "added" and added.reason.startswith("added: points ")
    rejected = log.latest("prospect")[None]
    assert rejected.decision == "rejected" and rejected.reason.startswith("8 candidate(s) not added")
    others = rejected.data["scores"]
    assert len(rejected.data["reasons"]) == 8 and key.replace("-", "/") not in rejected.data["reasons"]
    assert all(added.data["points"] >= score["points"] for score in others.values())  # the best one
    assert json.loads(result.cursor or "{}")["added"] == [key.replace("-", "/")]

    # within the cooldown (60 minutes): qualified pairs wait
    freeze(monkeypatch, prospecting_module, NOW + timedelta(minutes=59))
    cooling = prospect(instance)
    assert isinstance(cooling, dg.SkipReason) and "cooldown: last addition at 2024-03-11 09:30 UTC" in (
        cooling.skip_message or ""
    )
    # after it, the next best is added
    freeze(monkeypatch, prospecting_module, NOW + timedelta(minutes=61))
    later = prospect(instance)
    assert isinstance(later, dg.SensorResult)
    (second,) = added_keys(instance, later)
    assert second != key and second not in ACTIVE
    assert [e.pair for e in log.query(kinds=["prospect"]) if e.decision == "added"] == [key, second]


def test_prospecting_respects_a_recent_addition_in_the_log(
    instance: dg.DagsterInstance, log: EventLog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_policy(tmp_path, monkeypatch, prospecting=LENIENT)
    freeze(monkeypatch, prospecting_module, NOW)
    instance.add_dynamic_partitions("pairs", ACTIVE)
    log.append("prospect", "added", "added by an earlier tick", pair="ETH-USD", at=NOW - timedelta(minutes=10))
    skip = prospect(instance)
    assert isinstance(skip, dg.SkipReason) and "cooldown: last addition at 2024-03-11 09:20 UTC" in (
        skip.skip_message or ""
    )
    assert [e.decision for e in log.query(kinds=["prospect"])] == ["added", "rejected"]


def test_prospecting_never_goes_above_max_pairs(
    instance: dg.DagsterInstance, log: EventLog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    freeze(monkeypatch, prospecting_module, NOW)
    instance.add_dynamic_partitions("pairs", ACTIVE)
    write_policy(tmp_path, monkeypatch, prospecting={**LENIENT, "max_additions_per_tick": 5}, active={"max_pairs": 3})
    full = prospect(instance)
    assert isinstance(full, dg.SkipReason) and "at max_pairs: 3 active (limit 3)" in (full.skip_message or "")
    assert instance.get_dynamic_partitions("pairs") == ACTIVE

    # room for one though five could be added per tick: one
    write_policy(tmp_path, monkeypatch, prospecting={**LENIENT, "max_additions_per_tick": 5}, active={"max_pairs": 4})
    one = prospect(instance)
    assert isinstance(one, dg.SensorResult)
    assert len(added_keys(instance, one)) == 1 and len(instance.get_dynamic_partitions("pairs")) == 4


def test_prospecting_with_the_default_policy_and_no_moat_data_adds_nothing_and_says_why(
    instance: dg.DagsterInstance, log: EventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    freeze(monkeypatch, prospecting_module, NOW)
    instance.add_dynamic_partitions("pairs", ACTIVE)
    skip = prospect(instance)
    assert isinstance(skip, dg.SkipReason)
    assert (skip.skip_message or "").startswith("no pair added of 9 scanned (3 active): ")
    assert "consensus" in (skip.skip_message or "")
    (event,) = log.query(kinds=["prospect"])
    assert event.decision == "rejected" and len(event.data["reasons"]) == 9

    breaker(log, None, "open")
    stopped = prospect(instance)
    assert isinstance(stopped, dg.SkipReason) and (stopped.skip_message or "").startswith("system breaker open")


def test_prospecting_scans_the_exchange_and_reports_its_faults(
    instance: dg.DagsterInstance, log: EventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    freeze(monkeypatch, prospecting_module, DEFAULT_NOW)
    instance.add_dynamic_partitions("pairs", ["BTC-USD"])
    with FakeKraken(history_days=30) as kraken:
        market = MarketDataResource(source="ccxt", exchange_url=kraken.url, timeout_ms=2_000, max_retries=0)
        scanned = prospect(instance, market)
        assert isinstance(scanned, dg.SkipReason)  # no moat data: nothing qualifies by default
        assert (scanned.skip_message or "").startswith("no pair added of 2 scanned (1 active)")
        assert set(log.latest("prospect")[None].data["reasons"]) == {"ETH/USD", "SOL/USD"}
        assert len(kraken.ohlc_requests) == 2

        kraken.permanent_error = "EAPI:Invalid key"
        refused = prospect(instance, market)
    assert isinstance(refused, dg.SkipReason)
    assert (refused.skip_message or "").startswith("exchange scan failed: ")
    assert "\n" not in (refused.skip_message or "")
