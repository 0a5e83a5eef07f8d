"""The one place that reads the environment: every setting validated, every secret redacted."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

EMBEDDED = "embedded"
IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable and never a secret."""


def redact_url(url: str) -> str:
    """The URL with any password replaced by ***, safe for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def validate_postgres_url(name: str, url: str) -> str:
    """A PostgreSQL URL with a host (TCP) or a ?host=/socket/dir, and a database name."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as err:
        raise SettingsError(f"{name}={redact_url(url)!r} is not a valid URL: {err}") from None
    if parts.scheme not in ("postgresql", "postgres"):
        raise SettingsError(
            f"{name}={redact_url(url)!r} must be a PostgreSQL URL such as "
            "postgresql://user:password@host:5432/dbname (or ...@/dbname?host=/socket/dir)"
        )
    if not parts.hostname and "host" not in parse_qs(parts.query):
        raise SettingsError(f"{name}={redact_url(url)!r} names no host (nor ?host=/socket/dir)")
    if not parts.path.strip("/"):
        raise SettingsError(f"{name}={redact_url(url)!r} names no database (…/dbname)")
    return url


def validate_zone_url(name: str, url: str, home: Path) -> str:
    """A lake zone root: s3://bucket[/prefix] or a local folder (relative to the working dir)."""
    if url.startswith("s3://"):
        bucket = url[5:].split("/", 1)[0]
        if not re.fullmatch(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]", bucket):
            raise SettingsError(f"{name}={url!r}: {bucket!r} is not a valid S3 bucket name")
        return url.rstrip("/")
    if "://" in url:
        raise SettingsError(f"{name}={url!r}: only local paths and s3://bucket/prefix are supported")
    path = Path(url).expanduser().resolve()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise SettingsError(f"{name}={url!r} cannot be a folder: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SettingsError(f"{name}={url!r}: {existing} is not writable by this user, so the zone cannot be made")
    return str(path)


def s3_storage_options(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Delta Lake's S3 options beyond the standard AWS_* variables object_store reads itself: plain HTTP
    when the endpoint is one (a local S3 API such as moto's or MinIO's)."""
    env = os.environ if env is None else env
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or ""
    options = {"AWS_ENDPOINT_URL": endpoint} if endpoint else {}
    if endpoint.startswith("http://"):
        options["AWS_ALLOW_HTTP"] = "true"
    return options


def _positive_int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} must be a whole number") from None
    if value < minimum:
        raise SettingsError(f"{name}={raw!r} must be at least {minimum}")
    return value


@dataclass(frozen=True)
class Settings:
    """Validated platform settings. A database URL of None means the embedded server."""

    home: Path
    source_url: str | None
    warehouse_url: str | None
    ingestion_url: str
    processed_url: str
    warehouse_schema: str
    lookback_seconds: int
    extract_chunk_rows: int
    sensor_interval_seconds: int
    # How often the incident sensor looks for new and ended incidents.
    alert_interval_seconds: int = 60
    max_retries: int = 2
    source_secret_id: str | None = None
    warehouse_secret_id: str | None = None
    # The Dagster instance's own PostgreSQL (runs, events, schedules); unset means SQLite in dagster_home.
    dagster_pg_url: str | None = None
    # Where the dashboard is written: a local folder or s3://bucket/prefix.
    reports_url: str = ""

    @property
    def embedded_pgdata(self) -> Path:
        return self.home / "pgdata"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster_home"

    def describe(self) -> dict[str, str]:
        """A printable summary with every secret redacted."""
        return {
            "home": str(self.home),
            "source": redact_url(self.source_url) if self.source_url else f"{EMBEDDED} (totesys)",
            "warehouse": redact_url(self.warehouse_url) if self.warehouse_url else f"{EMBEDDED} (warehouse)",
            "warehouse schema": self.warehouse_schema,
            "ingestion zone": self.ingestion_url,
            "processed zone": self.processed_url,
            "reports": self.reports_url,
        }


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every TOTESYS_* variable; unset databases and zones mean embedded."""
    env = os.environ if env is None else env
    home = Path(env.get("TOTESYS_HOME") or ".totesys").expanduser().resolve()
    source_url = env.get("TOTESYS_SOURCE_URL") or None
    warehouse_url = env.get("TOTESYS_WAREHOUSE_URL") or None
    if source_url:
        validate_postgres_url("TOTESYS_SOURCE_URL", source_url)
    if warehouse_url:
        validate_postgres_url("TOTESYS_WAREHOUSE_URL", warehouse_url)
    schema = env.get("TOTESYS_WAREHOUSE_SCHEMA") or "public"
    if not IDENTIFIER.match(schema):
        raise SettingsError(
            f"TOTESYS_WAREHOUSE_SCHEMA={schema!r} must be a lower-case SQL identifier "
            "(letters, digits and _, not starting with a digit)"
        )
    return Settings(
        home=home,
        source_url=source_url,
        warehouse_url=warehouse_url,
        ingestion_url=validate_zone_url(
            "TOTESYS_INGESTION_URL", env.get("TOTESYS_INGESTION_URL") or str(home / "lake" / "ingestion"), home
        ),
        processed_url=validate_zone_url(
            "TOTESYS_PROCESSED_URL", env.get("TOTESYS_PROCESSED_URL") or str(home / "lake" / "processed"), home
        ),
        warehouse_schema=schema,
        lookback_seconds=_positive_int(env, "TOTESYS_LOOKBACK_SECONDS", 900),
        extract_chunk_rows=_positive_int(env, "TOTESYS_EXTRACT_CHUNK_ROWS", 50_000),
        sensor_interval_seconds=_positive_int(env, "TOTESYS_SENSOR_INTERVAL_SECONDS", 300),
        alert_interval_seconds=_positive_int(env, "TOTESYS_ALERT_INTERVAL_SECONDS", 60),
        max_retries=_positive_int(env, "TOTESYS_MAX_RETRIES", 2, minimum=0),
        source_secret_id=env.get("TOTESYS_SOURCE_SECRET_ID") or None,
        warehouse_secret_id=env.get("TOTESYS_WAREHOUSE_SECRET_ID") or None,
        dagster_pg_url=_dagster_pg_url(env.get("DAGSTER_PG_URL") or None),
        reports_url=validate_zone_url(
            "TOTESYS_REPORTS_URL", env.get("TOTESYS_REPORTS_URL") or str(home / "reports"), home
        ),
    )


def _dagster_pg_url(url: str | None) -> str | None:
    """dagster-postgres needs the psycopg2 driver named in the URL (see docs/dagster-stack.md)."""
    if url and not url.startswith("postgresql+psycopg2://"):
        raise SettingsError(
            f"DAGSTER_PG_URL must start with postgresql+psycopg2:// (got {redact_url(url)}); plain postgresql:// "
            "makes SQLAlchemy pick psycopg 3, which dagster-postgres cannot use"
        )
    return url


def settings_from_stack_outputs(outputs: list[dict]) -> dict[str, str]:
    """The platform's settings from a deployed stack's outputs (deploy/stack.py): each output's description
    is the exact name of the setting it sets."""
    return {
        output["Description"]: output["OutputValue"]
        for output in outputs
        if output.get("Description", "").startswith("TOTESYS_")
    }
