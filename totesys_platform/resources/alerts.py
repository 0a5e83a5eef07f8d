"""Where alerts go: e-mail over SMTP (TOTESYS_SMTP_*) and/or an SNS topic (TOTESYS_ALERT_SNS_TOPIC_ARN)."""

from __future__ import annotations

import logging
import os
import smtplib
from dataclasses import dataclass
from email.message import EmailMessage

log = logging.getLogger("totesys_platform.alerts")


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
    def from_env(cls, env=None) -> AlertSettings | None:
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


def send_email(alerts: AlertSettings, message: EmailMessage) -> None:
    smtp_class = smtplib.SMTP_SSL if alerts.security == "ssl" else smtplib.SMTP
    with smtp_class(alerts.host, alerts.port, timeout=30) as smtp:
        if alerts.security == "starttls":
            smtp.starttls()
        if alerts.user:
            smtp.login(alerts.user, os.environ.get("TOTESYS_SMTP_PASSWORD", ""))
        smtp.send_message(message)


def publish_sns(topic_arn: str, message: EmailMessage) -> None:
    """The same alert to an SNS topic (AWS deployments); credentials and endpoint from the AWS environment."""
    import boto3

    boto3.client("sns").publish(TopicArn=topic_arn, Subject=message["Subject"][:100], Message=message.get_content())


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
