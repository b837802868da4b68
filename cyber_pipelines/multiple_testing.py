"""Family-wise error control: Holm's (1979) step-down adjustment, the one copy the layers share."""

from __future__ import annotations

from collections.abc import Collection

import numpy as np


def holm(p_values: np.ndarray | Collection[float]) -> np.ndarray:
    """Holm (1979) step-down adjusted p-values, in the input order; NaN (no test) stays NaN.

    Sorted ascending, the i-th of the m finite p-values gets ``max_{j <= i} (m - j + 1) p_(j)``,
    capped at 1: family-wise error control under any dependence between the tests."""
    p = np.asarray(list(p_values) if not isinstance(p_values, np.ndarray) else p_values, dtype=np.float64)
    finite = np.isfinite(p)
    if p.ndim != 1 or not np.all((p[finite] >= 0) & (p[finite] <= 1)):
        raise ValueError(f"p-values must be a 1-d array in [0, 1], got {p!r}")
    tested = p[finite]
    order = np.argsort(tested, kind="stable")
    steps = np.minimum(1.0, np.maximum.accumulate((tested.size - np.arange(tested.size)) * tested[order]))
    adjusted = np.full_like(p, np.nan)
    within = np.empty_like(tested)
    within[order] = steps
    adjusted[finite] = within
    return adjusted
