"""The lake zones through Dagster's IO managers: what a user's own asset and a notebook get."""

import dagster as dg
import polars as pl
import pytest

from totesys_platform.definitions import build_definitions
from totesys_platform.processed.assets import processed_key
from totesys_platform.resources.lake import LakeZone, OldLayoutError
from totesys_platform_tests.conftest import run_graph
from totesys_platform_tests.test_pipeline import EXPECTED_SQL, rows


@pytest.mark.slow
def test_a_users_asset_and_load_asset_value_receive_the_processed_table(platform):
    assert run_graph(platform).success

    @dg.asset(ins={"fact_sales_order": dg.AssetIn(key=processed_key("fact_sales_order"))})
    def units_by_currency(fact_sales_order: pl.LazyFrame) -> None:
        seen["frame"] = fact_sales_order.group_by("currency_id").agg(pl.col("units_sold").sum()).collect()

    seen: dict = {}
    defs = build_definitions(platform)
    user_defs = dg.Definitions.merge(defs, dg.Definitions(assets=[units_by_currency]))
    job = dg.define_asset_job("mine", selection=[units_by_currency.key]).resolve(
        asset_graph=user_defs.resolve_asset_graph()
    )
    result = job.execute_in_process(instance=dg.DagsterInstance.ephemeral(), resources=defs.resources)
    assert result.success
    expected = rows(platform.source_url, "SELECT currency_id, sum(units_sold) FROM sales_order GROUP BY 1 ORDER BY 1")
    assert sorted(seen["frame"].rows()) == [tuple(r) for r in expected]

    loaded = defs.load_asset_value(processed_key("fact_sales_order"))
    assert isinstance(loaded, pl.LazyFrame)
    frame = loaded.collect()
    assert frame.height == len(rows(platform.source_url, EXPECTED_SQL["fact_sales_order"]))
    assert frame.schema["created_time"] == pl.Time  # stored as microseconds in Delta, typed back on load
    staff = defs.load_asset_value(dg.AssetKey(["processed", "dim_staff"]))
    assert staff.collect().height == 20


@pytest.mark.unit
def test_an_old_layout_zone_is_refused_with_a_clear_message(tmp_path):
    old = tmp_path / "ingestion" / "sales_order" / "2026" / "11" / "26"
    old.mkdir(parents=True)
    (old / "20261126T101010000000Z-abcdef12.parquet").write_bytes(b"PAR1")
    zone = LakeZone(url=str(tmp_path / "ingestion"), zone_name="ingestion")
    with pytest.raises(OldLayoutError, match="previous layout.*fresh backfill"):
        zone.table("sales_order")
    assert zone.table("payment") is None  # never written: simply empty


@pytest.mark.unit
def test_a_merged_table_is_compacted_and_keeps_what_it_consumed(tmp_path):
    import pyarrow as pa

    from totesys_platform.resources.delta_settings import COMPACT_AFTER_FILES, CONSUMED_KEY

    zone = LakeZone(url=str(tmp_path / "processed"))
    for version in range(COMPACT_AFTER_FILES + 4):  # new members only: every merge adds a file
        frame = pl.DataFrame({"k": [version], "v": [f"new {version}"]})
        zone.merge("dim", frame, "k", {CONSUMED_KEY: {"raw": version}})
    table = zone.table("dim")
    assert pa.table(table.get_add_actions(flatten=True)).num_rows <= COMPACT_AFTER_FILES
    assert any(h["operation"] == "OPTIMIZE" for h in table.history())
    assert zone.consumed("dim") == {"raw": COMPACT_AFTER_FILES + 3}
    rows = zone.scan("dim").collect().sort("k")
    assert rows["v"].to_list() == [f"new {v}" for v in range(COMPACT_AFTER_FILES + 4)]
    # Compaction changes no data: the change feed holds each member's insert once, nothing from OPTIMIZE.
    assert sum(frame.height for frame in zone.changes("dim", None)) == COMPACT_AFTER_FILES + 4


@pytest.mark.unit
def test_a_users_frame_is_stored_as_a_delta_table_and_read_back_lazily(tmp_path):
    from totesys_platform.resources.io_managers import LakeIOManager

    @dg.asset(io_manager_key="processed_io_manager")
    def top_designs() -> pl.DataFrame:
        return pl.DataFrame({"design_id": [3, 1], "units": [900, 40]})

    @dg.asset(io_manager_key="processed_io_manager")
    def top_design(top_designs: pl.LazyFrame) -> pl.DataFrame:
        return top_designs.sort("units", descending=True).head(1).collect()

    manager = LakeIOManager(zone=LakeZone(url=str(tmp_path / "processed")))
    result = dg.materialize([top_designs, top_design], resources={"processed_io_manager": manager})
    assert result.success
    assert LakeZone(url=str(tmp_path / "processed")).scan("top_design").collect().rows() == [(3, 900)]
    metadata = result.asset_materializations_for_node("top_designs")[0].metadata
    assert metadata["rows_committed"].value == 2 and metadata["delta_version"].value == 0
