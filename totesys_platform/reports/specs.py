"""The business summaries and reports over the warehouse, as data: what each summary counts and each report
shows. Facts keep every version of a source row, so every summary counts the *current* (newest) version of
each order and payment. Amounts are never summed across currencies: every money figure is per currency code.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Summary:
    """Sums over the current versions of one fact, by a few ids, kept up to date from the changed rows only
    (add the new current versions, subtract the ones they replace), so a refresh costs the changes."""

    name: str
    fact: str  # a warehouse fact table
    groups: tuple[tuple[str, str], ...]  # (column, SQL expression over a current-version row; {w}: the warehouse)
    measures: tuple[tuple[str, str], ...]  # (column, SQL expression summed); the first counts rows
    join: str = ""  # a join to the rows that the group expressions read ({w}: the warehouse)


SALES = (("orders", "1"), ("units", "units_sold"), ("revenue", "units_sold * unit_price"))
# The salesperson's state when the order version was booked (its last_updated), from their history: a join
# (hashed on the salesperson, so a rebuild over every order is one pass); a booking older than any captured
# state takes the first one, a salesperson with no history yet their current department, else "unknown".
BOOKED = "(last_updated_date + last_updated_time)"
STATE_WHEN_BOOKED = f"""LEFT JOIN {{w}}.dim_staff_history booked_state ON booked_state.staff_id = sales_staff_id
    AND booked_state.valid_from <= {BOOKED} AND (booked_state.valid_to IS NULL OR booked_state.valid_to > {BOOKED})"""
DEPARTMENT_WHEN_BOOKED = """coalesce(
    booked_state.department_name,
    (SELECT h.department_name FROM {w}.dim_staff_history h WHERE h.staff_id = sales_staff_id ORDER BY h.valid_from
       LIMIT 1),
    (SELECT s.department_name FROM {w}.dim_staff s WHERE s.staff_id = sales_staff_id),
    'unknown')"""
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
        "sum_sales_by_department_when_booked",
        "fact_sales_order",
        (("department_name", DEPARTMENT_WHEN_BOOKED), ("currency_id", "currency_id")),
        SALES,
        join=STATE_WHEN_BOOKED,
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
class ReportColumn:
    name: str
    type: str
    description: str
    sources: tuple[str, ...] = ()  # warehouse "table.column"s its values come from (none: computed)


@dataclass(frozen=True)
class Report:
    name: str
    title: str
    question: str  # who asks it, and what
    uses: tuple[str, ...]  # warehouse tables
    query: str  # a SELECT over {w} (warehouse schema) and {r} (reports schema)
    chart: Chart
    order_by: str
    columns: tuple[ReportColumn, ...] = ()  # the view's columns, in order


def _sales(orders: str = "orders", revenue: str = "revenue", when: str = "") -> tuple[ReportColumn, ReportColumn]:
    """A sales report's figures: the current versions of the orders, and their revenue (per currency)."""
    fact = "fact_sales_order"
    return (
        ReportColumn(orders, "bigint", f"Sales orders{when} (current version of each)", (f"{fact}.sales_order_id",)),
        ReportColumn(
            revenue,
            "numeric",
            f"Revenue{when}: units sold times unit price",
            (f"{fact}.units_sold", f"{fact}.unit_price"),
        ),
    )


CURRENCY = ReportColumn("currency_code", "varchar", "Currency of the amounts", ("dim_currency.currency_code",))
ORDERS, REVENUE = _sales()
UNITS = ReportColumn("units", "bigint", "Bags sold", ("fact_sales_order.units_sold",))
SALES_FIGURES = (CURRENCY, ORDERS, UNITS, REVENUE)  # a sales report's figures, per currency


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
        (
            ReportColumn(
                "month", "date", "First day of the month the orders were created", ("fact_sales_order.created_date",)
            ),
            *SALES_FIGURES,
        ),
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
        (
            ReportColumn("design_id", "integer", "Design identifier", ("dim_design.design_id",)),
            ReportColumn("design_name", "varchar", "Name of the tote-bag design", ("dim_design.design_name",)),
            *SALES_FIGURES,
        ),
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
        (
            ReportColumn("country", "varchar", "Country the orders are delivered to", ("dim_location.country",)),
            ReportColumn("city", "varchar", "City the orders are delivered to", ("dim_location.city",)),
            *SALES_FIGURES,
        ),
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
        (
            ReportColumn("staff_id", "integer", "The salesperson", ("dim_staff.staff_id",)),
            ReportColumn(
                "staff_name", "text", "Their first and last name", ("dim_staff.first_name", "dim_staff.last_name")
            ),
            ReportColumn("department_name", "varchar", "Their department now", ("dim_staff.department_name",)),
            *SALES_FIGURES,
        ),
    ),
    Report(
        "sales_by_department_as_booked",
        "Sales by department: when booked and now",
        "Sales director: what did each department sell, counting each order in the department its salesperson "
        "was in when it was booked, beside the department they are in now?",
        ("fact_sales_order", "dim_staff_history", "dim_staff", "dim_currency"),
        """WITH booked AS (
             SELECT department_name, currency_id, sum(orders)::bigint AS orders, sum(revenue) AS revenue
             FROM {r}.sum_sales_by_department_when_booked GROUP BY 1, 2),
           now AS (
             SELECT st.department_name, s.currency_id, sum(s.orders)::bigint AS orders, sum(s.revenue) AS revenue
             FROM {r}.sum_sales_by_staff s JOIN {w}.dim_staff st USING (staff_id) GROUP BY 1, 2)
           SELECT department_name, c.currency_code,
             coalesce(b.orders, 0) AS orders_when_booked, coalesce(b.revenue, 0) AS revenue_when_booked,
             coalesce(n.orders, 0) AS orders_now, coalesce(n.revenue, 0) AS revenue_now
           FROM booked b FULL JOIN now n USING (department_name, currency_id)
             JOIN {w}.dim_currency c USING (currency_id)""",
        Chart("bar", "department_name", "revenue_when_booked"),
        "department_name, currency_code",
        (
            ReportColumn(
                "department_name",
                "varchar",
                "A department",
                ("dim_staff_history.department_name", "dim_staff.department_name"),
            ),
            CURRENCY,
            *_sales(orders="orders_when_booked", revenue="revenue_when_booked", when=" its salespeople booked in it"),
            *_sales(orders="orders_now", revenue="revenue_now", when=" of the salespeople in it now"),
        ),
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
        (
            ReportColumn("counterparty_id", "integer", "The supplier", ("dim_counterparty.counterparty_id",)),
            ReportColumn(
                "counterparty_legal_name",
                "varchar",
                "Its registered name",
                ("dim_counterparty.counterparty_legal_name",),
            ),
            CURRENCY,
            ReportColumn(
                "orders",
                "bigint",
                "Purchase orders (current version of each)",
                ("fact_purchase_order.purchase_order_id",),
            ),
            ReportColumn("quantity", "bigint", "Items bought", ("fact_purchase_order.item_quantity",)),
            ReportColumn(
                "spend",
                "numeric",
                "Spend: quantity times unit price",
                ("fact_purchase_order.item_quantity", "fact_purchase_order.item_unit_price"),
            ),
        ),
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
        (
            CURRENCY,
            ReportColumn("payment_type_name", "varchar", "Kind of payment", ("dim_payment_type.payment_type_name",)),
            ReportColumn(
                "status",
                "text",
                "paid; due (payment date today or later); overdue",
                ("fact_payment.paid", "fact_payment.payment_date"),
            ),
            ReportColumn(
                "overdue_by",
                "text",
                "How long past its payment date an overdue payment is",
                ("fact_payment.payment_date",),
            ),
            ReportColumn("payments", "bigint", "Payments (current version of each)", ("fact_payment.payment_id",)),
            ReportColumn("amount", "numeric", "Amount of the payments", ("fact_payment.payment_amount",)),
        ),
    ),
)
REPORTS_BY_NAME = {r.name: r for r in REPORTS}


def reports_schema(warehouse_schema: str) -> str:
    """Views live beside, never inside, the warehouse schema (whose tables are exactly the spec's)."""
    return "reports" if warehouse_schema == "public" else f"{warehouse_schema}_reports"
