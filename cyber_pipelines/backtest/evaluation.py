"""One pair's strategies, walk-forward and out of sample, against references that can lose.

Every strategy is fitted on ``train_bars`` past rows and traded on the next ``test_bars``, rolled over
the table (``strategies.walk_forward``); the stitched out-of-sample (OOS) rows are the headline. The
in-sample figure (fitted on the whole table and traded on it) is kept beside it, labelled, to show
what tuning in sample would have claimed. On the same OOS bars each strategy is tested against:

- cash (H0: mean return <= 0),
- buy-and-hold of the pair (Sharpe difference),
- a random-entry null with the same trades (timing only, a Monte Carlo rank),
- the TA-only baseline ``rule_of_three`` (Sharpe difference: the moat signal's increment over TA),

each with its p-value and interval from one studentized statistic (``significance``). A strategy
is *significant* only when it beats both cash and the random null: an intersection-union test
(Berger 1982) whose p-value, the *verdict p*, is the larger of the two raw p-values. Family-wise
control (``adjust_family``): Holm over the verdicts of every strategy reported together, and, for
each reference, Holm over every strategy's test against it. Beating ``rule_of_three`` is reported
as the moat signal's increment over TA.

Each strategy's OOS report also has its gross return (the same fills without costs), cost drag,
turnover (capital traded per year, one side) and average holding time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import polars as pl

from cyber_pipelines.backtest.engine import (
    BacktestConfig,
    BacktestResult,
    calendar_bars_per_year,
    infer_calendar,
    run_backtest,
)
from cyber_pipelines.backtest.references import N_DRAWS, NO_STOPS, buy_and_hold_targets, random_entry_null, rank_test
from cyber_pipelines.backtest.significance import (
    ALPHA,
    N_BOOT,
    ClaimTest,
    adjust,
    mean_return_test,
    sharpe_difference_test,
)
from cyber_pipelines.backtest.strategies import (
    AnalogKnn,
    CrossMoat,
    LoraForecast,
    MoatOnly,
    RuleOfThree,
    SmaGrid,
    Strategy,
    walk_forward,
)
from cyber_pipelines.multiple_testing import holm

BASELINE = "rule_of_three"
BUY_AND_HOLD = "buy_and_hold"
REFERENCES = ("cash", BUY_AND_HOLD, "random_entry", BASELINE)
SIGNIFICANT_AGAINST = ("cash", "random_entry")  # a strategy is significant only if it beats both
HOURS_PER_DAY = 24
TRAIN_DAYS, TEST_DAYS = 90, 30  # the default walk-forward: 90 days of training before each 30 out of sample


def default_strategies(
    config: BacktestConfig, min_hold_bars: int = 1, analog: bool = False, lora: bool = False
) -> list[Strategy]:
    """The TA-only baseline ``rule_of_three``, ``cross_moat`` (TA + activity, fitted walk-forward),
    ``moat_only`` (the activity team alone), ``sma_grid`` (the SMA pair of the best training Sharpe,
    with ``config``'s costs), with ``analog`` ``analog_knn`` (the pattern-memory forecast) and with
    ``lora`` ``lora`` (the serving forecaster's expected return)."""
    strategies: list[Strategy] = [
        RuleOfThree(min_hold_bars=min_hold_bars),
        CrossMoat(min_hold_bars=min_hold_bars),
        MoatOnly(min_hold_bars=min_hold_bars),
        SmaGrid(config=config),
    ]
    edge = 2 * config.cost_rate  # a forecast votes only where it pays its round trip
    analog_knn = AnalogKnn(min_hold_bars=min_hold_bars, min_edge=edge)
    forecaster = LoraForecast(min_hold_bars=min_hold_bars, min_edge=edge)
    return strategies + ([analog_knn] if analog else []) + ([forecaster] if lora else [])


@dataclass(frozen=True)
class StrategyReport:
    """One strategy on one pair: fitted parameters per window, in-sample and OOS figures, its tests."""

    name: str
    windows: list[dict[str, Any]]  # train/test spans and the parameters fitted on each train span
    in_sample: dict[str, float]  # fitted on the whole table and traded on it (optimistic, labelled)
    oos: dict[str, float]  # the headline: METRIC_NAMES + gross_return, cost_drag, turnover, hold time
    tests: list[ClaimTest]  # one per reference (not against itself)
    random_null_sharpes: list[float] = field(default_factory=list)  # the random-entry draws
    verdict_p_adjusted: float = math.nan  # ``verdict_p`` after Holm over the verdicts (``adjust_family``)
    verdict_family: int = 0  # how many verdicts that family holds

    def test(self, reference: str) -> ClaimTest | None:
        return next((t for t in self.tests if t.reference == reference), None)

    @property
    def verdict_p(self) -> float:
        """The intersection-union p of "beats cash and the random null": the larger of the two raw p."""
        found = [self.test(r) for r in SIGNIFICANT_AGAINST]
        if any(t is None or not math.isfinite(t.p_value) for t in found):
            return math.nan
        return max(t.p_value for t in found if t is not None)

    def significant(self, alpha: float = ALPHA) -> bool:
        """Beats cash and the random null: the verdict p after the family's adjustment is below ``alpha``
        (never before ``adjust_family`` has set it)."""
        return self.verdict_p_adjusted < alpha

    def verdict(self, alpha: float = ALPHA) -> str:
        p = f"verdict p {self.verdict_p_adjusted:.3f}, Holm over {self.verdict_family} verdicts"
        if self.significant(alpha):
            base = self.test(BASELINE)
            extra = " and rule_of_three" if base is not None and base.significant(alpha) else ""
            return f"significant: beats cash and the random null{extra} ({p} < {alpha:g})"
        if self.oos.get("total_return", math.nan) <= 0:
            return "not significant: loses money out of sample"
        return f"not significant: does not beat both cash and the random null ({p} >= {alpha:g})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "windows": self.windows,
            "in_sample": self.in_sample,
            "oos": self.oos,
            "tests": [t.to_dict() for t in self.tests],
            "random_null_sharpes": self.random_null_sharpes,
            "verdict_p": self.verdict_p,
            "verdict_p_adjusted": self.verdict_p_adjusted,
            "verdict_family": self.verdict_family,
            "significant": self.significant(),
            "verdict": self.verdict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StrategyReport:
        def numbers(values: Mapping[str, Any]) -> dict[str, float]:
            return {k: math.nan if v is None else float(v) for k, v in values.items()}

        return cls(
            name=str(data["name"]),
            windows=list(data["windows"]),
            in_sample=numbers(data["in_sample"]),
            oos=numbers(data["oos"]),
            tests=[ClaimTest.from_dict(t) for t in data["tests"]],
            random_null_sharpes=[float(v) for v in data.get("random_null_sharpes", [])],
            verdict_p_adjusted=numbers({"p": data.get("verdict_p_adjusted")})["p"],
            verdict_family=int(data.get("verdict_family") or 0),
        )


def adjust_family(reports: Sequence[StrategyReport], alpha: float = ALPHA) -> list[StrategyReport]:
    """The reports with family-wise adjusted p-values, all of them being reported together.

    For each reference, Holm over every report's test against it (``significance.adjust``: raw and
    adjusted p side by side); and Holm over the reports' ``verdict_p``, which decides ``significant``.
    Holm is monotone, so a significant verdict also has both of its tests adjusted below ``alpha``."""
    tests = [list(rep.tests) for rep in reports]
    for reference in dict.fromkeys(t.reference for rep in reports for t in rep.tests):
        where = [(i, j) for i, rep in enumerate(reports) for j, t in enumerate(rep.tests) if t.reference == reference]
        for (i, j), adjusted in zip(where, adjust([reports[i].tests[j] for i, j in where], alpha), strict=True):
            tests[i][j] = adjusted
    verdict_p = [rep.verdict_p for rep in reports]
    family = sum(1 for p in verdict_p if math.isfinite(p))
    return [
        replace(rep, tests=mine, verdict_p_adjusted=float(p), verdict_family=family)
        for rep, mine, p in zip(reports, tests, holm(verdict_p), strict=True)
    ]


def reference_tests(
    name: str,
    returns: np.ndarray,
    buy_and_hold: np.ndarray,
    baseline: np.ndarray,
    random_entry: ClaimTest,
    bars_per_year: float,
    **boot: Any,
) -> list[ClaimTest]:
    """The strategy's tests in ``REFERENCES`` order (none against itself); ``boot``: the bootstrap's
    ``n_boot``, ``seed``, ``alpha`` and ``min_block``."""
    tests = [
        mean_return_test(returns, bars_per_year, **boot),
        sharpe_difference_test(returns, buy_and_hold, bars_per_year, reference=BUY_AND_HOLD, **boot),
        random_entry,
    ]
    if name != BASELINE:
        tests.append(sharpe_difference_test(returns, baseline, bars_per_year, reference=BASELINE, **boot))
    return tests


def targets_from_positions(position: np.ndarray, config: BacktestConfig) -> np.ndarray:
    """The target positions that the engine executed as ``position`` (held after each bar's fills)."""
    w = np.asarray(position, dtype=float) / config.size_multiplier
    if config.fill == "next_open":  # the target decided at bar t is held from bar t + 1
        return np.concatenate([w[1:], w[-1:]]) if w.size else w
    return w


def cost_and_turnover(result: BacktestResult, features: pl.DataFrame, targets: np.ndarray) -> dict[str, float]:
    """Gross return (same fills, no costs), cost drag, turnover per year and average holding time."""
    free = replace(result.config, fee=0.0, slippage=0.0)
    gross = run_backtest(features, targets, free, name=result.name).metrics["total_return"]
    position = result.equity["position"].to_numpy()
    traded = float(np.abs(np.diff(position, prepend=0.0)).sum())
    years = max(position.size - 1, 1) / result.bars_per_year
    trades = result.metrics["n_trades"]
    held_bars = float(np.count_nonzero(position))
    hours_per_bar = 24 * 365.25 / result.bars_per_year
    return {
        "gross_return": float(gross),
        "cost_drag": float(gross - result.metrics["total_return"]),
        "turnover_per_year": traded / years,
        "avg_hold_hours": held_bars / trades * hours_per_bar if trades else math.nan,
    }


@dataclass(frozen=True)
class PairEvaluation:
    """Every strategy of one pair, out of sample, with the references' figures and equity curves."""

    pair: str
    config: BacktestConfig
    bars_per_year: float
    train_bars: int
    test_bars: int
    strategies: dict[str, StrategyReport]
    buy_and_hold: dict[str, float]  # OOS metrics of the reference
    curves: pl.DataFrame  # timestamp + OOS equity per strategy + buy_and_hold
    trades: pl.DataFrame  # OOS trades with a ``strategy`` column

    @property
    def names(self) -> list[str]:
        return list(self.strategies)

    def all_tests(self) -> list[tuple[str, ClaimTest]]:
        return [(name, t) for name, r in self.strategies.items() for t in r.tests]


def evaluate_pair(
    features: pl.DataFrame,
    config: BacktestConfig,
    strategies: Sequence[Strategy],
    *,
    pair: str = "",
    train_bars: int,
    test_bars: int,
    n_boot: int = N_BOOT,
    draws: int = N_DRAWS,
    seed: int = 0,
    alpha: float = ALPHA,
) -> PairEvaluation:
    """Walk-forward backtests of ``strategies`` on one pair and their tests (see the module docstring).

    ``strategies`` must include the baseline ``rule_of_three`` (its OOS returns are the TA reference)."""
    names = [s.name for s in strategies]
    label = pair or "features"
    if len(set(names)) != len(names) or {"timestamp", BUY_AND_HOLD} & set(names):
        raise ValueError(f"strategy names must be unique and not 'timestamp' or {BUY_AND_HOLD!r}, got {names}")
    if BASELINE not in names:
        raise ValueError(f"the strategies must include the baseline {BASELINE!r}, got {names}")
    if features.height < train_bars + max(test_bars, 30):
        raise ValueError(
            f"{label}: {features.height} feature rows; walk-forward needs more than train {train_bars} + "
            f"{max(test_bars, 30)} bars"
        )
    ts = features["timestamp"]
    bpy = config.bars_per_year or calendar_bars_per_year(ts, config.calendar or infer_calendar(ts))
    runs = {s.name: walk_forward(s, features, train_bars, test_bars, config) for s in strategies}
    oos_rows = features.slice(train_bars)
    hold = run_backtest(oos_rows, buy_and_hold_targets(oos_rows.height), config, name=BUY_AND_HOLD)
    open_ = oos_rows["open"].cast(pl.Float64).to_numpy()
    close = oos_rows["close"].cast(pl.Float64).to_numpy()
    min_block = max(1, round(bpy / 365.25))  # a day of bars: resamples keep the intraday profile
    base_returns = runs[BASELINE].oos.returns
    reports: dict[str, StrategyReport] = {}
    for number, (name, run) in enumerate(runs.items()):
        oos = run.oos
        targets = targets_from_positions(oos.equity["position"].to_numpy(), config)
        r = oos.returns
        null = random_entry_null(open_, close, targets, config, bpy, draws=draws, seed=seed + number)
        note = NO_STOPS if config.stop_loss is not None else ""
        random = rank_test(oos.metrics["sharpe"], null, r.size, alpha=alpha, note=note)
        boot = {"n_boot": n_boot, "seed": seed + number, "alpha": alpha, "min_block": min_block}
        tests = reference_tests(name, r, hold.returns, base_returns, random, bpy, **boot)
        reports[name] = StrategyReport(
            name=name,
            windows=run.windows,
            in_sample=dict(run.in_sample.metrics),
            oos={**oos.metrics, **cost_and_turnover(oos, oos_rows, targets)},
            tests=tests,
            random_null_sharpes=[float(v) for v in null],
        )
    reports = dict(zip(reports, adjust_family(list(reports.values()), alpha), strict=True))
    curves = pl.DataFrame({"timestamp": oos_rows["timestamp"]}).with_columns(
        *(pl.Series(name, run.oos.equity["equity"]) for name, run in runs.items()),
        pl.Series(BUY_AND_HOLD, hold.equity["equity"]),
    )
    trades = pl.concat([run.oos.trades.with_columns(strategy=pl.lit(name)) for name, run in runs.items()])
    return PairEvaluation(
        pair=pair,
        config=config,
        bars_per_year=bpy,
        train_bars=train_bars,
        test_bars=test_bars,
        strategies=reports,
        buy_and_hold=dict(hold.metrics),
        curves=curves,
        trades=trades,
    )
