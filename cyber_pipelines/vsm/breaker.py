"""The circuit breaker of a pair (or of the whole system): a pure state machine.

- closed -> open: pain above ``policy.trip`` (strictly), or a temporal rule trips (``tripped_by``).
- open -> half_open: once ``cooldown_minutes`` have passed since it opened and nothing trips any more
  (a trial while the pair still hurts would only fail; the breaker waits out both).
- half_open allows exactly one trial run (``start_trial``); its failure, or pain or a rule tripping
  again, opens the breaker again (bad news wins); its success closes it.

Automation runs only while ``allows_run``. Every transition carries a one-line reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from cyber_pipelines.vsm.events import utc
from cyber_pipelines.vsm.policy import BreakerPolicy

BreakerState = Literal["closed", "open", "half_open"]
STATES: tuple[BreakerState, ...] = ("closed", "open", "half_open")


@dataclass(frozen=True)
class Breaker:
    state: BreakerState
    since: datetime  # when it entered ``state``
    reason: str
    trial_run: str | None = None  # the one trial run of a half-open breaker, once started

    @classmethod
    def new(cls, now: datetime) -> Breaker:
        return cls("closed", utc(now), "new breaker: closed")

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "since": self.since.isoformat(),
            "reason": self.reason,
            "trial_run": self.trial_run,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Breaker:
        state = data["state"]
        if state not in STATES:
            raise ValueError(f"unknown breaker state {state!r} (expected one of {', '.join(STATES)})")
        return cls(state, utc(datetime.fromisoformat(data["since"])), str(data["reason"]), data.get("trial_run"))


def _trips(pain: float, tripped_by: str | None, policy: BreakerPolicy) -> str | None:
    """Why the breaker trips now (pain above the threshold, a rule), or None."""
    causes = []
    if pain > policy.trip:
        causes.append(f"pain {pain:.3f} > {policy.trip:g}")
    if tripped_by:
        causes.append(f"rule {tripped_by}")
    return " and ".join(causes) or None


def step(
    breaker: Breaker,
    now: datetime,
    *,
    pain: float,
    tripped_by: str | None = None,
    trial: Literal["success", "failure"] | None = None,
    policy: BreakerPolicy,
) -> Breaker:
    """The breaker after one evaluation at ``now``; the same object when nothing changes. ``trial`` is the
    outcome of the half-open trial run when it has finished (ignored in the other states)."""
    now = utc(now)
    trips = _trips(pain, tripped_by, policy)
    cooldown = f"{policy.cooldown_minutes:g} min cooldown"
    if breaker.state == "closed":
        if trips:
            return Breaker("open", now, f"{trips}: breaker open, automation stops ({cooldown})")
        return breaker
    if breaker.state == "open":
        if trips or now - breaker.since < timedelta(minutes=policy.cooldown_minutes):
            return breaker
        return Breaker(
            "half_open", now, f"{cooldown} over, pain {pain:.3f} <= {policy.trip:g}: half-open, one trial run"
        )
    trial_name = f"trial run {breaker.trial_run}" if breaker.trial_run else "trial run"
    if trial == "failure":
        return Breaker("open", now, f"{trial_name} failed: breaker open again ({cooldown})")
    if trips:
        return Breaker("open", now, f"{trips} while half-open: breaker open again ({cooldown})")
    if trial == "success":
        return Breaker("closed", now, f"{trial_name} succeeded: breaker closed")
    return breaker


def allows_run(breaker: Breaker) -> bool:
    """Closed: yes. Half-open: only the one trial, so yes until it has started. Open: no."""
    return breaker.state == "closed" or (breaker.state == "half_open" and breaker.trial_run is None)


def start_trial(breaker: Breaker, run_id: str) -> Breaker:
    """Record the half-open breaker's one trial run; ``ValueError`` when the breaker is not half-open or
    already has its trial."""
    if breaker.state != "half_open":
        raise ValueError(f"no trial run while the breaker is {breaker.state}")
    if breaker.trial_run is not None:
        raise ValueError(f"trial run refused: {breaker.trial_run} is already the half-open breaker's one trial")
    return replace(breaker, trial_run=run_id, reason=f"{breaker.reason}; trial run {run_id} started")
