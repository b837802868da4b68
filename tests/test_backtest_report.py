"""Backtest reports: per-pair results vs the engine, JSON round trip, portfolio comparison, equity plot."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from cyber_pipelines.backtest.engine import BacktestConfig, run_backtest
from cyber_pipelines.backtest.metrics import METRIC_NAMES, SHARPE_FORMULA, bar_returns
from cyber_pipelines.backtest.report import (
    PairBacktest,
    backtest_pair,
    compare_portfolio,
    default_strategies,
    equity_plot_png,
    load_pair_backtest,
    save_pair_backtest,
)
from cyber_pipelines.backtest.significance import compare_to_baseline
from cyber_pipelines.backtest.strategies import RuleOfThree
from cyber_pipelines.config import load_repo_map, load_settings
from cyber_pipelines.features.cross_source import build_feature_table, repos_for_asset
from cyber_pipelines.features.indicators import WARMUP_BARS
from cyber_pipelines.github.activity import build_activity
from cyber_pipelines.github.schema import ACTIVITY_SCHEMA
from cyber_pipelines.keys import pair_base
from cyber_pipelines.storage import TableStore
from cyber_pipelines.synthetic.activity import simulate_commits, simulate_moat_records, simulate_repo_snapshot
from cyber_pipelines.synthetic.market import simulate_ohlcv

DAYS = 60
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def synthetic_features(pair: str, days: int = DAYS) -> pl.DataFrame:
    """The pipeline's feature table of ``pair`` on the synthetic candles, GitHub activity and moat records."""
    settings = load_settings()
    synth, start = settings.synthetic, settings.start_date
    end = start + timedelta(days=days - 1)
    candles = simulate_ohlcv(
        pair, start, end, seed=synth.seed, effect_size=synth.effect_size, lag_hours=synth.lag_hours, origin=start
    )
    base, repo_map = pair_base(pair), load_repo_map()
    activity = [
        build_activity(
            repo,
            day,
            simulate_commits(repo, repo_map[repo], day, seed=synth.seed, origin=start, lag_hours=synth.lag_hours),
            *simulate_repo_snapshot(repo, day, seed=synth.seed, origin=start),
        )
        for repo in repos_for_asset(base)
        for day in (start + timedelta(days=i) for i in range(days))
    ]
    moat = pl.concat(
        simulate_moat_records([base], start + timedelta(days=i), seed=synth.seed, origin=start) for i in range(days)
    )
    github = pl.concat(activity) if activity else pl.DataFrame(schema=ACTIVITY_SCHEMA)  # BTC: no repo informs it
    return build_feature_table(candles, github, moat, base_asset=base)


@pytest.fixture(scope="module")
def eth() -> pl.DataFrame:
    return synthetic_features("ETH/USD")


@pytest.fixture(scope="module")
def btc() -> pl.DataFrame:
    return synthetic_features("BTC/USD")


@pytest.fixture(scope="module")
def eth_result(eth: pl.DataFrame) -> PairBacktest:
    return backtest_pair(eth, BacktestConfig(), pair="ETH-USD")


@pytest.fixture(scope="module")
def btc_result(btc: pl.DataFrame) -> PairBacktest:
    return backtest_pair(btc, BacktestConfig(), pair="BTC-USD")


class Flat:
    """A plug-in strategy that never trades (its Sharpe ratio is undefined)."""

    name = "flat"

    def fit(self, train: pl.DataFrame) -> None:
        return None

    def positions(self, features: pl.DataFrame) -> np.ndarray:
        return np.zeros(features.height)


def test_default_set_has_the_baseline_first_and_trades_after_warmup(
    eth: pl.DataFrame, eth_result: PairBacktest
) -> None:
    assert eth_result.strategies == ["rule_of_three", "cross_moat", "sma_cross_24_96"]
    assert eth_result.baseline == "rule_of_three"
    assert set(eth_result.significance) == {"cross_moat", "sma_cross_24_96"}
    assert eth_result.curves.columns == ["timestamp", *eth_result.strategies]
    assert eth_result.curves.height == eth.height - WARMUP_BARS
    assert eth_result.curves["timestamp"][0] == eth["timestamp"][WARMUP_BARS]
    assert (eth_result.trades["entry_time"] >= eth["timestamp"][WARMUP_BARS]).all()
    assert all(eth_result.metrics[s]["n_trades"] > 0 for s in eth_result.strategies)


def test_metrics_agree_with_the_engine_and_with_the_curves(eth: pl.DataFrame, eth_result: PairBacktest) -> None:
    config = BacktestConfig()
    traded = eth.slice(WARMUP_BARS)
    base = None
    for strategy in default_strategies():
        engine = run_backtest(traded, strategy.positions(eth)[WARMUP_BARS:], config)
        m = eth_result.metrics[strategy.name]
        assert set(m) == set(METRIC_NAMES)
        for key in METRIC_NAMES:
            assert m[key] == pytest.approx(engine.metrics[key], nan_ok=True), (strategy.name, key)
        curve = eth_result.curves[strategy.name].to_numpy()
        np.testing.assert_allclose(curve, engine.equity["equity"].to_numpy())
        # independent of the engine's metric code: the stated formulas applied to the stored curve
        r = bar_returns(curve)
        assert m["total_return"] == pytest.approx(curve[-1] / config.initial_cash - 1)
        assert m["sharpe"] == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(eth_result.bars_per_year))
        assert m["n_trades"] == eth_result.trades.filter(pl.col("strategy") == strategy.name).height
        if base is None:
            base = engine
            continue
        sig = eth_result.significance[strategy.name]
        expected = compare_to_baseline(engine.returns, base.returns, engine.bars_per_year)
        assert sig.p_value == expected.p_value and sig.sharpe_diff_ci == expected.sharpe_diff_ci
        assert sig.sharpe_strategy == pytest.approx(m["sharpe"])
        assert sig.sharpe_baseline == pytest.approx(eth_result.metrics["rule_of_three"]["sharpe"])
        assert 0 < sig.p_value <= 1 and sig.sharpe_diff_ci[0] <= sig.sharpe_diff <= sig.sharpe_diff_ci[1]


def test_probation_multiplier_scales_the_positions(eth: pl.DataFrame, eth_result: PairBacktest) -> None:
    half = backtest_pair(eth, BacktestConfig(size_multiplier=0.5), [RuleOfThree()], n_boot=100)
    full = eth_result.metrics["rule_of_three"]
    assert half.metrics["rule_of_three"]["n_trades"] == full["n_trades"]
    assert abs(half.metrics["rule_of_three"]["max_drawdown"]) < abs(full["max_drawdown"])
    assert half.to_json_dict()["config"]["size_multiplier"] == 0.5
    assert "position size x0.5" in half.markdown()


def test_json_round_trip_is_lossless_and_non_finite_becomes_null(eth: pl.DataFrame, tmp_path: Path) -> None:
    result = backtest_pair(eth, BacktestConfig(fill="close"), [*default_strategies(), Flat()], pair="ETH-USD")
    data = result.to_json_dict()
    text = json.dumps(data, allow_nan=False)  # raises on NaN/inf
    assert data["metrics"]["flat"]["sharpe"] is None and data["metrics"]["flat"]["n_trades"] == 0
    assert data["metrics"]["flat"]["profit_factor"] is None and data["metrics"]["flat"]["total_return"] == 0.0
    assert 0 < data["significance"]["flat"]["p_value"] <= 1  # doing nothing vs the baseline: still a test
    assert data["config"]["fill"] == "close" and data["sharpe_formula"] == SHARPE_FORMULA
    again = PairBacktest.from_json_dict(json.loads(text), result.curves)
    assert again.to_json_dict() == data
    assert again.markdown() == result.markdown()
    assert again.trades.equals(result.trades)
    store = TableStore(tmp_path)
    json_path, curves_path = save_pair_backtest(store, "synthetic", "ETH-USD", result)
    assert json_path == tmp_path / "synthetic" / "backtests" / "ETH-USD.json" and curves_path.exists()
    assert not list(json_path.parent.glob("*.tmp"))
    loaded = load_pair_backtest(store, "synthetic", "ETH-USD")
    assert loaded.to_json_dict() == data and loaded.curves.equals(result.curves)
    with pytest.raises(FileNotFoundError, match="BTC-USD"):
        load_pair_backtest(store, "synthetic", "BTC-USD")


def test_markdown_table_lists_every_strategy_with_the_sharpe_formula(eth_result: PairBacktest) -> None:
    text = eth_result.markdown()
    header = text.splitlines()[0]
    for column in ("total_return", "CAGR", "Sharpe", "Sortino", "max DD", "win rate", "profit factor", "trades"):
        assert column in header
    assert "p vs baseline" in header and "Sharpe diff CI" in header
    assert "| rule_of_three (baseline) |" in text
    for name in ("cross_moat", "sma_cross_24_96"):
        row = next(line for line in text.splitlines() if line.startswith(f"| {name} |"))
        assert f"{eth_result.significance[name].p_value:.4f}" in row
    assert SHARPE_FORMULA in text and "fee 0.26% + slippage 0.10%" in text


def test_portfolio_averages_the_pairs_returns(eth_result: PairBacktest, btc_result: PairBacktest) -> None:
    comparison = compare_portfolio({"BTC-USD": btc_result, "ETH-USD": eth_result})
    assert comparison.pairs == ["BTC-USD", "ETH-USD"] and comparison.strategies == eth_result.strategies
    for name in comparison.strategies:
        expected = (
            bar_returns(btc_result.curves[name].to_numpy()) + bar_returns(eth_result.curves[name].to_numpy())
        ) / 2
        np.testing.assert_allclose(bar_returns(comparison.curves[name].to_numpy()), expected, atol=1e-12)
        pooled = btc_result.metrics[name]["n_trades"] + eth_result.metrics[name]["n_trades"]
        assert comparison.metrics[name]["n_trades"] == pooled
    text = comparison.markdown()
    for name in comparison.strategies:
        assert f"| {name}" in text
    assert "Sharpe by pair" in text and "| BTC-USD |" in text and "| ETH-USD |" in text
    data = json.loads(json.dumps(comparison.to_json_dict(), allow_nan=False))
    assert set(data["significance"]) == {"cross_moat", "sma_cross_24_96"}
    assert len(data["by_pair"]) == 2 * len(comparison.strategies)
    summary = comparison.numeric_summary()
    assert summary["p_value/cross_moat"] == comparison.significance["cross_moat"].p_value
    assert all(math.isfinite(v) for v in summary.values())


def test_one_pair_portfolio_is_that_pair(eth_result: PairBacktest) -> None:
    comparison = compare_portfolio({"ETH-USD": eth_result})
    for name in comparison.strategies:
        for key in ("total_return", "sharpe", "max_drawdown", "n_trades"):
            assert comparison.metrics[name][key] == pytest.approx(eth_result.metrics[name][key])


def test_comparison_refuses_results_it_cannot_compare(eth: pl.DataFrame, eth_result: PairBacktest) -> None:
    cheap = backtest_pair(eth.head(WARMUP_BARS + 40), BacktestConfig(fee=0.0), n_boot=100)
    with pytest.raises(ValueError, match="different settings"):
        compare_portfolio({"ETH-USD": eth_result, "X": cheap})
    other = replace(eth_result, metrics={"rule_of_three": eth_result.metrics["rule_of_three"]})
    with pytest.raises(ValueError, match="same set"):
        compare_portfolio({"ETH-USD": eth_result, "X": other})
    with pytest.raises(ValueError, match="no pair backtests"):
        compare_portfolio({})


def test_bad_input_is_named(eth: pl.DataFrame) -> None:
    with pytest.raises(ValueError, match="SOL-USD: 30 feature rows"):
        backtest_pair(eth.head(30), BacktestConfig(), pair="SOL-USD")
    with pytest.raises(ValueError, match="unique"):
        backtest_pair(eth, BacktestConfig(), [RuleOfThree(), RuleOfThree()])
    with pytest.raises(ValueError, match="rsi_14"):
        backtest_pair(eth.drop("rsi_14"), BacktestConfig())


def test_equity_plot_is_a_png(eth_result: PairBacktest) -> None:
    png = equity_plot_png(eth_result.curves, "ETH-USD", baseline="rule_of_three")
    assert png.startswith(PNG_MAGIC) and 5_000 < len(png) < 200_000
    with pytest.raises(ValueError, match="equity column"):
        equity_plot_png(eth_result.curves.select("timestamp"), "empty")
