"""Analog forecasts: what followed the most similar past windows, seen without look-ahead.

At a bar known at time T (its close), the forecast of the next ``horizon`` hours' log return is the
similarity-weighted mean of the forward returns that followed the ``k`` nearest windows of any pair
whose outcome was known by T (``horizon_end <= T``, the store's payload filter). Weights are the
cosine similarities clipped at 0; a bar with no admissible neighbour (or none similar) forecasts 0.

The no-retrieval reference is the base rate: the mean forward return of every window of any pair
known by T (the same admissible memory, no similarity), so the comparison isolates what retrieval
adds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cyber_pipelines.patterns.store import Hit, VectorStore

DEFAULT_K = 20
DEFAULT_HORIZON = 6  # hours: the forward return forecast (one of windows.HORIZONS)
BATCH = 256


def weighted_outcome(scores: np.ndarray, outcomes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise similarity-weighted mean of ``outcomes`` (NaN = no neighbour) and the neighbours used."""
    ok = np.isfinite(outcomes) & np.isfinite(scores)
    w = np.where(ok, np.clip(np.nan_to_num(scores), 0.0, None), 0.0)
    total = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        forecast = np.where(total > 0, (w * np.nan_to_num(outcomes)).sum(axis=1) / total, 0.0)
    return forecast, ok.sum(axis=1)


def _outcomes(hits: Sequence[Sequence[Hit]], k: int, key: str) -> tuple[np.ndarray, np.ndarray]:
    scores, outcomes = np.full((len(hits), k), np.nan), np.full((len(hits), k), np.nan)
    for i, row in enumerate(hits):
        for j, hit in enumerate(row[:k]):
            value = hit.payload.get(key)
            scores[i, j] = hit.score
            outcomes[i, j] = np.nan if value is None else float(value)
    return scores, outcomes


def store_forecasts(
    store: VectorStore,
    vectors: np.ndarray,
    known_at: np.ndarray,
    *,
    k: int = DEFAULT_K,
    horizon: int = DEFAULT_HORIZON,
    exact: bool = False,
    progress: object = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(forecast, neighbours used) per query vector, each seeing only windows ended by its ``known_at``."""
    forecast = np.zeros(len(vectors))
    used = np.zeros(len(vectors), dtype=np.int64)
    key = f"fwd_{horizon}h"
    for start in range(0, len(vectors), BATCH):
        stop = min(start + BATCH, len(vectors))
        hits = store.search_batch(vectors[start:stop], k, ended_by=[int(t) for t in known_at[start:stop]], exact=exact)
        forecast[start:stop], used[start:stop] = weighted_outcome(*_outcomes(hits, k, key))
        if callable(progress):
            progress(stop, len(vectors))
    return forecast, used


def exact_neighbours_before(
    memory: np.ndarray, memory_horizon_end: np.ndarray, queries: np.ndarray, known_at: np.ndarray, k: int = DEFAULT_K
) -> tuple[np.ndarray, np.ndarray]:
    """(indices, cosine scores) of each query's ``k`` nearest unit-length ``memory`` rows ended by its
    ``known_at``, by exact search in numpy; score NaN (index -1) where fewer than ``k`` are admissible."""
    index = np.full((len(queries), k), -1, dtype=np.int64)
    score = np.full((len(queries), k), np.nan)
    for start in range(0, len(queries), BATCH):
        stop = min(start + BATCH, len(queries))
        sims = queries[start:stop] @ memory.T
        sims[memory_horizon_end[None, :] > known_at[start:stop, None]] = -np.inf
        if k < sims.shape[1]:  # the k best of each row, then those k in order
            part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            order = np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1, kind="stable")
            top = np.take_along_axis(part, order, axis=1)
        else:
            top = np.argsort(-sims, axis=1, kind="stable")
        found = np.take_along_axis(sims, top, axis=1)
        ok = np.isfinite(found)
        index[start:stop, : top.shape[1]] = np.where(ok, top, -1)
        score[start:stop, : top.shape[1]] = np.where(ok, found, np.nan)
    return index, score


def exact_forecasts(
    memory: np.ndarray,
    memory_horizon_end: np.ndarray,
    memory_outcome: np.ndarray,
    queries: np.ndarray,
    known_at: np.ndarray,
    k: int = DEFAULT_K,
) -> tuple[np.ndarray, np.ndarray]:
    """The same forecast as ``store_forecasts`` by exact search in numpy (unit-length rows)."""
    index, score = exact_neighbours_before(memory, memory_horizon_end, queries, known_at, k)
    outcomes = np.where(index >= 0, memory_outcome[np.maximum(index, 0)], np.nan)
    return weighted_outcome(score, outcomes)


def base_rate(memory_horizon_end: np.ndarray, memory_outcome: np.ndarray, known_at: np.ndarray) -> np.ndarray:
    """Mean outcome of every memory window ended by each ``known_at`` (0 before the first)."""
    ok = np.isfinite(memory_outcome)
    order = np.argsort(memory_horizon_end[ok], kind="stable")
    ends, values = memory_horizon_end[ok][order], memory_outcome[ok][order]
    csum = np.concatenate([[0.0], np.cumsum(values)])
    count = np.searchsorted(ends, known_at, side="right")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, csum[count] / np.maximum(count, 1), 0.0)
