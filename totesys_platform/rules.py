"""The quality rule model: each kind of rule defined once, with one Polars and one SQL implementation.

The catalog says which rules apply to which columns and at which severity (`WarehouseTable.rules`). Every
place that enforces or reports a rule is generated from these objects, so they cannot drift apart:
- the blocking batch check on new processed rows (`offending`, Polars),
- the fact quarantine (the row rules at error severity: `offending` and `reason`, Polars),
- the warehouse check on whole tables (`offending_sql`, SQL),
- the warehouse DDL where a constraint fits (`constraint`),
- the check descriptions and the README (`name`, `sentence`).
A rule's `name` is the same snake-case sentence in a quarantine row, a check result and the README.
No Dagster here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Literal

import polars as pl
from psycopg import sql

Severity = Literal["error", "warning"]
ISO_DATE = "%Y-%m-%d"
# A YYYY-MM-DD text whose month and day exist; the day is then compared with the month's length.
_ISO_DATE_PATTERN = r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$"


@dataclass(frozen=True)
class Rule:
    """One rule on one table. Subclasses are the kinds; each implements both engines.

    `offending` is a Polars predicate selecting the rows that break the rule (None when it cannot be
    evaluated on a frame, e.g. a reference to a dimension whose keys are not in hand); `offending_sql` is
    a query counting them in the warehouse."""

    column: str
    severity: Severity = "error"
    row_level: ClassVar[bool] = True  # decidable from the row alone (quarantinable), or needs the table

    @property
    def name(self) -> str:
        return self.sentence.replace(", ", "_").replace(" ", "_").replace("-", "_")

    @property
    def sentence(self) -> str:
        raise NotImplementedError

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def offending(self, dimension_keys: Mapping[str, pl.Series]) -> pl.Expr | None:
        raise NotImplementedError

    def reason(self) -> pl.Expr:
        """Why one offending row breaks the rule, with its value (for the quarantine)."""
        return pl.format("{} is {}", pl.lit(self.column), pl.col(self.column).cast(pl.String).fill_null("null"))

    def offending_predicate(self, row: sql.Identifier, schema: str) -> sql.Composable:
        """SQL predicate on one row (alias `row`) that is true when the row breaks the rule."""
        raise NotImplementedError

    def offending_sql(self, target: sql.Composable, schema: str) -> sql.Composed:
        """A query counting the offending rows of `target` (a qualified table)."""
        row = sql.Identifier("f")
        return sql.SQL("SELECT count(*) FROM {} f WHERE {}").format(target, self.offending_predicate(row, schema))

    def constraint(self, table: str, schema: str) -> sql.Composable | None:
        """The table constraint enforcing the rule in the warehouse DDL, where one fits."""
        return None

    def _col(self, row: sql.Identifier) -> sql.Composed:
        return sql.SQL("{}.{}").format(row, sql.Identifier(self.column))


@dataclass(frozen=True)
class NotNull(Rule):
    @property
    def sentence(self) -> str:
        return f"{self.column} is not null"

    def offending(self, dimension_keys: Mapping[str, pl.Series]) -> pl.Expr:
        return pl.col(self.column).is_null()

    def reason(self) -> pl.Expr:
        return pl.lit(f"{self.column} is null")

    def offending_predicate(self, row: sql.Identifier, schema: str) -> sql.Composable:
        return sql.SQL("{} IS NULL").format(self._col(row))

    # Enforced by the column definition (NOT NULL), which the DDL derives from these rules.


@dataclass(frozen=True)
class Unique(Rule):
    """The columns (`column` first, then `more`) identify a row: a dimension member or a fact version."""

    more: tuple[str, ...] = ()
    primary: bool = False  # the table's primary key (dimensions) rather than a unique constraint (facts)
    row_level: ClassVar[bool] = False

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.column, *self.more)

    @property
    def sentence(self) -> str:
        return f"{self.column} versions are unique" if self.more else f"{self.column} is unique"

    def offending(self, dimension_keys: Mapping[str, pl.Series]) -> pl.Expr:
        return pl.struct(self.columns).is_duplicated()

    def offending_sql(self, target: sql.Composable, schema: str) -> sql.Composed:
        key = sql.SQL(", ").join(map(sql.Identifier, self.columns))
        return sql.SQL(
            "SELECT coalesce(sum(n), 0) FROM (SELECT count(*) AS n FROM {t} GROUP BY {k} HAVING count(*) > 1) d"
        ).format(t=target, k=key)

    def constraint(self, table: str, schema: str) -> sql.Composable:
        key = sql.SQL(", ").join(map(sql.Identifier, self.columns))
        if self.primary:
            return sql.SQL("PRIMARY KEY ({})").format(key)
        return sql.SQL("CONSTRAINT {} UNIQUE ({})").format(sql.Identifier(f"{table}_version_key"), key)


@dataclass(frozen=True)
class References(Rule):
    """Every non-null value is the primary key of a row of `dimension`."""

    dimension: str = ""
    dimension_key: str = ""

    @property
    def sentence(self) -> str:
        return f"{self.column} references {self.dimension}"

    def offending(self, dimension_keys: Mapping[str, pl.Series]) -> pl.Expr | None:
        keys = dimension_keys.get(self.dimension)
        if keys is None:
            return None
        return pl.col(self.column).is_not_null() & ~pl.col(self.column).is_in(keys.implode())

    def reason(self) -> pl.Expr:
        return pl.format("{} = {} has no row in {}", pl.lit(self.column), pl.col(self.column), pl.lit(self.dimension))

    def offending_predicate(self, row: sql.Identifier, schema: str) -> sql.Composable:
        return sql.SQL("{c} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {s}.{d} x WHERE x.{k} = {c})").format(
            c=self._col(row),
            s=sql.Identifier(schema),
            d=sql.Identifier(self.dimension),
            k=sql.Identifier(self.dimension_key),
        )

    def constraint(self, table: str, schema: str) -> sql.Composable:
        return sql.SQL("CONSTRAINT {} FOREIGN KEY ({}) REFERENCES {}.{} ({})").format(
            sql.Identifier(f"{table}_{self.column}_fkey"),
            sql.Identifier(self.column),
            sql.Identifier(schema),
            sql.Identifier(self.dimension),
            sql.Identifier(self.dimension_key),
        )


@dataclass(frozen=True)
class AcceptedValues(Rule):
    values: tuple[str, ...] = ()

    @property
    def sentence(self) -> str:
        return f"{self.column} is one of {', '.join(self.values)}"

    @property
    def name(self) -> str:
        return f"{self.column}_is_an_accepted_value"

    def offending(self, dimension_keys: Mapping[str, pl.Series]) -> pl.Expr:
        return pl.col(self.column).is_not_null() & ~pl.col(self.column).is_in(list(self.values))

    def reason(self) -> pl.Expr:
        return pl.format(
            "{} = '{}' is not one of {}", pl.lit(self.column), pl.col(self.column), pl.lit(", ".join(self.values))
        )

    def offending_predicate(self, row: sql.Identifier, schema: str) -> sql.Composable:
        return sql.SQL("{} <> ALL({})").format(self._col(row), sql.Literal(list(self.values)))

    def constraint(self, table: str, schema: str) -> sql.Composable:
        return sql.SQL("CONSTRAINT {} CHECK ({} IN ({}))").format(
            sql.Identifier(f"{table}_{self.name}"),
            sql.Identifier(self.column),
            sql.SQL(", ").join(map(sql.Literal, self.values)),
        )


@dataclass(frozen=True)
class Positive(Rule):
    """A quantity or price that cannot be zero or negative."""

    @property
    def sentence(self) -> str:
        return f"{self.column} is positive"

    def offending(self, dimension_keys: Mapping[str, pl.Series]) -> pl.Expr:
        return pl.col(self.column) <= 0

    def reason(self) -> pl.Expr:
        return pl.format("{} must be positive, got {}", pl.lit(self.column), pl.col(self.column).cast(pl.String))

    def offending_predicate(self, row: sql.Identifier, schema: str) -> sql.Composable:
        return sql.SQL("{} <= 0").format(self._col(row))

    def constraint(self, table: str, schema: str) -> sql.Composable:
        return sql.SQL("CONSTRAINT {} CHECK ({} > 0)").format(
            sql.Identifier(f"{table}_{self.name}"), sql.Identifier(self.column)
        )


@dataclass(frozen=True)
class WithinRange(Rule):
    """A value inside the spec's expected range (inclusive)."""

    low: float = 0.0
    high: float = 0.0

    @property
    def sentence(self) -> str:
        return f"{self.column} is within {self.low:g}-{self.high:g}"

    @property
    def name(self) -> str:
        return f"{self.column}_is_within_the_spec_range"

    def offending(self, dimension_keys: Mapping[str, pl.Series]) -> pl.Expr:
        return ~pl.col(self.column).is_between(self.low, self.high)

    def reason(self) -> pl.Expr:
        return pl.format(
            "{} = {} is outside {}", pl.lit(self.column), pl.col(self.column), pl.lit(f"{self.low:g}-{self.high:g}")
        )

    def offending_predicate(self, row: sql.Identifier, schema: str) -> sql.Composable:
        return sql.SQL("{} NOT BETWEEN {} AND {}").format(self._col(row), sql.Literal(self.low), sql.Literal(self.high))


@dataclass(frozen=True)
class IsoDate(Rule):
    """A date held as YYYY-MM-DD text at the source names a day that exists (a typed date always does)."""

    @property
    def sentence(self) -> str:
        return f"{self.column} is a YYYY-MM-DD date"

    @property
    def name(self) -> str:
        return f"{self.column}_is_a_date"

    def offending(self, dimension_keys: Mapping[str, pl.Series]) -> pl.Expr:
        text = pl.col(self.column).cast(pl.String)
        return text.is_not_null() & text.str.strptime(pl.Date, ISO_DATE, strict=False).is_null()

    def reason(self) -> pl.Expr:
        return pl.format("{} is not a YYYY-MM-DD date: '{}'", pl.lit(self.column), pl.col(self.column).cast(pl.String))

    def offending_predicate(self, row: sql.Identifier, schema: str) -> sql.Composable:
        # No cast that could raise: the pattern first, then the day against the month's last day.
        return sql.SQL(
            "CASE WHEN {c}::text !~ {p} THEN true"
            " ELSE substr({c}::text, 9, 2)::int > extract(day from"
            " (substr({c}::text, 1, 8) || '01')::date + interval '1 month - 1 day')::int END"
        ).format(c=self._col(row), p=sql.Literal(_ISO_DATE_PATTERN))


# --- Evaluating rules on a frame ------------------------------------------------------------

SAMPLE_ROWS = 5


@dataclass
class RuleResult:
    rule: Rule
    offending: int
    sample: pl.DataFrame  # up to SAMPLE_ROWS offending rows

    @property
    def is_error(self) -> bool:
        return self.rule.is_error

    def merge(self, other: RuleResult) -> RuleResult:
        if not other.offending or self.sample.height >= SAMPLE_ROWS:
            return RuleResult(self.rule, self.offending + other.offending, self.sample)
        sample = pl.concat([self.sample, other.sample], how="diagonal_relaxed").head(SAMPLE_ROWS)
        return RuleResult(self.rule, self.offending + other.offending, sample)


def applicable(rules: tuple[Rule, ...], dimension_keys: Mapping[str, pl.Series]) -> list[tuple[Rule, pl.Expr]]:
    """The rules that can be evaluated on a frame with these dimension keys in hand, with their predicates."""
    pairs = [(rule, rule.offending(dimension_keys)) for rule in rules]
    return [(rule, predicate) for rule, predicate in pairs if predicate is not None]


def evaluate(
    rules: tuple[Rule, ...], frame: pl.DataFrame, dimension_keys: Mapping[str, pl.Series] | None = None
) -> list[RuleResult]:
    """Each evaluable rule with its offending row count and a sample of those rows (one pass for the counts)."""
    pairs = applicable(rules, dimension_keys or {})
    counts = frame.select(*(predicate.fill_null(False).sum().alias(str(i)) for i, (_, predicate) in enumerate(pairs)))
    results = []
    for i, (rule, predicate) in enumerate(pairs):
        offending = int(counts[str(i)][0] or 0) if pairs else 0
        sample = frame.filter(predicate.fill_null(False)).head(SAMPLE_ROWS) if offending else frame.clear()
        results.append(RuleResult(rule, offending, sample))
    return results


def merge_results(total: list[RuleResult] | None, new: list[RuleResult]) -> list[RuleResult]:
    if total is None:
        return new
    return [a.merge(b) for a, b in zip(total, new, strict=True)]


def describe(rules: tuple[Rule, ...]) -> str:
    """The rules as one line for a check description: errors, then warnings."""
    errors = [r.name for r in rules if r.is_error]
    warnings = [r.name for r in rules if not r.is_error]
    return "errors: " + ", ".join(errors) + (f"; warnings: {', '.join(warnings)}" if warnings else "")
