"""S3* audit: Great Expectations suites as blocking Dagster asset checks on what was stored.

One GX run validates the stored partition; its expectation outcomes are grouped into several named
checks (schema, timestamps, ...) so the UI shows which rule failed. Blocking: a failed check stops
downstream assets in the same run, and automation waits on ``all_deps_blocking_checks_passed``.
"""

from collections.abc import Callable, Iterator, Sequence
from datetime import date
from typing import Any

import dagster as dg
import polars as pl

from assets.batch import latest_metadata, run_partition_keys
from assets.features import pair_features
from assets.github import activity_parts, github_activity
from assets.market import ohlcv_candles, ohlcv_parts
from assets.moat import moat_parts, moat_records
from assets.partitions import pair_day, repo_day
from cyber_pipelines.config import load_settings
from cyber_pipelines.quality.activity import COUNT_COLUMNS, validate_activity_gx, validate_moat_gx
from cyber_pipelines.quality.features import validate_features_gx
from cyber_pipelines.quality.gx import ExpectationOutcome, SuiteReport
from cyber_pipelines.quality.ranges import merge_reports, validate_ohlcv_days_gx
from cyber_pipelines.resources import StorageResource
from cyber_pipelines.storage import TableStore

# (check name, description, predicate on an outcome): each outcome goes to the first group it matches.
Group = tuple[str, str, Callable[[ExpectationOutcome], bool]]
SCHEMA_TYPES = {
    "expect_table_columns_to_match_set",
    "expect_column_values_to_be_of_type",
    "expect_column_values_to_not_be_null",
}


def _is(*types: str, columns: Sequence[str] | None = None) -> Callable[[ExpectationOutcome], bool]:
    return lambda o: o.expectation in types and (columns is None or o.column in columns)


def _any(o: ExpectationOutcome) -> bool:
    return True


def stored_frames(
    context: dg.AssetCheckExecutionContext,
    asset_key: dg.AssetKey,
    store: TableStore,
    table: str,
    parts_of: Callable[[str], tuple[str, ...]],
) -> tuple[dict[str, pl.DataFrame], dict[str, Any]]:
    """The stored frame of every partition in the run, and the metadata of the latest materialization."""
    keys = run_partition_keys(context)
    metadata = latest_metadata(context.instance, asset_key, [keys[-1]])
    if metadata is None:
        raise dg.Failure(f"{asset_key.to_user_string()} {keys[-1]} has no materialization to check")
    source = str(metadata["source"])
    return {key: store.read(source, table, *parts_of(key)) for key in keys}, metadata


def gx_checks(
    asset: dg.AssetsDefinition,
    name: str,
    table: str,
    parts_of: Callable[[str], tuple[str, ...]],
    groups: Sequence[Group],
    validate: Callable[[dict[str, pl.DataFrame], dict[str, Any]], SuiteReport],
) -> dg.AssetChecksDefinition:
    """A multi-asset check running GX on the run's stored partitions of ``asset``, one check per group."""
    specs = [dg.AssetCheckSpec(g, asset=asset, blocking=True, description=d) for g, d, _ in groups]

    @dg.multi_asset_check(
        specs=specs, name=name, description=f"Great Expectations suite on {asset.key.to_user_string()}"
    )
    def _check(context: dg.AssetCheckExecutionContext, storage: StorageResource) -> Iterator[dg.AssetCheckResult]:
        store = storage.store()
        frames, metadata = stored_frames(context, asset.key, store, table, parts_of)
        source = str(metadata["source"])
        report = validate(frames, metadata)
        buckets: dict[str, list[ExpectationOutcome]] = {g: [] for g, _, _ in groups}
        for outcome in report.results:
            group = next(g for g, _, match in groups if match(outcome))
            buckets[group].append(outcome)
        for group, outcomes in buckets.items():
            failed = [o for o in outcomes if not o.success]
            sub = SuiteReport(report.suite_name, not failed, tuple(outcomes), report.rows, report.elapsed_s)
            yield dg.AssetCheckResult(
                check_name=group,
                asset_key=asset.key,
                passed=not failed,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata={
                    "source": source,
                    "partitions": len(frames),
                    "rows": report.rows,
                    "expectations": len(outcomes),
                    "failed": ", ".join(o.name for o in failed) or "none",
                    "results": dg.MetadataValue.md(sub.to_markdown()),
                    "gx_seconds": round(report.elapsed_s, 3),
                },
            )

    return _check


def _ohlcv(frames: dict[str, pl.DataFrame], metadata: dict[str, Any]) -> SuiteReport:
    by_pair: dict[str, list[str]] = {}
    for key in frames:
        by_pair.setdefault(pair_day(key)[0], []).append(key)
    return merge_reports(
        "ohlcv",
        (
            validate_ohlcv_days_gx(
                pl.concat([frames[k] for k in keys]).sort("timestamp"),
                [pair_day(k)[1] for k in keys],
                load_settings().max_gap_ratio,
            )
            for keys in by_pair.values()
        ),
    )


ohlcv_quality_checks = gx_checks(
    ohlcv_candles,
    "ohlcv_quality",
    "ohlcv",
    ohlcv_parts,
    [
        ("ohlcv_schema", "Columns, types and no nulls", _is(*SCHEMA_TYPES)),
        (
            "ohlcv_gap_ratio",
            "Share of missing hourly candles under the threshold, over the run and on every day",
            lambda o: o.expectation == "expect_column_unique_value_count_to_be_between" or o.column == "candles",
        ),
        (
            "ohlcv_timestamps",
            "Timestamps unique, increasing, on the days' hourly grid",
            _is(
                "expect_column_values_to_be_unique",
                "expect_column_values_to_be_increasing",
                "expect_column_values_to_be_in_set",
                "expect_column_values_to_be_between",
                columns=["timestamp"],
            ),
        ),
        ("ohlcv_volume", "Volume >= 0", _is("expect_column_values_to_be_between", columns=["volume"])),
        ("ohlcv_price_integrity", "Prices > 0 and low <= open/close <= high", _any),
    ],
    _ohlcv,
)


def _activity(frames: dict[str, pl.DataFrame], metadata: dict[str, Any]) -> SuiteReport:
    return validate_activity_gx(pl.concat(frames.values()), [repo_day(key) for key in frames])


def _moat(frames: dict[str, pl.DataFrame], metadata: dict[str, Any]) -> SuiteReport:
    return validate_moat_gx(pl.concat(frames.values()), [date.fromisoformat(key) for key in frames])


github_quality_checks = gx_checks(
    github_activity,
    "github_activity_quality",
    "github_activity",
    activity_parts,
    [
        ("github_schema", "Columns, types and no nulls", _is(*SCHEMA_TYPES)),
        (
            "github_counts",
            "Counts and derived metrics are non-negative",
            _is("expect_column_values_to_be_between", columns=[*COUNT_COLUMNS, "dependency_entropy", "novelty"]),
        ),
        ("github_unique_repo_hours", "One row per repo and hour of the day, no duplicates", _any),
    ],
    _activity,
)

moat_quality_checks = gx_checks(
    moat_records,
    "moat_quality",
    "moat",
    moat_parts,
    [
        ("moat_schema", "Columns, types and no nulls", _is(*SCHEMA_TYPES)),
        (
            "moat_unique_observations",
            "No duplicate (timestamp, source, entity, metric)",
            _is("expect_compound_columns_to_be_unique"),
        ),
        ("moat_values_in_range", "At least one record, finite values, timestamps inside the day", _any),
    ],
    _moat,
)


def _features(frames: dict[str, pl.DataFrame], metadata: dict[str, Any]) -> SuiteReport:
    return merge_reports(
        "features",
        (
            # the candles the table was built from (recounting the store now would race new ingests)
            validate_features_gx(frame, int(metadata["candle_rows"]))
            for frame in frames.values()
        ),
    )


features_quality_checks = gx_checks(
    pair_features,
    "features_quality",
    "features",
    lambda key: (key,),
    [
        (
            "features_row_count",
            "One row per stored candle, unique increasing timestamps",
            _is(
                "expect_table_row_count_to_equal",
                "expect_column_values_to_be_unique",
                "expect_column_values_to_be_increasing",
            ),
        ),
        (
            "features_no_nan_after_warmup",
            "No NaN or null in any indicator after the warm-up bars",
            _is("expect_column_values_to_not_be_null"),
        ),
        ("features_bounds", "RSI in [0, 100] and Bollinger bands ordered", _any),
    ],
    _features,
)
