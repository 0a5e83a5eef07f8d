"""Quality rules from the catalog, evaluated on a Polars frame before it is written (no Dagster here).

The same rules the warehouse checks run in SQL: keys unique, NOT NULL columns filled, foreign keys to
snapshot dimensions resolve, accepted values; spec ranges are warnings. Errors block a batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from totesys_platform.catalog import WarehouseTable

SAMPLE_ROWS = 5


@dataclass
class RuleResult:
    rule: str
    is_error: bool
    offending: int
    sample: pl.DataFrame  # up to SAMPLE_ROWS offending rows

    def merge(self, other: RuleResult) -> RuleResult:
        if not other.offending or self.sample.height >= SAMPLE_ROWS:
            return RuleResult(self.rule, self.is_error, self.offending + other.offending, self.sample)
        sample = pl.concat([self.sample, other.sample], how="diagonal_relaxed").head(SAMPLE_ROWS)
        return RuleResult(self.rule, self.is_error, self.offending + other.offending, sample)


def frame_rules(table: WarehouseTable, dimension_keys: dict[str, pl.Series]) -> list[tuple[str, bool, pl.Expr]]:
    """(rule, is_error, predicate selecting offending rows) for the table's catalog rules."""
    key = list(table.version_key)
    rules = [
        (f"{'versions' if table.is_fact else table.key + ' values'} are unique", True, pl.struct(key).is_duplicated())
    ]
    rules += [(f"{c.name} is not null", True, pl.col(c.name).is_null()) for c in table.data_columns if not c.nullable]
    for column in table.foreign_keys:
        keys = dimension_keys.get(column.references or "")
        if keys is not None:
            rules.append(
                (
                    f"{column.name} references {column.references}",
                    True,
                    pl.col(column.name).is_not_null() & ~pl.col(column.name).is_in(keys.implode()),
                )
            )
    for name, accepted in table.accepted_values.items():
        rules.append(
            (
                f"{name} is one of {', '.join(accepted)}",
                True,
                pl.col(name).is_not_null() & ~pl.col(name).is_in(accepted),
            )
        )
    for name, (low, high) in table.expected_ranges.items():
        rules.append((f"{name} is within the spec range {low}-{high}", False, ~pl.col(name).is_between(low, high)))
    return rules


def evaluate_rules(
    table: WarehouseTable, frame: pl.DataFrame, dimension_keys: dict[str, pl.Series] | None = None
) -> list[RuleResult]:
    rules = frame_rules(table, dimension_keys or {})
    counts = frame.select(
        *(predicate.fill_null(False).sum().alias(str(i)) for i, (_, _, predicate) in enumerate(rules))
    )
    results = []
    for i, (rule, is_error, predicate) in enumerate(rules):
        offending = int(counts[str(i)][0] or 0)
        sample = frame.filter(predicate.fill_null(False)).head(SAMPLE_ROWS) if offending else frame.clear()
        results.append(RuleResult(rule, is_error, offending, sample))
    return results


def merge_results(total: list[RuleResult] | None, new: list[RuleResult]) -> list[RuleResult]:
    if total is None:
        return new
    return [a.merge(b) for a, b in zip(total, new, strict=True)]


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
    lines = ["| rule | severity | offending rows |", "|---|---|---|"]
    lines += [f"| {r.rule} | {'error' if r.is_error else 'warning'} | {r.offending} |" for r in results]
    for r in results:
        if r.offending:
            lines += ["", f"**{r.rule}**: sample of offending rows", "", markdown_table(r.sample)]
    return "\n".join(lines)
