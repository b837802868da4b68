"""S5 policy: the one validated file of limits and thresholds that every VSM part reads.

``load_policy`` reads ``path``, else ``CYBER_POLICY``, else the packaged ``policy.yaml``, and raises
``PolicyError`` with one line that names the file and the bad setting. ``PolicyKeeper`` is what the
sensors use: a bad edit is refused (the error is reported) and the last good policy stays in force,
remembered in a file so that it survives a restart of the daemon.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEFAULT_POLICY = Path(__file__).with_name("policy.yaml")
MOATS = ("github", "government", "logistics", "corporate")
TEAMS = ("hft", "day_trade", "swing")


class PolicyError(ValueError):
    """A policy file that cannot be read or does not validate (one line: file and setting)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProbationLevel(_Strict):
    pnl: float = Field(lt=0, gt=-1, description="P&L at or below which this level applies")
    size: float = Field(gt=0, le=1, description="position size multiplier at this level")


class LedgerPolicy(_Strict):
    strategy: str = Field(min_length=1)
    probation: tuple[ProbationLevel, ...]
    hysteresis: float = Field(ge=0, lt=0.5)
    hibernate_pnl: float = Field(lt=0, gt=-1)
    hibernate_days: int = Field(ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> LedgerPolicy:
        levels = self.probation
        if any(b.pnl >= a.pnl or b.size >= a.size for a, b in pairwise(levels)):
            raise ValueError("probation levels must go down in pnl and in size, one after the other")
        if levels and self.hibernate_pnl > levels[-1].pnl:
            raise ValueError("hibernate_pnl must be at or below the last probation level's pnl")
        return self


class ActivePolicy(_Strict):
    max_pairs: int = Field(ge=1)
    cooldown_minutes: float = Field(ge=0)


class PainWeights(_Strict):
    drawdown: float = Field(ge=0, le=1)
    failed_checks: float = Field(ge=0, le=1)
    stale_data: float = Field(ge=0, le=1)
    failed_runs: float = Field(ge=0, le=1)


class PainPolicy(_Strict):
    weights: PainWeights
    drawdown_full: float = Field(gt=0, le=1)
    failures_full: int = Field(ge=1)
    window_minutes: float = Field(gt=0)
    stale_hours: float = Field(gt=0)

    @field_validator("weights")
    @classmethod
    def _some_weight(cls, weights: PainWeights) -> PainWeights:
        if sum(weights.model_dump().values()) <= 0:
            raise ValueError("at least one pain weight must be positive")
        return weights


class BreakerPolicy(_Strict):
    trip: float = Field(gt=0, lt=1)
    cooldown_minutes: float = Field(gt=0)


class TemporalRule(BaseModel):
    """One temporal pattern's parameters (names depend on the pattern) and whether a match trips the breaker."""

    model_config = ConfigDict(extra="allow", frozen=True)
    trips: bool = False

    @model_validator(mode="after")
    def _numbers(self) -> TemporalRule:
        for name, value in (self.model_extra or {}).items():
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        return self

    def param(self, name: str) -> float:
        value = (self.model_extra or {}).get(name)
        if value is None:
            raise KeyError(f"temporal rule has no parameter {name!r}")
        return float(value)


class TeamWeights(_Strict):
    github: float = Field(ge=0)
    government: float = Field(ge=0)
    logistics: float = Field(ge=0)
    corporate: float = Field(ge=0)


class ProspectingPolicy(_Strict):
    min_points: float = Field(ge=0, le=8)
    consensus: int = Field(ge=1, le=3)
    min_confidence: float = Field(ge=0, le=1)
    max_additions_per_tick: int = Field(ge=1)
    teams: dict[str, TeamWeights]

    @field_validator("teams")
    @classmethod
    def _three_teams(cls, teams: dict[str, TeamWeights]) -> dict[str, TeamWeights]:
        if sorted(teams) != sorted(TEAMS):
            raise ValueError(f"teams must be exactly {', '.join(TEAMS)}, got {', '.join(sorted(teams)) or 'none'}")
        return teams


class ZombiePolicy(_Strict):
    heartbeat_minutes: float = Field(gt=0)


class Policy(_Strict):
    version: int = Field(ge=1)
    ledger: LedgerPolicy
    active: ActivePolicy
    pain: PainPolicy
    breaker: BreakerPolicy
    temporal: dict[str, TemporalRule]
    prospecting: ProspectingPolicy
    zombies: ZombiePolicy

    def digest(self) -> str:
        """A short content hash: which policy was in force when a decision was made."""
        return hashlib.sha256(json.dumps(self.model_dump(), sort_keys=True).encode()).hexdigest()[:12]


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "(top level)"
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown setting"
    elif error["type"] == "missing":
        message = "missing setting"
    return f"{where}: {message}"


def policy_path(path: str | os.PathLike[str] | None = None) -> Path:
    """``path``, else ``CYBER_POLICY``, else the packaged default."""
    return Path(path or os.environ.get("CYBER_POLICY") or DEFAULT_POLICY).resolve()


def parse_policy(raw: object, origin: str) -> Policy:
    if not isinstance(raw, dict):
        raise PolicyError(f"invalid policy {origin}: expected a mapping of settings, got {type(raw).__name__}")
    from cyber_pipelines.vsm.temporal import validate_rules  # the patterns know their parameters

    try:
        policy = Policy.model_validate(raw)
    except ValidationError as exc:
        raise PolicyError(f"invalid policy {origin}: {_first_error(exc)}") from None
    try:
        validate_rules(policy.temporal)
    except ValueError as exc:
        raise PolicyError(f"invalid policy {origin}: {exc}") from None
    return policy


def load_policy(path: str | os.PathLike[str] | None = None) -> Policy:
    """Read and validate the policy file; ``PolicyError`` (one line) when it is missing or invalid."""
    file = policy_path(path)
    try:
        text = file.read_text()
    except FileNotFoundError:
        named = " (named by CYBER_POLICY)" if not path and os.environ.get("CYBER_POLICY") else ""
        raise PolicyError(f"policy file not found: {file}{named}") from None
    except OSError as exc:
        raise PolicyError(f"policy file {file} cannot be read: {exc.strerror or exc}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise PolicyError(f"invalid policy {file}: not valid YAML{where}: {problem}") from None
    return parse_policy(raw, str(file))


@dataclass(frozen=True)
class PolicyInForce:
    policy: Policy
    source: str  # the file it was read from
    error: str | None = None  # set when the file was refused and the last good policy is in force


class PolicyKeeper:
    """The policy in force: the file when it validates, else the last good one (kept in ``last_good``)."""

    def __init__(self, last_good: Path, path: str | os.PathLike[str] | None = None) -> None:
        self.last_good = Path(last_good)
        self.path = path

    def current(self) -> PolicyInForce:
        file = policy_path(self.path)
        try:
            policy = load_policy(file)
        except PolicyError as exc:
            kept = self._kept()
            if kept is None:
                raise PolicyError(f"{exc}; and no last good policy is kept at {self.last_good}") from None
            return PolicyInForce(kept[0], kept[1], error=str(exc))
        self._keep(policy, str(file))
        return PolicyInForce(policy, str(file))

    def _kept(self) -> tuple[Policy, str] | None:
        try:
            saved: dict[str, Any] = json.loads(self.last_good.read_text())
            return Policy.model_validate(saved["policy"]), str(saved["source"])
        except (OSError, ValueError, KeyError, ValidationError):
            return None

    def _keep(self, policy: Policy, source: str) -> None:
        kept = self._kept()
        if kept is not None and kept[0] == policy and kept[1] == source:
            return
        self.last_good.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.last_good.with_suffix(".tmp")
        tmp.write_text(json.dumps({"source": source, "policy": policy.model_dump(mode="json")}, indent=1))
        os.replace(tmp, self.last_good)
