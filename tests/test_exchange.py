"""The ccxt market-data client against a fake Kraken server speaking Kraken's wire format."""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import ccxt
import polars as pl
import pytest
from fakes.kraken import DEFAULT_NOW, FakeKraken
from polars.testing import assert_frame_equal

from cyber_pipelines.market.exchange import (
    URL_ENV,
    ExchangeAuthError,
    ExchangeSettings,
    PermanentExchangeError,
    TransientExchangeError,
    UnknownPairError,
    _call,
    fetch_ohlcv_range,
    list_markets,
    make_exchange,
)
from cyber_pipelines.market.schema import OHLCV_SCHEMA
from cyber_pipelines.quality.ohlcv import audit_ohlcv
from cyber_pipelines.tables import split_days

HOUR = timedelta(hours=1)
CURRENT_OPEN = DEFAULT_NOW.replace(minute=0)  # the fake's unfinished candle opened here
KEY, SECRET = "KEY-sekrit-4242", "c2VjcmV0LXZhbHVlLTQ1Ng=="


@pytest.fixture
def fake() -> Iterator[FakeKraken]:
    with FakeKraken(delay_s=1.0) as server:
        yield server


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def settings(fake: FakeKraken, sleeps: list[float]) -> ExchangeSettings:
    return ExchangeSettings(api_url=fake.url, timeout_ms=250, rate_limit_ms=0, max_retries=6, sleep=sleeps.append)


def expected(fake: FakeKraken, pair: str, start: datetime, end: datetime) -> pl.DataFrame:
    """The fake's finished candles in [start, end) in the OHLCV schema (volume is field 6)."""
    rows = [
        (datetime.fromtimestamp(t, UTC), *map(float, (o, h, lo, c, volume)))
        for t, o, h, lo, c, _vwap, volume, _count in fake.committed_rows(pair, 60, start, end)
    ]
    return pl.DataFrame(rows, schema=OHLCV_SCHEMA, orient="row")


def assert_hourly_without_gaps(df: pl.DataFrame, first: datetime, last: datetime) -> None:
    assert df["timestamp"].is_unique().all()
    assert df["timestamp"].diff().drop_nulls().unique().to_list() == [HOUR]
    assert (df["timestamp"][0], df["timestamp"][-1]) == (first, last)


def test_paging_beyond_720_candles_returns_each_finished_candle_once(fake, settings):
    start, end = CURRENT_OPEN - timedelta(days=42, hours=12), DEFAULT_NOW + timedelta(days=1)
    df = fetch_ohlcv_range(make_exchange(settings), "BTC/USD", start, end, settings=settings)

    assert df.schema == OHLCV_SCHEMA
    assert df.height == 42 * 24 + 12  # 1020 > 720: two pages
    assert_hourly_without_gaps(df, start, CURRENT_OPEN - HOUR)  # the open 12:00 candle is dropped
    assert_frame_equal(df, expected(fake, "BTC/USD", start, end))
    # The GX suite passes every day (the last one ends before the open 12:00 candle: 12 of 24 hours).
    days = sorted(set(df["timestamp"].dt.date().to_list()))
    assert audit_ohlcv(split_days(df, days), max_gap_ratio=0.5).failures == ()
    sinces = [int(q["since"]) for q in fake.ohlc_requests]
    assert len(sinces) == 2 and sinces[0] < sinces[1]
    assert fake.calls["Time"] == 1  # no `now` given: the exchange's clock decides what is finished


def test_past_range_stops_paging_at_end_and_respects_explicit_now(fake, settings):
    exchange = make_exchange(settings)
    start = CURRENT_OPEN - timedelta(days=60)
    df = fetch_ohlcv_range(exchange, "eth-usd", start, start + timedelta(days=10), settings=settings)
    assert_frame_equal(df, expected(fake, "ETH/USD", start, start + timedelta(days=10)))
    assert fake.calls["OHLC"] == 1

    time_calls = fake.calls["Time"]
    now = CURRENT_OPEN - timedelta(hours=6, minutes=50)  # 05:10: the 05:00 candle is still open
    recent = fetch_ohlcv_range(exchange, "ETH/USD", now - timedelta(days=1), now + HOUR, now=now)
    assert recent["timestamp"][-1] == now.replace(minute=0) - HOUR
    assert fake.calls["Time"] == time_calls  # an explicit `now` needs no exchange clock


def test_kraken_like_retention_serves_only_the_most_recent_candles(settings, caplog):
    with FakeKraken(retention=720) as kraken:
        s = ExchangeSettings(api_url=kraken.url, rate_limit_ms=0, sleep=settings.sleep)
        start = CURRENT_OPEN - timedelta(days=40)
        with caplog.at_level(logging.WARNING):
            df = fetch_ohlcv_range(make_exchange(s), "SOL/USD", start, DEFAULT_NOW, settings=s)
    first = CURRENT_OPEN - 719 * HOUR  # 720 rows served, the last one unfinished
    assert_hourly_without_gaps(df, first, CURRENT_OPEN - HOUR)
    assert "served them from" in caplog.text


def test_thirty_percent_transient_faults_still_give_every_candle_once(fake, settings, sleeps):
    fake.set_faults(0.3, seed=3)
    exchange = make_exchange(settings)
    start, end = CURRENT_OPEN - timedelta(days=120), CURRENT_OPEN
    for pair in ("BTC/USD", "ETH/USD", "SOL/USD"):
        df = fetch_ohlcv_range(exchange, pair, start, end, settings=settings)
        assert_hourly_without_gaps(df, start, end - HOUR)
        assert_frame_equal(df, expected(fake, pair, start, end))
    injected = sum(fake.faults.values())
    assert injected >= 5 and len(fake.faults) >= 3, fake.faults
    assert len(sleeps) == injected  # every fault was retried once, nothing else was


def test_unlisted_pair_fails_fast_naming_the_pair(fake, settings, sleeps):
    with pytest.raises(UnknownPairError, match="DOGE/EUR") as err:
        fetch_ohlcv_range(make_exchange(settings), "DOGE/EUR", CURRENT_OPEN - HOUR * 5, CURRENT_OPEN)
    assert isinstance(err.value, ValueError)
    assert fake.calls["OHLC"] == 0 and sum(fake.calls.values()) == 2  # Assets + AssetPairs
    assert sleeps == []


def test_pair_the_exchange_stopped_serving_fails_fast(fake, settings, sleeps):
    exchange = make_exchange(settings)
    assert list_markets(exchange) == ["BTC/USD", "ETH/USD", "SOL/USD"]
    fake.delist("SOL/USD")  # markets are cached: OHLC itself answers EQuery:Unknown asset pair
    with pytest.raises(UnknownPairError, match="SOL/USD"):
        fetch_ohlcv_range(exchange, "SOL/USD", CURRENT_OPEN - HOUR * 5, CURRENT_OPEN)
    assert fake.calls["OHLC"] == 1
    assert sleeps == []


def test_retries_exhausted_raise_transient_error_with_full_jitter_backoff(fake, sleeps):
    s = ExchangeSettings(
        api_url=fake.url,
        rate_limit_ms=0,
        max_retries=3,
        backoff_base_s=0.5,
        backoff_max_s=1.0,
        sleep=sleeps.append,
    )
    exchange = make_exchange(s)  # its settings are used when a call passes none
    list_markets(exchange)
    fake.set_faults(1.0, ("http503", "http429", "rate_limit"))
    with pytest.raises(TransientExchangeError, match=r"BTC/USD.*4 attempts"):
        fetch_ohlcv_range(exchange, "BTC/USD", CURRENT_OPEN - HOUR * 5, CURRENT_OPEN, now=DEFAULT_NOW)
    assert fake.calls["OHLC"] == 4
    assert len(sleeps) == 3
    assert all(0 <= wait <= min(1.0, 0.5 * 2**n) for n, wait in enumerate(sleeps))


def test_response_slower_than_the_timeout_is_retried_then_reported(fake, settings):
    fake.set_faults(1.0, ("delay",))
    s = ExchangeSettings(api_url=fake.url, rate_limit_ms=0, timeout_ms=200, max_retries=1, sleep=settings.sleep)
    began = time.monotonic()
    with pytest.raises(TransientExchangeError, match=r"2 attempts.*RequestTimeout"):
        list_markets(make_exchange(s))
    assert time.monotonic() - began < 2.0


def test_rejected_credentials_fail_fast_and_secrets_stay_hidden(fake, sleeps, caplog):
    s = ExchangeSettings(api_url=fake.url, rate_limit_ms=0, api_key=KEY, api_secret=SECRET, sleep=sleeps.append)
    fake.permanent_error = "EAPI:Invalid key"
    with pytest.raises(ExchangeAuthError) as err:
        fetch_ohlcv_range(make_exchange(s), "BTC/USD", CURRENT_OPEN - HOUR, CURRENT_OPEN)
    assert isinstance(err.value, PermanentExchangeError)
    assert sum(fake.calls.values()) == 1 and sleeps == []
    fake.permanent_error = None

    fake.set_faults(1.0, ("rate_limit",))
    with caplog.at_level(logging.DEBUG), pytest.raises(TransientExchangeError) as exhausted:
        list_markets(make_exchange(s))
    texts = [repr(s), caplog.text] + ["".join(traceback.format_exception(e.value)) for e in (err, exhausted)]
    assert not [t for t in texts if KEY in t or SECRET in t]


def test_exchange_error_text_is_masked_when_it_echoes_a_secret(settings):
    exchange = make_exchange(ExchangeSettings(api_key=KEY, api_secret=SECRET))

    def echoing_call() -> None:
        raise ccxt.AuthenticationError(f"kraken rejected key {KEY} signed with {SECRET}")

    with pytest.raises(ExchangeAuthError) as err:
        _call(exchange, echoing_call, "probe", "BTC/USD", settings)
    text = "".join(traceback.format_exception(err.value))
    assert "rejected key ***" in text and KEY not in text and SECRET not in text


def test_exchange_url_comes_from_the_environment(fake, monkeypatch):
    monkeypatch.setenv(URL_ENV, fake.url)
    exchange = make_exchange(ExchangeSettings(rate_limit_ms=0))
    assert exchange.urls["api"]["public"] == exchange.urls["api"]["private"] == fake.url
    assert list_markets(exchange) == ["BTC/USD", "ETH/USD", "SOL/USD"]
    assert fake.calls["AssetPairs"] == 1

    monkeypatch.setenv(URL_ENV, "http://127.0.0.1:9")  # an explicit api_url wins over the env
    assert make_exchange(ExchangeSettings(api_url=fake.url)).urls["api"]["public"] == fake.url
    monkeypatch.setenv(URL_ENV, "kraken.example")
    with pytest.raises(ValueError, match=URL_ENV):
        make_exchange()


def test_bad_arguments_are_rejected_clearly(settings):
    exchange = make_exchange(settings)
    day = datetime(2024, 5, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="timezone-aware"):
        fetch_ohlcv_range(exchange, "BTC/USD", day.replace(tzinfo=None), day + HOUR)
    with pytest.raises(ValueError, match="not after start"):
        fetch_ohlcv_range(exchange, "BTC/USD", day, day)
    with pytest.raises(ValueError, match="timeframe '2h'"):
        fetch_ohlcv_range(exchange, "BTC/USD", day, day + HOUR, "2h")
    with pytest.raises(ValueError, match="not a trading pair"):
        fetch_ohlcv_range(exchange, "BTCUSD", day, day + HOUR)
    with pytest.raises(ValueError, match="unknown ccxt exchange id 'krakken'"):
        make_exchange(ExchangeSettings(exchange_id="krakken"))
    with pytest.raises(ValueError, match="max_retries"):
        ExchangeSettings(max_retries=-1)
