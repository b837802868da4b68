"""The models' walk-forward periods (no torch here, so the CLI can plan them cheaply).

The cutoff is the backtests' first out-of-sample bar: the earliest pair's first bar plus ``train_days``. The
``validation_days`` before it are the promotion period. Models train only on outcomes known when the
promotion period began; the promotion test uses that period, which no model saw; everything after the
cutoff is out of sample for every model.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

MIN_TRAIN_DAYS = 21  # a week of warm-up (the samples' trailing scale), a week of training, a week held out


def validation_days_for(train_days: int) -> int:
    """The promotion period a walk-forward of ``train_days`` leaves by default: a third of it, at most 30 days."""
    return min(30, train_days // 3)


@dataclass(frozen=True)
class Periods:
    validation_start: datetime  # models train on outcomes known by then
    cutoff: datetime  # the first out-of-sample bar

    def as_dict(self) -> dict[str, str]:
        return {"validation_start": self.validation_start.isoformat(), "cutoff": self.cutoff.isoformat()}


def periods(first_timestamps: list[datetime], train_days: int, validation_days: int) -> Periods:
    if not first_timestamps:
        raise ValueError("no pair has samples")
    if not 0 < validation_days < train_days:
        raise ValueError(f"validation_days must be in (0, train_days={train_days}), got {validation_days}")
    cutoff = min(first_timestamps) + timedelta(days=train_days)
    return Periods(cutoff - timedelta(days=validation_days), cutoff)
