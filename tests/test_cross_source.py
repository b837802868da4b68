"""Point-in-time joins: exact visibility boundaries, and no feature row ever changes with later data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from cyber_pipelines.features.cross_source import (
    CROSS_SOURCE_COLUMNS,
    build_feature_table,
    infer_bar_length,
    join_activity,
    pivot_moat,
    repos_for_asset,
)
from cyber_pipelines.features.indicators import INDICATOR_COLUMNS
from cyber_pipelines.github.schema import ACTIVITY_SCHEMA
from cyber_pipelines.market.schema import conform_ohlcv
from cyber_pipelines.moat.schema import MOAT_SCHEMA

T0 = datetime(2024, 3, 1, tzinfo=UTC)
H = timedelta(hours=1)
REPOS = ["eth/core", "eth/tools"]


def hourly_candles(n: int, seed: int = 0, start: datetime = T0, step: timedelta = H) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    return conform_ohlcv(
        pl.DataFrame(
            {
                "timestamp": [start + i * step for i in range(n)],
                "open": close,
                "high": close * 1.01,
                "low": close * 0.99,
                "close": close,
                "volume": rng.uniform(1, 10, n),
            }
        )
    )


def activity_rows(rows: list[tuple[datetime, str, int]]) -> pl.DataFrame:
    """ACTIVITY_SCHEMA rows from (hour start, repo, commits); authors = min(commits, 3)."""
    data = {name: [] for name in ACTIVITY_SCHEMA}  # type: ignore[var-annotated]
    for ts, repo, commits in rows:
        for name, value in zip(
            ACTIVITY_SCHEMA,
            [ts, repo, commits, min(commits, 3), 5, 10, 100, 1.0, 1.0],
            strict=True,
        ):
            data[name].append(value)
    return pl.DataFrame(data, schema=ACTIVITY_SCHEMA)


def moat_rows(rows: list[tuple[datetime, str, str, str, float]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=MOAT_SCHEMA, orient="row")


def random_activity(n_hours: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [
        (T0 + h * H, repo, int(rng.poisson(3)))
        for h in range(-24, n_hours)
        for repo in [*REPOS, "sol/other"]
        if rng.random() < 0.8  # some hours are missing: they count as 0 commits
    ]
    return activity_rows(rows)


def random_moat(n_hours: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for h in range(-24, n_hours):
        ts = T0 + h * H + timedelta(minutes=int(rng.integers(0, 60)))
        rows.append((ts, "corporate", "ETH", "announcements", float(rng.poisson(0.5))))
        if rng.random() < 0.1:
            rows.append((ts, "government", "*", "filings", float(rng.poisson(2))))
        if rng.random() < 0.05:
            rows.append((ts, "logistics", "ETH", "shipments", float(rng.uniform(100, 200))))
        rows.append((ts, "corporate", "SOL", "announcements", 99.0))  # another asset: never seen
    return moat_rows(rows)


def features(candles, activity, moat, **kwargs) -> pl.DataFrame:
    return build_feature_table(candles, activity, moat, base_asset="ETH", repos=REPOS, **kwargs)


# --- join_activity: the visibility boundary ------------------------------------------------------
def test_join_activity_sees_values_known_at_decision_time_and_not_later():
    candles = hourly_candles(4)
    lag = timedelta(minutes=30)
    # decision times are 01:00, 02:00, 03:00, 04:00; a value stamped 00:30 is known at exactly 01:00
    act = pl.DataFrame(
        {
            "timestamp": [T0 + timedelta(minutes=30), T0 + timedelta(minutes=90, microseconds=1)],
            "x": [1.0, 2.0],
        }
    )
    out = join_activity(candles, act, publication_lag=lag, value_columns=["x"], prefix="a")
    assert out["a_x"].to_list() == [1.0, 1.0, 2.0, 2.0]  # 2.0 is known 1 us after 02:00
    assert out.columns == [*candles.columns, "a_x"]
    late = join_activity(candles, act, publication_lag=lag + timedelta(microseconds=1), value_columns=["x"], prefix="a")
    assert late["a_x"].to_list() == [None, 1.0, 2.0, 2.0]


def test_join_activity_carries_last_value_over_nulls_and_checks_input():
    candles = hourly_candles(3)
    act = pl.DataFrame({"timestamp": [T0, T0 + 2 * H], "x": [5.0, None], "y": [None, 7.0]})
    out = join_activity(candles, act, publication_lag=timedelta(0), value_columns=["x", "y"], prefix="p")
    assert out["p_x"].to_list() == [5.0, 5.0, 5.0]
    assert out["p_y"].to_list() == [None, 7.0, 7.0]
    with pytest.raises(ValueError, match=r"missing columns \['z'\]"):
        join_activity(candles, act, publication_lag=H, value_columns=["z"], prefix="p")
    with pytest.raises(ValueError, match="repeated timestamps"):
        join_activity(candles, pl.concat([act, act]), publication_lag=H, value_columns=["x"], prefix="p")
    with pytest.raises(ValueError, match="publication_lag must be >= 0"):
        join_activity(candles, act, publication_lag=-H, value_columns=["x"], prefix="p")
    with pytest.raises(ValueError, match="strictly increasing"):
        join_activity(candles.reverse(), act, publication_lag=H, value_columns=["x"], prefix="p")


def test_infer_bar_length():
    assert infer_bar_length(hourly_candles(5)) == H
    assert infer_bar_length(hourly_candles(5, step=timedelta(days=1))) == timedelta(days=1)
    with pytest.raises(ValueError, match="fewer than 2"):
        infer_bar_length(hourly_candles(1))


# --- GitHub activity ------------------------------------------------------------------------------
def test_github_hour_is_known_at_hour_end_plus_lag():
    candles = hourly_candles(6)
    act = activity_rows(
        [
            (T0, "eth/core", 4),
            (T0, "ETH/Tools", 1),  # repo names match case-insensitively
            (T0, "sol/other", 50),  # not mapped to ETH
            (T0 + 2 * H, "eth/core", 7),
            # hour 3 missing: 0 commits
            (T0 + 4 * H, "eth/tools", 2),
        ]
    )
    empty_moat = pl.DataFrame(schema=MOAT_SCHEMA)
    lag1 = features(candles, act, empty_moat, publication_lag=H)
    # hour 00:00 ends at 01:00 and is published at 02:00 = the decision time of the 01:00 bar
    assert lag1["gh_commits"].to_list() == [0, 5, 0, 7, 0, 2]
    assert lag1["gh_authors"].to_list() == [0, 4, 0, 3, 0, 2]
    lag0 = features(candles, act, empty_moat, publication_lag=timedelta(0))
    assert lag0["gh_commits"].to_list() == [5, 0, 7, 0, 2, 0]


def test_github_counts_in_candle_gaps_go_to_the_next_bar():
    candles = hourly_candles(6).filter(~pl.col("timestamp").is_in([T0 + 2 * H, T0 + 3 * H]))
    act = activity_rows([(T0 + h * H, "eth/core", h + 1) for h in range(6)])
    out = features(candles, act, pl.DataFrame(schema=MOAT_SCHEMA), publication_lag=timedelta(0), bar_length=H)
    # bars 00, 01, 04, 05 see hours 00, 01, {02, 03, 04}, 05
    assert out["gh_commits"].to_list() == [1, 2, 3 + 4 + 5, 6]


def test_daily_bars_sum_the_day():
    candles = hourly_candles(3, step=timedelta(days=1))
    act = activity_rows([(T0 + h * H, "eth/core", 1) for h in range(72)])
    out = features(candles, act, pl.DataFrame(schema=MOAT_SCHEMA), publication_lag=H)
    # day 1 sees hours 00..22 (hour 23 is published at 01:00 the next day)
    assert out["gh_commits"].to_list() == [23, 24, 24]


# --- moat records ---------------------------------------------------------------------------------
def test_pivot_moat_picks_the_asset_and_wildcard():
    moat = moat_rows(
        [
            (T0, "Corporate", "ETH", "Announcements", 1.0),
            (T0, "Corporate", "*", "Announcements", 9.0),  # same key: the ETH record wins
            (T0 + H, "Corporate", "*", "Announcements", 2.0),
            (T0 + H, "logistics", "SOL", "shipments", 5.0),  # other asset
            (T0 + H, "port-authority", "ETH", "Ship Calls", 3.0),
        ]
    )
    wide = pivot_moat(moat, "ETH")
    assert wide.columns == ["timestamp", "corporate_announcements", "port_authority_ship_calls"]
    assert wide.rows() == [(T0, 1.0, None), (T0 + H, 2.0, 3.0)]
    with pytest.raises(ValueError, match="repeat"):
        pivot_moat(pl.concat([moat, moat.head(1)]), "ETH")
    clash = moat_rows([(T0, "a b", "ETH", "c", 1.0), (T0, "a", "ETH", "b c", 2.0)])
    with pytest.raises(ValueError, match="clash"):
        pivot_moat(clash, "ETH")
    with pytest.raises(ValueError, match="missing columns"):
        pivot_moat(moat.drop("entity"), "ETH")


def test_moat_values_and_events_in_the_feature_table():
    candles = hourly_candles(5)
    moat = moat_rows(
        [
            (T0 + timedelta(minutes=10), "corporate", "ETH", "announcements", 2.0),
            (T0 + timedelta(minutes=50), "corporate", "*", "announcements", 1.0),
            (T0 + 2 * H, "logistics", "ETH", "shipments", 150.0),  # a level: joined, not counted
            (T0 + 2 * H, "corporate", "SOL", "announcements", 40.0),
        ]
    )
    out = features(candles, pl.DataFrame(schema=ACTIVITY_SCHEMA), moat, publication_lag=H)
    # known at 01:10 and 01:50 -> both in the 01:00 bar (decision 02:00); shipments known at 03:00
    assert out["moat_events"].to_list() == [0.0, 3.0, 0.0, 0.0, 0.0]
    assert out["moat_corporate_announcements"].to_list() == [None, 1.0, 1.0, 1.0, 1.0]
    assert out["moat_logistics_shipments"].to_list() == [None, None, 150.0, 150.0, 150.0]
    assert out["activity_count"].to_list() == [0.0, 3.0, 0.0, 0.0, 0.0]


# --- activity score -------------------------------------------------------------------------------
def test_activity_score_is_a_z_score_against_past_bars():
    n = 60
    counts = [2, 4] * 25 + [2, 4, 2, 4, 2, 30, 2, 4, 2, 4]
    candles = hourly_candles(n)
    act = activity_rows([(T0 + h * H, "eth/core", c) for h, c in enumerate(counts)])  # lag 0: bar h sees hour h
    out = features(candles, act, pl.DataFrame(schema=MOAT_SCHEMA), publication_lag=timedelta(0), score_window=20)
    assert out["activity_count"].to_list() == [float(c) for c in counts]
    assert out["activity_score"][:20].to_list() == [0.0] * 20  # the baseline needs 20 past bars
    assert out["activity_score"][20] != 0.0
    score = out["activity_score"].to_list()
    past = np.array(counts[35:55], dtype=float)  # the 20 bars before bar 55
    assert score[55] == pytest.approx((30 - past.mean()) / past.std(ddof=1))
    assert score[55] == max(score) and score[55] > 10
    # after a constant stretch the std floor (1 event) keeps the score finite
    flat = features(
        candles,
        activity_rows([(T0 + h * H, "eth/core", 3 if h < 50 else 8) for h in range(n)]),
        pl.DataFrame(schema=MOAT_SCHEMA),
        publication_lag=timedelta(0),
    )
    assert flat["activity_score"][50] == pytest.approx(5.0)
    assert flat["activity_score"].is_finite().all()


def test_feature_table_columns_and_no_nulls_after_warmup():
    n = 200
    out = features(hourly_candles(n, seed=1), random_activity(n, 1), random_moat(n, 1))
    assert out.height == n
    for col in [*INDICATOR_COLUMNS, *CROSS_SOURCE_COLUMNS]:
        assert col in out.columns
    assert out.select(CROSS_SOURCE_COLUMNS).null_count().sum_horizontal().item() == 0
    assert out.slice(49).select(INDICATOR_COLUMNS).null_count().sum_horizontal().item() == 0


def test_repos_default_to_the_config_mapping():
    assert "ethereum/go-ethereum" in repos_for_asset("ETH")
    assert repos_for_asset("SOL", {"a/b": ["SOL"], "c/d": ["ETH", "SOL"], "e/f": ["ETH"]}) == ["a/b", "c/d"]


# --- the no-look-ahead property -------------------------------------------------------------------
def perturb_after(t: datetime, candles, activity, moat, rng: np.random.Generator):
    """Change and add candles, activity and moat data stamped after ``t``; nothing at or before."""
    after = pl.col("timestamp") > t
    noise = pl.Series(rng.uniform(0.5, 1.5, candles.height))
    c2 = candles.with_columns(
        [pl.when(after).then(pl.col(c) * noise).otherwise(pl.col(c)) for c in ("open", "high", "low", "close")]
        + [pl.when(after).then(pl.col("volume") + 100).otherwise(pl.col("volume"))]
    )
    last = candles["timestamp"].max()
    c2 = pl.concat([c2, hourly_candles(10, seed=int(rng.integers(1000)), start=last + H)])
    a2 = pl.concat(
        [
            activity.with_columns(
                commits=pl.when(after).then(pl.col("commits") * 7 + 1).otherwise(pl.col("commits")),
                authors=pl.when(after).then(pl.col("authors") + 2).otherwise(pl.col("authors")),
            ),
            activity_rows([(t + H * k, REPOS[k % 2], 40 + k) for k in range(1, 5)]),  # new rows
            activity_rows([(t + timedelta(seconds=1), "eth/new", 5)]),
        ]
    )
    m2 = pl.concat(
        [
            moat.with_columns(value=pl.when(after).then(pl.col("value") + 13.0).otherwise(pl.col("value"))),
            moat_rows(
                [
                    (t + timedelta(microseconds=1), "corporate", "*", "filings", 50.0),
                    (t + timedelta(minutes=3), "government", "ETH", "new_metric", 1.0),  # a new column
                    (t + 2 * H + timedelta(seconds=7), "corporate", "ETH", "announcements", 80.0),
                ]
            ),
        ]
    )
    return c2, a2, m2


@pytest.mark.parametrize("seed", range(4))
def test_no_feature_at_or_before_t_changes_with_data_after_t(seed):
    """Default publication lag (1 h) on hourly bars: a row stamped t only uses data stamped <= t."""
    rng = np.random.default_rng(seed)
    n = 240
    candles, activity, moat = hourly_candles(n, seed), random_activity(n, seed), random_moat(n, seed)
    repos = [*REPOS, "eth/new"]
    base = build_feature_table(candles, activity, moat, base_asset="ETH", repos=repos)
    for t in [T0 + int(h) * H for h in rng.integers(0, n - 1, size=5)]:
        c2, a2, m2 = perturb_after(t, candles, activity, moat, rng)
        changed = build_feature_table(c2, a2, m2, base_asset="ETH", repos=repos)
        upto = pl.col("timestamp") <= t
        before_new = changed.filter(upto)
        assert before_new.select(base.columns).equals(base.filter(upto)), f"look-ahead at t={t}"
        new_columns = [c for c in changed.columns if c not in base.columns]
        assert new_columns == ["moat_corporate_filings", "moat_government_new_metric"]
        assert before_new.select(new_columns).null_count().sum_horizontal().item() == 2 * before_new.height
        # ... and the perturbation does reach the rows after t (the test can fail)
        after = base.filter(~upto)
        assert not changed.filter(~upto).head(after.height).select(base.columns).equals(after)


@pytest.mark.parametrize("seed", range(2))
def test_no_look_ahead_with_zero_lag_relative_to_decision_time(seed):
    """Without a publication lag a bar sees data up to its close (t + 1 h), and nothing later."""
    rng = np.random.default_rng(seed)
    n = 200
    candles, activity, moat = hourly_candles(n, seed), random_activity(n, seed), random_moat(n, seed)

    def build(candles, activity, moat):
        return build_feature_table(candles, activity, moat, base_asset="ETH", repos=REPOS, publication_lag=timedelta(0))

    base = build(candles, activity, moat)
    for t in [T0 + int(h) * H for h in rng.integers(1, n - 1, size=4)]:
        decision = t + H
        moat_after = moat.filter(pl.col("timestamp") > decision)
        extra = moat_rows([(decision + timedelta(microseconds=1), "corporate", "ETH", "announcements", 9.0)])
        c2 = candles.with_columns(
            close=pl.when(pl.col("timestamp") > t).then(pl.col("close") * 1.1).otherwise(pl.col("close"))
        ).with_columns(high=pl.max_horizontal("high", "close"))
        a2 = activity.with_columns(
            commits=pl.when(pl.col("timestamp") >= decision).then(99).otherwise(pl.col("commits"))
        )
        m2 = pl.concat([moat.filter(pl.col("timestamp") <= decision), moat_after.reverse(), extra])
        changed = build(c2, a2, m2)
        upto = pl.col("timestamp") <= t
        assert changed.filter(upto).equals(base.filter(upto)), f"look-ahead at t={t}"
        # a record published exactly at the decision time IS seen by the row (the boundary is tight)
        at_close = moat_rows([(decision, "corporate", "ETH", "announcements", 1000.0)])
        seen = build(candles, activity, pl.concat([moat, at_close]))
        row = seen.filter(pl.col("timestamp") == t)
        assert row["moat_events"].item() >= 1000.0


def test_bad_input_is_rejected():
    candles = hourly_candles(5)
    moat = pl.DataFrame(schema=MOAT_SCHEMA)
    with pytest.raises(ValueError, match=r"github activity: missing columns \['commits'\]"):
        features(candles, pl.DataFrame(schema=ACTIVITY_SCHEMA).drop("commits"), moat)
    with pytest.raises(ValueError, match="moat records: missing columns"):
        features(candles, pl.DataFrame(schema=ACTIVITY_SCHEMA), moat.drop("metric"))
    with pytest.raises(ValueError, match="publication_lag"):
        features(candles, pl.DataFrame(schema=ACTIVITY_SCHEMA), moat, publication_lag=-H)
    with pytest.raises(ValueError, match="score_window"):
        features(candles, pl.DataFrame(schema=ACTIVITY_SCHEMA), moat, score_window=1)


def _days_of_activity(n_days: int, seed: int) -> tuple[pl.DataFrame, dict]:
    """``n_days`` of stored hourly activity of one repo (random commit hours and authors), and the log."""
    from datetime import date

    from cyber_pipelines.github.activity import build_activity

    rng = np.random.default_rng(seed)
    frames, log = [], {}
    for i in range(n_days):
        day = date(2024, 3, 1) + timedelta(days=i)
        hours = rng.integers(0, 24, size=int(rng.integers(1, 12)))
        commits = [
            (datetime(day.year, day.month, day.day, int(h), tzinfo=UTC), f"dev{rng.integers(0, 30)}") for h in hours
        ]
        log[day] = commits
        frames.append(build_activity("o/r", day, commits, open_issues=int(rng.integers(0, 9)), stars=10 + i))
    return pl.concat(frames), log


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_day_metrics_are_visible_only_after_their_day_ends_plus_the_lag(seed):
    from cyber_pipelines.github.activity import DAY_METRICS, DAY_METRICS_LAG, point_in_time_activity

    stored, log = _days_of_activity(6, seed)
    pit = point_in_time_activity(stored)
    assert pit.height == stored.height and timedelta(hours=1) == DAY_METRICS_LAG
    # hourly counts stay at their commit hour
    assert pit["commits"].to_list() == stored["commits"].to_list()
    assert pit["authors"].to_list() == stored["authors"].to_list()
    for row in pit.iter_rows(named=True):
        ts, shown = row["timestamp"], row["day_metrics_date"]
        today = ts.date()
        # never day D's metrics on a row of day D: D-1's from 01:00, D-2's at 00:00
        expected = today - timedelta(days=1 if ts.hour >= 1 else 2)
        assert shown == (expected if expected in log else None)
        if shown is None:
            assert all(row[c] is None for c in DAY_METRICS)
            continue
        assert shown < today  # so contributors at 00:00 never counts an author who commits later that day
        assert row["contributors"] == len({a for _, a in log[shown]})
        source = stored.filter(pl.col("timestamp").dt.date() == shown).row(0, named=True)
        assert all(row[c] == source[c] for c in DAY_METRICS)


def test_day_metrics_with_no_lag_show_the_previous_day_from_midnight():
    from cyber_pipelines.github.activity import point_in_time_activity

    stored, _ = _days_of_activity(3, seed=4)
    pit = point_in_time_activity(stored, lag=timedelta(0))
    midnight = pit.filter(pl.col("timestamp").dt.hour() == 0)
    assert midnight["day_metrics_date"].to_list() == [None, *stored["timestamp"].dt.date().unique().sort()[:2]]
    with pytest.raises(ValueError, match="lag"):
        point_in_time_activity(stored, lag=timedelta(hours=-1))


def test_stored_day_metrics_would_leak_and_the_point_in_time_view_does_not():
    """The finding it fixes: the stored row at 00:00 already counts the day's later authors."""
    from cyber_pipelines.github.activity import point_in_time_activity

    stored, log = _days_of_activity(4, seed=7)
    pit = point_in_time_activity(stored)
    leaks = 0
    for day, commits in log.items():
        at_midnight = stored.filter(pl.col("timestamp") == datetime(day.year, day.month, day.day, tzinfo=UTC))
        authors_later = {a for t, a in commits if t.hour >= 1}
        leaks += at_midnight["contributors"][0] == len({a for _, a in commits}) and bool(authors_later)
        shown = pit.filter(pl.col("timestamp").dt.date() == day)["day_metrics_date"].drop_nulls()
        assert (shown < day).all()
    assert leaks >= 3
