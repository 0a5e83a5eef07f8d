"""Processed assets: the star schema as immutable Parquet in the processed zone.

Facts and large dimensions are built batch by batch: each new raw batch becomes one processed file
with the same time-ordered name, so the latest processed file says how far the raw zone has been
consumed, and the work per run is proportional to the new batches. Small dimensions are rebuilt as a
full snapshot from their sources' row versions whenever a source has a new batch. dim_date covers the
dates of the fact files in whole calendar years, and a year ahead of today.
"""

import datetime as dt
from dataclasses import dataclass, field

import dagster as dg
import polars as pl

from totesys_platform.assets.raw import raw_key
from totesys_platform.catalog import WAREHOUSE_TABLES, WAREHOUSE_TABLES_BY_NAME, WarehouseTable
from totesys_platform.resources.lake import LakeZone
from totesys_platform.resources.postgres import PostgresResource
from totesys_platform.transforms.quality import (
    RuleResult,
    evaluate_rules,
    markdown_report,
    markdown_table,
    merge_results,
)
from totesys_platform.transforms.star import (
    QUARANTINE_SCHEMA,
    build_dimension,
    build_facts,
    calendar_years,
    date_span,
    dim_date,
)

PROCESSED_GROUP = "processed"
FACT_TABLES = tuple(t for t in WAREHOUSE_TABLES if t.is_fact)
ROW_GROUP_ROWS = 250_000


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


class BatchRejectedError(RuntimeError):
    """A processed batch broke a blocking quality rule; it was not written, so the warehouse never sees it."""

    def __init__(self, table: WarehouseTable, source: str, results: list[RuleResult]):
        failing = "; ".join(f"{r.rule}: {r.offending} rows" for r in results if r.is_error and r.offending)
        super().__init__(f"processed/{table.name}: the batch from {source} was not written: {failing}")
        self.results = results


@dataclass
class Outcome:
    """What one processed materialisation did: its metadata, quality results and quarantined rows."""

    metadata: dict
    quality: list[RuleResult]
    quarantined: list[pl.DataFrame] = field(default_factory=list)


def checked(table: WarehouseTable, frame: pl.DataFrame, source: str, keys=None) -> list[RuleResult]:
    """The catalog rules on a frame about to be written; errors stop it here (blocking)."""
    results = evaluate_rules(table, frame, keys)
    if any(r.is_error and r.offending for r in results):
        raise BatchRejectedError(table, source, results)
    return results


@dataclass
class BatchResult:
    rows: int = 0
    rows_in: int = 0
    quarantined: list[pl.DataFrame] = field(default_factory=list)
    quality: list[RuleResult] = field(default_factory=list)
    last_frame: pl.DataFrame | None = None


def process_raw_batch(
    table: WarehouseTable, ingestion: LakeZone, processed: LakeZone, raw_key_: str, keys: dict[str, pl.Series]
) -> BatchResult:
    """One raw batch -> one processed file (+ a quarantine file), streamed a row group at a time.

    A raw batch holds one version per key, so its chunks are independent. The quarantine file is written
    just before the processed file is published, under a deterministic name: a re-run after a crash
    between the two finds it in place, and the processed file (the cursor) never exists without it.
    """
    result = BatchResult(quality=evaluate_rules(table, pl.DataFrame(schema=table.schema), keys))

    def chunks():
        for raw in ingestion.iter_batches([raw_key_], batch_rows=ROW_GROUP_ROWS):
            if table.is_fact:
                built = build_facts(raw, table, keys)
                frame, bad = built.facts, built.quarantine
            else:
                frame, bad = build_dimension(table, {table.source.name: raw}), None
            result.quality = merge_results(result.quality, checked(table, frame, raw_key_, keys))
            if bad is not None and bad.height:
                result.quarantined.append(bad)
            result.rows_in += raw.height
            result.last_frame = frame
            yield frame

    def write_quarantine():
        if result.quarantined:
            quarantine_key = mirrored(raw_key_, quarantine_dataset(table.name))
            processed.write(quarantine_key, result.quarantined, {"source_batch": raw_key_}, exist_ok=True)

    # Every raw batch gets its processed file, even an empty one: the file marks the batch as consumed.
    result.rows = processed.write(
        mirrored(raw_key_, table.name),
        chunks(),
        lambda: {"source_batch": raw_key_, "rows_in": result.rows_in},
        before_publish=write_quarantine,
    )
    return result


def process_batchwise(table: WarehouseTable, ingestion: LakeZone, processed: LakeZone) -> Outcome:
    """Turn every raw batch not yet processed into one processed (and maybe one quarantine) file."""
    done = processed.latest_key(table.name)
    pending = ingestion.list_keys(table.source.name, after=mirrored(done, table.source.name) if done else None)
    keys = dimension_keys(processed, table) if table.is_fact else {}
    quality = evaluate_rules(table, pl.DataFrame(schema=table.schema), keys)
    rows, bad_rows, written, schema = 0, [], [], None
    for raw_key_ in pending:
        batch = process_raw_batch(table, ingestion, processed, raw_key_, keys)
        quality = merge_results(quality, batch.quality)
        rows += batch.rows
        bad_rows.extend(batch.quarantined)
        written.append(processed.uri(mirrored(raw_key_, table.name)))
        schema = batch.last_frame if batch.last_frame is not None else schema
    metadata = {
        "dagster/row_count": rows,
        "quarantined_rows": sum(b.height for b in bad_rows),
        "raw_batches_read": len(pending),
        "files_written": "\n".join(written),
        **({"dagster/column_schema": table_schema(schema)} if schema is not None else {}),
    }
    return Outcome(metadata, quality, bad_rows)


def process_snapshot(table: WarehouseTable, ingestion: LakeZone, processed: LakeZone, run_id: str) -> Outcome:
    """Rebuild a small dimension from its sources' row versions when any source has a new batch."""
    latest = processed.latest_key(table.name)
    consumed = processed.read_metadata(latest).get("inputs", {}) if latest else {}
    inputs = {name: ingestion.latest_key(name) for name in table.sources}
    if latest and inputs == consumed:
        in_place = processed.read([latest])
        return Outcome(
            {"dagster/row_count": 0, "snapshot": processed.uri(latest), "changed": False},
            evaluate_rules(table, in_place),  # type: ignore[arg-type]
        )
    sources = {}
    for name in table.sources:
        frame = ingestion.read(ingestion.list_keys(name))
        if frame is None:
            raise RuntimeError(f"processed/{table.name}: no raw batches for {name!r} yet; materialise raw/{name} first")
        sources[name] = frame
    snapshot = build_dimension(table, sources)
    quality = checked(table, snapshot, ", ".join(f"raw/{name}" for name in table.sources))
    key = processed.new_key(table.name, run_id)
    processed.write(key, [snapshot], {"inputs": inputs})
    metadata = {
        "dagster/row_count": snapshot.height,
        "snapshot": processed.uri(key),
        "changed": True,
        "dagster/column_schema": table_schema(snapshot),
    }
    return Outcome(metadata, quality)


# dim_date runs ahead of the data: orders agreed for next year find their dates already there.
CALENDAR_AHEAD = dt.timedelta(days=365)


def process_calendar(table: WarehouseTable, processed: LakeZone, run_id: str) -> Outcome:
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
    unchanged = Outcome(
        {"dagster/row_count": 0, "changed": False}, evaluate_rules(table, pl.DataFrame(schema=table.schema))
    )
    if inputs == consumed and previous.get("end", "") >= calendar_years(ahead, ahead)[1].isoformat():
        return unchanged
    if "start" in previous:
        spans.append((dt.date.fromisoformat(previous["start"]), dt.date.fromisoformat(previous["end"])))
    if not spans:
        return unchanged
    start, end = calendar_years(min(s[0] for s in spans), max(ahead, *(s[1] for s in spans)))
    calendar = dim_date(start, end)
    quality = checked(table, calendar, "the fact files")
    key = processed.new_key(table.name, run_id)
    processed.write(key, [calendar], {"inputs": inputs, "start": start.isoformat(), "end": end.isoformat()})
    metadata = {
        "dagster/row_count": calendar.height,
        "snapshot": processed.uri(key),
        "first_date": start.isoformat(),
        "last_date": end.isoformat(),
        "changed": True,
    }
    return Outcome(metadata, quality)


def _deps(table: WarehouseTable) -> list[dg.AssetKey]:
    if table.build == "calendar":
        return [processed_key(t.name) for t in FACT_TABLES]
    deps = [raw_key(name) for name in table.sources]
    if table.is_fact:
        deps += [
            processed_key(d) for d in table.referenced_dimensions if WAREHOUSE_TABLES_BY_NAME[d].build == "snapshot"
        ]
    return deps


def quality_check_name(table: WarehouseTable) -> str:
    return f"{table.name}_batch_meets_the_star_schema_rules"


def quarantine_check_name(table: WarehouseTable) -> str:
    return f"{table.name}_quarantine_is_empty"


def quality_check_result(table: WarehouseTable, results: list[RuleResult]) -> dg.AssetCheckResult:
    errors = [r for r in results if r.is_error and r.offending]
    warnings = [r for r in results if not r.is_error and r.offending]
    return dg.AssetCheckResult(
        check_name=quality_check_name(table),
        passed=not errors and not warnings,
        severity=dg.AssetCheckSeverity.ERROR if errors else dg.AssetCheckSeverity.WARN,
        description="; ".join(f"{r.rule}: {r.offending} rows" for r in errors + warnings)
        or "every rule holds on the new data",
        metadata={
            "rules": dg.MetadataValue.md(markdown_report(results)),
            "failing_rules": len(errors),
            "warning_rules": len(warnings),
        },
    )


def quarantine_check_result(table: WarehouseTable, quarantined: list[pl.DataFrame]) -> dg.AssetCheckResult:
    bad = pl.concat(quarantined) if quarantined else pl.DataFrame(schema=QUARANTINE_SCHEMA)
    by_rule = bad.group_by("rule").len().sort("rule")
    return dg.AssetCheckResult(
        check_name=quarantine_check_name(table),
        passed=bad.is_empty(),
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"{bad.height} rows quarantined this run: "
            + ", ".join(f"{rule} {n}" for rule, n in by_rule.iter_rows())
            + f"; see {quarantine_dataset(table.name)} in the processed zone"
        )
        if bad.height
        else "no rows quarantined this run",
        metadata={
            "quarantined_rows": bad.height,
            "by_rule": dg.MetadataValue.md(markdown_table(by_rule, limit=20)),
            "sample": dg.MetadataValue.md(markdown_table(bad.select("source_id", "last_updated", "rule", "reason"))),
        },
    )


def build_processed_asset(table: WarehouseTable, **asset_kwargs) -> dg.AssetsDefinition:
    key = processed_key(table.name)
    check_specs = [
        dg.AssetCheckSpec(
            quality_check_name(table),
            asset=key,
            blocking=True,
            description="Blocking: keys unique, NOT NULL filled, references resolve, accepted values; a batch "
            "breaking one is not written, so it never reaches the warehouse. Spec ranges warn.",
        )
    ]
    if table.is_fact:
        check_specs.append(
            dg.AssetCheckSpec(
                quarantine_check_name(table),
                asset=key,
                description="Warns with the count, rules and a sample of rows quarantined this run.",
            )
        )

    @dg.asset(
        key=key,
        deps=_deps(table),
        group_name=PROCESSED_GROUP,
        description=f"{table.description} (processed zone, Parquet)",
        kinds={"polars", "parquet"},
        metadata={"build": table.build, "natural_key": ", ".join(table.version_key)},
        pool="totesys_processed",
        check_specs=check_specs,
        **asset_kwargs,
    )
    def _processed(
        context: dg.AssetExecutionContext,
        ingestion_zone: LakeZone,
        processed_zone: LakeZone,
        warehouse_db: PostgresResource,
    ):
        processed_zone.check_reachable()
        try:
            # One run at a time builds this table's next files (the lock lives in the warehouse database).
            with warehouse_db.exclusive(
                f"totesys_platform processed {processed_zone.url} {table.name}",
                holder=f"totesys processed/{table.name} {context.run_id[:8]}",
                log=context.log.warning,
            ):
                if table.build in ("facts", "delta"):
                    outcome = process_batchwise(table, ingestion_zone, processed_zone)
                elif table.build == "snapshot":
                    outcome = process_snapshot(table, ingestion_zone, processed_zone, context.run_id)
                else:
                    outcome = process_calendar(table, processed_zone, context.run_id)
        except BatchRejectedError as rejected:
            yield quality_check_result(table, rejected.results)
            raise dg.Failure(description=str(rejected), allow_retries=False) from rejected
        context.log.info(f"processed/{table.name}: {outcome.metadata['dagster/row_count']} rows")
        checks = [quality_check_result(table, outcome.quality)]
        if table.is_fact:
            checks.append(quarantine_check_result(table, outcome.quarantined))
        yield dg.MaterializeResult(metadata=outcome.metadata, check_results=checks)

    return _processed


def build_processed_assets(**asset_kwargs) -> list[dg.AssetsDefinition]:
    return [build_processed_asset(t, **asset_kwargs) for t in WAREHOUSE_TABLES]
