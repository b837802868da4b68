"""Nightly schedules (02:00 UTC): ingest up to the UTC day that just ended; the rest follows by automation.

A Dagster schedule launches exactly one job, and the three ingest jobs have different partitions
(pair-month, repo-month, month), so "nightly" is three schedules on the same cron, one per ingest job.
Each asks, per key (pair, repo, or the moat feed), for one single-run backfill from its latest stored
month (it may still be open: a month run covers its days through yesterday) up to yesterday's month, or
the months of the last ``BACKFILL_DAYS`` when it has none. Features, backtests and the strategy
comparison then update through their declarative automation conditions.
"""

from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta

import dagster as dg

from assets.github import github_activity
from assets.jobs import github_ingest_job, market_ingest_job, moat_ingest_job
from assets.market import latest_pair_source, ohlcv_candles
from assets.moat import moat_records
from assets.partitions import PAIRS, REPOS, moat_month_key, month_start, pair_month_key, repo_month_key
from cyber_pipelines.config import load_settings, market_source

NIGHTLY_CRON = "0 2 * * *"
BACKFILL_DAYS = 90  # a key with nothing stored gets the 90 days that end yesterday
EXCHANGE_RETENTION_DAYS = 29  # Kraken serves its latest 720 hourly candles: older days come back empty
RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


def yesterday_utc(context: dg.ScheduleEvaluationContext) -> date:
    """The UTC day that ended before the tick (the tick's own time when evaluated outside the daemon)."""
    moment = context.scheduled_execution_time or datetime.now(UTC)
    return moment.astimezone(UTC).date() - timedelta(days=1)


def last_months(partition_keys: Iterable[str]) -> dict[str, date]:
    """Latest month per key among ``month|<key>`` multi-partition keys (Dagster orders dimensions by name)."""
    last: dict[str, date] = {}
    for key in partition_keys:
        month_part, name = str(key).split("|")
        month = date.fromisoformat(month_part)
        last[name] = max(month, last.get(name, month))
    return last


def ingest_window(last_month: date | None, yesterday: date, first_day: date) -> tuple[date, date] | None:
    """Months to ingest (first days): from the latest stored month (else the months of the
    ``BACKFILL_DAYS`` ending yesterday) through yesterday's month."""
    start = last_month or month_start(yesterday - timedelta(days=BACKFILL_DAYS - 1))
    start = max(start, month_start(first_day))
    end = month_start(yesterday)
    return (start, end) if start <= end else None


def range_request(run_key: str, first: str, last: str, job_name: str, run_config: dict | None = None) -> dg.RunRequest:
    """One run over the partition range ``first..last`` (a single-run backfill)."""
    return dg.RunRequest(
        run_key=run_key,
        tags={RANGE_START: first, RANGE_END: last, "cyber/launched_by": "nightly_schedule"},
        job_name=job_name,
        run_config=run_config or {},
    )


Planner = Callable[[dg.ScheduleEvaluationContext, date, date], list[dg.RunRequest]]


def plan_market(context: dg.ScheduleEvaluationContext, yesterday: date, first_day: date) -> list[dg.RunRequest]:
    last = last_months(context.instance.get_materialized_partitions(ohlcv_candles.key))
    requests = []
    for pair in sorted(context.instance.get_dynamic_partitions(PAIRS)):
        # A pair stays with the source it was last ingested from (sources never mix silently).
        source = latest_pair_source(context.instance, pair) or market_source()
        if source == "landing":
            continue  # new landing days arrive as files: the landing sensor asks for them
        window = ingest_window(last.get(pair), yesterday, first_day)
        if window and source == "ccxt":
            retained = month_start(yesterday - timedelta(days=EXCHANGE_RETENTION_DAYS - 1))
            window = (max(window[0], retained), window[1])
        if window:
            first, end = (str(pair_month_key(pair, day)) for day in window)
            config = {"ops": {"ohlcv_candles": {"config": {"source": source}}}}
            run_key = f"nightly:{yesterday}:market:{pair}"
            requests.append(range_request(run_key, first, end, market_ingest_job.name, config))
    return requests


def plan_github(context: dg.ScheduleEvaluationContext, yesterday: date, first_day: date) -> list[dg.RunRequest]:
    last = last_months(context.instance.get_materialized_partitions(github_activity.key))
    requests = []
    for repo in sorted(context.instance.get_dynamic_partitions(REPOS)):
        window = ingest_window(last.get(repo), yesterday, first_day)
        if window:
            first, end = (str(repo_month_key(repo, day)) for day in window)
            requests.append(range_request(f"nightly:{yesterday}:github:{repo}", first, end, github_ingest_job.name))
    return requests


def plan_moat(context: dg.ScheduleEvaluationContext, yesterday: date, first_day: date) -> list[dg.RunRequest]:
    months = [date.fromisoformat(k) for k in context.instance.get_materialized_partitions(moat_records.key)]
    window = ingest_window(max(months, default=None), yesterday, first_day)
    if not window:
        return []
    first, end = (moat_month_key(day) for day in window)
    return [range_request(f"nightly:{yesterday}:moat", first, end, moat_ingest_job.name)]


def nightly_requests(
    context: dg.ScheduleEvaluationContext, plan: Planner, what: str
) -> list[dg.RunRequest] | dg.SkipReason:
    yesterday = yesterday_utc(context)
    first_day = load_settings().start_date
    if yesterday < first_day:
        return dg.SkipReason(f"{yesterday} is before the first partition day {first_day}")
    requests = plan(context, yesterday, first_day)
    return requests or dg.SkipReason(f"{what}: every key is stored through {yesterday}, or there is no key yet")


def _description(what: str) -> str:
    return (
        f"Every night at 02:00 UTC, ingests {what} up to the UTC day that just ended: one run per key from "
        f"its latest stored month (or the last {BACKFILL_DAYS} days' months) to yesterday's month. Features, "
        "backtests and the strategy comparison follow through declarative automation."
    )


@dg.schedule(
    cron_schedule=NIGHTLY_CRON,
    execution_timezone="UTC",
    job=market_ingest_job,
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description=_description("the OHLCV candles of every pair"),
)
def nightly_market_schedule(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest] | dg.SkipReason:
    return nightly_requests(context, plan_market, "OHLCV candles")


@dg.schedule(
    cron_schedule=NIGHTLY_CRON,
    execution_timezone="UTC",
    job=github_ingest_job,
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description=_description("the GitHub activity of every repo"),
)
def nightly_github_schedule(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest] | dg.SkipReason:
    return nightly_requests(context, plan_github, "GitHub activity")


@dg.schedule(
    cron_schedule=NIGHTLY_CRON,
    execution_timezone="UTC",
    job=moat_ingest_job,
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description=_description("the moat records"),
)
def nightly_moat_schedule(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest] | dg.SkipReason:
    return nightly_requests(context, plan_moat, "moat records")


nightly_schedules = [nightly_market_schedule, nightly_github_schedule, nightly_moat_schedule]
