"""Seeded synthetic GitHub and moat activity that spikes at the asset bursts driving the market effect.

Each day is drawn from its own stream keyed by (seed, repo or asset, day), so any day can be generated
alone; bursts come from ``bursts.py`` with the same seed and origin as the synthetic market. Work has a
weekly cycle: on Saturdays and Sundays (UTC) the baseline rates are ``weekend_activity`` times the
weekday rates (bursts, the planted cause, keep their own schedule).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache

import numpy as np
import polars as pl
from scipy.signal import lfilter

from cyber_pipelines.moat.schema import MOAT_SCHEMA
from cyber_pipelines.synthetic.bursts import (
    as_utc,
    bursts_between,
    check_asset,
    check_seed,
    epoch_hour,
    rng_for,
)
from cyber_pipelines.synthetic.settings import WEEKEND_ACTIVITY, check_setting

_REPO = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
_SYLLABLES = (
    "ka",
    "ro",
    "mi",
    "te",
    "lu",
    "san",
    "dor",
    "vi",
    "ne",
    "zo",
    "pa",
    "ri",
    "gu",
    "lo",
    "chi",
    "ben",
    "ax",
    "el",
    "yu",
    "fi",
    "mar",
    "jo",
    "tor",
    "qi",
    "hex",
)


@dataclass(frozen=True)
class RepoProfile:
    """Activity pattern of one synthetic repository (derived from its name and the seed)."""

    commits_per_day: float  # weekday baseline
    utc_offset: int  # the core team's time zone
    spike_commits: float  # extra commits (mean) in a burst hour
    authors: tuple[str, ...]  # the first ``core`` are core developers
    weights: tuple[float, ...]  # baseline probability of each author
    core: int
    stars0: int
    stars_per_day: float
    issues_level: float


def _check_repo(repo: str) -> str:
    if not isinstance(repo, str) or not _REPO.match(repo):
        raise ValueError(f"not a repository: {repo!r} (expected owner/name)")
    return repo


def _check_day(day: date, origin: date) -> None:
    for name, value in (("day", day), ("origin", origin)):
        if not isinstance(value, date) or isinstance(value, datetime):
            raise TypeError(f"{name} must be a datetime.date, got {value!r}")
    if day < origin:
        raise ValueError(f"day {day} is before the simulation origin {origin}")


def _login(rng: np.random.Generator) -> str:
    name = "".join(rng.choice(_SYLLABLES, size=int(rng.integers(2, 4))))
    return name + str(rng.integers(1, 100)) if rng.random() < 0.4 else name


@lru_cache(maxsize=256)
def repo_profile(repo: str, seed: int) -> RepoProfile:
    """The seeded profile of ``repo``: rates, time zone and a pool of authors (few core, long tail)."""
    rng = rng_for(check_seed(seed), "repo", _check_repo(repo))
    core, tail = int(rng.integers(3, 7)), int(rng.integers(20, 120))
    names: list[str] = []
    while len(names) < core + tail:
        login = _login(rng)
        names.append(login if login not in names else f"{login}-{len(names)}")
    core_w = rng.uniform(3.0, 8.0, core)
    tail_w = 1.0 / np.arange(1, tail + 1) ** 1.1  # Zipf-like long tail
    weights = np.concatenate([core_w / core_w.sum() * 0.7, tail_w / tail_w.sum() * 0.3])
    return RepoProfile(
        commits_per_day=float(np.clip(rng.lognormal(math.log(8.0), 0.6), 1.5, 40.0)),
        utc_offset=int(rng.integers(-8, 10)),
        spike_commits=float(rng.uniform(8.0, 16.0)),
        authors=tuple(names),
        weights=tuple(weights.tolist()),
        core=core,
        stars0=int(10 ** rng.uniform(2.5, 4.7)),
        stars_per_day=float(rng.uniform(0.5, 15.0)),
        issues_level=float(10 ** rng.uniform(1.0, 3.0)),
    )


def _hour_profile(utc_offset: int) -> np.ndarray:
    """Share of a day's commits in each UTC hour: a working-day bump around 14:00 local time."""
    local = (np.arange(24) + utc_offset) % 24
    shape = 0.15 + np.exp(-0.5 * ((local - 14) / 3.5) ** 2)
    return np.asarray(shape / shape.sum())


def _bursts_on(asset: str, seed: int, origin: date, first: datetime, hours: int) -> np.ndarray:
    """Burst hours of ``asset`` in ``[first, first + hours)`` (none before origin), as epoch hours."""
    start = epoch_hour(first)
    return bursts_between(asset, seed, max(start, epoch_hour(origin)), start + hours)


def simulate_commits(
    repo: str,
    assets: list[str],
    day: date,
    *,
    seed: int,
    origin: date,
    lag_hours: int,
    weekend_activity: float = WEEKEND_ACTIVITY,
) -> list[tuple[datetime, str]]:
    """Commit events ``(UTC timestamp, author login)`` of ``repo`` on ``day``, sorted by time.

    A seasonal Poisson baseline (a working-day bump in the team's time zone, ``weekend_activity`` times
    the weekday rate at weekends) plus a spike (mostly core developers) in the hour of each burst of the
    primary asset ``assets[0]``. ``lag_hours`` is the market's lag behind the spike; it is validated
    for consistency with the market call but does not move the commits.
    """
    _check_repo(repo)
    if not assets:
        raise ValueError(f"repo {repo} maps to no assets; the first asset drives its bursts")
    for asset in assets:
        check_asset(asset)
    _check_day(day, origin)
    check_setting("lag_hours", lag_hours)
    weekend = check_setting("weekend_activity", weekend_activity)
    profile = repo_profile(repo, check_seed(seed))
    day_start = as_utc(day)
    rng = rng_for(seed, "commits", repo, day.isoformat())
    per_day = profile.commits_per_day * (weekend if day.weekday() >= 5 else 1.0)
    counts = rng.poisson(per_day * _hour_profile(profile.utc_offset))
    spike_hours = (_bursts_on(assets[0], seed, origin, day_start, 24) - epoch_hour(day_start)).tolist()
    spikes = np.zeros(24, dtype=np.int64)
    spikes[spike_hours] = 3 + rng.poisson(profile.spike_commits, len(spike_hours))
    weights = np.asarray(profile.weights)
    core_weights = np.where(np.arange(weights.size) < profile.core, weights, weights * 0.3)
    events: list[tuple[datetime, str]] = []
    for hour in range(24):
        for n, w in ((counts[hour], weights), (spikes[hour], core_weights)):
            if not n:
                continue
            seconds = rng.integers(0, 3600, n)
            who = rng.choice(len(weights), size=n, p=w / w.sum())
            base = day_start + timedelta(hours=hour)
            events += [
                (base + timedelta(seconds=int(s)), profile.authors[i])
                for s, i in zip(seconds.tolist(), who.tolist(), strict=True)
            ]
    return sorted(events)


def simulate_repo_snapshot(repo: str, day: date, *, seed: int, origin: date) -> tuple[int, int]:
    """``(open_issues, stars)`` of ``repo`` at the end of ``day``: slowly varying, stars growing."""
    _check_day(day, origin)
    profile = repo_profile(_check_repo(repo), check_seed(seed))
    n = (day - origin).days + 1
    stars = profile.stars0 + int(rng_for(seed, "stars", repo).poisson(profile.stars_per_day, n).sum())
    shocks = rng_for(seed, "issues", repo).normal(0.0, 0.05, n)
    log_swing = lfilter([1.0], [1.0, -0.95], shocks)[-1]  # AR(1): weeks-long swings around the level
    return round(profile.issues_level * math.exp(log_swing)), stars


def simulate_moat_records(
    assets: list[str], day: date, *, seed: int, origin: date, weekend_activity: float = WEEKEND_ACTIVITY
) -> pl.DataFrame:
    """Synthetic moat observations published on ``day`` for ``assets`` in ``MOAT_SCHEMA``.

    - corporate/announcements, hourly: announcements in the hour ending at the timestamp (spikes in
      the hour of an asset burst; the baseline rate is ``weekend_activity`` times lower at weekends);
    - government/filings, daily at 06:00: filings of the previous day (more on burst days, the
      baseline ``weekend_activity`` times lower for a weekend day);
    - logistics/shipments, daily at 12:00: shipments of the previous day (raised on burst days; 0.7
      times the weekday level for a weekend day: freight runs on weekends too).
    """
    if not assets:
        raise ValueError("no assets given for the moat records")
    _check_day(day, origin)
    check_seed(seed)
    weekend = check_setting("weekend_activity", weekend_activity)
    day_start = as_utc(day)
    rows: list[tuple[datetime, str, str, str, float]] = []
    for asset in sorted(set(map(check_asset, assets))):
        level = rng_for(seed, "moat-level", asset)
        announce_rate, filings_rate = level.uniform(0.02, 0.1), level.uniform(0.5, 3.0)
        shipments = level.uniform(200, 2000)
        rng = rng_for(seed, "moat", asset, day.isoformat())
        # Hourly announcements: the 24 hours ending at 00:00 .. 23:00 of this day.
        window = day_start - timedelta(hours=1)
        in_hour = np.zeros(24, dtype=np.int64)
        burst_idx = _bursts_on(asset, seed, origin, window, 24) - epoch_hour(window)
        in_hour[burst_idx] = 2 + rng.poisson(3.0, burst_idx.size)
        hour_days = [(window + timedelta(hours=h)).weekday() for h in range(24)]
        rates = announce_rate * np.where(np.array(hour_days) >= 5, weekend, 1.0)
        counts = rng.poisson(rates) + in_hour
        rows += [
            (day_start + timedelta(hours=h), "corporate", asset, "announcements", float(c))
            for h, c in enumerate(counts.tolist())
        ]
        # Daily feeds about the previous day (nothing of it before the origin).
        yesterday = day - timedelta(days=1)
        n_bursts = _bursts_on(asset, seed, origin, as_utc(yesterday), 24).size
        was_weekend = yesterday.weekday() >= 5
        filings = rng.poisson(filings_rate * (weekend if was_weekend else 1.0)) + (rng.poisson(2.0, n_bursts) + 1).sum()
        freight = 0.7 if was_weekend else 1.0
        shipped = shipments * freight * rng.lognormal(0.0, 0.1) * (1.0 + 0.3 * n_bursts)
        rows.append((day_start + timedelta(hours=6), "government", asset, "filings", float(filings)))
        rows.append((day_start + timedelta(hours=12), "logistics", asset, "shipments", round(shipped, 1)))
    frame = pl.DataFrame(rows, schema=MOAT_SCHEMA, orient="row")
    return frame.sort("timestamp", "source", "entity", "metric")
