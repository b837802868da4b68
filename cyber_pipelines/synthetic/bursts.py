"""Activity bursts per base asset: the shared cause of the planted activity -> market lead-lag effect.

Bursts are a Poisson process anchored to absolute UTC hours (weeks counted from the Unix epoch), each
week drawn from its own seeded stream: the schedule never depends on how far a simulation runs, and
two simulations with different origins agree on when, in absolute time, a burst happened.
"""

from __future__ import annotations

import hashlib
import math
import re
from datetime import UTC, date, datetime, timedelta

import numpy as np
from scipy.signal import lfilter

BURSTS_PER_WEEK = 4.0  # mean rate of the Poisson burst process
EFFECT_DECAY_HOURS = 2.0  # e-folding time of the market effect after its onset (short: a sharp lead)
_WEEK = 168
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_HOUR = timedelta(hours=1)
_ASSET = re.compile(r"^[A-Z0-9]{2,12}$")


def check_seed(seed: int) -> int:
    """Return ``seed`` as an int if it is a non-negative integer; raise ``ValueError`` otherwise."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def rng_for(seed: int, *names: str) -> np.random.Generator:
    """A random stream derived stably from ``seed`` and entity names (sha256, not ``hash()``)."""
    seed = check_seed(seed)
    digest = hashlib.sha256("\x1f".join(names).encode()).digest()
    words = [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]
    return np.random.default_rng(np.random.SeedSequence([int(seed), *words]))


def check_asset(asset: str) -> str:
    """Return ``asset`` if it is an upper-case symbol such as ``ETH``; raise ``ValueError`` otherwise."""
    if not isinstance(asset, str) or not _ASSET.match(asset):
        raise ValueError(f"not an asset symbol: {asset!r} (expected upper-case such as ETH)")
    return asset


def as_utc(moment: date | datetime) -> datetime:
    """A date means its midnight UTC; a naive datetime is read as UTC."""
    if not isinstance(moment, datetime):
        if not isinstance(moment, date):
            raise TypeError(f"expected a date or datetime, got {type(moment).__name__}")
        return datetime(moment.year, moment.month, moment.day, tzinfo=UTC)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def epoch_hour(moment: date | datetime) -> int:
    """Whole hours since the Unix epoch; ``moment`` must lie on an hour boundary."""
    delta = as_utc(moment) - _EPOCH
    if delta % _HOUR:
        raise ValueError(f"{moment!r} is not on an hour boundary")
    return delta // _HOUR


def bursts_between(asset: str, seed: int, first_hour: int, stop_hour: int) -> np.ndarray:
    """Burst hours (since the Unix epoch) in ``[first_hour, stop_hour)``, sorted and unique."""
    check_asset(asset)
    if stop_hour <= first_hour:
        return np.empty(0, dtype=np.int64)
    chunks = []
    for week in range(first_hour // _WEEK, (stop_hour - 1) // _WEEK + 1):
        rng = rng_for(seed, "bursts", asset, str(week))
        count = rng.poisson(BURSTS_PER_WEEK)
        chunks.append(week * _WEEK + rng.integers(0, _WEEK, size=count, dtype=np.int64))
    hours = np.unique(np.concatenate(chunks))
    return hours[(hours >= first_hour) & (hours < stop_hour)]


def burst_hours(asset: str, seed: int, origin: datetime, end: datetime) -> np.ndarray:
    """Burst hours of ``asset`` as int64 hour indices since ``origin``, in ``[origin, end)``, sorted.

    The same for the same ``(asset, seed, origin)`` whatever ``end`` is: a later end only appends.
    """
    start = epoch_hour(origin)
    stop = start + max(0, math.ceil((as_utc(end) - as_utc(origin)) / _HOUR))
    return bursts_between(asset, seed, start, stop) - start


def effect_kernel(n_hours: int, bursts: np.ndarray, lag_hours: int, decay_hours: float) -> np.ndarray:
    """Sum over bursts ``b`` of ``exp(-(h - b - lag) / decay)`` for ``h >= b + lag`` (else 0).

    The effect starts exactly ``lag_hours`` after a burst, peaks there and decays exponentially.
    """
    if n_hours < 0:
        raise ValueError(f"n_hours must be >= 0, got {n_hours}")
    if lag_hours < 0:
        raise ValueError(f"lag_hours must be >= 0, got {lag_hours}")
    if not decay_hours > 0 or not math.isfinite(decay_hours):
        raise ValueError(f"decay_hours must be a positive number, got {decay_hours}")
    onsets = np.asarray(bursts, dtype=np.int64) + lag_hours
    if onsets.size and onsets.min() < lag_hours:
        raise ValueError("burst hours must be >= 0")
    impulses = np.bincount(onsets[onsets < n_hours], minlength=n_hours).astype(np.float64)
    # y[h] = x[h] + a * y[h-1] is exactly the sum of a**(h - onset) over earlier onsets.
    return np.asarray(lfilter([1.0], [1.0, -math.exp(-1.0 / decay_hours)], impulses), dtype=np.float64)
