"""Reports: figures equal independent SQL over the source; views for BI tools; a dashboard that renders in
headless Chromium and follows the data."""

import re
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from totesys_platform.catalog import WAREHOUSE_TABLES
from totesys_platform.reports.specs import REPORTS_BY_NAME
from totesys_platform.reports.summaries import read_report
from totesys_platform.source.simulator import Simulator
from totesys_platform_tests.conftest import run_graph

# Written from the spec over the source (one version per row in the sample), without the platform's code.
SOURCE_SQL = {
    "revenue_by_month_and_currency": """SELECT date_trunc('month', s.created_at)::date, c.currency_code, count(*),
        sum(s.units_sold), sum(s.units_sold * s.unit_price) FROM sales_order s JOIN currency c USING (currency_id)
        GROUP BY 1, 2""",
    "staff_sales_performance": """SELECT st.staff_id, st.first_name || ' ' || st.last_name, d.department_name,
        c.currency_code, count(*), sum(s.units_sold), sum(s.units_sold * s.unit_price)
        FROM sales_order s JOIN staff st USING (staff_id) JOIN department d USING (department_id)
        JOIN currency c USING (currency_id) GROUP BY 1, 2, 3, 4""",
    "purchase_spend_by_counterparty": """SELECT cp.counterparty_id, cp.counterparty_legal_name, c.currency_code,
        count(*), sum(p.item_quantity), sum(p.item_quantity * p.item_unit_price)
        FROM purchase_order p JOIN counterparty cp USING (counterparty_id) JOIN currency c USING (currency_id)
        GROUP BY 1, 2, 3""",
    "payments_by_status": """SELECT c.currency_code, t.payment_type_name::text,
        CASE WHEN p.paid THEN 'paid' WHEN p.payment_date::date >= current_date THEN 'due' ELSE 'overdue' END,
        CASE WHEN p.paid OR p.payment_date::date >= current_date THEN ''
             WHEN current_date - p.payment_date::date <= 30 THEN '1-30 days'
             WHEN current_date - p.payment_date::date <= 90 THEN '31-90 days' ELSE 'over 90 days' END,
        count(*), sum(p.payment_amount) FROM payment p JOIN payment_type t USING (payment_type_id)
        JOIN currency c USING (currency_id) GROUP BY 1, 2, 3, 4""",
}


def normalise(rows) -> list[tuple]:
    def value(v):
        if isinstance(v, (float, Decimal)):
            return round(float(v), 2)
        return v

    return sorted((tuple(value(v) for v in row) for row in rows), key=repr)


def report_rows(settings, name: str) -> list[tuple]:
    with psycopg.connect(settings.warehouse_url) as conn:
        return normalise(read_report(conn, settings.warehouse_schema, REPORTS_BY_NAME[name]).rows())


@pytest.fixture
def reported(platform):
    assert run_graph(platform).success
    return platform


@pytest.mark.slow
def test_summary_figures_equal_independent_sql_over_the_source(reported):
    with psycopg.connect(reported.source_url) as source:
        for name, query in SOURCE_SQL.items():
            expected = normalise(source.execute(query).fetchall())
            assert report_rows(reported, name) == expected, name
    # Any BI tool sees the same figures through the views, without this code.
    with psycopg.connect(reported.warehouse_url) as conn:
        view = normalise(conn.execute("SELECT * FROM reports.revenue_by_month_and_currency").fetchall())
        views = {
            r[0] for r in conn.execute("SELECT table_name FROM information_schema.views WHERE table_schema = 'reports'")
        }
        tables = {
            r[0] for r in conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
        }
        declared = {
            name: [
                r[0]
                for r in conn.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_schema = 'reports'"
                    " AND table_name = %s ORDER BY ordinal_position",
                    [name],
                )
            ]
            for name in REPORTS_BY_NAME
        }
    assert view == report_rows(reported, "revenue_by_month_and_currency")
    assert set(REPORTS_BY_NAME) <= views
    # Each view has exactly the columns its asset declares (what the UI's catalog shows).
    assert declared == {name: [c.name for c in r.columns] for name, r in REPORTS_BY_NAME.items()}
    # The warehouse schema holds exactly the spec's tables and the reconciliation's source_deletions.
    assert tables == {t.name for t in WAREHOUSE_TABLES} | {"source_deletions"}


def dashboard(settings) -> str:
    return (Path(settings.reports_url) / "dashboard.html").read_text()


def headline_revenue(settings) -> dict[str, str]:
    with psycopg.connect(settings.source_url) as source:
        rows = source.execute(
            "SELECT c.currency_code, sum(s.units_sold * s.unit_price) FROM sales_order s JOIN currency c"
            " USING (currency_id) GROUP BY 1"
        ).fetchall()
    return {code: f"{float(total):,.2f}" for code, total in rows}


@pytest.mark.slow
def test_the_dashboard_follows_the_data(reported):
    page = dashboard(reported)
    assert "<script" in page and not re.search(r"<script[^>]*\bsrc=", page)  # plotly.js inlined: no network
    assert all(f"id='{name}'" in page for name in REPORTS_BY_NAME)
    assert all(total in page for total in headline_revenue(reported).values())
    with psycopg.connect(reported.source_url) as conn:
        sim = Simulator(conn, seed=21)
        sim.run(40, kinds=("new_sales_order", "sales_order_corrected", "purchase_order_corrected", "payment_paid"))
    assert run_graph(reported).success
    updated = dashboard(reported)
    assert updated != page
    assert all(total in updated for total in headline_revenue(reported).values())
    # Corrections replace the old version in every summary (the facts keep both; reports count the current one).
    with psycopg.connect(reported.source_url) as source:
        for name, query in SOURCE_SQL.items():
            assert report_rows(reported, name) == normalise(source.execute(query).fetchall()), name


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
    "--virtual-time-budget=20000",
    "--window-size=1400,4000",
]


@pytest.mark.slow
@pytest.mark.e2e
def test_the_dashboard_renders_its_charts_in_headless_chromium(reported, tmp_path):
    browser = chromium()
    if browser is None:
        pytest.skip("no Chromium here: scripts/test installs Debian's chromium where apt-get is available")
    url = (Path(reported.reports_url) / "dashboard.html").as_uri()
    profile = ["--user-data-dir=" + str(tmp_path / "profile")]
    shot = tmp_path / "dashboard.png"
    screenshot = subprocess.run(
        [browser, *CHROMIUM_FLAGS, *profile, f"--screenshot={shot}", url], capture_output=True, text=True, timeout=180
    )
    assert shot.exists() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", screenshot.stderr[-2000:]
    assert shot.stat().st_size > 50_000  # a page of charts and tables, not a blank or error page
    dom = subprocess.run(
        [browser, *CHROMIUM_FLAGS, "--user-data-dir=" + str(tmp_path / "profile2"), "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=180,
    )
    # plotly.js has drawn every chart: an SVG per chart with at least one trace in it.
    charts = dom.stdout.count('class="main-svg"')
    assert charts >= 2 * len(REPORTS_BY_NAME), dom.stderr[-2000:]
    assert len(re.findall(r'class="(?:trace|scatterlayer|barlayer)[^"]*"', dom.stdout)) >= len(REPORTS_BY_NAME)
    assert re.search(r'class="point"|class="js-line"', dom.stdout)  # bars or lines, not empty axes
    console_errors = [
        line for line in (screenshot.stderr + dom.stderr).splitlines() if "CONSOLE" in line and "rror" in line
    ]
    assert not console_errors, console_errors


# The sums of current versions, computed from scratch with a window function (not the platform's method).
CURRENT_SALES_BY_DESIGN = """SELECT design_id, currency_id, count(*), sum(units_sold), sum(units_sold * unit_price)
    FROM (SELECT *, row_number() OVER (PARTITION BY sales_order_id
                                       ORDER BY last_updated_date DESC, last_updated_time DESC) AS newest
          FROM public.fact_sales_order) x
    WHERE newest = 1 GROUP BY 1, 2"""


def add_sales_versions(conn, rows) -> None:
    """(order id, last updated 'YYYY-MM-DD HH:MM', design, units, price) fact rows, in the order given."""
    conn.execute("SET session_replication_role = replica")  # no dimension rows needed for the summaries
    for order_id, updated, design, units, price in rows:
        day, time = updated.split()
        conn.execute(
            "INSERT INTO public.fact_sales_order (sales_order_id, created_date, created_time, last_updated_date,"
            " last_updated_time, sales_staff_id, counterparty_id, units_sold, unit_price, currency_id, design_id,"
            " agreed_payment_date, agreed_delivery_date, agreed_delivery_location_id)"
            " VALUES (%s, '2024-01-01', '09:00', %s, %s, 1, 1, %s, %s, 1, %s, '2024-02-01', '2024-02-01', 1)",
            (order_id, day, time, units, price, design),
        )
    conn.execute("SET session_replication_role = origin")
    conn.commit()


def summary_and_expected(conn) -> tuple[list, list]:
    summary = conn.execute("SELECT design_id, currency_id, orders, units, revenue FROM reports.sum_sales_by_design")
    return normalise(summary.fetchall()), normalise(conn.execute(CURRENT_SALES_BY_DESIGN).fetchall())


def test_summaries_follow_new_versions_late_arrivals_rebuilt_facts_and_new_layouts(new_database):
    from totesys_platform.reports.summaries import LEGACY_TABLES, ensure_report_views, refresh_summaries
    from totesys_platform.warehouse.load import ensure_warehouse

    with psycopg.connect(new_database("wh")) as conn:
        ensure_warehouse(conn, "public")
        ensure_report_views(conn, "public")
        conn.commit()
        add_sales_versions(conn, [(1, "2024-01-01 09:00", 10, 1000, 2.5), (2, "2024-01-01 09:00", 11, 2000, 3.0)])
        assert refresh_summaries(conn, "public")["fact_sales_order"] == 2  # the first refresh: rebuilt
        summary, expected = summary_and_expected(conn)
        assert summary == expected and len(summary) == 2

        # Order 1 corrected (moves design), order 2 gets an *older* version late, order 3 is new twice.
        add_sales_versions(
            conn,
            [
                (1, "2024-01-02 09:00", 11, 1500, 2.5),
                (2, "2023-12-31 09:00", 12, 9999, 3.0),
                (3, "2024-01-03 10:00", 10, 3000, 2.0),
                (3, "2024-01-03 09:00", 12, 1, 2.0),
            ],
        )
        assert refresh_summaries(conn, "public")["fact_sales_order"] == 2  # orders 1 and 3; the late row counts not
        summary, expected = summary_and_expected(conn)
        assert summary == expected
        assert {row[0] for row in summary} == {10, 11}  # design 12 only ever had non-current versions
        assert refresh_summaries(conn, "public")["fact_sales_order"] == 0  # nothing new: nothing changes
        assert summary_and_expected(conn) == (summary, expected)

        # A schema written by an earlier release (or a changed definition): rebuilt, its copies dropped.
        for legacy in LEGACY_TABLES:
            conn.execute(f"CREATE TABLE reports.{legacy} (x int)")
        conn.execute("COMMENT ON SCHEMA reports IS 'an earlier layout'")
        conn.execute("UPDATE reports.sum_sales_by_design SET units = 0")  # would survive if not rebuilt
        conn.commit()
        ensure_report_views(conn, "public")
        assert refresh_summaries(conn, "public")["fact_sales_order"] == 3
        assert summary_and_expected(conn) == (summary, expected)
        left = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'reports'")}
        assert not left & set(LEGACY_TABLES)

        # The facts rebuilt with fewer rows (newest record id below the last refreshed): start again.
        conn.execute("TRUNCATE public.fact_sales_order RESTART IDENTITY")
        conn.commit()
        assert refresh_summaries(conn, "public")["fact_sales_order"] == 0
        assert summary_and_expected(conn) == ([], [])
        add_sales_versions(conn, [(5, "2024-03-01 09:00", 10, 1000, 2.0)])
        refresh_summaries(conn, "public")
        summary, expected = summary_and_expected(conn)
        assert summary == expected and len(summary) == 1
