"""The one backtest kernel (numba): fills, stops, equity, trades and metric sums of every backtest.

Single runs (``engine.run_backtest``), grids (``sweep``) and walk-forward windows all go through
``_run``: one loop over the bars of one run, with the model of ``engine`` (its module docstring).
Each bar of a run, in this order:

- ``fill="next_open"``: the fill at the open to the executed weight of the previous bar's target (if
  it changed), then the stop check on the bar (the bar of the entry included), then the mark to close;
- ``fill="close"``: the stop check on the bar (a position held from an earlier bar), then the fill
  at the close to this bar's executed weight (if it changed), then the mark to close.

The executed weight is ``clip(target, lower, 1) * mult`` (``lower`` = -1 with shorts, else 0). A fill
from drifted weight ``h`` to weight ``w`` at price ``p`` keeps ``u1 p = w E'`` with costs ``c |u1 - u0|
p``, so ``E' / E = (1 + c d h) / (1 + c d w)``, ``d = sign(w - h)`` (``fill_factor``). A stop exits at
``entry * (1 -/+ stop)`` or at the open if the bar gapped through it, and the run stays flat until its
target leaves that side. Equity is floored at 0 from the first bar it is <= 0 (ruin is final).

Per run the kernel writes the sums the metrics need (``SUMS``; ``metrics_from_sums`` turns them into
``metrics.METRIC_NAMES``) and, when asked, the equity, position and units of every bar and the trade
list. A trade is a run of fills with one position sign; its pnl is the equity once it is closed (exit
cost paid) minus the equity once the position before it was closed, so it includes every cost paid
inside; a trade open at the end is marked to the last equity.

Grids are runs in rows (runs x bars): ``run_targets`` takes the target rows, ``run_sma_pairs`` makes
each row from two rows of an SMA matrix on the fly (crossing or above rule), so a grid never holds a
bars x runs matrix. Every numba function that calls another lives in this file: numba's cache
(``cache=True``) is invalidated by a change of the caller's own file only.

Cache: compiled code is cached between processes, in ``NUMBA_CACHE_DIR`` when set, else in the
``__pycache__`` folder beside this file (an editable install), else, when that is not writable (a
read-only site-packages), in the user's cache folder (``~/.cache/numba``). ``compiled_from_cache``
says whether the kernel of this process came from the cache.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from cyber_pipelines.backtest.metrics import METRIC_NAMES, MIN_YEARS_ANNUALIZED

# per-run sums written by the kernel (columns of ``sums``)
SUMS = (
    "final_equity",
    "sum_r",  # per-bar returns r_t = E_t / E_{t-1} - 1 (0 after ruin)
    "sum_r2",
    "sum_down2",  # sum of min(r, 0)^2
    "max_drawdown",
    "held_bars",  # bars that end with a non-zero position
    "n_trades",
    "wins",  # trades with pnl > 0
    "gains",  # sum of positive pnl
    "losses",  # -sum of negative pnl
    "sum_trade_return",  # sum of pnl / entry notional
)
_FINAL, _SUM_R, _SUM_R2, _SUM_DOWN2, _MDD, _HELD, _N_TRADES, _WINS, _GAINS, _LOSSES, _SUM_TRADE_RET = range(len(SUMS))
# columns of the recorded trade list
TRADE_FIELDS = ("run", "entry_bar", "exit_bar", "entry_price", "exit_price", "size", "pnl", "return", "is_open")
NO_STOP = math.nan
SMA_CROSS, SMA_ABOVE = 0, 1


@njit(cache=True)
def fill_factor(h: float, w: float, c: float) -> float:
    """E_after / E_before of a fill from drifted weight h to weight w at cost rate c per side."""
    d = 1.0 if w > h else (-1.0 if w < h else 0.0)
    return (1.0 + c * d * h) / (1.0 + c * d * w)


@njit(cache=True)
def _sign(x: float) -> float:
    return 1.0 if x > 0 else (-1.0 if x < 0 else 0.0)


@njit(cache=True)
def _book_trade(s, trades, k, trade):
    """Add a trade (run, entry bar, exit bar, entry price, exit price, size, pnl, entry notional,
    is_open) to the run's sums ``s``, and as row ``k`` of ``trades`` while there is room; returns k + 1."""
    pnl, notional = trade[6], trade[7]
    ret = pnl / notional if notional > 0.0 else 0.0
    s[_N_TRADES] += 1.0
    s[_WINS] += pnl > 0.0
    s[_GAINS] += max(pnl, 0.0)
    s[_LOSSES] -= min(pnl, 0.0)
    s[_SUM_TRADE_RET] += ret
    if k < trades.shape[0]:
        row = trades[k]
        row[0], row[1], row[2], row[3], row[4], row[5] = trade[0], trade[1], trade[2], trade[3], trade[4], trade[5]
        row[6], row[7], row[8] = pnl, ret, trade[8]
    return k + 1


@njit(cache=True)
def _run(
    j, open_, high, low, close, target, on_close, lower, mult, c, stop, e0, sums, equity, position, units, trades, k
):
    """Run ``target`` (one row of bars) as run ``j``; writes ``sums[j]``, the rows of ``equity`` and of
    ``position`` and ``units`` when they have the bars' length, and trades from row ``k`` while
    ``trades`` has room. Returns ``k`` plus the run's trades."""
    n = close.size
    record_equity, record_position = equity.shape[1] == n, position.shape[1] == n
    cash, held = e0, 0.0  # equity = cash + held units * price
    w_held = 0.0  # weight set by the last fill (0 after a stop)
    w_signal = 0.0  # executed weight the target asked for at the last bar (before stops)
    latch = 0.0  # side of a trade cut by its stop: flat while the signal keeps that side
    entry_bar, entry_price, entry_size, entry_closed, entry_notional = 0, 0.0, 0.0, 0.0, 0.0
    prev_equity, peak, mdd, ruined = e0, 0.0, 0.0, False  # peak: the running max from bar 0
    sum_r = sum_r2 = sum_down2 = 0.0
    held_bars = 0
    has_stop = stop > 0.0
    for t in range(n):
        src = t if on_close else t - 1  # the bar whose target this bar's fill executes
        signal = min(max(target[src], lower), 1.0) * mult if src >= 0 else 0.0
        events = 2 if signal != w_signal or has_stop else 0  # else only the mark can happen
        filled = False
        for event in range(events):  # next_open: the fill, then the stop; close: the stop, then the fill
            if (event == 0) != on_close:  # the fill of the signal
                if signal == w_signal:
                    continue
                w_signal = w = signal
                if latch != 0.0:
                    if _sign(w) == latch:
                        continue  # still the side that was stopped out: stay flat
                    latch = 0.0
                p = close[t] if on_close else open_[t]
            else:  # the stop
                if w_held == 0.0 or not has_stop:
                    continue
                side = _sign(w_held)
                level = entry_price * (1.0 - side * stop)
                if side > 0 and low[t] <= level:
                    p = min(open_[t], level)
                elif side < 0 and high[t] >= level:
                    p = max(open_[t], level)
                else:
                    continue
                w = 0.0
                latch = side
            # the fill: from the drifted weight h to w at price p
            before = max(cash + held * p, 0.0)
            h = held * p / before if before > 0.0 else 0.0
            after = before * fill_factor(h, w, c)
            closed = before * (1.0 - c * abs(h))  # equity once the previous position is closed
            old_side, new_side = _sign(w_held), _sign(w)
            if old_side != 0.0 and new_side != old_side:  # a trade ends
                trade = (j, entry_bar, t, entry_price, p, entry_size, closed - entry_closed, entry_notional, 0.0)
                k = _book_trade(sums[j], trades, k, trade)
            held = w * after / p
            cash = after - held * p
            if new_side != 0.0 and new_side != old_side:  # a trade starts
                entry_bar, entry_price, entry_size = t, p, held
                entry_closed, entry_notional = closed, abs(w) * after
            w_held = w
            filled = True
        # the mark to close; flat, with no fill on the bar, nothing moves (r = 0, the same peak)
        if w_held != 0.0 or filled or t == 0:
            e = cash + held * close[t]
            if e <= 0.0:
                ruined = True
            if ruined:
                e = 0.0
            if t > 0:
                r = e / prev_equity - 1.0 if prev_equity > 0.0 else 0.0
                sum_r += r
                sum_r2 += r * r
                down = min(r, 0.0)  # branch-free: the sign of r is a coin flip
                sum_down2 += down * down
            prev_equity = e
            peak = max(peak, e)
            if e < (1.0 + mdd) * peak:  # a new low of e / peak - 1 (a comparison, no division, per bar)
                mdd = e / peak - 1.0
            held_bars += w_held != 0.0
        if record_equity:
            equity[j, t] = prev_equity
        if record_position:
            position[j, t], units[j, t] = w_held, held
    if w_held != 0.0:  # a trade still open: marked to the last equity
        pnl = prev_equity - entry_closed
        trade = (j, entry_bar, n - 1, entry_price, close[n - 1], entry_size, pnl, entry_notional, 1.0)
        k = _book_trade(sums[j], trades, k, trade)
    s = sums[j]
    s[_FINAL], s[_SUM_R], s[_SUM_R2], s[_SUM_DOWN2], s[_MDD], s[_HELD] = (
        prev_equity, sum_r, sum_r2, sum_down2, mdd, held_bars
    )  # fmt: skip
    return k


@njit(cache=True)
def run_targets(
    open_, high, low, close, targets, on_close, lower, mult, cost, stop, e0, sums, equity, position, units, trades
):
    """Every row of ``targets`` (runs x bars) as one run, with per-run ``lower``, ``mult``, ``cost``
    and ``stop`` (NaN: none). Returns the number of trades (recorded while ``trades`` has room)."""
    k = 0
    for j in range(targets.shape[0]):
        k = _run(
            j, open_, high, low, close, targets[j], on_close, lower[j], mult[j], cost[j], stop[j], e0,
            sums, equity, position, units, trades, k,
        )  # fmt: skip
    return k


@njit(cache=True)
def sma_signal(fast, slow, rule, out):
    """Targets of two SMA rows into ``out``: ``SMA_ABOVE`` the sign of fast - slow (0 in warm-up),
    ``SMA_CROSS`` +1 from a crossing above to the next crossing below, -1 from a crossing below, 0
    before the first; a crossing is strict on both bars (``prev < 0 < now``), so a tie is none."""
    state, prev = 0.0, math.nan
    for t in range(out.size):
        d = fast[t] - slow[t]
        if rule == SMA_ABOVE:
            state = _sign(d) if d == d else 0.0
        elif prev < 0.0 < d:
            state = 1.0
        elif prev > 0.0 > d:
            state = -1.0
        out[t] = state
        prev = d


@njit(cache=True)
def run_sma_pairs(
    open_, high, low, close, smas, fast, slow, rule, on_close, lower, mult, cost, stop, e0,
    sums, equity, position, units, trades,
):  # fmt: skip
    """``run_targets`` for the pairs ``(smas[fast[j]], smas[slow[j]])`` (SMA rows: windows x bars),
    each run's targets made by ``sma_signal`` just before it runs."""
    target = np.empty(close.size)
    k = 0
    for j in range(fast.size):
        sma_signal(smas[fast[j]], smas[slow[j]], rule, target)
        k = _run(
            j, open_, high, low, close, target, on_close, lower[j], mult[j], cost[j], stop[j], e0,
            sums, equity, position, units, trades, k,
        )  # fmt: skip
    return k


@dataclass(frozen=True)
class RunSpec:
    """What the kernel needs besides the prices and targets: the fill, cash and per-run settings."""

    on_close: bool
    initial_cash: float
    lower: np.ndarray  # -1.0 (shorts allowed) or 0.0, per run
    mult: np.ndarray  # size multiplier per run
    cost: np.ndarray  # fee + slippage per side, per run
    stop: np.ndarray  # stop loss fraction per run, NaN for none


@dataclass(frozen=True)
class KernelResult:
    """Per-run sums (runs x ``SUMS``) and, when recorded, per-bar rows (runs x bars) and trades."""

    sums: np.ndarray
    equity: np.ndarray | None = None
    position: np.ndarray | None = None
    units: np.ndarray | None = None
    trades: np.ndarray | None = None  # rows of ``TRADE_FIELDS``


def _frozen(a: np.ndarray) -> np.ndarray:
    """A read-only C-contiguous float64 view: every input has one type, so one compiled signature."""
    out = np.ascontiguousarray(a, dtype=np.float64).view()
    out.flags.writeable = False
    return out


def _outputs(runs: int, bars: int, record_equity: bool, record_trades: bool) -> tuple[np.ndarray, ...]:
    """sums, equity, position, units, trades; a recorded one has the bars' length (or a row per bar)."""
    eq_cols = bars if record_equity or record_trades else 0
    pos_cols = bars if record_trades else 0
    return (
        np.zeros((runs, len(SUMS))),
        np.zeros((runs, eq_cols)),
        np.zeros((runs, pos_cols)),
        np.zeros((runs, pos_cols)),
        np.zeros((runs * pos_cols, len(TRADE_FIELDS))),
    )


def _result(out: tuple[np.ndarray, ...], count: int) -> KernelResult:
    sums, equity, position, units, trades = out
    if not position.shape[1]:
        return KernelResult(sums, equity if equity.shape[1] else None)
    if count > trades.shape[0]:
        raise RuntimeError(f"the kernel found {count} trades, room was made for {trades.shape[0]}")
    return KernelResult(sums, equity, position, units, trades[:count])


def _settings(spec: RunSpec) -> tuple[object, ...]:
    """on_close, lower, mult, cost, stop, initial_cash, as the kernel takes them."""
    per_run = (np.ascontiguousarray(a, dtype=np.float64) for a in (spec.lower, spec.mult, spec.cost, spec.stop))
    return (bool(spec.on_close), *per_run, float(spec.initial_cash))


def simulate(
    ohlc: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    targets: np.ndarray,
    spec: RunSpec,
    *,
    record_equity: bool = False,
    record_trades: bool = False,
) -> KernelResult:
    """Run each row of ``targets`` (runs x bars, validated) on ``ohlc`` (open, high, low, close).

    ``record_trades`` also records position, units and the trade list (for few runs: room is made
    for a trade per bar and run)."""
    runs, bars = targets.shape
    out = _outputs(runs, bars, record_equity, record_trades)
    o, h, lo, c = map(_frozen, ohlc)
    on_close, lower, mult, cost, stop, e0 = _settings(spec)
    sums, equity, position, units, trades = out
    count = run_targets(
        o, h, lo, c, _frozen(targets), on_close, lower, mult, cost, stop, e0, sums, equity, position, units, trades
    )
    return _result(out, count)


def simulate_sma_pairs(
    ohlc: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    smas: np.ndarray,
    fast: np.ndarray,
    slow: np.ndarray,
    rule: int,
    spec: RunSpec,
    *,
    record_equity: bool = False,
) -> KernelResult:
    """``simulate`` of the SMA pairs ``(smas[fast[j]], smas[slow[j]])`` (``smas``: windows x bars)."""
    out = _outputs(fast.size, smas.shape[1], record_equity, False)
    o, h, lo, c = map(_frozen, ohlc)
    on_close, lower, mult, cost, stop, e0 = _settings(spec)
    sums, equity, position, units, trades = out
    run_sma_pairs(
        o, h, lo, c, _frozen(smas), fast.astype(np.int64), slow.astype(np.int64), int(rule),
        on_close, lower, mult, cost, stop, e0, sums, equity, position, units, trades,
    )  # fmt: skip
    return _result(out, 0)


def compiled_from_cache() -> bool | None:
    """Whether this process loaded the kernel from numba's cache (None: not compiled yet)."""
    stats = [f.stats for f in (run_targets, run_sma_pairs)]
    hits = sum(sum(s.cache_hits.values()) for s in stats)
    misses = sum(sum(s.cache_misses.values()) for s in stats)
    if not hits and not misses:
        return None
    return hits > 0 and not misses


def metrics_from_sums(
    sums: np.ndarray,
    initial_cash: float,
    bars: int,
    bars_per_year: float,
    *,
    years: float | None = None,
    periods: int | None = None,
) -> dict[str, np.ndarray]:
    """``metrics.METRIC_NAMES`` per run from the kernel's sums, by the formulas of ``metrics``.

    ``periods`` (>= bars - 1): the calendar bar intervals spanned; the missing ones are zero returns."""
    s = np.asarray(sums, dtype=float).reshape(-1, len(SUMS)).T
    m = bars - 1 if periods is None else max(int(periods), bars - 1)
    final = s[_FINAL]
    years = (bars - 1) / bars_per_year if years is None else years
    if years >= MIN_YEARS_ANNUALIZED:
        growth = np.maximum(final / initial_cash, 1e-300) ** (1.0 / years) - 1.0
        cagr = np.where(final > 0, growth, -1.0)
    else:
        cagr = np.full(final.shape, np.nan)
    mean = s[_SUM_R] / m
    std = np.sqrt(np.maximum((s[_SUM_R2] - m * mean**2) / (m - 1), 0.0))
    downside = np.sqrt(s[_SUM_DOWN2] / m)
    mdd, count = s[_MDD], s[_N_TRADES]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = {
            "total_return": final / initial_cash - 1.0,
            "cagr": cagr,
            "sharpe": np.where(std > 0, mean / std * np.sqrt(bars_per_year), np.nan),
            "sortino": np.where(downside > 0, mean / downside * np.sqrt(bars_per_year), np.nan),
            "calmar": np.where(mdd < 0, cagr / np.abs(mdd), np.nan),
            "max_drawdown": mdd,
            "win_rate": np.where(count > 0, s[_WINS] / count, np.nan),
            "profit_factor": np.where(s[_LOSSES] > 0, s[_GAINS] / s[_LOSSES], np.where(s[_GAINS] > 0, np.inf, np.nan)),
            "exposure": s[_HELD] / bars,
            "n_trades": count,
            "avg_trade": np.where(count > 0, s[_SUM_TRADE_RET] / count, np.nan),
            "final_equity": final,
        }
    return {name: np.asarray(out[name], dtype=float) for name in METRIC_NAMES}
