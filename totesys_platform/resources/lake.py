"""A lake zone (ingestion or processed): Delta Lake tables under a local folder or s3://bucket/prefix.

Delta Lake (delta-rs, no Spark, no server) is the table format: every write is one atomic commit in the
table's `_delta_log`, so a killed run leaves nothing half-done (files it wrote but did not commit are
invisible), and the log says what is new. Readers therefore never list or open the lake's history:
- what a stage has consumed is a table version, recorded in its own commit's metadata;
- what is new is read with the change data feed (`load_cdf`) from the next version on: only the files
  added by those commits are opened;
- row counts come from the log's `num_records`, not from the files.
Loading a table reads its last checkpoint and the commits after it; a checkpoint every
CHECKPOINT_INTERVAL commits keeps that bounded whatever the table's age.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import dagster as dg
import fsspec
import polars as pl
import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import DeltaError, TableNotFoundError

from totesys_platform.settings import s3_storage_options

# A checkpoint every 5 commits: a table load reads the checkpoint plus at most 4 commit files, so the
# per-run cost saws up and down by at most that much, whatever the number of commits before it.
CHECKPOINT_INTERVAL = 5
TABLE_CONFIGURATION = {
    "delta.enableChangeDataFeed": "true",
    "delta.checkpointInterval": str(CHECKPOINT_INTERVAL),
}
# The ingestion zone and the facts only ever grow: Delta refuses any delete or overwrite on them, and the
# log is kept whole (no expired-log clean-up), so a bucket policy can deny every delete.
APPEND_ONLY_CONFIGURATION = {"delta.appendOnly": "true", "delta.enableExpiredLogCleanup": "false"}
CONSUMED_KEY = "totesys.consumed"  # commit metadata: {input table: last version consumed}
# A merged table (a dimension) gains files with every merge; past this many it is compacted, so reading it
# costs what its rows cost, not what its history of merges cost.
COMPACT_AFTER_FILES = 8


# Tables loaded in this process, by URI, shared by the zone resources and the IO managers (which Dagster
# gives separate instances): a later use only lists the log after the version in hand (update_incremental)
# instead of reading the checkpoint and its commits again.
_LOADED: dict[str, DeltaTable] = {}


class ZoneUnavailableError(RuntimeError):
    """The zone's bucket or folder is missing, unreachable or not writable."""


class OldLayoutError(RuntimeError):
    """The zone holds a table folder of the previous (plain Parquet batches) layout."""


class ZoneDataError(RuntimeError):
    """A table's log or data cannot be read: a corrupt or foreign object, not a passing fault."""


@dataclass
class Commit:
    """What one write did: the new table version (None when there was nothing to write) and its rows."""

    version: int | None
    rows: int


def delta_safe(frame: pl.DataFrame) -> pl.DataFrame:
    """Delta Lake has no time type: times are stored as microseconds since midnight (Int64)."""
    times = [name for name, dtype in frame.schema.items() if dtype == pl.Time]
    return frame.with_columns(pl.col(times).cast(pl.Int64) // 1000) if times else frame


def restore_types(frame: pl.DataFrame | pl.LazyFrame, schema: pl.Schema) -> pl.DataFrame | pl.LazyFrame:
    """Undo delta_safe for the columns the catalog types as time."""
    present = frame.collect_schema()
    times = [name for name, dtype in schema.items() if dtype == pl.Time and present.get(name) == pl.Int64]
    return frame.with_columns((pl.col(times) * 1000).cast(pl.Time)) if times else frame


class Spool:
    """Chunks written to a local Parquet file one at a time, then read back as one Arrow stream.

    A table is committed only after every chunk has been produced and checked (a rejected batch writes
    nothing) and with metadata that describes them (the watermark); memory stays one chunk."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="totesys-spool-")
        self.path = os.path.join(self._dir.name, "spool.parquet")
        self._writer: pq.ParquetWriter | None = None
        self.rows = 0

    def add(self, frame: pl.DataFrame) -> None:
        table = delta_safe(frame).to_arrow()
        if self._writer is None:
            # A local temporary file written and read once: compressing it would only cost CPU.
            self._writer = pq.ParquetWriter(self.path, table.schema, compression="none")
        if frame.height:
            self._writer.write_table(table.cast(self._writer.schema))
            self.rows += frame.height

    def reader(self) -> pa.RecordBatchReader | None:
        if self._writer is None or not self.rows:
            return None
        self._writer.close()
        handle = pq.ParquetFile(self.path)
        return pa.RecordBatchReader.from_batches(handle.schema_arrow, handle.iter_batches(batch_size=250_000))

    def close(self) -> None:
        self._dir.cleanup()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LakeZone(dg.ConfigurableResource):
    """One zone of the lake; `url` is a local folder or s3://bucket[/prefix]; one Delta table per name."""

    url: str
    zone_name: str = "lake"

    @property
    def is_local(self) -> bool:
        return "://" not in self.url

    def uri(self, name: str) -> str:
        return f"{self.url.rstrip('/')}/{name}"

    @property
    def storage_options(self) -> dict[str, str]:
        return {} if self.is_local else s3_storage_options()

    def _fs(self) -> tuple[fsspec.AbstractFileSystem, str]:
        fs, root = fsspec.core.url_to_fs(self.url)
        return fs, root.rstrip("/")

    def check_reachable(self) -> None:
        """Fail with a clear message if the bucket is missing, or the local folder cannot be made or written."""
        fs, root = self._fs()
        if self.is_local:
            try:
                os.makedirs(root, exist_ok=True)
                with tempfile.NamedTemporaryFile(dir=root, prefix=".write-test-"):
                    pass
            except OSError as err:
                raise ZoneUnavailableError(
                    f"{self.zone_name} zone {self.url}: not a writable folder ({err.strerror}: {err.filename})"
                ) from None
            return
        bucket = root.split("/", 1)[0]
        try:
            fs.invalidate_cache()
            present = fs.exists(bucket)
        except Exception as err:  # s3fs wraps botocore errors in many types
            raise ZoneUnavailableError(
                f"{self.zone_name} zone {self.url}: cannot reach bucket {bucket!r}: {err}"
            ) from err
        if not present:
            raise ZoneUnavailableError(f"{self.zone_name} zone {self.url}: bucket {bucket!r} does not exist")

    # --- reading ------------------------------------------------------------------------------

    def table(self, name: str) -> DeltaTable | None:
        """The Delta table `name` at its newest version, or None if it has never been written."""
        uri = self.uri(name)
        cached = _LOADED.get(uri)
        try:
            if cached is not None:
                cached.update_incremental()
                return cached
            _LOADED[uri] = DeltaTable(uri, storage_options=self.storage_options)
            return _LOADED[uri]
        except TableNotFoundError:
            self._refuse_old_layout(name)
            return None
        except (DeltaError, OSError) as err:
            raise self.data_error(name, err) from err

    def data_error(self, name: str, err: Exception) -> ZoneDataError:
        return ZoneDataError(
            f"{self.zone_name} zone, table {name} ({self.uri(name)}): cannot read its Delta log or data: "
            f"{str(err).strip()[:500]}. An object in the table's folder is corrupt or was put there by another "
            "tool; move it aside (the log lists every file that belongs to the table) and re-run: nothing "
            "committed is lost."
        )

    def _refuse_old_layout(self, name: str) -> None:
        fs, root = self._fs()
        try:
            children = fs.ls(f"{root}/{name}", detail=False)
        except (FileNotFoundError, NotADirectoryError):
            return
        if children:
            raise OldLayoutError(
                f"{self.zone_name} zone {self.uri(name)} holds files but no Delta log: it was written by the "
                "previous layout (plain Parquet batches). Move the zone aside and run a fresh backfill, or "
                "convert it as the README says ('Existing lakes'); it is never read as something else."
            )

    def version(self, name: str) -> int | None:
        table = self.table(name)
        return table.version() if table is not None else None

    def commit_metadata(self, table: DeltaTable) -> dict:
        """The newest commit's custom metadata (what the writer recorded with its data)."""
        history = table.history(1)
        return history[0] if history else {}

    def consumed(self, name: str) -> dict[str, int]:
        """{input table: last version consumed} recorded by the newest commit of `name`."""
        table = self.table(name)
        if table is None:
            return {}
        return json.loads(self.commit_metadata(table).get(CONSUMED_KEY, "{}"))

    def changes(
        self, name: str, after: int | None, columns: list[str] | None = None, kinds=("insert", "update_postimage")
    ) -> Iterator[pl.DataFrame]:
        """Rows that commits after version `after` inserted or updated (all commits when None), a bounded
        batch at a time, with their `_commit_version`; only the files those commits added are read."""
        table = self.table(name)
        start = 0 if after is None else after + 1
        if table is None or table.version() < start:
            return
        wanted = None if columns is None else [*columns, "_change_type", "_commit_version"]
        try:
            reader = pa.RecordBatchReader.from_stream(table.load_cdf(starting_version=start, columns=wanted))
            for batch in reader:
                frame = pl.from_arrow(batch)
                frame = frame.filter(pl.col("_change_type").is_in(list(kinds)))  # type: ignore[union-attr]
                if frame.height:
                    yield frame.drop("_change_type", "_commit_timestamp", strict=False)  # type: ignore[union-attr]
        except (DeltaError, OSError) as err:
            raise self.data_error(name, err) from err

    def snapshot(self, name: str, version: int, columns: list[str] | None = None) -> Iterator[pl.DataFrame]:
        """The table's rows as of `version`, a bounded batch at a time."""
        try:
            table = DeltaTable(self.uri(name), version=version, storage_options=self.storage_options)
            for batch in table.to_pyarrow_dataset().to_batches(columns=columns, batch_size=250_000):
                if batch.num_rows:
                    yield pl.from_arrow(batch)  # type: ignore[misc]
        except (DeltaError, OSError) as err:
            raise self.data_error(name, err) from err

    def read_since(self, name: str, column: str, at_least, columns: list[str]) -> pl.DataFrame | None:
        """Rows with `column >= at_least`; only the files whose statistics allow such rows are opened.

        The files are pruned by their log statistics during log replay (in Rust), before any per-file
        dataset fragment is made: an immutable table gains a file per commit, and building fragments for
        all of them cost more than the read itself after a few hundred runs."""
        table = self.table(name)
        if table is None:
            return None
        try:
            dataset = table.to_pyarrow_dataset(file_pruning_predicate=[(column, ">=", at_least)])
            return pl.from_arrow(dataset.to_table(filter=pa.compute.field(column) >= at_least, columns=columns))  # type: ignore[return-value]
        except (DeltaError, OSError, pa.ArrowException) as err:
            raise self.data_error(name, err) from err

    def scan(self, name: str, schema: pl.Schema | None = None) -> pl.LazyFrame | None:
        """The table's current rows, lazily (filters prune files by their statistics)."""
        table = self.table(name)
        if table is None:
            return None
        frame = pl.scan_delta(table)
        return restore_types(frame, schema) if schema is not None else frame  # type: ignore[return-value]

    def row_count(self, name: str) -> int:
        """Rows in the table's current version, from the log's per-file statistics (no data read)."""
        table = self.table(name)
        if table is None:
            return 0
        actions = pa.table(table.get_add_actions(flatten=True))
        return int(pa.compute.sum(actions["num_records"]).as_py() or 0) if actions.num_rows else 0

    # --- writing ------------------------------------------------------------------------------

    def _commit_properties(self, metadata: dict) -> CommitProperties:
        return CommitProperties(
            custom_metadata={k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
        )

    def append(
        self,
        name: str,
        data: pa.RecordBatchReader | None,
        metadata: dict,
        *,
        append_only: bool,
        empty_commit: bool = False,
        empty_schema: pl.DataFrame | None = None,
        stats_columns: list[str] | None = None,
    ) -> Commit:
        """Append the stream as one commit carrying `metadata`. No rows: no commit, unless `empty_commit`
        (a commit that only records what was consumed; `empty_schema` creates the table if need be)."""
        if data is None and not empty_commit:
            return Commit(None, 0)
        table = self.table(name)
        if data is None:
            if table is not None:
                schema = pa.schema(table.schema().to_arrow())
            elif empty_schema is not None:
                schema = delta_safe(empty_schema).to_arrow().schema
            else:
                return Commit(None, 0)
            data = pa.RecordBatchReader.from_batches(schema, iter([]))
        counted = _Counting(data)
        configuration = {**TABLE_CONFIGURATION, **(APPEND_ONLY_CONFIGURATION if append_only else {})}
        if stats_columns:
            # File statistics only for the columns readers prune on: every file's entry in the log (and in
            # each checkpoint, which lists every file of a table that is never compacted) stays small.
            configuration["delta.dataSkippingStatsColumns"] = ",".join(stats_columns)
        try:
            write_deltalake(
                table if table is not None else self.uri(name),
                counted.reader(),
                mode="append",
                schema_mode="merge",  # a column new at the source is kept (as text)
                configuration=configuration if table is None else None,
                storage_options=self.storage_options if table is None else None,
                commit_properties=self._commit_properties(metadata),
            )
        except OSError as err:
            raise ZoneUnavailableError(f"{self.zone_name} zone {self.uri(name)}: cannot write: {err}") from err
        return Commit(self.version(name), counted.rows)

    def merge(self, name: str, frame: pl.DataFrame, key: str, metadata: dict) -> Commit:
        """Upsert `frame` on `key` (insert new keys, update changed rows) in one commit carrying `metadata`."""
        data = delta_safe(frame).to_arrow()
        table = self.table(name)
        if table is None:
            write_deltalake(
                self.uri(name),
                data,
                mode="append",
                configuration=TABLE_CONFIGURATION,
                storage_options=self.storage_options,
                commit_properties=self._commit_properties(metadata),
            )
            return Commit(self.version(name), frame.height)
        changed = " OR ".join(f"(t.{c} IS DISTINCT FROM s.{c})" for c in frame.columns if c != key) or None
        (
            table.merge(
                data,
                predicate=f"t.{key} = s.{key}",
                source_alias="s",
                target_alias="t",
                commit_properties=self._commit_properties(metadata),
            )
            .when_matched_update_all(predicate=changed)
            .when_not_matched_insert_all()
            .execute()
        )
        if pa.table(table.get_add_actions(flatten=True)).num_rows > COMPACT_AFTER_FILES:
            # The same commit metadata: what the table has consumed is read from its newest commit.
            table.optimize.compact(commit_properties=self._commit_properties(metadata))
        return Commit(table.version(), frame.height)

    def write_document(self, key: str, data: bytes) -> str:
        """A document replaced on each refresh (the dashboard), written whole; returns its URI."""
        fs, root = self._fs()
        target = f"{root}/{key}"
        if self.is_local:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=os.path.dirname(target), delete=False) as handle:
                handle.write(data)
            os.replace(handle.name, target)
        else:
            fs.pipe_file(target, data)
        return f"{self.url.rstrip('/')}/{key}"


class _Counting:
    """Counts the rows of an Arrow stream as the writer consumes it."""

    def __init__(self, data: pa.RecordBatchReader) -> None:
        self.data, self.rows = data, 0

    def reader(self) -> pa.RecordBatchReader:
        def batches() -> Iterator[pa.RecordBatch]:
            for batch in self.data:
                self.rows += batch.num_rows
                yield batch

        return pa.RecordBatchReader.from_batches(self.data.schema, batches())
