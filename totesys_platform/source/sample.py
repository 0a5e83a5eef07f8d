"""Load the real public totesys dumps (../shared/totesys-sample) into a source database, exactly.

The dumps hold 10 tables; `payment` is known only from a 38-row sample, so the loader keeps those real
rows and derives the rest by the rule the real generator follows: one payment per transaction, amount =
quantity x price, same counterparty and currency, payment_date = agreed payment date, paid (updated at
07:55:11 on the payment date) once that date has passed, for most payments.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from decimal import Decimal
from pathlib import Path

import polars as pl
import psycopg

from totesys_platform.catalog import SOURCE_TABLES_BY_NAME
from totesys_platform.source import LOAD_ORDER, copy_frame, reset_sequences

DUMP_FOLDER = "oltp_2024-11-14"
PAYMENT_SAMPLE = "oltp_payment_sample/payment_sample.jsonl"
CENTS = Decimal("0.01")


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSON Lines dump, numbers with a fraction parsed as exact decimals."""
    with path.open() as handle:
        return [json.loads(line, parse_float=Decimal) for line in handle if line.strip()]


def rows_to_frame(table: str, rows: list[dict]) -> pl.DataFrame:
    """Rows as a frame with the catalog's column order and types (values kept exactly)."""
    spec = SOURCE_TABLES_BY_NAME[table]
    money = {c.name for c in spec.columns if isinstance(c.type.dtype, pl.Decimal)}
    data = {
        c.name: [Decimal(str(r[c.name])).quantize(CENTS) if c.name in money else r.get(c.name) for r in rows]
        for c in spec.columns
    }
    frame = pl.DataFrame(
        data,
        schema={c.name: (pl.String if c.type.dtype == pl.Datetime("us") else c.type.dtype) for c in spec.columns},
    )
    stamps = [c.name for c in spec.columns if c.type.dtype == pl.Datetime("us")]
    return frame.with_columns(pl.col(stamps).str.to_datetime("%Y-%m-%dT%H:%M:%S%.f", time_unit="us"))


def derive_payments(tables: dict[str, list[dict]], real: list[dict], as_of: dt.date, seed: int = 7) -> list[dict]:
    """Real payment rows plus one derived payment for every other transaction."""
    rng = random.Random(seed)
    orders = {
        "SALE": {r["sales_order_id"]: r for r in tables["sales_order"]},
        "PURCHASE": {r["purchase_order_id"]: r for r in tables["purchase_order"]},
    }
    covered = {p["transaction_id"] for p in real}
    used_ids = {p["payment_id"] for p in real}
    payments = list(real)
    next_free = max([t["transaction_id"] for t in tables["transaction"]] + list(used_ids)) + 1
    for txn in sorted(tables["transaction"], key=lambda t: t["transaction_id"]):
        if txn["transaction_id"] in covered:
            continue
        sale = txn["transaction_type"] == "SALE"
        order = orders[txn["transaction_type"]].get(txn["sales_order_id"] if sale else txn["purchase_order_id"])
        if order is None:
            continue  # an order deleted at the source (SET NULL): no payment to derive
        quantity, price = (
            (order["units_sold"], order["unit_price"]) if sale else (order["item_quantity"], order["item_unit_price"])
        )
        payment_id = txn["transaction_id"] if txn["transaction_id"] not in used_ids else next_free
        next_free += payment_id == next_free
        used_ids.add(payment_id)
        pay_date = dt.date.fromisoformat(order["agreed_payment_date"])
        paid = pay_date < as_of and rng.random() < 0.9
        paid_at = f"{pay_date.isoformat()}T07:55:11.{rng.randrange(1000):03d}000"
        payments.append(
            {
                "payment_id": payment_id,
                "created_at": txn["created_at"],
                "last_updated": max(paid_at, txn["created_at"]) if paid else txn["created_at"],
                "transaction_id": txn["transaction_id"],
                "counterparty_id": order["counterparty_id"],
                "payment_amount": (Decimal(quantity) * Decimal(price)).quantize(CENTS),
                "currency_id": order["currency_id"],
                "payment_type_id": 1 if sale else 3,
                "paid": paid,
                "payment_date": order["agreed_payment_date"],
                "company_ac_number": rng.randrange(10_000_000, 100_000_000),
                "counterparty_ac_number": rng.randrange(10_000_000, 100_000_000),
            }
        )
    return payments


def read_sample(sample_dir: Path) -> dict[str, pl.DataFrame]:
    """Every table of the sample as typed frames, payment derived as the module describes."""
    dump = sample_dir / DUMP_FOLDER
    if not dump.is_dir():
        raise FileNotFoundError(f"no totesys sample at {dump} (expected {DUMP_FOLDER}/<table>.jsonl)")
    raw = {name: read_jsonl(dump / f"{name}.jsonl") for name in LOAD_ORDER if (dump / f"{name}.jsonl").exists()}
    real_payments = read_jsonl(sample_dir / PAYMENT_SAMPLE) if (sample_dir / PAYMENT_SAMPLE).exists() else []
    as_of = max(dt.datetime.fromisoformat(r["last_updated"]) for r in raw["sales_order"]).date()
    raw["payment"] = derive_payments(raw, real_payments, as_of)
    return {name: rows_to_frame(name, rows) for name, rows in raw.items()}


def load_sample(conn: psycopg.Connection, sample_dir: Path) -> dict[str, int]:
    """Load the sample into an empty totesys schema; returns rows loaded per table."""
    frames = read_sample(sample_dir)
    counts = {name: copy_frame(conn, name, frames[name]) for name in LOAD_ORDER if name in frames}
    reset_sequences(conn)
    return counts
