"""Small renderers for what people read: Markdown tables for Dagster metadata and the CLI."""

from __future__ import annotations

import polars as pl


def _cell(value: object, float_digits: int) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{float_digits}g}"
    return str(value).replace("|", "\\|")


def markdown_table(df: pl.DataFrame, *, float_digits: int = 4, max_rows: int = 200) -> str:
    """A GitHub-flavoured Markdown table of the first ``max_rows`` rows."""
    header = "| " + " | ".join(df.columns) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    rows = ["| " + " | ".join(_cell(v, float_digits) for v in row) + " |" for row in df.head(max_rows).iter_rows()]
    more = [f"\n_{df.height - max_rows} more rows_"] if df.height > max_rows else []
    return "\n".join([header, rule, *rows, *more])
