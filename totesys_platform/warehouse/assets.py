"""Warehouse assets: one per star-schema table, loaded into PostgreSQL from the processed zone (through its IO
manager: each asset receives its processed table as a `LakeTable` and loads the commits not yet loaded)."""

import dagster as dg

from totesys_platform.catalog import WAREHOUSE_TABLES, WarehouseTable
from totesys_platform.processed.assets import processed_key
from totesys_platform.resources.io_managers import LakeTable
from totesys_platform.resources.lake import OldLayoutError, ZoneDataError
from totesys_platform.resources.postgres import PostgresResource
from totesys_platform.warehouse.load import ReferentialIntegrityError, ensure_warehouse, load_table

WAREHOUSE_GROUP = "warehouse"


def warehouse_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(["warehouse", table])


class WarehouseConfig(dg.ConfigurableResource):
    """Where the star schema lives in the warehouse database."""

    schema_name: str = "public"


def build_warehouse_asset(table: WarehouseTable, **asset_kwargs) -> dg.AssetsDefinition:
    @dg.asset(
        key=warehouse_key(table.name),
        ins={"processed": dg.AssetIn(key=processed_key(table.name), dagster_type=LakeTable)},
        deps=[warehouse_key(d) for d in table.referenced_dimensions],
        group_name=WAREHOUSE_GROUP,
        description=f"{table.description} (warehouse table)",
        kinds={"postgres"},
        metadata={
            "load": "append new versions" if table.is_fact else "upsert latest",
            "key": ", ".join(table.version_key),
        },
        pool="totesys_warehouse",
        **asset_kwargs,
    )
    def _warehouse(
        context: dg.AssetExecutionContext,
        processed: LakeTable,
        warehouse_db: PostgresResource,
        warehouse: WarehouseConfig,
    ) -> dg.MaterializeResult:
        with warehouse_db.connect() as conn:
            ensure_warehouse(conn, warehouse.schema_name)
            conn.commit()
            try:
                result = load_table(conn, processed, table, warehouse.schema_name)
            except (ZoneDataError, OldLayoutError, ReferentialIntegrityError) as permanent:
                # A retry would read the same bytes or miss the same dimension rows: fail at once.
                raise dg.Failure(description=str(permanent), allow_retries=False) from permanent
        loaded = (
            "nothing new" if result.to_version is None else f"Delta versions {result.from_version}..{result.to_version}"
        )
        context.log.info(f"warehouse/{table.name}: {result.inserted} rows written ({loaded})")
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": result.table_rows,
                "rows_written": result.inserted,
                "rows_staged": result.staged_rows,
                "loaded_after_delta_version": -1 if result.from_version is None else result.from_version,
                "loaded_delta_version": -1 if result.to_version is None else result.to_version,
                "processed_table": dg.MetadataValue.path(processed.uri),
                "table": f"{warehouse.schema_name}.{table.name}",
                "dagster/table_name": f"{warehouse.schema_name}.{table.name}",
            }
        )

    return _warehouse


def build_warehouse_assets(**asset_kwargs) -> list[dg.AssetsDefinition]:
    return [build_warehouse_asset(t, **asset_kwargs) for t in WAREHOUSE_TABLES]
