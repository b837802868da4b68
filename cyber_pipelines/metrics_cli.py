"""`cyber-pipelines metrics`: the pipeline's business and health metrics.

- ``--port P``: serve them in Prometheus text format on ``http://HOST:P/metrics`` (HOST 127.0.0.1 unless
  ``--host``), read afresh from the instance and the VSM log at every scrape, until Ctrl-C (or SIGTERM).
- ``--summary``: print the same figures once as a report (``--json``: one document).

Argument handling and printing only: the reading is ``cyber_pipelines.metrics.reader``, the metric families
``metrics.exporter``, the report ``metrics.summary``.
"""

from __future__ import annotations

import argparse
import errno
import signal
import sys
from pathlib import Path
from typing import Any

from cyber_pipelines.cli import CliError, Report, _positive_int
from cyber_pipelines.vsm_cli import HOME_HELP, _open

DEFAULT_HISTORY = 10


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 1..65535, got {text!r}")
    return port


def _where() -> str:
    from cyber_pipelines.instance import dagster_home

    return str(dagster_home())


# -- summary ---------------------------------------------------------------------------------------
def cmd_metrics_summary(args: argparse.Namespace) -> int:
    from cyber_pipelines.orchestrate import Progress

    progress = Progress()
    instance, vsm, log = _open(args)
    progress(f"reading the instance {_where()} and {log!r}")
    from cyber_pipelines.metrics.reader import backtest_history, read_snapshot
    from cyber_pipelines.metrics.summary import summary_data, summary_lines

    snap = read_snapshot(instance, vsm, log)
    try:
        history = backtest_history(instance, args.history)
    except Exception as exc:  # as a section of the snapshot: said, and the rest still printed
        from cyber_pipelines.metrics.snapshot import one_line

        history = {}
        snap.errors["backtest_history"] = one_line(exc)
    data = summary_data(snap, history)
    report = Report(args.json, {"command": "metrics summary", "instance": _where(), "log": repr(log), **data})
    report.line(f"metrics of the instance {_where()} and {log!r} at {snap.now:%Y-%m-%d %H:%M:%S} UTC")
    for line in summary_lines(data):
        report.line(line)
    for section, error in snap.errors.items():
        report.warn(f"{section} could not be read: {error}")
    report.finish(not snap.errors)
    return 0 if not snap.errors else 1


# -- serve -----------------------------------------------------------------------------------------
def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def cmd_metrics_serve(args: argparse.Namespace) -> int:
    instance, vsm, log = _open(args)
    from cyber_pipelines.metrics.exporter import registry_of, serve
    from cyber_pipelines.metrics.reader import read_snapshot

    registry = registry_of(lambda: read_snapshot(instance, vsm, log))
    try:
        server, thread = serve(registry, args.host, args.port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise CliError(
                f"port {args.port} on {args.host} is taken (another exporter?); nothing was started. "
                f"Choose another: --port {args.port + 1}",
                code=1,
            ) from None
        raise CliError(f"cannot serve on {args.host}:{args.port}: {exc.strerror or exc}", code=1) from None
    url = f"http://{args.host}:{args.port}/metrics"
    print(f"serving the metrics of the instance {_where()} and {log!r} on {url} (Ctrl-C stops)", file=sys.stderr)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # `docker stop` ends it as Ctrl-C does
    try:
        while thread.is_alive():
            thread.join(1.0)
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.shutdown()
        server.server_close()
    return 0


def cmd_metrics(args: argparse.Namespace) -> int:
    """``--summary`` prints the report; ``--port`` serves the metrics."""
    if args.summary:
        return cmd_metrics_summary(args)
    if args.json:
        raise CliError("--json goes with --summary (the server answers in Prometheus text format)")
    return cmd_metrics_serve(args)


# -- the parser ------------------------------------------------------------------------------------
def add_metrics_parser(sub: Any, common: argparse.ArgumentParser, reports: argparse.ArgumentParser) -> None:
    """``metrics --port P | --summary`` under the CLI's subcommands."""
    metrics = sub.add_parser(
        "metrics",
        parents=[common, reports],
        help="business and health metrics: serve them to Prometheus (--port) or print them (--summary)",
        description=(
            "Per-pair P&L, size, state, pain and circuit breakers of the VSM, data age, last materializations, "
            "run and check outcomes and each strategy's out-of-sample figures, read from the instance named by "
            "DAGSTER_HOME (or --home) and the VSM log. --port serves them in Prometheus text format at /metrics, "
            "read afresh at every scrape, until Ctrl-C; --summary prints them once, with success rates and the "
            "strategies' figures over time."
        ),
    )
    mode = metrics.add_mutually_exclusive_group(required=True)
    mode.add_argument("--port", type=_port, help="serve http://HOST:PORT/metrics until Ctrl-C")
    mode.add_argument("--summary", action="store_true", help="print the metrics once as a report")
    metrics.add_argument(
        "--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1; 0.0.0.0 inside a container)"
    )
    metrics.add_argument(
        "--history",
        type=_positive_int,
        default=DEFAULT_HISTORY,
        help=f"--summary: the last N materializations of each backtest shown (default {DEFAULT_HISTORY})",
    )
    metrics.add_argument("--home", type=Path, default=None, help=HOME_HELP)
    metrics.set_defaults(func=cmd_metrics)
