"""The trading pair and candle interval of a landing file, from its name or its pair/symbol column.

Kraken asset codes are mapped the way ccxt maps them for Kraken (``XBT`` -> ``BTC``, ``XDG`` -> ``DOGE``,
``XXBTZUSD`` -> ``BTC/USD``); other files map only ``XBT`` and ``XDG``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from cyber_pipelines.keys import normalize_pair
from cyber_pipelines.landing.files import LandingError

HOUR_S = 3600
KRAKEN_INTERVALS_MIN = frozenset({1, 5, 15, 30, 60, 240, 720, 1440, 10080, 21600})
_TIMEFRAME = re.compile(r"^(\d+)([mhd])$")
_TIMEFRAME_S = {"m": 60, "h": HOUR_S, "d": 24 * HOUR_S}
# Quote currencies that split a concatenated pair (``XBTUSD``); longest first, Kraken X/Z codes included.
QUOTES = tuple(
    sorted(
        {
            *("USD", "EUR", "GBP", "JPY", "CAD", "CHF", "AUD", "USDT", "USDC", "DAI", "PYUSD"),
            *("BTC", "XBT", "ETH", "DOT"),
            *("ZUSD", "ZEUR", "ZGBP", "ZJPY", "ZCAD", "ZAUD", "XXBT", "XETH"),
        },
        key=lambda q: (-len(q), q),
    )
)
_GENERIC_CODES = {"XBT": "BTC", "XDG": "DOGE"}


@lru_cache(maxsize=1)
def _kraken_code() -> Callable[[str], str]:
    import ccxt  # slow import; only Kraken files need it

    exchange = ccxt.kraken()
    return exchange.safe_currency_code


def _map_code(code: str, kraken: bool) -> str:
    code = code.upper()
    return _kraken_code()(code) if kraken else _GENERIC_CODES.get(code, code)


def _split_concat(code: str, kraken: bool) -> str | None:
    upper = code.upper()
    for quote in QUOTES:
        if upper.endswith(quote) and len(upper) - len(quote) >= 2:
            return f"{_map_code(upper[: -len(quote)], kraken)}/{_map_code(quote, kraken)}"
    return None


def pair_from_text(text: str, kraken: bool = False) -> str | None:
    """``BTC/USD``, ``btc-usd``, ``XBT/USD`` or ``XBTUSD`` -> ``BTC/USD`` (None if not a pair)."""
    parts = [p for p in re.split(r"[/\-_:]", text.strip()) if p]
    if len(parts) == 2:
        candidate = f"{_map_code(parts[0], kraken)}/{_map_code(parts[1], kraken)}"
    elif len(parts) == 1:
        candidate = _split_concat(parts[0], kraken) or ""
    else:
        return None
    try:
        return normalize_pair(candidate)
    except ValueError:
        return None


def _interval_token(token: str) -> int | None:
    if token.isdigit() and int(token) in KRAKEN_INTERVALS_MIN:
        return int(token) * 60
    match = _TIMEFRAME.match(token.lower())
    return int(match[1]) * _TIMEFRAME_S[match[2]] if match else None


def pair_from_name(name: str, kraken: bool = False) -> tuple[str | None, int | None]:
    """Pair and candle interval (seconds) from a file name (``BTC-USD.csv``, ``XBTUSD_60.csv``,
    ``BTC_USDT_1m.json``); either may be None."""
    tokens = [t for t in re.split(r"[-_.]", Path(name).stem) if t]
    if not tokens:
        return None, None
    rest: list[str] = []
    pair = None
    upper = [t.upper() for t in tokens]
    if len(tokens) >= 2 and upper[1] in QUOTES:
        pair = pair_from_text(f"{tokens[0]}/{tokens[1]}", kraken)
        rest = tokens[2:]
    if pair is None:
        pair = pair_from_text(tokens[0], kraken) if tokens[0].isalnum() else None
        rest = tokens[1:]
    interval = _interval_token(rest[0]) if pair and rest else None
    return pair, interval


def resolve_pair(name: str, pair_text: str | None, kraken: bool) -> tuple[str, int | None]:
    """The pair from the pair/symbol column when there is one, else from the file name; and the
    interval the name gives. ``LandingError`` (an unknown pair) when neither names a pair."""
    name_pair, interval = pair_from_name(name, kraken)
    if pair_text is None:
        if name_pair is None:
            raise LandingError(
                f"no recognisable pair in file name {name!r} (use e.g. BTC-USD.csv or XBTUSD_60.csv, "
                "or add a pair/symbol column)"
            )
        return name_pair, interval
    column_pair = pair_from_text(pair_text, kraken)
    if column_pair is None:
        raise LandingError(f"pair/symbol value {pair_text!r} is not a recognisable pair such as BTC/USD")
    return column_pair, interval
