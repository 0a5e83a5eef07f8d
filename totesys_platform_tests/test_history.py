"""Dimension history in the warehouse: exact against an independent SQL derivation from every source version
the ingestion captured, through changes between runs, a run killed between its commits, and quiet runs; and
the report that counts each order in the department its salesperson was in when it was booked."""

import dagster as dg
import psycopg
import pytest
from psycopg import sql

from totesys_platform.catalog import HISTORY_TABLES, SOURCE_TABLES, WAREHOUSE_TABLES_BY_NAME
from totesys_platform.resources.lake import LakeZone
from totesys_platform.source.simulator import Simulator
from totesys_platform_tests.conftest import run_graph
from totesys_platform_tests.test_pipeline import assert_warehouse_matches_source, rows, warehouse_rows
from totesys_platform_tests.test_reports import normalise, report_rows

CAPTURED = "captured_versions"
CURRENCY_NAME = "CASE s.currency_code WHEN 'GBP' THEN 'British pound' WHEN 'USD' THEN 'United States dollar' "
CURRENCY_NAME += "WHEN 'EUR' THEN 'Euro' END"
ADDRESS = "address_line_1, {0}.address_line_2, {0}.district, {0}.city, {0}.postal_code, {0}.country, {0}.phone"

# Written from the issue (a dimension's columns per state, cut at its joined rows' changes), not from the code:
# dimension -> (source, key, the dimension's columns over s (the source) and d (the joined row), joined source).
HISTORY_SOURCES = {
    "dim_staff": (
        "staff",
        "staff_id",
        "s.staff_id, s.first_name, s.last_name, d.department_name, d.location, s.email_address",
        ("department", "department_id", "department_id"),
    ),
    "dim_location": ("address", "address_id", "s.address_id, s." + ADDRESS.format("s"), None),
    "dim_design": ("design", "design_id", "s.design_id, s.design_name, s.file_location, s.file_name", None),
    "dim_currency": ("currency", "currency_id", f"s.currency_id, s.currency_code, {CURRENCY_NAME}", None),
    "dim_counterparty": (
        "counterparty",
        "counterparty_id",
        "s.counterparty_id, s.counterparty_legal_name, d." + ADDRESS.format("d"),
        ("address", "address_id", "legal_address_id"),
    ),
    "dim_payment_type": ("payment_type", "payment_type_id", "s.payment_type_id, s.payment_type_name::text", None),
    "dim_transaction": (
        "transaction",
        "transaction_id",
        "s.transaction_id, s.transaction_type::text, s.sales_order_id, s.purchase_order_id",
        None,
    ),
}


def capture_versions(source_url: str) -> None:
    """Keep every source row version an ingestion saw: what the source holds now, added to what it held."""
    with psycopg.connect(source_url) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(CAPTURED)))
        for table in SOURCE_TABLES:
            captured, current = sql.Identifier(CAPTURED, table.name), sql.Identifier("public", table.name)
            conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} AS TABLE {} WITH NO DATA").format(captured, current))
            conn.execute(
                sql.SQL("INSERT INTO {0} SELECT * FROM {1} EXCEPT SELECT * FROM {0}").format(captured, current)
            )


def history_sql(dimension: str) -> str:
    """A member's state at each time a version of it or of its joined row took effect; a joined row's first
    captured version stands for the time before it; equal consecutive states are one."""
    source, key, columns, joined = HISTORY_SOURCES[dimension]
    values = [c.strip() for c in columns.split(", ")]
    named = ", ".join(f"{v} AS c{i}" for i, v in enumerate(values))
    cs = ", ".join(f"c{i}" for i in range(len(values)))
    times = f"SELECT {key} AS k, last_updated AS t FROM {CAPTURED}.{source}"
    lookup = ""
    if joined:
        table, joined_key, link = joined
        times += (
            f" UNION SELECT s.{key}, d.last_updated FROM {CAPTURED}.{source} s JOIN {CAPTURED}.{table} d"
            f" ON d.{joined_key} = s.{link} WHERE d.last_updated > s.last_updated"
        )
        lookup = (
            f"LEFT JOIN LATERAL (SELECT * FROM {CAPTURED}.{table} d WHERE d.{joined_key} = s.{link}"
            " ORDER BY d.last_updated <= e.t DESC, CASE WHEN d.last_updated <= e.t THEN d.last_updated END DESC"
            " NULLS LAST, d.last_updated LIMIT 1) d ON true"
        )
    return f"""
        WITH times AS ({times}),
        states AS (
            SELECT e.k, e.t, {named} FROM times e
            CROSS JOIN LATERAL (SELECT * FROM {CAPTURED}.{source} s WHERE s.{key} = e.k AND s.last_updated <= e.t
                ORDER BY s.last_updated DESC LIMIT 1) s
            {lookup}),
        changes AS (
            SELECT *, lag(ROW({cs})::text) OVER (PARTITION BY k ORDER BY t) AS before FROM states),
        kept AS (SELECT * FROM changes WHERE before IS DISTINCT FROM ROW({cs})::text)
        SELECT {cs}, t, lead(t) OVER (PARTITION BY k ORDER BY t), lead(t) OVER (PARTITION BY k ORDER BY t) IS NULL
        FROM kept"""


def assert_histories_match(settings) -> dict[str, list[tuple]]:
    histories = {}
    for table in HISTORY_TABLES:
        histories[table.name] = warehouse_rows(settings, table.name)
        assert histories[table.name] == rows(settings.source_url, history_sql(table.history_of)), table.name
    return histories


def raw_only(settings):
    assert run_graph(settings, selection=dg.AssetSelection.groups("raw")).success
    capture_versions(settings.source_url)


@pytest.mark.slow
def test_the_history_keeps_every_captured_state_exactly_through_changes_and_a_killed_run(platform, monkeypatch):
    from totesys_platform.processed import build, history

    # The first builds reduce their versions 20 keys at a time, the later runs derive 7 members at a time.
    monkeypatch.setattr(build, "KEYS_PER_RANGE", 20)
    monkeypatch.setattr(history, "MEMBERS_PER_BATCH", 7)
    assert run_graph(platform).success
    capture_versions(platform.source_url)
    assert_histories_match(platform)
    assert_warehouse_matches_source(platform)
    with psycopg.connect(platform.source_url) as conn:
        twice = conn.execute("UPDATE staff SET first_name = 'Ann' WHERE staff_id = 3 RETURNING staff_id").fetchone()
        conn.execute("UPDATE staff SET last_updated = now() WHERE staff_id = 3")
    raw_only(platform)  # the first change is captured, but not yet transformed
    with psycopg.connect(platform.source_url) as conn:
        conn.execute("UPDATE staff SET first_name = 'Anne', last_updated = now() WHERE staff_id = 3")
        department = conn.execute("SELECT department_id FROM staff WHERE staff_id = 5").fetchone()[0]
        conn.execute(
            "UPDATE department SET department_name = department_name || ' & Co', last_updated = now()"
            " WHERE department_id = %s",
            [department],
        )
        sim = Simulator(conn, seed=5)
        sim.staff_moved()
        sim.address_changed()
        conn.execute("UPDATE design SET design_name = 'Bamboo', last_updated = now() WHERE design_id = 2")
    raw_only(platform)
    # A run killed between a history's versions commit and its own: nothing of it reached the warehouse ...
    with monkeypatch.context() as killed:
        killed.setattr(LakeZone, "merge_rows", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("killed")))
        assert not run_graph(platform, raise_on_error=False).success
    # ... and the next run derives exactly the states of every captured version, once.
    assert run_graph(platform).success
    histories = assert_histories_match(platform)
    anne = sorted((r for r in histories["dim_staff_history"] if r[0] == twice[0]), key=lambda r: r[-3])
    assert [r[1] for r in anne][-2:] == ["Ann", "Anne"]  # changed twice between transforms: both states
    moved_department = [r for r in histories["dim_staff_history"] if r[3].endswith(" & Co")]
    with psycopg.connect(platform.source_url) as conn:
        members = conn.execute("SELECT count(*) FROM staff WHERE department_id = %s", [department]).fetchone()[0]
    assert len(moved_department) >= members > 0  # the department's change opened a state for each member
    # Quiet runs change nothing.
    assert run_graph(platform).success
    assert assert_histories_match(platform) == histories


@pytest.mark.slow
def test_sales_by_department_counts_a_moved_salespersons_orders_where_they_were_when_booked(platform):
    assert run_graph(platform).success
    with psycopg.connect(platform.source_url) as conn:
        mover, old = conn.execute(
            "SELECT staff_id, department_id FROM sales_order JOIN staff USING (staff_id)"
            " GROUP BY 1, 2 ORDER BY count(*) DESC LIMIT 1"
        ).fetchone()
        new = conn.execute("SELECT min(department_id) FROM department WHERE department_id <> %s", [old]).fetchone()[0]
        moved_at = conn.execute(
            "UPDATE staff SET department_id = %s, last_updated = now() WHERE staff_id = %s RETURNING last_updated",
            [new, mover],
        ).fetchone()[0]
    with psycopg.connect(platform.source_url) as conn:
        order = Simulator(conn, seed=9).new_sales_order()
        conn.execute("UPDATE sales_order SET staff_id = %s WHERE sales_order_id = %s", [mover, order])
    assert run_graph(platform).success
    booked_in = """CASE WHEN s.staff_id = %(mover)s AND s.last_updated < %(moved_at)s
        THEN (SELECT department_name FROM department WHERE department_id = %(old)s) ELSE d.department_name END"""
    expected = f"""
        WITH orders AS (
            SELECT {booked_in} AS booked, d.department_name AS now, c.currency_code, s.units_sold * s.unit_price AS revenue
            FROM sales_order s JOIN staff st USING (staff_id) JOIN department d USING (department_id)
            JOIN currency c USING (currency_id)),
        booked AS (SELECT booked AS department, currency_code, count(*) n, sum(revenue) r FROM orders GROUP BY 1, 2),
        now AS (SELECT now AS department, currency_code, count(*) n, sum(revenue) r FROM orders GROUP BY 1, 2)
        SELECT department, currency_code, coalesce(b.n, 0), coalesce(b.r, 0), coalesce(n.n, 0), coalesce(n.r, 0)
        FROM booked b FULL JOIN now n USING (department, currency_code)"""
    with psycopg.connect(platform.source_url) as conn:
        want = normalise(conn.execute(expected, {"mover": mover, "moved_at": moved_at, "old": old}).fetchall())
    got = report_rows(platform, "sales_by_department_as_booked")
    assert got == want
    assert any(r[2] != r[4] for r in got)  # the move shows: as booked and now differ


@pytest.mark.slow
def test_a_member_found_deleted_has_its_last_state_closed_when_it_was_found(platform):
    from totesys_platform_tests.test_pipeline import assert_history_holds_together
    from totesys_platform_tests.test_reconcile import reconcile_all

    assert run_graph(platform).success
    with psycopg.connect(platform.source_url) as conn:
        gone = conn.execute(
            "DELETE FROM design WHERE design_id = (SELECT min(design_id) FROM design d"
            " WHERE NOT EXISTS (SELECT 1 FROM sales_order s WHERE s.design_id = d.design_id)) RETURNING design_id"
        ).fetchone()[0]
    assert reconcile_all(platform, "reconcile-deleted-design").found == 1
    assert run_graph(platform).success
    with psycopg.connect(platform.warehouse_url) as conn:
        detected = conn.execute(
            "SELECT detected_at FROM source_deletions WHERE table_name = 'design' AND source_id = %s", [gone]
        ).fetchone()[0]
        states = conn.execute(
            "SELECT valid_to, is_current FROM dim_design_history WHERE design_id = %s ORDER BY valid_from", [gone]
        ).fetchall()
    assert states[-1] == (detected, False)
    # Its other members' current states are the source's.
    assert_history_holds_together(platform, WAREHOUSE_TABLES_BY_NAME["dim_design_history"])
