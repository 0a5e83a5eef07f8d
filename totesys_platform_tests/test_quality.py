"""Issue 7's acceptance: bad data injected with the simulator shows in the right check, lands in quarantine,
never in the warehouse; good rows flow; raw rows = warehouse rows + quarantined rows."""

import dagster as dg
import polars as pl
import psycopg
import pytest

from totesys_platform.definitions import build_assets, build_resources
from totesys_platform.resources.lake import LakeZone
from totesys_platform.source.simulator import Simulator
from totesys_platform.warehouse.checks import build_checks
from totesys_platform_tests.conftest import check_evaluation
from totesys_platform_tests.test_pipeline import warehouse_rows


def run_with_checks(settings, raise_on_error=True):
    return dg.materialize(
        [*build_assets(settings), *build_checks()],
        resources=build_resources(settings),
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=raise_on_error,
    )


@pytest.mark.slow
def test_bad_rows_are_reported_quarantined_reconciled_and_a_fix_flows_through(platform):
    run_with_checks(platform)
    with psycopg.connect(platform.source_url) as conn:
        sim = Simulator(conn, seed=11)
        bad_date = sim.inject_malformed_date()
        negative = sim.inject_out_of_range_quantity()
        good = [sim.new_sales_order() for _ in range(5)]
        conn.execute(
            "UPDATE sales_order SET units_sold = 7, last_updated = now() WHERE sales_order_id = %s", (good[0],)
        )
    result = run_with_checks(platform)
    quarantine = check_evaluation(result, "processed/fact_sales_order", "fact_sales_order_quarantine_is_empty")
    assert not quarantine.passed and quarantine.severity == dg.AssetCheckSeverity.WARN
    assert "2 rows quarantined" in quarantine.description
    assert (
        "agreed_delivery_date_is_a_date 1" in quarantine.description
        and "units_sold_is_positive 1" in quarantine.description
    )
    sample = quarantine.metadata["sample"].value
    assert str(bad_date) in sample and "2024-13-45" in sample and str(negative) in sample
    # Positive but outside the spec's 1000-100000 units: loaded, and a warning says which rule.
    rules = check_evaluation(result, "processed/fact_sales_order", "fact_sales_order_batch_meets_the_star_schema_rules")
    assert rules.passed is False and rules.severity == dg.AssetCheckSeverity.WARN
    assert "units_sold_is_within_the_spec_range: 1 rows" in rules.description
    # Good rows reach the warehouse, bad ones do not, and the count identity holds.
    loaded = [r[0] for r in warehouse_rows(platform, "fact_sales_order")]
    raw = LakeZone(url=platform.ingestion_url)
    raw_ids = raw.scan("sales_order").select("sales_order_id").collect()["sales_order_id"].to_list()
    assert set(good) <= set(loaded)
    for bad in (bad_date, negative):  # every version of the order but the broken one
        assert loaded.count(bad) == raw_ids.count(bad) - 1
    reconciled = check_evaluation(
        result, "warehouse/fact_sales_order", "fact_sales_order_reconciles_with_the_ingestion_zone"
    )
    assert reconciled.passed, reconciled.description
    meta = {k: v.value for k, v in reconciled.metadata.items()}
    assert meta["quarantined"] == 2 and meta["raw"] == meta["warehouse"] + meta["quarantined"]
    assert meta["warehouse_counted"] == 0  # in the load's step: the load log's count, no full count(*)
    assert raw.row_count("sales_order") == len(warehouse_rows(platform, "fact_sales_order")) + 2
    # The quarantine dataset holds the raw rows with their rule and a readable reason.
    processed = LakeZone(url=platform.processed_url)
    quarantined = processed.scan("quarantine/fact_sales_order").collect()
    assert sorted(quarantined["source_id"].to_list()) == sorted({bad_date, negative})
    assert set(quarantined["rule"]) == {"agreed_delivery_date_is_a_date", "units_sold_is_positive"}
    assert (
        quarantined.filter(pl.col("rule") == "agreed_delivery_date_is_a_date")["reason"]
        .str.contains("2024-13-45")
        .all()
    )
    # A later source version that fixes the row flows through.
    with psycopg.connect(platform.source_url) as conn:
        conn.execute(
            "UPDATE sales_order SET agreed_delivery_date = '2024-12-01', last_updated = now() WHERE sales_order_id = %s",
            (bad_date,),
        )
    run_with_checks(platform)
    fixed = [r for r in warehouse_rows(platform, "fact_sales_order") if r[0] == bad_date]
    assert any(str(r[12]) == "2024-12-01" for r in fixed)  # agreed_delivery_date


@pytest.mark.slow
def test_a_batch_breaking_a_blocking_rule_never_reaches_the_warehouse(platform):
    run_with_checks(platform)
    with psycopg.connect(platform.source_url) as conn:
        conn.execute("UPDATE currency SET currency_code = 'JPY', last_updated = now() WHERE currency_id = 1")
    blocked = run_with_checks(platform, raise_on_error=False)
    assert not blocked.success
    rules = check_evaluation(blocked, "processed/dim_currency", "dim_currency_batch_meets_the_star_schema_rules")
    assert not rules.passed and rules.severity == dg.AssetCheckSeverity.ERROR
    assert "currency_code_is_an_accepted_value: 1 rows" in rules.description
    assert "JPY" in rules.metadata["rules"].value
    assert ("JPY",) not in [(r[1],) for r in warehouse_rows(platform, "dim_currency")]
    processed = LakeZone(url=platform.processed_url)
    assert "JPY" not in processed.scan("dim_currency").collect()["currency_code"].to_list()
    # Fixed at the source: the next run goes through.
    with psycopg.connect(platform.source_url) as conn:
        conn.execute("UPDATE currency SET currency_code = 'GBP', last_updated = now() WHERE currency_id = 1")
    assert run_with_checks(platform).success


@pytest.mark.slow
def test_reconciliation_names_the_rows_that_differ(platform):
    run_with_checks(platform)
    with psycopg.connect(platform.warehouse_url) as conn:
        conn.execute("DELETE FROM fact_payment WHERE payment_id = 7")
        conn.execute("ALTER TABLE dim_staff DISABLE TRIGGER ALL")
        conn.execute("DELETE FROM dim_staff WHERE staff_id = 4")
        conn.execute("DELETE FROM dim_design_history WHERE design_id = 9")
    # The reconciliation checks run on their own (as from the UI): the warehouse tables are not reloaded.
    check = dg.AssetCheckKey(
        dg.AssetKey(["warehouse", "fact_payment"]), "fact_payment_reconciles_with_the_ingestion_zone"
    )
    dims = dg.AssetCheckKey(dg.AssetKey(["warehouse", "dim_staff"]), "dim_staff_reconciles_with_the_ingestion_zone")
    history = dg.AssetCheckKey(
        dg.AssetKey(["warehouse", "dim_design_history"]), "dim_design_history_reconciles_with_the_ingestion_zone"
    )
    result = dg.materialize(
        build_assets(platform),
        resources=build_resources(platform),
        selection=dg.AssetSelection.checks(check, dims, history),
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert not result.get_asset_materialization_events()
    payments = check_evaluation(result, "warehouse/fact_payment", "fact_payment_reconciles_with_the_ingestion_zone")
    assert not payments.passed and "1 missing from the warehouse" in payments.description
    assert payments.metadata["warehouse_counted"].value == 1  # on its own, the check counts the table
    assert payments.metadata["missing_rows"].value == 1 and "| 7 |" in payments.metadata["missing_sample"].value
    staff = check_evaluation(result, "warehouse/dim_staff", "dim_staff_reconciles_with_the_ingestion_zone")
    assert not staff.passed and staff.metadata["warehouse"].value == staff.metadata["raw"].value - 1
    assert "| 4 |" in staff.metadata["missing_sample"].value
    # A history's rows are states: the missing one is named by member and valid_from.
    states = check_evaluation(
        result, "warehouse/dim_design_history", "dim_design_history_reconciles_with_the_ingestion_zone"
    )
    assert not states.passed and states.metadata["missing_rows"].value == 1
    assert (
        "| 9 |" in states.metadata["missing_sample"].value and "valid_from" in states.metadata["missing_sample"].value
    )
