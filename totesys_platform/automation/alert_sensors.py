"""The two sensors that tell someone: a failed run (e-mailed once per distinct failure) and incidents (one
ALERT when something goes wrong, one RESOLVED when it recovers)."""

from __future__ import annotations

import json
import re
import time

import dagster as dg

from totesys_platform.automation.incidents import automation_incidents, open_incidents
from totesys_platform.resources.alerts import failure_email, incident_email, notify, webserver_url

FAILURE_SENSOR = "totesys_failure_email_sensor"
INCIDENT_SENSOR = "totesys_incident_alert_sensor"
# How many earlier failed runs (since the job last succeeded) a failure is compared with.
FAILURE_LOOKBACK_RUNS = 20


def error_text(error) -> str:
    parts = []
    while error is not None:
        parts.append(error.message.strip())
        error = error.cause
    return "\n".join(parts)


def failure_signature(failures: list[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """What makes two failures the same: the steps and the first line of each error, numbers and ids aside."""
    return tuple(
        sorted(
            (step, re.sub(r"[0-9a-f]{8,}|\d+", "#", (text.strip().splitlines() or [""])[0])) for step, text in failures
        )
    )


def run_failures(instance: dg.DagsterInstance, run_id: str) -> list[tuple[str, str]]:
    events = instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    return [
        (e.dagster_event.step_key or "(run)", error_text(e.dagster_event.event_specific_data.error)) for e in events
    ]


def repeats_a_reported_failure(instance: dg.DagsterInstance, run: dg.DagsterRun, failures) -> bool:
    """True when a failed run of the same job since its last success failed the same way (already e-mailed):
    a failure retried at every tick is one incident, not one e-mail a tick."""
    success = instance.get_run_records(
        dg.RunsFilter(job_name=run.job_name, statuses=[dg.DagsterRunStatus.SUCCESS]), limit=1
    )
    since = success[0].create_timestamp if success else None
    earlier = instance.get_run_records(
        dg.RunsFilter(job_name=run.job_name, statuses=[dg.DagsterRunStatus.FAILURE], created_after=since),
        limit=FAILURE_LOOKBACK_RUNS,
    )
    signature = failure_signature(failures)
    this = instance.get_run_record_by_id(run.run_id)
    return any(
        r.dagster_run.run_id != run.run_id
        and (this is None or r.create_timestamp < this.create_timestamp)
        and failure_signature(run_failures(instance, r.dagster_run.run_id)) == signature
        for r in earlier
    )


@dg.run_failure_sensor(
    name=FAILURE_SENSOR,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="E-mails the run, the failed step and the error when a run fails; a failure that repeats the "
    "previous one (a run retried at every tick) is not e-mailed again until the job has succeeded.",
)
def totesys_failure_email_sensor(context: dg.RunFailureSensorContext):
    failures = [
        (e.step_key or "(run)", error_text(e.event_specific_data.error)) for e in context.get_step_failure_events()
    ]
    if not failures:
        failures = [("(run)", context.failure_event.message or "the run failed")]
    run = context.dagster_run
    if repeats_a_reported_failure(context.instance, run, failures):
        context.log.info(f"run {run.run_id} failed as an earlier run did, already e-mailed; not sending again")
        return
    notify(failure_email(run.run_id, run.job_name, failures, webserver_url()))


def build_incident_sensor(interval_seconds: int, change_interval_seconds: int) -> dg.SensorDefinition:
    @dg.sensor(
        name=INCIDENT_SENSOR,
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Alerts once when an ERROR check fails, a warehouse table goes stale, the change sensor cannot "
        "read a table or the source, or the sensor or a daemon stops ticking; and once when it recovers.",
    )
    def totesys_incident_alert_sensor(context: dg.SensorEvaluationContext):
        graph, now, ui = context.repository_def.asset_graph, time.time(), webserver_url()
        warehouse = [k for k in graph.get_all_asset_keys() if k.path[0] == "warehouse"]
        current = {
            **open_incidents(context.instance, graph.asset_check_keys, warehouse, now, ui),
            **automation_incidents(context.instance, change_interval_seconds, now, ui),
        }
        previous = json.loads(context.cursor) if context.cursor else {}
        opened = {k: v for k, v in current.items() if k not in previous}
        resolved = {k: v for k, v in previous.items() if k not in current}
        for kind, incidents in (("ALERT", opened), ("RESOLVED", resolved)):
            if incidents:
                notify(incident_email(kind, incidents, None))
        context.update_cursor(json.dumps(current, sort_keys=True))
        return dg.SkipReason(f"{len(current)} open incident(s); {len(opened)} new, {len(resolved)} resolved this tick")

    return totesys_incident_alert_sensor
