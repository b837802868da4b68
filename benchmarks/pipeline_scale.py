"""Benchmark: the ingest layers and the whole pipeline on the synthetic source, at growing sizes.

For each size (pairs x days, always the 10 configured repos) a fresh SQLite Dagster instance (the
project's dagster.yaml) and a fresh storage root are used, and every layer runs as the CLI and the demo
run it: the runs of each layer's plan launched by the code location's run launcher (a run worker
process each), as many at once as the instance allows (``max_concurrent_runs``, at most one per core).
Market and GitHub are range runs over blocks of pairs (repos) and every month, moat one run, features
and backtests one run per pair, then the strategy comparison. Prints one JSON line per size with
seconds per layer (launch overhead included; loading the code location once is reported apart), then
a summary line with how the time grows to the largest size (the pipeline's and the ingest layers'). The
backtests use the asset's walk-forward windows, the training window shortened where the history is
too short for it (see ``walk_forward_days``); a size with any failed run meets no target.

Targets on a 2-core machine: the market ingest of 15 pairs x 730 days under 60 s; the whole pipeline
(all layers, 10 repos included) under 600 s.
Run: ``.venv/bin/python benchmarks/pipeline_scale.py [--sizes 3x90,15x90,3x730,15x730]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

from cyber_pipelines.backtest.evaluation import TEST_DAYS, TRAIN_DAYS

INGEST_TARGET_S = 60.0
PIPELINE_TARGET_S = 600.0
LAYERS = ("market", "github", "moat", "features", "backtests", "comparison")
ROOT = Path(__file__).resolve().parents[1]
# 15 pairs whose bases the config's repos and moat feeds mostly cover (synthetic markets for any pair).
PAIRS = [
    "BTC/USD", "ETH/USD", "SOL/USD", "DOT/USD", "NEAR/USD", "ATOM/USD", "UNI/USD", "AAVE/USD",
    "COMP/USD", "ADA/USD", "XRP/USD", "LTC/USD", "LINK/USD", "AVAX/USD", "DOGE/USD",
]  # fmt: skip


def walk_forward_days(n_days: int) -> dict[str, int]:
    """The backtest asset's walk-forward (train 90, test 30 days), the training window shortened to fit a
    shorter history (90 days: train 60)."""
    return {"train_days": max(7, min(TRAIN_DAYS, n_days - TEST_DAYS)), "test_days": TEST_DAYS}


def _run_size(n_pairs: int, n_days: int, only: set[str]) -> dict:
    home = Path(tempfile.mkdtemp(prefix="cyber-bench-"))
    os.environ["DAGSTER_HOME"] = str(home / "dagster_home")
    os.environ["CYBER_DATA_DIR"] = str(home / "data")
    (home / "dagster_home").mkdir()
    shutil.copyfile(ROOT / "dagster.yaml", home / "dagster_home" / "dagster.yaml")
    import dagster as dg

    from assets.partitions import months_of
    from cyber_pipelines import orchestrate as orc
    from cyber_pipelines.config import load_settings
    from cyber_pipelines.github.activity import repo_to_key
    from cyber_pipelines.keys import pair_to_key

    settings = load_settings()
    first = settings.start_date
    last = first + timedelta(days=n_days - 1)
    months = months_of([first + timedelta(days=i) for i in range(n_days)])
    pairs = [pair_to_key(p) for p in PAIRS[:n_pairs]]
    repos = [repo_to_key(r) for r in settings.repos]
    failures: list[str] = []
    with dg.DagsterInstance.get() as instance, orc.Launcher(instance, orc.Progress(enabled=False)) as launcher:
        pair_order = orc.ensure_partitions(instance, "pairs", pairs)
        repo_order = orc.ensure_partitions(instance, "repos", repos)
        runs = launcher.parallel
        layers = {
            "market": orc.plan_market(pairs, months, "synthetic", pair_order, last, None, runs).specs,
            "github": orc.plan_github(repos, months, "synthetic", repo_order, last, runs).specs,
            "moat": orc.plan_moat(months, "synthetic", last).specs,
            "features": orc.feature_specs(pairs, "synthetic"),
            "backtests": orc.backtest_specs(pairs, walk_forward_days(n_days)),
            "comparison": [orc.comparison_spec()],
        }
        seconds, run_counts = {}, {}
        for name, specs in layers.items():
            if name not in only:
                continue
            began = time.perf_counter()
            outcomes = launcher.run_all(specs, name)
            seconds[name] = round(time.perf_counter() - began, 2)
            run_counts[name] = len(specs)
            failures += [f"{name} {o.label}: {o.message}" for o in outcomes if not o.success]
        load_s = round(launcher.load_s, 2)
    shutil.rmtree(home, ignore_errors=True)
    ingest = round(sum(seconds.get(layer, 0.0) for layer in ("market", "github", "moat")), 2)
    total = round(sum(seconds.values()), 2)
    return {
        "benchmark": "pipeline_scale",
        "pairs": n_pairs,
        "days": n_days,
        "repos": len(repos),
        "months": len(months),
        "parallel_runs": runs,
        "runs": run_counts,
        "code_location_load_s": load_s,
        "seconds": seconds,
        "ingest_s": ingest,
        "pipeline_s": total,
        "market_ms_per_pair_month": round(1000 * seconds.get("market", math.nan) / (n_pairs * len(months)), 1),
        "walk_forward_days": walk_forward_days(n_days),
        "failures": failures,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="3x90,15x90,3x730,15x730", help="PAIRSxDAYS,... (at most 15 pairs)")
    parser.add_argument(
        "--layers", default=",".join(LAYERS), help=f"the layers to run, in order (default all: {','.join(LAYERS)})"
    )
    args = parser.parse_args()
    only = set(args.layers.split(","))
    if not only <= set(LAYERS):
        raise SystemExit(f"error: unknown layers {sorted(only - set(LAYERS))}; choose from {','.join(LAYERS)}")
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    if any(p > len(PAIRS) or p < 1 or d < 1 for p, d in sizes):
        raise SystemExit(f"error: sizes must be 1..{len(PAIRS)} pairs x >= 1 days, got {args.sizes}")
    if date.today() - timedelta(days=1) < date(2024, 1, 1) + timedelta(days=max(d for _, d in sizes)):
        raise SystemExit("error: the largest size runs past yesterday; pass fewer days")
    results = []
    for p, d in sizes:
        results.append(_run_size(p, d, only))
        print(json.dumps(results[-1]), flush=True)
    big = max(results, key=lambda r: (r["pairs"], r["days"]))
    by_size = {(r["pairs"], r["days"]): r for r in results}
    growth, ingest_growth = {}, {}
    for (p, d), r in by_size.items():
        if (p, d) != (big["pairs"], big["days"]):
            step = f"{p}x{d}->{big['pairs']}x{big['days']}"
            growth[step] = round(big["pipeline_s"] / max(r["pipeline_s"], 1e-9), 2)
            ingest_growth[step] = round(big["ingest_s"] / max(r["ingest_s"], 1e-9), 2)
    complete = only == set(LAYERS) and not any(r["failures"] for r in results)
    print(
        json.dumps(
            {
                "benchmark": "pipeline_scale_summary",
                "largest": f"{big['pairs']}x{big['days']}",
                "market_ingest_s": big["seconds"].get("market"),
                "market_ingest_target_s": INGEST_TARGET_S,
                "market_ingest_meets_target": big["seconds"].get("market", math.inf) < INGEST_TARGET_S,
                "all_ingest_layers_s": big["ingest_s"],
                "pipeline_s": big["pipeline_s"],
                "pipeline_target_s": PIPELINE_TARGET_S,
                "pipeline_meets_target": big["pipeline_s"] < PIPELINE_TARGET_S if complete else None,
                "pipeline_growth_x": growth,
                "ingest_growth_x": ingest_growth,
            }
        )
    )


if __name__ == "__main__":
    main()
