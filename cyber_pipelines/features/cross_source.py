"""Point-in-time joins of GitHub and moat activity onto a pair's candles (no look-ahead).

Time convention. A candle's ``timestamp`` is the bar's open; its close (and every indicator of that row)
is final at the bar's *decision time* ``timestamp + bar_length``. A row may use an outside value only if
that value was known at the decision time:

* a moat record is known at ``timestamp + publication_lag`` (its timestamp is the publication time; the
  lag adds ingest delay);
* an hourly GitHub row (``timestamp`` = hour start) is final at the hour's end, so it is known at
  ``timestamp + 1h + publication_lag``.

The as-of join is inclusive: a value known exactly at the decision time is visible to that row.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import timedelta

import polars as pl

from cyber_pipelines.features.indicators import add_indicators
from cyber_pipelines.github.schema import ACTIVITY_SCHEMA
from cyber_pipelines.moat.schema import MOAT_KEY, MOAT_SCHEMA

HOUR = timedelta(hours=1)
TS = pl.Datetime("us", "UTC")
DEFAULT_SCORE_WINDOW = 168  # bars in the activity_score baseline (one week of hourly bars)
SCORE_MIN_BARS = 24  # bars the baseline needs before activity_score leaves 0
# Moat metrics whose values count events (summed into the activity); others are levels (joined as-of).
DEFAULT_MOAT_COUNT_METRICS: tuple[str, ...] = ("announcements", "filings")
CROSS_SOURCE_COLUMNS = ["gh_commits", "gh_authors", "moat_events", "activity_count", "activity_score"]


def _require(df: pl.DataFrame, columns: Collection[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: missing columns {missing}; have {df.columns}")


def infer_bar_length(candles: pl.DataFrame) -> timedelta:
    """The most common step between consecutive candle timestamps."""
    if candles.height < 2:
        raise ValueError("cannot infer the bar length from fewer than 2 candles; pass bar_length")
    step = candles["timestamp"].diff().drop_nulls().mode().min()
    if not isinstance(step, timedelta) or step <= timedelta(0):
        raise ValueError(f"candles: timestamps must be strictly increasing (most common step {step!r})")
    return step


def _decision_times(candles: pl.DataFrame, bar_length: timedelta | None) -> pl.DataFrame:
    """``timestamp`` and ``decision`` (= timestamp + bar length) of each candle, checked and sorted."""
    _require(candles, ["timestamp"], "candles")
    ts = candles.select(pl.col("timestamp").cast(TS))
    if ts["timestamp"].null_count():
        raise ValueError("candles: null timestamps")
    if ts.height > 1 and not (ts["timestamp"].diff().drop_nulls() > timedelta(0)).all():
        raise ValueError("candles: timestamps must be strictly increasing (sorted, no duplicates)")
    bar = bar_length if bar_length is not None else infer_bar_length(ts)
    return ts.with_columns(decision=pl.col("timestamp") + bar)


def join_activity(
    candles: pl.DataFrame,
    activity: pl.DataFrame,
    *,
    publication_lag: timedelta,
    value_columns: Sequence[str],
    prefix: str,
    bar_length: timedelta | None = None,
) -> pl.DataFrame:
    """``candles`` plus ``<prefix>_<column>``: the last value known at each bar's decision time.

    ``activity.timestamp`` is when a row's values became final; a row is known at ``timestamp +
    publication_lag`` and seen by a bar iff that is ``<= bar timestamp + bar_length`` (inferred from the
    candles when ``None``). A null value means "no new observation": the previous value carries on.
    Bars before the first known row get nulls.
    """
    _require(activity, ["timestamp", *value_columns], "activity")
    if publication_lag < timedelta(0):
        raise ValueError(f"publication_lag must be >= 0, got {publication_lag}")
    bars = _decision_times(candles, bar_length)
    known = activity.select(pl.col("timestamp").cast(TS), *value_columns).drop_nulls("timestamp").sort("timestamp")
    if known["timestamp"].is_duplicated().any():
        raise ValueError(f"activity for '{prefix}': repeated timestamps; aggregate them before the join")
    known = known.select(
        (pl.col("timestamp") + publication_lag).alias("_known_at"),
        *[pl.col(c).forward_fill().alias(f"{prefix}_{c}") for c in value_columns],
    )
    joined = bars.join_asof(known, left_on="decision", right_on="_known_at", strategy="backward")
    return pl.concat([candles, joined.drop("timestamp", "decision", "_known_at")], how="horizontal")


def _sum_known_per_bar(bars: pl.DataFrame, events: pl.DataFrame, columns: Sequence[str]) -> pl.DataFrame:
    """Per bar, the sum of event values that became known in ``(previous decision, decision]``.

    ``events`` has ``_known_at`` and numeric ``columns``; the first bar's window starts at its open.
    Cumulative sums as of both window ends, so gaps in the candles lose no events. No events = 0.
    """
    cum = (
        events.drop_nulls("_known_at")
        .group_by("_known_at")
        .agg(pl.col(c).sum() for c in columns)
        .sort("_known_at")
        .with_columns(pl.col(c).cum_sum().alias(f"_cum_{c}") for c in columns)
        .drop(columns)
    )
    windows = bars.with_columns(_start=pl.col("decision").shift(1).fill_null(pl.col("timestamp")))
    at_end = windows.join_asof(cum, left_on="decision", right_on="_known_at", strategy="backward")
    at_start = windows.join_asof(cum, left_on="_start", right_on="_known_at", strategy="backward")
    return pl.DataFrame({c: at_end[f"_cum_{c}"].fill_null(0) - at_start[f"_cum_{c}"].fill_null(0) for c in columns})


def _safe_name(column: str) -> pl.Expr:
    """Lower-case letters and digits, other runs replaced by ``_``: ``"Port Calls"`` -> ``port_calls``."""
    return pl.col(column).str.to_lowercase().str.replace_all(r"[^0-9a-z]+", "_").str.strip_chars("_")


def pivot_moat(moat: pl.DataFrame, base_asset: str) -> pl.DataFrame:
    """Moat records for ``base_asset`` (entity == base or ``*``) as one column per ``<source>_<metric>``.

    Rows are publication timestamps; a record for the asset itself wins over a ``*`` record with the
    same timestamp, source and metric. Cells without a new record are null.
    """
    _require(moat, MOAT_SCHEMA, "moat records")
    records = moat.select(pl.col(c).cast(t) for c, t in MOAT_SCHEMA.items()).filter(
        pl.col("entity").is_in([base_asset, "*"])
    )
    repeated = records.filter(pl.struct(MOAT_KEY).is_duplicated())
    if repeated.height:
        raise ValueError(f"moat records repeat (timestamp, source, entity, metric): {repeated.row(0)}")
    name = pl.concat_str(_safe_name("source"), _safe_name("metric"), separator="_")
    records = records.with_columns(name=name)
    clashes = records.group_by("name").agg(pl.struct("source", "metric").n_unique().alias("n")).filter(pl.col("n") > 1)
    if clashes.height:
        raise ValueError(f"moat (source, metric) pairs clash as column names: {clashes['name'].to_list()}")
    if records.height == 0:
        return pl.DataFrame(schema={"timestamp": TS})
    chosen = records.sort("timestamp", pl.col("entity") == "*").unique(
        ["timestamp", "name"], keep="first", maintain_order=True
    )
    wide = chosen.pivot(on="name", index="timestamp", values="value").sort("timestamp")
    return wide.select("timestamp", *sorted(c for c in wide.columns if c != "timestamp"))


def repos_for_asset(base_asset: str, repo_map: dict[str, list[str]] | None = None) -> list[str]:
    """Repositories that inform ``base_asset`` (from the pipeline config's ``repos`` mapping by default)."""
    if repo_map is None:
        from cyber_pipelines.config import load_repo_map

        repo_map = load_repo_map()
    return sorted(repo for repo, assets in repo_map.items() if base_asset in assets)


def build_feature_table(
    candles: pl.DataFrame,
    activity: pl.DataFrame,
    moat: pl.DataFrame,
    *,
    base_asset: str,
    publication_lag: timedelta = HOUR,
    repos: Collection[str] | None = None,
    bar_length: timedelta | None = None,
    score_window: int = DEFAULT_SCORE_WINDOW,
    moat_count_metrics: Collection[str] = DEFAULT_MOAT_COUNT_METRICS,
) -> pl.DataFrame:
    """Indicators plus point-in-time cross-source features for one pair's candles.

    Added columns (counts are of what became known during the bar, ``(previous decision, decision]``):

    * ``gh_commits``, ``gh_authors``: commits and hourly unique authors (summed per repo) of the repos
      that inform ``base_asset`` (``repos``, default from the config). Missing activity counts as 0.
    * ``moat_events``: sum of the values of moat records for the asset (or ``*``) whose metric is in
      ``moat_count_metrics`` (metrics that count events, e.g. announcements), known during the bar.
    * ``moat_<source>_<metric>``: the last moat value known at the decision time (null before the
      first publication).
    * ``activity_count`` = gh_commits + moat_events, and ``activity_score``: its z-score against the
      previous ``score_window`` bars (the current bar excluded), std floored at 1 event; 0 until the
      baseline has ``SCORE_MIN_BARS`` bars (or ``score_window``, if smaller). High = an unusual burst.
    """
    if score_window < 2:
        raise ValueError(f"score_window must be >= 2, got {score_window}")
    if publication_lag < timedelta(0):
        raise ValueError(f"publication_lag must be >= 0, got {publication_lag}")
    _require(activity, ["timestamp", "repo", "commits", "authors"], "github activity")
    features = add_indicators(candles)
    bar = bar_length if bar_length is not None else infer_bar_length(features)
    bars = _decision_times(features, bar)

    wanted = {r.lower() for r in (repos if repos is not None else repos_for_asset(base_asset))}
    gh = activity.select(
        (pl.col("timestamp").cast(ACTIVITY_SCHEMA["timestamp"]) + HOUR + publication_lag).alias("_known_at"),
        pl.col("commits").cast(pl.Int64).fill_null(0).alias("gh_commits"),
        pl.col("authors").cast(pl.Int64).fill_null(0).alias("gh_authors"),
        pl.col("repo").str.to_lowercase().is_in(list(wanted)).alias("_wanted"),
    ).filter(pl.col("_wanted"))
    gh_counts = _sum_known_per_bar(bars, gh.drop("_wanted"), ["gh_commits", "gh_authors"])

    wide = pivot_moat(moat, base_asset)
    moat_columns = [c for c in wide.columns if c != "timestamp"]
    if "events" in moat_columns:
        raise ValueError("moat: a (source, metric) named 'events' would clash with the moat_events column")
    _require(moat, MOAT_SCHEMA, "moat records")
    count_metrics = [m.lower() for m in moat_count_metrics]
    moat_events = moat.filter(
        pl.col("entity").is_in([base_asset, "*"]) & pl.col("metric").str.to_lowercase().is_in(count_metrics)
    ).select(
        (pl.col("timestamp").cast(TS) + publication_lag).alias("_known_at"),
        pl.col("value").cast(pl.Float64).fill_null(0.0).alias("moat_events"),
    )
    moat_counts = _sum_known_per_bar(bars, moat_events, ["moat_events"])

    out = pl.concat([features, gh_counts, moat_counts], how="horizontal")
    if moat_columns:
        out = join_activity(
            out,
            wide,
            publication_lag=publication_lag,
            value_columns=moat_columns,
            prefix="moat",
            bar_length=bar,
        )
    count = pl.col("gh_commits") + pl.col("moat_events")
    past = count.shift(1)
    min_bars = min(SCORE_MIN_BARS, score_window)
    mean = past.rolling_mean(score_window, min_samples=min_bars)
    std = past.rolling_std(score_window, min_samples=min_bars, ddof=1)
    return out.with_columns(
        activity_count=count,
        activity_score=((count - mean) / pl.max_horizontal(std, 1.0)).fill_null(0.0),
    )
