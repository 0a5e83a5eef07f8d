"""Reconciliation: what the `last_updated` cursor cannot see, found by comparing checksums of key segments.

Three kinds of change never move the cursor: a hard delete, an update that does not bump `last_updated` (a
fix by hand, or the source's own `ON DELETE SET NULL`), and a row stamped older than the lookback. Each is a
difference between a source table and the newest version of each key in the ingestion zone.

Comparing whole tables would move every row. Instead (the bisection of Datafold's data-diff), PostgreSQL
computes, in one plain SELECT per level, the row count and two sums of 28-bit slices of each row's hash per
segment of keys; the same aggregates of the lake's newest versions come from the zone's reconciliation state
(key, last_updated, row hash: one row per key, kept up to date from the new versions only). Only the segments
whose aggregates differ are split again, down to a few hundred keys, whose rows are then read and compared:
the work and the rows read follow the differences, not the table size.

Findings are appended, never rewritten: a row missing from the lake or quietly changed is appended to its
ingestion table as a new version, in a commit whose metadata names the reconciliation; a deleted row is
appended to the ingestion zone's `_deletions` table (table, key, its last `last_updated`, when it was
detected, by which run). The state consumes those commits like any other, so a second reconciliation finds
nothing again, and one killed half-way is completed by the next.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import polars as pl

from totesys_platform.catalog import SourceTable
from totesys_platform.raw.extract import (
    ROW_HASH,
    TABLE_ERRORS,
    checked_columns,
    describe_source,
    row_hash_sql,
    select_sql,
    source_clock,
    source_snapshot,
    typed,
)
from totesys_platform.resources.delta_settings import CONSUMED_KEY, DELTA_COMMIT_INFO
from totesys_platform.resources.lake import LakeZone
from totesys_platform.resources.postgres import PostgresResource
from totesys_platform.resources.spool import Spool

DELETIONS = "_deletions"  # ingestion table of the source rows found deleted
DELETIONS_SCHEMA = pl.Schema(
    {
        "table_name": pl.String,
        "source_id": pl.Int64,
        "last_updated": pl.Datetime("us"),
        "detected_at": pl.Datetime("us"),
        "run_id": pl.String,
    }
)
STATE_PREFIX = "reconciliation_state"  # processed zone: <prefix>/<table>, the newest version of each key
STATE_SCHEMA = pl.Schema(
    {"source_id": pl.Int64, "last_updated": pl.Datetime("us"), ROW_HASH: pl.String, "deleted": pl.Boolean}
)
FANOUT = 64  # segments per level of the bisection
LEAF_KEYS = 512  # a segment of at most this many keys is read and compared row by row
KINDS = ("deleted", "quiet_update", "late_row")


@dataclass
class TableFindings:
    """What one table's reconciliation found (the keys, per kind) and what it cost."""

    table: str
    keys: dict[str, list[int]] = field(default_factory=lambda: {k: [] for k in KINDS})
    pending: int = 0  # changed after the last ingestion: the next ordinary run takes them
    baselined: int = 0  # versions ingested before row hashes, found equal and given the source's hash
    source_queries: int = 0
    rows_read: int = 0

    @property
    def counts(self) -> dict[str, int]:
        return {kind: len(keys) for kind, keys in self.keys.items()}

    @property
    def found(self) -> int:
        return sum(self.counts.values())


def state_name(table: SourceTable) -> str:
    return f"{STATE_PREFIX}/{table.name}"


# --- the lake side: the newest version of each key ---------------------------------------------------


def _new_versions(ingestion: LakeZone, table: SourceTable, after: int | None) -> pl.DataFrame:
    present = ingestion.table(table.name)
    if present is None:
        return pl.DataFrame(schema=STATE_SCHEMA)
    has_hash = ROW_HASH in present.schema().to_arrow().names
    columns = [table.primary_key, table.cursor, *([ROW_HASH] if has_hash else [])]
    frames = [f.drop("_commit_version") for f in ingestion.changes(table.name, after, columns=columns)]
    if not frames:
        return pl.DataFrame(schema=STATE_SCHEMA)
    versions = pl.concat(frames, how="vertical_relaxed")
    return (
        versions.select(
            source_id=pl.col(table.primary_key).cast(pl.Int64),
            last_updated=pl.col(table.cursor).cast(pl.Datetime("us")),
            **{ROW_HASH: pl.col(ROW_HASH) if has_hash else pl.lit(None, pl.String)},
            deleted=pl.lit(False),
        )
        .drop_nulls("source_id")
        .unique("source_id", keep="last", maintain_order=True)  # commit order: the newest version wins
    )


def _new_deletions(ingestion: LakeZone, table: SourceTable, after: int | None) -> pl.DataFrame:
    if ingestion.table(DELETIONS) is None:
        return pl.DataFrame(schema=STATE_SCHEMA)
    frames = [f.filter(pl.col("table_name") == table.name) for f in ingestion.changes(DELETIONS, after)]
    if not frames:
        return pl.DataFrame(schema=STATE_SCHEMA)
    return pl.concat(frames, how="vertical_relaxed").select(
        pl.col("source_id").cast(pl.Int64),
        pl.col("last_updated").cast(pl.Datetime("us")),
        pl.lit(None, pl.String).alias(ROW_HASH),
        deleted=pl.lit(True),
    )


def refresh_state(ingestion: LakeZone, processed: LakeZone, table: SourceTable) -> pl.DataFrame:
    """The newest version of each key in the ingestion zone (deleted ones marked), brought up to date from
    the versions and deletions committed since it last was: its cost follows the new versions."""
    name = state_name(table)
    done = processed.consumed(name)
    raw_until, deletions_until = ingestion.version(table.name), ingestion.version(DELETIONS)
    changes = pl.concat(
        [
            _new_versions(ingestion, table, done.get("raw")),
            _new_deletions(ingestion, table, done.get("deletions")),
        ]
    ).unique("source_id", keep="last", maintain_order=True)
    consumed = {"raw": raw_until, "deletions": deletions_until}
    if changes.height or processed.table(name) is None:
        processed.merge(name, changes.cast(dict(STATE_SCHEMA)), "source_id", {CONSUMED_KEY: consumed})
    state = processed.scan(name)
    return state.sort("source_id").collect() if state is not None else pl.DataFrame(schema=STATE_SCHEMA)


def set_hashes(processed: LakeZone, table: SourceTable, rows: pl.DataFrame) -> None:
    """Give versions ingested without a hash the source's (found equal): the next reconciliation skips them."""
    if rows.height:
        consumed = processed.consumed(state_name(table))
        processed.merge(state_name(table), rows.cast(dict(STATE_SCHEMA)), "source_id", {CONSUMED_KEY: consumed})


# --- segment checksums on both sides --------------------------------------------------------------


def hash_parts(column: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """Two 28-bit integers of an md5 hex digest (characters 1-7 and 8-14), as PostgreSQL's segment_sql."""
    return (
        column.str.slice(0, 7).str.to_integer(base=16).fill_null(0),
        column.str.slice(7, 7).str.to_integer(base=16).fill_null(0),
    )


def key_range(state: pl.DataFrame, low: int, high: int) -> pl.DataFrame:
    """The state's rows with keys in [low, high]: a slice of the state sorted by key (no scan of the rest)."""
    keys = state["source_id"]
    start, end = keys.search_sorted(low, side="left"), keys.search_sorted(high, side="right")
    return state.slice(start, end - start)


def lake_segments(state: pl.DataFrame, low: int, high: int, width: int) -> dict[int, tuple[int, int, int, int]]:
    """`state` sorted by key: count, hash-slice sums and hashless rows per segment of `width` keys."""
    present = key_range(state, low, high).filter(~pl.col("deleted"))
    a, b = hash_parts(pl.col(ROW_HASH))
    grouped = present.group_by(segment=(pl.col("source_id") - low) // width).agg(
        n=pl.len(), a=a.sum(), b=b.sum(), unknown=pl.col(ROW_HASH).null_count()
    )
    # A version without a hash (ingested before hashes) never matches: its segment is compared row by row.
    return {s: (n, a, b, u) for s, n, a, b, u in grouped.iter_rows()}


def segment_sql(table: SourceTable) -> str:
    """Per segment of `width` keys from `low` to `high` ($1, $2, $3): rows and the sums of the hash slices."""
    key = f'"{table.primary_key}"'
    return (
        f"SELECT (({key} - $1) / $3)::bigint AS segment, count(*) AS n,"  # noqa: S608 - catalog identifiers
        " sum(('x' || substr(h, 1, 7))::bit(28)::int)::bigint AS a,"
        " sum(('x' || substr(h, 8, 7))::bit(28)::int)::bigint AS b"
        f' FROM (SELECT {key}, {row_hash_sql(table)} AS h FROM "{table.name}"'
        f" WHERE {key} BETWEEN $1 AND $2) AS s GROUP BY 1"
    )


def _fetch(cursor, statement: str, parameters: tuple) -> pl.DataFrame:
    cursor.execute(statement, parameters=parameters)
    return pl.from_arrow(cursor.fetch_arrow_table())  # type: ignore[return-value]


def source_segments(
    cursor, table: SourceTable, low: int, high: int, width: int
) -> dict[int, tuple[int, int, int, int]]:
    frame = _fetch(cursor, segment_sql(table), (low, high, width))
    return {int(s): (int(n), int(a), int(b), 0) for s, n, a, b in frame.iter_rows()}


def source_key_range(cursor, table: SourceTable) -> tuple[int, int] | None:
    key = f'"{table.primary_key}"'
    frame = _fetch(cursor, f'SELECT min({key})::bigint, max({key})::bigint FROM "{table.name}"', ())  # noqa: S608
    low, high = frame.row(0)
    return None if low is None else (int(low), int(high))


def differing_ranges(
    source: Callable[[int, int, int], dict], lake: Callable[[int, int, int], dict], low: int, high: int
) -> list[tuple[int, int]]:
    """The key ranges (at most LEAF_KEYS keys wide) whose segment aggregates differ between the two sides,
    found by splitting only the differing segments FANOUT ways at each level."""
    leaves: list[tuple[int, int]] = []
    pending = [(low, high)]
    while pending:
        lo, hi = pending.pop()
        width = max(1, math.ceil((hi - lo + 1) / FANOUT))
        left, right = source(lo, hi, width), lake(lo, hi, width)
        for segment in sorted(s for s in left.keys() | right.keys() if left.get(s) != right.get(s)):
            start = lo + segment * width
            end = min(hi, start + width - 1)
            (leaves if end - start + 1 <= LEAF_KEYS else pending).append((start, end))
    return sorted(leaves)


# --- the rows of a differing range ----------------------------------------------------------------


def source_rows(cursor, table: SourceTable, low: int, high: int) -> pl.DataFrame:
    statement = f'{select_sql(table, [], incremental=False)} WHERE "{table.primary_key}" BETWEEN $1 AND $2'
    return typed(_fetch(cursor, statement, (low, high)), table)


def classify(
    rows: pl.DataFrame, state: pl.DataFrame, table: SourceTable, settled_until: dt.datetime | None
) -> dict[str, pl.DataFrame]:
    """The rows of one key range, compared with the lake's newest versions: `late_row` and `quiet_update`
    (source rows to append), `deleted` (state rows), `baseline` (hashes to record), `pending` (a version the
    lake lacks, stamped after `settled_until`: within the cursor's reach, the next ordinary run takes it)."""
    key, cursor = table.primary_key, table.cursor
    source = rows.with_columns(source_id=pl.col(key).cast(pl.Int64))
    lake = state.filter(~pl.col("deleted")).select("source_id", lake_updated="last_updated", lake_hash=pl.col(ROW_HASH))
    both = source.join(lake, on="source_id", how="left")
    settled = pl.lit(True) if settled_until is None else pl.col(cursor) <= settled_until
    absent, same_stamp = pl.col("lake_updated").is_null(), pl.col(cursor) == pl.col("lake_updated")
    differs = pl.col("lake_hash").is_not_null() & (pl.col("lake_hash") != pl.col(ROW_HASH))
    unknown = pl.col("lake_hash").is_null() & ~absent
    late = absent | (~same_stamp & (differs | unknown))
    return {
        "late_row": both.filter(settled & late).select(rows.columns),
        # A changed row whose stamp the lake holds is never re-read by the cursor, however recent.
        "quiet_update": both.filter(same_stamp & differs).select(rows.columns),
        "baseline": both.filter(same_stamp & unknown)
        .select("source_id", last_updated=pl.col(cursor).cast(pl.Datetime("us")), **{ROW_HASH: pl.col(ROW_HASH)})
        .with_columns(deleted=pl.lit(False)),
        "pending": both.filter(~settled & late),
        "deleted": lake.join(source.select("source_id"), on="source_id", how="anti"),
    }


# --- one table ------------------------------------------------------------------------------------


def settled_until(ingestion: LakeZone, table: SourceTable, lookback: dt.timedelta) -> dt.datetime | None:
    """What the cursor has settled: versions stamped up to the watermark less the lookback (the next run
    re-reads the rest); None before any ingestion."""
    watermark = ingestion.last_commit(table.name).get("watermark")
    return dt.datetime.fromisoformat(watermark) - lookback if watermark else None


def compare_table(
    cursor, table: SourceTable, state: pl.DataFrame, settled: dt.datetime | None, findings: TableFindings
) -> dict[str, pl.DataFrame]:
    """The differing rows of one table, by kind (see classify), reading only the differing key ranges."""
    keys = state["source_id"]
    bounds = [b for b in (source_key_range(cursor, table), (keys.min(), keys.max()) if keys.len() else None) if b]
    found: dict[str, list[pl.DataFrame]] = {}
    if not bounds:
        return {}
    low, high = min(b[0] for b in bounds), max(b[1] for b in bounds)

    def source(lo: int, hi: int, width: int) -> dict:
        findings.source_queries += 1
        return source_segments(cursor, table, lo, hi, width)

    def lake(lo: int, hi: int, width: int) -> dict:
        return lake_segments(state, lo, hi, width)

    for lo, hi in differing_ranges(source, lake, low, high):
        rows = source_rows(cursor, table, lo, hi)
        findings.source_queries += 1
        findings.rows_read += rows.height
        for kind, frame in classify(rows, key_range(state, lo, hi), table, settled).items():
            found.setdefault(kind, []).append(frame)
    return {kind: pl.concat(frames, how="vertical_relaxed") for kind, frames in found.items()}


def record_findings(
    ingestion: LakeZone, table: SourceTable, found: dict[str, pl.DataFrame], run_id: str, now: dt.datetime
) -> None:
    """Append what was found: rows missing or changed as versions of the table (one commit, which carries the
    table's ingestion state and names the reconciliation), deletions to `_deletions` (one commit)."""
    versions = [found[k] for k in ("late_row", "quiet_update") if k in found and found[k].height]
    if versions:
        carried = {k: v for k, v in ingestion.last_commit(table.name).items() if k not in DELTA_COMMIT_INFO}
        metadata = {
            **carried,
            "reconciliation": run_id,
            "found": {k: found[k].height for k in ("late_row", "quiet_update") if k in found},
        }
        with Spool() as spool:
            for frame in versions:
                spool.add(frame)
            ingestion.append(
                table.name,
                spool.reader(),
                metadata,
                append_only=True,
                stats_columns=[table.primary_key, table.cursor],
            )
    deleted = found.get("deleted")
    if deleted is not None and deleted.height:
        rows = deleted.select(
            table_name=pl.lit(table.name),
            source_id="source_id",
            last_updated=pl.col("lake_updated"),
            detected_at=pl.lit(now),
            run_id=pl.lit(run_id),
        ).cast(dict(DELETIONS_SCHEMA))
        with Spool() as spool:
            spool.add(rows)
            ingestion.append(DELETIONS, spool.reader(), {"reconciliation": run_id}, append_only=True)


def reconcile_table(
    cursor,
    ingestion: LakeZone,
    processed: LakeZone,
    table: SourceTable,
    *,
    run_id: str,
    lookback: dt.timedelta,
    now: dt.datetime,
    sample: int = 10,
) -> TableFindings:
    """Compare one source table with the lake's newest versions and record what the cursor missed."""
    findings = TableFindings(table.name)
    state = refresh_state(ingestion, processed, table)
    found = compare_table(cursor, table, state, settled_until(ingestion, table, lookback), findings)
    record_findings(ingestion, table, found, run_id, now)
    if "baseline" in found:
        set_hashes(processed, table, found["baseline"])
        findings.baselined = found["baseline"].height
    findings.pending = found["pending"].height if "pending" in found else 0
    for kind in KINDS:
        if kind in found:
            ids = found[kind]["source_id" if kind == "deleted" else table.primary_key]
            findings.keys[kind] = [int(k) for k in ids.sort()]
    return findings


# --- every table ----------------------------------------------------------------------------------


@dataclass
class Reconciliation:
    """One reconciliation of the source: findings per table, and the tables it could not compare."""

    run_id: str
    tables: list[TableFindings] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, dict[str, int]]:
        return {t.table: t.counts for t in self.tables}

    @property
    def found(self) -> int:
        return sum(t.found for t in self.tables)

    def summary(self) -> str:
        found = [
            f"{t.table}: " + ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in t.counts.items() if n)
            for t in self.tables
            if t.found
        ]
        lines = [f"reconciled {len(self.tables)} tables: " + ("; ".join(found) if found else "no differences")]
        lines += [f"could not reconcile {name}: {error}" for name, error in self.errors.items()]
        return "\n".join(lines)


def reconcile_source(
    source_db: PostgresResource,
    ingestion: LakeZone,
    processed: LakeZone,
    tables: list[SourceTable],
    *,
    run_id: str,
    lookback: dt.timedelta,
    log: Callable[[str], None],
) -> Reconciliation:
    """Reconcile each table in one source snapshot, holding the ingestion zone's lock (no ingestion runs
    meanwhile). A table that cannot be read is named and the others go on."""
    result = Reconciliation(run_id)
    holder = f"totesys reconcile {run_id[:8]}"
    with (
        source_db.exclusive(f"totesys_platform raw {ingestion.url}", holder=holder, log=log),
        source_snapshot(source_db) as cursor,
    ):
        now = source_clock(cursor)
        described = describe_source(cursor, tables)
        for table in tables:
            try:
                checked_columns(table, described[table.name])
                findings = reconcile_table(
                    cursor, ingestion, processed, table, run_id=run_id, lookback=lookback, now=now
                )
            except TABLE_ERRORS as err:
                result.errors[table.name] = str(err)
                log(f"reconcile {table.name}: {err}")
                continue
            result.tables.append(findings)
    return result
