"""Assemble the Dagster Definitions from validated settings (the environment is read in settings.py)."""

from __future__ import annotations

import gc
import os

import dagster as dg

from totesys_platform.automation import (
    RETRY_POLICY,
    WAREHOUSE_FRESHNESS,
    build_change_sensor,
    build_incident_sensor,
    build_schedules,
    totesys_failure_email_sensor,
)
from totesys_platform.processed.assets import build_processed_assets
from totesys_platform.raw.assets import build_raw_assets
from totesys_platform.raw.checks import RECONCILE_JOB, build_reconciliation_check
from totesys_platform.reports.assets import build_report_assets
from totesys_platform.resources.io_managers import lake_io_manager
from totesys_platform.resources.lake import LakeZone
from totesys_platform.resources.postgres import PostgresResource
from totesys_platform.settings import Settings, load_settings
from totesys_platform.warehouse.assets import WarehouseConfig, build_source_deletions_asset, build_warehouse_assets
from totesys_platform.warehouse.checks import build_checks

# Dagster's default multiprocess executor starts a Python process per step (~2 s each here, ~80 s for
# this graph); the work itself takes seconds, so every run executes in one process. See README.
EXECUTOR = dg.in_process_executor


def _secret_or_value(name: str, value: str | None) -> str | dg.EnvVar | None:
    """Pass a URL taken from the environment as an EnvVar, so the UI shows its name, not its value."""
    if value and os.environ.get(name) == value:
        return dg.EnvVar(name)
    return value


# role -> (setting, embedded database name, secret id attribute of Settings)
DATABASES = {
    "source": ("TOTESYS_SOURCE_URL", "totesys", "source_secret_id"),
    "warehouse": ("TOTESYS_WAREHOUSE_URL", "warehouse", "warehouse_secret_id"),
}


def database_resource(settings: Settings, role: str) -> PostgresResource:
    """The source or warehouse database: a URL, a Secrets Manager secret, or the embedded server."""
    setting, embedded, secret = DATABASES[role]
    return PostgresResource(
        url=_secret_or_value(setting, getattr(settings, f"{role}_url")),
        setting_name=setting,
        embedded_home=str(settings.home),
        embedded_database=embedded,
        secret_id=getattr(settings, secret),
    )


def build_resources(settings: Settings) -> dict[str, object]:
    """The same resource keys in every deployment; only locations and credentials differ."""
    ingestion = LakeZone(url=settings.ingestion_url, zone_name="ingestion")
    processed = LakeZone(url=settings.processed_url, zone_name="processed")
    return {
        "source_db": database_resource(settings, "source"),
        "warehouse_db": database_resource(settings, "warehouse"),
        "ingestion_zone": ingestion,
        "processed_zone": processed,
        "raw_io_manager": lake_io_manager("ingestion_zone"),
        "processed_io_manager": lake_io_manager("processed_zone"),
        "reports_zone": LakeZone(url=settings.reports_url, zone_name="reports"),
        "warehouse": WarehouseConfig(schema_name=settings.warehouse_schema),
    }


def build_assets(settings: Settings) -> list[dg.AssetsDefinition]:
    retry = {"retry_policy": RETRY_POLICY._replace(max_retries=settings.max_retries)} if settings.max_retries else {}
    return [
        build_raw_assets(lookback_seconds=settings.lookback_seconds, chunk_rows=settings.extract_chunk_rows, **retry),
        *build_processed_assets(**retry),
        *build_warehouse_assets(freshness_policy=WAREHOUSE_FRESHNESS, **retry),
        build_source_deletions_asset(freshness_policy=WAREHOUSE_FRESHNESS, **retry),
        *build_report_assets(**retry),
    ]


def build_definitions(settings: Settings) -> dg.Definitions:
    pipeline = dg.define_asset_job(
        "totesys_pipeline_job", selection=dg.AssetSelection.all(), description="Every asset, raw to warehouse."
    )
    reconcile_check = build_reconciliation_check(settings.lookback_seconds)
    reconcile = dg.define_asset_job(
        RECONCILE_JOB,
        selection=dg.AssetSelection.checks(reconcile_check),
        description="Compare the source with the ingestion zone; record deletes, quiet updates and late rows.",
    )
    return dg.Definitions(
        assets=build_assets(settings),
        asset_checks=[*build_checks(), reconcile_check],
        jobs=[pipeline, reconcile],
        sensors=[
            build_change_sensor(settings.sensor_interval_seconds),
            totesys_failure_email_sensor,
            build_incident_sensor(settings.alert_interval_seconds, settings.sensor_interval_seconds),
        ],
        schedules=build_schedules(pipeline, reconcile),
        resources=build_resources(settings),
        executor=EXECUTOR,
    )


defs = build_definitions(load_settings())

# What is loaded by now (Dagster, Polars, Delta Lake, plotly and these definitions: a few hundred thousand
# objects) lives as long as the process. Freezing it keeps Python's cyclic collector from walking it again
# at every full collection during a run: 0.2-0.4 s of a 2.5 s incremental run (benchmarks/results/README.md).
gc.freeze()
