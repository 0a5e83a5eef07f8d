"""The change sensor's decisions and the source probe: one unreadable table never stops the others."""

import threading
import uuid

import dagster as dg
import psycopg
import pytest
from psycopg import sql

from totesys_platform.automation.alert_sensors import failure_signature
from totesys_platform.automation.change_sensor import (
    RECOVERED,
    ChangeCursor,
    advanced,
    changed_tables,
    held,
)
from totesys_platform.automation.incidents import source_incidents
from totesys_platform.catalog import SOURCE_TABLES
from totesys_platform.definitions import build_definitions, database_resource
from totesys_platform.raw.probe import SourceProbe, probe_source
from totesys_platform.source.simulator import Simulator
from totesys_platform_tests.conftest import free_port, make_settings

# --- pure decisions -------------------------------------------------------------------------------


@pytest.mark.unit
def test_a_cursor_of_an_earlier_release_reads_as_watermarks():
    old = ChangeCursor.parse('{"payment": "2024-01-01 00:00:00", "staff": null}')
    assert old.watermarks == {"payment": "2024-01-01 00:00:00", "staff": None} and not old.unreadable
    cursor = ChangeCursor({"payment": "x"}, {"staff": "why"}, "down")
    assert ChangeCursor.parse(cursor.dumps()) == cursor
    assert ChangeCursor.parse(None) == ChangeCursor()


@pytest.mark.unit
def test_only_readable_tables_that_moved_or_came_back_are_changed():
    previous = ChangeCursor({"payment": "1", "staff": "1", "design": "1"}, {"design": "no grant"})
    probe = SourceProbe({"staff": "2", "design": "1"}, {"payment": "no grant"})
    assert changed_tables(previous, probe) == ["design", "staff"]  # design: readable again
    after = advanced(previous, probe)
    assert after.watermarks == {"payment": "1", "staff": "2", "design": "1"}  # payment keeps its last watermark
    assert after.unreadable == {"payment": "no grant"}


@pytest.mark.unit
def test_a_table_readable_again_while_a_run_is_in_flight_is_run_at_the_next_tick():
    previous = ChangeCursor({"payment": "1"}, {"payment": "no grant"})
    probe = SourceProbe({"payment": "1"})
    kept = held(previous, probe)
    assert kept.watermarks == {"payment": RECOVERED} and not kept.unreadable
    assert changed_tables(kept, probe) == ["payment"]


@pytest.mark.unit
def test_an_unreachable_source_changes_nothing_and_keeps_every_watermark():
    previous = ChangeCursor({"payment": "1"})
    probe = SourceProbe(unreachable="TOTESYS_SOURCE_URL: cannot connect")
    assert changed_tables(previous, probe) == []
    assert held(previous, probe) == ChangeCursor({"payment": "1"}, {}, "TOTESYS_SOURCE_URL: cannot connect")


@pytest.mark.unit
def test_source_incidents_share_the_readable_checks_id_and_name_the_fix():
    cursor = ChangeCursor({}, {"payment": 'fix: GRANT SELECT ON "payment" TO "r"'}, None)
    incidents = source_incidents(cursor, "http://ui")
    assert list(incidents) == ["check raw/payment:source_table_is_readable"]
    assert "GRANT SELECT" in incidents["check raw/payment:source_table_is_readable"]["what"]
    down = source_incidents(ChangeCursor(unreachable="cannot connect to postgresql://u:***@h/db"), "http://ui")
    assert list(down) == ["source unreachable"] and "cannot connect" in down["source unreachable"]["what"]


@pytest.mark.unit
def test_failures_that_differ_only_in_numbers_and_ids_are_the_same_failure():
    a = failure_signature([("raw_totesys_tables", "cannot connect to 127.0.0.1:5432 (run 0a1b2c3d4e5f)\nmore")])
    b = failure_signature([("raw_totesys_tables", "cannot connect to 127.0.0.1:6543 (run 9f8e7d6c5b4a)\nother")])
    c = failure_signature([("warehouse__fact_payment", "cannot connect to 127.0.0.1:5432 (run 0a1b2c3d4e5f)")])
    assert a == b and a != c


# --- against a real source ------------------------------------------------------------------------


@pytest.fixture
def reader(platform):
    """The platform's settings with a source role of its own that may only SELECT."""
    role = f"tote_probe_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(platform.source_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(sql.Identifier(role)))
    settings = type(platform)(
        **{**platform.__dict__, "source_url": platform.source_url.replace("postgres:@", f"{role}@", 1)}
    )
    return settings, role


def test_the_probe_names_each_unreadable_table_and_reads_the_others(platform, reader, monkeypatch):
    import totesys_platform.raw.probe as probe_module

    reader, role = reader
    source = database_resource(reader, "source")
    assert probe_source(source) == SourceProbe(probe_source(source).watermarks)  # all readable, none missing
    with psycopg.connect(platform.source_url, autocommit=True) as admin:
        admin.execute(sql.SQL("REVOKE SELECT ON payment FROM {}").format(sql.Identifier(role)))
        admin.execute("ALTER TABLE design RENAME TO design_old")
        probe = probe_source(source)
        assert set(probe.watermarks) == {t.name for t in SOURCE_TABLES} - {"payment", "design"}
        assert f'GRANT SELECT ON "payment" TO "{role}"' in probe.unreadable["payment"]
        assert "table 'design' does not exist at the source" in probe.unreadable["design"]
        admin.execute("ALTER TABLE design_old RENAME TO design")
        # A table locked by another session is reported after the lock timeout, not waited for.
        monkeypatch.setattr(probe_module, "LOCK_TIMEOUT_MS", 300)
        locked, release = threading.Event(), threading.Event()

        def hold_lock():
            with psycopg.connect(platform.source_url) as conn:
                conn.execute("LOCK TABLE staff IN ACCESS EXCLUSIVE MODE")
                locked.set()
                release.wait(30)

        holder = threading.Thread(target=hold_lock)
        holder.start()
        locked.wait(10)
        try:
            probe = probe_source(source)
        finally:
            release.set()
            holder.join()
        assert set(probe.unreadable) == {"payment", "staff"} and "did not answer" in probe.unreadable["staff"]
    down = make_settings(
        platform.home.parent, f"postgresql://tote:hunter2@127.0.0.1:{free_port()}/t", platform.warehouse_url
    )
    unreachable = probe_source(database_resource(down, "source"))
    assert "TOTESYS_SOURCE_URL: cannot connect" in unreachable.unreachable and "hunter2" not in unreachable.unreachable
    assert not unreachable.watermarks


def evaluate(defs: dg.Definitions, instance, cursor=None):
    sensor = defs.get_sensor_def("totesys_change_sensor")
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, definitions=defs, resources={"source_db": defs.resources["source_db"]}
    ) as context:
        return sensor.evaluate_tick(context)


def test_the_sensor_runs_the_readable_tables_while_one_has_lost_its_grant(platform, reader):
    reader, role = reader
    defs = build_definitions(reader)
    instance = dg.DagsterInstance.ephemeral()
    first = evaluate(defs, instance)
    with psycopg.connect(platform.source_url, autocommit=True) as admin:
        admin.execute(sql.SQL("REVOKE SELECT ON payment FROM {}").format(sql.Identifier(role)))
        sim = Simulator(admin, seed=5)
        sim.new_sales_order()  # an order, its transaction and its payment
        sim.payment_paid()
    during = evaluate(defs, instance, first.cursor)
    (request,) = during.run_requests
    raws = {k.to_user_string() for k in request.asset_selection if k.path[0] == "raw"}
    assert raws == {"raw/sales_order", "raw/transaction"}  # payment changed too, but cannot be read
    assert request.tags["totesys/unreadable_tables"] == "payment"
    assert "payment" in ChangeCursor.parse(during.cursor).unreadable
    quiet = evaluate(defs, instance, during.cursor)
    assert not quiet.run_requests and "cannot read payment" in quiet.skip_message
    with psycopg.connect(platform.source_url, autocommit=True) as admin:
        admin.execute(sql.SQL("GRANT SELECT ON payment TO {}").format(sql.Identifier(role)))
    (back,) = evaluate(defs, instance, quiet.cursor).run_requests
    assert {k.to_user_string() for k in back.asset_selection if k.path[0] == "raw"} == {"raw/payment"}
    assert not ChangeCursor.parse(evaluate(defs, instance, quiet.cursor).cursor).unreadable


def test_the_sensor_requests_nothing_while_the_source_is_unreachable(platform, tmp_path):
    down = make_settings(tmp_path, f"postgresql://tote:hunter2@127.0.0.1:{free_port()}/totesys", platform.warehouse_url)
    result = evaluate(build_definitions(down), dg.DagsterInstance.ephemeral())
    assert not result.run_requests and "the source is unreachable" in result.skip_message
    assert "cannot connect" in ChangeCursor.parse(result.cursor).unreachable


@pytest.mark.unit
def test_a_failing_or_silent_change_sensor_is_an_incident():
    from types import SimpleNamespace

    from totesys_platform.automation.incidents import sensor_health_incidents

    def state(last, success, status="RUNNING"):
        data = SimpleNamespace(last_tick_timestamp=last, last_tick_success_timestamp=success)
        return SimpleNamespace(
            instigator_data=data,
            name="totesys_change_sensor",
            status=SimpleNamespace(value=status),
            instigator_origin_id="o",
            selector_id="s",
        )

    error = SimpleNamespace(message="InsufficientPrivilege: permission denied for table payment\nTraceback ...")
    instance = SimpleNamespace(get_ticks=lambda origin, selector, limit: [SimpleNamespace(error=error)])
    failing = sensor_health_incidents(instance, state(1000, 900), 300, 1010, "http://ui")
    assert failing["sensor totesys_change_sensor failing"]["what"].endswith("permission denied for table payment")
    assert sensor_health_incidents(instance, state(1000, 1000), 300, 1010, "http://ui") == {}
    silent = sensor_health_incidents(instance, state(1000, 1000), 300, 1000 + 901, "http://ui")
    assert "has not ticked for 15 min" in silent["sensor totesys_change_sensor silent"]["what"]
    assert sensor_health_incidents(instance, state(1000, 1000, "STOPPED"), 300, 1000 + 901, "http://ui") == {}
    # A daemon stopped during a tick leaves that tick failed: long after, the sensor is silent above all.
    stopped_mid_tick = sensor_health_incidents(instance, state(1000, 900), 300, 1000 + 901, "http://ui")
    assert list(stopped_mid_tick) == ["sensor totesys_change_sensor silent"]
