"""What runs the platform by itself: the change sensor, the alert sensors, the nightly schedule, freshness
and retry policies."""

from totesys_platform.automation.alert_sensors import (
    FAILURE_SENSOR,
    INCIDENT_SENSOR,
    build_incident_sensor,
    totesys_failure_email_sensor,
)
from totesys_platform.automation.change_sensor import CHANGE_SENSOR, HEARTBEAT, IN_FLIGHT, build_change_sensor
from totesys_platform.automation.incidents import open_incidents
from totesys_platform.automation.policies import (
    NIGHTLY_ONLY_CHECKS,
    RETRY_POLICY,
    WAREHOUSE_FRESHNESS,
    build_schedules,
    routine_checks,
)

__all__ = [
    "CHANGE_SENSOR",
    "FAILURE_SENSOR",
    "HEARTBEAT",
    "INCIDENT_SENSOR",
    "IN_FLIGHT",
    "NIGHTLY_ONLY_CHECKS",
    "RETRY_POLICY",
    "WAREHOUSE_FRESHNESS",
    "build_change_sensor",
    "build_incident_sensor",
    "build_schedules",
    "open_incidents",
    "routine_checks",
    "totesys_failure_email_sensor",
]
