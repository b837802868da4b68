"""Feature layer: per-pair indicator + point-in-time cross-source tables, and the lead-lag report."""

import base64
from collections.abc import Iterator
from datetime import timedelta

import dagster as dg
import polars as pl
from pydantic import Field

from assets.automation import VSM_ALLOWS
from assets.batch import blocking_check_specs, latest_metadata
from assets.github import github_activity
from assets.market import latest_pair_source, ohlcv_candles
from assets.moat import moat_records
from assets.partitions import PAIRS, pair_partitions
from cyber_pipelines.features.cross_source import CROSS_SOURCE_COLUMNS, build_feature_table
from cyber_pipelines.features.indicators import WARMUP_BARS
from cyber_pipelines.features.inputs import PairInputs, load_pair_inputs
from cyber_pipelines.features.leadlag import (
    DEFAULT_ALPHA,
    SeriesTooShort,
    holm_across_pairs,
    lead_lag_for_pair,
    leadlag_markdown,
    leadlag_method,
    leadlag_plot_png,
    pairs_markdown,
)
from cyber_pipelines.keys import key_to_pair, pair_base, pair_to_key
from cyber_pipelines.quality.checks import FEATURES_CHECKS
from cyber_pipelines.report import markdown_table
from cyber_pipelines.resources import MarketDataResource, StorageResource
from cyber_pipelines.storage import TableStore, content_hash

FEATURES_CODE_VERSION = "features-1"
LEADLAG_CODE_VERSION = "leadlag-2"  # 2: hour-of-week means removed, whole weeks permuted
LEADLAG_SUMMARY_CODE_VERSION = "leadlag-summary-1"

# Run when upstream data changed and no upstream blocking check failed. The ingest checks are
# partitioned like their assets (month x pair), so "failed" is per pair-month: a pair with a blocked
# month waits until that month passes, other pairs go on. Not all_deps_blocking_checks_passed(): it is
# true when *any* mapped upstream partition passed, and months never ingested have no result at all.
NO_FAILED_UPSTREAM_CHECK = ~dg.AutomationCondition.any_deps_match(
    dg.AutomationCondition.any_checks_match(dg.AutomationCondition.check_failed(), blocking_only=True)
).with_label("no_upstream_blocking_check_failed")

DEPS_UPDATED_AND_CHECKED = (
    dg.AutomationCondition.any_deps_updated().since_last_handled()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
    & NO_FAILED_UPSTREAM_CHECK
    & VSM_ALLOWS
).with_label("deps_updated_checked_and_allowed_by_vsm")

PER_PAIR_DEPS = [
    dg.AssetDep(
        ohlcv_candles, partition_mapping=dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="pair")
    ),
    dg.AssetDep(github_activity, partition_mapping=dg.AllPartitionMapping()),
    dg.AssetDep(moat_records, partition_mapping=dg.AllPartitionMapping()),
]


class FeatureConfig(dg.Config):
    source: str = Field(
        default="",
        description="market source of the candles; empty: the pair's latest ingest's source, else CYBER_MARKET_SOURCE",
    )
    publication_lag_hours: float = Field(
        default=1.0, ge=0, description="hours after which GitHub/moat data is known to the features"
    )


def _load(context: dg.AssetExecutionContext, market: MarketDataResource, store: TableStore, source: str) -> PairInputs:
    """The pair's inputs from ``source``, else from where its candles were last ingested, else the default."""
    pair = key_to_pair(context.partition_key)
    source = source or latest_pair_source(context.instance, context.partition_key) or ""
    try:
        inputs = load_pair_inputs(store, market.resolve_source(source or None), pair)
    except FileNotFoundError as exc:
        raise dg.Failure(f"no stored candles for {pair}: materialize ohlcv_candles first ({exc})") from exc
    if inputs.repos_missing:
        context.log.warning(f"{pair}: no stored {inputs.github_source} activity for {', '.join(inputs.repos_missing)}")
    return inputs


def png_markdown(png: bytes, alt: str) -> dg.MetadataValue:
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")


def _audit(table: pl.DataFrame, candle_rows: int) -> list[dg.AssetCheckResult]:
    """One result per features check, from the GX outcomes tagged with it."""
    from cyber_pipelines.quality.features import audit_features
    from cyber_pipelines.quality.gx import outcomes_markdown

    reports = audit_features(table, candle_rows)
    results = []
    for check in FEATURES_CHECKS:
        outcomes = [o for r in reports for o in r.results if o.check == check]
        failed = [o for o in outcomes if not o.success]
        results.append(
            dg.AssetCheckResult(
                check_name=check,
                passed=not failed,
                severity=dg.AssetCheckSeverity.ERROR,
                description="; ".join(f"{o.name}: {o.summary}" for o in failed[:3]) or None,
                metadata={
                    "rows": reports[0].rows,
                    "expectations": len(outcomes),
                    "failed": ", ".join(o.name for o in failed) or "none",
                    "results": dg.MetadataValue.md(outcomes_markdown(outcomes)),
                },
            )
        )
    return results


@dg.asset(
    partitions_def=pair_partitions,
    deps=PER_PAIR_DEPS,
    check_specs=blocking_check_specs("pair_features", FEATURES_CHECKS, pair_partitions),
    output_required=False,
    group_name="features",
    kinds={"polars", "parquet"},
    code_version=FEATURES_CODE_VERSION,
    automation_condition=DEPS_UPDATED_AND_CHECKED,
    description=(
        "One pair's feature table over every stored day: RSI (Wilder 14), MACD 12/26/9, Bollinger 20/2, EMAs, "
        "ATR 14, log returns, realized volatility, volume z-score, plus GitHub and moat activity joined as of "
        "each bar with a publication lag (no look-ahead) and an activity z-score. "
        "Write-audit-publish: the GX suite audits the table first; only a passing table replaces "
        "`<data>/<source>/features/<PAIR>.parquet`."
    ),
)
def pair_features(
    context: dg.AssetExecutionContext, config: FeatureConfig, market: MarketDataResource, storage: StorageResource
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    store = storage.store()
    inputs = _load(context, market, store, config.source)
    table = build_feature_table(
        inputs.candles,
        inputs.activity,
        inputs.moat,
        base_asset=pair_base(inputs.pair),
        publication_lag=timedelta(hours=config.publication_lag_hours),
        repos=inputs.repos,
    )
    checks = _audit(table, inputs.candles.height)
    if not all(c.passed for c in checks):
        yield from checks  # nothing written: the previous table stays; the failed check fails the step
        return
    path = store.write(table, inputs.market_source, "features", pair_to_key(inputs.pair))
    version = content_hash(table)
    last = table.tail(1).row(0, named=True)
    latest = {k: last[k] for k in ("rsi_14", "macd_hist", "realized_vol_24", "activity_score") if k in last}
    yield dg.MaterializeResult(
        data_version=dg.DataVersion(version),
        check_results=checks,
        metadata={
            "source": inputs.market_source,
            "activity_source": inputs.github_source,
            "moat_source": inputs.moat_source,
            "rows": table.height,
            "candle_rows": inputs.candles.height,
            "warmup_bars": WARMUP_BARS,
            "columns": len(table.columns),
            "first_timestamp": str(table["timestamp"].min()),
            "last_timestamp": str(table["timestamp"].max()),
            "repos": ", ".join(inputs.repos) or "none",
            "activity_hours_with_commits": int((table["gh_commits"] > 0).sum()),
            "bursts_score_over_3": int((table["activity_score"] > 3).sum()),
            **{f"latest_{k}": float(v) for k, v in latest.items() if v is not None},
            "preview": dg.MetadataValue.md(
                markdown_table(table.select("timestamp", "close", "rsi_14", "macd_hist", *CROSS_SOURCE_COLUMNS).tail(8))
            ),
            "path": dg.MetadataValue.path(str(path)),
            "content_hash": version,
        },
    )


@dg.asset(
    partitions_def=pair_partitions,
    deps=PER_PAIR_DEPS,
    group_name="features",
    kinds={"numpy", "polars"},
    code_version=LEADLAG_CODE_VERSION,
    automation_condition=DEPS_UPDATED_AND_CHECKED,
    description=(
        "Does GitHub activity lead the pair's volatility? Correlation of hourly commits (repos that inform the "
        "pair's base asset) with future hourly volatility at lags 0..48 h, after removing hour-of-week means "
        "from both; p-values from permutations of whole weeks (168-hour blocks, so the weekly cycle stays "
        "aligned in the null) with a max-|corr| family-wise correction over all lags. Needs 8 weeks of hours."
    ),
)
def lead_lag_report(
    context: dg.AssetExecutionContext, config: FeatureConfig, market: MarketDataResource, storage: StorageResource
) -> dg.MaterializeResult:
    store = storage.store()
    inputs = _load(context, market, store, config.source)
    if not inputs.repos or inputs.activity.is_empty():
        why = "no repo in the pipeline config informs" if not inputs.repos else "no stored activity for"
        return dg.MaterializeResult(
            metadata={"source": inputs.market_source, "status": f"not applicable: {why} {pair_base(inputs.pair)}"}
        )
    try:
        result = lead_lag_for_pair(inputs.candles, inputs.activity, repos=inputs.repos)
    except SeriesTooShort as exc:
        return dg.MaterializeResult(metadata={"source": inputs.market_source, "status": f"not applicable: {exc}"})
    table = result.table()
    path = store.write(table, inputs.market_source, "leadlag", pair_to_key(inputs.pair))
    return dg.MaterializeResult(
        metadata={
            "source": inputs.market_source,
            "status": "significant" if result.significant else "not significant",
            "best_lag_hours": int(result.best_lag),
            "best_corr": float(result.best_corr),
            "best_p_adjusted": float(result.best_p),
            "significant": bool(result.significant),
            "n_obs": int(result.n_obs),
            "method": leadlag_method(result),
            "report": dg.MetadataValue.md(leadlag_markdown(result)),
            "plot": png_markdown(leadlag_plot_png(result), "lead-lag correlation by lag"),
            "path": dg.MetadataValue.path(str(path)),
        },
    )


class LeadLagSummaryConfig(dg.Config):
    source: str = Field(
        default="", description="market source whose lead-lag reports to adjust; empty: that of the latest report"
    )
    alpha: float = Field(default=DEFAULT_ALPHA, gt=0, lt=1, description="family-wise error rate over the pairs")


@dg.asset(
    deps=[dg.AssetDep(lead_lag_report, partition_mapping=dg.AllPartitionMapping())],
    group_name="features",
    kinds={"numpy", "polars"},
    code_version=LEADLAG_SUMMARY_CODE_VERSION,
    automation_condition=DEPS_UPDATED_AND_CHECKED,
    description=(
        "The pairs' lead-lag tests as one family: each pair's best lag, corr and raw p-value (already adjusted "
        "over its lags) from its stored lead-lag table, and the Holm-adjusted p-value across all pairs tested "
        "from the same market source, with a verdict per pair. Pairs not tested are listed with the reason."
    ),
)
def lead_lag_summary(
    context: dg.AssetExecutionContext, config: LeadLagSummaryConfig, storage: StorageResource
) -> dg.MaterializeResult:
    store = storage.store()
    pair_keys = sorted(context.instance.get_dynamic_partitions(PAIRS))
    latest = {k: latest_metadata(context.instance, lead_lag_report.key, [k]) or {} for k in pair_keys}
    source = config.source or str((latest_metadata(context.instance, lead_lag_report.key) or {}).get("source") or "")
    if not source:
        raise dg.Failure("no lead_lag_report materialization yet: materialize at least one pair's report first")
    tables: dict[str, pl.DataFrame] = {}
    untested: dict[str, str] = {}
    for key, meta in latest.items():
        if not meta:
            untested[key] = "no lead-lag report yet"
        elif meta.get("source") != source:
            untested[key] = f"latest report is from source {meta.get('source')!r}"
        elif "best_lag_hours" not in meta or not store.exists(source, "leadlag", key):
            untested[key] = str(meta.get("status", "no stored lead-lag table"))
        else:
            tables[key] = store.read(source, "leadlag", key)
    summary = holm_across_pairs(tables, alpha=config.alpha)
    significant = summary.filter(pl.col("verdict") == "significant")["pair"].to_list()
    return dg.MaterializeResult(
        data_version=dg.DataVersion(content_hash(summary)),
        metadata={
            "source": source,
            "alpha": config.alpha,
            "n_pairs_tested": summary.height,
            "n_significant": len(significant),
            "significant_pairs": ", ".join(significant) or "none",
            "pairs_untested": ", ".join(untested) or "none",
            "summary": dg.MetadataValue.md(pairs_markdown(summary, config.alpha, untested)),
        },
    )
