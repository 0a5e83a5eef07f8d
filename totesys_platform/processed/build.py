"""How each processed table follows its inputs, reading only the Delta commits it has not consumed yet.

Each processed table records, in its own commits' metadata, the last version of every input it has
consumed; a run reads the inputs' change feed after those versions and nothing else:
- facts: every new raw row version becomes a fact row or a quarantine row (both append-only). The
  quarantine is committed first; a run killed between the two commits re-derives only what is missing.
- dimensions: the latest new version of each changed key is merged on the key. A dimension joined from
  two sources (dim_staff, dim_counterparty) keeps each source's current rows in a small state table in
  the processed zone, so a department change updates its staff without re-reading history.
- dim_date: whole calendar years covering every date in the facts (from their logs' statistics), and a year
  ahead of today; only the days it lacks are appended (nothing lacking: no commit).
Blocking rules run on every frame before anything is committed: a rejected batch writes nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import polars as pl

from totesys_platform.catalog import SOURCE_TABLES_BY_NAME, WAREHOUSE_TABLES_BY_NAME, WarehouseTable
from totesys_platform.processed.rules import RuleResult, evaluate_rules, merge_results
from totesys_platform.processed.star import (
    build_dimension,
    build_facts,
    calendar_years,
    dim_date,
    latest_versions,
)
from totesys_platform.resources.delta_settings import CONSUMED_KEY
from totesys_platform.resources.io_managers import LakeTable, TableAppend, TableMerge
from totesys_platform.resources.lake import LakeZone
from totesys_platform.resources.spool import KeyRangeSpool, Spool

VERSION = "_commit_version"
T = TypeVar("T")
# A first build reads every raw version of its source: spooled by ranges of this many keys and reduced a
# range at a time (see KeyRangeSpool), its memory is one range's, whatever the table's size.
KEYS_PER_RANGE = 100_000
# dim_date runs ahead of the data: orders agreed for next year find their dates already there.
CALENDAR_AHEAD = dt.timedelta(days=365)


def quarantine_table(table: WarehouseTable) -> str:
    return f"quarantine/{table.name}"


def state_table(table: WarehouseTable, source: str) -> str:
    return f"state/{table.name}/{source}"


def versions_table(table: WarehouseTable, source: str) -> str:
    """Every version of a history table's source (see history.py)."""
    return f"state/{table.name}/{source}"


def zone_tables(table: WarehouseTable) -> list[str]:
    """The processed-zone tables a processed table's step reads and writes: its own, its quarantine (facts),
    its sources' state tables (a dimension joined from two sources) or versions tables (a history)."""
    tables = [table.name]
    if table.is_fact:
        tables.append(quarantine_table(table))
    if table.is_history:
        tables += [versions_table(table, source) for source in table.sources]
    elif table.joins:
        tables += [state_table(table, source) for source in table.sources]
    return tables


class BatchRejectedError(RuntimeError):
    """A processed batch broke a blocking quality rule; nothing of it was written."""

    def __init__(self, table: WarehouseTable, source: str, results: list[RuleResult]):
        failing = "; ".join(f"{r.rule.name}: {r.offending} rows" for r in results if r.is_error and r.offending)
        super().__init__(f"processed/{table.name}: the new rows from {source} were not written: {failing}")
        self.results = results


def checked(table: WarehouseTable, frame: pl.DataFrame, source: str, keys=None) -> list[RuleResult]:
    """The catalog rules on a frame about to be written; errors stop it here (blocking)."""
    results = evaluate_rules(table, frame, keys)
    if any(r.is_error and r.offending for r in results):
        raise BatchRejectedError(table, source, results)
    return results


@dataclass
class Outcome:
    """What one processed materialisation produces: the output for the IO manager, and what to report."""

    output: TableAppend | TableMerge | None
    metadata: dict
    quality: list[RuleResult]
    quarantined: list[pl.DataFrame] = field(default_factory=list)


def dimension_keys(dimensions: list[LakeTable]) -> dict[str, pl.Series]:
    """Keys of the small dimensions a fact references, for the missing-dimension quarantine rule."""
    keys = {}
    for handle in dimensions:
        version = handle.version()
        if version is not None:
            # A version's keys never change: the facts of a run that look up the same dimension read them once.
            keys[handle.name] = handle.zone.derived(("dimension keys", handle.uri, version), lambda h=handle: _keys(h))
    return keys


def _keys(handle: LakeTable) -> pl.Series:
    key = WAREHOUSE_TABLES_BY_NAME[handle.name].key
    try:
        return handle.scan().select(key).collect()[key]  # type: ignore[union-attr]
    except (pl.exceptions.PolarsError, OSError) as err:
        raise handle.zone.data_error(handle.name, err) from err


def no_dimension_keys(dimensions: list[LakeTable]) -> dict[str, pl.Series]:
    """Empty key sets: the same rules listed on an empty batch, without reading the dimensions."""
    keys = {}
    for handle in dimensions:
        dimension = WAREHOUSE_TABLES_BY_NAME[handle.name]
        keys[handle.name] = pl.Series(dimension.key, [], dtype=dimension.schema[dimension.key])
    return keys


def process_facts(table: WarehouseTable, raw: LakeTable, processed: LakeZone, dimensions: list[LakeTable]) -> Outcome:
    """Every raw row version committed since the last run: a fact row or a quarantine row."""
    until = raw.version()
    done = processed.consumed(table.name).get(raw.name, -1)
    if until is None or until <= done:
        quality = evaluate_rules(table, pl.DataFrame(schema=table.schema), no_dimension_keys(dimensions))
        return Outcome(None, {"rows_written": 0, "raw_rows_read": 0}, quality)
    # The quarantine is committed before the facts, so it has consumed at least what the facts have.
    quarantine_done = max(processed.consumed(quarantine_table(table)).get(raw.name, -1), done)
    keys = dimension_keys(dimensions)
    quality = evaluate_rules(table, pl.DataFrame(schema=table.schema), keys)
    spool, bad, rows_in = Spool(), [], 0
    try:
        for chunk in raw.changes(done if done >= 0 else None, until=until):
            rows_in += chunk.height
            built = build_facts(chunk.drop(VERSION), table, keys)
            quality = merge_results(quality, checked(table, built.facts, f"raw/{raw.name}", keys))
            spool.add(built.facts)
            quarantine = built.quarantine
            if quarantine_done > done:  # a run killed between the two commits quarantined these already
                quarantine = build_facts(chunk.filter(pl.col(VERSION) > quarantine_done).drop(VERSION), table, keys)
                quarantine = quarantine.quarantine
            if quarantine.height:
                bad.append(quarantine)
    except BaseException:
        spool.close()
        raise
    consumed = {CONSUMED_KEY: {raw.name: until}}
    if bad:
        with Spool() as quarantine:
            for frame in bad:
                quarantine.add(frame)
            processed.append(quarantine_table(table), quarantine.reader(), consumed, append_only=True)
    output = TableAppend(spool, consumed, table.schema, append_only=True, record_progress=True)
    metadata = {
        "rows_written": spool.rows,
        "raw_rows_read": rows_in,
        "quarantined_rows": sum(b.height for b in bad),
        "raw_version": until,
    }
    return Outcome(output, metadata, quality, bad)


def for_each_source(work: Callable[[str], T], names: tuple[str, ...]) -> dict[str, T]:
    """`work` for each source of a dimension; for two sources in two threads at once: a change-feed read or
    a merge is a few milliseconds of Delta work in Rust, which does not hold Python's lock."""
    if len(names) == 1:
        return {names[0]: work(names[0])}
    with ThreadPoolExecutor(len(names), thread_name_prefix="totesys-dimension-source") as pool:
        futures = {name: pool.submit(work, name) for name in names}
        return {name: future.result() for name, future in futures.items()}


def _latest_new(handle: LakeTable, after: int | None, until: int) -> pl.DataFrame:
    """The newest version of each key changed by the commits after `after` (empty when none)."""
    source = SOURCE_TABLES_BY_NAME[handle.name]
    frames = list(handle.changes(after, until=until))
    if not frames:
        return pl.DataFrame(schema=source.schema)
    frame = pl.concat(frames, how="diagonal_relaxed", rechunk=False)
    return latest_versions(frame, source.primary_key, source.cursor, then=VERSION).drop(VERSION)


def _merge_state(processed: LakeZone, table: WarehouseTable, name: str, new: pl.DataFrame, until: int) -> None:
    """Bring a source's current-rows state table up to `until` (idempotent: a re-run merges the same rows)."""
    state = state_table(table, name)
    if new.height and processed.consumed(state).get(name, -1) < until:
        processed.merge(state, new, SOURCE_TABLES_BY_NAME[name].primary_key, {CONSUMED_KEY: {name: until}})


def _joined_rows(
    table: WarehouseTable, processed: LakeZone, new: dict[str, pl.DataFrame], until: dict[str, int]
) -> pl.DataFrame:
    """The dimension's rows for every key touched by a change of either source, from the state tables."""
    primary = SOURCE_TABLES_BY_NAME[table.sources[0]]
    for_each_source(lambda name: _merge_state(processed, table, name, new[name], until[name]), table.sources)
    touched = pl.col(primary.primary_key).is_in(new[primary.name][primary.primary_key].implode())
    for lookup, column in table.joins.items():
        key = SOURCE_TABLES_BY_NAME[lookup].primary_key
        touched = touched | pl.col(column).is_in(new[lookup][key].implode())
    current = processed.scan(state_table(table, primary.name))
    rows = {primary.name: current.filter(touched).collect() if current is not None else new[primary.name]}
    for lookup, column in table.joins.items():
        key = SOURCE_TABLES_BY_NAME[lookup].primary_key
        state = processed.scan(state_table(table, lookup))
        wanted = pl.col(key).is_in(rows[primary.name][column].unique().implode())
        lookup_rows = state.filter(wanted).collect() if state is not None else None
        rows[lookup] = (
            lookup_rows if lookup_rows is not None else pl.DataFrame(schema=SOURCE_TABLES_BY_NAME[lookup].schema)
        )
    return build_dimension(table, rows)


def key_ranges(key: str) -> KeyRangeSpool:
    """An empty spool of rows by ranges of `key` (KEYS_PER_RANGE keys a range)."""
    return KeyRangeSpool(key, KEYS_PER_RANGE)


def spooled_by_key(raw: LakeTable, after: int | None, until: int) -> KeyRangeSpool:
    """The raw versions committed after `after` up to `until`, spooled by ranges of their key."""
    ranges = key_ranges(SOURCE_TABLES_BY_NAME[raw.name].primary_key)
    try:
        for chunk in raw.changes(after, until=until):
            ranges.add(chunk)
    except BaseException:
        ranges.close()
        raise
    return ranges


def _first_build(table: WarehouseTable, raw: LakeTable, until: int) -> Outcome:
    """A single-source dimension's first build: the latest version of every key, a range of keys at a time,
    spooled and appended as the table's first commit."""
    source = SOURCE_TABLES_BY_NAME[raw.name]
    spool, quality = Spool(), evaluate_rules(table, pl.DataFrame(schema=table.schema))
    try:
        with spooled_by_key(raw, None, until) as ranges:
            for versions in ranges.frames(pl.Schema({**source.schema, VERSION: pl.Int64})):
                latest = latest_versions(versions, source.primary_key, source.cursor, then=VERSION).drop(VERSION)
                rows = build_dimension(table, {source.name: latest})
                quality = merge_results(quality, checked(table, rows, f"raw/{source.name}"))
                spool.add(rows)
    except BaseException:
        spool.close()
        raise
    consumed = {CONSUMED_KEY: {source.name: until}}
    output = TableAppend(spool, consumed, table.schema, append_only=False, record_progress=True)
    return Outcome(
        output, {"rows_written": spool.rows, "changed": True, "raw_versions": str({source.name: until})}, quality
    )


def process_dimension(table: WarehouseTable, raws: dict[str, LakeTable], processed: LakeZone) -> Outcome:
    """Merge the latest new version of every changed member into the dimension."""
    done = processed.consumed(table.name)
    until = {name: raws[name].version() for name in table.sources}
    if any(v is None for v in until.values()):
        missing = ", ".join(f"raw/{n}" for n, v in until.items() if v is None)
        raise RuntimeError(f"processed/{table.name}: no ingested rows in {missing} yet; materialise it first")
    if all(until[name] == done.get(name) for name in table.sources):
        return Outcome(
            None, {"rows_written": 0, "changed": False}, evaluate_rules(table, pl.DataFrame(schema=table.schema))
        )
    if not table.joins and processed.version(table.name) is None:
        return _first_build(table, raws[table.sources[0]], until[table.sources[0]])  # type: ignore[arg-type]
    new = for_each_source(lambda name: _latest_new(raws[name], done.get(name), until[name]), table.sources)  # type: ignore[arg-type]
    if table.joins:
        rows = _joined_rows(table, processed, new, until)  # type: ignore[arg-type]
    else:
        rows = build_dimension(table, {table.sources[0]: new[table.sources[0]]})
    quality = checked(table, rows, ", ".join(f"raw/{name}" for name in table.sources))
    output = TableMerge(rows, table.key, {CONSUMED_KEY: until})
    return Outcome(output, {"rows_written": rows.height, "changed": True, "raw_versions": str(until)}, quality)


def process_calendar(
    table: WarehouseTable, facts: dict[str, LakeTable], processed: LakeZone, today: dt.date
) -> Outcome:
    """Append the days dim_date lacks: whole years covering every date in the facts, and a year ahead.

    The facts' earliest and latest dates come from the statistics in their Delta logs (each file's minimum
    and maximum per column), not from their rows: the cost is the same whatever the facts hold or how many
    runs wrote them, and a run with nothing to add commits nothing."""
    recorded = processed.last_commit(table.name)
    spans = []
    for name, handle in facts.items():
        fact = WAREHOUSE_TABLES_BY_NAME[name]
        dates = [c.name for c in fact.data_columns if c.pg_type == "date"]
        span = handle.zone.value_range(handle.name, dates) if dates else None
        if span:
            spans.append(span)
    ahead = today + CALENDAR_AHEAD
    had = (
        (dt.date.fromisoformat(recorded["start"]), dt.date.fromisoformat(recorded["end"]))
        if "start" in recorded
        else None
    )
    firsts = [s[0] for s in spans] + ([had[0]] if had else [])
    start, end = calendar_years(
        min(firsts, default=ahead), max([ahead, *(s[1] for s in spans), *([had[1]] if had else [])])
    )
    calendar = dim_date(start, end)
    if had:
        calendar = calendar.filter((pl.col("date_id") < had[0]) | (pl.col("date_id") > had[1]))
    if calendar.is_empty():
        return Outcome(None, {"rows_written": 0, "changed": False}, evaluate_rules(table, calendar))
    quality = checked(table, calendar, "the facts' dates")
    spool = Spool()
    spool.add(calendar)
    output = TableAppend(
        spool,
        {"start": start.isoformat(), "end": end.isoformat()},
        table.schema,
        append_only=True,
    )
    metadata = {"rows_written": calendar.height, "first_date": start.isoformat(), "last_date": end.isoformat()}
    return Outcome(output, metadata, quality)
