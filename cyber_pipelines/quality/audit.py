"""Write-audit-publish: a GX suite run on candidate rows, its failures attributed to UTC days.

An ingest holds the candidate rows of many days in memory. The suite runs on all of them at once
(fast: one GX validation per frame) plus on a per-day summary frame (counts, gap ratio). Each failed
expectation is turned into the days it concerns: a row-wise expectation through its failing row
positions, a table-level one (columns, types) into every day of the frame. Only days that passed
every check are published.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING

import polars as pl

if TYPE_CHECKING:  # GX takes seconds to import: only an audit that runs needs it
    import great_expectations as gx

    from cyber_pipelines.quality.gx import ExpectationOutcome


@dataclass(frozen=True)
class DayFailure:
    """One expectation that failed on one day."""

    check: str
    day: date
    rule: str  # the expectation's description
    detail: str  # how many rows, the first one, or the observed value


@dataclass(frozen=True)
class DayAudit:
    """The outcome of a suite over the candidate rows of ``days``."""

    checks: tuple[str, ...]
    days: tuple[date, ...]
    outcomes: tuple[ExpectationOutcome, ...]
    failures: tuple[DayFailure, ...]
    summary: pl.DataFrame = field(repr=False)  # one row per day (day, counts, ratios)
    elapsed_s: float = 0.0

    def failed_days(self, check: str | None = None) -> set[date]:
        return {f.day for f in self.failures if check is None or f.check == check}

    def passed_days(self) -> list[date]:
        failed = self.failed_days()
        return [d for d in self.days if d not in failed]

    def failures_on(self, days: Collection[date], check: str | None = None) -> list[DayFailure]:
        return [f for f in self.failures if f.day in days and (check is None or f.check == check)]


def _first(values: Sequence[object]) -> str:
    value = values[0] if values else None
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _value(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _attribute(
    outcome: ExpectationOutcome, frame: pl.DataFrame, frame_days: Sequence[date], labels: Sequence[object] | None
) -> list[DayFailure]:
    """The days a failed outcome concerns: its failing rows' days, or every day of the frame."""
    rule = outcome.name
    if outcome.unexpected_rows:
        by_day: dict[date, list[int]] = {}
        for row in outcome.unexpected_rows:
            if 0 <= row < len(frame_days):
                by_day.setdefault(frame_days[row], []).append(row)
        columns = [c for c in (outcome.column or "").split(",") if c in frame.columns]
        failures = []
        for day, rows in sorted(by_day.items()):
            values = ", ".join(f"{c} = {_value(frame[c][rows[0]])}" for c in columns)
            if labels is None:  # a summary row: its values say it all
                detail = values
            else:
                detail = f"{len(rows)} row(s), first at {_first([labels[rows[0]]])}" + (
                    f" ({values})" if values else ""
                )
            failures.append(DayFailure(outcome.check, day, rule, detail))
        return failures
    observed = outcome.error or outcome.summary.get("observed_value")
    detail = f"observed {observed}" if observed is not None else "failed"
    return [DayFailure(outcome.check, day, rule, detail) for day in sorted(set(frame_days))]


def audit_days(
    suite_name: str,
    checks: Collection[str],
    candidates: Mapping[date, pl.DataFrame],
    row_expectations: Sequence[gx.expectations.Expectation],
    summary: pl.DataFrame,
    summary_expectations: Sequence[gx.expectations.Expectation],
) -> DayAudit:
    """Run the row suite on the candidate rows and the summary suite on ``summary`` (one row per day,
    column ``day``); attribute every failure to its days.

    Days whose frames share a schema are validated together, in one GX run; a day with another schema
    (a missing column, another type) gets its own run, so its table-level failures stay its own."""
    from cyber_pipelines.quality.gx import run_suite

    days = tuple(summary["day"].to_list())
    groups: dict[tuple, dict[date, pl.DataFrame]] = {}
    for day in sorted(candidates):
        frame = candidates[day]
        # pandas turns an integer column with a null into float64: such days are validated apart too.
        null_ints = tuple(c for c, t in frame.schema.items() if t.is_integer() and frame[c].null_count())
        groups.setdefault((tuple(frame.schema.items()), null_ints), {})[day] = frame
    outcomes: list[ExpectationOutcome] = []
    failures: list[DayFailure] = []
    elapsed = 0.0
    frames = [(*concat_days(group), True) for group in groups.values()] + [(summary, list(days), False)]
    for frame, frame_days, is_rows in frames:
        expectations = row_expectations if is_rows else summary_expectations
        if not expectations:
            continue
        report = run_suite(frame, suite_name, expectations, checks)
        elapsed += report.elapsed_s
        outcomes += report.results
        labels = frame["timestamp"].to_list() if is_rows and "timestamp" in frame.columns else None
        for outcome in report.failures:
            failures += _attribute(outcome, frame, frame_days, labels if is_rows else None)
    failures.sort(key=lambda f: (f.day, f.check, f.rule))
    return DayAudit(tuple(checks), days, tuple(outcomes), tuple(failures), summary, round(elapsed, 4))


def concat_days(candidates: Mapping[date, pl.DataFrame]) -> tuple[pl.DataFrame, list[date]]:
    """All candidate rows in day order (rows of a day in their source order) and each row's day.

    A day without rows still counts: a table-level failure of an all-empty frame names its days."""
    ordered = sorted(candidates)
    frames = [candidates[d] for d in ordered if candidates[d].height]
    if not frames:
        first = candidates[ordered[0]] if ordered else pl.DataFrame()
        return first.clear(), list(ordered)
    rows = pl.concat(frames, how="diagonal_relaxed")
    return rows, [d for d in ordered for _ in range(candidates[d].height)]
