"""Raw assets: one per totesys table, extracted incrementally into its append-only Delta table.

All selected tables are read in one step inside one REPEATABLE READ snapshot, so an order and the
transaction and payment committed with it are always ingested together (no dangling references). Each
table's new rows are one output, committed by the raw IO manager as one Delta commit per run.
"""

import contextlib
import datetime as dt
import threading

import dagster as dg

from totesys_platform.catalog import SOURCE_TABLES, SourceTable
from totesys_platform.raw.checks import (
    clock_check_result,
    keys_check_result,
    raw_check_specs,
    raw_key,
    readable_check_result,
    schema_check_result,
)
from totesys_platform.raw.extract import (
    SchemaDriftError,
    describe_source,
    ingest_ahead,
    ingest_table,
    source_clock,
)
from totesys_platform.resources.io_managers import TableAppend
from totesys_platform.resources.lake import LakeZone
from totesys_platform.resources.postgres import PostgresResource

RAW_GROUP = "raw"


class RawIngestConfig(dg.Config):
    """Per-run overrides; unset means the platform settings."""

    lookback_seconds: int | None = None
    chunk_rows: int | None = None


@contextlib.contextmanager
def source_snapshot(source_db: PostgresResource):
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


def _raw_out(table: SourceTable) -> dg.AssetOut:
    return dg.AssetOut(
        key=raw_key(table.name),
        group_name=RAW_GROUP,
        description=f"{table.description} (ingestion zone: append-only Delta table, one version per row change)",
        kinds={"postgres", "deltalake"},
        metadata={"primary_key": table.primary_key, "cursor": table.cursor},
        io_manager_key="raw_io_manager",
        is_required=False,
        dagster_type=TableAppend,
    )


def selected_checks(context: dg.AssetExecutionContext, *results: dg.AssetCheckResult) -> list[dg.AssetCheckResult]:
    """Only the check results the run selected (a run may select assets without their checks)."""
    selected = context.selected_asset_check_keys
    return [r for r in results if dg.AssetCheckKey(r.asset_key, r.check_name) in selected]


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
        # One ingestion into this zone at a time, whichever instance launched the run (see exclusive()).
        with (
            source_db.exclusive(
                f"totesys_platform raw {ingestion_zone.url}",
                holder=f"totesys raw {context.run_id[:8]}",
                log=context.log.warning,
            ),
            source_snapshot(source_db) as cursor,
        ):
            source_now = source_clock(cursor)
            described = describe_source(cursor, selected)
            ingested: dict[str, int] = {}

            def ingest(table: SourceTable, stop: threading.Event):
                return ingest_table(
                    cursor,
                    ingestion_zone,
                    table,
                    source_now=source_now,
                    lookback=lookback,
                    chunk_rows=config.chunk_rows or chunk_rows,
                    described=described[table.name],
                    stop=stop,
                )

            # The next table is read while this one is committed (see ingest_ahead).
            with contextlib.closing(ingest_ahead(selected, ingest)) as ingestions:
                for table, result in ingestions:
                    if isinstance(result, SchemaDriftError):
                        # The other tables go on; this one's raw asset (and so its downstream) is skipped until
                        # the source is fixed, and the next run then ingests everything since its watermark.
                        context.log.error(str(result))
                        yield from selected_checks(
                            context, schema_check_result(table, result.missing, result.extra, result.retyped)
                        )
                        continue
                    if isinstance(result, Exception):
                        # Permanent (SourcePermissionError, ZoneDataError): retrying cannot help. Like drift, this
                        # table is skipped (its ERROR check alerts, once) and the others go on; the first run
                        # after the fix catches up.
                        context.log.error(str(result))
                        yield from selected_checks(context, readable_check_result(table, str(result)))
                        continue
                    output = TableAppend(
                        result.spool,
                        result.commit_metadata(context.run_id),
                        table.schema,
                        append_only=True,
                        stats_columns=[table.primary_key, table.cursor],  # the dedup read prunes on the cursor
                    )
                    try:
                        yield dg.Output(
                            output,
                            output_name=table.name,
                            metadata={
                                "dagster/row_count": result.rows,
                                "watermark": result.watermark or "",
                                "previous_watermark": result.previous_watermark or "",
                                "source_clock": result.source_now,
                                "rows_ahead_of_source_clock": result.rows_ahead,
                                "lookback_seconds": lookback.total_seconds(),
                                "re_read_from": result.since or "(full extract)",
                                "duplicates_skipped": result.skipped_duplicates,
                                "new_source_columns": ", ".join(result.extra_columns),
                                "extraction_seconds": round(result.seconds, 3),
                            },
                        )
                    finally:
                        result.spool.close()
                    ingested[table.name] = result.rows
                    yield from selected_checks(
                        context,
                        readable_check_result(table, None),
                        schema_check_result(table, [], result.extra_columns, result.retyped_columns),
                        keys_check_result(table, result),
                        clock_check_result(table, result),
                    )
        # One line for the step (each table's figures are in its materialisation's metadata).
        changed = ", ".join(f"{name} {rows}" for name, rows in ingested.items() if rows) or "none"
        context.log.info(f"{sum(ingested.values())} new row versions from {len(ingested)} tables ({changed})")

    return raw_totesys_tables
