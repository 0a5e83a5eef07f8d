"""The catalog as the UI shows it: every asset's columns, types, meanings and lineage, before any run."""

import dagster as dg
import pytest

from totesys_platform.catalog import SOURCE_TABLES, WAREHOUSE_TABLES
from totesys_platform.definitions import build_definitions
from totesys_platform.reports.specs import REPORTS
from totesys_platform_tests.conftest import make_settings


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    settings = make_settings(tmp_path_factory.mktemp("defs"), "postgresql://u@h/s", "postgresql://u@h/w")
    return build_definitions(settings).resolve_asset_graph()


def schema(graph, key: dg.AssetKey) -> dict[str, dg.TableColumn]:
    return {c.name: c for c in graph.get(key).metadata["dagster/column_schema"].columns}


def lineage(graph, key: dg.AssetKey) -> dict[str, list[dg.TableColumnDep]]:
    return graph.get(key).metadata["dagster/column_lineage"].deps_by_column


def test_every_asset_has_its_columns_described_and_typed_before_any_run(graph):
    for key in graph.get_all_asset_keys():
        if key.path[-1] == "dashboard":
            continue
        columns = schema(graph, key)
        assert columns, key
        assert all(c.type and c.description for c in columns.values()), key
    assert list(schema(graph, dg.AssetKey(["raw", "design"]))) == [c.name for c in SOURCE_TABLES[4].columns]
    for table in WAREHOUSE_TABLES:
        assert list(schema(graph, dg.AssetKey(["warehouse", table.name]))) == [c.name for c in table.columns]


def test_every_warehouse_column_traces_to_a_raw_column_or_is_marked_computed(graph):
    traced = 0
    for table in WAREHOUSE_TABLES:
        processed = lineage(graph, dg.AssetKey(["processed", table.name]))
        warehouse = schema(graph, dg.AssetKey(["warehouse", table.name]))
        loaded = lineage(graph, dg.AssetKey(["warehouse", table.name]))
        for name, column in warehouse.items():
            if column.tags["derivation"] == "computed":
                assert name not in processed, (table.name, name)
                continue
            assert [d.asset_key for d in loaded[name]] == [dg.AssetKey(["processed", table.name])], (table.name, name)
            assert processed[name], (table.name, name)
            for dep in processed[name]:  # down to a column the raw asset has
                assert dep.asset_key.path[0] == "raw" and dep.column_name in schema(graph, dep.asset_key)
                traced += 1
    assert traced > 100
    staff = lineage(graph, dg.AssetKey(["processed", "dim_staff"]))
    assert staff["department_name"] == [dg.TableColumnDep(dg.AssetKey(["raw", "department"]), "department_name")]
    sales = lineage(graph, dg.AssetKey(["processed", "fact_sales_order"]))
    assert sales["sales_staff_id"] == [dg.TableColumnDep(dg.AssetKey(["raw", "sales_order"]), "staff_id")]
    history = lineage(graph, dg.AssetKey(["processed", "dim_counterparty_history"]))
    assert {d.asset_key.path[-1] for d in history["valid_from"]} == {"counterparty", "address"}


def test_constraints_and_the_lineage_table_come_from_the_catalog(graph):
    fact = schema(graph, dg.AssetKey(["warehouse", "fact_sales_order"]))
    assert "references dim_staff" in fact["sales_staff_id"].constraints.other
    assert fact["sales_record_id"].constraints.unique and not fact["sales_record_id"].constraints.nullable
    currency = schema(graph, dg.AssetKey(["warehouse", "dim_currency"]))
    assert "is one of GBP, USD, EUR" in currency["currency_code"].constraints.other
    assert currency["currency_id"].constraints.other == ["primary key"]
    raw = schema(graph, dg.AssetKey(["raw", "payment"]))["payment_id"].constraints  # a key with every version
    assert not raw.unique and raw.other == ["primary key at the source; unique with last_updated here"]
    history = schema(graph, dg.AssetKey(["warehouse", "dim_staff_history"]))
    assert "primary key (staff_id, valid_from)" in history["valid_from"].constraints.other
    assert history["valid_to"].constraints.nullable and not history["is_current"].constraints.nullable
    table = graph.get(dg.AssetKey(["warehouse", "dim_counterparty"])).metadata["column_lineage"].value
    assert "| counterparty_legal_city | raw/address.city | copied |" in table
    assert "| created_date | raw/sales_order.created_at | date part |" in (
        graph.get(dg.AssetKey(["processed", "fact_sales_order"])).metadata["column_lineage"].value
    )


def test_report_columns_trace_to_warehouse_columns(graph):
    for report in REPORTS:
        key = dg.AssetKey(["reports", report.name])
        assert list(schema(graph, key)) == [c.name for c in report.columns]
        for deps in lineage(graph, key).values():
            for dep in deps:
                assert dep.column_name in schema(graph, dep.asset_key), (report.name, dep)


def test_every_asset_has_an_owner_and_a_description(graph):
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.owners == ["team:data-engineering"] and node.description, key
