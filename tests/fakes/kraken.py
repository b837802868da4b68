"""A fake Kraken REST server on 127.0.0.1 that speaks Kraken's public wire format.

Endpoints: ``/0/public/Time``, ``/0/public/Assets``, ``/0/public/AssetPairs`` and
``/0/public/OHLC`` (``pair``, ``interval``, ``since``; at most ``page_size`` rows of
``[time, "open", "high", "low", "close", "vwap", "volume", count]`` with time > since, plus
``last``). The clock is frozen at ``now``; the candle that opened at the current interval is
unfinished and, as on Kraken, the last row of a page that reaches the present.

Real Kraken serves only the most recent 720 candles per interval whatever ``since`` is; pass
``retention=720`` to behave like that, or leave ``retention=None`` to serve any history from
``since`` (so paging over long ranges can be tested).

Faults (seeded): ``fault_rate`` of the calls fail transiently with one of ``fault_kinds``:
``http500``/``http502``/``http503``/``http429`` (HTML bodies, like a proxy), ``rate_limit``
(``EAPI:Rate limit exceeded``) or ``delay`` (a correct answer sent after ``delay_s``, beyond the
client's timeout). ``permanent_error`` makes every call answer that Kraken error (for example
``EAPI:Invalid key``); ``delist(symbol)`` makes OHLC answer ``EQuery:Unknown asset pair``.
"""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np

INTERVALS = (1, 5, 15, 30, 60, 240, 1440, 10080, 21600)  # minutes, as Kraken accepts
FAULT_KINDS = ("http500", "http502", "http503", "http429", "rate_limit", "delay")
DEFAULT_NOW = datetime(2024, 6, 1, 12, 30, tzinfo=UTC)


@dataclass(frozen=True)
class Asset:
    asset_id: str  # Kraken's id, e.g. XXBT
    altname: str  # e.g. XBT
    decimals: int


@dataclass(frozen=True)
class Pair:
    pair_id: str  # Kraken's id, e.g. XXBTZUSD; the key of the OHLC result
    altname: str  # e.g. XBTUSD
    wsname: str  # e.g. XBT/USD
    base: Asset
    quote: Asset
    symbol: str  # ccxt's unified symbol, e.g. BTC/USD
    price: float  # first price of the simulated history
    hourly_vol: float
    pair_decimals: int


USD = Asset("ZUSD", "USD", 4)
PAIRS = (
    Pair("XXBTZUSD", "XBTUSD", "XBT/USD", Asset("XXBT", "XBT", 10), USD, "BTC/USD", 60_000.0, 0.008, 1),
    Pair("XETHZUSD", "ETHUSD", "ETH/USD", Asset("XETH", "ETH", 10), USD, "ETH/USD", 3_000.0, 0.010, 2),
    Pair("SOLUSD", "SOLUSD", "SOL/USD", Asset("SOL", "SOL", 10), USD, "SOL/USD", 150.0, 0.015, 2),
)


class _Series:
    """Seeded candles of one pair and interval from ``origin`` up to the current (open) one."""

    def __init__(self, pair: Pair, interval: int, origin: int, now: int, seed: int) -> None:
        step = interval * 60
        first = origin - origin % step
        self.times = np.arange(first, now - now % step + step, step, dtype=np.int64)
        n = len(self.times)
        rng = np.random.default_rng([seed, PAIRS.index(pair), interval])
        vol = pair.hourly_vol * np.sqrt(interval / 60)
        closes = pair.price * np.exp(np.cumsum(rng.normal(0.0, vol, n)))
        opens = np.concatenate([[pair.price], closes[:-1]])
        wick = np.abs(rng.normal(0.0, vol / 2, (2, n)))
        self.high = np.maximum(opens, closes) * np.exp(wick[0])
        self.low = np.minimum(opens, closes) * np.exp(-wick[1])
        self.open, self.close = opens, closes
        self.vwap = np.clip((self.high + self.low + closes) / 3, self.low, self.high)
        self.volume = rng.lognormal(3.0, 1.0, n) * interval / 60
        self.count = rng.poisson(50 * max(interval / 60, 0.1), n) + 1
        self.decimals = pair.pair_decimals

    def row(self, i: int) -> list[Any]:
        price = [f"{x[i]:.{self.decimals}f}" for x in (self.open, self.high, self.low, self.close, self.vwap)]
        return [int(self.times[i]), *price, f"{self.volume[i]:.8f}", int(self.count[i])]


class FakeKraken:
    """Start with ``with FakeKraken() as fake:``; point ccxt at ``fake.url``."""

    def __init__(
        self,
        *,
        now: datetime = DEFAULT_NOW,
        history_days: int = 365,
        seed: int = 42,
        page_size: int = 720,
        retention: int | None = None,
        fault_rate: float = 0.0,
        fault_kinds: tuple[str, ...] = FAULT_KINDS,
        fault_seed: int = 0,
        delay_s: float = 1.0,
    ) -> None:
        self.now = int(now.timestamp())
        self.origin = self.now - history_days * 86_400
        self.seed = seed
        self.page_size = page_size
        self.retention = retention
        self.delay_s = delay_s
        self.permanent_error: str | None = None
        self.calls: Counter[str] = Counter()  # endpoint name -> calls, faults included
        self.faults: Counter[str] = Counter()  # fault kind -> times injected
        self.ohlc_requests: list[dict[str, str]] = []  # query of every OHLC call, in order
        self._delisted: set[str] = set()
        self._series: dict[tuple[str, int], _Series] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.set_faults(fault_rate, fault_kinds, fault_seed)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-kraken", daemon=True
        )

    # -- control -------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def set_faults(self, rate: float, kinds: tuple[str, ...] = FAULT_KINDS, seed: int = 0) -> None:
        unknown = set(kinds) - set(FAULT_KINDS)
        if unknown or not kinds or not 0.0 <= rate <= 1.0:
            raise ValueError(f"fault rate must be in [0, 1], kinds among {FAULT_KINDS}; got {rate}, {kinds}")
        with self._lock:
            self.fault_rate, self.fault_kinds, self._rng = rate, kinds, random.Random(seed)

    def delist(self, symbol: str) -> None:
        """From now on OHLC for this pair answers ``EQuery:Unknown asset pair`` (AssetPairs too)."""
        self._delisted.add(self._pair(symbol).pair_id)

    def start(self) -> FakeKraken:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeKraken:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- data ----------------------------------------------------------------------------------
    def committed_rows(self, symbol: str, interval: int, start: datetime, end: datetime) -> list[list[Any]]:
        """The wire rows of the finished candles with start <= time < end: the ground truth."""
        series = self._get_series(self._pair(symbol), interval)
        lo, hi = int(start.timestamp()), int(end.timestamp())
        finished = series.times + interval * 60 <= self.now
        idx = np.flatnonzero((series.times >= lo) & (series.times < hi) & finished)
        return [series.row(int(i)) for i in idx]

    def _pair(self, name: str) -> Pair:
        for pair in PAIRS:
            if name in (pair.pair_id, pair.altname, pair.wsname, pair.symbol):
                return pair
        raise KeyError(name)

    def _get_series(self, pair: Pair, interval: int) -> _Series:
        key = (pair.pair_id, interval)
        with self._lock:
            if key not in self._series:
                self._series[key] = _Series(pair, interval, self.origin, self.now, self.seed)
            return self._series[key]

    # -- endpoints (each returns Kraken's {"error": [...], "result": ...} body) ----------------
    def _time(self, query: dict[str, str]) -> dict[str, Any]:
        rfc1123 = format_datetime(datetime.fromtimestamp(self.now, UTC), usegmt=True)
        return {"error": [], "result": {"unixtime": self.now, "rfc1123": rfc1123}}

    def _assets(self, query: dict[str, str]) -> dict[str, Any]:
        assets = {a.asset_id: a for p in PAIRS for a in (p.base, p.quote)}
        result = {
            a.asset_id: {
                "aclass": "currency",
                "altname": a.altname,
                "decimals": a.decimals,
                "display_decimals": min(a.decimals, 5),
                "status": "enabled",
            }
            for a in assets.values()
        }
        return {"error": [], "result": result}

    def _asset_pairs(self, query: dict[str, str]) -> dict[str, Any]:
        result = {
            p.pair_id: {
                "altname": p.altname,
                "wsname": p.wsname,
                "aclass_base": "currency",
                "base": p.base.asset_id,
                "aclass_quote": "currency",
                "quote": p.quote.asset_id,
                "lot": "unit",
                "cost_decimals": 5,
                "pair_decimals": p.pair_decimals,
                "lot_decimals": 8,
                "lot_multiplier": 1,
                "leverage_buy": [],
                "leverage_sell": [],
                "fees": [[0, 0.4]],
                "fees_maker": [[0, 0.25]],
                "fee_volume_currency": "ZUSD",
                "margin_call": 80,
                "margin_stop": 40,
                "ordermin": "0.0001",
                "costmin": "0.5",
                "tick_size": f"{10**-p.pair_decimals:.{p.pair_decimals}f}",
                "status": "online",
            }
            for p in PAIRS
            if p.pair_id not in self._delisted
        }
        return {"error": [], "result": result}

    def _ohlc(self, query: dict[str, str]) -> dict[str, Any]:
        self.ohlc_requests.append(query)
        try:
            pair = self._pair(query.get("pair", ""))
        except KeyError:
            return {"error": ["EQuery:Unknown asset pair"]}
        if pair.pair_id in self._delisted:
            return {"error": ["EQuery:Unknown asset pair"]}
        try:
            interval = int(query.get("interval", "1"))
            since = int(query["since"]) if "since" in query else None
        except ValueError:
            return {"error": ["EGeneral:Invalid arguments"]}
        if interval not in INTERVALS:
            return {"error": ["EGeneral:Invalid arguments"]}
        series = self._get_series(pair, interval)
        times = series.times
        first = 0 if self.retention is None else max(0, len(times) - self.retention)
        if since is None:  # the most recent page
            lo = max(first, len(times) - self.page_size)
        else:  # rows with time > since; the current candle is always there
            lo = min(max(first, int(np.searchsorted(times, since, side="right"))), len(times) - 1)
        rows = [series.row(i) for i in range(lo, min(lo + self.page_size, len(times)))]
        committed = [r for r in rows if r[0] + interval * 60 <= self.now]
        last = committed[-1][0] if committed else (since or int(times[-1]))
        return {"error": [], "result": {pair.pair_id: rows, "last": last}}

    # -- HTTP ----------------------------------------------------------------------------------
    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self
        routes = {
            "/0/public/Time": self._time,
            "/0/public/Assets": self._assets,
            "/0/public/AssetPairs": self._asset_pairs,
            "/0/public/OHLC": self._ohlc,
        }

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                endpoint = routes.get(parts.path)
                fake._count(parts.path.rsplit("/", 1)[-1])
                if endpoint is None:
                    self._send(404, "text/plain", b"404 page not found")
                    return
                if fake.permanent_error:
                    self._send_json({"error": [fake.permanent_error]})
                    return
                fault = fake._draw_fault()
                if fault and fault.startswith("http"):
                    code = int(fault[4:])
                    html = f"<html><body><h1>{code}</h1>injected fault</body></html>".encode()
                    self._send(code, "text/html", html)
                    return
                if fault == "rate_limit":
                    self._send_json({"error": ["EAPI:Rate limit exceeded"]})
                    return
                query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                body = endpoint(query)
                if fault == "delay" and fake._stopping.wait(fake.delay_s):
                    return
                self._send_json(body)

            def _send_json(self, body: dict[str, Any]) -> None:
                self._send(200, "application/json", json.dumps(body).encode())

            def _send(self, code: int, content_type: str, payload: bytes) -> None:
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timed out) before the answer came

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def _count(self, endpoint: str) -> None:
        with self._lock:
            self.calls[endpoint] += 1

    def _draw_fault(self) -> str | None:
        with self._lock:
            if self.fault_rate and self._rng.random() < self.fault_rate:
                kind = self._rng.choice(self.fault_kinds)
                self.faults[kind] += 1
                return kind
        return None
