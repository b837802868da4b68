"""The Prometheus side: metric families of a ``Snapshot``, a collector that reads afresh on every scrape,
and the HTTP server of ``cyber-pipelines metrics --port``.

Every metric is named ``cyber_*`` and listed in ``METRICS`` with its type, labels and help text (the
Grafana dashboard may use only these names; a test checks it). Labels stay few: pairs (at most the policy's
max_pairs), strategies, sources, jobs, checks, assets, statuses.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from cyber_pipelines.metrics.snapshot import PORTFOLIO, SECTIONS, WINDOW_HOURS, Snapshot

BREAKER_VALUE = {"closed": 0.0, "half_open": 0.5, "open": 1.0}
PAIR_STATES = ("active", "probation", "hibernated")

# name -> (type, labels, help). Counters end in _total (what the exposition and PromQL see).
METRICS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "cyber_vsm_pnl": (
        "gauge", ("pair",),
        "Out-of-sample P&L of the pair's latest backtest of the ledger strategy, as the S3 ledger computes it "
        "from the stored equity curve (a fraction: -0.05 is -5%)",
    ),
    "cyber_vsm_drawdown": ("gauge", ("pair",), "Drawdown of that equity curve below its peak now (a fraction)"),
    "cyber_vsm_size_multiplier": (
        "gauge", ("pair",), "Position size the ledger has in force: 1 active, 0.5 or 0.25 on probation, 0 hibernated"
    ),
    "cyber_vsm_pair_state": (
        "gauge", ("pair", "state"), "1 for the pair's ledger state in force (active, probation, hibernated), else 0"
    ),
    "cyber_vsm_active_pairs": (
        "gauge", (), "Pairs in the research universe (the 'pairs' partitions, which the policy's max_pairs caps)"
    ),
    "cyber_vsm_max_active_pairs": ("gauge", (), "The policy's max_pairs: the most pairs the S4 prospecting adds"),
    "cyber_vsm_pain": (
        "gauge", ("pair",),
        "The pair's pain in [0, 1] as the algedonic channel last recorded it (0 before any); above the trip "
        "threshold (0.8) its circuit breaker opens",
    ),
    "cyber_vsm_pain_overall": ("gauge", (), "The system's overall pain in [0, 1] as last recorded (0 before any)"),
    "cyber_vsm_breaker_state": ("gauge", ("pair",), "The pair's circuit breaker: 0 closed, 0.5 half_open, 1 open"),
    "cyber_vsm_system_breaker_state": (
        "gauge", (), "The system-wide circuit breaker: 0 closed, 0.5 half_open, 1 open"
    ),
    "cyber_vsm_events_total": (
        "counter", ("kind",),
        "Events in the VSM log by kind (run_failure, run_success, check_failure, check_success, breaker, pain, "
        "temporal, zombie, ...), all time",
    ),
    "cyber_data_age_hours": (
        "gauge", ("pair", "source"),
        "Hours since the pair's newest stored candle (last_timestamp of its newest stored ohlcv_candles month)",
    ),
    "cyber_asset_last_materialization_timestamp_seconds": (
        "gauge", ("asset",), "When the asset (any partition) was last materialized, in seconds since the epoch"
    ),
    "cyber_runs_total": (
        "counter", ("status",), "Runs that ended, by status (success, failure, canceled), all time"
    ),
    "cyber_runs_last_day": (
        "gauge", ("job", "status"), f"Runs that ended in the last {WINDOW_HOURS} hours, by job and status"
    ),
    "cyber_runs_in_flight": ("gauge", ("status",), "Runs queued, starting or started now"),
    "cyber_checks_last_day": (
        "gauge", ("check", "outcome"),
        f"Asset check evaluations in the last {WINDOW_HOURS} hours by check (asset:check) and outcome (passed, "
        "failed), as the VSM's check sensor recorded them",
    ),
    "cyber_backtest_oos_sharpe": (
        "gauge", ("pair", "strategy", "source"),
        "Annualized out-of-sample Sharpe ratio of the strategy in the pair's latest backtest_results",
    ),
    "cyber_backtest_oos_net_return": (
        "gauge", ("pair", "strategy", "source"),
        "Out-of-sample net return (after costs, a fraction) of the strategy in the pair's latest backtest_results",
    ),
    "cyber_portfolio_oos_sharpe": (
        "gauge", ("strategy", "source"),
        "Annualized out-of-sample Sharpe ratio of the strategy's equal-weight portfolio in the latest "
        "strategy_comparison",
    ),
    "cyber_portfolio_oos_net_return": (
        "gauge", ("strategy", "source"),
        "Out-of-sample net return (a fraction) of the strategy's equal-weight portfolio in the latest "
        "strategy_comparison",
    ),
    "cyber_metrics_section_up": (
        "gauge", ("section",),
        "1 when the exporter read this part of the instance at this scrape, 0 when it failed (the error is on the "
        "exporter's stderr)",
    ),
    "cyber_metrics_read_seconds": ("gauge", (), "Seconds this scrape took to read the instance and the VSM log"),
}  # fmt: skip


def families(snap: Snapshot) -> list[Metric]:
    """The metric families of one snapshot (a family without samples is left out)."""
    made: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}

    def add(name: str, value: float, *labels: str) -> None:
        if name not in made:
            kind, label_names, help_text = METRICS[name]
            family = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            made[name] = family(name, help_text, labels=list(label_names))
        made[name].add_metric(list(labels), float(value))

    for pair in snap.pairs:
        add("cyber_vsm_size_multiplier", pair.size, pair.pair)
        for state in PAIR_STATES:
            add("cyber_vsm_pair_state", float(pair.state == state), pair.pair, state)
        add("cyber_vsm_pain", pair.pain or 0.0, pair.pair)
        add("cyber_vsm_breaker_state", BREAKER_VALUE[pair.breaker], pair.pair)
    if snap.universe is not None:
        add("cyber_vsm_active_pairs", snap.universe)
    if snap.max_pairs is not None:
        add("cyber_vsm_max_active_pairs", snap.max_pairs)
    if snap.system_breaker is not None:
        add("cyber_vsm_pain_overall", snap.system_pain or 0.0)
        add("cyber_vsm_system_breaker_state", BREAKER_VALUE[snap.system_breaker])
    for pair_key, ledger in sorted(snap.ledger.items()):
        add("cyber_vsm_pnl", ledger.pnl, pair_key)
        add("cyber_vsm_drawdown", ledger.drawdown, pair_key)
    for kind, n in snap.events_total.items():
        add("cyber_vsm_events_total", n, kind)
    for candles in snap.candles:
        add("cyber_data_age_hours", snap.age_hours(candles), candles.pair, candles.source)
    for asset, at in sorted(snap.materialized.items()):
        add("cyber_asset_last_materialization_timestamp_seconds", at, asset)
    for status, n in snap.runs_total.items():
        add("cyber_runs_total", n, status)
    for (job, status), n in snap.runs_day.items():
        add("cyber_runs_last_day", n, job, status)
    for status, n in snap.runs_in_flight.items():
        add("cyber_runs_in_flight", n, status)
    for (check, outcome), n in snap.checks_day.items():
        add("cyber_checks_last_day", n, check, outcome)
    for backtest in snap.backtests:
        for strategy, figures in backtest.figures.items():
            labels: tuple[str, ...]
            if backtest.scope == PORTFOLIO:
                prefix, labels = "cyber_portfolio", (strategy, backtest.source)
            else:
                prefix, labels = "cyber_backtest", (backtest.scope, strategy, backtest.source)
            if "sharpe" in figures:
                add(f"{prefix}_oos_sharpe", figures["sharpe"], *labels)
            if "total_return" in figures:
                add(f"{prefix}_oos_net_return", figures["total_return"], *labels)
    for section in SECTIONS:
        add("cyber_metrics_section_up", float(section not in snap.errors), section)
    add("cyber_metrics_read_seconds", snap.seconds)
    return list(made.values())


class SnapshotCollector(Collector):
    """Reads a fresh snapshot on every scrape (one at a time) and reports a section's new error on stderr."""

    def __init__(self, read: Callable[[], Snapshot], warn: Callable[[str], None] | None = None) -> None:
        self.read = read
        self.warn = warn or (lambda text: print(f"warning: {text}", file=sys.stderr, flush=True))
        self.lock = threading.Lock()
        self.reported: dict[str, str] = {}  # section -> the error last reported (each is reported once)

    def collect(self) -> Iterator[Metric]:
        with self.lock:
            snap = self.read()
            for section, error in snap.errors.items():
                if self.reported.get(section) != error:
                    self.warn(f"metrics section {section} could not be read: {error}")
            self.reported = dict(snap.errors)
        yield from families(snap)


def registry_of(read: Callable[[], Snapshot]) -> CollectorRegistry:
    """A registry with only this project's collector (no process or platform metrics: every name is cyber_*)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(read))
    return registry


def serve(registry: CollectorRegistry, host: str, port: int) -> tuple[Any, threading.Thread]:
    """Serve ``/metrics`` on ``host:port`` in a daemon thread; the server (``shutdown()`` stops it) and the thread.
    A taken port or an unknown host raises OSError."""
    return start_http_server(port, addr=host, registry=registry)
