"""``cyber-pipelines metrics --summary``: the exporter's figures as a report for the shell.

Run and check success rates (the last day and all time), the VSM's pairs, data age per pair, and each
strategy's out-of-sample figures over time (the history of backtest_results and strategy_comparison
materializations, oldest to newest). ``summary_data`` is the JSON document, ``summary_lines`` its text.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from cyber_pipelines.metrics.snapshot import PORTFOLIO, WINDOW_HOURS, Backtest, Snapshot

RUN_STATUSES = ("success", "failure", "canceled")
SHOWN = (("sharpe", "sharpe", "6.2f"), ("total_return", "net", "+7.1%"))  # metric, label, format in the text


def rate(good: int, bad: int) -> float | None:
    """The share of ``good`` among ``good + bad`` (None when there is none of either)."""
    return None if good + bad == 0 else round(good / (good + bad), 4)


def _runs(counts: Mapping[str, int]) -> dict[str, Any]:
    out: dict[str, Any] = {status: int(counts.get(status, 0)) for status in RUN_STATUSES}
    return {**out, "success_rate": rate(out["success"], out["failure"])}


def _checks(passed: int, failed: int) -> dict[str, Any]:
    return {"passed": passed, "failed": failed, "success_rate": rate(passed, failed)}


def summary_data(snap: Snapshot, history: Mapping[str, Sequence[Backtest]]) -> dict[str, Any]:
    """The report as one JSON-ready mapping (rates are fractions, None when nothing counted)."""
    day: dict[str, int] = {}
    jobs: dict[str, dict[str, int]] = {}
    for (job, status), n in snap.runs_day.items():
        day[status] = day.get(status, 0) + n
        jobs.setdefault(job, {})[status] = n
    failed_checks: dict[str, int] = {}
    passed = failed = 0
    for (check, outcome), n in snap.checks_day.items():
        if outcome == "failed":
            failed += n
            failed_checks[check] = n
        else:
            passed += n
    ledger = snap.ledger
    return {
        "at": snap.now.isoformat(),
        "window_hours": WINDOW_HOURS,
        "runs": {
            "last_day": {**_runs(day), "by_job": {job: _runs(c) for job, c in sorted(jobs.items())}},
            "all_time": _runs(snap.runs_total),
            "in_flight": snap.runs_in_flight,
        },
        "checks": {
            "last_day": {**_checks(passed, failed), "failed_by_check": failed_checks},
            "all_time": _checks(snap.events_total.get("check_success", 0), snap.events_total.get("check_failure", 0)),
        },
        "system": {
            "breaker": snap.system_breaker,
            "pain": snap.system_pain,
            "active_pairs": snap.universe,
            "max_pairs": snap.max_pairs,
        },
        "pairs": [
            {
                "pair": p.pair,
                "state": p.state,
                "size": p.size,
                "pnl": ledger[p.pair].pnl if p.pair in ledger else None,
                "drawdown": ledger[p.pair].drawdown if p.pair in ledger else None,
                "pain": p.pain,
                "breaker": p.breaker,
            }
            for p in snap.pairs
        ],
        "data_age": [
            {
                "pair": c.pair,
                "source": c.source,
                "through": c.through.isoformat(),
                "age_hours": round(snap.age_hours(c), 2),
            }
            for c in snap.candles
        ],
        "strategies": [
            {"scope": scope, "asset": points[0].asset, "points": [p.to_json() for p in points]}
            for scope, points in history.items()
            if points
        ],
        "errors": snap.errors,
        "read_seconds": round(snap.seconds, 3),
    }


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _counts(counts: Mapping[str, Any]) -> str:
    if not any(counts[status] for status in RUN_STATUSES):
        return "none ended"
    canceled = f", {counts['canceled']} canceled" if counts["canceled"] else ""
    rate_text = f" ({_pct(counts['success_rate'])} success)" if counts["success_rate"] is not None else ""
    return f"{counts['success']} succeeded, {counts['failure']} failed{canceled}{rate_text}"


def summary_lines(data: Mapping[str, Any]) -> Iterator[str]:
    """The report for a person (``data`` from ``summary_data``)."""
    hours = data["window_hours"]
    runs, checks = data["runs"], data["checks"]
    in_flight = ", ".join(f"{n} {status}" for status, n in runs["in_flight"].items() if n) or "none"
    yield f"runs, last {hours} h: {_counts(runs['last_day'])}; all time: {_counts(runs['all_time'])}; now: {in_flight}"
    for job, counts in runs["last_day"]["by_job"].items():
        yield f"  {job}: {_counts(counts)}"
    day, ever = checks["last_day"], checks["all_time"]
    if ever["passed"] + ever["failed"] == 0 and day["passed"] + day["failed"] == 0:
        yield "checks: no evaluations in the VSM log yet (the VSM sensors, or `cyber-pipelines vsm tick`, record them)"
    else:
        yield (
            f"checks, last {hours} h: {day['passed']} passed, {day['failed']} failed ({_pct(day['success_rate'])} "
            f"success); all time: {ever['passed']} passed, {ever['failed']} failed ({_pct(ever['success_rate'])})"
        )
        for check, n in day["failed_by_check"].items():
            yield f"  failed: {check} x{n}"

    system = data["system"]
    if system["breaker"] is not None:
        yield (
            f"pairs: {system['active_pairs']} (max {system['max_pairs']}); system breaker {system['breaker']}, "
            f"pain {_num(system['pain'], '.2f')}"
        )
    if data["pairs"]:
        yield f"  {'pair':<12} {'state':<10} {'size':>4} {'P&L':>8} {'drawdown':>8} {'pain':>5}  breaker"
        for p in data["pairs"]:
            yield (
                f"  {p['pair']:<12} {p['state']:<10} {p['size']:>4g} {_num(p['pnl'], '+8.2%'):>8} "
                f"{_num(p['drawdown'], '8.2%'):>8} {_num(p['pain'], '5.2f'):>5}  {p['breaker']}"
            )

    if data["data_age"]:
        yield "data age (hours since the newest stored candle):"
        for row in data["data_age"]:
            through = row["through"][:16].replace("T", " ")
            yield f"  {row['pair']:<12} {row['source']:<10} through {through}  {row['age_hours']:>10.1f} h"
    else:
        yield "data age: no stored candles yet"

    if not data["strategies"]:
        yield "out-of-sample figures: no backtest_results or strategy_comparison materialization yet"
        return
    yield "out-of-sample figures over time, oldest to newest (Sharpe; net return after costs):"
    for scope in data["strategies"]:
        points = scope["points"]
        first, last = points[0]["at"][:16].replace("T", " "), points[-1]["at"][:16].replace("T", " ")
        sources = ", ".join(sorted({p["source"] for p in points}))
        name = "equal-weight portfolio" if scope["scope"] == PORTFOLIO else scope["scope"]
        span = first if len(points) == 1 else f"{first} .. {last}"
        yield f"  {name} ({scope['asset']}, {sources}): {len(points)} materialization(s), {span} UTC"
        strategies = sorted({s for p in points for s in p["figures"]})
        width = max(len(s) for s in strategies) if strategies else 0
        for strategy in strategies:
            parts = []
            for metric, label, spec in SHOWN:
                values = [p["figures"].get(strategy, {}).get(metric) for p in points]
                parts.append(f"{label} " + " ".join(f"{_num(v, spec):>7}" for v in values))
            yield f"    {strategy:<{width}}  " + "   ".join(parts)
