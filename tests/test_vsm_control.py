"""S3 control and the algedonic channel: the P&L ledger, pain scores and the circuit breaker (no Dagster)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from cyber_pipelines.storage import TableStore
from cyber_pipelines.vsm.breaker import Breaker, allows_run, start_trial, step
from cyber_pipelines.vsm.ledger import (
    LedgerEntry,
    equity_curve,
    ledger_entry,
    read_curve,
    transition_reason,
    wake,
)
from cyber_pipelines.vsm.pain import Pain, PainInputs, overall_pain, pain_score
from cyber_pipelines.vsm.policy import BreakerPolicy, LedgerPolicy, PainPolicy, load_policy

POLICY = load_policy()
T0 = datetime(2024, 1, 1, tzinfo=UTC)
STRATEGY = POLICY.ledger.strategy


def ledger_policy(**changes: Any) -> LedgerPolicy:
    return LedgerPolicy.model_validate({**POLICY.ledger.model_dump(), **changes})


def pain_policy(**changes: Any) -> PainPolicy:
    return PainPolicy.model_validate({**POLICY.pain.model_dump(), **changes})


# -- ledger -------------------------------------------------------------------------------------------


def ending_at(pnl: float, hours: int = 48) -> pl.DataFrame:
    """An hourly curve from 100 that ends at ``100 * (1 + pnl)``, peaking at 101 midway."""
    values = [100.0] * hours
    values[hours // 2] = 101.0
    values[-1] = 100.0 * (1 + pnl)
    return equity_curve([T0 + timedelta(hours=h) for h in range(hours)], values, STRATEGY)


def daily(closes: Sequence[float], start: datetime = T0) -> pl.DataFrame:
    """An hourly curve whose day ``d`` closes (its last hour) at ``closes[d]``; intraday it sits at 100."""
    stamps, values = [], []
    for d, close in enumerate(closes):
        for h in range(24):
            stamps.append(start + timedelta(days=d, hours=h))
            values.append(close if h == 23 else 100.0)
    return equity_curve(stamps, values, STRATEGY)


def run(pnls: list[float], policy: LedgerPolicy) -> tuple[list[LedgerEntry], list[str]]:
    """Feed one curve per P&L through the ledger; the entries and the transitions it would log."""
    entries: list[LedgerEntry] = []
    logged: list[str] = []
    previous = None
    for p in pnls:
        entry = ledger_entry("BTC-USD", ending_at(p), previous, policy)
        if (why := transition_reason(previous, entry)) is not None:
            logged.append(why)
        entries.append(entry)
        previous = entry
    return entries, logged


def test_ledger_measures_pnl_and_drawdowns_of_the_curve() -> None:
    stamps = [T0 + timedelta(hours=h) for h in range(4)]
    curve = pl.DataFrame({"timestamp": stamps, STRATEGY: [100.0, 120.0, 90.0, 110.0], "other": [1.0] * 4})
    entry = ledger_entry("ETH-USD", curve, None, POLICY.ledger)
    assert entry.pnl == pytest.approx(0.10)
    assert entry.drawdown == pytest.approx(1 - 110 / 120)
    assert entry.max_drawdown == pytest.approx(0.25)
    assert entry.as_of == stamps[-1]
    assert (entry.state, entry.level, entry.size_multiplier, entry.days_below) == ("active", 0, 1.0, 0)
    assert entry.reason == "P&L +10.0% > -5.0%: active, size 1"
    # unsorted input and a single unnamed equity column give the same entry
    single = curve.select("timestamp", pl.col(STRATEGY).alias("equity")).reverse()
    assert ledger_entry("ETH-USD", single, None, POLICY.ledger) == entry
    # naive timestamps are UTC
    naive = curve.with_columns(pl.col("timestamp").dt.replace_time_zone(None))
    assert ledger_entry("ETH-USD", naive, None, POLICY.ledger) == entry


def test_ledger_probation_levels_of_the_default_policy() -> None:
    level1 = ledger_entry("BTC-USD", ending_at(-0.062), None, POLICY.ledger)
    assert (level1.state, level1.level, level1.size_multiplier) == ("probation", 1, 0.5)
    assert level1.reason == "P&L -6.2% <= -5.0%: probation level 1, size 0.5"
    exactly = ledger_entry("BTC-USD", ending_at(-0.05), None, POLICY.ledger)
    assert exactly.level == 1  # "at or below"
    level2 = ledger_entry("BTC-USD", ending_at(-0.12), None, POLICY.ledger)
    assert (level2.state, level2.level, level2.size_multiplier) == ("probation", 2, 0.25)
    assert ledger_entry("BTC-USD", ending_at(-0.049), None, POLICY.ledger).level == 0


def test_ledger_hysteresis_holds_the_level_through_noise_around_the_threshold() -> None:
    noise = [-0.049, -0.051, -0.046, -0.052, -0.041, -0.0505, -0.045, -0.0499]
    entries, logged = run(noise, POLICY.ledger)
    assert [e.level for e in entries] == [0, 1, 1, 1, 1, 1, 1, 1]
    assert len(logged) == 2  # the new pair, then one move to level 1; no flapping
    assert "stays probation level 1" in entries[2].reason and "+ 1.0% hysteresis" in entries[2].reason
    assert transition_reason(entries[-2], entries[-1]) is None
    # leaving needs P&L above -5% + 1%
    recovered, _ = run([-0.06, -0.0401, -0.0399], POLICY.ledger)
    assert [e.level for e in recovered] == [1, 1, 0]
    assert recovered[-1].reason == "P&L -4.0% > -5.0% + 1.0% hysteresis: active, size 1"
    # without hysteresis the same noise flips the state at every step
    flapping, logged = run(noise, ledger_policy(hysteresis=0.0))
    assert [e.level for e in flapping] == [0, 1, 0, 1, 0, 1, 0, 0]
    assert len(logged) == 7


def test_ledger_hysteresis_between_deeper_levels_with_planted_thresholds() -> None:
    policy = ledger_policy(
        probation=[{"pnl": -0.02, "size": 0.8}, {"pnl": -0.04, "size": 0.4}, {"pnl": -0.06, "size": 0.2}],
        hysteresis=0.005,
        hibernate_pnl=-0.3,
    )
    entries, logged = run([-0.065, -0.057, -0.054, -0.037, -0.034, -0.016, -0.014], policy)
    assert [e.level for e in entries] == [3, 3, 2, 2, 1, 1, 0]
    assert [e.size_multiplier for e in entries] == [0.2, 0.2, 0.4, 0.4, 0.8, 0.8, 1.0]
    assert len(logged) == 4
    assert entries[2].reason == "P&L -5.4% <= -4.0%: probation level 2, size 0.4"
    # a sudden fall goes straight to the level it reaches
    assert ledger_entry("BTC-USD", ending_at(-0.07), entries[-1], policy).level == 3


def test_ledger_hibernates_after_the_planted_days_below_and_stays_until_woken() -> None:
    policy = ledger_policy(hibernate_pnl=-0.2, hibernate_days=5)
    # three days fine, then closes below -20% (intraday the curve is back at 100: only closes count)
    four = ledger_entry("SOL-USD", daily([100, 100, 100, 79, 80, 78, 75]), None, policy)
    assert four.days_below == 4 and four.state == "probation" and four.level == 2
    five = ledger_entry("SOL-USD", daily([100, 100, 79, 79, 80, 78, 75]), four, policy)
    assert five.days_below == 5
    assert (five.state, five.size_multiplier) == ("hibernated", 0.0)
    assert five.reason == "P&L -25.0% <= -20.0% for 5 days in a row: hibernated until woken"
    assert transition_reason(four, five) == five.reason
    # a day above the limit breaks the run
    broken = ledger_entry("SOL-USD", daily([79, 79, 81, 79, 80, 78, 75]), None, policy)
    assert broken.days_below == 4 and broken.state == "probation"

    # sticky: recovering P&L does not wake it, nor does a missing curve
    recovered = ledger_entry("SOL-USD", daily([100, 100, 100, 105]), five, policy)
    assert (recovered.state, recovered.size_multiplier, recovered.pnl) == ("hibernated", 0.0, pytest.approx(0.05))
    assert transition_reason(five, recovered) is None
    assert ledger_entry("SOL-USD", None, five, policy) is five

    # wake: active at the level its P&L gives; the old days below no longer count
    woken_at = T0 + timedelta(days=7)
    woken = wake(five, policy, "operator: new strategy", woken_at)
    assert (woken.state, woken.level, woken.size_multiplier, woken.woken_at) == ("probation", 2, 0.25, woken_at)
    assert woken.reason == "woken (operator: new strategy): P&L -25.0% <= -10.0%: probation level 2, size 0.25"
    assert transition_reason(five, woken) == woken.reason
    assert wake(woken, policy, "again", woken_at) is woken
    closes = [100, 100, 79, 79, 80, 78, 75]
    again = ledger_entry("SOL-USD", daily(closes), woken, policy)
    assert (again.state, again.days_below, again.woken_at) == ("probation", 0, woken_at)
    four_more = ledger_entry("SOL-USD", daily([*closes, 75, 75, 75, 75]), again, policy)
    assert (four_more.state, four_more.days_below) == ("probation", 4)
    five_more = ledger_entry("SOL-USD", daily([*closes, 75, 75, 75, 75, 75]), four_more, policy)
    assert five_more.state == "hibernated"


def test_ledger_default_hibernation_is_90_calendar_days_below_minus_15_percent() -> None:
    days = [datetime(2024, 1, 1, 23, tzinfo=UTC) + timedelta(days=d) for d in range(100)]
    closes = [100.0] * 10 + [84.0] * 90
    entry = ledger_entry("ADA-USD", equity_curve(days, closes, STRATEGY), None, POLICY.ledger)
    assert (entry.days_below, entry.state) == (90, "hibernated")
    shorter = ledger_entry("ADA-USD", equity_curve(days, [100.0] * 11 + [84.0] * 89, STRATEGY), None, POLICY.ledger)
    assert (shorter.days_below, shorter.state, shorter.level) == (89, "probation", 2)
    # missing days inside the run count as calendar days (the close carries over)
    sparse = [days[0], days[10], days[50], days[99]]
    gappy = ledger_entry("ADA-USD", equity_curve(sparse, [100.0, 84.0, 84.0, 84.0], STRATEGY), None, POLICY.ledger)
    assert (gappy.days_below, gappy.state) == (90, "hibernated")


def test_ledger_pair_without_a_backtest_is_active_at_full_size() -> None:
    entry = ledger_entry("DOGE-USD", None, None, POLICY.ledger)
    assert (entry.state, entry.level, entry.size_multiplier, entry.as_of) == ("active", 0, 1.0, None)
    assert "no backtest yet" in entry.reason
    assert transition_reason(None, entry) == entry.reason
    empty = pl.DataFrame(schema={"timestamp": pl.Datetime("us", "UTC"), STRATEGY: pl.Float64})
    assert ledger_entry("DOGE-USD", empty, None, POLICY.ledger) == entry


def test_ledger_refuses_curves_it_cannot_read() -> None:
    stamps = [T0, T0 + timedelta(hours=1)]
    with pytest.raises(ValueError, match="one equity column"):
        ledger_entry(
            "X-USD", pl.DataFrame({"timestamp": stamps, "a": [1.0, 2.0], "b": [1.0, 2.0]}), None, POLICY.ledger
        )
    with pytest.raises(ValueError, match="not a positive amount"):
        ledger_entry("X-USD", equity_curve(stamps, [0.0, 1.0], STRATEGY), None, POLICY.ledger)


def test_ledger_entry_round_trips_through_json() -> None:
    entry = wake(
        ledger_entry("SOL-USD", daily([79] * 6), None, ledger_policy(hibernate_days=5, hibernate_pnl=-0.2)),
        POLICY.ledger,
        "test",
        T0 + timedelta(days=9),
    )
    data = json.loads(json.dumps(entry.to_json()))
    assert data["state"] == "probation" and data["woken_at"] == "2024-01-10T00:00:00+00:00"
    assert LedgerEntry.from_json(data) == entry


def test_read_curve_from_the_table_store(tmp_path: Path) -> None:
    from cyber_pipelines.backtest.store import EQUITY_TABLE

    store = TableStore(tmp_path)
    assert read_curve(store, "synthetic", "BTC-USD", STRATEGY) is None
    stored = ending_at(-0.06).with_columns(buy_and_hold=pl.lit(1.0))
    store.write(stored, "synthetic", EQUITY_TABLE, "BTC-USD")
    curve = read_curve(store, "synthetic", "BTC-USD", STRATEGY)
    assert curve is not None and curve.columns == ["timestamp", STRATEGY]
    assert ledger_entry("BTC-USD", curve, None, POLICY.ledger).level == 1
    with pytest.raises(ValueError, match="no column for strategy 'nope'"):
        read_curve(store, "synthetic", "BTC-USD", "nope")


def test_read_curve_undoes_the_probation_size_the_backtest_ran_at(tmp_path: Path) -> None:
    """A backtest at size 0.5 lost half as much: the ledger judges the strategy at full size."""
    import json

    from cyber_pipelines.backtest.store import EQUITY_TABLE

    store = TableStore(tmp_path)
    full = ending_at(-0.08)
    returns = full[STRATEGY].pct_change().fill_null(0.0)
    halved = full.with_columns(((1 + returns / 2).cum_prod() * full[STRATEGY][0]).alias(STRATEGY))
    store.write(halved, "synthetic", EQUITY_TABLE, "BTC-USD")
    path = store.path("synthetic", "backtests", "BTC-USD").with_suffix(".json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"config": {"size_multiplier": 0.5}}))
    curve = read_curve(store, "synthetic", "BTC-USD", STRATEGY)
    assert curve is not None
    assert curve[STRATEGY][-1] / curve[STRATEGY][0] - 1 == pytest.approx(-0.08, abs=1e-9)
    assert ledger_entry("BTC-USD", curve, None, POLICY.ledger).level == 1  # at size 0.5 it read about -4%


# -- pain ---------------------------------------------------------------------------------------------


def test_pain_is_zero_without_inputs_and_one_for_a_full_component() -> None:
    calm = pain_score(PainInputs(0.0, 0, 0, None), POLICY.pain)
    assert calm.score == 0.0 and set(calm.components) == {"drawdown", "failed_runs", "failed_checks", "stale_data"}
    assert "no drawdown" in calm.reason
    full = pain_score(PainInputs(0.0, POLICY.pain.failures_full, 0, None), POLICY.pain)
    assert full.score == pytest.approx(1.0)
    assert full.reason.startswith("pain 1.00: 3 failed run(s) (1.00 x weight 1)")


def test_pain_combines_planted_weights_as_a_noisy_or() -> None:
    policy = pain_policy(
        weights={"drawdown": 0.5, "failed_checks": 0.25, "stale_data": 1.0, "failed_runs": 0.0},
        drawdown_full=0.4,
        failures_full=4,
        stale_hours=10,
    )
    got = pain_score(PainInputs(drawdown=0.1, failed_runs=4, failed_checks=2, stale_hours=3.0), policy)
    assert got.components == pytest.approx(
        {"drawdown": 0.25, "failed_runs": 1.0, "failed_checks": 0.5, "stale_data": 0.3}
    )
    expected = 1 - (0.75**0.5) * (0.5**0.25) * (0.7**1.0)  # failed_runs weighs 0: no effect
    assert got.score == pytest.approx(expected)
    # top contributors by their own share -w*log(1-c) (0.36, 0.17, 0.14), with numbers;
    # the zero-weight component is not named
    assert got.reason == (
        f"pain {expected:.2f}: data 3.0 h overdue (0.30 x weight 1), "
        "2 failed check(s) (0.50 x weight 0.25), drawdown 10.0% (0.25 x weight 0.5)"
    )
    assert "failed run" not in got.reason


def test_pain_components_are_clipped() -> None:
    got = pain_score(PainInputs(drawdown=0.9, failed_runs=-1, failed_checks=0, stale_hours=float("nan")), POLICY.pain)
    assert got.components == {"drawdown": 1.0, "failed_runs": 0.0, "failed_checks": 0.0, "stale_data": 0.0}
    assert got.score == 1.0
    stale = pain_score(PainInputs(stale_hours=1e6), POLICY.pain)
    assert stale.components["stale_data"] == 1.0
    assert stale.score == 1.0  # full, even at weight 0.5
    # drawdown of 20% against the default 25% is exactly the trip threshold, so it does not trip
    at_trip = pain_score(PainInputs(drawdown=0.2), POLICY.pain)
    assert at_trip.score == 0.8
    assert step(Breaker.new(T0), T0, pain=at_trip.score, policy=POLICY.breaker).state == "closed"


def test_overall_pain_is_the_noisy_or_of_system_and_mean_pair_pain() -> None:
    quiet = Pain(0.0)
    one_hurts = {f"P{i}-USD": Pain(1.0 if i == 0 else 0.0) for i in range(10)}
    overall = overall_pain(one_hurts, quiet)
    assert overall.score == pytest.approx(0.1)
    assert "worst P0-USD 1.00" in overall.reason and "mean of 10 pairs 0.10" in overall.reason
    many_hurt = {f"P{i}-USD": Pain(0.9) for i in range(10)}
    assert overall_pain(many_hurt, quiet).score == pytest.approx(0.9)
    both = overall_pain({"A": Pain(0.2), "B": Pain(0.8)}, Pain(0.5))
    assert both.score == pytest.approx(0.75)
    assert both.components == pytest.approx({"system": 0.5, "pairs_mean": 0.5})
    assert overall_pain({}, Pain(0.3)).score == pytest.approx(0.3)
    assert math.isclose(overall_pain({}, quiet).score, 0.0)


# -- breaker ------------------------------------------------------------------------------------------

BREAKER = POLICY.breaker


def opened(by_pain: float = 0.95) -> Breaker:
    return step(Breaker.new(T0), T0, pain=by_pain, policy=BREAKER)


def test_breaker_closed_trips_on_pain_above_the_threshold_only() -> None:
    closed = Breaker.new(T0)
    assert allows_run(closed)
    assert step(closed, T0, pain=0.8, policy=BREAKER) is closed  # exactly 0.8 is not above
    assert step(closed, T0, pain=0.5, trial="failure", policy=BREAKER) is closed  # no trial while closed
    tripped = step(closed, T0 + timedelta(minutes=1), pain=0.81, policy=BREAKER)
    assert (tripped.state, tripped.since) == ("open", T0 + timedelta(minutes=1))
    assert tripped.reason == "pain 0.810 > 0.8: breaker open, automation stops (30 min cooldown)"
    assert not allows_run(tripped)


def test_breaker_closed_trips_on_a_temporal_rule() -> None:
    tripped = step(Breaker.new(T0), T0, pain=0.1, tripped_by="failure_burst: 3 failures in 5 min", policy=BREAKER)
    assert tripped.state == "open"
    assert tripped.reason.startswith("rule failure_burst: 3 failures in 5 min: breaker open")


def test_breaker_open_waits_out_the_cooldown_then_goes_half_open() -> None:
    policy = BreakerPolicy(trip=0.5, cooldown_minutes=10)
    breaker = step(Breaker.new(T0), T0, pain=0.6, policy=policy)
    assert breaker.state == "open"
    assert step(breaker, T0 + timedelta(minutes=9, seconds=59), pain=0.0, policy=policy) is breaker
    # the pair still hurts (or a rule still trips) after the cooldown: stays open
    assert step(breaker, T0 + timedelta(minutes=20), pain=0.6, policy=policy) is breaker
    assert step(breaker, T0 + timedelta(minutes=20), pain=0.0, tripped_by="cascade", policy=policy) is breaker
    half = step(breaker, T0 + timedelta(minutes=10), pain=0.2, policy=policy)
    assert (half.state, half.since, half.trial_run) == ("half_open", T0 + timedelta(minutes=10), None)
    assert half.reason == "10 min cooldown over, pain 0.200 <= 0.5: half-open, one trial run"
    assert allows_run(half)


def half_open() -> Breaker:
    breaker = opened()
    return step(breaker, T0 + timedelta(minutes=BREAKER.cooldown_minutes), pain=0.0, policy=BREAKER)


def test_breaker_half_open_allows_exactly_one_trial() -> None:
    half = half_open()
    assert half.state == "half_open"
    trial = start_trial(half, "run-1")
    assert (trial.state, trial.trial_run, trial.since) == ("half_open", "run-1", half.since)
    assert not allows_run(trial)
    with pytest.raises(ValueError, match="run-1 is already"):
        start_trial(trial, "run-2")
    with pytest.raises(ValueError, match="while the breaker is open"):
        start_trial(opened(), "run-3")
    later = T0 + timedelta(hours=2)
    assert step(trial, later, pain=0.1, policy=BREAKER) is trial  # waiting for the trial's outcome


def test_breaker_half_open_closes_on_success_and_opens_on_failure_or_pain() -> None:
    trial = start_trial(half_open(), "run-1")
    now = T0 + timedelta(hours=1)
    closed = step(trial, now, pain=0.1, trial="success", policy=BREAKER)
    assert (closed.state, closed.since, closed.trial_run) == ("closed", now, None)
    assert closed.reason == "trial run run-1 succeeded: breaker closed"
    assert allows_run(closed)

    failed = step(trial, now, pain=0.1, trial="failure", policy=BREAKER)
    assert (failed.state, failed.since, failed.trial_run) == ("open", now, None)
    assert failed.reason == "trial run run-1 failed: breaker open again (30 min cooldown)"

    hurt = step(trial, now, pain=0.9, policy=BREAKER)
    assert hurt.state == "open" and hurt.reason.startswith("pain 0.900 > 0.8 while half-open")
    # bad news wins over a successful trial
    assert step(trial, now, pain=0.1, tripped_by="cascade", trial="success", policy=BREAKER).state == "open"
    # and the cycle starts again from the new opening
    assert step(failed, now + timedelta(minutes=29), pain=0.0, policy=BREAKER) is failed
    assert step(failed, now + timedelta(minutes=30), pain=0.0, policy=BREAKER).state == "half_open"


def test_breaker_round_trips_through_json() -> None:
    trial = start_trial(half_open(), "run-1")
    data = json.loads(json.dumps(trial.to_json()))
    assert Breaker.from_json(data) == trial
    with pytest.raises(ValueError, match="unknown breaker state 'ajar'"):
        Breaker.from_json({**data, "state": "ajar"})
