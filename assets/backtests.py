"""Backtest layer: each pair's strategies against the TA baseline, and an equal-weight portfolio comparison."""

import hashlib
from collections import Counter
from typing import Literal

import dagster as dg
from pydantic import Field

from assets.batch import latest_metadata
from assets.features import DEPS_UPDATED_AND_CHECKED, pair_features, png_markdown
from assets.partitions import PAIRS, pair_partitions
from cyber_pipelines.backtest.engine import BacktestConfig, calendar_bars_per_year
from cyber_pipelines.backtest.report import (
    PairBacktest,
    backtest_pair,
    compare_portfolio,
    equity_plot_png,
    has_pair_backtest,
    load_pair_backtest,
    save_comparison,
    save_pair_backtest,
)
from cyber_pipelines.keys import key_to_pair
from cyber_pipelines.resources import StorageResource

BACKTESTS_CODE_VERSION = "backtests-1"
COMPARISON_CODE_VERSION = "comparison-1"


class BacktestRunConfig(dg.Config):
    fee: float = Field(default=0.0026, ge=0, lt=0.1, description="fee per side, as a fraction of traded notional")
    slippage: float = Field(default=0.0010, ge=0, lt=0.1, description="slippage per side, fraction of notional")
    fill: Literal["next_open", "close"] = Field(
        default="next_open", description="next_open: no look-ahead (default); close: fill at the signal bar's close"
    )
    allow_short: bool = Field(default=False, description="trade short signals too (default long/flat)")
    stop_loss: float | None = Field(
        default=None, gt=0, lt=1, description="exit when price moves this fraction against the position"
    )
    size_multiplier: float = Field(
        default=1.0, gt=0, le=1, description="probation position size: 1, 0.5 (P&L <= -5%) or 0.25 (<= -10%)"
    )


class ComparisonConfig(dg.Config):
    source: str = Field(
        default="", description="market source whose results to compare; empty: that of the latest backtest_results"
    )


def _latest_source(context: dg.AssetExecutionContext, asset: dg.AssetKey, partition: str | None = None) -> str | None:
    """The ``source`` metadata of the asset's latest materialization (of one partition, if given)."""
    source = (latest_metadata(context.instance, asset, [partition] if partition else None) or {}).get("source")
    return source if isinstance(source, str) else None


@dg.asset(
    partitions_def=pair_partitions,
    deps=[pair_features],
    group_name="backtests",
    kinds={"polars", "numpy"},
    code_version=BACKTESTS_CODE_VERSION,
    automation_condition=DEPS_UPDATED_AND_CHECKED,
    description=(
        "Backtests of one pair's feature table after the indicators' warm-up: the TA-only rule of three "
        "(baseline), cross-moat (TA + GitHub/moat activity, weighted 2x) and SMA 24/96 cross, with fees, "
        "slippage and next-open fills. Each strategy is tested against the baseline (block-bootstrap p-value, "
        "Sharpe-difference CI). Reads the features of the source their latest materialization used; writes "
        "`<data>/<source>/backtests/<PAIR>.json` and the equity curves to `backtest_equity/<PAIR>.parquet`."
    ),
)
def backtest_results(
    context: dg.AssetExecutionContext, config: BacktestRunConfig, storage: StorageResource
) -> dg.MaterializeResult:
    pair_key = context.partition_key
    source = _latest_source(context, pair_features.key, pair_key)
    if source is None:
        raise dg.Failure(f"no pair_features materialization with a source for {pair_key}: materialize it first")
    store = storage.store()
    try:
        features = store.read(source, "features", pair_key)
        settings = BacktestConfig(
            fee=config.fee,
            slippage=config.slippage,
            fill=config.fill,
            allow_short=config.allow_short,
            stop_loss=config.stop_loss,
            size_multiplier=config.size_multiplier,
            bars_per_year=calendar_bars_per_year(features["timestamp"]),  # crypto trades 24/7, gaps or not
        )
        result = backtest_pair(features, settings, pair=pair_key)
    except (FileNotFoundError, ValueError) as exc:
        raise dg.Failure(f"cannot backtest {key_to_pair(pair_key)} ({source}): {exc}") from exc
    json_path, curves_path = save_pair_backtest(store, source, pair_key, result)
    ts = result.curves["timestamp"]
    context.log.info(f"{pair_key} ({source}): {result.curves.height} bars, strategies {', '.join(result.strategies)}")
    return dg.MaterializeResult(
        data_version=dg.DataVersion(hashlib.sha256(json_path.read_bytes()).hexdigest()[:24]),
        metadata={
            "source": source,
            "pair": key_to_pair(pair_key),
            "baseline": result.baseline,
            "bars": result.curves.height,
            "first_timestamp": str(ts[0]),
            "last_timestamp": str(ts[-1]),
            "results": dg.MetadataValue.md(result.markdown()),
            **result.numeric_summary(),
            "equity_curve": png_markdown(
                equity_plot_png(result.curves, f"{key_to_pair(pair_key)} ({source})", baseline=result.baseline),
                "equity",
            ),
            "json_path": dg.MetadataValue.path(str(json_path)),
            "equity_path": dg.MetadataValue.path(str(curves_path)),
        },
    )


@dg.asset(
    deps=[dg.AssetDep(backtest_results, partition_mapping=dg.AllPartitionMapping())],
    group_name="backtests",
    kinds={"polars", "numpy"},
    code_version=COMPARISON_CODE_VERSION,
    automation_condition=DEPS_UPDATED_AND_CHECKED,
    description=(
        "Strategy comparison across every pair with stored backtest results: an equal-weight portfolio per "
        "strategy (returns averaged over the pairs on their common hours), its metrics, each strategy's "
        "block-bootstrap p-value against the baseline portfolio, Sharpe by pair and the portfolio equity curves. "
        "Written to `<data>/<source>/backtests/comparison.json`."
    ),
)
def strategy_comparison(
    context: dg.AssetExecutionContext, config: ComparisonConfig, storage: StorageResource
) -> dg.MaterializeResult:
    source = config.source or _latest_source(context, backtest_results.key)
    if not source:
        raise dg.Failure("no backtest_results materialization yet: backtest at least one pair first")
    store = storage.store()
    pair_keys = sorted(context.instance.get_dynamic_partitions(PAIRS))
    present = [k for k in pair_keys if has_pair_backtest(store, source, k)]
    missing = [k for k in pair_keys if k not in present]
    if not present:
        raise dg.Failure(f"no stored {source} backtest results for any of the pairs {pair_keys}")
    try:
        results: dict[str, PairBacktest] = {k: load_pair_backtest(store, source, k) for k in present}
        # Only like with like: pairs backtested with other costs or sizing are left out, and said so.
        configs = Counter(r.config for r in results.values())
        common = configs.most_common(1)[0][0]
        other = sorted(k for k, r in results.items() if r.config != common)
        if other:
            context.log.warning(f"left out {', '.join(other)}: backtested with other settings than {common}")
            missing += other
            present = [k for k in present if k not in other]
            results = {k: results[k] for k in present}
        comparison = compare_portfolio(results)
    except (FileNotFoundError, ValueError) as exc:
        raise dg.Failure(f"cannot compare the {source} backtests: {exc}") from exc
    if missing:
        context.log.warning(f"no {source} backtest results yet for {', '.join(missing)}; compared without them")
    json_path, curves_path = save_comparison(store, source, comparison)
    ts = comparison.curves["timestamp"]
    return dg.MaterializeResult(
        data_version=dg.DataVersion(hashlib.sha256(json_path.read_bytes()).hexdigest()[:24]),
        metadata={
            "source": source,
            "pairs": ", ".join(present),
            "pairs_missing": ", ".join(missing) or "none",
            "n_pairs": len(present),
            "baseline": comparison.baseline,
            "bars": comparison.curves.height,
            "first_timestamp": str(ts[0]),
            "last_timestamp": str(ts[-1]),
            "comparison": dg.MetadataValue.md(comparison.markdown()),
            **comparison.numeric_summary(),
            "equity_curve": png_markdown(
                equity_plot_png(
                    comparison.curves,
                    f"equal-weight portfolio of {len(present)} pair(s) ({source})",
                    baseline=comparison.baseline,
                ),
                "portfolio equity",
            ),
            "json_path": dg.MetadataValue.path(str(json_path)),
            "equity_path": dg.MetadataValue.path(str(curves_path)),
        },
    )
