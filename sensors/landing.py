"""The landing sensor: files dropped in the landing folder become runs; bad files go to quarantine."""

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg

from assets.jobs import market_ingest_job, moat_ingest_job
from assets.partitions import PAIRS, pair_day_key, pair_partitions
from cyber_pipelines.config import load_settings
from cyber_pipelines.keys import pair_to_key
from cyber_pipelines.market.landing import (
    LandingError,
    archive,
    parse_landing_file,
    quarantine,
    scan_landing,
    stage_batch,
)
from cyber_pipelines.moat.files import is_moat_file, parse_moat_file
from cyber_pipelines.moat.staging import stage_moat
from cyber_pipelines.resources import MarketDataResource
from cyber_pipelines.storage import content_hash

TICK_BUDGET_S = 40.0  # stay well under Dagster's 60 s sensor timeout; the rest waits for the next tick


def _source_config(op: str) -> dict:
    return {"ops": {op: {"config": {"source": "landing"}}}}


@dataclass
class _Tick:
    requests: list[dg.RunRequest] = field(default_factory=list)
    new_pairs: list[str] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)


def _ingest_market_file(path: Path, landing: Path, tick: _Tick, known: set[str]) -> None:
    batch = parse_landing_file(path)
    stage_batch(batch, landing / "staged")
    archive(path, landing / "processed")
    key = pair_to_key(batch.pair)
    if key not in known:
        known.add(key)
        tick.new_pairs.append(key)
    days = [d for d in batch.days if _usable(d)]
    tick.accepted.append(f"{path.name}: {batch.pair}, {len(days)} day(s)")
    tick.requests.extend(
        dg.RunRequest(
            run_key=f"landing:{batch.content_hash}:{day.isoformat()}:{key}",
            job_name=market_ingest_job.name,
            partition_key=pair_day_key(key, day),
            run_config=_source_config("ohlcv_candles"),
            tags={"cyber/landing_file": path.name[:200]},
        )
        for day in days
    )


def _ingest_moat_file(path: Path, landing: Path, tick: _Tick) -> None:
    records = parse_moat_file(path)
    stage_moat(records, landing / "staged_moat")
    archive(path, landing / "processed")
    digest = content_hash(records)
    days = sorted({d for d in records["timestamp"].dt.date().to_list() if _usable(d)})
    tick.accepted.append(f"{path.name}: moat, {len(days)} day(s)")
    tick.requests.extend(
        dg.RunRequest(
            run_key=f"landing-moat:{digest}:{day.isoformat()}",
            job_name=moat_ingest_job.name,
            partition_key=day.isoformat(),
            run_config=_source_config("moat_records"),
            tags={"cyber/landing_file": path.name[:200]},
        )
        for day in days
    )


def _usable(day: date) -> bool:
    """A day partition exists and is complete: from the config's start date up to yesterday (UTC)."""
    return load_settings().start_date <= day < datetime.now(UTC).date()


@dg.sensor(
    jobs=[market_ingest_job, moat_ingest_job],
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Picks up OHLCV and moat files dropped in the landing folder: a good file is staged and becomes one "
        "run per partition it covers; a bad file moves to `quarantine/` with a `.reason.txt` beside it."
    ),
)
def landing_sensor(context: dg.SensorEvaluationContext, market: MarketDataResource) -> dg.SensorResult | dg.SkipReason:
    landing = market.landing_path()
    files = scan_landing(landing) if landing.is_dir() else []
    if not files:
        return dg.SkipReason(f"no new files in {landing}")
    known = set(context.instance.get_dynamic_partitions(PAIRS))
    deadline = time.monotonic() + TICK_BUDGET_S
    tick = _Tick()
    for path in files:
        if time.monotonic() > deadline:
            context.log.info("tick budget spent; the remaining files wait for the next tick")
            break
        try:
            if is_moat_file(path):
                _ingest_moat_file(path, landing, tick)
            else:
                _ingest_market_file(path, landing, tick, known)
        except LandingError as exc:
            quarantine(path, landing / "quarantine", str(exc))
            tick.rejected.append(f"{path.name}: {exc}")
        except Exception as exc:  # one file's surprise must not stop the batch
            reason = f"unexpected {type(exc).__name__}: {exc}"
            try:
                quarantine(path, landing / "quarantine", reason)
            except OSError as move_error:
                context.log.error(f"could not quarantine {path.name} ({reason}): {move_error}")
            tick.rejected.append(f"{path.name}: {reason}")
    for line in tick.rejected:
        context.log.warning(f"quarantined {line}")
    for line in tick.accepted:
        context.log.info(f"accepted {line}")
    previous = json.loads(context.cursor) if context.cursor else {}
    cursor = {
        "last_tick": datetime.now(UTC).isoformat(timespec="seconds"),
        "accepted_total": previous.get("accepted_total", 0) + len(tick.accepted),
        "quarantined_total": previous.get("quarantined_total", 0) + len(tick.rejected),
    }
    return dg.SensorResult(
        run_requests=tick.requests,
        skip_reason=None
        if tick.requests
        else (f"{len(tick.accepted)} file(s) accepted, {len(tick.rejected)} quarantined, no new partition to run"),
        dynamic_partitions_requests=[pair_partitions.build_add_request(tick.new_pairs)] if tick.new_pairs else [],
        cursor=json.dumps(cursor),
    )
