"""One evaluation of the viable system's health (the algedonic channel), as plain Python.

The Dagster sensors gather what the instance knows into ``Observations`` (pairs, the event log's recent
window, data ages, trial runs' outcomes); ``evaluate`` turns it into decisions: each pair's pain and the
overall pain, the temporal patterns that match, and the circuit breakers' transitions. It returns the
events to append; nothing here writes. State lives in the event log: a breaker is the data of its latest
``breaker`` event, a pair's ledger state that of its latest ``pair_state`` event (``current_state``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from cyber_pipelines.vsm.breaker import Breaker, step
from cyber_pipelines.vsm.events import Event, EventLog, utc
from cyber_pipelines.vsm.ledger import LedgerEntry
from cyber_pipelines.vsm.pain import Pain, PainInputs, overall_pain, pain_score
from cyber_pipelines.vsm.policy import Policy
from cyber_pipelines.vsm.temporal import Match, detect

SYSTEM = None  # the key of the system-wide breaker and pain
FAILURE_KINDS = ("run_failure", "zombie")
PAIN_STEP = 0.1  # a pair's pain is logged when it moves by this much, or crosses the trip threshold


@dataclass(frozen=True)
class PairView:
    """What the VSM knows of one pair at a tick."""

    key: str
    ledger: LedgerEntry | None
    breaker: Breaker
    pain: float | None  # the pain last logged (None: never)


@dataclass(frozen=True)
class State:
    """The VSM state folded from the event log."""

    pairs: dict[str, PairView]
    system: Breaker
    system_pain: float | None

    def blocked(self) -> dict[str, str]:
        """Pairs whose automation is stopped, with the reason (hibernated, breaker open, system breaker open)."""
        out: dict[str, str] = {}
        for key, view in self.pairs.items():
            if view.ledger is not None and view.ledger.state == "hibernated":
                out[key] = f"hibernated: {view.ledger.reason}"
            elif self.system.state == "open":
                out[key] = f"system breaker open: {self.system.reason}"
            elif view.breaker.state == "open":
                out[key] = f"breaker open: {view.breaker.reason}"
        return out


NEVER = datetime(1970, 1, 1, tzinfo=UTC)


def closed_breaker() -> Breaker:
    """A breaker that never tripped (closed since forever: every failure in the pain window counts)."""
    return Breaker(state="closed", since=NEVER, reason="no trip recorded")


def current_state(log: EventLog, pairs: Sequence[str]) -> State:
    """Fold the latest ``breaker``, ``pair_state`` and ``pain`` events into each pair's view."""
    breakers = {pair: Breaker.from_json(e.data) for pair, e in log.latest("breaker").items()}
    ledgers = {pair: LedgerEntry.from_json(e.data) for pair, e in log.latest("pair_state").items() if pair}
    pains = {pair: float(e.data["score"]) for pair, e in log.latest("pain").items()}
    views = {
        key: PairView(key, ledgers.get(key), breakers.get(key) or closed_breaker(), pains.get(key))
        for key in sorted(set(pairs) | set(ledgers) | {k for k in breakers if k is not None})
    }
    return State(views, breakers.get(SYSTEM) or closed_breaker(), pains.get(SYSTEM))


def ledger_size(log: EventLog, pair_key: str) -> tuple[float, str]:
    """The position size the S3 ledger gives ``pair_key`` (1.0 before its first entry), and why."""
    event = log.latest("pair_state").get(pair_key)
    if event is None:
        return 1.0, "no VSM ledger entry yet: full size"
    entry = LedgerEntry.from_json(event.data)
    return entry.size_multiplier, f"VSM ledger: {entry.reason}"


@dataclass(frozen=True)
class Observations:
    """What the sensors read from the instance for one tick."""

    now: datetime
    active_pairs: Sequence[str]
    events: Sequence[Event]  # the log's window (at least the policy's longest), oldest first
    stale_hours: Mapping[str, float | None] = field(default_factory=dict)  # hours overdue per pair
    trials: Mapping[str | None, Literal["success", "failure"]] = field(default_factory=dict)  # overrides


@dataclass(frozen=True)
class Evaluation:
    pains: dict[str | None, Pain]
    matches: list[Match]
    breakers: dict[str | None, Breaker]
    events: list[Event]  # to append, in order

    @property
    def trips(self) -> list[Event]:
        return [e for e in self.events if e.kind == "breaker" and e.decision == "open"]


def window(policy: Policy) -> timedelta:
    """How much of the log a tick reads: twice the longest window any rule or the pain needs (silence
    counts from a pair's first event in it)."""
    minutes = [policy.pain.window_minutes]
    for rule in policy.temporal.values():
        extra = rule.model_extra or {}
        minutes += [float(extra.get("minutes", 0)), 60 * float(extra.get("hours", 0))]
    return timedelta(minutes=2 * max(minutes))


def _counts(
    events: Sequence[Event], since: datetime, breakers: Mapping[str | None, Breaker]
) -> tuple[dict[str | None, int], dict[str | None, int]]:
    """Failed runs and failed checks per pair (None: the system) within the pain window, counting only
    those after the pair's last breaker transition (a reopened or recovered breaker starts afresh)."""
    runs: dict[str | None, int] = {}
    checks: dict[str | None, int] = {}
    for event in events:
        breaker = breakers.get(event.pair)
        if event.at < since or (breaker is not None and event.at < breaker.since):
            continue
        if event.kind in FAILURE_KINDS and not event.data.get("zombie"):  # a reaped zombie counts once
            runs[event.pair] = runs.get(event.pair, 0) + 1
        elif event.kind == "check_failure":
            checks[event.pair] = checks.get(event.pair, 0) + 1
    return runs, checks


def evaluate(state: State, seen: Observations, policy: Policy) -> Evaluation:
    """Pain per pair and overall, temporal matches, breaker transitions; the events that record them."""
    now = utc(seen.now)
    current = {key: view.breaker for key, view in state.pairs.items()} | {SYSTEM: state.system}
    runs, checks = _counts(seen.events, now - timedelta(minutes=policy.pain.window_minutes), current)
    pains: dict[str | None, Pain] = {}
    for pair_key in seen.active_pairs:
        pair_view = state.pairs.get(pair_key)
        drawdown = pair_view.ledger.drawdown if pair_view is not None and pair_view.ledger is not None else 0.0
        stale = seen.stale_hours.get(pair_key)
        inputs = PainInputs(drawdown, runs.get(pair_key, 0), checks.get(pair_key, 0), stale)
        pains[pair_key] = pain_score(inputs, policy.pain)
    system_own = pain_score(PainInputs(0.0, runs.get(None, 0), checks.get(None, 0), None), policy.pain)
    pains[SYSTEM] = overall_pain({k: p for k, p in pains.items() if k is not None}, system_own)

    matches = detect(list(seen.events), now, policy)
    recorded = _recorded_matches(seen.events)
    fresh = [m for m in matches if (m.pattern, m.pair, m.events) not in recorded]
    tripping = {m.pair: m for m in fresh if m.trips}

    out: list[Event] = []
    for match in fresh:
        data: dict[str, Any] = {"pattern": match.pattern, "evidence": list(match.events), "trips": match.trips}
        out.append(Event("temporal", match.pattern, match.reason, now, match.pair, data))

    breakers: dict[str | None, Breaker] = {}
    keys: list[str | None] = [SYSTEM, *seen.active_pairs]
    for key in keys:
        view = state.pairs.get(key) if key is not None else None
        before = state.system if key is None else (view.breaker if view is not None else closed_breaker())
        rule = tripping.get(key)
        after = step(
            before,
            now,
            pain=pains[key].score,
            tripped_by=rule.reason if rule is not None else None,
            trial=seen.trials.get(key) or trial_outcome(seen.events, key, before),
            policy=policy.breaker,
        )
        breakers[key] = after
        logged = state.system_pain if key is None else (view.pain if view is not None else None)
        if _pain_moved(logged, pains[key].score, policy.breaker.trip):
            out.append(Event("pain", f"{pains[key].score:.2f}", pains[key].reason, now, key, _pain_data(pains[key])))
        if after is not before:
            out.append(Event("breaker", after.state, after.reason, now, key, after.to_json()))
    return Evaluation(pains, fresh, breakers, out)


def trial_outcome(events: Sequence[Event], key: str | None, breaker: Breaker) -> Literal["success", "failure"] | None:
    """A half-open breaker's trial: the first run of the pair (any run, for the system) that ended after it
    half-opened."""
    if breaker.state != "half_open":
        return None
    for event in events:
        if event.at >= breaker.since and (key is None or event.pair == key):
            if event.kind == "run_success":
                return "success"
            if event.kind in FAILURE_KINDS:
                return "failure"
    return None


def _pain_data(pain: Pain) -> dict[str, Any]:
    return {"score": round(pain.score, 4), "components": {k: round(v, 4) for k, v in pain.components.items()}}


def _pain_moved(logged: float | None, score: float, trip: float) -> bool:
    if logged is None:
        return score > 0
    return abs(score - logged) >= PAIN_STEP or (logged > trip) != (score > trip)


def _recorded_matches(events: Sequence[Event]) -> set[tuple[str, str | None, tuple[int, ...]]]:
    """Matches already in the log (a pattern, pair and evidence is recorded once)."""
    return {
        (str(e.data.get("pattern")), e.pair, tuple(int(s) for s in e.data.get("evidence", ())))
        for e in events
        if e.kind == "temporal"
    }
