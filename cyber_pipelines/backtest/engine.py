"""The backtest model and single runs: target positions in, equity, trades, metrics out.

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

Stop loss (``stop_loss``): a position is closed at ``entry * (1 - stop)`` (long; ``1 + stop`` short),
or at the bar's open if the bar gapped through that level, and stays flat until the target leaves
that side. With ``fill="next_open"`` a stop can trigger on the bar of the entry (after its open);
with ``fill="close"`` from the bar after, before that bar's own close fill.

Every backtest, this single run as well as the grids of ``sweep``, goes through the one compiled
loop of ``kernel`` (fills, stops, equity, trades and the sums of the metrics); this module validates
the inputs, settles the annualization and turns the kernel's output into frames.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import polars as pl

from cyber_pipelines.backtest.kernel import NO_STOP, TRADE_FIELDS, RunSpec, metrics_from_sums, simulate
from cyber_pipelines.backtest.metrics import annualized_unavailable_reason, bar_returns

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

    @property
    def prices(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(open, high, low, close), as the kernel takes them."""
        return self.open, self.high, self.low, self.close


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


def validated_targets(target: np.ndarray, n: int) -> np.ndarray:
    """Target positions as floats, checked: ``n`` rows (axis 0 = bars; 1-D or 2-D), finite, in [-1, 1]."""
    target = np.asarray(target, dtype=float)
    if target.shape[0] != n:
        raise ValueError(f"target_position has {target.shape[0]} rows, candles have {n}")
    if not np.all(np.isfinite(target)):
        raise ValueError("target_position has NaN/inf values (use 0 for 'no position')")
    if np.any(np.abs(target) > 1 + 1e-12):
        raise ValueError("target_position must be within [-1, 1]")
    return target


def run_spec(configs: Sequence[BacktestConfig]) -> RunSpec:
    """The kernel's per-run settings of one config per run (they must share the fill and the cash)."""
    first = configs[0]
    if any(c.fill != first.fill or c.initial_cash != first.initial_cash for c in configs):
        raise ValueError("the runs of one kernel pass must share fill and initial_cash")
    settings = np.array(
        [(-1.0 if c.allow_short else 0.0, c.size_multiplier, c.cost_rate, c.stop_loss or NO_STOP) for c in configs]
    ).T
    return RunSpec(first.fill == "close", first.initial_cash, *settings)


def run_backtest(
    candles: pl.DataFrame, target_position: np.ndarray, config: BacktestConfig | None = None, name: str = ""
) -> BacktestResult:
    """Backtest target positions (decided at each bar's close) on candles; see the module docstring."""
    config = config or BacktestConfig()
    ohlc = ohlc_arrays(candles)
    n = ohlc.close.size
    ann = annualization(ohlc.timestamp, config)
    target = validated_targets(target_position, n)
    if target.ndim != 1:
        raise ValueError(f"target_position must be 1-D, got shape {target.shape}")
    run = simulate(ohlc.prices, target[None, :], run_spec([config]), record_trades=True)
    assert run.equity is not None and run.position is not None and run.units is not None and run.trades is not None
    bpy = ann.bars_per_year
    metrics = metrics_from_sums(run.sums, config.initial_cash, n, bpy, years=ann.years, periods=ann.periods)
    curve = pl.DataFrame(
        {"timestamp": ohlc.timestamp, "equity": run.equity[0], "position": run.position[0], "units": run.units[0]}
    )
    return BacktestResult(
        equity=curve,
        trades=_trade_table(ohlc.timestamp, run.trades),
        metrics={key: float(v[0]) for key, v in metrics.items()},
        config=config,
        bars_per_year=bpy,
        name=name,
        calendar=ann.calendar,
        years=ann.years,
    )


def _trade_table(timestamps: pl.Series, rows: np.ndarray) -> pl.DataFrame:
    """The kernel's trade rows (``kernel.TRADE_FIELDS``) as a frame with times."""
    col = {name: rows[:, i] for i, name in enumerate(TRADE_FIELDS)}
    return pl.DataFrame(
        {
            "entry_time": timestamps.gather(col["entry_bar"].astype(np.int64)),
            "exit_time": timestamps.gather(col["exit_bar"].astype(np.int64)),
            "entry_price": col["entry_price"],
            "exit_price": col["exit_price"],
            "size": col["size"],
            "pnl": col["pnl"],
            "return": col["return"],
            "is_open": col["is_open"] > 0,
        },
        schema_overrides={"entry_price": pl.Float64, "exit_price": pl.Float64, "size": pl.Float64},
    )
