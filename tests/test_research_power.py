"""Size and power of the backtest verdicts across seeds, out of sample, on the realistic synthetic market.

Each seed builds SOL/USD's feature table from the synthetic candles, commits and moat records as the
pipeline does (``benchmarks/research_power.py``: ``point_in_time_activity``, ``build_feature_table``)
and runs ``evaluate_pair`` with the default strategies (walk-forward, ``min_hold_bars`` 6, the default
costs and fills) at a reduced size: 200 days, train 60 / test 30 days, 999 bootstrap resamples and 499
random-entry draws. SOL/USD: one configured repo informs it, so its table is the cheapest to build.
The resamples are chosen so that Holm over the pair's family can still pass (each p-value is at least
``1 / (resamples + 1)``; ``test_the_reduced_resamples_can_still_pass_holm``): with too few, the size
test would pass vacuously. The measured figures and the demo-size ones are in the benchmark's output.
"""

from __future__ import annotations

import importlib.util
import sys
from functools import cache
from pathlib import Path
from types import ModuleType

import pytest

from cyber_pipelines.backtest.evaluation import BASELINE, PairEvaluation
from cyber_pipelines.backtest.evaluation import TEST_DAYS as DEMO_TEST_DAYS
from cyber_pipelines.backtest.evaluation import TRAIN_DAYS as DEMO_TRAIN_DAYS
from cyber_pipelines.backtest.significance import ALPHA
from cyber_pipelines.cli import DEMO_DAYS

PAIR = "SOL/USD"
DAYS, TRAIN_DAYS, TEST_DAYS = 200, 60, 30
N_BOOT, DRAWS = 999, 499
SIZE_SEEDS = range(20)
POWER_SEEDS = range(12)
STRONG = 3.0  # planted effect size for the power test (the config default is 1.0)


@cache
def bench() -> ModuleType:
    """``benchmarks/research_power.py`` (not a package): the one copy of the measuring code."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "research_power.py"
    spec = importlib.util.spec_from_file_location("research_power", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


@cache
def evaluation(seed: int, effect: float, lag: int = 6, sign: int = 1) -> PairEvaluation:
    rp = bench()
    market = rp.synthetic_market(PAIR, DAYS, seed=seed, effect=effect, lag=lag, sign=sign)
    result: PairEvaluation = rp.evaluate_market(
        market, train_days=TRAIN_DAYS, test_days=TEST_DAYS, n_boot=N_BOOT, draws=DRAWS, seed=seed
    )
    return result


def rejects(result: PairEvaluation, strategy: str, reference: str) -> bool:
    test = result.strategies[strategy].test(reference)
    return test is not None and test.significant(ALPHA)


@pytest.mark.slow
def test_size_no_strategy_is_called_significant_without_an_effect() -> None:
    """Effect 0 (the bursts still happen, the market ignores them), 20 seeds.

    What is asserted, and why it is a family claim: a strategy is significant when its verdict p (the
    larger of its cash and random-null p) passes Holm over the pair's verdicts, which bounds the chance
    that *any* strategy of the pair is called significant at alpha. That is the claim, so it is asserted
    on the seeds (at most 2 of 20: 5% plus the binomial noise of 20 draws; P(X >= 3 | p = 0.05) = 7.5%),
    and so, per strategy, are the two tests that make the verdict. The other references are not
    asserted here: without an effect, "beats buy-and-hold" or "beats rule_of_three" can be true (the
    baseline loses to costs, buy-and-hold loses in a bear regime), so rejecting them is no false
    positive. Measured (999 / 499 resamples): 0 of 20 seeds with any strategy significant.
    """
    any_significant = 0
    against: dict[tuple[str, str], int] = {}
    for seed in SIZE_SEEDS:
        result = evaluation(seed, effect=0.0)
        any_significant += any(rep.significant(ALPHA) for rep in result.strategies.values())
        for name in result.names:
            for reference in ("cash", "random_entry"):
                key = (name, reference)
                against[key] = against.get(key, 0) + rejects(result, name, reference)
    assert any_significant <= 2, f"{any_significant} of {len(SIZE_SEEDS)} seeds had a significant strategy"
    assert all(hits <= 2 for hits in against.values()), against


@pytest.mark.slow
def test_the_reduced_resamples_can_still_pass_holm() -> None:
    """The size test is not vacuous: with these resamples every test can reach adjusted p < alpha in
    its reference's family (``adjust`` notes a test that cannot), and so can the pair's verdicts."""
    result = evaluation(0, effect=0.0)
    tests = [t for _, t in result.all_tests()]
    assert not [t.note for t in tests if "cannot reach" in t.note]
    assert bench().family_floor(len(result.strategies), N_BOOT, DRAWS) < ALPHA


@pytest.mark.slow
def test_power_a_strong_planted_effect_is_found_out_of_sample() -> None:
    """Effect 3 (lag 6 h, sign +1) on 12 seeds: what the walk-forward strategies detect after costs.

    Measured on seeds 0-19 (the first 12 are asserted): ``cross_moat`` beats the random null (adjusted)
    in 11 of 20 and is significant (cash and random null) in 8 of 20; it beats ``rule_of_three`` in only
    2 of 20; ``moat_only`` is significant in 10 of 20; the TA-only baseline and ``sma_grid`` never. So
    "cross_moat beats rule_of_three or the random null in most seeds" does NOT hold at this size: in
    the other seeds the fitted activity team finds the lead's timing on the training window but its
    sign test over the ~35 bursts of 60 days is not sure enough (t about 1.3-1.9), so it abstains and
    cross_moat trades as rule_of_three. The bounds below are what is true, with a margin of about two
    seeds under the measurement (first 12 seeds: beats the null 7, significant 5, moat_only 6), and the
    baseline, which cannot see the activity, stays at 0: the power comes from the planted effect.
    """
    beats_null = significant = moat_only = baseline = 0
    for seed in POWER_SEEDS:
        result = evaluation(seed, effect=STRONG)
        beats_null += rejects(result, "cross_moat", "random_entry") or rejects(result, "cross_moat", BASELINE)
        significant += result.strategies["cross_moat"].significant(ALPHA)
        moat_only += result.strategies["moat_only"].significant(ALPHA)
        baseline += result.strategies[BASELINE].significant(ALPHA)
    counts = {"beats_null_or_baseline": beats_null, "significant": significant, "moat_only": moat_only}
    assert beats_null >= 5 and significant >= 3 and moat_only >= 4, counts
    assert baseline == 0, baseline


DEMO_SEEDS = range(2)


@pytest.mark.slow
def test_power_the_planted_effect_is_found_at_the_demo_size() -> None:
    """The demo's question at the demo's size: its pairs (the config's: BTC, ETH, SOL) x 1095 days, the
    config's planted effect (1.0), the demo's walk-forward (train 90, test 30 days) and its family (every
    strategy on every pair and on the portfolio, 16 verdicts). Resamples 999 / 499 to keep CI short:
    the verdict p then has a floor of 0.002, and 16 x 0.002 = 0.032 can still pass.

    Asserted on the first seeds: the activity team alone (``moat_only``) is significant on the portfolio,
    and the TA-only baseline, which cannot see the activity, is significant nowhere. Measured at the
    full resamples (``benchmarks/research_power.py --days 1095``): portfolio ``moat_only`` significant
    in 9 of 10 seeds (seeds 0 and 1 among them), and with effect 0 no strategy in any seed.
    """
    rp = bench()
    pairs = list(rp.load_settings().pairs)
    assert len(pairs) == 3
    found, baseline = 0, 0
    for seed in DEMO_SEEDS:
        verdicts, _, family = rp.run_seed(
            seed, 1.0, pairs, days=DEMO_DAYS, lag=6, sign=1, train_days=DEMO_TRAIN_DAYS,
            test_days=DEMO_TEST_DAYS, n_boot=N_BOOT, draws=DRAWS, alpha=ALPHA, leadlag=False,
        )  # fmt: skip
        assert family == 16
        found += any(v.significant for v in verdicts if (v.level, v.strategy) == ("portfolio", "moat_only"))
        baseline += sum(v.significant for v in verdicts if v.strategy == BASELINE)
    assert found == len(DEMO_SEEDS), found
    assert baseline == 0, baseline
