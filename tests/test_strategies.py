"""Strategies: votes, hysteresis consensus, causality, walk-forward evaluation, the CLI entry point."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from cyber_pipelines.backtest import backtest_csv, make_strategy
from cyber_pipelines.backtest.engine import BacktestConfig, run_backtest
from cyber_pipelines.backtest.strategies import (
    CrossMoat,
    RuleOfThree,
    SmaAbove,
    SmaCross,
    Strategy,
    Vote,
    bollinger_vote,
    consensus,
    rsi_vote,
    run_strategy,
    walk_forward,
)
from cyber_pipelines.features.indicators import add_indicators


def candles(n: int = 1500, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.standard_t(4, n) * 0.01))
    open_ = np.concatenate([[100.0], close[:-1]])
    start = datetime(2024, 1, 1, tzinfo=UTC)
    return pl.DataFrame(
        {
            "timestamp": pl.datetime_range(start, start + timedelta(hours=n - 1), "1h", eager=True),
            "open": open_,
            "high": np.maximum(open_, close) * 1.002,
            "low": np.minimum(open_, close) * 0.998,
            "close": close,
            "volume": rng.uniform(1, 2, n),
        }
    )


@pytest.fixture(scope="module")
def features() -> pl.DataFrame:
    return add_indicators(candles())


def vote(direction: list[float], confidence: list[float], weight: float = 1.0) -> Vote:
    return Vote(np.array(direction), np.array(confidence), weight)


def test_consensus_needs_two_confident_votes_and_holds_with_hysteresis() -> None:
    votes = [
        vote([1, 1, 1, 1, 1, 1, -1], [0.8, 0.8, 0.5, 0.5, 0.2, 0.9, 0.9]),
        vote([1, 1, 1, 1, 1, 1, -1], [0.6, 0.9, 0.9, 0.4, 0.9, 0.9, 0.9]),
        vote([0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0]),
    ]
    # bar 0: only one vote > 0.7 -> flat; bar 1: two -> long; bars 2-3: both > 0.3 -> hold;
    # bar 4: one drops to 0.2 -> exit; bar 5: re-enter; bar 6: both short -> flip
    assert consensus(votes, 2, 0.7, 0.3).tolist() == [0, 1, 1, 1, 0, 1, -1]


def test_contested_bar_neither_opens_nor_closes() -> None:
    ta_long = vote([1, 1, 1, 0, 0], [0.9, 0.9, 0.9, 0, 0])
    ta_long2 = vote([1, 1, 1, 0, 0], [0.9, 0.9, 0.9, 0, 0])
    activity = vote([0, 0, -1, -1, 0], [0, 0, 0.9, 0.9, 0], weight=2.0)
    # bar 2: long 2 vs short 2 -> contested: the long is kept; bar 3: only the short side -> flip
    assert consensus([ta_long, ta_long2, activity], 2, 0.7, 0.3).tolist() == [1, 1, 1, -1, 0]
    assert consensus([ta_long, activity], 2, 0.7, 0.3).tolist() == [0, 0, -1, -1, 0]


def test_hysteresis_trades_less_than_the_raw_signal(features: pl.DataFrame) -> None:
    strategy = RuleOfThree()
    held = strategy.positions(features)
    raw = consensus(strategy.votes(features), 2, 0.7, 0.7)  # no hysteresis band
    assert set(np.unique(held)) <= {-1.0, 0.0, 1.0}
    assert 0 < np.count_nonzero(np.diff(held)) < np.count_nonzero(np.diff(raw))


@pytest.mark.parametrize("strategy", [SmaCross(10, 30), SmaAbove(10, 30), RuleOfThree(), CrossMoat()])
def test_positions_are_causal(strategy: Strategy, features: pl.DataFrame) -> None:
    table = features.with_columns(activity_score=pl.Series(np.random.default_rng(1).normal(0, 1.5, features.height)))
    full = strategy.positions(table)
    for cut in (300, 777, 1200):
        np.testing.assert_array_equal(strategy.positions(table.head(cut)), full[:cut])
    assert isinstance(strategy, Strategy)


def test_team_confidences(features: pl.DataFrame) -> None:
    table = pl.DataFrame({"rsi_14": [25.0, 36.0, 50.0, 80.0, None]})
    rsi = rsi_vote(table)
    assert rsi.direction.tolist() == [1, 1, 0, -1, 0]
    np.testing.assert_allclose(rsi.confidence, [1.0, 0.7, 0.0, 1.0, 0.0])
    bands = pl.DataFrame({"close": [90.0, 95.0, 110.0], "bb_upper_20_2": [110.0] * 3, "bb_lower_20_2": [90.0] * 3})
    bb = bollinger_vote(bands)
    assert bb.direction.tolist() == [1, 1, -1]
    np.testing.assert_allclose(bb.confidence, [1.0, 0.5, 1.0])


def test_sma_above_positions_match_polars_rolling_means(features: pl.DataFrame) -> None:
    expected = features.select(
        pl.when(pl.col("close").rolling_mean(30).is_null())
        .then(0.0)
        .otherwise((pl.col("close").rolling_mean(10) - pl.col("close").rolling_mean(30)).sign())
    ).to_series()
    np.testing.assert_array_equal(SmaAbove(10, 30).positions(features), expected.to_numpy())
    assert SmaAbove(10, 30).name == "sma_above_10_30"
    with pytest.raises(ValueError, match="fast < slow"):
        SmaAbove(20, 10)


def test_sma_cross_holds_the_side_of_the_last_crossing(features: pl.DataFrame) -> None:
    diff = features.select(pl.col("close").rolling_mean(10) - pl.col("close").rolling_mean(30)).to_series()
    prev = diff.shift(1)
    event = features.select(
        pl.when((prev < 0) & (diff > 0)).then(1.0).when((prev > 0) & (diff < 0)).then(-1.0).otherwise(None)
    ).to_series()
    expected = event.fill_null(strategy="forward").fill_null(0.0).to_numpy()
    got = SmaCross(10, 30).positions(features)
    np.testing.assert_array_equal(got, expected)
    assert got[29] == 0.0 and np.count_nonzero(got) > 0  # the end of the warm-up opens nothing
    assert SmaCross(10, 30).name == "sma_cross_10_30"
    with pytest.raises(ValueError, match="fast < slow"):
        SmaCross(20, 10)


def test_cross_moat_goes_long_on_an_activity_burst(features: pl.DataFrame) -> None:
    score = np.zeros(features.height)
    score[500] = 6.0
    table = features.with_columns(activity_score=pl.Series(score))
    pos = CrossMoat(activity_window=10).positions(table)
    base = RuleOfThree().positions(table)
    differs = np.flatnonzero(pos != base)
    assert pos[500:510].min() == 1.0 and differs.min() >= 500 and differs.max() < 560
    with pytest.raises(ValueError, match="activity_score"):
        CrossMoat().positions(features)


class MeanSign:
    """A fitted toy strategy: long if the training window's mean return was positive."""

    name = "mean_sign"

    def __init__(self) -> None:
        self.fits: list[tuple[datetime, datetime]] = []
        self.sign = 0.0

    def fit(self, train: pl.DataFrame) -> None:
        self.fits.append((train["timestamp"][0], train["timestamp"][-1]))
        self.sign = float(np.sign(train["close"][-1] - train["close"][0]))

    def positions(self, features: pl.DataFrame) -> np.ndarray:
        return np.full(features.height, self.sign)


def test_walk_forward_fits_on_the_past_only(features: pl.DataFrame) -> None:
    strategy = MeanSign()
    result = walk_forward(strategy, features, train_bars=200, test_bars=100, config=BacktestConfig())
    ts = features["timestamp"]
    assert len(strategy.fits) == 13  # windows start at 200, 300, ..., 1400
    for i, (first, last) in enumerate(strategy.fits):
        test_start = 200 + 100 * i
        assert first == ts[test_start - 200] and last == ts[test_start - 1]
    assert result.equity.height == features.height - 200
    assert result.equity["timestamp"][0] == ts[200]


def test_walk_forward_of_a_rule_equals_one_out_of_sample_run(features: pl.DataFrame) -> None:
    cfg = BacktestConfig()
    wf = walk_forward(SmaCross(10, 30), features, train_bars=100, test_bars=250, config=cfg)
    direct = run_backtest(features.slice(100), SmaCross(10, 30).positions(features)[100:], cfg)
    np.testing.assert_allclose(wf.equity["equity"].to_numpy(), direct.equity["equity"].to_numpy())
    with pytest.raises(ValueError, match="train_bars"):
        walk_forward(SmaCross(), features, train_bars=0, test_bars=10)


def test_run_strategy_names_the_result(features: pl.DataFrame) -> None:
    result = run_strategy(RuleOfThree(), features, BacktestConfig())
    assert result.name == "rule_of_three" and result.metrics["n_trades"] > 0


def test_make_strategy_validates_parameters() -> None:
    assert make_strategy("sma_cross", {"fast": 5.0, "slow": 15.0}) == SmaCross(5, 15)
    with pytest.raises(ValueError, match="unknown strategy"):
        make_strategy("nope", {})
    with pytest.raises(ValueError, match="no parameter 'window'"):
        make_strategy("sma_cross", {"window": 3})
    with pytest.raises(ValueError, match="whole number"):
        make_strategy("sma_cross", {"fast": 2.5})


def test_backtest_csv_returns_json_metrics(tmp_path: Path) -> None:
    data = candles(300, seed=3)
    path = tmp_path / "pair.csv"
    data.rename(str.capitalize).with_columns(pl.col("Timestamp").dt.strftime("%Y-%m-%d %H:%M:%S")).write_csv(path)
    out = backtest_csv(path, "sma_cross", {"fast": 10, "slow": 20}, fee=0.002, slippage=0.0, fill="next_open")
    json.dumps(out, allow_nan=False)
    cfg = BacktestConfig(fee=0.002, slippage=0.0)
    direct = run_backtest(data, SmaCross(10, 20).positions(data), cfg)
    assert out["n_trades"] == direct.metrics["n_trades"] > 0
    assert out["final_equity"] == pytest.approx(direct.metrics["final_equity"])
    rule = backtest_csv(path, "rule_of_three", {}, fill="close")
    assert isinstance(rule["n_trades"], int) and rule["strategy"] == "rule_of_three"
    with pytest.raises(ValueError, match="activity_score"):
        backtest_csv(path, "cross_moat", {})
