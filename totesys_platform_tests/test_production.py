"""The production profile: the shipped deploy/dagster.yaml (dagster-postgres storage, queued runs, pools,
S3 compute logs, the ECS run launcher) loaded for real, both zones on S3 buckets and database credentials
from Secrets Manager, all on a moto server over HTTP and a real PostgreSQL."""

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import dagster as dg
import psycopg
import pytest

from totesys_platform.catalog import WAREHOUSE_TABLES
from totesys_platform.reports.specs import REPORTS
from totesys_platform.settings import load_settings
from totesys_platform_tests.conftest import REPO, make_settings, run_graph
from totesys_platform_tests.test_pipeline import warehouse_rows

BIN = Path(sys.executable).parent
SHIPPED = REPO / "deploy" / "dagster.yaml"


@pytest.fixture
def aws(moto_endpoint, monkeypatch, sample_source, new_database):
    """Buckets, secrets and an ECS run task definition on moto; the instance database on PostgreSQL."""
    s3 = boto3.client("s3")
    for bucket in ("tote-ingestion", "tote-processed", "tote-dagster-logs"):
        s3.create_bucket(Bucket=bucket)
    secrets = boto3.client("secretsmanager")
    warehouse_url = new_database("wh_prod")
    suffix = uuid.uuid4().hex[:8]  # the moto server lives for the whole session
    for name, url in (("source", sample_source), ("warehouse", warehouse_url)):
        secrets.create_secret(Name=f"totesys/{name}-{suffix}", SecretString=json.dumps({"url": url}))
    boto3.client("ecs").register_task_definition(
        family="totesys-run", containerDefinitions=[{"name": "run", "image": "totesys-platform:latest", "memory": 4096}]
    )
    instance_db = new_database("dagster")
    env = {
        "DAGSTER_PG_URL": instance_db.replace("postgresql://", "postgresql+psycopg2://", 1),
        "TOTESYS_RUN_TASK_DEFINITION": "totesys-run",
        "TOTESYS_COMPUTE_LOG_BUCKET": "tote-dagster-logs",
        "TOTESYS_INGESTION_URL": "s3://tote-ingestion/totesys",
        "TOTESYS_PROCESSED_URL": "s3://tote-processed/star",
        "TOTESYS_SOURCE_SECRET_ID": f"totesys/source-{suffix}",
        "TOTESYS_WAREHOUSE_SECRET_ID": f"totesys/warehouse-{suffix}",
        "TOTESYS_MAX_RETRIES": "0",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("TOTESYS_SOURCE_URL", raising=False)
    monkeypatch.delenv("TOTESYS_WAREHOUSE_URL", raising=False)
    return {**env, "instance_db": instance_db, "warehouse_url": warehouse_url}


def shipped_instance(tmp_path: Path) -> dg.DagsterInstance:
    """The shipped deploy/dagster.yaml, byte for byte, as DAGSTER_HOME/dagster.yaml."""
    home = tmp_path / "dagster_home"
    home.mkdir(parents=True)
    shutil.copyfile(SHIPPED, home / "dagster.yaml")
    return dg.DagsterInstance.from_config(str(home))


@pytest.mark.slow
def test_full_pipeline_on_the_production_profile_matches_the_local_run(aws, tmp_path, sample_source, new_database):
    from dagster_aws.ecs import EcsRunLauncher
    from dagster_aws.s3.compute_log_manager import S3ComputeLogManager
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

    settings = load_settings({**os.environ, "TOTESYS_HOME": str(tmp_path / "home")})
    assert settings.source_url is None and settings.source_secret_id  # credentials only from the secret
    with shipped_instance(tmp_path) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.run_launcher, EcsRunLauncher)
        assert isinstance(instance.compute_log_manager, S3ComputeLogManager)
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
        assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 4
        result = run_graph(settings, instance=instance)
        assert result.success
        run_id = result.run_id
    local = make_settings(tmp_path / "local", sample_source, new_database("wh_local"))
    assert run_graph(local).success
    prod = type(local)(**{**local.__dict__, "warehouse_url": aws["warehouse_url"]})
    for table in WAREHOUSE_TABLES:
        assert warehouse_rows(prod, table.name) == warehouse_rows(local, table.name), table.name
    s3 = boto3.client("s3")
    for bucket, prefix in (("tote-ingestion", "totesys/sales_order/"), ("tote-processed", "star/fact_sales_order/")):
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]]
        log = f"{prefix}_delta_log/"
        assert f"{log}00000000000000000000.json" in keys, keys  # one Delta table, one commit
        assert f"{log}00000000000000000000.checkpoint.parquet" in keys, keys  # checkpointed from the start
        assert sum(k.endswith(".parquet") and not k.startswith(log) for k in keys) == 1, keys  # one data file
    with psycopg.connect(aws["instance_db"]) as conn:
        assert conn.execute("SELECT count(*) FROM runs WHERE run_id = %s", (run_id,)).fetchone()[0] == 1
        materialized = conn.execute(
            "SELECT count(DISTINCT asset_key) FROM event_logs WHERE run_id = %s AND dagster_event_type = %s",
            (run_id, "ASSET_MATERIALIZATION"),
        ).fetchone()[0]
        assert (
            materialized == 11 + 18 + 18 + 1 + len(REPORTS) + 1
        )  # raw, processed, warehouse and source_deletions, reports, dashboard
    # Nothing secret reached the instance database.
    with psycopg.connect(aws["instance_db"]) as conn:
        dump = "".join(str(r) for r in conn.execute("SELECT event FROM event_logs").fetchall())
    assert aws["warehouse_url"] not in dump and sample_source not in dump


def test_dagster_definitions_validate_passes_with_production_settings(aws, tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(SHIPPED, home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home), "TOTESYS_HOME": str(tmp_path / "home")}
    done = subprocess.run(
        [str(BIN / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Validation successful" in done.stdout + done.stderr


def test_missing_production_settings_are_named(aws, tmp_path, monkeypatch):
    monkeypatch.delenv("DAGSTER_PG_URL")
    with pytest.raises(Exception, match="DAGSTER_PG_URL"):
        shipped_instance(tmp_path)
    monkeypatch.setenv("DAGSTER_PG_URL", aws["DAGSTER_PG_URL"])
    monkeypatch.setenv("TOTESYS_RUN_TASK_DEFINITION", "no-such-task")
    with pytest.raises(Exception, match="Unable to describe task definition"):  # ECS does not echo the name
        shipped_instance(tmp_path / "again").run_launcher  # noqa: B018 - the launcher is built on first use


def test_the_local_instance_switches_to_postgresql_with_one_setting(tmp_path, new_database, monkeypatch):
    from dagster._core.storage.runs import SqliteRunStorage
    from dagster_postgres import PostgresRunStorage

    from totesys_platform.cli import ensure_dagster_home
    from totesys_platform.settings import SettingsError

    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    local = load_settings({"TOTESYS_HOME": str(tmp_path / "sqlite")})
    with dg.DagsterInstance.from_config(str(ensure_dagster_home(local))) as instance:
        assert isinstance(instance.run_storage, SqliteRunStorage)
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
    url = new_database("dagster_local").replace("postgresql://", "postgresql+psycopg2://", 1)
    monkeypatch.setenv("DAGSTER_PG_URL", url)
    on_postgres = load_settings({"TOTESYS_HOME": str(tmp_path / "sqlite"), "DAGSTER_PG_URL": url})
    with dg.DagsterInstance.from_config(str(ensure_dagster_home(on_postgres))) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
    with pytest.raises(SettingsError, match="postgresql\\+psycopg2"):
        load_settings({"DAGSTER_PG_URL": "postgresql://u:secret@h/dagster"})
