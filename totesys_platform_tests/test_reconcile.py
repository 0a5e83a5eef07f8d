"""Reconciliation: hard deletes, quiet updates and late rows found by segment checksums and recorded once."""

import datetime as dt

import polars as pl
import psycopg
import pytest

from totesys_platform.catalog import SOURCE_TABLES, SOURCE_TABLES_BY_NAME
from totesys_platform.raw import reconcile
from totesys_platform.raw.extract import ROW_HASH
from totesys_platform.raw.reconcile import DELETIONS, differing_ranges, reconcile_source
from totesys_platform.resources.lake import LakeZone
from totesys_platform.resources.postgres import PostgresResource
from totesys_platform_tests.conftest import run_graph

LOOKBACK = dt.timedelta(minutes=15)


def reconcile_all(settings, run_id: str, tables=SOURCE_TABLES):
    return reconcile_source(
        PostgresResource(url=settings.source_url),
        LakeZone(url=settings.ingestion_url, zone_name="ingestion"),
        LakeZone(url=settings.processed_url, zone_name="processed"),
        list(tables),
        run_id=run_id,
        lookback=LOOKBACK,
        log=print,
    )


def change_source_behind_the_cursor(url: str) -> dict[str, list[int]]:
    """Three payments and a sales order deleted, three orders' units changed without a new stamp (and the
    deleted order's transaction set to NULL by the schema itself), a design stamped long before the cursor."""
    with psycopg.connect(url, autocommit=True) as conn:
        payments = [r[0] for r in conn.execute("SELECT payment_id FROM payment ORDER BY payment_id LIMIT 3")]
        conn.execute("DELETE FROM payment WHERE payment_id = ANY(%s)", [payments])
        quiet = [r[0] for r in conn.execute("SELECT sales_order_id FROM sales_order ORDER BY 1 LIMIT 3 OFFSET 10")]
        conn.execute("UPDATE sales_order SET units_sold = units_sold + 1 WHERE sales_order_id = ANY(%s)", [quiet])
        row = conn.execute(
            "INSERT INTO design (created_at, design_name, file_location, file_name, last_updated)"
            " VALUES ('2020-01-01', 'Backdated', '/late', 'backdated.json', '2020-01-01') RETURNING design_id"
        ).fetchone()
        email = conn.execute(
            "UPDATE staff SET email_address = 'fixed@terrifictotes.com' WHERE staff_id = 1 RETURNING staff_id"
        ).fetchone()
        gone = conn.execute("SELECT sales_order_id FROM sales_order ORDER BY 1 LIMIT 1 OFFSET 20").fetchone()[0]
        unlinked = conn.execute("SELECT transaction_id FROM transaction WHERE sales_order_id = %s", [gone]).fetchone()
        conn.execute("DELETE FROM sales_order WHERE sales_order_id = %s", [gone])  # its transaction: SET NULL
    return {
        "payment": payments,
        "sales_order": quiet,
        "design": [row[0]],
        "staff": [email[0]],
        "deleted_sales_order": [gone],
        "transaction": [unlinked[0]],
    }


def assert_every_kind_found(settings) -> dict[str, list[int]]:
    """On an exact lake nothing is found; after the changes behind the cursor, each of them, by kind."""
    run_graph(settings, "group:raw")
    first = reconcile_all(settings, "reconcile-0")
    assert first.found == 0 and not first.errors, first.summary()  # no false positive on an exact lake
    changed = change_source_behind_the_cursor(settings.source_url)
    found = reconcile_all(settings, "reconcile-1")
    by_table = {t.table: t for t in found.tables}
    assert by_table["payment"].keys["deleted"] == sorted(changed["payment"])
    assert by_table["sales_order"].keys["quiet_update"] == sorted(changed["sales_order"])
    assert by_table["staff"].keys["quiet_update"] == changed["staff"]
    assert by_table["design"].keys["late_row"] == changed["design"]
    assert by_table["sales_order"].keys["deleted"] == changed["deleted_sales_order"]
    assert by_table["transaction"].keys["quiet_update"] == changed["transaction"]  # the schema's SET NULL
    expected_tables = {"payment", "sales_order", "staff", "design", "transaction"}
    assert {name for name, c in found.counts.items() if sum(c.values())} == expected_tables, found.summary()
    # Only the differing key ranges were read row by row, not the tables.
    assert by_table["sales_order"].rows_read <= 4 * reconcile.LEAF_KEYS
    return changed


def test_on_the_generated_source_too_every_kind_is_found(tmp_path, new_database, generated_tables):
    from totesys_platform.source import LOAD_ORDER, copy_frame, create_schema, reset_sequences
    from totesys_platform_tests.conftest import make_settings

    source_url = new_database("generated")
    with psycopg.connect(source_url) as conn:
        create_schema(conn)
        for name in LOAD_ORDER:
            copy_frame(conn, name, generated_tables[name])
        reset_sequences(conn)
    settings = make_settings(tmp_path, source_url, new_database("warehouse"))
    assert_every_kind_found(settings)
    assert reconcile_all(settings, "reconcile-2").found == 0


def test_reconciliation_finds_what_the_cursor_missed_records_it_once_and_nothing_when_in_step(platform):
    changed = assert_every_kind_found(platform)
    ingestion = LakeZone(url=platform.ingestion_url)
    deletions = ingestion.scan(DELETIONS).collect()
    deleted = {(t, k) for t, k in deletions.select("table_name", "source_id").iter_rows()}
    assert deleted == {("payment", k) for k in changed["payment"]} | {
        ("sales_order", changed["deleted_sales_order"][0])
    }
    assert set(deletions["run_id"]) == {"reconcile-1"}
    corrected = ingestion.scan("sales_order").filter(pl.col("sales_order_id").is_in(changed["sales_order"])).collect()
    assert corrected.group_by("sales_order_id").len()["len"].to_list() == [2, 2, 2]  # a version appended
    commit = ingestion.last_commit("sales_order")
    assert commit["reconciliation"] == "reconcile-1" and commit["watermark"]  # the cursor's state carried
    with psycopg.connect(platform.source_url) as conn:
        units = dict(
            conn.execute(
                "SELECT sales_order_id, units_sold FROM sales_order WHERE sales_order_id = ANY(%s)",
                [changed["sales_order"]],
            ).fetchall()
        )
    appended = pl.concat(ingestion.changes("sales_order", ingestion.version("sales_order") - 1))
    assert dict(appended.select("sales_order_id", "units_sold").iter_rows()) == units  # the source's values
    assert appended[ROW_HASH].null_count() == 0

    # A second reconciliation with nothing new finds and writes nothing; the next ordinary run is idle.
    versions = {t.name: ingestion.version(t.name) for t in SOURCE_TABLES} | {DELETIONS: ingestion.version(DELETIONS)}
    again = reconcile_all(platform, "reconcile-2")
    assert again.found == 0, again.summary()
    assert {n: LakeZone(url=platform.ingestion_url).version(n) for n in versions} == versions


def test_a_reconciliation_killed_between_its_commits_is_completed_by_the_next(platform, monkeypatch):
    run_graph(platform, "group:raw")
    changed = change_source_behind_the_cursor(platform.source_url)
    real = reconcile.record_findings

    def killed(ingestion, table, found, run_id, now):
        if table.name == "payment":
            raise KeyboardInterrupt("killed")
        real(ingestion, table, found, run_id, now)

    monkeypatch.setattr(reconcile, "record_findings", killed)
    with pytest.raises(KeyboardInterrupt):
        reconcile_all(platform, "killed", [SOURCE_TABLES_BY_NAME[n] for n in ("sales_order", "payment")])
    monkeypatch.setattr(reconcile, "record_findings", real)
    completed = reconcile_all(platform, "after")
    by_table = {t.table: t for t in completed.tables}
    assert by_table["sales_order"].found == 0  # recorded by the killed run, not again
    assert by_table["payment"].keys["deleted"] == sorted(changed["payment"])
    assert LakeZone(url=platform.ingestion_url).scan(DELETIONS).collect().height == 4


@pytest.mark.unit
def test_bisection_reads_only_the_ranges_that_differ():
    keys = pl.DataFrame({"source_id": list(range(1, 100_001))})
    hashes = keys.with_columns(
        pl.col("source_id").cast(pl.String).hash().cast(pl.String).str.slice(0, 16).alias(ROW_HASH),
        last_updated=pl.lit(dt.datetime(2024, 1, 1)),
        deleted=pl.lit(False),
    )
    changed = hashes.with_columns(
        pl.when(pl.col("source_id").is_in([17, 50_000, 99_999]))
        .then(pl.lit("ffffffffffffff"))
        .otherwise(pl.col(ROW_HASH))
        .alias(ROW_HASH)
    ).filter(pl.col("source_id") != 70_000)
    queries = []

    def source(lo, hi, width):
        queries.append((lo, hi, width))
        return reconcile.lake_segments(changed, lo, hi, width)

    ranges = differing_ranges(source, lambda lo, hi, w: reconcile.lake_segments(hashes, lo, hi, w), 1, 100_000)
    assert len(ranges) == 4 and all(hi - lo < reconcile.LEAF_KEYS for lo, hi in ranges)
    for key in (17, 50_000, 99_999, 70_000):
        assert any(lo <= key <= hi for lo, hi in ranges)
    assert len(queries) <= 1 + 4 * 2  # one query per level per differing segment


def test_the_reconcile_command_reports_alerts_once_and_fails_clearly_when_it_cannot_run(
    platform, tmp_path, smtp_inbox, monkeypatch, capsys
):
    from totesys_platform.cli import main
    from totesys_platform_tests.conftest import wait_for_mail

    port, received = smtp_inbox
    env = {
        "TOTESYS_HOME": str(platform.home),
        "TOTESYS_SOURCE_URL": platform.source_url,
        "TOTESYS_WAREHOUSE_URL": platform.warehouse_url,
        "TOTESYS_INGESTION_URL": platform.ingestion_url,
        "TOTESYS_PROCESSED_URL": platform.processed_url,
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "TOTESYS_SMTP_HOST": "127.0.0.1",
        "TOTESYS_SMTP_PORT": str(port),
        "TOTESYS_SMTP_SECURITY": "none",
        "TOTESYS_ALERT_TO": "data-team@terrifictotes.com",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    run_graph(platform, "group:raw")
    changed = change_source_behind_the_cursor(platform.source_url)
    assert main(["reconcile"]) == 0
    out = capsys.readouterr().out
    assert (
        f"payment: found what the cursor missed and recorded it: 3 deleted(s), e.g. {sorted(changed['payment'])}" in out
    )
    assert "sales_order: found" in out and "address: the lake's newest versions match the source" in out
    wait_for_mail(received, 1)
    assert len(received) == 1 and "reconciliation found 10 change(s)" in received[0]["Subject"]
    assert "payment: 3 deleted" in received[0].get_payload()

    assert main(["reconcile"]) == 0  # nothing new: nothing found, no e-mail
    assert "found what the cursor missed" not in capsys.readouterr().out
    wait_for_mail(received, 2, seconds=1)
    assert len(received) == 1

    monkeypatch.setenv("TOTESYS_SOURCE_URL", "postgresql://nobody@127.0.0.1:1/totesys")
    assert main(["reconcile"]) == 1
    assert "reconciliation could not run" in capsys.readouterr().err


@pytest.mark.slow
def test_what_the_reconciliation_found_reaches_the_warehouse_once_and_facts_keep_their_history(platform):
    from totesys_platform.catalog import WAREHOUSE_TABLES
    from totesys_platform_tests.test_pipeline import EXPECTED_SQL, assert_history_holds_together, rows, warehouse_rows
    from totesys_platform_tests.test_reports import SOURCE_SQL, normalise, report_rows

    run_graph(platform)
    facts_before = {t.name: warehouse_rows(platform, t.name) for t in WAREHOUSE_TABLES if t.is_fact}
    changed = change_source_behind_the_cursor(platform.source_url)
    reconcile_all(platform, "reconcile-1")
    run_graph(platform)

    for table in WAREHOUSE_TABLES:
        if table.is_history:
            assert_history_holds_together(platform, table)
            continue
        got = warehouse_rows(platform, table.name)
        expected = rows(platform.source_url, EXPECTED_SQL[table.name])
        if not table.is_fact:
            assert got == expected if table.name != "dim_date" else set(got) >= set(expected), table.name
            continue
        # Facts: every current source version, one row per version (a corrected one in place), and the
        # versions of deleted rows kept as history.
        assert set(expected) <= set(got) and len(got) == len(facts_before[table.name]), table.name
    with psycopg.connect(platform.warehouse_url) as conn:
        units = conn.execute(
            "SELECT sales_order_id, units_sold FROM fact_sales_order WHERE sales_order_id = ANY(%s) ORDER BY 1",
            [changed["sales_order"]],
        ).fetchall()
        deleted_payments = conn.execute(
            "SELECT count(*) FROM fact_payment WHERE payment_id = ANY(%s)", [changed["payment"]]
        ).fetchone()[0]
        deletions = conn.execute(
            "SELECT table_name, source_id, detected_at IS NOT NULL FROM source_deletions ORDER BY 2"
        ).fetchall()
    with psycopg.connect(platform.source_url) as conn:
        source_units = conn.execute(
            "SELECT sales_order_id, units_sold FROM sales_order WHERE sales_order_id = ANY(%s) ORDER BY 1",
            [changed["sales_order"]],
        ).fetchall()
    assert units == source_units  # the corrected values, in place
    assert deleted_payments == 3  # history kept
    gone = [("payment", k, True) for k in changed["payment"]] + [("sales_order", *changed["deleted_sales_order"], True)]
    assert sorted(deletions) == sorted(gone)
    # The reports count what is gone as gone, and the corrected units: the same SQL over the source agrees.
    with psycopg.connect(platform.source_url) as source:
        for name, query in SOURCE_SQL.items():
            assert report_rows(platform, name) == normalise(source.execute(query).fetchall()), name

    # Again: nothing new is found, and the warehouse does not change.
    snapshot = {t.name: warehouse_rows(platform, t.name) for t in WAREHOUSE_TABLES}
    assert reconcile_all(platform, "reconcile-2").found == 0
    run_graph(platform)
    assert {t.name: warehouse_rows(platform, t.name) for t in WAREHOUSE_TABLES} == snapshot
    with psycopg.connect(platform.warehouse_url) as conn:
        assert conn.execute("SELECT count(*) FROM source_deletions").fetchone()[0] == 4


@pytest.mark.slow
def test_a_whole_graph_run_reconciles_before_it_transforms_so_the_same_run_carries_the_findings(platform):
    import dagster as dg
    from dagster._core.execution.api import create_execution_plan

    from totesys_platform.definitions import build_definitions

    job = build_definitions(platform).resolve_job_def("totesys_pipeline_job")
    # Every step reading the raw stage waits for the reconciliation (a blocking check), whatever the order.
    plan = create_execution_plan(job)
    readers = [
        s for s in plan.get_all_steps_in_topo_order() if "raw_totesys_tables" in s.get_execution_dependency_keys()
    ]
    readers = [s for s in readers if s.key != "reconcile_source_with_the_lake"]
    assert len(readers) >= 11
    assert all("reconcile_source_with_the_lake" in s.get_execution_dependency_keys() for s in readers)
    assert job.execute_in_process(instance=dg.DagsterInstance.ephemeral()).success
    changed = change_source_behind_the_cursor(platform.source_url)
    result = job.execute_in_process(instance=dg.DagsterInstance.ephemeral())
    assert result.success
    with psycopg.connect(platform.warehouse_url) as conn:
        gone = conn.execute("SELECT table_name, source_id FROM source_deletions ORDER BY 1, 2").fetchall()
        units = conn.execute(
            "SELECT units_sold FROM fact_sales_order WHERE sales_order_id = ANY(%s) ORDER BY sales_order_id",
            [changed["sales_order"]],
        ).fetchall()
    with psycopg.connect(platform.source_url) as conn:
        source_units = conn.execute(
            "SELECT units_sold FROM sales_order WHERE sales_order_id = ANY(%s) ORDER BY sales_order_id",
            [changed["sales_order"]],
        ).fetchall()
    assert gone == sorted(
        [("payment", k) for k in changed["payment"]] + [("sales_order", *changed["deleted_sales_order"])]
    )
    assert units == source_units
