"""One reading of the pipeline's state, as plain data: what the exporter and the summary are made from.

``reader.read_snapshot`` fills a ``Snapshot`` section by section (a section that fails to read leaves its
fields empty and its error in ``errors``, so one broken part never hides the others).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# The parts of a reading, in the order they are read (each is one ``cyber_metrics_section_up`` series).
SECTIONS = ("vsm", "ledger", "candles", "materializations", "runs", "events", "backtests")
PORTFOLIO = "portfolio"  # the scope of strategy_comparison's equal-weight portfolio (pair keys have a dash)
WINDOW_HOURS = 24  # "the last day" of the run and check counts


@dataclass(frozen=True)
class PairStatus:
    """A pair as the VSM holds it: ledger state and size in force, last recorded pain, breaker."""

    pair: str
    state: str  # active | probation | hibernated (active before the pair's first ledger entry)
    size: float
    pain: float | None  # None: no pain recorded yet
    breaker: str  # closed | half_open | open


@dataclass(frozen=True)
class LedgerFigures:
    """The S3 ledger's P&L of a pair, from its latest out-of-sample equity curve of the ledger strategy."""

    pnl: float
    drawdown: float
    as_of: datetime | None  # the curve's last timestamp


@dataclass(frozen=True)
class Candles:
    """A pair's newest stored candle (``last_timestamp`` of its newest stored month) and its source."""

    pair: str
    source: str
    through: datetime


@dataclass(frozen=True)
class Backtest:
    """The numeric out-of-sample figures of one backtest materialization."""

    scope: str  # a pair key, or PORTFOLIO for strategy_comparison
    asset: str
    source: str
    at: datetime  # when it was materialized
    run_id: str
    figures: dict[str, dict[str, float]]  # strategy -> metric (sharpe, total_return, ...) -> value

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "run_id": self.run_id, "source": self.source, "figures": self.figures}


@dataclass
class Snapshot:
    now: datetime
    pairs: list[PairStatus] = field(default_factory=list)
    universe: int | None = None  # pair partitions: what the policy's max_pairs limits
    max_pairs: int | None = None
    system_breaker: str | None = None
    system_pain: float | None = None
    ledger: dict[str, LedgerFigures] = field(default_factory=dict)
    candles: list[Candles] = field(default_factory=list)
    materialized: dict[str, float] = field(default_factory=dict)  # asset -> last materialization, epoch seconds
    runs_total: dict[str, int] = field(default_factory=dict)  # status -> runs that ended, all time
    runs_day: dict[tuple[str, str], int] = field(default_factory=dict)  # (job, status) -> ended in the window
    runs_in_flight: dict[str, int] = field(default_factory=dict)  # queued | starting | started -> runs
    events_total: dict[str, int] = field(default_factory=dict)  # VSM log: kind -> events
    checks_day: dict[tuple[str, str], int] = field(default_factory=dict)  # (asset:check, passed|failed) -> n
    backtests: list[Backtest] = field(default_factory=list)  # the latest per pair, and the portfolio's
    errors: dict[str, str] = field(default_factory=dict)  # section -> one-line error
    seconds: float = 0.0  # how long the reading took

    def age_hours(self, candles: Candles) -> float:
        return (self.now - candles.through).total_seconds() / 3600


def figures_of(metadata: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """The strategies' figures in backtest metadata (``numeric_summary``'s ``<metric>/<strategy>`` and
    ``p_adjusted/<reference>/<strategy>`` keys), finite numbers only: ``{strategy: {metric: value}}``."""
    out: dict[str, dict[str, float]] = {}
    for key, value in metadata.items():
        parts = key.split("/")
        if len(parts) not in (2, 3) or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if len(parts) == 3 and parts[0] != "p_adjusted":
            continue
        if not math.isfinite(value):
            continue
        metric, strategy = "/".join(parts[:-1]), parts[-1]
        out.setdefault(strategy, {})[metric] = float(value)
    return {strategy: out[strategy] for strategy in sorted(out)}


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
