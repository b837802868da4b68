"""The landing sensor: it lists the landing folder and decides; the runs it requests do the work.

A tick opens no dropped file: it lists entries (``lstat`` only; on object storage one LIST request,
the ETag joining the identity), compares them with the previous tick's observations in its cursor,
and requests a ``landing_intake`` run for the files that are stable (unchanged since the last tick,
or with a ``<name>.done`` marker). The intake run parses,
quarantines and stages. The tick also reads the small manifests the intake runs leave in
``pending/`` and requests the ingest runs of the months they cover: ``market_ingest`` per pair and
``moat_ingest``, one single-run range per contiguous block of months. Hand-off is two-phase: a
manifest is deleted only by a tick that starts from a committed cursor listing it, so a failed tick
loses nothing. ``dagster sensor preview landing_sensor`` therefore moves, parses and stages nothing.
"""

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import dagster as dg

from assets.jobs import market_ingest_job, moat_ingest_job
from assets.landing import INTAKE_OP, landing_intake_job
from assets.partitions import (
    PAIRS,
    last_complete_day,
    moat_month_key,
    months_of,
    next_month,
    pair_month_key,
    pair_partitions,
)
from cyber_pipelines.config import load_settings
from cyber_pipelines.landing.intake import read_pending
from cyber_pipelines.landing.layout import LandingLayout
from cyber_pipelines.landing.listing import Entry, batch_key, batches, decide, list_landing
from cyber_pipelines.resources import MarketDataResource

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"
FILE_TAG = "cyber/landing_file"


@dataclass
class Cursor:
    """The sensor's memory between ticks (JSON): short digests, only of files still in the folder."""

    observed: list[str] = field(default_factory=list)  # seen once, not yet stable
    requested: list[str] = field(default_factory=list)  # intake requested, file still there unchanged
    emitted: list[str] = field(default_factory=list)  # pending manifests whose ingest runs this tick asked for

    @classmethod
    def load(cls, text: str | None) -> "Cursor":
        raw = json.loads(text) if text else {}
        return cls(*(list(raw.get(k, [])) for k in ("observed", "requested", "emitted")))

    def dump(self) -> str:
        return json.dumps(
            {
                "observed": self.observed,
                "requested": self.requested,
                "emitted": self.emitted,
                "last_tick": datetime.now(UTC).isoformat(timespec="seconds"),
            }
        )


def month_blocks(months: Iterable[date]) -> list[tuple[date, date]]:
    """Contiguous runs of months (first days), each one single-run range: ``[(first, last), ...]``."""
    blocks: list[tuple[date, date]] = []
    for month in sorted(set(months)):
        if blocks and next_month(blocks[-1][1]) == month:
            blocks[-1] = (blocks[-1][0], month)
        else:
            blocks.append((month, month))
    return blocks


def _usable(days: Iterable[str], first: date, last: date) -> list[date]:
    """The days that have a complete partition: from ``first`` (the config's start date) through ``last``."""
    return [d for d in map(date.fromisoformat, days) if first <= d <= last]


def _ingest_requests(
    job_name: str, op: str, label: str, manifests: list[dict], key: Any, usable: tuple[date, date]
) -> list[dg.RunRequest]:
    """One request per contiguous block of months that the manifests' usable days fall in."""
    days = [d for m in manifests for d in _usable(m["days"], *usable)]
    digest = hashlib.sha256("\n".join(sorted(m["id"] for m in manifests)).encode()).hexdigest()[:16]
    files = ", ".join(sorted({m["file"] for m in manifests}))
    requests = []
    for first, last in month_blocks(months_of(days)):
        span = first.isoformat() if first == last else f"{first.isoformat()}..{last.isoformat()}"
        tags = {FILE_TAG: files if len(files) <= 200 else f"{files[:180]}... ({len(manifests)} files)"}
        if first != last:
            tags |= {RANGE_START: str(key(first)), RANGE_END: str(key(last))}
        requests.append(
            dg.RunRequest(
                run_key=f"landing-{label}:{span}:{digest}",
                job_name=job_name,
                partition_key=key(first) if first == last else None,
                run_config={"ops": {op: {"config": {"source": "landing"}}}},
                tags=tags,
            )
        )
    return requests


def ingest_requests(manifests: list[dict]) -> tuple[list[dg.RunRequest], list[str]]:
    """Ingest run requests for staged files (market per pair, moat), and the pair keys they use.

    Only usable days are requested: from the config's start date through the last complete UTC day."""
    by_pair: dict[str, list[dict]] = defaultdict(list)
    moat = []
    for manifest in manifests:
        if manifest["kind"] == "market":
            by_pair[manifest["pair_key"]].append(manifest)
        else:
            moat.append(manifest)
    usable = (load_settings().start_date, last_complete_day())
    requests = []
    for pair_key, group in sorted(by_pair.items()):
        requests += _ingest_requests(
            market_ingest_job.name,
            "ohlcv_candles",
            f"market:{pair_key}",
            group,
            lambda month, pair_key=pair_key: pair_month_key(pair_key, month),
            usable,
        )
    if moat:
        requests += _ingest_requests(moat_ingest_job.name, "moat_records", "moat", moat, moat_month_key, usable)
    return requests, sorted(by_pair)


def intake_request(batch: list[Entry]) -> dg.RunRequest:
    files = [
        {"name": e.name, "size": e.size, "mtime_ns": e.mtime_ns} | ({"etag": e.etag} if e.etag else {}) for e in batch
    ]
    names = ", ".join(e.name for e in batch)
    return dg.RunRequest(
        run_key=batch_key(batch),
        job_name=landing_intake_job.name,
        run_config={"ops": {INTAKE_OP: {"config": {"files": files}}}},
        tags={FILE_TAG: names if len(names) <= 200 else f"{names[:180]}... ({len(batch)} files)"},
    )


@dg.sensor(
    jobs=[landing_intake_job, market_ingest_job, moat_ingest_job],
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Lists the landing folder: a file unchanged since the last tick (or with a `<name>.done` marker) gets a "
        "`landing_intake` run, which quarantines or stages it; staged files get `market_ingest`/`moat_ingest` "
        "runs for the months they cover. A tick itself moves, parses and stages nothing."
    ),
)
def landing_sensor(context: dg.SensorEvaluationContext, market: MarketDataResource) -> dg.SensorResult:
    layout = LandingLayout(market.landing_path())
    previous = Cursor.load(context.cursor)

    # Hand-off of staged files: manifests a committed cursor lists are done; the others get their runs.
    committed = set(previous.emitted)
    manifests = []
    for manifest in read_pending(layout):
        if manifest["id"] in committed:
            (layout.pending / f"{manifest['id']}.json").unlink(missing_ok=True)
        else:
            manifests.append(manifest)
    requests, pair_keys = ingest_requests(manifests)
    known = set(context.instance.get_dynamic_partitions(PAIRS)) if pair_keys else set()
    new_pairs = [k for k in pair_keys if k not in known]

    # New drops: stable entries get an intake run; the others are remembered for the next tick.
    decision = decide(list_landing(layout.root), previous.observed, previous.requested)
    intake = [intake_request(batch) for batch in batches(decision.ready)]
    requests = intake + requests

    cursor = Cursor(decision.observed, decision.requested, [m["id"] for m in manifests])
    if decision.ready:
        context.log.info(f"{len(decision.ready)} stable file(s) in {len(intake)} intake run(s)")
    if manifests:
        context.log.info(f"{len(manifests)} staged file(s) handed to {len(requests) - len(intake)} ingest run(s)")
    skip = None
    if not requests:
        if decision.waiting:
            skip = (
                f"{len(decision.waiting)} file(s) in {layout.root} not yet stable: taken when unchanged at the "
                "next tick (or at once with a <name>.done marker)"
            )
        elif manifests:
            skip = f"{len(manifests)} staged file(s) cover no usable day (before the start date or not yet complete)"
        else:
            skip = f"no new files in {layout.root}"
    return dg.SensorResult(
        run_requests=requests,
        skip_reason=skip,
        dynamic_partitions_requests=[pair_partitions.build_add_request(new_pairs)] if new_pairs else [],
        cursor=cursor.dump(),
    )
