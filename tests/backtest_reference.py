"""A plain bar-by-bar backtest (cash and units, one event at a time) to check the kernel against, and
the random candles and targets it runs on. Written for clarity, not speed: fills are solved by
fixed-point iteration, stops and trades are followed as a person would by hand."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

from cyber_pipelines.backtest.engine import BacktestConfig


def make_candles(n: int, seed: int, step: timedelta = timedelta(hours=1), vol: float = 0.02) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, vol, n)))
    open_ = np.concatenate([[100.0], close[:-1]]) * np.exp(rng.normal(0, vol / 2, n))  # gaps
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, vol, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, vol, n)))
    start = datetime(2024, 1, 1, tzinfo=UTC)
    return pl.DataFrame(
        {
            "timestamp": [start + i * step for i in range(n)],
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": np.ones(n),
        }
    )


def random_targets(n: int, seed: int, change: float = 0.12) -> np.ndarray:
    """Persistent random targets in {-1, -0.5, 0, 0.5, 1}, changing with probability ``change`` a bar."""
    rng = np.random.default_rng(seed)
    changes = rng.random(n) < change
    levels = rng.choice([-1.0, -0.5, 0.0, 0.5, 1.0], size=n)
    out: np.ndarray = levels[np.maximum.accumulate(np.where(changes, np.arange(n), 0))]
    return out


@dataclass
class Reference:
    equity: np.ndarray  # marked at each close, 0 from the first bar at or below 0
    position: np.ndarray  # weight set by the last fill at or before each bar
    trades: list[dict[str, float]] = field(default_factory=list)  # pnl, return, entry/exit price, is_open


def reference(candles: pl.DataFrame, target: np.ndarray, cfg: BacktestConfig) -> Reference:
    """Bar-by-bar cash and units with the engine's model (see ``engine``)."""
    o, h, lo, c = (candles[k].to_numpy() for k in ("open", "high", "low", "close"))
    rate = cfg.fee + cfg.slippage
    cash, units, weight = cfg.initial_cash, 0.0, 0.0
    latch = 0.0  # sign of a trade cut by its stop: stay flat while the signal keeps that sign
    held_sign = 0.0  # sign of the (pre-stop) signal being held
    trade: dict[str, float] = {}
    trades: list[dict[str, float]] = []
    weights = np.clip(target, -1 if cfg.allow_short else 0, 1) * cfg.size_multiplier
    equity, position = np.empty(len(c)), np.empty(len(c))

    def close_trade(price: float) -> None:
        closed = cash + units * price - rate * abs(units) * price  # the position sold, its cost paid
        trades.append({**trade, "exit_price": price, "pnl": closed - trade["entry_equity"], "is_open": 0.0})

    def fill(w: float, price: float) -> None:
        nonlocal cash, units, weight, trade, held_sign, latch
        sign = float(np.sign(w))
        if sign != held_sign:
            latch = 0.0
            held_sign = sign
        if latch and sign == latch:
            w = 0.0
        if np.sign(w) != np.sign(weight) and weight != 0:
            close_trade(price)
        total = cash + units * price
        new = w * total / price
        for _ in range(200):  # u1 * p = w * (E - rate * |u1 - u0| * p)
            new = w * (total - rate * abs(new - units) * price) / price
        if np.sign(w) != 0 and np.sign(w) != np.sign(weight):
            entry_equity = total - rate * abs(units) * price
            trade = {"entry_price": price, "entry_equity": entry_equity, "notional": abs(new) * price}
        cash -= (new - units) * price + rate * abs(new - units) * price
        units, weight = new, w

    def stop(t: int) -> None:
        nonlocal cash, units, weight, latch
        if cfg.stop_loss is None or units == 0:
            return
        side = np.sign(units)
        level = trade["entry_price"] * (1 - side * cfg.stop_loss)
        if (side > 0 and lo[t] <= level) or (side < 0 and h[t] >= level):
            price = min(o[t], level) if side > 0 else max(o[t], level)
            close_trade(price)
            cash += units * price - rate * abs(units) * price
            units, weight, latch = 0.0, 0.0, side

    last_w, ruined = 0.0, False
    for t in range(len(c)):
        if cfg.fill == "next_open":
            w = weights[t - 1] if t > 0 else 0.0
            if w != last_w:
                fill(w, o[t])
                last_w = w
            stop(t)
        else:
            stop(t)
            if weights[t] != last_w:
                fill(weights[t], c[t])
                last_w = weights[t]
        ruined = ruined or cash + units * c[t] <= 0
        equity[t] = 0.0 if ruined else cash + units * c[t]
        position[t] = weight
    if weight != 0:
        trades.append({**trade, "exit_price": c[-1], "pnl": equity[-1] - trade["entry_equity"], "is_open": 1.0})
    for tr in trades:
        tr["return"] = tr["pnl"] / tr["notional"] if tr["notional"] > 0 else 0.0
    return Reference(equity, position, trades)
