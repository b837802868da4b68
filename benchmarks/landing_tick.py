"""Benchmark: one landing-sensor tick over a landing folder of 10,000 files for 100 pairs.

The folder holds small valid Kraken OHLCVT CSVs (``<BASE>USD_60_<n>.csv``, one day each) plus files
still being written (``.part``). A first tick observes them; the measured tick starts from that cursor,
so every file is stable and gets an intake request (batched, 100 files a run). Also measured, for the
decision on run keys: hashing every file's content (what a content-hash run key would cost a tick),
and a hand-off tick that reads as many pending manifests and requests their month ingests.

Prints one JSON line. Run: ``.venv/bin/python benchmarks/landing_tick.py [--files N] [--pairs P]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

TARGET_S = 2.0


def kraken_day(day: date, price: float) -> str:
    start = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())
    return "".join(
        f"{start + 3600 * h},{price + h},{price + h + 2},{price + h - 1},{price + h + 1},1.5,7\n" for h in range(24)
    )


def build(root: Path, files: int, pairs: int, in_progress: int) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    per_pair = files // pairs
    paths = []
    for p in range(pairs):
        base = f"T{p:03d}"
        for n in range(per_pair):
            path = root / f"{base}USD_60_{n:04d}.csv"
            path.write_text(kraken_day(date(2024, 1, 1) + timedelta(days=n), 100.0 + p))
            paths.append(path)
    for n in range(in_progress):
        (root / f"upload_{n:04d}.csv.part").write_text("1704067200,1,2,0.5,1.5,3,7\n")
    return paths


def write_manifests(root: Path, files: int, pairs: int) -> None:
    """Pending manifests as intake runs leave them (one per staged file)."""
    pending = root / "pending"
    pending.mkdir(parents=True, exist_ok=True)
    per_pair = files // pairs
    sequence = 0
    for p in range(pairs):
        for n in range(per_pair):
            sequence += 1
            day = (date(2024, 1, 1) + timedelta(days=n)).isoformat()
            digest = hashlib.sha256(f"{p}:{n}".encode()).hexdigest()[:16]
            manifest_id = f"market-{sequence:012d}-{digest}"
            record = {
                "id": manifest_id,
                "kind": "market",
                "file": f"T{p:03d}USD_60_{n:04d}.csv",
                "pair": f"T{p:03d}/USD",
                "pair_key": f"T{p:03d}-USD",
                "days": [day],
                "content_hash": digest,
                "sequence": sequence,
            }
            (pending / f"{manifest_id}.json").write_text(json.dumps(record))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--in-progress", type=int, default=200)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        landing = Path(tmp) / "landing"
        os.environ["CYBER_LANDING_DIR"] = str(landing)
        os.environ["CYBER_DATA_DIR"] = str(Path(tmp) / "data")
        os.environ["DAGSTER_HOME"] = str(Path(tmp) / "dagster_home")

        import dagster as dg

        from cyber_pipelines.resources import MarketDataResource
        from sensors.landing import landing_sensor

        paths = build(landing, args.files, args.pairs, args.in_progress)
        instance = dg.DagsterInstance.ephemeral()

        def tick(cursor: str | None) -> tuple[dg.SensorResult, float]:
            context = dg.build_sensor_context(
                instance=instance, cursor=cursor, resources={"market": MarketDataResource()}
            )
            start = time.perf_counter()
            result = landing_sensor(context)
            elapsed = time.perf_counter() - start
            assert isinstance(result, dg.SensorResult)
            return result, elapsed

        observe, observe_s = tick(None)  # the previous observation: every file seen once
        taken, tick_s = tick(observe.cursor)  # the measured tick: every file stable
        requests = list(taken.run_requests or [])
        files_requested = sum(len(r.run_config["ops"]["intake_landing_files"]["config"]["files"]) for r in requests)

        start = time.perf_counter()
        for path in paths:
            hashlib.sha256(path.read_bytes()).hexdigest()
        hash_s = time.perf_counter() - start

        write_manifests(landing, args.files, args.pairs)
        handed, handoff_s = tick(taken.cursor)
        ingest = [r for r in handed.run_requests or [] if r.job_name == "market_ingest"]

    print(
        json.dumps(
            {
                "benchmark": "landing_tick",
                "files": args.files,
                "pairs": args.pairs,
                "in_progress_files": args.in_progress,
                "files_listed": len(paths),
                "first_tick_s": round(observe_s, 3),
                "tick_s": round(tick_s, 3),
                "requests_emitted": len(requests),
                "files_requested": files_requested,
                "cursor_bytes": len(taken.cursor or ""),
                "hash_all_files_s": round(hash_s, 3),
                "handoff_manifests": args.files,
                "handoff_tick_s": round(handoff_s, 3),
                "ingest_requests_emitted": len(ingest),
                "target_s": TARGET_S,
                "meets_target": tick_s < TARGET_S and handoff_s < TARGET_S,
            }
        )
    )


if __name__ == "__main__":
    main()
