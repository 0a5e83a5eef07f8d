"""Warehouse assets: one per star-schema table, loaded into PostgreSQL from the processed zone (through its IO
manager: each asset receives its processed table as a `LakeTable` and loads the commits not yet loaded).

Each table's reconciliation check is evaluated in the same step, right after the load (or alone, when a run
selects only the check): one step per table, and no second connection or table lookup for the check."""

import dagster as dg

from totesys_platform.catalog import SOURCE_TABLES, WAREHOUSE_TABLES, WarehouseTable
from totesys_platform.columns import OWNERS, table_metadata
from totesys_platform.processed.assets import processed_key
from totesys_platform.raw.checks import raw_key
from totesys_platform.resources.io_managers import LakeTable
from totesys_platform.resources.lake import LakeZone, OldLayoutError, ZoneDataError
from totesys_platform.resources.postgres import PostgresResource, WarehouseConfig
from totesys_platform.warehouse.checks import (
    reconciliation_check_result,
    reconciliation_check_spec,
    warehouse_key,
)
from totesys_platform.warehouse.deletions import SCHEMA as DELETIONS_SCHEMA
from totesys_platform.warehouse.deletions import TABLE as DELETIONS_TABLE
from totesys_platform.warehouse.deletions import load_deletions
from totesys_platform.warehouse.load import (
    LoadResult,
    ReferentialIntegrityError,
    WarehousePermissionError,
    ensure_warehouse,
    load_table,
)

__all__ = ["WarehouseConfig", "build_warehouse_assets", "warehouse_key"]

WAREHOUSE_GROUP = "warehouse"
LOADS = {  # how each kind of table is loaded
    "facts": "append new versions (a version corrected at the source: in place)",
    "dimension": "upsert latest",
    "large_dimension": "upsert latest",
    "history": "upsert states, delete ended ones",
    "calendar": "append new days",
}


# Errors a retry cannot help: it would read the same bytes or miss the same dimension rows.
PERMANENT_LOAD_ERRORS = (ZoneDataError, OldLayoutError, ReferentialIntegrityError, WarehousePermissionError)


def load_into_warehouse(conn, processed: LakeTable, table: WarehouseTable, schema: str, warehouse_db) -> LoadResult:
    """The table's new processed commits loaded (the warehouse's tables made first, once a run); a permanent
    error fails the step at once, without retries."""
    try:
        warehouse_db.once_per_run(f"warehouse tables in {schema}", lambda c: ensure_warehouse(c, schema), conn)
        return load_table(conn, processed, table, schema)
    except PERMANENT_LOAD_ERRORS as permanent:
        raise dg.Failure(description=str(permanent), allow_retries=False) from permanent


def load_metadata(result: LoadResult, processed: LakeTable, table: WarehouseTable, schema: str) -> dict:
    return {
        "dagster/row_count": result.table_rows,
        "rows_written": result.inserted,
        "rows_staged": result.staged_rows,
        "loaded_after_delta_version": -1 if result.from_version is None else result.from_version,
        "loaded_delta_version": -1 if result.to_version is None else result.to_version,
        "processed_table": dg.MetadataValue.path(processed.uri),
        "table": f"{schema}.{table.name}",
        "dagster/table_name": f"{schema}.{table.name}",
    }


def build_warehouse_asset(
    table: WarehouseTable,
    *,
    freshness_policy: dg.FreshnessPolicy | None = None,
    retry_policy: dg.RetryPolicy | None = None,
) -> dg.AssetsDefinition:
    key = warehouse_key(table.name)
    checks = [reconciliation_check_spec(table)] if table.build != "calendar" else []

    @dg.multi_asset(
        name=f"warehouse__{table.name}",
        specs=[
            dg.AssetSpec(
                key,
                deps=[processed_key(table.name), *(warehouse_key(d) for d in table.referenced_dimensions)],
                group_name=WAREHOUSE_GROUP,
                description=f"{table.description} (warehouse table)",
                kinds={"postgres"},
                metadata={
                    "load": LOADS[table.build],
                    "key": ", ".join(table.version_key),
                    **table_metadata(table, processed_key, warehouse=True),
                },
                owners=OWNERS,
                freshness_policy=freshness_policy,
                skippable=True,
            )
        ],
        ins={"processed": dg.AssetIn(key=processed_key(table.name))},  # typed LakeTable by the annotation
        check_specs=checks,
        can_subset=True,  # the reconciliation check may run alone (on demand, from the UI)
        pool="totesys_warehouse",
        retry_policy=retry_policy,
    )
    def _warehouse(
        context: dg.AssetExecutionContext,
        processed: LakeTable,
        warehouse_db: PostgresResource,
        warehouse: WarehouseConfig,
        ingestion_zone: LakeZone,
        processed_zone: LakeZone,
    ):
        schema = warehouse.schema_name
        with warehouse_db.connect() as conn:
            recorded = None  # a check run on its own counts the table
            if key in context.selected_asset_keys:
                result = load_into_warehouse(conn, processed, table, schema, warehouse_db)
                recorded = result.table_rows
                yield dg.MaterializeResult(asset_key=key, metadata=load_metadata(result, processed, table, schema))
            for spec in checks:
                if spec.key in context.selected_asset_check_keys:
                    yield reconciliation_check_result(table, ingestion_zone, processed_zone, conn, schema, recorded)

    return _warehouse


def build_warehouse_assets(**asset_kwargs) -> list[dg.AssetsDefinition]:
    return [build_warehouse_asset(t, **asset_kwargs) for t in WAREHOUSE_TABLES]


def build_source_deletions_asset(
    *, freshness_policy: dg.FreshnessPolicy | None = None, retry_policy: dg.RetryPolicy | None = None
) -> dg.AssetsDefinition:
    @dg.asset(
        key=warehouse_key(DELETIONS_TABLE),
        deps=[raw_key(t.name) for t in SOURCE_TABLES],
        group_name=WAREHOUSE_GROUP,
        kinds={"postgres"},
        retry_policy=retry_policy,
        freshness_policy=freshness_policy,
        description="Source rows found deleted by the reconciliation (table, key, last version, detection time).",
        metadata={"dagster/column_schema": DELETIONS_SCHEMA},
        owners=OWNERS,
    )
    def source_deletions(
        context: dg.AssetExecutionContext,
        warehouse_db: PostgresResource,
        warehouse: WarehouseConfig,
        ingestion_zone: LakeZone,
    ) -> dg.MaterializeResult:
        schema = warehouse.schema_name
        try:
            with warehouse_db.connect() as conn:
                warehouse_db.once_per_run(f"warehouse tables in {schema}", lambda c: ensure_warehouse(c, schema), conn)
                added, rows = load_deletions(conn, ingestion_zone, schema)
        except PERMANENT_LOAD_ERRORS as permanent:
            raise dg.Failure(description=str(permanent), allow_retries=False) from permanent
        context.log.info(f"{added} new source deletions loaded into {schema}.{DELETIONS_TABLE}")
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": rows,
                "rows_written": added,
                "dagster/table_name": f"{schema}.{DELETIONS_TABLE}",
            }
        )

    return source_deletions
