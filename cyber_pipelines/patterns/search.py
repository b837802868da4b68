"""Similar-pattern search from the shell: the windows most like a pair's window at a time, without look-ahead.

The query is the pair's last window known at ``at`` (its last bar closed by then); the answer is the
``k`` nearest windows of any pair whose forward horizon had ended by ``at``, with what followed them.
What followed the query itself is shown apart, and only as a check: the search never sees it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import polars as pl

from cyber_pipelines.patterns.encoder import WindowEncoder, embed
from cyber_pipelines.patterns.store import VectorStore
from cyber_pipelines.patterns.windows import BAR, HORIZONS, window_matrix


def _iso(seconds: int | None) -> str | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC).isoformat()


def query_row(windows: pl.DataFrame, pair: str, at: datetime) -> int:
    """Index of the pair's last window known at ``at``; ValueError naming the pair, time and span."""
    known = windows["timestamp"] + BAR <= at
    if not known.any():
        span = f"{windows['timestamp'][0]}..{windows['timestamp'][-1]}" if windows.height else "none"
        raise ValueError(f"no window of {pair} is known at {at.isoformat()} (its windows end {span})")
    return int(np.flatnonzero(known.to_numpy())[-1])


def similar(
    store: VectorStore, model: WindowEncoder, windows: pl.DataFrame, pair: str, at: datetime, k: int
) -> dict[str, Any]:
    """The query window and its ``k`` nearest admissible windows (JSON-able)."""
    row = query_row(windows, pair, at)
    vector = embed(model, window_matrix(windows.slice(row, 1)))[0]
    hits = store.search(vector, k, ended_by=int(at.timestamp()))
    query = windows.row(row, named=True)
    return {
        "pair": pair,
        "at": at.isoformat(),
        "query": {
            "window_end": query["timestamp"].isoformat(),
            "followed_by": {f"fwd_{h}h": query[f"fwd_{h}h"] for h in HORIZONS},  # not seen by the search
            "horizon_end": query["horizon_end"].isoformat(),
        },
        "neighbours": [
            {
                "pair": hit.payload.get("pair"),
                "window_end": _iso(hit.payload.get("timestamp")),
                "similarity": hit.score,
                "horizon_end": _iso(hit.payload.get("horizon_end")),
                "regime": hit.payload.get("regime"),
                **{f"fwd_{h}h": hit.payload.get(f"fwd_{h}h") for h in HORIZONS},
            }
            for hit in hits
        ],
    }
