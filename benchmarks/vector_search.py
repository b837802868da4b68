"""Vector search of the pattern layer: Qdrant Edge (embedded), qdrant-client local mode and exact numpy, side by side.

Run: ``.venv/bin/python benchmarks/vector_search.py [--sizes 100000,1000000] [--dim 32] [--queries 1000]``.
Prints one JSON line (progress goes to stderr). Synthetic clustered vectors (1000 Gaussian clusters of
random spread, the encoder's dimension 32) with the pattern payload (20 pairs, hourly windows,
``horizon_end`` = window time + 25 h); queries are fresh draws from the same clusters. At each size:

- ``EdgeVectorStore`` with quantization none (float32), int8 (the default) and pq (x8): ingest rate
  (vectors/s of upsert + optimize, i.e. index build included), single-query latency p50/p99 with and
  without an ``ended_by`` filter (cut-offs uniform over the time range, so from few to all points
  pass), recall@k against the exact answer, RSS growth and on-disk size, compression ratio and recall
  loss against float32. Each engine runs in a fresh worker process, so RSS growth is its own.
- qdrant-client local mode (only up to ``--client-max`` points: it is brute force in Python).
- exact numpy search (normalized float32 matrix, one matrix-vector product per query).
- a restart check: a new Python process reopens the int8 Edge folder, the same queries give the same ids.

Latencies are measured after ``--warmup`` other queries (each first touch of a memory-mapped page in a
new process is a page fault: at 1M the first 1000 queries ran at p50 1.8 ms, the same ones again at
0.6 ms; the first ``--queries`` of the warm-up are reported as ``cold_*``). The int8 and pq variants
also report an oversampling sweep (a search-time setting). Targets at 1M (Edge int8, unfiltered):
p50 < 1 ms, p99 < 5 ms, recall@10 >= 0.97, ingest + index >= 10k vectors/s, recall loss < 5 % at 4-8x
compression.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cyber_pipelines.patterns.store import (  # noqa: E402
    ClientVectorStore,
    EdgeVectorStore,
    IndexSettings,
    VectorStore,
    point_id,
    recall_at_k,
)

N_CLUSTERS = 1000
N_PAIRS = 20
T0 = 1_600_000_000
HOUR = 3600
HORIZON = 25 * HOUR
CHUNK = 50_000  # rows generated and upserted per call (payload dicts for 1M rows at once would dominate RSS)
NOMINAL_COMPRESSION = {"none": 1.0, "int8": 4.0, "pq": 8.0}
OVERSAMPLING = (2.0, 4.0, 8.0)
TARGETS = {"p50_ms": 1.0, "p99_ms": 5.0, "recall": 0.97, "ingest_per_s": 10_000.0, "recall_loss": 0.05}


def log(message: str) -> None:
    print(f"[vector_search {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------------ data


def make_data(n: int, dim: int, n_queries: int, seed: int, n_warm: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` clustered vectors and ``n_queries + n_warm`` queries (timed ones, then warm-up ones), same clusters."""
    centers_seq, data_seq, query_seq = np.random.SeedSequence(seed).spawn(3)
    crng = np.random.default_rng(centers_seq)
    centers = crng.normal(size=(N_CLUSTERS, dim)).astype(np.float32)
    spread = crng.uniform(0.2, 0.5, N_CLUSTERS).astype(np.float32)

    def draw(rng: np.random.Generator, m: int) -> np.ndarray:
        labels = rng.integers(0, N_CLUSTERS, m)
        return centers[labels] + spread[labels, None] * rng.standard_normal((m, dim), dtype=np.float32)

    return draw(np.random.default_rng(data_seq), n), draw(np.random.default_rng(query_seq), n_queries + n_warm)


def pair_of(i: np.ndarray | int) -> Any:
    return np.asarray(i) % N_PAIRS


def timestamp_of(i: np.ndarray | int) -> Any:
    return T0 + (np.asarray(i) // N_PAIRS) * HOUR


def horizon_of(i: np.ndarray | int) -> Any:
    return timestamp_of(i) + HORIZON


def id_of(i: int) -> str:
    return point_id(f"P{int(pair_of(i)):02d}/USD", int(timestamp_of(i)))


def chunks(data: np.ndarray) -> Iterator[tuple[list[str], np.ndarray, list[dict[str, Any]]]]:
    rng = np.random.default_rng(len(data))
    regimes = ("calm", "normal", "turbulent")
    for start in range(0, len(data), CHUNK):
        rows = range(start, min(start + CHUNK, len(data)))
        fwd = rng.normal(0, 0.01, (len(rows), 3))
        payloads = [
            {
                "pair": f"P{i % N_PAIRS:02d}/USD",
                "timestamp": T0 + (i // N_PAIRS) * HOUR,
                "horizon_end": T0 + (i // N_PAIRS) * HOUR + HORIZON,
                "regime": regimes[i % 3],
                "fwd_1h": float(f[0]),
                "fwd_6h": float(f[1]),
                "fwd_24h": float(f[2]),
            }
            for i, f in zip(rows, fwd, strict=True)
        ]
        yield [id_of(i) for i in rows], data[start : rows.stop], payloads


def exact_top_k(data: np.ndarray, queries: np.ndarray, k: int, ended_by: np.ndarray | None = None) -> list[list[int]]:
    """Exact cosine top-k row indices per query, optionally only rows with horizon_end <= ended_by[q]."""
    unit = data / np.linalg.norm(data, axis=1, keepdims=True)
    q_unit = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    horizons = horizon_of(np.arange(len(data)))
    out: list[list[int]] = []
    step = max(1, (1 << 25) // len(data))
    for start in range(0, len(queries), step):
        scores = q_unit[start : start + step] @ unit.T
        if ended_by is not None:
            scores[horizons[None, :] > ended_by[start : start + step, None]] = -np.inf
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
        best = np.take_along_axis(top, order, axis=1)
        for idx, sc in zip(best, np.take_along_axis(scores, best, axis=1), strict=True):
            out.append([int(j) for j, v in zip(idx, sc, strict=True) if np.isfinite(v)])  # filtered: fewer may pass
    return out


# ---------------------------------------------------------------------------------------------- measurement


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def disk_bytes(path: Path) -> dict[str, int]:
    """Allocated bytes under ``path`` by part (the WAL's files are preallocated 32 MiB segments)."""
    parts = {"vectors": 0, "quantized": 0, "hnsw": 0, "payload": 0, "wal": 0, "other": 0}
    for file in path.rglob("*"):
        if not file.is_file():
            continue
        size = file.stat().st_blocks * 512
        text = file.as_posix()
        if "/wal/" in text:
            parts["wal"] += size
        elif "quantized" in file.name:
            parts["quantized"] += size
        elif "/vector_storage/" in text:
            parts["vectors"] += size
        elif "/vector_index/" in text:
            parts["hnsw"] += size
        elif "/payload" in text:
            parts["payload"] += size
        else:
            parts["other"] += size
    parts["total"] = sum(parts.values())
    return parts


def pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)) * 1000, 3)


def timed_queries(store: VectorStore, queries: np.ndarray, k: int, ended_by: np.ndarray | None) -> tuple[list, list]:
    hits, times = [], []
    for j, q in enumerate(queries):
        end = None if ended_by is None else int(ended_by[j])
        start = time.perf_counter()
        found = store.search(q, k, ended_by=end)
        times.append(time.perf_counter() - start)
        hits.append(found)
    return hits, times


def search_figures(store: VectorStore, job: dict[str, Any], queries: np.ndarray, warm: np.ndarray) -> dict[str, Any]:
    k, ended_by = job["k"], np.asarray(job["ended_by"])[: len(queries)]
    truth = [[id_of(i) for i in row] for row in job["truth"][: len(queries)]]
    truth_f = [[id_of(i) for i in row] for row in job["truth_filtered"][: len(queries)]]
    _, cold = timed_queries(store, warm, k, None)  # a new process: the first queries fault in mmap pages
    cold = cold[: len(queries)]
    timed_queries(store, warm, k, np.asarray(job["ended_by"])[job["queries"] :][: len(warm)])
    plain, t_plain = timed_queries(store, queries, k, None)
    filtered, t_filt = timed_queries(store, queries, k, ended_by)
    assert all(h.payload["horizon_end"] <= e for hs, e in zip(filtered, ended_by, strict=True) for h in hs)
    figures: dict[str, Any] = {}
    if job["engine"] == "edge":  # local mode's batch is the same loop of brute-force scans
        start = time.perf_counter()
        batch = store.search_batch(queries, k, ended_by=[int(e) for e in ended_by])
        figures["batch_filtered_qps"] = round(len(queries) / (time.perf_counter() - start), 1)
        figures["batch_filtered_recall"] = round(recall_at_k([[h.id for h in hs] for hs in batch], truth_f), 4)
    return {
        "queries": len(queries),
        "p50_ms": pct(t_plain, 50),
        "p99_ms": pct(t_plain, 99),
        "filtered_p50_ms": pct(t_filt, 50),
        "filtered_p99_ms": pct(t_filt, 99),
        "cold_p50_ms": pct(cold, 50),
        "cold_p99_ms": pct(cold, 99),
        "recall": round(recall_at_k([[h.id for h in hs] for hs in plain], truth), 4),
        "filtered_recall": round(recall_at_k([[h.id for h in hs] for hs in filtered], truth_f), 4),
        **figures,
        "_ids": [[h.id for h in hs] for hs in plain[: job["restart_queries"]]],
        "_ids_filtered": [[h.id for h in hs] for hs in filtered[: job["restart_queries"]]],
    }


def worker(job: dict[str, Any]) -> dict[str, Any]:
    """One engine at one size, in its own process: build, query, measure."""
    data, all_queries = make_data(job["n"], job["dim"], job["queries"], job["seed"], job["warmup"])
    queries, warm = all_queries[: job["queries"]], all_queries[job["queries"] :]
    engine, n = job["engine"], job["n"]
    if engine == "reopen":  # the restart check: a new process opens the folder, asks the same queries
        base = rss_bytes()
        start = time.perf_counter()
        with EdgeVectorStore(Path(job["path"]), job["dim"]) as shard:
            open_s = time.perf_counter() - start
            r = job["restart_queries"]
            ended_by = np.asarray(job["ended_by"])[:r]
            found = [[h.id for h in shard.search(q, job["k"])] for q in queries[:r]]
            found_f = [
                [h.id for h in shard.search(q, job["k"], ended_by=int(e))]
                for q, e in zip(queries[:r], ended_by, strict=True)
            ]
            serving_mb = round((rss_bytes() - base) / 2**20, 1)  # open + queries, no ingest transients
            return {
                "open_s": round(open_s, 3),
                "count": shard.count(),
                "rss_growth_serving_mb": serving_mb,
                "_ids": found,
                "_ids_filtered": found_f,
            }
    base = rss_bytes()
    if engine == "numpy":
        start = time.perf_counter()
        unit = data / np.linalg.norm(data, axis=1, keepdims=True)
        build_s = time.perf_counter() - start
        horizons = horizon_of(np.arange(n))
        sample = queries[: min(len(queries), job["numpy_queries"])]
        ended_by = np.asarray(job["ended_by"])
        t_plain, t_filt = [], []
        for j, q in enumerate(sample):
            t = time.perf_counter()
            scores = unit @ (q / np.linalg.norm(q))
            np.argpartition(-scores, job["k"])[: job["k"]]
            t_plain.append(time.perf_counter() - t)
            t = time.perf_counter()
            scores = unit @ (q / np.linalg.norm(q))
            scores[horizons > ended_by[j]] = -np.inf
            np.argpartition(-scores, job["k"])[: job["k"]]
            t_filt.append(time.perf_counter() - t)
        return {
            "ingest_per_s": round(n / build_s, 1),
            "queries": len(sample),
            "p50_ms": pct(t_plain, 50),
            "p99_ms": pct(t_plain, 99),
            "filtered_p50_ms": pct(t_filt, 50),
            "filtered_p99_ms": pct(t_filt, 99),
            "recall": 1.0,
            "rss_growth_mb": round((rss_bytes() - base) / 2**20, 1),
            "matrix_mb": round(unit.nbytes / 2**20, 1),
        }
    settings = IndexSettings(quantization=job.get("quantization", "int8"))
    if job.get("ef_construct"):
        settings = replace(settings, ef_construct=job["ef_construct"])
    if engine == "edge":
        path = Path(job["path"])
        store: VectorStore = EdgeVectorStore(path, job["dim"], settings)
    else:
        warnings.filterwarnings("ignore", message="Local mode is not recommended")  # above 20k points: known
        store = ClientVectorStore(job["dim"], settings=settings)
        queries = queries[: job["client_queries"]]
        warm = warm[: min(len(warm), job["client_queries"])]
    upsert_s = 0.0
    for ids, vectors, payloads in chunks(data):
        start = time.perf_counter()
        store.upsert(ids, vectors, payloads)
        upsert_s += time.perf_counter() - start
    log(f"{engine} {settings.quantization} n={n}: upsert {upsert_s:.1f} s, optimizing")
    start = time.perf_counter()
    store.optimize()
    optimize_s = time.perf_counter() - start
    rss_built = rss_bytes()
    del data
    result: dict[str, Any] = {
        "quantization": settings.quantization if engine == "edge" else "ignored (local mode)",
        "ef_construct": settings.ef_construct,
        "count": store.count(),
        "upsert_per_s": round(n / upsert_s, 1),
        "optimize_s": round(optimize_s, 2),
        "ingest_per_s": round(n / (upsert_s + optimize_s), 1),
    }
    log(f"{engine} {settings.quantization} n={n}: optimize {optimize_s:.1f} s, querying")
    result.update(search_figures(store, job, queries, warm))
    if engine == "edge" and settings.quantization != "none":  # a search-time knob: more rescored candidates
        truth = [[id_of(i) for i in row] for row in job["truth"][: len(queries)]]
        sweep = {}
        for factor in OVERSAMPLING:
            store.settings = replace(settings, oversampling=factor)  # type: ignore[attr-defined]
            hits, times = timed_queries(store, queries, job["k"], None)
            found = [[h.id for h in hs] for hs in hits]
            sweep[str(factor)] = {
                "p50_ms": pct(times, 50),
                "p99_ms": pct(times, 99),
                "recall": recall_at_k(found, truth),
            }
        result["oversampling_sweep"] = sweep
    result["rss_growth_mb"] = round((max(rss_bytes(), rss_built) - base) / 2**20, 1)
    store.close()
    if engine == "edge":
        disk = disk_bytes(path)
        result["disk_mb"] = {key: round(value / 2**20, 1) for key, value in disk.items()}
        raw = n * job["dim"] * 4
        result["compression_nominal"] = NOMINAL_COMPRESSION[settings.quantization]
        if disk["quantized"]:
            result["compression_measured"] = round(raw / disk["quantized"], 2)  # per-vector offsets/codebooks included
    return result


def run_worker(job: dict[str, Any]) -> dict[str, Any]:
    name = f"job-{job['engine']}-{job.get('quantization', '')}-{job.get('ef_construct', '')}-{job['n']}.json"
    spec = Path(job["workdir"]) / name
    spec.write_text(json.dumps(job))
    done = subprocess.run(
        [sys.executable, __file__, "--worker", str(spec)], stdout=subprocess.PIPE, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"worker {job['engine']} n={job['n']} failed with exit code {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------------ main


def run_size(n: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    log(f"n={n}: data and exact answers")
    data, all_queries = make_data(n, args.dim, args.queries, args.seed, args.warmup)
    rng = np.random.default_rng(args.seed + 1)
    lo, hi = int(horizon_of(0)), int(horizon_of(n - 1))
    ended_by = rng.integers(lo, hi + 1, len(all_queries))  # timed queries' cut-offs, then the warm-up ones'
    queries = all_queries[: args.queries]
    start = time.perf_counter()
    truth = exact_top_k(data, queries, args.k)
    truth_f = exact_top_k(data, queries, args.k, ended_by[: args.queries])
    truth_s = time.perf_counter() - start
    del data
    job = {
        "n": n, "dim": args.dim, "queries": args.queries, "k": args.k, "seed": args.seed, "workdir": str(workdir),
        "ended_by": ended_by.tolist(), "truth": truth, "truth_filtered": truth_f,
        "restart_queries": min(args.queries, 200), "client_queries": args.client_queries,
        "numpy_queries": args.numpy_queries, "warmup": args.warmup,
    }  # fmt: skip
    out: dict[str, Any] = {"n": n, "exact_truth_s": round(truth_s, 2)}
    out["numpy"] = run_worker({**job, "engine": "numpy"})
    edge: dict[str, Any] = {}
    for quantization in ("none", "int8", "pq"):  # float32 is the reference of recall loss, int8 of the restart
        log(f"n={n}: edge {quantization}")
        path = workdir / f"edge-{quantization}-{n}"
        edge[quantization] = run_worker({**job, "engine": "edge", "quantization": quantization, "path": str(path)})
        if quantization != "int8":
            shutil.rmtree(path, ignore_errors=True)
    if args.compare_ef_construct:  # the graph-build setting trades ingest time against recall: int8 built so too
        name = f"int8_ef{args.compare_ef_construct}"
        log(f"n={n}: edge {name}")
        path = workdir / f"edge-{name}-{n}"
        variant = {"engine": "edge", "quantization": "int8", "path": str(path)}
        edge[name] = run_worker({**job, **variant, "ef_construct": args.compare_ef_construct})
        shutil.rmtree(path, ignore_errors=True)
    log(f"n={n}: restart check in a new process")
    path = workdir / f"edge-int8-{n}"
    reopened = run_worker({**job, "engine": "reopen", "path": str(path)})
    shutil.rmtree(path, ignore_errors=True)
    base = edge["int8"]
    out["edge_restart"] = {
        "new_process": True,
        "open_s": reopened["open_s"],
        "count_same": reopened["count"] == base["count"] == n,
        "queries_compared": 2 * len(base["_ids"]),
        "same_ids": reopened["_ids"] == base["_ids"] and reopened["_ids_filtered"] == base["_ids_filtered"],
        "rss_growth_serving_mb": reopened["rss_growth_serving_mb"],
    }
    reference = edge["none"]["recall"]
    for figures in edge.values():
        for key in ("_ids", "_ids_filtered"):
            figures.pop(key, None)
        figures["recall_loss_vs_float32"] = round(reference - figures["recall"], 4)
        figures["recall_loss_relative"] = round((reference - figures["recall"]) / reference, 4)
    out["edge"] = edge
    if n <= args.client_max:
        log(f"n={n}: qdrant-client local mode")
        client = run_worker({**job, "engine": "client"})
        for key in ("_ids", "_ids_filtered"):
            client.pop(key, None)
        out["client_local"] = client
    else:
        out["client_local"] = {
            "skipped": (
                f"n > --client-max {args.client_max}: qdrant-client local mode is brute force in Python (every point's "
                "payload is checked in Python for a filter), keeps every point as Python objects and warns above 20k "
                "points; it is for tests and small data, a Qdrant server is the scale-out path"
            )
        }
    return out


def targets(result: dict[str, Any]) -> dict[str, Any]:
    edge = result["edge"]
    int8 = edge["int8"]
    compressed = [q for q in ("int8", "pq") if 4 <= edge[q]["compression_nominal"] <= 8]
    return {
        "n": result["n"],
        "engine": "EdgeVectorStore int8 (unfiltered queries; filtered figures for information)",
        "p50_under_1ms": int8["p50_ms"] < TARGETS["p50_ms"],
        "p99_under_5ms": int8["p99_ms"] < TARGETS["p99_ms"],
        "filtered_p50_under_1ms": int8["filtered_p50_ms"] < TARGETS["p50_ms"],
        "filtered_p99_under_5ms": int8["filtered_p99_ms"] < TARGETS["p99_ms"],
        "recall_at_least_0.97": int8["recall"] >= TARGETS["recall"],
        "ingest_at_least_10k_per_s": int8["ingest_per_s"] >= TARGETS["ingest_per_s"],
        "recall_loss_under_5pct_at_4_to_8x": {
            q: edge[q]["recall_loss_relative"] < TARGETS["recall_loss"] for q in compressed
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated numbers of vectors")
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--queries", type=int, default=1000, help="timed queries per engine")
    parser.add_argument("--warmup", type=int, default=5000, help="other queries first, unfiltered then filtered")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--client-max", type=int, default=100_000, help="largest size qdrant-client local mode runs at")
    parser.add_argument("--client-queries", type=int, default=30, help="queries for local mode (slow: brute force)")
    parser.add_argument("--numpy-queries", type=int, default=200, help="single queries timed for exact numpy")
    parser.add_argument(
        "--compare-ef-construct", type=int, default=100, help="also build int8 with this ef_construct (0: skip)"
    )
    parser.add_argument("--workdir", type=Path, default=None, help="where the Edge folders go (default: a temp folder)")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker.read_text()))), flush=True)
        return
    sizes = [int(s) for s in args.sizes.split(",") if s]
    workdir = Path(tempfile.mkdtemp(prefix="vector-search-", dir=args.workdir))
    started, load_before = time.perf_counter(), os.getloadavg()
    try:
        results = [run_size(n, args, workdir) for n in sizes]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    largest = max(results, key=lambda r: r["n"])
    print(
        json.dumps(
            {
                "benchmark": "vector_search",
                "dim": args.dim,
                "k": args.k,
                "queries": args.queries,
                "seed": args.seed,
                "cpus": os.cpu_count(),
                "loadavg_1m_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
                "data": f"{N_CLUSTERS} Gaussian clusters (spread 0.2-0.5), {N_PAIRS} pairs, ended_by uniform over time",
                "settings": vars(IndexSettings()),
                "sizes": results,
                "targets_at_largest": targets(largest),
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
