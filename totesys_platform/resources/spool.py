"""Rows on their way into a Delta table: spooled to a local Arrow file chunk by chunk, counted as they are
written, and the time type Delta lacks stored as an integer."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import polars as pl
import pyarrow as pa


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


class CountingReader:
    """Counts the rows of an Arrow stream as the writer consumes it."""

    def __init__(self, data: pa.RecordBatchReader) -> None:
        self.data, self.rows = data, 0

    def reader(self) -> pa.RecordBatchReader:
        def batches() -> Iterator[pa.RecordBatch]:
            for batch in self.data:
                self.rows += batch.num_rows
                yield batch

        return pa.RecordBatchReader.from_batches(self.data.schema, batches())


class KeyRangeSpool:
    """Rows spooled by ranges of an integer key (`width` keys a range), each range to a spool of its own, then
    read back a range at a time in key order: every version of a key is in one range, so a whole table's
    versions can be reduced per key (the latest version, a history) with the memory of one range.

    Why not a library: a sorted or partitioned write (a Delta table partitioned by range) would be read
    back the same way, at the cost of a table and its log per run; this is a few local Arrow files."""

    def __init__(self, key: str, width: int) -> None:
        self.key, self.width = key, width
        self._ranges: dict[int, Spool] = {}
        self.rows = 0

    def add(self, frame: pl.DataFrame) -> None:
        if not frame.height:
            return
        ranges = frame.with_columns((pl.col(self.key) // self.width).fill_null(-1).alias("_range"))
        for (number,), part in ranges.partition_by("_range", as_dict=True, include_key=False).items():
            self._ranges.setdefault(int(number), Spool()).add(part)  # type: ignore[arg-type]
        self.rows += frame.height

    def frames(self, schema: pl.Schema) -> Iterator[pl.DataFrame]:
        """Each range's rows (typed as `schema`), in key order of the ranges."""
        for number in sorted(self._ranges):
            reader = self._ranges[number].reader()
            if reader is not None:
                yield restore_types(pl.from_arrow(reader.read_all()), schema)  # type: ignore[arg-type]

    def close(self) -> None:
        for spool in self._ranges.values():
            spool.close()

    def __enter__(self) -> KeyRangeSpool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
