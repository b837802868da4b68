"""S4 intelligence: prospecting. Score candidate pairs on 8 points, let three teams vote, pick additions.

The score (every component in [0, 1]):

- six market components, 1 point each, from a candidate's hourly candles over the scanned window:
  ``volume`` (turnover in the quote currency, ranked among the candidates), ``volatility`` (sd of hourly
  log returns inside a tradable band: 0 up to 0.1 %, 1 from 0.4 % to 2 %, 0 from 6 %, log-linear
  between), ``trend`` (|t| of the log-price slope under random-walk errors, i.e. the mean hourly return
  over its standard error: 0 at |t| <= 1, 1 at |t| >= 3; an OLS t on price levels would be large for
  any random walk), ``liquidity`` (inverse Amihud illiquidity, summed |return| per unit of turnover,
  ranked), ``completeness`` (share of the window's hours with a traded candle: 0 at 50 % or less, 1 at
  100 %), ``momentum`` (turnover per hour over the last 24 hours, r, against the earlier hours, e:
  r² / (r² + e²); 0.5 when equal);
- cross-moat activity, 2 points (weighted 2x): each moat's activity level in [0, 1] (``moat_levels``:
  its recent days against its own history, a z-score through a logistic; 0.5 is ordinary activity, a
  moat without data counts 0), averaged with a team's moat weights (policy ``prospecting.teams``), x 2;
- the pattern layer, when present: a candidate's ``pattern_score`` in [0, 1] (e.g. the analog forecast
  skill of its windows) replaces the ``trend`` point by the mean of trend and pattern score, both being
  evidence that the pair is predictable. The total stays 8.

Teams: each weighs the market components with ``TEAM_MARKET_WEIGHTS`` (summing to 6; HFT favours
liquidity and volume, swing the trend, day trade is even) and the moats with the policy's weights
(HFT ignores government and logistics, swing favours them). A team's confidence is its weighted score
/ 8. A pair's ``points`` are the neutral score (every component weight 1, the four moats equally).
A pair qualifies when at least ``consensus`` teams have confidence > ``min_confidence`` and its points
are >= ``min_points``.

Selection (``select_additions``): qualified pairs best first (points), at most ``max_additions_per_tick``
per call, never above ``active.max_pairs`` active, and none while the last addition is under
``active.cooldown_minutes`` old (the pairs added by one call count as one addition). Every other
candidate gets a one-line reason.

Scanners (data in, no Dagster): ``scan_synthetic`` (the seeded market simulator) and ``scan_exchange``
(ccxt ``load_markets`` plus recent finished candles); ``read_moat_activity`` reads the stored GitHub
activity and moat tables; ``attach`` puts moat levels and pattern scores on candidates.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import polars as pl

from cyber_pipelines.config import Settings, load_repo_map, load_settings
from cyber_pipelines.features.inputs import companion_sources
from cyber_pipelines.github.schema import ACTIVITY_SCHEMA
from cyber_pipelines.keys import normalize_pair, pair_base
from cyber_pipelines.market.schema import OHLCV_COLUMNS, OHLCV_SCHEMA, empty_ohlcv
from cyber_pipelines.moat.schema import MOAT_SCHEMA
from cyber_pipelines.vsm.policy import MOATS, TEAMS, Policy, ProspectingPolicy

if TYPE_CHECKING:
    import ccxt

    from cyber_pipelines.market.exchange import ExchangeSettings
    from cyber_pipelines.storage import TableStore

log = logging.getLogger(__name__)

MARKET = ("volume", "volatility", "trend", "liquidity", "completeness", "momentum")
MOAT_POINTS = 2.0
TOTAL_POINTS = len(MARKET) + MOAT_POINTS  # 8

# How each team weighs the market components (each row sums to 6, the market's points).
TEAM_MARKET_WEIGHTS: dict[str, dict[str, float]] = {
    "hft": {"volume": 1.5, "volatility": 1.0, "trend": 0.25, "liquidity": 1.75, "completeness": 1.0, "momentum": 0.5},
    "day_trade": dict.fromkeys(MARKET, 1.0),
    "swing": {"volume": 0.75, "volatility": 1.0, "trend": 2.0, "liquidity": 0.5, "completeness": 1.0, "momentum": 0.75},
}

VOL_BAND = (0.001, 0.004, 0.02, 0.06)  # hourly sd: dead up to [0], full in [1]..[2], wild from [3]
TREND_T = (1.0, 3.0)  # |t| at which the trend point starts and is full
COMPLETE_FLOOR = 0.5  # share of hours at or below which completeness scores 0
RECENT_HOURS = 24  # momentum: the last this many hours against the earlier ones
DEFAULT_DAYS = 7

# Candidate pairs of the synthetic market: the assets it knows (and the configured repos inform) and a few more.
SYNTHETIC_UNIVERSE = (
    "BTC/USD",
    "ETH/USD",
    "SOL/USD",
    "DOT/USD",
    "NEAR/USD",
    "ATOM/USD",
    "UNI/USD",
    "AAVE/USD",
    "COMP/USD",
    "LINK/USD",
    "ADA/USD",
    "AVAX/USD",
)


# -- candidates and scores -----------------------------------------------------------------------
@dataclass(frozen=True)
class Candidate:
    """A pair that could be added: its recent hourly candles over a window of ``hours`` hours, the
    activity level of each moat of its base asset (missing = 0) and, when the pattern layer has one,
    its pattern score."""

    pair: str
    candles: pl.DataFrame
    hours: int = DEFAULT_DAYS * 24
    moats: Mapping[str, float] = field(default_factory=dict)
    pattern_score: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "pair", normalize_pair(self.pair))
        if self.hours < 1:
            raise ValueError(f"{self.pair}: hours must be >= 1, got {self.hours}")
        missing = [c for c in OHLCV_COLUMNS if c not in self.candles.columns]
        if missing:
            raise ValueError(f"{self.pair}: candles lack columns {missing}")
        for moat, level in self.moats.items():
            if moat not in MOATS:
                raise ValueError(f"{self.pair}: unknown moat {moat!r}; expected one of {', '.join(MOATS)}")
            _check_unit(level, f"{self.pair}: moat {moat} level")
        if self.pattern_score is not None:
            _check_unit(self.pattern_score, f"{self.pair}: pattern_score")


@dataclass(frozen=True)
class Score:
    """A candidate's score: components and moat levels in [0, 1], neutral points of 8, team confidences."""

    pair: str
    components: dict[str, float]
    moats: dict[str, float]
    points: float
    confidence: dict[str, float]
    candles: int = 0
    pattern_score: float | None = None

    def votes(self, min_confidence: float) -> list[str]:
        """The teams whose confidence is above ``min_confidence``."""
        return [team for team in TEAMS if self.confidence[team] > min_confidence]

    def summary(self) -> str:
        teams = ", ".join(f"{team} {self.confidence[team]:.2f}" for team in TEAMS)
        return f"points {self.points:.2f} of {TOTAL_POINTS:g}; {teams}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "pair": self.pair,
            "points": round(self.points, 4),
            "confidence": {t: round(c, 4) for t, c in self.confidence.items()},
            "components": {k: round(v, 4) for k, v in self.components.items()},
            "moats": {k: round(v, 4) for k, v in self.moats.items()},
            "candles": self.candles,
            "pattern_score": self.pattern_score,
        }


def score_components(
    pair: str,
    components: Mapping[str, float],
    moats: Mapping[str, float],
    policy: ProspectingPolicy,
    *,
    candles: int = 0,
    pattern_score: float | None = None,
) -> Score:
    """Neutral points and each team's confidence from the six market components and the moat levels."""
    market = {name: _check_unit(components[name], f"{pair}: {name}") for name in MARKET}
    levels = {moat: _check_unit(moats.get(moat, 0.0), f"{pair}: moat {moat}") for moat in MOATS}
    confidence = {}
    for team in TEAMS:
        weights = policy.teams[team].model_dump()
        total = sum(weights.values())
        moat_part = sum(weights[m] * levels[m] for m in MOATS) / total if total > 0 else 0.0
        market_part = sum(TEAM_MARKET_WEIGHTS[team][name] * market[name] for name in MARKET)
        confidence[team] = (market_part + MOAT_POINTS * moat_part) / TOTAL_POINTS
    points = sum(market.values()) + MOAT_POINTS * sum(levels.values()) / len(MOATS)
    return Score(normalize_pair(pair), market, levels, points, confidence, candles, pattern_score)


def market_stats(candidates: Sequence[Candidate]) -> pl.DataFrame:
    """One row per candidate (in order): turnover, sigma, trend_t, amihud, traded (share of hours),
    recent and earlier turnover per hour, candles (null figures for a candidate without candles)."""
    frames = [
        c.candles.select(OHLCV_COLUMNS)
        .cast(OHLCV_SCHEMA)  # type: ignore[arg-type]
        .unique("timestamp", keep="last")
        .sort("timestamp")
        .with_columns(pair=pl.lit(c.pair), hours=pl.lit(c.hours))
        for c in candidates
    ]
    candles = pl.concat([empty_ohlcv().with_columns(pair=pl.lit(""), hours=pl.lit(1)), *frames])
    ret = pl.col("ret")
    recent = pl.col("timestamp") > pl.col("timestamp").max() - timedelta(hours=RECENT_HOURS)
    stats = (
        candles.filter(pl.col("close") > 0)
        .with_columns(
            turnover=pl.col("close") * pl.col("volume"),
            ret=pl.col("close").log().diff().over("pair", order_by="timestamp"),
        )
        .group_by("pair")
        .agg(
            turnover=pl.col("turnover").sum(),
            sigma=ret.std(),
            trend_t=ret.mean() / ret.std() * ret.count().sqrt(),
            amihud=pl.when(pl.col("turnover").sum() > 0).then(ret.abs().sum() / pl.col("turnover").sum()),
            traded=(pl.col("volume") > 0).sum() / pl.col("hours").first(),
            recent=pl.col("turnover").filter(recent).mean(),
            earlier=pl.col("turnover").filter(~recent).mean(),
            candles=pl.len(),
        )
    )
    order = pl.DataFrame({"pair": [c.pair for c in candidates]}, schema={"pair": pl.String})
    joined = order.join(stats, on="pair", how="left", maintain_order="left")
    return joined.with_columns(pl.col("candles").fill_null(0))


def score_candidates(candidates: Sequence[Candidate], policy: ProspectingPolicy) -> list[Score]:
    """Score every candidate (ranked components among these candidates); best first."""
    pairs = [c.pair for c in candidates]
    if len(set(pairs)) != len(pairs):
        raise ValueError(f"candidates repeat a pair: {sorted({p for p in pairs if pairs.count(p) > 1})}")
    if not candidates:
        return []
    pattern = pl.Series("pattern", [c.pattern_score for c in candidates], dtype=pl.Float64)
    trend = _ramp(pl.col("trend_t").abs(), *TREND_T)
    components = (
        market_stats(candidates)
        .with_columns(pattern)
        .select(
            "pair",
            "candles",
            "pattern",
            volume=_rank(pl.col("turnover")),
            volatility=_log_band(pl.col("sigma"), VOL_BAND),
            trend=pl.when(pl.col("pattern").is_not_null()).then((trend + pl.col("pattern")) / 2).otherwise(trend),
            liquidity=_rank(-pl.col("amihud")),
            completeness=_ramp(pl.col("traded"), COMPLETE_FLOOR, 1.0),
            momentum=pl.when(pl.col("recent").is_null() | (pl.col("recent") == 0))
            .then(0.0)
            .when(pl.col("earlier").is_null())
            .then(0.5)
            .otherwise(pl.col("recent") ** 2 / (pl.col("recent") ** 2 + pl.col("earlier") ** 2)),
        )
        .with_columns(pl.col(MARKET).fill_nan(0.0).fill_null(0.0).clip(0.0, 1.0))
    )
    scores = [
        score_components(row["pair"], row, c.moats, policy, candles=row["candles"], pattern_score=row["pattern"])
        for row, c in zip(components.iter_rows(named=True), candidates, strict=True)
    ]
    return sorted(scores, key=_rank_key)


# -- decision --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Decision:
    """What one prospecting tick decided: the pairs to add (best first), why every other was not."""

    added: tuple[str, ...]
    rejected: dict[str, str]
    scores: tuple[Score, ...]  # every scored candidate, best first
    reasons: dict[str, str] = field(default_factory=dict)  # every candidate: why added or not

    def lines(self) -> list[str]:
        """One readable line per candidate, the added ones first."""
        return [f"{pair}: {reason}" for pair, reason in self.reasons.items()]


def decide(
    scores: Sequence[Score],
    active_pairs: Iterable[str],
    last_added_at: datetime | None,
    now: datetime,
    policy: Policy,
) -> Decision:
    """Apply consensus, points, max active pairs, cooldown and the per-tick limit to scored candidates."""
    rules, limits = policy.prospecting, policy.active
    active = {normalize_pair(p) for p in active_pairs}
    now = _utc(now, "now")
    reasons: dict[str, str] = {}
    qualified: list[Score] = []
    for score in sorted(scores, key=_rank_key):
        if score.pair in active:
            reasons[score.pair] = "already active"
        elif score.candles == 0:
            reasons[score.pair] = "no finished candles in the scanned window"
        else:
            failures = _failures(score, rules)
            if failures:
                reasons[score.pair] = "; ".join(failures)
            else:
                qualified.append(score)

    cooldown = timedelta(minutes=limits.cooldown_minutes)
    since = None if last_added_at is None else _utc(last_added_at, "last_added_at")
    cooling = since is not None and now - since < cooldown
    room = max(0, limits.max_pairs - len(active))
    allowed = 0 if cooling else min(room, rules.max_additions_per_tick)
    added: list[str] = []
    for rank, score in enumerate(qualified, start=1):
        votes = score.votes(rules.min_confidence)
        merit = f"{score.summary()}; {len(votes)} of {len(TEAMS)} teams above {rules.min_confidence:g}"
        if len(added) < allowed:
            added.append(score.pair)
            reasons[score.pair] = f"added: {merit}"
        elif cooling and since is not None:
            reasons[score.pair] = (
                f"cooldown: last addition at {_clock(since)}, under {limits.cooldown_minutes:g} minutes ago "
                f"(next from {_clock(since + cooldown)}); qualified with {merit}"
            )
        elif len(added) >= room:
            after = " after this tick's additions" if added else ""
            reasons[score.pair] = (
                f"at max_pairs: {len(active) + len(added)} active{after} (limit {limits.max_pairs}); "
                f"qualified with {merit}"
            )
        else:
            reasons[score.pair] = (
                f"max {rules.max_additions_per_tick} addition(s) per tick: ranked {rank} of {len(qualified)} "
                f"qualified; {merit}"
            )
    ordered = {pair: reasons[pair] for pair in added} | {p: r for p, r in reasons.items() if p not in added}
    rejected = {pair: reason for pair, reason in ordered.items() if pair not in added}
    return Decision(tuple(added), rejected, tuple(sorted(scores, key=_rank_key)), ordered)


def select_additions(
    candidates: Sequence[Candidate],
    active_pairs: Iterable[str],
    last_added_at: datetime | None,
    now: datetime,
    policy: Policy,
) -> Decision:
    """Score the candidates that are not active (ranks among them alone) and decide which to add."""
    active = {normalize_pair(p) for p in active_pairs}
    fresh = [c for c in candidates if c.pair not in active]
    decision = decide(score_candidates(fresh, policy.prospecting), active, last_added_at, now, policy)
    already = {c.pair: "already active" for c in candidates if c.pair in active}
    return replace(
        decision,
        rejected={**decision.rejected, **already},
        reasons={**decision.reasons, **already},
    )


def _failures(score: Score, rules: ProspectingPolicy) -> list[str]:
    votes = score.votes(rules.min_confidence)
    failures = []
    if len(votes) < rules.consensus:
        teams = ", ".join(f"{team} {score.confidence[team]:.2f}" for team in TEAMS)
        failures.append(
            f"consensus {len(votes)} of {len(TEAMS)} teams above {rules.min_confidence:g} "
            f"(needs {rules.consensus}): {teams}"
        )
    if score.points < rules.min_points:
        failures.append(f"points {score.points:.2f} < {rules.min_points:g}")
    return failures


def _rank_key(score: Score) -> tuple[float, float, str]:
    return (-score.points, -sum(score.confidence.values()), score.pair)


# -- moat activity ---------------------------------------------------------------------------------
def moat_observations(
    github: pl.DataFrame,
    moat: pl.DataFrame,
    repo_map: Mapping[str, Sequence[str]],
    assets: Iterable[str],
) -> pl.DataFrame:
    """Long observations (timestamp, moat, asset, metric, value) of ``assets``: GitHub commits of the repos
    that inform each asset (``repo_map``: repo -> assets) and moat records by source (entity ``*`` counts
    for every asset; sources other than the policy's moats are left out)."""
    wanted = sorted(set(assets))
    repos = pl.DataFrame(
        [(repo, a) for repo, mapped in repo_map.items() for a in mapped if a in wanted],
        schema={"repo": pl.String, "asset": pl.String},
        orient="row",
    )
    commits = github.select("timestamp", "repo", value=pl.col("commits").cast(pl.Float64)).join(repos, on="repo")
    records = (
        moat.filter(pl.col("source").is_in(MOATS))
        .with_columns(asset=pl.when(pl.col("entity") == "*").then(pl.lit(wanted)).otherwise(pl.concat_list("entity")))
        .explode("asset")
        .filter(pl.col("asset").is_in(wanted))
    )
    columns = ["timestamp", "moat", "asset", "metric", "value"]
    return pl.concat(
        [
            commits.select("timestamp", moat=pl.lit("github"), asset="asset", metric=pl.lit("commits"), value="value"),
            records.select("timestamp", moat="source", asset="asset", metric="metric", value=pl.col("value")),
        ]
    ).select(columns)


def moat_levels(
    observations: pl.DataFrame, now: datetime, *, recent_days: int = 3, history_days: int = 28
) -> dict[str, dict[str, float]]:
    """asset -> moat -> activity level in [0, 1] from long observations (``moat_observations``).

    Per (moat, asset, metric): daily sums over the whole UTC days before ``now``'s day (a day without
    rows counts 0); z = (mean of the last ``recent_days`` days - mean of the ``history_days`` before) / sd
    of those; level = logistic(z), 0.5 when the history cannot tell; the metrics of a moat averaged.
    A moat with no observation in the window is absent (a candidate counts it 0).
    """
    if recent_days < 1 or history_days < 2:
        raise ValueError(f"recent_days must be >= 1 and history_days >= 2, got {recent_days}, {history_days}")
    today = _utc(now, "now").date()
    first = today - timedelta(days=recent_days + history_days)
    split = today - timedelta(days=recent_days)
    daily = (
        observations.with_columns(day=pl.col("timestamp").dt.date())
        .filter(pl.col("day").is_between(first, today, closed="left"))
        .group_by("moat", "asset", "metric", "day")
        .agg(pl.col("value").sum())
    )
    days = pl.DataFrame({"day": pl.date_range(first, today - timedelta(days=1), eager=True)})
    grid = daily.select("moat", "asset", "metric").unique().join(days, how="cross")
    recent = pl.col("day") >= split
    levels = (
        grid.join(daily, on=["moat", "asset", "metric", "day"], how="left")
        .with_columns(pl.col("value").fill_null(0.0))
        .group_by("moat", "asset", "metric")
        .agg(
            now=pl.col("value").filter(recent).mean(),
            mean=pl.col("value").filter(~recent).mean(),
            sd=pl.col("value").filter(~recent).std(),
        )
        .with_columns(
            z=pl.when(pl.col("sd") > 0)
            .then((pl.col("now") - pl.col("mean")) / pl.col("sd"))
            .when(pl.col("now") > pl.col("mean"))
            .then(6.0)
            .when(pl.col("now") < pl.col("mean"))
            .then(-6.0)
            .otherwise(0.0)
            .clip(-6.0, 6.0)
        )
        .with_columns(level=1.0 / (1.0 + (-pl.col("z")).exp()))
        .group_by("asset", "moat")
        .agg(pl.col("level").mean())
        .sort("asset", "moat")
    )
    out: dict[str, dict[str, float]] = {}
    for asset, moat, level in levels.iter_rows():
        out.setdefault(asset, {})[moat] = float(level)
    return out


def read_moat_activity(
    store: TableStore,
    market_source: str,
    assets: Iterable[str],
    now: datetime,
    *,
    repo_map: Mapping[str, Sequence[str]] | None = None,
    recent_days: int = 3,
    history_days: int = 28,
) -> dict[str, dict[str, float]]:
    """``moat_levels`` of ``assets`` from the stored GitHub activity and moat tables that go with
    ``market_source`` (synthetic with synthetic; ccxt and landing with github and landing)."""
    github_source, moat_source = companion_sources(market_source)
    if repo_map is None:
        repo_map = load_repo_map()
    end = datetime.combine(_utc(now, "now").date(), datetime.min.time(), UTC)
    start = end - timedelta(days=recent_days + history_days)
    github = _scan_window(store, github_source, "github_activity", ["timestamp", "repo", "commits"], start, end)
    moat = _scan_window(store, moat_source, "moat", ["timestamp", "source", "entity", "metric", "value"], start, end)
    observations = moat_observations(github, moat, repo_map, assets)
    return moat_levels(observations, now, recent_days=recent_days, history_days=history_days)


def _scan_window(
    store: TableStore, source: str, table: str, columns: list[str], start: datetime, end: datetime
) -> pl.DataFrame:
    schema = {**ACTIVITY_SCHEMA, **MOAT_SCHEMA}
    try:
        frame = store.scan(source, table).select(columns).filter(pl.col("timestamp").is_between(start, end, "left"))
        return frame.collect()
    except FileNotFoundError:
        return pl.DataFrame(schema={c: schema[c] for c in columns})


def attach(
    candidates: Iterable[Candidate],
    moats: Mapping[str, Mapping[str, float]] | None = None,
    patterns: Mapping[str, float] | None = None,
) -> list[Candidate]:
    """The candidates with moat levels (by base asset, as ``moat_levels`` gives them) and pattern scores
    (by pair) put on them."""
    moats, patterns = moats or {}, {normalize_pair(p): s for p, s in (patterns or {}).items()}
    return [
        replace(
            c, moats=dict(moats.get(pair_base(c.pair), c.moats)), pattern_score=patterns.get(c.pair, c.pattern_score)
        )
        for c in candidates
    ]


# -- scanners --------------------------------------------------------------------------------------
def scan_synthetic(
    now: datetime,
    *,
    active_pairs: Iterable[str] = (),
    universe: Sequence[str] = SYNTHETIC_UNIVERSE,
    days: int = DEFAULT_DAYS,
    settings: Settings | None = None,
) -> list[Candidate]:
    """Candidates from the seeded synthetic market: the finished hourly candles of the last ``days`` days
    before ``now`` of each pair of ``universe`` that is not active (the pipeline config's settings)."""

    settings = settings or load_settings()
    synth = settings.synthetic
    active = {normalize_pair(p) for p in active_pairs}
    start, end = _window(now, days)
    origin = datetime.combine(settings.start_date, datetime.min.time(), UTC)
    first, last = max(start, origin), end - timedelta(hours=1)
    candidates = []
    for pair in dict.fromkeys(normalize_pair(p) for p in universe):
        if pair in active:
            continue
        candles = empty_ohlcv()
        if last >= first:
            candles = synth.ohlcv(pair, first.date(), last.date(), settings.start_date).filter(
                pl.col("timestamp").is_between(start, end, "left")
            )
        candidates.append(Candidate(pair, candles, hours=days * 24))
    return candidates


def scan_exchange(
    exchange: ccxt.Exchange,
    quote: str = "USD",
    days: int = DEFAULT_DAYS,
    limit: int | None = None,
    *,
    active_pairs: Iterable[str] = (),
    now: datetime | None = None,
    settings: ExchangeSettings | None = None,
) -> list[Candidate]:
    """Candidates from an exchange through ccxt: its active spot markets quoted in ``quote`` (``load_markets``)
    that are not active, in the exchange's order, at most ``limit`` of them, each with its finished hourly
    candles of the last ``days`` days before ``now`` (default: this machine's clock for the window, the
    exchange's for which candle is finished). A pair the exchange refuses as unknown gets no candles."""
    from cyber_pipelines.market.exchange import UnknownPairError, fetch_ohlcv_range, list_markets

    active = {normalize_pair(p) for p in active_pairs}
    pairs = []
    for symbol in list_markets(exchange, settings=settings):
        if exchange.markets[symbol].get("quote") != quote.upper():
            continue
        try:
            pair = normalize_pair(symbol)
        except ValueError:
            continue  # a symbol the pipeline cannot key (e.g. with a dot or a suffix)
        if pair not in active:
            pairs.append(pair)
    start, end = _window(now or datetime.now(UTC), days)
    candidates = []
    for pair in pairs[:limit]:
        try:
            candles = fetch_ohlcv_range(exchange, pair, start, end, "1h", now=now, settings=settings)
        except UnknownPairError as exc:
            log.warning("prospecting: %s", exc)
            candles = empty_ohlcv()
        candidates.append(Candidate(pair, candles, hours=days * 24))
    return candidates


# -- helpers ---------------------------------------------------------------------------------------
def _window(now: datetime, days: int) -> tuple[datetime, datetime]:
    """``[end - days, end)`` with ``end`` = ``now`` floored to the hour: the finished hours."""
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    end = _utc(now, "now").replace(minute=0, second=0, microsecond=0)
    return end - timedelta(days=days), end


def _rank(x: pl.Expr) -> pl.Expr:
    """Share of the (non-null) values at or below each: the best gets 1."""
    return x.rank("max") / x.count()


def _ramp(x: pl.Expr, lo: float, hi: float) -> pl.Expr:
    """0 at or below ``lo``, 1 at or above ``hi``, linear between."""
    return ((x - lo) / (hi - lo)).clip(0.0, 1.0)


def _log_band(x: pl.Expr, band: tuple[float, float, float, float]) -> pl.Expr:
    """1 inside ``band[1]..band[2]``, 0 outside ``band[0]..band[3]``, linear in log(x) between."""
    dead, low, high, wild = (math.log(b) for b in band)
    lx = x.log()
    return pl.min_horizontal(_ramp(lx, dead, low), 1.0 - _ramp(lx, high, wild))


def _check_unit(value: float, what: str) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:  # NaN fails too
        raise ValueError(f"{what} must be in [0, 1], got {value}")
    return value


def _utc(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got naive {moment.isoformat()}")
    return moment.astimezone(UTC)


def _clock(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")
