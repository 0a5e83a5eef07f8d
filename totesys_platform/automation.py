"""What runs the platform by itself: the change sensor, failure e-mails, the nightly schedule, freshness
and retry policies."""

import datetime as dt
import hashlib
import json
import logging
import os
import smtplib
import time
from dataclasses import dataclass
from email.message import EmailMessage

import dagster as dg
import psycopg
from psycopg import sql

from totesys_platform.catalog import SOURCE_TABLES
from totesys_platform.raw.checks import raw_key
from totesys_platform.resources.postgres import PostgresResource

log = logging.getLogger("totesys_platform.automation")

CHANGE_SENSOR = "totesys_change_sensor"
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]
# The spec: a source change reaches the warehouse within 30 minutes. Warn at half of that.
WAREHOUSE_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=dt.timedelta(minutes=30), warn_window=dt.timedelta(minutes=15)
)
# A quiet source causes no runs, so nothing would renew the warehouse's materialisations and the freshness
# policy would report stale data that is in fact current. After this long without a sensor run, the
# sensor runs the graph anyway (a cheap no-op when nothing changed) to confirm the warehouse is current.
HEARTBEAT = dt.timedelta(minutes=10)
# Transient database and S3 errors are retried with backoff; permanent ones raise dg.Failure(allow_retries=False).
RETRY_POLICY = dg.RetryPolicy(max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL)


def source_watermarks(conn: psycopg.Connection) -> dict[str, str | None]:
    """max(last_updated) of every catalog table, in one round trip (identifiers from the catalog)."""
    query = sql.SQL(" UNION ALL ").join(
        sql.SQL("SELECT {}, max({})::text FROM {}").format(
            sql.Literal(t.name), sql.Identifier(t.cursor), sql.Identifier(t.name)
        )
        for t in SOURCE_TABLES
    )
    return dict(conn.execute(query).fetchall())


def _sensor_runs(instance: dg.DagsterInstance, statuses=None, limit: int = 1) -> list[dg.RunRecord]:
    filters = dg.RunsFilter(statuses=statuses or [], tags={"dagster/sensor_name": CHANGE_SENSOR})
    return list(instance.get_run_records(filters=filters, limit=limit))


def _why_run_unchanged(last: dg.RunRecord | None, now: float) -> str | None:
    """A run key when a run is due although no table changed: the last one failed, or the heartbeat."""
    if last is None:
        return None
    if last.dagster_run.status == dg.DagsterRunStatus.FAILURE:
        return f"retry-{last.dagster_run.run_id}"
    ended = last.end_time or last.create_timestamp.timestamp()
    if now - ended >= HEARTBEAT.total_seconds():
        return f"heartbeat-{int(now // HEARTBEAT.total_seconds())}"
    return None


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
        ),
        key=lambda k: k.to_user_string(),
    )


def build_change_sensor(interval_seconds: int) -> dg.SensorDefinition:
    @dg.sensor(
        name=CHANGE_SENSOR,
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        target=dg.AssetSelection.all(),
        description="Every few minutes, asks totesys which tables changed and runs their raw assets and everything downstream.",
    )
    def totesys_change_sensor(context: dg.SensorEvaluationContext, source_db: PostgresResource):
        if _sensor_runs(context.instance, IN_FLIGHT):
            return dg.SkipReason("a run started by this sensor is still in flight; not piling up another")
        with source_db.connect() as conn:
            current = source_watermarks(conn)
        previous = json.loads(context.cursor) if context.cursor else {}
        changed = sorted(t for t, value in current.items() if value != previous.get(t))
        last = next(iter(_sensor_runs(context.instance)), None)
        due = None if changed else _why_run_unchanged(last, time.time())
        if due:
            changed, run_key = sorted(current), due
        elif not changed:
            return dg.SkipReason("no catalog table changed since the last run")
        else:
            run_key = hashlib.sha256(json.dumps(current, sort_keys=True).encode()).hexdigest()[:16]
        selection = dg.AssetSelection.assets(*(raw_key(t) for t in changed)).downstream()
        keys = selection.resolve(context.repository_def.asset_graph)
        context.update_cursor(json.dumps(current))
        graph = context.repository_def.asset_graph
        return dg.RunRequest(
            run_key=run_key,
            asset_selection=sorted(keys),
            asset_check_keys=routine_checks(graph, keys),
            tags={"totesys/changed_tables": ",".join(changed)},
        )

    return totesys_change_sensor


# --- Failure alerts ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AlertSettings:
    host: str
    port: int
    security: str  # starttls, ssl or none
    sender: str
    recipients: tuple[str, ...]
    user: str | None
    webserver_url: str

    @classmethod
    def from_env(cls, env=None) -> "AlertSettings | None":
        env = os.environ if env is None else env
        if not env.get("TOTESYS_SMTP_HOST") or not env.get("TOTESYS_ALERT_TO"):
            return None
        security = env.get("TOTESYS_SMTP_SECURITY", "starttls")
        if security not in ("starttls", "ssl", "none"):
            raise ValueError(f"TOTESYS_SMTP_SECURITY={security!r} must be starttls, ssl or none")
        return cls(
            host=env["TOTESYS_SMTP_HOST"],
            port=int(env.get("TOTESYS_SMTP_PORT") or {"ssl": 465, "starttls": 587}.get(security, 25)),
            security=security,
            sender=env.get("TOTESYS_ALERT_FROM") or "totesys-platform@localhost",
            recipients=tuple(r.strip() for r in env["TOTESYS_ALERT_TO"].split(",") if r.strip()),
            user=env.get("TOTESYS_SMTP_USER") or None,
            webserver_url=webserver_url(env),
        )


def webserver_url(env=None) -> str:
    """Where the UI is, for links in alerts."""
    env = os.environ if env is None else env
    return (env.get("TOTESYS_WEBSERVER_URL") or "http://127.0.0.1:3000").rstrip("/")


def failure_email(
    run_id: str, job_name: str, failures: list[tuple[str, str]], ui_url: str, alerts: AlertSettings | None = None
) -> EmailMessage:
    """The alert: subject and body name the run, the failed step and the error, with a link to the run."""
    message = EmailMessage()
    first_step = failures[0][0] if failures else "(run)"
    message["Subject"] = f"[totesys] run {run_id[:8]} of {job_name} failed at {first_step}"
    if alerts is not None:
        message["From"] = alerts.sender
        message["To"] = ", ".join(alerts.recipients)
    lines = [f"Run {run_id} of {job_name} failed.", f"Open it: {ui_url}/runs/{run_id}", ""]
    for step, error in failures:
        lines += [f"Step {step}:", error.strip(), ""]
    message.set_content("\n".join(lines))
    return message


def send_email(alerts: AlertSettings, message: EmailMessage) -> None:
    smtp_class = smtplib.SMTP_SSL if alerts.security == "ssl" else smtplib.SMTP
    with smtp_class(alerts.host, alerts.port, timeout=30) as smtp:
        if alerts.security == "starttls":
            smtp.starttls()
        if alerts.user:
            smtp.login(alerts.user, os.environ.get("TOTESYS_SMTP_PASSWORD", ""))
        smtp.send_message(message)


def _error_text(error) -> str:
    parts = []
    while error is not None:
        parts.append(error.message.strip())
        error = error.cause
    return "\n".join(parts)


@dg.run_failure_sensor(
    name="totesys_failure_email_sensor",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="E-mails the run, the failed step and the error for every failed run (TOTESYS_SMTP_* settings).",
)
def totesys_failure_email_sensor(context: dg.RunFailureSensorContext):
    failures = [
        (e.step_key or "(run)", _error_text(e.event_specific_data.error)) for e in context.get_step_failure_events()
    ]
    if not failures:
        failures = [("(run)", context.failure_event.message or "the run failed")]
    run = context.dagster_run
    notify(failure_email(run.run_id, run.job_name, failures, webserver_url()))


def publish_sns(topic_arn: str, message: EmailMessage) -> None:
    """The same alert to an SNS topic (AWS deployments); credentials and endpoint from the AWS environment."""
    import boto3

    boto3.client("sns").publish(TopicArn=topic_arn, Subject=message["Subject"][:100], Message=message.get_content())


# --- Incident alerts: failed ERROR checks and stale warehouse tables ------------------------------

INCIDENT_SENSOR = "totesys_incident_alert_sensor"


def open_incidents(
    instance: dg.DagsterInstance, check_keys, warehouse_keys, now: float, ui_url: str
) -> dict[str, dict[str, str]]:
    """Incident id -> {what, link}: every check whose latest evaluation failed with ERROR severity, and every
    warehouse table whose freshness policy has failed (no materialisation within its fail window)."""
    found: dict[str, dict[str, str]] = {}
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(list(check_keys))
    for key, record in latest.items():
        if record.status.value != "FAILED" or record.event is None or record.event.dagster_event is None:
            continue
        evaluation = record.event.dagster_event.event_specific_data
        if evaluation.severity != dg.AssetCheckSeverity.ERROR:
            continue
        asset = key.asset_key.to_user_string()
        found[f"check {asset}:{key.name}"] = {
            "what": f"check {key.name} on {asset} failed: {evaluation.description or 'no description'}",
            "link": f"{ui_url}/assets/{asset}?view=checks",
        }
    window = WAREHOUSE_FRESHNESS.fail_window.to_timedelta().total_seconds()
    for key in warehouse_keys:
        event = instance.get_latest_materialization_event(key)
        if event is None:  # never materialised yet: the first backfill, not a lapse
            continue
        age = now - event.timestamp
        if age > window:
            asset = key.to_user_string()
            found[f"freshness {asset}"] = {
                "what": f"{asset} breaks its freshness policy: last materialised {age / 60:.0f} min ago "
                f"(fail window {window / 60:.0f} min)",
                "link": f"{ui_url}/assets/{asset}",
            }
    return found


def incident_email(kind: str, incidents: dict[str, dict[str, str]], alerts: AlertSettings | None) -> EmailMessage:
    """One message per change of state: `kind` is ALERT (new incidents) or RESOLVED (ended ones)."""
    message = EmailMessage()
    first = next(iter(incidents.values()))["what"]
    more = f" (+{len(incidents) - 1} more)" if len(incidents) > 1 else ""
    message["Subject"] = f"[totesys] {kind}: {first}"[:180] + more
    if alerts is not None:
        message["From"] = alerts.sender
        message["To"] = ", ".join(alerts.recipients)
    lines = []
    for incident in incidents.values():
        lines += [f"{kind}: {incident['what']}", f"Open it: {incident['link']}", ""]
    message.set_content("\n".join(lines))
    return message


def notify(message: EmailMessage) -> bool:
    """Send by e-mail and/or SNS, as configured; False (and a warning) when neither is."""
    alerts = AlertSettings.from_env()
    topic = os.environ.get("TOTESYS_ALERT_SNS_TOPIC_ARN")
    if alerts is None and not topic:
        log.warning(
            "alerts are off: set TOTESYS_SMTP_HOST and TOTESYS_ALERT_TO (e-mail) or"
            " TOTESYS_ALERT_SNS_TOPIC_ARN (SNS) to receive them"
        )
        return False
    if alerts is not None:
        if not message["To"]:
            message["From"], message["To"] = alerts.sender, ", ".join(alerts.recipients)
        send_email(alerts, message)
    if topic:
        publish_sns(topic, message)
    return True


@dg.sensor(
    name=INCIDENT_SENSOR,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Alerts once when an ERROR check fails or a warehouse table goes stale, and once when it recovers.",
)
def totesys_incident_alert_sensor(context: dg.SensorEvaluationContext):
    graph = context.repository_def.asset_graph
    warehouse = [k for k in graph.get_all_asset_keys() if k.path[0] == "warehouse"]
    current = open_incidents(context.instance, graph.asset_check_keys, warehouse, time.time(), webserver_url())
    previous = json.loads(context.cursor) if context.cursor else {}
    opened = {k: v for k, v in current.items() if k not in previous}
    resolved = {k: v for k, v in previous.items() if k not in current}
    for kind, incidents in (("ALERT", opened), ("RESOLVED", resolved)):
        if incidents:
            notify(incident_email(kind, incidents, None))
    context.update_cursor(json.dumps(current, sort_keys=True))
    return dg.SkipReason(f"{len(current)} open incident(s); {len(opened)} new, {len(resolved)} resolved this tick")


def build_schedules(job) -> list[dg.ScheduleDefinition]:
    return [
        dg.ScheduleDefinition(
            name="nightly_reconciliation_schedule",
            job=job,
            cron_schedule="0 2 * * *",
            default_status=dg.DefaultScheduleStatus.RUNNING,
            description="02:00 every night: the whole graph end to end (catches anything a sensor tick missed).",
        )
    ]
