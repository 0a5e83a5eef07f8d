"""Processed assets: the star schema as immutable Parquet in the processed zone.

Facts and large dimensions are built batch by batch: each new raw batch becomes one processed file
with the same time-ordered name, so the latest processed file says how far the raw zone has been
consumed, and the work per run is proportional to the new batches. Small dimensions are rebuilt as a
full snapshot from their sources' row versions whenever a source has a new batch. dim_date covers the
dates of the fact files in whole calendar years, and a year ahead of today.
"""

import datetime as dt

import dagster as dg
import polars as pl

from totesys_platform.assets.raw import raw_key
from totesys_platform.catalog import WAREHOUSE_TABLES, WAREHOUSE_TABLES_BY_NAME, WarehouseTable
from totesys_platform.resources.lake import LakeZone
from totesys_platform.transforms.star import (
    build_dimension,
    build_facts,
    calendar_years,
    date_span,
    dim_date,
)

PROCESSED_GROUP = "processed"
FACT_TABLES = tuple(t for t in WAREHOUSE_TABLES if t.is_fact)


def processed_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(["processed", table])


def quarantine_dataset(table: str) -> str:
    return f"quarantine/{table}"


def mirrored(key: str, dataset: str) -> str:
    """The same time-ordered file name under another dataset."""
    return "/".join([dataset, *key.split("/")[-4:]])


def table_schema(frame: pl.DataFrame) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(name, str(dtype)) for name, dtype in frame.schema.items()])


def dimension_keys(zone: LakeZone, table: WarehouseTable) -> dict[str, pl.Series]:
    """Keys of the snapshot dimensions a fact references, for the missing-dimension rule."""
    keys = {}
    for name in table.referenced_dimensions:
        dim = WAREHOUSE_TABLES_BY_NAME[name]
        latest = zone.latest_key(name) if dim.build == "snapshot" else None
        if latest:
            keys[name] = zone.read([latest], columns=[dim.key])[dim.key]  # type: ignore[index]
    return keys


def process_batchwise(table: WarehouseTable, ingestion: LakeZone, processed: LakeZone) -> dict:
    """Turn every raw batch not yet processed into one processed (and maybe one quarantine) file."""
    source = table.source
    done = processed.latest_key(table.name)
    pending = ingestion.list_keys(source.name, after=mirrored(done, source.name) if done else None)
    keys = dimension_keys(processed, table) if table.is_fact else {}
    rows = quarantined = 0
    written = []
    schema = None
    for raw_key_ in pending:
        raw = ingestion.read([raw_key_])
        if table.is_fact:
            batch = build_facts(raw, table, keys)
            frame, bad = batch.facts, batch.quarantine
        else:
            frame, bad = build_dimension(table, {source.name: raw}), None
        if bad is not None and bad.height:
            # Written first and under a deterministic name: a re-run after a crash finds it in place.
            processed.write(
                mirrored(raw_key_, quarantine_dataset(table.name)), [bad], {"source_batch": raw_key_}, exist_ok=True
            )
            quarantined += bad.height
        out = mirrored(raw_key_, table.name)
        processed.write(out, [frame], {"source_batch": raw_key_, "rows_in": raw.height})
        rows += frame.height
        written.append(processed.uri(out))
        schema = frame
    return {
        "dagster/row_count": rows,
        "quarantined_rows": quarantined,
        "raw_batches_read": len(pending),
        "files_written": "\n".join(written),
        **({"dagster/column_schema": table_schema(schema)} if schema is not None else {}),
    }


def process_snapshot(table: WarehouseTable, ingestion: LakeZone, processed: LakeZone, run_id: str) -> dict:
    """Rebuild a small dimension from its sources' row versions when any source has a new batch."""
    latest = processed.latest_key(table.name)
    consumed = processed.read_metadata(latest).get("inputs", {}) if latest else {}
    inputs = {name: ingestion.latest_key(name) for name in table.sources}
    if latest and inputs == consumed:
        return {"dagster/row_count": 0, "snapshot": processed.uri(latest), "changed": False}
    sources = {}
    for name in table.sources:
        frame = ingestion.read(ingestion.list_keys(name))
        if frame is None:
            raise RuntimeError(f"processed/{table.name}: no raw batches for {name!r} yet; materialise raw/{name} first")
        sources[name] = frame
    snapshot = build_dimension(table, sources)
    key = processed.new_key(table.name, run_id)
    processed.write(key, [snapshot], {"inputs": inputs})
    return {
        "dagster/row_count": snapshot.height,
        "snapshot": processed.uri(key),
        "changed": True,
        "dagster/column_schema": table_schema(snapshot),
    }


# dim_date runs ahead of the data: orders agreed for next year find their dates already there.
CALENDAR_AHEAD = dt.timedelta(days=365)


def process_calendar(table: WarehouseTable, processed: LakeZone, run_id: str) -> dict:
    """Extend dim_date to whole years covering every date in the new fact files, and a year ahead of today."""
    ahead = dt.date.today() + CALENDAR_AHEAD
    latest = processed.latest_key(table.name)
    previous = processed.read_metadata(latest) if latest else {}
    consumed = previous.get("inputs", {})
    spans, inputs = [], {}
    for fact in FACT_TABLES:
        new = processed.list_keys(fact.name, after=consumed.get(fact.name))
        inputs[fact.name] = new[-1] if new else consumed.get(fact.name)
        dates = [c.name for c in fact.data_columns if c.pg_type == "date"]
        frame = processed.read(new, columns=dates)
        span = date_span(frame, fact) if frame is not None else None
        if span:
            spans.append(span)
    if inputs == consumed and previous.get("end", "") >= calendar_years(ahead, ahead)[1].isoformat():
        return {"dagster/row_count": 0, "changed": False}
    if "start" in previous:
        spans.append((dt.date.fromisoformat(previous["start"]), dt.date.fromisoformat(previous["end"])))
    if not spans:
        return {"dagster/row_count": 0, "changed": False}
    start, end = calendar_years(min(s[0] for s in spans), max(ahead, *(s[1] for s in spans)))
    calendar = dim_date(start, end)
    key = processed.new_key(table.name, run_id)
    processed.write(key, [calendar], {"inputs": inputs, "start": start.isoformat(), "end": end.isoformat()})
    return {
        "dagster/row_count": calendar.height,
        "snapshot": processed.uri(key),
        "first_date": start.isoformat(),
        "last_date": end.isoformat(),
        "changed": True,
    }


def _deps(table: WarehouseTable) -> list[dg.AssetKey]:
    if table.build == "calendar":
        return [processed_key(t.name) for t in FACT_TABLES]
    deps = [raw_key(name) for name in table.sources]
    if table.is_fact:
        deps += [
            processed_key(d) for d in table.referenced_dimensions if WAREHOUSE_TABLES_BY_NAME[d].build == "snapshot"
        ]
    return deps


def build_processed_asset(table: WarehouseTable, **asset_kwargs) -> dg.AssetsDefinition:
    @dg.asset(
        key=processed_key(table.name),
        deps=_deps(table),
        group_name=PROCESSED_GROUP,
        description=f"{table.description} (processed zone, Parquet)",
        kinds={"polars", "parquet"},
        metadata={"build": table.build, "natural_key": ", ".join(table.version_key)},
        pool="totesys_processed",
        **asset_kwargs,
    )
    def _processed(
        context: dg.AssetExecutionContext, ingestion_zone: LakeZone, processed_zone: LakeZone
    ) -> dg.MaterializeResult:
        processed_zone.check_reachable()
        if table.build in ("facts", "delta"):
            metadata = process_batchwise(table, ingestion_zone, processed_zone)
        elif table.build == "snapshot":
            metadata = process_snapshot(table, ingestion_zone, processed_zone, context.run_id)
        else:
            metadata = process_calendar(table, processed_zone, context.run_id)
        context.log.info(f"processed/{table.name}: {metadata['dagster/row_count']} rows")
        return dg.MaterializeResult(metadata=metadata)

    return _processed


def build_processed_assets(**asset_kwargs) -> list[dg.AssetsDefinition]:
    return [build_processed_asset(t, **asset_kwargs) for t in WAREHOUSE_TABLES]
