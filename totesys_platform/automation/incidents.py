"""What is wrong right now, read from the Dagster instance: each open incident by a stable id, with what to say
and where to look. The incident sensor alerts when an id appears and when it goes.

Ids are shared where two signs point at one cause: a table the change sensor cannot read and a failed
`source_table_is_readable` check on its raw asset are the same incident, alerted once."""

from __future__ import annotations

import dagster as dg

from totesys_platform.automation.change_sensor import CHANGE_SENSOR, ChangeCursor
from totesys_platform.automation.policies import WAREHOUSE_FRESHNESS
from totesys_platform.raw.checks import READABLE_CHECK

# A sensor or daemon silent for this many of its intervals (and at least MIN_SILENCE_SECONDS) is an incident.
SILENT_INTERVALS = 3
MIN_SILENCE_SECONDS = 180
DAEMON_SILENCE_SECONDS = 300

Incidents = dict[str, dict[str, str]]


def check_incident_id(asset: str, check_name: str) -> str:
    return f"check {asset}:{check_name}"


def failed_check_incidents(instance: dg.DagsterInstance, check_keys, ui_url: str) -> Incidents:
    """Every check whose latest evaluation failed with ERROR severity."""
    found: Incidents = {}
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(list(check_keys))
    for key, record in latest.items():
        if record.status.value != "FAILED" or record.event is None or record.event.dagster_event is None:
            continue
        evaluation = record.event.dagster_event.event_specific_data
        if evaluation.severity != dg.AssetCheckSeverity.ERROR:
            continue
        asset = key.asset_key.to_user_string()
        found[check_incident_id(asset, key.name)] = {
            "what": f"check {key.name} on {asset} failed: {evaluation.description or 'no description'}",
            "link": f"{ui_url}/assets/{asset}?view=checks",
        }
    return found


def freshness_incidents(instance: dg.DagsterInstance, warehouse_keys, now: float, ui_url: str) -> Incidents:
    """Every warehouse table whose freshness policy has failed (no materialisation within its fail window)."""
    found: Incidents = {}
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


def open_incidents(
    instance: dg.DagsterInstance, check_keys, warehouse_keys, now: float, ui_url: str
) -> dict[str, dict[str, str]]:
    """Incident id -> {what, link}: failed ERROR checks and stale warehouse tables."""
    return {
        **failed_check_incidents(instance, check_keys, ui_url),
        **freshness_incidents(instance, warehouse_keys, now, ui_url),
    }


def _sensor_state(instance: dg.DagsterInstance, name: str):
    """The stored state of the named sensor (the newest-ticking one, should several code locations have it);
    None where the instance keeps no sensor state (an ephemeral one)."""
    if instance.schedule_storage is None:
        return None
    states = [s for s in instance.all_instigator_state() if s.instigator_type.value == "SENSOR" and s.name == name]
    return max(states, key=lambda s: s.instigator_data.last_tick_timestamp or 0, default=None)


def source_incidents(cursor: ChangeCursor, ui_url: str) -> Incidents:
    """The tables the change sensor cannot read, and a source it cannot reach, as its last tick saw them."""
    found: Incidents = {}
    for table, why in sorted(cursor.unreadable.items()):
        found[check_incident_id(f"raw/{table}", READABLE_CHECK)] = {
            "what": f"the change sensor cannot read source table {table}: {why}",
            "link": f"{ui_url}/assets/raw/{table}?view=checks",
        }
    if cursor.unreachable:
        found["source unreachable"] = {
            "what": f"the change sensor cannot reach the totesys source; no table is ingested: {cursor.unreachable}",
            "link": f"{ui_url}/overview/automation",
        }
    return found


def sensor_health_incidents(instance: dg.DagsterInstance, state, interval: int, now: float, ui_url: str) -> Incidents:
    """A change sensor whose last tick failed, or that has not ticked for several intervals."""
    data = state.instigator_data
    last = getattr(data, "last_tick_timestamp", None)
    if not last:
        return {}
    link = f"{ui_url}/overview/automation"
    silence = now - last
    # Silence first: a daemon stopped in the middle of a tick leaves a failed last tick behind it.
    if state.status.value in ("RUNNING", "DECLARED_IN_CODE") and silence > max(
        SILENT_INTERVALS * interval, MIN_SILENCE_SECONDS
    ):
        return {
            f"sensor {state.name} silent": {
                "what": f"sensor {state.name} has not ticked for {silence / 60:.0f} min (interval {interval} s): "
                "is the Dagster daemon running?",
                "link": link,
            }
        }
    if (getattr(data, "last_tick_success_timestamp", None) or 0) < last:
        ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1)
        error = ticks[0].error if ticks and ticks[0].error else None
        why = error.message.strip().splitlines()[0] if error and error.message.strip() else "see its tick log"
        return {f"sensor {state.name} failing": {"what": f"sensor {state.name}'s ticks fail: {why}", "link": link}}
    return {}


def daemon_incidents(instance: dg.DagsterInstance, now: float, ui_url: str) -> Incidents:
    """Every daemon the instance needs whose heartbeat has stopped (one never seen is still starting)."""
    beats = instance.get_daemon_heartbeats()
    found: Incidents = {}
    for daemon in instance.get_required_daemon_types():
        beat = beats.get(daemon)
        if beat is not None and now - beat.timestamp > DAEMON_SILENCE_SECONDS:
            found[f"daemon {daemon} silent"] = {
                "what": f"the Dagster daemon's {daemon} has sent no heartbeat for {(now - beat.timestamp) / 60:.0f} "
                "min: restart the daemon (dagster dev, or the daemon service)",
                "link": f"{ui_url}/deployment/daemons",
            }
    return found


def automation_incidents(instance: dg.DagsterInstance, change_interval: int, now: float, ui_url: str) -> Incidents:
    """What the change sensor's own state says: unreadable tables, an unreachable source, failing or silent
    ticks; and silent daemons."""
    found = daemon_incidents(instance, now, ui_url)
    state = _sensor_state(instance, CHANGE_SENSOR)
    if state is not None:
        found.update(source_incidents(ChangeCursor.parse(state.instigator_data.cursor), ui_url))
        found.update(sensor_health_incidents(instance, state, change_interval, now, ui_url))
    return found
