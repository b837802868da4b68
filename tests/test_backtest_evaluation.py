"""Out-of-sample evaluation against references that can lose: random null, pair, portfolio, storage."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from cyber_pipelines.backtest.engine import BacktestConfig, run_backtest
from cyber_pipelines.backtest.evaluation import (
    BASELINE,
    BUY_AND_HOLD,
    REFERENCES,
    PairEvaluation,
    StrategyReport,
    adjust_family,
    cost_and_turnover,
    default_strategies,
    evaluate_pair,
    targets_from_positions,
)
from cyber_pipelines.backtest.portfolio import evaluate_portfolio
from cyber_pipelines.backtest.references import random_entry_null, random_targets, rank_test, segments
from cyber_pipelines.backtest.render import OPTIMISTIC_FILL, equity_plot_png, notes, strategy_table, verdict_lines
from cyber_pipelines.backtest.significance import ALPHA, ClaimTest
from cyber_pipelines.backtest.store import has_pair, load_comparison, load_pair, save_comparison, save_pair
from cyber_pipelines.backtest.strategies import RuleOfThree
from cyber_pipelines.features.indicators import add_indicators
from cyber_pipelines.jsonable import jsonable
from cyber_pipelines.storage import TableStore

HOURS_PER_YEAR = 8766.0
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def features(seed: int, days: int = 150, drift: float = 0.0, lag: int = 0, effect: float = 0.0) -> pl.DataFrame:
    """Hourly candles (GARCH-free random walk with a weekly volatility cycle) with indicators and an
    ``activity_score`` of bursts; ``effect`` plants a drift ``lag`` hours after each burst."""
    rng = np.random.default_rng(seed)
    n = days * 24
    week = 1.0 - 0.3 * ((np.arange(n) // 24) % 7 >= 5)
    score = np.where(rng.random(n) < 0.01, rng.uniform(2.5, 4.0, n), rng.normal(0, 0.5, n))
    pump = np.zeros(n)
    bursts = np.flatnonzero(score > 2.5)
    for b in bursts:
        pump[b + lag : b + lag + 6] += effect
    r = drift + 0.006 * week * rng.standard_t(5, n) / math.sqrt(5 / 3) + pump
    close = 100 * np.exp(np.cumsum(r))
    open_ = np.concatenate([[100.0], close[:-1]])
    spread = np.abs(rng.normal(0, 0.002, n)) * close
    ts = hours(n)
    candles = pl.DataFrame(
        {
            "timestamp": ts,
            "open": open_,
            "high": np.maximum(open_, close) + spread,
            "low": np.minimum(open_, close) - spread,
            "close": close,
            "volume": rng.uniform(1, 10, n),
        }
    )
    return add_indicators(candles).with_columns(activity_score=pl.Series(score))


CONFIG = BacktestConfig(bars_per_year=HOURS_PER_YEAR)


def hours(n: int) -> pl.Series:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    return pl.datetime_range(start, start + timedelta(hours=n - 1), interval="1h", eager=True)


TRAIN, TEST = 45 * 24, 30 * 24


@pytest.fixture(scope="module")
def pair_result() -> PairEvaluation:
    table = features(1)
    return evaluate_pair(
        table, CONFIG, default_strategies(CONFIG, 6), pair="ETH-USD", train_bars=TRAIN, test_bars=TEST, draws=200
    )


# --- the random-entry null ------------------------------------------------------------------------
def test_random_entries_keep_the_trades_turnover_and_exposure() -> None:
    targets = np.zeros(500)
    targets[10:30] = 1.0
    targets[100:105] = 1.0
    targets[300:360] = 0.5
    lengths, values = segments(targets)
    assert sorted(lengths.tolist()) == [5, 20, 60] and sorted(values.tolist()) == [0.5, 1.0, 1.0]
    draws = random_targets(lengths, values, 500, 300, seed=0)
    assert draws.shape == (500, 300)
    assert np.allclose(np.abs(draws).sum(axis=0), np.abs(targets).sum())  # same exposure
    assert np.allclose((draws != 0).sum(axis=0), (targets != 0).sum())
    assert len({tuple(np.flatnonzero(draws[:, j])[:1]) for j in range(300)}) > 50  # the timing varies


def test_the_random_null_calls_good_timing_significant_and_chance_not() -> None:
    rng = np.random.default_rng(0)
    n = 3000
    r = rng.normal(0, 0.01, n)
    r[::50] += 0.03  # a known move every 50 bars
    close = 100 * np.exp(np.cumsum(r))
    open_ = np.concatenate([[100.0], close[:-1]])
    ts = hours(n)
    candles = pl.DataFrame({"timestamp": ts, "open": open_, "high": np.maximum(open_, close),
                            "low": np.minimum(open_, close), "close": close})  # fmt: skip
    free = BacktestConfig(fee=0, slippage=0, bars_per_year=HOURS_PER_YEAR, fill="close")
    clairvoyant = np.zeros(n)
    clairvoyant[49::50] = 1.0  # holds exactly the bar of each move
    observed = run_backtest(candles, clairvoyant, free).metrics["sharpe"]
    null = random_entry_null(open_, close, clairvoyant, free, HOURS_PER_YEAR, draws=300, seed=1)
    assert rank_test(observed, null, n).p_value < 0.01
    blind = np.zeros(n)
    blind[20::50] = 1.0  # same trades, timing unrelated to the moves
    chance = run_backtest(candles, blind, free).metrics["sharpe"]
    null = random_entry_null(open_, close, blind, free, HOURS_PER_YEAR, draws=300, seed=2)
    assert rank_test(chance, null, n).p_value > 0.05


def test_no_trades_is_not_significant_against_the_random_null() -> None:
    res = rank_test(float("nan"), np.zeros(0), 100)
    assert res.p_value == 1.0 and "no trades" in res.note


@pytest.mark.slow
def test_random_null_size_across_seeds() -> None:
    """A strategy whose entries are random: at most 5% (+ noise of 40 draws) significant at 0.05."""
    hits = 0
    for seed in range(40):
        table = features(100 + seed, days=60)
        o, c = table["open"].to_numpy(), table["close"].to_numpy()
        rng = np.random.default_rng(seed)
        targets = (rng.random(c.size) < 0.02).astype(float)
        targets = np.maximum.reduce([np.roll(targets, k) for k in range(12)])
        observed = run_backtest(table, targets, CONFIG).metrics["sharpe"]
        null = random_entry_null(o, c, targets, CONFIG, HOURS_PER_YEAR, draws=199, seed=seed)
        hits += rank_test(observed, null, c.size).p_value < 0.05
    assert hits <= 5, hits


# --- one pair --------------------------------------------------------------------------------------
def test_every_strategy_faces_every_reference_out_of_sample(pair_result: PairEvaluation) -> None:
    r = pair_result
    assert r.names == [BASELINE, "cross_moat", "moat_only", "sma_grid"]
    assert r.curves["timestamp"][0] == features(1)["timestamp"][TRAIN]  # the OOS rows only
    assert set(r.curves.columns) == {"timestamp", *r.names, BUY_AND_HOLD}
    for name, rep in r.strategies.items():
        refs = [t.reference for t in rep.tests]
        assert refs == [ref for ref in REFERENCES if ref != name]
        assert all(t.p_adjusted >= t.p_value for t in rep.tests)
        assert rep.windows and all("params" in w and w["test_start"] > w["train_end"] for w in rep.windows)
        m = rep.oos
        assert m["cost_drag"] == pytest.approx(m["gross_return"] - m["total_return"])
        assert m["cost_drag"] >= 0 and m["turnover_per_year"] >= 0
        assert "total_return" in rep.in_sample
        assert math.isnan(m["cagr"]) or m["cagr"] > -1  # 105 OOS days: CAGR is not reported
    assert_one_family(list(r.strategies.values()))


def assert_one_family(reports: list[StrategyReport]) -> None:
    """Holm per reference over the reports' tests against it, and Holm over their verdicts (the larger
    of the cash and random-null p), which alone decide ``significant``."""
    for ref in REFERENCES:
        tests = [t for rep in reports if (t := rep.test(ref)) is not None]
        smallest = min(t.p_value for t in tests)
        assert min(t.p_adjusted for t in tests) == pytest.approx(min(1.0, smallest * len(tests)))
    verdicts = [max(rep.test("cash").p_value, rep.test("random_entry").p_value) for rep in reports]  # type: ignore[union-attr]
    assert [rep.verdict_p for rep in reports] == verdicts
    assert all(rep.verdict_family == len(reports) for rep in reports)
    assert min(rep.verdict_p_adjusted for rep in reports) == pytest.approx(min(1.0, min(verdicts) * len(reports)))
    assert all(rep.significant() == (rep.verdict_p_adjusted < ALPHA) for rep in reports)


def test_the_verdict_is_an_intersection_union_test_with_its_own_family() -> None:
    """Significant needs both tests: the verdict p is the larger raw p, Holm-adjusted over the verdicts;
    a strategy that beats only cash (or only the null) is never significant, however small that p."""

    def report(name: str, cash: float, null: float) -> StrategyReport:
        tests = [
            ClaimTest("cash", "mean_return", 0.1, 0.0, 0.2, cash),
            ClaimTest("random_entry", "rank", 1, 0, 2, null),
        ]
        return StrategyReport(name, windows=[], in_sample={}, oos={"total_return": 0.5}, tests=tests)

    both, only_cash, weak = adjust_family(
        [report("a", 0.001, 0.004), report("b", 0.0001, 0.6), report("c", 0.02, 0.02)]
    )
    assert both.verdict_p == 0.004 and both.verdict_p_adjusted == pytest.approx(0.012)  # smallest of 3: x3
    assert both.significant() and "verdict p 0.012, Holm over 3 verdicts" in both.verdict()
    assert not only_cash.significant() and only_cash.verdict_p_adjusted == pytest.approx(0.6)
    assert only_cash.test("cash").p_adjusted == pytest.approx(0.0003)  # type: ignore[union-attr]
    assert weak.verdict_p_adjusted == pytest.approx(0.04) and weak.significant()  # Holm: 2 x 0.02
    assert not report("unadjusted", 0.0001, 0.0001).significant()  # no verdict without its family
    again = StrategyReport.from_dict(json.loads(json.dumps(jsonable(both.to_dict()))))
    assert again.verdict_p_adjusted == pytest.approx(0.012) and again.verdict_family == 3


def test_cost_drag_is_the_difference_to_the_same_fills_without_costs() -> None:
    table = features(2, days=40)
    targets = np.zeros(table.height)
    targets[100:200] = 1
    targets[400:600] = 1
    result = run_backtest(table, targets, CONFIG)
    executed = targets_from_positions(result.equity["position"].to_numpy(), CONFIG)
    assert np.array_equal(executed[:-1], targets[:-1])
    costs = cost_and_turnover(result, table, targets)
    free = run_backtest(table, targets, replace(CONFIG, fee=0, slippage=0)).metrics["total_return"]
    assert costs["gross_return"] == pytest.approx(free)
    assert costs["avg_hold_hours"] == pytest.approx(150.0)  # 300 bars held over 2 trades
    assert costs["turnover_per_year"] == pytest.approx(4 / ((table.height - 1) / HOURS_PER_YEAR))


def test_a_losing_rule_loses_to_cash_and_is_never_significant() -> None:
    """Cost-only trading on a driftless market: the mean-return test against cash is not passed."""
    table = features(3, days=120)
    result = evaluate_pair(
        table, CONFIG, [RuleOfThree(min_hold_bars=1)], pair="X", train_bars=TRAIN, test_bars=TEST, draws=100
    )
    rep = result.strategies[BASELINE]
    assert rep.oos["cost_drag"] > 0
    assert not rep.significant()
    assert rep.test("cash") is not None and rep.test("cash").p_value > 0.05  # type: ignore[union-attr]


def test_bad_requests_are_clear_errors() -> None:
    table = features(4, days=20)
    with pytest.raises(ValueError, match="must include the baseline"):
        evaluate_pair(table, CONFIG, default_strategies(CONFIG)[1:], train_bars=100, test_bars=50)
    with pytest.raises(ValueError, match="walk-forward needs more than"):
        evaluate_pair(table, CONFIG, default_strategies(CONFIG), pair="P", train_bars=table.height, test_bars=50)


# --- reports and storage ---------------------------------------------------------------------------
def test_report_lines_and_the_optimistic_fill_flag(pair_result: PairEvaluation) -> None:
    lines = verdict_lines(pair_result.strategies)
    assert len(lines) == 4 and all("OOS net" in line and "adjusted p: cash" in line for line in lines)
    table = strategy_table(pair_result.strategies, pair_result.buy_and_hold)
    assert "buy_and_hold (reference)" in table and "p random_entry" in table
    assert not any(OPTIMISTIC_FILL in n for n in notes(pair_result.strategies, "next_open"))
    assert any(OPTIMISTIC_FILL in n for n in notes(pair_result.strategies, "close"))
    ts = pair_result.curves["timestamp"]
    assert "CAGR and Calmar are not reported (n/a): sample of 105 days < 1 year." in notes(
        pair_result.strategies, "next_open", ts[-1] - ts[0]
    )
    assert not any("CAGR" in n for n in notes(pair_result.strategies, "next_open", timedelta(days=400)))
    assert equity_plot_png(pair_result.curves, "t", baseline=BASELINE).startswith(PNG_MAGIC)


def test_pair_results_round_trip_through_storage(pair_result: PairEvaluation, tmp_path: Path) -> None:
    store = TableStore(tmp_path)
    json_path, _ = save_pair(store, "synthetic", "ETH-USD", pair_result)
    assert has_pair(store, "synthetic", "ETH-USD")
    data = json.loads(json_path.read_text())  # strict JSON: NaN became null
    assert data["kind"] == "pair_evaluation" and data["verdicts"]
    loaded = load_pair(store, "synthetic", "ETH-USD")
    assert loaded.names == pair_result.names and loaded.config == pair_result.config
    for name, rep in pair_result.strategies.items():
        again = loaded.strategies[name]
        assert [t.p_adjusted for t in again.tests] == pytest.approx([t.p_adjusted for t in rep.tests])
        assert again.random_null_sharpes == pytest.approx(rep.random_null_sharpes)
    with pytest.raises(FileNotFoundError, match="no stored backtest for SOL-USD"):
        load_pair(store, "synthetic", "SOL-USD")


def test_portfolio_is_sub_accounts_and_one_family(pair_result: PairEvaluation, tmp_path: Path) -> None:
    other = evaluate_pair(
        features(5), CONFIG, default_strategies(CONFIG, 6), pair="SOL-USD", train_bars=TRAIN, test_bars=TEST, draws=200
    )
    port = evaluate_portfolio({"ETH-USD": pair_result, "SOL-USD": other})
    for name in [*port.names, BUY_AND_HOLD]:
        expected = (
            np.mean([p.curves[name].to_numpy() / p.curves[name][0] for p in (pair_result, other)], axis=0)
            * CONFIG.initial_cash
        )
        assert port.curves[name].to_numpy() == pytest.approx(expected)  # never rebalanced
    assert_one_family(
        [rep for reps in port.pair_reports.values() for rep in reps.values()] + list(port.strategies.values())
    )
    assert [t.reference for t in port.strategies["cross_moat"].tests] == list(REFERENCES)
    save_comparison(TableStore(tmp_path), "synthetic", port)
    data = load_comparison(TableStore(tmp_path), "synthetic")
    assert data["portfolio"].startswith("independent sub-accounts") and len(data["verdicts"]) == 4
    assert set(data["by_pair"]) == {"ETH-USD", "SOL-USD"}
    mismatched = replace(other, config=replace(CONFIG, fee=0.001))
    with pytest.raises(ValueError, match="different settings"):
        evaluate_portfolio({"ETH-USD": pair_result, "SOL-USD": mismatched})
