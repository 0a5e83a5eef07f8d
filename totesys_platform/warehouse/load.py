"""The PostgreSQL warehouse: DDL from the catalog and exactly-once bulk loads from the processed zone.

Each load runs in one transaction: COPY the processed table's current rows straight into an empty
table, or else its changes since the last loaded Delta version into a temporary staging table and then
one INSERT ... ON CONFLICT into the target (facts: new versions, and a version corrected at the source in
place; dimensions: upsert changed rows); then record the loaded Delta version and the table's row count in `totesys_platform.delta_load_log`.
A killed load leaves the warehouse as it was; the next run picks up from the log, so nothing is loaded twice.
The row count is kept up to date from each load's inserted rows (a `count(*)` would read the whole table every
run); the nightly rule checks compare it with the table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import polars as pl
import psycopg
from psycopg import sql

from totesys_platform.catalog import WAREHOUSE_TABLES, WAREHOUSE_TABLES_BY_NAME, WarehouseTable
from totesys_platform.reports.specs import reports_schema
from totesys_platform.resources.io_managers import LakeTable
from totesys_platform.source import copy_frames

META_SCHEMA = "totesys_platform"


def _column_ddl(table: WarehouseTable, schema: str) -> list[sql.Composable]:
    """Columns (NOT NULL where a rule requires it), then the constraints the table's rules have where one
    fits: the key, foreign keys, accepted values, impossible values."""
    parts: list[sql.Composable] = []
    for column in table.columns:
        if column.name == table.surrogate_key:
            parts.append(sql.SQL("{} serial PRIMARY KEY").format(sql.Identifier(column.name)))
            continue
        not_null = " NOT NULL" if table.is_required(column.name) else ""
        parts.append(sql.SQL("{} {}{}").format(sql.Identifier(column.name), sql.SQL(column.pg_type), sql.SQL(not_null)))
    constraints = (rule.constraint(table.name, schema) for rule in table.rules if rule.is_error)
    return parts + [c for c in constraints if c is not None]


def create_table_sql(table: WarehouseTable, schema: str) -> sql.Composed:
    return sql.SQL("CREATE TABLE IF NOT EXISTS {}.{} (\n  {}\n)").format(
        sql.Identifier(schema), sql.Identifier(table.name), sql.SQL(",\n  ").join(_column_ddl(table, schema))
    )


LOAD_LOG_COLUMNS = ("delta_version", "table_rows")  # the log's columns after the key (table_rows: since 2026-11)


def warehouse_is_complete(conn: psycopg.Connection, schema: str) -> bool:
    """Whether the 11 tables and the load log with its columns exist (one catalog query: the usual case
    costs no DDL)."""
    wanted = [(schema, t.name) for t in WAREHOUSE_TABLES] + [(META_SCHEMA, "delta_load_log")]
    found = conn.execute(
        "SELECT (SELECT count(*) FROM pg_catalog.pg_tables WHERE (schemaname, tablename) IN "
        "(SELECT * FROM unnest(%s::text[], %s::text[])))"
        " + (SELECT count(*) FROM pg_catalog.pg_attribute WHERE attrelid = to_regclass(%s)"
        " AND attname = ANY(%s) AND NOT attisdropped)",
        ([s for s, _ in wanted], [t for _, t in wanted], f"{META_SCHEMA}.delta_load_log", list(LOAD_LOG_COLUMNS)),
    ).fetchone()[0]
    return found == len(wanted) + len(LOAD_LOG_COLUMNS)


class WarehousePermissionError(RuntimeError):
    """The warehouse role may not make the DDL this release needs; the message says what to run."""


def ensure_warehouse(conn: psycopg.Connection, schema: str) -> None:
    """Create the schema, the 11 tables (dimensions first) and the load log, if missing; add the load log's
    newer columns to one written by an earlier release. A statement this role may not run fails with the
    statement itself, for whoever may run it (the schema's or table's owner)."""
    if warehouse_is_complete(conn, schema):
        return
    meta = sql.Identifier(META_SCHEMA)
    statements = [
        sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)),
        sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(meta),
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {}.delta_load_log (warehouse_schema text, table_name text,"
            " delta_version bigint NOT NULL, loaded_at timestamptz NOT NULL DEFAULT now(),"
            " PRIMARY KEY (warehouse_schema, table_name))"
        ).format(meta),
        # NULL until the next load of the table counts it once (a log written by an earlier release).
        sql.SQL("ALTER TABLE {}.delta_load_log ADD COLUMN IF NOT EXISTS table_rows bigint").format(meta),
        *(create_table_sql(table, schema) for table in sorted(WAREHOUSE_TABLES, key=lambda t: t.is_fact)),
    ]
    for statement in statements:
        run_ddl(conn, statement, "create or upgrade the warehouse")


def run_ddl(conn: psycopg.Connection, statement: sql.Composed, what: str) -> None:
    """One DDL statement; if this role may not run it, an error quoting the statement for whoever may."""
    try:
        with conn.transaction():
            conn.execute(statement)
    except psycopg.errors.InsufficientPrivilege as err:
        raise WarehousePermissionError(
            f"the warehouse role may not {what} ({err.diag.message_primary});"
            f" its owner can run: {statement.as_string(conn)}"
        ) from None


@dataclass
class LoadResult:
    table: str
    from_version: int | None  # None: the whole table (into an empty warehouse table)
    to_version: int | None  # None: nothing to load
    staged_rows: int = 0
    inserted: int = 0  # facts: new versions; dimensions: rows inserted or changed
    table_rows: int = 0  # as recorded in the load log


@dataclass(frozen=True)
class LoadLogEntry:
    delta_version: int
    table_rows: int | None  # None: not recorded yet (an earlier release's log)


def load_log_entry(conn: psycopg.Connection, schema: str, table: str) -> LoadLogEntry | None:
    row = conn.execute(
        sql.SQL(
            "SELECT delta_version, table_rows FROM {}.delta_load_log WHERE warehouse_schema = %s AND table_name = %s"
        ).format(sql.Identifier(META_SCHEMA)),
        (schema, table),
    ).fetchone()
    return LoadLogEntry(*row) if row else None


def count_rows(conn: psycopg.Connection, schema: str, table: str) -> int:
    """A full count (reads the whole table): the nightly rules and a check run on its own use it."""
    return conn.execute(sql.SQL("SELECT count(*) FROM {}").format(qualified(schema, table))).fetchone()[0]


Frames = Callable[[], Iterator[pl.DataFrame]]


def pending_rows(source: LakeTable, table: WarehouseTable, after: int | None, until: int) -> Frames:
    """The rows to load, each with its Delta version in STAGE_ORDER: the table's rows at `until` when
    `after` is None, else the rows the commits after `after` inserted or updated."""
    columns = [c.name for c in table.data_columns]
    deletes = table.is_history  # a history's merge deletes the states a back-dated version ended

    def frames() -> Iterator[pl.DataFrame]:
        batches = (
            source.snapshot(until, columns)
            if after is None
            else source.changes(after, until=until, columns=columns, with_deletes=deletes)
        )
        for frame in batches:
            order = pl.col("_commit_version").cast(pl.Int64) if "_commit_version" in frame.columns else pl.lit(0)
            deleted = pl.col("_change_type") == "delete" if "_change_type" in frame.columns else pl.lit(False)
            yield frame.select(*columns, order.alias(STAGE_ORDER), *([deleted.alias(STAGE_DELETED)] if deletes else []))

    return frames


class ReferentialIntegrityError(RuntimeError):
    """Staged rows reference dimension rows that do not exist; nothing was loaded."""


STAGE_ORDER = "_load_order"
STAGE_DELETED = "_deleted"  # a history's staged row whose newest change deleted it


def upsert_sql(table: WarehouseTable, schema: str, stage: str) -> sql.Composed:
    """One INSERT from the stage of the newest staged row per version key (a fact version or a dimension
    member), in commit order; a row already there takes the new values only where they differ (a fact version
    corrected at the source without a new last_updated, found by the reconciliation; a dimension's change)."""
    columns = [c.name for c in table.data_columns]
    target = qualified(schema, table.name)
    names = sql.SQL(", ").join(map(sql.Identifier, columns))
    conflict = sql.SQL(", ").join(map(sql.Identifier, table.version_key))
    changing = [c for c in columns if c not in table.version_key]
    action = (
        sql.SQL("DO UPDATE SET {} WHERE ({}) IS DISTINCT FROM ({})").format(
            sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in changing),
            sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in changing),
            sql.SQL(", ").join(sql.SQL("EXCLUDED.{}").format(sql.Identifier(c)) for c in changing),
        )
        if changing
        else sql.SQL("DO NOTHING")
    )
    # DO UPDATE may touch a row once per statement: the newest staged row of each version key, inserted in
    # commit order (facts' surrogate keys follow the order the versions were committed).
    order = sql.Identifier(STAGE_ORDER)
    kept = sql.SQL(" WHERE NOT {}").format(sql.Identifier(STAGE_DELETED)) if table.is_history else sql.SQL("")
    source = sql.SQL(
        "SELECT {n} FROM (SELECT DISTINCT ON ({k}) {n}, {o}{d} FROM {s} ORDER BY {k}, {o} DESC) AS newest{w} ORDER BY {o}"
    ).format(
        k=conflict,
        n=names,
        s=sql.Identifier(stage),
        o=order,
        w=kept,
        d=sql.SQL(", {}").format(sql.Identifier(STAGE_DELETED)) if table.is_history else sql.SQL(""),
    )
    return sql.SQL("INSERT INTO {} AS t ({}) {} ON CONFLICT ({}) {}").format(target, names, source, conflict, action)


def delete_sql(table: WarehouseTable, schema: str, stage: str) -> sql.Composed:
    """Delete the rows whose newest staged change is a delete (a history's ended states)."""
    key = sql.SQL(", ").join(map(sql.Identifier, table.version_key))
    return sql.SQL(
        "DELETE FROM {t} AS t USING (SELECT DISTINCT ON ({k}) {k}, {d} FROM {s} ORDER BY {k}, {o} DESC) AS newest"
        " WHERE newest.{d} AND {on}"
    ).format(
        t=qualified(schema, table.name),
        k=key,
        d=sql.Identifier(STAGE_DELETED),
        s=sql.Identifier(stage),
        o=sql.Identifier(STAGE_ORDER),
        on=sql.SQL(" AND ").join(sql.SQL("t.{0} = newest.{0}").format(sql.Identifier(c)) for c in table.version_key),
    )


def missing_references(
    conn: psycopg.Connection, table: WarehouseTable, schema: str, rows: sql.Composable
) -> dict[str, tuple]:
    """Set-based foreign-key check of the new rows `rows` (a stage, or a table loaded from empty), one hash
    anti-join per reference: column -> (rows without a dimension row, smallest such value)."""
    found = {}
    for column in table.foreign_keys:
        dim = WAREHOUSE_TABLES_BY_NAME[column.references or ""]
        count, example = conn.execute(
            sql.SQL(
                "SELECT count(*), min(x.{c}::text) FROM {s} x WHERE x.{c} IS NOT NULL AND NOT EXISTS "
                "(SELECT 1 FROM {w}.{d} d WHERE d.{k} = x.{c})"
            ).format(
                c=sql.Identifier(column.name),
                s=rows,
                w=sql.Identifier(schema),
                d=sql.Identifier(dim.name),
                k=sql.Identifier(dim.key),
            )
        ).fetchone()
        if count:
            found[column.name] = (count, example)
    return found


def can_defer_fk_triggers(conn: psycopg.Connection) -> bool:
    """Whether this role may switch off per-row FK triggers for the transaction (superuser, rds_superuser)."""
    try:
        with conn.transaction():
            conn.execute("SET LOCAL session_replication_role = replica")
            conn.execute("SET LOCAL session_replication_role = origin")
        return True
    except psycopg.errors.InsufficientPrivilege:
        return False


def qualified(schema: str, name: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name))


def _check_references(conn: psycopg.Connection, table: WarehouseTable, schema: str, rows: sql.Composable) -> None:
    missing = missing_references(conn, table, schema, rows)
    if missing:
        raise ReferentialIntegrityError(
            f"warehouse/{table.name}: nothing loaded; new rows reference missing dimension rows: "
            + "; ".join(
                f"{col} ({n} rows, e.g. {ex!r} not in "
                f"{next(c for c in table.foreign_keys if c.name == col).references})"
                for col, (n, ex) in missing.items()
            )
        )


def _copy_into_empty(
    conn: psycopg.Connection, frames: Frames, table: WarehouseTable, schema: str, check: bool
) -> tuple[int, int, int] | None:
    """The backfill: COPY the rows straight into the empty table, then check its references in one pass
    (no stage, no second write). None (and nothing written) if the rows repeat a key: the staged path
    then keeps one version of each."""
    target = qualified(schema, table.name)
    try:
        with conn.transaction():  # a savepoint
            rows = copy_frames(
                conn, target, (chunk.drop(STAGE_ORDER, STAGE_DELETED, strict=False) for chunk in frames())
            )
    except psycopg.errors.UniqueViolation:
        return None
    if check:
        _check_references(conn, table, schema, target)
    return rows, rows, rows


def _load_through_stage(
    conn: psycopg.Connection, frames: Frames, table: WarehouseTable, schema: str, check: bool
) -> tuple[int, int, int]:
    """Stage the rows with their Delta version, check the staged references, then one INSERT ... ON CONFLICT.
    Returns (rows staged, rows written, rows the table gained)."""
    stage_name = f"stage_{table.name}"
    stage = sql.Identifier(stage_name)
    columns = [c.name for c in table.data_columns]
    conn.execute(
        sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {}.{} WITH NO DATA").format(
            stage, sql.SQL(", ").join(map(sql.Identifier, columns)), sql.Identifier(schema), sql.Identifier(table.name)
        )
    )
    conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN {} bigint").format(stage, sql.Identifier(STAGE_ORDER)))
    if table.is_history:
        conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN {} boolean").format(stage, sql.Identifier(STAGE_DELETED)))
    staged = copy_frames(conn, stage, frames())
    if check:
        _check_references(conn, table, schema, stage)
    # A history's ended states go first; an upsert's row count includes the rows it updated: count the version
    # keys it adds before it.
    removed = conn.execute(delete_sql(table, schema, stage_name)).rowcount if table.is_history else 0
    key = sql.SQL(", ").join(map(sql.Identifier, table.version_key))
    staged_keys = (
        sql.SQL("SELECT DISTINCT ON ({k}) {k}, {d} FROM {s} ORDER BY {k}, {o} DESC").format(
            k=key, d=sql.Identifier(STAGE_DELETED), s=stage, o=sql.Identifier(STAGE_ORDER)
        )
        if table.is_history
        else sql.SQL("SELECT DISTINCT {k} FROM {s}").format(k=key, s=stage)
    )
    new_members = conn.execute(
        sql.SQL("SELECT count(*) FROM ({staged}) s WHERE {kept}NOT EXISTS (SELECT 1 FROM {t} t WHERE {on})").format(
            staged=staged_keys,
            kept=sql.SQL("NOT s.{} AND ").format(sql.Identifier(STAGE_DELETED)) if table.is_history else sql.SQL(""),
            t=qualified(schema, table.name),
            on=sql.SQL(" AND ").join(sql.SQL("t.{0} = s.{0}").format(sql.Identifier(c)) for c in table.version_key),
        )
    ).fetchone()[0]
    written = conn.execute(upsert_sql(table, schema, stage_name)).rowcount
    return staged, written, new_members - removed


def restart_summaries(conn: psycopg.Connection, schema: str, facts: list[str]) -> None:
    """Have the report summaries of these facts rebuilt at their next refresh: rows they counted changed in
    place (a fact version corrected at the source) or are gone (deleted at the source). Their refresh
    advances by new record ids and sees neither; such corrections come from the nightly reconciliation."""
    state = f"{reports_schema(schema)}.refresh_state"
    if facts and conn.execute("SELECT to_regclass(%s)", [state]).fetchone()[0] is not None:
        conn.execute(
            sql.SQL("DELETE FROM {}.refresh_state WHERE fact = ANY(%s)").format(sql.Identifier(reports_schema(schema))),
            [facts],
        )


def lock_table_writes(conn: psycopg.Connection, schema: str, table_name: str) -> None:
    """Until this transaction ends, be the only loader of `schema.table_name`, whatever runs overlap
    (an advisory lock, so readers are never blocked; a killed run's lock goes with its connection)."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{schema}.{table_name}",))


def load_table(conn: psycopg.Connection, source: LakeTable, table: WarehouseTable, schema: str) -> LoadResult:
    """Load what the processed table gained since the last load, in one transaction (see module docstring).

    Rows are streamed a batch at a time, so memory does not grow with the data. An empty table (the
    backfill) gets them by COPY straight into it; otherwise they go through a stage and one
    INSERT ... ON CONFLICT. Foreign keys are checked set-based (one anti-join per reference) and, where
    the role may, the per-row FK triggers are switched off while writing: the same guarantee, ten times
    faster on large loads. A violation fails the load with the column and an example, loading nothing.
    """
    set_based = bool(table.foreign_keys) and can_defer_fk_triggers(conn)
    target = qualified(schema, table.name)
    until = source.version()
    with conn.transaction():
        lock_table_writes(conn, schema, table.name)
        empty = not conn.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(target)).fetchone()[0]
        # An empty table (new, truncated, or dropped and recreated) is loaded whole, whatever the log says:
        # the log only ever records what the table already holds.
        entry = None if empty else load_log_entry(conn, schema, table.name)
        after = entry.delta_version if entry else None
        rows_before = 0 if empty else entry.table_rows if entry and entry.table_rows is not None else None
        if rows_before is None:  # not recorded yet: counted once
            rows_before = count_rows(conn, schema, table.name)
        due = until is not None and (after is None or until > after)
        result = LoadResult(table.name, after, until if due else None, table_rows=rows_before)
        if due:
            frames = pending_rows(source, table, after, until)  # type: ignore[arg-type]
            if set_based:
                conn.execute("SET LOCAL session_replication_role = replica")
            # With the triggers off the references are checked set-based; else PostgreSQL checks each row.
            loaded = _copy_into_empty(conn, frames, table, schema, set_based) if empty else None
            if loaded is None:
                loaded = _load_through_stage(conn, frames, table, schema, set_based)
            result.staged_rows, result.inserted, added = loaded
            if table.is_fact and result.inserted > added:  # versions corrected in place
                restart_summaries(conn, schema, [table.name])
            result.table_rows = rows_before + added
            if set_based:
                conn.execute("SET LOCAL session_replication_role = origin")
        if due or (entry is not None and entry.table_rows is None):
            record_load(conn, schema, table.name, until if due else after, result.table_rows)  # type: ignore[arg-type]
    return result


def record_load(conn: psycopg.Connection, schema: str, table_name: str, version: int, table_rows: int) -> None:
    """The load log's entry: the Delta version the table now holds, and its row count."""
    conn.execute(
        sql.SQL(
            "INSERT INTO {}.delta_load_log (warehouse_schema, table_name, delta_version, table_rows)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT (warehouse_schema, table_name) DO UPDATE"
            " SET delta_version = EXCLUDED.delta_version, table_rows = EXCLUDED.table_rows, loaded_at = now()"
        ).format(sql.Identifier(META_SCHEMA)),
        (schema, table_name, version, table_rows),
    )
