"""Vectorized single-run backtest engine (numpy): target positions in, equity, trades, metrics out.

Model. ``target_position[t]`` in [-1, 1] is decided at bar t's close. With ``fill="next_open"`` it
is executed at bar t+1's open (the last bar's target is never executed), with ``fill="close"`` at
bar t's close. The executed weight is ``target * size_multiplier`` (negative targets are treated as
flat unless ``allow_short``). Units are fractional and are held constant between fills (no
rebalancing while the target is unchanged). A fill at price p trades from ``u0`` to ``u1`` units so
that ``u1 * p = w * E'``, where ``E'`` is the equity after the fill's costs, and costs are
``(fee + slippage) * |u1 - u0| * p`` (each side, on traded notional). Equity is marked at each
bar's close and floored at 0 (ruin is final).

``fill="close"`` is optimistic: it trades at the very price that completed the signal, leaving no
time to act on it; ``BacktestConfig.fill_note`` says so wherever that fill is chosen.

Annualization by the calendar, never by counting rows: ``config.bars_per_year`` if set, else the
calendar's (``config.calendar``, or inferred from the timestamps by ``infer_calendar``): "24/7" is
365.25 days a year (8766 hourly bars), "equities" is 252 sessions a year (one per daily bar). On the
24/7 calendar the missing hours of a sample with holes count as calendar bars without a return (see
``metrics``), so gaps neither shrink bars_per_year nor inflate the Sharpe. CAGR and Calmar use the
sample's calendar span and are NaN under a year (``BacktestResult.annualized_note`` gives the reason).

Vectorization. Equity only changes multiplicatively at fills, so the equity after every fill is a
cumulative product over the fills (``_equity_after_fills``), with no loop. The stop loss is the
only path-dependent part: a tight Python loop over *trades* (not bars), each searching its bars
with one numpy comparison; a stop exits at the stop price (or at the open if the bar gapped
through it), and the position stays flat until the signal leaves that direction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import polars as pl

from cyber_pipelines.backtest.metrics import all_metrics, annualized_unavailable_reason, bar_returns

Fill = Literal["next_open", "close"]
FILLS: tuple[str, ...] = ("next_open", "close")
Calendar = Literal["24/7", "equities"]
CALENDARS: tuple[str, ...] = ("24/7", "equities")
_SECONDS_PER_YEAR = 365.25 * 24 * 3600
HOURS_PER_YEAR = 365.25 * 24  # 8766: a market that trades around the clock
EQUITY_SESSIONS_PER_YEAR = 252
EQUITY_SESSION_HOURS = 6.5  # NYSE regular session, for intraday equity bars
FILL_CLOSE_NOTE = (
    "fill=close is optimistic: each signal fills at the close that completed it, with no time to act "
    "(fill=next_open is the realistic default)"
)


@dataclass(frozen=True)
class BacktestConfig:
    """Costs, fills and sizing of a backtest (fee and slippage are fractions per side)."""

    fee: float = 0.0026
    slippage: float = 0.0010
    fill: Fill = "next_open"
    allow_short: bool = False
    stop_loss: float | None = None
    size_multiplier: float = 1.0
    initial_cash: float = 10_000.0
    bars_per_year: float | None = None
    calendar: Calendar | None = None  # None: inferred from the timestamps (``infer_calendar``)

    def __post_init__(self) -> None:
        if not (0 <= self.fee < 0.1 and 0 <= self.slippage < 0.1):
            raise ValueError(f"fee and slippage must be in [0, 0.1), got {self.fee}, {self.slippage}")
        if self.fill not in FILLS:
            raise ValueError(f"fill must be one of {FILLS}, got {self.fill!r}")
        if self.stop_loss is not None and not 0 < self.stop_loss < 1:
            raise ValueError(f"stop_loss must be a fraction in (0, 1), got {self.stop_loss}")
        if not 0 < self.size_multiplier <= 1:
            raise ValueError(f"size_multiplier must be in (0, 1], got {self.size_multiplier}")
        if not self.initial_cash > 0:
            raise ValueError(f"initial_cash must be > 0, got {self.initial_cash}")
        if self.bars_per_year is not None and not self.bars_per_year > 0:
            raise ValueError(f"bars_per_year must be > 0, got {self.bars_per_year}")
        if self.calendar is not None and self.calendar not in CALENDARS:
            raise ValueError(f"calendar must be one of {CALENDARS}, got {self.calendar!r}")

    @property
    def cost_rate(self) -> float:
        return self.fee + self.slippage

    @property
    def optimistic_fill(self) -> bool:
        """True for ``fill="close"``: it fills at the price that completed the signal."""
        return self.fill == "close"

    @property
    def fill_note(self) -> str | None:
        """A line for reports and metadata when the fill is optimistic (``FILL_CLOSE_NOTE``), else None."""
        return FILL_CLOSE_NOTE if self.optimistic_fill else None


@dataclass(frozen=True)
class BacktestResult:
    """Equity curve (timestamp, equity, position, units), trade list and metrics of one run."""

    equity: pl.DataFrame
    trades: pl.DataFrame
    metrics: dict[str, float]
    config: BacktestConfig
    bars_per_year: float
    name: str = field(default="")
    calendar: str = ""  # "24/7", "equities" or "config" (bars_per_year set explicitly)
    years: float = math.nan  # calendar span of the sample (first to last timestamp)

    @property
    def returns(self) -> np.ndarray:
        """Per-bar simple returns of the equity curve (length bars - 1)."""
        return bar_returns(self.equity["equity"].to_numpy())

    @property
    def annualized_note(self) -> str | None:
        """Why CAGR and Calmar are NaN (e.g. "sample of 88 days < 1 year"), or None when reported."""
        return annualized_unavailable_reason(self.years)

    @property
    def fill_note(self) -> str | None:
        return self.config.fill_note


@dataclass(frozen=True)
class Ohlc:
    timestamp: pl.Series
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray


def ohlc_arrays(candles: pl.DataFrame) -> Ohlc:
    """Validated float arrays of a candle frame (timestamp, open, high, low, close)."""
    missing = [c for c in ("timestamp", "open", "high", "low", "close") if c not in candles.columns]
    if missing:
        raise ValueError(f"candles are missing columns {missing}; have {candles.columns}")
    if candles.height < 2:
        raise ValueError(f"need at least 2 candles, got {candles.height}")
    ts = candles["timestamp"]
    if ts.null_count() or not ts.is_sorted() or ts.n_unique() != ts.len():
        raise ValueError("candle timestamps must be non-null, unique and increasing")
    arrays = [candles[c].cast(pl.Float64).to_numpy() for c in ("open", "high", "low", "close")]
    for name, arr in zip(("open", "high", "low", "close"), arrays, strict=True):
        if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
            raise ValueError(f"candle column {name!r} must be finite and > 0")
    return Ohlc(ts, *arrays)


def bar_seconds(timestamps: pl.Series) -> float:
    """The typical (median) bar length in seconds; holes in the sample do not change it."""
    if timestamps.len() < 2 or not timestamps.dtype.is_temporal():
        raise ValueError(f"need at least 2 temporal timestamps to infer the bar length, got {timestamps.dtype}")
    bar = timestamps.diff().drop_nulls().dt.total_microseconds().median()
    if bar is None or float(bar) <= 0:  # type: ignore[arg-type]
        raise ValueError("timestamps must increase to infer the bar length")
    return float(bar) / 1e6  # type: ignore[arg-type]


def span_years(timestamps: pl.Series) -> float:
    """Calendar span of the sample, first to last timestamp, in 365.25-day years."""
    if timestamps.len() < 2 or not timestamps.dtype.is_temporal():
        return math.nan
    return (timestamps[-1] - timestamps[0]).total_seconds() / _SECONDS_PER_YEAR


def infer_calendar(timestamps: pl.Series) -> Calendar:
    """ "equities" for daily (or longer) bars with no bar on a Saturday or Sunday, else "24/7"."""
    if bar_seconds(timestamps) < 20 * 3600:
        return "24/7"
    weekend = (timestamps.dt.weekday() >= 6).any()  # polars: Monday = 1 .. Sunday = 7
    return "24/7" if weekend else "equities"


def calendar_bars_per_year(timestamps: pl.Series, calendar: Calendar = "24/7") -> float:
    """Bars per year of the calendar at the sample's typical bar length (never from the row count).

    "24/7": a 365.25-day year over the bar length (8766 for hourly bars, 365.25 for daily ones).
    "equities": 252 sessions a year; a daily bar is one session, an intraday bar a share of a 6.5-hour
    session, a weekly or longer bar ``bar_days * 5 / 7`` sessions."""
    bar = bar_seconds(timestamps)
    if calendar == "24/7":
        return _SECONDS_PER_YEAR / bar
    if calendar != "equities":
        raise ValueError(f"calendar must be one of {CALENDARS}, got {calendar!r}")
    if bar < 20 * 3600:
        return EQUITY_SESSIONS_PER_YEAR * EQUITY_SESSION_HOURS * 3600 / bar
    days = bar / 86400
    return EQUITY_SESSIONS_PER_YEAR if days < 5 else EQUITY_SESSIONS_PER_YEAR / (days * 5 / 7)


def infer_bars_per_year(timestamps: pl.Series) -> float:
    """Bars per year of the calendar inferred from the timestamps (``infer_calendar``): 8766 for
    hourly crypto, 252 for daily equities. It does not count rows, so holes do not shrink it."""
    return calendar_bars_per_year(timestamps, infer_calendar(timestamps))


@dataclass(frozen=True)
class Annualization:
    """How a sample is annualized: bars per year, the calendar it came from, the calendar bar
    intervals the sample spans (24/7 only; None: take the rows as they are) and its span in years."""

    bars_per_year: float
    calendar: str
    periods: int | None
    years: float


def annualization(timestamps: pl.Series, config: BacktestConfig) -> Annualization:
    """``config.bars_per_year`` if set (rows taken as they are), else the calendar's (see module doc)."""
    years = span_years(timestamps)
    if config.bars_per_year is not None:
        if not math.isfinite(years):  # timestamps that are not times: the rows are the calendar
            years = (timestamps.len() - 1) / config.bars_per_year
        return Annualization(config.bars_per_year, "config", None, years)
    calendar = config.calendar or infer_calendar(timestamps)
    bpy = calendar_bars_per_year(timestamps, calendar)
    periods = None
    if calendar == "24/7":
        periods = max(timestamps.len() - 1, round(years * bpy))
    return Annualization(bpy, calendar, periods, years)


def executed_weights(target: np.ndarray, n: int, config: BacktestConfig) -> np.ndarray:
    """Validated target -> weight held after each bar's fills (axis 0 = bars; 1-D or 2-D)."""
    target = np.asarray(target, dtype=float)
    if target.shape[0] != n:
        raise ValueError(f"target_position has {target.shape[0]} rows, candles have {n}")
    if not np.all(np.isfinite(target)):
        raise ValueError("target_position has NaN/inf values (use 0 for 'no position')")
    if np.any(np.abs(target) > 1 + 1e-12):
        raise ValueError("target_position must be within [-1, 1]")
    weights = np.clip(target, -1.0 if config.allow_short else 0.0, 1.0) * config.size_multiplier
    if config.fill == "next_open":
        weights = np.concatenate([np.zeros_like(weights[:1]), weights[:-1]])
    return weights


def fill_cost_factor(h: np.ndarray, w: np.ndarray, c: float) -> np.ndarray:
    """E_after / E_before of a fill from drifted weight h to weight w with cost rate c per side.

    From ``u1 p = w E'`` and ``E' = E - c |u1 - u0| p`` with ``u0 p = h E``: with d = sign(w - h),
    ``E' / E = (1 + c d h) / (1 + c d w)``.
    """
    d = np.sign(w - h)
    return (1.0 + c * d * h) / (1.0 + c * d * w)


def _equity_after_fills(
    price: np.ndarray, w: np.ndarray, c: float, e0: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Equity just before and just after each fill, and the drifted weight entering each fill."""
    growth = np.ones_like(price)  # growth[k]: equity factor from fill k to fill k+1
    drift = np.zeros_like(price)  # weight held just before fill k (after the price moved)
    if price.size > 1:
        ratio = price[1:] / price[:-1]
        growth[:-1] = np.maximum(1.0 + w[:-1] * (ratio - 1.0), 0.0)
        safe = np.where(growth[:-1] > 0, growth[:-1], 1.0)
        drift[1:] = np.where(growth[:-1] > 0, w[:-1] * ratio / safe, 0.0)
    factor = fill_cost_factor(drift, w, c)
    after = e0 * np.cumprod(factor * np.concatenate([[1.0], growth[:-1]]))
    before = np.concatenate([[e0], after[:-1] * growth[:-1]])
    return before, after, drift


def _apply_stops(
    bar: np.ndarray, price: np.ndarray, w: np.ndarray, seq: np.ndarray, ohlc: Ohlc, config: BacktestConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cut each trade at its stop; returns the new fill arrays (bar, price, weight, order key)."""
    assert config.stop_loss is not None
    n = ohlc.close.size
    on_close = config.fill == "close"
    sign = np.sign(w)
    starts = np.flatnonzero((sign != 0) & (sign != np.concatenate([[0.0], sign])[:-1]))
    keep = np.ones(bar.size, dtype=bool)
    stops: list[tuple[int, float]] = []
    for k in starts:  # loop over trades; each trade's bars are searched vectorized
        side = sign[k]
        later = np.flatnonzero(sign[k + 1 :] != side)
        end_fill = k + 1 + later[0] if later.size else bar.size
        end_bar = bar[end_fill] if end_fill < bar.size else n
        lo = bar[k] + 1 if on_close else bar[k]
        hi = min(end_bar, n - 1) if on_close else end_bar - 1
        if hi < lo:
            continue
        level = price[k] * (1.0 - side * config.stop_loss)
        window = ohlc.low[lo : hi + 1] <= level if side > 0 else ohlc.high[lo : hi + 1] >= level
        hit = np.flatnonzero(window)
        if not hit.size:
            continue
        s = lo + int(hit[0])
        gap_open = ohlc.open[s]
        fill = min(gap_open, level) if side > 0 else max(gap_open, level)
        stops.append((s, fill))
        inside = np.arange(k + 1, end_fill)
        cut = bar[inside] >= s if on_close else bar[inside] > s
        keep[inside[cut]] = False
    if not stops:
        return bar, price, w, seq
    s_bar = np.array([s for s, _ in stops])
    s_price = np.array([p for _, p in stops])
    bar = np.concatenate([bar[keep], s_bar])
    price = np.concatenate([price[keep], s_price])
    w = np.concatenate([w[keep], np.zeros(len(stops))])
    # a stop happens after a next_open fill of its bar, and before a close fill of its bar
    seq = np.concatenate([seq[keep], np.full(len(stops), -1 if on_close else 1)])
    order = np.lexsort((seq, bar))
    return bar[order], price[order], w[order], seq[order]


def run_backtest(
    candles: pl.DataFrame, target_position: np.ndarray, config: BacktestConfig | None = None, name: str = ""
) -> BacktestResult:
    """Backtest target positions (decided at each bar's close) on candles; see the module docstring."""
    config = config or BacktestConfig()
    ohlc = ohlc_arrays(candles)
    n = ohlc.close.size
    ann = annualization(ohlc.timestamp, config)
    bpy = ann.bars_per_year
    held = executed_weights(target_position, n, config)
    fill_price = ohlc.open if config.fill == "next_open" else ohlc.close
    bar = np.flatnonzero(np.diff(held, prepend=0.0) != 0)
    price, w = fill_price[bar], held[bar]
    seq = np.zeros(bar.size, dtype=int)
    if config.stop_loss is not None and bar.size:
        bar, price, w, seq = _apply_stops(bar, price, w, seq, ohlc, config)

    c = config.cost_rate
    e0 = config.initial_cash
    if bar.size:
        before, after, drift = _equity_after_fills(price, w, c, e0)
    else:
        before = after = drift = np.zeros(0)
    k = np.searchsorted(bar, np.arange(n), side="right") - 1  # last fill at or before each bar
    has = k >= 0
    kk = np.where(has, k, 0)
    if bar.size:
        equity = np.where(has, after[kk] * (1.0 + w[kk] * (ohlc.close / price[kk] - 1.0)), e0)
        position = np.where(has, w[kk], 0.0)
        units_at_fill = w * after / price
        units = np.where(has, units_at_fill[kk], 0.0)
    else:
        equity, position, units = np.full(n, e0), np.zeros(n), np.zeros(n)
        units_at_fill = np.zeros(0)
    ruined = np.maximum.accumulate(equity <= 0)
    equity = np.where(ruined, 0.0, equity)

    trades = _trade_list(ohlc, bar, price, w, before, drift, units_at_fill, equity[-1], c)
    pnl = trades["pnl"].to_numpy()
    metrics = all_metrics(
        equity,
        position,
        pnl,
        trades["return"].to_numpy(),
        np.zeros(pnl.size, dtype=np.int64),
        e0,
        bpy,
        years=ann.years,
        periods=ann.periods,
    )
    curve = pl.DataFrame({"timestamp": ohlc.timestamp, "equity": equity, "position": position, "units": units})
    return BacktestResult(
        equity=curve,
        trades=trades,
        metrics={key: float(v[0]) for key, v in metrics.items()},
        config=config,
        bars_per_year=bpy,
        name=name,
        calendar=ann.calendar,
        years=ann.years,
    )


def _trade_list(
    ohlc: Ohlc,
    bar: np.ndarray,
    price: np.ndarray,
    w: np.ndarray,
    before: np.ndarray,
    drift: np.ndarray,
    units: np.ndarray,
    last_equity: float,
    c: float,
) -> pl.DataFrame:
    """Trades are runs of fills with the same position sign; pnl includes every cost paid inside.

    A trade's pnl is the equity after its exit (its exit cost paid, the next trade's entry not yet)
    minus the equity before its entry (the previous trade's exit cost paid), which holds because cash
    earns nothing and only one position is held. A trade still open at the end is marked to the
    last close without an exit cost (``is_open``).
    """
    sign = np.sign(w)
    prev = np.concatenate([[0.0], sign])[:-1]
    start = np.flatnonzero((sign != 0) & (sign != prev))
    end = np.flatnonzero((prev != 0) & (sign != prev))
    # equity once the previous position is closed: before * (1 - c |drift|)
    closed_equity = before * (1.0 - c * np.abs(drift))
    n_open = start.size - end.size
    exit_equity = np.concatenate([closed_equity[end], np.full(n_open, last_equity)])
    entry_equity = closed_equity[start]
    pnl = exit_equity - entry_equity
    entry_notional = np.abs(units[start]) * price[start]
    ts = ohlc.timestamp
    exit_time = pl.concat([ts.gather(bar[end]), ts.gather([ts.len() - 1] * n_open)]) if start.size else ts[:0]
    return pl.DataFrame(
        {
            "entry_time": ts.gather(bar[start]),
            "exit_time": exit_time,
            "entry_price": price[start],
            "exit_price": np.concatenate([price[end], np.full(n_open, ohlc.close[-1])]),
            "size": units[start],
            "pnl": pnl,
            "return": pnl / np.where(entry_notional > 0, entry_notional, math.inf),
            "is_open": np.arange(start.size) >= end.size,
        },
        schema_overrides={"entry_price": pl.Float64, "exit_price": pl.Float64, "size": pl.Float64},
    )
