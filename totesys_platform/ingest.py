"""Incremental, typed extraction of one totesys table into an immutable ingestion-zone batch.

The guarantee: every row version (primary key + last_updated) committed at the source is ingested
exactly once, provided it commits within `lookback` of the newest last_updated already ingested. Each
run re-reads rows with last_updated > watermark - lookback (the watermark is the newest last_updated
in the zone, kept in each batch's footer, so it survives a wiped DAGSTER_HOME) and drops the versions
the zone already holds. Extraction streams Arrow record batches (ADBC, COPY under the hood) in chunks,
so memory stays bounded whatever the table size.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import polars as pl

from totesys_platform.catalog import SourceTable
from totesys_platform.resources.lake import LakeZone

STAMP_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


class SchemaDriftError(RuntimeError):
    """A catalog column is missing at the source (new columns are kept, not an error)."""

    def __init__(self, message: str, missing: list[str], extra: list[str], retyped: list[str]):
        super().__init__(message)
        self.missing, self.extra, self.retyped = missing, extra, retyped


@dataclass
class IngestResult:
    table: str
    key: str | None
    rows: int
    watermark: str | None
    previous_watermark: str | None
    since: str | None
    extra_columns: list[str] = field(default_factory=list)
    retyped_columns: list[str] = field(default_factory=list)
    null_keys: int = 0  # rows of the batch with a null primary key or cursor
    skipped_duplicates: int = 0
    seconds: float = 0.0


def source_columns(cursor, table: str) -> dict[str, str]:
    """The table's columns at the source, in physical order, with their information_schema type."""
    cursor.execute(
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
        parameters=(table,),
    )
    return dict(cursor.fetchall())


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


def select_sql(table: SourceTable, extra: list[str], incremental: bool) -> str:
    """SELECT of the catalog columns (cast where Arrow needs it) plus any new columns as text.

    Identifiers come from the catalog or from information_schema, always quoted; the cursor value
    is bound through set_config, never formatted into the statement.
    """
    parts = [f'"{c.name}"::{c.type.select_cast}' if c.type.select_cast else f'"{c.name}"' for c in table.columns]
    parts += ['"{}"::text'.format(name.replace('"', '""')) for name in extra]
    where = f" WHERE \"{table.cursor}\" > current_setting('totesys.since')::timestamp" if incremental else ""
    return f'SELECT {", ".join(parts)} FROM "{table.name}"{where}'  # noqa: S608 - catalog identifiers


def typed(frame: pl.DataFrame, table: SourceTable) -> pl.DataFrame:
    """Cast to the catalog's types (numeric text -> Decimal(10,2)); new columns stay text."""
    return frame.with_columns(pl.col(name).cast(dtype) for name, dtype in table.schema.items())


def extract_chunks(
    cursor, table: SourceTable, extra: list[str], since: str | None, chunk_rows: int
) -> Iterator[pl.DataFrame]:
    if since is not None:
        cursor.execute("SELECT set_config('totesys.since', $1, true)", parameters=(since,))
        cursor.fetchall()
    cursor.execute(select_sql(table, extra, incremental=since is not None))
    pending: list[pl.DataFrame] = []
    pending_rows = 0
    # ADBC streams record batches of about 16 MB; they are regrouped into chunks of chunk_rows.
    for batch in cursor.fetch_record_batch():
        frame = pl.from_arrow(batch)
        pending.append(frame)  # type: ignore[arg-type]
        pending_rows += frame.height
        if pending_rows >= chunk_rows:
            yield from (typed(part, table) for part in pl.concat(pending).iter_slices(chunk_rows))
            pending, pending_rows = [], 0
    if pending:
        yield from (typed(part, table) for part in pl.concat(pending).iter_slices(chunk_rows))


def ingested_since(zone: LakeZone, table: SourceTable, since: dt.datetime) -> pl.DataFrame:
    """(key, cursor) of row versions already in the zone with cursor >= since.

    Walks batches from the newest back and stops at the first whose running watermark is older
    than `since`: every earlier batch only holds older versions.
    """
    keys = []
    for key in zone.keys_newest_first(table.name):
        watermark = zone.read_metadata(key).get("watermark")
        if watermark is None or dt.datetime.fromisoformat(watermark) < since:
            break
        keys.append(key)
    frame = zone.read(list(reversed(keys)), columns=[table.primary_key, table.cursor])
    if frame is None:
        return pl.DataFrame(schema={table.primary_key: pl.Int32, table.cursor: pl.Datetime("us")})
    return frame.filter(pl.col(table.cursor) >= since)


def ingest_table(
    cursor, zone: LakeZone, table: SourceTable, *, run_id: str, lookback: dt.timedelta, chunk_rows: int
) -> IngestResult:
    """Extract the table's new row versions into one new batch (no batch when there are none)."""
    started = time.perf_counter()
    actual = source_columns(cursor, table.name)
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
    latest = zone.latest_key(table.name)
    previous = zone.read_metadata(latest).get("watermark") if latest else None
    since_dt = dt.datetime.fromisoformat(previous) - lookback if previous else None
    seen = ingested_since(zone, table, since_dt) if since_dt else None
    result = IngestResult(
        table.name, None, 0, previous, previous, since_dt.isoformat() if since_dt else None, extra, retyped
    )
    newest: list[dt.datetime] = [dt.datetime.fromisoformat(previous)] if previous else []

    def fresh_chunks() -> Iterator[pl.DataFrame]:
        for chunk in extract_chunks(
            cursor, table, extra, since_dt.strftime(STAMP_FORMAT) if since_dt else None, chunk_rows
        ):
            if seen is not None and seen.height:
                before = chunk.height
                chunk = chunk.join(seen, on=[table.primary_key, table.cursor], how="anti")
                result.skipped_duplicates += before - chunk.height
            if chunk.height:
                result.null_keys += chunk.filter(
                    pl.col(table.primary_key).is_null() | pl.col(table.cursor).is_null()
                ).height
                newest.append(chunk[table.cursor].max())  # type: ignore[arg-type]
                yield chunk

    key = zone.new_key(table.name, run_id)
    rows = zone.write(
        key,
        fresh_chunks(),
        metadata=lambda: {
            "watermark": max(newest).isoformat(),
            "previous_watermark": previous,
            "run_id": run_id,
            "extra_columns": extra,
            "retyped_columns": retyped,
        },
    )
    if rows:
        result.key, result.rows, result.watermark = key, rows, max(newest).isoformat()
    result.seconds = time.perf_counter() - started
    return result
