"""The algedonic channel: one pain score in [0, 1] from drawdown, failed runs, failed checks and stale data.

Each input becomes a component in [0, 1] (its share of the policy's "full pain" amount, clipped), and the
components combine as a weighted noisy-or: ``pain = 1 - prod((1 - c) ** w)``. One full component with
weight 1 is pain 1; components that are each small add up without ever passing 1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from statistics import fmean
from typing import Any

from cyber_pipelines.vsm.policy import PainPolicy

COMPONENTS = ("drawdown", "failed_runs", "failed_checks", "stale_data")  # the names of PainWeights


@dataclass(frozen=True)
class PainInputs:
    """What hurts a pair (or the system). ``stale_hours``: how long its data is overdue beyond its period;
    None when unknown or not applicable (no pain)."""

    drawdown: float = 0.0
    failed_runs: int = 0
    failed_checks: int = 0
    stale_hours: float | None = None


@dataclass(frozen=True)
class Pain:
    score: float
    components: Mapping[str, float] = field(default_factory=dict)
    reason: str = "no pain"

    def to_json(self) -> dict[str, Any]:
        return {"score": self.score, "components": dict(self.components), "reason": self.reason}


def _unit(x: float) -> float:
    """``x`` clipped to [0, 1]; NaN counts as 0."""
    return 0.0 if math.isnan(x) else min(max(x, 0.0), 1.0)


def _combine(components: Mapping[str, float], weights: Mapping[str, float]) -> float:
    """Weighted noisy-or of components in [0, 1], rounded to 12 digits so that a threshold is met exactly
    (a 20% drawdown of a 25% full scale is pain 0.8, not 0.8000000000000002)."""
    calm = math.prod((1.0 - components[name]) ** weights[name] for name in components)
    return round(_unit(1.0 - calm), 12)


def _impact(component: float, weight: float) -> float:
    """A component's own contribution, ``-w * log(1 - c)``: 0 when it adds nothing, inf when it is full."""
    if component <= 0 or weight <= 0:
        return 0.0
    return math.inf if component >= 1 else -weight * math.log1p(-component)


def pain_score(inputs: PainInputs, policy: PainPolicy) -> Pain:
    """The pain of one pair (or of the system) with a reason naming its top contributors."""
    components = {
        "drawdown": _unit(inputs.drawdown / policy.drawdown_full),
        "failed_runs": _unit(inputs.failed_runs / policy.failures_full),
        "failed_checks": _unit(inputs.failed_checks / policy.failures_full),
        "stale_data": _unit((inputs.stale_hours or 0.0) / policy.stale_hours),
    }
    weights = policy.weights.model_dump()
    score = _combine(components, weights)
    described = {
        "drawdown": f"drawdown {inputs.drawdown:.1%}",
        "failed_runs": f"{inputs.failed_runs} failed run(s)",
        "failed_checks": f"{inputs.failed_checks} failed check(s)",
        "stale_data": f"data {inputs.stale_hours or 0.0:.1f} h overdue",
    }
    impact = {n: _impact(c, weights[n]) for n, c in components.items()}
    top = [n for n in sorted(impact, key=lambda n: -impact[n]) if impact[n] > 0][:3]
    if not top:
        return Pain(0.0, components, "pain 0.00: no drawdown, failures or stale data")
    parts = ", ".join(f"{described[n]} ({components[n]:.2f} x weight {weights[n]:g})" for n in top)
    return Pain(score, components, f"pain {score:.2f}: {parts}")


def overall_pain(pair_pains: Mapping[str, Pain], system: Pain) -> Pain:
    """The system's pain: the noisy-or of the system-level pain (inputs tied to no pair, such as failed
    runs of whole-system jobs) and the MEAN of the pairs' pains. The mean means one hurting pair among
    many barely moves it (its own breaker handles it) while many hurting pairs do."""
    mean = fmean(p.score for p in pair_pains.values()) if pair_pains else 0.0
    components = {"system": system.score, "pairs_mean": mean}
    score = _combine(components, {"system": 1.0, "pairs_mean": 1.0})
    reason = f"overall pain {score:.2f}: system {system.score:.2f}"
    if pair_pains:
        worst = max(pair_pains, key=lambda pair: pair_pains[pair].score)
        reason += f"; mean of {len(pair_pains)} pairs {mean:.2f} (worst {worst} {pair_pains[worst].score:.2f})"
    else:
        reason += "; no pairs"
    return Pain(score, components, reason)
