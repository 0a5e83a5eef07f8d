import datetime as dt
import threading
from pathlib import Path

import dagster as dg
import polars as pl
import psycopg
import pyarrow as pa
import pytest

from totesys_platform.catalog import SOURCE_TABLES, SOURCE_TABLES_BY_NAME
from totesys_platform.raw.extract import (
    ROW_HASH,
    IngestionStoppedError,
    SchemaDriftError,
    extract_chunks,
    ingest_ahead,
    ingest_table,
)
from totesys_platform.resources.lake import LakeZone
from totesys_platform.source.simulator import Simulator
from totesys_platform_tests.conftest import check_evaluation, failure_text, run_graph

RAW = "group:raw"


def source_frame(url: str, table: str) -> pl.DataFrame:
    spec = SOURCE_TABLES_BY_NAME[table]
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        cur.execute(f'SELECT * FROM "{table}"')
        rows = cur.fetchall()
    return pl.DataFrame(rows, schema=dict(spec.schema), orient="row")


def zone_frame(zone: LakeZone, table: str) -> pl.DataFrame:
    """The table's rows as the source has them (without the source's row hash stored beside them)."""
    frame = zone.scan(table).collect()
    assert frame[ROW_HASH].null_count() == 0 and frame[ROW_HASH].str.len_chars().eq(32).all()
    return frame.drop(ROW_HASH)


def commits(zone: LakeZone, table: str) -> int:
    """How many commits the table has (0: never written)."""
    version = zone.version(table)
    return 0 if version is None else version + 1


def last_commit(zone: LakeZone, table: str) -> pl.DataFrame:
    """The rows the newest commit added."""
    return pl.concat(zone.changes(table, zone.version(table) - 1)).drop("_commit_version", ROW_HASH)


def test_first_materialisation_equals_the_source_exactly(platform):
    result = run_graph(platform, RAW)
    zone = LakeZone(url=platform.ingestion_url)
    for table in SOURCE_TABLES:
        expected = source_frame(platform.source_url, table.name).sort(table.primary_key)
        got = zone_frame(zone, table.name).sort(table.primary_key)
        assert got.schema == expected.schema, table.name
        assert got.equals(expected), table.name
    assert sorted(p.name for p in Path(platform.ingestion_url).iterdir()) == sorted(t.name for t in SOURCE_TABLES)
    materialised = [e.event_specific_data.materialization for e in result.get_asset_materialization_events()]
    added = {m.asset_key.path[-1]: m.metadata["rows_written"].value for m in materialised}
    held = {m.asset_key.path[-1]: m.metadata["dagster/row_count"].value for m in materialised}
    assert added["sales_order"] == held["sales_order"] == 11175


def test_incremental_runs_take_exactly_the_new_versions_then_nothing(platform):
    run_graph(platform, RAW)
    zone = LakeZone(url=platform.ingestion_url)
    before = {t.name: commits(zone, t.name) for t in SOURCE_TABLES}
    with psycopg.connect(platform.source_url) as conn:
        mark = conn.execute("SELECT max(last_updated) FROM payment").fetchone()[0]
        Simulator(conn, seed=11).run(40)
    run_graph(platform, RAW)
    for table in SOURCE_TABLES:
        source = source_frame(platform.source_url, table.name)
        new_versions = source.filter(pl.col("last_updated") > mark)
        if new_versions.height:
            assert commits(zone, table.name) == before[table.name] + 1, table.name  # one commit per run
            batch = last_commit(zone, table.name)
            assert batch.sort(table.primary_key).equals(new_versions.sort(table.primary_key)), table.name
        else:
            assert commits(zone, table.name) == before[table.name], table.name
        # Every version currently at the source is in the zone exactly once.
        everything = zone_frame(zone, table.name)
        assert everything.select(table.primary_key, "last_updated").is_duplicated().sum() == 0
        assert source.join(everything, on=[table.primary_key, "last_updated"], how="anti").height == 0
    files = {t.name: commits(zone, t.name) for t in SOURCE_TABLES}
    third = run_graph(platform, RAW)
    assert {t.name: commits(zone, t.name) for t in SOURCE_TABLES} == files
    quiet = [e.event_specific_data.materialization for e in third.get_asset_materialization_events()]
    assert all(m.metadata["rows_written"].value == 0 for m in quiet)
    # The row count is the table's, not the run's.
    assert {m.asset_key.path[-1]: m.metadata["dagster/row_count"].value for m in quiet} == {
        t.name: zone_frame(zone, t.name).height for t in SOURCE_TABLES
    }


def test_a_late_commit_inside_the_lookback_is_still_ingested_once(platform):
    run_graph(platform, RAW)
    zone = LakeZone(url=platform.ingestion_url)
    with psycopg.connect(platform.source_url) as conn:
        watermark = conn.execute("SELECT max(last_updated) FROM sales_order").fetchone()[0]
        # A transaction that committed late: its last_updated is older than the newest one ingested.
        conn.execute(
            "UPDATE sales_order SET units_sold = 4242, last_updated = %s WHERE sales_order_id = 7",
            (watermark - dt.timedelta(minutes=2),),
        )
    run_graph(platform, RAW)
    run_graph(platform, RAW)
    everything = zone_frame(zone, "sales_order")
    late = everything.filter((pl.col("sales_order_id") == 7) & (pl.col("units_sold") == 4242))
    assert late.height == 1
    assert everything.select("sales_order_id", "last_updated").is_duplicated().sum() == 0


def test_source_down_fails_clearly_writes_nothing_and_the_next_run_recovers(platform, tmp_path):
    from totesys_platform_tests.conftest import free_port, make_settings

    down = make_settings(tmp_path, f"postgresql://tote:hunter2@127.0.0.1:{free_port()}/totesys", platform.warehouse_url)
    result = run_graph(down, RAW, raise_on_error=False)
    assert not result.success
    message = failure_text(result)
    assert "TOTESYS_SOURCE_URL" in message and "hunter2" not in message
    assert not (tmp_path / "lake" / "ingestion").exists() or not any(
        (tmp_path / "lake" / "ingestion").rglob("*.parquet")
    )
    recovered = run_graph(platform, RAW)
    assert recovered.success and commits(LakeZone(url=platform.ingestion_url), "payment") == 1


def test_new_columns_are_kept_and_reported_and_dropped_ones_fail_clearly(platform):
    first = run_graph(platform, RAW)
    assert all(e.passed for e in first.get_asset_check_evaluations())
    assert len(first.get_asset_check_evaluations()) == 44  # four checks per raw table
    with psycopg.connect(platform.source_url) as conn:
        Simulator(conn).inject_new_column("design", "colour")
        conn.execute("UPDATE design SET last_updated = now() WHERE design_id = 8")
    result = run_graph(platform, RAW)
    design = next(
        e.event_specific_data.materialization
        for e in result.get_asset_materialization_events()
        if e.asset_key.path == ["raw", "design"]
    )
    assert design.metadata["new_source_columns"].value == "colour"
    drift = check_evaluation(result, "raw/design", "columns_match_the_catalog")
    assert not drift.passed and drift.severity == dg.AssetCheckSeverity.WARN
    assert "new column colour (kept as text)" in drift.description
    batch = LakeZone(url=platform.ingestion_url)
    latest = last_commit(batch, "design")
    assert latest["colour"].to_list() == ["unknown"]
    # A dropped column: an error on that table's check, nothing ingested for it, the other tables go on.
    with psycopg.connect(platform.source_url) as conn:
        Simulator(conn).drop_column("staff", "email_address")
        conn.execute("UPDATE payment SET last_updated = now() WHERE payment_id = 2")
    staff_batches = commits(batch, "staff")
    dropped = run_graph(platform, RAW)
    drift = check_evaluation(dropped, "raw/staff", "columns_match_the_catalog")
    assert not drift.passed and drift.severity == dg.AssetCheckSeverity.ERROR
    assert "missing column email_address" in drift.description and "staff" in drift.description
    materialized = {e.asset_key.to_user_string() for e in dropped.get_asset_materialization_events()}
    assert "raw/payment" in materialized and "raw/staff" not in materialized
    assert commits(batch, "staff") == staff_batches
    # Fixed at the source: the next run ingests the table again, nothing lost.
    with psycopg.connect(platform.source_url) as conn:
        conn.execute("ALTER TABLE staff ADD COLUMN email_address text NOT NULL DEFAULT 'back@terrifictotes.com'")
        conn.execute("UPDATE staff SET last_updated = now() WHERE staff_id = 3")
    recovered = run_graph(platform, RAW)
    assert check_evaluation(recovered, "raw/staff", "columns_match_the_catalog").passed
    assert last_commit(batch, "staff")["staff_id"].to_list() == [3]


def test_only_catalog_tables_are_read(platform, monkeypatch):
    queried = []
    import totesys_platform.raw.extract as ingest

    original = ingest.select_sql
    monkeypatch.setattr(
        ingest, "select_sql", lambda table, *a, **k: queried.append(table.name) or original(table, *a, **k)
    )
    run_graph(platform, RAW)
    assert sorted(queried) == sorted(t.name for t in SOURCE_TABLES)
    assert "_prisma_migrations" not in queried


def test_chunked_extraction_spools_every_row_in_bounded_chunks(platform, tmp_path):

    from totesys_platform.raw.extract import source_clock, source_snapshot
    from totesys_platform.resources.postgres import PostgresResource

    zone = LakeZone(url=str(tmp_path / "chunks"))
    with source_snapshot(PostgresResource(url=platform.source_url)) as cursor:
        result = ingest_table(
            cursor,
            zone,
            SOURCE_TABLES_BY_NAME["sales_order"],
            source_now=source_clock(cursor),
            lookback=dt.timedelta(minutes=15),
            chunk_rows=1000,
        )
    assert result.rows == 11175
    assert result.spool.reader() is not None  # closes the spool file for reading
    assert pa.ipc.open_file(result.spool.path).num_record_batches >= 11  # streamed in chunks of 1,000
    result.spool.close()
    with pytest.raises(SchemaDriftError):
        from totesys_platform.catalog import TEXT, SourceColumn, SourceTable

        ghost = SourceTable(
            "sales_order",
            "sales_order_id",
            (*SOURCE_TABLES_BY_NAME["sales_order"].columns, SourceColumn("ghost", TEXT, "a column the source lacks")),
            "x",
        )
        with source_snapshot(PostgresResource(url=platform.source_url)) as cursor:
            ingest_table(cursor, zone, ghost, source_now=source_clock(cursor), lookback=dt.timedelta(0), chunk_rows=10)


def test_ingestion_tables_are_append_only_delta_tables_whose_files_never_change(platform):
    from deltalake import DeltaTable

    zone_root = Path(platform.ingestion_url)

    def objects() -> dict[str, tuple[int, int]]:
        return {
            str(p.relative_to(zone_root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in zone_root.rglob("*")
            if p.is_file()
        }

    run_graph(platform, RAW)
    before = objects()
    for seed in range(12):  # enough commits on the busy tables to pass a checkpoint
        with psycopg.connect(platform.source_url) as conn:
            Simulator(conn, seed=seed).run(10)
        run_graph(platform, RAW)
    after = objects()
    changed = {k for k in before if k in after and before[k] != after[k]}
    assert changed <= {f"{t.name}/_delta_log/_last_checkpoint" for t in SOURCE_TABLES}
    assert before.keys() <= after.keys()  # nothing deleted
    payment = DeltaTable(str(zone_root / "payment"))
    config = payment.metadata().configuration
    assert config["delta.appendOnly"] == "true" and config["delta.enableExpiredLogCleanup"] == "false"
    # File statistics only on what the dedup read prunes by: the checkpoint, which lists every file of a
    # table never compacted, stays small (benchmarks/results: 991 kB -> 313 kB at 1,000 commits).
    assert config["delta.dataSkippingStatsColumns"] == "payment_id,last_updated"
    stats = {c for c in pa.table(payment.get_add_actions(flatten=True)).column_names if c.startswith(("min.", "max."))}
    assert stats == {"min.payment_id", "max.payment_id", "min.last_updated", "max.last_updated"}
    history = payment.history()
    assert all(h["operation"] == "WRITE" and h["operationParameters"]["mode"] == "Append" for h in history)
    assert all("watermark" in h and "run_id" in h for h in history)
    with pytest.raises(Exception, match="append-only"):
        payment.delete("payment_id = 1")


def test_a_row_stamped_ahead_of_the_source_clock_hides_no_later_change(platform):
    run_graph(platform)
    with psycopg.connect(platform.source_url) as conn:
        # An application server two hours fast writes one correction...
        conn.execute(
            "UPDATE sales_order SET units_sold = 1111, last_updated = localtimestamp + interval '2 hours'"
            " WHERE sales_order_id = 5"
        )
    first = run_graph(platform)
    from totesys_platform_tests.test_pipeline import assert_warehouse_matches_source, warehouse_rows

    seen = {t: warehouse_rows(platform, t) for t in ("fact_sales_order", "fact_purchase_order", "fact_payment")}
    clock = check_evaluation(first, "raw/sales_order", "rows_are_not_stamped_ahead_of_the_source_clock")
    assert not clock.passed and clock.severity == dg.AssetCheckSeverity.WARN
    assert clock.metadata["rows_ahead"].value == 1 and clock.metadata["max_seconds_ahead"].value > 7000
    with psycopg.connect(platform.source_url) as conn:
        # ...then correctly stamped changes on the same row and on others, committed afterwards.
        conn.execute("UPDATE sales_order SET units_sold = 2222, last_updated = localtimestamp WHERE sales_order_id = 5")
        conn.execute("UPDATE sales_order SET units_sold = 3333, last_updated = localtimestamp WHERE sales_order_id = 6")
        Simulator(conn, seed=5).run(20)
    run_graph(platform)
    run_graph(platform)
    zone = LakeZone(url=platform.ingestion_url)
    versions = zone_frame(zone, "sales_order").filter(pl.col("sales_order_id").is_in([5, 6]))
    assert {1111, 2222, 3333} <= set(versions["units_sold"].to_list())
    assert versions.select("sales_order_id", "last_updated").is_duplicated().sum() == 0
    # Every version reached the warehouse exactly once: the history seen before plus every current version.
    assert_warehouse_matches_source(platform, seen)


class _FakeSpool:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


class _FakeResult:
    def __init__(self, table: str) -> None:
        self.table, self.spool = table, _FakeSpool()


@pytest.mark.unit
def test_the_next_table_is_ingested_while_the_caller_handles_the_one_before():
    tables = list(SOURCE_TABLES[:4])
    started = {t.name: threading.Event() for t in tables}
    handed: list[_FakeResult] = []

    def ingest(table, stop):
        started[table.name].set()
        if table.name == tables[1].name:
            raise SchemaDriftError(f"raw/{table.name}: drifted", ["x"], [], [])
        if table.name == tables[3].name:
            raise RuntimeError("connection lost")  # not a table's own failure: raised, in its place
        handed.append(_FakeResult(table.name))
        return handed[-1]

    ingestions = ingest_ahead(tables, ingest)
    table, result = next(ingestions)
    assert (table.name, result.table) == (tables[0].name, tables[0].name)
    # While the caller still holds the first table, the second is being read.
    assert started[tables[1].name].wait(timeout=10)
    table, result = next(ingestions)
    assert table.name == tables[1].name and isinstance(result, SchemaDriftError)  # handed over, in order
    table, result = next(ingestions)
    assert result.table == tables[2].name
    with pytest.raises(RuntimeError, match="connection lost"):
        next(ingestions)


@pytest.mark.unit
def test_closing_the_ingestions_early_stops_the_table_in_hand_and_discards_it():
    tables = list(SOURCE_TABLES[:3])
    handed: list[_FakeResult] = []
    stopped: list[bool] = []

    def ingest(table, stop):
        if table.name != tables[0].name:
            stopped.append(stop.wait(timeout=10))  # still reading when the caller gives up
        handed.append(_FakeResult(table.name))
        return handed[-1]

    ingestions = ingest_ahead(tables, ingest)
    next(ingestions)
    ingestions.close()  # e.g. the caller's commit failed, or the run is being terminated
    # The second table's ingestion was told to stop and had ended before close() returned (the snapshot may
    # end now); its spooled rows were discarded; the third was never started.
    assert stopped == [True]
    assert [r.table for r in handed] == [tables[0].name, tables[1].name]
    assert handed[1].spool.closed and not handed[0].spool.closed  # the first is the caller's to close


@pytest.mark.unit
def test_a_stopped_extraction_ends_at_its_next_record_batch():
    table = SOURCE_TABLES_BY_NAME["currency"]
    row = pl.DataFrame([dict.fromkeys(table.schema)], schema=table.schema).to_arrow().to_batches()[0]

    class EndlessSource:  # a cursor whose query streams record batches for ever
        def execute(self, *args, **kwargs):
            pass

        def fetch_record_batch(self):
            while True:
                yield row

    stop = threading.Event()
    chunks = extract_chunks(EndlessSource(), table, [], None, chunk_rows=1, stop=stop)
    assert next(chunks).height == 1
    stop.set()
    with pytest.raises(IngestionStoppedError, match="raw/currency"):
        next(chunks)
