"""Raw assets: one per totesys table, extracted incrementally into its append-only Delta table.

All selected tables are read in one step inside one REPEATABLE READ snapshot, so an order and the
transaction and payment committed with it are always ingested together (no dangling references). Each
table's new rows are one output, committed by the raw IO manager as one Delta commit per run.
"""

import contextlib
import datetime as dt

import dagster as dg

from totesys_platform.catalog import SOURCE_TABLES, SourceTable
from totesys_platform.columns import OWNERS, source_schema
from totesys_platform.raw.checks import (
    clock_check_result,
    keys_check_result,
    raw_check_specs,
    raw_key,
    readable_check_result,
    schema_check_result,
)
from totesys_platform.raw.extract import (
    IngestResult,
    SchemaDriftError,
    ingest_ahead,
    snapshot_ingester,
    source_snapshot,
)
from totesys_platform.resources.io_managers import TableAppend
from totesys_platform.resources.lake import LakeZone
from totesys_platform.resources.postgres import PostgresResource

RAW_GROUP = "raw"


class RawIngestConfig(dg.Config):
    """Per-run overrides; unset means the platform settings."""

    lookback_seconds: int | None = None
    chunk_rows: int | None = None


def _raw_out(table: SourceTable) -> dg.AssetOut:
    return dg.AssetOut(
        key=raw_key(table.name),
        group_name=RAW_GROUP,
        description=f"{table.description} (ingestion zone: append-only Delta table, one version per row change)",
        kinds={"postgres", "deltalake"},
        metadata={
            "primary_key": table.primary_key,
            "cursor": table.cursor,
            "dagster/column_schema": source_schema(table),
        },
        owners=OWNERS,
        io_manager_key="raw_io_manager",
        is_required=False,
        dagster_type=TableAppend,
    )


def selected_checks(context: dg.AssetExecutionContext, *results: dg.AssetCheckResult) -> list[dg.AssetCheckResult]:
    """Only the check results the run selected (a run may select assets without their checks)."""
    selected = context.selected_asset_check_keys
    return [r for r in results if dg.AssetCheckKey(r.asset_key, r.check_name) in selected]


def ingest_metadata(result: IngestResult, lookback: dt.timedelta) -> dict:
    return {
        "rows_written": result.rows,
        "watermark": result.watermark or "",
        "previous_watermark": result.previous_watermark or "",
        "source_clock": result.source_now,
        "rows_ahead_of_source_clock": result.rows_ahead,
        "lookback_seconds": lookback.total_seconds(),
        "re_read_from": result.since or "(full extract)",
        "duplicates_skipped": result.skipped_duplicates,
        "new_source_columns": ", ".join(result.extra_columns),
        "extraction_seconds": round(result.seconds, 3),
    }


def ingested_events(context: dg.AssetExecutionContext, table: SourceTable, result: IngestResult, lookback):
    """The table's output (committed by the raw IO manager: one Delta commit) and its checks' results."""
    output = TableAppend(
        result.spool,
        result.commit_metadata(context.run_id),
        table.schema,
        append_only=True,
        stats_columns=[table.primary_key, table.cursor],  # the dedup read prunes on the cursor
    )
    try:
        yield dg.Output(output, output_name=table.name, metadata=ingest_metadata(result, lookback))
    finally:
        result.spool.close()
    yield from selected_checks(
        context,
        readable_check_result(table, None),
        schema_check_result(table, [], result.extra_columns, result.retyped_columns),
        keys_check_result(table, result),
        clock_check_result(table, result),
    )


def table_events(context: dg.AssetExecutionContext, table: SourceTable, result, lookback: dt.timedelta):
    """What a table's ingestion yields. A table that failed on its own (schema drift; a lost privilege or an
    unreadable zone object, which retrying cannot help) yields no output, so it and its downstream are
    skipped, and its ERROR check alerts once; the other tables go on, and the first run after the fix
    ingests everything since the table's watermark."""
    if isinstance(result, SchemaDriftError):
        context.log.error(str(result))
        yield from selected_checks(context, schema_check_result(table, result.missing, result.extra, result.retyped))
    elif isinstance(result, Exception):
        context.log.error(str(result))
        yield from selected_checks(context, readable_check_result(table, str(result)))
    else:
        yield from ingested_events(context, table, result, lookback)


@contextlib.contextmanager
def locked_snapshot(context: dg.AssetExecutionContext, source_db: PostgresResource, zone: LakeZone):
    """The source snapshot, held while no other run ingests into this zone, whichever instance launched it
    (see PostgresResource.exclusive)."""
    with (
        source_db.exclusive(
            f"totesys_platform raw {zone.url}", holder=f"totesys raw {context.run_id[:8]}", log=context.log.warning
        ),
        source_snapshot(source_db) as cursor,
    ):
        yield cursor


def build_raw_assets(
    *, lookback_seconds: int, chunk_rows: int, retry_policy: dg.RetryPolicy | None = None
) -> dg.AssetsDefinition:
    @dg.multi_asset(
        name="raw_totesys_tables",
        outs={t.name: _raw_out(t) for t in SOURCE_TABLES},
        retry_policy=retry_policy,
        can_subset=True,
        check_specs=[spec for t in SOURCE_TABLES for spec in raw_check_specs(t)],
        pool="totesys_source",
        description="Extract new row versions of the selected totesys tables, in one consistent snapshot.",
    )
    def raw_totesys_tables(
        context: dg.AssetExecutionContext,
        config: RawIngestConfig,
        source_db: PostgresResource,
        ingestion_zone: LakeZone,
    ):
        ingestion_zone.check_reachable()
        selected = [t for t in SOURCE_TABLES if raw_key(t.name) in context.selected_asset_keys]
        ingestion_zone.preload(t.name for t in selected)  # loaded while the snapshot opens
        lookback = dt.timedelta(seconds=config.lookback_seconds or lookback_seconds)
        ingested: dict[str, int] = {}
        with locked_snapshot(context, source_db, ingestion_zone) as cursor:
            chunk = config.chunk_rows or chunk_rows
            ingest = snapshot_ingester(cursor, ingestion_zone, selected, lookback=lookback, chunk_rows=chunk)
            # The next table is read while this one is committed (see ingest_ahead).
            with contextlib.closing(ingest_ahead(selected, ingest)) as ingestions:
                for table, result in ingestions:
                    yield from table_events(context, table, result, lookback)
                    if not isinstance(result, Exception):
                        ingested[table.name] = result.rows
        changed = ", ".join(f"{name} {rows}" for name, rows in ingested.items() if rows) or "none"
        context.log.info(f"{sum(ingested.values())} new row versions from {len(ingested)} tables ({changed})")

    return raw_totesys_tables
