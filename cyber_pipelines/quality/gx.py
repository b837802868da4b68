"""A small Great Expectations 1.x runner for polars frames.

GX has no polars datasource, so the frame is validated as its pandas copy (pandas dtypes: a
timezone-aware datetime column has type ``Timestamp``, floats ``float64``). One ephemeral context
(in memory, no analytics, no progress bars) is created per process and reused: creating it is slow.

Every expectation is tagged with the Dagster check it belongs to (``tag``); ``run_suite`` refuses an
untagged expectation or an unknown check name, so a new rule never silently joins another check.
Results keep the failing row positions (GX ``unexpected_index_list``), so a failure can name its rows.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import great_expectations as gx
import polars as pl
from great_expectations.data_context.types.base import (
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)

from cyber_pipelines.jsonable import jsonable

_LOCK = threading.Lock()
_BATCH_DEFINITION: Any = None
_ORDER_KEY = "cyber_pipelines_order"
CHECK_KEY = "check"  # the expectation's meta key naming its Dagster check


def tag(check: str, *expectations: gx.expectations.Expectation) -> list[gx.expectations.Expectation]:
    """Copies of ``expectations`` tagged as belonging to the Dagster check ``check``."""
    return [e.copy(update={"meta": {**(e.meta or {}), CHECK_KEY: check}}) for e in expectations]


def check_of(expectation: gx.expectations.Expectation) -> str | None:
    return (expectation.meta or {}).get(CHECK_KEY)


@dataclass(frozen=True)
class ExpectationOutcome:
    """The result of one expectation, in plain JSON-able values."""

    expectation: str  # GX type, e.g. expect_column_values_to_be_unique
    check: str  # the Dagster check this expectation belongs to
    column: str | None  # the column, or "A,B" for column-pair expectations, None for table-level ones
    success: bool
    description: str | None
    summary: dict[str, Any]  # observed_value or unexpected_count/percent/partial_unexpected_list
    kwargs: dict[str, Any]  # the expectation's arguments (long lists shortened)
    error: str | None = None  # set when GX could not evaluate the expectation (e.g. missing column)
    unexpected_rows: tuple[int, ...] = ()  # positions of the failing rows (row-wise expectations only)

    @property
    def name(self) -> str:
        """A readable label: the description, else ``type(column)``."""
        return self.description or f"{self.expectation}({self.column or ''})"


@dataclass(frozen=True)
class SuiteReport:
    """The outcome of a suite on one frame; ``results`` keep the order the expectations were given in."""

    suite_name: str
    success: bool
    results: tuple[ExpectationOutcome, ...]
    rows: int
    elapsed_s: float

    @property
    def failures(self) -> list[ExpectationOutcome]:
        return [r for r in self.results if not r.success]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_markdown(self) -> str:
        """A Markdown table of the outcomes (for Dagster metadata)."""
        return outcomes_markdown(self.results)


def outcomes_markdown(results: Sequence[ExpectationOutcome]) -> str:
    """A Markdown table of expectation outcomes (for Dagster metadata)."""
    lines = ["| expectation | column | success | observed |", "|---|---|---|---|"]
    for r in results:
        observed = r.error or ", ".join(f"{k}={v}" for k, v in r.summary.items() if k != "partial")
        lines.append(f"| {r.name} | {r.column or ''} | {'yes' if r.success else '**no**'} | {observed} |")
    return "\n".join(lines)


def _batch_definition() -> Any:
    """The process-wide ephemeral context's whole-dataframe batch definition (created once)."""
    global _BATCH_DEFINITION
    if _BATCH_DEFINITION is None:
        logging.getLogger("great_expectations").setLevel(logging.WARNING)
        config = DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(),
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
        )
        context = gx.get_context(mode="ephemeral", project_config=config)
        asset = context.data_sources.add_pandas("cyber_pipelines").add_dataframe_asset("dataframe")
        _BATCH_DEFINITION = asset.add_batch_definition_whole_dataframe("whole_dataframe")
    return _BATCH_DEFINITION


def _error_message(info: Mapping[str, Any]) -> str | None:
    """GX puts exception info either flat or keyed by metric id; return the first message."""
    if info.get("raised_exception"):
        return str(info.get("exception_message"))
    for nested in info.values():
        if isinstance(nested, Mapping) and nested.get("raised_exception"):
            return str(nested.get("exception_message"))
    return None


_SUMMARY_KEYS = ("observed_value", "element_count", "unexpected_count", "unexpected_percent", "missing_count")


def _outcome(result: Any) -> ExpectationOutcome:
    config = result.expectation_config
    kwargs = {k: v for k, v in config.kwargs.items() if k not in ("batch_id", "result_format")}
    column = kwargs.get("column")
    if column is None and "column_A" in kwargs:
        column = f"{kwargs['column_A']},{kwargs['column_B']}"
    raw = result.result or {}
    summary = {k: jsonable(raw[k], strict=False) for k in _SUMMARY_KEYS if k in raw}
    if raw.get("partial_unexpected_list"):
        summary["partial"] = jsonable(raw["partial_unexpected_list"][:5], strict=False)
    rows = raw.get("unexpected_index_list") or ()
    return ExpectationOutcome(
        expectation=config.type,
        check=str(config.meta[CHECK_KEY]),
        column=column,
        success=bool(result.success),
        description=config.description,
        summary=summary,
        kwargs=jsonable(kwargs, shorten=True, strict=False),
        error=_error_message(result.exception_info or {}),
        unexpected_rows=tuple(int(i) for i in rows if isinstance(i, int | float)),
    )


def run_suite(
    df: pl.DataFrame,
    suite_name: str,
    expectations: Sequence[gx.expectations.Expectation],
    checks: Collection[str],
) -> SuiteReport:
    """Validate ``df`` (as pandas) against ``expectations``, each tagged with one of ``checks``.

    The caller's expectations are not modified. Raises ``ValueError`` for an untagged expectation or
    one tagged with a check outside ``checks``."""
    if not expectations:
        raise ValueError(f"suite {suite_name!r} has no expectations")
    for e in expectations:
        if check_of(e) not in checks:
            raise ValueError(
                f"suite {suite_name!r}: expectation {e.expectation_type}({e.description or ''}) is tagged "
                f"{check_of(e)!r}; every expectation must be tagged with one of {sorted(checks)}"
            )
    started = time.perf_counter()
    # Copies carry their position, so results come back in the order given (GX reorders them).
    tagged = [
        e.copy(update={"id": None, "meta": {**(e.meta or {}), _ORDER_KEY: i}}) for i, e in enumerate(expectations)
    ]
    suite = gx.ExpectationSuite(name=suite_name, expectations=tagged)
    frame = df.to_pandas()
    with _LOCK:
        batch = _batch_definition().get_batch(batch_parameters={"dataframe": frame})
        validation = batch.validate(suite, result_format="COMPLETE")
    ordered = sorted(validation.results, key=lambda r: r.expectation_config.meta[_ORDER_KEY])
    results = tuple(_outcome(r) for r in ordered)
    return SuiteReport(
        suite_name=suite_name,
        success=all(r.success for r in results),
        results=results,
        rows=df.height,
        elapsed_s=round(time.perf_counter() - started, 4),
    )
