"""Asset checks generated from the catalog: one per warehouse table, each rule a SQL count of offending rows."""

import dagster as dg
from psycopg import sql

from totesys_platform.assets.warehouse import WarehouseConfig, warehouse_key
from totesys_platform.catalog import WAREHOUSE_TABLES, WAREHOUSE_TABLES_BY_NAME, WarehouseTable
from totesys_platform.resources.postgres import PostgresResource


def quality_rules(table: WarehouseTable, schema: str) -> list[tuple[str, bool, sql.Composable]]:
    """(rule, is_error, SQL counting offending rows) for the table: errors fail, warnings warn."""
    target = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table.name))
    ident = sql.Identifier
    key = sql.SQL(", ").join(map(ident, table.version_key))
    rules = [
        (
            f"{'versions' if table.is_fact else table.key + ' values'} are unique",
            True,
            sql.SQL("SELECT count(*) FROM (SELECT {k} FROM {t} GROUP BY {k} HAVING count(*) > 1) d").format(
                k=key, t=target
            ),
        )
    ]
    for column in table.data_columns:
        if not column.nullable:
            rules.append(
                (
                    f"{column.name} is not null",
                    True,
                    sql.SQL("SELECT count(*) FROM {} WHERE {} IS NULL").format(target, ident(column.name)),
                )
            )
    for column in table.foreign_keys:
        dim = WAREHOUSE_TABLES_BY_NAME[column.references]
        rules.append(
            (
                f"{column.name} references {dim.name}",
                True,
                sql.SQL(
                    "SELECT count(*) FROM {t} f WHERE f.{c} IS NOT NULL AND NOT EXISTS "
                    "(SELECT 1 FROM {s}.{d} x WHERE x.{k} = f.{c})"
                ).format(t=target, c=ident(column.name), s=ident(schema), d=ident(dim.name), k=ident(dim.key)),
            )
        )
    for name, accepted in table.accepted_values.items():
        rules.append(
            (
                f"{name} is one of {', '.join(accepted)}",
                True,
                sql.SQL("SELECT count(*) FROM {} WHERE {} <> ALL({})").format(
                    target, ident(name), sql.Literal(list(accepted))
                ),
            )
        )
    for name, (low, high) in table.expected_ranges.items():
        rules.append(
            (
                f"{name} is within the spec range {low}-{high}",
                False,
                sql.SQL("SELECT count(*) FROM {} WHERE {} NOT BETWEEN {} AND {}").format(
                    target, ident(name), sql.Literal(low), sql.Literal(high)
                ),
            )
        )
    return rules


def build_warehouse_check(table: WarehouseTable) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=warehouse_key(table.name),
        name=f"{table.name}_meets_the_star_schema_rules",
        description=f"{table.name}: keys unique, NOT NULL columns filled, foreign keys resolve, accepted values, spec ranges (warn).",
    )
    def _check(warehouse_db: PostgresResource, warehouse: WarehouseConfig) -> dg.AssetCheckResult:
        with warehouse_db.connect() as conn:
            counts = {
                rule: (error, conn.execute(query).fetchone()[0])
                for rule, error, query in quality_rules(table, warehouse.schema_name)
            }
        errors = {rule: n for rule, (error, n) in counts.items() if error and n}
        warnings = {rule: n for rule, (error, n) in counts.items() if not error and n}
        report = "\n".join(
            ["| rule | offending rows |", "|---|---|", *(f"| {r} | {n} |" for r, (_, n) in counts.items())]
        )
        return dg.AssetCheckResult(
            passed=not errors and not warnings,
            severity=dg.AssetCheckSeverity.ERROR if errors else dg.AssetCheckSeverity.WARN,
            description="; ".join(f"{r}: {n} rows" for r, n in {**errors, **warnings}.items()) or "all rules hold",
            metadata={
                "rules": dg.MetadataValue.md(report),
                "failing_rules": len(errors),
                "warning_rules": len(warnings),
            },
        )

    return _check


def build_checks() -> list[dg.AssetChecksDefinition]:
    return [build_warehouse_check(t) for t in WAREHOUSE_TABLES]
