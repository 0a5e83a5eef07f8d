"""Business summaries over the warehouse: SQL views (usable from any BI tool) and the HTML dashboard.

Facts keep every version of a source row, so every summary counts the *current* (newest) version of each
order and payment. The summaries are tables kept up to date from the new fact rows only; the report views
read them. Amounts are never summed across currencies: every money figure is per currency code. No
Dagster here; reports/assets.py wraps it.
"""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import hashlib
import html
import json
import re
from dataclasses import dataclass
from importlib import resources

import polars as pl
import psycopg
from psycopg import sql

from totesys_platform.catalog import WAREHOUSE_TABLES_BY_NAME, WarehouseTable
from totesys_platform.warehouse.load import lock_table_writes


@dataclass(frozen=True)
class Summary:
    """Sums over the current versions of one fact, by a few ids, kept up to date from the changed rows only
    (add the new current versions, subtract the ones they replace), so a refresh costs the changes."""

    name: str
    fact: str  # a warehouse fact table
    groups: tuple[tuple[str, str], ...]  # (column, SQL expression over a current-version row)
    measures: tuple[tuple[str, str], ...]  # (column, SQL expression summed); the first counts rows


SALES = (("orders", "1"), ("units", "units_sold"), ("revenue", "units_sold * unit_price"))
SUMMARIES: tuple[Summary, ...] = (
    Summary(
        "sum_sales_by_month",
        "fact_sales_order",
        (("month", "date_trunc('month', created_date)::date"), ("currency_id", "currency_id")),
        SALES,
    ),
    Summary(
        "sum_sales_by_design",
        "fact_sales_order",
        (("design_id", "design_id"), ("currency_id", "currency_id")),
        SALES,
    ),
    Summary(
        "sum_sales_by_location",
        "fact_sales_order",
        (("location_id", "agreed_delivery_location_id"), ("currency_id", "currency_id")),
        SALES,
    ),
    Summary(
        "sum_sales_by_staff",
        "fact_sales_order",
        (("staff_id", "sales_staff_id"), ("currency_id", "currency_id")),
        SALES,
    ),
    Summary(
        "sum_purchases_by_counterparty",
        "fact_purchase_order",
        (("counterparty_id", "counterparty_id"), ("currency_id", "currency_id")),
        (("orders", "1"), ("quantity", "item_quantity"), ("spend", "item_quantity * item_unit_price")),
    ),
    Summary(
        "sum_payments",
        "fact_payment",
        (
            ("currency_id", "currency_id"),
            ("payment_type_id", "payment_type_id"),
            ("paid", "paid"),
            ("payment_date", "payment_date"),
        ),
        (("payments", "1"), ("amount", "payment_amount")),
    ),
)


@dataclass(frozen=True)
class Chart:
    kind: str  # "bar" (grouped by the series column) or "line"
    x: str
    y: str
    series: str = "currency_code"  # one trace per currency: amounts never mix currencies
    top: int | None = None  # bars: the top N x values by y (per series)


@dataclass(frozen=True)
class Report:
    name: str
    title: str
    question: str  # who asks it, and what
    uses: tuple[str, ...]  # warehouse tables
    query: str  # a SELECT over {w} (warehouse schema) and {r} (reports schema)
    chart: Chart
    order_by: str


REPORTS: tuple[Report, ...] = (
    Report(
        "revenue_by_month_and_currency",
        "Revenue by month",
        "Sales director: how much are we selling each month, in each currency?",
        ("fact_sales_order", "dim_currency"),
        """SELECT s.month, c.currency_code, sum(s.orders)::bigint AS orders, sum(s.units)::bigint AS units,
             sum(s.revenue) AS revenue
           FROM {r}.sum_sales_by_month s JOIN {w}.dim_currency c USING (currency_id)
           GROUP BY 1, 2""",
        Chart("line", "month", "revenue"),
        "month, currency_code",
    ),
    Report(
        "sales_by_design",
        "Units and revenue by design",
        "Sales director: which designs sell?",
        ("fact_sales_order", "dim_design", "dim_currency"),
        """SELECT d.design_id, d.design_name, c.currency_code, sum(s.orders)::bigint AS orders,
             sum(s.units)::bigint AS units, sum(s.revenue) AS revenue
           FROM {r}.sum_sales_by_design s JOIN {w}.dim_design d USING (design_id)
             JOIN {w}.dim_currency c USING (currency_id)
           GROUP BY 1, 2, 3""",
        Chart("bar", "design_name", "units", top=15),
        "revenue DESC, design_id, currency_code",
    ),
    Report(
        "sales_by_delivery_location",
        "Sales by delivery country and city",
        "Sales director: where do our orders go?",
        ("fact_sales_order", "dim_location", "dim_currency"),
        """SELECT l.country, l.city, c.currency_code, sum(s.orders)::bigint AS orders,
             sum(s.units)::bigint AS units, sum(s.revenue) AS revenue
           FROM {r}.sum_sales_by_location s JOIN {w}.dim_location l USING (location_id)
             JOIN {w}.dim_currency c USING (currency_id)
           GROUP BY 1, 2, 3""",
        Chart("bar", "country", "units", top=15),
        "revenue DESC, country, city, currency_code",
    ),
    Report(
        "staff_sales_performance",
        "Staff sales performance",
        "Sales director: who sells how much, in which department?",
        ("fact_sales_order", "dim_staff", "dim_currency"),
        """SELECT st.staff_id, st.first_name || ' ' || st.last_name AS staff_name, st.department_name,
             c.currency_code, sum(s.orders)::bigint AS orders, sum(s.units)::bigint AS units, sum(s.revenue) AS revenue
           FROM {r}.sum_sales_by_staff s JOIN {w}.dim_staff st USING (staff_id)
             JOIN {w}.dim_currency c USING (currency_id)
           GROUP BY 1, 2, 3, 4""",
        Chart("bar", "staff_name", "revenue", top=20),
        "revenue DESC, staff_id, currency_code",
    ),
    Report(
        "purchase_spend_by_counterparty",
        "Purchase spend by counterparty",
        "Finance lead: whom do we buy from, and how much do we spend?",
        ("fact_purchase_order", "dim_counterparty", "dim_currency"),
        """SELECT cp.counterparty_id, cp.counterparty_legal_name, c.currency_code, sum(p.orders)::bigint AS orders,
             sum(p.quantity)::bigint AS quantity, sum(p.spend) AS spend
           FROM {r}.sum_purchases_by_counterparty p JOIN {w}.dim_counterparty cp USING (counterparty_id)
             JOIN {w}.dim_currency c USING (currency_id)
           GROUP BY 1, 2, 3""",
        Chart("bar", "counterparty_legal_name", "spend", top=20),
        "spend DESC, counterparty_id, currency_code",
    ),
    Report(
        "payments_by_status",
        "Payments: paid, due and overdue by age",
        "Finance lead: what is paid, what is outstanding, and how overdue is it?",
        ("fact_payment", "dim_payment_type", "dim_currency"),
        """SELECT c.currency_code, t.payment_type_name,
             CASE WHEN p.paid THEN 'paid' WHEN p.payment_date >= current_date THEN 'due' ELSE 'overdue' END AS status,
             CASE WHEN p.paid OR p.payment_date >= current_date THEN ''
                  WHEN current_date - p.payment_date <= 30 THEN '1-30 days'
                  WHEN current_date - p.payment_date <= 90 THEN '31-90 days'
                  ELSE 'over 90 days' END AS overdue_by,
             sum(p.payments)::bigint AS payments, sum(p.amount) AS amount
           FROM {r}.sum_payments p JOIN {w}.dim_payment_type t USING (payment_type_id)
             JOIN {w}.dim_currency c USING (currency_id)
           GROUP BY 1, 2, 3, 4""",
        Chart("bar", "status", "amount"),
        "currency_code, payment_type_name, status, overdue_by",
    ),
)
REPORTS_BY_NAME = {r.name: r for r in REPORTS}


def reports_schema(warehouse_schema: str) -> str:
    """Views live beside, never inside, the warehouse schema (whose tables are exactly the spec's)."""
    return "reports" if warehouse_schema == "public" else f"{warehouse_schema}_reports"


# Tables an earlier release kept in the reports schema (a copy of each fact's current versions, as big as
# the facts): dropped when the schema is brought up to date.
LEGACY_TABLES = ("current_sales_order", "current_purchase_order", "current_payment")
REPORTS_LOCK = "{} reports refresh"  # advisory lock of one warehouse schema's reports (DDL and refresh)


def layout_fingerprint(warehouse_schema: str) -> str:
    """What the reports schema's DDL is made from; stored as the schema's comment, so a run whose schema is up
    to date costs one catalog query, and a release that changes a summary or a view rebuilds them."""
    text = repr((warehouse_schema, SUMMARIES, tuple((r.name, r.query) for r in REPORTS)))
    return "totesys_platform reports " + hashlib.sha256(text.encode()).hexdigest()[:16]


def ensure_report_views(conn: psycopg.Connection, warehouse_schema: str) -> str:
    """Create the summary tables and one view per report, unless the schema is already up to date; returns
    the reports schema. Changed definitions (a new release) drop the summaries: the next refresh rebuilds them."""
    name, fingerprint = reports_schema(warehouse_schema), layout_fingerprint(warehouse_schema)
    fingerprint_query = "SELECT obj_description(to_regnamespace(%s), 'pg_namespace')"
    if conn.execute(fingerprint_query, (name,)).fetchone()[0] == fingerprint:
        return name
    w, r = sql.Identifier(warehouse_schema), sql.Identifier(name)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (REPORTS_LOCK.format(warehouse_schema),))
        if conn.execute(fingerprint_query, (name,)).fetchone()[0] == fingerprint:
            return name  # another run brought it up to date while this one waited
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(r))
        for report in REPORTS:  # views first: they read the summaries
            conn.execute(sql.SQL("DROP VIEW IF EXISTS {}.{}").format(r, sql.Identifier(report.name)))
        for table in (*LEGACY_TABLES, *(s.name for s in SUMMARIES)):
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}.{}").format(r, sql.Identifier(table)))
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {}.refresh_state (fact text PRIMARY KEY, last_record_id bigint NOT NULL)"
            ).format(r)
        )
        conn.execute(sql.SQL("DELETE FROM {}.refresh_state").format(r))  # every summary starts again
        for summary in SUMMARIES:
            groups = sql.SQL(", ").join(
                sql.SQL("{} AS {}").format(sql.SQL(e), sql.Identifier(n)) for n, e in summary.groups
            )
            measures = sql.SQL(", ").join(
                sql.SQL("sum({}) AS {}").format(sql.SQL(e), sql.Identifier(n)) for n, e in summary.measures
            )
            conn.execute(
                sql.SQL("CREATE TABLE {r}.{s} AS SELECT {g}, {m} FROM {w}.{f} GROUP BY {k} WITH NO DATA").format(
                    r=r,
                    s=sql.Identifier(summary.name),
                    g=groups,
                    m=measures,
                    w=w,
                    f=sql.Identifier(summary.fact),
                    k=sql.SQL(", ").join(sql.SQL(str(i + 1)) for i in range(len(summary.groups))),
                )
            )
            conn.execute(
                sql.SQL("ALTER TABLE {}.{} ADD PRIMARY KEY ({})").format(
                    r, sql.Identifier(summary.name), sql.SQL(", ").join(sql.Identifier(n) for n, _ in summary.groups)
                )
            )
        for report in REPORTS:
            conn.execute(
                sql.SQL("CREATE VIEW {}.{} AS {}").format(
                    r, sql.Identifier(report.name), sql.SQL(report.query).format(w=w, r=r)
                )
            )
        # COMMENT takes no bound parameter; the fingerprint is this code's own hex digest.
        conn.execute(sql.SQL("COMMENT ON SCHEMA {} IS {}").format(r, sql.Literal(fingerprint)))
    return name


def refresh_summaries(conn: psycopg.Connection, warehouse_schema: str) -> dict[str, int]:
    """Bring the summaries up to date with the fact rows added since the last refresh: the changed keys' new
    current versions are added, the versions they replace (looked up by key in the fact) subtracted. The
    work grows with the new fact rows, not with the facts. Returns, per fact, the keys whose current version
    changed."""
    w, r = sql.Identifier(warehouse_schema), sql.Identifier(reports_schema(warehouse_schema))
    changed = {}
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (REPORTS_LOCK.format(warehouse_schema),))
        # The summaries advance by the facts' record ids: wait for any load of them still in flight in another
        # run, or rows it commits later with lower ids would be skipped for good (always in this order).
        facts = sorted({s.fact for s in SUMMARIES})
        for fact in facts:
            lock_table_writes(conn, warehouse_schema, fact)
        for fact in facts:
            table = WAREHOUSE_TABLES_BY_NAME[fact]
            summaries = [s for s in SUMMARIES if s.fact == fact]
            row = conn.execute(
                sql.SQL("SELECT last_record_id FROM {}.refresh_state WHERE fact = %s").format(r), (fact,)
            ).fetchone()
            since = row[0] if row else 0
            newest = conn.execute(
                sql.SQL("SELECT max({}) FROM {}.{}").format(
                    sql.Identifier(table.surrogate_key), w, sql.Identifier(fact)
                )
            ).fetchone()[0]
            if newest is None or newest < since:  # the facts were emptied or rebuilt: start again
                since = 0
            if newest is None or newest <= since:
                changed[fact] = 0
                if since == 0:
                    _truncate(conn, r, [s.name for s in summaries])
                continue
            if since == 0:
                changed[fact] = _rebuild(conn, w, r, table, newest, summaries)
            else:
                changed[fact] = _apply_changes(conn, w, r, table, since, newest, summaries)
            conn.execute(
                sql.SQL(
                    "INSERT INTO {}.refresh_state VALUES (%s, %s) ON CONFLICT (fact) DO UPDATE SET last_record_id = %s"
                ).format(r),
                (fact, newest, newest),
            )
    return changed


def _truncate(conn: psycopg.Connection, r: sql.Identifier, names: list[str]) -> None:
    conn.execute(
        sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(sql.SQL("{}.{}").format(r, sql.Identifier(n)) for n in names))
    )


def _used_columns(table: WarehouseTable, summaries: list[Summary]) -> list[str]:
    """The fact's columns a version is identified by, and those the summaries' expressions read."""
    expressions = " ".join(e for s in summaries for _, e in (*s.groups, *s.measures))
    used = {c.name for c in table.columns if re.search(rf"\b{re.escape(c.name)}\b", expressions)}
    return [c.name for c in table.columns if c.name in {*table.version_key, *used}]


def _newest_versions(w, table: WarehouseTable, columns: list[str]) -> sql.Composed:
    """The newest version of each key among the fact rows with record ids in (%s, %s]."""
    return sql.SQL(
        "SELECT DISTINCT ON ({k}) {n} FROM {w}.{f} WHERE {rid} > %s AND {rid} <= %s"
        " ORDER BY {k}, last_updated_date DESC, last_updated_time DESC"
    ).format(
        k=sql.Identifier(table.key),
        n=sql.SQL(", ").join(map(sql.Identifier, columns)),
        w=w,
        f=sql.Identifier(table.name),
        rid=sql.Identifier(table.surrogate_key),
    )


def _summary_insert(r: sql.Identifier, summary: Summary, rows: sql.Composable, *, signed: bool) -> sql.Composed:
    """Sum the summary's measures over `rows` by its groups into its table. Signed: `rows` carry `_sign`
    (+1 a new current version, -1 the version it replaces) and the sums are added to those already there."""
    group_names = sql.SQL(", ").join(sql.Identifier(n) for n, _ in summary.groups)
    measure_names = [sql.Identifier(n) for n, _ in summary.measures]
    measure = "sum(_sign * ({}))" if signed else "sum({})"
    query = sql.SQL("INSERT INTO {r}.{s} AS t ({gn}, {mn}) SELECT {g}, {m} FROM {rows} GROUP BY {gi}").format(
        r=r,
        s=sql.Identifier(summary.name),
        gn=group_names,
        mn=sql.SQL(", ").join(measure_names),
        g=sql.SQL(", ").join(sql.SQL(e) for _, e in summary.groups),
        m=sql.SQL(", ").join(sql.SQL(measure).format(sql.SQL(e)) for _, e in summary.measures),
        rows=rows,
        gi=sql.SQL(", ").join(sql.SQL(str(i + 1)) for i in range(len(summary.groups))),
    )
    if signed:
        query += sql.SQL(" ON CONFLICT ({}) DO UPDATE SET {}").format(
            group_names, sql.SQL(", ").join(sql.SQL("{0} = t.{0} + EXCLUDED.{0}").format(n) for n in measure_names)
        )
    return query


def _rebuild(conn, w, r, table: WarehouseTable, newest: int, summaries: list[Summary]) -> int:
    """From nothing (first refresh, or the facts were rebuilt): one statement finds the current versions once
    and fills every summary of the fact from them (nothing else is written)."""
    _truncate(conn, r, [s.name for s in summaries])
    fills = sql.SQL(", ").join(
        sql.SQL("{} AS ({})").format(
            sql.Identifier(f"fill_{s.name}"), _summary_insert(r, s, sql.SQL("current_versions"), signed=False)
        )
        for s in summaries
    )
    return conn.execute(
        sql.SQL("WITH current_versions AS ({}), {} SELECT count(*) FROM current_versions").format(
            _newest_versions(w, table, _used_columns(table, summaries)), fills
        ),
        (0, newest),
    ).fetchone()[0]


def _apply_changes(conn, w, r, table: WarehouseTable, since: int, newest: int, summaries: list[Summary]) -> int:
    columns = _used_columns(table, summaries)
    k, fact, rid = sql.Identifier(table.key), sql.Identifier(table.name), sql.Identifier(table.surrogate_key)
    # The newest version of each key among the new fact rows ...
    conn.execute(
        sql.SQL("CREATE TEMP TABLE delta_new ON COMMIT DROP AS ") + _newest_versions(w, table, columns),
        (since, newest),
    )
    # ... and the one current at the last refresh: the newest of the key's rows before it (by the fact's
    # version index, a few rows per key).
    conn.execute(
        sql.SQL(
            "CREATE TEMP TABLE delta_old ON COMMIT DROP AS SELECT o.* FROM delta_new x CROSS JOIN LATERAL"
            " (SELECT {n} FROM {w}.{f} f WHERE f.{k} = x.{k} AND f.{rid} <= %s"
            " ORDER BY f.last_updated_date DESC, f.last_updated_time DESC LIMIT 1) o"
        ).format(
            n=sql.SQL(", ").join(sql.SQL("f.{}").format(sql.Identifier(c)) for c in columns), w=w, f=fact, k=k, rid=rid
        ),
        (since,),
    )
    version = sql.SQL("({0}.last_updated_date, {0}.last_updated_time)")
    # A new row older than the current version (a late arrival) changes nothing; neither side counts.
    conn.execute(
        sql.SQL("DELETE FROM delta_new x USING delta_old o WHERE o.{k} = x.{k} AND {x} < {o}").format(
            k=k, x=version.format(sql.SQL("x")), o=version.format(sql.SQL("o"))
        )
    )
    conn.execute(
        sql.SQL("DELETE FROM delta_old o WHERE NOT EXISTS (SELECT 1 FROM delta_new x WHERE x.{k} = o.{k})").format(k=k)
    )
    signed_rows = sql.SQL("(SELECT 1 AS _sign, * FROM delta_new UNION ALL SELECT -1, * FROM delta_old) d")
    for summary in summaries:
        conn.execute(_summary_insert(r, summary, signed_rows, signed=True))
        conn.execute(
            sql.SQL("DELETE FROM {}.{} WHERE {} = 0").format(
                r, sql.Identifier(summary.name), sql.Identifier(summary.measures[0][0])
            )
        )
    count = conn.execute("SELECT count(*) FROM delta_new").fetchone()[0]
    conn.execute("DROP TABLE delta_new, delta_old")
    return count


def read_report(conn: psycopg.Connection, warehouse_schema: str, report: Report) -> pl.DataFrame:
    query = sql.SQL("SELECT * FROM {}.{} ORDER BY {}").format(
        sql.Identifier(reports_schema(warehouse_schema)), sql.Identifier(report.name), sql.SQL(report.order_by)
    )
    with conn.cursor() as cursor:
        cursor.execute(query)
        names = [d.name for d in cursor.description]
        rows = cursor.fetchall()
    frame = pl.DataFrame(rows, schema=names, orient="row", infer_schema_length=None)
    # numeric sums arrive as Decimal; floats are what charts and Markdown want.
    return frame.with_columns(pl.col(pl.Decimal).cast(pl.Float64))


# --- Presentation ------------------------------------------------------------------------------


def markdown_summary(frame: pl.DataFrame, limit: int = 15) -> str:
    if frame.is_empty():
        return "(no rows yet)"

    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:,.2f}"
        return "" if value is None else str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * frame.width]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.head(limit).rows()]
    if frame.height > limit:
        lines.append(f"\n({frame.height - limit} more rows in the view)")
    return "\n".join(lines)


@functools.cache
def _template() -> dict:
    """plotly's default look (the "plotly" template) as the plain dict a figure carries: read from plotly's own
    package data, not built as plotly objects and validated (twice as slow, a tenth of the reports step)."""
    try:
        return json.loads((resources.files("plotly") / "package_data" / "templates" / "plotly.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):  # a plotly that keeps them elsewhere: the slow way
        import plotly.io as pio

        return pio.templates["plotly"].to_plotly_json()


@functools.cache
def _plotly_js() -> str:
    """plotly.js as plotly's Python package bundles it (the version its figures are written for)."""
    try:
        return (resources.files("plotly") / "package_data" / "plotly.min.js").read_text(encoding="utf-8")
    except FileNotFoundError:  # a plotly that keeps it elsewhere
        from plotly.offline import get_plotlyjs

        return get_plotlyjs()


def _json_value(value):
    """What plotly's JSON encoder makes of the values a report holds: numbers and ISO dates."""
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    raise TypeError(f"a chart cannot hold a {type(value).__name__}")


def chart_html(figure: dict, chart_id: str) -> str:
    """A figure drawn by plotly.js's own `Plotly.newPlot` (plotly.js must be on the page).

    What `plotly.io.to_html(full_html=False)` writes, without its cost: it imports a good part of plotly on
    first use and handles each figure through its validators, about 70 ms a run for six charts."""
    payload = json.dumps(figure, default=_json_value, separators=(",", ":")).replace("</", "<\\/")
    config = json.dumps({"displaylogo": False, "responsive": True})
    return (
        f"<div id='{chart_id}' class='plotly-graph-div' style='height:100%;width:100%'></div>"
        f"<script>(function(){{var f={payload};Plotly.newPlot('{chart_id}',f.data,f.layout,{config});}})();</script>"
    )


def figure(report: Report, frame: pl.DataFrame) -> dict:
    """The report's chart as a plotly figure dict: plotly.js draws it as it would a `go.Figure`, without
    building and validating plotly's Python objects for every trace (a tenth of a second per run)."""
    chart = report.chart
    traces = []
    for (series,), part in frame.sort(chart.series).group_by(chart.series, maintain_order=True):
        if chart.kind == "line":
            part = part.sort(chart.x)
            traces.append(
                {
                    "type": "scatter",
                    "x": part[chart.x].to_list(),
                    "y": part[chart.y].to_list(),
                    "mode": "lines+markers",
                    "name": str(series),
                }
            )
        else:
            totals = part.group_by(chart.x).agg(pl.col(chart.y).sum()).sort(chart.y, descending=True)
            if chart.top:
                totals = totals.head(chart.top)
            traces.append(
                {"type": "bar", "x": totals[chart.x].to_list(), "y": totals[chart.y].to_list(), "name": str(series)}
            )
    layout = {
        "template": _template(),
        "title": {"text": f"{report.title} ({chart.y} per currency)"},
        "barmode": "group",
        "height": 420,
        "margin": {"l": 60, "r": 20, "t": 60, "b": 120},
        "legend": {"title": {"text": "currency"}},
    }
    return {"data": traces, "layout": layout}


def html_table(frame: pl.DataFrame, limit: int = 20) -> str:
    def cell(value) -> str:
        return f"{value:,.2f}" if isinstance(value, float) else html.escape("" if value is None else str(value))

    head = "".join(f"<th>{html.escape(c)}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in frame.head(limit).rows())
    more = f"<p class='more'>{frame.height - limit} more rows in the view</p>" if frame.height > limit else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{more}"


def headline(frames: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """Per currency: sales orders and revenue, purchase spend, payments outstanding (due + overdue)."""
    sales = (
        frames["revenue_by_month_and_currency"]
        .group_by("currency_code")
        .agg(pl.col("orders").sum().alias("sales_orders"), pl.col("revenue").sum())
    )
    spend = frames["purchase_spend_by_counterparty"].group_by("currency_code").agg(pl.col("spend").sum())
    payments = frames["payments_by_status"]
    outstanding = (
        payments.filter(pl.col("status") != "paid")
        .group_by("currency_code")
        .agg(pl.col("amount").sum().alias("outstanding"))
    )
    codes = pl.concat([f.select("currency_code") for f in (sales, spend, payments)]).unique()
    return (
        codes.join(sales, on="currency_code", how="left")
        .join(spend, on="currency_code", how="left")
        .join(outstanding, on="currency_code", how="left")
        .fill_null(0)
        .sort("currency_code")
    )


def dashboard_html(frames: dict[str, pl.DataFrame], views_schema: str, generated_at: dt.datetime) -> str:
    """One self-contained page (plotly.js inlined once): no network needed to open it."""
    sections = [
        f"<section id='headline'><h2>Headline figures per currency</h2>{html_table(headline(frames))}</section>"
    ]
    for report in REPORTS:
        frame = frames[report.name]
        chart = chart_html(figure(report, frame), f"chart-{report.name}")
        sections.append(
            f"<section id='{report.name}'><h2>{html.escape(report.title)}</h2>"
            f"<p class='question'>{html.escape(report.question)} View: <code>{views_schema}.{report.name}</code></p>"
            f"<div class='chart'>{chart}</div>{html_table(frame)}</section>"
        )
    style = (
        "body{font-family:system-ui,sans-serif;margin:2rem;color:#222}table{border-collapse:collapse;margin:1rem 0}"
        "td,th{border:1px solid #ddd;padding:4px 8px;text-align:right}th{background:#f3f3f3}"
        ".question{color:#555}section{margin-bottom:3rem}"
    )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Terrific Totes dashboard</title>"
        f"<style>{style}</style><script>{_plotly_js()}</script></head><body>"
        "<h1>Terrific Totes: sales, purchases and payments</h1>"
        f"<p>Generated {generated_at:%Y-%m-%d %H:%M} UTC from the warehouse. Amounts are per currency, never "
        "converted or summed across currencies. Orders and payments count their current version.</p>"
        + "".join(sections)
        + "</body></html>"
    )
