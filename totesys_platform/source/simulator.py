"""Business events applied to a live totesys database, as its own application would.

Every event sets last_updated to the database clock, like Prisma's @updatedAt. Bad data is injected
only on request, for the quality and reliability tests.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

import psycopg
from psycopg import sql

from totesys_platform.source.generator import DESIGN_NAMES, FILE_LOCATIONS

EVENT_KINDS = (
    "new_sales_order",
    "new_purchase_order",
    "payment_paid",
    "sales_order_corrected",
    "purchase_order_corrected",
    "staff_moved",
    "address_changed",
    "counterparty_renamed",
    "new_design",
)
# Relative frequency of each kind in a mixed stream (new orders dominate, as at the real source).
EVENT_WEIGHTS = (40, 15, 25, 6, 4, 2, 2, 2, 4)

_NEW_ORDER = {
    "sales_order": (
        "INSERT INTO sales_order (created_at, last_updated, design_id, staff_id, counterparty_id, units_sold,"
        " unit_price, currency_id, agreed_delivery_date, agreed_payment_date, agreed_delivery_location_id)"
        " VALUES (now(), now(), %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING sales_order_id, %s::numeric * %s"
    ),
    "purchase_order": (
        "INSERT INTO purchase_order (created_at, last_updated, staff_id, counterparty_id, item_code,"
        " item_quantity, item_unit_price, currency_id, agreed_delivery_date, agreed_payment_date,"
        " agreed_delivery_location_id)"
        " VALUES (now(), now(), %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING purchase_order_id, %s::numeric * %s"
    ),
}


@dataclass
class Simulator:
    """Applies events to the source through one connection; `seed` makes a stream repeatable."""

    conn: psycopg.Connection
    seed: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def _pick(self, table: str, key: str) -> int:
        """A random existing id: two primary-key index look-ups, whatever the table size."""
        k, t = sql.Identifier(key), sql.Identifier(table)
        low, high = self.conn.execute(sql.SQL("SELECT min({k}), max({k}) FROM {t}").format(k=k, t=t)).fetchone()
        target = self.rng.randint(low, high)
        query = sql.SQL("SELECT {k} FROM {t} WHERE {k} >= %s ORDER BY {k} LIMIT 1").format(k=k, t=t)
        return self.conn.execute(query, (target,)).fetchone()[0]

    def _today_plus(self, days: int) -> str:
        return self.conn.execute("SELECT (current_date + %s)::text", (days,)).fetchone()[0]

    def _new_order(self, table: str) -> int:
        sale = table == "sales_order"
        staff, cp = self._pick("staff", "staff_id"), self._pick("counterparty", "counterparty_id")
        currency, location = self._pick("currency", "currency_id"), self._pick("address", "address_id")
        delivery, payment_date = self._today_plus(self.rng.randint(0, 7)), self._today_plus(self.rng.randint(0, 6))
        if sale:
            quantity, price = self.rng.randint(1001, 99_999), f"{self.rng.randint(200, 400) / 100:.2f}"
            values = (
                self._pick("design", "design_id"),
                staff,
                cp,
                quantity,
                price,
                currency,
                delivery,
                payment_date,
                location,
            )
        else:
            quantity, price = self.rng.randint(1, 999), f"{self.rng.randint(332, 99_907) / 100:.2f}"
            code = "".join(self.rng.choices("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", k=7))
            values = (staff, cp, code, quantity, price, currency, delivery, payment_date, location)
        order_id, amount = self.conn.execute(_NEW_ORDER[table], (*values, quantity, price)).fetchone()
        txn_id = self.conn.execute(
            "INSERT INTO transaction (transaction_type, sales_order_id, purchase_order_id, created_at, last_updated)"
            " VALUES (%s, %s, %s, now(), now()) RETURNING transaction_id",
            ("SALE" if sale else "PURCHASE", order_id if sale else None, None if sale else order_id),
        ).fetchone()[0]
        self.conn.execute(
            "INSERT INTO payment (created_at, last_updated, transaction_id, counterparty_id, payment_amount,"
            " currency_id, payment_type_id, paid, payment_date, company_ac_number, counterparty_ac_number)"
            " VALUES (now(), now(), %s, %s, %s, %s, %s, false, %s, %s, %s)",
            (
                txn_id,
                cp,
                amount,
                currency,
                1 if sale else 3,
                payment_date,
                self.rng.randint(10**7, 10**8 - 1),
                self.rng.randint(10**7, 10**8 - 1),
            ),
        )
        return order_id

    def new_sales_order(self) -> int:
        return self._new_order("sales_order")

    def new_purchase_order(self) -> int:
        return self._new_order("purchase_order")

    def payment_paid(self) -> int | None:
        row = (
            self.conn.execute(
                "SELECT payment_id FROM payment WHERE NOT paid ORDER BY payment_id OFFSET %s LIMIT 1",
                (self.rng.randint(0, 50),),
            ).fetchone()
            or self.conn.execute("SELECT payment_id FROM payment WHERE NOT paid LIMIT 1").fetchone()
        )
        if row is None:
            return None
        self.conn.execute("UPDATE payment SET paid = true, last_updated = now() WHERE payment_id = %s", row)
        return row[0]

    def sales_order_corrected(self) -> int:
        order_id = self._pick("sales_order", "sales_order_id")
        self.conn.execute(
            "UPDATE sales_order SET units_sold = %s, last_updated = now() WHERE sales_order_id = %s",
            (self.rng.randint(1001, 99_999), order_id),
        )
        return order_id

    def purchase_order_corrected(self) -> int:
        order_id = self._pick("purchase_order", "purchase_order_id")
        self.conn.execute(
            "UPDATE purchase_order SET item_quantity = %s, last_updated = now() WHERE purchase_order_id = %s",
            (self.rng.randint(1, 999), order_id),
        )
        return order_id

    def staff_moved(self) -> int:
        staff_id = self._pick("staff", "staff_id")
        self.conn.execute(
            "UPDATE staff SET department_id = %s, last_updated = now() WHERE staff_id = %s",
            (self._pick("department", "department_id"), staff_id),
        )
        return staff_id

    def address_changed(self) -> int:
        address_id = self._pick("address", "address_id")
        self.conn.execute(
            "UPDATE address SET address_line_1 = %s, phone = %s, last_updated = now() WHERE address_id = %s",
            (
                f"{self.rng.randint(1, 9999)} O'Connell Street",
                f"{self.rng.randint(0, 9999):04d} {self.rng.randint(0, 999999):06d}",
                address_id,
            ),
        )
        return address_id

    def counterparty_renamed(self) -> int:
        cp_id = self._pick("counterparty", "counterparty_id")
        self.conn.execute(
            "UPDATE counterparty SET counterparty_legal_name = counterparty_legal_name || %s, last_updated = now()"
            " WHERE counterparty_id = %s",
            (" Ltd", cp_id),
        )
        return cp_id

    def new_design(self) -> int:
        name = self.rng.choice(DESIGN_NAMES)
        stamp = self.conn.execute("SELECT to_char(now(), 'YYYYMMDD')").fetchone()[0]
        return self.conn.execute(
            "INSERT INTO design (created_at, design_name, file_location, file_name, last_updated)"
            " VALUES (now(), %s, %s, %s, now()) RETURNING design_id",
            (name, self.rng.choice(FILE_LOCATIONS), f"{name.lower()}-{stamp}-{self.rng.randrange(16**4):04x}.json"),
        ).fetchone()[0]

    def apply(self, kind: str) -> int | None:
        if kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {kind!r}; choose from {', '.join(EVENT_KINDS)}")
        return getattr(self, kind)()

    def run(self, count: int, kinds: tuple[str, ...] | None = None) -> Counter:
        """Apply `count` events (a weighted mix, or only `kinds`) in one transaction; returns counts by kind."""
        done: Counter = Counter()
        pool, weights = (kinds, None) if kinds else (EVENT_KINDS, EVENT_WEIGHTS)
        with self.conn.transaction():
            for kind in self.rng.choices(pool, weights=weights, k=count):
                self.apply(kind)
                done[kind] += 1
        return done

    # --- Bad data, on request only -----------------------------------------------------------

    def inject_malformed_date(self, table: str = "sales_order", column: str = "agreed_delivery_date") -> int:
        key = f"{table}_id"
        row_id = self._pick(table, key)
        self.conn.execute(
            sql.SQL("UPDATE {t} SET {c} = %s, last_updated = now() WHERE {k} = %s").format(
                t=sql.Identifier(table), c=sql.Identifier(column), k=sql.Identifier(key)
            ),
            ("2024-13-45", row_id),
        )
        return row_id

    def inject_out_of_range_quantity(self, table: str = "sales_order", column: str = "units_sold") -> int:
        key = f"{table}_id"
        row_id = self._pick(table, key)
        self.conn.execute(
            sql.SQL("UPDATE {t} SET {c} = %s, last_updated = now() WHERE {k} = %s").format(
                t=sql.Identifier(table), c=sql.Identifier(column), k=sql.Identifier(key)
            ),
            (-5, row_id),
        )
        return row_id

    def inject_new_column(self, table: str = "design", column: str = "colour") -> None:
        self.conn.execute(
            sql.SQL("ALTER TABLE {} ADD COLUMN {} text DEFAULT {}").format(
                sql.Identifier(table), sql.Identifier(column), sql.Literal("unknown")
            )
        )

    def drop_column(self, table: str, column: str) -> None:
        self.conn.execute(
            sql.SQL("ALTER TABLE {} DROP COLUMN {}").format(sql.Identifier(table), sql.Identifier(column))
        )
