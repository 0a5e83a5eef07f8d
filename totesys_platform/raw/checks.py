"""The raw assets' checks, evaluated inside the extraction step where the data is in hand."""

import dagster as dg

from totesys_platform.catalog import SourceTable
from totesys_platform.raw.extract import IngestResult


def raw_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(["raw", table])


SCHEMA_CHECK = "columns_match_the_catalog"
KEYS_CHECK = "keys_are_not_null"
READABLE_CHECK = "source_table_is_readable"
CLOCK_CHECK = "rows_are_not_stamped_ahead_of_the_source_clock"


def raw_check_specs(table: SourceTable) -> list[dg.AssetCheckSpec]:
    key = raw_key(table.name)
    return [
        dg.AssetCheckSpec(
            READABLE_CHECK,
            asset=key,
            description="The source role may read the table and its Delta table in the ingestion zone is readable.",
        ),
        dg.AssetCheckSpec(
            SCHEMA_CHECK,
            asset=key,
            description="Schema drift: the source table's columns against the catalog (missing or retyped: "
            "error; new: warning, kept as text).",
        ),
        dg.AssetCheckSpec(
            KEYS_CHECK, asset=key, description=f"Every ingested row has its {table.primary_key} and {table.cursor}."
        ),
        dg.AssetCheckSpec(
            CLOCK_CHECK,
            asset=key,
            description=f"Warns about rows whose {table.cursor} is later than the source database's clock "
            "(ingested, but a sign of a skewed application clock).",
        ),
    ]


def schema_check_result(table: SourceTable, missing, extra, retyped) -> dg.AssetCheckResult:
    problems = [
        *(f"missing column {c} (nothing ingested until it is back)" for c in missing),
        *(f"retyped column {c}" for c in retyped),
        *(f"new column {c} (kept as text)" for c in extra),
    ]
    return dg.AssetCheckResult(
        asset_key=raw_key(table.name),
        check_name=SCHEMA_CHECK,
        passed=not problems,
        severity=dg.AssetCheckSeverity.ERROR if missing or retyped else dg.AssetCheckSeverity.WARN,
        description=f"source table {table.name}: " + "; ".join(problems) if problems else "columns match the catalog",
        metadata={
            "missing_columns": ", ".join(missing),
            "retyped_columns": ", ".join(retyped),
            "new_columns": ", ".join(extra),
        },
    )


def readable_check_result(table: SourceTable, problem: str | None) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=raw_key(table.name),
        check_name=READABLE_CHECK,
        passed=problem is None,
        description=problem or f"{table.name} is readable at the source and in the ingestion zone",
    )


def keys_check_result(table: SourceTable, result: IngestResult) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=raw_key(table.name),
        check_name=KEYS_CHECK,
        passed=result.null_keys == 0,
        description=f"{result.null_keys} rows of the new batch lack a key"
        if result.null_keys
        else "every new row has its key and cursor",
        metadata={"rows_with_null_keys": result.null_keys},
    )


def clock_check_result(table: SourceTable, result: IngestResult) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=raw_key(table.name),
        check_name=CLOCK_CHECK,
        passed=result.rows_ahead == 0,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"{result.rows_ahead} new rows stamped up to {result.max_seconds_ahead:.0f} s ahead of the source clock "
            f"({result.source_now}); ingested, and the watermark stays at the source clock so later changes are "
            "not hidden"
        )
        if result.rows_ahead
        else "no row is stamped ahead of the source clock",
        metadata={"rows_ahead": result.rows_ahead, "max_seconds_ahead": round(result.max_seconds_ahead, 3)},
    )
