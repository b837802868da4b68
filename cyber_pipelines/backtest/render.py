"""What a person reads: Markdown tables, one verdict line per strategy, numeric metadata, equity plots."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from datetime import timedelta

import polars as pl

from cyber_pipelines.backtest.evaluation import BUY_AND_HOLD, REFERENCES, StrategyReport
from cyber_pipelines.backtest.metrics import SHARPE_FORMULA, annualized_unavailable_reason
from cyber_pipelines.backtest.significance import BOTH_NEGATIVE
from cyber_pipelines.report import markdown_table

OPTIMISTIC_FILL = "fill=close is OPTIMISTIC: it trades at the very close that completed the signal"
SUMMARY_METRICS = (
    "total_return", "gross_return", "cost_drag", "sharpe", "max_drawdown", "n_trades", "turnover_per_year",
)  # fmt: skip


def pct(value: float) -> str:
    return f"{value:+.2%}" if math.isfinite(value) else "n/a"


def num(value: float, digits: int = 2) -> str:
    if math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}" if math.isfinite(value) else "n/a"


def p_pair(report: StrategyReport, reference: str) -> str:
    """``raw / adjusted`` p-values against ``reference`` ('' when not tested)."""
    test = report.test(reference)
    if test is None:
        return ""
    return f"{test.p_value:.3f} / {test.p_adjusted:.3f}" if math.isfinite(test.p_adjusted) else f"{test.p_value:.3f}"


def strategy_table(reports: Mapping[str, StrategyReport], buy_and_hold: Mapping[str, float]) -> str:
    """One row per strategy (out of sample), buy-and-hold last; p-values raw / Holm-adjusted."""
    rows = []
    for name, rep in reports.items():
        m = rep.oos
        rows.append(
            {
                "strategy": name,
                "OOS net": pct(m["total_return"]),
                "gross": pct(m.get("gross_return", math.nan)),
                "cost drag": pct(m.get("cost_drag", math.nan)),
                "Sharpe": num(m["sharpe"]),
                "CAGR": pct(m["cagr"]),
                "max DD": pct(m["max_drawdown"]),
                "trades": str(int(m["n_trades"])),
                "turnover/yr": num(m.get("turnover_per_year", math.nan), 1),
                "hold h": num(m.get("avg_hold_hours", math.nan), 1),
                "in-sample net": pct(rep.in_sample.get("total_return", math.nan)),
                **{f"p {ref}": p_pair(rep, ref) for ref in REFERENCES},
                "verdict p": p_verdict(rep),
                "verdict": "**significant**" if rep.significant() else "no",
            }
        )
    rows.append(
        {
            "strategy": f"{BUY_AND_HOLD} (reference)",
            "OOS net": pct(buy_and_hold["total_return"]),
            "gross": "",
            "cost drag": "",
            "Sharpe": num(buy_and_hold["sharpe"]),
            "CAGR": pct(buy_and_hold["cagr"]),
            "max DD": pct(buy_and_hold["max_drawdown"]),
            "trades": "",
            "turnover/yr": "",
            "hold h": "",
            "in-sample net": "",
            **{f"p {ref}": "" for ref in REFERENCES},
            "verdict p": "",
            "verdict": "",
        }
    )
    return markdown_table(pl.DataFrame(rows))


def notes(reports: Mapping[str, StrategyReport], fill: str, span: timedelta | None = None) -> list[str]:
    """How to read the table: the methods, the notes of individual tests, the fill warning, and why
    CAGR and Calmar are missing when the out-of-sample ``span`` is under a year."""
    reason = annualized_unavailable_reason(span) if span is not None else None
    span_note = f"CAGR and Calmar are not reported (n/a): {reason}." if reason else ""
    out = [
        "Out of sample: each strategy is fitted walk-forward on past bars only; 'in-sample net' is the same "
        "strategy fitted on the whole table and traded on it (what tuning in sample would claim).",
        "p columns: raw / Holm-adjusted one-sided p-values against cash (mean return, H0 <= 0), buy-and-hold "
        "and rule_of_three (studentized Sharpe difference, Ledoit-Wolf 2008, circular block bootstrap) and "
        "the random-entry null (Monte Carlo rank with the same trades), Holm over every strategy's test against "
        "that reference. Significant = beats cash and the random null: the verdict p (the larger of those two "
        "raw p, an intersection-union test) is below alpha after Holm over every verdict reported together. "
        "Beating rule_of_three is the moat signal's increment over TA.",
        f"{SHARPE_FORMULA}.",
    ]
    if span_note:
        out.append(span_note)
    if fill == "close":
        out.append(f"**{OPTIMISTIC_FILL}.**")
    seen = set()
    for name, rep in reports.items():
        for t in rep.tests:
            if t.note and (t.note, t.reference) not in seen:
                seen.add((t.note, t.reference))
                flag = "**" if t.note == BOTH_NEGATIVE else ""
                out.append(f"{name} vs {t.reference}: {flag}{t.note}{flag}.")
    return out


def verdict_lines(reports: Mapping[str, StrategyReport]) -> list[str]:
    """One line per strategy: OOS net return, Sharpe, turnover and adjusted p against each reference."""
    lines = []
    for name, rep in reports.items():
        m = rep.oos
        ps = ", ".join(f"{ref} {t.p_adjusted:.3f}" for ref in REFERENCES if (t := rep.test(ref)) is not None)
        lines.append(
            f"{name:<14} OOS net {pct(m['total_return'])} (gross {pct(m.get('gross_return', math.nan))}), "
            f"Sharpe {num(m['sharpe'])}, turnover {num(m.get('turnover_per_year', math.nan), 0)}x/yr, "
            f"{int(m['n_trades'])} trades; adjusted p: {ps} -> {rep.verdict()}"
        )
    return lines


def p_verdict(report: StrategyReport) -> str:
    """``raw / adjusted`` verdict p (the larger of the cash and random-null p; adjusted over the verdicts)."""
    raw, adjusted = report.verdict_p, report.verdict_p_adjusted
    if not math.isfinite(raw):
        return ""
    return f"{raw:.3f} / {adjusted:.3f}" if math.isfinite(adjusted) else f"{raw:.3f}"


def numeric_summary(reports: Mapping[str, StrategyReport]) -> dict[str, float]:
    """``<metric>/<strategy>``, ``p_adjusted/<reference>/<strategy>`` and ``p_adjusted/verdict/<strategy>``:
    finite numbers only."""
    out: dict[str, float] = {}
    for name, rep in reports.items():
        for metric in SUMMARY_METRICS:
            value = rep.oos.get(metric, math.nan)
            if math.isfinite(value):
                out[f"{metric}/{name}"] = int(value) if metric == "n_trades" else float(value)
        for t in rep.tests:
            if math.isfinite(t.p_adjusted):
                out[f"p_adjusted/{t.reference}/{name}"] = float(t.p_adjusted)
        if math.isfinite(rep.verdict_p_adjusted):
            out[f"p_adjusted/verdict/{name}"] = float(rep.verdict_p_adjusted)
    return out


def equity_plot_png(curves: pl.DataFrame, title: str, *, baseline: str | None = None, max_points: int = 2000) -> bytes:
    """Equity curves (timestamp + one column per series) as a PNG; the baseline dashed black."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure

    series = [c for c in curves.columns if c != "timestamp"]
    if "timestamp" not in curves.columns or not series or curves.height < 2:
        raise ValueError(
            f"equity curves need a timestamp and at least one equity column over 2+ rows, got {curves.columns}"
        )
    if not isinstance(curves["timestamp"].dtype, pl.Datetime):
        raise ValueError(f"curves.timestamp must be a datetime column, got {curves['timestamp'].dtype}")
    data = curves.gather_every(max(1, math.ceil(curves.height / max_points)))
    x = data["timestamp"].dt.replace_time_zone(None).to_numpy()
    fig = Figure(figsize=(8, 3.5), dpi=90)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name in series:
        is_base = name == baseline
        ax.plot(
            x,
            data[name].to_numpy(),
            linewidth=1.2,
            label=name,
            color="black" if is_base else None,
            linestyle="--" if is_base else "-",
        )
    locator = AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    ax.set_ylabel("equity")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
