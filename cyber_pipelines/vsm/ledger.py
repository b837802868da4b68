"""S3 control: the P&L ledger of a pair, its probation level and hibernation (with S2 hysteresis).

The input is the out-of-sample equity curve of the policy's strategy (``backtest_equity/<PAIR>.parquet``).
P&L is cumulative over the whole curve (``last / first - 1``). The probation level is the deepest policy
level whose threshold the P&L is at or below; a level is left only once the P&L is ``hysteresis`` above
its threshold, so noise around a threshold does not flip the state. A pair whose daily close P&L has been
at or below ``hibernate_pnl`` for ``hibernate_days`` calendar days in a row hibernates (size 0), and
stays hibernated until ``wake``; after a wake only the days that close after it count towards hibernating again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import polars as pl

from cyber_pipelines.vsm.policy import LedgerPolicy

if TYPE_CHECKING:
    from cyber_pipelines.storage import TableStore

State = Literal["active", "probation", "hibernated"]
_DIGITS = 12  # P&L is rounded so that 0.95 / 1 - 1 is exactly -5% at a -5% threshold


@dataclass(frozen=True)
class LedgerEntry:
    """A pair's standing in the ledger (times in UTC). Level 0 is full size; hibernated, the size is 0."""

    pair: str
    strategy: str
    pnl: float
    drawdown: float
    max_drawdown: float
    days_below: int
    level: int
    size_multiplier: float
    state: State
    reason: str
    as_of: datetime | None  # the curve's last timestamp; None when there is no curve
    woken_at: datetime | None = None  # the last wake: hibernation counts only days that close after it

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("as_of", "woken_at"):
            out[key] = out[key].isoformat() if out[key] is not None else None
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LedgerEntry:
        """The entry ``to_json`` wrote (other keys are ignored)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for key in ("as_of", "woken_at"):
            values[key] = datetime.fromisoformat(data[key]) if data.get(key) else None
        return cls(**values)


def equity_curve(timestamps: list[datetime], equity: list[float], strategy: str) -> pl.DataFrame:
    """A curve frame (``timestamp`` and one equity column named ``strategy``) from plain arrays."""
    return pl.DataFrame({"timestamp": timestamps, strategy: equity})


def read_curve(store: TableStore, source: str, pair: str, strategy: str) -> pl.DataFrame | None:
    """The pair's stored out-of-sample curve of ``strategy`` at full size; None when it has not been backtested.

    A backtest run at a probation size (its config's ``size_multiplier`` s) has bar returns s times the
    full-size ones (positions and proportional costs both scale with s), so the ledger divides them by s:
    it judges the strategy, not the size the ledger itself imposed (else probation would lift itself).
    """
    from cyber_pipelines.backtest.store import EQUITY_TABLE, stored_size_multiplier  # lazy: heavy package

    if not store.exists(source, EQUITY_TABLE, pair):
        return None
    curves = store.read(source, EQUITY_TABLE, pair)
    if strategy not in curves.columns:
        raise ValueError(f"equity curves of {pair} have no column for strategy {strategy!r}: {curves.columns}")
    size = stored_size_multiplier(store, source, pair) or 1.0
    if size == 1.0:
        return curves.select("timestamp", strategy)
    full = (1 + pl.col(strategy).pct_change().fill_null(0.0) / size).cum_prod() * pl.col(strategy).first()
    return curves.select("timestamp", full.alias(strategy))


def _level(pnl: float, previous: int, policy: LedgerPolicy) -> int:
    """The deepest level whose threshold ``pnl`` is at or below; a worse-or-equal previous level is kept
    while ``pnl`` is within ``hysteresis`` above its threshold."""
    thresholds = [level.pnl for level in policy.probation]
    raw = sum(pnl <= t for t in thresholds)
    held = sum(pnl <= t + policy.hysteresis for t in thresholds[:previous])
    return max(raw, held)


def _days_below(
    days: list[date], closed_at: list[datetime], pnls: list[float], limit: float, woken: datetime | None
) -> int:
    """Calendar days in a row, ending at the last day, whose close P&L is at or below ``limit`` (a day
    missing from the curve keeps the previous close); only days that closed after ``woken`` count."""
    start: date | None = None
    for day, at, pnl in zip(reversed(days), reversed(closed_at), reversed(pnls), strict=True):
        if pnl > limit or (woken is not None and at <= woken):
            break
        start = day
    return 0 if start is None else (days[-1] - start).days + 1


def _pct(x: float) -> str:
    return f"{x:+.1%}"


def _standing(pnl: float, level: int, previous: int, policy: LedgerPolicy) -> tuple[State, float, str]:
    """State, size and one-line reason of a pair that is not hibernated."""
    levels = policy.probation
    size = levels[level - 1].size if level else 1.0
    state: State = "probation" if level else "active"
    where = f"probation level {level}, size {size:g}" if level else f"active, size {size:g}"
    hysteresis = f" + {policy.hysteresis:.1%} hysteresis"
    if level > _level(pnl, 0, policy):  # held by hysteresis
        why = f"P&L {_pct(pnl)} not above {_pct(levels[level - 1].pnl)}{hysteresis}: stays"
    elif level:
        why = f"P&L {_pct(pnl)} <= {_pct(levels[level - 1].pnl)}:"
    elif levels:
        why = f"P&L {_pct(pnl)} > {_pct(levels[0].pnl)}{hysteresis if previous else ''}:"
    else:
        why = f"P&L {_pct(pnl)}:"
    return state, size, f"{why} {where}"


def ledger_entry(
    pair: str,
    curve: pl.DataFrame | None,
    previous: LedgerEntry | None,
    policy: LedgerPolicy,
) -> LedgerEntry:
    """The pair's entry from its out-of-sample curve (``timestamp`` plus the strategy's equity column, or
    a single equity column), given its previous entry (None: a new pair)."""
    woken = previous.woken_at if previous else None
    if curve is None or curve.height == 0:
        if previous is not None and previous.state == "hibernated":
            return previous
        return LedgerEntry(
            pair, policy.strategy, 0.0, 0.0, 0.0, 0, 0, 1.0, "active", "no backtest yet: active, size 1", None, woken
        )
    column = policy.strategy if policy.strategy in curve.columns else _only_equity_column(curve)
    naive = getattr(curve.schema["timestamp"], "time_zone", None) is None
    ts = pl.col("timestamp")
    frame = (
        curve.select(
            ts.dt.replace_time_zone("UTC") if naive else ts.dt.convert_time_zone("UTC"),
            pl.col(column).cast(pl.Float64).alias("equity"),
        )
        .drop_nulls()
        .filter(pl.col("equity").is_finite())
        .sort("timestamp")
    )
    if frame.height == 0:
        raise ValueError(f"equity curve of {pair} ({column}) has no finite values")
    equity = frame["equity"].to_numpy()
    first = float(equity[0])
    if first <= 0:
        raise ValueError(f"equity curve of {pair} ({column}) starts at {first}, not a positive amount")
    peak = np.maximum.accumulate(equity)
    pnl = round(float(equity[-1]) / first - 1, _DIGITS)
    drawdown = round(1 - float(equity[-1] / peak[-1]), _DIGITS)
    max_drawdown = round(float(np.max(1 - equity / peak)), _DIGITS)
    as_of: datetime = frame["timestamp"][-1]
    daily = (
        frame.group_by(pl.col("timestamp").dt.date().alias("day"))
        .agg(pl.col("timestamp").last(), pl.col("equity").last())
        .sort("day")
    )
    daily_pnl = [round(e / first - 1, _DIGITS) for e in daily["equity"].to_list()]
    days = _days_below(daily["day"].to_list(), daily["timestamp"].to_list(), daily_pnl, policy.hibernate_pnl, woken)

    previous_level = previous.level if previous else 0
    level = _level(pnl, previous_level, policy)
    entry = LedgerEntry(
        pair, policy.strategy, pnl, drawdown, max_drawdown, days, level, 1.0, "active", "", as_of, woken
    )
    if previous is not None and previous.state == "hibernated":  # sticky until woken
        return replace(entry, size_multiplier=0.0, state="hibernated", reason=previous.reason)
    if days >= policy.hibernate_days:
        reason = f"P&L {_pct(pnl)} <= {_pct(policy.hibernate_pnl)} for {days} days in a row: hibernated until woken"
        return replace(entry, size_multiplier=0.0, state="hibernated", reason=reason)
    state, size, reason = _standing(pnl, level, previous_level, policy)
    return replace(entry, size_multiplier=size, state=state, reason=reason)


def _only_equity_column(curve: pl.DataFrame) -> str:
    others = [c for c in curve.columns if c != "timestamp"]
    if len(others) != 1:
        raise ValueError(f"curve needs 'timestamp' and one equity column, got {curve.columns}")
    return others[0]


def wake(entry: LedgerEntry, policy: LedgerPolicy, reason: str, at: datetime) -> LedgerEntry:
    """Wake a hibernated pair: active again at the level its P&L gives; hibernation counts afresh from
    ``at``. A pair that is not hibernated is returned unchanged."""
    if entry.state != "hibernated":
        return entry
    level = _level(entry.pnl, 0, policy)
    state, size, standing = _standing(entry.pnl, level, 0, policy)
    return replace(
        entry,
        days_below=0,
        level=level,
        size_multiplier=size,
        state=state,
        reason=f"woken ({reason}): {standing}",
        woken_at=at if at.tzinfo else at.replace(tzinfo=UTC),
    )


def transition_reason(previous: LedgerEntry | None, current: LedgerEntry) -> str | None:
    """The reason to log when the pair's state or probation level changed (or it is new); None when nothing
    did. A hibernated pair's level does not count: it trades nothing."""
    if previous is None or previous.state != current.state:
        return current.reason
    if current.state == "hibernated" or previous.level == current.level:
        return None
    return current.reason
