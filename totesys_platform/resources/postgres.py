"""PostgreSQL resources for the source and the warehouse: a URL, a Secrets Manager secret, or embedded."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import psycopg

from totesys_platform.resources.embedded import embedded_database_url
from totesys_platform.settings import redact_url, validate_postgres_url

CONNECT_TIMEOUT_SECONDS = 10


class DatabaseUnavailableError(RuntimeError):
    """The database could not be reached; the message names the setting, never the password."""


class PostgresResource(dg.ConfigurableResource):
    """A PostgreSQL database: `url` if given, else the embedded server's `embedded_database`."""

    url: str | None = None
    setting_name: str = "database URL"
    embedded_home: str = ".totesys"
    embedded_database: str = "totesys"
    secret_id: str | None = None
    secret_region: str | None = None

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

    @contextlib.contextmanager
    def connect(self, *, autocommit: bool = False) -> Iterator[psycopg.Connection]:
        """A psycopg connection; failures to connect raise DatabaseUnavailableError."""
        url = self.resolved_url()
        try:
            conn = psycopg.connect(url, autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT_SECONDS)
        except psycopg.OperationalError as err:
            raise DatabaseUnavailableError(
                f"{self.setting_name}: cannot connect to {redact_url(url)}: {str(err).strip()}"
            ) from None
        with conn:
            yield conn

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
