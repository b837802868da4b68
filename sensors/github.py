"""Ask for each configured repo's latest complete day of GitHub activity once it exists (S1 for repos).

A repo is skipped, with the reason, when every active pair it informs (pairs whose base asset is one of
the repo's symbols in the pipeline config) is stopped by the VSM (hibernated or breaker open).
"""

import json
from datetime import UTC, datetime, timedelta

import dagster as dg

from assets.batch import latest_metadata
from assets.github import github_activity
from assets.jobs import github_ingest_job
from assets.partitions import PAIRS, REPOS, repo_month_key
from cyber_pipelines.config import load_repo_map, load_settings
from cyber_pipelines.github.activity import key_to_repo
from cyber_pipelines.keys import key_to_pair, pair_base
from cyber_pipelines.resources import VsmResource
from cyber_pipelines.vsm.system import current_state

ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def blocked_repos(instance: dg.DagsterInstance, repo_keys: list[str], vsm: VsmResource) -> dict[str, str]:
    """Repo partition keys whose informed active pairs are all stopped by the VSM, with the reason.
    A repo that informs no active pair is not blocked."""
    pairs = sorted(instance.get_dynamic_partitions(PAIRS))
    if not pairs:
        return {}
    blocked = current_state(vsm.log(), pairs).blocked()
    if not blocked:
        return {}
    symbols = load_repo_map()
    out = {}
    for key in repo_keys:
        bases = set(symbols.get(key_to_repo(key), ()))
        informed = [p for p in pairs if pair_base(key_to_pair(p)) in bases]
        if informed and all(p in blocked for p in informed):
            out[key] = "every pair it informs is stopped: " + "; ".join(f"{p}: {blocked[p]}" for p in informed)
    return out


@dg.sensor(
    job=github_ingest_job,
    minimum_interval_seconds=3600,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description=(
        "Once a UTC day is complete, requests the month that holds it for every repo whose stored month does "
        "not reach that day yet and has no run under way; a failed day is asked for again on the next hourly tick. "
        "A repo whose informed pairs are all stopped by the VSM (hibernated, breaker open) is skipped with the "
        "reason. Turn it on for live GitHub ingestion."
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
    # The code location's VsmResource (its defaults read CYBER_VSM_DB / DAGSTER_HOME): a resource parameter
    # would make every build_sensor_context of this sensor name it.
    stopped = blocked_repos(context.instance, list(repos), VsmResource())
    wanted = [str(repo_month_key(r, day)) for r in repos if r not in stopped]
    hour = now.strftime("%Y-%m-%dT%H")  # one attempt per missing repo-day and hour: failures are retried
    requests = [
        dg.RunRequest(run_key=f"github:{key}:{day}:{hour}", partition_key=key)
        for key in wanted
        if key not in busy and not has_day(key)
    ]
    skipped = "".join(f"; skipped {repo}: {reason}" for repo, reason in stopped.items())
    cursor: dict = {"day": day.isoformat(), "requested": len(requests)}
    if stopped:
        cursor["skipped"] = stopped
    if not requests:
        context.update_cursor(json.dumps(cursor))
        which = " not stopped by the VSM" if stopped else ""
        return dg.SkipReason(f"all {len(wanted)} repos{which} have {day} or a run under way{skipped}")
    for repo, reason in stopped.items():
        context.log.info(f"skipped {repo}: {reason}")
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(cursor))
