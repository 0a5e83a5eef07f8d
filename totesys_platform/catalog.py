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
    description: str
    nullable: bool = False


def _cols(*spec: tuple) -> tuple[SourceColumn, ...]:
    return tuple(SourceColumn(s[0], s[1], s[2], *s[3:]) for s in spec)


_STAMPS = (
    ("created_at", TIMESTAMP3, "When the row was created"),
    ("last_updated", TIMESTAMP3, "When the row was last changed (the ingestion cursor)"),
)


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

    def column(self, name: str) -> SourceColumn:
        return next(c for c in self.columns if c.name == name)


SOURCE_TABLES: tuple[SourceTable, ...] = (
    SourceTable(
        "address",
        "address_id",
        _cols(
            ("address_id", INTEGER, "Address identifier"),
            ("address_line_1", TEXT, "First line of the street address"),
            ("address_line_2", TEXT, "Second line of the street address", True),
            ("district", TEXT, "District or county", True),
            ("city", TEXT, "City"),
            ("postal_code", TEXT, "Postal code, as written locally (leading zeros kept)"),
            ("country", TEXT, "Country name"),
            ("phone", TEXT, "Contact telephone number"),
            *_STAMPS,
        ),
        "Addresses of counterparties and delivery locations, one row version per change.",
    ),
    SourceTable(
        "counterparty",
        "counterparty_id",
        _cols(
            ("counterparty_id", INTEGER, "Counterparty identifier"),
            ("counterparty_legal_name", TEXT, "Registered name of the customer or supplier"),
            ("legal_address_id", INTEGER, "The counterparty's legal address (address_id)"),
            ("commercial_contact", TEXT, "Name of the commercial contact", True),
            ("delivery_contact", TEXT, "Name of the delivery contact", True),
            *_STAMPS,
        ),
        "Customers and suppliers with their legal address, one row version per change.",
    ),
    SourceTable(
        "currency",
        "currency_id",
        _cols(
            ("currency_id", INTEGER, "Currency identifier"),
            ("currency_code", VARCHAR, "ISO 4217 currency code (GBP, USD, EUR)"),
            *_STAMPS,
        ),
        "Currencies used in orders and payments, one row version per change.",
    ),
    SourceTable(
        "department",
        "department_id",
        _cols(
            ("department_id", INTEGER, "Department identifier"),
            ("department_name", TEXT, "Name of the department"),
            ("location", TEXT, "Town where the department is based", True),
            ("manager", TEXT, "Name of the department's manager", True),
            *_STAMPS,
        ),
        "Company departments, one row version per change.",
    ),
    SourceTable(
        "design",
        "design_id",
        _cols(
            ("design_id", INTEGER, "Design identifier"),
            _STAMPS[0],
            ("design_name", TEXT, "Name of the tote-bag design"),
            ("file_location", TEXT, "Directory holding the design file"),
            ("file_name", TEXT, "Name of the design file"),
            _STAMPS[1],
        ),
        "Tote-bag designs, one row version per change.",
    ),
    SourceTable(
        "staff",
        "staff_id",
        _cols(
            ("staff_id", INTEGER, "Staff member identifier"),
            ("first_name", TEXT, "Staff member's first name"),
            ("last_name", TEXT, "Staff member's last name"),
            ("department_id", INTEGER, "The staff member's department (department_id)"),
            ("email_address", TEXT, "Staff member's work e-mail address"),
            *_STAMPS,
        ),
        "Staff members and their department, one row version per change.",
    ),
    SourceTable(
        "sales_order",
        "sales_order_id",
        _cols(
            ("sales_order_id", INTEGER, "Sales order identifier"),
            *_STAMPS,
            ("design_id", INTEGER, "The design sold (design_id)"),
            ("staff_id", INTEGER, "The salesperson who booked the order (staff_id)"),
            ("counterparty_id", INTEGER, "The customer (counterparty_id)"),
            ("units_sold", INTEGER, "Number of bags sold"),
            ("unit_price", NUMERIC, "Price of one bag, in the order's currency"),
            ("currency_id", INTEGER, "The order's currency (currency_id)"),
            ("agreed_delivery_date", TEXT, "Agreed delivery date (YYYY-MM-DD text)"),
            ("agreed_payment_date", TEXT, "Agreed payment date (YYYY-MM-DD text)"),
            ("agreed_delivery_location_id", INTEGER, "Where the order is delivered (address_id)"),
        ),
        "Sales orders, one row version per change.",
    ),
    SourceTable(
        "purchase_order",
        "purchase_order_id",
        _cols(
            ("purchase_order_id", INTEGER, "Purchase order identifier"),
            *_STAMPS,
            ("staff_id", INTEGER, "The staff member who placed the order (staff_id)"),
            ("counterparty_id", INTEGER, "The supplier (counterparty_id)"),
            ("item_code", TEXT, "Supplier's code of the item bought"),
            ("item_quantity", INTEGER, "Number of items bought"),
            ("item_unit_price", NUMERIC, "Price of one item, in the order's currency"),
            ("currency_id", INTEGER, "The order's currency (currency_id)"),
            ("agreed_delivery_date", TEXT, "Agreed delivery date (YYYY-MM-DD text)"),
            ("agreed_payment_date", TEXT, "Agreed payment date (YYYY-MM-DD text)"),
            ("agreed_delivery_location_id", INTEGER, "Where the order is delivered (address_id)"),
        ),
        "Purchase orders, one row version per change.",
    ),
    SourceTable(
        "payment_type",
        "payment_type_id",
        _cols(
            ("payment_type_id", INTEGER, "Payment type identifier"),
            (
                "payment_type_name",
                ENUM,
                "Kind of payment: SALES_RECEIPT, SALES_REFUND, PURCHASE_PAYMENT, PURCHASE_REFUND",
            ),
            *_STAMPS,
        ),
        "Payment types (receipts, refunds, payments), one row version per change.",
    ),
    SourceTable(
        "transaction",
        "transaction_id",
        _cols(
            ("transaction_id", INTEGER, "Transaction identifier"),
            ("transaction_type", ENUM, "SALE or PURCHASE"),
            ("sales_order_id", INTEGER, "The sales order paid by this transaction (empty for purchases)", True),
            ("purchase_order_id", INTEGER, "The purchase order paid by this transaction (empty for sales)", True),
            *_STAMPS,
        ),
        "Transactions linking each sale or purchase to its payment, one row version per change.",
    ),
    SourceTable(
        "payment",
        "payment_id",
        _cols(
            ("payment_id", INTEGER, "Payment identifier"),
            *_STAMPS,
            ("transaction_id", INTEGER, "The transaction paid (transaction_id)"),
            ("counterparty_id", INTEGER, "Who pays or is paid (counterparty_id)"),
            ("payment_amount", NUMERIC, "Amount paid, in the payment's currency"),
            ("currency_id", INTEGER, "The payment's currency (currency_id)"),
            ("payment_type_id", INTEGER, "Kind of payment (payment_type_id)"),
            ("paid", BOOLEAN, "Whether the payment has been made"),
            ("payment_date", TEXT, "Date the payment is due or was made (YYYY-MM-DD text)"),
            ("company_ac_number", INTEGER, "Company bank account number"),
            ("counterparty_ac_number", INTEGER, "Counterparty bank account number"),
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
    "timestamp": TIMESTAMP,
    "numeric(10,2)": MONEY,
    "boolean": pl.Boolean(),
}

# How a warehouse column is derived from its source column (what the transforms do, and the lineage shown):
#   copy         - the value as it is (possibly under another name)
#   date_part    - the date of a timestamp;  time_part - its time of day (microseconds kept)
#   text_date    - YYYY-MM-DD text read as a date
#   english_name - the English name of a currency code (CURRENCY_NAMES; an unknown code is its own name)
#   validity     - a history table's validity, from the source versions' last_updated
#   computed     - made by the platform or the warehouse, from no source column (dim_date, surrogate keys)
Derivation = Literal["copy", "date_part", "time_part", "text_date", "english_name", "validity", "computed"]
HOW = {
    "copy": "copied",
    "date_part": "date part",
    "time_part": "time part",
    "text_date": "YYYY-MM-DD text read as a date",
    "english_name": "English name of the code",
    "validity": "from the versions' last_updated",
    "computed": "computed",
}


@dataclass(frozen=True)
class WarehouseColumn:
    name: str
    pg_type: str
    nullable: bool = False
    references: str | None = None  # a dimension table (its primary key)
    source: str | None = None  # "column" of the table's first source or "table.column"; None: the same name
    derivation: Derivation = "copy"
    description: str | None = None  # None: the source column's

    @property
    def dtype(self) -> pl.DataType:
        return WAREHOUSE_TYPES[self.pg_type]


def col(name: str, pg_type: str, nullable: bool = False, references: str | None = None, **more) -> WarehouseColumn:
    return WarehouseColumn(name, pg_type, nullable, references, **more)


def _wcols(*spec: tuple | WarehouseColumn) -> tuple[WarehouseColumn, ...]:
    return tuple(s if isinstance(s, WarehouseColumn) else WarehouseColumn(*s) for s in spec)


# How a processed table is built from its inputs:
#   facts            - every new source row version becomes a fact row (append-only history)
#   dimension        - a small dimension, merged on its key from its sources' new row versions; facts
#                      quarantine rows that reference a member it does not have
#   large_dimension  - the same merge for a large dimension (dim_transaction); references to it are
#                      enforced by the warehouse's foreign keys instead
#   history          - every distinct state of a dimension's members with its validity (<dimension>_history)
#   calendar         - dim_date: whole calendar years covering every date the facts reference
Build = Literal["facts", "dimension", "large_dimension", "history", "calendar"]


@dataclass(frozen=True)
class WarehouseTable:
    """One star-schema table: exact warehouse columns (spec order), keys and how it is built."""

    name: str
    build: Build
    key: str  # dimension primary key, or the fact's natural (source) id
    columns: tuple[WarehouseColumn, ...]
    sources: tuple[str, ...]  # totesys tables it is derived from, the one its rows follow first
    description: str
    surrogate_key: str | None = None  # facts: SERIAL *_record_id generated by the warehouse
    # Rules beyond those the columns imply (unique key, NOT NULL, references, text dates): accepted
    # values, impossible values (errors: a fact row breaking one is quarantined) and the spec's ranges
    # (warnings, never enforced). See `rules`.
    column_rules: tuple[Rule, ...] = ()
    # Dimensions joined from two sources: lookup source -> column of the first source that references it.
    joins: dict[str, str] = field(default_factory=dict)
    history_of: str | None = None  # a history table: the dimension whose states it keeps

    @property
    def is_dimension(self) -> bool:
        return self.build in ("dimension", "large_dimension")

    @property
    def is_fact(self) -> bool:
        return self.build == "facts"

    @property
    def is_history(self) -> bool:
        return self.build == "history"

    @property
    def data_columns(self) -> tuple[WarehouseColumn, ...]:
        """Columns the platform writes (all but the warehouse-generated surrogate key)."""
        return tuple(c for c in self.columns if c.name != self.surrogate_key)

    @property
    def schema(self) -> pl.Schema:
        return pl.Schema({c.name: c.dtype for c in self.data_columns})

    @property
    def version_key(self) -> tuple[str, ...]:
        """What identifies one row: a fact row version, a dimension member, or a member's state."""
        if self.is_fact:
            return (self.key, "last_updated_date", "last_updated_time")
        if self.is_history:
            return (self.key, VALID_FROM)
        return (self.key,)

    @property
    def foreign_keys(self) -> tuple[WarehouseColumn, ...]:
        return tuple(c for c in self.columns if c.references)

    @property
    def source(self) -> SourceTable:
        """The single source table of a fact or delta dimension."""
        return SOURCE_TABLES_BY_NAME[self.sources[0]]

    def column(self, name: str) -> WarehouseColumn:
        return next(c for c in self.columns if c.name == name)

    def origin(self, column: WarehouseColumn) -> tuple[str, str] | None:
        """(source table, source column) a column is derived from; None for a computed or validity column."""
        if column.derivation in ("computed", "validity"):
            return None
        table, _, name = (column.source or column.name).rpartition(".")
        return table or self.sources[0], name

    def lineage(self, column: WarehouseColumn) -> list[tuple[str, str]]:
        """Every (source table, source column) the column's values come from (none: computed)."""
        if column.derivation == "validity":
            return [(s, SOURCE_TABLES_BY_NAME[s].cursor) for s in self.sources]
        origin = self.origin(column)
        return [origin] if origin else []

    def describe(self, column: WarehouseColumn) -> str:
        """One line on what the column holds: the catalog's, else its source column's and how it is derived."""
        if column.description:
            return column.description
        table, name = self.origin(column)  # type: ignore[misc]
        said = SOURCE_TABLES_BY_NAME[table].column(name).description
        return said if column.derivation == "copy" else f"{said}: {HOW[column.derivation]}"

    @property
    def text_date_columns(self) -> tuple[str, ...]:
        """Columns held as YYYY-MM-DD text at the source."""
        return tuple(c.name for c in self.data_columns if c.derivation == "text_date")

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
    col("created_date", "date", references="dim_date", source="created_at", derivation="date_part"),
    col("created_time", "time", source="created_at", derivation="time_part"),
    col("last_updated_date", "date", references="dim_date", source="last_updated", derivation="date_part"),
    col("last_updated_time", "time", source="last_updated", derivation="time_part"),
)


def _text_date(name: str) -> WarehouseColumn:
    return col(name, "date", references="dim_date", derivation="text_date")


def _surrogate(name: str, what: str) -> WarehouseColumn:
    return col(
        name, "integer", derivation="computed", description=f"Warehouse-generated key, one per version of {what}"
    )


def _calendar(name: str, pg_type: str, description: str) -> WarehouseColumn:
    return col(name, pg_type, derivation="computed", description=description)


def _legal(name: str) -> str:
    return f"address.{name}"


STAR_TABLES: tuple[WarehouseTable, ...] = (
    WarehouseTable(
        "dim_date",
        "calendar",
        "date_id",
        _wcols(
            _calendar("date_id", "date", "The day"),
            _calendar("year", "integer", "Calendar year"),
            _calendar("month", "integer", "Month number, 1 (January) to 12"),
            _calendar("day", "integer", "Day of the month"),
            _calendar("day_of_week", "integer", "ISO day of the week: 1 (Monday) to 7 (Sunday)"),
            _calendar("day_name", "varchar", "English name of the weekday"),
            _calendar("month_name", "varchar", "English name of the month"),
            _calendar("quarter", "integer", "Quarter of the year, 1 to 4"),
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
            col("department_name", "varchar", source="department.department_name"),
            col("location", "varchar", True, source="department.location"),
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
            col("location_id", "integer", source="address_id"),
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
        _wcols(
            ("currency_id", "integer"),
            ("currency_code", "varchar"),
            col(
                "currency_name",
                "varchar",
                source="currency_code",
                derivation="english_name",
                description="English name of the currency (British pound, United States dollar, Euro)",
            ),
        ),
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
            col("counterparty_legal_address_line_1", "varchar", source=_legal("address_line_1")),
            col("counterparty_legal_address_line_2", "varchar", True, source=_legal("address_line_2")),
            col("counterparty_legal_district", "varchar", True, source=_legal("district")),
            col("counterparty_legal_city", "varchar", source=_legal("city")),
            col("counterparty_legal_postal_code", "varchar", source=_legal("postal_code")),
            col("counterparty_legal_country", "varchar", source=_legal("country")),
            col("counterparty_legal_phone_number", "varchar", source=_legal("phone")),
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
            _surrogate("sales_record_id", "a sales order"),
            ("sales_order_id", "integer"),
            *_FACT_STAMPS,
            col("sales_staff_id", "integer", references="dim_staff", source="staff_id"),
            ("counterparty_id", "integer", False, "dim_counterparty"),
            ("units_sold", "integer"),
            ("unit_price", "numeric(10,2)"),
            ("currency_id", "integer", False, "dim_currency"),
            ("design_id", "integer", False, "dim_design"),
            _text_date("agreed_payment_date"),
            _text_date("agreed_delivery_date"),
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
    ),
    WarehouseTable(
        "fact_purchase_order",
        "facts",
        "purchase_order_id",
        _wcols(
            _surrogate("purchase_record_id", "a purchase order"),
            ("purchase_order_id", "integer"),
            *_FACT_STAMPS,
            ("staff_id", "integer", False, "dim_staff"),
            ("counterparty_id", "integer", False, "dim_counterparty"),
            ("item_code", "varchar"),
            ("item_quantity", "integer"),
            ("item_unit_price", "numeric(10,2)"),
            ("currency_id", "integer", False, "dim_currency"),
            _text_date("agreed_delivery_date"),
            _text_date("agreed_payment_date"),
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
            _surrogate("payment_record_id", "a payment"),
            ("payment_id", "integer"),
            *_FACT_STAMPS,
            ("transaction_id", "integer", False, "dim_transaction"),
            ("counterparty_id", "integer", False, "dim_counterparty"),
            ("payment_amount", "numeric(10,2)"),
            ("currency_id", "integer", False, "dim_currency"),
            ("payment_type_id", "integer", False, "dim_payment_type"),
            ("paid", "boolean"),
            _text_date("payment_date"),
        ),
        ("payment",),
        "Payment facts: one row per version of each payment (a payment marked paid adds a row).",
        surrogate_key="payment_record_id",
        column_rules=(WithinRange("payment_amount", "warning", low=0.0, high=100_000_000.0),),
    ),
)

VALID_FROM, VALID_TO, IS_CURRENT = "valid_from", "valid_to", "is_current"
_VALIDITY = (
    col(
        VALID_FROM, "timestamp", derivation="validity", description="When this state began (the source's last_updated)"
    ),
    col(
        VALID_TO, "timestamp", True, derivation="validity", description="When the next state began; empty while current"
    ),
    col(IS_CURRENT, "boolean", derivation="validity", description="Whether this is the member's current state"),
)


def history_table(dimension: WarehouseTable) -> WarehouseTable:
    """`<dimension>_history`: every distinct state of each member, with when it held."""
    what = dimension.description.split(":", 1)[0].lower()
    return WarehouseTable(
        f"{dimension.name}_history",
        "history",
        dimension.key,
        dimension.columns + _VALIDITY,
        dimension.sources,
        f"History of the {what}: every distinct state of each member, valid from its change to the next.",
        column_rules=dimension.column_rules,
        joins=dimension.joins,
        history_of=dimension.name,
    )


HISTORY_TABLES = tuple(history_table(t) for t in STAR_TABLES if t.is_dimension)
WAREHOUSE_TABLES: tuple[WarehouseTable, ...] = STAR_TABLES + HISTORY_TABLES
WAREHOUSE_TABLES_BY_NAME = {t.name: t for t in WAREHOUSE_TABLES}

# English currency names (the source has codes only). Unknown codes get their code as name.
CURRENCY_NAMES = {"GBP": "British pound", "USD": "United States dollar", "EUR": "Euro"}
