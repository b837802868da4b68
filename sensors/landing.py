"""The landing sensor: files dropped in the landing folder become runs; bad files go to quarantine."""

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

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
from cyber_pipelines.storage import content_hash, write_text_atomic

TICK_BUDGET_S = 40.0  # stay well under Dagster's 60 s sensor timeout; the rest waits for the next tick
PENDING = "pending"  # manifests of staged files whose run requests are not yet committed with a cursor


def _source_config(op: str) -> dict:
    return {"ops": {op: {"config": {"source": "landing"}}}}


@dataclass
class _Tick:
    requests: list[dg.RunRequest] = field(default_factory=list)
    new_pairs: list[str] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    emitted: list[str] = field(default_factory=list)  # manifest ids whose requests this tick returns


def _usable(day: date) -> bool:
    """A day partition exists and is complete: from the config's start date up to yesterday (UTC)."""
    return load_settings().start_date <= day < datetime.now(UTC).date()


def day_ranges(days: list[date]) -> list[tuple[date, date]]:
    """Contiguous runs of days, each one single-run backfill: ``[(first, last), ...]``."""
    ranges: list[tuple[date, date]] = []
    for day in sorted(set(days)):
        if ranges and (day - ranges[-1][1]).days == 1:
            ranges[-1] = (ranges[-1][0], day)
        else:
            ranges.append((day, day))
    return ranges


def _requests(manifest: dict) -> list[dg.RunRequest]:
    """One run request per contiguous range of the staged file's usable days."""
    market = manifest["kind"] == "market"
    job, op = (market_ingest_job, "ohlcv_candles") if market else (moat_ingest_job, "moat_records")

    def key(day: date) -> str | dg.MultiPartitionKey:
        return pair_day_key(manifest["pair_key"], day) if market else day.isoformat()

    requests = []
    for first, last in day_ranges([date.fromisoformat(d) for d in manifest["days"] if _usable(date.fromisoformat(d))]):
        tags = {"cyber/landing_file": manifest["file"][:200]}
        if first != last:
            tags |= {
                "dagster/asset_partition_range_start": str(key(first)),
                "dagster/asset_partition_range_end": str(key(last)),
            }
        span = first.isoformat() if first == last else f"{first.isoformat()}..{last.isoformat()}"
        requests.append(
            dg.RunRequest(
                run_key=f"landing-{manifest['kind']}:{manifest['hash']}:{span}:{manifest.get('pair_key', '')}",
                job_name=job.name,
                partition_key=key(first) if first == last else None,
                run_config=_source_config(op),
                tags=tags,
            )
        )
    return requests


def _stage(path: Path, landing: Path, known: set[str], tick: _Tick) -> None:
    """Validate and stage one file, record its manifest, archive it; its requests go out with this tick."""
    manifest: dict[str, Any]
    if is_moat_file(path):
        records = parse_moat_file(path)
        stage_moat(records, landing / "staged_moat")
        manifest = {"kind": "moat", "hash": content_hash(records)}
        days = sorted({d.isoformat() for d in records["timestamp"].dt.date().to_list()})
        label = "moat"
    else:
        batch = parse_landing_file(path)
        stage_batch(batch, landing / "staged")
        manifest = {"kind": "market", "hash": batch.content_hash, "pair_key": pair_to_key(batch.pair)}
        days = [d.isoformat() for d in batch.days]
        label = batch.pair
        if manifest["pair_key"] not in known:
            known.add(manifest["pair_key"])
            tick.new_pairs.append(manifest["pair_key"])
    manifest |= {"file": path.name, "days": days, "id": f"{manifest['kind']}-{manifest['hash']}"}
    write_text_atomic(json.dumps(manifest), landing / PENDING / f"{manifest['id']}.json")
    archive(path, landing / "processed")
    tick.accepted.append(f"{path.name}: {label}, {len(days)} day(s)")
    tick.requests += _requests(manifest)
    tick.emitted.append(manifest["id"])


def _resume_pending(landing: Path, committed: set[str], tick: _Tick) -> None:
    """Two-phase hand-off: a manifest whose requests a committed cursor lists is done; any other (the tick
    that staged it failed before Dagster stored its requests) is requested again (run keys de-duplicate)."""
    for path in sorted((landing / PENDING).glob("*.json")):
        manifest = json.loads(path.read_text())
        if manifest["id"] in committed:
            path.unlink()
        else:
            tick.requests += _requests(manifest)
            tick.emitted.append(manifest["id"])


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
    previous = json.loads(context.cursor) if context.cursor else {}
    tick = _Tick()
    if landing.is_dir():
        _resume_pending(landing, set(previous.get("emitted", [])), tick)
    files = scan_landing(landing) if landing.is_dir() else []
    if not files and not tick.requests:
        return dg.SkipReason(f"no new files in {landing}")
    known = set(context.instance.get_dynamic_partitions(PAIRS))
    deadline = time.monotonic() + TICK_BUDGET_S
    for path in files:
        if time.monotonic() > deadline:
            context.log.info("tick budget spent; the remaining files wait for the next tick")
            break
        try:
            _stage(path, landing, known, tick)
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
    cursor = {
        "emitted": tick.emitted,
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
