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

from totesys_platform.catalog import (
    CURRENCY_NAMES,
    IS_CURRENT,
    SOURCE_TABLES_BY_NAME,
    VALID_FROM,
    VALID_TO,
    WarehouseColumn,
    WarehouseTable,
)
from totesys_platform.rules import ISO_DATE, Rule, applicable

DELETED = "_deleted"  # a source version that says the row was deleted (history.py)
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


DERIVATIONS: dict[str, Callable[[pl.Expr], pl.Expr]] = {
    "copy": lambda value: value,
    "date_part": lambda stamp: stamp.dt.date(),
    "time_part": lambda stamp: stamp.dt.time(),
    "text_date": lambda text: text.str.strptime(pl.Date, ISO_DATE, strict=False),
    "english_name": lambda code: code.replace_strict(CURRENCY_NAMES, default=code),
}


def _reference(table: WarehouseTable, column: WarehouseColumn) -> str:
    """The frame column holding a column's source value: its name in the first source's rows, or
    `<lookup>.<column>` for a column of a joined source (see `with_lookups`)."""
    source, name = table.origin(column)  # type: ignore[misc]
    return name if source == table.sources[0] else f"{source}.{name}"


def column_expressions(table: WarehouseTable, parse_dates: bool = True) -> list[pl.Expr]:
    """How each derived warehouse column comes from its source row, as the catalog says (text dates kept as
    text when `parse_dates` is false, so that the rules see what the source holds)."""
    exprs = []
    for column in table.data_columns:
        if table.origin(column) is None:
            continue
        derive = DERIVATIONS[column.derivation]
        value = pl.col(_reference(table, column))
        exprs.append(
            (value if column.derivation == "text_date" and not parse_dates else derive(value)).alias(column.name)
        )
    return exprs


def with_lookups(table: WarehouseTable, rows: pl.DataFrame, lookups: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """`rows` of the first source with the columns the table takes from each joined source, named
    `<lookup>.<column>` (a left join: a missing lookup row leaves them empty, for the rules to catch)."""
    for lookup, link in table.joins.items():
        key = SOURCE_TABLES_BY_NAME[lookup].primary_key
        taken = [origin[1] for c in table.data_columns if (origin := table.origin(c)) and origin[0] == lookup]
        extra = [c for c in lookups[lookup].columns if c.startswith((f"_from_{lookup}", f"_to_{lookup}"))]
        right = lookups[lookup].select(
            pl.col(key).alias(link), *extra, *(pl.col(n).alias(f"{lookup}.{n}") for n in taken)
        )
        rows = rows.join(right, on=link, how="left")
    return rows


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
    derived = raw.with_columns(column_expressions(table, parse_dates=False))
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


def build_dimension(table: WarehouseTable, sources: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """The dimension from its source tables' row versions: the latest version of each member with the
    latest version of what it joins, in the warehouse's column order and types."""
    primary = table.source
    rows = latest_versions(sources[primary.name], primary.primary_key)
    lookups = {name: latest_versions(sources[name], SOURCE_TABLES_BY_NAME[name].primary_key) for name in table.joins}
    return _conform(with_lookups(table, rows, lookups).select(column_expressions(table)), table)


# --- Dimension history ----------------------------------------------------------------------


def _intervals(versions: pl.DataFrame, key: str, cursor: str, order: str | None, open_start: bool) -> pl.DataFrame:
    """Each version of each key with `_from` (its cursor; empty for the first when `open_start`: a lookup's
    earliest known version stands for all time before it) and `_to` (the next version's cursor, empty for the
    last). Versions with the same cursor: the one committed last (`order`), then the last to arrive, wins."""
    ordering = [key, cursor, *([order] if order and order in versions.columns else [])]
    ordered = versions.with_row_index("_arrival").sort([*ordering, "_arrival"])
    ordered = ordered.unique([key, cursor], keep="last", maintain_order=True)
    first = pl.col(key).ne_missing(pl.col(key).shift(1))
    start = pl.when(first).then(None).otherwise(pl.col(cursor)) if open_start else pl.col(cursor)
    following = pl.when(pl.col(key).eq_missing(pl.col(key).shift(-1))).then(pl.col(cursor).shift(-1))
    return ordered.with_columns(start.alias("_from"), following.alias("_to")).drop("_arrival")


def history_rows(table: WarehouseTable, versions: dict[str, pl.DataFrame], order: str | None = None) -> pl.DataFrame:
    """Every distinct state of the members whose versions are given (all of them), with its validity.

    A member's state changes when a version of it, or of what it joins (a department for staff, an address
    for a counterparty), takes effect: the member's versions are cut at the joined rows' version times.
    Consecutive equal states are one state; `valid_to` is when the next began (empty: current). A version
    flagged `_deleted` (the reconciliation found the row deleted) ends the member's last state. A state that
    breaks an error rule is left out when a later one follows (the blocking check stops a current one)."""
    primary = table.source
    rows = _intervals(versions[primary.name], primary.primary_key, primary.cursor, order, open_start=False)
    lookups = {}
    for name in table.joins:
        source = SOURCE_TABLES_BY_NAME[name]
        lookups[name] = _intervals(versions[name], source.primary_key, source.cursor, order, open_start=True).rename(
            {"_from": f"_from_{name}", "_to": f"_to_{name}"}
        )
    rows = with_lookups(table, rows, lookups)
    for name in table.joins:  # the pieces of each member version during which one lookup version held
        begins, ends = pl.col(f"_from_{name}"), pl.col(f"_to_{name}")
        overlaps = (ends.is_null() | (ends > pl.col("_from"))) & (
            begins.is_null() | pl.col("_to").is_null() | (begins < pl.col("_to"))
        )
        rows = rows.filter(overlaps).with_columns(
            pl.max_horizontal("_from", begins).alias("_from"), pl.min_horizontal("_to", ends).alias("_to")
        )
    deleted = pl.col(DELETED).fill_null(False) if DELETED in rows.columns else pl.lit(False)
    states = rows.select(*column_expressions(table), pl.col("_from").alias(VALID_FROM), deleted.alias(DELETED))
    states = _conform_with(states, table, DELETED).sort(table.key, VALID_FROM)
    return _validity(table, _without_broken_states(table, states)).filter(~pl.col(DELETED)).drop(DELETED)


def _conform_with(frame: pl.DataFrame, table: WarehouseTable, *more: str) -> pl.DataFrame:
    """The table's columns the frame has, in order and types, then `more` as they are."""
    held = [pl.col(n).cast(t) for n, t in table.schema.items() if n in frame.columns]
    return frame.select(*held, *more)


def _without_broken_states(table: WarehouseTable, states: pl.DataFrame) -> pl.DataFrame:
    """States breaking a row-level error rule, but for each member's last."""
    pairs = applicable(tuple(r for r in quarantine_rules(table) if r.column in states.columns), {})
    if not pairs:
        return states
    broken = pl.any_horizontal([p.fill_null(False) for _, p in pairs]) & ~pl.col(DELETED)
    last = pl.col(table.key).ne_missing(pl.col(table.key).shift(-1))
    return states.filter(~broken | last)


def _validity(table: WarehouseTable, states: pl.DataFrame) -> pl.DataFrame:
    """One row per run of equal states (sorted by member and start), with its end and whether it is current."""
    values = [c.name for c in table.data_columns if table.origin(c) is not None]
    changed = pl.any_horizontal([pl.col(c).ne_missing(pl.col(c).shift(1)) for c in [*values, DELETED]])
    states = states.filter(changed)
    key = pl.col(table.key)
    ends_at = pl.when(key.eq_missing(key.shift(-1))).then(pl.col(VALID_FROM).shift(-1))
    return states.with_columns(ends_at.alias(VALID_TO)).with_columns(pl.col(VALID_TO).is_null().alias(IS_CURRENT))


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
