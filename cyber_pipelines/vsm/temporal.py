"""Temporal patterns over the VSM event stream: "3 run failures of a pair within 5 minutes" and eleven more.

Each pattern is a detector registered by name (``PATTERNS``, ``DETECTORS``) and configured by
``policy.temporal[name]``: its parameters, and ``trips`` (whether a match trips the breaker). A detector
reads the events (log order) up to ``now``; later ones are ignored. A windowed pattern counts only events
with ``now - window <= at <= now`` (an event exactly one window old still counts). ``detect`` groups the
stream once (``Stream``) and runs every rule of the policy.

A match names its evidence by ``seq`` and its ``at`` is the time of its newest evidence (for an absence,
the moment the absence reached the threshold), so a condition that persists unchanged over several
ticks yields the same match each time: callers de-duplicate on ``(pattern, pair, events)``.

Vocabulary read from the events: breaker decisions ``open`` / ``closed``; a ``pair_state`` decision in
``INACTIVE_STATES`` marks a pair inactive (``silence`` skips it); ``data`` keys ``periods_overdue`` and
``period_seconds`` (staleness), ``queued`` (queue), ``check`` (check events), ``attempt`` and ``error``
(failures; ``fingerprint`` overrides the one derived from ``error``), ``seconds`` and ``job`` (run_success).
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any, NamedTuple

from cyber_pipelines.vsm.events import Event, utc
from cyber_pipelines.vsm.policy import Policy, TemporalRule

OPEN, CLOSED = "open", "closed"
INACTIVE_STATES = frozenset({"hibernated", "removed", "retired", "paused"})
# the kinds that show a pair is operated (silence counts from the first of them when a pair never succeeded)
ACTIVITY = ("run_success", "run_failure", "check_success", "check_failure", "zombie", "staleness", "pair_state")


@dataclass(frozen=True)
class Match:
    """One pattern matched: ``pair`` None for a system-wide match; ``events`` the seqs of the evidence."""

    pattern: str
    pair: str | None
    trips: bool
    reason: str
    events: tuple[int, ...]
    at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "pattern": self.pattern,
            "pair": self.pair,
            "trips": self.trips,
            "reason": self.reason,
            "events": list(self.events),
            "at": self.at.isoformat(),
        }


class Item(NamedTuple):
    pos: int  # position in the stream (log order)
    t: float  # epoch seconds
    event: Event


class Stream:
    """The events up to ``now``, grouped once by kind, with their epoch times; shared by the detectors."""

    def __init__(self, events: Iterable[Event], now: datetime) -> None:
        self.now = utc(now)
        self.t = self.now.timestamp()
        self._kinds: dict[str, list[Item]] = {}
        for pos, event in enumerate(events):
            at = event.at
            t = at.timestamp() if at.tzinfo is not None else at.replace(tzinfo=UTC).timestamp()
            if t > self.t:
                continue
            self._kinds.setdefault(event.kind, []).append(Item(pos, t, event))

    def of(self, *kinds: str, minutes: float | None = None) -> list[Item]:
        """Events of ``kinds`` (all kinds when none), in log order; within the last ``minutes`` if given."""
        groups = [self._kinds.get(k, []) for k in kinds] if kinds else list(self._kinds.values())
        items = groups[0] if len(groups) == 1 else sorted((i for g in groups for i in g), key=lambda i: i.pos)
        if minutes is None:
            return list(items)
        since = self.t - 60.0 * minutes
        return [i for i in items if i.t >= since]


class Found(NamedTuple):
    pair: str | None
    reason: str
    items: Sequence[Item]  # the evidence
    at: datetime


Detector = Callable[[Stream, TemporalRule], list[Found]]


@dataclass(frozen=True)
class Pattern:
    """A registered detector: ``pattern(events, now, rule)`` runs it alone."""

    name: str
    params: tuple[str, ...]  # required parameters
    optional: tuple[str, ...]
    run: Detector

    def check(self, rule: TemporalRule) -> None:
        given = set(rule.model_extra or {})
        missing = [p for p in self.params if p not in given]
        unknown = sorted(given - set(self.params) - set(self.optional))
        expected = ", ".join(self.params + self.optional)
        if missing:
            raise ValueError(f"temporal rule {self.name}: missing parameter {missing[0]!r} (it takes {expected})")
        if unknown:
            raise ValueError(f"temporal rule {self.name}: unknown parameter {unknown[0]!r} (it takes {expected})")

    def matches(self, stream: Stream, rule: TemporalRule) -> list[Match]:
        self.check(rule)
        found = sorted(self.run(stream, rule), key=lambda f: (f.pair is not None, f.pair or "", f.at, f.reason))
        return [
            Match(self.name, f.pair, rule.trips, f.reason, tuple(i.event.seq for i in f.items), f.at) for f in found
        ]

    def __call__(self, events: Iterable[Event], now: datetime, rule: TemporalRule) -> list[Match]:
        return self.matches(Stream(events, now), rule)


DETECTORS: dict[str, Pattern] = {}


def pattern(name: str, *params: str, optional: tuple[str, ...] = ()) -> Callable[[Detector], Pattern]:
    def register(run: Detector) -> Pattern:
        DETECTORS[name] = Pattern(name, params, optional, run)
        return DETECTORS[name]

    return register


# ------------------------------------------------------------------------------------------------ helpers


def by_key(items: Iterable[Item], key: Callable[[Item], Any] = lambda i: i.event.pair) -> dict[Any, list[Item]]:
    groups: dict[Any, list[Item]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return groups


def _name(pair: str | None) -> str:
    return pair if pair is not None else "system"


def _span(minutes: float) -> str:
    return f"{minutes / 60:g} h" if minutes >= 120 and minutes % 60 == 0 else f"{minutes:g} min"


def _newest(items: Sequence[Item]) -> datetime:
    return datetime.fromtimestamp(max(i.t for i in items), UTC)


def _number(data: Mapping[str, Any], key: str) -> float | None:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _pairs_of(items: Sequence[Item]) -> tuple[str | None, str]:
    """The one pair all ``items`` belong to (None when several or none), and a short description."""
    pairs = sorted({i.event.pair for i in items if i.event.pair is not None})
    if len(pairs) == 1 and all(i.event.pair is not None for i in items):
        return pairs[0], f"pair {pairs[0]}"
    shown = ", ".join(pairs[:5]) + (f" +{len(pairs) - 5} more" if len(pairs) > 5 else "")
    return None, f"{len(pairs)} pairs ({shown})" if pairs else "the system"


def _flips(items: Sequence[Item], value: Callable[[Item], Any]) -> int:
    return sum(1 for a, b in pairwise(items) if value(a) != value(b))


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_VOLATILE = re.compile(r"0x[0-9a-f]+|\b[0-9a-f]{8,}\b|\d+(?:\.\d+)?")


def fingerprint(message: str) -> str:
    """An error message without its volatile parts: first line, lower case, ids and numbers as ``#``."""
    line = (message.strip().splitlines() or [""])[0].lower()
    return " ".join(_VOLATILE.sub("#", _UUID.sub("#", line)).split())[:200]


# ----------------------------------------------------------------------------------------------- patterns


@pattern("failure_burst", "count", "minutes")
def failure_burst(s: Stream, rule: TemporalRule) -> list[Found]:
    """At least ``count`` run failures of a pair within ``minutes``."""
    count, minutes = rule.param("count"), rule.param("minutes")
    out = []
    for pair, items in by_key(s.of("run_failure", minutes=minutes)).items():
        if len(items) >= count:
            reason = f"{_name(pair)}: {len(items)} run failures within {_span(minutes)} (threshold {count:g})"
            out.append(Found(pair, reason, items, _newest(items)))
    return out


@pattern("oscillation", "flips", "minutes")
def oscillation(s: Stream, rule: TemporalRule) -> list[Found]:
    """A pair's ``pair_state`` (or ``breaker``) decision changing at least ``flips`` times within ``minutes``."""
    flips, minutes = rule.param("flips"), rule.param("minutes")
    out = []
    for kind in ("pair_state", "breaker"):
        for pair, items in by_key(s.of(kind, minutes=minutes)).items():
            n = _flips(items, lambda i: i.event.decision)
            if n >= flips:
                path = " -> ".join(i.event.decision for i in items[-6:])
                reason = f"{_name(pair)}: {kind} changed {n} times within {_span(minutes)} (threshold {flips:g}): "
                out.append(Found(pair, reason + ("... -> " if len(items) > 6 else "") + path, items, _newest(items)))
    return out


@pattern("cascade", "pairs", "minutes")
def cascade(s: Stream, rule: TemporalRule) -> list[Found]:
    """Run or check failures of at least ``pairs`` distinct pairs within ``minutes`` (system-wide)."""
    pairs, minutes = rule.param("pairs"), rule.param("minutes")
    first: dict[str, Item] = {}
    for item in s.of("run_failure", "check_failure", minutes=minutes):
        if item.event.pair is not None:
            first.setdefault(item.event.pair, item)
    if len(first) < pairs:
        return []
    items = sorted(first.values(), key=lambda i: i.pos)
    _, which = _pairs_of(items)
    reason = f"failures spread across {which} within {_span(minutes)} (threshold {pairs:g} pairs)"
    return [Found(None, reason, items, _newest(items))]


@pattern("staleness", "periods")
def staleness(s: Stream, rule: TemporalRule) -> list[Found]:
    """A pair's data at least ``periods`` periods overdue, from its latest ``staleness`` event.

    ``data["periods_overdue"]`` as reported; with ``data["period_seconds"]`` the periods elapsed since the
    report are added (the data got no fresher since)."""
    periods = rule.param("periods")
    out = []
    for pair, items in by_key(s.of("staleness")).items():
        last = items[-1]
        overdue = _number(last.event.data, "periods_overdue")
        if overdue is None:
            continue
        period = _number(last.event.data, "period_seconds")
        when = f"{last.event.at:%Y-%m-%d %H:%M}"
        since = f" as of {when}"
        if period is not None and period > 0:
            since = f" ({overdue:g} reported at {when}, plus one per {period:g} s since)"
            overdue += math.floor((s.t - last.t) / period)
        if overdue >= periods:
            reason = f"{_name(pair)}: data {overdue:g} periods overdue{since} (threshold {periods:g})"
            out.append(Found(pair, reason, [last], _newest([last])))
    return out


@pattern("overload", "queued")
def overload(s: Stream, rule: TemporalRule) -> list[Found]:
    """More than ``queued`` runs queued, from the latest ``queue`` event (system-wide, or per pair)."""
    limit = rule.param("queued")
    out = []
    for pair, items in by_key(s.of("queue")).items():
        last = items[-1]
        queued = _number(last.event.data, "queued")
        if queued is not None and queued > limit:
            reason = f"{_name(pair)}: {queued:g} runs queued at {last.event.at:%H:%M:%S} (limit {limit:g})"
            out.append(Found(pair, reason, [last], _newest([last])))
    return out


@pattern("check_flapping", "flips", "minutes")
def check_flapping(s: Stream, rule: TemporalRule) -> list[Found]:
    """A check of a pair (``data["check"]``) alternating pass/fail at least ``flips`` times within ``minutes``."""
    flips, minutes = rule.param("flips"), rule.param("minutes")
    out = []
    items_all = s.of("check_failure", "check_success", minutes=minutes)
    for (pair, check), items in by_key(items_all, lambda i: (i.event.pair, str(i.event.data.get("check", "")))).items():
        n = _flips(items, lambda i: i.event.kind)
        if n >= flips:
            reason = f"{_name(pair)}: check {check or '?'} flipped pass/fail {n} times within {_span(minutes)} "
            out.append(Found(pair, reason + f"(threshold {flips:g})", items, _newest(items)))
    return out


@pattern("retry_storm", "count", "minutes")
def retry_storm(s: Stream, rule: TemporalRule) -> list[Found]:
    """At least ``count`` failures of retries (``data["attempt"] > 1``) within ``minutes``, across the system."""
    count, minutes = rule.param("count"), rule.param("minutes")
    items = [i for i in s.of("run_failure", minutes=minutes) if (_number(i.event.data, "attempt") or 0) > 1]
    if len(items) < count:
        return []
    pair, which = _pairs_of(items)
    reason = f"{len(items)} retried runs failed within {_span(minutes)} (threshold {count:g}), from {which}"
    return [Found(pair, reason, items, _newest(items))]


@pattern("zombie_runs", "count", optional=("minutes",))
def zombie_runs(s: Stream, rule: TemporalRule) -> list[Found]:
    """At least ``count`` zombie runs of a pair within ``minutes`` when given, else since its breaker last closed."""
    count = rule.param("count")
    minutes = rule.param("minutes") if "minutes" in (rule.model_extra or {}) else None
    closed = {p: [i for i in items if i.event.decision == CLOSED] for p, items in by_key(s.of("breaker")).items()}
    out = []
    for pair, items in by_key(s.of("zombie", minutes=minutes)).items():
        since = "within " + _span(minutes) if minutes is not None else "in the log"
        if minutes is None and closed.get(pair):
            last = closed[pair][-1]
            items = [i for i in items if i.pos > last.pos]
            since = f"since the breaker closed at {last.event.at:%Y-%m-%d %H:%M}"
        if items and len(items) >= count:
            reason = f"{_name(pair)}: {len(items)} zombie runs {since} (threshold {count:g})"
            out.append(Found(pair, reason, items, _newest(items)))
    return out


@pattern("repeated_error", "count", "minutes")
def repeated_error(s: Stream, rule: TemporalRule) -> list[Found]:
    """The same error (``fingerprint`` of ``data["error"]``) at least ``count`` times within ``minutes``, any pairs."""
    count, minutes = rule.param("count"), rule.param("minutes")
    errors: dict[str, list[Item]] = {}
    for item in s.of(minutes=minutes):
        data = item.event.data
        error = data.get("error")
        if isinstance(error, str) and error.strip():
            key = str(data.get("fingerprint") or fingerprint(error))
            errors.setdefault(key, []).append(item)
    out = []
    for key, items in errors.items():
        if len(items) >= count:
            pair, which = _pairs_of(items)
            reason = (
                f'error "{key[:80]}" {len(items)} times within {_span(minutes)} (threshold {count:g}), from {which}'
            )
            out.append(Found(pair, reason, items, _newest(items)))
    return out


@pattern("slow_runs", "factor", "runs")
def slow_runs(s: Stream, rule: TemporalRule) -> list[Found]:
    """A pair's latest successful run (per ``data["job"]``) slower than ``factor`` x the median of ``runs`` before."""
    factor, runs = rule.param("factor"), max(1, int(rule.param("runs")))
    timed = [i for i in s.of("run_success") if _number(i.event.data, "seconds") is not None]
    out = []
    for (pair, job), items in by_key(timed, lambda i: (i.event.pair, str(i.event.data.get("job") or ""))).items():
        if len(items) <= runs:
            continue
        latest, previous = items[-1], items[-runs - 1 : -1]
        seconds = float(latest.event.data["seconds"])
        median = statistics.median(float(i.event.data["seconds"]) for i in previous)
        if median > 0 and seconds > factor * median:
            what = f"{_name(pair)}" + (f" {job}" if job else "")
            reason = f"{what}: last run took {seconds:.1f} s, {seconds / median:.1f}x the median {median:.1f} s "
            reason += f"of the {runs} before (threshold {factor:g}x)"
            out.append(Found(pair, reason, [*previous, latest], _newest([latest])))
    return out


@pattern("silence", "hours")
def silence(s: Stream, rule: TemporalRule) -> list[Found]:
    """No successful run of an active pair for at least ``hours`` (since its first ``ACTIVITY`` event if none).

    A pair is inactive while its latest ``pair_state`` decision is in ``INACTIVE_STATES`` or its breaker is open."""
    hours = rule.param("hours")
    successes = by_key(s.of("run_success"))
    states = by_key(s.of("pair_state"))
    breakers = by_key(s.of("breaker"))
    first: dict[str, Item] = {}
    for kind in ACTIVITY:
        for pair, items in by_key(s.of(kind)).items():
            if pair is not None and (pair not in first or items[0].pos < first[pair].pos):
                first[pair] = items[0]
    out = []
    for pair in sorted(first):
        if pair in states and states[pair][-1].event.decision in INACTIVE_STATES:
            continue
        if pair in breakers and breakers[pair][-1].event.decision == OPEN:
            continue
        last = successes[pair][-1] if pair in successes else None
        since = last or first[pair]
        quiet = (s.t - since.t) / 3600.0
        if quiet >= hours:
            when = f"{since.event.at:%Y-%m-%d %H:%M}"
            what = f"last at {when}" if last else f"none since first seen at {when}"
            reason = f"{pair}: no successful run for {quiet:.1f} h ({what}; threshold {hours:g} h)"
            out.append(Found(pair, reason, [since], datetime.fromtimestamp(since.t + 3600.0 * hours, UTC)))
    return out


@pattern("breaker_thrash", "trips_count", "hours")
def breaker_thrash(s: Stream, rule: TemporalRule) -> list[Found]:
    """A pair's breaker opening at least ``trips_count`` times within ``hours``."""
    trips, hours = rule.param("trips_count"), rule.param("hours")
    opened = [i for i in s.of("breaker", minutes=60.0 * hours) if i.event.decision == OPEN]
    out = []
    for pair, items in by_key(opened).items():
        if len(items) >= trips:
            reason = f"{_name(pair)}: breaker opened {len(items)} times within {hours:g} h (threshold {trips:g})"
            out.append(Found(pair, reason, items, _newest(items)))
    return out


PATTERNS: tuple[str, ...] = tuple(DETECTORS)


def validate_rules(rules: Mapping[str, TemporalRule]) -> None:
    """ValueError naming the first unknown rule, or a missing or unknown parameter of a known one."""
    for name, rule in rules.items():
        if name not in DETECTORS:
            raise ValueError(f"unknown temporal rule {name!r}; known rules: {', '.join(PATTERNS)}")
        DETECTORS[name].check(rule)


def detect(events: Iterable[Event], now: datetime, policy: Policy | Mapping[str, TemporalRule]) -> list[Match]:
    """Every rule of ``policy.temporal`` over ``events`` (log order) at ``now``, in ``PATTERNS`` order."""
    rules = policy.temporal if isinstance(policy, Policy) else policy
    validate_rules(rules)
    stream = Stream(events, now)
    return [m for name in PATTERNS if name in rules for m in DETECTORS[name].matches(stream, rules[name])]
