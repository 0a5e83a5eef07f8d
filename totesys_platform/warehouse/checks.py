"""Asset checks on the warehouse generated from the catalog: the star-schema rules (each a SQL count of
offending rows; full-table, so nightly) and the reconciliation of every table with the lake zones and the
quarantine (routine: evaluated in the warehouse step right after its load, or on its own).

Reconciliation counts come from the Delta logs (`num_records` of each file), so they cost the same on
day 300 as on day 1; only a mismatch reads rows, to name the missing and unexpected ones.
(The raw assets' checks and the processed assets' blocking checks are evaluated inside those assets'
own steps, where the data is in hand; see raw/checks.py and processed/checks.py.)"""

import dagster as dg
import polars as pl
from psycopg import sql

from totesys_platform.catalog import WAREHOUSE_TABLES, WarehouseTable
from totesys_platform.processed.build import quarantine_table
from totesys_platform.processed.rules import markdown_table
from totesys_platform.resources.lake import LakeZone
from totesys_platform.resources.postgres import PostgresResource, WarehouseConfig
from totesys_platform.rules import describe
from totesys_platform.warehouse.load import count_rows
from totesys_platform.warehouse.quality import RuleCount, rule_counts


def warehouse_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(["warehouse", table])


def build_warehouse_check(table: WarehouseTable) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=warehouse_key(table.name),
        name=f"{table.name}_meets_the_star_schema_rules",
        description=f"{table.name} as a whole meets its rules in SQL ({describe(table.rules)}), and its row count "
        "equals the count its loads recorded.",
    )
    def _check(warehouse_db: PostgresResource, warehouse: WarehouseConfig) -> dg.AssetCheckResult:
        with warehouse_db.connect() as conn:
            counts = rule_counts(conn, table, warehouse.schema_name)
        return rule_check_result(counts)

    return _check


def rule_check_result(counts: list[RuleCount]) -> dg.AssetCheckResult:
    errors = [c for c in counts if c.severity == "error" and c.offending]
    warnings = [c for c in counts if c.severity != "error" and c.offending]
    report = ["| rule | meaning | severity | offending rows |", "|---|---|---|---|"]
    report += [f"| {c.name} | {c.meaning} | {c.severity} | {c.offending} |" for c in counts]
    return dg.AssetCheckResult(
        passed=not errors and not warnings,
        severity=dg.AssetCheckSeverity.ERROR if errors else dg.AssetCheckSeverity.WARN,
        description="; ".join(f"{c.name}: {c.offending} rows" for c in errors + warnings) or "all rules hold",
        metadata={
            "rules": dg.MetadataValue.md("\n".join(report)),
            "failing_rules": len(errors),
            "warning_rules": len(warnings),
        },
    )


# --- Reconciliation: the ingestion zone against the warehouse ---------------------------------


def _warehouse_keys(conn, table: WarehouseTable, schema: str) -> pl.DataFrame:
    """The warehouse's row identities in the raw zone's terms: (id, last_updated), id, or (id, valid_from)."""
    stamp = sql.SQL("(last_updated_date + last_updated_time)::timestamp")
    more = [stamp] if table.is_fact else [sql.Identifier(c) for c in table.version_key[1:]]
    query = sql.SQL("SELECT {} FROM {}.{}").format(
        sql.SQL(", ").join([sql.Identifier(table.key), *more]), sql.Identifier(schema), sql.Identifier(table.name)
    )
    rows = conn.execute(query)
    names = [table.source.primary_key, *(["last_updated"] if table.is_fact else table.version_key[1:])]
    return pl.DataFrame(rows.fetchall(), schema=names, orient="row")


def _expected_keys(table: WarehouseTable, ingestion: LakeZone, processed: LakeZone) -> pl.DataFrame:
    """The row identities the warehouse should hold (only read when the counts differ)."""
    source = table.source
    identity = [source.primary_key, source.cursor] if table.is_fact else [source.primary_key]
    if table.is_fact:
        raw = ingestion.scan(source.name)
        expected = raw.select(identity).unique().collect() if raw is not None else pl.DataFrame(schema=identity)
        bad = processed.scan(quarantine_table(table))
        if bad is not None:
            bad = bad.select(pl.col("source_id").alias(source.primary_key), pl.col("last_updated").alias(source.cursor))
            expected = expected.join(bad.collect(), on=identity, how="anti")
        return expected
    dim = processed.scan(table.name)
    if dim is None:
        return pl.DataFrame(schema=identity)
    return dim.select(pl.col(table.key).alias(source.primary_key), *table.version_key[1:]).collect()


def reconciliation(
    table: WarehouseTable, ingestion: LakeZone, processed: LakeZone, conn, schema: str, recorded: int | None = None
) -> tuple[dict[str, int], pl.DataFrame, pl.DataFrame]:
    """Counts (raw, quarantined, expected, warehouse) and, only when they differ, the rows missing from
    and unexpected in the warehouse. Facts: every raw version once (the raw table holds each version once)
    or in quarantine; dimensions: one row per member of the processed dimension (merged on the source key).

    `recorded`: the row count the load just recorded (the sum of the rows each load inserted, so a missed or
    repeated load shows). It stands for the table's count when it agrees with the lake; otherwise, and when
    the check runs on its own, the table is counted."""
    source = table.source
    if table.is_fact:
        raw_count, quarantined = ingestion.row_count(source.name), processed.row_count(quarantine_table(table))
    else:
        raw_count, quarantined = processed.row_count(table.name), 0
    expected_count = raw_count - quarantined
    counted = recorded is None or recorded != expected_count
    warehouse_count = count_rows(conn, schema, table.name) if counted else recorded
    counts = {
        "raw": raw_count,
        "quarantined": quarantined,
        "expected_in_warehouse": expected_count,
        "warehouse": warehouse_count,
        "warehouse_counted": int(counted),  # 0: the load log's count, which agreed with the lake
    }
    missing = unexpected = pl.DataFrame()
    if counts["expected_in_warehouse"] != warehouse_count:
        expected = _expected_keys(table, ingestion, processed)
        identity = expected.columns
        actual = _warehouse_keys(conn, table, schema).cast(expected.schema)  # type: ignore[arg-type]
        missing = expected.join(actual, on=identity, how="anti").sort(identity)
        unexpected = actual.join(expected, on=identity, how="anti").sort(identity)
    return counts, missing, unexpected


def reconciliation_check_name(table: WarehouseTable) -> str:
    return f"{table.name}_reconciles_with_the_ingestion_zone"


def reconciliation_check_spec(table: WarehouseTable) -> dg.AssetCheckSpec:
    if table.is_fact:
        what = "every ingested row version is in the table once or in quarantine"
    elif table.is_history:
        what = f"one row per state of processed/{table.name} (one per member and valid_from)"
    else:
        what = f"one row per member of processed/{table.name} (one per {table.source.name} key ingested)"
    return dg.AssetCheckSpec(
        reconciliation_check_name(table),
        asset=warehouse_key(table.name),
        description=f"{table.name}: {what}; reports the counts and the differing rows.",
    )


def reconciliation_check_result(
    table: WarehouseTable, ingestion: LakeZone, processed: LakeZone, conn, schema: str, recorded: int | None = None
) -> dg.AssetCheckResult:
    counts, missing, unexpected = reconciliation(table, ingestion, processed, conn, schema, recorded)
    passed = missing.is_empty() and unexpected.is_empty() and counts["expected_in_warehouse"] == counts["warehouse"]
    return dg.AssetCheckResult(
        asset_key=warehouse_key(table.name),
        check_name=reconciliation_check_name(table),
        passed=passed,
        description="counts reconcile: "
        + ", ".join(f"{k} {v}" for k, v in counts.items())
        + ("" if passed else f"; {missing.height} missing from the warehouse, {unexpected.height} unexpected"),
        metadata={
            **counts,
            "missing_rows": missing.height,
            "unexpected_rows": unexpected.height,
            "missing_sample": dg.MetadataValue.md(markdown_table(missing, limit=10)),
            "unexpected_sample": dg.MetadataValue.md(markdown_table(unexpected, limit=10)),
        },
    )


def build_checks() -> list[dg.AssetChecksDefinition]:
    """The full-table rule checks (the reconciliation checks are part of the warehouse assets)."""
    return [build_warehouse_check(t) for t in WAREHOUSE_TABLES]
