"""`cyber-pipelines vsm`: status, tick, similar and wake on the test's own instance, with real (failed) runs.

Runs are made in-process with ``dg.materialize`` on the instance of the test's DAGSTER_HOME (the one the
CLI opens); the VSM event log is SQLite under that home, the incident memory the embedded store under
CYBER_DATA_DIR.
"""

from __future__ import annotations

import json
import shutil
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from cyber_pipelines.cli import main
from cyber_pipelines.instance import get_instance
from cyber_pipelines.vsm.events import EventLog
from cyber_pipelines.vsm.ledger import LedgerEntry
from cyber_pipelines.vsm.policy import DEFAULT_POLICY, load_policy

pairs = dg.DynamicPartitionsDefinition(name="pairs")


@dg.asset(partitions_def=pairs)
def broken() -> None:
    raise ValueError("the exchange said no")


def fail(instance: dg.DagsterInstance, pair: str, times: int = 3) -> None:
    for _ in range(times):
        assert not dg.materialize([broken], instance=instance, partition_key=pair, raise_on_error=False).success


def instance_with(*keys: str) -> dg.DagsterInstance:
    instance = get_instance()
    instance.add_dynamic_partitions("pairs", list(keys))
    return instance


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()  # what the runs logged before
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    document: dict[str, Any] = json.loads(out)
    assert document["ok"] is True
    return document


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "Traceback" not in err
    return lines[0]


def usage_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    assert exc.value.code == 2
    return one_error_line(capsys.readouterr().err)


def by_pair(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["pair"]: row for row in rows}


def test_status_of_an_empty_instance_is_a_status_not_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "vsm", "status")
    assert code == 0, err
    assert "no pairs yet" in out and "no events yet in EventLog(sqlite:" in out
    assert f"policy {load_policy().digest()} from {DEFAULT_POLICY}" in out

    status = run_json(capsys, "vsm", "status")
    assert status["command"] == "vsm status"
    assert status["pairs"] == [] and status["events"] == [] and status["events_in_log"] == 0
    assert status["system"] == {
        "breaker": "closed",
        "breaker_reason": "no trip recorded",
        "pain": None,
        "incident": None,
    }
    assert status["policy"] == {"digest": load_policy().digest(), "source": str(DEFAULT_POLICY), "refused_edit": None}


def test_tick_records_each_failed_run_once_and_a_burst_opens_the_pairs_breaker(
    capsys: pytest.CaptureFixture[str],
) -> None:
    fail(instance_with("BTC-USD", "ETH-USD"), "BTC-USD")

    first = run_json(capsys, "vsm", "tick")
    assert first["recorded"]["run_failure"] == 3 and first["steps"]["runs"] == 3
    assert [t["pair"] for t in first["trips"]] == ["BTC-USD"]
    trip = first["trips"][0]["incident"]
    uuid.UUID(trip)
    again = run_json(capsys, "vsm", "tick")
    assert "run_failure" not in again["recorded"] and again["trips"] == []

    log = EventLog()
    failures = log.query(kinds=["run_failure"])
    assert len(failures) == 3 and {e.pair for e in failures} == {"BTC-USD"}
    assert all("the exchange said no" in e.reason for e in failures)
    bursts = [e for e in log.query(kinds=["temporal"]) if e.decision == "failure_burst"]
    assert [e.pair for e in bursts] == ["BTC-USD"]  # 3 failures within 5 minutes

    status = run_json(capsys, "vsm", "status", "--events", "50")
    rows = by_pair(status["pairs"])
    assert rows["BTC-USD"]["breaker"] == "open" and rows["BTC-USD"]["incident"] == trip
    assert rows["ETH-USD"]["breaker"] == "closed" and "ETH-USD" not in status["blocked"]
    assert status["blocked"]["BTC-USD"].startswith("breaker open: ")
    assert len(status["events"]) == status["events_in_log"] == log.count()

    code, out, _ = run(capsys, "vsm", "status")
    assert code == 0
    assert any(
        line.split()[:2] == ["BTC-USD", "active"] and "open:" in line and trip in line for line in out.splitlines()
    )
    assert f"last 10 of {log.count()} events" in out


def test_similar_lists_the_earlier_incidents_nearest_first(capsys: pytest.CaptureFixture[str]) -> None:
    instance = instance_with("BTC-USD", "ETH-USD")
    fail(instance, "BTC-USD")
    first = run_json(capsys, "vsm", "tick")["trips"][0]
    fail(instance, "ETH-USD")
    second = run_json(capsys, "vsm", "tick")["trips"]
    assert "ETH-USD" in [t["pair"] for t in second]

    found = run_json(capsys, "vsm", "similar", "latest")
    latest = found["incident"]
    assert latest["id"] == second[-1]["incident"]
    assert found["similar"], found
    assert first["incident"] in [row["id"] for row in found["similar"]]
    assert all(row["at"] < latest["at"] for row in found["similar"])
    scores = [row["similarity"] for row in found["similar"]]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
    assert all(row["kinds"].get("run_failure", 0) >= 1 for row in found["similar"] if row["pair"])

    code, out, err = run(capsys, "vsm", "similar", first["incident"], "--k", "3")
    assert code == 0, err
    assert f"incident {first['incident']}: BTC-USD at" in out and "no earlier incident among the" in out

    unknown = str(uuid.uuid4())
    code, _, err = run(capsys, "vsm", "similar", unknown)
    assert code == 1 and f"no incident {unknown} among the" in one_error_line(err)


def test_similar_refuses_bad_ids_an_empty_log_and_an_empty_memory(capsys: pytest.CaptureFixture[str]) -> None:
    assert "not an incident id: 'INC-42'" in usage_error(capsys, "vsm", "similar", "INC-42")
    assert "expected a whole number >= 1" in usage_error(capsys, "vsm", "similar", "latest", "--k", "0")

    code, out, err = run(capsys, "vsm", "similar", "latest", "--json")
    assert code == 1 and "no breaker trip in EventLog(" in one_error_line(err)
    assert json.loads(out)["ok"] is False

    code, _, err = run(capsys, "vsm", "similar", str(uuid.uuid4()))
    assert code == 1 and "the incident memory is empty" in one_error_line(err)


def hibernate(pair: str, pnl: float = -0.2) -> None:
    entry = LedgerEntry(
        pair, "rule_of_three", pnl, 0.25, 0.3, 95, 2, 0.0, "hibernated",
        "P&L -20.0% <= -15.0% for 95 days in a row: hibernated until woken", datetime(2026, 1, 1, tzinfo=UTC),
    )  # fmt: skip
    EventLog().append("pair_state", "hibernated", entry.reason, pair=pair, data=entry.to_json())


def test_wake_wakes_only_a_hibernated_pair(capsys: pytest.CaptureFixture[str]) -> None:
    instance_with("BTC-USD", "ETH-USD")
    hibernate("BTC-USD")
    status = run_json(capsys, "vsm", "status")
    assert by_pair(status["pairs"])["BTC-USD"]["state"] == "hibernated"
    assert status["blocked"]["BTC-USD"].startswith("hibernated: ")
    before = EventLog().count()

    woken = run_json(capsys, "vsm", "wake", "btc/usd", "--reason", "new strategy")
    event = woken["event"]
    assert woken["pair"] == "BTC-USD" and event["kind"] == "pair_state" and event["pair"] == "BTC-USD"
    assert event["decision"] == "probation"  # P&L -20%: the deepest probation level, no longer hibernated
    assert event["data"]["size_multiplier"] == 0.25 and event["data"]["woken_at"]
    assert event["reason"].startswith("woken (new strategy): ")
    assert EventLog().count() == before + 1  # one event, nothing else
    row = by_pair(run_json(capsys, "vsm", "status")["pairs"])["BTC-USD"]
    assert (row["state"], row["level"], row["size"]) == ("probation", 2, 0.25)

    code, _, err = run(capsys, "vsm", "wake", "BTC-USD")
    assert code == 1 and "BTC-USD is not hibernated (probation: woken (new strategy)" in one_error_line(err)
    code, _, err = run(capsys, "vsm", "wake", "ETH-USD")
    assert code == 1 and "ETH-USD is not hibernated: it has no ledger entry yet" in one_error_line(err)
    code, out, err = run(capsys, "vsm", "wake", "ZZZ-USD", "--json")
    assert code == 1 and "ZZZ-USD is not hibernated: unknown pair" in one_error_line(err)
    assert json.loads(out) == {"ok": False, "command": "vsm wake", "error": "ZZZ-USD is not hibernated: unknown pair"}
    assert "not a trading pair: 'nonsense'" in usage_error(capsys, "vsm", "wake", "nonsense")
    assert EventLog().count() == before + 1


def test_status_shows_a_refused_policy_edit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "policy.yaml"
    shutil.copyfile(DEFAULT_POLICY, policy)
    monkeypatch.setenv("CYBER_POLICY", str(policy))
    good = run_json(capsys, "vsm", "status")["policy"]
    assert good["refused_edit"] is None and good["source"] == str(policy)

    policy.write_text(DEFAULT_POLICY.read_text().replace("trip: 0.8", "trip: 1.8"))
    refused = run_json(capsys, "vsm", "status")["policy"]
    assert refused["digest"] == good["digest"] and "breaker.trip" in refused["refused_edit"]
    code, out, _ = run(capsys, "vsm", "status")
    assert code == 0 and "refused edit (the policy above stays in force): invalid policy" in out


def test_home_must_be_one_the_demo_made(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "vsm", "status", "--home", str(tmp_path))
    assert code == 2 and "is not a home made by `cyber-pipelines demo`" in one_error_line(err)


@pytest.mark.parametrize(
    "argv", [["vsm"], ["vsm", "status"], ["vsm", "tick"], ["vsm", "similar"], ["vsm", "wake"]], ids=" ".join
)
def test_help_everywhere(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    assert f"usage: cyber-pipelines {' '.join(argv)}" in capsys.readouterr().out


def test_tick_records_check_evaluations(capsys: pytest.CaptureFixture[str]) -> None:
    """A blocking check of the real ingest fails (a gap in one day): the tick records it against the pair, once."""
    import polars as pl

    from assets.market import ohlcv_candles
    from assets.partitions import pair_month_key
    from cyber_pipelines.resources import MarketDataResource, StorageResource

    class GappyMarket(MarketDataResource):
        def fetch_days(self, pair: str, days: list[date], source: str) -> dict[date, pl.DataFrame]:
            candidates = super().fetch_days(pair, days, source)
            candidates[date(2024, 4, 18)] = candidates[date(2024, 4, 18)].filter(pl.col("timestamp").dt.hour() >= 6)
            return candidates

    instance = instance_with("ETH-USD")
    result = dg.materialize(
        [ohlcv_candles],
        instance=instance,
        partition_key=str(pair_month_key("ETH-USD", date(2024, 4, 1))),
        resources={"market": GappyMarket(), "storage": StorageResource()},
        raise_on_error=False,
    )
    assert not result.success
    code, out, err = run(capsys, "vsm", "tick", "--json")
    assert code == 0, err
    recorded = json.loads(out)["recorded"]
    assert recorded["check_failure"] == 1 and recorded["check_success"] >= 1
    again = json.loads(run(capsys, "vsm", "tick", "--json")[1])["recorded"]
    assert "check_failure" not in again  # recorded once
