import datetime as dt
import json
from decimal import Decimal

import polars as pl
import psycopg
import pytest

from totesys_platform.catalog import SOURCE_TABLES
from totesys_platform.source import LOAD_ORDER, copy_frame, create_schema, reset_sequences, table_counts
from totesys_platform.source.generator import REAL_COUNTS, generate
from totesys_platform.source.simulator import EVENT_KINDS, Simulator

REAL_TOTALS = {
    "address": 30,
    "counterparty": 20,
    "currency": 3,
    "department": 8,
    "design": 472,
    "staff": 20,
    "payment_type": 4,
    "sales_order": 11175,
    "purchase_order": 4640,
    "transaction": 15815,
}


def test_schema_matches_the_spec(sample_source):
    with psycopg.connect(sample_source) as conn:
        for table in SOURCE_TABLES:
            rows = conn.execute(
                "SELECT column_name, data_type, is_nullable FROM information_schema.columns"
                " WHERE table_schema = 'public' AND table_name = %s ORDER BY ordinal_position",
                (table.name,),
            ).fetchall()
            assert [(r[0], r[1], r[2] == "YES") for r in rows] == [
                (c.name, c.type.information_schema_type, c.nullable) for c in table.columns
            ], table.name
            pk = conn.execute(
                "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
                " WHERE i.indrelid = %s::regclass AND i.indisprimary",
                (f'"{table.name}"',),
            ).fetchall()
            assert pk == [(table.primary_key,)]
        precision = dict(
            conn.execute(
                "SELECT table_name || '.' || column_name, coalesce(datetime_precision, numeric_scale) FROM information_schema.columns"
                " WHERE table_schema = 'public' AND column_name IN ('last_updated', 'unit_price', 'payment_amount')"
            ).fetchall()
        )
        assert precision["sales_order.last_updated"] == 3 and precision["payment.payment_amount"] == 2
        assert (
            conn.execute(
                "SELECT character_maximum_length FROM information_schema.columns WHERE table_name='currency' AND column_name='currency_code'"
            ).fetchone()[0]
            == 3
        )
        enums = dict(
            conn.execute(
                "SELECT t.typname, array_agg(e.enumlabel ORDER BY e.enumsortorder) FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid GROUP BY 1"
            ).fetchall()
        )
        assert enums == {
            "PaymentTypeName": ["SALES_RECEIPT", "SALES_REFUND", "PURCHASE_PAYMENT", "PURCHASE_REFUND"],
            "TransactionType": ["SALE", "PURCHASE"],
        }
        rules = dict(
            conn.execute(
                "SELECT conrelid::regclass::text || '.' || a.attname, confdeltype FROM pg_constraint c"
                " JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1] WHERE contype = 'f'"
            ).fetchall()
        )
        assert rules["transaction.sales_order_id"] == "n" and rules["transaction.purchase_order_id"] == "n"
        assert rules["payment.transaction_id"] == "r" and rules["sales_order.design_id"] == "r"
        assert len(rules) == 17  # counterparty 1, staff 1, sales_order 5, purchase_order 4, transaction 2, payment 4
        unique = {
            r[0]
            for r in conn.execute(
                "SELECT conrelid::regclass::text || '.' || a.attname FROM pg_constraint c"
                " JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1] WHERE contype = 'u' AND connamespace = 'public'::regnamespace"
            )
        }
        assert unique == {"payment.transaction_id", "transaction.sales_order_id", "transaction.purchase_order_id"}
        assert conn.execute("SELECT count(*) FROM _prisma_migrations").fetchone()[0] == 1


def test_real_sample_loads_exactly(sample_source, sample_dir):
    with psycopg.connect(sample_source) as conn:
        counts = table_counts(conn)
        assert {k: v for k, v in counts.items() if k != "payment"} == REAL_TOTALS
        assert counts["payment"] == counts["transaction"]
        row = conn.execute(
            "SELECT unit_price, created_at, agreed_delivery_date FROM sales_order WHERE sales_order_id = 2"
        ).fetchone()
        assert row == (Decimal("3.94"), dt.datetime(2022, 11, 3, 14, 20, 52, 186000), "2022-11-07")
        first = json.loads((sample_dir / "oltp_2024-11-14" / "purchase_order.jsonl").read_text().splitlines()[0])
        got = conn.execute(
            "SELECT item_code, item_unit_price, last_updated FROM purchase_order WHERE purchase_order_id = %s",
            (first["purchase_order_id"],),
        ).fetchone()
        assert got == (
            first["item_code"],
            Decimal(str(first["item_unit_price"])).quantize(Decimal("0.01")),
            dt.datetime.fromisoformat(first["last_updated"]),
        )
        # The real payment rows are kept as they are (payment 1 was paid on 2022-11-07 at 07:55:11.885).
        assert conn.execute(
            "SELECT paid, last_updated, payment_amount FROM payment WHERE payment_id = 1"
        ).fetchone() == (True, dt.datetime(2022, 11, 7, 7, 55, 11, 885000), Decimal("56925.44"))
        assert conn.execute("SELECT transaction_id FROM payment WHERE payment_id = 9").fetchone()[0] == 10
        # Derived payments follow the rule: amount = quantity x price, same counterparty and currency.
        mismatches = conn.execute(
            "SELECT count(*) FROM payment p JOIN transaction t USING (transaction_id) JOIN sales_order s USING (sales_order_id)"
            " WHERE p.payment_id > 46 AND (p.payment_amount <> s.units_sold * s.unit_price OR p.counterparty_id <> s.counterparty_id"
            " OR p.currency_id <> s.currency_id OR p.payment_date <> s.agreed_payment_date OR p.payment_type_id <> 1)"
        ).fetchone()[0]
        assert mismatches == 0
        paid, unpaid = conn.execute(
            "SELECT count(*) FILTER (WHERE paid), count(*) FILTER (WHERE NOT paid) FROM payment"
        ).fetchone()
        assert paid > 0 and unpaid > 0


@pytest.mark.unit
def test_generator_is_realistic_and_deterministic():
    tables = generate(scale=1, seed=3)
    for name in ("sales_order", "purchase_order", "design"):
        assert abs(tables[name].height - REAL_COUNTS[name]) <= 0.1 * REAL_COUNTS[name]
    assert tables["transaction"].height == tables["sales_order"].height + tables["purchase_order"].height
    assert tables["payment"]["transaction_id"].n_unique() == tables["transaction"].height
    sales = tables["sales_order"]
    assert sales["created_at"].dt.weekday().max() <= 5
    assert sales["created_at"].dt.hour().is_between(8, 18).all()
    assert sales["unit_price"].cast(pl.Float64).is_between(2, 4).all()
    assert sales["units_sold"].is_between(1001, 99999).all()
    assert tables["department"].filter(pl.col("location") == "Leds").height == 1
    assert (
        tables["staff"]["email_address"].str.contains("'").any()
        or tables["counterparty"]["delivery_contact"].str.contains("'").any()
    )
    assert tables["purchase_order"]["item_code"].n_unique() == tables["purchase_order"].height
    paid = tables["payment"].filter("paid")
    assert (paid["last_updated"].dt.strftime("%H:%M:%S") == "07:55:11").all() and paid.height > 0
    again = generate(scale=1, seed=3)
    for name in LOAD_ORDER:
        assert tables[name].equals(again[name]), name
    assert not generate(scale=1, seed=4)["sales_order"].equals(sales)


def test_generated_source_loads_with_copy_and_keeps_its_links(new_database):
    url = new_database("gen")
    tables = generate(scale=0.2, seed=1)
    with psycopg.connect(url) as conn:
        create_schema(conn)
        for name in LOAD_ORDER:
            copy_frame(conn, name, tables[name])
        reset_sequences(conn)
        assert table_counts(conn) == {name: tables[name].height for name in LOAD_ORDER}
        orphans = conn.execute(
            "SELECT count(*) FROM sales_order s LEFT JOIN transaction t USING (sales_order_id) LEFT JOIN payment p USING (transaction_id)"
            " WHERE p.payment_id IS NULL"
        ).fetchone()[0]
        assert orphans == 0


def test_simulator_events_show_as_new_versions_and_bad_data_is_what_was_asked(sample_source):
    with psycopg.connect(sample_source) as conn:
        before = conn.execute("SELECT max(last_updated) FROM payment").fetchone()[0]
        done = Simulator(conn, seed=5).run(60)
        conn.commit()
        assert sum(done.values()) == 60 and set(done) <= set(EVENT_KINDS)
        new_sales = conn.execute("SELECT count(*) FROM sales_order WHERE last_updated > %s", (before,)).fetchone()[0]
        # A correction may hit an order created in the same stream, so corrections can overlap.
        assert done["new_sales_order"] <= new_sales <= done["new_sales_order"] + done["sales_order_corrected"]
        new_payments = conn.execute("SELECT count(*) FROM payment WHERE last_updated > %s", (before,)).fetchone()[0]
        assert new_payments >= done["new_sales_order"] + done["new_purchase_order"]
        sim = Simulator(conn, seed=6)
        bad_id = sim.inject_malformed_date()
        negative_id = sim.inject_out_of_range_quantity()
        sim.inject_new_column("design", "colour")
        conn.commit()
        assert (
            conn.execute(
                "SELECT agreed_delivery_date FROM sales_order WHERE sales_order_id = %s", (bad_id,)
            ).fetchone()[0]
            == "2024-13-45"
        )
        assert (
            conn.execute("SELECT units_sold FROM sales_order WHERE sales_order_id = %s", (negative_id,)).fetchone()[0]
            == -5
        )
        assert conn.execute("SELECT count(*) FILTER (WHERE colour = 'unknown'), count(*) FROM design").fetchone() == (
            472 + done["new_design"],
            472 + done["new_design"],
        )


@pytest.mark.parametrize("kind", EVENT_KINDS)
def test_every_event_kind_changes_last_updated(sample_source, kind):
    with psycopg.connect(sample_source) as conn:
        before = conn.execute("SELECT date_trunc('milliseconds', now())").fetchone()[0]
        conn.commit()
        Simulator(conn, seed=1).run(1, kinds=(kind,))
        conn.commit()
        changed = sum(
            conn.execute(
                f'SELECT count(*) FROM "{t}" WHERE last_updated >= %s', (before.replace(tzinfo=None),)
            ).fetchone()[0]
            for t in LOAD_ORDER
        )
        assert changed >= 1


def test_cli_generate_loads_a_consistent_source(new_database, monkeypatch, tmp_path):
    from totesys_platform.cli import main

    url = new_database("cli")
    monkeypatch.setenv("TOTESYS_HOME", str(tmp_path))
    monkeypatch.setenv("TOTESYS_SOURCE_URL", url)
    assert main(["source", "generate", "--scale", "0.1", "--seed", "9"]) == 0
    expected = generate(scale=0.1, seed=9)
    with psycopg.connect(url) as conn:
        assert table_counts(conn) == {name: expected[name].height for name in LOAD_ORDER}
        dangling = conn.execute(
            "SELECT count(*) FROM payment p LEFT JOIN transaction t USING (transaction_id) WHERE t.transaction_id IS NULL"
        ).fetchone()[0]
        assert dangling == 0
        # New rows get fresh ids after the bulk load.
        assert (
            conn.execute("SELECT nextval('sales_order_sales_order_id_seq')").fetchone()[0]
            == expected["sales_order"].height + 1
        )
