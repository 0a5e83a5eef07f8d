"""Under a real `dagster dev` with a real SMTP listener: a table the change sensor cannot read, and a source
that goes down, are one alert and one RESOLVED each; the tables it can read keep flowing meanwhile; the
warehouse equals the independent derivation afterwards."""

import shutil
import tempfile
import time
from pathlib import Path

import dagster as dg
import psycopg
import pytest
from psycopg import sql

from totesys_platform.automation import IN_FLIGHT
from totesys_platform.automation.incidents import automation_incidents
from totesys_platform.resources.embedded import start_embedded_server, stop_embedded_server
from totesys_platform.source.simulator import Simulator
from totesys_platform_tests.conftest import fill_source, make_settings
from totesys_platform_tests.test_dagster_dev import count, dagster_dev, platform_env, wait_for
from totesys_platform_tests.test_pipeline import assert_warehouse_matches_source, warehouse_rows

ROLE = "tote_sensor_reader"


@pytest.fixture
def stoppable_source(request):
    """A totesys source on a PostgreSQL server of its own, so the test can stop and restart it."""
    root = Path(tempfile.mkdtemp(prefix="tt-src-", dir="/tmp"))  # short: unix socket path limit
    pgdata = root / "pg"
    admin = start_embedded_server(pgdata)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("CREATE DATABASE totesys")
    url = admin.replace("/postgres?", "/totesys?", 1)
    fill_source(url, request)
    with psycopg.connect(url, autocommit=True) as conn:  # a source role that may only SELECT
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(ROLE)))
        conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(sql.Identifier(ROLE)))
    yield pgdata, url
    stop_embedded_server(pgdata)
    shutil.rmtree(root, ignore_errors=True)


def matches(settings, seen) -> bool:
    try:
        assert_warehouse_matches_source(settings, seen)
        return True
    except AssertionError:
        return False


def subjects(received) -> list[str]:
    return [" ".join(m["Subject"].split()) for m in received]


def body(message) -> str:
    return message.get_payload(decode=True).decode()


@pytest.mark.e2e
@pytest.mark.slow
def test_a_lost_grant_and_a_stopped_source_are_one_alert_each_while_the_rest_flows(
    tmp_path, stoppable_source, new_database, smtp_inbox
):
    pgdata, admin_url = stoppable_source
    settings = make_settings(tmp_path, admin_url.replace("postgres:@", f"{ROLE}@", 1), new_database("warehouse"))
    port, received = smtp_inbox
    dagster_home = tmp_path / "dagster_home"
    env = platform_env(
        settings,
        dagster_home,
        TOTESYS_ALERT_INTERVAL_SECONDS="5",
        TOTESYS_SMTP_HOST="127.0.0.1",
        TOTESYS_SMTP_PORT=str(port),
        TOTESYS_SMTP_SECURITY="none",
        TOTESYS_ALERT_TO="data-team@terrifictotes.com",
    )
    orders = lambda: count(settings.warehouse_url, "SELECT count(*) FROM fact_sales_order")  # noqa: E731
    purchases = lambda: count(settings.warehouse_url, "SELECT count(*) FROM fact_purchase_order")  # noqa: E731
    with dagster_dev(env) as server:
        instance = dg.DagsterInstance.from_config(str(dagster_home))
        idle = lambda: not instance.get_runs(dg.RunsFilter(statuses=IN_FLIGHT))  # noqa: E731
        wait_for(lambda: matches(settings, None), 300, "the first sensor run", server)
        wait_for(idle, 120, "the first run to end", server)
        seen = {t: warehouse_rows(settings, t) for t in ("fact_sales_order", "fact_purchase_order", "fact_payment")}

        # 1. The grant on payment is revoked while orders and payments keep changing.
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(sql.SQL("REVOKE SELECT ON payment FROM {}").format(sql.Identifier(ROLE)))
            revoked_at, before = time.monotonic(), orders()
            sim = Simulator(admin, seed=3)
            sim.new_sales_order()
            sim.payment_paid()
            wait_for(lambda: orders() == before + 1, 120, "sales orders to flow during the incident", server)
            wait_for(lambda: len(received) >= 1, 120, "the alert", server)
            assert time.monotonic() - revoked_at <= 120
            before = purchases()
            sim.new_purchase_order()
            wait_for(lambda: purchases() == before + 1, 120, "purchase orders to flow during the incident", server)
            time.sleep(15)  # three more ticks of each sensor: no second message
            assert len(received) == 1, subjects(received)
            assert subjects(received)[0].startswith(
                "[totesys] ALERT: the change sensor cannot read source table payment"
            )
            assert f'GRANT SELECT ON "payment" TO "{ROLE}"' in body(received[0])
            admin.execute(sql.SQL("GRANT SELECT ON payment TO {}").format(sql.Identifier(ROLE)))
        wait_for(lambda: len(received) >= 2, 120, "the RESOLVED message", server)
        assert subjects(received)[1].startswith(
            "[totesys] RESOLVED: the change sensor cannot read source table payment"
        )
        wait_for(lambda: matches(settings, seen), 120, "payment to catch up", server)
        wait_for(idle, 120, "the catch-up run to end", server)

        # 2. The source stops, then comes back.
        stop_embedded_server(pgdata)
        wait_for(lambda: len(received) >= 3, 120, "the source alert", server)
        time.sleep(15)
        assert len(received) == 3, subjects(received)
        assert subjects(received)[2].startswith("[totesys] ALERT: the change sensor cannot reach the totesys source")
        assert "TOTESYS_SOURCE_URL" in body(received[2])
        start_embedded_server(pgdata)
        wait_for(lambda: len(received) >= 4, 120, "the source's RESOLVED message", server)
        assert subjects(received)[3].startswith("[totesys] RESOLVED: the change sensor cannot reach the totesys source")
        with psycopg.connect(admin_url, autocommit=True) as admin:
            Simulator(admin, seed=4).payment_paid()
        wait_for(lambda: matches(settings, seen), 120, "the change after the restart", server)
        wait_for(idle, 120, "the last run to end", server)
        time.sleep(5)
    assert len(received) == 4, subjects(received)  # no run-failure e-mail either
    runs = instance.get_runs()
    assert runs and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
    assert any(r.tags.get("totesys/unreadable_tables") == "payment" for r in runs)
    # With the daemon stopped, its silence is an incident too (read from the same instance, ten minutes on).
    silent = automation_incidents(instance, 5, time.time() + 600, "http://ui")
    assert "sensor totesys_change_sensor silent" in silent
    assert any(key.startswith("daemon ") for key in silent)
