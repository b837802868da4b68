"""Ask for each configured repo's latest complete day of GitHub activity once it exists."""

import json
from datetime import UTC, datetime, timedelta

import dagster as dg

from assets.batch import latest_metadata
from assets.github import github_activity
from assets.jobs import github_ingest_job
from assets.partitions import REPOS, repo_month_key
from cyber_pipelines.config import load_settings

ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


@dg.sensor(
    job=github_ingest_job,
    minimum_interval_seconds=3600,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description=(
        "Once a UTC day is complete, requests the month that holds it for every repo whose stored month does "
        "not reach that day yet and has no run under way; a failed day is asked for again on the next hourly tick. "
        "Turn it on for live GitHub ingestion."
    ),
)
def github_activity_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    now = datetime.now(UTC)
    day = now.date() - timedelta(days=1)
    if day < load_settings().start_date:
        return dg.SkipReason(f"{day} is before the first partition day")
    repos = context.instance.get_dynamic_partitions(REPOS)
    if not repos:
        return dg.SkipReason("no repo partitions yet (config_partitions_sensor adds them)")

    def has_day(key: str) -> bool:
        last = (latest_metadata(context.instance, github_activity.key, [key]) or {}).get("last_timestamp")
        return last is not None and str(last)[:10] >= day.isoformat()

    busy = {
        record.dagster_run.tags.get("dagster/partition")
        for record in context.instance.get_run_records(
            dg.RunsFilter(job_name=github_ingest_job.name, statuses=ACTIVE), limit=500
        )
    }
    wanted = [str(repo_month_key(r, day)) for r in repos]
    hour = now.strftime("%Y-%m-%dT%H")  # one attempt per missing repo-day and hour: failures are retried
    requests = [
        dg.RunRequest(run_key=f"github:{key}:{day}:{hour}", partition_key=key)
        for key in wanted
        if key not in busy and not has_day(key)
    ]
    if not requests:
        return dg.SkipReason(f"all {len(repos)} repos have {day} or a run under way")
    return dg.SensorResult(
        run_requests=requests,
        cursor=json.dumps({"day": day.isoformat(), "requested": len(requests)}),
    )
