"""S4 prospecting: the 8-point score, the three teams' 2-of-3 consensus, the limits, and the scanners."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from fakes.kraken import DEFAULT_NOW, FakeKraken

from cyber_pipelines.config import load_settings
from cyber_pipelines.github.schema import ACTIVITY_SCHEMA
from cyber_pipelines.market.exchange import ExchangeSettings, make_exchange
from cyber_pipelines.market.schema import OHLCV_SCHEMA
from cyber_pipelines.moat.schema import MOAT_SCHEMA
from cyber_pipelines.storage import TableStore
from cyber_pipelines.vsm.policy import TEAMS, Policy, load_policy
from cyber_pipelines.vsm.prospect import (
    MARKET,
    TEAM_MARKET_WEIGHTS,
    Candidate,
    Score,
    attach,
    decide,
    moat_levels,
    moat_observations,
    read_moat_activity,
    scan_exchange,
    scan_synthetic,
    score_candidates,
    score_components,
    select_additions,
)

NOW = datetime(2024, 6, 1, 12, 30, tzinfo=UTC)
HOUR = timedelta(hours=1)
ORDINARY = dict.fromkeys(("github", "government", "logistics", "corporate"), 0.5)
BUSY = dict.fromkeys(("github", "government", "logistics", "corporate"), 1.0)


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy()


def candles(
    returns: np.ndarray, volume: np.ndarray | float, *, end: datetime = NOW, price: float = 100.0
) -> pl.DataFrame:
    """Hourly candles ending before ``end``'s hour with these log returns (close to close) and volumes."""
    n = returns.size
    close = price * np.exp(np.cumsum(returns))
    open_ = np.concatenate([[price], close[:-1]])
    first = end.replace(minute=0) - n * HOUR
    return pl.DataFrame(
        {
            "timestamp": [first + i * HOUR for i in range(n)],
            "open": open_,
            "high": np.maximum(open_, close) * 1.001,
            "low": np.minimum(open_, close) * 0.999,
            "close": close,
            "volume": np.broadcast_to(np.asarray(volume, dtype=float), (n,)).copy(),
        },
        schema=OHLCV_SCHEMA,
    )


def noise(seed: int, sd: float, n: int = 168) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, sd, n)


def flat() -> pl.DataFrame:
    return candles(np.zeros(168), 5.0)


def trending(seed: int = 1) -> pl.DataFrame:
    return candles(0.003 + noise(seed, 0.006), 5_000.0)


def walk(seed: int = 2, volume: float = 500.0) -> pl.DataFrame:
    return candles(noise(seed, 0.008), volume)


def by_pair(scores: list[Score]) -> dict[str, Score]:
    return {s.pair: s for s in scores}


def score_of(components: dict[str, float], moats: dict[str, float], policy: Policy, pair: str) -> Score:
    return score_components(pair, components, moats, policy.prospecting, candles=168)


def with_limits(policy: Policy, *, max_additions_per_tick: int | None = None, max_pairs: int | None = None) -> Policy:
    prospecting = policy.prospecting.model_copy(
        update={"max_additions_per_tick": max_additions_per_tick or policy.prospecting.max_additions_per_tick}
    )
    active = policy.active.model_copy(update={"max_pairs": max_pairs or policy.active.max_pairs})
    return policy.model_copy(update={"prospecting": prospecting, "active": active})


# -- the score -------------------------------------------------------------------------------------
def test_components_behave_and_scoring_is_deterministic(policy):
    cands = [
        Candidate("FLAT/USD", flat(), moats=ORDINARY),
        Candidate("TRND/USD", trending(), moats=ORDINARY),
        Candidate("WALK/USD", walk(), moats=ORDINARY),
        Candidate("WILD/USD", candles(noise(3, 0.12), 500.0), moats=ORDINARY),
    ]
    scores = by_pair(score_candidates(cands, policy.prospecting))
    assert score_candidates(cands, policy.prospecting) == score_candidates(cands, policy.prospecting)

    dead, trend, rw, wild = (scores[p].components for p in ("FLAT/USD", "TRND/USD", "WALK/USD", "WILD/USD"))
    assert dead["volatility"] == 0.0 and dead["trend"] == 0.0
    assert trend["volatility"] == 1.0 and trend["trend"] == 1.0
    assert trend["volume"] == 1.0 and trend["completeness"] == 1.0
    assert rw["volatility"] == 1.0 and rw["trend"] < 0.5  # a random walk has no trend to speak of
    assert wild["volatility"] == 0.0  # 12 % an hour is too wild to trade
    assert scores["TRND/USD"].points > scores["WALK/USD"].points > scores["FLAT/USD"].points
    for score in scores.values():
        assert set(score.components) == set(MARKET)
        assert all(0.0 <= v <= 1.0 for v in score.components.values())
        assert 0.0 <= score.points <= 8.0
        assert all(0.0 <= c <= 1.0 for c in score.confidence.values())


def test_liquidity_completeness_and_momentum():
    rw = noise(4, 0.008)
    gappy = candles(rw, 500.0).filter(pl.int_range(pl.len()) % 3 == 0)  # a third of the hours
    rising = candles(rw, np.where(np.arange(168) >= 144, 3_000.0, 500.0))  # the last day 6x the volume
    cands = [Candidate("DEEP/USD", candles(rw, 50_000.0)), Candidate("THIN/USD", candles(rw, 5.0))]
    cands += [Candidate("GAPS/USD", gappy), Candidate("RISE/USD", rising), Candidate("NONE/USD", flat().clear())]
    policy = load_policy()
    scores = by_pair(score_candidates(cands, policy.prospecting))
    deep, thin = scores["DEEP/USD"].components, scores["THIN/USD"].components
    assert deep["liquidity"] == 1.0 and deep["volume"] == 1.0
    assert thin["liquidity"] < deep["liquidity"] and thin["volume"] < deep["volume"]
    assert deep["completeness"] == 1.0 and scores["GAPS/USD"].components["completeness"] == 0.0
    assert deep["momentum"] == pytest.approx(0.5, abs=0.05)  # steady volume (turnover moves with the price)
    assert scores["RISE/USD"].components["momentum"] > 0.95
    empty = scores["NONE/USD"]
    assert empty.candles == 0 and all(v == 0.0 for v in empty.components.values())


def test_moats_count_twice_and_a_pattern_score_joins_the_trend_point(policy):
    market = walk()
    quiet, busy = Candidate("AAA/USD", market), Candidate("BBB/USD", market, moats=BUSY)
    scores = by_pair(score_candidates([quiet, busy], policy.prospecting))
    assert scores["BBB/USD"].points - scores["AAA/USD"].points == pytest.approx(2.0)  # moats: 2 of the 8 points
    for team in ("hft", "day_trade", "swing"):
        assert scores["BBB/USD"].confidence[team] - scores["AAA/USD"].confidence[team] == pytest.approx(2 / 8)

    plain = score_candidates([quiet], policy.prospecting)[0]
    skilled = score_candidates([attach([quiet], patterns={"AAA/USD": 1.0})[0]], policy.prospecting)[0]
    assert skilled.components["trend"] == pytest.approx((plain.components["trend"] + 1.0) / 2)
    assert skilled.pattern_score == 1.0 and skilled.points <= 8.0


def test_teams_weigh_the_moats_by_the_policy(policy):
    market = dict.fromkeys(MARKET, 0.6)
    feeds = {"github": 0.0, "government": 1.0, "logistics": 1.0, "corporate": 0.0}
    score = score_of(market, feeds, policy, "GOV/USD")
    assert all(sum(TEAM_MARKET_WEIGHTS[team].values()) == pytest.approx(6.0) for team in TEAMS)
    # HFT ignores government and logistics; swing weighs them most.
    assert score.confidence["hft"] == pytest.approx(3.6 / 8)
    assert score.confidence["swing"] > score.confidence["day_trade"] > score.confidence["hft"]


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="unknown moat 'weather'"):
        Candidate("ETH/USD", flat(), moats={"weather": 0.5})
    with pytest.raises(ValueError, match=r"pattern_score must be in \[0, 1\]"):
        Candidate("ETH/USD", flat(), pattern_score=1.5)
    with pytest.raises(ValueError, match="repeat a pair"):
        score_candidates([Candidate("ETH/USD", flat()), Candidate("eth-usd", flat())], load_policy().prospecting)


# -- the decision ----------------------------------------------------------------------------------
SWING_ONLY = (
    {"volume": 0.5, "volatility": 1.0, "trend": 1.0, "liquidity": 0.3, "completeness": 1.0, "momentum": 0.5},
    {"github": 0.0, "government": 1.0, "logistics": 1.0, "corporate": 0.0},
)
TWO_TEAMS = (
    {"volume": 1.0, "volatility": 1.0, "trend": 0.0, "liquidity": 1.0, "completeness": 1.0, "momentum": 0.5},
    {"github": 1.0, "government": 0.5, "logistics": 0.5, "corporate": 1.0},
)
STRONG = (dict.fromkeys(MARKET, 0.9), BUSY)


def test_a_pair_favoured_only_by_swing_is_not_added_one_favoured_by_two_teams_is(policy):
    swing = score_of(*SWING_ONLY, policy, "GOV/USD")
    assert swing.votes(0.7) == ["swing"] and swing.points >= 5.0
    two = score_of(*TWO_TEAMS, policy, "DEV/USD")
    assert two.votes(0.7) == ["hft", "day_trade"] and two.points >= 5.0

    decision = decide([swing, two], ["BTC/USD"], None, NOW, policy)
    assert decision.added == ("DEV/USD",)
    assert decision.rejected == {
        "GOV/USD": "consensus 1 of 3 teams above 0.7 (needs 2): hft 0.47, day_trade 0.62, swing 0.76"
    }
    assert decision.reasons["DEV/USD"].startswith(
        "added: points 6.00 of 8; hft 0.94, day_trade 0.77, swing 0.63; 2 of 3 teams above 0.7"
    )


def test_points_below_the_minimum_block_even_with_consensus(policy):
    lenient = policy.model_copy(
        update={"prospecting": policy.prospecting.model_copy(update={"min_confidence": 0.3, "min_points": 7.5})}
    )
    decision = decide([score_of(*TWO_TEAMS, lenient, "DEV/USD")], [], None, NOW, lenient)
    assert decision.added == ()
    assert decision.rejected == {"DEV/USD": "points 6.00 < 7.5"}


def test_never_more_than_max_pairs_active(policy):
    scores = [score_of(*STRONG, policy, p) for p in ("AAA/USD", "BBB/USD", "CCC/USD")]
    full = [f"P{i:02d}/USD" for i in range(15)]
    decision = decide(scores, full, None, NOW, policy)
    assert decision.added == ()
    assert all(
        r.startswith("at max_pairs: 15 active (limit 15); qualified with points") for r in decision.rejected.values()
    )

    generous = with_limits(policy, max_additions_per_tick=3)
    decision = decide(scores, full[:14], None, NOW, generous)
    assert decision.added == ("AAA/USD",)  # ties on points go by name
    assert decision.rejected["BBB/USD"].startswith("at max_pairs: 15 active after this tick's additions (limit 15)")
    assert decide(scores, full[:12], None, NOW, generous).added == ("AAA/USD", "BBB/USD", "CCC/USD")


def test_at_most_max_additions_per_tick(policy):
    scores = [score_of(*STRONG, policy, "AAA/USD"), score_of(*TWO_TEAMS, policy, "BBB/USD")]
    decision = decide(scores, [], None, NOW, policy)
    assert decision.added == ("AAA/USD",)
    assert decision.rejected["BBB/USD"].startswith("max 1 addition(s) per tick: ranked 2 of 2 qualified")
    assert decide(scores, [], None, NOW, with_limits(policy, max_additions_per_tick=2)).added == ("AAA/USD", "BBB/USD")


def test_no_addition_within_the_cooldown(policy):
    scores = [score_of(*STRONG, policy, "AAA/USD")]
    decision = decide(scores, ["BTC/USD"], NOW - timedelta(minutes=59), NOW, policy)
    assert decision.added == ()
    assert decision.rejected["AAA/USD"].startswith(
        "cooldown: last addition at 2024-06-01 11:31 UTC, under 60 minutes ago (next from 2024-06-01 12:31 UTC)"
    )
    assert decide(scores, ["BTC/USD"], NOW - timedelta(minutes=60), NOW, policy).added == ("AAA/USD",)
    with pytest.raises(ValueError, match="timezone-aware"):
        decide(scores, [], NOW.replace(tzinfo=None), NOW, policy)


def test_select_additions_from_candles_with_readable_reasons(policy):
    cands = [
        Candidate("BTC/USD", trending(5), moats=BUSY),
        Candidate("TRND/USD", trending(), moats=BUSY),
        Candidate("FLAT/USD", flat(), moats=BUSY),
        Candidate("GONE/USD", flat().clear(), moats=BUSY),
    ]
    decision = select_additions(cands, ["BTC-USD"], None, NOW, policy)
    assert decision.added == ("TRND/USD",)
    assert decision.rejected["BTC/USD"] == "already active"
    assert decision.rejected["GONE/USD"] == "no finished candles in the scanned window"
    # A dead market moves nothing (perfectly "liquid"): HFT alone likes it for that and the busy moats.
    assert decision.rejected["FLAT/USD"].startswith("consensus 1 of 3 teams above 0.7 (needs 2): hft ")
    assert [s.pair for s in decision.scores] == ["TRND/USD", "FLAT/USD", "GONE/USD"]
    lines = decision.lines()
    assert lines[0].startswith("TRND/USD: added: points ") and len(lines) == 4
    assert all("\n" not in line for line in lines)


# -- moat activity ---------------------------------------------------------------------------------
def daily_rows(source: str, entity: str, metric: str, values: list[float], last_day: date) -> list[tuple]:
    first = last_day - timedelta(days=len(values) - 1)
    return [
        (
            datetime.combine(first + timedelta(days=i), datetime.min.time(), UTC) + timedelta(hours=6),
            source,
            entity,
            metric,
            v,
        )
        for i, v in enumerate(values)
    ]


def test_moat_levels_compare_recent_days_with_their_own_history():
    yesterday = NOW.date() - timedelta(days=1)
    steady = [10.0, 12.0] * 14 + [11.0, 11.0, 11.0]
    spike = [10.0, 12.0] * 14 + [30.0, 30.0, 30.0]
    drop = [10.0, 12.0] * 14 + [0.0, 0.0, 0.0]
    rows = daily_rows("government", "ETH", "filings", spike, yesterday)
    rows += daily_rows("logistics", "ETH", "shipments", drop, yesterday)
    rows += daily_rows("corporate", "*", "announcements", steady, yesterday)
    rows += daily_rows("weather", "ETH", "rain", spike, yesterday)  # not a moat of the policy
    rows += [(NOW - HOUR, "government", "SOL", "filings", 99.0)]  # today's partial day is not counted
    moat = pl.DataFrame(rows, schema=MOAT_SCHEMA, orient="row")
    github = pl.DataFrame(
        {"timestamp": [NOW - timedelta(days=d) for d in range(2, 20)], "repo": "ethereum/go-ethereum", "commits": 3},
        schema_overrides={"timestamp": ACTIVITY_SCHEMA["timestamp"], "commits": pl.Int64},
    )
    obs = moat_observations(
        github, moat, {"ethereum/go-ethereum": ["ETH"], "solana-labs/solana": ["SOL"]}, ["ETH", "SOL"]
    )
    levels = moat_levels(obs, NOW)
    assert set(levels) == {"ETH", "SOL"}
    eth, sol = levels["ETH"], levels["SOL"]
    assert set(eth) == {"github", "government", "logistics", "corporate"}
    assert eth["government"] > 0.99 and eth["logistics"] < 0.01
    assert eth["corporate"] == pytest.approx(0.5) and sol["corporate"] == pytest.approx(0.5)  # "*": every asset
    assert 0.0 < eth["github"] < 1.0
    assert set(sol) == {"corporate"}  # nothing else about SOL in the window: those moats count 0


def test_read_moat_activity_from_the_stored_tables(tmp_path):
    yesterday = NOW.date() - timedelta(days=1)
    store = TableStore(tmp_path / "data")
    rows = daily_rows("government", "ETH", "filings", [2.0, 4.0] * 14 + [9.0, 9.0, 9.0], yesterday)
    store.write(pl.DataFrame(rows, schema=MOAT_SCHEMA, orient="row"), "synthetic", "moat", "2024-05")
    hours = [datetime(2024, 5, 1, tzinfo=UTC) + i * HOUR for i in range(31 * 24 + 12)]
    n = len(hours)
    day_metrics = {"contributors": 1, "open_issues": 5, "stars": 9, "dependency_entropy": 0.1, "novelty": 1.0}
    activity = pl.DataFrame(
        {"timestamp": hours, "repo": ["ethereum/go-ethereum"] * n, "commits": [i % 3 for i in range(n)]}
        | {"authors": [1] * n}
        | {name: [value] * n for name, value in day_metrics.items()},
        schema=ACTIVITY_SCHEMA,
    )
    store.write(activity, "synthetic", "github_activity", "ethereum__go-ethereum", "2024-05")

    levels = read_moat_activity(store, "synthetic", ["ETH", "SOL"], NOW, repo_map={"ethereum/go-ethereum": ["ETH"]})
    assert set(levels) == {"ETH"} and levels["ETH"]["government"] > 0.99
    assert levels["ETH"]["github"] == pytest.approx(0.5, abs=0.2)
    assert read_moat_activity(store, "ccxt", ["ETH"], NOW, repo_map={}) == {}  # no github/landing tables yet


# -- scanners --------------------------------------------------------------------------------------
def test_scan_synthetic_gives_the_inactive_pairs_recent_candles(policy):
    settings = load_settings()
    active = ["BTC/USD", "ETH/USD", "SOL/USD"]
    cands = scan_synthetic(NOW, active_pairs=active, universe=["BTC/USD", "DOT/USD", "NEAR/USD", "LINK/USD"], days=3)
    assert [c.pair for c in cands] == ["DOT/USD", "NEAR/USD", "LINK/USD"]
    for c in cands:
        assert c.hours == 72 and c.candles.height == 72 and c.candles.schema == OHLCV_SCHEMA
        assert c.candles["timestamp"].max() == NOW.replace(minute=0) - HOUR
    again = scan_synthetic(NOW, active_pairs=active, universe=["DOT/USD", "NEAR/USD", "LINK/USD"], days=3)
    assert all(a.candles.equals(b.candles) for a, b in zip(cands, again, strict=True))

    early = datetime.combine(settings.start_date, datetime.min.time(), UTC) + timedelta(hours=30)
    (young,) = scan_synthetic(early, universe=["DOT/USD"], days=3)
    assert young.candles.height == 30  # the market starts at the origin
    decision = select_additions(attach(cands, moats={"DOT": BUSY}), active, None, NOW, policy)
    assert set(decision.reasons) == {"DOT/USD", "NEAR/USD", "LINK/USD"}


@pytest.fixture
def kraken() -> Iterator[FakeKraken]:
    with FakeKraken(history_days=30) as server:
        yield server


def test_scan_exchange_against_the_fake_kraken(kraken, policy):
    settings = ExchangeSettings(
        api_url=kraken.url, timeout_ms=2_000, rate_limit_ms=0, max_retries=1, sleep=lambda s: None
    )
    exchange = make_exchange(settings)
    cands = scan_exchange(exchange, "USD", days=7, active_pairs=["BTC/USD"], now=DEFAULT_NOW, settings=settings)
    assert [c.pair for c in cands] == ["ETH/USD", "SOL/USD"]
    end = DEFAULT_NOW.replace(minute=0)
    for c in cands:
        assert c.hours == 168 and c.candles.height == 168
        rows = kraken.committed_rows(c.pair, 60, end - timedelta(days=7), end)
        assert c.candles["close"].to_list() == [float(r[4]) for r in rows]
        assert c.candles["volume"].to_list() == [float(r[6]) for r in rows]
    assert kraken.calls["AssetPairs"] >= 1 and len(kraken.ohlc_requests) == 2

    assert [c.pair for c in scan_exchange(exchange, "USD", days=1, limit=1, now=DEFAULT_NOW)] == ["BTC/USD"]
    assert scan_exchange(exchange, "EUR", now=DEFAULT_NOW) == []
    decision = select_additions(
        attach(cands, moats={"ETH": BUSY, "SOL": ORDINARY}), ["BTC/USD"], None, DEFAULT_NOW, policy
    )
    assert set(decision.reasons) == {"ETH/USD", "SOL/USD"}
    assert all(reason and "\n" not in reason for reason in decision.reasons.values())


def test_the_domain_module_does_not_import_dagster():
    code = "import sys, cyber_pipelines.vsm.prospect; sys.exit('dagster' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
