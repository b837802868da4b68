"""Size and power of the backtest verdicts across seeds, out of sample, on the realistic synthetic market.

Run: ``.venv/bin/python benchmarks/research_power.py`` (the demo size: its 3 pairs x 1095 days, slow) or
smaller, e.g. ``--seeds 10 --pairs ETH/USD --days 365``. For every effect in ``--effects`` and every
seed, each pair's feature table is built in process from the synthetic candles, GitHub commits and
moat records exactly as the pipeline builds it (``point_in_time_activity``, ``build_feature_table``),
and ``evaluate_pair`` fits every default strategy walk-forward (train ``--train-days``, test
``--test-days``, rolled; ``min_hold_hours`` as the backtest asset) and tests it out of sample against
cash, buy-and-hold, the random-entry null and ``rule_of_three`` (the pair's family: Holm over its
strategies' verdicts, and per reference). With more than one pair, ``evaluate_portfolio`` adds the
portfolio and adjusts every pair's strategies and the portfolio's as one family, which is what the
demo's verdict lines report.

Prints one JSON line per (effect, strategy, reference) cell: the share of the units (seed x pair for
``level: pair``, seeds for ``level: portfolio``) in which the test rejects at adjusted p < alpha, and
one line per (effect, strategy) with the share called *significant* (beats cash and the random null
after the adjustment), the median OOS net and gross return. With effect 0 these shares are the size
(at most alpha is honest); with the planted effect, the power. A lead-lag line per effect gives the
share of pair-seeds in which ``lead_lag_for_pair`` finds a lead (adjusted p <= alpha) and how often
the best lag is within 3 hours of the planted one. The last line is a summary with the wall time.

``--lag`` and ``--sign`` plant another lag and the opposite sign (the strategies know neither: they
estimate them on each training window). Each p-value has a floor of ``1 / (resamples + 1)``; Holm
multiplies the smallest verdict p by the number of verdicts, so the summary line states the smallest
adjusted p the settings can reach (a size figure at a floor above alpha would be vacuous).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import polars as pl

from cyber_pipelines.backtest.engine import BacktestConfig
from cyber_pipelines.backtest.evaluation import (
    BASELINE,
    REFERENCES,
    TEST_DAYS,
    TRAIN_DAYS,
    PairEvaluation,
    StrategyReport,
    default_strategies,
    evaluate_pair,
)
from cyber_pipelines.backtest.portfolio import evaluate_portfolio
from cyber_pipelines.backtest.references import N_DRAWS
from cyber_pipelines.backtest.significance import ALPHA, N_BOOT
from cyber_pipelines.cli import DEMO_DAYS
from cyber_pipelines.config import load_repo_map, load_settings
from cyber_pipelines.features.cross_source import build_feature_table, repos_for_asset
from cyber_pipelines.features.leadlag import SeriesTooShort, lead_lag_for_pair
from cyber_pipelines.github.activity import build_activity, point_in_time_activity
from cyber_pipelines.github.schema import ACTIVITY_SCHEMA
from cyber_pipelines.keys import pair_base
from cyber_pipelines.synthetic.activity import simulate_commits, simulate_moat_records, simulate_repo_snapshot
from cyber_pipelines.synthetic.market import simulate_ohlcv

ORIGIN = date(2024, 1, 1)
HOURS_PER_DAY = 24
MIN_HOLD_HOURS = 6  # the backtest asset's default
LEADLAG_BOOT = 199
LAG_TOLERANCE_HOURS = 3


@dataclass(frozen=True)
class Market:
    """One pair's synthetic inputs and the feature table the pipeline would build from them."""

    pair: str
    candles: pl.DataFrame
    activity: pl.DataFrame  # point in time, the repos of the pair's base asset
    repos: list[str]
    features: pl.DataFrame


def synthetic_market(
    pair: str, days: int, *, seed: int, effect: float, lag: int = 6, sign: int = 1, origin: date = ORIGIN
) -> Market:
    """``days`` days of ``pair`` from ``origin`` on the synthetic sources (the config's other settings at
    their defaults), with the planted effect ``effect`` at ``lag`` hours and ``sign``."""
    end = origin + timedelta(days=days - 1)
    candles = simulate_ohlcv(
        pair, origin, end, seed=seed, effect_size=effect, lag_hours=lag, effect_sign=sign, origin=origin
    )
    base, repo_map = pair_base(pair), load_repo_map()
    repos = repos_for_asset(base, repo_map)
    day_list = [origin + timedelta(days=i) for i in range(days)]
    frames = [
        build_activity(
            repo,
            day,
            simulate_commits(repo, repo_map[repo], day, seed=seed, origin=origin, lag_hours=lag),
            *simulate_repo_snapshot(repo, day, seed=seed, origin=origin),
        )
        for repo in repos
        for day in day_list
    ]
    activity = point_in_time_activity(pl.concat([pl.DataFrame(schema=ACTIVITY_SCHEMA), *frames]))
    moat = pl.concat(simulate_moat_records([base], day, seed=seed, origin=origin) for day in day_list)
    features = build_feature_table(candles, activity, moat, base_asset=base, repos=repos)
    return Market(pair, candles, activity, repos, features)


def backtest_config() -> BacktestConfig:
    """The backtest asset's settings: default costs and fills on the 24/7 calendar."""
    return BacktestConfig(calendar="24/7")


def evaluate_market(
    market: Market, *, train_days: int, test_days: int, n_boot: int, draws: int, seed: int
) -> PairEvaluation:
    config = backtest_config()
    return evaluate_pair(
        market.features,
        config,
        default_strategies(config, min_hold_bars=MIN_HOLD_HOURS),
        pair=market.pair.replace("/", "-"),
        train_bars=train_days * HOURS_PER_DAY,
        test_bars=test_days * HOURS_PER_DAY,
        n_boot=n_boot,
        draws=draws,
        seed=seed,
    )


@dataclass(frozen=True)
class Verdict:
    """What one unit (a pair, or the portfolio, of one seed) said about one strategy."""

    effect: float
    level: str  # pair | portfolio
    seed: int
    pair: str
    strategy: str
    significant: bool
    rejects: dict[str, bool]  # reference -> adjusted p < alpha
    net_return: float
    gross_return: float


def verdicts_of(
    effect: float, level: str, seed: int, pair: str, reports: dict[str, StrategyReport], alpha: float
) -> list[Verdict]:
    return [
        Verdict(
            effect,
            level,
            seed,
            pair,
            name,
            report.significant(alpha),
            {t.reference: t.significant(alpha) for t in report.tests},
            float(report.oos["total_return"]),
            float(report.oos["gross_return"]),
        )
        for name, report in reports.items()
    ]


def family_floor(n_tests: int, n_boot: int, draws: int) -> float:
    """The smallest Holm-adjusted verdict p that a family of ``n_tests`` verdicts can reach: the larger
    raw floor of its two tests times the family size."""
    return min(1.0, n_tests / (min(n_boot, draws) + 1))


def run_seed(
    seed: int,
    effect: float,
    pairs: Sequence[str],
    *,
    days: int,
    lag: int,
    sign: int,
    train_days: int,
    test_days: int,
    n_boot: int,
    draws: int,
    alpha: float,
    leadlag: bool,
) -> tuple[list[Verdict], list[dict[str, Any]], int]:
    """Every pair (and the portfolio) of one seed: the verdicts, lead-lag rows and the family size."""
    results: dict[str, PairEvaluation] = {}
    leads: list[dict[str, Any]] = []
    verdicts: list[Verdict] = []
    for pair in pairs:
        market = synthetic_market(pair, days, seed=seed, effect=effect, lag=lag, sign=sign)
        result = evaluate_market(
            market, train_days=train_days, test_days=test_days, n_boot=n_boot, draws=draws, seed=seed
        )
        results[result.pair] = result
        verdicts += verdicts_of(effect, "pair", seed, result.pair, result.strategies, alpha)
        if leadlag and market.repos:
            try:
                found = lead_lag_for_pair(
                    market.candles, market.activity, repos=market.repos, n_boot=LEADLAG_BOOT, alpha=alpha, seed=seed
                )
            except SeriesTooShort:
                continue
            leads.append(
                {"significant": found.significant, "near_lag": abs(found.best_lag - lag) <= LAG_TOLERANCE_HOURS}
            )
    if len(results) > 1:
        portfolio = evaluate_portfolio(results, n_boot=n_boot, seed=seed, alpha=alpha)
        verdicts += verdicts_of(effect, "portfolio", seed, "portfolio", portfolio.strategies, alpha)
        family = next(iter(portfolio.strategies.values())).verdict_family
    else:
        family = next(iter(next(iter(results.values())).strategies.values())).verdict_family
    return verdicts, leads, family


def share(flags: Iterable[bool]) -> float:
    values = list(flags)
    return sum(values) / len(values) if values else float("nan")


def cells(verdicts: Sequence[Verdict]) -> list[dict[str, Any]]:
    """One row per (effect, level, strategy, reference) and per (effect, level, strategy)."""
    groups: dict[tuple[float, str, str], list[Verdict]] = defaultdict(list)
    for v in verdicts:
        groups[(v.effect, v.level, v.strategy)].append(v)
    rows: list[dict[str, Any]] = []
    for (effect, level, strategy), group in groups.items():
        for reference in REFERENCES:
            if reference == strategy:
                continue
            flags = [v.rejects[reference] for v in group if reference in v.rejects]
            rows.append(
                {
                    "effect": effect,
                    "level": level,
                    "strategy": strategy,
                    "reference": reference,
                    "units": len(flags),
                    "reject_share": share(flags),
                }
            )
        rows.append(
            {
                "effect": effect,
                "level": level,
                "strategy": strategy,
                "reference": "significant (cash and random_entry)",
                "units": len(group),
                "reject_share": share(v.significant for v in group),
                "median_net_return": statistics.median(v.net_return for v in group),
                "median_gross_return": statistics.median(v.gross_return for v in group),
            }
        )
    return rows


def any_significant_share(verdicts: Sequence[Verdict], effect: float, level: str) -> float:
    """Share of units in which at least one strategy is called significant (the family's error rate)."""
    units: dict[tuple[int, str], bool] = defaultdict(bool)
    for v in verdicts:
        if v.effect == effect and v.level == level:
            units[(v.seed, v.pair)] |= v.significant
    return share(units.values())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seeds", type=int, default=10, help="seeds per effect (default 10)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--days", type=int, default=DEMO_DAYS, help=f"days of history (default {DEMO_DAYS})")
    parser.add_argument(
        "--pairs",
        default=",".join(load_settings().pairs),
        help="comma-separated pairs (default: the demo's, the config's)",
    )
    parser.add_argument("--effects", default="0,1", help="planted effect sizes, comma-separated (default 0,1)")
    parser.add_argument("--lag", type=int, default=6, help="planted lag in hours (default 6)")
    parser.add_argument("--sign", type=int, choices=(1, -1), default=1, help="planted sign (default +1)")
    parser.add_argument("--train-days", type=int, default=TRAIN_DAYS)
    parser.add_argument("--test-days", type=int, default=TEST_DAYS)
    parser.add_argument("--n-boot", type=int, default=N_BOOT, help=f"bootstrap resamples per test (default {N_BOOT})")
    parser.add_argument(
        "--draws", type=int, default=N_DRAWS, help=f"random-entry draws per strategy (default {N_DRAWS})"
    )
    parser.add_argument("--alpha", type=float, default=ALPHA)
    parser.add_argument("--no-leadlag", action="store_true", help="skip the lead-lag detection rate")
    args = parser.parse_args(argv)
    pairs = [p.strip() for p in args.pairs.split(",") if p.strip()]
    effects = [float(e) for e in args.effects.split(",")]
    started = time.perf_counter()
    verdicts: list[Verdict] = []
    leads: dict[float, list[dict[str, Any]]] = defaultdict(list)
    family = 0
    for effect in effects:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            found, lead_rows, family = run_seed(
                seed,
                effect,
                pairs,
                days=args.days,
                lag=args.lag,
                sign=args.sign,
                train_days=args.train_days,
                test_days=args.test_days,
                n_boot=args.n_boot,
                draws=args.draws,
                alpha=args.alpha,
                leadlag=not args.no_leadlag,
            )
            verdicts += found
            leads[effect] += lead_rows
            called = ", ".join(f"{v.pair} {v.strategy}" for v in found if v.significant) or "none"
            print(
                f"effect {effect:g} seed {seed}: {time.perf_counter() - started:.0f} s; significant: {called}",
                file=sys.stderr,
                flush=True,
            )
    for row in cells(verdicts):
        print(json.dumps(row))
    for effect in effects:
        for level in ("pair", "portfolio") if len(pairs) > 1 else ("pair",):
            print(
                json.dumps(
                    {
                        "effect": effect,
                        "level": level,
                        "strategy": "any",
                        "reference": "any strategy significant",
                        "reject_share": any_significant_share(verdicts, effect, level),
                    }
                )
            )
        if leads[effect]:
            print(
                json.dumps(
                    {
                        "effect": effect,
                        "test": "lead_lag",
                        "units": len(leads[effect]),
                        "significant_share": share(r["significant"] for r in leads[effect]),
                        "near_planted_lag_share": share(r["significant"] and r["near_lag"] for r in leads[effect]),
                    }
                )
            )
    print(
        json.dumps(
            {
                "benchmark": "research_power",
                "seeds": args.seeds,
                "pairs": pairs,
                "days": args.days,
                "effects": effects,
                "lag": args.lag,
                "sign": args.sign,
                "walk_forward_days": [args.train_days, args.test_days],
                "n_boot": args.n_boot,
                "draws": args.draws,
                "alpha": args.alpha,
                "verdict_family": family,
                "smallest_reachable_adjusted_p": family_floor(family, args.n_boot, args.draws),
                "baseline": BASELINE,
                "wall_s": round(time.perf_counter() - started, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
