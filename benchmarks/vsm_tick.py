"""Benchmark: one full VSM tick (every step of `cyber-pipelines vsm tick`) with 100 pairs and 10,000 events.

The instance gets 100 pair partitions (``P000-USD``, ...) and the event log 10,000 events spread over the
last day: run successes and failures across the pairs (about 1 in 25 runs fails), check results, the
pains, temporal matches and breaker cycles (open, half-open, closed) those would have caused, and ledger
entries. Then several ticks run, each as the daemon's sensors would (``sensors.vsm.vsm_tick``:
policy, ended runs, checks, zombies, the algedonic channel with incident memory, the ledger), called as
functions; the first also records the pains and ledger entries the seeded log lacks. The instance has
no runs and no materializations: the steps that read it query empty tables.

Prints one JSON line. Run: ``.venv/bin/python benchmarks/vsm_tick.py [--pairs N] [--events N] [--ticks N]``.
With ``CYBER_BENCH_PG`` set to a PostgreSQL URL (e.g. ``postgresql://postgres@127.0.0.1:5432/test``) the
ticks are measured on PostgreSQL too, in a database of their own that is dropped afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

TARGET_S = 2.0  # Dagster times a sensor tick out at 60 s
ERRORS = [
    "HTTP 502 Bad Gateway from the exchange",
    "rate limited: 429 Too Many Requests",
    "{pair}: 3 hours missing in the landing files",
    "timeout after 30 s reading {pair} candles",
]


def seed_events(pairs: list[str], count: int, now: datetime, rng: random.Random) -> list[Any]:
    """``count`` events over the last day, oldest first, as the sensors would have recorded them."""
    from cyber_pipelines.vsm.breaker import Breaker
    from cyber_pipelines.vsm.events import Event
    from cyber_pipelines.vsm.ledger import LedgerEntry

    start = now - timedelta(days=1)
    events: list[Event] = []
    for pair in pairs:  # each pair's ledger entry, at the start of the day
        entry = LedgerEntry(pair, "rule_of_three", 0.01, 0.02, 0.04, 0, 0, 1.0, "active", "P&L +1.0% > -5.0%:", start)
        events.append(Event("pair_state", "active", entry.reason, start, pair, entry.to_json()))
    for pair in rng.sample(pairs, 10):  # breaker cycles of some pairs, earlier in the day
        opened = start + timedelta(hours=rng.uniform(1, 18))
        cycle = [
            Breaker("open", opened, "rule failure_burst: breaker open"),
            Breaker("half_open", opened + timedelta(minutes=30), "cooldown over: half-open, one trial run"),
            Breaker("closed", opened + timedelta(minutes=40), "trial run succeeded: breaker closed"),
        ]
        events += [Event("breaker", b.state, b.reason, b.since, pair, b.to_json()) for b in cycle]
    n_checks = 0
    while len(events) < count:
        at = start + timedelta(seconds=rng.uniform(0, 86_400))
        pair = rng.choice(pairs)
        roll = rng.random()
        if roll < 0.60:
            run_id = str(uuid.UUID(int=rng.getrandbits(128)))
            data = {"run_id": run_id, "job": "market_ingest", "attempt": 1, "seconds": round(rng.uniform(5, 60), 2)}
            events.append(Event("run_success", "succeeded", "succeeded", at, pair, data, key=f"run_success:{run_id}"))
        elif roll < 0.625:
            run_id = str(uuid.UUID(int=rng.getrandbits(128)))
            error = rng.choice(ERRORS).format(pair=pair)
            data = {"run_id": run_id, "job": "market_ingest", "attempt": 1, "error": error}
            events.append(Event("run_failure", "failed", error, at, pair, data, key=f"run_failure:{run_id}"))
        elif roll < 0.95:
            n_checks += 1
            passed = rng.random() > 0.03
            data = {"check": "ohlcv_candles:no_gaps", "execution_id": n_checks, "partition": f"2024-01-01|{pair}"}
            kind, decision = ("check_success", "passed") if passed else ("check_failure", "failed")
            events.append(
                Event(kind, decision, f"ohlcv_candles:no_gaps {decision}", at, pair, data, key=f"check:{n_checks}")
            )
        else:
            score = round(rng.uniform(0, 0.7), 4)
            data = {"score": score, "components": {"failed_runs": score}}
            events.append(Event("pain", f"{score:.2f}", "failed runs", at, pair, data))
    return sorted(events[:count], key=lambda e: e.at)


def measure(url: str, pairs: list[str], events: int, ticks: int, seed: int) -> dict[str, Any]:
    """Seed the log at ``url`` and time ``ticks`` ticks."""
    from cyber_pipelines.instance import get_instance
    from cyber_pipelines.resources import VsmResource
    from cyber_pipelines.vsm.events import EventLog, utc
    from sensors.vsm import vsm_tick

    os.environ["CYBER_VSM_DB"] = url
    log = EventLog(url)
    seeded = time.perf_counter()
    log.extend(seed_events(pairs, events, utc(), random.Random(seed)))
    seed_s = time.perf_counter() - seeded
    in_log = log.count()
    log.close()
    instance, vsm = get_instance(), VsmResource()
    times: list[float] = []
    first: dict[str, int] = {}
    for n in range(ticks):
        started = time.perf_counter()
        log = vsm.log()
        outcome = vsm_tick(instance, vsm, log)
        times.append(time.perf_counter() - started)
        log.close()
        if n == 0:
            first = dict(Counter(e.kind for e in outcome.recorded))
    after = EventLog(url)
    total = after.count()
    after.close()
    return {
        "events_in_log": in_log,
        "seed_s": round(seed_s, 2),
        "tick_s": {
            "median": round(statistics.median(times), 3),
            "max": round(max(times), 3),
            "first": round(times[0], 3),
            "all": [round(t, 3) for t in times],
        },
        "meets_target": max(times) < TARGET_S,
        "first_tick_recorded": first,
        "events_after": total,
    }


def postgres(url: str, pairs: list[str], events: int, ticks: int, seed: int) -> dict[str, Any]:
    """The same on PostgreSQL, in a fresh database (dropped afterwards, whatever happens)."""
    import sqlalchemy as sa

    name = f"vsm_bench_{os.getpid()}"
    server = sa.make_url(url).set(drivername="postgresql+psycopg2")
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        try:
            bench = server.set(database=name).render_as_string(hide_password=False)
            return {"database": f"{server.set(database=name).render_as_string(hide_password=True)}",
                    **measure(bench, pairs, events, ticks, seed)}  # fmt: skip
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except Exception as exc:  # report, do not fail the SQLite result
        return {"error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"}
    finally:
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--ticks", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    import warnings

    warnings.filterwarnings("ignore", message=r".*(beta|preview|superseded).*")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["DAGSTER_HOME"] = str(Path(tmp) / "dagster_home")
        os.environ["CYBER_DATA_DIR"] = str(Path(tmp) / "data")
        os.environ["CYBER_LANDING_DIR"] = str(Path(tmp) / "data" / "inbox")
        for name in ("QDRANT_URL", "CYBER_POLICY"):
            os.environ.pop(name, None)
        import assets.vsm  # noqa: F401 - imported before timing, as in the daemon's code server
        import sensors.vsm  # noqa: F401
        from cyber_pipelines.instance import get_instance

        pairs = [f"P{n:03d}-USD" for n in range(args.pairs)]
        get_instance().add_dynamic_partitions("pairs", pairs)
        result: dict[str, Any] = {"benchmark": "vsm_tick", "pairs": len(pairs), "ticks": args.ticks,
                                  "target_s": TARGET_S}  # fmt: skip
        result["sqlite"] = measure(f"sqlite:///{Path(tmp) / 'vsm.db'}", pairs, args.events, args.ticks, args.seed)
        pg = os.environ.get("CYBER_BENCH_PG")
        result["postgres"] = postgres(pg, pairs, args.events, args.ticks, args.seed) if pg else None
    result["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    result["at"] = datetime.now(UTC).isoformat(timespec="seconds")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
