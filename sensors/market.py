"""S1 operations: ask for each active pair's newly closed candles, unless the VSM has stopped the pair.

``ohlcv_candles`` publishes whole audited UTC days (a month partition covers its days through yesterday),
so the newest candle a run can bring is the last hour of the day that ended most recently: a pair is
stale while its stored ``last_timestamp`` is before that hour. One request per pair and closed hour
(``run_key`` ``s1:market:<pair>:<hour>``: S2 de-duplication); the decisions about breakers live in
``cyber_pipelines.vsm``, this module reads the instance and records the trial runs it starts.
"""

import json
from datetime import UTC, datetime, time

import dagster as dg

from assets.jobs import market_ingest_job
from assets.market import latest_pair_source, newest_candles
from assets.partitions import PAIRS, last_complete_day, pair_month_key
from cyber_pipelines.config import load_settings, market_source
from cyber_pipelines.orchestrate import one_line
from cyber_pipelines.resources import VsmResource
from cyber_pipelines.vsm.breaker import start_trial
from cyber_pipelines.vsm.events import Event
from cyber_pipelines.vsm.system import current_state
from sensors.github import ACTIVE
from sensors.vsm import pair_of_tags

PAIR_TAG = "cyber/vsm_pair"
TRIAL_TAG = "cyber/vsm_trial"
REASON_CHARS = 160  # a skip reason in the cursor and the tick's text


def now_utc() -> datetime:
    """The tick's clock (tests freeze it)."""
    return datetime.now(UTC)


def newest_ingestible(now: datetime) -> datetime:
    """The start of the newest hourly candle a run can publish: the last hour of the last complete UTC day."""
    return datetime.combine(last_complete_day(now), time(23), UTC)


def busy_pairs(instance: dg.DagsterInstance) -> set[str]:
    """Pairs with a market ingest run queued or under way (single partitions and ranges)."""
    records = instance.get_run_records(dg.RunsFilter(job_name=market_ingest_job.name, statuses=ACTIVE), limit=500)
    tags = [dict(r.dagster_run.tags) for r in records]
    return {p for t in tags if (p := t.get(PAIR_TAG) or pair_of_tags(t))}


@dg.sensor(
    job=market_ingest_job,
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description=(
        "S1: every 5 minutes, requests the month partition of each active pair whose stored candles end before "
        "the newest closed hour a run can publish (one run_key per pair and hour). Skips, with the reason, pairs fed "
        "by landing files, pairs with a run under way, hibernated pairs and pairs whose (or the system's) circuit "
        "breaker is open; a half-open breaker gets one trial run. Off by default: its runs poll the exchange."
    ),
)
def market_candles_sensor(context: dg.SensorEvaluationContext, vsm: VsmResource) -> dg.SensorResult | dg.SkipReason:
    now = now_utc()
    hour = newest_ingestible(now)
    if hour.date() < load_settings().start_date:
        return dg.SkipReason(f"{hour.date()} is before the first partition day")
    pairs = sorted(context.instance.get_dynamic_partitions(PAIRS))
    if not pairs:
        return dg.SkipReason("no pair partitions yet (config_partitions_sensor and prospecting add them)")
    log = vsm.log()
    state = current_state(log, pairs)
    blocked = state.blocked()
    busy = busy_pairs(context.instance)
    stored = newest_candles(context.instance)
    system_trial = state.system.state == "half_open"
    stamp = hour.strftime("%Y-%m-%dT%H:%MZ")
    requests: list[dg.RunRequest] = []
    trials: list[Event] = []
    skipped: dict[str, str] = {}
    for pair in pairs:
        source = latest_pair_source(context.instance, pair) or market_source()
        breaker = state.pairs[pair].breaker
        if pair in blocked:
            skipped[pair] = blocked[pair]
        elif source == "landing":
            skipped[pair] = "landing source: its days arrive as files (landing_sensor)"
        elif pair in busy:
            skipped[pair] = "a market_ingest run is queued or under way"
        elif breaker.state == "half_open" and breaker.trial_run:
            skipped[pair] = f"breaker half-open: trial run {breaker.trial_run} already requested"
        elif system_trial and (state.system.trial_run or any(e.pair is None for e in trials)):
            skipped[pair] = f"system breaker half-open: one trial run only ({state.system.trial_run or 'this tick'})"
        elif pair in stored and (last := stored[pair][0]) >= hour:
            skipped[pair] = f"up to date through {last:%Y-%m-%d %H:%M}"
        else:
            run_key = f"s1:market:{pair}:{stamp}"
            tags = {PAIR_TAG: pair, "cyber/launched_by": "market_candles_sensor"}
            for key, half_open in ((pair, breaker), (None, state.system)):
                if half_open.state == "half_open":
                    data = start_trial(half_open, run_key).to_json()
                    trials.append(Event("breaker", "half_open", f"trial run {run_key} requested", now, key, data))
                    tags[TRIAL_TAG] = "true"
            requests.append(
                dg.RunRequest(
                    run_key=run_key,
                    partition_key=str(pair_month_key(pair, hour.date())),
                    run_config={"ops": {"ohlcv_candles": {"config": {"source": source}}}},
                    tags=tags,
                )
            )
    if trials:
        log.extend(trials)  # recorded before the request leaves, so no later tick sends a second trial
    skipped = {pair: one_line(reason, REASON_CHARS) for pair, reason in skipped.items()}
    cursor = json.dumps({"hour": stamp, "requested": [r.run_key for r in requests], "skipped": skipped})
    if not requests:
        context.update_cursor(cursor)
        lines = "; ".join(f"{pair}: {reason}" for pair, reason in skipped.items())
        return dg.SkipReason(f"no candles to request through {stamp}: {lines}")
    for pair, reason in skipped.items():
        context.log.info(f"skipped {pair}: {reason}")
    return dg.SensorResult(run_requests=requests, cursor=cursor)
