"""Defaults and rules of the synthetic sources' settings: one table, read by the simulators and the config.

The defaults describe a plausible crypto market and commit stream; none of them is tuned to make any
strategy look good (the planted effect's size, lag and sign, and the planted motif's rate, length and
move, are the experiment's knobs, not facts).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

SEED = 7
EFFECT_SIZE = 1.0  # strength of the planted activity -> market effect (0 = none)
LAG_HOURS = 6  # the market moves this many hours after an activity burst
EFFECT_SIGN = 1  # +1: the planted drift is upward; -1: downward
FACTOR_CORRELATION = 0.75  # BTC-ETH hourly return correlation through the common market factor
WEEKEND_VOL = 0.7  # volatility on Saturday and Sunday (UTC) relative to weekdays
INTRADAY_VOL = 0.3  # amplitude of the intraday volatility profile (peak 15:00 UTC, trough 03:00 UTC)
LONG_MEMORY = 0.5  # standard deviation of the slow (day to months) log-volatility components
WEEKEND_ACTIVITY = 0.4  # commits (and moat announcements, filings) at weekends relative to weekdays
MOTIF_RATE = 0.0  # planted motif occurrences per 1000 hours per pair (0 = none)
MOTIF_LENGTH = 12  # bars of the planted motif's shape
MOTIF_MOVE = 3.0  # total move after the motif, in base sigmas, over the MOTIF_HORIZON_HOURS bars after it
DISTINCT_AR = 0.0  # hourly return autocorrelation (AR(1)) of the pairs in ``distinct_pairs`` (0 = like the pool)


# name -> (whole numbers only, the rule on the value, how the rule reads in an error)
_RULES: dict[str, tuple[bool, Callable[[float], bool], str]] = {
    "seed": (True, lambda v: v >= 0, "an integer >= 0"),
    "lag_hours": (True, lambda v: v >= 0, "an integer >= 0"),
    "effect_size": (False, lambda v: v >= 0, "a finite number >= 0"),
    "effect_sign": (False, lambda v: v in (1.0, -1.0), "+1 or -1"),
    "factor_correlation": (False, lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    "weekend_vol": (False, lambda v: 0 < v <= 3, "a number in (0, 3]"),
    "intraday_vol": (False, lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "long_memory": (False, lambda v: 0 <= v <= 2, "a number in [0, 2]"),
    "weekend_activity": (False, lambda v: 0 <= v <= 3, "a number in [0, 3]"),
    "motif_rate": (False, lambda v: 0 <= v <= 20, "a number in [0, 20]"),
    "motif_length": (True, lambda v: 2 <= v <= 48, "an integer in [2, 48]"),
    "motif_move": (False, lambda v: -20 <= v <= 20, "a finite number in [-20, 20]"),
    "distinct_ar": (False, lambda v: -0.5 <= v <= 0.5, "a number in [-0.5, 0.5]"),
}
NAMES = tuple(_RULES)


def check_setting(name: str, value: object) -> float:
    """``value`` as a float if it obeys the rule of setting ``name``; else ``ValueError`` naming it."""
    integer, accepts, expected = _RULES[name]
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or not accepts(number):
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return number
