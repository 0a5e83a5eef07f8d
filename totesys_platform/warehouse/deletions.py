"""`source_deletions`: one row per source row the reconciliation found deleted, loaded exactly once from the
ingestion zone's `_deletions` table (by Delta version, recorded in the load log like every warehouse table).
Facts keep their history; this table says which source rows are gone, and since when."""

from __future__ import annotations

import dagster as dg
import polars as pl
import psycopg
from psycopg import sql

from totesys_platform.catalog import WAREHOUSE_TABLES
from totesys_platform.raw.reconcile import DELETIONS
from totesys_platform.resources.lake import LakeZone
from totesys_platform.source import copy_frames
from totesys_platform.warehouse.load import (
    count_rows,
    load_log_entry,
    lock_table_writes,
    qualified,
    record_load,
    restart_summaries,
    run_ddl,
)

TABLE = "source_deletions"
COLUMNS = ("table_name", "source_id", "last_updated", "detected_at")
SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("table_name", "text", "The totesys table the row was deleted from"),
        dg.TableColumn("source_id", "integer", "The deleted row's primary key"),
        dg.TableColumn("last_updated", "timestamp", "The last_updated of its last version the lake holds"),
        dg.TableColumn("detected_at", "timestamp", "When the reconciliation found it gone"),
    ],
    constraints=dg.TableConstraints(other=["primary key (table_name, source_id, last_updated)"]),
)


def create_sql(schema: str) -> sql.Composed:
    return sql.SQL(
        "CREATE TABLE IF NOT EXISTS {} (table_name text NOT NULL, source_id integer NOT NULL,"
        " last_updated timestamp NOT NULL, detected_at timestamp NOT NULL,"
        " PRIMARY KEY (table_name, source_id, last_updated))"
    ).format(qualified(schema, TABLE))


def ensure_table(conn: psycopg.Connection, schema: str) -> None:
    if conn.execute("SELECT to_regclass(%s)", [f"{schema}.{TABLE}"]).fetchone()[0] is not None:
        return
    run_ddl(conn, create_sql(schema), f"create {schema}.{TABLE}")


def load_deletions(conn: psycopg.Connection, ingestion: LakeZone, schema: str) -> tuple[int, int]:
    """The deletions recorded since the last load, in one transaction; (rows added, rows in the table)."""
    ensure_table(conn, schema)
    with conn.transaction():
        lock_table_writes(conn, schema, TABLE)
        entry = load_log_entry(conn, schema, TABLE)
        after, until = (entry.delta_version if entry else None), ingestion.version(DELETIONS)
        rows = entry.table_rows if entry and entry.table_rows is not None else count_rows(conn, schema, TABLE)
        if until is None or (after is not None and until <= after):
            return 0, rows
        stage = sql.Identifier(f"stage_{TABLE}")
        conn.execute(
            sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA").format(
                stage, sql.SQL(", ").join(map(sql.Identifier, COLUMNS)), qualified(schema, TABLE)
            )
        )
        frames = (
            f.filter(pl.col("_commit_version") <= until).select(COLUMNS) for f in ingestion.changes(DELETIONS, after)
        )
        copy_frames(conn, stage, (f for f in frames if f.height))
        gone = [r[0] for r in conn.execute(sql.SQL("SELECT DISTINCT table_name FROM {}").format(stage)).fetchall()]
        facts = sorted(t.name for t in WAREHOUSE_TABLES if t.is_fact and t.source.name in gone)
        for fact in facts:  # no summary refresh in between (see reports/summaries.py)
            lock_table_writes(conn, schema, fact)
        restart_summaries(conn, schema, facts)
        names = sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
        added = conn.execute(
            sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT DO NOTHING").format(
                qualified(schema, TABLE), names, names, stage
            )
        ).rowcount
        record_load(conn, schema, TABLE, until, rows + added)
        return added, rows + added
