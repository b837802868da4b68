"""Temporal patterns over the VSM event stream: each pattern matches, stays quiet just below its threshold,
and counts only the events inside its window (an event exactly one window old is inside)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from cyber_pipelines.vsm.events import Event
from cyber_pipelines.vsm.policy import DEFAULT_POLICY, Policy, PolicyError, TemporalRule, load_policy, parse_policy
from cyber_pipelines.vsm.temporal import (
    DETECTORS,
    PATTERNS,
    Match,
    Stream,
    breaker_thrash,
    cascade,
    check_flapping,
    detect,
    failure_burst,
    fingerprint,
    oscillation,
    overload,
    repeated_error,
    retry_storm,
    silence,
    slow_runs,
    staleness,
    validate_rules,
    zombie_runs,
)

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
POLICY = load_policy(DEFAULT_POLICY)
BTC, ETH, SOL = "BTC-USD", "ETH-USD", "SOL-USD"
EPS = 1 / 60  # one second, in minutes


class Log:
    """Events in log order with seqs 1, 2, ...; ``ago`` in minutes before NOW."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def add(self, kind: str, ago: float, pair: str | None = BTC, decision: str | None = None, **data: Any) -> int:
        seq = len(self.events) + 1
        at = NOW - timedelta(minutes=ago)
        self.events.append(Event(kind, decision or kind, f"test {seq}", at, pair, data, seq))
        return seq


def rule(**params: Any) -> TemporalRule:
    return TemporalRule.model_validate(params)


def default(name: str) -> TemporalRule:
    return POLICY.temporal[name]


def policy_with(**rules: dict[str, Any]) -> Policy:
    raw = yaml.safe_load(DEFAULT_POLICY.read_text())
    raw["temporal"] = rules
    return parse_policy(raw, "test policy")


# ------------------------------------------------------------------------------------------- the library


def test_the_policy_names_exactly_the_known_patterns() -> None:
    assert len(PATTERNS) >= 10
    assert set(POLICY.temporal) == set(PATTERNS) == set(DETECTORS)
    validate_rules(POLICY.temporal)


def test_an_unknown_rule_name_is_refused_with_its_name_and_the_known_ones() -> None:
    """Refused when the policy loads (a bad edit never comes into force), and by detect for rules made in code."""
    rules = {"failure_burst": {"count": 3, "minutes": 5}, "failure_bursts": {"count": 3, "minutes": 5}}
    with pytest.raises(ValueError, match="unknown temporal rule 'failure_bursts'; known rules: failure_burst, "):
        policy_with(**rules)
    made = {name: TemporalRule.model_validate(params) for name, params in rules.items()}
    with pytest.raises(ValueError, match="unknown temporal rule 'failure_bursts'; known rules: failure_burst, "):
        detect([], NOW, made)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"count": 3}, "failure_burst: missing parameter 'minutes'"),
        ({"count": 3, "minutes": 5, "minuts": 5}, "failure_burst: unknown parameter 'minuts'"),
    ],
)
def test_a_rule_with_a_missing_or_unknown_parameter_is_refused(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        detect([], NOW, policy_with(failure_burst=params))
    with pytest.raises(ValueError, match=message):
        failure_burst([], NOW, rule(**params))


def test_a_rule_parameter_must_be_positive() -> None:
    with pytest.raises(PolicyError, match=r"temporal\.failure_burst: count must be a positive number"):
        policy_with(failure_burst={"count": 0, "minutes": 5})


def test_detect_runs_only_the_rules_of_the_policy_and_takes_their_trips_flag() -> None:
    log = Log()
    for ago in (3, 2, 1):
        log.add("run_failure", ago)
    assert [m.pattern for m in detect(log.events, NOW, POLICY)] == ["failure_burst"]
    only_silence = policy_with(silence={"hours": 24})
    assert detect(log.events, NOW, only_silence) == []
    quiet = POLICY.model_copy(update={"temporal": {"failure_burst": rule(count=3, minutes=5, trips=False)}})
    (match,) = detect(log.events, NOW, quiet)
    assert match.trips is False
    assert detect(log.events, NOW, {"failure_burst": rule(count=4, minutes=5)}) == []  # a mapping of rules


def test_events_after_now_and_naive_times_are_handled() -> None:
    log = Log()
    log.add("run_failure", 2)
    log.add("run_failure", 1)
    log.add("run_failure", -1)  # a minute after NOW: not seen yet
    assert failure_burst(log.events, NOW, default("failure_burst")) == []
    naive = [Event(e.kind, e.decision, e.reason, e.at.replace(tzinfo=None), e.pair, e.data, e.seq) for e in log.events]
    (match,) = failure_burst(naive, (NOW + timedelta(minutes=1)).replace(tzinfo=None), default("failure_burst"))
    assert match.events == (1, 2, 3) and match.at == NOW - timedelta(minutes=-1)


def test_detect_is_deterministic_and_ordered_by_pattern_then_pair() -> None:
    rng = random.Random(7)
    pairs = [f"P{i:02d}-USD" for i in range(20)]
    log = Log()
    for i in range(3000):
        kind = rng.choice(["run_failure", "check_failure", "check_success", "breaker", "queue", "staleness"])
        decision = rng.choice(["open", "closed", "half_open"]) if kind == "breaker" else None
        data = {"queued": rng.randint(0, 30), "periods_overdue": rng.randint(0, 5), "check": "gaps", "attempt": 2}
        log.add(kind, (3000 - i) * 0.5, rng.choice([*pairs, None]), decision, **data)
    first, second = detect(log.events, NOW, POLICY), detect(list(log.events), NOW, POLICY)
    assert first == second and len(first) > 20
    order = [PATTERNS.index(m.pattern) for m in first]
    assert order == sorted(order)
    for name in PATTERNS:  # each detector alone finds what detect finds for it
        assert DETECTORS[name](log.events, NOW, default(name)) == [m for m in first if m.pattern == name]
    stream = Stream(log.events, NOW)
    assert DETECTORS["cascade"].matches(stream, default("cascade")) == cascade(log.events, NOW, default("cascade"))


def test_a_match_serializes_to_json() -> None:
    match = Match("failure_burst", BTC, True, "BTC-USD: 3 run failures", (1, 2, 3), NOW)
    assert match.to_json() == {
        "pattern": "failure_burst",
        "pair": BTC,
        "trips": True,
        "reason": "BTC-USD: 3 run failures",
        "events": [1, 2, 3],
        "at": NOW.isoformat(),
    }


# ------------------------------------------------------------------------------------------ failure_burst


def test_three_failures_in_five_minutes_trip_the_breaker() -> None:
    log = Log()
    log.add("run_success", 10)
    log.add("run_failure", 4.5)
    log.add("run_failure", 4, ETH)  # another pair's failure is not BTC's
    log.add("run_failure", 2)
    log.add("run_failure", 0)
    (match,) = detect(log.events, NOW, POLICY)
    assert match == Match(
        "failure_burst", BTC, True, "BTC-USD: 3 run failures within 5 min (threshold 3)", (2, 4, 5), NOW
    )


def test_failure_burst_two_failures_or_an_old_third_do_not_match() -> None:
    log = Log()
    log.add("run_failure", 5 + EPS)  # one second outside the window
    log.add("run_failure", 3)
    log.add("run_failure", 1)
    assert failure_burst(log.events, NOW, default("failure_burst")) == []


def test_failure_burst_window_boundary_is_inside() -> None:
    log = Log()
    log.add("run_failure", 5)  # exactly five minutes old
    log.add("run_failure", 3)
    log.add("run_failure", 1)
    (match,) = failure_burst(log.events, NOW, default("failure_burst"))
    assert match.events == (1, 2, 3) and match.trips


def test_failure_burst_with_other_parameters() -> None:
    log = Log()
    for ago in (9, 7, 5, 3):
        log.add("run_failure", ago)
    custom = policy_with(failure_burst={"count": 5, "minutes": 10, "trips": False})
    assert detect(log.events, NOW, custom) == []
    log.add("run_failure", 1)
    (match,) = detect(log.events, NOW, custom)
    assert match.trips is False and "5 run failures within 10 min (threshold 5)" in match.reason


# -------------------------------------------------------------------------------------------- oscillation


def test_oscillation_a_pair_state_flipping_four_times_matches() -> None:
    log = Log()
    for ago, state in zip((200, 150, 100, 50, 10), ("active", "probation") * 3, strict=False):
        log.add("pair_state", ago, decision=state)
    (match,) = oscillation(log.events, NOW, default("oscillation"))
    assert match.pair == BTC and not match.trips and match.events == (1, 2, 3, 4, 5)
    assert "pair_state changed 4 times within 4 h (threshold 4)" in match.reason
    assert match.reason.endswith("active -> probation -> active -> probation -> active")


def test_oscillation_three_flips_or_repeats_do_not_match() -> None:
    log = Log()
    for ago, state in zip(
        (200, 150, 120, 100, 50, 10), ("active", "probation", "probation", "active", "active", "probation"), strict=True
    ):
        log.add("pair_state", ago, decision=state)
    assert oscillation(log.events, NOW, default("oscillation")) == []  # 3 changes among 6 events


def test_oscillation_window_boundary_and_breaker_states() -> None:
    log = Log()
    log.add("breaker", 240 + EPS, decision="open")  # outside: its change to closed is not counted
    for ago, state in ((200, "closed"), (150, "open"), (100, "half_open"), (50, "open")):
        log.add("breaker", ago, decision=state)
    assert oscillation(log.events, NOW, default("oscillation")) == []
    log.events[0] = Event("breaker", "open", "edge", NOW - timedelta(minutes=240), BTC, {}, 1)  # exactly inside
    (match,) = oscillation(log.events, NOW, default("oscillation"))
    assert "breaker changed 4 times" in match.reason
    assert oscillation(log.events, NOW, rule(flips=2, minutes=60)) == []  # one change within the last hour


# ------------------------------------------------------------------------------------------------ cascade


def test_cascade_failures_spreading_across_three_pairs_is_a_system_match() -> None:
    log = Log()
    log.add("run_failure", 14)
    log.add("run_failure", 12)
    log.add("check_failure", 8, ETH)
    log.add("run_failure", 1, None)  # a system-wide failure names no pair
    log.add("run_failure", 2, SOL)
    (match,) = detect(log.events, NOW, policy_with(cascade={"pairs": 3, "minutes": 15, "trips": True}))
    assert match.pattern == "cascade" and match.pair is None and match.trips
    assert match.events == (1, 3, 5)  # the first failure of each pair
    assert "3 pairs (BTC-USD, ETH-USD, SOL-USD) within 15 min (threshold 3 pairs)" in match.reason


def test_cascade_two_pairs_or_one_outside_the_window_do_not_match() -> None:
    log = Log()
    for ago in (10, 8, 6, 4):
        log.add("run_failure", ago)
        log.add("check_failure", ago, ETH)
    assert cascade(log.events, NOW, default("cascade")) == []
    log.add("run_failure", 15 + EPS, SOL)  # appended late, but timed outside the window
    assert cascade(log.events, NOW, default("cascade")) == []
    log.add("run_failure", 15, SOL)
    (match,) = cascade(log.events, NOW, default("cascade"))
    assert match.events == (1, 2, 10) and match.at == NOW - timedelta(minutes=10)  # the newest of the evidence


def test_cascade_with_other_parameters() -> None:
    log = Log()
    for i, pair in enumerate(("A", "B", "C", "D")):
        log.add("run_failure", 50 - i, pair)
    assert cascade(log.events, NOW, rule(pairs=4, minutes=45)) == []
    assert len(cascade(log.events, NOW, rule(pairs=4, minutes=50))) == 1
    assert cascade(log.events, NOW, rule(pairs=5, minutes=60)) == []


# ---------------------------------------------------------------------------------------------- staleness


def test_staleness_three_periods_overdue_matches_from_the_latest_report() -> None:
    log = Log()
    log.add("staleness", 30, periods_overdue=1)
    log.add("staleness", 5, periods_overdue=3)
    log.add("staleness", 5, ETH, periods_overdue=2)  # just below
    (match,) = staleness(log.events, NOW, default("staleness"))
    assert match.pair == BTC and match.events == (2,) and "3 periods overdue" in match.reason
    log.add("staleness", 1, periods_overdue=0)  # fresh again
    assert staleness(log.events, NOW, default("staleness")) == []


def test_staleness_counts_the_periods_elapsed_since_the_report() -> None:
    log = Log()
    log.add("staleness", 120, periods_overdue=1, period_seconds=3600)
    (match,) = staleness(log.events, NOW, default("staleness"))  # 1 reported + 2 hours of 1-hour periods
    assert "3 periods overdue" in match.reason and match.at == NOW - timedelta(hours=2)
    assert staleness(log.events, NOW - timedelta(seconds=1), default("staleness")) == []  # 1 h 59 min 59 s: 2
    assert staleness(log.events, NOW, rule(periods=4)) == []


# ----------------------------------------------------------------------------------------------- overload


def test_overload_above_the_limit_matches_at_the_limit_does_not() -> None:
    log = Log()
    log.add("queue", 10, None, queued=50)
    log.add("queue", 1, None, queued=20)  # the latest report is what counts
    assert overload(log.events, NOW, default("overload")) == []
    log.add("queue", 0, None, queued=21)
    (match,) = overload(log.events, NOW, default("overload"))
    assert match.pair is None and match.events == (3,) and "system: 21 runs queued" in match.reason
    assert "(limit 20)" in match.reason
    assert overload(log.events, NOW, rule(queued=21)) == []


def test_overload_per_pair_queues_and_bad_data() -> None:
    log = Log()
    log.add("queue", 2, BTC, queued=8)
    log.add("queue", 2, ETH, queued="many")  # not a number: ignored
    assert [m.pair for m in overload(log.events, NOW, rule(queued=5))] == [BTC]


# ----------------------------------------------------------------------------------------- check_flapping


def test_check_flapping_a_check_alternating_pass_fail_matches() -> None:
    log = Log()
    for i, ago in enumerate((200, 150, 120, 60, 10)):
        log.add("check_failure" if i % 2 == 0 else "check_success", ago, check="ohlcv_gaps")
        log.add("check_success", ago, check="ohlcv_schema")  # another check, always passing: no flips
    (match,) = check_flapping(log.events, NOW, default("check_flapping"))
    assert match.events == (1, 3, 5, 7, 9)
    assert "check ohlcv_gaps flipped pass/fail 4 times within 4 h (threshold 4)" in match.reason


def test_check_flapping_three_flips_or_an_old_one_do_not_match() -> None:
    log = Log()
    log.add("check_failure", 240 + EPS, check="gaps")
    for i, ago in enumerate((200, 150, 120, 60)):
        log.add("check_success" if i % 2 == 0 else "check_failure", ago, check="gaps")
    assert check_flapping(log.events, NOW, default("check_flapping")) == []
    assert len(check_flapping(log.events, NOW, rule(flips=3, minutes=240))) == 1
    assert len(check_flapping(log.events, NOW - timedelta(seconds=1), default("check_flapping"))) == 1  # all five in
    assert check_flapping(log.events, NOW, rule(flips=3, minutes=100)) == []


# -------------------------------------------------------------------------------------------- retry_storm


def test_retry_storm_five_failed_retries_within_thirty_minutes() -> None:
    log = Log()
    for i, ago in enumerate((29, 20, 15, 10, 5)):
        log.add("run_failure", ago, (BTC, ETH, SOL)[i % 3], attempt=2 + i % 2)
    log.add("run_failure", 1, attempt=1)  # a first attempt is no retry
    (match,) = detect(log.events, NOW, policy_with(retry_storm={"count": 5, "minutes": 30, "trips": True}))
    assert match.pair is None and match.trips and match.events == (1, 2, 3, 4, 5)
    assert "5 retried runs failed within 30 min (threshold 5), from 3 pairs" in match.reason


def test_retry_storm_below_threshold_and_window_boundary() -> None:
    log = Log()
    log.add("run_failure", 30 + EPS, attempt=2)
    for ago in (30, 20, 10, 5):
        log.add("run_failure", ago, attempt=2)
    log.add("run_failure", 1)  # no attempt recorded
    assert retry_storm(log.events, NOW, default("retry_storm")) == []
    (match,) = retry_storm(log.events, NOW, rule(count=4, minutes=30))
    assert match.pair == BTC and match.events == (2, 3, 4, 5)  # all from one pair: it is named


# -------------------------------------------------------------------------------------------- zombie_runs


def test_zombie_runs_one_zombie_matches_until_the_breaker_closes() -> None:
    log = Log()
    log.add("zombie", 600)
    (match,) = zombie_runs(log.events, NOW, default("zombie_runs"))
    assert match.events == (1,) and "1 zombie runs in the log (threshold 1)" in match.reason
    log.add("breaker", 300, decision="open")
    log.add("breaker", 200, decision="closed")
    assert zombie_runs(log.events, NOW, default("zombie_runs")) == []
    log.add("zombie", 100)
    (match,) = zombie_runs(log.events, NOW, default("zombie_runs"))
    assert match.events == (4,) and "since the breaker closed" in match.reason
    assert zombie_runs(log.events, NOW, rule(count=2)) == []


def test_zombie_runs_with_a_window() -> None:
    log = Log()
    log.add("zombie", 60 + EPS, ETH)
    log.add("zombie", 30, ETH)
    assert zombie_runs(log.events, NOW, rule(count=2, minutes=60)) == []
    log.events[0] = Event("zombie", "zombie", "edge", NOW - timedelta(minutes=60), ETH, {}, 1)
    (match,) = zombie_runs(log.events, NOW, rule(count=2, minutes=60))
    assert match.pair == ETH and "2 zombie runs within 60 min" in match.reason


# ----------------------------------------------------------------------------------------- repeated_error


def test_fingerprint_drops_numbers_and_ids() -> None:
    a = fingerprint("Timeout after 31.5 s fetching run 3f2a9c1e-0b1d-4c1e-9a3b-5f0c2d1e7a6b\ntraceback ...")
    b = fingerprint("timeout   after 2 s fetching run 0d4e8f2a-1c3b-4d5e-8f9a-0b1c2d3e4f5a")
    assert a == b == "timeout after # s fetching run #"
    assert fingerprint("HTTP 429 at 0xdeadbeef") == "http # at #"


def test_repeated_error_the_same_error_three_times_across_pairs() -> None:
    log = Log()
    log.add("run_failure", 50, BTC, error="exchange timeout after 30 s")
    log.add("check_failure", 20, ETH, error="exchange timeout after 12 s")
    log.add("run_failure", 15, SOL, error="disk full")
    log.add("run_failure", 10, SOL, error="Exchange timeout after 7 s")
    (match,) = detect(log.events, NOW, policy_with(repeated_error={"count": 3, "minutes": 60, "trips": True}))
    assert match.pair is None and match.trips and match.events == (1, 2, 4)
    assert 'error "exchange timeout after # s" 3 times within 60 min (threshold 3), from 3 pairs' in match.reason


def test_repeated_error_below_threshold_window_and_fingerprint_override() -> None:
    log = Log()
    log.add("run_failure", 60 + EPS, error="boom 1")
    log.add("run_failure", 60, error="boom 2")
    log.add("run_failure", 30, error="boom 3")
    log.add("run_failure", 20, error="something else", fingerprint="boom #")
    (match,) = repeated_error(log.events, NOW, default("repeated_error"))
    assert match.pair == BTC and match.events == (2, 3, 4)
    assert repeated_error(log.events, NOW, rule(count=4, minutes=60)) == []
    assert repeated_error(log.events, NOW, rule(count=3, minutes=59)) == []


# ---------------------------------------------------------------------------------------------- slow_runs


def _runs(log: Log, seconds: list[float], pair: str = BTC, job: str | None = "ingest") -> None:
    for i, s in enumerate(seconds):
        extra = {"job": job} if job else {}
        log.add("run_success", 1000 - 100 * i, pair, seconds=s, **extra)


def test_slow_runs_the_latest_run_over_three_times_the_median() -> None:
    log = Log()
    _runs(log, [9, 10, 50, 10, 11, 31])  # median of the five before: 10
    (match,) = slow_runs(log.events, NOW, default("slow_runs"))
    assert match.pair == BTC and match.events == (1, 2, 3, 4, 5, 6)
    assert "BTC-USD ingest: last run took 31.0 s, 3.1x the median 10.0 s of the 5 before (threshold 3x)" in match.reason


def test_slow_runs_at_the_factor_or_with_too_few_runs_do_not_match() -> None:
    log = Log()
    _runs(log, [9, 10, 50, 10, 11, 30])
    assert slow_runs(log.events, NOW, default("slow_runs")) == []  # 30 is not slower than 3 x 10
    short = Log()
    _runs(short, [10, 10, 10, 10, 100])
    assert slow_runs(short.events, NOW, default("slow_runs")) == []  # four runs before, five needed
    assert len(slow_runs(short.events, NOW, rule(factor=3, runs=4))) == 1


def test_slow_runs_compares_runs_of_the_same_job() -> None:
    log = Log()
    for i in range(6):
        log.add("run_success", 100 - i, seconds=10, job="ingest")
        log.add("run_success", 100 - i, seconds=400, job="backtest")
    assert slow_runs(log.events, NOW, default("slow_runs")) == []
    log.add("run_success", 1, seconds=25, job="ingest")
    (match,) = slow_runs(log.events, NOW, rule(factor=2, runs=3))
    assert "ingest" in match.reason and match.events[-1] == 13


# ------------------------------------------------------------------------------------------------ silence


def test_silence_no_success_for_a_day() -> None:
    log = Log()
    log.add("run_success", 24 * 60 + 30)
    log.add("run_success", 24 * 60, ETH)  # exactly 24 h ago: silent
    log.add("run_success", 24 * 60 - EPS, SOL)  # a second less: not yet
    log.add("run_failure", 10)
    (btc, eth) = silence(log.events, NOW, default("silence"))
    assert (btc.pair, eth.pair) == (BTC, ETH)
    assert btc.events == (1,) and btc.at == NOW - timedelta(minutes=30)  # when the silence reached 24 h
    assert "BTC-USD: no successful run for 24.5 h" in btc.reason and "threshold 24 h" in btc.reason


def test_silence_counts_from_the_first_activity_and_skips_inactive_pairs() -> None:
    log = Log()
    log.add("run_failure", 25 * 60)  # BTC never succeeded
    log.add("pair_state", 26 * 60, ETH, decision="hibernated")
    log.add("run_failure", 25 * 60, SOL)
    log.add("breaker", 60, SOL, decision="open")  # automation stopped: silence is expected
    log.add("prospect", 48 * 60, "ADA-USD")  # only prospected, never operated
    (match,) = silence(log.events, NOW, default("silence"))
    assert match.pair == BTC and "none since first seen" in match.reason
    assert silence(log.events, NOW, rule(hours=26)) == []


# ----------------------------------------------------------------------------------------- breaker_thrash


def test_breaker_thrash_three_openings_within_six_hours() -> None:
    log = Log()
    for ago in (300, 200, 100):
        log.add("breaker", ago, decision="open")
        log.add("breaker", ago - 30, decision="half_open")
    (match,) = breaker_thrash(log.events, NOW, default("breaker_thrash"))
    assert match.events == (1, 3, 5) and "breaker opened 3 times within 6 h (threshold 3)" in match.reason


def test_breaker_thrash_below_threshold_and_window_boundary() -> None:
    log = Log()
    log.add("breaker", 360 + EPS, decision="open")
    log.add("breaker", 200, decision="open")
    log.add("breaker", 100, decision="open")
    log.add("breaker", 50, decision="closed")
    assert breaker_thrash(log.events, NOW, default("breaker_thrash")) == []
    log.add("breaker", 360, decision="open")
    assert len(breaker_thrash(log.events, NOW, default("breaker_thrash"))) == 1
    assert breaker_thrash(log.events, NOW, rule(trips_count=4, hours=6)) == []
    (match,) = breaker_thrash(log.events, NOW, rule(trips_count=4, hours=7, trips=True))
    assert match.trips and match.events == (1, 2, 3, 5)
