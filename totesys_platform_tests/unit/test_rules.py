"""The rule model on small frames: what each kind selects, what the catalog applies, and that the
quarantine, the checks' descriptions and the DDL are all generated from the same rules."""

import polars as pl
import pytest

from totesys_platform.catalog import WAREHOUSE_TABLES, WAREHOUSE_TABLES_BY_NAME
from totesys_platform.processed.assets import processed_key
from totesys_platform.processed.checks import processed_check_specs
from totesys_platform.processed.rules import evaluate_rules, markdown_report
from totesys_platform.processed.star import quarantine_rules
from totesys_platform.rules import (
    AcceptedValues,
    IsoDate,
    NotNull,
    Positive,
    References,
    Unique,
    WithinRange,
    evaluate,
)
from totesys_platform.warehouse.load import create_table_sql

FACT = WAREHOUSE_TABLES_BY_NAME["fact_sales_order"]

# (rule, column values, which rows break it)
CASES = [
    (NotNull("x"), [1, None, 3], [False, True, False]),
    (Positive("x"), [1, 0, -2, None], [False, True, True, False]),
    (WithinRange("x", "warning", low=1, high=10), [1, 10, 11, 0], [False, False, True, True]),
    (AcceptedValues("x", values=("GBP", "EUR")), ["GBP", "JPY", None, "gbp"], [False, True, False, True]),
    (
        IsoDate("x"),
        ["2024-02-29", "2023-02-29", "2024-13-45", "2024-04-31", "tomorrow", "2024-12-01", None],
        [False, True, True, True, True, False, False],
    ),
    (Unique("x"), [1, 2, 2, 3], [False, True, True, False]),
    (References("x", dimension="dim", dimension_key="id"), [1, 9, None], [False, True, False]),
]
KEYS = {"dim": pl.Series("id", [1, 2, 3])}


@pytest.mark.parametrize(("rule", "values", "breaks"), CASES, ids=[type(c[0]).__name__ for c in CASES])
def test_each_rule_kind_selects_exactly_the_rows_that_break_it(rule, values, breaks):
    frame = pl.DataFrame({"x": values})
    selected = frame.select(rule.offending(KEYS).fill_null(False))["x"].to_list()
    assert selected == breaks
    [result] = evaluate((rule,), frame, KEYS)
    assert result.offending == sum(breaks) and result.sample.height == sum(breaks)


def test_a_reference_is_left_out_when_its_dimension_keys_are_not_in_hand():
    rule = References("x", dimension="dim", dimension_key="id")
    assert rule.offending({}) is None
    assert evaluate((rule, NotNull("x")), pl.DataFrame({"x": [None]}), {})[0].rule == NotNull("x")


def test_the_catalog_gives_every_table_its_key_not_null_and_reference_rules_with_unique_names():
    for table in WAREHOUSE_TABLES:
        names = [r.name for r in table.rules]
        assert len(names) == len(set(names)), table.name
        assert all(n == n.lower() and " " not in n for n in names)
        assert isinstance(table.rules[0], Unique) and table.rules[0].columns == table.version_key
        required = {c.name for c in table.data_columns if not c.nullable}
        assert {r.column for r in table.rules if isinstance(r, NotNull)} == required
        assert {r.column for r in table.rules if isinstance(r, References)} == {c.name for c in table.foreign_keys}
    assert [r.name for r in FACT.rules if r.severity == "warning"] == [
        "units_sold_is_within_the_spec_range",
        "unit_price_is_within_the_spec_range",
    ]
    assert {r.name for r in FACT.rules if isinstance(r, IsoDate)} == {
        "agreed_payment_date_is_a_date",
        "agreed_delivery_date_is_a_date",
    }


def test_the_quarantine_takes_the_row_rules_at_error_severity_only():
    rules = quarantine_rules(FACT)
    assert rules and all(r.row_level and r.is_error for r in rules)
    assert not any(isinstance(r, (Unique, WithinRange)) for r in rules)
    assert {"units_sold_is_positive", "design_id_references_dim_design"} <= {r.name for r in rules}


def test_check_descriptions_name_every_rule_of_the_table():
    for table in WAREHOUSE_TABLES:
        specs = processed_check_specs(table, processed_key(table.name))
        blocking = specs[0].description
        assert all(rule.name in blocking for rule in table.rules), table.name


def test_the_ddl_carries_the_constraints_that_fit_and_no_warning():
    ddl = create_table_sql(FACT, "public").as_string(None)
    assert '"fact_sales_order_units_sold_is_positive" CHECK ("units_sold" > 0)' in ddl
    assert '"fact_sales_order_design_id_fkey" FOREIGN KEY ("design_id")' in ddl
    assert 'UNIQUE ("sales_order_id", "last_updated_date", "last_updated_time")' in ddl
    assert "1000" not in ddl  # the spec range warns, never blocks a load
    currency = create_table_sql(WAREHOUSE_TABLES_BY_NAME["dim_currency"], "public").as_string(None)
    assert "CHECK (\"currency_code\" IN ('GBP', 'USD', 'EUR'))" in currency
    assert 'PRIMARY KEY ("currency_id")' in currency


def test_a_dimension_batch_reports_each_rule_with_its_meaning_and_a_sample():
    currency = WAREHOUSE_TABLES_BY_NAME["dim_currency"]
    frame = pl.DataFrame(
        {"currency_id": [1, 2, 2], "currency_code": ["GBP", "JPY", "EUR"], "currency_name": ["a", "b", None]},
        schema=currency.schema,
    )
    results = {r.rule.name: r.offending for r in evaluate_rules(currency, frame)}
    assert results == {
        "currency_id_is_unique": 2,
        "currency_id_is_not_null": 0,
        "currency_code_is_not_null": 0,
        "currency_code_is_an_accepted_value": 1,
        "currency_name_is_not_null": 1,
    }
    report = markdown_report(evaluate_rules(currency, frame))
    assert "| currency_code_is_an_accepted_value | currency_code is one of GBP, USD, EUR | error | 1 |" in report
    assert "JPY" in report
