"""Warehouse assets: one per star-schema table, loaded into PostgreSQL from the processed zone (through its IO
manager: each asset receives its processed table as a `LakeTable` and loads the commits not yet loaded).

Each table's reconciliation check is evaluated in the same step, right after the load (or alone, when a run
selects only the check): one step per table, and no second connection or table lookup for the check."""

import dagster as dg

from totesys_platform.catalog import WAREHOUSE_TABLES, WarehouseTable
from totesys_platform.processed.assets import processed_key
from totesys_platform.resources.io_managers import LakeTable
from totesys_platform.resources.lake import LakeZone, OldLayoutError, ZoneDataError
from totesys_platform.resources.postgres import PostgresResource, WarehouseConfig
from totesys_platform.warehouse.checks import (
    reconciliation_check_result,
    reconciliation_check_spec,
    warehouse_key,
)
from totesys_platform.warehouse.load import (
    ReferentialIntegrityError,
    WarehousePermissionError,
    ensure_warehouse,
    load_table,
)

__all__ = ["WarehouseConfig", "build_warehouse_assets", "warehouse_key"]

WAREHOUSE_GROUP = "warehouse"


# (run id, schema) whose tables a step of the run found or made: the next steps of the run skip the look.
_WAREHOUSE_READY: set[tuple[str, str]] = set()


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
                    "load": "append new versions" if table.is_fact else "upsert latest",
                    "key": ", ".join(table.version_key),
                },
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
        with warehouse_db.connect() as conn:
            recorded = None  # a check run on its own counts the table
            if key in context.selected_asset_keys:
                try:
                    if (context.run_id, warehouse.schema_name) not in _WAREHOUSE_READY:
                        ensure_warehouse(conn, warehouse.schema_name)
                        conn.commit()
                        _WAREHOUSE_READY.add((context.run_id, warehouse.schema_name))
                    result = load_table(conn, processed, table, warehouse.schema_name)
                except (
                    ZoneDataError,
                    OldLayoutError,
                    ReferentialIntegrityError,
                    WarehousePermissionError,
                ) as permanent:
                    # A retry would read the same bytes or miss the same dimension rows: fail at once.
                    raise dg.Failure(description=str(permanent), allow_retries=False) from permanent
                recorded = result.table_rows
                yield dg.MaterializeResult(
                    asset_key=key,
                    metadata={
                        "dagster/row_count": result.table_rows,
                        "rows_written": result.inserted,
                        "rows_staged": result.staged_rows,
                        "loaded_after_delta_version": -1 if result.from_version is None else result.from_version,
                        "loaded_delta_version": -1 if result.to_version is None else result.to_version,
                        "processed_table": dg.MetadataValue.path(processed.uri),
                        "table": f"{warehouse.schema_name}.{table.name}",
                        "dagster/table_name": f"{warehouse.schema_name}.{table.name}",
                    },
                )
            for spec in checks:
                if spec.key in context.selected_asset_check_keys:
                    yield reconciliation_check_result(
                        table, ingestion_zone, processed_zone, conn, warehouse.schema_name, recorded
                    )

    return _warehouse


def build_warehouse_assets(**asset_kwargs) -> list[dg.AssetsDefinition]:
    return [build_warehouse_asset(t, **asset_kwargs) for t in WAREHOUSE_TABLES]
