"""The IO managers of the two lake zones: raw and processed assets are stored and loaded through them.

Why our own (a thin one over `LakeZone`) and not dagster-deltalake-polars' `DeltaLakePolarsIOManager`:
that manager writes a whole frame per materialisation (append, overwrite or merge) and loads a whole
table. This platform needs three things it cannot express: a commit that carries what the writer
consumed (the watermark, input table versions) so that state lives with the data and a killed run
leaves nothing half-done; streaming a backfill in bounded memory; and incremental reads by Delta
version (`LakeTable.changes`), so a stage reads only the commits after the last one it consumed.
What users expect of an IO manager still holds: any asset may take `processed/fact_sales_order` as a
`pl.LazyFrame` (or `pl.DataFrame`) input, and `Definitions.load_asset_value` returns one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import dagster as dg
import polars as pl

from totesys_platform.catalog import SOURCE_TABLES_BY_NAME, WAREHOUSE_TABLES_BY_NAME
from totesys_platform.resources.lake import Commit, LakeZone
from totesys_platform.resources.spool import Spool, restore_types


def catalog_schema(name: str) -> pl.Schema | None:
    table = WAREHOUSE_TABLES_BY_NAME.get(name) or SOURCE_TABLES_BY_NAME.get(name)
    return table.schema if table is not None else None


@dataclass(frozen=True)
class LakeTable:
    """A handle on one Delta table of a zone: what an asset receives to read only what is new."""

    zone: LakeZone
    name: str

    @property
    def uri(self) -> str:
        return self.zone.uri(self.name)

    @property
    def schema(self) -> pl.Schema | None:
        return catalog_schema(self.name)

    def version(self) -> int | None:
        return self.zone.version(self.name)

    def changes(
        self, after: int | None, until: int | None = None, columns=None, with_deletes: bool = False
    ) -> Iterator[pl.DataFrame]:
        """Rows inserted or updated by the commits after `after` up to `until`, with `_commit_version`; with
        `with_deletes`, the rows they deleted too, and each row's `_change_type`."""
        kinds = ("insert", "update_postimage", *(("delete",) if with_deletes else ()))
        for frame in self.zone.changes(self.name, after, columns=columns, kinds=kinds):
            if until is not None and (frame["_commit_version"].max() or 0) > until:  # type: ignore[operator]
                frame = frame.filter(pl.col("_commit_version") <= until)
            if frame.height:
                yield restore_types(frame, self.schema) if self.schema else frame  # type: ignore[misc]

    def snapshot(self, version: int, columns: list[str] | None = None) -> Iterator[pl.DataFrame]:
        """The table's rows as of `version`, a bounded batch at a time."""
        for frame in self.zone.snapshot(self.name, version, columns):
            yield restore_types(frame, self.schema) if self.schema else frame  # type: ignore[misc]

    def scan(self) -> pl.LazyFrame | None:
        return self.zone.scan(self.name, self.schema)


@dataclass
class TableAppend:
    """An asset's output: the spooled rows appended as one commit carrying `metadata`."""

    spool: Spool | None
    metadata: dict
    schema: pl.Schema
    append_only: bool = True
    record_progress: bool = False  # commit even with no rows, to record what was consumed
    stats_columns: list[str] | None = None  # file statistics for these columns only (a new table's setting)
    commit: Commit | None = field(default=None, init=False)


@dataclass
class TableMerge:
    """An asset's output: rows upserted on `key` as one commit carrying `metadata`."""

    frame: pl.DataFrame
    key: str
    metadata: dict
    match: tuple[str, ...] | None = None  # merged on these columns instead of `key` (a history table)
    removed: pl.DataFrame | None = None  # rows to delete, by their `match` values
    commit: Commit | None = field(default=None, init=False)


class LakeIOManager(dg.IOManager):
    """Stores an asset as a Delta table `<zone>/<asset name>`, local or on S3; loads it lazily."""

    def __init__(self, zone: LakeZone) -> None:
        self.zone = zone

    def handle_output(self, context: dg.OutputContext, obj) -> None:
        name = context.asset_key.path[-1]
        if obj is None:
            context.add_output_metadata({**self._table_metadata(name), "rows_committed": 0})
            return
        if isinstance(obj, TableAppend):
            empty = pl.DataFrame(schema=obj.schema)
            data = obj.spool.reader() if obj.spool is not None else None
            obj.commit = self.zone.append(
                name,
                data,
                obj.metadata,
                append_only=obj.append_only,
                empty_commit=obj.record_progress,
                empty_schema=empty,
                stats_columns=obj.stats_columns,
            )
        elif isinstance(obj, TableMerge) and obj.match:
            obj.commit = self.zone.merge_rows(name, obj.frame, obj.match, obj.removed, obj.metadata)
        elif isinstance(obj, TableMerge):
            obj.commit = self.zone.merge(name, obj.frame, obj.key, obj.metadata)
        elif isinstance(obj, (pl.DataFrame, pl.LazyFrame)):  # a user's own asset: appended as it is
            with Spool() as spool:
                spool.add(obj.collect() if isinstance(obj, pl.LazyFrame) else obj)
                obj = TableAppend(None, {}, pl.Schema())
                obj.commit = self.zone.append(name, spool.reader(), {}, append_only=False)
        else:
            raise TypeError(f"{context.asset_key.to_user_string()}: cannot store a {type(obj).__name__} in the lake")
        commit = obj.commit
        context.add_output_metadata(
            {
                **self._table_metadata(name),
                "delta_version": -1 if commit is None or commit.version is None else commit.version,
                "rows_committed": 0 if commit is None else commit.rows,
            }
        )

    def _table_metadata(self, name: str) -> dict:
        """Where the table is and how many rows it holds now (from its log's statistics: no data read)."""
        uri = self.zone.uri(name)
        return {
            "table_uri": dg.MetadataValue.path(uri),
            "dagster/uri": uri,
            "dagster/row_count": self.zone.row_count(name),
        }

    def load_input(self, context: dg.InputContext):
        key = context.upstream_output.asset_key if context.upstream_output else context.asset_key
        name = key.path[-1]
        wanted = context.dagster_type.typing_type
        if wanted is LakeTable:
            return LakeTable(self.zone, name)
        frame = self.zone.scan(name, catalog_schema(name))
        if frame is None:
            raise dg.Failure(
                f"{key.to_user_string()} has no Delta table at {self.zone.uri(name)} yet: materialise it first",
                allow_retries=False,
            )
        return frame.collect() if wanted is pl.DataFrame else frame


def lake_io_manager(zone_key: str) -> dg.IOManagerDefinition:
    """The IO manager of the zone resource `zone_key`: the very resource the run's assets use, so that what
    the run has in hand of a table (see RunTables) is loaded once, whether an asset or the manager reads it."""

    @dg.io_manager(
        required_resource_keys={zone_key},
        description=f"Stores and loads assets as Delta tables of the {zone_key} resource",
    )
    def manager(context: dg.InitResourceContext) -> LakeIOManager:
        return LakeIOManager(getattr(context.resources, zone_key))

    return manager
