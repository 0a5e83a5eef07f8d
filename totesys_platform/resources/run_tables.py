"""What one zone resource has in hand for the run it serves: the Delta tables it loaded, the tables it found
missing, the newest commits' metadata, the loads started ahead in threads, and values derived from a table
version (a dimension's keys). Dagster sets a resource up once per run (in-process executor), and the IO
managers take the same zone resource, so a run loads each table once; a new run starts with nothing in
hand, and a long-lived process (tests, a notebook) keeps nothing of its past runs."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from deltalake import DeltaTable

# Tables loaded ahead at once (see LakeZone.preload): delta-rs loads without holding Python's lock.
PRELOAD_THREADS = 4
T = TypeVar("T")


def load_with_newest_commit(uri: str, storage_options: dict[str, str]) -> tuple[DeltaTable, dict[str, Any]]:
    """A table and its newest commit's metadata (what a preload thread does)."""
    table = DeltaTable(uri, storage_options=storage_options)
    history = table.history(1)
    return table, history[0] if history else {}


class RunTables:
    """The tables of one zone in hand for one run (`run_id` None: used outside any run, where every use
    looks again, so nothing but commit metadata is kept)."""

    def __init__(self, run_id: str | None) -> None:
        self.run_id = run_id
        self.loaded: dict[str, DeltaTable] = {}  # by URI
        self.missing: set[str] = set()  # URIs this run found without a table (until it creates them)
        self.commit_metadata: dict[tuple[str, int], dict[str, Any]] = {}  # by (URI, version): never changes
        self.reachable = False  # the zone's bucket or folder was checked in this run
        self._preloading: dict[str, Future] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._derived: dict[Hashable, Any] = {}

    @property
    def in_run(self) -> bool:
        return self.run_id is not None

    def preload(self, uri: str, storage_options: dict[str, str]) -> None:
        if not self.in_run or uri in self.loaded or uri in self._preloading or uri in self.missing:
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(PRELOAD_THREADS, thread_name_prefix="totesys-delta-preload")
        self._preloading[uri] = self._pool.submit(load_with_newest_commit, uri, storage_options)

    def is_preloading(self, uri: str) -> bool:
        return uri in self._preloading

    def wait_for_preloads(self) -> None:
        for pending in list(self._preloading.values()):
            pending.exception()

    def adopt_preloaded(self, uri: str) -> DeltaTable | None:
        """The table a preload thread loaded, now in hand; None if none was loading or it failed (the caller
        then loads it the usual way, which says what is wrong)."""
        pending = self._preloading.pop(uri, None)
        if pending is None:
            return None
        try:
            table, commit = pending.result()
        except Exception:  # noqa: BLE001 - reported by the regular load
            return None
        self.loaded[uri] = table
        self.commit_metadata[(uri, table.version())] = commit
        return table

    def derived(self, key: Hashable, compute: Callable[[], T]) -> T:
        """`compute()` once per run for `key` (which must name what it depends on, e.g. a table version)."""
        if not self.in_run:
            return compute()
        if key not in self._derived:
            self._derived[key] = compute()
        return self._derived[key]

    def close(self) -> None:
        for pending in self._preloading.values():
            pending.cancel()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._preloading.clear()
        self.loaded.clear()
        self._derived.clear()
