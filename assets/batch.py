"""Write-audit-publish for the ingest assets, one or many month partitions in a single run.

The ingest asset fetches candidate rows per UTC day and holds them in memory; the layer's GX suite
(``cyber_pipelines.quality``) audits them; then, per month partition, only the days that passed every
check replace their stored version, in one atomic write of the month's file. Each partition gets its
own materialization (path, rows, first/last timestamp, published and blocked days, and its own
content-hash DataVersion) and its own result for every blocking check, naming the failing days and
rows. A month in which no day passed records no materialization: its previous version stays the
latest. A failing day fails the run after everything that passed was published.
"""

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

import dagster as dg
import polars as pl

# Not re-exported by dagster: the target of a check evaluation yielded for one partition of a range run
# (AssetCheckResult finds it only for single-partition runs). Without it the result is never "current".
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)

from cyber_pipelines.quality.audit import DayAudit, DayFailure
from cyber_pipelines.report import markdown_table
from cyber_pipelines.storage import TableStore, content_hash

# Dagster reads a materialization's data and code versions from these tags; setting them on each
# partition's own event gives every partition of a range run its own DataVersion.
DATA_VERSION_TAG = "dagster/data_version"
CODE_VERSION_TAG = "dagster/code_version"
MAX_DAYS_SHOWN = 5  # days named in a one-line failure; the check's metadata lists them all


def run_partition_keys(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> list[str]:
    """The partition keys this run covers (one, or a range from a single-run backfill)."""
    op_context = context.op_execution_context if isinstance(context, dg.AssetCheckExecutionContext) else context
    if not (op_context.has_partition_key or op_context.has_partition_key_range):
        raise dg.Failure("run this with a partition or a partition range")
    return [str(k) for k in op_context.partition_keys]


def latest_materialization(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, partitions: list[str] | None = None
) -> dg.EventLogRecord | None:
    """The record of the asset's latest materialization (among ``partitions``, if given)."""
    if partitions is not None and not partitions:
        return None
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=partitions), limit=1
    ).records
    return records[0] if records and records[0].asset_materialization is not None else None


def latest_metadata(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, partitions: list[str] | None = None
) -> dict[str, Any] | None:
    """The metadata values of the asset's latest materialization (among ``partitions``, if given)."""
    record = latest_materialization(instance, asset_key, partitions)
    if record is None or record.asset_materialization is None:
        return None
    return {k: v.value for k, v in record.asset_materialization.metadata.items()}


def latest_sources(instance: dg.DagsterInstance, asset: dg.AssetKey, partitions: list[str]) -> dict[str, str]:
    """``latest_source`` of each of ``partitions`` that has a materialization, in one query where it can
    (a partition whose latest record is not among the newest few per partition is read on its own)."""
    stored = sorted(set(partitions) & set(instance.get_materialized_partitions(asset)))
    if not stored:
        return {}
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset, asset_partitions=stored), limit=4 * len(stored)
    ).records
    out: dict[str, str] = {}
    for record in records:  # newest first: the first record of a partition is its latest
        key = record.partition_key
        if key is not None and key not in out and record.asset_materialization is not None:
            source = record.asset_materialization.metadata.get("source")
            out[key] = str(source.value) if source is not None else ""
    for key in stored:
        if key not in out:
            out[key] = latest_source(instance, asset, key) or ""
    return {key: source for key, source in out.items() if source}


def latest_source(instance: dg.DagsterInstance, asset: dg.AssetKey, partition: str | None = None) -> str | None:
    """The ``source`` metadata of the asset's latest materialization (of one partition, if given)."""
    source = (latest_metadata(instance, asset, [partition] if partition else None) or {}).get("source")
    return source if isinstance(source, str) else None


def required_source(
    context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext,
    upstream: dg.AssetKey,
    partition: str | None = None,
) -> str:
    """``latest_source`` of ``upstream``, or a Failure that says to materialize it first."""
    source = latest_source(context.instance, upstream, partition)
    if source is None:
        what = f"{upstream.to_user_string()}" + (f" for {partition}" if partition else "")
        raise dg.Failure(f"no {what} materialization with a source: materialize it first")
    return source


def blocking_check_specs(
    asset_key: str, checks: Mapping[str, str], partitions_def: dg.PartitionsDefinition
) -> list[dg.AssetCheckSpec]:
    """One blocking, partitioned check per named check of the layer's GX suite."""
    return [
        dg.AssetCheckSpec(name, asset=asset_key, description=description, blocking=True, partitions_def=partitions_def)
        for name, description in checks.items()
    ]


@dataclass(frozen=True)
class MonthPartition:
    """One month partition of a run: its key, storage path parts, subject (pair, repo) and days."""

    key: str
    parts: tuple[str, ...]
    subject: str
    days: list[date]


def day_span(days: list[date]) -> str:
    if not days:
        return "none"
    return days[0].isoformat() if len(days) == 1 else f"{days[0]}..{days[-1]} ({len(days)} days)"


def _failure_table(failures: list[DayFailure]) -> dg.MetadataValue:
    frame = pl.DataFrame(
        {
            "day": [f.day.isoformat() for f in failures],
            "rule": [f.rule for f in failures],
            "detail": [f.detail for f in failures],
        }
    )
    return dg.MetadataValue.md(markdown_table(frame.head(50)))


def failure_line(subject: str, failures: list[DayFailure]) -> str:
    """``BTC/USD 2024-01-18: ohlcv_price_integrity (low > 0: 1 row(s), first at ...)``, one per day."""
    by_day: dict[date, list[DayFailure]] = {}
    for f in failures:
        by_day.setdefault(f.day, []).append(f)
    shown = sorted(by_day.items())[:MAX_DAYS_SHOWN]
    line = "; ".join(
        f"{subject} {day}: " + ", ".join(f"{f.check} ({f.rule}: {f.detail})" for f in fs[:3]) for day, fs in shown
    )
    more = len(by_day) - len(shown)
    return line + (f"; and {more} more day(s) of {subject}" if more > 0 else "")


def latest_targets(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, partitions: list[str]
) -> dict[str, AssetCheckEvaluationTargetMaterializationData]:
    """Each partition's latest materialization, as the target of its check results.

    One query for the newest records (those just published are among them), then one per partition
    whose latest version is older (kept after a blocked day)."""
    targets: dict[str, AssetCheckEvaluationTargetMaterializationData] = {}
    recent = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=partitions), limit=len(partitions)
    ).records
    newest: dict[str, dg.EventLogRecord] = {}
    for event in recent:  # newest first
        if event.partition_key is not None:
            newest.setdefault(event.partition_key, event)
    for key in partitions:
        record = newest.get(key) or latest_materialization(instance, asset_key, [key])
        if record is not None:
            targets[key] = AssetCheckEvaluationTargetMaterializationData(
                run_id=record.run_id, storage_id=record.storage_id, timestamp=record.timestamp
            )
    return targets


def publish_partition(
    context: dg.AssetExecutionContext,
    *,
    store: TableStore,
    source: str,
    table: str,
    partition: MonthPartition,
    candidates: Mapping[date, pl.DataFrame],
    audit: DayAudit,
    describe: Callable[[pl.DataFrame], Mapping[str, Any]] = lambda published: {},
) -> Iterator[dg.AssetMaterialization]:
    """Publish the partition's passing days (one atomic write) and report the materialization."""
    asset_key = context.assets_def.key
    fetched = [d for d in partition.days if d in candidates]
    failed = audit.failed_days()
    passed = {d: candidates[d] for d in fetched if d not in failed}
    blocked = [d for d in fetched if d in failed]
    if passed:
        published, path = store.publish_days(passed, source, table, *partition.parts)
        version = content_hash(published)
        yield dg.AssetMaterialization(
            asset_key=asset_key,
            partition=partition.key,
            tags={DATA_VERSION_TAG: version, CODE_VERSION_TAG: str(context.assets_def.code_versions_by_key[asset_key])},
            metadata={
                "source": source,
                "subject": partition.subject,
                "path": dg.MetadataValue.path(str(path)),
                "rows": published.height,
                "first_timestamp": str(published["timestamp"].min()),
                "last_timestamp": str(published["timestamp"].max()),
                "days_published": day_span(sorted(passed)),
                "days_blocked": ", ".join(d.isoformat() for d in blocked) or "none",
                "days_kept": len({*published["timestamp"].dt.date().to_list()} - set(passed)),
                "content_hash": version,
                **describe(published),
            },
        )


def partition_evaluations(
    context: dg.AssetExecutionContext,
    *,
    source: str,
    partition: MonthPartition,
    candidates: Mapping[date, pl.DataFrame],
    audit: DayAudit,
    target: AssetCheckEvaluationTargetMaterializationData | None,
    observed: Callable[[str, pl.DataFrame], Mapping[str, Any]] = lambda check, summary: {},
) -> Iterator[dg.AssetCheckEvaluation]:
    """The partition's result for each check of the audit.

    The result judges the partition's latest version (``target``: just published, or the kept
    previous one); Dagster counts a check as current only when it targets that event."""
    fetched = [d for d in partition.days if d in candidates]
    month_summary = audit.summary.filter(pl.col("day").is_in(fetched))
    for check in audit.checks:
        failures = audit.failures_on(set(fetched), check)
        outcomes = [o for o in audit.outcomes if o.check == check]
        yield dg.AssetCheckEvaluation(
            asset_key=context.assets_def.key,
            check_name=check,
            passed=not failures and bool(fetched),
            partition=partition.key,
            target_materialization_data=target,
            blocking=True,
            severity=dg.AssetCheckSeverity.ERROR,
            description=failure_line(partition.subject, failures) if failures else None,
            metadata={
                "subject": partition.subject,
                "source": source,
                "days_validated": day_span(fetched),
                "rows_validated": sum(candidates[d].height for d in fetched),
                "failed_days": ", ".join(sorted({f.day.isoformat() for f in failures})) or "none",
                "expectations": ", ".join(o.name for o in outcomes),
                **({"failures": _failure_table(failures)} if failures else {}),
                **observed(check, month_summary),
            },
        )


def check_outputs(context: dg.AssetExecutionContext) -> Iterator[dg.Output]:
    """The check outputs of the step (results are reported per partition as evaluations)."""
    for key in context.selected_asset_check_keys:
        yield dg.Output(None, output_name=context.assets_def.get_output_name_for_asset_check_key(key))


def ingest_audited(
    context: dg.AssetExecutionContext,
    *,
    store: TableStore,
    source: str,
    table: str,
    partitions: list[MonthPartition],
    fetch: Callable[[str, list[date]], Mapping[date, pl.DataFrame]],
    audit: Callable[[str, Mapping[date, pl.DataFrame]], DayAudit],
    what: str,
    observed: Callable[[str, pl.DataFrame], Mapping[str, Any]] = lambda check, summary: {},
    describe: Callable[[pl.DataFrame], Mapping[str, Any]] = lambda published: {},
) -> Iterator[dg.AssetMaterialization | dg.AssetCheckEvaluation | dg.Output]:
    """Fetch, audit and publish every partition of the run, one subject (pair, repo) at a time.

    Fails the step after publishing, naming the blocked days, or the partitions the source had
    nothing for (``what`` says what was looked for and where)."""
    yield from check_outputs(context)
    by_subject: dict[str, list[MonthPartition]] = {}
    for partition in partitions:
        by_subject.setdefault(partition.subject, []).append(partition)
    blocked, empty = [], []
    for subject, group in by_subject.items():
        days = [d for p in group for d in p.days]
        candidates = fetch(subject, days)
        context.log.info(f"{source}: {subject}, {len(candidates)} of {len(days)} days fetched, auditing")
        with_data = [p for p in group if any(d in candidates for d in p.days)]
        empty += [p.key for p in group if p not in with_data]
        if not with_data:
            continue
        result = audit(subject, candidates)
        for partition in with_data:
            yield from publish_partition(
                context,
                store=store,
                source=source,
                table=table,
                partition=partition,
                candidates=candidates,
                audit=result,
                describe=describe,
            )
        targets = latest_targets(context.instance, context.assets_def.key, [p.key for p in with_data])
        for partition in with_data:
            yield from partition_evaluations(
                context,
                source=source,
                partition=partition,
                candidates=candidates,
                audit=result,
                target=targets.get(partition.key),
                observed=observed,
            )
        if result.failures:
            blocked.append(failure_line(subject, list(result.failures)))
    fail_if_blocked(context.assets_def.key.to_user_string(), blocked)
    if empty:
        raise dg.Failure(description=f"no {source} {what} for {', '.join(empty)}")


def fail_if_blocked(what: str, lines: list[str]) -> None:
    """After publishing what passed: fail the step with one line naming the blocked days."""
    if lines:
        raise dg.Failure(
            description=f"{what}: blocked by blocking checks, not published (previous versions kept): "
            + "; ".join(lines),
        )
