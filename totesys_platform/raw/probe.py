"""What the change sensor asks the source: each catalog table's newest `last_updated`, table by table.

Each table is asked in a savepoint of its own, so one table the role may not read, that is gone, or that is
locked past the timeout is named with its cause and fix, and never hides the other tables' changes."""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from totesys_platform.catalog import SOURCE_TABLES, SourceTable
from totesys_platform.raw.extract import permission_message
from totesys_platform.resources.postgres import DatabaseUnavailableError, PostgresResource

# One table's max(last_updated) may take this long (a whole-table scan without an index on the cursor);
# past it, or past LOCK_TIMEOUT waiting for another session's lock, the table is reported, not waited for.
STATEMENT_TIMEOUT_MS = 10_000
LOCK_TIMEOUT_MS = 5_000


@dataclass(frozen=True)
class SourceProbe:
    """The source as the sensor saw it: watermarks of the tables it could read, why it could not read the
    others, or why it could not reach the source at all."""

    watermarks: dict[str, str | None] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)
    unreachable: str | None = None


def watermark_sql(table: SourceTable) -> sql.Composed:
    return sql.SQL("SELECT max({})::text FROM {}").format(sql.Identifier(table.cursor), sql.Identifier(table.name))


def unreadable_reason(table: SourceTable, role: str, error: psycopg.Error) -> str:
    """What is wrong with the table, and what fixes it, in words an operator can act on."""
    name = table.name
    if isinstance(error, psycopg.errors.InsufficientPrivilege):
        return permission_message(name, role)
    if isinstance(error, psycopg.errors.UndefinedTable):
        return (
            f"raw/{name}: table {name!r} does not exist at the source (dropped or renamed); restore it or change "
            "the catalog; the other tables go on"
        )
    if isinstance(error, psycopg.errors.UndefinedColumn):
        return (
            f"raw/{name}: column {table.cursor!r} is missing from table {name!r} at the source (schema drift); "
            "restore it; the other tables go on"
        )
    if isinstance(error, psycopg.errors.QueryCanceled | psycopg.errors.LockNotAvailable):
        return (
            f"raw/{name}: max({table.cursor}) did not answer within {STATEMENT_TIMEOUT_MS // 1000} s (a lock held "
            "by another session, or an overloaded source); the other tables go on, this one is asked again at "
            "the next tick"
        )
    first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return f"raw/{name}: {type(error).__name__}: {first_line}"


def probe_tables(conn: psycopg.Connection, tables: list[SourceTable]) -> SourceProbe:
    """Ask each table in a savepoint; a broken connection makes the whole source unreachable."""
    role = conn.execute("SELECT current_user").fetchone()[0]
    conn.execute(
        "SELECT set_config('statement_timeout', %s, true), set_config('lock_timeout', %s, true)",
        [str(STATEMENT_TIMEOUT_MS), str(LOCK_TIMEOUT_MS)],
    )
    watermarks: dict[str, str | None] = {}
    unreadable: dict[str, str] = {}
    for table in tables:
        try:
            with conn.transaction():
                watermarks[table.name] = conn.execute(watermark_sql(table)).fetchone()[0]
        except psycopg.Error as error:
            if conn.broken or conn.closed:
                raise
            unreadable[table.name] = unreadable_reason(table, role, error)
    return SourceProbe(watermarks, unreadable)


def probe_source(source_db: PostgresResource, tables: list[SourceTable] | None = None) -> SourceProbe:
    """Every catalog table's watermark, or why the sensor cannot have it."""
    try:
        with source_db.connect() as conn:
            return probe_tables(conn, list(tables or SOURCE_TABLES))
    except DatabaseUnavailableError as error:
        return SourceProbe(unreachable=str(error))
    except psycopg.OperationalError as error:  # the connection broke half-way (the server went down)
        first_line = (str(error).strip().splitlines() or ["connection lost"])[0]
        return SourceProbe(unreachable=f"{source_db.setting_name}: lost the connection to the source: {first_line}")
