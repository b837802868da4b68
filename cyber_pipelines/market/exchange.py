"""Market data from an exchange through ccxt: finished OHLCV candles, markets, retries.

Transient faults (``ccxt.NetworkError`` and its family: timeouts, HTTP 429/5xx, Kraken's
``EAPI:Rate limit exceeded``; also garbled responses) are retried with exponential backoff and
full jitter; permanent ones (unknown pair, rejected credentials, other exchange errors) fail at
once. Error messages never contain the API key or secret.

Paging is done here rather than with ccxt's ``paginate`` option: for OHLCV that option anchors
its windows to the local clock (it drops ranges older than ``paginationCalls`` x 720 candles
unless ``until`` is given, then refuses ranges needing more calls), retries every error
(unknown pairs included) at once with no backoff, and keeps the unfinished candle.
"""

from __future__ import annotations

import logging
import os
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar
from urllib.parse import urlsplit

import ccxt
import polars as pl
import tenacity

from cyber_pipelines.keys import normalize_pair
from cyber_pipelines.market.schema import OHLCV_COLUMNS, conform_ohlcv

log = logging.getLogger(__name__)

URL_ENV = "CYBER_EXCHANGE_URL"
T = TypeVar("T")

# Retried: network faults, 429/5xx (ccxt maps them into NetworkError) and malformed responses.
TRANSIENT_ERRORS = (ccxt.NetworkError, ccxt.BadResponse)


class ExchangeDataError(Exception):
    """Base of the errors raised by this module."""


class PermanentExchangeError(ExchangeDataError):
    """The exchange refused the request in a way that retrying cannot fix."""


class UnknownPairError(PermanentExchangeError, ValueError):
    """The exchange does not list (or no longer serves) the pair."""


class ExchangeAuthError(PermanentExchangeError):
    """The exchange rejected the credentials or their permissions."""


class TransientExchangeError(ExchangeDataError):
    """A transient fault that persisted through every retry."""


@dataclass(frozen=True)
class ExchangeSettings:
    """How to reach the exchange and how hard to retry.

    ``api_url`` (else env ``CYBER_EXCHANGE_URL``) replaces the scheme and host of every API URL
    of the exchange. ``max_retries`` counts retries after the first attempt; waits are drawn
    uniformly from [0, min(backoff_max_s, backoff_base_s * 2**n)] (full jitter) and slept with
    ``sleep``. ``rate_limit_ms`` overrides ccxt's per-exchange request spacing.
    """

    exchange_id: str = "kraken"
    timeout_ms: int = 10_000
    max_retries: int = 6
    backoff_base_s: float = 0.5
    backoff_max_s: float = 20.0
    api_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    api_secret: str | None = field(default=None, repr=False)
    rate_limit_ms: int | None = None
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.timeout_ms <= 0:
            raise ValueError(f"timeout_ms must be > 0, got {self.timeout_ms}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.backoff_base_s < 0 or self.backoff_max_s < 0:
            raise ValueError(f"backoff must be >= 0, got {self.backoff_base_s}, {self.backoff_max_s}")
        if self.rate_limit_ms is not None and self.rate_limit_ms < 0:
            raise ValueError(f"rate_limit_ms must be >= 0, got {self.rate_limit_ms}")


# The settings each exchange was made with: the retry policy used when a call gives none.
_MADE_WITH: weakref.WeakKeyDictionary[ccxt.Exchange, ExchangeSettings] = weakref.WeakKeyDictionary()


def make_exchange(settings: ExchangeSettings | None = None) -> ccxt.Exchange:
    """A synchronous ccxt exchange with rate limiting, the timeout and any URL override applied."""
    settings = settings or ExchangeSettings()
    exchange_class = getattr(ccxt, settings.exchange_id, None)
    if not (isinstance(exchange_class, type) and issubclass(exchange_class, ccxt.Exchange)):
        raise ValueError(f"unknown ccxt exchange id {settings.exchange_id!r} (for example 'kraken')")
    config: dict[str, Any] = {"enableRateLimit": True, "timeout": settings.timeout_ms}
    if settings.rate_limit_ms is not None:
        config["rateLimit"] = settings.rate_limit_ms
    if settings.api_key:
        config["apiKey"] = settings.api_key
    if settings.api_secret:
        config["secret"] = settings.api_secret
    exchange = exchange_class(config)
    _MADE_WITH[exchange] = settings
    base_url = settings.api_url or os.environ.get(URL_ENV)
    if base_url:
        exchange.urls["api"] = _rebase_urls(exchange.urls["api"], _check_base_url(base_url))
    return exchange


def list_markets(exchange: ccxt.Exchange, *, settings: ExchangeSettings | None = None) -> list[str]:
    """Unified symbols (``BTC/USD``) of the exchange's active spot markets, sorted.

    ``settings`` (retry policy) defaults to those the exchange was made with.
    """
    markets = _call(exchange, exchange.load_markets, "load markets", None, settings)
    return sorted(symbol for symbol, m in markets.items() if m.get("spot") and m.get("active") is not False)


def fetch_ohlcv_range(
    exchange: ccxt.Exchange,
    pair: str,
    start: datetime,
    end: datetime,
    timeframe: str = "1h",
    *,
    now: datetime | None = None,
    settings: ExchangeSettings | None = None,
) -> pl.DataFrame:
    """Finished candles with ``start <= timestamp < end``, in the OHLCV schema, sorted, unique.

    Pages forward with ``since`` from ``start``; a candle is finished when its period closed at
    ``now`` (default: the exchange's clock), so the exchange's still-open last candle is dropped.
    ``settings`` (retry policy) defaults to those the exchange was made with. Raises
    ``UnknownPairError``, ``ExchangeAuthError``, ``PermanentExchangeError`` or, when transient
    faults outlast the retries, ``TransientExchangeError``.
    """
    symbol = normalize_pair(pair)
    start_ms, end_ms = _epoch_ms(start, "start"), _epoch_ms(end, "end")
    if end_ms <= start_ms:
        raise ValueError(f"empty range for {symbol}: end {end} is not after start {start}")
    if timeframe not in (exchange.timeframes or {}):
        raise ValueError(f"{exchange.id} has no timeframe {timeframe!r}; it has {list(exchange.timeframes)}")
    step_ms = exchange.parse_timeframe(timeframe) * 1000

    _call(exchange, exchange.load_markets, "load markets", symbol, settings)
    if symbol not in exchange.markets:
        raise UnknownPairError(f"unknown pair {symbol} on {exchange.id}: the exchange does not list it")
    if now is not None:
        now_ms = _epoch_ms(now, "now")
    elif exchange.has.get("fetchTime"):
        now_ms = _call(exchange, exchange.fetch_time, "fetch time", symbol, settings)
    else:
        now_ms = exchange.milliseconds()

    candles: dict[int, list[Any]] = {}
    since = start_ms
    while since < end_ms and since + step_ms <= now_ms:
        page = _call(
            exchange,
            partial(exchange.fetch_ohlcv, symbol, timeframe, since),
            f"fetch {timeframe} candles since {_iso(since)}",
            symbol,
            settings,
        )
        fresh = [c for c in page if since <= c[0] < end_ms and c[0] + step_ms <= now_ms]
        if since == start_ms and page and page[0][0] >= start_ms + step_ms:
            log.warning(
                "%s %s: asked for candles from %s, the exchange served them from %s on "
                "(Kraken keeps only its most recent 720 candles per timeframe)",
                exchange.id,
                symbol,
                _iso(start_ms),
                _iso(page[0][0]),
            )
        if not fresh:
            break
        candles.update((c[0], c) for c in fresh)
        since = max(candles) + step_ms
    return _to_frame([candles[t] for t in sorted(candles)])


# -- helpers -------------------------------------------------------------------------------------
def _call(
    exchange: ccxt.Exchange,
    fn: Callable[[], T],
    what: str,
    pair: str | None,
    settings: ExchangeSettings | None,
) -> T:
    """Run one exchange request with retries; translate ccxt errors into this module's errors."""
    settings = settings or _MADE_WITH.get(exchange) or ExchangeSettings()
    secrets = [s for s in (exchange.apiKey, exchange.secret) if s]
    subject = f"{exchange.id} {pair or ''}".rstrip()

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "%s: %s failed (%s), attempt %d of %d, retrying in %.2f s",
            subject,
            what,
            _describe(exc, secrets),
            state.attempt_number,
            settings.max_retries + 1,
            state.upcoming_sleep,
        )

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(TRANSIENT_ERRORS),
        wait=tenacity.wait_random_exponential(multiplier=settings.backoff_base_s, max=settings.backoff_max_s),
        stop=tenacity.stop_after_attempt(settings.max_retries + 1),
        sleep=settings.sleep,
        before_sleep=before_sleep,
    )
    try:
        return retrying(fn)
    except tenacity.RetryError as err:
        last = err.last_attempt
        raise TransientExchangeError(
            f"{subject}: {what} still failing after {last.attempt_number} attempts: "
            f"{_describe(last.exception(), secrets)}"
        ) from None
    except ccxt.BaseError as exc:
        raise _permanent(exc, subject, what, pair, secrets) from None


def _permanent(exc: Exception, subject: str, what: str, pair: str | None, secrets: list[str]) -> PermanentExchangeError:
    detail = _describe(exc, secrets)
    if pair and (isinstance(exc, ccxt.BadSymbol) or "Unknown asset pair" in str(exc)):
        return UnknownPairError(f"unknown pair {pair} on {subject.split()[0]}: {what} refused ({detail})")
    if isinstance(exc, ccxt.AuthenticationError):
        return ExchangeAuthError(f"{subject}: {what} rejected the credentials ({detail})")
    return PermanentExchangeError(f"{subject}: {what} failed ({detail})")


def _describe(exc: BaseException | None, secrets: list[str]) -> str:
    """``ErrorClass: message`` with any secret masked."""
    if exc is None:
        return "no error"
    text = f"{type(exc).__name__}: {exc}"
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def _check_base_url(url: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"exchange API URL (api_url or {URL_ENV}) must be http(s)://host[:port]: {url!r}")
    return url.strip().rstrip("/")


def _rebase_urls(urls: Any, base: str) -> Any:
    """Replace scheme and host of every URL in ccxt's ``urls['api']`` by ``base``, keeping paths."""
    if isinstance(urls, dict):
        return {key: _rebase_urls(value, base) for key, value in urls.items()}
    if isinstance(urls, str):
        return base + urlsplit(urls).path.rstrip("/")
    return urls


def _epoch_ms(moment: datetime, name: str) -> int:
    if moment.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got naive {moment.isoformat()}")
    return int(moment.timestamp() * 1000)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def _to_frame(rows: list[list[Any]]) -> pl.DataFrame:
    frame = pl.DataFrame(
        rows,
        schema={"ms": pl.Int64, **{c: pl.Float64 for c in OHLCV_COLUMNS[1:]}},
        orient="row",
    )
    timestamp = pl.from_epoch("ms", time_unit="ms").dt.replace_time_zone("UTC").alias("timestamp")
    return conform_ohlcv(frame.with_columns(timestamp).drop("ms"))
