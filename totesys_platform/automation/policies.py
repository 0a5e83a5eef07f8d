"""Freshness, retries, the routine and nightly checks, and the nightly schedule."""

import datetime as dt

import dagster as dg

from totesys_platform.raw.checks import RECONCILE_CHECK

# The spec: a source change reaches the warehouse within 30 minutes. Warn at half of that.
WAREHOUSE_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=dt.timedelta(minutes=30), warn_window=dt.timedelta(minutes=15)
)
# Transient database and S3 errors are retried with backoff; permanent ones raise dg.Failure(allow_retries=False).
RETRY_POLICY = dg.RetryPolicy(max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL)

# Full-table warehouse rule checks scan every fact row: they run nightly (and on demand), not every few
# minutes. Each sensor run is still guarded by the raw and blocking processed checks, the warehouse's own
# constraints, and the reconciliation counts.
NIGHTLY_ONLY_CHECKS = ("_meets_the_star_schema_rules",)


def routine_checks(asset_graph, assets) -> list[dg.AssetCheckKey]:
    """The checks a sensor run includes for the assets it materialises."""
    return sorted(
        (
            key
            for key in asset_graph.asset_check_keys
            if key.asset_key in assets
            and not (key.asset_key.path[0] == "warehouse" and key.name.endswith(NIGHTLY_ONLY_CHECKS))
            and key.name != RECONCILE_CHECK
        ),
        key=lambda k: k.to_user_string(),
    )


def build_schedules(job, reconcile_job) -> list[dg.ScheduleDefinition]:
    return [
        dg.ScheduleDefinition(
            name="nightly_source_reconciliation_schedule",
            job=reconcile_job,
            cron_schedule="30 1 * * *",
            default_status=dg.DefaultScheduleStatus.RUNNING,
            description="01:30 every night: compare the source with the lake (deletes, quiet updates, late rows),"
            " before the 02:00 run carries what it found to the warehouse.",
        ),
        dg.ScheduleDefinition(
            name="nightly_reconciliation_schedule",
            job=job,
            cron_schedule="0 2 * * *",
            default_status=dg.DefaultScheduleStatus.RUNNING,
            description="02:00 every night: the whole graph end to end (catches anything a sensor tick missed).",
        ),
    ]
