"""Ask for each configured repo's latest complete day of GitHub activity once it exists."""

import json
from datetime import UTC, datetime, timedelta

import dagster as dg

from assets.github import github_activity
from assets.jobs import github_ingest_job
from assets.partitions import REPOS, repo_day_key
from cyber_pipelines.config import load_settings


@dg.sensor(
    job=github_ingest_job,
    minimum_interval_seconds=3600,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description=(
        "Once a UTC day is complete, requests its GitHub activity for every repo partition that does not "
        "have it yet (one run per repo-day; run_key de-duplicates). Turn it on for live GitHub ingestion."
    ),
)
def github_activity_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    day = datetime.now(UTC).date() - timedelta(days=1)
    if day < load_settings().start_date:
        return dg.SkipReason(f"{day} is before the first partition day")
    repos = context.instance.get_dynamic_partitions(REPOS)
    if not repos:
        return dg.SkipReason("no repo partitions yet (config_partitions_sensor adds them)")
    have = context.instance.get_materialized_partitions(github_activity.key)
    wanted = [repo_day_key(r, day) for r in repos]
    requests = [
        dg.RunRequest(run_key=f"github:{key}", partition_key=key) for key in wanted if str(key) not in have
    ]
    if not requests:
        return dg.SkipReason(f"all {len(repos)} repos have {day}")
    return dg.SensorResult(
        run_requests=requests, cursor=json.dumps({"day": day.isoformat(), "requested": len(requests)})
    )
