"""The one JSON sanitizer: plain JSON types from numpy, pandas, GX and datetime values."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any

MAX_LIST = 10  # with ``shorten``: longer lists keep their first 3 items and a count


def jsonable(value: Any, *, shorten: bool = False, strict: bool = True) -> Any:
    """``value`` as plain JSON types: non-finite floats -> None, numpy scalars -> Python numbers,
    dates and timestamps -> ISO strings, mappings -> dicts with string keys, sequences and sets -> lists.

    ``shorten`` cuts long lists (for metadata a person reads). An unknown type raises ``TypeError``,
    or becomes its ``str`` when ``strict`` is off (values from other libraries' result objects)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):  # numpy float64 too
        return float(value) if math.isfinite(value) else None
    if isinstance(value, datetime | date) or (hasattr(value, "isoformat") and hasattr(value, "year")):
        return value.isoformat()
    if hasattr(value, "item") and hasattr(value, "dtype") and getattr(value, "ndim", 1) == 0:
        return jsonable(value.item(), shorten=shorten, strict=strict)  # numpy scalar
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, shorten=shorten, strict=strict) for k, v in value.items()}
    if isinstance(value, Sequence | set | frozenset) or hasattr(value, "tolist"):
        items = value.tolist() if hasattr(value, "tolist") else list(value)
        if shorten and len(items) > MAX_LIST:
            return [*(jsonable(v, strict=strict) for v in items[:3]), f"... {len(items)} values"]
        return [jsonable(v, shorten=shorten, strict=strict) for v in items]
    if strict:
        raise TypeError(f"not JSON-able: {type(value).__name__}")
    return str(value)
