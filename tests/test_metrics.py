"""`cyber-pipelines metrics`: the Prometheus exporter, its HTTP endpoint, the shell summary, and the compose
Prometheus and Grafana files.

One instance for the module (its own DAGSTER_HOME and data folder, which every test points at): a real
`ohlcv_candles` month of BTC-USD materialized through Dagster (a successful run with real check
evaluations, recorded into the VSM log as the check sensor does), a failed run on ETH-USD, VSM events
appended to the log (a ledger entry, pains, a breaker trip), a stored out-of-sample equity curve for the
ledger, and two reported materializations each of backtest_results and strategy_comparison carrying
`numeric_summary`'s metadata layout (a real backtest takes minutes; test_backtest_assets covers its metadata).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from assets.market import ohlcv_candles
from assets.partitions import pair_month_key
from cyber_pipelines.backtest.store import EQUITY_TABLE
from cyber_pipelines.cli import main
from cyber_pipelines.instance import PROJECT_ROOT, get_instance
from cyber_pipelines.metrics.exporter import METRICS, SnapshotCollector, families, registry_of, serve
from cyber_pipelines.metrics.reader import BACKTESTS, COMPARISON, OHLCV, read_snapshot
from cyber_pipelines.metrics.snapshot import SECTIONS, Snapshot, figures_of
from cyber_pipelines.quality.checks import OHLCV_CHECKS
from cyber_pipelines.resources import MarketDataResource, StorageResource, VsmResource
from cyber_pipelines.storage import TableStore
from cyber_pipelines.vsm.breaker import Breaker
from cyber_pipelines.vsm.ledger import LedgerEntry
from sensors.vsm import check_events

DOCKER = PROJECT_ROOT / "docker"
PAIRS = ["BTC-USD", "ETH-USD"]
JAN_LAST_CANDLE = datetime(2024, 1, 31, 23, tzinfo=UTC)
CURVE = [100.0, 104.0, 102.0, 103.0]  # the ledger's P&L: +3%, drawdown 1 - 103/104
BACKTESTS_METADATA: list[dict[str, Any]] = [  # oldest first: numeric_summary's keys, plus the source
    {"source": "synthetic", "sharpe/rule_of_three": 0.4, "total_return/rule_of_three": 0.02, "sharpe/cross_moat": -0.1,
     "total_return/cross_moat": -0.01, "n_trades/rule_of_three": 12, "p_adjusted/cash/rule_of_three": 0.3},
    {"source": "synthetic", "sharpe/rule_of_three": 0.9, "total_return/rule_of_three": 0.05, "sharpe/cross_moat": 0.2,
     "total_return/cross_moat": 0.01, "n_trades/rule_of_three": 14, "p_adjusted/verdict/rule_of_three": 0.04},
]  # fmt: skip

pairs_partitions = dg.DynamicPartitionsDefinition(name="pairs")


@dg.asset(partitions_def=pairs_partitions)
def broken() -> None:
    raise ValueError("the exchange said no")


@dataclass(frozen=True)
class Home:
    env: dict[str, str]
    started: float  # before the first run
    built: float  # after the last event


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Home:
    root = tmp_path_factory.mktemp("metrics")
    env = {
        "DAGSTER_HOME": str(root / "dagster_home"),
        "CYBER_DATA_DIR": str(root / "data"),
        "CYBER_LANDING_DIR": str(root / "landing"),
    }
    started = time.time()
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        for name in ("CYBER_VSM_DB", "CYBER_POLICY", "CYBER_MARKET_SOURCE", "QDRANT_URL"):
            patch.delenv(name, raising=False)
        instance = get_instance()
        instance.add_dynamic_partitions("pairs", PAIRS)
        ok = dg.materialize(
            [ohlcv_candles],
            instance=instance,
            partition_key=str(pair_month_key("BTC-USD", JAN_LAST_CANDLE.date())),
            run_config={"ops": {"ohlcv_candles": {"config": {"source": "synthetic"}}}},
            resources={"market": MarketDataResource(), "storage": StorageResource()},
        )
        assert ok.success
        failed = dg.materialize([broken], instance=instance, partition_key="ETH-USD", raise_on_error=False)
        assert not failed.success

        log = VsmResource().log()
        checks = [dg.AssetCheckKey(OHLCV, name) for name in OHLCV_CHECKS]
        assert log.extend(check_events(instance, checks, 0))  # what vsm_check_sensor records
        log.append("check_failure", "failed", "ohlcv_candles:ohlcv_gaps: 3 gaps", pair="ETH-USD",
                   data={"check": "ohlcv_candles:ohlcv_gaps"})  # fmt: skip
        entry = LedgerEntry("ETH-USD", "rule_of_three", -0.07, 0.07, 0.08, 0, 1, 0.5, "probation", "P&L -7%", None)
        log.append("pair_state", "probation", entry.reason, pair="ETH-USD", data=entry.to_json())
        log.append("pain", "0.30", "failed runs", pair="BTC-USD", data={"score": 0.3})
        log.append("pain", "0.20", "overall", data={"score": 0.2})
        trip = Breaker("open", datetime.now(UTC), "pain 0.9 > 0.8")
        log.append("breaker", "open", trip.reason, pair="ETH-USD", data=trip.to_json())

        store = TableStore(Path(env["CYBER_DATA_DIR"]))  # BTC-USD's out-of-sample curve, as save_pair stores it
        times = [datetime(2024, 3, 1, tzinfo=UTC) + timedelta(hours=h) for h in range(len(CURVE))]
        store.write(pl.DataFrame({"timestamp": times, "rule_of_three": CURVE}), "synthetic", EQUITY_TABLE, "BTC-USD")
        pair_json = store.path("synthetic", "backtests", "BTC-USD").with_suffix(".json")
        pair_json.parent.mkdir(parents=True, exist_ok=True)
        pair_json.write_text('{"config": {"size_multiplier": 1.0}}')
        for metadata in BACKTESTS_METADATA:
            instance.report_runless_asset_event(
                dg.AssetMaterialization(BACKTESTS, partition="BTC-USD", metadata=metadata)
            )
            instance.report_runless_asset_event(dg.AssetMaterialization(COMPARISON, metadata=metadata))
    return Home(env, started, time.time())


@pytest.fixture
def home(built: Home, monkeypatch: pytest.MonkeyPatch) -> Home:
    """Point this test's environment (isolated by conftest) at the module's instance."""
    for name, value in built.env.items():
        monkeypatch.setenv(name, value)
    return built


def scrape(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Exposition text -> sample name -> sorted labels -> value."""
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def value(samples: dict[str, dict[tuple[tuple[str, str], ...], float]], name: str, **labels: str) -> float:
    return samples[name][tuple(sorted(labels.items()))]


def exported_names() -> set[str]:
    return set(METRICS)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get(url: str) -> tuple[str, str]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.headers["Content-Type"], response.read().decode()


# -- the exporter ----------------------------------------------------------------------------------
def exposition(home: Home) -> str:
    vsm = VsmResource()
    return generate_latest(registry_of(lambda: read_snapshot(get_instance(), vsm, vsm.log()))).decode()


def test_every_metric_is_read_from_the_instance_and_the_vsm_log(home: Home) -> None:
    text = exposition(home)
    samples = scrape(text)
    helps = {f.name: f.documentation for f in text_string_to_metric_families(text)}
    assert all(value(samples, "cyber_metrics_section_up", section=s) == 1.0 for s in SECTIONS), text
    assert set(samples) == exported_names()  # this instance exercises every metric, and only those are exported
    for name, (kind, _, help_text) in METRICS.items():
        assert name.startswith("cyber_") and help_text
        assert helps[name.removesuffix("_total") if kind == "counter" else name] == help_text

    # the VSM: ledger P&L from the stored curve, state and size in force, pain, breakers, pairs
    assert value(samples, "cyber_vsm_pnl", pair="BTC-USD") == pytest.approx(0.03)
    assert value(samples, "cyber_vsm_drawdown", pair="BTC-USD") == pytest.approx(1 - 103 / 104)
    assert "ETH-USD" not in str(samples["cyber_vsm_pnl"])  # no stored curve: its logged entry has no as_of
    assert value(samples, "cyber_vsm_size_multiplier", pair="ETH-USD") == 0.5
    assert value(samples, "cyber_vsm_size_multiplier", pair="BTC-USD") == 1.0
    assert value(samples, "cyber_vsm_pair_state", pair="ETH-USD", state="probation") == 1.0
    assert value(samples, "cyber_vsm_pair_state", pair="ETH-USD", state="active") == 0.0
    assert value(samples, "cyber_vsm_pair_state", pair="BTC-USD", state="active") == 1.0
    assert value(samples, "cyber_vsm_pain", pair="BTC-USD") == pytest.approx(0.3)
    assert value(samples, "cyber_vsm_pain", pair="ETH-USD") == 0.0
    assert value(samples, "cyber_vsm_pain_overall") == pytest.approx(0.2)
    assert value(samples, "cyber_vsm_breaker_state", pair="ETH-USD") == 1.0
    assert value(samples, "cyber_vsm_breaker_state", pair="BTC-USD") == 0.0
    assert value(samples, "cyber_vsm_system_breaker_state") == 0.0
    assert value(samples, "cyber_vsm_active_pairs") == 2.0
    assert value(samples, "cyber_vsm_max_active_pairs") == 15.0
    assert value(samples, "cyber_vsm_events_total", kind="check_failure") == 1.0
    assert value(samples, "cyber_vsm_events_total", kind="check_success") == len(OHLCV_CHECKS)

    # data age, materializations, runs, checks
    age = value(samples, "cyber_data_age_hours", pair="BTC-USD", source="synthetic")
    expected = (time.time() - JAN_LAST_CANDLE.timestamp()) / 3600
    assert expected - 1 < age <= expected
    assert "ETH-USD" not in str(samples["cyber_data_age_hours"])  # nothing stored for it
    at = value(samples, "cyber_asset_last_materialization_timestamp_seconds", asset="ohlcv_candles")
    assert home.started <= at <= home.built
    assert value(samples, "cyber_runs_total", status="success") == 1.0
    assert value(samples, "cyber_runs_total", status="failure") == 1.0
    assert value(samples, "cyber_runs_total", status="canceled") == 0.0
    job = "__ephemeral_asset_job__"
    assert value(samples, "cyber_runs_last_day", job=job, status="success") == 1.0
    assert value(samples, "cyber_runs_last_day", job=job, status="failure") == 1.0
    assert value(samples, "cyber_runs_in_flight", status="queued") == 0.0
    assert value(samples, "cyber_checks_last_day", check="ohlcv_candles:ohlcv_gaps", outcome="failed") == 1.0
    passed = {dict(labels)["check"] for labels, v in samples["cyber_checks_last_day"].items() if v and
              dict(labels)["outcome"] == "passed"}  # fmt: skip
    assert passed == {f"ohlcv_candles:{name}" for name in OHLCV_CHECKS}

    # the strategies' latest out-of-sample figures
    assert (
        value(samples, "cyber_backtest_oos_sharpe", pair="BTC-USD", strategy="rule_of_three", source="synthetic") == 0.9
    )
    assert (
        value(samples, "cyber_backtest_oos_net_return", pair="BTC-USD", strategy="cross_moat", source="synthetic")
        == 0.01
    )
    assert value(samples, "cyber_portfolio_oos_sharpe", strategy="cross_moat", source="synthetic") == 0.2
    assert value(samples, "cyber_portfolio_oos_net_return", strategy="rule_of_three", source="synthetic") == 0.05
    assert 0 < value(samples, "cyber_metrics_read_seconds") < 30


def test_a_section_that_fails_is_reported_once_and_the_rest_still_exported() -> None:
    snap = Snapshot(now=datetime.now(UTC), universe=3, errors={"ledger": "ValueError: equity curve of X has no column"})
    warnings: list[str] = []
    collector = SnapshotCollector(lambda: snap, warnings.append)
    for _ in range(2):
        samples = scrape(generate_latest(_registry(collector)).decode())
    assert value(samples, "cyber_metrics_section_up", section="ledger") == 0.0
    assert value(samples, "cyber_metrics_section_up", section="runs") == 1.0
    assert value(samples, "cyber_vsm_active_pairs") == 3.0
    assert warnings == ["metrics section ledger could not be read: ValueError: equity curve of X has no column"]


def test_a_bad_equity_curve_takes_down_the_ledger_section_only() -> None:
    instance = get_instance()  # this test's own (empty) instance
    instance.add_dynamic_partitions("pairs", ["SOL-USD"])
    store = TableStore(Path(os.environ["CYBER_DATA_DIR"]))
    times = [datetime(2024, 3, 1, tzinfo=UTC) + timedelta(hours=h) for h in range(3)]
    store.write(pl.DataFrame({"timestamp": times, "other": [1.0, 2.0, 3.0]}), "synthetic", EQUITY_TABLE, "SOL-USD")
    instance.report_runless_asset_event(
        dg.AssetMaterialization(BACKTESTS, partition="SOL-USD", metadata={"source": "synthetic", "sharpe/a": 1.0})
    )
    vsm = VsmResource()
    snap = read_snapshot(instance, vsm, vsm.log())
    assert set(snap.errors) == {"ledger"} and "SOL-USD" in snap.errors["ledger"]
    assert snap.ledger == {} and [p.pair for p in snap.pairs] == ["SOL-USD"]
    samples = scrape(generate_latest(_registry(SnapshotCollector(lambda: snap, lambda _: None))).decode())
    assert value(samples, "cyber_metrics_section_up", section="ledger") == 0.0
    assert value(samples, "cyber_backtest_oos_sharpe", pair="SOL-USD", strategy="a", source="synthetic") == 1.0


def _registry(collector: SnapshotCollector) -> Any:
    from prometheus_client.registry import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def test_figures_of_reads_numeric_summary_keys_only() -> None:
    metadata = {"source": "synthetic", "sharpe/a": 1.5, "n_trades/a": 3, "p_adjusted/cash/a": 0.2, "oos_bars": 100,
                "sharpe/b": float("nan"), "flag/a": True, "x/y/z": 1.0}  # fmt: skip
    assert figures_of(metadata) == {"a": {"sharpe": 1.5, "n_trades": 3.0, "p_adjusted/cash": 0.2}}
    empty = {f.name for f in families(Snapshot(now=datetime.now(UTC)))}  # nothing read: only the exporter's own
    assert empty == {"cyber_metrics_section_up", "cyber_metrics_read_seconds"}


# -- the HTTP endpoint and the CLI -----------------------------------------------------------------
def test_the_endpoint_serves_prometheus_text_on_a_free_port(home: Home) -> None:
    vsm = VsmResource()
    instance, log = get_instance(), vsm.log()
    port = free_port()
    server, thread = serve(registry_of(lambda: read_snapshot(instance, vsm, log)), "127.0.0.1", port)
    try:
        content_type, body = get(f"http://127.0.0.1:{port}/metrics")
    finally:
        server.shutdown()
        server.server_close()
    thread.join(5)
    assert content_type.startswith("text/plain") and "version=" in content_type
    samples = scrape(body)
    assert value(samples, "cyber_vsm_active_pairs") == 2.0
    assert value(samples, "cyber_vsm_breaker_state", pair="ETH-USD") == 1.0
    assert not thread.is_alive()


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "docker-stop"])
def test_the_cli_serves_on_127_0_0_1_until_interrupted(home: Home, stop: signal.Signals) -> None:
    port = free_port()
    env = {**os.environ, **home.env}
    command = [sys.executable, "-m", "cyber_pipelines.cli", "metrics", "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        body = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            try:
                body = get(f"http://127.0.0.1:{port}/metrics")[1]
                break
            except OSError:
                time.sleep(0.2)
        assert value(scrape(body), "cyber_runs_total", status="failure") == 1.0
        assert _listeners(port) in ([], ["127.0.0.1"])  # bound to loopback (empty where /proc/net/tcp is unreadable)
    finally:
        process.send_signal(stop)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert f"on http://127.0.0.1:{port}/metrics" in err and "stopped" in err and "Traceback" not in err
    assert out == ""


def _listeners(port: int) -> list[str]:
    """Addresses listening on ``port`` (IPv4), from /proc/net/tcp."""
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return []
    found = []
    for line in lines:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if int(hex_port, 16) == port and state == "0A":  # LISTEN
            found.append(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


def test_a_taken_port_is_a_one_line_error(home: Home, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["metrics", "--port", str(port)])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1
    assert lines == [f"error: port {port} on 127.0.0.1 is taken (another exporter?); nothing was started. "
                     f"Choose another: --port {port + 1}"]  # fmt: skip


def test_usage_errors_and_help(home: Home, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["metrics", "--port", "9464", "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["error"].startswith("--json goes with --summary")
    with pytest.raises(SystemExit) as exc:
        main(["metrics"])
    assert exc.value.code == 2
    assert "one of the arguments --port --summary is required" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["metrics", "--port", "70000"])
    assert exc.value.code == 2
    assert "expected a port number 1..65535, got '70000'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["metrics", "--help"])
    assert exc.value.code == 0 and "usage: cyber-pipelines metrics" in capsys.readouterr().out


def test_summary_reports_rates_data_age_and_the_strategies_over_time(
    home: Home, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["metrics", "--summary", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is True and doc["command"] == "metrics summary" and doc["errors"] == {}
    assert doc["instance"] == home.env["DAGSTER_HOME"]
    day, ever = doc["runs"]["last_day"], doc["runs"]["all_time"]
    assert (day["success"], day["failure"], day["success_rate"]) == (1, 1, 0.5)
    assert (ever["success"], ever["failure"], ever["canceled"], ever["success_rate"]) == (1, 1, 0, 0.5)
    assert day["by_job"]["__ephemeral_asset_job__"]["failure"] == 1
    checks = doc["checks"]["last_day"]
    n = len(OHLCV_CHECKS)
    assert (checks["passed"], checks["failed"]) == (n, 1)
    assert checks["success_rate"] == round(n / (n + 1), 4)
    assert checks["failed_by_check"] == {"ohlcv_candles:ohlcv_gaps": 1}
    assert doc["checks"]["all_time"] == {"passed": n, "failed": 1, "success_rate": checks["success_rate"]}
    (age,) = doc["data_age"]
    assert (age["pair"], age["source"], age["through"]) == ("BTC-USD", "synthetic", JAN_LAST_CANDLE.isoformat())
    pairs = {p["pair"]: p for p in doc["pairs"]}
    assert pairs["BTC-USD"]["pnl"] == pytest.approx(0.03) and pairs["ETH-USD"]["breaker"] == "open"
    scopes = {s["scope"]: s for s in doc["strategies"]}
    assert set(scopes) == {"portfolio", "BTC-USD"}
    for scope, asset in (("portfolio", "strategy_comparison"), ("BTC-USD", "backtest_results")):
        points = scopes[scope]["points"]
        assert scopes[scope]["asset"] == asset
        assert [p["figures"]["rule_of_three"]["sharpe"] for p in points] == [0.4, 0.9]  # oldest to newest
        assert points[0]["at"] < points[1]["at"]
        assert points[1]["figures"]["rule_of_three"]["p_adjusted/verdict"] == 0.04

    assert main(["metrics", "--summary"]) == 0
    out = capsys.readouterr().out
    assert "runs, last 24 h: 1 succeeded, 1 failed (50.0% success)" in out
    assert f"checks, last 24 h: {n} passed, 1 failed" in out and "failed: ohlcv_candles:ohlcv_gaps x1" in out
    assert re.search(r"BTC-USD\s+synthetic\s+through 2024-01-31 23:00", out)
    assert re.search(r"rule_of_three\s+sharpe\s+0\.40\s+0\.90\s+net\s+\+2\.0%\s+\+5\.0%", out), out


def test_the_reader_names_assets_of_the_definitions() -> None:
    from assets.backtests import backtest_results, strategy_comparison

    assert (ohlcv_candles.key, backtest_results.key, strategy_comparison.key) == (OHLCV, BACKTESTS, COMPARISON)


# -- Prometheus and Grafana ------------------------------------------------------------------------
def dashboard_expressions(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    for variable in dashboard["templating"]["list"]:
        query = variable["query"]
        exprs.append(query["query"] if isinstance(query, dict) else query)
    return exprs


def test_the_dashboard_shows_only_exported_metrics_from_the_provisioned_prometheus() -> None:
    dashboard = json.loads((DOCKER / "grafana" / "dashboards" / "cyber-pipelines.json").read_text())
    datasources = yaml.safe_load((DOCKER / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (source,) = datasources["datasources"]
    assert (source["type"], source["url"], source["access"]) == ("prometheus", "http://prometheus:9090", "proxy")
    providers = yaml.safe_load((DOCKER / "grafana" / "provisioning" / "dashboards" / "dashboards.yml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"] == "/var/lib/grafana/dashboards"

    used: set[str] = set()
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == source["uid"]
        for target in panel["targets"]:
            names = set(re.findall(r"\bcyber_[a-z0-9_]+", target["expr"]))
            assert names and names <= exported_names(), (panel["title"], target["expr"])
            assert target["datasource"]["uid"] == source["uid"]
            used |= names
    for expr in dashboard_expressions(dashboard):
        assert set(re.findall(r"\bcyber_[a-z0-9_]+", expr)) <= exported_names(), expr
    wanted = {"cyber_vsm_pnl", "cyber_vsm_pain", "cyber_vsm_breaker_state", "cyber_vsm_active_pairs",
              "cyber_data_age_hours", "cyber_runs_total", "cyber_runs_last_day", "cyber_checks_last_day",
              "cyber_portfolio_oos_sharpe", "cyber_backtest_oos_sharpe"}  # fmt: skip
    assert wanted <= used
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_prometheus_scrapes_the_exporter_every_30_seconds_and_nothing_else() -> None:
    config = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["scrape_interval"] == "30s" and job.get("metrics_path", "/metrics") == "/metrics"
    assert [target for group in job["static_configs"] for target in group["targets"]] == ["metrics:9464"]
    assert int(job["scrape_timeout"].removesuffix("s")) <= 30
