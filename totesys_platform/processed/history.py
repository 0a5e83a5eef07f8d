"""How a dimension's history table (`<dimension>_history`) follows the raw versions of its sources.

Each run reads only the raw commits the history has not consumed. Their versions are appended to a
versions table per source in the processed zone (`state/<history>/<source>`: every version of the source's
rows, with the raw commit that brought it), so that the members a change touches can be re-derived from
all their versions without reading the raw history: the members with a new version, and those whose
joined row (their department, their legal address) has one. Their states are derived afresh
(`history_rows`) and merged on (key, valid_from) in one commit; a state that no longer exists (a
back-dated version merged it with the one before) is removed. A run killed between the commits
re-derives the same states from the same versions: nothing is appended twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import polars as pl

from totesys_platform.catalog import SOURCE_TABLES_BY_NAME, VALID_FROM, WarehouseTable
from totesys_platform.processed.build import (
    VERSION,
    Outcome,
    checked,
    for_each_source,
    key_ranges,
    versions_table,
)
from totesys_platform.processed.rules import evaluate_rules, merge_results
from totesys_platform.processed.star import DELETED, history_rows
from totesys_platform.raw.reconcile import DELETIONS
from totesys_platform.resources.delta_settings import CONSUMED_KEY
from totesys_platform.resources.io_managers import LakeTable, TableAppend, TableMerge
from totesys_platform.resources.lake import LakeZone
from totesys_platform.resources.spool import KeyRangeSpool, Spool, restore_types

MEMBERS_PER_BATCH = 100_000


def _versions_schema(source: str) -> dict:
    return {**SOURCE_TABLES_BY_NAME[source].schema, VERSION: pl.Int64, DELETED: pl.Boolean}


def _as_versions(source: str, frames: list[pl.DataFrame]) -> pl.DataFrame:
    """Frames of a source's versions in the versions tables' columns and types (empty when none)."""
    schema = _versions_schema(source)
    joined = pl.concat([pl.DataFrame(schema=schema), *frames], how="diagonal_relaxed")
    return joined.select(pl.col(n).cast(t) for n, t in schema.items())


def _new_versions(raw: LakeTable, after: int | None, until: int) -> pl.DataFrame:
    """The source's versions committed after `after` up to `until`, with their commit."""
    changes = raw.changes(after, until=until)
    return _as_versions(raw.name, [frame.with_columns(pl.lit(False).alias(DELETED)) for frame in changes])


def _new_deletions(raw: LakeTable, after: int | None, until: int) -> pl.DataFrame:
    """The source's rows the reconciliation found deleted since `after`, as versions flagged deleted at the
    time they were found."""
    source = SOURCE_TABLES_BY_NAME[raw.name]
    found = LakeTable(raw.zone, DELETIONS).changes(after, until)
    return _as_versions(
        raw.name,
        [
            f.filter(pl.col("table_name") == raw.name).select(
                pl.col("source_id").alias(source.primary_key),
                pl.col("detected_at").alias(source.cursor),
                VERSION,
                pl.lit(True).alias(DELETED),
            )
            for f in found
        ],
    )


def record_versions(
    processed: LakeZone, table: WarehouseTable, source: str, frames: Iterable[pl.DataFrame], until: dict
) -> None:
    """Append the source's new versions (from its raw table, and from the deletions: flagged DELETED) to its
    versions table, but those a killed run appended already."""
    name = versions_table(table, source)
    recorded = processed.consumed(name)
    if all(recorded.get(given, -1) >= version for given, version in until.items()):
        return
    primary_key = SOURCE_TABLES_BY_NAME[source].primary_key
    done = pl.when(pl.col(DELETED)).then(recorded.get(DELETIONS, -1)).otherwise(recorded.get(source, -1))
    with Spool() as spool:
        for frame in frames:  # copied only where a killed run recorded some
            unrecorded = frame.filter(pl.col(VERSION) > done) if recorded else frame
            spool.add(unrecorded if unrecorded[primary_key].is_sorted() else unrecorded.sort(primary_key))
        reader = spool.reader() if spool.rows else None
        empty = pl.DataFrame(schema=_versions_schema(source))
        processed.append(name, reader, {CONSUMED_KEY: until}, append_only=True, empty_commit=True, empty_schema=empty)


def _rows_where(processed: LakeZone, name: str, column: str, values: pl.Series) -> pl.DataFrame | None:
    """Rows of a processed table whose `column` is one of `values` (files pruned by their statistics)."""
    frame = processed.scan(name)
    if frame is None or values.is_empty():
        return None
    wanted = pl.col(column).is_between(values.min(), values.max()) & pl.col(column).is_in(values.implode())
    return frame.filter(wanted).collect()


def _recorded(processed: LakeZone, table: WarehouseTable, source: str, column: str, values: pl.Series):
    """The versions of `source` recorded before this run whose `column` is one of `values`."""
    schema = _versions_schema(source)
    found = _rows_where(processed, versions_table(table, source), column, values)
    if found is None:
        return pl.DataFrame(schema=schema)
    return found.select(pl.col(n).cast(t) for n, t in schema.items())


def touched_members(table: WarehouseTable, processed: LakeZone, new: dict[str, pl.DataFrame]) -> pl.Series:
    """Members with a new version, and members whose versions reference a joined row with one."""
    primary = table.source
    keys = [new[primary.name][primary.primary_key]]
    for lookup, link in table.joins.items():
        changed = new[lookup][SOURCE_TABLES_BY_NAME[lookup].primary_key].unique()
        keys.append(_recorded(processed, table, primary.name, link, changed)[primary.primary_key])
    return pl.concat(keys).unique().sort()


def member_versions(
    table: WarehouseTable, processed: LakeZone, members: pl.Series, new: dict[str, pl.DataFrame]
) -> dict[str, pl.DataFrame]:
    """Every version of the members (recorded before, and new), and of the joined rows they ever referenced."""
    primary, key = table.source, table.source.primary_key
    recorded = _recorded(processed, table, primary.name, key, members)
    fresh = new[primary.name].filter(pl.col(key).is_between(members.min(), members.max()))  # members: sorted
    versions = {primary.name: pl.concat([recorded, fresh.filter(pl.col(key).is_in(members.implode()))])}
    for lookup, link in table.joins.items():
        key = SOURCE_TABLES_BY_NAME[lookup].primary_key
        linked = versions[primary.name][link].drop_nulls().unique()
        fresh = new[lookup].filter(pl.col(key).is_in(linked.implode()))
        versions[lookup] = pl.concat([_recorded(processed, table, lookup, key, linked), fresh])
    return versions


def derive_states(
    table: WarehouseTable, processed: LakeZone, members: pl.Series, new: dict[str, pl.DataFrame]
) -> Iterator[pl.DataFrame]:
    """The members' states, a batch of members at a time: a backfill's memory is one batch's, whatever the
    dimension's size (members are independent; what they join is small)."""
    for start in range(0, members.len(), MEMBERS_PER_BATCH):
        batch = members.slice(start, MEMBERS_PER_BATCH)
        yield history_rows(table, member_versions(table, processed, batch, new), order=VERSION)


def ended_states(table: WarehouseTable, processed: LakeZone, members: pl.Series, states: pl.DataFrame):
    """States the history holds for the members that their re-derivation no longer has."""
    held = _rows_where(processed, table.name, table.key, members)
    if held is None:
        return None
    gone = held.select(table.key, VALID_FROM).join(
        states.select(table.key, VALID_FROM), on=[table.key, VALID_FROM], how="anti"
    )
    return gone if gone.height else None


def _inputs_until(table: WarehouseTable, raws: dict[str, LakeTable]) -> dict[str, int | None]:
    """The newest commit of each input: the sources' raw tables and the ingestion zone's deletions."""
    primary = raws[table.sources[0]]
    return {**{name: raws[name].version() for name in table.sources}, DELETIONS: primary.zone.version(DELETIONS)}


def new_source_versions(
    table: WarehouseTable, raws: dict[str, LakeTable], done: dict, until: dict, sources: tuple[str, ...]
) -> dict:
    """Per source, its versions since the history last ran by input: the raw table's, and the reconciliation's
    deletions of the first source's rows."""

    def read(name: str) -> dict[str, pl.DataFrame]:
        new = {name: _new_versions(raws[name], done.get(name), until[name])}
        if name == table.sources[0] and until[DELETIONS] is not None:
            new[DELETIONS] = _new_deletions(raws[name], done.get(DELETIONS), until[DELETIONS])
        return new

    return for_each_source(read, sources)


def _history_output(table: WarehouseTable, processed: LakeZone, members: pl.Series, spool: Spool, consumed: dict):
    """The touched members' states (a few, in hand) merged on (key, valid_from), and deleted those of their
    states that no longer exist (the first build appends: see _first_build)."""
    with spool:
        reader = spool.reader()
        states = restore_types(pl.from_arrow(reader.read_all()), table.schema) if reader else table.schema.to_frame()
    gone = ended_states(table, processed, members, states)
    return TableMerge(states, table.key, consumed, match=(table.key, VALID_FROM), removed=gone), gone


def process_history(table: WarehouseTable, raws: dict[str, LakeTable], processed: LakeZone) -> Outcome:
    """Re-derive the states of every member the new raw versions touch, and merge them."""
    done = processed.consumed(table.name)
    until = _inputs_until(table, raws)
    if any(until[name] is None for name in table.sources):
        missing = ", ".join(f"raw/{n}" for n in table.sources if until[n] is None)
        raise RuntimeError(f"processed/{table.name}: no ingested rows in {missing} yet; materialise it first")
    if all(until[name] == done.get(name) for name in until):
        empty = pl.DataFrame(schema=table.schema)
        return Outcome(None, {"rows_written": 0, "changed": False}, evaluate_rules(table, empty))
    if processed.version(table.name) is None:
        return _first_build(table, raws, processed, done, until)
    by_input = new_source_versions(table, raws, done, until, table.sources)
    new = {source: pl.concat(list(frames.values()), rechunk=False) for source, frames in by_input.items()}
    members = touched_members(table, processed, new)
    spool, quality = Spool(), None
    try:
        for states in derive_states(table, processed, members, new):
            quality = merge_results(quality, checked(table, states, ", ".join(f"raw/{n}" for n in table.sources)))
            spool.add(states)
        del new
        for source, frames in by_input.items():  # recorded before the history's own commit: a kill loses nothing
            record_versions(processed, table, source, frames.values(), {name: until[name] for name in frames})
    except BaseException:
        spool.close()
        raise
    if quality is None:  # no member touched
        quality = evaluate_rules(table, pl.DataFrame(schema=table.schema))
    consumed = {CONSUMED_KEY: {name: version for name, version in until.items() if version is not None}}
    output, gone = _history_output(table, processed, members, spool, consumed)
    metadata = {
        "rows_written": spool.rows,
        "members_touched": members.len(),
        "states_removed": 0 if gone is None else gone.height,
        "raw_versions": str(consumed[CONSUMED_KEY]),
    }
    return Outcome(output, metadata, quality)


def _spooled_versions(table: WarehouseTable, raws: dict[str, LakeTable], done: dict, until: dict) -> KeyRangeSpool:
    """The first source's new versions and deletions, spooled by ranges of its key."""
    source = table.source
    ranges = key_ranges(source.primary_key)
    try:
        for chunk in raws[source.name].changes(done.get(source.name), until=until[source.name]):
            ranges.add(_as_versions(source.name, [chunk.with_columns(pl.lit(False).alias(DELETED))]))
        if until[DELETIONS] is not None:
            ranges.add(_new_deletions(raws[source.name], done.get(DELETIONS), until[DELETIONS]))
    except BaseException:
        ranges.close()
        raise
    return ranges


def _first_build(table: WarehouseTable, raws: dict[str, LakeTable], processed: LakeZone, done: dict, until: dict):
    """The history's first build: every member's states derived a range of members at a time from the first
    source's versions spooled by key (the joined sources' versions are small and held), so its memory is one
    range's whatever the dimension's size; the versions are recorded, then the states appended."""
    source, lookups = table.source.name, table.sources[1:]
    by_input = new_source_versions(table, raws, done, until, lookups) if lookups else {}
    joined = {name: pl.concat(list(frames.values())) for name, frames in by_input.items()}
    label = ", ".join(f"raw/{n}" for n in table.sources)
    spool, quality, members = Spool(), evaluate_rules(table, pl.DataFrame(schema=table.schema)), 0
    schema = pl.Schema(_versions_schema(source))
    try:
        with _spooled_versions(table, raws, done, until) as ranges:
            for fresh in ranges.frames(schema):
                touched = fresh[table.source.primary_key].unique().sort()
                members += touched.len()
                for states in derive_states(table, processed, touched, {source: fresh, **joined}):
                    quality = merge_results(quality, checked(table, states, label))
                    spool.add(states)
            inputs = {source: until[source], **({DELETIONS: until[DELETIONS]} if until[DELETIONS] is not None else {})}
            record_versions(processed, table, source, ranges.frames(schema), inputs)
        for name, frames in by_input.items():
            record_versions(processed, table, name, frames.values(), {given: until[given] for given in frames})
    except BaseException:
        spool.close()
        raise
    consumed = {CONSUMED_KEY: {name: version for name, version in until.items() if version is not None}}
    output = TableAppend(spool, consumed, table.schema, append_only=False, record_progress=True)
    metadata = {
        "rows_written": spool.rows,
        "members_touched": members,
        "states_removed": 0,
        "raw_versions": str(consumed[CONSUMED_KEY]),
    }
    return Outcome(output, metadata, quality)
