"""Dagster assets, checks and jobs, one module per layer.

The beta and preview Dagster APIs used here (partitioned checks, backfill policies, ...) are chosen
knowingly: their stability notes are silenced, or they would print in every process that loads the
code location (each run worker).
"""

import warnings

import dagster as dg

for _note in (dg.BetaWarning, dg.PreviewWarning):
    warnings.filterwarnings("ignore", category=_note)
