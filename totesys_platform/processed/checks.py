"""The processed assets' checks: the blocking star-schema rules and the quarantine report, evaluated
inside the processed step where the new rows are in hand."""

import dagster as dg
import polars as pl

from totesys_platform.catalog import WarehouseTable
from totesys_platform.processed.build import quarantine_table
from totesys_platform.processed.rules import RuleResult, markdown_report, markdown_table
from totesys_platform.processed.star import QUARANTINE_SCHEMA, quarantine_rules
from totesys_platform.rules import describe


def quality_check_name(table: WarehouseTable) -> str:
    return f"{table.name}_batch_meets_the_star_schema_rules"


def quarantine_check_name(table: WarehouseTable) -> str:
    return f"{table.name}_quarantine_is_empty"


def quality_check_result(table: WarehouseTable, results: list[RuleResult]) -> dg.AssetCheckResult:
    errors = [r for r in results if r.is_error and r.offending]
    warnings = [r for r in results if not r.is_error and r.offending]
    return dg.AssetCheckResult(
        check_name=quality_check_name(table),
        passed=not errors and not warnings,
        severity=dg.AssetCheckSeverity.ERROR if errors else dg.AssetCheckSeverity.WARN,
        description="; ".join(f"{r.rule.name}: {r.offending} rows" for r in errors + warnings)
        or "every rule holds on the new data",
        metadata={
            "rules": dg.MetadataValue.md(markdown_report(results)),
            "failing_rules": len(errors),
            "warning_rules": len(warnings),
        },
    )


def quarantine_check_result(table: WarehouseTable, quarantined: list[pl.DataFrame]) -> dg.AssetCheckResult:
    bad = pl.concat(quarantined) if quarantined else pl.DataFrame(schema=QUARANTINE_SCHEMA)
    by_rule = bad.group_by("rule").len().sort("rule")
    return dg.AssetCheckResult(
        check_name=quarantine_check_name(table),
        passed=bad.is_empty(),
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"{bad.height} rows quarantined this run: "
            + ", ".join(f"{rule} {n}" for rule, n in by_rule.iter_rows())
            + f"; see {quarantine_table(table)} in the processed zone"
        )
        if bad.height
        else "no rows quarantined this run",
        metadata={
            "quarantined_rows": bad.height,
            "by_rule": dg.MetadataValue.md(markdown_table(by_rule, limit=20)),
            "sample": dg.MetadataValue.md(markdown_table(bad.select("source_id", "last_updated", "rule", "reason"))),
        },
    )


def processed_check_specs(table: WarehouseTable, key: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    specs = [
        dg.AssetCheckSpec(
            quality_check_name(table),
            asset=key,
            blocking=True,
            description="Blocking: the new rows meet the table's rules; a batch breaking an error rule is not "
            f"written, so it never reaches the warehouse ({describe(table.rules)}).",
        )
    ]
    if table.is_fact:
        specs.append(
            dg.AssetCheckSpec(
                quarantine_check_name(table),
                asset=key,
                description="Warns with the count, rules and a sample of the rows quarantined this run (rows "
                f"breaking {', '.join(r.name for r in quarantine_rules(table))}).",
            )
        )
    return specs
