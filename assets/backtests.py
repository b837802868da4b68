"""Backtest layer: each pair's strategies walk-forward and out of sample against references that can
lose, and an equal-weight portfolio of sub-accounts with one family of adjusted tests."""

import hashlib
from collections import Counter
from typing import Literal

import dagster as dg
import polars as pl
from pydantic import Field

from assets.automation import VSM_ALLOWS
from assets.batch import latest_source
from assets.features import DEPS_UPDATED_AND_CHECKED, pair_features, png_markdown
from assets.models import lora_forecasts
from assets.partitions import PAIRS, pair_partitions
from assets.patterns import analog_forecasts
from cyber_pipelines.backtest.engine import BacktestConfig, calendar_bars_per_year
from cyber_pipelines.backtest.evaluation import (
    BASELINE,
    TEST_DAYS,
    TRAIN_DAYS,
    PairEvaluation,
    default_strategies,
    evaluate_pair,
)
from cyber_pipelines.backtest.portfolio import PORTFOLIO_KIND, evaluate_portfolio
from cyber_pipelines.backtest.references import N_DRAWS
from cyber_pipelines.backtest.render import (
    OPTIMISTIC_FILL,
    equity_plot_png,
    notes,
    numeric_summary,
    strategy_table,
    verdict_lines,
)
from cyber_pipelines.backtest.significance import N_BOOT
from cyber_pipelines.backtest.store import has_pair, load_pair, save_comparison, save_pair
from cyber_pipelines.backtest.strategies import ANALOG_COLUMN, LORA_COLUMN
from cyber_pipelines.keys import key_to_pair
from cyber_pipelines.resources import StorageResource, VsmResource
from cyber_pipelines.vsm.system import ledger_size

BACKTESTS_CODE_VERSION = "backtests-5"  # 4: analog_knn where the pair has analog forecasts; 5: lora likewise
COMPARISON_CODE_VERSION = "comparison-4"
NIGHTLY_CRON = "0 3 * * *"  # after the 02:00 ingest schedules
# New checked features (eager), and nightly: a backtest whose inputs all updated since 03:00 runs then.
BACKTEST_AUTOMATION = (
    DEPS_UPDATED_AND_CHECKED | (dg.AutomationCondition.on_cron(NIGHTLY_CRON, "UTC") & VSM_ALLOWS)
).with_label("eager_or_nightly")  # 4: pairs with another strategy set are left out, said so


class BacktestRunConfig(dg.Config):
    fee: float = Field(default=0.0026, ge=0, lt=0.1, description="fee per side, as a fraction of traded notional")
    slippage: float = Field(default=0.0010, ge=0, lt=0.1, description="slippage per side, fraction of notional")
    fill: Literal["next_open", "close"] = Field(
        default="next_open",
        description="next_open: no look-ahead (default); close: OPTIMISTIC, fills at the close that made the signal",
    )
    allow_short: bool = Field(default=False, description="trade short signals too (default long/flat)")
    stop_loss: float | None = Field(
        default=None, gt=0, lt=1, description="exit when price moves this fraction against the position"
    )
    size_multiplier: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="position size; empty: the VSM P&L ledger's (1, 0.5 at P&L <= -5%, 0.25 at <= -10%; 1 before it)",
    )
    train_days: int = Field(
        default=TRAIN_DAYS,
        ge=7,
        description="walk-forward: days of history each fit sees (cross_moat's activity fit needs 60)",
    )
    test_days: int = Field(
        default=TEST_DAYS, ge=1, description="walk-forward: days traded out of sample after each fit"
    )
    min_hold_hours: int = Field(default=6, ge=1, description="minimum holding period of the consensus strategies")
    random_draws: int = Field(
        default=N_DRAWS, ge=50, description="random-entry null: Monte Carlo draws per strategy (p >= 1 / (draws + 1))"
    )
    n_boot: int = Field(default=N_BOOT, ge=199, description="bootstrap resamples per test (p >= 1 / (n_boot + 1))")


class ComparisonConfig(dg.Config):
    source: str = Field(
        default="", description="market source whose results to compare; empty: that of the latest backtest_results"
    )


@dg.asset(
    partitions_def=pair_partitions,
    deps=[pair_features, analog_forecasts, lora_forecasts],
    group_name="backtests",
    kinds={"polars", "numpy"},
    code_version=BACKTESTS_CODE_VERSION,
    automation_condition=BACKTEST_AUTOMATION,
    description=(
        "One pair's strategies fitted walk-forward (train_days of history, then test_days out of sample, "
        "rolled) and judged out of sample: rule_of_three (TA only, the baseline), cross_moat (TA + GitHub/moat "
        "activity, its lag, window, weight and sign fitted on each training window), moat_only (the activity "
        "team alone), sma_grid (the SMA pair of the best training Sharpe) and, where the pair has analog_forecasts, "
        "analog_knn (the pattern memory's forecast) and, where it has lora_forecasts, lora (the serving forecaster's "
        "expected return). Each is tested against cash, "
        "buy-and-hold, a random-entry null with the same trades and rule_of_three (studentized bootstrap p-values "
        "and intervals, Holm-adjusted per reference; significant = beats cash and the random null, Holm over the "
        "verdicts), with gross return, cost drag, turnover and holding time. Writes "
        "`<data>/<source>/backtests/<PAIR>.json` and "
        "the OOS equity curves to `backtest_equity/<PAIR>.parquet`."
    ),
)
def backtest_results(
    context: dg.AssetExecutionContext, config: BacktestRunConfig, storage: StorageResource, vsm: VsmResource
) -> dg.MaterializeResult:
    pair_key = context.partition_key
    if config.size_multiplier is None:
        size, size_reason = ledger_size(vsm.log(), pair_key)
    else:
        size, size_reason = config.size_multiplier, "set in the run config"
    source = latest_source(context.instance, pair_features.key, pair_key)
    if source is None:
        raise dg.Failure(f"no pair_features materialization with a source for {pair_key}: materialize it first")
    store = storage.store()
    pair = key_to_pair(pair_key)
    try:
        features = store.read(source, "features", pair_key)
        analog = store.exists(source, "analog_forecasts", pair_key)
        if analog:  # the pattern memory's forecast, traded as analog_knn (0 where it has no neighbour)
            forecasts = store.read(source, "analog_forecasts", pair_key).select("timestamp", ANALOG_COLUMN)
            features = features.join(forecasts, on="timestamp", how="left").with_columns(
                pl.col(ANALOG_COLUMN).fill_null(0.0)
            )
        else:
            context.log.warning(f"{pair}: no analog_forecasts for {source}: analog_knn is left out")
        lora = store.exists(source, "lora_forecasts", pair_key)
        if lora:  # the serving forecaster's expected next-hour return, traded as lora (0: no forecast)
            predicted = store.read(source, "lora_forecasts", pair_key).select("timestamp", LORA_COLUMN)
            features = features.join(predicted, on="timestamp", how="left").with_columns(
                pl.col(LORA_COLUMN).fill_null(0.0)
            )
        else:
            context.log.warning(f"{pair}: no lora_forecasts for {source}: lora is left out")
        bars_per_day = round(calendar_bars_per_year(features["timestamp"], "24/7") / 365.25)
        settings = BacktestConfig(
            fee=config.fee,
            slippage=config.slippage,
            fill=config.fill,
            allow_short=config.allow_short,
            stop_loss=config.stop_loss,
            size_multiplier=size,
            calendar="24/7",  # crypto trades around the clock: a missing hour is a bar without a return
        )
        result = evaluate_pair(
            features,
            settings,
            default_strategies(
                settings,
                min_hold_bars=max(1, round(config.min_hold_hours * bars_per_day / 24)),
                analog=analog,
                lora=lora,
            ),
            pair=pair_key,
            train_bars=config.train_days * bars_per_day,
            test_bars=config.test_days * bars_per_day,
            n_boot=config.n_boot,
            draws=config.random_draws,
        )
    except (FileNotFoundError, ValueError) as exc:
        raise dg.Failure(f"cannot backtest {pair} ({source}): {exc}") from exc
    if config.fill == "close":
        context.log.warning(f"{pair}: {OPTIMISTIC_FILL}")
    json_path, curves_path = save_pair(store, source, pair_key, result)
    ts = result.curves["timestamp"]
    for line in verdict_lines(result.strategies):
        context.log.info(f"{pair}: {line}")
    return dg.MaterializeResult(
        data_version=dg.DataVersion(hashlib.sha256(json_path.read_bytes()).hexdigest()[:24]),
        metadata={
            "source": source,
            "pair": pair,
            "baseline": BASELINE,
            "fill": config.fill if config.fill == "next_open" else f"close ({OPTIMISTIC_FILL})",
            "walk_forward": f"train {config.train_days} days, test {config.test_days} days, rolled",
            "size_multiplier": size,
            "size_reason": size_reason,
            "analog_knn": "included (analog_forecasts)" if analog else "left out: no analog_forecasts for this pair",
            "lora": "included (lora_forecasts)" if lora else "left out: no lora_forecasts for this pair",
            "oos_bars": result.curves.height,
            "oos_first_timestamp": str(ts[0]),
            "oos_last_timestamp": str(ts[-1]),
            "verdicts": dg.MetadataValue.md("\n".join(f"- {line}" for line in verdict_lines(result.strategies))),
            "results": dg.MetadataValue.md(_results_markdown(result)),
            "fitted_parameters": dg.MetadataValue.json({name: rep.windows for name, rep in result.strategies.items()}),
            **numeric_summary(result.strategies),
            "equity_curve": png_markdown(
                equity_plot_png(result.curves, f"{pair} ({source}), out of sample", baseline=BASELINE),
                "equity",
            ),
            "json_path": dg.MetadataValue.path(str(json_path)),
            "equity_path": dg.MetadataValue.path(str(curves_path)),
        },
    )


def _results_markdown(result: PairEvaluation) -> str:
    table = strategy_table(result.strategies, result.buy_and_hold)
    ts = result.curves["timestamp"]
    return table + "\n\n" + "\n\n".join(notes(result.strategies, result.config.fill, ts[-1] - ts[0]))


@dg.asset(
    deps=[dg.AssetDep(backtest_results, partition_mapping=dg.AllPartitionMapping())],
    group_name="backtests",
    kinds={"polars", "numpy"},
    code_version=COMPARISON_CODE_VERSION,
    automation_condition=DEPS_UPDATED_AND_CHECKED,
    description=(
        "Strategy comparison across every pair with stored backtest results, out of sample: an equal-weight "
        "portfolio per strategy (independent sub-accounts, never rebalanced), its figures and its tests against "
        "cash, buy-and-hold, the pooled random-entry null and rule_of_three, every pair's tests beside it, and "
        "Holm's adjustment over all of them together, per reference and over the verdicts (raw and adjusted p). "
        "One verdict line per strategy. "
        "Written to `<data>/<source>/backtests/comparison.json`."
    ),
)
def strategy_comparison(
    context: dg.AssetExecutionContext, config: ComparisonConfig, storage: StorageResource
) -> dg.MaterializeResult:
    source = config.source or latest_source(context.instance, backtest_results.key)
    if not source:
        raise dg.Failure("no backtest_results materialization yet: backtest at least one pair first")
    store = storage.store()
    pair_keys = sorted(context.instance.get_dynamic_partitions(PAIRS))
    present = [k for k in pair_keys if has_pair(store, source, k)]
    missing = [k for k in pair_keys if k not in present]
    if not present:
        raise dg.Failure(f"no stored {source} backtest results for any of the pairs {pair_keys}")
    try:
        results: dict[str, PairEvaluation] = {k: load_pair(store, source, k) for k in present}

        # Only like with like: pairs backtested with other costs, sizing, windows or strategies are left out,
        # and said so (e.g. a pair without analog forecasts has no analog_knn).
        def setting(r: PairEvaluation) -> tuple:
            return (r.config, r.train_bars, r.test_bars, tuple(r.names))

        settings = Counter(setting(r) for r in results.values())
        common = settings.most_common(1)[0][0]
        other = sorted(k for k, r in results.items() if setting(r) != common)
        if other:
            context.log.warning(f"left out {', '.join(other)}: backtested with other settings than {common}")
            missing += other
            present = [k for k in present if k not in other]
            results = {k: results[k] for k in present}
        comparison = evaluate_portfolio(results)
    except (FileNotFoundError, ValueError) as exc:
        raise dg.Failure(f"cannot compare the {source} backtests: {exc}") from exc
    if missing:
        context.log.warning(f"no {source} backtest results yet for {', '.join(missing)}; compared without them")
    json_path, curves_path = save_comparison(store, source, comparison)
    ts = comparison.curves["timestamp"]
    lines = verdict_lines(comparison.strategies)
    by_pair = "\n\n".join(
        f"**{key_to_pair(pair)}**\n\n{strategy_table(reports, results[pair].buy_and_hold)}"
        for pair, reports in comparison.pair_reports.items()
    )
    table = strategy_table(comparison.strategies, comparison.buy_and_hold)
    text = (
        f"Equal-weight portfolio of {len(present)} pair(s) ({PORTFOLIO_KIND}): {', '.join(present)}.\n\n{table}"
        + "\n\n"
        + "\n\n".join(notes(comparison.strategies, next(iter(results.values())).config.fill, ts[-1] - ts[0]))
        + "\n\nHolm's adjustments run over every strategy on this page (pairs and portfolio).\n\n"
        + by_pair
    )
    return dg.MaterializeResult(
        data_version=dg.DataVersion(hashlib.sha256(json_path.read_bytes()).hexdigest()[:24]),
        metadata={
            "source": source,
            "pairs": ", ".join(present),
            "pairs_missing": ", ".join(missing) or "none",
            "n_pairs": len(present),
            "baseline": BASELINE,
            "portfolio": PORTFOLIO_KIND,
            "oos_bars": comparison.curves.height,
            "oos_first_timestamp": str(ts[0]),
            "oos_last_timestamp": str(ts[-1]),
            "verdicts": dg.MetadataValue.md("\n".join(f"- {line}" for line in lines)),
            "comparison": dg.MetadataValue.md(text),
            **numeric_summary(comparison.strategies),
            "equity_curve": png_markdown(
                equity_plot_png(
                    comparison.curves,
                    f"equal-weight portfolio of {len(present)} pair(s) ({source}), out of sample",
                    baseline=BASELINE,
                ),
                "portfolio equity",
            ),
            "json_path": dg.MetadataValue.path(str(json_path)),
            "equity_path": dg.MetadataValue.path(str(curves_path)),
        },
    )
