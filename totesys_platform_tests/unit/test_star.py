"""The star schema's plain Polars transforms, on small frames."""

import datetime as dt

import polars as pl

from totesys_platform.processed.star import latest_versions

T0 = dt.datetime(2025, 1, 1, 9)


def test_latest_versions_keeps_the_newest_version_of_each_key_sorted_by_key():
    versions = pl.DataFrame(
        {
            "id": [3, 1, 3, 2, 1, 1],
            "last_updated": [T0, T0, T0 + dt.timedelta(hours=1), T0, T0 + dt.timedelta(hours=2), T0],
            "name": ["c-old", "a-old", "c-new", "b", "a-new", "a-older"],
        }
    )
    latest = latest_versions(versions, "id")
    assert latest.to_dicts() == [
        {"id": 1, "last_updated": T0 + dt.timedelta(hours=2), "name": "a-new"},
        {"id": 2, "last_updated": T0, "name": "b"},
        {"id": 3, "last_updated": T0 + dt.timedelta(hours=1), "name": "c-new"},
    ]


def test_latest_versions_breaks_a_tie_on_the_cursor_by_the_given_column_then_by_arrival():
    tied = pl.DataFrame(
        {
            "id": [1, 1, 1, 2, 2],
            "last_updated": [T0] * 5,
            "_commit_version": [7, 5, 7, 4, 4],
            "name": ["first of 7", "5", "second of 7", "first of 4", "second of 4"],
        }
    )
    assert latest_versions(tied, "id", then="_commit_version")["name"].to_list() == ["second of 7", "second of 4"]
    assert latest_versions(tied, "id")["name"].to_list() == ["second of 7", "second of 4"]  # arrival alone


def test_latest_versions_of_one_version_per_key_is_the_frame_sorted_by_key():
    inserts = pl.DataFrame({"id": [2, 3, 1], "last_updated": [T0] * 3, "name": ["b", "c", "a"]})
    assert latest_versions(inserts, "id")["name"].to_list() == ["a", "b", "c"]
    assert latest_versions(inserts.sort("id"), "id").equals(inserts.sort("id"))


def sales_orders(**overrides) -> pl.DataFrame:
    from totesys_platform.catalog import SOURCE_TABLES_BY_NAME

    row = {
        "sales_order_id": 1,
        "created_at": T0,
        "last_updated": T0,
        "design_id": 1,
        "staff_id": 1,
        "counterparty_id": 1,
        "units_sold": 5000,
        "unit_price": "3.00",
        "currency_id": 1,
        "agreed_delivery_date": "2025-01-10",
        "agreed_payment_date": "2025-01-20",
        "agreed_delivery_location_id": 1,
    }
    rows = [{**row, **change} for change in overrides.get("rows", [{}])]
    frame = pl.DataFrame(rows).with_columns(pl.col("unit_price").cast(pl.Decimal(10, 2)))
    return frame.cast(dict(SOURCE_TABLES_BY_NAME["sales_order"].schema))


KEYS = {
    name: pl.Series("k", [1], pl.Int32)
    for name in ("dim_design", "dim_staff", "dim_counterparty", "dim_currency", "dim_location")
}


def test_build_facts_derives_every_column_and_quarantines_each_broken_row_with_its_rules_and_reasons():
    from totesys_platform.catalog import WAREHOUSE_TABLES_BY_NAME
    from totesys_platform.processed.star import build_facts

    table = WAREHOUSE_TABLES_BY_NAME["fact_sales_order"]
    raw = sales_orders(
        rows=[
            {},
            {"sales_order_id": 2, "agreed_delivery_date": "2024-13-45"},
            {"sales_order_id": 3, "units_sold": -4, "design_id": 9},
            {"sales_order_id": 4, "last_updated": T0 + dt.timedelta(seconds=1, microseconds=5)},
        ]
    )
    batch = build_facts(raw, table, KEYS)
    assert batch.facts.columns == [c.name for c in table.data_columns]
    assert batch.facts["sales_order_id"].to_list() == [1, 4]
    first = batch.facts.row(0, named=True)
    assert first["sales_staff_id"] == 1 and first["agreed_delivery_date"] == dt.date(2025, 1, 10)
    assert first["created_date"] == T0.date() and first["created_time"] == T0.time()
    assert batch.facts.row(1, named=True)["last_updated_time"] == dt.time(9, 0, 1, 5)
    quarantine = {r["source_id"]: r for r in batch.quarantine.to_dicts()}
    assert quarantine[2]["rule"] == "agreed_delivery_date_is_a_date"
    assert "'2024-13-45'" in quarantine[2]["reason"]
    assert quarantine[3]["rule"] == "units_sold_is_positive,design_id_references_dim_design"  # column order
    assert "design_id = 9 has no row in dim_design" in quarantine[3]["reason"]
    assert '"units_sold":"-4"' in quarantine[3]["raw_row"]
    assert batch.facts.height + batch.quarantine.height == raw.height  # nothing dropped


def test_build_facts_without_dimension_keys_leaves_references_to_the_warehouse():
    from totesys_platform.catalog import WAREHOUSE_TABLES_BY_NAME
    from totesys_platform.processed.star import build_facts

    batch = build_facts(sales_orders(rows=[{"design_id": 9}]), WAREHOUSE_TABLES_BY_NAME["fact_sales_order"])
    assert batch.quarantine.is_empty() and batch.facts["design_id"].to_list() == [9]


def test_dimensions_take_each_members_newest_version_joined_to_the_newest_version_of_its_lookup():
    from totesys_platform.catalog import WAREHOUSE_TABLES_BY_NAME
    from totesys_platform.processed.star import build_dimension

    later = T0 + dt.timedelta(hours=1)
    staff = pl.DataFrame(
        {
            "staff_id": [1, 1, 2],
            "first_name": ["Ann", "Ann", "Bo"],
            "last_name": ["A", "A", "B"],
            "department_id": [10, 20, 10],
            "email_address": ["old@x", "new@x", "bo@x"],
            "created_at": [T0] * 3,
            "last_updated": [T0, later, T0],
        }
    )
    department = pl.DataFrame(
        {
            "department_id": [10, 20, 20],
            "department_name": ["Sales", "Ops-old", "Ops"],
            "location": ["Leeds", None, "York"],
            "manager": ["m", "n", "n"],
            "created_at": [T0] * 3,
            "last_updated": [T0, T0, later],
        }
    )
    table = WAREHOUSE_TABLES_BY_NAME["dim_staff"]
    dim = build_dimension(table, {"staff": staff, "department": department})
    assert dim.schema == table.schema
    assert dim.rows() == [(1, "Ann", "A", "Ops", "York", "new@x"), (2, "Bo", "B", "Sales", "Leeds", "bo@x")]


def test_currency_names_are_english_and_an_unknown_code_keeps_its_code_as_name():
    from totesys_platform.catalog import WAREHOUSE_TABLES_BY_NAME
    from totesys_platform.processed.star import build_dimension

    currency = pl.DataFrame(
        {"currency_id": [1, 2], "currency_code": ["EUR", "JPY"], "created_at": [T0] * 2, "last_updated": [T0] * 2}
    )
    dim = build_dimension(WAREHOUSE_TABLES_BY_NAME["dim_currency"], {"currency": currency})
    assert dim["currency_name"].to_list() == ["Euro", "JPY"]


def test_dim_date_is_iso_monday_one_with_english_names_and_quarters():
    from totesys_platform.processed.star import calendar_years, dim_date

    start, end = calendar_years(dt.date(2024, 3, 5), dt.date(2025, 7, 1))
    days = dim_date(start, end)
    assert (start, end) == (dt.date(2024, 1, 1), dt.date(2025, 12, 31)) and days.height == 366 + 365
    first = days.row(0, named=True)
    assert first == {
        "date_id": dt.date(2024, 1, 1),
        "year": 2024,
        "month": 1,
        "day": 1,
        "day_of_week": 1,
        "day_name": "Monday",
        "month_name": "January",
        "quarter": 1,
    }
    assert days.filter(pl.col("date_id") == dt.date(2025, 10, 5)).row(0, named=True)["day_of_week"] == 7
