"""The landing sensor with `build_sensor_context`, and the intake runs it requests executed in process."""

from __future__ import annotations

import json
import os
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from assets.landing import landing_intake_job
from cyber_pipelines.definitions import defs
from cyber_pipelines.landing.staging import load_staged
from cyber_pipelines.resources import MarketDataResource
from sensors.landing import landing_sensor, month_blocks

DAY = date(2024, 3, 10)
T0 = int(datetime(2024, 3, 10, tzinfo=UTC).timestamp())
MARKET_CONFIG = {"ops": {"ohlcv_candles": {"config": {"source": "landing"}}}}
MOAT_CONFIG = {"ops": {"moat_records": {"config": {"source": "landing"}}}}
RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


def kraken_rows(hours: int, start: int = T0, scale: float = 1.0) -> list[str]:
    """Kraken OHLCVT rows (no header): time, open, high, low, close, volume, trades."""
    rows = []
    for h in range(hours):
        price = (100.0 + h) * scale
        rows.append(f"{start + 3600 * h},{price},{price + 2},{price - 1},{price + 1},{1.5 + h},{7}")
    return rows


def kraken(hours: int, start: int = T0, scale: float = 1.0) -> str:
    return "\n".join(kraken_rows(hours, start, scale)) + "\n"


def generic_rows(hours: int) -> list[str]:
    header = "timestamp,open,high,low,close,volume"
    stamps = [datetime.fromtimestamp(T0 + 3600 * h, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") for h in range(hours)]
    return [header] + [f"{ts},{20 + h},{22 + h},{19 + h},{21 + h},{3}" for h, ts in enumerate(stamps)]


GOOD = {
    "XBTUSD_60.csv": kraken(24),  # Kraken download: BTC/USD, one day
    "ETH-USD.csv": "\n".join(generic_rows(48)) + "\n",  # generic named columns: ETH/USD, two days
    "DOT-USD.csv": "\n".join([*generic_rows(3)[:3], "2024-03-10T02:00:00Z,20,18,21,19,3"]) + "\n",  # low > high
    "feeds-2024-03-10.csv": (
        "timestamp,source,entity,metric,value\n"
        "2024-03-10T06:00:00Z,government,ETH,filings,3\n"
        "2024-03-10T12:00:00Z,logistics,ETH,shipments,1200.5\n"
        "2024-03-10T13:00:00Z,corporate,SOL,announcements,1\n"
    ),
}
BAD: dict[str, tuple[bytes, str]] = {  # name -> (content, the reason's telling words)
    "SOLUSD_60.csv": (kraken(24)[:-25].encode(), "truncated"),
    "ADA-USD.csv": (b"ts,o,h,l,c,v\n1710028800,1,2,0.5,1.5,10\n1710032400,1,2,0.5,1.5,10\n", "no timestamp column"),
    "XRP-USD.csv": (bytes(range(256)) * 8, "binary content"),
    "AVAX-USD.csv": (b"", "empty file"),
    "x..y.csv": (kraken(24).encode(), "unsafe file name"),
    "prices.csv": (b"timestamp,open,high,low,close,volume\n1710028800,1,2,0.5,1.5,10\n", "no recognisable pair"),
}


@pytest.fixture
def landing(isolated_dirs: Path) -> Path:
    path = isolated_dirs / "landing"
    path.mkdir()
    return path


@pytest.fixture
def instance() -> dg.DagsterInstance:
    return dg.DagsterInstance.ephemeral()


def tick(instance: dg.DagsterInstance, cursor: str | None = None) -> dg.SensorResult:
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"market": MarketDataResource()})
    result = landing_sensor(context)
    assert isinstance(result, dg.SensorResult)
    return result


def skipped(result: dg.SensorResult) -> str:
    assert not result.run_requests and result.skip_reason is not None
    return result.skip_reason.skip_message or ""


def requests_of(result: dg.SensorResult, job: str) -> list[dg.RunRequest]:
    return [r for r in result.run_requests or [] if r.job_name == job]


def run_intake(instance: dg.DagsterInstance, result: dg.SensorResult) -> list[dg.ExecuteInProcessResult]:
    """Execute the tick's intake requests in process, as the daemon would launch them."""
    runs = []
    for request in requests_of(result, "landing_intake"):
        run = landing_intake_job.execute_in_process(
            run_config=request.run_config,
            instance=instance,
            resources={"market": MarketDataResource()},
            tags=request.tags,
        )
        assert run.success
        runs.append(run)
    return runs


def apply_partitions(instance: dg.DagsterInstance, result: dg.SensorResult) -> None:
    for request in result.dynamic_partitions_requests or []:
        assert isinstance(request, dg.AddDynamicPartitionsRequest)
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))


def span(request: dg.RunRequest) -> str:
    """A request's partition, or ``first..last`` of its single-run range."""
    tags = request.tags or {}
    if RANGE_START in tags:
        return f"{tags[RANGE_START]}..{tags[RANGE_END]}"
    return str(request.partition_key)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in root.rglob("*")}


def test_a_tick_moves_parses_and_stages_nothing(landing: Path, instance: dg.DagsterInstance) -> None:
    for name, text in GOOD.items():
        (landing / name).write_text(text)
    for name, (data, _) in BAD.items():
        (landing / name).write_bytes(data)
    (landing / "link.csv").symlink_to(landing / "ETH-USD.csv")
    before = snapshot(landing)
    first = tick(instance)
    assert "not yet stable" in skipped(first)
    second = tick(instance, first.cursor)  # what `dagster sensor preview` does, with the stored cursor
    assert requests_of(second, "landing_intake")
    third = tick(instance, second.cursor)
    assert snapshot(landing) == before  # nothing moved, quarantined, staged or written
    assert "no new files" in skipped(third)  # taken files are not requested again while unchanged


def test_a_growing_file_is_taken_only_once_it_is_stable(landing: Path, instance: dg.DagsterInstance) -> None:
    path = landing / "XBTUSD_60.csv"
    rows = kraken_rows(24)
    path.write_text("\n".join(rows[:8]) + "\n")
    cursor = tick(instance).cursor
    for end in (12, 16, 20, 24):  # a row block appended between every two ticks: never stable, never taken
        with path.open("a") as fh:
            fh.write("\n".join(rows[end - 4 : end]) + "\n")
        result = tick(instance, cursor)
        assert "not yet stable" in skipped(result)
        cursor = result.cursor
    stable = tick(instance, cursor)  # unchanged since the last look: taken whole
    (request,) = requests_of(stable, "landing_intake")
    (listed,) = request.run_config["ops"]["intake_landing_files"]["config"]["files"]
    assert (listed["name"], listed["size"]) == ("XBTUSD_60.csv", path.stat().st_size)
    run_intake(instance, stable)
    assert load_staged(landing / "staged", "BTC/USD", DAY).height == 24
    assert (landing / "processed" / "XBTUSD_60.csv").read_text() == "\n".join(rows) + "\n"


def test_in_progress_names_are_ignored_and_a_done_marker_takes_a_file_at_once(
    landing: Path, instance: dg.DagsterInstance
) -> None:
    (landing / "XBTUSD_60.csv.part").write_text(kraken(24))
    (landing / ".ETH-USD.csv.tmp").write_text(kraken(24))
    first = tick(instance)
    assert "no new files" in skipped(first)
    (landing / "XBTUSD_60.csv.part").rename(landing / "XBTUSD_60.csv")  # write, then rename ...
    (landing / "XBTUSD_60.csv.done").touch()  # ... and say it is done
    (request,) = requests_of(tick(instance, first.cursor), "landing_intake")
    assert [f["name"] for f in request.run_config["ops"]["intake_landing_files"]["config"]["files"]] == [
        "XBTUSD_60.csv"
    ]


def test_drop_to_ingest_requests_with_quarantine_and_two_phase_hand_off(
    landing: Path, instance: dg.DagsterInstance
) -> None:
    for name, text in GOOD.items():
        (landing / name).write_text(text)
    for name, (data, _) in BAD.items():
        (landing / name).write_bytes(data)
    (landing / "link.csv").symlink_to(landing / "ETH-USD.csv")
    instance.add_dynamic_partitions("pairs", ["BTC-USD"])  # known already; ETH-USD and DOT-USD are new

    seen = tick(instance)
    taken = tick(instance, seen.cursor)
    (intake,) = requests_of(taken, "landing_intake")  # one intake run for the whole drop
    assert intake.run_key and intake.run_key.startswith("landing-intake:")
    assert (landing / "link.csv").is_symlink()  # the tick left it: the run quarantines it
    run_intake(instance, taken)

    # Bad files: quarantined by the run, each with its reason; the symlink too.
    quarantine = landing / "quarantine"
    for name, (_, reason) in {**BAD, "link.csv": (b"", "is a symlink")}.items():
        kept = "x.y.csv" if name == "x..y.csv" else name  # quarantine renames unsafe names
        assert (quarantine / kept).exists() or (quarantine / kept).is_symlink(), name
        note = (quarantine / f"{kept}.reason.txt").read_text()
        assert note.startswith("reason: ") and reason in note.splitlines()[0], (name, note)
        assert repr(name) in note
    # Good files (the one with low > high too: that is the quality suite's to block): staged and archived.
    assert sorted(p.name for p in (landing / "processed").iterdir()) == sorted(GOOD)
    assert [p for p in landing.iterdir() if p.is_file() or p.is_symlink()] == []
    assert sorted(p.name for p in (landing / "staged").iterdir() if p.is_dir()) == ["BTC-USD", "DOT-USD", "ETH-USD"]
    assert len(list((landing / "staged_moat").glob("*.parquet"))) == 1
    assert (landing / "processed" / "XBTUSD_60.csv").read_text() == GOOD["XBTUSD_60.csv"]  # moved unchanged

    handed = tick(instance, taken.cursor)
    requests = list(handed.run_requests or [])
    by_partition = {(r.job_name, span(r)): r for r in requests}
    assert set(by_partition) == {
        ("market_ingest", "2024-03-01|BTC-USD"),
        ("market_ingest", "2024-03-01|DOT-USD"),
        ("market_ingest", "2024-03-01|ETH-USD"),
        ("moat_ingest", "2024-03-01"),
    }
    assert len({r.run_key for r in requests}) == len(requests) == 4
    for (job, _), request in by_partition.items():
        assert request.run_config == (MARKET_CONFIG if job == "market_ingest" else MOAT_CONFIG)
    btc = by_partition[("market_ingest", "2024-03-01|BTC-USD")]
    assert btc.tags["cyber/landing_file"] == "XBTUSD_60.csv"
    assert isinstance(btc.partition_key, dg.MultiPartitionKey)
    (add,) = handed.dynamic_partitions_requests or []
    assert isinstance(add, dg.AddDynamicPartitionsRequest)
    assert (add.partitions_def_name, sorted(add.partition_keys)) == ("pairs", ["DOT-USD", "ETH-USD"])

    # Two-phase hand-off: until a committed cursor lists them the manifests stay, and a tick from the
    # older cursor (the handing tick failed) asks for the same runs again.
    assert len(list((landing / "pending").glob("*.json"))) == 4
    retried = tick(instance, taken.cursor)
    assert sorted(r.run_key or "" for r in retried.run_requests or []) == sorted(r.run_key or "" for r in requests)
    done = tick(instance, handed.cursor)
    assert "no new files" in skipped(done)
    assert list((landing / "pending").glob("*.json")) == []
    assert len(json.loads(done.cursor or "{}")["observed"]) == 0


def test_a_file_dropped_again_with_new_content_is_applied_and_wins_by_sequence(
    landing: Path, instance: dg.DagsterInstance
) -> None:
    path = landing / "XBTUSD_60.csv"
    path.write_text(kraken(24))
    cursor = tick(instance).cursor
    first = tick(instance, cursor)
    run_intake(instance, first)
    handed = tick(instance, first.cursor)
    (ingest,) = requests_of(handed, "market_ingest")
    assert load_staged(landing / "staged", "BTC/USD", DAY)["open"][0] == 100.0

    path.write_text(kraken(24, scale=2.0))  # corrected prices under the same name
    seen = tick(instance, handed.cursor)
    again = tick(instance, seen.cursor)
    (intake,) = requests_of(again, "landing_intake")
    assert intake.run_key != requests_of(first, "landing_intake")[0].run_key
    run_intake(instance, again)
    assert load_staged(landing / "staged", "BTC/USD", DAY)["open"][0] == 200.0  # the newer sequence wins
    (reingest,) = requests_of(tick(instance, again.cursor), "market_ingest")
    assert span(reingest) == span(ingest) and reingest.run_key != ingest.run_key  # applied, not de-duplicated


def test_month_blocks_range_requests_and_only_usable_days(landing: Path, instance: dg.DagsterInstance) -> None:
    assert month_blocks([date(2024, 3, 1), date(2024, 1, 1), date(2024, 2, 1), date(2024, 5, 1)]) == [
        (date(2024, 1, 1), date(2024, 3, 1)),
        (date(2024, 5, 1), date(2024, 5, 1)),
    ]
    jan15 = int(datetime(2024, 1, 15, tzinfo=UTC).timestamp())
    (landing / "XBTUSD_60.csv").write_text(kraken(24 * 60, start=jan15))  # 2024-01-15 .. 03-14: three months
    early = int(datetime(2023, 12, 30, tzinfo=UTC).timestamp())  # the pipeline starts 2024-01-01
    (landing / "ETHUSD_60.csv").write_text(kraken(24, start=early))
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    (landing / "SOLUSD_60.csv").write_text(kraken(1, start=int(today.timestamp())))  # today: not complete
    taken = tick(instance, tick(instance).cursor)
    run_intake(instance, taken)
    handed = tick(instance, taken.cursor)
    (btc,) = requests_of(handed, "market_ingest")  # ETH before the start, SOL today: nothing to run
    assert btc.partition_key is None and span(btc) == "2024-01-01|BTC-USD..2024-03-01|BTC-USD"
    assert btc.run_key and btc.run_key.startswith("landing-market:BTC-USD:2024-01-01..2024-03-01:")
    assert sorted(p.name for p in (landing / "processed").iterdir()) == [
        "ETHUSD_60.csv",
        "SOLUSD_60.csv",
        "XBTUSD_60.csv",
    ]


def test_a_staged_file_of_days_without_a_partition_gets_no_runs(landing: Path, instance: dg.DagsterInstance) -> None:
    early = int(datetime(2023, 12, 30, tzinfo=UTC).timestamp())
    (landing / "XBTUSD_60.csv").write_text(kraken(24, start=early))
    taken = tick(instance, tick(instance).cursor)
    run_intake(instance, taken)
    result = tick(instance, taken.cursor)
    assert "cover no usable day" in skipped(result)
    assert (landing / "processed" / "XBTUSD_60.csv").exists()


def test_missing_folder_and_empty_cursor(isolated_dirs: Path, instance: dg.DagsterInstance) -> None:
    result = tick(instance, cursor="")
    assert "no new files" in skipped(result)
    assert json.loads(result.cursor or "{}")["observed"] == []


def test_landing_file_through_intake_and_ingest_stores_the_month(landing: Path, instance: dg.DagsterInstance) -> None:
    (landing / "XBTUSD_60.csv").write_text(kraken(48))  # 2024-03-10 and 03-11
    taken = tick(instance, tick(instance).cursor)
    run_intake(instance, taken)
    handed = tick(instance, taken.cursor)
    apply_partitions(instance, handed)
    (request,) = requests_of(handed, "market_ingest")
    job = defs.resolve_job_def("market_ingest")
    run = job.execute_in_process(
        run_config=request.run_config, instance=instance, partition_key=str(request.partition_key), tags=request.tags
    )
    assert run.success
    stored = pl.read_parquet(landing.parent / "data" / "landing" / "ohlcv" / "BTC-USD" / "2024-03.parquet")
    assert stored.height == 48 and stored["timestamp"].min() == datetime(2024, 3, 10, tzinfo=UTC)
    assert stored["timestamp"].max() == datetime(2024, 3, 10, tzinfo=UTC) + timedelta(hours=47)
    assert os.listdir(landing / "pending")  # handed off by the next committed tick


def test_the_code_location_loads_with_the_intake_job_and_the_sensor() -> None:
    dg.Definitions.validate_loadable(defs)
    repository = defs.get_repository_def()
    assert "landing_intake" in {job.name for job in repository.get_all_jobs()}
    sensor = repository.get_sensor_def("landing_sensor")
    assert {t.job_name for t in sensor.targets} == {"landing_intake", "market_ingest", "moat_ingest"}
