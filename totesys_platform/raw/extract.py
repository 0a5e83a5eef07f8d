"""Incremental, typed extraction of one totesys table into its append-only Delta table.

The guarantee: every row version (primary key + last_updated) committed at the source is ingested
exactly once, provided it commits within `lookback` of the watermark. The watermark is the newest
last_updated ingested, but never later than the source database's own clock at the snapshot: a row
stamped ahead of that clock (a skewed application server, a manual fix) is ingested, reported, and
cannot hide the changes committed after it. Each run re-reads rows with last_updated > watermark -
lookback and drops the versions the table already holds (read with file pruning on last_updated, so
only the recent files are opened). The watermark is recorded in each commit's metadata, so it survives
a wiped DAGSTER_HOME. Extraction streams Arrow record batches (ADBC, COPY under the hood) in chunks,
spooled locally, so memory stays bounded whatever the table size.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import polars as pl

from totesys_platform.catalog import SourceTable
from totesys_platform.resources.lake import LakeZone, ZoneDataError
from totesys_platform.resources.postgres import PostgresResource
from totesys_platform.resources.spool import Spool

STAMP_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
# Each ingested row version carries the source's own hash of its catalog columns (md5 of the row's text
# form, computed by PostgreSQL in the SELECT): the reconciliation compares the source with the lake by these
# hashes (see raw/reconcile.py) without re-encoding a value on either side.
ROW_HASH = "_row_hash"


class SourcePermissionError(RuntimeError):
    """The source role may not read a catalog table (its columns would look missing otherwise)."""


class SchemaDriftError(RuntimeError):
    """A catalog column is missing at the source (new columns are kept, not an error)."""

    def __init__(self, message: str, missing: list[str], extra: list[str], retyped: list[str]):
        super().__init__(message)
        self.missing, self.extra, self.retyped = missing, extra, retyped


@dataclass
class IngestResult:
    """One table's extraction: the spooled new rows and what to record with them."""

    table: str
    spool: Spool
    watermark: str | None
    previous_watermark: str | None
    since: str | None
    source_now: str
    extra_columns: list[str] = field(default_factory=list)
    retyped_columns: list[str] = field(default_factory=list)
    null_keys: int = 0  # rows of the batch with a null primary key or cursor
    skipped_duplicates: int = 0
    rows_ahead: int = 0  # rows stamped later than the source's clock at the snapshot
    max_seconds_ahead: float = 0.0
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return self.spool.rows

    def commit_metadata(self, run_id: str) -> dict:
        return {
            "watermark": self.watermark,
            "previous_watermark": self.previous_watermark,
            "source_now": self.source_now,
            "run_id": run_id,
            "rows": str(self.rows),
            "rows_ahead_of_source_clock": str(self.rows_ahead),
            "extra_columns": self.extra_columns,
            "retyped_columns": self.retyped_columns,
        }


@contextlib.contextmanager
def source_snapshot(source_db: PostgresResource) -> Iterator:
    """An Arrow cursor inside one read-only REPEATABLE READ transaction."""
    with source_db.connect_arrow() as conn:
        cursor = conn.cursor()
        try:
            cursor.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            yield cursor
        finally:
            with contextlib.suppress(Exception):
                cursor.execute("ROLLBACK")
            cursor.close()


def source_clock(cursor) -> dt.datetime:
    """The source database's clock (in its session time zone, like last_updated), read as the snapshot's
    first statement, so it is no earlier than any commit the snapshot sees."""
    cursor.execute("SELECT localtimestamp::timestamp(6)")
    return cursor.fetchone()[0]


@dataclass
class SourceDescription:
    """What the source's catalog says about one table: whether the role may read it, and its columns."""

    role: str
    exists: bool
    allowed: bool | None
    columns: dict[str, str]  # name -> information_schema type, in physical order


def describe_source(cursor, tables: list[SourceTable]) -> dict[str, SourceDescription]:
    """Privileges and columns of the given tables, in two catalog queries for all of them (not two a table:
    information_schema is slow to query, a few milliseconds each time, whatever it returns)."""
    names = ",".join(t.name for t in tables)  # catalog names: no comma, bound as one parameter
    cursor.execute(
        "SELECT t, current_user, to_regclass(quote_ident(t)) IS NOT NULL,"
        " CASE WHEN to_regclass(quote_ident(t)) IS NOT NULL"
        " THEN has_table_privilege(to_regclass(quote_ident(t)), 'SELECT') END"
        " FROM unnest(string_to_array($1, ',')) AS t",
        parameters=(names,),
    )
    described = {
        name: SourceDescription(role, exists, allowed, {}) for name, role, exists, allowed in cursor.fetchall()
    }
    cursor.execute(
        "SELECT table_name::text, column_name::text, data_type::text FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = ANY(string_to_array($1, ','))"
        " ORDER BY table_name, ordinal_position",
        parameters=(names,),
    )
    for table, column, data_type in cursor.fetchall():
        described[table].columns[column] = data_type
    return described


def check_privilege(table: SourceTable, described: SourceDescription) -> None:
    """Fail clearly if the role may not SELECT the table (information_schema would hide its columns)."""
    if described.exists and not described.allowed:
        raise SourcePermissionError(permission_message(table.name, described.role))


def permission_message(table: str, role: str) -> str:
    """The role, the table and the GRANT that fixes it (the run path and the change sensor say the same)."""
    return (
        f"raw/{table}: the source role {role!r} may not read table {table!r} (permission denied); "
        f'fix: GRANT SELECT ON "{table}" TO "{role}"; the other tables go on, and the next run after the '
        "grant ingests everything changed meanwhile"
    )


def compare_columns(table: SourceTable, actual: dict[str, str]) -> tuple[list[str], list[str], list[str]]:
    """(missing, extra, retyped) columns of the source table against the catalog."""
    missing = [c.name for c in table.columns if c.name not in actual]
    extra = [name for name in actual if name not in table.column_names]
    retyped = [
        f"{c.name}: {actual[c.name]} (expected {c.type.information_schema_type})"
        for c in table.columns
        if c.name in actual and actual[c.name] != c.type.information_schema_type
    ]
    return missing, extra, retyped


def row_hash_sql(table: SourceTable) -> str:
    """The source's hash of a row's catalog columns, in catalog order (an SQL expression)."""
    return "md5(ROW({})::text)".format(", ".join(f'"{c.name}"' for c in table.columns))


def select_sql(table: SourceTable, extra: list[str], incremental: bool) -> str:
    """SELECT of the catalog columns (cast where Arrow needs it), any new columns as text, and the row hash.

    Identifiers come from the catalog or from information_schema, always quoted; the cursor value
    is bound through set_config, never formatted into the statement.
    """
    parts = [f'"{c.name}"::{c.type.select_cast}' if c.type.select_cast else f'"{c.name}"' for c in table.columns]
    parts += ['"{}"::text'.format(name.replace('"', '""')) for name in extra]
    parts.append(f'{row_hash_sql(table)} AS "{ROW_HASH}"')
    where = f" WHERE \"{table.cursor}\" > current_setting('totesys.since')::timestamp" if incremental else ""
    return f'SELECT {", ".join(parts)} FROM "{table.name}"{where}'  # noqa: S608 - catalog identifiers


def typed(frame: pl.DataFrame, table: SourceTable) -> pl.DataFrame:
    """Cast to the catalog's types (numeric text -> Decimal(10,2)); new columns stay text."""
    return frame.with_columns(pl.col(name).cast(dtype) for name, dtype in table.schema.items())


class IngestionStoppedError(RuntimeError):
    """The run gave up on the table being ingested (see ingest_ahead)."""


def extract_chunks(
    cursor,
    table: SourceTable,
    extra: list[str],
    since: str | None,
    chunk_rows: int,
    stop: threading.Event | None = None,
) -> Iterator[pl.DataFrame]:
    if since is not None:
        cursor.execute("SELECT set_config('totesys.since', $1, true)", parameters=(since,))
        cursor.fetchall()
    cursor.execute(select_sql(table, extra, incremental=since is not None))
    pending: list[pl.DataFrame] = []
    pending_rows = 0
    # ADBC streams record batches of about 16 MB; they are regrouped into chunks of chunk_rows.
    for batch in cursor.fetch_record_batch():
        if stop is not None and stop.is_set():
            raise IngestionStoppedError(f"raw/{table.name}: ingestion stopped: the run is ending")
        frame = pl.from_arrow(batch)
        pending.append(frame)  # type: ignore[arg-type]
        pending_rows += frame.height
        if pending_rows >= chunk_rows:
            yield from (typed(part, table) for part in pl.concat(pending).iter_slices(chunk_rows))
            pending, pending_rows = [], 0
    if pending:
        yield from (typed(part, table) for part in pl.concat(pending).iter_slices(chunk_rows))


def ingested_since(zone: LakeZone, table: SourceTable, since: dt.datetime) -> pl.DataFrame:
    """(key, cursor) of row versions already in the table with cursor >= since; the Delta log's file
    statistics limit the read to the files that can hold such rows, so the cost follows the recent data."""
    frame = zone.read_since(table.name, table.cursor, since, [table.primary_key, table.cursor])
    if frame is None:
        return pl.DataFrame(schema={table.primary_key: pl.Int32, table.cursor: pl.Datetime("us")})
    return frame


def checked_columns(table: SourceTable, described: SourceDescription) -> tuple[list[str], list[str]]:
    """(extra, retyped) columns of a table the role may read and that has every catalog column; raises
    SourcePermissionError or SchemaDriftError naming the table (and the column) otherwise."""
    check_privilege(table, described)
    actual = described.columns
    if not actual:
        missing = [c.name for c in table.columns]
        raise SchemaDriftError(f"raw/{table.name}: table {table.name!r} not found at the source", missing, [], [])
    missing, extra, retyped = compare_columns(table, actual)
    if missing:
        raise SchemaDriftError(
            f"raw/{table.name}: column(s) {', '.join(missing)} expected by the catalog are missing from "
            f"source table {table.name!r} (it has: {', '.join(actual)}); nothing was ingested",
            missing,
            extra,
            retyped,
        )
    return extra, retyped


def _add_chunk(result: IngestResult, chunk: pl.DataFrame, table: SourceTable, source_now: dt.datetime) -> None:
    """Count what the chunk holds (null keys, rows stamped ahead of the source clock) and spool it."""
    key, cursor = pl.col(table.primary_key), pl.col(table.cursor)
    result.null_keys += chunk.filter(key.is_null() | cursor.is_null()).height
    ahead = chunk.filter(cursor > source_now)
    if ahead.height:
        result.rows_ahead += ahead.height
        lead = (ahead[table.cursor].max() - source_now).total_seconds()  # type: ignore[operator]
        result.max_seconds_ahead = max(result.max_seconds_ahead, lead)
    result.spool.add(chunk)


def ingest_table(
    cursor,
    zone: LakeZone,
    table: SourceTable,
    *,
    source_now: dt.datetime,
    lookback: dt.timedelta,
    chunk_rows: int,
    described: SourceDescription | None = None,
    stop: threading.Event | None = None,
) -> IngestResult:
    """Extract the table's new row versions into a spool (the caller commits it: one commit per run).
    `described`: the table's entry of `describe_source` (looked up here when not given); `stop`, once set,
    ends the extraction at its next record batch."""
    started = time.perf_counter()
    extra, retyped = checked_columns(table, described or describe_source(cursor, [table])[table.name])
    previous = zone.last_commit(table.name).get("watermark")
    since = dt.datetime.fromisoformat(previous) - lookback if previous else None
    result = IngestResult(
        table.name, Spool(), previous, previous, since and since.isoformat(), source_now.isoformat(), extra, retyped
    )
    newest: list[dt.datetime] = [dt.datetime.fromisoformat(previous)] if previous else []
    seen: pl.DataFrame | None = None  # read once the source returns rows (a quiet table costs no lake read)
    try:
        since_text = since.strftime(STAMP_FORMAT) if since else None
        for chunk in extract_chunks(cursor, table, extra, since_text, chunk_rows, stop):
            if since is not None and seen is None and chunk.height:
                seen = ingested_since(zone, table, since)
            if seen is not None and seen.height:
                new = chunk.join(seen, on=[table.primary_key, table.cursor], how="anti")
                result.skipped_duplicates += chunk.height - new.height
                chunk = new
            if chunk.height:
                newest.append(chunk[table.cursor].max())  # type: ignore[arg-type]
                _add_chunk(result, chunk, table, source_now)
    except BaseException:
        result.spool.close()
        raise
    if result.rows:
        # Never past the source's own clock: a row stamped ahead must not hide later, correctly stamped rows.
        result.watermark = min(max(newest), source_now).isoformat()
    result.seconds = time.perf_counter() - started
    return result


def snapshot_ingester(
    cursor, zone: LakeZone, tables: list[SourceTable], *, lookback: dt.timedelta, chunk_rows: int
) -> Callable[[SourceTable, threading.Event], IngestResult]:
    """`ingest(table, stop)` for the tables of one snapshot: the source clock and the tables' descriptions
    are read once, as the snapshot's first statements."""
    source_now = source_clock(cursor)
    described = describe_source(cursor, tables)

    def ingest(table: SourceTable, stop: threading.Event) -> IngestResult:
        return ingest_table(
            cursor,
            zone,
            table,
            source_now=source_now,
            lookback=lookback,
            chunk_rows=chunk_rows,
            described=described[table.name],
            stop=stop,
        )

    return ingest


# What makes one table's ingestion fail while the others go on (see ingest_ahead).
TABLE_ERRORS = (SchemaDriftError, SourcePermissionError, ZoneDataError)


def ingest_ahead(
    tables: list[SourceTable], ingest: Callable[[SourceTable, threading.Event], IngestResult]
) -> Iterator[tuple[SourceTable, IngestResult | Exception]]:
    """`ingest(table, stop)` of each table in order, run in a worker thread one table ahead of the caller: the
    next table is read from the source (and its ingested versions from the lake) while the caller commits the
    one before and Dagster records its events, which take about as long as a small table's read. Both sides
    spend most of that time outside Python's lock (ADBC, Polars, delta-rs).

    One table at a time uses the snapshot's cursor. A table's own failure (TABLE_ERRORS) is handed over in
    place of its result, in order; any other error is raised. Closed early (the run failed or is being
    terminated), the generator sets `stop`, waits for the table in hand (it ends at its next record batch)
    and discards its rows, so the caller may end the snapshot right after."""
    if not tables:
        return
    stop = threading.Event()
    with ThreadPoolExecutor(1, thread_name_prefix="totesys-ingest") as worker:
        pending = worker.submit(ingest, tables[0], stop)
        try:
            for position, table in enumerate(tables):
                try:
                    outcome: IngestResult | Exception = pending.result()
                except TABLE_ERRORS as err:
                    outcome = err
                following = tables[position + 1] if position + 1 < len(tables) else None
                pending = worker.submit(ingest, following, stop) if following is not None else None
                yield table, outcome
        finally:
            if pending is not None:
                stop.set()
                with contextlib.suppress(Exception):
                    pending.result().spool.close()
