"""The table catalog: the 11 totesys tables and the 11 warehouse tables, as data.

Everything per-table (extraction SQL, raw assets, transforms' inputs, warehouse DDL, checks) is driven
from here; a per-table difference is a field, never an `if table == ...`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

import polars as pl

from totesys_platform.rules import AcceptedValues, IsoDate, NotNull, Positive, References, Rule, Unique, WithinRange

MONEY = pl.Decimal(10, 2)
TIMESTAMP = pl.Datetime("us")


@dataclass(frozen=True)
class SourceType:
    """How a totesys column type is read (SQL cast for the Arrow reader) and held (Polars dtype)."""

    information_schema_type: str
    dtype: pl.DataType
    select_cast: str | None = None  # ADBC hands numeric and enums over as opaque types: read as text


INTEGER = SourceType("integer", pl.Int32())
TEXT = SourceType("text", pl.String())
VARCHAR = SourceType("character varying", pl.String())
TIMESTAMP3 = SourceType("timestamp without time zone", TIMESTAMP)
NUMERIC = SourceType("numeric", MONEY, select_cast="text")
BOOLEAN = SourceType("boolean", pl.Boolean())
ENUM = SourceType("USER-DEFINED", pl.String(), select_cast="text")


@dataclass(frozen=True)
class SourceColumn:
    name: str
    type: SourceType
    nullable: bool = False


def _cols(*spec: tuple) -> tuple[SourceColumn, ...]:
    return tuple(SourceColumn(*s) for s in spec)


_STAMPS = (("created_at", TIMESTAMP3), ("last_updated", TIMESTAMP3))


@dataclass(frozen=True)
class SourceTable:
    """One totesys table: primary key, cursor column, and its columns in physical order."""

    name: str
    primary_key: str
    columns: tuple[SourceColumn, ...]
    description: str
    cursor: str = "last_updated"

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def schema(self) -> pl.Schema:
        return pl.Schema({c.name: c.type.dtype for c in self.columns})


SOURCE_TABLES: tuple[SourceTable, ...] = (
    SourceTable(
        "address",
        "address_id",
        _cols(
            ("address_id", INTEGER),
            ("address_line_1", TEXT),
            ("address_line_2", TEXT, True),
            ("district", TEXT, True),
            ("city", TEXT),
            ("postal_code", TEXT),
            ("country", TEXT),
            ("phone", TEXT),
            *_STAMPS,
        ),
        "Addresses of counterparties and delivery locations, one row version per change.",
    ),
    SourceTable(
        "counterparty",
        "counterparty_id",
        _cols(
            ("counterparty_id", INTEGER),
            ("counterparty_legal_name", TEXT),
            ("legal_address_id", INTEGER),
            ("commercial_contact", TEXT, True),
            ("delivery_contact", TEXT, True),
            *_STAMPS,
        ),
        "Customers and suppliers with their legal address, one row version per change.",
    ),
    SourceTable(
        "currency",
        "currency_id",
        _cols(("currency_id", INTEGER), ("currency_code", VARCHAR), *_STAMPS),
        "Currencies used in orders and payments, one row version per change.",
    ),
    SourceTable(
        "department",
        "department_id",
        _cols(
            ("department_id", INTEGER),
            ("department_name", TEXT),
            ("location", TEXT, True),
            ("manager", TEXT, True),
            *_STAMPS,
        ),
        "Company departments, one row version per change.",
    ),
    SourceTable(
        "design",
        "design_id",
        _cols(
            ("design_id", INTEGER),
            ("created_at", TIMESTAMP3),
            ("design_name", TEXT),
            ("file_location", TEXT),
            ("file_name", TEXT),
            ("last_updated", TIMESTAMP3),
        ),
        "Tote-bag designs, one row version per change.",
    ),
    SourceTable(
        "staff",
        "staff_id",
        _cols(
            ("staff_id", INTEGER),
            ("first_name", TEXT),
            ("last_name", TEXT),
            ("department_id", INTEGER),
            ("email_address", TEXT),
            *_STAMPS,
        ),
        "Staff members and their department, one row version per change.",
    ),
    SourceTable(
        "sales_order",
        "sales_order_id",
        _cols(
            ("sales_order_id", INTEGER),
            *_STAMPS,
            ("design_id", INTEGER),
            ("staff_id", INTEGER),
            ("counterparty_id", INTEGER),
            ("units_sold", INTEGER),
            ("unit_price", NUMERIC),
            ("currency_id", INTEGER),
            ("agreed_delivery_date", TEXT),
            ("agreed_payment_date", TEXT),
            ("agreed_delivery_location_id", INTEGER),
        ),
        "Sales orders, one row version per change.",
    ),
    SourceTable(
        "purchase_order",
        "purchase_order_id",
        _cols(
            ("purchase_order_id", INTEGER),
            *_STAMPS,
            ("staff_id", INTEGER),
            ("counterparty_id", INTEGER),
            ("item_code", TEXT),
            ("item_quantity", INTEGER),
            ("item_unit_price", NUMERIC),
            ("currency_id", INTEGER),
            ("agreed_delivery_date", TEXT),
            ("agreed_payment_date", TEXT),
            ("agreed_delivery_location_id", INTEGER),
        ),
        "Purchase orders, one row version per change.",
    ),
    SourceTable(
        "payment_type",
        "payment_type_id",
        _cols(("payment_type_id", INTEGER), ("payment_type_name", ENUM), *_STAMPS),
        "Payment types (receipts, refunds, payments), one row version per change.",
    ),
    SourceTable(
        "transaction",
        "transaction_id",
        _cols(
            ("transaction_id", INTEGER),
            ("transaction_type", ENUM),
            ("sales_order_id", INTEGER, True),
            ("purchase_order_id", INTEGER, True),
            *_STAMPS,
        ),
        "Transactions linking each sale or purchase to its payment, one row version per change.",
    ),
    SourceTable(
        "payment",
        "payment_id",
        _cols(
            ("payment_id", INTEGER),
            *_STAMPS,
            ("transaction_id", INTEGER),
            ("counterparty_id", INTEGER),
            ("payment_amount", NUMERIC),
            ("currency_id", INTEGER),
            ("payment_type_id", INTEGER),
            ("paid", BOOLEAN),
            ("payment_date", TEXT),
            ("company_ac_number", INTEGER),
            ("counterparty_ac_number", INTEGER),
        ),
        "Payments for transactions (updated when paid), one row version per change.",
    ),
)
SOURCE_TABLES_BY_NAME = {t.name: t for t in SOURCE_TABLES}


# --- The warehouse ---------------------------------------------------------------------------

WAREHOUSE_TYPES: dict[str, pl.DataType] = {
    "integer": pl.Int32(),
    "varchar": pl.String(),
    "date": pl.Date(),
    "time": pl.Time(),
    "numeric(10,2)": MONEY,
    "boolean": pl.Boolean(),
}


@dataclass(frozen=True)
class WarehouseColumn:
    name: str
    pg_type: str
    nullable: bool = False
    references: str | None = None  # a dimension table (its primary key)

    @property
    def dtype(self) -> pl.DataType:
        return WAREHOUSE_TYPES[self.pg_type]


def _wcols(*spec: tuple) -> tuple[WarehouseColumn, ...]:
    return tuple(WarehouseColumn(*s) for s in spec)


# How a processed table is built from its inputs:
#   facts            - every new source row version becomes a fact row (append-only history)
#   dimension        - a small dimension, merged on its key from its sources' new row versions; facts
#                      quarantine rows that reference a member it does not have
#   large_dimension  - the same merge for a large dimension (dim_transaction); references to it are
#                      enforced by the warehouse's foreign keys instead
#   calendar         - dim_date: whole calendar years covering every date the facts reference
Build = Literal["facts", "dimension", "large_dimension", "calendar"]


@dataclass(frozen=True)
class WarehouseTable:
    """One star-schema table: exact warehouse columns (spec order), keys and how it is built."""

    name: str
    build: Build
    key: str  # dimension primary key, or the fact's natural (source) id
    columns: tuple[WarehouseColumn, ...]
    sources: tuple[str, ...]  # totesys tables it is derived from
    description: str
    surrogate_key: str | None = None  # facts: SERIAL *_record_id generated by the warehouse
    # Rules beyond those the columns imply (unique key, NOT NULL, references, text dates): accepted
    # values, impossible values (errors: a fact row breaking one is quarantined) and the spec's ranges
    # (warnings, never enforced). See `rules`.
    column_rules: tuple[Rule, ...] = ()
    # Facts: warehouse column -> source column where the name changes.
    renames: dict[str, str] = field(default_factory=dict)
    # Dimensions joined from two sources: lookup source -> column of the first source that references it.
    joins: dict[str, str] = field(default_factory=dict)

    @property
    def is_dimension(self) -> bool:
        return self.build in ("dimension", "large_dimension")

    @property
    def is_fact(self) -> bool:
        return self.build == "facts"

    @property
    def data_columns(self) -> tuple[WarehouseColumn, ...]:
        """Columns the platform writes (all but the warehouse-generated surrogate key)."""
        return tuple(c for c in self.columns if c.name != self.surrogate_key)

    @property
    def schema(self) -> pl.Schema:
        return pl.Schema({c.name: c.dtype for c in self.data_columns})

    @property
    def version_key(self) -> tuple[str, ...]:
        """What identifies one row: a fact row version, or a dimension member."""
        if self.is_fact:
            return (self.key, "last_updated_date", "last_updated_time")
        return (self.key,)

    @property
    def foreign_keys(self) -> tuple[WarehouseColumn, ...]:
        return tuple(c for c in self.columns if c.references)

    @property
    def source(self) -> SourceTable:
        """The single source table of a fact or delta dimension."""
        return SOURCE_TABLES_BY_NAME[self.sources[0]]

    @property
    def text_date_columns(self) -> tuple[str, ...]:
        """Fact date columns held as YYYY-MM-DD text at the source (the stamps' dates are derived)."""
        if not self.is_fact:
            return ()
        stamps = {f"{stem}_date" for stem in ("created", "last_updated")}
        return tuple(c.name for c in self.data_columns if c.pg_type == "date" and c.name not in stamps)

    @cached_property
    def rules(self) -> tuple[Rule, ...]:
        """Every quality rule of the table: the one list the batch check, the quarantine, the warehouse
        check, the DDL and the check descriptions are generated from."""
        key = self.version_key
        rules: list[Rule] = [Unique(key[0], more=key[1:], primary=not self.is_fact)]
        for column in self.data_columns:
            if column.name in self.text_date_columns:
                rules.append(IsoDate(column.name))
            if not column.nullable:
                rules.append(NotNull(column.name))
            if column.references:
                dimension = WAREHOUSE_TABLES_BY_NAME[column.references]
                rules.append(References(column.name, dimension=dimension.name, dimension_key=dimension.key))
            rules.extend(r for r in self.column_rules if r.column == column.name)
        return tuple(rules)

    def is_required(self, column: str) -> bool:
        return any(isinstance(r, NotNull) and r.column == column for r in self.rules)

    @property
    def referenced_dimensions(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c.references for c in self.foreign_keys if c.references))


_FACT_STAMPS = (
    ("created_date", "date", False, "dim_date"),
    ("created_time", "time"),
    ("last_updated_date", "date", False, "dim_date"),
    ("last_updated_time", "time"),
)

WAREHOUSE_TABLES: tuple[WarehouseTable, ...] = (
    WarehouseTable(
        "dim_date",
        "calendar",
        "date_id",
        _wcols(
            ("date_id", "date"),
            ("year", "integer"),
            ("month", "integer"),
            ("day", "integer"),
            ("day_of_week", "integer"),
            ("day_name", "varchar"),
            ("month_name", "varchar"),
            ("quarter", "integer"),
        ),
        ("sales_order", "purchase_order", "payment"),
        "Calendar dimension: one row per day, whole years covering every date a fact references.",
    ),
    WarehouseTable(
        "dim_staff",
        "dimension",
        "staff_id",
        _wcols(
            ("staff_id", "integer"),
            ("first_name", "varchar"),
            ("last_name", "varchar"),
            ("department_name", "varchar"),
            ("location", "varchar", True),
            ("email_address", "varchar"),
        ),
        ("staff", "department"),
        "Staff dimension: latest version of each staff member with their department and its location.",
        joins={"department": "department_id"},
    ),
    WarehouseTable(
        "dim_location",
        "dimension",
        "location_id",
        _wcols(
            ("location_id", "integer"),
            ("address_line_1", "varchar"),
            ("address_line_2", "varchar", True),
            ("district", "varchar", True),
            ("city", "varchar"),
            ("postal_code", "varchar"),
            ("country", "varchar"),
            ("phone", "varchar"),
        ),
        ("address",),
        "Location dimension: latest version of each address (location_id = address_id).",
    ),
    WarehouseTable(
        "dim_design",
        "dimension",
        "design_id",
        _wcols(
            ("design_id", "integer"),
            ("design_name", "varchar"),
            ("file_location", "varchar"),
            ("file_name", "varchar"),
        ),
        ("design",),
        "Design dimension: latest version of each tote-bag design.",
    ),
    WarehouseTable(
        "dim_currency",
        "dimension",
        "currency_id",
        _wcols(("currency_id", "integer"), ("currency_code", "varchar"), ("currency_name", "varchar")),
        ("currency",),
        "Currency dimension: latest version of each currency, with its English name.",
        column_rules=(AcceptedValues("currency_code", values=("GBP", "USD", "EUR")),),
    ),
    WarehouseTable(
        "dim_counterparty",
        "dimension",
        "counterparty_id",
        _wcols(
            ("counterparty_id", "integer"),
            ("counterparty_legal_name", "varchar"),
            ("counterparty_legal_address_line_1", "varchar"),
            ("counterparty_legal_address_line_2", "varchar", True),
            ("counterparty_legal_district", "varchar", True),
            ("counterparty_legal_city", "varchar"),
            ("counterparty_legal_postal_code", "varchar"),
            ("counterparty_legal_country", "varchar"),
            ("counterparty_legal_phone_number", "varchar"),
        ),
        ("counterparty", "address"),
        "Counterparty dimension: latest version of each counterparty with its legal address.",
        joins={"address": "legal_address_id"},
    ),
    WarehouseTable(
        "dim_payment_type",
        "dimension",
        "payment_type_id",
        _wcols(("payment_type_id", "integer"), ("payment_type_name", "varchar")),
        ("payment_type",),
        "Payment type dimension: latest version of each payment type.",
        column_rules=(
            AcceptedValues(
                "payment_type_name", values=("SALES_RECEIPT", "SALES_REFUND", "PURCHASE_PAYMENT", "PURCHASE_REFUND")
            ),
        ),
    ),
    WarehouseTable(
        "dim_transaction",
        "large_dimension",
        "transaction_id",
        _wcols(
            ("transaction_id", "integer"),
            ("transaction_type", "varchar"),
            ("sales_order_id", "integer", True),
            ("purchase_order_id", "integer", True),
        ),
        ("transaction",),
        "Transaction dimension: latest version of each transaction (sale or purchase).",
        column_rules=(AcceptedValues("transaction_type", values=("SALE", "PURCHASE")),),
    ),
    WarehouseTable(
        "fact_sales_order",
        "facts",
        "sales_order_id",
        _wcols(
            ("sales_record_id", "integer"),
            ("sales_order_id", "integer"),
            *_FACT_STAMPS,
            ("sales_staff_id", "integer", False, "dim_staff"),
            ("counterparty_id", "integer", False, "dim_counterparty"),
            ("units_sold", "integer"),
            ("unit_price", "numeric(10,2)"),
            ("currency_id", "integer", False, "dim_currency"),
            ("design_id", "integer", False, "dim_design"),
            ("agreed_payment_date", "date", False, "dim_date"),
            ("agreed_delivery_date", "date", False, "dim_date"),
            ("agreed_delivery_location_id", "integer", False, "dim_location"),
        ),
        ("sales_order",),
        "Sales order facts: one row per version of each sales order (full history).",
        surrogate_key="sales_record_id",
        column_rules=(
            Positive("units_sold"),
            Positive("unit_price"),
            WithinRange("units_sold", "warning", low=1000, high=100000),
            WithinRange("unit_price", "warning", low=2.0, high=4.0),
        ),
        renames={"sales_staff_id": "staff_id"},
    ),
    WarehouseTable(
        "fact_purchase_order",
        "facts",
        "purchase_order_id",
        _wcols(
            ("purchase_record_id", "integer"),
            ("purchase_order_id", "integer"),
            *_FACT_STAMPS,
            ("staff_id", "integer", False, "dim_staff"),
            ("counterparty_id", "integer", False, "dim_counterparty"),
            ("item_code", "varchar"),
            ("item_quantity", "integer"),
            ("item_unit_price", "numeric(10,2)"),
            ("currency_id", "integer", False, "dim_currency"),
            ("agreed_delivery_date", "date", False, "dim_date"),
            ("agreed_payment_date", "date", False, "dim_date"),
            ("agreed_delivery_location_id", "integer", False, "dim_location"),
        ),
        ("purchase_order",),
        "Purchase order facts: one row per version of each purchase order (full history).",
        surrogate_key="purchase_record_id",
        column_rules=(
            Positive("item_quantity"),
            Positive("item_unit_price"),
            WithinRange("item_quantity", "warning", low=1, high=1000),
            WithinRange("item_unit_price", "warning", low=1.0, high=1000.0),
        ),
    ),
    WarehouseTable(
        "fact_payment",
        "facts",
        "payment_id",
        _wcols(
            ("payment_record_id", "integer"),
            ("payment_id", "integer"),
            *_FACT_STAMPS,
            ("transaction_id", "integer", False, "dim_transaction"),
            ("counterparty_id", "integer", False, "dim_counterparty"),
            ("payment_amount", "numeric(10,2)"),
            ("currency_id", "integer", False, "dim_currency"),
            ("payment_type_id", "integer", False, "dim_payment_type"),
            ("paid", "boolean"),
            ("payment_date", "date", False, "dim_date"),
        ),
        ("payment",),
        "Payment facts: one row per version of each payment (a payment marked paid adds a row).",
        surrogate_key="payment_record_id",
        column_rules=(WithinRange("payment_amount", "warning", low=0.0, high=100_000_000.0),),
    ),
)
WAREHOUSE_TABLES_BY_NAME = {t.name: t for t in WAREHOUSE_TABLES}

# English currency names (the source has codes only). Unknown codes get their code as name.
CURRENCY_NAMES = {"GBP": "British pound", "USD": "United States dollar", "EUR": "Euro"}
