"""GitHub layer: hourly repository activity per repo and month, audited per UTC day before it is published."""

from collections.abc import Iterator

import dagster as dg
import polars as pl
from pydantic import Field

from assets.batch import MonthPartition, blocking_check_specs, ingest_audited, run_partition_keys
from assets.partitions import month_days, repo_month, repo_month_partitions
from cyber_pipelines.github.activity import repo_to_key
from cyber_pipelines.quality.checks import GITHUB_CHECKS
from cyber_pipelines.resources import GitHubResource, StorageResource

GITHUB_CODE_VERSION = "github-activity-2"


class GitHubActivityConfig(dg.Config):
    source: str = Field(default="", description="synthetic | github; empty: CYBER_GITHUB_SOURCE (default synthetic)")


def activity_parts(partition_key: str) -> tuple[str, str]:
    """Storage path parts of a repo-month partition: ``(ethereum__go-ethereum, 2024-01)``."""
    repo, month = repo_month(partition_key)
    return repo_to_key(repo), month.strftime("%Y-%m")


def _describe(published: pl.DataFrame) -> dict[str, float | int]:
    return {
        "commits": int(published["commits"].sum()),
        "dependency_entropy_mean": round(float(published["dependency_entropy"].mean() or 0.0), 4),  # type: ignore[arg-type]
        "novelty_mean": round(float(published["novelty"].mean() or 0.0), 4),  # type: ignore[arg-type]
    }


@dg.asset(
    partitions_def=repo_month_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    check_specs=blocking_check_specs("github_activity", GITHUB_CHECKS, repo_month_partitions),
    output_required=False,
    group_name="github",
    kinds={"github", "polars", "parquet"},
    code_version=GITHUB_CODE_VERSION,
    pool="github_api",
    description=(
        "Hourly commit activity of one repository for one calendar month (the open month up to yesterday): "
        "commits and unique authors per hour, day-level contributors, open issues, stars, dependency entropy "
        "and novelty. Audited per UTC day; passing days are stored under "
        "`<data>/<source>/github_activity/<owner__name>/<YYYY-MM>.parquet`."
    ),
)
def github_activity(
    context: dg.AssetExecutionContext,
    config: GitHubActivityConfig,
    github: GitHubResource,
    storage: StorageResource,
) -> Iterator[dg.AssetMaterialization | dg.AssetCheckEvaluation | dg.Output]:
    from cyber_pipelines.quality.activity import audit_activity

    source = github.resolve_source(config.source or None)
    partitions = []
    for key in run_partition_keys(context):
        repo, month = repo_month(key)
        partitions.append(MonthPartition(key, activity_parts(key), repo, month_days(month)))
    yield from ingest_audited(
        context,
        store=storage.store(),
        source=source,
        table="github_activity",
        partitions=partitions,
        fetch=lambda repo, days: github.fetch_days(repo, days, source),
        audit=audit_activity,
        what="activity",
        describe=_describe,
    )
