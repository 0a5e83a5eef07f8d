"""Raw assets: one per totesys table, extracted incrementally into the immutable ingestion zone.

All selected tables are read in one step inside one REPEATABLE READ snapshot, so an order and the
transaction and payment committed with it are always ingested together (no dangling references).
"""

import contextlib
import datetime as dt

import dagster as dg

from totesys_platform.catalog import SOURCE_TABLES, SourceTable
from totesys_platform.ingest import SchemaDriftError, ingest_table
from totesys_platform.resources.lake import LakeZone
from totesys_platform.resources.postgres import PostgresResource

RAW_GROUP = "raw"


def raw_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(["raw", table])


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


def _raw_spec(table: SourceTable) -> dg.AssetSpec:
    return dg.AssetSpec(
        raw_key(table.name),
        group_name=RAW_GROUP,
        description=f"{table.description} (ingestion zone, Parquet batches)",
        kinds={"postgres", "parquet"},
        metadata={"primary_key": table.primary_key, "cursor": table.cursor},
        skippable=True,
    )


SCHEMA_CHECK = "columns_match_the_catalog"
KEYS_CHECK = "keys_are_not_null"


def _check_specs(table: SourceTable) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(
            SCHEMA_CHECK,
            asset=raw_key(table.name),
            description="Schema drift: the source table's columns against the catalog (missing or retyped: "
            "error; new: warning, kept as text).",
        ),
        dg.AssetCheckSpec(
            KEYS_CHECK,
            asset=raw_key(table.name),
            description=f"Every ingested row has its {table.primary_key} and {table.cursor}.",
        ),
    ]


def schema_check_result(table: SourceTable, missing, extra, retyped) -> dg.AssetCheckResult:
    problems = [
        *(f"missing column {c} (nothing ingested until it is back)" for c in missing),
        *(f"retyped column {c}" for c in retyped),
        *(f"new column {c} (kept as text)" for c in extra),
    ]
    return dg.AssetCheckResult(
        asset_key=raw_key(table.name),
        check_name=SCHEMA_CHECK,
        passed=not problems,
        severity=dg.AssetCheckSeverity.ERROR if missing or retyped else dg.AssetCheckSeverity.WARN,
        description=f"source table {table.name}: " + "; ".join(problems) if problems else "columns match the catalog",
        metadata={
            "missing_columns": ", ".join(missing),
            "retyped_columns": ", ".join(retyped),
            "new_columns": ", ".join(extra),
        },
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
        specs=[_raw_spec(t) for t in SOURCE_TABLES],
        retry_policy=retry_policy,
        can_subset=True,
        check_specs=[spec for t in SOURCE_TABLES for spec in _check_specs(t)],
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
            for table in selected:
                try:
                    result = ingest_table(
                        cursor,
                        ingestion_zone,
                        table,
                        run_id=context.run_id,
                        lookback=lookback,
                        chunk_rows=config.chunk_rows or chunk_rows,
                    )
                except SchemaDriftError as drift:
                    # The other tables go on; this one's raw asset (and so its downstream) is skipped until
                    # the source is fixed, and the next run then ingests everything since its watermark.
                    context.log.error(str(drift))
                    if dg.AssetCheckKey(raw_key(table.name), SCHEMA_CHECK) in context.selected_asset_check_keys:
                        yield schema_check_result(table, drift.missing, drift.extra, drift.retyped)
                    continue
                context.log.info(f"raw/{table.name}: {result.rows} new row versions in {result.seconds:.2f}s")
                yield dg.MaterializeResult(
                    asset_key=raw_key(table.name),
                    metadata={
                        "dagster/row_count": result.rows,
                        "batch_uri": dg.MetadataValue.path(ingestion_zone.uri(result.key)) if result.key else "",
                        "watermark": result.watermark or "",
                        "previous_watermark": result.previous_watermark or "",
                        "lookback_seconds": lookback.total_seconds(),
                        "re_read_from": result.since or "(full extract)",
                        "duplicates_skipped": result.skipped_duplicates,
                        "new_source_columns": ", ".join(result.extra_columns),
                        "extraction_seconds": round(result.seconds, 3),
                    },
                    check_results=selected_checks(
                        context,
                        schema_check_result(table, [], result.extra_columns, result.retyped_columns),
                        dg.AssetCheckResult(
                            asset_key=raw_key(table.name),
                            check_name=KEYS_CHECK,
                            passed=result.null_keys == 0,
                            description=f"{result.null_keys} rows of the new batch lack a key"
                            if result.null_keys
                            else "every new row has its key and cursor",
                            metadata={"rows_with_null_keys": result.null_keys},
                        ),
                    ),
                )

    return raw_totesys_tables
