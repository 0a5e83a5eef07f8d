"""The platform as a new user on RDS would run it, then fed bad input.

Set-up as on RDS: password (SCRAM) authentication, a source role that may only SELECT, and a warehouse
database owned by a role that is not a superuser; both passwords full of URL metacharacters. Each case
asserts a clear error or a quarantine, and that the next normal run leaves the warehouse equal to an
independent SQL derivation over the source. (Also covered elsewhere: a dropped column and new columns in
test_raw, malformed dates and out-of-range quantities in test_quality, clock skew in test_raw, a lost
grant with its alerts and two runs at once in test_automation, bad settings in test_settings.)
"""

from __future__ import annotations

import uuid
from pathlib import Path
from urllib.parse import quote

import dagster as dg
import psycopg
import pytest
from psycopg import sql

from totesys_platform_tests.conftest import check_evaluation, failure_text, make_settings, run_graph
from totesys_platform_tests.test_pipeline import assert_warehouse_matches_source, warehouse_rows

SOURCE_PASSWORD = "r3@d/er#pw:?&x"
OWNER_PASSWORD = "0wn@er/#:?&pw"


def role_url(admin_url: str, role: str, password: str, database: str) -> str:
    socket_dir = admin_url.split("host=", 1)[1]
    return f"postgresql://{role}:{quote(password, safe='')}@localhost/{database}?host={socket_dir}"


@pytest.fixture
def locked_down(pg_admin_url, sample_source, new_database, tmp_path):
    """Settings whose source role may only SELECT and whose warehouse owner is no superuser, both with SCRAM
    passwords; the server asks those two roles for their password (pg_hba), as RDS does."""
    source_db = psycopg.conninfo.conninfo_to_dict(sample_source)["dbname"]
    admin_warehouse = new_database("warehouse")
    warehouse_db = psycopg.conninfo.conninfo_to_dict(admin_warehouse)["dbname"]
    suffix = uuid.uuid4().hex[:8]
    reader, owner = f"tote_ro_{suffix}", f"tote_owner_{suffix}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute("SET password_encryption = 'scram-sha-256'")
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'tote_scram'").fetchone():
            conn.execute("CREATE ROLE tote_scram NOLOGIN")
        for role, password in ((reader, SOURCE_PASSWORD), (owner, OWNER_PASSWORD)):
            create = sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE tote_scram")
            conn.execute(create.format(sql.Identifier(role), password))
        owned = sql.SQL("ALTER DATABASE {} OWNER TO {}")
        conn.execute(owned.format(sql.Identifier(warehouse_db), sql.Identifier(owner)))
        hba = Path(conn.execute("SHOW hba_file").fetchone()[0])
        rule = "local all +tote_scram scram-sha-256\n"  # members of tote_scram must give their password
        if rule not in hba.read_text():
            hba.write_text(rule + hba.read_text())
            conn.execute("SELECT pg_reload_conf()")
    with psycopg.connect(sample_source, autocommit=True) as conn:
        conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(sql.Identifier(reader)))
    source = role_url(pg_admin_url, reader, SOURCE_PASSWORD, source_db)
    warehouse = role_url(pg_admin_url, owner, OWNER_PASSWORD, warehouse_db)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(role_url(pg_admin_url, reader, "wrong", source_db)).close()
    return make_settings(tmp_path, source, warehouse), make_settings(tmp_path, sample_source, admin_warehouse)


def normal_run_recovers(settings, admin, seen=None) -> None:
    """The next ordinary run succeeds and the warehouse equals the independent derivation (read as admin)."""
    assert run_graph(settings).success
    assert_warehouse_matches_source(admin, seen)


@pytest.mark.slow
def test_least_privilege_scram_roles_run_the_platform_and_no_password_leaks(locked_down, tmp_path, capfd):
    settings, admin = locked_down
    home = tmp_path / "dagster_home"
    home.mkdir()
    instance = dg.DagsterInstance.local_temp(str(home))
    result = run_graph(settings, instance=instance)
    assert result.success
    assert_warehouse_matches_source(admin)
    with psycopg.connect(settings.warehouse_url) as conn:
        assert not conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]
    # The canary: neither password, raw or URL-encoded, in any file under DAGSTER_HOME, the zones or the output.
    captured = capfd.readouterr()
    secrets = [SOURCE_PASSWORD, OWNER_PASSWORD, quote(SOURCE_PASSWORD, safe=""), quote(OWNER_PASSWORD, safe="")]
    for secret in secrets:
        assert secret not in captured.out + captured.err
    for root in (home, Path(settings.ingestion_url), Path(settings.processed_url), Path(settings.home)):
        for path in root.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                assert not any(secret.encode() in data for secret in secrets), path


@pytest.mark.slow
def test_a_wrong_password_and_a_database_down_fail_clearly_then_a_normal_run_recovers(locked_down):
    settings, admin = locked_down
    wrong = type(settings)(**{**settings.__dict__, "source_url": settings.source_url.replace("r3%40d", "wr0ng", 1)})
    result = run_graph(wrong, "group:raw", raise_on_error=False)
    assert not result.success
    message = failure_text(result)
    assert "TOTESYS_SOURCE_URL: cannot connect" in message and "password authentication failed" in message
    assert "wr0ng" not in message and ":***@" in message
    down = type(settings)(
        **{**settings.__dict__, "warehouse_url": settings.warehouse_url.replace("/warehouse_", "/nowhere_")}
    )
    result = run_graph(down, raise_on_error=False)
    assert not result.success and "TOTESYS_WAREHOUSE_URL: cannot connect" in failure_text(result)
    normal_run_recovers(settings, admin)


@pytest.mark.slow
def test_a_renamed_column_is_named_and_the_table_catches_up_once_it_is_back(locked_down, sample_source):
    settings, admin = locked_down
    assert run_graph(settings).success
    with psycopg.connect(sample_source, autocommit=True) as conn:
        conn.execute("ALTER TABLE staff RENAME COLUMN email_address TO email")
        conn.execute("UPDATE staff SET last_updated = localtimestamp WHERE staff_id = 2")
    renamed = run_graph(settings)
    drift = check_evaluation(renamed, "raw/staff", "columns_match_the_catalog")
    assert not drift.passed and drift.severity == dg.AssetCheckSeverity.ERROR
    assert "missing column email_address" in drift.description and "new column email" in drift.description
    with psycopg.connect(sample_source, autocommit=True) as conn:
        conn.execute("ALTER TABLE staff RENAME COLUMN email TO email_address")
    normal_run_recovers(settings, admin)


@pytest.mark.slow
def test_hostile_strings_arrive_intact(locked_down, sample_source):
    settings, admin = locked_down
    assert run_graph(settings).success
    hostile = {
        "address_line_1": '1\'; DROP TABLE dim_location; -- "quoted"',
        "address_line_2": "tab\there\\back\\slash\nnew line",
        "district": "Zürich ☃ 東京 \u200b",
        "city": "x" * 100_000,
    }
    with psycopg.connect(sample_source, autocommit=True) as conn:
        conn.execute(
            "UPDATE address SET address_line_1 = %(address_line_1)s, address_line_2 = %(address_line_2)s,"
            " district = %(district)s, city = %(city)s, last_updated = localtimestamp WHERE address_id = 3",
            hostile,
        )
    normal_run_recovers(settings, admin)
    (row,) = [r for r in warehouse_rows(admin, "dim_location") if r[0] == 3]
    assert list(row[1:5]) == list(hostile.values())


@pytest.mark.slow
def test_foreign_and_corrupt_files_in_the_zones(locked_down, sample_source):
    settings, admin = locked_down
    settings = type(settings)(**{**settings.__dict__, "max_retries": 2})
    assert run_graph(settings).success
    # A foreign object in a table's folder (a partial upload by another tool) is not in the Delta log: ignored.
    (Path(settings.ingestion_url) / "sales_order" / "upload-in-progress.parquet").write_bytes(b"not parquet")
    with psycopg.connect(sample_source, autocommit=True) as conn:
        conn.execute("UPDATE payment SET paid = NOT paid, last_updated = localtimestamp WHERE payment_id = 4")
        conn.execute("UPDATE sales_order SET units_sold = 4321, last_updated = localtimestamp WHERE sales_order_id = 9")
    assert run_graph(settings).success
    seen = {t: warehouse_rows(admin, t) for t in ("fact_sales_order", "fact_purchase_order", "fact_payment")}
    # A committed data file gone corrupt (a copy gone wrong), in each zone: the error names the zone, the
    # table and the remedy; it is not retried; the other tables go on; putting the object back recovers.
    raw_file = newest_data_file(Path(settings.ingestion_url) / "payment")
    dim_file = newest_data_file(Path(settings.processed_url) / "dim_staff")
    backups = {path: path.read_bytes() for path in (raw_file, dim_file)}
    for path in backups:
        path.write_bytes(backups[path][:100])
    with psycopg.connect(sample_source, autocommit=True) as conn:
        conn.execute("UPDATE payment SET paid = NOT paid, last_updated = localtimestamp WHERE payment_id = 5")
        conn.execute("UPDATE sales_order SET units_sold = 1234, last_updated = localtimestamp WHERE sales_order_id = 9")
        conn.execute("UPDATE currency SET last_updated = localtimestamp WHERE currency_id = 2")
    broken = run_graph(settings, raise_on_error=False)
    readable = check_evaluation(broken, "raw/payment", "source_table_is_readable")
    assert not readable.passed and "ingestion zone, table payment" in readable.description
    assert "move it aside" in readable.description
    failed_steps = {e.step_key for e in broken.all_events if e.event_type_value == "STEP_FAILURE"}
    # Only a fact with new rows reads dim_staff's keys (fact_purchase_order has none this run: it goes on).
    assert failed_steps == {"processed__fact_sales_order"}
    assert "processed zone, table dim_staff" in failure_text(broken)
    assert not [e for e in broken.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    materialized = {e.asset_key.to_user_string() for e in broken.get_asset_materialization_events()}
    assert {"raw/sales_order", "raw/currency", "warehouse/dim_currency"} <= materialized
    for path, data in backups.items():
        path.write_bytes(data)
    normal_run_recovers(settings, admin, seen)


def newest_data_file(table: Path) -> Path:
    return max(table.glob("*.parquet"), key=lambda p: p.stat().st_mtime_ns)


@pytest.mark.unit
def test_a_malformed_url_names_the_setting_and_hides_the_password(tmp_path):
    from totesys_platform.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match="TOTESYS_WAREHOUSE_URL") as raised:
        load_settings({"TOTESYS_HOME": str(tmp_path), "TOTESYS_WAREHOUSE_URL": f"mysql://u:{OWNER_PASSWORD}@h/db"})
    assert OWNER_PASSWORD not in str(raised.value) and quote(OWNER_PASSWORD, safe="") not in str(raised.value)


@pytest.mark.slow
def test_malformed_dates_and_impossible_quantities_are_quarantined_and_their_fix_flows(locked_down, sample_source):
    from totesys_platform.source.simulator import Simulator

    settings, admin = locked_down
    assert run_graph(settings).success
    seen = {t: warehouse_rows(admin, t) for t in ("fact_sales_order", "fact_purchase_order", "fact_payment")}
    with psycopg.connect(sample_source) as conn:
        simulator = Simulator(conn, seed=3)
        bad_date, bad_quantity = simulator.inject_malformed_date(), simulator.inject_out_of_range_quantity()
    result = run_graph(settings)
    quarantine = check_evaluation(result, "processed/fact_sales_order", "fact_sales_order_quarantine_is_empty")
    assert not quarantine.passed and quarantine.metadata["quarantined_rows"].value == 2
    assert {bad_date, bad_quantity}.isdisjoint(
        r[0] for r in warehouse_rows(admin, "fact_sales_order") if r not in seen["fact_sales_order"]
    )
    with psycopg.connect(sample_source, autocommit=True) as conn:
        conn.execute(
            "UPDATE sales_order SET agreed_delivery_date = '2024-12-01', units_sold = 5000,"
            " last_updated = localtimestamp WHERE sales_order_id IN (%s, %s)",
            (bad_date, bad_quantity),
        )
    normal_run_recovers(settings, admin, seen)
