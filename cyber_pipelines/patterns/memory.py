"""The pattern memory of one pair: its windows as points (id, vector, payload), indexed and audited.

Ids come from the pair and the window's timestamp (``store.point_id``), so indexing a pair again
replaces its points and never duplicates one; points of the pair that are no longer among its windows
(a shorter history) are removed first. The audit is the gate on the memory: the pair's count equals
its windows, no id repeats, and the index's recall@k against exact search on a sample of the pair's
windows is at least ``MIN_RECALL``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import polars as pl

from cyber_pipelines.patterns.store import VectorStore, point_id, recall_at_k
from cyber_pipelines.patterns.windows import HORIZONS, epoch_seconds

MIN_RECALL = 0.95
AUDIT_QUERIES = 100
AUDIT_K = 10


def window_points(windows: pl.DataFrame, encoder_version: str) -> tuple[list[str], list[dict[str, Any]]]:
    """Point ids and payloads of ``windows`` (pair, timestamp, horizon_end, regime, forward returns)."""
    ts, ends = epoch_seconds(windows["timestamp"]), epoch_seconds(windows["horizon_end"])
    pairs, regimes = windows["pair"].to_list(), windows["regime"].to_list()
    forward = {h: windows[f"fwd_{h}h"].to_list() for h in HORIZONS}
    ids = [point_id(p, int(t)) for p, t in zip(pairs, ts, strict=True)]
    payloads = [
        {
            "pair": pairs[i],
            "timestamp": int(ts[i]),
            "horizon_end": int(ends[i]),
            "regime": regimes[i],
            **{f"fwd_{h}h": forward[h][i] for h in HORIZONS},
            "encoder_version": encoder_version,
        }
        for i in range(len(ids))
    ]
    return ids, payloads


def index_pair(
    store: VectorStore, pair: str, ids: list[str], vectors: np.ndarray, payloads: list[dict[str, Any]]
) -> int:
    """Replace the pair's points with these; returns how many stale points were removed first."""
    stale = set(store.ids(pair)) - set(ids)
    removed = store.delete_pair(pair) if stale else 0
    if ids:
        store.upsert(ids, vectors, payloads)
        store.optimize()
    return removed


@dataclass(frozen=True)
class MemoryAudit:
    pair: str
    windows: int
    stored: int
    duplicate_ids: int
    recall: float
    queries: int
    k: int
    written: bool = True

    @property
    def passed(self) -> bool:
        return self.written and self.stored == self.windows and self.duplicate_ids == 0 and self.recall >= MIN_RECALL

    def reasons(self) -> list[str]:
        out = [] if self.written else [f"{self.pair}: not written (the previous points stay)"]
        if self.stored != self.windows:
            out.append(f"{self.pair}: {self.stored} points stored for {self.windows} windows")
        if self.duplicate_ids:
            out.append(f"{self.pair}: {self.duplicate_ids} windows share an id (repeated timestamps)")
        if self.written and not self.recall >= MIN_RECALL:
            out.append(f"{self.pair}: recall@{self.k} {self.recall:.3f} < {MIN_RECALL} on {self.queries} queries")
        return out


def audit_pair(
    store: VectorStore, pair: str, ids: list[str], vectors: np.ndarray, *, queries: int = AUDIT_QUERIES, seed: int = 0
) -> MemoryAudit:
    """Count, duplicate ids and recall@``AUDIT_K`` of the index against exact search over the store."""
    sample = np.random.default_rng(seed).choice(len(ids), size=min(queries, len(ids)), replace=False)
    found = [[h.id for h in store.search(vectors[i], AUDIT_K)] for i in sample]
    truth = [[h.id for h in store.search(vectors[i], AUDIT_K, exact=True)] for i in sample]
    return MemoryAudit(
        pair=pair,
        windows=len(ids),
        stored=store.count(pair),
        duplicate_ids=len(ids) - len(set(ids)),
        recall=recall_at_k(found, truth) if len(sample) else 1.0,
        queries=len(sample),
        k=AUDIT_K,
    )


def unwritten_audit(store: VectorStore, pair: str, ids: list[str]) -> MemoryAudit:
    """The audit of windows that were not written because their ids repeat (no recall to measure)."""
    return MemoryAudit(
        pair=pair,
        windows=len(ids),
        stored=store.count(pair),
        duplicate_ids=len(ids) - len(set(ids)),
        recall=float("nan"),
        queries=0,
        k=AUDIT_K,
        written=False,
    )


def training_cutoff(first_timestamps: list[datetime], train_days: int) -> datetime:
    """The end of the encoder's training period: ``train_days`` after the earliest pair's first bar, the
    first out-of-sample bar of every pair's walk-forward (so no evaluated bar was seen in training)."""
    return min(first_timestamps) + timedelta(days=train_days)
