"""End to end under `dagster dev`: the daemon's change sensor keeps the warehouse fresh with nobody clicking."""

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from totesys_platform.automation import IN_FLIGHT
from totesys_platform.cli import ensure_dagster_home
from totesys_platform_tests.conftest import REPO, free_port, make_settings, stop_process_group
from totesys_platform_tests.test_definitions import graphql

BIN = Path(sys.executable).parent


def count(url: str, query: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(query).fetchone()[0]


def wait_for(predicate, timeout: float, what: str, server: subprocess.Popen) -> float:
    """Poll until predicate() holds; return when it did. Fails with the server's exit if it died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, f"dagster dev exited with {server.returncode} while waiting for {what}"
        try:
            if predicate():
                return time.monotonic()
        except psycopg.Error:
            pass  # the warehouse tables do not exist before the first load
        time.sleep(1)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def fact_payment_versions(settings) -> int:
    return count(settings.warehouse_url, f'SELECT count(*) FROM "{settings.warehouse_schema}".fact_payment')


def platform_env(settings, dagster_home: Path, **extra: str) -> dict[str, str]:
    """The environment of a `dagster dev` for these settings, its instance config written as `totesys` does."""
    os.environ["DAGSTER_HOME"], saved = str(dagster_home), os.environ.get("DAGSTER_HOME")
    try:
        ensure_dagster_home(settings)  # the shipped local instance config, as `totesys` writes it
    finally:
        os.environ.pop("DAGSTER_HOME") if saved is None else os.environ.update(DAGSTER_HOME=saved)
    return {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home),
        "TOTESYS_HOME": str(settings.home),
        "TOTESYS_SOURCE_URL": settings.source_url,
        "TOTESYS_WAREHOUSE_URL": settings.warehouse_url,
        "TOTESYS_INGESTION_URL": settings.ingestion_url,
        "TOTESYS_PROCESSED_URL": settings.processed_url,
        "TOTESYS_SENSOR_INTERVAL_SECONDS": "5",
        **extra,
    }


@contextlib.contextmanager
def dagster_dev(env: dict[str, str]):
    """A real `dagster dev` (webserver and daemon) on the project's workspace, stopped with its whole group.

    The instance's SQLite storage is created first, here: created by the test's own instance while `dagster
    dev` creates it too, its schedule database can get two migration heads, and the daemon then never ticks."""
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        instance.get_runs(limit=1)
        instance.all_instigator_state()
    port = free_port()
    server = subprocess.Popen(
        [str(BIN / "dagster"), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group, so nothing survives the test
    )
    server.port = port  # type: ignore[attr-defined]  # the webserver's, for GraphQL
    try:
        yield server
    finally:
        stop_process_group(server)


COLUMNS_QUERY = """{ assetNodes(assetKeys: [{path: ["warehouse", "dim_staff_history"]}, {path: ["processed", "dim_staff"]}]) {
  assetKey { path }
  metadataEntries { label
    ... on TableSchemaMetadataEntry { schema { columns { name type description } } }
    ... on TableColumnLineageMetadataEntry { lineage { columnName columnDeps { assetKey { path } columnName } } }
  } } }"""


@pytest.mark.e2e
@pytest.mark.slow
def test_dagster_dev_sensor_runs_bring_source_changes_to_the_warehouse(tmp_path, sample_source, new_database):
    settings = make_settings(tmp_path, sample_source, new_database("warehouse"))
    dagster_home = tmp_path / "dagster_home"
    env = platform_env(settings, dagster_home)
    source_payments = count(sample_source, "SELECT count(*) FROM payment")
    with dagster_dev(env) as server:
        # 1. Nobody clicks: the sensor's first tick sees every table as changed and runs the whole graph.
        wait_for(lambda: fact_payment_versions(settings) == source_payments, 300, "the first sensor run", server)
        # The UI's catalog shows each table's columns, meanings and lineage.
        nodes = {
            tuple(n["assetKey"]["path"]): n["metadataEntries"]
            for n in graphql(server.port, COLUMNS_QUERY)["data"]["assetNodes"]
        }
        history = next(e for e in nodes[("warehouse", "dim_staff_history")] if e["label"] == "dagster/column_schema")
        assert [(c["name"], c["type"]) for c in history["schema"]["columns"]][-3:] == [
            ("valid_from", "timestamp"),
            ("valid_to", "timestamp"),
            ("is_current", "boolean"),
        ]
        assert all(c["description"] for c in history["schema"]["columns"])
        lineage = next(e for e in nodes[("processed", "dim_staff")] if e["label"] == "dagster/column_lineage")
        department = next(e for e in lineage["lineage"] if e["columnName"] == "department_name")
        assert department["columnDeps"] == [
            {"assetKey": {"path": ["raw", "department"]}, "columnName": "department_name"}
        ]
        # 2. A business event in totesys reaches the warehouse through the next sensor tick.
        with psycopg.connect(sample_source) as conn:
            conn.execute("UPDATE payment SET paid = NOT paid, last_updated = now() WHERE payment_id = 1")
        changed_at = time.monotonic()
        reached_at = wait_for(lambda: fact_payment_versions(settings) == source_payments + 1, 300, "the change", server)
        instance = dg.DagsterInstance.from_config(str(dagster_home))
        wait_for(lambda: not instance.get_runs(dg.RunsFilter(statuses=IN_FLIGHT)), 120, "the runs to finish", server)
        print(f"\nsource change -> warehouse under dagster dev (5 s sensor interval): {reached_at - changed_at:.1f} s")
    assert server.returncode is not None
    runs = instance.get_runs()
    assert len(runs) >= 2
    assert all(r.tags.get("dagster/sensor_name") == "totesys_change_sensor" for r in runs)
    assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
    assert any(r.tags.get("totesys/changed_tables") == "payment" for r in runs)
