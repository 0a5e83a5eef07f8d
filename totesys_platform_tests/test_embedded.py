import shutil
import tempfile
from pathlib import Path

import psycopg
import pytest

from totesys_platform.resources.embedded import embedded_server_running, stop_embedded_server
from totesys_platform.resources.postgres import PostgresResource


@pytest.mark.slow
def test_embedded_server_starts_serves_both_databases_stops_and_reuses_its_data():
    home = Path(tempfile.mkdtemp(prefix="tth-", dir="/tmp"))
    try:
        source = PostgresResource(embedded_home=str(home), embedded_database="totesys")
        warehouse = PostgresResource(embedded_home=str(home), embedded_database="warehouse")
        with source.connect() as conn:
            conn.execute("CREATE TABLE kept (v text)")
            conn.execute("INSERT INTO kept VALUES ('still here')")
        with warehouse.connect() as conn:
            assert conn.execute("SELECT current_database()").fetchone()[0] == "warehouse"
        assert embedded_server_running(home / "pgdata")
        assert stop_embedded_server(home / "pgdata") is True
        assert not embedded_server_running(home / "pgdata")
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(f"postgresql://postgres:@/totesys?host={home / 'pgdata'}", connect_timeout=2)
        # Started again on demand, with the same data.
        with source.connect() as conn:
            assert conn.execute("SELECT v FROM kept").fetchone()[0] == "still here"
    finally:
        stop_embedded_server(home / "pgdata")
        shutil.rmtree(home, ignore_errors=True)
