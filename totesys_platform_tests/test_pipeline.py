"""The whole graph on the real sample, checked against an independent derivation in SQL over the source."""

import polars as pl
import psycopg
import pytest
from psycopg import sql

from totesys_platform.catalog import WAREHOUSE_TABLES, WAREHOUSE_TABLES_BY_NAME
from totesys_platform.source.simulator import Simulator
from totesys_platform_tests.conftest import append_rows, failure_text, lake_table, run_graph

# Written from the spec (docs/totesys-model.md section 2) without the platform's code.
EXPECTED_SQL = {
    "fact_sales_order": """SELECT sales_order_id, created_at::date, created_at::time, last_updated::date, last_updated::time,
        staff_id, counterparty_id, units_sold, unit_price, currency_id, design_id, agreed_payment_date::date,
        agreed_delivery_date::date, agreed_delivery_location_id FROM sales_order""",
    "fact_purchase_order": """SELECT purchase_order_id, created_at::date, created_at::time, last_updated::date,
        last_updated::time, staff_id, counterparty_id, item_code, item_quantity, item_unit_price, currency_id,
        agreed_delivery_date::date, agreed_payment_date::date, agreed_delivery_location_id FROM purchase_order""",
    "fact_payment": """SELECT payment_id, created_at::date, created_at::time, last_updated::date, last_updated::time,
        transaction_id, counterparty_id, payment_amount, currency_id, payment_type_id, paid, payment_date::date FROM payment""",
    "dim_staff": """SELECT s.staff_id, s.first_name, s.last_name, d.department_name, d.location, s.email_address
        FROM staff s JOIN department d USING (department_id)""",
    "dim_location": """SELECT address_id, address_line_1, address_line_2, district, city, postal_code, country, phone FROM address""",
    "dim_design": "SELECT design_id, design_name, file_location, file_name FROM design",
    "dim_currency": """SELECT currency_id, currency_code, CASE currency_code WHEN 'GBP' THEN 'British pound'
        WHEN 'USD' THEN 'United States dollar' WHEN 'EUR' THEN 'Euro' END FROM currency""",
    "dim_counterparty": """SELECT c.counterparty_id, c.counterparty_legal_name, a.address_line_1, a.address_line_2, a.district,
        a.city, a.postal_code, a.country, a.phone FROM counterparty c JOIN address a ON a.address_id = c.legal_address_id""",
    "dim_payment_type": "SELECT payment_type_id, payment_type_name::text FROM payment_type",
    "dim_transaction": "SELECT transaction_id, transaction_type::text, sales_order_id, purchase_order_id FROM transaction",
    "dim_date": """WITH used AS (
            SELECT created_at::date d FROM sales_order UNION SELECT last_updated::date FROM sales_order
            UNION SELECT agreed_payment_date::date FROM sales_order UNION SELECT agreed_delivery_date::date FROM sales_order
            UNION SELECT created_at::date FROM purchase_order UNION SELECT last_updated::date FROM purchase_order
            UNION SELECT agreed_payment_date::date FROM purchase_order UNION SELECT agreed_delivery_date::date FROM purchase_order
            UNION SELECT created_at::date FROM payment UNION SELECT last_updated::date FROM payment
            UNION SELECT payment_date::date FROM payment),
        span AS (SELECT make_date(extract(year FROM min(d))::int, 1, 1) lo, make_date(extract(year FROM greatest(max(d), current_date + 365))::int, 12, 31) hi FROM used)
        SELECT g::date, extract(year FROM g)::int, extract(month FROM g)::int, extract(day FROM g)::int,
            extract(isodow FROM g)::int, trim(to_char(g, 'Day')), trim(to_char(g, 'Month')), extract(quarter FROM g)::int
        FROM span, generate_series(lo, hi, interval '1 day') g""",
}


def rows(url: str, query: str | sql.Composable) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return sorted(conn.execute(query).fetchall(), key=repr)


def warehouse_rows(settings, table_name: str) -> list[tuple]:
    table = WAREHOUSE_TABLES_BY_NAME[table_name]
    query = sql.SQL("SELECT {} FROM {}.{}").format(
        sql.SQL(", ").join(sql.Identifier(c.name) for c in table.data_columns),
        sql.Identifier(settings.warehouse_schema),
        sql.Identifier(table.name),
    )
    return rows(settings.warehouse_url, query)


def assert_history_holds_together(settings, table) -> None:
    """A history table's states: per member contiguous and non-overlapping, no two in a row alike, only the
    last one current (or none: found deleted); its current states are the dimension derived from the source."""
    got = warehouse_rows(settings, table.name)
    values = slice(0, -3)
    by_member: dict = {}
    for row in sorted(got, key=lambda r: (r[0], r[-3])):
        by_member.setdefault(row[0], []).append(row)
    for member, states in by_member.items():
        for before, after in zip(states, states[1:], strict=False):
            assert before[-2] == after[-3] and not before[-1], (table.name, member, before, after)
            assert before[values] != after[values], (table.name, member, "two states alike in a row")
        # The last state is current, or closed when the member was found deleted (then it is not at the source).
        assert (states[-1][-2] is None) == states[-1][-1], (table.name, member, states[-1])
    current = sorted((r[values] for r in got if r[-1]), key=repr)
    assert current == rows(settings.source_url, EXPECTED_SQL[table.history_of]), table.name


def assert_warehouse_matches_source(settings, facts_seen_before: dict[str, list[tuple]] | None = None):
    for table in WAREHOUSE_TABLES:
        if table.is_history:
            assert_history_holds_together(settings, table)
            continue
        expected = rows(settings.source_url, EXPECTED_SQL[table.name])
        got = warehouse_rows(settings, table.name)
        if table.is_fact and facts_seen_before:
            # Facts keep history: what was there before plus every current source version.
            expected = sorted(set(expected) | set(facts_seen_before[table.name]), key=repr)
        if table.name == "dim_date":
            assert set(got) >= set(expected) and len(got) == len(expected), table.name
        else:
            assert got == expected, table.name


@pytest.mark.slow
def test_full_run_on_the_real_sample_equals_the_independent_derivation(platform):
    result = run_graph(platform)
    assert result.success
    assert_warehouse_matches_source(platform)
    with psycopg.connect(platform.warehouse_url) as conn:
        for table in WAREHOUSE_TABLES:
            constraints = dict(
                conn.execute(
                    "SELECT contype, count(*) FROM pg_constraint WHERE conrelid = %s::regclass GROUP BY contype",
                    (f"{platform.warehouse_schema}.{table.name}",),
                ).fetchall()
            )
            assert constraints.get("p") == 1, table.name
            assert constraints.get("f", 0) == len(table.foreign_keys), table.name
            assert constraints.get("u", 0) == (1 if table.is_fact else 0), table.name
        serial = conn.execute(
            "SELECT min(sales_record_id), max(sales_record_id), count(*) FROM fact_sales_order"
        ).fetchone()
        assert serial == (1, 11175, 11175)


@pytest.mark.slow
def test_events_add_exactly_the_new_versions_and_a_quiet_run_changes_nothing(platform):
    run_graph(platform)
    before = {t.name: warehouse_rows(platform, t.name) for t in WAREHOUSE_TABLES if t.is_fact}
    with psycopg.connect(platform.source_url) as conn:
        sim = Simulator(conn, seed=21)
        sim.run(30, kinds=("new_sales_order", "new_purchase_order"))
        corrected = sim.sales_order_corrected()
        paid = sim.payment_paid()
        moved = sim.staff_moved()
        conn.commit()
    run_graph(platform)
    assert_warehouse_matches_source(platform, facts_seen_before=before)
    versions = [r for r in warehouse_rows(platform, "fact_sales_order") if r[0] == corrected]
    assert len(versions) == 2
    assert len([r for r in warehouse_rows(platform, "fact_payment") if r[0] == paid]) == 2
    department = rows(
        platform.source_url,
        sql.SQL(
            "SELECT d.department_name FROM staff s JOIN department d USING (department_id) WHERE staff_id = {}"
        ).format(sql.Literal(moved)),
    )
    assert [r[3] for r in warehouse_rows(platform, "dim_staff") if r[0] == moved] == [department[0][0]]
    snapshot = {t.name: warehouse_rows(platform, t.name) for t in WAREHOUSE_TABLES}
    quiet = run_graph(platform)
    assert quiet.success
    assert {t.name: warehouse_rows(platform, t.name) for t in WAREHOUSE_TABLES} == snapshot


@pytest.mark.slow
def test_a_run_killed_before_the_warehouse_then_rerun_ends_the_same(platform, monkeypatch):
    run_graph(platform, "group:raw or group:processed")
    first_versions = {t.name: rows(platform.source_url, EXPECTED_SQL[t.name]) for t in WAREHOUSE_TABLES if t.is_fact}
    with psycopg.connect(platform.source_url) as conn:
        Simulator(conn, seed=3).run(25)
    # A second run dies inside the fact_payment load, after its COPY: that transaction must roll back.
    import totesys_platform.warehouse.load as warehouse

    real_copy = warehouse.copy_frames

    def copy_then_die(conn, table, frames):
        count = real_copy(conn, table, frames)
        if "fact_payment" in (table if isinstance(table, str) else table.as_string(conn)):  # stage or table
            raise RuntimeError("killed mid-load")
        return count

    monkeypatch.setattr(warehouse, "copy_frames", copy_then_die)
    failed = run_graph(platform, raise_on_error=False)
    assert not failed.success and "killed mid-load" in failure_text(failed)
    assert warehouse_rows(platform, "fact_payment") == []
    monkeypatch.setattr(warehouse, "copy_frames", real_copy)
    assert run_graph(platform).success
    assert_warehouse_matches_source(platform, facts_seen_before=first_versions)
    assert run_graph(platform).success
    assert_warehouse_matches_source(platform, facts_seen_before=first_versions)


def rule_check_alone(platform, table: str):
    """Run one warehouse table's full-table rule check on its own; returns its evaluation."""
    import dagster as dg

    from totesys_platform.definitions import build_assets, build_resources
    from totesys_platform.warehouse.checks import build_checks

    check = next(c for c in build_checks() if f"{table}_meets_the_star_schema_rules" in str(c.check_keys))
    result = dg.materialize(
        [*build_assets(platform), check],
        resources=build_resources(platform),
        selection=dg.AssetSelection.checks(check),
        instance=dg.DagsterInstance.ephemeral(),
    )
    (evaluation,) = result.get_asset_check_evaluations()
    return evaluation


@pytest.mark.slow
def test_catalog_checks_pass_on_the_real_sample_and_catch_broken_rows(platform):
    import dagster as dg

    from totesys_platform.definitions import build_assets, build_resources
    from totesys_platform.warehouse.checks import build_checks

    result = dg.materialize(
        [*build_assets(platform), *build_checks()],
        resources=build_resources(platform),
        instance=dg.DagsterInstance.ephemeral(),
    )
    evaluations = result.get_asset_check_evaluations()
    # raw: schema + keys per table; processed: blocking rules per table + quarantine per fact;
    # warehouse: rules per table + reconciliation per table but dim_date (11 star tables and 7 histories).
    assert len(evaluations) == 4 * 11 + 18 + 3 + 18 + 17
    # The sample's sales prices and quantities are within the spec; every check passes.
    assert all(e.passed for e in evaluations), [(e.check_name, e.description) for e in evaluations if not e.passed]
    with psycopg.connect(platform.warehouse_url) as conn:
        conn.execute("ALTER TABLE fact_sales_order DROP CONSTRAINT fact_sales_order_design_id_fkey")
        conn.execute("UPDATE fact_sales_order SET design_id = 99999, units_sold = 5 WHERE sales_order_id = 2")
    evaluation = rule_check_alone(platform, "fact_sales_order")
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert "design_id_references_dim_design: 1 rows" in evaluation.description
    assert "units_sold_is_within_the_spec_range: 1 rows" in evaluation.description


@pytest.mark.slow
def test_the_load_log_keeps_every_tables_row_count_and_the_nightly_rules_compare_it(platform):
    import dagster as dg

    from totesys_platform.warehouse.load import count_rows, load_log_entry

    def recorded_and_counted(conn) -> dict[str, tuple]:
        return {
            t.name: (load_log_entry(conn, "public", t.name).table_rows, count_rows(conn, "public", t.name))
            for t in WAREHOUSE_TABLES
        }

    assert run_graph(platform).success
    with psycopg.connect(platform.source_url) as conn:
        sim = Simulator(conn, seed=5)
        sim.run(40)  # new orders (new transactions), corrections, payments
        sim.run(8, kinds=("new_design", "staff_moved", "address_changed", "counterparty_renamed"))
    with psycopg.connect(platform.warehouse_url) as conn:
        before = recorded_and_counted(conn)
    assert run_graph(platform).success
    with psycopg.connect(platform.warehouse_url) as conn:
        after = recorded_and_counted(conn)
        assert all(recorded == counted for recorded, counted in after.values()), after
        grew = {name for name in after if after[name][1] > before[name][1]}
        assert {"fact_sales_order", "dim_design", "dim_transaction"} <= grew  # new rows, counted as they came
        # A log written before the counts were kept: the next load counts the table once.
        conn.execute("UPDATE totesys_platform.delta_load_log SET table_rows = NULL WHERE table_name = 'dim_staff'")
        conn.commit()
    assert run_graph(platform).success
    with psycopg.connect(platform.warehouse_url) as conn:
        assert load_log_entry(conn, "public", "dim_staff").table_rows == count_rows(conn, "public", "dim_staff") > 0
        # A row deleted outside the platform: the routine runs trust the recorded count; the nightly rules see it.
        conn.execute("DELETE FROM fact_payment WHERE payment_id = (SELECT min(payment_id) FROM fact_payment)")
        conn.commit()
    evaluation = rule_check_alone(platform, "fact_payment")  # as the nightly schedule runs it
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert "row_count_equals_the_count_the_loads_recorded: 1 rows" in evaluation.description


@pytest.mark.slow
def test_a_fact_referencing_a_missing_dimension_row_loads_nothing_with_or_without_superuser(platform, pg_admin_url):
    import datetime as dt

    from totesys_platform.warehouse.load import ReferentialIntegrityError, can_defer_fk_triggers, load_table

    assert run_graph(platform).success
    table = WAREHOUSE_TABLES_BY_NAME["fact_sales_order"]
    processed = lake_table(platform.processed_url, "fact_sales_order")
    row = processed.scan().head(1).collect()
    bad = row.with_columns(
        pl.lit(99999, dtype=pl.Int32).alias("design_id"), pl.lit(dt.time(1, 2, 3)).alias("last_updated_time")
    )
    append_rows(processed, bad)
    before = len(warehouse_rows(platform, "fact_sales_order"))
    with psycopg.connect(platform.warehouse_url) as conn:
        assert can_defer_fk_triggers(conn)  # the embedded server's role is a superuser: the set-based path
        with pytest.raises(ReferentialIntegrityError, match=r"design_id \(1 rows, e.g. '99999' not in dim_design\)"):
            load_table(conn, processed, table, "public")
    # A role that may not switch triggers off gets PostgreSQL's own per-row check: the same outcome.
    database = psycopg.conninfo.conninfo_to_dict(platform.warehouse_url)["dbname"]
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        admin.execute("DROP ROLE IF EXISTS tote_loader")
        admin.execute("CREATE ROLE tote_loader LOGIN")
    with psycopg.connect(platform.warehouse_url, autocommit=True) as conn:
        conn.execute("GRANT ALL ON ALL TABLES IN SCHEMA public, totesys_platform TO tote_loader")
        conn.execute("GRANT USAGE ON SCHEMA public, totesys_platform TO tote_loader")
        conn.execute(sql.SQL("GRANT TEMP ON DATABASE {} TO tote_loader").format(sql.Identifier(database)))
        conn.execute("GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO tote_loader")
    loader_url = platform.warehouse_url.replace("postgres:@", "tote_loader:@", 1)
    with psycopg.connect(loader_url) as conn:
        assert not can_defer_fk_triggers(conn)
        with pytest.raises(psycopg.errors.ForeignKeyViolation, match="design_id"):
            load_table(conn, processed, table, "public")
    assert len(warehouse_rows(platform, "fact_sales_order")) == before


def test_an_earlier_load_log_gains_its_new_column_or_the_role_is_told_what_to_run(new_database, pg_admin_url):
    from totesys_platform.warehouse.load import WarehousePermissionError, ensure_warehouse, warehouse_is_complete

    url = new_database("wh")
    database = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    with psycopg.connect(url, autocommit=True) as owner:
        ensure_warehouse(owner, "public")
        owner.execute("ALTER TABLE totesys_platform.delta_load_log DROP COLUMN table_rows")  # as before 2026-11
        owner.execute("INSERT INTO totesys_platform.delta_load_log VALUES ('public', 'dim_staff', 4)")
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        admin.execute("DROP ROLE IF EXISTS tote_old_log")
        admin.execute("CREATE ROLE tote_old_log LOGIN")
    with psycopg.connect(url, autocommit=True) as owner:  # may create schemas and write, owns nothing
        owner.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO tote_old_log").format(sql.Identifier(database)))
        owner.execute("GRANT USAGE, CREATE ON SCHEMA public, totesys_platform TO tote_old_log")
        owner.execute("GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public, totesys_platform TO tote_old_log")
    with psycopg.connect(url.replace("postgres:@", "tote_old_log:@", 1)) as conn:
        assert not warehouse_is_complete(conn, "public")
        with pytest.raises(WarehousePermissionError, match=r"must be owner.*ADD COLUMN IF NOT EXISTS table_rows"):
            ensure_warehouse(conn, "public")
    with psycopg.connect(url) as owner:  # the owner (or a run as the owner) upgrades it in place
        ensure_warehouse(owner, "public")
        assert warehouse_is_complete(owner, "public")
        entry = owner.execute("SELECT delta_version, table_rows FROM totesys_platform.delta_load_log").fetchall()
        assert entry == [(4, None)]  # kept; its count is taken at the table's next load


@pytest.mark.slow
def test_a_warehouse_emptied_by_hand_is_rebuilt_by_the_next_run(platform):
    from totesys_platform.reports.specs import REPORTS_BY_NAME
    from totesys_platform.reports.summaries import read_report

    assert run_graph(platform).success
    with psycopg.connect(platform.warehouse_url) as conn:
        report_before = read_report(conn, "public", REPORTS_BY_NAME["revenue_by_month_and_currency"])
        conn.execute(
            "TRUNCATE fact_sales_order, fact_purchase_order, fact_payment, dim_transaction, dim_staff RESTART IDENTITY"
        )
    assert run_graph(platform).success
    assert_warehouse_matches_source(platform)
    with psycopg.connect(platform.warehouse_url) as conn:
        report_after = read_report(conn, "public", REPORTS_BY_NAME["revenue_by_month_and_currency"])
    assert report_after.equals(report_before)


@pytest.mark.slow
def test_a_backfill_copies_into_the_empty_table_and_stages_only_when_it_must(platform, monkeypatch):
    import datetime as dt

    import totesys_platform.warehouse.load as warehouse

    assert run_graph(platform, "group:raw or group:processed").success
    processed = lake_table(platform.processed_url, "fact_sales_order")
    copied_into: list[str] = []
    real_copy = warehouse.copy_frames

    def spy(conn, table, frames):
        copied_into.append(table if isinstance(table, str) else table.as_string(conn))
        return real_copy(conn, table, frames)

    monkeypatch.setattr(warehouse, "copy_frames", spy)
    facts = WAREHOUSE_TABLES_BY_NAME["fact_sales_order"]
    with psycopg.connect(platform.warehouse_url) as conn:
        warehouse.ensure_warehouse(conn, "public")
        conn.commit()
        for table in WAREHOUSE_TABLES:
            if not table.is_fact:
                warehouse.load_table(conn, lake_table(platform.processed_url, table.name), table, "public")
        copied_into.clear()
        first = warehouse.load_table(conn, processed, facts, "public")
        assert set(copied_into) == {'"public"."fact_sales_order"'}  # straight in: no stage
        expected = rows(platform.source_url, EXPECTED_SQL["fact_sales_order"])
        assert first.inserted == len(expected) == len(warehouse_rows(platform, "fact_sales_order"))

        # Commits that repeat a version: the straight COPY is undone and the stage keeps one of each.
        repeated = processed.scan().head(10).collect()
        append_rows(processed, repeated)
        conn.execute("TRUNCATE fact_sales_order")
        conn.commit()
        copied_into.clear()
        again = warehouse.load_table(conn, processed, facts, "public")
        assert copied_into[0] == '"public"."fact_sales_order"' and '"stage_fact_sales_order"' in copied_into
        assert again.staged_rows == len(expected) + 10 and again.inserted == len(expected)
        assert sorted(warehouse_rows(platform, "fact_sales_order")) == sorted(expected)

        # A reference to a missing dimension row: nothing loaded, named in the error.
        bad = repeated.head(1).with_columns(
            pl.lit(99999, dtype=pl.Int32).alias("design_id"), pl.lit(dt.time(1, 2, 3)).alias("last_updated_time")
        )
        append_rows(processed, bad)
        conn.execute("TRUNCATE fact_sales_order")
        conn.commit()
        with pytest.raises(warehouse.ReferentialIntegrityError, match=r"design_id \(1 rows, e.g. '99999'"):
            warehouse.load_table(conn, processed, facts, "public")
    assert warehouse_rows(platform, "fact_sales_order") == []
