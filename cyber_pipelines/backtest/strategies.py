"""Strategies: a small protocol, the rule-based strategies, and walk-forward evaluation.

A strategy maps a feature table (candles plus indicator columns, one row per bar, sorted by time) to
target positions in [-1, 1], one per row, decided at that row's close. ``positions`` must be causal:
row t may only use rows <= t (the feature tables are point-in-time, so row-wise rules are).

Team votes (each a direction in {-1, 0, +1} and a confidence in [0, 1]):

- RSI (mean reversion): direction sign(50 - rsi_14); confidence |rsi_14 - 50| / 20 clipped to 1,
  i.e. 1 at the classic 30/70 levels and 0.7 at 36/64.
- MACD (momentum): direction sign(macd_hist); confidence |macd_hist| / (2 * rolling std of
  macd_hist over the past ``MACD_STD_WINDOW`` bars), clipped to 1 (0.7 = a 1.4-sigma histogram).
- Bollinger (mean reversion): %B = (close - lower) / (upper - lower); direction sign(0.5 - %B);
  confidence 2 * |%B - 0.5| clipped to 1, i.e. 1 on or outside a band, 0.7 at %B 0.15 / 0.85.
- Activity (CrossMoat only): the highest ``activity_score`` of the last ``activity_window`` bars,
  read ``activity_delay`` bars late (a burst stays "recent" for the window; the delay lets a known
  lead-lag wait for the market's reaction); direction +1 when it is > 0; confidence that score / 3
  clipped to 1 (0.7 = a 2.1-sigma burst). Unusual quiet gives no vote.

Consensus with hysteresis (S2 "no oscillation"): a side's *enter weight* is the summed weight of the
teams voting for it with confidence > ``enter_confidence``; its *hold weight* uses the lower
``exit_confidence``. A position opens when its side's enter weight reaches ``quorum`` and the other
side's does not; it is kept until its hold weight drops below ``quorum`` or the other side enters
uncontested. A contested bar (both sides reach the quorum) opens and closes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import polars as pl

from cyber_pipelines.backtest.engine import BacktestConfig, BacktestResult, run_backtest
from cyber_pipelines.backtest.sweep import sma_cross_targets, sma_matrix

MACD_STD_WINDOW = 100
ACTIVITY_FULL_Z = 3.0


@runtime_checkable
class Strategy(Protocol):
    """Anything with a name, a ``fit`` on past rows and causal ``positions`` plugs into the backtests."""

    @property
    def name(self) -> str: ...

    def fit(self, train: pl.DataFrame) -> None: ...

    def positions(self, features: pl.DataFrame) -> np.ndarray: ...


@dataclass(frozen=True)
class Vote:
    direction: np.ndarray  # -1, 0 or +1 per bar
    confidence: np.ndarray  # in [0, 1] per bar
    weight: float = 1.0


def _columns(features: pl.DataFrame, names: Sequence[str], who: str) -> list[np.ndarray]:
    missing = [c for c in names if c not in features.columns]
    if missing:
        raise ValueError(f"{who} needs feature columns {missing}; have {features.columns}")
    return [features[c].cast(pl.Float64).to_numpy() for c in names]


def _vote(direction: np.ndarray, confidence: np.ndarray, weight: float = 1.0) -> Vote:
    ok = np.isfinite(direction) & np.isfinite(confidence)  # warm-up rows (null/NaN) abstain
    return Vote(
        np.where(ok, np.sign(np.nan_to_num(direction)), 0.0),
        np.where(ok, np.clip(np.nan_to_num(confidence), 0.0, 1.0), 0.0),
        weight,
    )


def rsi_vote(features: pl.DataFrame) -> Vote:
    (rsi,) = _columns(features, ["rsi_14"], "RSI vote")
    return _vote(50.0 - rsi, np.abs(rsi - 50.0) / 20.0)


def macd_vote(features: pl.DataFrame) -> Vote:
    (hist,) = _columns(features, ["macd_hist"], "MACD vote")
    std = (
        features.select(pl.col("macd_hist").cast(pl.Float64).rolling_std(MACD_STD_WINDOW, min_samples=20).shift(1))
        .to_series()
        .to_numpy()
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        conf = np.abs(hist) / (2.0 * std)
    return _vote(hist, np.where(std > 0, conf, np.nan))


def bollinger_vote(features: pl.DataFrame) -> Vote:
    close, upper, lower = _columns(features, ["close", "bb_upper_20_2", "bb_lower_20_2"], "Bollinger vote")
    width = upper - lower
    with np.errstate(divide="ignore", invalid="ignore"):
        pct_b = np.where(width > 0, (close - lower) / width, np.nan)
    return _vote(0.5 - pct_b, 2.0 * np.abs(pct_b - 0.5))


def activity_vote(features: pl.DataFrame, window: int, weight: float, delay: int = 0) -> Vote:
    _columns(features, ["activity_score"], "activity vote")
    score = pl.col("activity_score").cast(pl.Float64)
    recent = features.select(score.rolling_max(window, min_samples=1).shift(delay)).to_series().to_numpy()
    return _vote(np.where(recent > 0, 1.0, 0.0), recent / ACTIVITY_FULL_Z, weight)


def consensus(votes: Sequence[Vote], quorum: float, enter_confidence: float, exit_confidence: float) -> np.ndarray:
    """Hysteresis consensus of weighted votes -> positions in {-1, 0, 1} (vectorized; see module doc)."""
    if not 0 <= exit_confidence <= enter_confidence <= 1:
        raise ValueError(
            f"need 0 <= exit_confidence <= enter_confidence <= 1, got {exit_confidence}, {enter_confidence}"
        )

    def weight(side: float, level: float) -> np.ndarray:
        return np.sum([v.weight * ((v.direction == side) & (v.confidence > level)) for v in votes], axis=0)

    long_in, short_in = weight(1, enter_confidence) >= quorum, weight(-1, enter_confidence) >= quorum
    long_keep, short_keep = weight(1, exit_confidence) >= quorum, weight(-1, exit_confidence) >= quorum
    n = long_in.size
    entry = np.where(long_in & ~short_in, 1.0, np.where(short_in & ~long_in, -1.0, 0.0))
    # a contested bar (both sides reach the quorum) opens nothing and closes nothing
    long_exit, short_exit = ~long_keep | (short_in & ~long_in), ~short_keep | (long_in & ~short_in)
    # last entry at or before each bar, and whether an exit of that side came after it
    idx = np.maximum.accumulate(np.where(entry != 0, np.arange(n), -1))
    side = np.where(idx >= 0, entry[np.maximum(idx, 0)], 0.0)
    exits_long, exits_short = np.cumsum(long_exit), np.cumsum(short_exit)
    at = np.maximum(idx, 0)
    still_long = (side > 0) & (exits_long == exits_long[at])
    still_short = (side < 0) & (exits_short == exits_short[at])
    return np.where(still_long, 1.0, np.where(still_short, -1.0, 0.0))


@dataclass
class SmaCross:
    """Long while SMA(fast) > SMA(slow), short (if the config allows) while below; flat in warm-up."""

    fast: int = 10
    slow: int = 20

    def __post_init__(self) -> None:
        if not 1 <= self.fast < self.slow:
            raise ValueError(f"SmaCross needs 1 <= fast < slow, got fast={self.fast}, slow={self.slow}")

    @property
    def name(self) -> str:
        return f"sma_cross_{self.fast}_{self.slow}"

    def fit(self, train: pl.DataFrame) -> None:
        return None

    def positions(self, features: pl.DataFrame) -> np.ndarray:
        (close,) = _columns(features, ["close"], "SmaCross")
        if close.size < self.slow:
            return np.zeros(close.size)
        smas = sma_matrix(close, [self.fast, self.slow])
        return sma_cross_targets(smas[:, 0], smas[:, 1])


@dataclass
class RuleOfThree:
    """TA-only baseline: RSI, MACD and Bollinger teams; trade when 2 of 3 agree with confidence > 0.7."""

    enter_confidence: float = 0.7
    exit_confidence: float = 0.3
    quorum: float = 2.0
    name: str = "rule_of_three"

    def fit(self, train: pl.DataFrame) -> None:
        return None

    def votes(self, features: pl.DataFrame) -> list[Vote]:
        return [rsi_vote(features), macd_vote(features), bollinger_vote(features)]

    def positions(self, features: pl.DataFrame) -> np.ndarray:
        return consensus(self.votes(features), self.quorum, self.enter_confidence, self.exit_confidence)


@dataclass
class CrossMoat(RuleOfThree):
    """The TA teams plus the GitHub/moat activity team, whose vote counts ``activity_weight`` (2x).

    Same quorum (2 votes) as the baseline, so a confident activity burst alone opens a long position,
    as do two agreeing TA teams; an opposing burst and TA pair cancel out.
    """

    activity_weight: float = 2.0
    activity_window: int = 10
    activity_delay: int = 0
    name: str = "cross_moat"

    def __post_init__(self) -> None:
        if self.activity_window < 1 or self.activity_weight <= 0 or self.activity_delay < 0:
            raise ValueError("CrossMoat needs activity_window >= 1, activity_weight > 0, activity_delay >= 0")

    def votes(self, features: pl.DataFrame) -> list[Vote]:
        activity = activity_vote(features, self.activity_window, self.activity_weight, self.activity_delay)
        return [*super().votes(features), activity]


def run_strategy(strategy: Strategy, features: pl.DataFrame, config: BacktestConfig | None = None) -> BacktestResult:
    """In-sample run of a rule-based strategy over the whole table (fitted ones: ``walk_forward``)."""
    return run_backtest(features, strategy.positions(features), config, name=strategy.name)


def walk_forward(
    strategy: Strategy,
    features: pl.DataFrame,
    train_bars: int,
    test_bars: int,
    config: BacktestConfig | None = None,
) -> BacktestResult:
    """Fit on ``train_bars`` past rows, trade the next ``test_bars``, roll; one stitched OOS backtest.

    Positions of each test window are computed on the rows from its training start to its end (so
    indicators and hysteresis have history) and only the test rows are kept. The stitched targets
    run through one backtest over rows ``train_bars..end``, so a position can carry across windows.
    """
    n = features.height
    if train_bars < 1 or test_bars < 1:
        raise ValueError(f"train_bars and test_bars must be >= 1, got {train_bars}, {test_bars}")
    if train_bars + 2 > n:
        raise ValueError(f"need more than train_bars + 1 = {train_bars + 1} rows, have {n}")
    targets = np.zeros(n)
    for start in range(train_bars, n, test_bars):
        stop = min(start + test_bars, n)
        strategy.fit(features.slice(start - train_bars, train_bars))
        rows = stop - start + train_bars
        window = strategy.positions(features.slice(start - train_bars, rows))
        if window.shape != (rows,):
            raise ValueError(f"{strategy.name}.positions returned shape {window.shape} for {rows} rows")
        targets[start:stop] = window[train_bars:]
    return run_backtest(features.slice(train_bars), targets[train_bars:], config, name=strategy.name)
