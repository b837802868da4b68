"""Alternative ("moat") feeds in long format: one row per observation."""

from __future__ import annotations

import polars as pl

MOAT_SCHEMA: dict[str, pl.DataType] = {
    "timestamp": pl.Datetime("us", "UTC"),  # when the value became known (publication time)
    "source": pl.String(),  # government | logistics | corporate | ...
    "entity": pl.String(),  # the asset symbol the value informs (ETH, SOL, ...) or "*" for all
    "metric": pl.String(),
    "value": pl.Float64(),
}

MOAT_KEY = ["timestamp", "source", "entity", "metric"]  # one observation: no two rows share it
