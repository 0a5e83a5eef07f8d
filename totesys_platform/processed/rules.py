"""The catalog's quality rules evaluated on a processed batch before it is written, and their reports
(no Dagster here). The rules themselves are defined once in `totesys_platform.rules`."""

from __future__ import annotations

import polars as pl

from totesys_platform.catalog import WarehouseTable
from totesys_platform.rules import SAMPLE_ROWS, RuleResult, evaluate, merge_results

__all__ = ["RuleResult", "evaluate_rules", "markdown_report", "markdown_table", "merge_results"]


def evaluate_rules(
    table: WarehouseTable, frame: pl.DataFrame, dimension_keys: dict[str, pl.Series] | None = None
) -> list[RuleResult]:
    """Every rule of the table that can be evaluated with these dimension keys, on a batch of its rows."""
    return evaluate(table.rules, frame, dimension_keys)


def markdown_table(frame: pl.DataFrame, limit: int = SAMPLE_ROWS) -> str:
    """A small frame as a Markdown table (values escaped for pipes)."""
    if frame.is_empty():
        return "(no rows)"
    cells = [[str(v).replace("|", "\\|") if v is not None else "" for v in row] for row in frame.head(limit).rows()]
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * frame.width]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def markdown_report(results: list[RuleResult]) -> str:
    """Every rule with its offending row count, then a sample of the offending rows of each failing rule."""
    lines = ["| rule | meaning | severity | offending rows |", "|---|---|---|---|"]
    lines += [f"| {r.rule.name} | {r.rule.sentence} | {r.rule.severity} | {r.offending} |" for r in results]
    for r in results:
        if r.offending:
            lines += ["", f"**{r.rule.name}**: sample of offending rows", "", markdown_table(r.sample)]
    return "\n".join(lines)
