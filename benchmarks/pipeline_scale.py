"""Benchmark: the ingest layers and the whole pipeline on the synthetic source, at growing sizes.

For each size (pairs x days, always the 10 configured repos) a fresh SQLite Dagster instance (the
project's dagster.yaml) and a fresh storage root are used, and every layer runs as the demo runs it:
one range run over every pair and month (market), one over every repo and month (GitHub), one for
moat, one features run and one backtest run per pair, then the strategy comparison. Prints one JSON
line per size with seconds per layer, then a summary line with how the time grows to the largest size.

Targets on a 2-core machine: the market ingest of 15 pairs x 730 days under 60 s; the whole pipeline
(all layers, 10 repos included) under 600 s.
Run: ``.venv/bin/python benchmarks/pipeline_scale.py [--sizes 3x90,15x90,3x730,15x730]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

INGEST_TARGET_S = 60.0
PIPELINE_TARGET_S = 600.0
ROOT = Path(__file__).resolve().parents[1]
# 15 pairs whose bases the config's repos and moat feeds mostly cover (synthetic markets for any pair).
PAIRS = [
    "BTC/USD", "ETH/USD", "SOL/USD", "DOT/USD", "NEAR/USD", "ATOM/USD", "UNI/USD", "AAVE/USD",
    "COMP/USD", "ADA/USD", "XRP/USD", "LTC/USD", "LINK/USD", "AVAX/USD", "DOGE/USD",
]  # fmt: skip


def _run_size(n_pairs: int, n_days: int) -> dict:
    home = Path(tempfile.mkdtemp(prefix="cyber-bench-"))
    os.environ["DAGSTER_HOME"] = str(home / "dagster_home")
    os.environ["CYBER_DATA_DIR"] = str(home / "data")
    (home / "dagster_home").mkdir()
    shutil.copyfile(ROOT / "dagster.yaml", home / "dagster_home" / "dagster.yaml")
    import dagster as dg

    from assets.partitions import moat_month_key, pair_month_key, repo_month_key
    from cyber_pipelines.config import load_settings
    from cyber_pipelines.definitions import defs
    from cyber_pipelines.github.activity import repo_to_key
    from cyber_pipelines.keys import pair_to_key

    settings = load_settings()
    first = settings.start_date
    last = first + timedelta(days=n_days - 1)
    pairs = [pair_to_key(p) for p in PAIRS[:n_pairs]]
    repos = [repo_to_key(r) for r in settings.repos]
    quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
    failures: list[str] = []
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("pairs", pairs)
        instance.add_dynamic_partitions("repos", repos)

        def run(job: str, start: object, end: object | None = None, partition: str | None = None) -> None:
            tags = {} if partition else {"dagster/asset_partition_range_start": str(start)}
            if not partition:
                tags["dagster/asset_partition_range_end"] = str(end)
            result = defs.resolve_job_def(job).execute_in_process(
                instance=instance, run_config=quiet, tags=tags, partition_key=partition, raise_on_error=False
            )
            if not result.success:
                failures.append(f"{job} {partition or start}")

        layers = {
            # One run for every pair (repo) and month: a multi-partition range is the product of its
            # dimensions' ranges, and the pairs were added in this order.
            "market": lambda: run("market_ingest", pair_month_key(pairs[0], first), pair_month_key(pairs[-1], last)),
            "github": lambda: run("github_ingest", repo_month_key(repos[0], first), repo_month_key(repos[-1], last)),
            "moat": lambda: run("moat_ingest", moat_month_key(first), moat_month_key(last)),
            "features": lambda: [run("features", None, partition=p) for p in pairs],
            "backtests": lambda: [run("backtests", None, partition=p) for p in pairs],
            "comparison": lambda: defs.resolve_job_def("compare_strategies").execute_in_process(
                instance=instance, run_config=quiet, raise_on_error=False
            ),
        }
        seconds = {}
        for name, layer in layers.items():
            began = time.perf_counter()
            layer()
            seconds[name] = round(time.perf_counter() - began, 2)
    shutil.rmtree(home, ignore_errors=True)
    ingest = round(seconds["market"] + seconds["github"] + seconds["moat"], 2)
    total = round(sum(seconds.values()), 2)
    months = len({(first + timedelta(days=i)).replace(day=1) for i in range(n_days)})
    return {
        "benchmark": "pipeline_scale",
        "pairs": n_pairs,
        "days": n_days,
        "repos": len(repos),
        "months": months,
        "seconds": seconds,
        "ingest_s": ingest,
        "pipeline_s": total,
        "market_ms_per_pair_month": round(1000 * seconds["market"] / (n_pairs * months), 1),
        "failures": failures,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="3x90,15x90,3x730,15x730", help="PAIRSxDAYS,... (at most 15 pairs)")
    args = parser.parse_args()
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    if any(p > len(PAIRS) or p < 1 or d < 1 for p, d in sizes):
        raise SystemExit(f"error: sizes must be 1..{len(PAIRS)} pairs x >= 1 days, got {args.sizes}")
    if date.today() - timedelta(days=1) < date(2024, 1, 1) + timedelta(days=max(d for _, d in sizes)):
        raise SystemExit("error: the largest size runs past yesterday; pass fewer days")
    results = [_run_size(p, d) for p, d in sizes]
    for r in results:
        print(json.dumps(r), flush=True)
    big = max(results, key=lambda r: (r["pairs"], r["days"]))
    by_size = {(r["pairs"], r["days"]): r for r in results}
    growth = {}
    for (p, d), r in by_size.items():
        if (p, d) != (big["pairs"], big["days"]):
            growth[f"{p}x{d}->{big['pairs']}x{big['days']}"] = round(big["pipeline_s"] / max(r["pipeline_s"], 1e-9), 2)
    print(
        json.dumps(
            {
                "benchmark": "pipeline_scale_summary",
                "largest": f"{big['pairs']}x{big['days']}",
                "market_ingest_s": big["seconds"]["market"],
                "market_ingest_target_s": INGEST_TARGET_S,
                "market_ingest_meets_target": big["seconds"]["market"] < INGEST_TARGET_S,
                "all_ingest_layers_s": big["ingest_s"],
                "pipeline_s": big["pipeline_s"],
                "pipeline_target_s": PIPELINE_TARGET_S,
                "pipeline_meets_target": big["pipeline_s"] < PIPELINE_TARGET_S,
                "pipeline_growth_x": growth,
            }
        )
    )


if __name__ == "__main__":
    main()
