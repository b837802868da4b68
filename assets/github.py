"""GitHub layer: hourly repository activity per repo and UTC day."""

import dagster as dg
import polars as pl
from pydantic import Field

from assets.batch import run_partition_keys, write_partitions
from assets.partitions import repo_day, repo_day_partitions
from cyber_pipelines.github.activity import repo_to_key
from cyber_pipelines.report import markdown_table
from cyber_pipelines.resources import GitHubResource, StorageResource

GITHUB_CODE_VERSION = "github-activity-1"


class GitHubActivityConfig(dg.Config):
    source: str = Field(default="", description="synthetic | github; empty: CYBER_GITHUB_SOURCE (default synthetic)")


def activity_parts(partition_key: str) -> tuple[str, str]:
    """Storage path parts of a repo-day partition: ``(ethereum__go-ethereum, 2024-01-05)``."""
    repo, day = repo_day(partition_key)
    return repo_to_key(repo), day.isoformat()


@dg.asset(
    partitions_def=repo_day_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="github",
    kinds={"github", "polars", "parquet"},
    code_version=GITHUB_CODE_VERSION,
    pool="github_api",
    description=(
        "Hourly commit activity of one repository for one UTC day: commits and unique authors per hour, "
        "day-level contributors, open issues, stars, dependency entropy and novelty. "
        "Stored under `<data>/<source>/github_activity/<owner__name>/<day>.parquet`."
    ),
)
def github_activity(
    context: dg.AssetExecutionContext,
    config: GitHubActivityConfig,
    github: GitHubResource,
    storage: StorageResource,
) -> dg.MaterializeResult:
    source = github.resolve_source(config.source or None)
    keys = run_partition_keys(context)
    frames = {key: github.fetch_day(*repo_day(key), source) for key in keys}
    activity = pl.concat(frames.values())
    daily = activity.group_by("repo").agg(
        commits=pl.col("commits").sum(),
        peak_hour_commits=pl.col("commits").max(),
        contributors=pl.col("contributors").max(),
        dependency_entropy=pl.col("dependency_entropy").mean(),
        novelty=pl.col("novelty").mean(),
        open_issues=pl.col("open_issues").last(),
        stars=pl.col("stars").last(),
    )
    context.log.info(f"{source}: {int(activity['commits'].sum())} commits in {len(keys)} repo-day partition(s)")
    return write_partitions(
        frames,
        storage.store(),
        source,
        "github_activity",
        activity_parts,
        {
            "commits": int(activity["commits"].sum()),
            "dependency_entropy_mean": float(activity["dependency_entropy"].mean() or 0.0),  # type: ignore[arg-type]
            "novelty_mean": float(activity["novelty"].mean() or 0.0),  # type: ignore[arg-type]
            "by_repo": dg.MetadataValue.md(markdown_table(daily.sort("repo"))),
        },
    )
