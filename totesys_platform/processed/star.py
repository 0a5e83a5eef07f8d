"""Pure Polars transforms from totesys row versions to the star schema (no Dagster here).

Conventions (documented in the README):
- timestamps split into a date and a time (microseconds kept);
- text dates (YYYY-MM-DD) cast to date;
- dim_date.day_of_week is ISO 8601: Monday = 1 ... Sunday = 7 (PostgreSQL's ISODOW);
- dim_date holds whole calendar years covering every date the facts reference;
- currency names are English (British pound, United States dollar, Euro).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from totesys_platform.catalog import CURRENCY_NAMES, WarehouseTable
from totesys_platform.rules import ISO_DATE, Rule, applicable

QUARANTINE_SCHEMA = pl.Schema(
    {
        "warehouse_table": pl.String,
        "source_table": pl.String,
        "source_id": pl.Int32,
        "last_updated": pl.Datetime("us"),
        "rule": pl.String,
        "reason": pl.String,
        "raw_row": pl.String,
    }
)
STAMP_COLUMNS = {"created": "created_at", "last_updated": "last_updated"}


def latest_versions(
    frame: pl.DataFrame, key: str, cursor: str = "last_updated", then: str | None = None
) -> pl.DataFrame:
    """The newest version of each key: the greatest cursor, ties broken by `then` (when given), then by
    arrival order. Only the key, the ordering columns and a row index are sorted; the winning rows are then
    gathered once, so a wide frame (a dimension's backfill: millions of rows) is not copied at every step."""
    keys = frame[key]
    if keys.n_unique() == frame.height:  # one version per key (an insert-only backfill): nothing to choose
        return frame if keys.is_sorted() else frame.sort(key)
    ordering = [cursor, *([then] if then else [])]
    winners = (
        frame.select(key, *ordering)
        .with_row_index("_arrival")
        .sort([*ordering, "_arrival"])
        .unique(key, keep="last")
        .sort(key)["_arrival"]
    )
    return frame[winners]


def _conform(frame: pl.DataFrame, table: WarehouseTable) -> pl.DataFrame:
    return frame.select(pl.col(name).cast(dtype) for name, dtype in table.schema.items())


# --- Facts -------------------------------------------------------------------------------------


@dataclass
class FactBatch:
    facts: pl.DataFrame
    quarantine: pl.DataFrame


def fact_expressions(table: WarehouseTable, parse_dates: bool = True) -> list[pl.Expr]:
    """How each warehouse column of a fact is derived from its source row (text dates kept as text when
    `parse_dates` is false, so that the rules see what the source holds)."""
    exprs = []
    for column in table.data_columns:
        stem = column.name.rsplit("_", 1)[0]
        if stem in STAMP_COLUMNS and column.name.endswith(("_date", "_time")):
            stamp = pl.col(STAMP_COLUMNS[stem])
            exprs.append((stamp.dt.date() if column.name.endswith("_date") else stamp.dt.time()).alias(column.name))
        elif column.name in table.text_date_columns:
            text = pl.col(column.name)
            exprs.append(text.str.strptime(pl.Date, ISO_DATE, strict=False) if parse_dates else text)
        else:
            exprs.append(pl.col(table.renames.get(column.name, column.name)).alias(column.name))
    return exprs


def quarantine_rules(table: WarehouseTable) -> tuple[Rule, ...]:
    """The rules a single fact row can break (row-level, error severity): such a row is quarantined."""
    return tuple(rule for rule in table.rules if rule.row_level and rule.is_error)


def _split_failures(derived: pl.DataFrame, pairs: list[tuple[Rule, pl.Expr]]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(rows breaking no rule, rows breaking one with `_rules` and `_reasons`): every rule is tested on every
    row as cheap booleans; only the few failing rows get their rule names and reasons spelled out."""
    if not pairs:
        return derived, derived.clear().with_columns(_rules=pl.lit(""), _reasons=pl.lit(""))
    flagged = derived.with_columns(pl.any_horizontal([p.fill_null(False) for _, p in pairs]).alias("_bad"))
    names = pl.concat_list([pl.when(p).then(pl.lit(rule.name)) for rule, p in pairs]).list.drop_nulls()
    reasons = pl.concat_list([pl.when(p).then(rule.reason()) for rule, p in pairs]).list.drop_nulls()
    failing = flagged.filter("_bad").with_columns(_rules=names.list.join(","), _reasons=reasons.list.join("; "))
    return flagged.filter(~pl.col("_bad")), failing


def build_facts(
    raw: pl.DataFrame, table: WarehouseTable, dimension_keys: dict[str, pl.Series] | None = None
) -> FactBatch:
    """Every source row version as a fact row, or a quarantine row naming the rules it breaks and why."""
    source = table.source
    derived = raw.with_columns(fact_expressions(table, parse_dates=False))
    good, failing = _split_failures(derived, applicable(quarantine_rules(table), dimension_keys or {}))
    quarantine = failing.select(
        warehouse_table=pl.lit(table.name),
        source_table=pl.lit(source.name),
        source_id=pl.col(source.primary_key).cast(pl.Int32),
        last_updated=pl.col(source.cursor).cast(pl.Datetime("us")),
        rule=pl.col("_rules"),
        reason=pl.col("_reasons"),
        raw_row=pl.struct([pl.col(c).cast(pl.String) for c in raw.columns]).struct.json_encode(),
    )
    good = good.with_columns(pl.col(table.text_date_columns).str.strptime(pl.Date, ISO_DATE, strict=False))
    return FactBatch(facts=_conform(good, table), quarantine=quarantine.cast(dict(QUARANTINE_SCHEMA)))


# --- Dimensions -----------------------------------------------------------------------------


def dim_staff(staff: pl.DataFrame, department: pl.DataFrame) -> pl.DataFrame:
    departments = latest_versions(department, "department_id").select("department_id", "department_name", "location")
    return (
        latest_versions(staff, "staff_id")
        .join(departments, on="department_id", how="left")
        .select("staff_id", "first_name", "last_name", "department_name", "location", "email_address")
    )


def dim_location(address: pl.DataFrame) -> pl.DataFrame:
    return latest_versions(address, "address_id").select(
        pl.col("address_id").alias("location_id"),
        "address_line_1",
        "address_line_2",
        "district",
        "city",
        "postal_code",
        "country",
        "phone",
    )


def dim_design(design: pl.DataFrame) -> pl.DataFrame:
    return latest_versions(design, "design_id").select("design_id", "design_name", "file_location", "file_name")


def dim_currency(currency: pl.DataFrame) -> pl.DataFrame:
    return latest_versions(currency, "currency_id").select(
        "currency_id",
        "currency_code",
        pl.col("currency_code").replace_strict(CURRENCY_NAMES, default=pl.col("currency_code")).alias("currency_name"),
    )


def dim_counterparty(counterparty: pl.DataFrame, address: pl.DataFrame) -> pl.DataFrame:
    legal = latest_versions(address, "address_id").select(
        pl.col("address_id").alias("legal_address_id"),
        pl.col("address_line_1").alias("counterparty_legal_address_line_1"),
        pl.col("address_line_2").alias("counterparty_legal_address_line_2"),
        pl.col("district").alias("counterparty_legal_district"),
        pl.col("city").alias("counterparty_legal_city"),
        pl.col("postal_code").alias("counterparty_legal_postal_code"),
        pl.col("country").alias("counterparty_legal_country"),
        pl.col("phone").alias("counterparty_legal_phone_number"),
    )
    return (
        latest_versions(counterparty, "counterparty_id")
        .join(legal, on="legal_address_id", how="left")
        .drop("legal_address_id", "commercial_contact", "delivery_contact", "created_at", "last_updated")
    )


def dim_payment_type(payment_type: pl.DataFrame) -> pl.DataFrame:
    return latest_versions(payment_type, "payment_type_id").select("payment_type_id", "payment_type_name")


def dim_transaction(transaction: pl.DataFrame) -> pl.DataFrame:
    return latest_versions(transaction, "transaction_id").select(
        "transaction_id", "transaction_type", "sales_order_id", "purchase_order_id"
    )


DIMENSION_BUILDERS: dict[str, Callable[..., pl.DataFrame]] = {
    "dim_staff": dim_staff,
    "dim_location": dim_location,
    "dim_design": dim_design,
    "dim_currency": dim_currency,
    "dim_counterparty": dim_counterparty,
    "dim_payment_type": dim_payment_type,
    "dim_transaction": dim_transaction,
}


def build_dimension(table: WarehouseTable, sources: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """The dimension from its source tables' row versions, in the warehouse's column order and types."""
    return _conform(DIMENSION_BUILDERS[table.name](**sources), table)


# --- dim_date -------------------------------------------------------------------------------


def calendar_years(first: dt.date, last: dt.date) -> tuple[dt.date, dt.date]:
    return dt.date(first.year, 1, 1), dt.date(last.year, 12, 31)


def dim_date(start: dt.date, end: dt.date) -> pl.DataFrame:
    """One row per day from start to end inclusive."""
    day = pl.col("date_id")
    return pl.DataFrame({"date_id": pl.date_range(start, end, "1d", eager=True)}).select(
        day,
        day.dt.year().cast(pl.Int32).alias("year"),
        day.dt.month().cast(pl.Int32).alias("month"),
        day.dt.day().cast(pl.Int32).alias("day"),
        day.dt.weekday().cast(pl.Int32).alias("day_of_week"),
        day.dt.strftime("%A").alias("day_name"),
        day.dt.strftime("%B").alias("month_name"),
        day.dt.quarter().cast(pl.Int32).alias("quarter"),
    )
