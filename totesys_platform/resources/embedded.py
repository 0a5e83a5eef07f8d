"""The embedded PostgreSQL server (pgserver wheel: no system packages) under TOTESYS_HOME.

The server is started on demand by whichever process first needs it, survives that process (so the
Dagster webserver, daemon and run workers all share one server) and is stopped by `totesys db stop`.
It listens on a unix socket inside the data directory only, never on TCP.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import psycopg
from psycopg import sql

EMBEDDED_DATABASES = ("totesys", "warehouse")


def _pgserver():
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset; pgserver then uses /tmp, which is fine.
        warnings.simplefilter("ignore")
        import pgserver
    return pgserver


def start_embedded_server(pgdata: Path) -> str:
    """Start (or attach to) the server for pgdata; returns the URL of its `postgres` database."""
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    # pgserver caches one handle per data dir for the life of the process (a private dict, no public
    # API); a handle whose server was stopped must be forgotten, or it is handed back stopped.
    instances = _pgserver().PostgresServer._instances
    resolved = pgdata.expanduser().resolve()
    if resolved in instances and not embedded_server_running(resolved):
        del instances[resolved]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = _pgserver().get_server(pgdata, cleanup_mode=None)
    return server.get_uri()


@functools.cache
def embedded_database_url(pgdata: Path, database: str) -> str:
    """URL of `database` on the embedded server, starting it and creating the database if needed."""
    admin_url = start_embedded_server(pgdata)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
        if not exists:
            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
            except psycopg.errors.DuplicateDatabase:
                pass  # another process created it first
    return admin_url.replace("/postgres?", f"/{database}?", 1)


def embedded_server_running(pgdata: Path) -> bool:
    pid_file = pgdata / "postmaster.pid"
    if not pid_file.exists():
        return False
    import psutil

    pid = int(pid_file.read_text().splitlines()[0])
    return psutil.pid_exists(pid)


def stop_embedded_server(pgdata: Path) -> bool:
    """Stop the server cleanly (fast shutdown); returns False when it was not running."""
    if not embedded_server_running(pgdata):
        return False
    import os

    from pgserver._commands import pg_ctl  # pgserver's own wrapper runs pg_ctl as its OS user

    user = "pgserver" if os.geteuid() == 0 else None
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
    embedded_database_url.cache_clear()
    return True
