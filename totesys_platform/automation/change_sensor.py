"""The change sensor: every few minutes, which totesys tables changed; their raw assets and everything
downstream run. A table it cannot read is named in its cursor (the incident sensor alerts on it) and left
out of the runs, so the tables it can read keep flowing."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from dataclasses import dataclass, field

import dagster as dg

from totesys_platform.automation.policies import routine_checks
from totesys_platform.raw.checks import raw_key
from totesys_platform.raw.probe import SourceProbe, probe_source
from totesys_platform.resources.postgres import PostgresResource

CHANGE_SENSOR = "totesys_change_sensor"
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]
# A quiet source causes no runs, so nothing would renew the warehouse's materialisations and the freshness
# policy would report stale data that is in fact current. After this long without a sensor run, the
# sensor runs the graph anyway (a cheap no-op when nothing changed) to confirm the warehouse is current.
HEARTBEAT = dt.timedelta(minutes=10)
# A table readable again after an incident is run once even if its watermark did not move, so its checks
# are evaluated again; while a run is in flight it is remembered by this placeholder watermark.
RECOVERED = "(readable again)"


@dataclass(frozen=True)
class ChangeCursor:
    """The sensor's memory: the watermark of each table when it last requested it, and what it cannot read."""

    watermarks: dict[str, str | None] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)
    unreachable: str | None = None

    @classmethod
    def parse(cls, text: str | None) -> ChangeCursor:
        if not text:
            return cls()
        data = json.loads(text)
        if "watermarks" not in data:  # an earlier release kept only {table: watermark}
            return cls(watermarks=data)
        return cls(data["watermarks"], data.get("unreadable") or {}, data.get("unreachable"))

    def dumps(self) -> str:
        state = {"watermarks": self.watermarks, "unreadable": self.unreadable, "unreachable": self.unreachable}
        return json.dumps(state, sort_keys=True)


def changed_tables(previous: ChangeCursor, probe: SourceProbe) -> list[str]:
    """Readable tables whose watermark moved, and those readable again after an incident."""
    return sorted(
        t for t, mark in probe.watermarks.items() if mark != previous.watermarks.get(t) or t in previous.unreadable
    )


def advanced(previous: ChangeCursor, probe: SourceProbe) -> ChangeCursor:
    """The cursor once the readable tables are requested; an unreadable table keeps its last watermark."""
    return ChangeCursor({**previous.watermarks, **probe.watermarks}, probe.unreadable, probe.unreachable)


def held(previous: ChangeCursor, probe: SourceProbe) -> ChangeCursor:
    """The cursor when nothing is requested: watermarks kept, what is unreadable now recorded."""
    recovered = {t: RECOVERED for t in previous.unreadable if t in probe.watermarks}
    return ChangeCursor({**previous.watermarks, **recovered}, probe.unreadable, probe.unreachable)


def _sensor_runs(instance: dg.DagsterInstance, statuses=None, limit: int = 1) -> list[dg.RunRecord]:
    filters = dg.RunsFilter(statuses=statuses or [], tags={"dagster/sensor_name": CHANGE_SENSOR})
    return list(instance.get_run_records(filters=filters, limit=limit))


def why_run_unchanged(last: dg.RunRecord | None, now: float) -> str | None:
    """A run key when a run is due although no table changed: the last one failed, or the heartbeat."""
    if last is None:
        return None
    if last.dagster_run.status == dg.DagsterRunStatus.FAILURE:
        return f"retry-{last.dagster_run.run_id}"
    ended = last.end_time or last.create_timestamp.timestamp()
    if now - ended >= HEARTBEAT.total_seconds():
        return f"heartbeat-{int(now // HEARTBEAT.total_seconds())}"
    return None


def blind_spots(probe: SourceProbe) -> str:
    """What the sensor could not see this tick, for its skip reasons and run tags."""
    if probe.unreachable:
        return f"; the source is unreachable ({probe.unreachable})"
    if probe.unreadable:
        return f"; cannot read {', '.join(sorted(probe.unreadable))} (an incident alert names the cause)"
    return ""


def run_request(context: dg.SensorEvaluationContext, tables: list[str], run_key: str, probe) -> dg.RunRequest:
    graph = context.repository_def.asset_graph
    keys = dg.AssetSelection.assets(*(raw_key(t) for t in tables)).downstream().resolve(graph)
    tags = {"totesys/changed_tables": ",".join(tables)}
    if probe.unreadable:
        tags["totesys/unreadable_tables"] = ",".join(sorted(probe.unreadable))
    return dg.RunRequest(
        run_key=run_key, asset_selection=sorted(keys), asset_check_keys=routine_checks(graph, keys), tags=tags
    )


def evaluate_changes(context: dg.SensorEvaluationContext, probe: SourceProbe) -> dg.RunRequest | dg.SkipReason:
    previous = ChangeCursor.parse(context.cursor)
    if _sensor_runs(context.instance, IN_FLIGHT):
        context.update_cursor(held(previous, probe).dumps())
        return dg.SkipReason(
            "a run started by this sensor is still in flight; not piling up another" + blind_spots(probe)
        )
    tables = changed_tables(previous, probe)
    run_key = hashlib.sha256(json.dumps([probe.watermarks, tables], sort_keys=True).encode()).hexdigest()[:16]
    if not tables:
        due = why_run_unchanged(next(iter(_sensor_runs(context.instance)), None), time.time())
        tables, run_key = (sorted(probe.watermarks), due) if due else ([], "")
    if not tables:
        context.update_cursor(held(previous, probe).dumps())
        return dg.SkipReason("no readable catalog table changed since the last run" + blind_spots(probe))
    if any(t in previous.unreadable or previous.watermarks.get(t) == RECOVERED for t in tables):
        run_key = f"{run_key}-recovered-{int(time.time())}"  # the same watermarks may have run before
    context.update_cursor(advanced(previous, probe).dumps())
    return run_request(context, tables, run_key, probe)


def build_change_sensor(interval_seconds: int) -> dg.SensorDefinition:
    @dg.sensor(
        name=CHANGE_SENSOR,
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        target=dg.AssetSelection.all(),
        description="Every few minutes, asks totesys which tables changed and runs their raw assets and everything "
        "downstream; a table it cannot read is named (an incident alert) and the others go on.",
    )
    def totesys_change_sensor(context: dg.SensorEvaluationContext, source_db: PostgresResource):
        return evaluate_changes(context, probe_source(source_db))

    return totesys_change_sensor
