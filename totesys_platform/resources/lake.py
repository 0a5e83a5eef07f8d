"""A lake zone (ingestion or processed): a local folder or s3://bucket/prefix, through fsspec.

Files are immutable: every write goes to a new time-ordered key
`<dataset>/YYYY/MM/DD/<YYYYmmddTHHMMSSffffff>Z-<run>.parquet` and is refused if the key exists. A file
appears whole or not at all (a local temp file renamed into place; one S3 PUT), so a killed run never
leaves a half-written batch behind. Keys sort in write order, which is what the incremental readers use.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator

import dagster as dg
import fsspec
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

METADATA_KEY = b"totesys"


class ZoneUnavailableError(RuntimeError):
    """The zone's bucket or folder is missing or unreachable."""


class LakeZone(dg.ConfigurableResource):
    """One zone of the lake; `url` is a local folder or s3://bucket[/prefix]."""

    url: str
    zone_name: str = "lake"

    def _fs(self) -> tuple[fsspec.AbstractFileSystem, str]:
        fs, root = fsspec.core.url_to_fs(self.url)
        return fs, root.rstrip("/")

    @property
    def is_local(self) -> bool:
        return "://" not in self.url

    def uri(self, key: str) -> str:
        return f"{self.url.rstrip('/')}/{key}"

    def check_reachable(self) -> None:
        """Fail with a clear message if the bucket (or the local parent folder) is missing."""
        fs, root = self._fs()
        if self.is_local:
            os.makedirs(root, exist_ok=True)
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

    @staticmethod
    def new_key(dataset: str, run_id: str, now: dt.datetime | None = None) -> str:
        now = now or dt.datetime.now(dt.UTC)
        return f"{dataset}/{now:%Y/%m/%d}/{now:%Y%m%dT%H%M%S%f}Z-{run_id[:8]}.parquet"

    # --- writing ----------------------------------------------------------------------------

    def write(
        self,
        key: str,
        chunks: Iterable[pl.DataFrame],
        metadata=None,
        *,
        exist_ok: bool = False,
        before_publish: Callable[[], None] | None = None,
    ) -> int:
        """Write the chunks as one Parquet file at key (row group per chunk); returns rows written.

        `metadata` may be a dict or a callable returning one after the chunks are consumed (so it
        can describe what was written). Nothing is written for zero rows, except with an explicit
        empty frame as the only chunk (a marker that inputs were consumed). With exist_ok, an
        existing file at key (written by an interrupted run under a deterministic key) is kept.
        `before_publish` runs after every chunk is written and before the file appears.
        """
        fs, root = self._fs()
        target = f"{root}/{key}"
        if fs.exists(target):
            if exist_ok:
                return 0
            raise FileExistsError(f"{self.zone_name} zone is immutable: {self.uri(key)} already exists")
        rows, writer, wrote_any = 0, None, False
        with tempfile.TemporaryDirectory(prefix="totesys-") as tmp:
            local = os.path.join(tmp, "batch.parquet")
            for chunk in chunks:
                table = chunk.to_arrow()
                if writer is None:
                    writer = pq.ParquetWriter(local, table.schema, compression="zstd")
                if chunk.height or not wrote_any:
                    writer.write_table(table)
                    wrote_any = True
                rows += chunk.height
            if writer is None:
                return 0
            described = metadata() if callable(metadata) else (metadata or {})
            writer.add_key_value_metadata({METADATA_KEY: json.dumps({**described, "rows": rows}).encode()})
            writer.close()
            if before_publish is not None:
                before_publish()
            self._publish(local, target)
        return rows

    def write_document(self, key: str, data: bytes) -> str:
        """A document that is replaced on each refresh (the dashboard), written whole; returns its URI."""
        fs, root = self._fs()
        with tempfile.TemporaryDirectory(prefix="totesys-") as tmp:
            local = os.path.join(tmp, "document")
            with open(local, "wb") as handle:
                handle.write(data)
            self._publish(local, f"{root}/{key}")
        return self.uri(key)

    def _publish(self, local: str, target: str) -> None:
        fs, _ = self._fs()
        if self.is_local:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            staging = f"{os.path.dirname(target)}/.{uuid.uuid4().hex}.tmp"
            os.replace(local, staging) if _same_device(local, staging) else fs.put_file(local, staging)
            os.replace(staging, target)
        else:
            fs.put_file(local, target)
            fs.invalidate_cache()

    # --- listing ------------------------------------------------------------------------------

    def _children(self, path: str) -> list[str]:
        fs, _ = self._fs()
        try:
            return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False))
        except FileNotFoundError:
            return []

    def list_keys(self, dataset: str, after: str | None = None) -> list[str]:
        """Keys of the dataset's files in write order, only those after `after` when given."""
        fs, root = self._fs()
        fs.invalidate_cache()
        floor = after.split("/")[-4:-1] if after else None
        found: list[str] = []
        for year in self._children(f"{root}/{dataset}"):
            if floor and year < floor[0]:
                continue
            for month in self._children(f"{root}/{dataset}/{year}"):
                if floor and (year, month) < tuple(floor[:2]):
                    continue
                for day in self._children(f"{root}/{dataset}/{year}/{month}"):
                    if floor and (year, month, day) < tuple(floor):
                        continue
                    prefix = f"{dataset}/{year}/{month}/{day}"
                    found += [
                        f"{prefix}/{name}"
                        for name in self._children(f"{root}/{prefix}")
                        if name.endswith(".parquet") and not name.startswith(".")
                    ]
        return [k for k in found if after is None or k.rsplit("/", 1)[-1] > after.rsplit("/", 1)[-1]]

    def keys_newest_first(self, dataset: str) -> Iterator[str]:
        """Keys from the newest back, listing one day folder at a time (cheap for recent work)."""
        fs, root = self._fs()
        fs.invalidate_cache()
        for year in reversed(self._children(f"{root}/{dataset}")):
            for month in reversed(self._children(f"{root}/{dataset}/{year}")):
                for day in reversed(self._children(f"{root}/{dataset}/{year}/{month}")):
                    prefix = f"{dataset}/{year}/{month}/{day}"
                    names = self._children(f"{root}/{prefix}")
                    for name in reversed(names):
                        if name.endswith(".parquet") and not name.startswith("."):
                            yield f"{prefix}/{name}"

    def latest_key(self, dataset: str) -> str | None:
        return next(self.keys_newest_first(dataset), None)

    # --- reading ------------------------------------------------------------------------------

    def read_metadata(self, key: str) -> dict:
        fs, root = self._fs()
        with fs.open(f"{root}/{key}", "rb") as handle:
            kv = pq.read_metadata(handle).metadata or {}
        return json.loads(kv.get(METADATA_KEY, b"{}"))

    def row_count(self, keys: list[str]) -> int:
        """Rows in the files, from their Parquet footers (no data read)."""
        fs, root = self._fs()
        total = 0
        for key in keys:
            with fs.open(f"{root}/{key}", "rb") as handle:
                total += pq.read_metadata(handle).num_rows
        return total

    def iter_batches(
        self, keys: list[str], columns: list[str] | None = None, batch_rows: int = 250_000
    ) -> Iterator[pl.DataFrame]:
        """The files' rows in key order, a bounded batch at a time (memory does not grow with the files)."""
        fs, root = self._fs()
        for key in keys:
            with fs.open(f"{root}/{key}", "rb") as handle:
                for batch in pq.ParquetFile(handle).iter_batches(batch_size=batch_rows, columns=columns):
                    yield pl.from_arrow(batch)  # type: ignore[misc]

    def read(self, keys: list[str], columns: list[str] | None = None) -> pl.DataFrame | None:
        """The files' rows concatenated in key order (None when there are no keys)."""
        if not keys:
            return None
        fs, root = self._fs()
        tables: list[pa.Table] = []
        for key in keys:
            with fs.open(f"{root}/{key}", "rb") as handle:
                tables.append(pq.read_table(handle, columns=columns))
        return pl.from_arrow(pa.concat_tables(tables, promote_options="default"))  # type: ignore[return-value]


def _same_device(a: str, b: str) -> bool:
    try:
        return os.stat(os.path.dirname(a)).st_dev == os.stat(os.path.dirname(b)).st_dev
    except OSError:
        return False
