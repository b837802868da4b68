"""Strategies: a small protocol, the rule-based strategies, walk-forward fitting and evaluation.

A strategy maps a feature table (candles plus indicator columns, one row per bar, sorted by time) to
target positions in [-1, 1], one per row, decided at that row's close. ``positions`` must be causal:
row t may only use rows <= t (the feature tables are point-in-time, so row-wise rules are).
``fit(train)`` learns everything the strategy tunes from the training rows alone, and ``params()``
returns what it learned (JSON-able). ``walk_forward`` fits on a rolling past window, trades the next
one and stitches the out-of-sample windows into one backtest (the headline figures); its
``in_sample`` result, fitted on the whole table, is the optimistic number a naive tuning reports.
Nothing tuned has a default taken from the synthetic generator (its planted lag and sign).

Rule-of-three teams: three different things (each vote a direction in {-1, 0, +1} and a confidence):

- Mean reversion: RSI(14); direction sign(50 - rsi_14). (Bollinger %B is not a team of its own: it
  correlates +0.9 with RSI, the same rule counted twice.)
- Trend: the slope of EMA(50) over the last ``TREND_SLOPE_BARS`` bars, in ATR(14) units; direction
  its sign.
- Volatility breakout: the bar's close-to-close move in units of the previous bar's ATR(14) (a range
  expansion with its direction); direction the move's sign.

One calibrated confidence scale for every team: the percentile of the indicator's magnitude among
the training window's magnitudes (``fit`` stores them sorted; a bar's confidence is the share of
training magnitudes at or below its own). ``enter_confidence`` 0.7 thus means "in the top 30% of
this team's training magnitudes" whatever the indicator's units; ``params()`` reports the magnitude
each threshold stands for. Before any fit a team calibrates on its own trailing ``CALIBRATION_BARS``
bars (causal; it abstains until it has ``MIN_CALIBRATION`` of them).

Activity team (CrossMoat only): the highest ``activity_score`` of the last ``window`` bars, read
``delay`` bars late; direction the fitted ``sign``; confidence that score / ``ACTIVITY_FULL_Z``
clipped to 1 (0.7 = a 2.1-sigma burst); weight the fitted ``weight``. ``fit`` estimates the four on
the training rows with an event study (``fit_activity_lead``): the returns after each burst onset
(score crossing ``ACTIVITY_FULL_Z * enter_confidence``, the level at which the vote enters) are
averaged per forward bar; the (delay, window) block with the largest response, in |return| (hour-of-
week means removed, so a shared weekly cycle is no response) or in signed return, is chosen, and its
p-value is the rank of that maximum among the same maximum for the burst times shifted circularly
by every multiple of the search span (an exact cyclic permutation test; no shifted copy overlaps the
searched blocks; it needs 1 / ``ACTIVITY_ALPHA`` spans, 1,440 training rows, to be able to open).
The sign is that of the per-burst t statistic of the block's summed return. Without evidence (p >
``ACTIVITY_ALPHA`` or |t| < ``SIGN_T_CONFIRM``) the team abstains (weight 0); with |t| >=
``SIGN_T_ALONE`` its weight is the quorum (a burst alone opens a position), in between half of it
(one TA team must agree). Constructor values (``activity_window`` etc.) fix a parameter instead.

Consensus with hysteresis (S2 "no oscillation"): a side's *enter weight* is the summed weight of the
teams voting for it with confidence > ``enter_confidence``; its *hold weight* uses the lower
``exit_confidence``. A position opens when its side's enter weight reaches ``quorum`` and the other
side's does not; it is kept until its hold weight drops below ``quorum`` or the other side enters
uncontested. A contested bar (both sides reach the quorum) opens and closes nothing. Then
``hold_at_least(positions, min_hold_bars)`` keeps every new position (flat included) for at least
``min_hold_bars`` bars, a minimum holding period that bounds turnover.

MoatOnly: the activity team alone (fitted as in CrossMoat), so the moat signal's own return after
costs shows apart from the TA teams' turnover.

AnalogKnn: the pattern-memory forecast (``analog_forecast``, from the nearest past windows seen
without look-ahead) as a single team with the same calibration, hysteresis and minimum hold; it votes
only where the forecast exceeds the round-trip cost.

SmaGrid: the SmaCross of a (fast, slow) grid with the best net Sharpe on the training window (one
vectorized sweep per fit), traded on the next.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any, Protocol, runtime_checkable

import numpy as np
import polars as pl

from cyber_pipelines.backtest.engine import BacktestConfig, BacktestResult, run_backtest
from cyber_pipelines.backtest.sweep import sma_above_targets, sma_cross_targets, sma_matrix, sweep_sma_cross

ACTIVITY_FULL_Z = 3.0
TREND_SLOPE_BARS = 48  # EMA(50) slope horizon of the trend team
CALIBRATION_BARS = 720  # trailing bars an unfitted team calibrates on
MIN_CALIBRATION = 100  # magnitudes a calibration needs; fewer: the team abstains
MAX_ACTIVITY_DELAY = 48  # bars searched for the activity team's delay (0..48) ...
MAX_ACTIVITY_WINDOW = 24  # ... and for its window (1..24)
MIN_BURSTS = 5  # burst onsets a training window needs before the activity team may vote
ACTIVITY_ALPHA = 0.05  # timing gate: p-value of the event study's best block
SIGN_T_CONFIRM = 2.0  # |t| of the block return: from here the activity team votes (half the quorum) ...
SIGN_T_ALONE = 3.0  # ... from here with the full quorum


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


def mean_reversion_indicator(features: pl.DataFrame) -> np.ndarray:
    """Mean-reversion team: 50 - RSI(14) (positive = oversold = a long vote)."""
    (rsi,) = _columns(features, ["rsi_14"], "mean-reversion team")
    return 50.0 - rsi


def trend_indicator(features: pl.DataFrame) -> np.ndarray:
    """Trend team: EMA(50) now minus ``TREND_SLOPE_BARS`` bars ago, in units of ATR(14)."""
    ema50, atr = _columns(features, ["ema_50", "atr_14"], "trend team")
    past = np.full(ema50.size, np.nan)
    past[TREND_SLOPE_BARS:] = ema50[:-TREND_SLOPE_BARS]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(atr > 0, (ema50 - past) / atr, np.nan)


def breakout_indicator(features: pl.DataFrame) -> np.ndarray:
    """Volatility-breakout team: close - previous close, in units of the previous bar's ATR(14)."""
    close, atr = _columns(features, ["close", "atr_14"], "breakout team")
    move, prev_atr = np.full(close.size, np.nan), np.full(close.size, np.nan)
    move[1:], prev_atr[1:] = np.diff(close), atr[:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(prev_atr > 0, move / prev_atr, np.nan)


TA_TEAMS: dict[str, Callable[[pl.DataFrame], np.ndarray]] = {
    "mean_reversion": mean_reversion_indicator,
    "trend": trend_indicator,
    "breakout": breakout_indicator,
}


def calibration(values: np.ndarray) -> np.ndarray | None:
    """The sorted finite magnitudes of a team's indicator on a training window (None: too few)."""
    mag = np.abs(values[np.isfinite(values)])
    return np.sort(mag) if mag.size >= MIN_CALIBRATION else None


def trailing_percentile(magnitude: np.ndarray, window: int = CALIBRATION_BARS) -> np.ndarray:
    """Share of the previous ``window`` finite magnitudes <= each bar's (NaN with < MIN_CALIBRATION)."""
    n = magnitude.size
    padded = np.concatenate([np.full(window, np.nan), magnitude])
    out = np.full(n, np.nan)
    for lo in range(0, n, 2048):  # chunks bound the (rows x window) comparison
        hi = min(lo + 2048, n)
        past = np.lib.stride_tricks.sliding_window_view(padded[lo : hi + window - 1], window)
        cur = magnitude[lo:hi, None]
        valid = np.isfinite(past)
        count = valid.sum(axis=1)
        below = (valid & (past <= cur)).sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[lo:hi] = np.where(count >= MIN_CALIBRATION, below / count, np.nan)
    return np.where(np.isfinite(magnitude), out, np.nan)


def percentile_vote(values: np.ndarray, reference: np.ndarray | None, weight: float = 1.0) -> Vote:
    """Direction sign(value); confidence the percentile of |value| in ``reference`` (sorted training
    magnitudes), or in the trailing ``CALIBRATION_BARS`` bars when there is no reference."""
    magnitude = np.abs(values)
    if reference is None:
        confidence = trailing_percentile(magnitude)
    else:
        confidence = np.searchsorted(reference, np.nan_to_num(magnitude), side="right") / reference.size
    return _vote(values, np.where(np.isfinite(magnitude), confidence, np.nan), weight)


def activity_vote(features: pl.DataFrame, window: int, weight: float, delay: int = 0, sign: float = 1.0) -> Vote:
    """The highest ``activity_score`` of the last ``window`` bars, ``delay`` bars late, voting ``sign``."""
    _columns(features, ["activity_score"], "activity vote")
    score = pl.col("activity_score").cast(pl.Float64)
    recent = features.select(score.rolling_max(window, min_samples=1).shift(delay)).to_series().to_numpy()
    return _vote(np.where(recent > 0, sign, 0.0), recent / ACTIVITY_FULL_Z, weight)


@dataclass(frozen=True)
class ActivityLead:
    """What the event study of bursts -> forward returns found on one training window."""

    delay: int  # bars the vote waits after the burst row (the first traded return is delay + 1 later)
    window: int  # bars the vote lasts
    sign: int  # +1, -1, or 0 (no evidence)
    weight: float  # 0: the team abstains
    p_value: float  # timing gate: rank of the best block among the span-shifted burst times
    t_sign: float  # per-burst t statistic of the block's summed return
    n_bursts: int

    def as_dict(self) -> dict[str, float | int]:
        return {
            "delay": self.delay,
            "window": self.window,
            "lead_bars": self.delay + 1,
            "sign": self.sign,
            "weight": self.weight,
            "p_value": self.p_value,
            "t_sign": self.t_sign,
            "n_bursts": self.n_bursts,
        }


def _hour_of_week_demeaned(x: np.ndarray, timestamps: pl.Series | None) -> np.ndarray:
    if timestamps is None or not timestamps.dtype.is_temporal():
        return x - x.mean()
    code = (timestamps.dt.weekday().cast(pl.Int64) * 24 + timestamps.dt.hour().cast(pl.Int64)).to_numpy()
    counts = np.bincount(code, minlength=192)
    means = np.bincount(code, weights=x, minlength=192) / np.maximum(counts, 1)
    return x - means[code]


def fit_activity_lead(
    score: np.ndarray,
    log_return: np.ndarray,
    timestamps: pl.Series | None = None,
    *,
    burst_z: float,
    quorum: float,
    delays: Sequence[int] = tuple(range(MAX_ACTIVITY_DELAY + 1)),
    windows: Sequence[int] = tuple(range(1, MAX_ACTIVITY_WINDOW + 1)),
    alpha: float = ACTIVITY_ALPHA,
) -> ActivityLead:
    """Delay, window, sign and weight of the activity vote from one training window (module doc).

    ``score``, ``log_return`` (and ``timestamps``, for the hour-of-week means) are the training rows.
    A vote at row t trades the return of row t + 1, so a burst onset at row s with (delay d, window w)
    trades the returns of rows s + d + 1 .. s + d + w: the block whose response is measured.

    Timing null: the burst times shifted circularly by every multiple of the span L = max delay + max
    window over the last k * L rows (k = rows // L): a cyclic group, so under "bursts independent of
    returns" the observed maximum is exchangeable with the k - 1 shifted ones and the rank p-value is
    exact (no shifted copy overlaps the observed block). Its smallest value is 1 / k: the gate can
    open only when k >= 1 / alpha (with the defaults 72 * 20 = 1,440 training rows).
    """
    d_grid = np.array([d for d in delays for w in windows])
    w_grid = np.array([w for d in delays for w in windows])
    span = int((d_grid + w_grid).max())
    k = np.asarray(score).size // span
    n = k * span  # the most recent k * span rows
    a = np.nan_to_num(np.asarray(score, dtype=float)[-n:] if n else np.zeros(0), nan=0.0)
    r = np.nan_to_num(np.asarray(log_return, dtype=float)[-n:] if n else np.zeros(0), nan=0.0, posinf=0, neginf=0)
    above = a >= burst_z
    bursts = np.flatnonzero(above & ~np.concatenate([[False], above[:-1]]))  # onsets
    nothing = ActivityLead(int(d_grid[0]), int(w_grid[0]), 0, 0.0, 1.0, 0.0, int(bursts.size))
    sd = r.std() if n else 0.0
    if bursts.size < MIN_BURSTS or k < 2 or not sd > 0:
        return nothing
    z = r / sd
    ts = timestamps.slice(timestamps.len() - n) if timestamps is not None else None
    mag = _hour_of_week_demeaned(np.abs(z), ts)
    mag = mag / (mag.std() or 1.0)
    ahead = np.arange(1, span + 1)
    root = np.sqrt(bursts.size / w_grid)
    shifts = span * np.arange(k)  # 0 = the observed alignment

    # mean over bursts of each forward bar's z and |z|, per shift (k x span), then every block's sum
    rows = (bursts[None, :, None] + shifts[:, None, None] + ahead) % n
    stat = []
    for x in (z, mag):
        profile = np.concatenate([np.zeros((k, 1)), np.cumsum(x[rows].mean(axis=1), axis=1)], axis=1)
        stat.append((profile[:, d_grid + w_grid] - profile[:, d_grid]) * root)
    blocks = np.maximum(np.abs(stat[0]), stat[1])  # k x blocks: signed response or |return| response
    best = int(np.argmax(blocks[0]))
    p_value = float(np.mean(blocks.max(axis=1) >= blocks[0, best]))
    delay, window = int(d_grid[best]), int(w_grid[best])
    inside = bursts[bursts + span < n]  # the sign from bursts whose block lies inside the window
    sums = np.cumsum(np.concatenate([[0.0], z]))
    block = sums[inside + delay + window + 1] - sums[inside + delay + 1]
    spread = block.std(ddof=1) if block.size > 1 else 0.0
    t_sign = float(block.mean() / (spread / np.sqrt(block.size))) if spread > 0 else 0.0
    evidence = p_value <= alpha and abs(t_sign) >= SIGN_T_CONFIRM
    weight = (quorum if abs(t_sign) >= SIGN_T_ALONE else quorum / 2) if evidence else 0.0
    sign = int(np.sign(t_sign)) if evidence else 0
    return ActivityLead(delay, window, sign, float(weight), p_value, t_sign, int(bursts.size))


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


def hold_at_least(targets: np.ndarray, bars: int) -> np.ndarray:
    """Keep every new position (flat included) for at least ``bars`` bars: a minimum holding period.

    A change of the target at bar t is taken at once; changes asked for during the next ``bars - 1``
    bars are ignored, and after that the position is the target again. Causal (only past targets
    matter); ``bars`` <= 1 returns the targets unchanged. The positions start flat.
    """
    raw = np.asarray(targets, dtype=float)
    out = raw.copy()
    if bars <= 1 or out.size == 0:
        return out
    n = out.size
    changes = np.flatnonzero(np.diff(raw, prepend=0.0))  # bars where the raw target differs from the bar before
    t = int(changes[0]) if changes.size else n
    while t < n:
        end = min(t + bars, n)
        out[t:end] = out[t]
        if end == n:
            break
        if raw[end] != out[t]:  # the target differs once the hold is over: change there
            t = end
            continue
        later = changes[np.searchsorted(changes, end, side="right") :]
        t = int(later[0]) if later.size else n
    return out


@dataclass
class SmaCross:
    """Trades the crossings: long from SMA(fast) crossing above SMA(slow) until it crosses below, then
    short (if the config allows shorts, else flat) until the next crossing above; flat before the first
    crossing, so a fast average that starts above the slow one opens nothing (backtesting.py's SmaCross).
    """

    fast: int = 10
    slow: int = 20

    def __post_init__(self) -> None:
        if not 1 <= self.fast < self.slow:
            raise ValueError(f"{type(self).__name__} needs 1 <= fast < slow, got fast={self.fast}, slow={self.slow}")

    @property
    def name(self) -> str:
        return f"sma_cross_{self.fast}_{self.slow}"

    def fit(self, train: pl.DataFrame) -> None:
        return None

    def _smas(self, features: pl.DataFrame) -> np.ndarray | None:
        (close,) = _columns(features, ["close"], type(self).__name__)
        return sma_matrix(close, [self.fast, self.slow]) if close.size >= self.slow else None

    def positions(self, features: pl.DataFrame) -> np.ndarray:
        smas = self._smas(features)
        return np.zeros(features.height) if smas is None else sma_cross_targets(smas[:, 0], smas[:, 1])


@dataclass
class SmaAbove(SmaCross):
    """Long while SMA(fast) > SMA(slow), short (if the config allows) while below; flat in warm-up.

    Unlike ``SmaCross`` it enters at the end of the warm-up without a crossing."""

    @property
    def name(self) -> str:
        return f"sma_above_{self.fast}_{self.slow}"

    def positions(self, features: pl.DataFrame) -> np.ndarray:
        smas = self._smas(features)
        return np.zeros(features.height) if smas is None else sma_above_targets(smas[:, 0], smas[:, 1])


@dataclass
class RuleOfThree:
    """TA-only baseline: mean-reversion, trend and breakout teams; trade when 2 of 3 agree confidently.

    Confidences are training percentiles (``fit``), so ``enter_confidence`` 0.7 = a team's top 30%.
    """

    enter_confidence: float = 0.7
    exit_confidence: float = 0.3
    quorum: float = 2.0
    min_hold_bars: int = 1
    name: str = "rule_of_three"
    calibrations: dict[str, np.ndarray | None] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0 <= self.exit_confidence <= self.enter_confidence <= 1:
            got = f"{self.exit_confidence}, {self.enter_confidence}"
            raise ValueError(f"need 0 <= exit_confidence <= enter_confidence <= 1, got {got}")
        if self.quorum <= 0 or self.min_hold_bars < 1:
            raise ValueError(f"need quorum > 0 and min_hold_bars >= 1, got {self.quorum}, {self.min_hold_bars}")

    def fit(self, train: pl.DataFrame) -> None:
        """Store each team's training distribution of magnitudes (its confidence scale)."""
        self.calibrations = {team: calibration(indicator(train)) for team, indicator in TA_TEAMS.items()}

    def params(self) -> dict[str, Any]:
        """Consensus settings and, per team, the training magnitudes at the enter and exit percentiles."""
        thresholds: dict[str, dict[str, float] | None] = {}
        for team in TA_TEAMS:
            ref = self.calibrations.get(team)
            thresholds[team] = (
                None
                if ref is None
                else {
                    "enter_at": float(np.quantile(ref, self.enter_confidence)),
                    "exit_at": float(np.quantile(ref, self.exit_confidence)),
                    "n_train": int(ref.size),
                }
            )
        return {
            "enter_confidence": self.enter_confidence,
            "exit_confidence": self.exit_confidence,
            "quorum": self.quorum,
            "min_hold_bars": self.min_hold_bars,
            "calibrated": bool(self.calibrations),
            "thresholds": thresholds,
        }

    def votes(self, features: pl.DataFrame) -> list[Vote]:
        """One vote per team of ``TA_TEAMS``, in that order."""
        return [
            percentile_vote(indicator(features), self.calibrations.get(team)) for team, indicator in TA_TEAMS.items()
        ]

    def positions(self, features: pl.DataFrame) -> np.ndarray:
        held = consensus(self.votes(features), self.quorum, self.enter_confidence, self.exit_confidence)
        return hold_at_least(held, self.min_hold_bars)


@dataclass
class CrossMoat(RuleOfThree):
    """The TA teams plus the GitHub/moat activity team, with delay, window, sign and weight fitted.

    ``fit`` estimates the activity team on the training rows (``fit_activity_lead``); a value given
    to the constructor fixes that parameter instead (the others are still fitted). Unfitted, and with
    no values given, the activity team abstains, so the strategy trades as ``RuleOfThree``.
    """

    activity_weight: float | None = None
    activity_window: int | None = None
    activity_delay: int | None = None
    activity_sign: int | None = None
    max_activity_delay: int = MAX_ACTIVITY_DELAY
    max_activity_window: int = MAX_ACTIVITY_WINDOW
    name: str = "cross_moat"
    lead: ActivityLead | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if (
            (self.activity_window is not None and self.activity_window < 1)
            or (self.activity_weight is not None and self.activity_weight < 0)
            or (self.activity_delay is not None and self.activity_delay < 0)
            or self.activity_sign not in (None, -1, 0, 1)
            or self.max_activity_delay < 0
            or self.max_activity_window < 1
        ):
            raise ValueError(
                "CrossMoat needs activity_window >= 1, activity_weight >= 0, activity_delay >= 0, "
                "activity_sign in (-1, 0, 1), max_activity_delay >= 0 and max_activity_window >= 1"
            )

    def fit(self, train: pl.DataFrame) -> None:
        super().fit(train)
        score, ret = _columns(train, ["activity_score", "log_return"], "CrossMoat.fit")
        delays = [self.activity_delay] if self.activity_delay is not None else range(self.max_activity_delay + 1)
        windows = [self.activity_window] if self.activity_window is not None else range(1, self.max_activity_window + 1)
        ts = train["timestamp"] if "timestamp" in train.columns else None
        lead = fit_activity_lead(
            score,
            ret,
            ts,
            burst_z=ACTIVITY_FULL_Z * self.enter_confidence,
            quorum=self.quorum,
            delays=delays,
            windows=windows,
        )
        if self.activity_sign is not None:  # a fixed direction: the evidence is the t statistic in it
            t = lead.t_sign * self.activity_sign
            ok = lead.p_value <= ACTIVITY_ALPHA and t >= SIGN_T_CONFIRM
            weight = (self.quorum if t >= SIGN_T_ALONE else self.quorum / 2) if ok else 0.0
            lead = replace(lead, sign=self.activity_sign, weight=weight)
        self.lead = lead

    def activity(self) -> dict[str, float | int] | None:
        """The activity vote's (delay, window, sign, weight) in use: fixed values over fitted ones."""
        fitted = self.lead.as_dict() if self.lead is not None else {}
        delay = self.activity_delay if self.activity_delay is not None else fitted.get("delay")
        window = self.activity_window if self.activity_window is not None else fitted.get("window")
        sign = self.activity_sign if self.activity_sign is not None else fitted.get("sign")
        weight = self.activity_weight if self.activity_weight is not None else fitted.get("weight")
        if delay is None or window is None or sign is None or weight is None:
            return None
        return {"delay": int(delay), "window": int(window), "sign": int(sign), "weight": float(weight)}

    def params(self) -> dict[str, Any]:
        used = self.activity()
        return {
            **super().params(),
            "activity": used,
            "activity_fit": self.lead.as_dict() if self.lead is not None else None,
            "activity_fixed": {
                k: v
                for k, v in (
                    ("delay", self.activity_delay),
                    ("window", self.activity_window),
                    ("sign", self.activity_sign),
                    ("weight", self.activity_weight),
                )
                if v is not None
            },
        }

    def votes(self, features: pl.DataFrame) -> list[Vote]:
        used = self.activity()
        if used is None or used["sign"] == 0 or used["weight"] == 0:  # abstains (still needs the column)
            _columns(features, ["activity_score"], "activity vote")
            return [*super().votes(features), Vote(np.zeros(features.height), np.zeros(features.height), 0.0)]
        activity = activity_vote(features, int(used["window"]), float(used["weight"]), int(used["delay"]), used["sign"])
        return [*super().votes(features), activity]


@dataclass
class MoatOnly(CrossMoat):
    """The activity team alone, fitted as in ``CrossMoat``: a burst in the fitted direction opens a
    position (at full weight, whatever its evidence level) held while the burst is within the window;
    no TA team votes. Without evidence on the training window it holds nothing. It isolates what the
    moat signal earns after costs from the TA teams' turnover."""

    name: str = "moat_only"

    def votes(self, features: pl.DataFrame) -> list[Vote]:
        used = self.activity()
        if used is None or used["sign"] == 0 or used["weight"] == 0:
            _columns(features, ["activity_score"], "activity vote")
            return [Vote(np.zeros(features.height), np.zeros(features.height), 0.0)]
        return [activity_vote(features, int(used["window"]), self.quorum, int(used["delay"]), used["sign"])]


ANALOG_COLUMN = "analog_forecast"


@dataclass
class AnalogKnn(RuleOfThree):
    """The pattern-memory forecast as the only team: ``analog_forecast`` (the similarity-weighted return
    that followed the nearest past windows, ``patterns.analog``), direction its sign, confidence the
    percentile of its magnitude among the training rows' (``fit``), with the same hysteresis and
    minimum hold as the consensus strategies. A forecast that does not pay its own round trip
    (``|forecast| <= min_edge``, give it 2 x the config's cost per side) is no vote. Unfitted it
    calibrates on its trailing bars."""

    quorum: float = 1.0
    min_edge: float = 0.0
    name: str = "analog_knn"
    column: str = ANALOG_COLUMN

    def _forecast(self, features: pl.DataFrame) -> np.ndarray:
        (forecast,) = _columns(features, [self.column], self.name)
        return np.where(forecast != 0, forecast, np.nan)  # 0: no forecast (no admissible neighbour)

    def fit(self, train: pl.DataFrame) -> None:
        self.calibrations = {"analog": calibration(self._forecast(train))}

    def params(self) -> dict[str, Any]:
        ref = self.calibrations.get("analog")
        return {
            "enter_confidence": self.enter_confidence,
            "exit_confidence": self.exit_confidence,
            "min_hold_bars": self.min_hold_bars,
            "min_edge": self.min_edge,
            "enter_at": None if ref is None else float(np.quantile(ref, self.enter_confidence)),
            "exit_at": None if ref is None else float(np.quantile(ref, self.exit_confidence)),
            "n_train": 0 if ref is None else int(ref.size),
        }

    def votes(self, features: pl.DataFrame) -> list[Vote]:
        forecast = self._forecast(features)
        vote = percentile_vote(forecast, self.calibrations.get("analog"))
        pays = np.abs(np.nan_to_num(forecast)) > self.min_edge
        return [Vote(np.where(pays, vote.direction, 0.0), vote.confidence, vote.weight)]


LORA_COLUMN = "lora_forecast"


@dataclass
class LoraForecast(AnalogKnn):
    """The serving forecaster's expected return (``lora_forecast``: the pair's promoted LoRA adapter, else the
    base; ``models``) traded like ``AnalogKnn``: direction its sign, confidence its training percentile, no vote
    where it does not pay its round trip."""

    name: str = "lora"
    column: str = LORA_COLUMN


@dataclass
class SmaGrid:
    """``SmaCross`` with (fast, slow) chosen on the training window: the grid pair of the best net Sharpe.

    ``fit`` runs one vectorized sweep (``sweep_sma_cross``) over the pairs with fast < slow < the
    training rows, with ``config``'s costs (give it the backtest's config); ties go to the first pair.
    Unfitted it holds no position.
    """

    fast_values: tuple[int, ...] = (6, 12, 24, 48)
    slow_values: tuple[int, ...] = (24, 48, 96, 168, 336)
    config: BacktestConfig = field(default_factory=BacktestConfig)
    name: str = "sma_grid"
    chosen: tuple[int, int] | None = field(default=None, init=False, compare=False)
    train_sharpe: float | None = field(default=None, init=False, compare=False)

    def fit(self, train: pl.DataFrame) -> None:
        slows = [s for s in self.slow_values if s < train.height]
        if not slows or min(self.fast_values) >= max(slows):
            raise ValueError(f"SmaGrid: no (fast, slow) pair with fast < slow < {train.height} training rows")
        sweep = sweep_sma_cross(train, self.fast_values, slows, self.config)
        sharpe = np.nan_to_num(sweep["sharpe"].to_numpy(), nan=-np.inf)
        best = int(np.argmax(sharpe))
        self.chosen = (int(sweep["fast"][best]), int(sweep["slow"][best]))
        self.train_sharpe = float(sharpe[best]) if np.isfinite(sharpe[best]) else None

    def params(self) -> dict[str, Any]:
        fast, slow = self.chosen if self.chosen is not None else (None, None)
        return {
            "fast": fast,
            "slow": slow,
            "train_sharpe": self.train_sharpe,
            "fast_values": list(self.fast_values),
            "slow_values": list(self.slow_values),
        }

    def positions(self, features: pl.DataFrame) -> np.ndarray:
        if self.chosen is None:
            return np.zeros(features.height)
        return SmaCross(*self.chosen).positions(features)


def strategy_params(strategy: Strategy) -> dict[str, Any]:
    """``strategy.params()`` when it has one, a dataclass's fields otherwise, else {}."""
    params = getattr(strategy, "params", None)
    if callable(params):
        return dict(params())
    if is_dataclass(strategy):
        return {f.name: getattr(strategy, f.name) for f in fields(strategy) if f.init and f.name != "name"}
    return {}


def run_strategy(strategy: Strategy, features: pl.DataFrame, config: BacktestConfig | None = None) -> BacktestResult:
    """Run a strategy over the whole table as it stands (no fit here; fitted ones: ``walk_forward``)."""
    return run_backtest(features, strategy.positions(features), config, name=strategy.name)


@dataclass(frozen=True)
class WalkForward:
    """A walk-forward evaluation: the headline out-of-sample result and, beside it, the in-sample one.

    ``oos``: the stitched out-of-sample backtest. ``windows``: per window its training and test spans
    (first and last timestamps, ISO strings) and ``params`` as fitted on that training window.
    ``in_sample``: the strategy fitted on the WHOLE table and traded over the same rows as ``oos``
    (named ``<name>_in_sample``): what a naive in-sample tuning would report; never a headline.
    """

    oos: BacktestResult
    windows: list[dict[str, Any]]
    in_sample: BacktestResult

    @property
    def name(self) -> str:
        return self.oos.name


def _iso(value: Any) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def walk_forward(
    strategy: Strategy,
    features: pl.DataFrame,
    train_bars: int,
    test_bars: int,
    config: BacktestConfig | None = None,
) -> WalkForward:
    """Fit on ``train_bars`` past rows, trade the next ``test_bars``, roll; one stitched OOS backtest.

    Positions of each test window are computed on the rows from its training start to its end (so
    indicators and hysteresis have history) and only the test rows are kept. The stitched targets
    run through one backtest over rows ``train_bars..end``, so a position can carry across windows.
    ``strategy`` is left fitted on the last training window; the in-sample run fits a copy.
    """
    n = features.height
    if train_bars < 1 or test_bars < 1:
        raise ValueError(f"train_bars and test_bars must be >= 1, got {train_bars}, {test_bars}")
    if train_bars + 2 > n:
        raise ValueError(f"need more than train_bars + 1 = {train_bars + 1} rows, have {n}")
    ts = features["timestamp"] if "timestamp" in features.columns else pl.Series(np.arange(n))
    targets = np.zeros(n)
    windows: list[dict[str, Any]] = []
    for start in range(train_bars, n, test_bars):
        stop = min(start + test_bars, n)
        strategy.fit(features.slice(start - train_bars, train_bars))
        rows = stop - start + train_bars
        window = strategy.positions(features.slice(start - train_bars, rows))
        if window.shape != (rows,):
            raise ValueError(f"{strategy.name}.positions returned shape {window.shape} for {rows} rows")
        targets[start:stop] = window[train_bars:]
        windows.append(
            {
                "train_start": _iso(ts[start - train_bars]),
                "train_end": _iso(ts[start - 1]),
                "test_start": _iso(ts[start]),
                "test_end": _iso(ts[stop - 1]),
                "params": strategy_params(strategy),
            }
        )
    oos = run_backtest(features.slice(train_bars), targets[train_bars:], config, name=strategy.name)
    naive = copy.deepcopy(strategy)
    naive.fit(features)
    in_sample = run_backtest(
        features.slice(train_bars), naive.positions(features)[train_bars:], config, name=f"{strategy.name}_in_sample"
    )
    return WalkForward(oos=oos, windows=windows, in_sample=in_sample)
