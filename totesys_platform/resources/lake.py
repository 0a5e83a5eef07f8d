"""A lake zone (ingestion or processed): Delta Lake tables under a local folder or s3://bucket/prefix.

Delta Lake (delta-rs, no Spark, no server) is the table format: every write is one atomic commit in the
table's `_delta_log`, so a killed run leaves nothing half-done (files it wrote but did not commit are
invisible), and the log says what is new. Readers therefore never list or open the lake's history:
- what a stage has consumed is a table version, recorded in its own commit's metadata;
- what is new is read with the change data feed (`load_cdf`) from the next version on: only the files
  added by those commits are opened;
- row counts come from the log's `num_records`, not from the files.
Loading a table reads its last checkpoint and the commits after it; a checkpoint every
CHECKPOINT_INTERVAL commits, and one as soon as a table is created, keeps that bounded and the same
whatever the table's age. A run loads each table once: later uses take the snapshot in hand (which the
run's own commits keep current), and only what decides what to re-read (a table's last commit, under the
writer's lock) is looked up afresh; see `LakeZone.table`.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import dagster as dg
import fsspec
import polars as pl
import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import DeltaError, TableNotFoundError
from pydantic import PrivateAttr

from totesys_platform.settings import s3_storage_options

# A checkpoint every 5 commits (and one when the table is created): a table load reads a checkpoint plus
# at most 4 commit files, so the per-run cost saws up and down by at most that much, from the first run on.
CHECKPOINT_INTERVAL = 5
TABLE_CONFIGURATION = {
    "delta.enableChangeDataFeed": "true",
    "delta.checkpointInterval": str(CHECKPOINT_INTERVAL),
    # No expired-log clean-up after a commit: it lists the table's whole log (every commit file, not only
    # those after the checkpoint), a cost that grows with the table's age. Readers never look before the
    # last checkpoint, so the kept commit files cost storage only.
    "delta.enableExpiredLogCleanup": "false",
    # Files a compaction replaced are listed in each checkpoint (as removed) for this long. Nothing here
    # ever deletes a file (no VACUUM), so this decides only the checkpoints' size: a day of compactions.
    "delta.deletedFileRetentionDuration": "interval 1 days",
}
# The ingestion zone and the facts only ever grow: Delta refuses any delete or overwrite on them, and the
# log is kept whole, so a bucket policy can deny every delete.
APPEND_ONLY_CONFIGURATION = {"delta.appendOnly": "true"}
# What Delta itself records in a commit's information, as opposed to the writer's custom metadata.
DELTA_COMMIT_INFO = frozenset(
    {
        "timestamp", "operation", "operationParameters", "operationMetrics", "engineInfo", "clientVersion",
        "version", "readVersion", "isolationLevel", "isBlindAppend", "userMetadata", "txnId",
    }
)  # fmt: skip
CONSUMED_KEY = "totesys.consumed"  # commit metadata: {input table: last version consumed}
# A merged table (a dimension) gains files with every merge; past this many small files they are compacted,
# so reading it costs what its rows cost, not what its history of merges cost. Only files under
# COMPACT_MERGED_TARGET_BYTES are compacted, into files of at most that size: a big file (a big dimension's
# first write) is never rewritten by compaction, only by a merge updating one of its rows (copy-on-write).
COMPACT_AFTER_FILES = 8
COMPACT_MERGED_TARGET_BYTES = 8 * 2**20
# An upsert names the keys it touches, up to this many, as literals (a predicate overwrite of those keys'
# rows): Delta then skips every file whose key statistics exclude them, instead of joining the new rows
# with every file (a tenth of a second on a million-row dimension, whatever the number of changed rows).
# More keys: a merge that names their range.
MERGE_KEY_LITERALS = 5000
# An append-only table (ingestion, facts, quarantine) gains a file with every commit, and every checkpoint
# lists every file: past this many files its small files are compacted (OPTIMIZE: new files, dataChange
# false, so no reader of the change feed sees them twice), which keeps its checkpoint, and the cost of
# loading it, in proportion to its rows rather than to the number of runs that wrote it. The files it
# replaces are only marked removed in the log: no object is ever rewritten or deleted, and older versions
# stay readable. A compacted file is at most COMPACT_TARGET_BYTES, which bounds what the dedup read opens.
COMPACT_APPEND_ONLY_AFTER_FILES = 200
COMPACT_TARGET_BYTES = 32 * 2**20
# Rows of a change feed handed to a reader at a time (see LakeZone.changes).
CHANGE_CHUNK_ROWS = 200_000


# Tables loaded by a run, by (run id, URI), shared by the zone resources and the IO managers (which Dagster
# gives separate instances). A run loads a table once; its own commits keep the snapshot current, and a
# writer looks again (update_incremental: a LIST after the version in hand) only under its lock, where it
# reads what it consumed last. Outside a run (run id None) every use looks again.
_LOADED: dict[tuple[str | None, str], DeltaTable] = {}
# The custom metadata of a commit, by (URI, version): a version never changes once committed.
_COMMIT_METADATA: dict[tuple[str, int], dict[str, Any]] = {}
# (run id, URI) of tables a run found missing (until it creates them), and (run id, zone URL) whose
# reachability it checked: each looked up once per run.
_MISSING: set[tuple[str | None, str]] = set()
_REACHABLE: set[tuple[str | None, str]] = set()
# Tables a run will use, being loaded ahead in threads (see LakeZone.preload), by (run id, URI).
_PRELOADING: dict[tuple[str | None, str], Future] = {}
PRELOAD_THREADS = 4
_preload_pool: ThreadPoolExecutor | None = None


# A process that runs many runs (tests, a notebook running jobs in process) keeps the tables of the last
# few only; a run process under `dagster dev` or ECS runs one.
KEEP_RUNS = 4
_RUNS: list[str] = []


def _remember_run(run_id: str) -> None:
    if run_id in _RUNS:
        return
    _RUNS.append(run_id)
    for old in _RUNS[:-KEEP_RUNS]:
        for key in [k for k in _LOADED if k[0] == old]:
            del _LOADED[key]
        for keys in (_MISSING, _REACHABLE):
            keys.difference_update({k for k in keys if k[0] == old})
        for key in [k for k in _PRELOADING if k[0] == old]:
            _PRELOADING.pop(key).cancel()
    del _RUNS[:-KEEP_RUNS]
    if len(_COMMIT_METADATA) > 4096:
        _COMMIT_METADATA.clear()


def _key_filter(frame: pl.DataFrame, key: str) -> str:
    """` AND t.<key> IN (...)` (or BETWEEN) for an integer key: the merge's file pruning by statistics.
    The values are the integers of the frame itself, formatted as integers."""
    if not frame.schema[key].is_integer() or frame[key].null_count() == frame.height:
        return ""
    keys = frame[key].drop_nulls().unique().sort()
    if keys.len() <= MERGE_KEY_LITERALS:
        return f" AND t.{key} IN ({', '.join(str(int(k)) for k in keys)})"
    return f" AND t.{key} BETWEEN {int(keys[0])} AND {int(keys[-1])}"


def _replaceable_keys(frame: pl.DataFrame, key: str) -> list[int] | None:
    """The frame's keys when an upsert of it may be a predicate overwrite: integer keys, none null or twice,
    at most MERGE_KEY_LITERALS of them (named one by one); otherwise None (a merge)."""
    keys = frame[key]
    if not frame.height or not keys.dtype.is_integer() or keys.null_count() or keys.n_unique() != frame.height:
        return None
    return [int(k) for k in keys.sort()] if frame.height <= MERGE_KEY_LITERALS else None


def forget_loaded_tables() -> None:
    """Drop every table, commit and check this process has in hand: as a new run process starts."""
    for pending in _PRELOADING.values():
        pending.cancel()
    for cache in (_LOADED, _COMMIT_METADATA, _MISSING, _REACHABLE, _RUNS, _PRELOADING):
        cache.clear()


def _load_ahead(uri: str, storage_options: dict[str, str]) -> tuple[DeltaTable, dict[str, Any]]:
    """A table and its newest commit's metadata, loaded in a preload thread."""
    table = DeltaTable(uri, storage_options=storage_options)
    history = table.history(1)
    return table, history[0] if history else {}


def _adopt(key: tuple[str | None, str], pending: Future) -> DeltaTable | None:
    """The table a preload thread loaded, now the run's (None if it failed: the caller loads it the usual
    way, which says what is wrong)."""
    try:
        table, commit = pending.result()
    except Exception:  # noqa: BLE001 - reported by the regular load
        return None
    _LOADED[key] = table
    _COMMIT_METADATA[(key[1], table.version())] = commit
    return table


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
    if not any(dtype == pl.Time for dtype in schema.values()):
        return frame  # nothing to undo: no need to resolve a lazy frame's schema (a read of the log)
    present = frame.collect_schema()
    times = [name for name, dtype in schema.items() if dtype == pl.Time and present.get(name) == pl.Int64]
    return frame.with_columns((pl.col(times) * 1000).cast(pl.Time)) if times else frame


class Spool:
    """Chunks written to a local Arrow IPC file one at a time, then read back as one Arrow stream.

    A table is committed only after every chunk has been produced and checked (a rejected batch writes
    nothing) and with metadata that describes them (the watermark); memory stays one chunk. The file is
    written and read once, locally: Arrow's own format costs a copy each way, no encoding."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="totesys-spool-")
        self.path = os.path.join(self._dir.name, "spool.arrow")
        self._writer: pa.ipc.RecordBatchFileWriter | None = None
        self._schema: pa.Schema | None = None
        self._closed = False
        self.rows = 0

    def add(self, frame: pl.DataFrame) -> None:
        table = delta_safe(frame).to_arrow()
        if self._writer is None:
            self._schema = table.schema
            self._writer = pa.ipc.new_file(self.path, table.schema)
        if frame.height:
            self._writer.write_table(table.cast(self._schema))
            self.rows += frame.height

    def reader(self) -> pa.RecordBatchReader | None:
        if self._writer is None or not self.rows:
            return None
        if not self._closed:
            self._writer.close()
            self._closed = True
        handle = pa.ipc.open_file(pa.OSFile(self.path, "rb"))
        return pa.RecordBatchReader.from_batches(
            handle.schema, (handle.get_batch(i) for i in range(handle.num_record_batches))
        )

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
    _run_id: str | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._run_id = context.run_id
        if self._run_id is not None:
            _remember_run(self._run_id)

    @property
    def run_id(self) -> str | None:
        """The run this zone serves (None outside a run)."""
        return self._run_id

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
        """Fail with a clear message if the bucket is missing, or the local folder cannot be made or written
        (checked once per run)."""
        if self._run_id is not None and (self._run_id, self.url) in _REACHABLE:
            return
        self._check_reachable()
        _REACHABLE.add((self._run_id, self.url))

    def _check_reachable(self) -> None:
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

    def table(self, name: str, *, refresh: bool = False) -> DeltaTable | None:
        """The Delta table `name`, or None if it has never been written.

        Within a run: its newest version when the run first uses it, kept current by the run's own commits;
        `refresh` looks for newer commits (by other runs) first. Outside a run: always its newest version."""
        uri = self.uri(name)
        key = (self._run_id, uri)
        cached = _LOADED.get(key)
        fresh = refresh or self._run_id is None
        if cached is None and (pending := _PRELOADING.pop(key, None)) is not None:
            cached = _adopt(key, pending)
            fresh = True  # loaded ahead: its newest version is looked for now, at its first use
        if cached is None and key in _MISSING and not fresh:
            return None
        try:
            if cached is not None:
                if fresh:
                    cached.update_incremental()
                return cached
            _LOADED[key] = DeltaTable(uri, storage_options=self.storage_options)
            _MISSING.discard(key)
            return _LOADED[key]
        except TableNotFoundError:
            self._refuse_old_layout(name)
            _MISSING.add(key)
            return None
        except (DeltaError, OSError) as err:
            raise self.data_error(name, err) from err

    def preload(self, names: Iterable[str]) -> None:
        """Start loading tables this run is about to use, in threads, in the order given.

        A Delta table load is a few reads (checkpoint, then the commits after it) and costs about 5 ms locally,
        more on S3, whatever the rows; a run loads a few dozen. delta-rs loads without holding Python's lock,
        so the loads overlap each other and the run's own work. A preloaded table still looks for newer
        commits at its first use (see `table`): it is as fresh as one loaded then."""
        global _preload_pool
        if self._run_id is None:
            return
        for name in names:
            key = (self._run_id, self.uri(name))
            if key in _LOADED or key in _PRELOADING or key in _MISSING:
                continue
            if _preload_pool is None:
                _preload_pool = ThreadPoolExecutor(PRELOAD_THREADS, thread_name_prefix="totesys-delta-preload")
            _PRELOADING[key] = _preload_pool.submit(_load_ahead, key[1], self.storage_options)

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

    def last_commit(self, name: str) -> dict[str, Any]:
        """The custom metadata of the table's newest commit (what its writer recorded with the data: the
        watermark, the versions consumed), looked up afresh: it decides what the writer reads next."""
        table = self.table(name, refresh=True)
        if table is None:
            return {}
        key = (self.uri(name), table.version())
        if key not in _COMMIT_METADATA:
            history = table.history(1)
            _COMMIT_METADATA[key] = history[0] if history else {}
        return _COMMIT_METADATA[key]

    def consumed(self, name: str) -> dict[str, int]:
        """{input table: last version consumed} recorded by the newest commit of `name`."""
        return consumed_versions(self.last_commit(name))

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
            # The change feed arrives in batches of a few thousand rows; callers get chunks of up to
            # CHANGE_CHUNK_ROWS, so what they do per chunk (transform, rules, spool) is paid a few times
            # per million rows, not hundreds of times, while memory stays one chunk.
            pending: list[pl.DataFrame] = []
            pending_rows = 0
            for batch in reader:
                frame = pl.from_arrow(batch)
                wanted_rows = frame["_change_type"].is_in(list(kinds))  # type: ignore[index]
                if not wanted_rows.all():  # (an append-only table's feed is all inserts: no copy)
                    frame = frame.filter(wanted_rows)  # type: ignore[union-attr]
                if frame.height:
                    pending.append(frame.drop("_change_type", "_commit_timestamp", strict=False))  # type: ignore[union-attr]
                    pending_rows += frame.height
                if pending_rows >= CHANGE_CHUNK_ROWS:
                    yield pl.concat(pending, how="vertical_relaxed")
                    pending, pending_rows = [], 0
            if pending:
                yield pl.concat(pending, how="vertical_relaxed")
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

        Polars prunes the files by the statistics in the Delta log (one Arrow table for all files) before
        opening any: an immutable table gains a file per commit, and the read costs what the recent files
        cost, whatever the table's age (a pyarrow dataset built a fragment per file first)."""
        table = self.table(name)
        if table is None:
            return None
        try:
            return pl.scan_delta(table).filter(pl.col(column) >= at_least).select(columns).collect()
        except (DeltaError, OSError, pl.exceptions.PolarsError) as err:
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

    def value_range(self, name: str, columns: list[str]) -> tuple[Any, Any] | None:
        """The least and greatest non-null value of `columns` in the table's current version, from the per-file
        statistics of its log (no data read); None when it has no such value. A file written without
        statistics for one of the columns (another writer) is read for them instead."""
        table = self.table(name)
        if table is None:
            return None
        actions = pl.from_arrow(pa.table(table.get_add_actions(flatten=True)))
        if actions.is_empty():  # type: ignore[union-attr]
            return None
        lows, highs = [], []
        for column in columns:
            low, high = f"min.{column}", f"max.{column}"
            if low not in actions.columns or high not in actions.columns:  # type: ignore[union-attr]
                return self._scanned_range(name, columns)
            nulls = pl.col(f"null_count.{column}") if f"null_count.{column}" in actions.columns else pl.lit(None)  # type: ignore[union-attr]
            # A file with values in the column (not all null) but no minimum has no statistics for it.
            unknown = actions.filter(pl.col(low).is_null() & (nulls.is_null() | (nulls < pl.col("num_records"))))  # type: ignore[union-attr]
            if unknown.height:
                return self._scanned_range(name, columns)
            lows.append(actions[low].min())  # type: ignore[index]
            highs.append(actions[high].max())  # type: ignore[index]
        lows, highs = [v for v in lows if v is not None], [v for v in highs if v is not None]
        return (min(lows), max(highs)) if lows else None

    def _scanned_range(self, name: str, columns: list[str]) -> tuple[Any, Any] | None:
        frame = self.scan(name)
        assert frame is not None
        low, high = (
            frame.select(lo=pl.min_horizontal(pl.col(columns).min()), hi=pl.max_horizontal(pl.col(columns).max()))
            .collect()
            .row(0)
        )
        return (low, high) if low is not None else None

    # --- writing ------------------------------------------------------------------------------

    def _commit_properties(self, metadata: dict) -> CommitProperties:
        return CommitProperties(custom_metadata=_as_text(metadata))

    def _upgrade_configuration(self, name: str, table: DeltaTable, wanted: dict[str, str]) -> None:
        """Bring a table written by an earlier release up to the table settings of this one (one commit, once).

        The settings commit repeats the metadata of the commit before it, so the table's newest commit still
        says what it has consumed even if the run stops before its data commit."""
        current = table.metadata().configuration
        missing = {k: v for k, v in wanted.items() if current.get(k) != v}
        if not missing:
            return
        carried = {k: v for k, v in self.last_commit(name).items() if k not in DELTA_COMMIT_INFO}
        table.alter.set_table_properties(missing, commit_properties=self._commit_properties(carried))
        _COMMIT_METADATA[(self.uri(name), table.version())] = _as_text(carried)

    def _compact(self, table: DeltaTable, metadata: dict, *, more_than: int, target: int) -> None:
        """Compact the table's files smaller than `target` once it has more than `more_than` of them (files
        already that big are never rewritten again). The compaction commit carries the same metadata as the
        commit before it: what the table consumed is read from its newest commit."""
        sizes = pa.table(table.get_add_actions(flatten=True))["size_bytes"]
        if (pa.compute.sum(pa.compute.less(sizes, target)).as_py() or 0) > more_than:
            table.optimize.compact(target_size=target, commit_properties=self._commit_properties(metadata))

    def _committed(self, name: str, metadata: dict, rows: int, *, created: bool) -> Commit:
        """What a write did. A new table gets its first checkpoint at once, so that loading it costs the same
        from its first commit on (a checkpoint plus at most CHECKPOINT_INTERVAL - 1 commit files)."""
        table = self.table(name, refresh=created)
        assert table is not None
        if created:
            table.create_checkpoint()
        _COMMIT_METADATA[(self.uri(name), table.version())] = _as_text(metadata)
        return Commit(table.version(), rows)

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
        if table is not None:
            self._upgrade_configuration(name, table, configuration)
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
        if append_only and table is not None:
            self._compact(table, metadata, more_than=COMPACT_APPEND_ONLY_AFTER_FILES, target=COMPACT_TARGET_BYTES)
        return self._committed(name, metadata, counted.rows, created=table is None)

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
            return self._committed(name, metadata, frame.height, created=True)
        self._upgrade_configuration(name, table, TABLE_CONFIGURATION)
        keys = _replaceable_keys(frame, key)
        if keys is not None:
            # A few keys: their rows are replaced in one commit (a predicate overwrite: the files holding them
            # are rewritten without them, the new rows added). Same result as the merge below at about 60% of
            # its cost (10 against 17 ms a dimension: no join to plan); rows that did not change are written
            # again, and the warehouse's upsert leaves them as they are.
            write_deltalake(
                table,
                data,
                mode="overwrite",
                predicate=f"{key} IN ({', '.join(map(str, keys))})",
                commit_properties=self._commit_properties(metadata),
            )
            self._compact(table, metadata, more_than=COMPACT_AFTER_FILES, target=COMPACT_MERGED_TARGET_BYTES)
            return self._committed(name, metadata, frame.height, created=False)
        changed = " OR ".join(f"(t.{c} IS DISTINCT FROM s.{c})" for c in frame.columns if c != key) or None
        (
            table.merge(
                data,
                predicate=f"t.{key} = s.{key}{_key_filter(frame, key)}",
                source_alias="s",
                target_alias="t",
                commit_properties=self._commit_properties(metadata),
            )
            .when_matched_update_all(predicate=changed)
            .when_not_matched_insert_all()
            .execute()
        )
        self._compact(table, metadata, more_than=COMPACT_AFTER_FILES, target=COMPACT_MERGED_TARGET_BYTES)
        return self._committed(name, metadata, frame.height, created=False)

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


def consumed_versions(commit_metadata: dict) -> dict[str, int]:
    """{input table: last version consumed} from a commit's metadata (see LakeZone.last_commit)."""
    return json.loads(commit_metadata.get(CONSUMED_KEY, "{}"))


def _as_text(metadata: dict) -> dict[str, str]:
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}


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
