"""Processed assets: the star schema as Delta tables in the processed zone, one asset per table.

Each asset receives its inputs as `LakeTable` handles from the IO managers, reads only the commits it
has not consumed (see build.py), and returns what to commit; the processed IO manager commits it.
"""

import datetime as dt

import dagster as dg

from totesys_platform.catalog import WAREHOUSE_TABLES, WAREHOUSE_TABLES_BY_NAME, WarehouseTable
from totesys_platform.columns import OWNERS, table_metadata
from totesys_platform.processed.build import (
    BatchRejectedError,
    Outcome,
    process_calendar,
    process_dimension,
    process_facts,
    zone_tables,
)
from totesys_platform.processed.checks import (
    processed_check_specs,
    quality_check_result,
    quarantine_check_result,
)
from totesys_platform.processed.history import process_history
from totesys_platform.raw.checks import raw_key
from totesys_platform.resources.io_managers import LakeTable
from totesys_platform.resources.lake import LakeZone, OldLayoutError, ZoneDataError
from totesys_platform.resources.postgres import PostgresResource

PROCESSED_GROUP = "processed"
FACT_TABLES = tuple(t for t in WAREHOUSE_TABLES if t.is_fact)


def processed_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(["processed", table])


def _inputs(table: WarehouseTable) -> dict[str, dg.AssetKey]:
    """Input name -> upstream asset whose rows this table is built from: the raw sources, or the facts for
    dim_date (each received through its IO manager)."""
    if table.build == "calendar":
        return {t.name: processed_key(t.name) for t in FACT_TABLES}
    return {name: raw_key(name) for name in table.sources}


def looked_up_dimensions(table: WarehouseTable) -> list[str]:
    """The dimensions a fact's quarantine rule checks references against: dependencies whose keys it looks
    up in the processed zone, not inputs (only their key column is read, and only when new rows came)."""
    if not table.is_fact:
        return []
    return [d for d in table.referenced_dimensions if WAREHOUSE_TABLES_BY_NAME[d].build == "dimension"]


def _process(table: WarehouseTable, inputs: dict[str, LakeTable], processed_zone: LakeZone) -> Outcome:
    if table.is_fact:
        dims = [LakeTable(processed_zone, name) for name in looked_up_dimensions(table)]
        return process_facts(table, inputs[table.sources[0]], processed_zone, dims)
    if table.is_dimension:
        return process_dimension(table, inputs, processed_zone)
    if table.is_history:
        return process_history(table, inputs, processed_zone)
    return process_calendar(table, inputs, processed_zone, dt.date.today())


def build_processed_asset(table: WarehouseTable, **asset_kwargs) -> dg.AssetsDefinition:
    key = processed_key(table.name)
    inputs = _inputs(table)

    @dg.asset(
        key=key,
        ins={name: dg.AssetIn(key=upstream, dagster_type=LakeTable) for name, upstream in inputs.items()},
        deps=[processed_key(d) for d in looked_up_dimensions(table)],
        group_name=PROCESSED_GROUP,
        description=f"{table.description} (processed zone, Delta table)",
        kinds={"polars", "deltalake"},
        metadata={
            "build": table.build,
            "natural_key": ", ".join(table.version_key),
            **table_metadata(table, raw_key, warehouse=False),
        },
        owners=OWNERS,
        pool="totesys_processed",
        check_specs=processed_check_specs(table, key),
        io_manager_key="processed_io_manager",
        **asset_kwargs,
    )
    def _processed(
        context: dg.AssetExecutionContext,
        processed_zone: LakeZone,
        warehouse_db: PostgresResource,
        **upstream: LakeTable,
    ):
        processed_zone.check_reachable()
        # This step's tables first, then those of the run's other processed steps, loaded while they run.
        selected = context.job_def.asset_layer.selected_asset_keys
        others = [t for t in WAREHOUSE_TABLES if t is not table and processed_key(t.name) in selected]
        processed_zone.preload([*zone_tables(table), *(name for t in others for name in zone_tables(t))])
        try:
            # One run at a time builds this table's next commit (the lock lives in the warehouse database).
            with warehouse_db.exclusive(
                f"totesys_platform processed {processed_zone.url} {table.name}",
                holder=f"totesys processed/{table.name} {context.run_id[:8]}",
                log=context.log.warning,
            ):
                outcome = _process(table, upstream, processed_zone)
                try:
                    # Nothing new (None) still materialises, so the warehouse step after it confirms it is current.
                    yield dg.Output(outcome.output, metadata=outcome.metadata)
                finally:
                    spool = getattr(outcome.output, "spool", None)
                    if spool is not None:
                        spool.close()
        except BatchRejectedError as rejected:
            yield quality_check_result(table, rejected.results)
            raise dg.Failure(description=str(rejected), allow_retries=False) from rejected
        except (ZoneDataError, OldLayoutError) as unreadable:  # permanent: a retry would read the same bytes
            raise dg.Failure(description=str(unreadable), allow_retries=False) from unreadable
        yield quality_check_result(table, outcome.quality)
        if table.is_fact:
            yield quarantine_check_result(table, outcome.quarantined)

    return _processed


def build_processed_assets(**asset_kwargs) -> list[dg.AssetsDefinition]:
    return [build_processed_asset(t, **asset_kwargs) for t in WAREHOUSE_TABLES]
