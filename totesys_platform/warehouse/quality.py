"""The catalog's quality rules counted on whole warehouse tables in SQL (no Dagster here): the row rules
of a table in one scan, each table-level rule in a query of its own."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from totesys_platform.catalog import WarehouseTable
from totesys_platform.rules import Severity
from totesys_platform.warehouse.load import META_SCHEMA, qualified

# Not a rule on the data but on the platform's own bookkeeping: the row count the loads keep (the routine
# reconciliation trusts it to avoid a full count every run) against the table. A difference means rows were
# changed outside the platform (truncate the table to have it reloaded whole).
LOAD_LOG_RULE = "row_count_equals_the_count_the_loads_recorded"


@dataclass(frozen=True)
class RuleCount:
    name: str
    meaning: str
    severity: Severity
    offending: int


def rule_counts(conn: psycopg.Connection, table: WarehouseTable, schema: str) -> list[RuleCount]:
    """Every rule of the table with the number of warehouse rows breaking it, in the catalog's order."""
    target = qualified(schema, table.name)
    row_rules = [rule for rule in table.rules if rule.row_level]
    counted = {}
    if row_rules:
        filters = sql.SQL(", ").join(
            sql.SQL("count(*) FILTER (WHERE {})").format(rule.offending_predicate(sql.Identifier("f"), schema))
            for rule in row_rules
        )
        row = conn.execute(sql.SQL("SELECT {} FROM {} f").format(filters, target)).fetchone()
        counted = {rule.name: int(n) for rule, n in zip(row_rules, row, strict=True)}
    for rule in table.rules:
        if not rule.row_level:
            counted[rule.name] = int(conn.execute(rule.offending_sql(target, schema)).fetchone()[0])
    counts = [RuleCount(r.name, r.sentence, r.severity, counted[r.name]) for r in table.rules]
    drift = conn.execute(
        sql.SQL(
            "SELECT abs(count(*) - coalesce((SELECT table_rows FROM {m}.delta_load_log"
            " WHERE warehouse_schema = %s AND table_name = %s), count(*))) FROM {t}"
        ).format(m=sql.Identifier(META_SCHEMA), t=target),
        (schema, table.name),
    ).fetchone()[0]
    counts.append(RuleCount(LOAD_LOG_RULE, "the row count equals the count the loads recorded", "error", int(drift)))
    return counts
