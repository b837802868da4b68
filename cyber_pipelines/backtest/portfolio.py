"""An equal-weight portfolio of the pairs per strategy, as independent sub-accounts, and one family of tests.

Each pair is a sub-account that starts with ``1 / N`` of the capital on the first timestamp every pair
has out of sample and is never rebalanced, so the portfolio pays exactly its pairs' trading costs and
nothing is hidden: its equity is the mean of the pairs' equity curves, each normalized to 1 there.
Buy-and-hold is built the same way from the pairs' buy-and-hold curves.

The portfolio's tests: cash (mean return), buy-and-hold and ``rule_of_three`` (Sharpe difference) on
the portfolio's per-bar returns, and the random-entry null pooled over the pairs (the mean of the
pairs' OOS Sharpe ratios against the mean of their random draws, draw by draw).

Family-wise control over everything reported together, every strategy on every pair and on the
portfolio (``evaluation.adjust_family``): Holm over their verdicts, and per reference Holm over their
tests against it, raw and adjusted p side by side.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import polars as pl

from cyber_pipelines.backtest.evaluation import (
    BASELINE,
    BUY_AND_HOLD,
    PairEvaluation,
    StrategyReport,
    adjust_family,
    reference_tests,
)
from cyber_pipelines.backtest.metrics import METRIC_NAMES, bar_returns, equity_metrics, trade_metrics
from cyber_pipelines.backtest.references import rank_test
from cyber_pipelines.backtest.significance import ALPHA, N_BOOT

POOLED = "pooled over the pairs: the mean pair Sharpe against the mean of their draws"
PORTFOLIO_KIND = "independent sub-accounts, equal capital, never rebalanced (no rebalancing cost)"


@dataclass(frozen=True)
class PortfolioEvaluation:
    """The portfolio per strategy, its tests, and every pair's tests adjusted in the same family."""

    pairs: list[str]
    config_label: str
    bars_per_year: float
    strategies: dict[str, StrategyReport]  # the portfolio's figures and tests per strategy
    buy_and_hold: dict[str, float]
    pair_reports: dict[str, dict[str, StrategyReport]]  # pair -> strategy -> report (family-adjusted)
    curves: pl.DataFrame  # timestamp + portfolio equity per strategy + buy_and_hold

    @property
    def names(self) -> list[str]:
        return list(self.strategies)


def _mean_of_known(values: list[float]) -> float:
    """The mean of the finite values; NaN when none is (e.g. the holding time of a strategy that never traded)."""
    known = [v for v in values if math.isfinite(v)]
    return float(np.mean(known)) if known else math.nan


def _check_compatible(pairs: Mapping[str, PairEvaluation]) -> PairEvaluation:
    if not pairs:
        raise ValueError("no pair backtests to compare")
    first_key, first = next(iter(pairs.items()))
    for key, result in pairs.items():
        if result.names != first.names:
            raise ValueError(
                f"{key} was backtested with strategies {result.names}, {first_key} with {first.names}; "
                "rerun them with the same set"
            )
        if result.config != first.config or (result.train_bars, result.test_bars) != (
            first.train_bars,
            first.test_bars,
        ):
            raise ValueError(
                f"{key} and {first_key} were backtested with different settings ({result.config}, walk-forward "
                f"{result.train_bars}/{result.test_bars} vs {first.config}, {first.train_bars}/{first.test_bars}); "
                "rerun them with the same costs, fills and windows"
            )
    return first


def _sub_accounts(pairs: Mapping[str, PairEvaluation], column: str, common: pl.DataFrame) -> np.ndarray:
    """Mean of the pairs' ``column`` equity, each normalized to 1 on the first common timestamp."""
    curves = [
        common.join(p.curves.select("timestamp", pl.col(column).alias("e")), on="timestamp", how="left")["e"].to_numpy()
        for p in pairs.values()
    ]
    matrix = np.column_stack([c / c[0] if c[0] > 0 else np.zeros_like(c) for c in curves])
    out: np.ndarray = matrix.mean(axis=1)
    return out


def evaluate_portfolio(
    pairs: Mapping[str, PairEvaluation], *, n_boot: int = N_BOOT, seed: int = 0, alpha: float = ALPHA
) -> PortfolioEvaluation:
    """The portfolio per strategy and the whole family's adjusted tests (see the module docstring)."""
    first = _check_compatible(pairs)
    common: pl.DataFrame | None = None
    for result in pairs.values():
        stamps = result.curves.select("timestamp")
        common = stamps if common is None else common.join(stamps, on="timestamp", how="inner")
    assert common is not None
    common = common.sort("timestamp")
    if common.height < 30:
        raise ValueError(f"the pairs share {common.height} out-of-sample timestamps; need at least 30")
    bpy = first.bars_per_year
    e0 = first.config.initial_cash
    min_block = max(1, round(bpy / 365.25))
    boot: dict[str, Any] = {"n_boot": n_boot, "alpha": alpha, "min_block": min_block}
    equity = {name: e0 * _sub_accounts(pairs, name, common) for name in [*first.names, BUY_AND_HOLD]}
    returns = {name: bar_returns(curve) for name, curve in equity.items()}
    ts = common["timestamp"]
    all_trades = pl.concat([p.trades for p in pairs.values()]).filter(pl.col("entry_time").is_between(ts[0], ts[-1]))

    def metrics_of(name: str) -> dict[str, float]:
        curve = equity[name]
        stats = {k: float(v[0]) for k, v in equity_metrics(curve[:, None], np.zeros((curve.size, 1)), e0, bpy).items()}
        if name == BUY_AND_HOLD:
            stats.update(win_rate=np.nan, profit_factor=np.nan, n_trades=float(len(pairs)), avg_trade=np.nan)
            stats["exposure"] = 1.0
        else:
            trades = all_trades.filter(pl.col("strategy") == name)
            pnl = trades["pnl"].to_numpy()
            per_trade = trade_metrics(pnl, trades["return"].to_numpy(), np.zeros(pnl.size, dtype=np.int64), 1)
            stats.update({k: float(v[0]) for k, v in per_trade.items()})
            stats["exposure"] = float(np.mean([p.strategies[name].oos["exposure"] for p in pairs.values()]))
        out = {k: stats[k] for k in METRIC_NAMES}
        if name != BUY_AND_HOLD:
            for extra in ("gross_return", "cost_drag", "turnover_per_year", "avg_hold_hours"):
                out[extra] = _mean_of_known([p.strategies[name].oos[extra] for p in pairs.values()])
        return out

    portfolio: dict[str, StrategyReport] = {}
    for number, name in enumerate(first.names):
        r = returns[name]
        nulls = [np.asarray(p.strategies[name].random_null_sharpes) for p in pairs.values()]
        draws = max((n.size for n in nulls), default=0)
        if draws:
            stacked = np.column_stack([n if n.size == draws else np.zeros(draws) for n in nulls])
            observed = float(np.mean([np.nan_to_num(p.strategies[name].oos["sharpe"]) for p in pairs.values()]))
            random = replace(rank_test(observed, stacked.mean(axis=1), r.size, alpha=alpha), note=POOLED)
        else:
            random = rank_test(0.0, np.zeros(0), r.size, alpha=alpha)
        options = {**boot, "seed": seed + number}
        tests = reference_tests(name, r, returns[BUY_AND_HOLD], returns[BASELINE], random, bpy, **options)
        # in sample: the pairs' mean (each fitted on its whole table), labelled as such in the report
        in_sample = {
            "total_return": _mean_of_known([p.strategies[name].in_sample["total_return"] for p in pairs.values()])
        }
        portfolio[name] = StrategyReport(name=name, windows=[], in_sample=in_sample, oos=metrics_of(name), tests=tests)
    # One family: every strategy on every pair and on the portfolio.
    keyed = [(pair, name, rep) for pair, p in pairs.items() for name, rep in p.strategies.items()] + [
        ("portfolio", name, rep) for name, rep in portfolio.items()
    ]
    adjusted = {
        (unit, name): rep
        for (unit, name, _), rep in zip(keyed, adjust_family([rep for _, _, rep in keyed], alpha), strict=True)
    }
    pair_reports = {pair: {name: adjusted[(pair, name)] for name in p.strategies} for pair, p in pairs.items()}
    portfolio = {name: adjusted[("portfolio", name)] for name in portfolio}
    curves = pl.DataFrame({"timestamp": ts}).with_columns(pl.Series(name, curve) for name, curve in equity.items())
    config = first.config
    label = f"fee {config.fee:.2%} + slippage {config.slippage:.2%} per side, fill {config.fill}"
    return PortfolioEvaluation(
        pairs=list(pairs),
        config_label=label,
        bars_per_year=bpy,
        strategies=portfolio,
        buy_and_hold=metrics_of(BUY_AND_HOLD),
        pair_reports=pair_reports,
        curves=curves,
    )
