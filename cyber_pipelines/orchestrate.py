"""Launch materializations in-process on the shared instance (the CLI and the demo use this)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date

import dagster as dg

from cyber_pipelines.config import load_settings
from cyber_pipelines.instance import get_instance
from cyber_pipelines.keys import pair_to_key

DEMO_DAYS = 90  # enough hourly bars for the lead-lag test to see the planted 6 h lead at p < 0.01


QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}  # the runs' full logs stay in the UI


@dataclass(frozen=True)
class RunOutcome:
    partition: str
    success: bool
    run_id: str
    message: str


def _summarize(result: dg.ExecuteInProcessResult) -> str:
    """One line: the failure reasons, or the rows materialized."""
    reasons = []
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            reasons.append(event.step_failure_data.error.message.strip().splitlines()[0])
        evaluation = event.asset_check_evaluation_data if event.event_type_value == "ASSET_CHECK_EVALUATION" else None
        if evaluation is not None and not evaluation.passed:
            reasons.append(f"check {evaluation.check_name} failed")
    if reasons:
        return "; ".join(dict.fromkeys(reasons))
    materializations = [e.step_materialization_data.materialization for e in result.get_asset_materialization_events()]
    if not materializations or "rows" not in materializations[0].metadata:
        return "ok"
    # A range run records one materialization per partition, all with the run's metadata.
    return f"{len(materializations)} partition(s), {materializations[0].metadata['rows'].value} rows"


def execute_ranges(
    job_name: str,
    ranges: Sequence[tuple[str | dg.MultiPartitionKey, str | dg.MultiPartitionKey]],
    run_config: dict | None = None,
    instance: dg.DagsterInstance | None = None,
) -> list[RunOutcome]:
    """Run ``job_name`` once per partition range (a single-run backfill), in-process, on the instance."""
    from cyber_pipelines.definitions import defs

    instance = instance or get_instance()
    job = defs.resolve_job_def(job_name)
    outcomes = []
    for first, last in ranges:
        result = job.execute_in_process(
            instance=instance,
            run_config={**QUIET, **(run_config or {})},
            raise_on_error=False,
            tags={
                "dagster/asset_partition_range_start": str(first),
                "dagster/asset_partition_range_end": str(last),
                "cyber/launched_by": "cli",
            },
        )
        label = str(first) if str(first) == str(last) else f"{first} .. {last}"
        outcomes.append(RunOutcome(label, result.success, result.run_id, _summarize(result)))
    return outcomes


def _ensure_partitions(instance: dg.DagsterInstance, name: str, keys: list[str]) -> list[str]:
    """Add the dynamic partition keys that the instance does not have yet; return all keys."""
    existing = set(instance.get_dynamic_partitions(name))
    new = [k for k in keys if k not in existing]
    if new:
        instance.add_dynamic_partitions(name, new)
    return keys


def _check_days(days: Sequence[date]) -> None:
    """Days must form one contiguous range of existing day partitions (one run per range)."""
    if not days:
        raise SystemExit("error: no days given")
    if len(set(days)) != (max(days) - min(days)).days + 1:
        raise SystemExit("error: days must be one contiguous range")
    start = load_settings().start_date
    early = [d for d in days if d < start]
    if early:
        raise SystemExit(f"error: {early[0]} is before the first partition day {start} (pipeline config)")


def ingest_market(
    pairs: Sequence[str], days: Sequence[date], source: str, instance: dg.DagsterInstance | None = None
) -> list[RunOutcome]:
    """Materialize ``ohlcv_candles`` (and its checks) for every pair-day from ``source``."""
    from assets.partitions import pair_day_key

    _check_days(days)
    instance = instance or get_instance()
    keys = _ensure_partitions(instance, "pairs", [pair_to_key(p) for p in pairs])
    ranges = [(pair_day_key(k, min(days)), pair_day_key(k, max(days))) for k in keys]
    run_config = {"ops": {"ohlcv_candles": {"config": {"source": source}}}}
    return execute_ranges("market_ingest", ranges, run_config, instance)


def ingest_github(
    repos: Sequence[str], days: Sequence[date], source: str, instance: dg.DagsterInstance | None = None
) -> list[RunOutcome]:
    """Materialize ``github_activity`` (and its checks) for every repo-day from ``source``."""
    from assets.partitions import repo_day_key
    from cyber_pipelines.github.activity import repo_to_key

    _check_days(days)
    instance = instance or get_instance()
    keys = _ensure_partitions(instance, "repos", [repo_to_key(r) for r in repos])
    ranges = [(repo_day_key(k, min(days)), repo_day_key(k, max(days))) for k in keys]
    run_config = {"ops": {"github_activity": {"config": {"source": source}}}}
    return execute_ranges("github_ingest", ranges, run_config, instance)


def ingest_moat(days: Sequence[date], source: str, instance: dg.DagsterInstance | None = None) -> list[RunOutcome]:
    """Materialize ``moat_records`` (and its checks) for every day from ``source``."""
    _check_days(days)
    run_config = {"ops": {"moat_records": {"config": {"source": source}}}}
    return execute_ranges("moat_ingest", [(min(days).isoformat(), max(days).isoformat())], run_config, instance)


def build_features(pairs: Sequence[str], source: str, instance: dg.DagsterInstance | None = None) -> list[RunOutcome]:
    """Materialize each pair's feature table (with its checks) and lead-lag report, one run per pair."""
    instance = instance or get_instance()
    keys = _ensure_partitions(instance, "pairs", [pair_to_key(p) for p in pairs])
    run_config = {"ops": {name: {"config": {"source": source}} for name in ("pair_features", "lead_lag_report")}}
    return execute_ranges("features", [(k, k) for k in keys], run_config, instance)


def _latest_metadata(instance: dg.DagsterInstance, asset: str, partition: str | None = None) -> dict:
    from assets.batch import latest_metadata

    return latest_metadata(instance, dg.AssetKey(asset), [partition] if partition else None) or {}


def leadlag_summary(instance: dg.DagsterInstance, pairs: Sequence[str]) -> str:
    """One line per pair: what the lead-lag report found."""
    lines = ["lead-lag (GitHub activity -> volatility):"]
    for pair in pairs:
        meta = _latest_metadata(instance, "lead_lag_report", pair_to_key(pair))
        if "best_lag_hours" in meta:
            lines.append(
                f"  {pair:<9} best lag {meta['best_lag_hours']:>2} h, corr {meta['best_corr']:+.3f}, "
                f"adjusted p {meta['best_p_adjusted']:.4f} ({meta['status']})"
            )
        else:
            lines.append(f"  {pair:<9} {meta.get('status', 'not materialized')}")
    return "\n".join(lines)


def run_backtests(pairs: Sequence[str], instance: dg.DagsterInstance | None = None) -> list[RunOutcome]:
    """Backtest each pair (one run per pair), then compare the strategies across pairs."""
    instance = instance or get_instance()
    keys = _ensure_partitions(instance, "pairs", [pair_to_key(p) for p in pairs])
    outcomes = execute_ranges("backtests", [(k, k) for k in keys], None, instance)
    return outcomes + execute_unpartitioned("compare_strategies", instance)


def execute_unpartitioned(job_name: str, instance: dg.DagsterInstance) -> list[RunOutcome]:
    from cyber_pipelines.definitions import defs

    result = defs.resolve_job_def(job_name).execute_in_process(
        instance=instance, run_config=QUIET, raise_on_error=False, tags={"cyber/launched_by": "cli"}
    )
    return [RunOutcome(job_name, result.success, result.run_id, _summarize(result))]


def comparison_summary(instance: dg.DagsterInstance) -> str:
    meta = _latest_metadata(instance, "strategy_comparison")
    table = meta.get("comparison") or meta.get("table")
    return f"strategy comparison (equal-weight portfolio across pairs):\n{table}" if table else ""


def run_demo(days: int | None = None, pairs: Sequence[str] | None = None) -> int:
    """Materialize every layer offline on the synthetic source; print timings and a summary."""
    from datetime import timedelta

    settings = load_settings()
    pairs = list(pairs or settings.pairs)
    n_days = days or DEMO_DAYS
    window = [settings.start_date + timedelta(days=i) for i in range(n_days)]
    instance = get_instance()
    print(f"demo: {len(pairs)} pairs x {n_days} days ({window[0]}..{window[-1]}), synthetic source")
    print(f"instance: {instance.root_directory}")
    layers: list[tuple[str, Callable[[], list[RunOutcome]]]] = [
        ("market", lambda: ingest_market(pairs, window, "synthetic", instance)),
        ("github", lambda: ingest_github(list(settings.repos), window, "synthetic", instance)),
        ("moat", lambda: ingest_moat(window, "synthetic", instance)),
        ("features", lambda: build_features(pairs, "synthetic", instance)),
        ("backtests", lambda: run_backtests(pairs, instance)),
    ]
    failed = 0
    for name, step in layers:
        began = time.perf_counter()
        outcomes = step()
        bad = [o for o in outcomes if not o.success]
        failed += len(bad)
        print(f"  {name:<10} {len(outcomes) - len(bad)}/{len(outcomes)} runs ok in {time.perf_counter() - began:.1f} s")
        for o in bad[:5]:
            print(f"    FAIL {o.partition}: {o.message}")
    print(leadlag_summary(instance, pairs))
    print(comparison_summary(instance))
    print("browse it: make ui  ->  http://127.0.0.1:3000")
    return 1 if failed else 0
