"""PostgreSQL resources for the source and the warehouse: a URL, a Secrets Manager secret, or embedded."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import psycopg
from pydantic import PrivateAttr

from totesys_platform.resources.embedded import embedded_database_url
from totesys_platform.settings import redact_url, validate_postgres_url

CONNECT_TIMEOUT_SECONDS = 10
# A step waits this long for another run to finish the same work (the freshness deadline), then fails.
LOCK_WAIT_SECONDS = 30 * 60

# Who holds an advisory lock taken with a bigint key (PostgreSQL splits it into classid and objid).
_LOCK_HOLDERS = """
SELECT coalesce(string_agg(DISTINCT a.application_name, ', '), 'another session')
FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended(%s, 0)
"""


class DatabaseUnavailableError(RuntimeError):
    """The database could not be reached; the message names the setting, never the password."""


class StepLockTimeoutError(RuntimeError):
    """Another run held the same step's lock for longer than the step may wait."""


class PostgresResource(dg.ConfigurableResource):
    """A PostgreSQL database: `url` if given, else the embedded server's `embedded_database`."""

    url: str | None = None
    setting_name: str = "database URL"
    embedded_home: str = ".totesys"
    embedded_database: str = "totesys"
    secret_id: str | None = None
    secret_region: str | None = None
    _reuse: bool = PrivateAttr(default=False)
    _idle: list[psycopg.Connection] = PrivateAttr(default_factory=list)
    _done_this_run: set[str] = PrivateAttr(default_factory=set)

    def resolved_url(self) -> str:
        if self.secret_id:
            from totesys_platform.resources.secrets import database_url_from_secret

            return database_url_from_secret(self.secret_id, self.secret_region, self.setting_name)
        if self.url:
            # Inside a run Dagster has resolved an EnvVar already; used directly (the CLI), resolve it here.
            url = self.url.get_value() if isinstance(self.url, dg.EnvVar) else self.url
            return validate_postgres_url(self.setting_name, url or "")
        return embedded_database_url(Path(self.embedded_home) / "pgdata", self.embedded_database)

    def describe(self) -> str:
        """Where this database is, with the password redacted."""
        if self.secret_id:
            return f"secret {self.secret_id}"
        if self.url:
            return redact_url(self.url)
        return f"embedded:{self.embedded_database}"

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # Inside a run, connections are reused from step to step (see connect()).
        self._reuse = True

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self._reuse = False
        self._done_this_run.clear()
        while self._idle:
            with contextlib.suppress(psycopg.Error):
                self._idle.pop().close()

    def once_per_run(self, name: str, work: Callable[[psycopg.Connection], None], conn: psycopg.Connection) -> None:
        """`work(conn)` (then commit) unless a step of this run has done `name` already; outside a run, always.
        For idempotent preparations that later steps can trust, such as creating the warehouse tables."""
        if self._reuse and name in self._done_this_run:
            return
        work(conn)
        conn.commit()
        if self._reuse:
            self._done_this_run.add(name)

    def _new_connection(self, autocommit: bool) -> psycopg.Connection:
        url = self.resolved_url()
        try:
            return psycopg.connect(url, autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT_SECONDS)
        except psycopg.OperationalError as err:
            raise DatabaseUnavailableError(
                f"{self.setting_name}: cannot connect to {redact_url(url)}: {str(err).strip()}"
            ) from None

    @contextlib.contextmanager
    def connect(self, *, autocommit: bool = False) -> Iterator[psycopg.Connection]:
        """A psycopg connection, committed when the block succeeds and rolled back when it raises; failures to
        connect raise DatabaseUnavailableError.

        Inside a run a connection is handed back, clean, for the next step to use: a run's two dozen steps
        then connect once or twice instead of once each (on RDS, with TLS and SCRAM, tens of milliseconds
        each). Handing back ends any transaction, resets every session setting (RESET ALL) and releases
        any advisory lock; a connection whose block raised, or that is broken, is closed instead."""
        conn = self._idle.pop() if self._idle else self._new_connection(autocommit)
        if conn.autocommit != autocommit:
            conn.autocommit = autocommit
        reusable = False
        try:
            yield conn
            if not conn.closed and not autocommit:
                conn.commit()
            reusable = not conn.closed
        finally:
            if reusable and self._reuse and self._reset(conn):
                self._idle.append(conn)
            else:
                with contextlib.suppress(psycopg.Error):
                    if not conn.closed and not autocommit:
                        conn.rollback()
                    conn.close()

    @staticmethod
    def _reset(conn: psycopg.Connection) -> bool:
        """Back to a fresh session's state; False if the connection cannot be trusted any more."""
        try:
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                conn.rollback()
            # One round trip (no parameters: the simple protocol runs both statements, as one transaction).
            conn.execute("RESET ALL; SELECT pg_advisory_unlock_all()")
            if not conn.autocommit:
                conn.commit()
            return True
        except psycopg.Error:
            return False

    @contextlib.contextmanager
    def connect_arrow(self) -> Iterator:
        """An ADBC connection (Arrow in and out, COPY under the hood) for bulk reads."""
        import adbc_driver_postgresql.dbapi as adbc

        url = self.resolved_url()
        try:
            conn = adbc.connect(url)
        except Exception as err:  # ADBC raises its own OperationalError family
            raise DatabaseUnavailableError(
                f"{self.setting_name}: cannot connect to {redact_url(url)}: {str(err).strip()}"
            ) from None
        try:
            yield conn
        finally:
            conn.close()

    @contextlib.contextmanager
    def exclusive(
        self, name: str, *, holder: str, log: Callable[[str], None], wait_seconds: float = LOCK_WAIT_SECONDS
    ) -> Iterator[None]:
        """Run the block as the only holder of the session advisory lock `name` on this database.

        Dagster's pools queue steps too, but an ad hoc `dagster asset materialize` (ephemeral instance)
        bypasses them and SQLite's pool slots are not race-free across processes; this lock holds in every
        case. A killed run's connection closes and PostgreSQL frees its lock at once. `holder` (shown to
        waiters and in pg_stat_activity) names the step and run; `name` may be long, it is hashed."""
        with self.connect(autocommit=True) as conn:
            acquired = conn.execute(
                "SELECT set_config('application_name', %s, false), pg_try_advisory_lock(hashtextextended(%s, 0))",
                [holder[:63], name],
            ).fetchone()
            if not (acquired and acquired[1]):
                holders = conn.execute(_LOCK_HOLDERS, [name]).fetchone()
                log(f"{holder}: waiting for {holders[0] if holders else 'another session'} to finish the same work")
                conn.execute("SELECT set_config('lock_timeout', %s, false)", [f"{int(wait_seconds * 1000)}ms"])
                try:
                    conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", [name])
                except psycopg.errors.LockNotAvailable:
                    raise StepLockTimeoutError(
                        f"{holder}: another run kept doing the same work for over {wait_seconds:.0f}s "
                        f"({self.setting_name}); nothing was changed, the next run retries"
                    ) from None
                log(f"{holder}: lock acquired, going on")
            try:
                yield
            finally:
                with contextlib.suppress(psycopg.Error):
                    conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", [name])


class WarehouseConfig(dg.ConfigurableResource):
    """Where the star schema lives in the warehouse database."""

    schema_name: str = "public"
