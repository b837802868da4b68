"""Safe Dagster partition keys for trading pairs (``BTC/USD`` <-> ``BTC-USD``)."""

from __future__ import annotations

import re

_PAIR = re.compile(r"^[A-Z0-9]{2,12}/[A-Z0-9]{2,12}$")
_PAIR_KEY = re.compile(r"^[A-Z0-9]{2,12}-[A-Z0-9]{2,12}$")


def normalize_pair(pair: str) -> str:
    """Upper-case a pair written ``btc/usd`` or ``BTC-USD`` into ``BTC/USD``; reject anything else."""
    candidate = pair.strip().upper().replace("-", "/")
    if not _PAIR.match(candidate):
        raise ValueError(f"not a trading pair: {pair!r} (expected BASE/QUOTE such as BTC/USD)")
    return candidate


def pair_to_key(pair: str) -> str:
    """``BTC/USD`` -> ``BTC-USD``: a partition key with no ``/ | , [ ]``."""
    return normalize_pair(pair).replace("/", "-")


def key_to_pair(key: str) -> str:
    """``BTC-USD`` -> ``BTC/USD``."""
    if not _PAIR_KEY.match(key):
        raise ValueError(f"not a pair partition key: {key!r} (expected BASE-QUOTE such as BTC-USD)")
    return key.replace("-", "/")


def pair_base(pair: str) -> str:
    """The base asset of a pair: ``ETH/USD`` -> ``ETH``."""
    return normalize_pair(pair).split("/")[0]
